// The operator console: plain JavaScript over the admin API (docs/admin-api.md). Event
// streams are read with fetch rather than EventSource so the admin token can go in the
// Authorization header.
"use strict";

const $ = (sel) => document.querySelector(sel);
const COLORS = { app: "#2d6cdf", webchat: "#2a8a4a", wechat: "#09b83e", sms: "#c8872d", telephony: "#8a4ac8" };
let token = sessionStorage.getItem("switchboard-admin-token") || "";

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

function headers(extra = {}) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers) });
  if (response.status === 401) {
    askToken();
    throw new Error("admin token required");
  }
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : await response.text();
  if (!response.ok) throw new Error(body.error || body || response.statusText);
  return body;
}

function askToken() {
  $("#token-form").hidden = false;
  setStatus("token required", "bad");
}

function setStatus(text, kind) {
  const pill = $("#status");
  pill.textContent = text;
  pill.className = `pill ${kind || ""}`;
}

// Reads Server-Sent Events from `path`, calling onEvent(name, data) until stopped.
function follow(path, onEvent) {
  const controller = new AbortController();
  (async () => {
    const response = await fetch(path, { headers: headers(), signal: controller.signal });
    if (response.status === 401) return askToken();
    if (!response.ok) return onEvent("error", { error: await response.text() });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = "";
        let data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).trimStart();
        }
        if (name) onEvent(name, data ? JSON.parse(data) : null);
      }
    }
    onEvent("closed", null);
  })().catch((err) => { if (err.name !== "AbortError") onEvent("error", { error: String(err) }); });
  return () => controller.abort();
}

function ago(ms) {
  if (!ms) return "never";
  const secs = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (secs < 60) return `${secs} s ago`;
  if (secs < 3600) return `${Math.round(secs / 60)} min ago`;
  return `${Math.round(secs / 3600)} h ago`;
}

function duration(secs) {
  if (secs < 60) return `${secs} s`;
  if (secs < 3600) return `${Math.floor(secs / 60)} min`;
  return `${Math.floor(secs / 3600)} h ${Math.floor((secs % 3600) / 60)} min`;
}

