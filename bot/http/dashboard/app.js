// The jarvis dashboard: plain JS, no dependencies. Everything it shows comes from /api/v1
// and is put on the page as text (never as HTML). Live updates come from /api/v1/events.
"use strict";

const state = { me: null, csrf: "", source: null, refresh: null, view: null };

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") el.className = v;
    else if (k === "style") Object.assign(el.style, v);  // CSSOM: allowed by the page's CSP
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) el.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  return el;
}

async function api(method, path, body) {
  const headers = {};
  if (method !== "GET") headers["X-CSRF-Token"] = state.csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch("/api/v1" + path, { method, headers, credentials: "same-origin",
                                             body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await r.json().catch(() => ({}));
  if (r.status === 401 && path !== "/session") { state.me = null; location.hash = "#/login"; }
  if (!r.ok) throw new Error((data.error && data.error.message) || ("HTTP " + r.status));
  return data;
}

function when(ms) { return ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC" : ""; }
function took(a, b) {
  if (!a) return "";
  const s = Math.max(0, Math.round(((b || Date.now()) - a) / 1000));
  return s < 60 ? s + "s" : Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
}
function stateCell(j) { return h("span", { class: "state " + j.state }, j.state); }
function mayOperate() { return state.me && (state.me.role === "operate" || state.me.role === "admin"); }
function banner(text) { const b = document.getElementById("banner"); b.textContent = text || ""; b.hidden = !text; }

function progress(j, stages) {
  const bar = h("div", { class: "progress", title: j.summary });
  for (let i = 1; i <= j.stage_count; i++) {
    let cls = "";
    if (stages) cls = stages[i - 1].result === "pending" ? "" : stages[i - 1].result;
    else if (i < j.stage || (j.state === "ready")) cls = "ok";
    else if (i === j.stage) cls = j.state === "running" ? "running" : j.state === "failed" ? "failed" :
                                  j.state === "cancelled" ? "cancelled" : "";
    bar.append(h("span", { class: cls, "data-stage": i }));
  }
  return bar;
}

function jobRow(j) {
  return h("tr", { "data-job": j.id },
    h("td", {}, h("a", { href: "#/job/" + j.id }, "#" + j.id)),
    h("td", {}, h("a", { href: "#/host/" + encodeURIComponent(j.host) }, j.host)),
    h("td", {}, stateCell(j)),
    h("td", {}, progress(j)),
    h("td", {}, j.stage + "/" + j.stage_count + " " + j.task),
    h("td", {}, j.requested_by),
    h("td", {}, when(j.created_ms)));
}

function jobTable(jobs, id) {
  return h("table", { class: "jobs", id },
    h("thead", {}, h("tr", {}, ["Job", "Host", "State", "Stages", "Stage", "By", "Created"].map(t => h("th", {}, t)))),
    h("tbody", {}, jobs.map(jobRow)));
}

async function viewHome(main) {
  const [flight1, flight2, recent] = await Promise.all([
    api("GET", "/jobs?state=running&limit=100"), api("GET", "/jobs?state=queued&limit=100"), api("GET", "/jobs?limit=25")]);
  const inflight = flight1.jobs.concat(flight2.jobs);
  main.replaceChildren(
    h("h1", {}, "Jobs in flight"),
    inflight.length ? jobTable(inflight, "in-flight") : h("p", { class: "muted", id: "none-in-flight" }, "No jobs in flight."),
    h("h2", {}, "Recent jobs"), jobTable(recent.jobs, "recent"));
}

async function viewJob(main, id) {
  const [j, log] = await Promise.all([api("GET", "/jobs/" + id), api("GET", "/jobs/" + id + "/log?lines=200")]);
  const start = j.started_ms || j.created_ms;
  const end = j.ended_ms || Date.now();
  const span = Math.max(end - start, 1);
  const rows = j.stages.map(s => {
    const left = s.started_ms ? (s.started_ms - start) / span * 100 : 0;
    const width = s.started_ms ? ((s.ended_ms || Date.now()) - s.started_ms) / span * 100 : 0;
    return h("div", { class: "tl-row " + s.result, "data-stage": s.stage, "data-result": s.result },
      h("span", { class: "tl-name" }, s.stage + ". " + s.task),
      h("div", { class: "tl-track" }, h("div", { class: "tl-bar", style: { left: left.toFixed(2) + "%", width: Math.max(width, 0.3).toFixed(2) + "%" } })),
      h("span", {}, s.result === "pending" ? "" : s.result + " " + took(s.started_ms, s.ended_ms),
        s.reason ? h("div", { class: "reason" }, s.reason) : null));
  });
  const actions = h("p", {});
  if (mayOperate() && (j.state === "running" || j.state === "queued"))
    actions.append(h("button", { class: "danger", id: "cancel", onclick: () => act(j, "cancel") }, "Cancel job"));
  if (mayOperate() && (j.state === "failed" || j.state === "cancelled"))
    actions.append(h("button", { id: "retry", onclick: () => act(j, "retry") }, "Retry from stage " + j.stage));
  const pre = h("pre", { class: "log", id: "log" }, log.lines.map(l => `${when(l.at_ms).slice(11, 19)} ${l.stage}/${j.stage_count} ${l.task}: ${l.line}\n`));
  main.replaceChildren(
    h("h1", {}, "Job #" + j.id + " ", h("a", { href: "#/host/" + encodeURIComponent(j.host) }, j.host), " ", stateCell(j)),
    h("p", { id: "summary" }, j.summary),
    h("p", { class: "muted" }, `pipeline ${j.pipeline}, design ${j.design}, asked by ${j.requested_by} (${j.origin}) at ${when(j.created_ms)}`),
    actions,
    h("h2", {}, "Stages"), h("div", { class: "timeline", id: "timeline" }, rows),
    h("h2", {}, "Log"), pre);
  pre.scrollTop = pre.scrollHeight;
}

async function act(j, what) {
  if (what === "cancel" && !confirm(`Cancel job #${j.id} (${j.host})?`)) return;
  try {
    const r = await api("POST", `/jobs/${j.id}/${what}`);
    banner(r.message);
  } catch (e) { banner(e.message); }
  route();
}

async function viewHost(main, name) {
  const d = await api("GET", "/hosts/" + encodeURIComponent(name) + "?limit=100");
  main.replaceChildren(h("h1", {}, "Host " + d.host), h("p", { class: "muted" }, d.jobs.length + " jobs, newest first"), jobTable(d.jobs));
}

async function viewAudit(main, params) {
  const q = new URLSearchParams();
  for (const k of ["who", "host", "since"]) if (params.get(k)) q.set(k, params.get(k));
  q.set("limit", "200");
  const d = await api("GET", "/audit?" + q);
  const input = (name, ph) => h("input", { name, placeholder: ph, value: params.get(name) || "" });
  const form = h("form", { class: "filters", onsubmit: (e) => {
    e.preventDefault();
    const f = new URLSearchParams();
    for (const el of form.querySelectorAll("input")) if (el.value) f.set(el.name, el.value);
    location.hash = "#/audit?" + f;
  } }, input("who", "who (http:ci, irc:...)"), input("host", "host"), input("since", "since (1h, 7d)"), h("button", {}, "Filter"));
  main.replaceChildren(h("h1", {}, "Who did what, when"), form,
    h("table", { id: "audit" }, h("thead", {}, h("tr", {}, ["When", "Who", "Where", "Command", "Outcome"].map(t => h("th", {}, t)))),
      h("tbody", {}, d.entries.map(e => h("tr", {}, h("td", {}, when(e.at_ms)), h("td", {}, e.who),
        h("td", {}, e.protocol + " " + e.place), h("td", {}, e.command),
        h("td", { class: e.outcome === "ok" ? "ok" : "failed" }, e.outcome))))));
}

function viewLogin(main) {
  const token = h("input", { type: "password", id: "token", autocomplete: "off", placeholder: "jv_..." });
  const msg = h("p", { class: "error", id: "login-error" });
  main.replaceChildren(h("form", { class: "login", onsubmit: async (e) => {
    e.preventDefault();
    try {
      const me = await api("POST", "/session", { token: token.value });
      state.me = me; state.csrf = me.csrf; token.value = "";
      location.hash = "#/";
    } catch (err) { msg.textContent = err.message; }
  } }, h("h1", {}, "Log in"), h("p", {}, "Paste an API token (jarvis token add NAME --role read|operate). It is exchanged for a session cookie and not kept by the page."),
    token, h("button", { id: "login" }, "Log in"), msg));
}

// Live: every engine event re-renders the current view (at most every 150 ms); a job page's
// log lines are appended as they come.
function connect() {
  if (state.source) return;
  state.source = new EventSource("/api/v1/events");
  const onEvent = (ev) => {
    let e;
    try { e = JSON.parse(ev.data); } catch { return; }
    if (e.kind === "stage_log") {
      const pre = document.getElementById("log");
      if (pre && state.view && state.view.job === e.job) {
        pre.append(`${when(e.at_ms).slice(11, 19)} ${e.stage}/${e.stage_count} ${e.task}: ${e.text}\n`);
        pre.scrollTop = pre.scrollHeight;
      }
      return;
    }
    if (!state.refresh) state.refresh = setTimeout(() => { state.refresh = null; route(true); }, 150);
  };
  for (const k of ["job_queued", "job_started", "stage_started", "stage_log", "stage_succeeded", "stage_retrying",
                   "job_ready", "job_failed", "job_cancelled", "store_failed", "store_recovered"])
    state.source.addEventListener(k, onEvent);
}

async function route(live) {
  const main = document.getElementById("main");
  const [path, query] = (location.hash.slice(1) || "/").split("?");
  const params = new URLSearchParams(query || "");
  if (!state.me && path !== "/login") {
    try { const me = await api("GET", "/session"); state.me = me; state.csrf = me.csrf; }
    catch { location.hash = "#/login"; return; }
  }
  document.getElementById("who").textContent = state.me ? `http:${state.me.name} (${state.me.role})` : "";
  document.getElementById("logout").hidden = !state.me;
  if (state.me) connect();
  if (!live) banner("");
  try {
    let m;
    if (path === "/login") { state.view = null; return viewLogin(main); }
    if ((m = path.match(/^\/job\/(\d+)$/))) { state.view = { job: Number(m[1]) }; return await viewJob(main, m[1]); }
    state.view = null;
    if ((m = path.match(/^\/host\/(.+)$/))) return await viewHost(main, decodeURIComponent(m[1]));
    if (path === "/audit") return await viewAudit(main, params);
    return await viewHome(main);
  } catch (e) {
    main.replaceChildren(h("p", { class: "error" }, e.message));
  }
}

document.getElementById("logout").addEventListener("click", async () => {
  try { await api("DELETE", "/session"); } catch { /* gone anyway */ }
  state.me = null; state.source?.close(); state.source = null;
  location.hash = "#/login";
});
window.addEventListener("hashchange", () => route());
route();
