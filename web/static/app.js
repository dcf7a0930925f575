// tcplab's page: pick or edit a scenario, run it, look at the result.
"use strict";

const $ = (id) => document.getElementById(id);
let opened = ""; // the name of a file opened from disk, if any
let loadedText = ""; // the library scenario's text as loaded
let result = null; // the last run

function esc(s) {
  return String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
}

function fmtTime(ns) {
  const s = Math.floor(ns / 1e9), us = Math.floor((ns % 1e9) / 1e3);
  return s + "." + String(us).padStart(6, "0");
}

// The gutter numbers the editor's lines and marks those with errors.
function drawGutter(errLines) {
  const n = $("source").value.split("\n").length;
  const out = [];
  for (let i = 1; i <= n; i++) {
    const e = errLines && errLines.get(i);
    out.push(e ? `<span class="err" title="${esc(e)}">${i}</span>` : `<span>${i}</span>`);
  }
  $("gutter").innerHTML = out.join("");
}

function showErrors(errors) {
  const lines = new Map();
  const list = $("errors");
  list.innerHTML = "";
  for (const e of errors) {
    if (e.line) lines.set(e.line, e.msg);
    const li = document.createElement("li");
    li.textContent = e.line ? `line ${e.line}, column ${e.col}: ${e.msg}` : e.msg;
    li.dataset.line = e.line || "";
    li.dataset.col = e.col || "";
    li.addEventListener("click", () => selectAt(e.line, e.col));
    list.appendChild(li);
  }
  drawGutter(lines);
  if (errors.length && errors[0].line) selectAt(errors[0].line, errors[0].col);
}

// selectAt puts the cursor at a line and column of the editor.
function selectAt(line, col) {
  const ta = $("source");
  const lines = ta.value.split("\n");
  let pos = 0;
  for (let i = 0; i < line - 1 && i < lines.length; i++) pos += lines[i].length + 1;
  pos += Math.max(0, (col || 1) - 1);
  ta.focus();
  ta.setSelectionRange(pos, pos + 1);
  ta.scrollTop = Math.max(0, (line - 5) * 16);
}

async function loadLibrary() {
  const [lib, info] = await Promise.all([
    fetch("api/scenarios").then((r) => r.json()),
    fetch("api/info").then((r) => r.json()),
  ]);
  const sel = $("library");
  sel.innerHTML = "";
  for (const s of lib) {
    const o = document.createElement("option");
    o.value = s.name;
    o.textContent = `${s.name}: ${s.title}`;
    sel.appendChild(o);
  }
  if (info.kernel) {
    const o = document.createElement("option");
    o.value = "kernel";
    o.textContent = "the Linux kernel (real time)";
    $("backend").appendChild(o);
  }
  sel.addEventListener("change", () => {
    opened = "";
    loadSource(sel.value);
  });
  // A file of one's own: a scenario, or a packetdrill script (.pkt),
  // which the server plays on the simulator.
  $("open").addEventListener("change", async () => {
    const f = $("open").files[0];
    if (!f) return;
    if (/\.(pcap|pcapng|cap)(\.gz)?$/i.test(f.name)) {
      // A capture: the server explains it (tcplab explain).
      captureBytes = await f.arrayBuffer();
      captureName = f.name;
      await explain("");
      return;
    }
    $("capture").hidden = true;
    $("source").value = await f.text();
    opened = f.name;
    showErrors([]);
    $("status").textContent = `${f.name} opened; Run plays it`;
    $("status").className = "";
  });
  $("conns").addEventListener("change", () => explain($("conns").value));
  await loadSource(sel.value);
  document.body.dataset.ready = "1";
}

async function loadSource(name) {
  const r = await fetch("api/scenarios/" + encodeURIComponent(name));
  $("source").value = await r.text();
  loadedText = $("source").value;
  showErrors([]);
  document.body.dataset.loaded = name;
}

let captureBytes = null; // a capture opened from disk
let captureName = "";
let explainSeq = 0; // only the newest answer is shown

