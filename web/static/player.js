// Counts what is heard of every <audio data-uri> on the page and, when a listening ends (the track
// ends, another starts, or the page goes away), asks our server to write one
// fm.openmusic.listen.play record to the listener's own PDS: the heard segments in ms.
// Without a signed-in session (no csrf-token meta) nothing is sent; "Sign in to have your plays counted"
// is said once per browser session (sessionStorage) and fades. No tokens live here.
//
// No play is lost or written twice: each play gets its record key (a TID made here) and is kept in
// localStorage ("om-play:<rkey>", with the listener's DID) before it is sent. It stays there until
// our server answers: written (or already written: the same rkey is never written twice), or refused
// for good (a 4xx other than 401, 408 and 429; the status is shown). A network error, a 5xx, 408,
// 429 or an ended session (401) keeps it; kept plays are sent again, oldest first, on each page load
// (so after signing in again), when the browser comes back online, and after a failed attempt.
// Only plays of the signed-in account are sent: another account's wait for it to sign in again.
//
// Every <audio data-uri> in the document is counted: the player bar's (bar.js), whose data-uri and
// data-cid change from track to track, and any a page brings, also after nav.js swaps the page in
// (the "om:page" event: the viewer is read again, kept plays are sent, and the plays of elements that
// left the document are posted). A play belongs to the track the element held when it began.
import { tid } from "./ids.js";

const status = document.getElementById("player-status");
const KEPT = "om-play:";
const MAX_KEPT = 500;
const RETRY_MS = [15_000, 60_000, 300_000];

// The page's language: the texts come from data-* attributes of #player-status.
const text = (name) => status?.dataset[name] ?? "";
const FADE_AFTER_MS = 8_000;
const FADE_MS = 1_000;  // the opacity transition of .player-status.fading (web.css)
let fading = [];
/** Show `message`; a `passing` one fades out after a while (a later message stays). */
function say(message, passing = false) {
  if (!status) return;
  fading.forEach(clearTimeout);
  fading = [];
  status.classList.remove("fading");
  status.textContent = message;
  if (!passing) return;
  fading.push(setTimeout(() => {
    status.classList.add("fading");
    fading.push(setTimeout(() => {
      status.textContent = "";
      status.classList.remove("fading");
    }, FADE_MS));
  }, FADE_AFTER_MS));
}

/** "Sign in to have your plays counted": once per browser session (tab), and it fades. */
const SIGNIN_SHOWN = "om-signin-shown";
function suggestSignIn() {
  try {
    if (sessionStorage.getItem(SIGNIN_SHOWN)) return;
    sessionStorage.setItem(SIGNIN_SHOWN, "1");
  } catch {
    // no sessionStorage: shown, still fading
  }
  say(text("signin"), true);
}

/** The signed-in viewer of this page: its CSRF token and DID (both null when signed out). */
const viewer = { token: null, did: null };
function readViewer() {
  viewer.token = document.querySelector('meta[name="csrf-token"]')?.content ?? null;
  viewer.did = document.querySelector('meta[name="viewer-did"]')?.content ?? null;
}
readViewer();

// -- the kept plays (localStorage: one key per play, so tabs never overwrite each other's) ----------
function keptPlays() {
  const out = [];
  for (let i = 0; i < localStorage.length; i++) {
    const key = localStorage.key(i);
    if (!key?.startsWith(KEPT)) continue;
    try {
      out.push(JSON.parse(localStorage.getItem(key)));
    } catch {
      localStorage.removeItem(key);
    }
  }
  return out.filter((p) => p && typeof p.rkey === "string").sort((a, b) => (a.rkey < b.rkey ? -1 : 1));
}
function keep(play) {
  const kept = keptPlays();
  for (const old of kept.slice(0, Math.max(0, kept.length - MAX_KEPT + 1))) forget(old);
  try {
    localStorage.setItem(KEPT + play.rkey, JSON.stringify(play));
    return true;
  } catch {
    return false;  // storage full or off: the play is still sent once, below
  }
}
function forget(play) {
  localStorage.removeItem(KEPT + play.rkey);
}

/** A fresh token and DID from our server (a page loaded from the offline copy may carry old ones). */
async function freshViewer() {
  try {
    const r = await fetch("/me", { credentials: "same-origin", cache: "no-store" });
    const doc = new DOMParser().parseFromString(await r.text(), "text/html");
    return {
      token: doc.querySelector('meta[name="csrf-token"]')?.content ?? null,
      did: doc.querySelector('meta[name="viewer-did"]')?.content ?? null,
    };
  } catch {
    return { token: null, did: null };
  }
}

/** POST /play; "sent", "kept" (try again later), "waiting" (until the account signs in again) or
 *  "dropped" (refused for good). */
async function send(play, keepalive = false) {
  for (let attempt = 0; attempt < 3; attempt++) {
    const body = new URLSearchParams({
      uri: play.uri, cid: play.cid, started: String(play.started), completed: play.completed ? "1" : "0",
      segments: play.segments, rkey: play.rkey, csrf_token: viewer.token ?? "",
    });
    let r;
    try {
      r = await fetch("/play", { method: "POST", body, keepalive, credentials: "same-origin" });
    } catch {
      say(text("queued"));
      return "kept";
    }
    const out = await r.json().catch(() => ({}));
    if (r.ok) {
      forget(play);
      say(text("saved").replace("{seconds}", String(Math.round((out.listenedMs ?? 0) / 1000))));
      return "sent";
    }
    if (r.status === 403 && attempt === 0) {
      // A page from the offline copy may carry an old session's token: fetch the current one.
      const fresh = await freshViewer();
      if (fresh.did === play.did && fresh.token && fresh.token !== viewer.token) {
        viewer.token = fresh.token;
        continue;
      }
    }
    if (r.status === 401 || r.status === 403) {
      say(text("expired"));
      return "waiting";
    }
    if (r.status === 409 && out.error === "RecordKeyInUse") {
      // Another play took this record key (two pages made the same TID): the same play, a new key.
      forget(play);
      play.rkey = tid();
      keep(play);
      continue;
    }
    if (r.status >= 500 || r.status === 408 || r.status === 429) {
      say(text("queued"));
      return "kept";
    }
    forget(play);
    say(`${text("failed")} ${out.message || r.status}`);
    return "dropped";
  }
  return "kept";
}

