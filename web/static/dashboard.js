// The dashboards' charts (web/dashboard*.py) drawn with uPlot (npm `uplot`, served by us from
// /static/vendor/uplot/), and the operator page's live figures (server-sent events).
//
// The data is on the page: <script type="application/json" id="dash-charts"> holds one spec per chart
// ({id, kind: "lines"|"bars", title, x, xKind: "day"|"week"|"month"|"second"|"label", series:
// [{label, values, points}], yKind: "int"|"bps"|"money"|"ms", currency}); each is drawn into the element
// with its id. Every chart has a table with the same figures beside it, so the page says everything
// without this script. Numbers and dates follow the page's language (<html lang>); colours follow the
// light or dark scheme (CSS custom properties of dashboard.css), and the charts are drawn again when
// the scheme or their width changes. After nav.js swaps a page in ("om:page"), its charts are drawn.
//
// Operator page: #live[data-events] names the event stream; each "overview" event's JSON updates the
// elements with data-live="<key>" (formatted by their data-kind) and #live-status says when.

const charts = [];
let source = null;
let observer = null;

const lang = () => document.documentElement.lang || "en";
const css = (name, fallback) =>
  getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;

function moneyFormat(currency, compact = false) {
  const f = new Intl.NumberFormat(lang(), { style: "currency", currency, ...(compact ? { notation: "compact" } : {}) });
  const digits = new Intl.NumberFormat(lang(), { style: "currency", currency }).resolvedOptions().maximumFractionDigits;
  return (minor) => f.format(minor / 10 ** digits);
}

/** value -> text, for a y axis (compact) or a legend. */
function formatter(kind, currency, compact) {
  if (kind === "money") return moneyFormat(currency || "USD", compact);
  if (kind === "bps") {
    const f = new Intl.NumberFormat(lang(), { style: "percent", maximumFractionDigits: 1 });
    return (v) => f.format(v / 10000);
  }
  if (kind === "ms") return (v) => `${Math.floor(v / 60000)}:${String(Math.floor(v / 1000) % 60).padStart(2, "0")}`;
  const f = new Intl.NumberFormat(lang(), compact ? { notation: "compact" } : {});
  return (v) => f.format(v);
}

/** An x value (an index into spec.x) -> its label. */
function xLabel(spec) {
  if (spec.xKind === "second") return (i) => `${Math.floor(i / 60)}:${String(i % 60).padStart(2, "0")}`;
  if (["day", "week", "month"].includes(spec.xKind)) {
    const f = new Intl.DateTimeFormat(lang(), spec.xKind === "month"
      ? { month: "short", year: "numeric", timeZone: "UTC" } : { month: "short", day: "numeric", timeZone: "UTC" });
    return (i) => (spec.x[i] === undefined ? "" : f.format(new Date(`${spec.x[i]}T00:00:00Z`)));
  }
  return (i) => spec.x[i] ?? "";
}

