// The player bar (#player in base.html): one <audio> for the whole visit, outside <main>, so it keeps
// playing while nav.js swaps pages. player.js counts what it plays like any <audio data-uri>: the bar
// sets data-uri and data-cid to the current track's before loading it.
//
// - Pages carry server-rendered Play buttons ([data-play], with the track's uri, cid, audio URL,
//   title, artist, pages, artwork and duration; hidden without JavaScript, when the pages' own
//   <audio controls> play instead). Here they are shown and those <audio> hidden (kept in the DOM).
//   Play on a row makes that list the queue, from that row; [data-play-all] plays the list in order.
// - Queue: next/previous (previous restarts a track heard for more than 3 s), shuffle, repeat (the
//   whole queue), a list to jump in; the next track is preloaded (a second, detached Audio).
// - Media Session: metadata (title, artist, artwork), play/pause/previous/next/seek handlers, position.
// - Keyboard, outside text fields: Space or K play/pause (Space not on buttons and links), J/L and
//   Shift+Left/Right 10 s back/forward, P/N previous/next, M mute.
// - The queue, position, volume and toggles survive a full page load of this tab (sessionStorage
//   "om-player", localStorage "om-player-settings"); after one the track waits, paused, where it was.
// Every visible text comes from the bar's data-label-* attributes (the page's language).

const bar = document.getElementById("player");
const STATE = "om-player";
const SETTINGS = "om-player-settings";
const SKIP_S = 10;

export const player = bar ? setUp() : null;

