// seamguard's console: reads the daemon's API with the operator's bearer token and stays live on
// its server-sent events. No framework and no build step; every text from the fleet is written
// with textContent (never as markup), and the token lives in this tab's sessionStorage only.
"use strict";

const STATES = ["healthy", "unknown", "degraded", "recovery_unsafe", "quarantine", "harmful", "failed"];
// A glyph per state beside its colour, so that no state is told by colour alone.
const GLYPH = { healthy: "✓", unknown: "?", degraded: "~", recovery_unsafe: "!", quarantine: "⊘", harmful: "✖", failed: "■" };
const KEY = "seamguard.token";
let me = { name: "", roles: [] };
let fleet = null;
let open = null; // the entity whose page is shown
let stream = null;

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else if (k === "onclick") node.addEventListener("click", v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function badge(state) {
  return el("span", { class: "state", "data-state": state, title: state }, `${GLYPH[state] || "?"} ${state}`);
}

function when(ts) {
  return ts == null ? "–" : new Date(ts * 1000).toISOString().replace(".000", "").replace("T", " ");
}

function counted(counts) {
  return STATES.filter((s) => counts && counts[s]).map((s) => `${counts[s]} ${s}`).join(", ") || "none";
}

async function api(path, options) {
  const token = sessionStorage.getItem(KEY);
  const headers = Object.assign({ Authorization: `Bearer ${token}` }, (options && options.headers) || {});
  const res = await fetch(path, Object.assign({}, options || {}, { headers }));
  if (res.status === 401) {
    signOut("that token was refused (unknown or expired)");
    throw new Error("unauthorised");
  }
  return res;
}

function entityPath(eid) {
  return eid.split("/").map(encodeURIComponent).join("/");
}

// ---- sign in ----------------------------------------------------------------------------------
function signOut(why) {
  sessionStorage.removeItem(KEY);
  if (stream) stream.abort();
  $("app").hidden = true;
  $("signout").hidden = true;
  $("login").hidden = false;
  $("who").textContent = "";
  $("login-error").textContent = why || "";
}

async function signIn() {
  const res = await api("/v1/whoami");
  if (!res.ok) {
    signOut((await res.json()).detail || `refused (${res.status})`);
    return;
  }
  me = await res.json();
  $("who").textContent = `${me.name} (${me.roles.join(", ")})`;
  $("login").hidden = true;
  $("app").hidden = false;
  $("signout").hidden = false;
  const operator = me.roles.includes("operator") || me.roles.includes("admin");
  document.body.classList.toggle("operator", operator);
  for (const n of document.querySelectorAll(".operator-only")) n.hidden = !operator;
  await refresh();
  listen();
}

// ---- live -------------------------------------------------------------------------------------
async function listen() {
  // fetch rather than EventSource: EventSource cannot send the Authorization header.
  stream = new AbortController();
  try {
    const res = await api("/v1/events", { signal: stream.signal });
    const reader = res.body.getReader();
    const text = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += text.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        if (event.startsWith("event: tick")) await refresh();
      }
    }
  } catch (e) {
    if (e.name === "AbortError" || e.message === "unauthorised") return;
  }
  setTimeout(listen, 2000); // the daemon restarted or a proxy closed the stream: listen again
}

async function refresh() {
  const res = await api("/v1/fleet");
  if (!res.ok) return;
  fleet = await res.json();
  render();
  if (open) await showEntity(open);
}