// explain posts the opened capture and shows one connection (conn: its
// index, or "" for the first with a finding).
async function explain(conn) {
  const seq = ++explainSeq;
  $("status").textContent = `reading ${captureName}...`;
  $("status").className = "";
  try {
    const r = await fetch("api/explain" + (conn ? "?conn=" + encodeURIComponent(conn) : ""), {
      method: "POST",
      headers: { "Content-Type": "application/octet-stream" },
      body: captureBytes,
    });
    if (seq !== explainSeq) return; // a newer pick was made meanwhile
    if (!r.ok) {
      $("status").textContent = "error: " + (await r.text());
      $("status").className = "fail";
      return;
    }
    const res = await r.json();
    if (seq !== explainSeq) return;
    const sel = $("conns");
    sel.innerHTML = (res.connections || []).map((c) =>
      `<option value="${c.index}"${c.index === res.conn ? " selected" : ""}>${esc(c.line)}</option>`).join("");
    $("capture").hidden = !(res.connections || []).length;
    if (res.errors && res.errors.length) {
      $("status").textContent = `${captureName}: ${res.errors[0].msg}`;
      $("status").className = "fail";
      return;
    }
    result = res;
    render(res);
    const more = res.total > (res.connections || []).length ? ` (the first ${res.connections.length} listed)` : "";
    $("status").textContent = `${captureName}: ${res.title} — ${res.total} connection(s)${more}, ${res.packets} TCP packets`;
    $("status").className = "";
    document.body.dataset.explained = String(res.conn);
  } catch (e) {
    $("status").textContent = "error: " + e;
    $("status").className = "fail";
  }
}

async function run() {
  const t0 = performance.now();
  $("capture").hidden = true;
  $("status").textContent = "running...";
  $("status").className = "";
  $("run").disabled = true; // one request at a time: a slow answer cannot overwrite a newer one
  try {
    const r = await fetch("api/run", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      // Text edited away from the library's runs under its own title line,
      // not under the name picked in the list.
      body: JSON.stringify({ source: $("source").value, name: runName(), backend: $("backend").value }),
    });
    if (!r.ok) {
      $("status").textContent = "error: " + (await r.text());
      $("status").className = "fail";
      return;
    }
    const res = await r.json();
    if (res.errors && res.errors.length) {
      if (res.title) {
        // A run stopped by its budget: what it did up to then, and why.
        result = res;
        render(res);
      } else {
        clearResult(); // nothing on the right may pass for this text's run
      }
      showErrors(res.errors);
      $("status").textContent = res.title ? `${res.title} — ${res.errors[0].msg}` : `${res.errors.length} error(s) in the scenario`;
      $("status").className = "fail";
      return;
    }
    showErrors([]);
    result = res;
    render(res);
    document.body.dataset.roundtrip = (performance.now() - t0).toFixed(1);
  } catch (e) {
    $("status").textContent = "error: " + e;
    $("status").className = "fail";
  } finally {
    $("run").disabled = false;
    document.body.dataset.runs = String(Number(document.body.dataset.runs || 0) + 1);
  }
}

// runName is the name a run is shown under: the file opened, the library
// scenario picked while its text is unchanged, else "edited".
function runName() {
  if (opened) return opened;
  const v = $("library").value;
  return (v && $("source").value === loadedText ? v : "edited") + ".tcplab";
}

// clearResult empties the right side: after a failed parse nothing of an
// earlier run may stay there.
function clearResult() {
  result = null;
  for (const id of ["explain", "checks", "snapshot", "ladder", "states", "events"]) $(id).innerHTML = "";
  $("slider-row").hidden = true;
}

function render(res) {
  const ok = res.held === res.total;
  $("status").textContent = `${res.title} — ${res.held} of ${res.total} expectations held (${res.backend}, ${fmtTime(res.end)} s)`;
  $("status").className = ok ? "ok" : "fail";
  $("explain").textContent = res.explain || "";
  $("checks").innerHTML = (res.checks || []).map((c) =>
    `<div class="${c.ok ? "" : "bad"}">${c.ok ? "ok" : "FAILED"} line ${c.line}: ${esc(c.text)}${c.ok ? "" : " — seen: " + esc(c.seen)}</div>`).join("");
  $("ladder").innerHTML = res.ladder;
  $("states").innerHTML = res.states;
  $("events").innerHTML = "<table><tr><th>time</th><th>host</th><th></th><th>what</th></tr>" +
    (res.events || []).map((e) =>
      `<tr class="${esc(e.class)}" data-at="${e.at}"><td>${e.time}</td><td>${esc(e.host)}</td><td>${esc(e.tag)}</td><td class="text">${esc(e.text)}</td></tr>`).join("") +
    "</table>";
  // The slider steps through the moments something changed state.
  const slider = $("time");
  const snaps = res.snapshots || [];
  slider.max = String(Math.max(0, snaps.length));
  slider.value = slider.max;
  $("slider-row").hidden = false;
  showMoment(Number(slider.value));
}

