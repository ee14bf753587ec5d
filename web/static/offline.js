// Installable and offline (web/static/sw.js does the serving):
// - registers the service worker, /sw.js, for the whole site;
// - "Save for offline" on a track page and "Save album" on an album page: the audio (and artwork)
//   is fetched from our audio URLs, hashed with SHA-256 and kept in Cache Storage only when it
//   matches the blob's CID (the URL's last part); the page is kept too, so it opens offline;
// - on /offline: the saved tracks and albums, each with a Remove button.
// What is saved is listed in localStorage ("om-saved:<at-uri>"); the bytes are in the caches
// "om-media" (by URL) and "om-pages" (by path), which sw.js answers from.
import { matchesCid } from "./ids.js";

const PAGES = "om-pages";
const MEDIA = "om-media";
const SAVED = "om-saved:";

export const supported = "serviceWorker" in navigator && "caches" in window && !!globalThis.crypto?.subtle;

if ("serviceWorker" in navigator) {
  navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch(() => {});
}

class SaveError extends Error {
  constructor(kind, detail = "") {
    super(`${kind} ${detail}`);
    this.kind = kind;
    this.detail = detail;
  }
}

// -- the list of saved items ------------------------------------------------------------------------
export function savedItems() {
  const out = [];
  for (let i = 0; i < localStorage.length; i++) {
    const key = localStorage.key(i);
    if (!key?.startsWith(SAVED)) continue;
    try {
      out.push(JSON.parse(localStorage.getItem(key)));
    } catch {
      localStorage.removeItem(key);
    }
  }
  return out.filter((item) => item?.uri).sort((a, b) => (a.savedAt < b.savedAt ? 1 : -1));
}

const isSaved = (uri) => localStorage.getItem(SAVED + uri) !== null;
const absolute = (url) => new URL(url, location.origin).href;

/** Every cached URL an item needs: its page, and for a track its audio and artwork. */
function urlsOf(item) {
  const own = [absolute(item.page), item.audio, item.artwork].filter(Boolean).map(absolute);
  return [...own, ...(item.tracks ?? []).flatMap(urlsOf)];
}

// -- saving -----------------------------------------------------------------------------------------
/** Keep `url` (audio or artwork: /audio|image/<did>/<cid>) in the media cache once its bytes match the CID. */
async function saveMedia(cache, url) {
  const key = absolute(url);
  if (await cache.match(key)) return;
  const target = new URL(key);
  const cid = target.pathname.split("/").pop();
  // Fetched from our own origin (the page's CSP allows nothing else for fetch); same route, same bytes.
  const response = await fetch(target.pathname, { credentials: "omit" });
  if (!response.ok) throw new SaveError("http", String(response.status));
  const bytes = await response.arrayBuffer();
  if (!(await matchesCid(bytes, cid))) throw new SaveError("mismatch");
  await cache.put(key, new Response(bytes, {
    headers: {
      "Content-Type": response.headers.get("content-type") || "application/octet-stream",
      "Content-Length": String(bytes.byteLength), "Accept-Ranges": "bytes",
    },
  }));
}

async function savePage(cache, path) {
  const response = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (!response.ok) throw new SaveError("http", String(response.status));
  await cache.put(absolute(path), response);
}

/** Save a track or an album (with its tracks) for offline listening. Raises SaveError. */
export async function save(item) {
  navigator.storage?.persist?.().catch(() => {});
  const media = await caches.open(MEDIA);
  const pages = await caches.open(PAGES);
  try {
    for (const t of [item, ...(item.tracks ?? [])]) {
      if (t.audio) await saveMedia(media, t.audio);
      if (t.artwork) await saveMedia(media, t.artwork).catch(() => {});  // artwork is nice to have
      await savePage(pages, t.page);
    }
    localStorage.setItem(SAVED + item.uri, JSON.stringify({ ...item, savedAt: new Date().toISOString() }));
  } catch (err) {
    if (!isSaved(item.uri)) await dropUnused(item);  // no half-saved copies left behind
    throw err;
  }
}

