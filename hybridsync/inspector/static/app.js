// hybridsync inspector page. Every value shown is user data: the DOM is built with
// createElement and text nodes only (never innerHTML), and the server's CSP forbids inline
// scripts, so a value like <img onerror=...> is displayed, never run.
"use strict";

const state = {
  collapsed: new Set(),     // field paths the user folded
  heads: "",                // heads of the last rendered state
  flash: new Map(),         // field path -> until (ms): recently changed
  inFlight: false,
  again: false,
  timer: null,
  lastRender: 0,
  buildMs: 0,               // how long the server took to build the last state
};

function $(id) { return document.getElementById(id); }

// el("td", {class: "x", title: "t"}, "text", childNode, ...): text children become text nodes.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else node.setAttribute(k, String(v));
    }
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function setText(id, text) { $(id).textContent = text; }

function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function fmtAge(s) {
  if (s === null || s === undefined) return "–";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 120) return `${s.toFixed(1)} s`;
  return `${Math.round(s / 60)} min`;
}

function fmtHlc(h) {
  const d = new Date(h.ms);
  if (Number.isNaN(d.getTime())) return h.iso;
  const pad = (x, n = 2) => String(x).padStart(n, "0");
  let t = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  const today = new Date();
  if (d.toDateString() !== today.toDateString()) {
    t = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${t}`;
  }
  return h.logical ? `${t} +${h.logical}` : t;
}

function short(id) { return id ? id.slice(0, 10) : ""; }

// ---- fields tree ----------------------------------------------------------------------
function leaf(node) {
  const cls = `v ${node.type}`;
  if (node.type === "str") {
    const span = el("span", {class: cls}, `"${node.text}"`);
    if (node.clipped) span.append(el("span", {class: "muted"}, ` … (${node.clipped} chars)`));
    return span;
  }
  if (node.type === "bytes") {
    const span = el("span", {class: cls}, `0x${node.text}`);
    span.append(el("span", {class: "muted"}, node.clipped ? ` … (${node.size} bytes)` : ` (${node.size} bytes)`));
    return span;
  }
  return el("span", {class: cls}, node.text);
}

function treeList(node, path, depth) {
  const ul = el("ul", {class: depth === 0 ? "root" : null});
  const rows = node.type === "map" ? node.entries : node.items.map((v, i) => [String(i), v]);
  for (const [key, child] of rows) {
    const p = path ? `${path}/${key}` : key;
    const keyEl = el("span", {class: node.type === "map" ? "key" : "key index"}, key);
    const li = el("li", {"data-path": p});
    if (state.flash.has(p)) li.classList.add("flash");
    if (child.type === "map" || child.type === "list") {
      const details = el("details", {"data-path": p});
      details.open = !state.collapsed.has(p);
      const badge = child.type === "map" ? `{${child.size}}` : `[${child.size}]`;
      details.append(el("summary", null, keyEl, " ", el("span", {class: "badge"}, badge)));
      details.append(treeList(child, p, depth + 1));
      details.addEventListener("toggle", () => {
        if (details.open) state.collapsed.delete(p); else state.collapsed.add(p);
      });
      li.append(details);
    } else {
      li.append(keyEl, el("span", {class: "sep"}, ": "), leaf(child));
    }
    ul.append(li);
  }
  if (node.more) ul.append(el("li", {class: "muted"}, `… ${node.more} more not shown`));
  return ul;
}

function renderFields(tree) {
  const box = $("fields");
  box.replaceChildren();
  if (tree.size === 0) box.append(el("p", {class: "empty"}, "no fields yet"));
  else box.append(treeList(tree, "", 0));
  if (tree.truncated) box.append(el("p", {class: "note"}, `showing the first ${tree.nodes} values (GET /api/fields has them all)`));
  setText("fields-count", `${tree.size} keys`);
}

// ---- regions ----------------------------------------------------------------------------
function renderRegions(regions) {
  const body = $("regions").tBodies[0];
  body.replaceChildren();
  for (const r of regions) {
    const lc = r.last_change;
    const change = lc
      ? el("span", {title: `${lc.hlc.iso} · ${lc.id}`}, `${lc.author}#${lc.seq} at ${fmtHlc(lc.hlc)}`,
        lc.note ? el("span", {class: "muted"}, ` · ${lc.note}`) : null)
      : el("span", {class: "muted"}, "not in the recent log");
    const extra = r.kind === "text" ? `${r.lines} lines` : "";
    body.append(el("tr", null,
      el("td", {class: "mono"}, r.name),
      el("td", null, el("span", {class: `kind ${r.kind}`}, r.kind)),
      el("td", {class: "num", title: `${r.bytes} bytes`}, fmtBytes(r.bytes), extra ? el("div", {class: "muted small"}, extra) : null),
      el("td", null, change),
      el("td", {class: "preview"}, r.kind === "text" ? r.preview : ""),
    ));
  }
  if (!regions.length) body.append(el("tr", null, el("td", {colspan: 5, class: "empty"}, "no regions")));
  setText("regions-count", String(regions.length));
}