function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / (1 << 20)).toFixed(1)} MiB`;
}

// A connector's own status (docs/admin-api.md), in words.
function describeStatus(status) {
  if (!status) return "";
  if ("access_token" in status) {
    const t = status.access_token;
    return t ? `token expires in ${t.expires_in_secs} s, refresh in ${t.refresh_in_secs} s` : "no token yet";
  }
  return Object.entries(status).map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join(", ");
}

// Share of the last 5 minutes' requests refused as rate limited, and replies the outbound
// limit held back.
function describeShare(pressure) {
  const inbound = pressure.rate_limited_share == null ? "—" : `${Math.round(pressure.rate_limited_share * 100)}%`;
  return pressure.replies_throttled ? `${inbound} (${pressure.replies_throttled} replies held)` : inbound;
}

function describePressure(c) {
  const p = c.pressure;
  const refused = Object.entries(p.refused).map(([reason, n]) => `${reason} ${n}`).join(", ") || "none refused";
  return `last 5 min: ${p.requests} requests, ${refused}; ${p.reply_attempts} replies, ${p.replies_throttled} held by the outbound limit; limits ${c.limits.inbound_per_second}/s (burst ${c.limits.inbound_burst}), ${c.limits.per_user_per_minute}/min per user, ${c.limits.outbound_per_second} replies/s`;
}

// ---- Links --------------------------------------------------------------------------------

async function refreshLinks() {
  const links = await api("/api/links");
  const body = $("#connectors");
  body.replaceChildren(...links.connectors.map((c) => el("tr", { dataset: { path: c.path } },
    el("td", {}, c.path),
    el("td", {}, c.traffic ? ago(c.traffic.last_message_ms) : "none yet"),
    el("td", { class: "num" }, String(c.traffic ? c.traffic.last_5_minutes : 0)),
    el("td", { class: `num pressure${c.pressure.rate_limited_share || c.pressure.replies_throttled ? " warn" : ""}`, title: describePressure(c) }, describeShare(c.pressure)),
    el("td", { class: "hint" }, describeStatus(c.status)))));
  $("#breakers").replaceChildren(...(links.breakers.length ? links.breakers.map((b) => el("tr", { dataset: { breaker: b.name, state: b.state } },
    el("td", {}, b.name),
    el("td", {}, b.target),
    el("td", {}, el("span", { class: b.state === "closed" ? "up" : "down" }, b.state === "open" ? `open, half-open in ${b.half_open_in_secs} s` : b.state.replace("_", "-"))),
    el("td", { class: "num" }, `${b.failures} / ${b.failure_threshold}`))) : [el("tr", {}, el("td", { colspan: 4, class: "hint" }, "none: no lookup configured has one"))]));
  const b = links.broker;
  const s = links.spool;
  const rows = [
    ["Broker", el("span", { class: b.connected ? "up" : "down", id: "broker-state" }, b.connected ? "connected" : `down${b.last_error ? `: ${b.last_error}` : ""}`)],
    ["Reconnects", String(b.reconnects)],
    ["Redis", links.redis.configured ? el("span", { class: links.redis.ok ? "up" : "down" }, links.redis.ok ? "ok" : links.redis.error) : "not configured (single instance)"],
    ["Spool", `${s.depth} messages, ${bytes(s.bytes)} of ${bytes(s.max_bytes)}${s.oldest_age_secs != null ? `, oldest ${s.oldest_age_secs} s` : ""}`],
  ];
  $("#link-state").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  setStatus(b.connected ? "broker connected" : "broker down", b.connected ? "ok" : "bad");
}

// ---- Queues -------------------------------------------------------------------------------

function chart(rates) {
  const ns = "http://www.w3.org/2000/svg";
  const width = 150, height = 36, minutes = 60, bar = width / minutes;
  const channels = Object.keys(rates);
  const totals = Array.from({ length: minutes }, (_, i) => channels.reduce((sum, c) => sum + rates[c][i], 0));
  const max = Math.max(1, ...totals);
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const base = document.createElementNS(ns, "line");
  Object.entries({ x1: 0, x2: width, y1: height - 0.5, y2: height - 0.5, stroke: "#e2e5ea" }).forEach(([k, v]) => base.setAttribute(k, v));
  svg.append(base);
  for (let i = 0; i < minutes; i++) {
    let y = height;
    for (const c of channels) {
      const count = rates[c][i];
      if (!count) continue;
      const h = Math.max(1, (count / max) * (height - 2));
      y -= h;
      const rect = document.createElementNS(ns, "rect");
      Object.entries({ x: i * bar, y, width: Math.max(1, bar - 0.6), height: h, fill: COLORS[c] || "#888" }).forEach(([k, v]) => rect.setAttribute(k, v));
      const title = document.createElementNS(ns, "title");
      title.textContent = `${c}: ${count} (${minutes - 1 - i} min ago)`;
      rect.append(title);
      svg.append(rect);
    }
  }
  return svg;
}

let knownQueues = [];
async function refreshQueues() {
  const data = await api("/api/queues");
  knownQueues = data.queues;
  const seen = new Set();
  $("#queue-rows").replaceChildren(...data.queues.map((q) => {
    Object.keys(q.rates_per_minute).forEach((c) => seen.add(c));
    const overflow = q.overflow ? `${q.overflow.overflowing ? "OVERFLOWING" : "ok"} above ${q.overflow.ready_above} → ${q.overflow.queue_key}` : "—";
    const unknown = q.management_error || "";
    return el("tr", { dataset: { queue: q.name, ready: q.ready ?? "", unacked: q.unacked ?? "", oldest: q.oldest_age_secs ?? "" } },
      el("td", { title: q.bindings.join(", ") }, q.name),
      el("td", { class: "num", title: q.error || "" }, q.ready == null ? "?" : String(q.ready)),
      el("td", { class: "num unacked", title: unknown }, q.unacked == null ? "?" : String(q.unacked)),
      el("td", { class: "num", title: q.error || "" }, q.consumers == null ? "?" : String(q.consumers)),
      el("td", { class: "num oldest", title: unknown }, q.oldest_age_secs == null ? (q.management ? "—" : "?") : duration(q.oldest_age_secs)),
      el("td", {}, overflow),
      el("td", {}, chart(q.rates_per_minute)));
  }));
  // One reason for every "?" in the unacked and oldest columns, e.g. no management API.
  const notes = [...new Set(data.queues.map((q) => q.management_error).filter(Boolean))];
  $("#queue-note").textContent = notes.length ? `Unacked and oldest: ${notes.join("; ")}` : "";
  const legend = $("#legend");
  legend.replaceChildren(...[...seen].sort().map((c) => {
    const swatch = el("i");
    swatch.style.background = COLORS[c] || "#888";
    return el("span", {}, swatch, c);
  }));
  const select = $("#try-queue");
  if (!select.options.length) select.replaceChildren(...data.queues.map((q) => el("option", { value: q.name }, q.name)));
}

// ---- Live tail ----------------------------------------------------------------------------

let stopTail = null;
function time(at) {
  return new Date(at || Date.now()).toLocaleTimeString();
}

function envelopeRow(envelope, onClick) {
  const text = envelope.content?.text ?? envelope.content?.type ?? "";
  return el("li", { dataset: { id: envelope.id, channel: envelope.channel.kind, skill: envelope.route.skill, conversation: envelope.conversation_id }, onclick: onClick },
    el("span", { class: "time" }, time(envelope.received_at)),
    el("span", { class: "tag" }, envelope.channel.kind),
    el("span", { class: "tag route" }, `${envelope.route.queue_key} p${envelope.route.priority}`),
    envelope.intent ? el("span", { class: "tag" }, envelope.intent.name) : null,
    ...envelope.flags.map((f) => el("span", { class: "tag flag" }, f)),
    el("span", { class: "text" }, text));
}

function showTapped(tapped, row) {
  document.querySelectorAll("#tail-rows li.selected").forEach((li) => li.classList.remove("selected"));
  row.classList.add("selected");
  const e = tapped.envelope;
  $("#tail-detail").replaceChildren(
    el("h3", {}, `${e.conversation_id} #${e.sequence}`),
    el("pre", { class: "explanation" }, tapped.explanation),
    el("h3", {}, "Entities"),
    el("pre", {}, e.entities.length ? e.entities.map((x) => `${x.kind} ${x.value}`).join("\n") : "none"),
    el("h3", {}, "Envelope"),
    el("pre", {}, JSON.stringify(e, null, 2)));
}

