// Counts what is heard of every <audio data-uri> on the page and, when a listening ends (the track
// ends, another starts, or the page goes away), asks our server to write one
// fm.openmusic.listen.play record to the listener's own PDS: the heard segments in ms.
// Without a signed-in session (no csrf-token meta) nothing is sent. No tokens live here.
const token = document.querySelector('meta[name="csrf-token"]')?.content;
const status = document.getElementById("player-status");
const players = [...document.querySelectorAll("audio[data-uri]")];

// The page's language: the texts come from data-* attributes of #player-status.
const text = (name) => status?.dataset[name] ?? "";
function say(message) {
  if (status) status.textContent = message;
}

function track(audio) {
  let segments = [];
  let current = null;
  let started = null;

  const close = () => {
    if (current && current[1] > current[0]) segments.push(current);
    current = null;
  };
  const flush = (completed) => {
    close();
    if (!segments.length) return;
    const body = new URLSearchParams({
      uri: audio.dataset.uri, cid: audio.dataset.cid, started: String(started ?? Date.now()),
      completed: completed ? "1" : "0",
      segments: segments.map(([a, b]) => `${Math.round(a * 1000)}-${Math.round(b * 1000)}`).join(","),
    });
    segments = [];
    started = null;
    if (!token) {
      say(text("signin"));
      return;
    }
    body.set("csrf_token", token);
    fetch("/play", { method: "POST", body, keepalive: true, credentials: "same-origin" })
      .then(async (r) => {
        const out = await r.json().catch(() => ({}));
        say(r.ok ? text("saved").replace("{seconds}", String(Math.round(out.listenedMs / 1000)))
                 : `${text("failed")} ${out.message || r.status}`);
      })
      .catch(() => say(text("offline")));
  };

  audio.addEventListener("play", () => {
    for (const other of players) {
      if (other !== audio && !other.paused) other.pause();
    }
    for (const t of trackers) if (t.audio !== audio) t.flush(false);
    if (started === null) started = Date.now();
  });
  audio.addEventListener("timeupdate", () => {
    if (audio.paused || audio.seeking) return;
    const t = audio.currentTime;
    if (!current) current = [t, t];
    else if (t >= current[1] && t - current[1] < 2) current[1] = t;
    else { close(); current = [t, t]; }
  });
  audio.addEventListener("seeking", close);
  audio.addEventListener("pause", close);
  audio.addEventListener("ended", () => {
    if (current) current[1] = audio.duration || current[1];
    flush(true);
  });
  return { audio, flush };
}

const trackers = players.map(track);
window.addEventListener("pagehide", () => trackers.forEach((t) => t.flush(false)));