// ---- the fleet ----------------------------------------------------------------------------------
function render() {
  const st = fleet.status;
  $("mode").textContent = st.mode === "act" ? "acting" : "advise only: nothing is touched";
  $("mode").className = `badge ${st.mode}`;
  const lead = st.leadership;
  $("leader").textContent = lead ? `leader ${lead.leader || "unknown"}${lead.leading ? " (this replica)" : ""} · epoch ${lead.epoch}` : "single replica";
  $("brake").textContent = st.storm_brake ? `storm brake: ${st.storm_brake}` : "storm brake off";
  $("brake").className = st.storm_brake ? "badge braked" : "badge";
  $("clock").textContent = `tick ${when(fleet.now)}`;
  $("fleet").setAttribute("data-version", String(fleet.version));
  const t = fleet.totals;
  $("summary").textContent = `${counted(t.nodes)} node(s); ${counted(t.gpus)} GPU(s); ${t.held} node(s) held out of service` + (st.mode === "act" ? "" : " (advise mode: held means would hold)");
  const cdus = $("cdus");
  cdus.replaceChildren(...fleet.cdus.map(renderCdu));
  renderSide(st);
}

function renderCdu(cdu) {
  const head = el("div", { class: "cdu-head", onclick: () => showEntity(cdu.id) },
    badge(cdu.state), el("strong", {}, cdu.id), el("span", { class: "muted" }, `nodes: ${counted(cdu.nodes)}`));
  const racks = el("div", { class: "racks" }, ...cdu.racks.map((r) => {
    const state = r.state;
    return el("button", { class: "tile", type: "button", "data-state": state, "data-entity": r.id,
      title: `${r.id}: ${state} · nodes ${counted(r.nodes)} · GPUs ${counted(r.gpus)}`,
      onclick: () => showEntity(r.id) }, `${GLYPH[state]} ${r.id.split("/").pop()}`);
  }));
  return el("div", { class: "cdu", "data-entity": cdu.id }, head, racks);
}

