// pktlb dashboard: draws /api/state (pushed by /events after every poll) and a chart of the last minutes.
// Plain DOM and canvas, no library. Every text from the engines goes in through textContent.
"use strict";

const RECENT_SECONDS = 10;   // rows whose state changed this recently are outlined
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                "#bcbd22", "#17becf"];
const RENDERERS = {engine: renderEngine, "l7-proxy": renderProxy};  // per source kind
const history = {};                         // source name -> [{t, b: {"svc/be": [pps_in, pps_out, bps_in, bps_out, cps]}}]
let lastView = null;
let lastMessage = 0;
let historyWindow = 300;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function si(n, unit) {
  if (n === null || n === undefined) return "";
  const abs = Math.abs(n);
  for (const [limit, prefix] of [[1e9, "G"], [1e6, "M"], [1e3, "k"]]) {
    if (abs >= limit) return (n / limit).toFixed(abs >= 10 * limit ? 0 : 1) + " " + prefix + unit;
  }
  return (Number.isInteger(n) ? n : n.toFixed(abs >= 10 ? 0 : 1)) + (unit ? " " + unit : "");
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

function clock(t) { return new Date(t * 1000).toLocaleTimeString([], {hour12: false}); }

function duration(s) {
  s = Math.floor(s);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

function healthCell(h) {
  if (!h) return el("td", {class: "health"}, "-");
  const checks = (h.checks || []).map(c => c.type + ":" + c.status).join(" ");
  const rtt = h.last_rtt_ms !== null && h.last_rtt_ms !== undefined ? " " + h.last_rtt_ms.toFixed(2) + " ms" : "";
  const cell = el("td", {class: "health health-" + h.state, title: h.reason || ""},
                  h.state + (checks ? " [" + checks + "]" : "") + rtt);
  if (h.since_s !== null && h.since_s !== undefined) cell.append(el("small", {}, " for " + duration(h.since_s)));
  return cell;
}

function backendRow(source, svc, be, rates, changedAt, now, slots) {
  const key = svc.name + "/" + be.name;
  const r = rates[key] || {};
  const recent = changedAt[key] !== undefined && now - changedAt[key] < RECENT_SECONDS;
  const admin = be.admin && be.admin !== "up" ? el("small", {}, " admin " + be.admin) : null;
  return el("tr", {"data-source": source.name, "data-service": svc.name, "data-backend": be.name,
                   "data-state": be.state, class: "state-" + be.state + (recent ? " changed" : "")},
    el("td", {class: "name"}, be.name), el("td", {}, be.address + ":" + be.port),
    el("td", {class: "state"}, be.state, admin), healthCell(be.health),
    el("td", {class: "num"}, be.weight), el("td", {class: "num"}, be.active_flows),
    el("td", {class: "num"}, si(r.cps || 0, "")), el("td", {class: "num"}, be.new_flows),
    el("td", {class: "num"}, si(r.pps_in || 0, "") + " / " + si(r.pps_out || 0, "")),
    el("td", {class: "num"}, si(r.bps_in || 0, "b/s") + " / " + si(r.bps_out || 0, "b/s")),
    el("td", {class: "num"}, be.packets_in + " / " + be.packets_out),
    el("td", {class: "num"}, bytes(be.bytes_in) + " / " + bytes(be.bytes_out)),
    el("td", {class: "num"}, slots ? (slots[be.name] || 0) : "-"));
}

const BACKEND_HEADINGS = ["backend", "address", "state", "health", "weight", "flows", "new/s", "new total",
                          "pkts/s in / out", "bits/s in / out", "pkts in / out", "bytes in / out", "maglev slots"];

function serviceBlock(source, svc, now) {
  const rates = source.rates.backends || {};
  const colors = {};
  svc.backends.forEach((be, i) => { colors[svc.name + "/" + be.name] = COLORS[i % COLORS.length]; });
  const table = el("table", {class: "backends"},
    el("thead", {}, el("tr", {}, ...BACKEND_HEADINGS.map(h => el("th", {}, h)))),
    el("tbody", {}, ...svc.backends.map(be => backendRow(source, svc, be, rates, source.changed_at || {}, now,
                                                             svc.maglev_slots))));
  const canvas = el("canvas", {class: "chart", width: 640, height: 150,
                               "data-source": source.name, "data-service": svc.name});
  const legend = el("div", {class: "legend"}, ...svc.backends.map(be =>
    el("span", {}, el("i"), be.name)));
  legend.querySelectorAll("i").forEach((swatch, i) => { swatch.style.background = colors[svc.name + "/" + svc.backends[i].name]; });
  const drops = Object.entries(svc.drops || {}).map(([r, n]) => r + " " + n).join(", ");
  const block = el("div", {class: "service"},
    el("h3", {}, svc.protocol.toUpperCase() + " " + svc.vip + ":" + svc.port + " ",
       el("small", {}, "service " + svc.name + ", " + svc.mode + ", " + svc.scheduler +
                       (drops ? ", drops: " + drops : ""))),
    el("div", {class: "service-body"}, table, el("div", {class: "chart-box"}, canvas, legend)));
  requestAnimationFrame(() => drawChart(canvas, source.name, svc.backends.map(be => svc.name + "/" + be.name), colors));
  return block;
}

function dropsTable(source) {
  const data = source.data;
  const totals = (data.totals && data.totals.drops) || {};
  const meaning = data.drop_reasons || {};
  const perSecond = source.rates.drops || {};
  const reasons = Object.keys(totals).sort((a, b) => totals[b] - totals[a]);
  if (!reasons.length) return el("p", {class: "drops none"}, "No drops.");
  return el("table", {class: "drops"},
    el("thead", {}, el("tr", {}, el("th", {}, "drop reason"), el("th", {}, "meaning"), el("th", {}, "total"),
                       el("th", {}, "per second"))),
    el("tbody", {}, ...reasons.map(r => el("tr", {"data-reason": r}, el("td", {class: "name"}, r),
      el("td", {}, meaning[r] || ""), el("td", {class: "num"}, totals[r]), el("td", {class: "num"}, si(perSecond[r] || 0, ""))))));
}

function renderEngine(source, now) {
  const d = source.data;
  const t = d.totals || {}, rate = source.rates.totals || {}, flows = d.flows || {}, port = d.port || {};
  const summary = el("p", {class: "summary"},
    "snapshot " + d.generation + " · up " + duration(d.uptime) + " · " + (source.workers || 1) + " worker(s) · flows " +
    flows.entries + " / " + flows.max_entries + " · frames " + t.received + " received (" + si(rate.received || 0, "/s") +
    "), " + t.forwarded + " forwarded, " + t.replied + " replied, " + t.dropped + " dropped (" +
    si(rate.dropped || 0, "/s") + ") · kernel drops " + (port.kernel_drops || 0) + " · poll " + source.poll_ms + " ms");
  return [summary, ...(d.services || []).map(svc => serviceBlock(source, svc, now)),
          el("h3", {}, "Drops by reason"), dropsTable(source)];
}

const PROXY_HEADINGS = ["backend", "address", "state", "health", "weight", "in flight", "req/s", "requests",
                        "2xx / 3xx / 4xx / 5xx", "failures", "conns opened", "reused", "conn/req", "pool act / idle"];

function proxyRow(source, svc, be, now) {
  const key = svc.name + "/" + be.name;
  const r = (source.rates.backends || {})[key] || {};
  const changedAt = (source.changed_at || {})[key];
  const recent = changedAt !== undefined && now - changedAt < RECENT_SECONDS;
  const resp = be.responses || {};
  const failures = Object.entries(be.failures || {}).map(([k, n]) => k + " " + n).join(", ");
  const pool = be.pool || {};
  return el("tr", {"data-source": source.name, "data-service": svc.name, "data-backend": be.name,
                   "data-state": be.state, class: "state-" + be.state + (recent ? " changed" : "")},
    el("td", {class: "name"}, be.name), el("td", {}, be.address + ":" + be.port),
    el("td", {class: "state"}, be.state, be.admin && be.admin !== "up" ? el("small", {}, " admin " + be.admin) : null),
    healthCell(be.health), el("td", {class: "num"}, be.weight), el("td", {class: "num"}, be.in_flight),
    el("td", {class: "num"}, si(r.rps || 0, "")), el("td", {class: "num"}, be.requests),
    el("td", {class: "num"}, ["2xx", "3xx", "4xx", "5xx"].map(c => resp[c] || 0).join(" / ")),
    el("td", {}, failures || "-"), el("td", {class: "num"}, be.connections_opened), el("td", {class: "num"}, be.reused),
    el("td", {class: "num"}, be.requests ? (be.connections_opened / be.requests).toFixed(3) : "-"),
    el("td", {class: "num"}, (pool.active || 0) + " / " + (pool.idle || 0)));
}

function renderProxy(source, now) {
  // pktlb proxy (L7): requests instead of packets; routes instead of a Maglev table.
  const d = source.data, t = d.totals || {};
  const rejects = Object.entries(t.rejects || {}).map(([k, n]) => k + " " + n).join(", ");
  const summary = el("p", {class: "summary"},
    "L7 proxy · snapshot " + d.generation + " · up " + duration(d.uptime) + " · clients " + t.open_connections +
    " open, " + t.connections + " accepted · " + t.requests + " requests · responses " +
    Object.entries(t.responses || {}).map(([k, n]) => k + " " + n).join(", ") + " · own answers " +
    (rejects || "none") + " · poll " + source.poll_ms + " ms");
  return [summary, ...(d.services || []).map(svc => el("div", {class: "service"},
    el("h3", {}, "HTTP " + svc.vip + ":" + svc.port + " ",
       el("small", {}, "service " + svc.name + ", l7, " + svc.scheduler + " per request; routes: " +
                       (svc.routes || []).map(r => r.name + " (" + (r.host || "any host") + r.path_prefix + " -> " +
                                                   r.backends.join(" ") + ")").join(", "))),
    el("table", {class: "backends"},
      el("thead", {}, el("tr", {}, ...PROXY_HEADINGS.map(h => el("th", {}, h)))),
      el("tbody", {}, ...svc.backends.map(be => proxyRow(source, svc, be, now))))))];
}

function renderSource(source, now) {
  const section = el("section", {class: "source" + (source.ok ? "" : " failing"), "data-source": source.name},
    el("h2", {}, source.name + " ", el("small", {}, (source.kind || "?") + " · " + source.socket)));
  if (!source.ok) {
    section.append(el("p", {class: "error"}, "not answering: " + source.error));
    return section;
  }
  const render = RENDERERS[source.kind];
  if (render) {
    try {
      section.append(...render(source, now));
    } catch (err) {  // a reply of a shape this page does not know: say so, keep the other sources
      section.append(el("p", {class: "error"}, "cannot draw this source's stats: " + err),
                     el("pre", {}, JSON.stringify(source.data, null, 2)));
    }
  } else section.append(el("p", {class: "error"}, "no view for kind " + source.kind + " yet; its stats:"),
                      el("pre", {}, JSON.stringify(source.data, null, 2)));
  return section;
}

function renderChanges(events, now) {
  const list = document.getElementById("changes");
  if (!events.length) {
    list.replaceChildren(el("li", {class: "none"}, "none since the dashboard started"));
    return;
  }
  list.replaceChildren(...events.slice().reverse().map(e => el("li",
    {class: (now - e.t < RECENT_SECONDS ? "recent " : "") + "to-" + String(e.to).split(" ")[0]},
    el("time", {}, clock(e.t)), " " + e.source + (e.backend ? " " + e.backend : "") + ": ",
    el("b", {}, (e.from ? e.from + " → " : "") + e.to), e.why ? " (" + e.why + ")" : "")));
}

function render(view) {
  lastView = view;
  for (const source of view.sources) {
    const points = history[source.name] || (history[source.name] = []);
    const p = source.last_point;
    if (p && (!points.length || p.t > points[points.length - 1].t)) points.push(p);
    const cutoff = view.now - historyWindow;
    while (points.length && points[0].t < cutoff) points.shift();
  }
  document.getElementById("sources").replaceChildren(...view.sources.map(s => renderSource(s, view.now)));
  renderChanges(view.events, view.now);
  document.getElementById("clock").textContent = "last poll " + clock(view.now);
}

function niceCeiling(n) {  // 1, 2 or 5 times a power of ten, at least n (4 grid steps read well)
  if (!(n > 0)) return 4;
  const step = Math.pow(10, Math.floor(Math.log10(n / 4)));
  for (const m of [1, 2, 2.5, 5, 10]) if (4 * m * step >= n) return 4 * m * step;
  return 40 * step;
}

function drawChart(canvas, sourceName, keys, colors) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, left = 52, bottom = 18;
  const field = Number(document.getElementById("metric").value);
  const now = lastView ? lastView.now : Date.now() / 1000;
  const all = history[sourceName] || [];
  // the window grows with the history, from one minute up to everything the dashboard keeps
  const span = all.length ? now - all[0].t : 0;
  const shown = Math.min(historyWindow, Math.max(60, Math.ceil(span / 60) * 60));
  const points = all.filter(p => now - p.t <= shown);
  const max = niceCeiling(Math.max(0, ...points.flatMap(p => keys.map(k => (p.b[k] ? p.b[k][field] : 0)))));
  const xOf = (t) => left + (w - left) * (1 - (now - t) / shown);
  ctx.clearRect(0, 0, w, h);
  ctx.font = "11px sans-serif";
  ctx.fillStyle = "#555";
  ctx.strokeStyle = "#ddd";
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = (h - bottom) * (1 - i / 4);
    ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(w, y); ctx.stroke();
    ctx.fillText(si(max * i / 4, ""), 2, Math.max(y, 10));
  }
  const step = shown <= 60 ? 15 : 60;
  for (let ago = 0; ago <= shown; ago += step) {
    const label = !ago ? "now" : ago < 60 ? "-" + ago + " s" : "-" + ago / 60 + " min";
    ctx.fillText(label, Math.max(left, Math.min(xOf(now - ago) - 10, w - 24)), h - 4);
  }
  for (const k of keys) {
    ctx.strokeStyle = colors[k];
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    let started = false;
    for (const p of points) {
      if (!p.b[k]) { started = false; continue; }
      const y = (h - bottom) * (1 - p.b[k][field] / max);
      if (started) ctx.lineTo(xOf(p.t), y); else ctx.moveTo(xOf(p.t), y);
      started = true;
    }
    ctx.stroke();
  }
}

function setStatus(text, cls) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = "status " + cls;
}

async function loadHistory() {
  const reply = await fetch("api/history");
  const data = await reply.json();
  historyWindow = data.window || 300;
  for (const [name, points] of Object.entries(data.sources)) history[name] = points;
}

function connect() {
  const events = new EventSource("events");
  events.onopen = () => { loadHistory().then(() => { if (lastView) render(lastView); }).catch(() => {}); };
  events.onmessage = (message) => {
    lastMessage = Date.now();
    setStatus("live", "live");
    render(JSON.parse(message.data));
  };
  events.onerror = () => setStatus("reconnecting…", "stale");
}

setInterval(() => {  // the stream is quiet: say so (EventSource reconnects by itself)
  const interval = lastView ? lastView.interval : 1;
  if (lastMessage && Date.now() - lastMessage > 3000 * interval + 2000) setStatus("stale", "stale");
}, 1000);
document.getElementById("metric").addEventListener("change", () => { if (lastView) render(lastView); });
connect();