function startTail() {
  if (stopTail) stopTail();
  const form = new FormData($("#tail-filters"));
  const params = new URLSearchParams();
  for (const [k, v] of form) if (v && k !== "unmask") params.set(k, v);
  if (form.get("unmask")) {
    if (!confirm("Show phone numbers unmasked? The daemon logs that you asked.")) {
      $("#tail-filters").elements.unmask.checked = false;
    } else params.set("unmask", "true");
  }
  const rows = $("#tail-rows");
  rows.replaceChildren();
  stopTail = follow(`/api/tap?${params}`, (name, data) => {
    if (name === "ready") rows.dataset.ready = "true";
    if (name === "envelope") {
      const row = envelopeRow(data.envelope, () => showTapped(data, row));
      rows.prepend(row);
      while (rows.children.length > 200) rows.lastChild.remove();
    }
    if (name === "lagged") rows.prepend(el("li", { class: "hint" }, `missed ${data.missed} messages`));
  });
}

// ---- Try it -------------------------------------------------------------------------------

let stopTry = null;
let answering = null;
function startTry(event) {
  event.preventDefault();
  if (stopTry) stopTry();
  const queue = $("#try-queue").value;
  const rows = $("#try-rows");
  rows.replaceChildren();
  $("#try-state").textContent = "binding…";
  stopTry = follow(`/api/try/${encodeURIComponent(queue)}`, (name, data) => {
    if (name === "ready") {
      $("#try-state").textContent = `listening on ${data.temporary_queue}`;
      rows.dataset.ready = "true";
    }
    if (name === "error") $("#try-state").textContent = data.error;
    if (name === "envelope" && data.envelope?.id) {
      const row = envelopeRow(data.envelope, () => {
        document.querySelectorAll("#try-rows li.selected").forEach((li) => li.classList.remove("selected"));
        row.classList.add("selected");
        answering = data.envelope;
        $("#reply-to").textContent = `Replying to ${answering.conversation_id}`;
        $("#reply-send").disabled = false;
        $("#reply-text").focus();
      });
      rows.prepend(row);
    }
  });
}