function renderSide(st) {
  const operator = document.body.classList.contains("operator");
  const breakers = Object.entries(st.breakers || {}).map(([a, s]) => `${a} ${s}`).join(", ") || "no enforcing actuator";
  const b = st.budgets || { used: {}, limit: {} };
  const budgets = Object.keys(b.limit || {}).map((k) => `${k} ${b.used[k] || 0}/${b.limit[k]}`).join(" · ") + (b.fullest_domain ? ` (fullest domain ${b.fullest_domain})` : "");
  $("safety").replaceChildren(
    el("div", {}, `Budgets used: ${budgets || "–"}`),
    el("div", {}, `Breakers: ${breakers}`),
    el("div", {}, `Queued by the budgets: ${(st.queued || []).join(", ") || "none"}`),
    el("div", {}, `Held out of service: ${(st.quarantined || []).length}`),
  );
  // One row per kind of action: a CDU event asks the same thing of a hundred GPUs at once.
  const groups = new Map();
  for (const w of st.awaiting || []) {
    if (!groups.has(w.kind)) groups.set(w.kind, []);
    groups.get(w.kind).push(w);
  }
  $("awaiting").replaceChildren(...[...groups.entries()].map(([kind, ws]) => {
    const targets = [...new Set(ws.map((w) => w.target))];
    const shown = targets.slice(0, 5).join(", ") + (targets.length > 5 ? ` and ${targets.length - 5} more` : "");
    const title = ws.length === 1 ? `${kind} ${ws[0].target}` : `${kind} × ${ws.length}: ${shown}`;
    const keys = ws.map((w) => w.key);
    return el("li", { "data-kind": kind },
      el("strong", {}, title),
      el("span", { class: "muted" }, `${ws[0].actuator} · ${ws[0].reason} · until ${when(Math.min(...ws.map((w) => w.expires)))}`),
      ...(operator ? [
        el("button", { type: "button", class: "approve", onclick: () => decide("approve", keys) }, ws.length === 1 ? "Approve" : `Approve all ${ws.length}`),
        el("button", { type: "button", class: "reject", onclick: () => decide("reject", keys) }, ws.length === 1 ? "Reject" : `Reject all ${ws.length}`),
      ] : []));
  }));
  if (!groups.size) $("awaiting").replaceChildren(el("li", { class: "muted" }, "nothing waits"));
  const ends = { pause: "resume", pin: "unpin", maintenance: "end_maintenance" };
  $("controls").replaceChildren(...(st.controls || []).map((c) => el("li", { "data-target": c.target },
    el("strong", {}, `${c.verb}${c.state ? " " + c.state : ""} ${c.target}`),
    el("span", { class: "muted" }, `by ${c.by} until ${when(c.until)}: ${c.reason}`),
    ...(operator ? [el("button", { type: "button", onclick: () => control(ends[c.verb], c.target, "ended from the console") }, "End")] : []))));
  if (!(st.controls || []).length) $("controls").replaceChildren(el("li", { class: "muted" }, "none"));
  $("leaves").replaceChildren(...fleet.leaves.map((l) => el("li", {}, badge(l.state), link(l.id), el("span", { class: "muted" }, `links: ${counted(l.links)}`))));
  $("storage").replaceChildren(...fleet.storage.map((s) => el("li", {}, badge(s.state), link(s.id))));
  const econ = new Map((fleet.economics || []).map((r) => [`job/${r.job}`, r]));
  const modes = new Map((fleet.diagnosis || []).map((f) => [`job/${f.job}`, f]));
  $("jobs").replaceChildren(...fleet.jobs.map((j) => {
    const e = econ.get(j.id);
    const stakes = e ? `ETTR ${e.expected_ettr == null ? "–" : e.expected_ettr.toFixed(3)} · rollback ${e.rollback_gpu_h == null ? "–" : e.rollback_gpu_h.toFixed(1)} GPU-h · slip risk ${e.slip_probability == null ? "–" : Math.round(100 * e.slip_probability) + "%"} · plan ${e.plan || "none"}${e.every_s ? " every " + (e.every_s / 60).toFixed(1) + " min" : ""}` : "";
    const f = modes.get(j.id);
    const held = f && f.held_back_gpu_s_per_s > 0 ? ` · holds back ${f.held_back_gpu_s_per_s.toFixed(1)} healthy GPU-s/s` : "";
    const lead = f && f.lead_time_s != null ? ` · named as a risk ${Math.round(f.lead_time_s / 60)} min before` : "";
    const diag = f && f.mode !== "healthy" ? `failure mode: ${f.mode} (${Math.round(100 * f.confidence)}%) · ${f.evidence.join("; ")} · costs ${f.rate_gpu_h_per_h.toFixed(1)} GPU-h/h${held}${lead} · ${f.mitigation}`
      : f && f.risk && f.risk.length ? `at risk: ${f.evidence.join("; ")} · ${f.mitigation}` : "";
    const suspects = j.suspects.length ? `suspect parts: ${j.suspects.join(", ")}${j.suspects_total > j.suspects.length ? ` and ${j.suspects_total - j.suspects.length} more` : ""}` : "";
    return el("li", { "data-entity": j.id }, badge(j.state), link(j.id), el("span", { class: "muted" }, `${j.class} · nodes ${counted(j.nodes)}`),
      ...(stakes ? [el("span", { class: "stakes" }, stakes)] : []), ...(diag ? [el("span", { class: "suspects diagnosis" }, diag)] : []),
      ...(suspects ? [el("span", { class: "suspects" }, suspects)] : []));
  }));
  $("notices").replaceChildren(...(st.active_notices || []).map((n) => el("li", {}, n)));
  if (!(st.active_notices || []).length) $("notices").replaceChildren(el("li", { class: "muted" }, "none"));
}

function link(eid) {
  return el("a", { class: "entity", onclick: () => showEntity(eid), "data-entity": eid }, eid);
}