// showMoment shows every host's sockets after the n-th state change (0:
// before any).
function showMoment(n) {
  const snaps = (result && result.snapshots) || [];
  const snap = n > 0 ? snaps[n - 1] : null;
  const at = snap ? snap.at : 0;
  $("time-label").textContent = fmtTime(at) + (snap ? "  " + snap.what : "  (start)");
  const byHost = new Map((result.hosts || []).map((h) => [h.name, []]));
  for (const s of (snap && snap.sockets) || []) {
    if (!byHost.has(s.host)) byHost.set(s.host, []);
    byHost.get(s.host).push(s);
  }
  let html = "";
  for (const [host, socks] of byHost) {
    html += `<table class="host" data-host="${esc(host)}"><caption>${esc(host)}</caption>` +
      "<tr><th>State</th><th>Local Address:Port</th><th>Peer Address:Port</th></tr>" +
      (socks.length ? socks.map((s) => `<tr><td>${esc(s.state)}</td><td>${esc(s.local)}</td><td>${esc(s.remote)}</td></tr>`).join("")
        : "<tr><td colspan=3>(no socket)</td></tr>") + "</table>";
  }
  $("snapshot").innerHTML = html;
  markLadder(n > 0 && !(n >= snaps.length) ? at : null);
  // Later events are greyed, except at the slider's end: all happened.
  const end = n >= snaps.length;
  for (const tr of document.querySelectorAll("#events tr[data-at]")) {
    tr.classList.toggle("later", Number(tr.dataset.at) > at && n > 0 && !end);
  }
}

// markLadder draws a line across the ladder under the last row at or
// before the slider's time (at in ns; null: no line, as at the end).
function markLadder(at) {
  const svg = document.querySelector("#ladder svg");
  if (!svg) return;
  let line = svg.querySelector("line.now");
  if (at === null) {
    if (line) line.remove();
    return;
  }
  let y = null;
  for (const t of svg.querySelectorAll("text.time")) {
    const secs = Number(t.textContent);
    if (!Number.isNaN(secs) && Math.round(secs * 1e9) <= at) y = Number(t.getAttribute("y")) + 5;
  }
  if (y === null) {
    if (line) line.remove();
    return;
  }
  if (!line) {
    line = document.createElementNS("http://www.w3.org/2000/svg", "line");
    line.setAttribute("class", "now");
    line.setAttribute("stroke", "#c0392b");
    line.setAttribute("stroke-width", "2");
    line.setAttribute("stroke-dasharray", "6 3");
    svg.appendChild(line);
  }
  line.setAttribute("x1", "0");
  line.setAttribute("x2", svg.getAttribute("width") || "100%");
  line.setAttribute("y1", String(y));
  line.setAttribute("y2", String(y));
  line.dataset.at = String(at);
}

$("time").addEventListener("input", (e) => showMoment(Number(e.target.value)));
$("run").addEventListener("click", run);
$("source").addEventListener("input", () => drawGutter(null));
$("source").addEventListener("scroll", () => { $("gutter").scrollTop = $("source").scrollTop; });
for (const b of document.querySelectorAll("#tabs button")) {
  b.addEventListener("click", () => {
    for (const x of document.querySelectorAll("#tabs button")) x.classList.toggle("on", x === b);
    for (const t of document.querySelectorAll(".tab")) t.hidden = t.id !== b.dataset.tab;
  });
}
loadLibrary().catch((e) => { $("status").textContent = "cannot load the library: " + e; });