// ---- network ----------------------------------------------------------------------------
function renderNetwork(net) {
  const body = $("sessions").tBodies[0];
  body.replaceChildren();
  if (!net.network) {
    body.append(el("tr", null, el("td", {colspan: 7, class: "empty"}, "no network peer: this replica is inspected on its own")));
  }
  for (const s of net.sessions) {
    const lagCls = (n) => (n === null ? "muted" : n > 0 ? "lag" : "ok");
    const label = s.connected ? s.state : "not connected";
    body.append(el("tr", {class: s.connected ? null : "gone"},
      el("td", {title: s.url ? `${s.url} (${s.initiator ? "dialed" : "accepted"})` : null}, el("strong", null, s.peer),
        s.listen_url ? el("div", {class: "muted small mono"}, s.listen_url) : null),
      el("td", null, el("span", {class: `pill ${s.connected ? "open" : "closed"}`}, label)),
      el("td", {class: `num ${lagCls(s.lacks)}`}, s.lacks === null ? "?" : String(s.lacks)),
      el("td", {class: `num ${lagCls(s.ahead)}`}, s.ahead === null ? "?" : String(s.ahead)),
      el("td", {class: "num"}, s.connected ? fmtAge(s.last_frame_age_s) : "–"),
      el("td", {class: "num"}, s.connected ? `${s.frames_in} / ${s.frames_out} frames` : "–",
        s.connected ? el("div", {class: "muted small"}, `${fmtBytes(s.bytes_in)} / ${fmtBytes(s.bytes_out)}`) : null),
      el("td", {class: "num"}, s.connected ? String(s.queued) : "–"),
    ));
  }
  if (net.network && !net.sessions.length) {
    body.append(el("tr", null, el("td", {colspan: 7, class: "empty"}, "no sessions yet")));
  }
  const open = net.sessions.filter((s) => s.connected).length;
  setText("sessions-count", net.network ? `${open} connected` : "");
  const vv = Object.entries(net.version_vector).map(([a, n]) => `${a}:${n}`).join("  ");
  setText("vv", vv ? `version vector  ${vv}` : "");
}

// ---- conflicts ----------------------------------------------------------------------------
function renderConflicts(c) {
  const list = $("conflicts");
  list.replaceChildren();
  for (const x of c.conflicts) {
    list.append(el("li", null,
      el("div", null, el("span", {class: `pill ${x.plane}`}, x.plane), " ",
        el("span", {class: "mono"}, x.location), " ", el("span", {class: "muted"}, `${x.kind} · ${x.authors.join(" vs ")}`)),
      el("div", {class: "detail"}, x.detail)));
  }
  if (!c.conflicts.length) list.append(el("li", {class: "empty"}, "no conflicts"));
  const shown = c.conflicts.length < c.total ? ` (newest ${c.conflicts.length} shown)` : "";
  setText("conflicts-count", `${c.total}${shown}`);
}

// ---- history ------------------------------------------------------------------------------
function renderHistory(h) {
  const body = $("history").tBodies[0];
  body.replaceChildren();
  for (const e of [...h.entries].reverse()) {  // newest first
    const parents = e.parents.length
      ? e.parents.map((p) => el("span", {class: "chip", title: p.id}, p.dot || short(p.id)))
      : [el("span", {class: "muted"}, "root")];
    const changes = e.changes.map((t) => el("div", {class: "change"}, t));
    body.append(el("tr", null,
      el("td", {class: "mono nowrap", title: `${e.hlc.iso} · HLC ${e.hlc.raw} · lamport ${e.lamport}`}, fmtHlc(e.hlc)),
      el("td", {class: "nowrap"}, el("strong", null, e.author), el("span", {class: "muted"}, `#${e.seq}`)),
      el("td", null, ...changes),
      el("td", {class: "note-cell"}, e.note),
      el("td", null, ...parents),
      el("td", {class: "num"}, fmtBytes(e.payload_bytes)),
      el("td", {class: "mono muted", title: e.id}, short(e.id)),
    ));
  }
  if (!h.entries.length) body.append(el("tr", null, el("td", {colspan: 7, class: "empty"}, "no contributions yet")));
  setText("history-count", `${h.total} contributions${h.compacted ? " (older ones compacted)" : ""}`);
}