// -- sending the kept plays -------------------------------------------------------------------------
let sending = null;
let again = false;
let retries = 0;
let timer = null;

async function sendKeptNow() {
  if (!viewer.token || !viewer.did) return;
  const mine = keptPlays().filter((p) => p.did === viewer.did);
  let sent = 0;
  for (const play of mine) {
    if (localStorage.getItem(KEPT + play.rkey) === null) continue;  // another tab sent it meanwhile
    const outcome = await send(play);
    if (outcome === "waiting") return;
    if (outcome === "kept") {
      clearTimeout(timer);
      timer = setTimeout(sendKept, RETRY_MS[Math.min(retries++, RETRY_MS.length - 1)]);
      return;
    }
    if (outcome === "sent") sent++;
  }
  retries = 0;
  if (sent > 1) say(text("sent").replace("{count}", String(sent)));
}

/** Send the kept plays of the signed-in account, oldest first, one tab at a time (a play sent twice
 *  is still written once). Asked again while sending: another round follows. */
function sendKept() {
  if (sending) {
    again = true;
    return sending;
  }
  const round = () => (navigator.locks ? navigator.locks.request("om-plays", sendKeptNow) : sendKeptNow());
  sending = (async () => {
    do {
      again = false;
      await round();
    } while (again);
  })().catch(() => {}).finally(() => { sending = null; });
  return sending;
}

// -- counting what is heard -------------------------------------------------------------------------
function track(audio) {
  let segments = [];
  let current = null;
  let started = null;
  let uri = audio.dataset.uri;
  let cid = audio.dataset.cid;

  const close = () => {
    if (current && current[1] > current[0]) segments.push(current);
    current = null;
  };
  const flush = (completed, leaving = false) => {
    close();
    if (!segments.length || !uri) {
      segments = [];
      return;
    }
    const play = {
      rkey: tid(), did: viewer.did, uri, cid,
      started: started ?? Date.now(), completed,
      segments: segments.map(([a, b]) => `${Math.round(a * 1000)}-${Math.round(b * 1000)}`).join(","),
    };
    segments = [];
    started = null;
    if (!viewer.token || !viewer.did) {
      suggestSignIn();
      return;
    }
    if (!keep(play) || leaving) {
      send(play, true);  // keepalive: it may outlive the page; if not, the kept copy is sent next time
    } else {
      sendKept();
    }
  };
  /** The element holds another track now (the bar moved on): the listening of the previous one ends. */
  const follow = () => {
    if (audio.dataset.uri === uri && audio.dataset.cid === cid) return;
    flush(false);
    uri = audio.dataset.uri;
    cid = audio.dataset.cid;
    started = null;
  };

  const on = {
    play() {
      follow();
      for (const other of document.querySelectorAll("audio")) {
        if (other !== audio && !other.paused) other.pause();
      }
      for (const t of trackers.values()) if (t.audio !== audio) t.flush(false);
      if (started === null) started = Date.now();
    },
    timeupdate() {
      follow();
      if (audio.paused || audio.seeking) return;
      const t = audio.currentTime;
      if (!current) current = [t, t];
      else if (t >= current[1] && t - current[1] < 2) current[1] = t;
      else { close(); current = [t, t]; }
    },
    playing() {
      // Heard from where it starts (not from the first timeupdate, up to 250 ms later).
      follow();
      if (!current && !audio.seeking) current = [audio.currentTime, audio.currentTime];
    },
    seeking: close,
    pause() {
      // Heard up to where it stopped (not only to the last timeupdate).
      const t = audio.currentTime;
      if (current && t >= current[1] && t - current[1] < 2) current[1] = t;
      close();
    },
    loadstart: follow,
    emptied: follow,
    ended() {
      if (current) current[1] = audio.duration || current[1];
      flush(true);
    },
  };
  return { audio, flush, on };
}

/** audio element -> its tracker, made at its first event. */
const trackers = new Map();
// Media events do not bubble: listen on the document in the capture phase, before the element's own
// listeners (so a play that ends is posted before the bar loads the next track).
for (const type of ["play", "playing", "timeupdate", "seeking", "pause", "loadstart", "emptied", "ended"]) {
  document.addEventListener(type, (event) => {
    const audio = event.target;
    if (!(audio instanceof HTMLAudioElement)) return;
    let t = trackers.get(audio);
    if (!t) {
      if (!audio.dataset.uri) return;
      t = track(audio);
      trackers.set(audio, t);
    }
    t.on[type]();
  }, true);
}

window.addEventListener("pagehide", () => trackers.forEach((t) => t.flush(false, true)));
window.addEventListener("online", () => { retries = 0; sendKept(); });
document.addEventListener("om:page", () => {
  for (const [audio, t] of trackers) {
    if (audio.isConnected) continue;
    t.flush(false);  // its page was swapped out (nav.js): that listening ended
    trackers.delete(audio);
  }
  readViewer();
  sendKept();
});
sendKept();