async function sendReply(event) {
  event.preventDefault();
  const text = $("#reply-text").value.trim();
  if (!answering || !text) return;
  const reply = {
    schema: "switchboard.reply.v1",
    id: `console-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`,
    conversation_id: answering.conversation_id,
    in_reply_to: answering.id,
    content: { type: "text", text },
    agent: { id: "console", name: "Console" },
  };
  try {
    await api("/api/reply", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(reply) });
    $("#reply-text").value = "";
    $("#reply-to").textContent = `Sent to ${answering.conversation_id}`;
    $("#reply-to").dataset.sent = reply.id;
  } catch (err) {
    $("#reply-to").textContent = `Not sent: ${err.message}`;
  }
}

// ---- Dead letters -------------------------------------------------------------------------

let shownDead = null;
async function refreshDead() {
  const reason = $("#dead-reason").value;
  const data = await api(`/api/dead${reason ? `?reason=${encodeURIComponent(reason)}` : ""}`);
  $("#dead-count").textContent = `${data.total} in the dead queue`;
  const reasons = new Set([...$("#dead-reason").options].map((o) => o.value));
  for (const d of data.dead_letters) {
    if (d.reason && !reasons.has(d.reason)) { $("#dead-reason").append(el("option", { value: d.reason }, d.reason)); reasons.add(d.reason); }
  }
  $("#dead-rows").replaceChildren(...data.dead_letters.map((d) => el("li", { dataset: { id: d.id, reason: d.reason || "" }, onclick: () => showDead(d.id) },
    el("span", { class: "tag flag" }, d.reason || "?"),
    el("span", { class: "tag" }, d.origin ? `${d.origin.exchange} / ${d.origin.routing_key}` : "origin unknown"),
    el("span", { class: "text" }, d.preview))));
}

async function showDead(id) {
  const d = await api(`/api/dead/${encodeURIComponent(id)}`);
  shownDead = d;
  $("#dead-detail").hidden = false;
  $("#dead-headers").textContent = `${d.id}\nreason: ${d.reason}\nerror: ${d.error || ""}\n${JSON.stringify(d.headers, null, 2)}`;
  $("#dead-body").value = d.body;
}

async function replayDead() {
  if (!shownDead) return;
  const edited = $("#dead-body").value !== shownDead.body;
  if (!confirm(`Replay dead letter ${shownDead.id}${edited ? " with the edited body" : ""} to ${shownDead.origin?.exchange} / ${shownDead.origin?.routing_key}?`)) return;
  try {
    await api(`/api/dead/${encodeURIComponent(shownDead.id)}/replay`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(edited ? { body: $("#dead-body").value } : {}),
    });
    $("#dead-detail").hidden = true;
    $("#dead-count").dataset.replayed = shownDead.id;
  } catch (err) {
    alert(`Not replayed: ${err.message}`);
  }
  refreshDead();
}

