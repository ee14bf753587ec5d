// Identifiers the browser makes or checks, with no dependencies (also importable from Node for tests):
// - tid(): an atproto TID (record key): 13 characters of base32-sortable, 53 bits of microseconds
//   since the epoch and a 10-bit clock id; increasing within a page.
// - blobDigest(cid) / matchesCid(bytes, cid): a blob's CID (CIDv1, raw codec 0x55, sha2-256
//   multihash, base32 lower with the "b" prefix) and whether bytes hash to it.

const SORTABLE = "234567abcdefghijklmnopqrstuvwxyz";
const BASE32 = "abcdefghijklmnopqrstuvwxyz234567";
const clockId = BigInt(crypto.getRandomValues(new Uint16Array(1))[0] & 1023);
let lastMicros = 0n;

/** A new TID; `nowMs` (milliseconds since the epoch, fractions kept) is for tests. */
export function tid(nowMs = performance.timeOrigin + performance.now()) {
  let micros = BigInt(Math.floor(nowMs * 1000));
  if (micros <= lastMicros) micros = lastMicros + 1n;
  lastMicros = micros;
  let value = (micros << 10n) | clockId;
  let out = "";
  for (let i = 0; i < 13; i++) {
    out = SORTABLE[Number(value & 31n)] + out;
    value >>= 5n;
  }
  return out;
}

/** RFC 4648 base32, lower case, no padding -> bytes. Throws on other characters or stray bits. */
export function base32Decode(text) {
  const out = [];
  let buffer = 0;
  let bits = 0;
  for (const ch of text) {
    const v = BASE32.indexOf(ch);
    if (v < 0) throw new Error(`not base32: ${ch}`);
    buffer = (buffer << 5) | v;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push((buffer >> bits) & 0xff);
      buffer &= (1 << bits) - 1;
    }
  }
  if (bits >= 5 || buffer !== 0) throw new Error("bad base32 padding");
  return new Uint8Array(out);
}

function varint(bytes, at) {
  let value = 0;
  for (let shift = 0; shift < 28; shift += 7) {
    if (at >= bytes.length) throw new Error("truncated varint");
    const b = bytes[at++];
    value |= (b & 0x7f) << shift;
    if (!(b & 0x80)) return [value, at];
  }
  throw new Error("varint too long");
}

/** The 32-byte SHA-256 digest named by a blob CID. Throws unless it is CIDv1, raw, sha2-256, base32. */
export function blobDigest(cid) {
  if (typeof cid !== "string" || !cid.startsWith("b")) throw new Error("not a base32 CIDv1");
  const bytes = base32Decode(cid.slice(1));
  let at = 0;
  let version, codec, hash, length;
  [version, at] = varint(bytes, at);
  [codec, at] = varint(bytes, at);
  [hash, at] = varint(bytes, at);
  [length, at] = varint(bytes, at);
  if (version !== 1 || codec !== 0x55 || hash !== 0x12 || length !== 32 || bytes.length - at !== 32) {
    throw new Error("not a raw sha2-256 CIDv1");
  }
  return bytes.slice(at);
}

/** True when `bytes` (ArrayBuffer or view) hash to `cid`; false on another hash or an unusable CID. */
export async function matchesCid(bytes, cid) {
  let want;
  try {
    want = blobDigest(cid);
  } catch {
    return false;
  }
  const got = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return got.length === want.length && got.every((b, i) => b === want[i]);
}