// ---- one entity ---------------------------------------------------------------------------------
async function showEntity(eid) {
  open = eid;
  const res = await api(`/v1/entities/${entityPath(eid)}`);
  if (!res.ok) {
    $("drill-title").textContent = `${eid}: ${(await res.json()).detail}`;
    return;
  }
  const e = await res.json();
  $("drill").hidden = false;
  $("drill").setAttribute("data-entity", eid);
  $("drill").setAttribute("data-state", e.state);
  $("drill-title").replaceChildren(badge(e.state), ` ${e.id}`, el("span", { class: "muted" }, ` (${e.kind}; engine: ${e.engine_state} since ${when(e.since)})`));
  const s = e.scores;
  const parts = [
    el("p", {}, `GFS ${fmt(s.gfs)} · PRS ${fmt(s.prs)} · FAE ${fmt(s.fae)}`),
    ...(e.blast ? [el("p", { class: "blast" }, `Blast radius: if it failed, ${e.blast.takes_down_gpus} GPUs stop (${e.blast.gpus} under it, ${e.blast.n_jobs} job(s) with a rank there${e.blast.jobs.length ? ": " + e.blast.jobs.join(", ") : ""})` + (e.blast.held_back_gpu_s_per_s > 0 ? ` · holds back ${e.blast.held_back_gpu_s_per_s.toFixed(1)} healthy GPU-s/s now` : ""))] : []),
    el("h3", {}, "Why"),
    e.evidence.length ? el("ul", { class: "rows" }, ...e.evidence.map((i) => el("li", {}, `${i.text}`, el("span", { class: "muted" }, ` (${i.detector} on ${i.signal})`)))) : el("p", { class: "muted" }, "no evidence against it"),
  ];
  if (e.series && e.series.ts.length > 1) {
    const marks = e.transitions.map((t) => ({ ts: t.ts, label: `${t.from}→${t.to}` }));
    parts.push(el("h3", {}, "Around its transitions (recent ticks)"),
      chart(e.series.ts, { GFS: e.series.gfs, PRS: e.series.prs }, marks, [0, 1], "scores"));
    for (const [name, values] of Object.entries(e.series.signals)) parts.push(chart(e.series.ts, { [name]: values }, marks, null, "signal"));
  }
  if (e.next_steps && e.next_steps.length) parts.push(el("h3", {}, "Next steps for a person"), el("ul", { class: "rows next" }, ...e.next_steps.map((n) => el("li", {}, n))));
  if (e.controls.length) parts.push(el("h3", {}, "Operator controls"), el("ul", { class: "rows" }, ...e.controls.map((c) => el("li", {}, `${c.verb}${c.state ? " " + c.state : ""} ${c.target} by ${c.by} until ${when(c.until)}: ${c.reason}`))));
  if (e.children.length) parts.push(el("h3", {}, "Below it"), table(["entity", "state", "GPUs"], e.children.map((c) => [link(c.id), badge(c.state), c.gpus ? counted(c.gpus) : ""])));
  parts.push(el("h3", {}, "State changes (recent)"), e.transitions.length ? table(["time", "from", "to", "why"], e.transitions.map((t) => [when(t.ts), t.from, t.to, t.reason])) : el("p", { class: "muted" }, "none recently"));
  const value = (v) => (v == null ? "not valued" : `${v.cost_gpu_h == null ? "–" : v.cost_gpu_h.toFixed(1)} / ${v.benefit_gpu_h == null ? "–" : v.benefit_gpu_h.toFixed(1)}`);
  parts.push(el("h3", {}, "Decisions on it or caused by it (recent)"), e.decisions.length ? table(["time", "action", "target", "mode", "predicted cost / benefit (GPU-h)", "realised"], e.decisions.map((d) => [when(d.ts), d.action, d.target, d.mode, d.predicted.cost_gpu_h == null && d.predicted.benefit_gpu_h == null ? "not valued" : value(d.predicted), d.realised ? value(d.realised) : (d.mode === "advise" ? "advised only" : "not known yet")])) : el("p", { class: "muted" }, "none recently"));
  parts.push(el("h3", {}, "Actions (recent)"), e.actions.length ? table(["time", "action", "target", "by", "outcome", "detail"], e.actions.map((a) => [when(a.ts), a.kind, a.target, a.actuator, a.status, a.detail])) : el("p", { class: "muted" }, "none recently"));
  $("drill-body").replaceChildren(...parts);
}