// ---- the whole state ----------------------------------------------------------------------
function renderStats(st) {
  const items = [
    ["log", st.log_length], ["content", fmtBytes(st.content_bytes)],
    ["metadata", fmtBytes(st.metadata_bytes)], ["conflicts", st.conflicts],
    ["pending", st.pending], ["rejected", st.rejected], ["compacted", st.compacted],
    ["frames in / out", `${st.frames_received} / ${st.frames_sent}`],
    ["sync bytes in / out", `${fmtBytes(st.bytes_received)} / ${fmtBytes(st.bytes_sent)}`],
  ];
  const box = $("stats");
  box.replaceChildren(...items.map(([k, v]) => el("div", {class: "stat"}, el("span", {class: "k"}, k), el("span", {class: "v"}, String(v)))));
}

function render(doc) {
  const id = doc.identity;
  setText("space", id.space);
  setText("peer", id.peer);
  setText("listen", id.url || "not on the network");
  setText("digest", id.digest.slice(0, 16));
  $("digest").title = id.digest;
  setText("heads", String(id.heads.length));
  $("heads").title = id.heads.join("\n");
  document.title = `${id.peer} · ${id.space} · hybridsync inspector`;
  state.heads = id.heads.join(",");
  renderStats(doc.stats);
  renderFields(doc.tree);
  renderRegions(doc.regions);
  renderNetwork(doc.network);
  renderConflicts(doc.conflicts);
  renderHistory(doc.history);
  setText("updated", `updated ${new Date().toLocaleTimeString()}`);
}

async function refresh() {
  if (state.inFlight) { state.again = true; return; }
  state.inFlight = true;
  try {
    const n = $("history-size").value;
    const res = await fetch(`api/state?history=${encodeURIComponent(n)}`, {cache: "no-store"});
    const doc = await res.json();
    if (!res.ok) throw new Error(doc.error || res.statusText);
    state.buildMs = Number(doc.build_ms) || 0;
    render(doc);
    setText("error", "");
  } catch (err) {
    setText("error", `could not load the state: ${err.message}`);
  } finally {
    state.inFlight = false;
    state.lastRender = Date.now();
    if (state.again) { state.again = false; schedule(); }
  }
}

// At most one refresh per 250 ms however fast changes come, and never more often than
// every 4 × the time the server took to build the last state: reading a big replica must
// not keep the peer's event loop busy.
function schedule() {
  if (state.timer !== null) return;
  const pace = Math.max(250, 4 * state.buildMs);
  const wait = Math.max(0, pace - (Date.now() - state.lastRender));
  state.timer = setTimeout(() => { state.timer = null; refresh(); }, wait);
}

function markChanged(paths) {
  const until = Date.now() + 2500;
  for (const p of paths) state.flash.set(p, until);
  setTimeout(() => {
    const now = Date.now();
    for (const [p, t] of state.flash) if (t <= now) state.flash.delete(p);
    for (const li of document.querySelectorAll("#fields li.flash")) {
      if (!state.flash.has(li.getAttribute("data-path"))) li.classList.remove("flash");
    }
  }, 2600);
}

function live(on, text) {
  $("live").className = `live ${on ? "on" : "off"}`;
  setText("live-text", text);
}

function connect() {
  const es = new EventSource("api/events");
  es.addEventListener("open", () => live(true, "live"));
  es.addEventListener("error", () => live(false, "reconnecting…"));
  es.addEventListener("hello", () => schedule());
  es.addEventListener("resync", () => schedule());
  es.addEventListener("change", (ev) => {
    const ch = JSON.parse(ev.data);
    markChanged(ch.paths || []);
    schedule();
  });
  es.addEventListener("tick", (ev) => {
    const t = JSON.parse(ev.data);
    renderNetwork(t.network);
    if (t.heads.join(",") !== state.heads) schedule();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("history-size").addEventListener("change", () => schedule());
  refresh();
  connect();
});
