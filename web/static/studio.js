// The studio's forms (web/studio.py, web/studio_album.py), made nicer with a script; each works without it.
//
// - A file input with data-kind (audio, artwork) uploads the chosen file at once to POST
//   /studio/upload?kind=… (the form's data-upload), raw, with the CSRF token in X-CSRF-Token, showing
//   a progress bar. The answer's blob ref goes into the hidden #audioBlob / #artworkBlob, the file
//   input is emptied (the form then carries only the ref), and the tags read from an audio file fill
//   the title, genre, BPM and ISRC fields that are still empty, and #durationMs. While an upload runs,
//   the form is not sent.
// - The splits table shows its running total, and a button adds rows (up to 20).
// - The album's track list: move a row with its ↑/↓ buttons, by dragging, or with Alt+ArrowUp/Down;
//   the position numbers follow the order shown, and a status line announces each move.

const form = document.querySelector("form[data-upload]");
if (form) setUp(form);

function label(name, values = {}) {
  const text = form.dataset[name] ?? "";
  return text.replace(/\{(\w+)\}/g, (_, key) => values[key] ?? "");
}

function setUp(form) {
  let running = 0;
  for (const input of form.querySelectorAll("input[type=file][data-kind]")) {
    input.addEventListener("change", () => {
      const file = input.files?.[0];
      if (!file) return;
      running += 1;
      upload(input, file).finally(() => { running -= 1; });
    });
  }
  form.addEventListener("submit", (event) => {
    if (running > 0) {
      event.preventDefault();
      status(form.querySelector(".upload-status"), label("labelWait"), true);
    }
  });
  setUpSplits(form);
  setUpRows(form);
}

function status(element, text, failed = false) {
  if (!element) return;
  element.textContent = text;
  element.classList.toggle("failed", failed);
}

function upload(input, file) {
  const kind = input.dataset.kind;
  const bar = document.getElementById(`${kind}-progress`);
  const line = document.getElementById(`${kind}-status`);
  const hidden = document.getElementById(`${kind}Blob`);
  bar.hidden = false;
  bar.value = 0;
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `${form.dataset.upload}?kind=${encodeURIComponent(kind)}`);
    xhr.setRequestHeader("X-CSRF-Token", form.dataset.csrf);
    xhr.setRequestHeader("X-File-Name", encodeURIComponent(file.name).slice(0, 256));
    xhr.setRequestHeader("Content-Type", file.type || "application/octet-stream");
    xhr.upload.addEventListener("progress", (event) => {
      if (!event.lengthComputable) return;
      const percent = Math.round((event.loaded / event.total) * 100);
      bar.value = percent;
      status(line, percent < 100 ? label("labelUploading", { percent }) : label("labelSending"));
    });
    xhr.addEventListener("load", () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch { body = { message: xhr.statusText }; }
      if (xhr.status === 200 && body.blob) {
        hidden.value = JSON.stringify(body.blob);
        input.value = "";
        input.required = false;
        bar.value = 100;
        status(line, label("labelUploaded", { name: file.name }));
        if (kind === "audio") prefill(body);
      } else {
        bar.hidden = true;
        input.value = "";
        status(line, label("labelFailed", { reason: body.message || xhr.statusText }), true);
      }
      resolve();
    });
    xhr.addEventListener("error", () => {
      bar.hidden = true;
      status(line, label("labelFailed", { reason: navigator.onLine ? "network error" : "offline" }), true);
      resolve();
    });
    xhr.send(file);
  });
}

function prefill(info) {
  const duration = document.getElementById("durationMs");
  if (duration && info.durationMs) duration.value = String(info.durationMs);
  for (const [id, value] of [["title", info.title], ["genre", info.genre], ["bpm", info.bpm], ["isrc", info.isrc]]) {
    const field = document.getElementById(id);
    if (field && !field.value && value != null) field.value = String(value);
  }
}

function setUpSplits(form) {
  const rows = form.querySelector("#split-rows");
  const total = form.querySelector("#split-total");
  const add = form.querySelector("#add-split");
  if (!rows || !total || !add) return;
  const sum = () => {
    let bps = 0;
    for (const input of rows.querySelectorAll("input[name=splitPercent]")) {
      const value = Number(input.value.replace(",", "."));
      if (input.value && Number.isFinite(value)) bps += Math.round(value * 100);
    }
    total.value = bps ? `${bps / 100} %` : "";
  };
  rows.addEventListener("input", sum);
  sum();
  add.hidden = false;
  add.addEventListener("click", () => {
    if (rows.rows.length >= 20) return;
    const copy = rows.rows[rows.rows.length - 1].cloneNode(true);
    for (const input of copy.querySelectorAll("input")) input.value = "";
    rows.append(copy);
    copy.querySelector("input").focus();
  });
}

function setUpRows(form) {
  const list = form.querySelector("#album-rows");
  if (!list) return;
  const announce = form.querySelector("#order-status");
  const renumber = () => {
    [...list.children].forEach((row, i) => { row.querySelector("input[name=position]").value = String(i + 1); });
  };
  const move = (row, by) => {
    const target = by < 0 ? row.previousElementSibling : row.nextElementSibling;
    if (!target) return;
    if (by < 0) target.before(row); else target.after(row);
    renumber();
    status(announce, label("labelMoved", { title: row.dataset.title, position: [...list.children].indexOf(row) + 1 }));
  };
  for (const row of list.children) {
    row.querySelector(".move").hidden = false;
    row.querySelector(".up").addEventListener("click", (e) => { move(row, -1); e.currentTarget.focus(); });
    row.querySelector(".down").addEventListener("click", (e) => { move(row, 1); e.currentTarget.focus(); });
    row.addEventListener("keydown", (event) => {
      if (!event.altKey || (event.key !== "ArrowUp" && event.key !== "ArrowDown")) return;
      event.preventDefault();
      const focused = document.activeElement;
      move(row, event.key === "ArrowUp" ? -1 : 1);
      focused?.focus();
    });
    row.addEventListener("dragstart", (event) => {
      row.classList.add("dragging");
      event.dataTransfer.effectAllowed = "move";
      event.dataTransfer.setData("text/plain", row.dataset.title);
    });
    row.addEventListener("dragend", () => { row.classList.remove("dragging"); renumber(); });
  }
  list.addEventListener("dragover", (event) => {
    const dragging = list.querySelector(".dragging");
    if (!dragging) return;
    event.preventDefault();
    const after = [...list.children].find((r) => r !== dragging && event.clientY < r.getBoundingClientRect().top + r.offsetHeight / 2);
    if (after) after.before(dragging); else list.append(dragging);
  });
  renumber();
}
