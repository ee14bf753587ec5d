// Open Music's service worker (served as /sw.js so its scope is the whole site; web/offline.py).
//
// Caches, all of this origin's Cache Storage:
// - SHELL (versioned): the app shell (CSS, scripts, icons, the manifest, /offline), fetched signed out
//   at install. Network first, the copy when offline.
// - PAGES: the track and album pages the listener saved (offline.js puts them there). Pages are
//   network first; a saved page's copy is refreshed on every visit and answers when offline;
//   any other page answers /offline when offline. nav.js's page fetches (X-OM-Navigation: 1) are
//   answered the same way when the browser is offline, so pages change without a reload offline too;
//   while online, a failed fetch of nav.js's is left to fail (e.g. a redirect to another origin, which
//   its custom header cannot follow) and nav.js loads the page itself. Nothing else a page sends
//   is kept (no POST, no unsaved page: they say Cache-Control: no-store).
// - MEDIA: saved audio and artwork, keyed by their URLs; offline.js puts them there only after their
//   bytes hashed to the blob's CID. Answered from the cache first, Range requests included
//   (206 + Content-Range from the cached Blob), so a saved track plays with or without a network.
// After signing out (/login?signed_out=1), saved pages are fetched again, signed out, so the copies
// no longer carry the account.

const VERSION = "4";
const SHELL = `om-shell-${VERSION}`;
const PAGES = "om-pages";
const MEDIA = "om-media";
const OFFLINE = "/offline";
const SHELL_NEEDED = [OFFLINE, "/static/web/web.css", "/static/web/player.js", "/static/web/ids.js",
                      "/static/web/offline.js", "/static/web/bar.js", "/static/web/nav.js"];
const SHELL_URLS = [...SHELL_NEEDED, "/manifest.webmanifest", "/static/web/icons/icon.svg",
                    "/static/web/icons/icon-192.png"];
const MEDIA_PATH = /^\/(audio|image)\//;

self.addEventListener("install", (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(SHELL);
    // revalidated, not downloaded again: the page has just fetched most of these (304 Not Modified)
    const request = (url) => new Request(url, { credentials: "omit", cache: "no-cache" });
    await cache.addAll(SHELL_NEEDED.map(request));  // without these the worker does not install
    await Promise.allSettled(SHELL_URLS.filter((u) => !SHELL_NEEDED.includes(u)).map((u) => cache.add(request(u))));
    await self.skipWaiting();
  })());
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name.startsWith("om-shell-") && name !== SHELL) await caches.delete(name);
    }
    await self.clients.claim();
  })());
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET") return;
  const url = new URL(request.url);
  if (MEDIA_PATH.test(url.pathname)) {
    event.respondWith(media(request));
  } else if (url.origin !== self.location.origin) {
    return;
  } else if (request.mode === "navigate" || request.headers.get("x-om-navigation") === "1") {
    // a navigation, or nav.js fetching the next page to swap in (the same answers, offline too)
    event.respondWith(page(event, url));
  } else if (SHELL_URLS.includes(url.pathname) && !url.search) {
    event.respondWith(shell(request, url));
  }
});

/** Path of a page, the key of its saved copy (the query, e.g. ?lang=, is not part of it). */
const pageKey = (url) => new URL(url.pathname, self.location.origin).href;

async function page(event, url) {
  try {
    const response = await fetch(event.request);
    if (response.ok && response.type === "basic") event.waitUntil(refreshSaved(url, response.clone()));
    if (url.pathname === "/login" && url.searchParams.get("signed_out") === "1") event.waitUntil(resaveSignedOut());
    return response;
  } catch (err) {
    // Online, only a navigation's network error is answered from the copies; nav.js's fetch fails on
    // (it may have failed for another reason than the network), and nav.js navigates instead.
    if (self.navigator.onLine !== false && event.request.mode !== "navigate") throw err;
    const saved = await (await caches.open(PAGES)).match(pageKey(url));
    if (saved) return saved;
    const fallback = await (await caches.open(SHELL)).match(OFFLINE);
    if (fallback) return fallback;
    throw err;
  }
}

async function refreshSaved(url, response) {
  const cache = await caches.open(PAGES);
  if (await cache.match(pageKey(url))) await cache.put(pageKey(url), response);
}

async function resaveSignedOut() {
  const cache = await caches.open(PAGES);
  for (const request of await cache.keys()) {
    try {
      const response = await fetch(request.url, { credentials: "same-origin", cache: "no-store" });
      if (response.ok) await cache.put(request.url, response);
      else await cache.delete(request.url);
    } catch {
      await cache.delete(request.url);  // cannot refresh it now: drop the copy that names the account
    }
  }
}

async function shell(request, url) {
  const cache = await caches.open(SHELL);
  try {
    const response = await fetch(request);
    if (response.ok) await cache.put(url.pathname, response.clone());
    return response;
  } catch (err) {
    const copy = await cache.match(url.pathname);
    if (copy) return copy;
    throw err;
  }
}

async function media(request) {
  const copy = await (await caches.open(MEDIA)).match(request.url);
  if (!copy) return fetch(request);
  return ranged(copy, request.headers.get("range"));
}

/** The cached `response`, or the part a single-range `Range: bytes=...` header asks for (206 or 416). */
async function ranged(response, range) {
  const match = range && /^bytes=(\d*)-(\d*)$/.exec(range.trim());
  if (!match || (match[1] === "" && match[2] === "")) return response;
  const blob = await response.blob();
  const size = blob.size;
  const type = response.headers.get("content-type") || "application/octet-stream";
  let start, end;
  if (match[1] === "") {
    start = Math.max(0, size - Number(match[2]));
    end = size - 1;
  } else {
    start = Number(match[1]);
    end = match[2] === "" ? size - 1 : Math.min(Number(match[2]), size - 1);
  }
  if (start >= size || start > end) {
    return new Response(null, { status: 416, headers: { "Content-Range": `bytes */${size}` } });
  }
  return new Response(blob.slice(start, end + 1, type), {
    status: 206,
    headers: {
      "Content-Type": type, "Content-Length": String(end - start + 1),
      "Content-Range": `bytes ${start}-${end}/${size}`, "Accept-Ranges": "bytes",
    },
  });
}