function setUp() {
  const $ = (id) => document.getElementById(id);
  const audio = $("player-audio");
  const ui = {
    toggle: $("player-toggle"), toggleLabel: $("player-toggle-label"), prev: $("player-prev"), next: $("player-next"),
    shuffle: $("player-shuffle"), repeat: $("player-repeat"), seek: $("player-seek"), elapsed: $("player-elapsed"),
    duration: $("player-duration"), mute: $("player-mute"), volume: $("player-volume"), title: $("player-title"),
    artist: $("player-artist"), art: $("player-art"), placeholder: $("player-art-placeholder"),
    queueToggle: $("player-queue-toggle"), queue: $("player-queue"), list: $("player-queue-list"),
    count: $("player-queue-count"), clear: $("player-clear"), live: $("player-live"),
  };
  const label = (name) => bar.dataset[`label${name[0].toUpperCase()}${name.slice(1)}`] ?? "";
  const preloader = new Audio();
  preloader.preload = "auto";
  preloader.muted = true;

  let queue = [];      // tracks, in the page's order
  let order = [];      // indices into queue, in playing order (shuffled or not)
  let pos = -1;        // the current track's place in order
  let shuffle = false;
  let repeat = false;
  let dragging = false;

  const current = () => (pos >= 0 ? queue[order[pos]] : null);

  // -- the tracks of a page ------------------------------------------------------------------------
  /** A track as a [data-play] button describes it. */
  const trackOf = (button) => {
    const d = button.dataset;
    return {
      uri: d.uri, cid: d.cid, audio: d.audio, title: d.title, artist: d.artist, artistPage: d.artistPage,
      page: d.page, artwork: d.artwork || "", duration: Number(d.duration) || 0,
    };
  };
  /** Show the Play buttons, hide the pages' own players (they stay for the service worker's saving). */
  function enhance(root = document) {
    for (const button of root.querySelectorAll("[data-play], [data-play-all]")) button.hidden = false;
    for (const own of root.querySelectorAll("main audio[data-uri]")) {
      own.preload = "none";  // a swapped-in page's: not fetched at all (the bar plays the track)
      own.hidden = true;
    }
    mark();
  }
  /** The list a Play button belongs to: its list of tracks, or itself alone (a track's page). */
  function listOf(button) {
    const list = button.closest("ol.tracks");
    const buttons = list ? [...list.querySelectorAll("[data-play]")] : [button];
    return { tracks: buttons.map(trackOf), start: Math.max(0, buttons.indexOf(button)) };
  }

  document.addEventListener("click", (event) => {
    const button = event.target instanceof Element ? event.target.closest("[data-play], [data-play-all]") : null;
    if (!button) return;
    event.preventDefault();
    if (button.hasAttribute("data-play-all")) {
      const buttons = [...document.querySelectorAll("main ol.tracks [data-play]")];
      if (buttons.length) playList(buttons.map(trackOf), shuffle ? Math.floor(Math.random() * buttons.length) : 0);
      return;
    }
    if (current()?.uri === button.dataset.uri) {
      togglePlay();
      return;
    }
    const { tracks, start } = listOf(button);
    playList(tracks, start);
  });

  // -- the queue -----------------------------------------------------------------------------------
  function makeOrder(first) {
    order = queue.map((_, i) => i);
    if (!shuffle) {
      pos = first;
      return;
    }
    order.splice(first, 1);
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [order[i], order[j]] = [order[j], order[i]];
    }
    order.unshift(first);
    pos = 0;
  }

  function playList(tracks, start) {
    const chosen = tracks[start];
    queue = tracks.filter((t) => t.uri && t.audio);
    if (!queue.length) return;
    makeOrder(Math.max(0, queue.indexOf(chosen)));
    load(pos);
  }

  /** Load the track at `at` in order; play it unless `play` is false; start at `time` seconds. */
  function load(at, { play = true, time = 0, say = true } = {}) {
    pos = at;
    const t = current();
    audio.dataset.uri = t.uri;
    audio.dataset.cid = t.cid;
    audio.src = t.audio;
    if (time) audio.currentTime = time;
    show(t);
    if (say) speak(label("nowPlaying").replace("{title}", t.title).replace("{artist}", t.artist));
    if (play) audio.play().catch(() => {});
    preloadNext();
    remember();
  }

  const nextAt = () => (pos + 1 < order.length ? pos + 1 : repeat ? 0 : -1);

  /** The next track; at the end of the queue, the first again with repeat on (reshuffled), else
   *  nothing: the bar stays on the last track. */
  function next() {
    if (!current()) return;
    const at = nextAt();
    if (at < 0) return;
    if (at === 0 && shuffle) makeOrder(Math.floor(Math.random() * queue.length));
    load(at);
  }

  function previous() {
    if (!current()) return;
    if (audio.currentTime > 3 || (pos === 0 && !repeat)) {
      audio.currentTime = 0;
      if (audio.paused) audio.play().catch(() => {});
      return;
    }
    load(pos > 0 ? pos - 1 : order.length - 1);
  }

  function togglePlay() {
    if (!current()) return;
    if (audio.paused) audio.play().catch(() => {});
    else audio.pause();
  }

  function skip(seconds) {
    if (!current() || !Number.isFinite(audio.duration)) return;
    audio.currentTime = Math.min(Math.max(0, audio.currentTime + seconds), audio.duration);
  }

  function setShuffle(on) {
    shuffle = on;
    ui.shuffle.setAttribute("aria-pressed", String(on));
    if (current()) makeOrder(order[pos]);
    renderQueue();
    preloadNext();
    saveSettings();
    remember();
  }

  function setRepeat(on) {
    repeat = on;
    ui.repeat.setAttribute("aria-pressed", String(on));
    preloadNext();
    saveSettings();
  }

  function clear() {
    audio.pause();
    queue = [];
    order = [];
    pos = -1;
    delete audio.dataset.uri;
    delete audio.dataset.cid;
    audio.removeAttribute("src");
    audio.load();
    preloader.removeAttribute("src");
    sessionStorage.removeItem(STATE);
    closeQueue();
    bar.hidden = true;
    document.body.classList.remove("has-player");
    if ("mediaSession" in navigator) navigator.mediaSession.metadata = null;
    mark();
    const heading = document.querySelector("main h1") ?? document.querySelector("main");  // focus was in the bar
    if (heading) {
      if (!heading.hasAttribute("tabindex")) heading.setAttribute("tabindex", "-1");
      heading.focus();
    }
  }

  /** While a track plays, the next one loads in a detached Audio (the browser's cache keeps it). */
  function preloadNext() {
    if (audio.paused) return;
    const at = nextAt();
    const upcoming = at >= 0 && at !== pos ? queue[order[at]] : null;
    if (!upcoming) {
      preloader.removeAttribute("src");
      return;
    }
    if (preloader.getAttribute("src") !== upcoming.audio) {
      preloader.src = upcoming.audio;
      preloader.load();
    }
  }

  // -- showing it ----------------------------------------------------------------------------------
  function show(t) {
    bar.hidden = false;
    document.body.classList.add("has-player");
    ui.title.textContent = t.title;
    ui.title.href = t.page;
    ui.artist.textContent = t.artist;
    ui.artist.href = t.artistPage;
    if (t.artwork) {
      ui.art.src = t.artwork;
      ui.art.hidden = false;
      ui.placeholder.hidden = true;
    } else {
      ui.art.removeAttribute("src");
      ui.art.hidden = true;
      ui.placeholder.hidden = false;
    }
    ui.seek.max = String(Math.max(1, Math.round(t.duration / 1000)));
    ui.seek.value = "0";
    ui.duration.textContent = clock(t.duration / 1000);
    times();
    renderQueue();
    mark();
    if ("mediaSession" in navigator && "MediaMetadata" in window) {
      const icon = new URL("/static/web/icons/icon-512.png", location.href).href;
      navigator.mediaSession.metadata = new MediaMetadata({
        title: t.title, artist: t.artist,
        artwork: [t.artwork ? { src: new URL(t.artwork, location.href).href } : { src: icon, sizes: "512x512", type: "image/png" }],
      });
    }
  }

  function renderQueue() {
    const focused = ui.list.contains(document.activeElement) ? document.activeElement.dataset.at : null;
    ui.count.textContent = String(queue.length);
    const items = order.map((index, at) => {
      const t = queue[index];
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.at = String(at);
      const title = document.createElement("span");
      title.className = "player-queue-title";
      title.textContent = t.title;
      const artist = document.createElement("span");
      artist.className = "player-queue-artist";
      artist.textContent = t.artist;
      button.append(title, artist);
      if (at === pos) button.setAttribute("aria-current", "true");
      li.append(button);
      return li;
    });
    ui.list.replaceChildren(...items);
    if (focused !== null) ui.list.querySelector(`[data-at="${focused}"]`)?.focus();
  }

  /** The Play buttons of the page show which track plays (Pause on it, the row highlighted). */
  function mark() {
    const t = current();
    const playing = !!t && !audio.paused;
    for (const button of document.querySelectorAll("[data-play]")) {
      const here = !!t && button.dataset.uri === t.uri;
      const on = here && playing;
      button.classList.toggle("is-playing", on);
      button.closest("li.track")?.classList.toggle("is-current", here);
      const text = on ? button.dataset.labelPause : button.dataset.labelPlay;
      if (!text) continue;
      const inner = button.querySelector(".label");
      if (inner) inner.textContent = text;
      else button.setAttribute("aria-label", text);
    }
    ui.toggle.classList.toggle("is-playing", playing);
    ui.toggleLabel.textContent = playing ? label("pause") : label("play");
  }

  function times() {
    const now = audio.currentTime || 0;
    const total = Number.isFinite(audio.duration) ? audio.duration : (current()?.duration ?? 0) / 1000;
    if (!dragging) ui.seek.value = String(Math.round(now));
    ui.elapsed.textContent = clock(now);
    ui.seek.setAttribute("aria-valuetext", label("of").replace("{time}", clock(now)).replace("{duration}", clock(total)));
  }

  function speak(message) {
    ui.live.textContent = message;
  }

  // -- the audio's events ----------------------------------------------------------------------------
  audio.addEventListener("play", () => { mark(); session("playing"); preloadNext(); });
  audio.addEventListener("pause", () => { mark(); session("paused"); remember(); });
  audio.addEventListener("timeupdate", times);
  audio.addEventListener("loadedmetadata", () => {
    if (!Number.isFinite(audio.duration)) return;
    ui.seek.max = String(Math.max(1, Math.round(audio.duration)));
    ui.duration.textContent = clock(audio.duration);
    times();
    position();
  });
  audio.addEventListener("seeked", position);
  audio.addEventListener("ended", next);
  // A track that cannot be loaded (its audio taken down: 451, or gone): say so, and go on to the
  // next one, unless every track of the queue failed in a row.
  let failures = 0;
  audio.addEventListener("error", () => {
    const t = current();
    if (!t || !audio.src) return;
    failures += 1;
    speak(label("unavailable").replace("{title}", t.title));
    ui.title.textContent = label("unavailable").replace("{title}", t.title);
    if (failures < queue.length && nextAt() >= 0) setTimeout(next, 1500);
  });
  audio.addEventListener("playing", () => { failures = 0; });

  function session(state) {
    if (!("mediaSession" in navigator)) return;
    navigator.mediaSession.playbackState = state;
    position();
  }
  function position() {
    if (!("mediaSession" in navigator) || !navigator.mediaSession.setPositionState) return;
    if (!Number.isFinite(audio.duration) || audio.duration <= 0) return;
    try {
      navigator.mediaSession.setPositionState({
        duration: audio.duration, playbackRate: audio.playbackRate || 1,
        position: Math.min(audio.currentTime, audio.duration),
      });
    } catch { /* a position the browser refuses: it keeps the last one */ }
  }
  if ("mediaSession" in navigator) {
    const actions = {
      play: () => audio.play().catch(() => {}),
      pause: () => audio.pause(),
      previoustrack: previous,
      nexttrack: () => next(),
      seekbackward: (d) => skip(-(d.seekOffset || SKIP_S)),
      seekforward: (d) => skip(d.seekOffset || SKIP_S),
      seekto: (d) => {
        if (d.fastSeek && "fastSeek" in audio) audio.fastSeek(d.seekTime);
        else audio.currentTime = d.seekTime;
      },
    };
    for (const [action, handler] of Object.entries(actions)) {
      try {
        navigator.mediaSession.setActionHandler(action, handler);
      } catch { /* an action this browser does not know */ }
    }
  }

  // -- the controls ----------------------------------------------------------------------------------
  ui.toggle.addEventListener("click", togglePlay);
  ui.prev.addEventListener("click", previous);
  ui.next.addEventListener("click", () => next());
  ui.shuffle.addEventListener("click", () => setShuffle(!shuffle));
  ui.repeat.addEventListener("click", () => setRepeat(!repeat));
  ui.clear.addEventListener("click", clear);
  ui.seek.addEventListener("input", () => {
    dragging = true;
    ui.elapsed.textContent = clock(Number(ui.seek.value));
  });
  ui.seek.addEventListener("change", () => {
    dragging = false;
    if (current()) audio.currentTime = Number(ui.seek.value);
  });
  ui.volume.addEventListener("input", () => {
    audio.volume = Number(ui.volume.value) / 100;
    if (audio.muted && audio.volume > 0) audio.muted = false;
    saveSettings();
  });
  ui.mute.addEventListener("click", () => { audio.muted = !audio.muted; saveSettings(); });
  audio.addEventListener("volumechange", () => {
    ui.mute.setAttribute("aria-pressed", String(audio.muted));
    ui.mute.classList.toggle("is-muted", audio.muted || audio.volume === 0);
    ui.volume.value = String(audio.muted ? 0 : Math.round(audio.volume * 100));
  });

  ui.list.addEventListener("click", (event) => {
    const button = event.target instanceof Element ? event.target.closest("button[data-at]") : null;
    if (button) load(Number(button.dataset.at));
  });
  function openQueue() {
    ui.queue.hidden = false;
    ui.queueToggle.setAttribute("aria-expanded", "true");
    (ui.list.querySelector("[aria-current]") ?? ui.list.querySelector("button"))?.scrollIntoView({ block: "nearest" });
  }
  function closeQueue() {
    ui.queue.hidden = true;
    ui.queueToggle.setAttribute("aria-expanded", "false");
  }
  ui.queueToggle.addEventListener("click", () => (ui.queue.hidden ? openQueue() : closeQueue()));
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || ui.queue.hidden) return;
    const inside = ui.queue.contains(document.activeElement);
    closeQueue();
    if (inside || document.activeElement === document.body) ui.queueToggle.focus();
  });

  // -- keyboard shortcuts ------------------------------------------------------------------------------
  const TYPING = new Set(["text", "search", "email", "number", "password", "tel", "url", "date", "datetime-local",
                          "month", "time", "week"]);
  const typing = (el) => el instanceof HTMLTextAreaElement || el instanceof HTMLSelectElement
    || (el instanceof HTMLInputElement && TYPING.has(el.type)) || (el instanceof HTMLElement && el.isContentEditable);
  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented || event.isComposing || event.ctrlKey || event.metaKey || event.altKey || !current()) return;
    const el = event.target;
    if (typing(el)) return;
    const key = event.key;
    const onControl = el instanceof Element && !!el.closest("button, a[href], summary, input, [role=button], [tabindex]:not([tabindex='-1'])");
    let act = null;
    if (key === " " && !onControl) act = () => { if (!event.repeat) togglePlay(); };
    else if (key === "k" || key === "K") act = () => { if (!event.repeat) togglePlay(); };
    else if (key === "j" || key === "J") act = () => skip(-SKIP_S);
    else if (key === "l" || key === "L") act = () => skip(SKIP_S);
    else if (event.shiftKey && (key === "ArrowLeft" || key === "ArrowRight") && !(el instanceof HTMLInputElement)) {
      act = () => skip(key === "ArrowLeft" ? -SKIP_S : SKIP_S);
    } else if (key === "n" || key === "N") act = () => next();
    else if (key === "p" || key === "P") act = previous;
    else if (key === "m" || key === "M") act = () => { audio.muted = !audio.muted; saveSettings(); };
    if (!act) return;
    event.preventDefault();
    act();
  });

  // -- what survives a full page load ------------------------------------------------------------------
  function remember() {
    if (!current()) return;
    try {
      sessionStorage.setItem(STATE, JSON.stringify({ queue, order, pos, time: audio.currentTime || 0 }));
    } catch { /* storage full or off: the bar simply starts empty next time */ }
  }
  function saveSettings() {
    try {
      localStorage.setItem(SETTINGS, JSON.stringify({ volume: audio.volume, muted: audio.muted, shuffle, repeat }));
    } catch { /* as above */ }
  }
  function restore() {
    try {
      const s = JSON.parse(localStorage.getItem(SETTINGS) ?? "{}");
      if (typeof s.volume === "number") audio.volume = Math.min(1, Math.max(0, s.volume));
      audio.muted = s.muted === true;
      shuffle = s.shuffle === true;
      repeat = s.repeat === true;
    } catch { /* defaults */ }
    ui.shuffle.setAttribute("aria-pressed", String(shuffle));
    ui.repeat.setAttribute("aria-pressed", String(repeat));
    ui.volume.value = String(audio.muted ? 0 : Math.round(audio.volume * 100));
    ui.mute.setAttribute("aria-pressed", String(audio.muted));
    ui.mute.classList.toggle("is-muted", audio.muted || audio.volume === 0);
    try {
      const s = JSON.parse(sessionStorage.getItem(STATE) ?? "null");
      if (!s || !Array.isArray(s.queue) || !s.queue.length || !Array.isArray(s.order)) return;
      if (s.order.length !== s.queue.length || !s.order.every((i) => Number.isInteger(i) && s.queue[i])) return;
      if (!Number.isInteger(s.pos) || s.pos < 0 || s.pos >= s.order.length) return;
      queue = s.queue;
      order = s.order;
      load(s.pos, { play: false, time: Number(s.time) || 0, say: false });
    } catch {
      sessionStorage.removeItem(STATE);
    }
  }
  addEventListener("pagehide", remember);

  restore();
  enhance();
  document.addEventListener("om:page", (event) => enhance(event.detail?.main ?? document));

  return {
    audio, preloader,
    get queue() { return order.map((i) => queue[i]); },
    get index() { return pos; },
    get shuffle() { return shuffle; },
    get repeat() { return repeat; },
    playList, next: () => next(), previous, togglePlay, skip, setShuffle, setRepeat, clear,
  };
}

/** Seconds as m:ss (or h:mm:ss). */
function clock(seconds) {
  const s = Math.max(0, Math.floor(Number.isFinite(seconds) ? seconds : 0));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}
