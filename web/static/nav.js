// Page changes that do not stop the music: same-origin links and GET forms (search, sort) fetch the
// next page and swap it in (its <main>, <title>, header, footer and the viewer's meta tags) instead of
// loading a new document, so the player bar (bar.js) and its <audio> keep playing. History entries are
// pushed and popstate brings the earlier page back (with its scroll position). Focus moves to the new
// page's heading and its title is announced (#nav-status, aria-live).
//
// A full navigation happens instead (location.assign) when the fetch fails or times out, the answer is
// not an HTML page of this layout, it asks to refresh itself (Refresh header), it changes the language,
// or its <head> loads other scripts or stylesheets than this document's (a page with its own scripts,
// e.g. the wallet). Never intercepted: modified clicks, target/download links, /logout, the sign-in
// pages (/login, /welcome, /oauth/*: always full loads), /wallet*, media, the API. POST forms submit
// normally (the page reloads and the music stops), except like/unlike, follow/unfollow, vote and
// review, which are posted with fetch and their answer swapped in the same way.
//
// Offline (navigator.onLine false), a POST form is not submitted (the browser would show its own error
// page instead of this one): a message under the form (role=status, the text from #nav-status's
// data-offline) says nothing was sent, and the page stays as it is. The same when a like's fetch fails
// for want of a network. The messages go away when the browser is back online.
//
// After each swap the "om:page" event is dispatched on the document (detail: { main }): modules that
// set up what they find on a page listen to it (bar.js, player.js, offline.js).

const SKIP = /^\/(logout|login|welcome|oauth\/|wallet|audio\/|image\/|static\/|xrpc\/|embed\/|oembed|sw\.js|manifest\.webmanifest|health|stripe\/)/;
const SOFT_POSTS = new Set(["/like", "/unlike", "/follow", "/unfollow", "/vote", "/review"]);
const TIMEOUT_MS = 20_000;

/** What a page loads in its <head>: the same list, the same page scripts. */
const headKey = (doc) => [...doc.head.querySelectorAll("script, link[rel~=stylesheet]")]
  .map((e) => `${e.tagName}|${e.getAttribute("type") ?? ""}|${e.getAttribute("src") ?? e.getAttribute("href") ?? e.textContent}`)
  .join("\n");
const HEAD = headKey(document);
const LANG = document.documentElement.lang;

let shown = location.pathname + location.search;  // the page <main> shows now
let controller = null;
let generation = 0;

if (document.querySelector("main") && document.getElementById("player")) {
  history.scrollRestoration = "manual";
  history.replaceState({ ...(history.state ?? {}), om: true }, "");
  const y = history.state?.y;
  const how = performance.getEntriesByType("navigation")[0]?.type;
  if (typeof y === "number" && (how === "reload" || how === "back_forward")) {
    addEventListener("load", () => scrollTo(0, y), { once: true });
  }
  document.addEventListener("click", onClick);
  document.addEventListener("submit", onSubmit);
  addEventListener("popstate", onPopState);
  addEventListener("online", () => { for (const note of document.querySelectorAll(".om-offline")) note.remove(); });
  addEventListener("pagehide", rememberScroll);
}

function rememberScroll() {
  history.replaceState({ ...(history.state ?? {}), om: true, y: scrollY }, "");
}

/** May this URL be fetched and swapped in? */
function eligible(url) {
  return url.origin === location.origin && !SKIP.test(url.pathname) && !url.searchParams.has("lang");
}

function onClick(event) {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const link = event.target instanceof Element ? event.target.closest("a[href]") : null;
  if (!(link instanceof HTMLAnchorElement)) return;
  if ((link.target && link.target !== "_self") || link.hasAttribute("download")) return;
  const url = new URL(link.href);
  if (!/^https?:$/.test(url.protocol) || !eligible(url)) return;
  if (url.pathname + url.search === location.pathname + location.search && url.hash) return;  // an anchor here
  event.preventDefault();
  go(url);
}

function onSubmit(event) {
  if (event.defaultPrevented) return;
  const form = event.target;
  const submitter = event.submitter;
  const attr = (name) => submitter?.getAttribute(`form${name}`) ?? form.getAttribute(name);
  if ((attr("target") ?? "_self") !== "_self") return;
  const method = (attr("method") ?? "get").toLowerCase();
  if (method === "post" && navigator.onLine === false) {
    event.preventDefault();  // nothing can be sent: say so here rather than load the browser's error page
    offline(form);
    return;
  }
  const action = new URL(attr("action") ?? "", location.href);
  let data;
  try {
    data = new FormData(form, submitter);
  } catch {
    data = new FormData(form);
  }
  if ([...data.values()].some((v) => typeof v !== "string")) return;  // files: the browser sends them
  const fields = new URLSearchParams(data);
  if (method === "get" && eligible(action)) {
    event.preventDefault();
    action.search = fields.toString();
    go(action);
  } else if (method === "post" && action.origin === location.origin && SOFT_POSTS.has(action.pathname)
             && (attr("enctype") ?? "application/x-www-form-urlencoded") === "application/x-www-form-urlencoded") {
    event.preventDefault();
    go(action, { form, body: fields });
  }
}