/** Forget a saved item, and drop what no other saved item needs. */
export async function remove(uri) {
  const raw = localStorage.getItem(SAVED + uri);
  if (raw === null) return;
  localStorage.removeItem(SAVED + uri);
  await dropUnused(JSON.parse(raw));
}

async function dropUnused(item) {
  const still = new Set(savedItems().flatMap(urlsOf));
  const media = await caches.open(MEDIA);
  const pages = await caches.open(PAGES);
  for (const url of urlsOf(item)) {
    if (still.has(url)) continue;
    await media.delete(url);
    await pages.delete(url);
  }
}

// -- the buttons ------------------------------------------------------------------------------------
/** What a "Save for offline" button saves: the track it names, or the album and the tracks listed. */
function itemOf(button) {
  const d = button.dataset;
  const item = { kind: d.saveOffline, uri: d.uri, title: d.title, artist: d.artist, page: d.page };
  if (d.audio) item.audio = d.audio;
  if (d.artwork) item.artwork = d.artwork;
  if (item.kind === "album") {
    // the rows that can be played (a track whose audio is taken down has no audio element)
    const rows = [...document.querySelectorAll(".tracks li.track")].filter((li) => li.querySelector("audio[data-uri]"));
    item.tracks = rows.map((li) => {
      const audio = li.querySelector("audio[data-uri]");
      const link = li.querySelector("a.title");
      return {
        kind: "track", uri: audio.dataset.uri, title: link.textContent.trim(),
        artist: li.querySelector("a.artist")?.textContent.trim() ?? "", page: link.getAttribute("href"),
        audio: audio.getAttribute("src"), artwork: li.querySelector("img.art")?.getAttribute("src") ?? undefined,
      };
    });
  }
  return item;
}

function setUp(button) {
  const box = button.closest("[data-offline-box]") ?? button.parentElement;
  const note = box.querySelector("[role=status]");
  const d = button.dataset;
  const show = (message) => { if (note) note.textContent = message; };
  const label = () => { button.textContent = isSaved(d.uri) ? d.labelRemove : d.labelSave; };
  label();
  box.hidden = false;
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      if (isSaved(d.uri)) {
        await remove(d.uri);
        show(d.removed);
      } else {
        show(d.saving);
        await save(itemOf(button));
        show(d.saved);
      }
    } catch (err) {
      show(err.kind === "mismatch" ? d.mismatch : `${d.failed} ${err.detail || err.message}`);
    } finally {
      button.disabled = false;
      label();
    }
  });
}

// -- /offline: the saved items ----------------------------------------------------------------------
function listSaved(list) {
  const empty = document.getElementById("saved-empty");
  list.replaceChildren();
  const items = savedItems();
  if (empty) empty.hidden = items.length > 0;
  for (const item of items) {
    const li = document.createElement("li");
    const link = document.createElement("a");
    link.href = item.page;
    link.className = "title";
    link.textContent = item.title;
    const by = document.createElement("span");
    by.className = "artist";
    by.textContent = item.kind === "album" ? ` · ${list.dataset.album} · ${item.artist}` : ` · ${item.artist}`;
    const drop = document.createElement("button");
    drop.type = "button";
    drop.textContent = list.dataset.remove;
    drop.addEventListener("click", async () => {
      drop.disabled = true;
      await remove(item.uri).catch(() => {});
      listSaved(list);
    });
    li.append(link, by, " ", drop);
    if (item.tracks?.length) {
      const inner = document.createElement("ol");
      for (const t of item.tracks) {
        const row = document.createElement("li");
        const a = document.createElement("a");
        a.href = t.page;
        a.textContent = t.title;
        row.append(a);
        inner.append(row);
      }
      li.append(inner);
    }
    list.append(li);
  }
}

// Set up what the page holds: at load, and after nav.js swaps in another page ("om:page").
function setUpPage(root) {
  if (supported) {
    root.querySelectorAll("button[data-save-offline]").forEach(setUp);
    const list = root.querySelector("#saved-list");
    if (list) listSaved(list);
  } else {
    const unsupported = root.querySelector("#saved-unsupported");
    if (unsupported) unsupported.hidden = false;
  }
}

setUpPage(document);
document.addEventListener("om:page", (event) => setUpPage(event.detail?.main ?? document));