async function discardDead() {
  if (!shownDead || !confirm(`Discard dead letter ${shownDead.id} for good?`)) return;
  await api(`/api/dead/${encodeURIComponent(shownDead.id)}`, { method: "DELETE" });
  $("#dead-detail").hidden = true;
  refreshDead();
}

async function replayMatching() {
  const reason = $("#dead-reason").value;
  if (!confirm(reason ? `Replay every dead letter with reason ${reason}?` : "Replay every dead letter?")) return;
  const result = await api("/api/dead/replay", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(reason ? { reason } : { all: true }),
  });
  alert(`${result.replayed.length} replayed, ${result.failed.length} failed`);
  refreshDead();
}

// ---- Statistics ---------------------------------------------------------------------------

async function refreshStats() {
  const data = await api("/api/stats?days=7");
  const today = data.days[0]?.counts || {};
  const week = {};
  for (const day of data.days) for (const [dim, values] of Object.entries(day.counts)) {
    week[dim] ??= {};
    for (const [v, n] of Object.entries(values)) week[dim][v] = (week[dim][v] || 0) + n;
  }
  const total = (counts) => counts.total?.messages || 0;
  const share = (counts) => total(counts) ? `${((100 * (counts.flag?.abusive || 0)) / total(counts)).toFixed(1)} %` : "—";
  const titles = { channel: "Volume by channel", intent: "By intent", tier: "By tier", failed: "Failed deliveries by reason" };
  const tables = Object.entries(titles).map(([dim, title]) => {
    const values = Object.keys(week[dim] || {}).filter((v) => week[dim][v] > 0 || dim !== "failed");
    return el("div", { dataset: { dimension: dim } }, el("h3", {}, title),
      el("table", { class: "grid" },
        el("thead", {}, el("tr", {}, el("th", {}, ""), el("th", { class: "num" }, "today"), el("th", { class: "num" }, "7 days"))),
        el("tbody", {}, ...values.map((v) => el("tr", { dataset: { value: v } }, el("td", {}, v),
          el("td", { class: "num" }, String(today[dim]?.[v] || 0)), el("td", { class: "num" }, String(week[dim][v]))))),
      ));
  });
  tables.unshift(el("div", { dataset: { dimension: "abusive" } }, el("h3", {}, "Flagged abusive"),
    el("table", { class: "grid" }, el("tbody", {},
      el("tr", {}, el("td", {}, "today"), el("td", { class: "num" }, share(today))),
      el("tr", {}, el("td", {}, "7 days"), el("td", { class: "num" }, share(week)))))));
  $("#stats-tables").replaceChildren(...tables);
}

async function exportCsv() {
  const response = await fetch("/api/stats.csv?days=7", { headers: headers() });
  const url = URL.createObjectURL(await response.blob());
  el("a", { href: url, download: "switchboard-stats.csv" }).click();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// ---- Start --------------------------------------------------------------------------------

function refresh() {
  const log = (err) => console.warn(err.message);
  refreshLinks().catch((err) => { setStatus(err.message, "bad"); });
  refreshQueues().catch(log);
  refreshStats().catch(log);
}

function start() {
  refresh();
  refreshDead().catch(() => {});
  startTail();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("#token").value;
    sessionStorage.setItem("switchboard-admin-token", token);
    $("#token-form").hidden = true;
    start();
  });
  $("#tail-filters").addEventListener("submit", (event) => { event.preventDefault(); startTail(); });
  $("#try-form").addEventListener("submit", startTry);
  $("#reply-form").addEventListener("submit", sendReply);
  $("#dead-refresh").addEventListener("click", () => refreshDead());
  $("#dead-reason").addEventListener("change", () => refreshDead());
  $("#dead-replay").addEventListener("click", replayDead);
  $("#dead-discard").addEventListener("click", discardDead);
  $("#dead-replay-all").addEventListener("click", replayMatching);
  $("#stats-csv").addEventListener("click", exportCsv);
  start();
  setInterval(refresh, 5000);
});