// A small line chart in SVG (no library): one or more series against time, the transitions as
// vertical marks. ``range``: fixed [lo, hi], or null to scale to the data.
const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
  return n;
}

function chart(ts, series, marks, range, kind) {
  const W = 640, H = 110, L = 44, R = 8, T = 8, B = 18;
  const values = Object.values(series).flat().filter((v) => v != null);
  let [lo, hi] = range || [Math.min(...values), Math.max(...values)];
  if (!(hi > lo)) { lo -= 1; hi += 1; }
  const t0 = ts[0], t1 = ts[ts.length - 1];
  const x = (t) => L + ((t - t0) / Math.max(1e-9, t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: `chart ${kind}`, role: "img" });
  root.append(svg("rect", { x: L, y: T, width: W - L - R, height: H - T - B, class: "frame" }));
  for (const [v, anchor] of [[hi, T + 9], [lo, H - B]]) {
    const label = svg("text", { x: L - 4, y: anchor, class: "axis", "text-anchor": "end" });
    label.textContent = Number(v).toPrecision(3);
    root.append(label);
  }
  for (const m of marks) {
    if (m.ts < t0 || m.ts > t1) continue;
    root.append(svg("line", { x1: x(m.ts), x2: x(m.ts), y1: T, y2: H - B, class: "mark" }));
    const label = svg("text", { x: x(m.ts) + 2, y: H - 4, class: "axis" });
    label.textContent = m.label;
    root.append(label);
  }
  Object.entries(series).forEach(([name, vs], i) => {
    let d = "";
    vs.forEach((v, k) => { if (v != null) d += `${d && vs[k - 1] != null ? "L" : "M"}${x(ts[k]).toFixed(1)},${y(v).toFixed(1)}`; });
    root.append(svg("path", { d, class: `line s${i}` }));
    const label = svg("text", { x: L + 4 + i * 120, y: T + 10, class: `legend s${i}` });
    const last = [...vs].reverse().find((v) => v != null);
    label.textContent = `${name} ${last == null ? "" : Number(last).toPrecision(4)}`;
    root.append(label);
  });
  return root;
}

function fmt(x) {
  return x == null ? "–" : Number(x).toFixed(2);
}

function table(head, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((c) => el("td", {}, c))))));
}

// ---- operator controls --------------------------------------------------------------------------
async function post(verb, body) {
  const res = await api(`/v1/ops/${verb}`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const got = await res.json();
  $("control-result").textContent = res.ok ? got.detail : `refused (${res.status}): ${typeof got.detail === "string" ? got.detail : JSON.stringify(got.detail)}`;
  await refresh();
  return res.ok;
}

async function decide(verb, keys) {
  const reason = verb === "approve" ? "approved from the console" : (prompt("Why reject it?") || "rejected from the console");
  for (const key of keys) if (!(await post(verb, { target: key, reason }))) break;
}

function control(verb, target, reason) {
  return post(verb, { target, reason });
}

function legend() {
  $("legend").replaceChildren(...STATES.map(badge));
}

document.addEventListener("DOMContentLoaded", () => {
  legend();
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, $("token").value.trim());
    $("token").value = "";
    signIn();
  });
  $("signout").addEventListener("click", () => signOut(""));
  const verb = $("c-verb");
  const pinOnly = () => {
    for (const n of document.querySelectorAll(".pin-only")) n.hidden = verb.value !== "pin";
    for (const n of document.querySelectorAll(".standing-only")) n.hidden = verb.value === "repaired";  // once, no expiry
  };
  verb.addEventListener("change", pinOnly);
  pinOnly();
  $("control-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const body = { target: $("c-target").value.trim(), reason: $("c-reason").value.trim() };
    if (verb.value !== "repaired") body.for_s = Number($("c-for").value);
    if (verb.value === "pin") body.state = $("c-state").value;
    post(verb.value, body);
  });
  if (sessionStorage.getItem(KEY)) signIn();
  else signOut("");
});