function draw(spec, box) {
  const colors = [1, 2, 3, 4, 5].map((n) => css(`--dash-c${n}`, "#36c"));
  const fg = css("--dash-fg", "#444");
  const grid = css("--dash-grid", "#8883");
  const bars = spec.kind === "bars";
  const n = spec.x.length;
  const label = xLabel(spec);
  const yText = formatter(spec.yKind, spec.currency, true);
  const legendText = formatter(spec.yKind, spec.currency, false);
  const narrow = box.clientWidth < 480;
  const series = [
    { label: spec.xTitle || "", value: (u, i) => (i == null ? "–" : label(i)) },
    ...spec.series.map((s, i) => ({
      label: s.label,
      stroke: colors[i % colors.length],
      fill: bars ? colors[i % colors.length] + "cc" : undefined,
      width: bars ? 0 : 2,
      spanGaps: false,
      paths: s.points ? () => null : bars ? uPlot.paths.bars({ size: [0.7, 64] }) : undefined,
      points: s.points ? { show: true, size: 8, fill: colors[i % colors.length] } : { show: !bars && n < 40 },
      value: (u, v) => (v == null ? "–" : legendText(v)),
    })),
  ];
  // On a phone, category names are cut short (the table beside the chart has them whole).
  const short = (text) => (bars && narrow && String(text).length > 14 ? `${String(text).slice(0, 13)}…` : text);
  const axis = { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
  const xAxis = {
    ...axis,
    values: (u, splits) => splits.map((v) => (Number.isInteger(v) ? short(label(v)) : "")),
    incrs: [1, 2, 5, 7, 10, 14, 15, 30, 60, 120, 300, 600, 1200, 3600],
    grid: { show: !bars, stroke: grid, width: 1 },
  };
  xAxis.size = 40;
  if (bars) {
    const longest = Math.max(0, ...spec.x.map((_, i) => String(short(label(i))).length));
    const tilt = longest * 7 * n > box.clientWidth * 0.9;  // the labels would not fit side by side
    xAxis.splits = () => spec.x.map((_, i) => i);
    xAxis.rotate = tilt ? -45 : 0;
    xAxis.size = tilt ? Math.min(160, 20 + longest * 5.5) : 40;
  }
  // Counts have whole ticks only; money and shares keep uPlot's own steps.
  const yIncrs = spec.yKind === "int" ? [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 1e6, 1e7] : undefined;
  const opts = {
    width: Math.max(200, box.clientWidth),
    height: (narrow ? 220 : 280) + (bars ? xAxis.size - 40 : 0),  // room for tilted labels
    scales: { x: { time: false, range: bars ? [-0.5, n - 0.5] : [0, Math.max(1, n - 1)] }, y: { range: (u, lo, hi) => [0, hi > 0 ? hi * 1.1 : 1] } },
    axes: [xAxis, { ...axis, size: 64, incrs: yIncrs, values: (u, splits) => splits.map((v) => yText(v)) }],
    series,
    legend: { show: true, live: true },
    cursor: { points: { show: !bars } },
  };
  const data = [spec.x.map((_, i) => i), ...spec.series.map((s) => s.values)];
  box.replaceChildren();
  const plot = new uPlot(opts, data, box);
  plot.root.setAttribute("aria-hidden", "true"); // the table beside it holds the same figures
  return plot;
}

function drawAll(root = document) {
  for (const c of charts.splice(0)) c.plot.destroy();
  observer?.disconnect();
  const block = root.querySelector("#dash-charts") ?? document.getElementById("dash-charts");
  if (!block || typeof window.uPlot !== "function") return;
  let specs = [];
  try { specs = JSON.parse(block.textContent); } catch { return; }
  for (const spec of specs) {
    const box = document.getElementById(spec.id);
    if (!box) continue;
    charts.push({ spec, box, plot: draw(spec, box), width: box.clientWidth });
  }
  observer = new ResizeObserver(() => {
    for (const c of charts) {
      if (Math.abs(c.box.clientWidth - c.width) < 8) continue;
      c.width = c.box.clientWidth;
      c.plot.destroy();
      c.plot = draw(c.spec, c.box);
    }
  });
  for (const c of charts) observer.observe(c.box);
}

function liveText(el, value, currency) {
  const kind = el.dataset.kind;
  if (kind === "health") return value ? el.dataset.yes : el.dataset.no;
  if (kind === "lag") return value == null ? "–" : `${new Intl.NumberFormat(lang(), { maximumFractionDigits: 1 }).format(value / 1000)} s`;
  return formatter(kind, currency, false)(value);
}

function live() {
  source?.close();
  source = null;
  const box = document.getElementById("live");
  if (!box?.dataset.events || typeof EventSource !== "function") return;
  const status = document.getElementById("live-status");
  source = new EventSource(box.dataset.events);
  source.addEventListener("overview", (event) => {
    let figures;
    try { figures = JSON.parse(event.data); } catch { return; }
    for (const el of box.querySelectorAll("[data-live]")) {
      const key = el.dataset.live;
      if (!(key in figures)) continue;
      el.dataset.value = figures[key] ?? "";
      el.textContent = liveText(el, figures[key], figures.currency);
    }
    const at = new Date(figures.at ?? Date.now());
    const time = new Intl.DateTimeFormat(lang(), { timeStyle: "medium" }).format(at);
    status.textContent = box.dataset.updated.replace("{time}", time);
    status.dataset.events = String(Number(status.dataset.events ?? 0) + 1);
  });
  source.addEventListener("problem", (event) => {
    try { status.textContent = JSON.parse(event.data).message; } catch { /* keep the last words */ }
  });
  source.onerror = () => { status.textContent = box.dataset.lost; };
}

function start() {
  drawAll();
  live();
}

if (typeof window.uPlot === "function" || document.readyState === "complete") start();
else addEventListener("load", start, { once: true });
document.addEventListener("om:page", (event) => { drawAll(event.detail?.main ?? document); live(); });
matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => drawAll());
addEventListener("pagehide", () => source?.close());