function onPopState(event) {
  if (location.pathname + location.search === shown) return;  // only the fragment changed: the browser scrolls
  go(new URL(location.href), { push: false, y: event.state?.y ?? 0 });
}

/** Fetch `url` and swap it in. `form` and `body`: a POST form's; `push`: a new history entry;
 *  `y`: the scroll position to restore (popstate). */
async function go(url, { push = true, y = null, form = null, body = null } = {}) {
  controller?.abort();
  const mine = new AbortController();
  controller = mine;
  const turn = ++generation;
  const timer = setTimeout(() => mine.abort(), TIMEOUT_MS);
  if (push) rememberScroll();
  document.documentElement.classList.add("om-navigating");
  let response;
  let html;
  try {
    response = await fetch(url, {
      method: body ? "POST" : "GET", body, signal: mine.signal, credentials: "same-origin",
      headers: { Accept: "text/html", "X-OM-Navigation": "1" },
    });
    const type = response.headers.get("content-type") ?? "";
    if (!type.includes("text/html") || response.headers.has("refresh")) {
      mine.abort();  // not for a swap: the browser loads it
      return leave(response.redirected || !body ? response.url : null, form);
    }
    html = await response.text();
  } catch (err) {
    if (turn !== generation) return;  // a newer navigation took over
    // A POST that found no network (not our timeout): posting the form again would end on the
    // browser's error page.
    if (body && (navigator.onLine === false || (err instanceof TypeError && !mine.signal.aborted))) {
      return offline(form);
    }
    return leave(body ? null : url.href, form);
  } finally {
    clearTimeout(timer);
    if (turn === generation) document.documentElement.classList.remove("om-navigating");
  }
  if (turn !== generation) return;
  const doc = new DOMParser().parseFromString(html, "text/html");
  // The address: where a redirect ended; a POST's answer that was not redirected keeps this page's.
  let address = response.redirected ? new URL(response.url) : body ? null : url;
  if (address && !response.redirected && url.hash) address.hash = url.hash;
  if (!doc.querySelector("main") || !doc.getElementById("player") || headKey(doc) !== HEAD
      || doc.documentElement.lang !== LANG) {
    return leave(address?.href ?? null, form);
  }
  const formAt = form ? [...document.querySelectorAll("main form")].indexOf(form) : -1;
  swap(doc);
  if (address) {
    const same = address.href === location.href;
    if (push && !same) history.pushState({ om: true }, "", address.href);
    else history.replaceState({ om: true }, "", address.href);
  }
  shown = location.pathname + location.search;
  const main = document.querySelector("main");
  if (form) {
    // A like: stay where the listener is, on the same form's button in the new page.
    const again = [...main.querySelectorAll("form")][formAt];
    (again?.querySelector("button, [type=submit]") ?? heading(main)).focus({ preventScroll: true });
  } else {
    heading(main).focus({ preventScroll: true });
    const target = location.hash && document.getElementById(decodeURIComponent(location.hash.slice(1)));
    if (target) target.scrollIntoView();
    else scrollTo(0, y ?? 0);
  }
  announce(document.title);
  document.dispatchEvent(new CustomEvent("om:page", { detail: { main } }));
}

/** A full navigation to `href` (a POST form without an address: the browser submits it itself). */
function leave(href, form) {
  if (href) location.assign(href);
  else if (form) HTMLFormElement.prototype.submit.call(form);
}

/** Say under `form` that it was not sent, being offline (one message per form, announced again). */
function offline(form) {
  const text = document.getElementById("nav-status")?.dataset.offline;
  if (!text || !form.isConnected) return;
  let note = form.nextElementSibling;
  if (!note?.classList.contains("om-offline")) {
    note = document.createElement("p");
    note.className = "notice error om-offline";
    note.setAttribute("role", "status");
    note.setAttribute("aria-live", "polite");
    form.after(note);
  }
  note.textContent = "";
  requestAnimationFrame(() => { note.textContent = text; });
}

function swap(doc) {
  document.title = doc.title;
  for (const selector of ["main", "body > header", "body > footer"]) {
    const now = document.querySelector(selector);
    const next = doc.querySelector(selector);
    if (now && next) now.replaceWith(document.adoptNode(next));
  }
  for (const name of ["csrf-token", "viewer-did"]) {
    const now = document.head.querySelector(`meta[name="${name}"]`);
    const next = doc.head.querySelector(`meta[name="${name}"]`);
    if (now && next) now.content = next.content;
    else if (now) now.remove();
    else if (next) document.head.append(document.adoptNode(next));
  }
}

/** The new page's heading (or its <main>), focusable from script. */
function heading(main) {
  const target = main.querySelector("h1") ?? main;
  if (!target.hasAttribute("tabindex")) target.setAttribute("tabindex", "-1");
  return target;
}

function announce(message) {
  const live = document.getElementById("nav-status");
  if (!live) return;
  live.textContent = "";
  requestAnimationFrame(() => { live.textContent = message; });
}
