// nexusd's dashboard: a page of the agent, built on its documented HTTP
// API and nothing else. Signed in with an API key exchanged for a session
// (an HttpOnly cookie the script never sees); every state-changing call
// carries the session's CSRF token. Plain script, no build step.
"use strict";

// `nav` counts navigations: a page whose answers come after the next
// navigation draws nothing.
const state = { session: null, live: null, nav: 0 };

class Stale extends Error {}

// Throws when the user has gone to another page since `nav`.
function still(nav) {
  if (nav !== state.nav) throw new Stale();
}

// ---- the API ---------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.session) headers["X-CSRF-Token"] = state.session.csrf;
  const resp = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!resp.ok) {
    const message = (data && data.error && data.error.message) || `${resp.status} ${resp.statusText}`;
    if (resp.status === 401 && path !== "/v1/session") {
      // The session ended (expired, signed out elsewhere): sign in again.
      state.session = null;
      showSignIn("Your session has ended: sign in again.");
    }
    throw new ApiError(resp.status, message);
  }
  return data;
}

// ---- small helpers ---------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function badge(status) {
  return h("span", { class: `badge s-${status}`, "data-status": status }, status);
}

function when(text) {
  if (!text) return "–";
  const d = new Date(text);
  return isNaN(d) ? text : d.toLocaleString();
}

function ms(n) {
  if (n === null || n === undefined) return "–";
  return n < 1000 ? `${n} ms` : `${(n / 1000).toFixed(n < 10000 ? 2 : 1)} s`;
}

function isFinal(status) {
  return ["succeeded", "failed", "cancelled", "skipped"].includes(status);
}

function canWrite() {
  return state.session && (state.session.role === "writer" || state.session.role === "admin");
}

// Runs a button's action; its refusal is said, not thrown.
async function act(fn) {
  try {
    await fn();
  } catch (err) {
    if (!(err instanceof Stale) && err.status !== 401) toast(err.message);
  }
}

function toast(text) {
  const t = document.getElementById("toast");
  t.textContent = text;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.textContent = ""; }, 4000);
}

function stopLive() {
  if (state.live) { state.live.close(); state.live = null; }
}

function page(title, ...content) {
  stopLive();
  const main = document.getElementById("main");
  main.replaceChildren(h("h1", {}, title), ...content);
  document.title = `${title} · nexusd`;
  for (const a of document.querySelectorAll(".top nav a")) {
    const here = location.hash || "#/";
    const on = a.getAttribute("href") === "#/" ? here === "#/" : here.startsWith(a.getAttribute("href"));
    if (on) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  main.focus();
  return main;
}

// ---- sign-in ---------------------------------------------------------

function showSignIn(message) {
  stopLive();
  document.querySelector(".top").hidden = true;
  const error = h("p", { class: "error", id: "signin-error", role: "alert" }, message || "");
  const key = h("input", {
    id: "api-key", name: "api-key", type: "password", required: true,
    autocomplete: "off", placeholder: "nxk_…", "aria-describedby": "signin-error",
  });
  const form = h("form", {
    onsubmit: async (e) => {
      e.preventDefault();
      error.textContent = "";
      try {
        state.session = await api("POST", "/v1/session", { api_key: key.value.trim() });
        key.value = "";
        signedIn();
      } catch (err) {
        error.textContent = err.message;
      }
    },
  },
    h("label", { for: "api-key" }, "API key", key),
    h("button", { type: "submit", class: "primary" }, "Sign in"),
  );
  const main = document.getElementById("main");
  main.replaceChildren(h("div", { class: "signin panel" },
    h("h1", {}, "Sign in to nexusd"),
    h("p", { class: "muted" }, "Paste an API key (nexusd admin create-user-key NAME). It is exchanged for a session; the browser does not keep it."),
    form, error));
  document.title = "Sign in · nexusd";
  key.focus();
}

function signedIn() {
  document.querySelector(".top").hidden = false;
  document.getElementById("who").textContent = `${state.session.user} (${state.session.role})`;
  route();
}

// ---- pages -----------------------------------------------------------

async function overview() {
  const nav = state.nav;
  const main = page("Overview", h("p", { class: "loading" }, "Loading…"));
  const { workflows } = await api("GET", "/v1/workflows");
  still(nav);
  const rows = workflows.map((w) => {
    const actions = canWrite()
      ? h("button", {
          type: "button",
          onclick: () => act(async () => {
            const verb = w.status === "paused" ? "resume" : "pause";
            await api("POST", `/v1/workflows/${encodeURIComponent(w.name)}/${verb}`);
            toast(`${w.name} ${verb === "pause" ? "paused" : "resumed"}`);
            await overview();
          }),
        }, w.status === "paused" ? `Resume ${w.name}` : `Pause ${w.name}`)
      : null;
    return h("tr", { "data-workflow": w.name },
      h("td", {}, h("a", { href: `#/runs?workflow=${encodeURIComponent(w.name)}` }, w.name)),
      h("td", {}, w.kind),
      h("td", {}, badge(w.status)),
      h("td", { class: "wide" }, String(w.revision)),
      h("td", { class: "wide muted" }, w.description || ""),
      h("td", {}, actions));
  });
  main.replaceChildren(h("h1", {}, "Overview"),
    workflows.length === 0
      ? h("p", { class: "muted" }, "No workflow is applied yet: nexusd apply -f DIR.")
      : h("table", {},
          h("thead", {}, h("tr", {},
            h("th", { scope: "col" }, "Workflow"), h("th", { scope: "col" }, "Kind"),
            h("th", { scope: "col" }, "Status"), h("th", { scope: "col", class: "wide" }, "Revision"),
            h("th", { scope: "col", class: "wide" }, "Description"), h("th", { scope: "col" }, h("span", { class: "muted" }, "Actions")))),
          h("tbody", {}, rows)));
}

// A time, short: only the time of day when it is today.
function short(text) {
  const d = new Date(text);
  return text && !isNaN(d) && d.toDateString() === new Date().toDateString()
    ? d.toLocaleTimeString()
    : when(text);
}

function runRow(r) {
  return h("tr", { "data-run": r.id },
    h("td", {}, h("a", { href: `#/runs/${encodeURIComponent(r.id)}` }, short(r.queued_at))),
    h("td", { class: "wide" }, r.workflow),
    h("td", { class: "path" }, r.path),
    h("td", { class: "status" }, badge(r.status)),
    h("td", { class: "wide duration" }, ms(r.duration_ms)));
}

async function runs(params) {
  const workflow = params.get("workflow") || "";
  const status = params.get("status") || "";
  const filters = h("form", {
    class: "filters",
    onsubmit: (e) => {
      e.preventDefault();
      const q = new URLSearchParams();
      if (wf.value) q.set("workflow", wf.value);
      if (st.value) q.set("status", st.value);
      go(`#/runs${q.toString() ? "?" + q : ""}`);
    },
  });
  const wf = h("input", { id: "f-workflow", value: workflow, placeholder: "any" });
  const st = h("select", { id: "f-status" },
    ["", "queued", "running", "retrying", "succeeded", "failed", "cancelled", "skipped"].map((s) =>
      h("option", { value: s, selected: s === status }, s || "any")));
  filters.append(h("label", { for: "f-workflow" }, "Workflow", wf),
    h("label", { for: "f-status" }, "Status", st),
    h("button", { type: "submit" }, "Filter"));
  const body = h("tbody", {});
  const table = h("table", { "aria-live": "polite" },
    h("thead", {}, h("tr", {},
      h("th", { scope: "col" }, "Queued"), h("th", { scope: "col", class: "wide" }, "Workflow"),
      h("th", { scope: "col" }, "File"), h("th", { scope: "col" }, "Status"),
      h("th", { scope: "col", class: "wide" }, "Duration"))),
    body);
  const nav = state.nav;
  page("Runs", filters, table);
  // New runs and changes as they happen: the listing is asked for once
  // the stream is open (the server follows from then), and the changes
  // that came meanwhile are applied after it, in order: the last says
  // where each run is.
  const url = `/v1/events?follow=true${workflow ? "&workflow=" + encodeURIComponent(workflow) : ""}`;
  const live = new EventSource(url);
  state.live = live;
  const pending = [];
  let listed = false;
  let opened = false;
  const mark = () => { if (listed && opened) table.dataset.live = "true"; };
  const apply = (c, update) => {
    const row = body.querySelector(`tr[data-run="${CSS.escape(c.run)}"]`);
    if (status && c.status !== status) {
      if (row && update) row.remove();
      return;
    }
    if (row) {
      if (!update) return;
      row.querySelector(".status").replaceChildren(badge(c.status));
      if (c.duration_ms !== null && c.duration_ms !== undefined) {
        row.querySelector(".duration").textContent = ms(c.duration_ms);
      }
    } else {
      body.prepend(runRow({ id: c.run, queued_at: c.at, workflow: c.workflow, path: c.path, status: c.status, duration_ms: c.duration_ms }));
      while (body.children.length > 200) body.lastElementChild.remove();
    }
  };
  const open = new Promise((resolve, reject) => {
    live.addEventListener("open", resolve, { once: true });
    live.addEventListener("error", () => { if (live.readyState === EventSource.CLOSED) reject(new Error("closed")); }, { once: true });
  });
  live.addEventListener("run", (e) => {
    const c = JSON.parse(e.data);
    if (listed) apply(c, true); else pending.push(c);
  });
  try {
    await open;
  } catch (_) {
    // Refused: the session ended, most likely (then back to sign-in).
    try {
      await api("GET", "/v1/session");
    } catch (err) {
      if (err.status === 401) {
        state.session = null;
        showSignIn("Your session has ended: sign in again.");
      }
      throw err;
    }
    throw new Error("the live stream of runs was refused");
  }
  opened = true;
  still(nav);
  const q = new URLSearchParams({ limit: "50" });
  if (workflow) q.set("workflow", workflow);
  if (status) q.set("status", status);
  const list = await api("GET", `/v1/runs?${q}`);
  still(nav);
  body.replaceChildren(...list.runs.map((r) => runRow({ ...r, path: r.event.path })));
  listed = true;
  for (const c of pending) apply(c, true);
  mark();
}

function logLine(l) {
  return h("span", { class: l.stream === "stderr" ? "err" : "" }, l.line + "\n");
}

async function run(id) {
  const nav = state.nav;
  const main = page(`Run ${id}`, h("p", { class: "loading" }, "Loading…"));
  const r = await api("GET", `/v1/runs/${encodeURIComponent(id)}`);
  still(nav);
  const e = r.event;
  const facts = h("dl", { class: "facts" },
    h("dt", {}, "Workflow"), h("dd", {}, h("a", { href: `#/runs?workflow=${encodeURIComponent(r.workflow)}` }, r.workflow)),
    h("dt", {}, "Status"), h("dd", { id: "run-status" }, badge(r.status)),
    h("dt", {}, "Event"), h("dd", {}, `${e.type} ${e.path}`),
    e.old_path ? [h("dt", {}, "Old path"), h("dd", {}, e.old_path)] : null,
    h("dt", {}, "Source"), h("dd", {}, e.source || "watch"),
    e.actor ? [h("dt", {}, "By"), h("dd", {}, e.actor)] : null,
    e.caused_by_run ? [h("dt", {}, "Caused by"), h("dd", {}, h("a", { href: `#/runs/${encodeURIComponent(e.caused_by_run)}` }, e.caused_by_run))] : null,
    r.rerun_of ? [h("dt", {}, "Re-run of"), h("dd", {}, h("a", { href: `#/runs/${encodeURIComponent(r.rerun_of)}` }, r.rerun_of))] : null,
    r.reason ? [h("dt", {}, "Reason"), h("dd", {}, r.reason)] : null,
    r.error ? [h("dt", {}, "Error"), h("dd", { class: "error" }, r.error)] : null,
    h("dt", {}, "Queued"), h("dd", {}, when(r.queued_at)),
    h("dt", {}, "Duration"), h("dd", {}, ms(r.duration_ms)),
    h("dt", {}, "Node"), h("dd", {}, r.node || "–"));
  const actions = h("div", { class: "actions" });
  const final = isFinal(r.status);
  if (canWrite()) {
    if (!final) {
      actions.append(h("button", {
        type: "button", class: "danger",
        onclick: () => act(async () => {
          await api("POST", `/v1/runs/${encodeURIComponent(id)}/cancel`, {});
          toast("cancelled");
          await run(id);
        }),
      }, "Cancel run"));
    } else {
      const rerun = (from_failed) => () => act(async () => {
        const a = await api("POST", `/v1/runs/${encodeURIComponent(id)}/rerun`, { from_failed });
        location.hash = `#/runs/${encodeURIComponent(a.run)}`;
      });
      actions.append(h("button", { type: "button", onclick: rerun(false) }, "Re-run"));
      if (r.status === "failed") {
        actions.append(h("button", { type: "button", onclick: rerun(true) }, "Re-run from the failed step"));
      }
    }
  }
  const attempts = r.attempt_log.length
    ? h("table", {},
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Attempt"), h("th", { scope: "col" }, "Status"),
          h("th", { scope: "col" }, "Node"), h("th", { scope: "col" }, "Error"))),
        h("tbody", {}, r.attempt_log.map((a) => h("tr", {},
          h("td", {}, String(a.attempt)), h("td", {}, badge(a.status)),
          h("td", {}, a.node || "–"), h("td", {}, a.error || "")))))
    : h("p", { class: "muted" }, "No attempt yet.");
  const steps = h("div", { id: "steps" }, r.steps.map((s) => {
    const dur = s.started_at && s.finished_at ? ms(new Date(s.finished_at) - new Date(s.started_at)) : "–";
    return h("section", { class: "step panel", "data-step": s.name },
      h("h3", {}, s.name, badge(s.status), h("span", { class: "muted" }, dur),
        s.exit_code !== null && s.exit_code !== undefined ? h("span", { class: "muted" }, `exit ${s.exit_code}`) : null),
      s.error ? h("p", { class: "error" }, s.error) : null,
      s.stdout ? [h("p", { class: "muted" }, "stdout"), h("pre", { class: "log stdout" }, s.stdout)] : null,
      s.stderr ? [h("p", { class: "muted" }, "stderr"), h("pre", { class: "log stderr err" }, s.stderr)] : null,
      s.output && Object.keys(s.output).length ? [h("p", { class: "muted" }, "output"), h("pre", { class: "log" }, JSON.stringify(s.output, null, 2))] : null);
  }));
  const liveLog = h("pre", { class: "log", id: "live-log", "aria-live": "polite" });
  main.replaceChildren(...[h("h1", {}, `Run ${id}`), facts, actions,
    h("h2", {}, "Attempts"), attempts,
    !final ? [h("h2", {}, "Output, live"), liveLog] : null,
    h("h2", {}, "Steps"), r.steps.length ? steps : h("p", { class: "muted" }, "No step recorded yet.")]
    .flat().filter(Boolean));
  if (!final) {
    const live = new EventSource(`/v1/runs/${encodeURIComponent(id)}/logs?follow=true`);
    state.live = live;
    live.addEventListener("line", (ev) => liveLog.append(logLine(JSON.parse(ev.data))));
    live.addEventListener("end", () => { live.close(); state.live = null; act(() => run(id)); });
  }
}

// Why a file did or did not start runs: its recent events with what every
// workflow near it decided, and what an event would do now.
async function why(params) {
  const nav = state.nav;
  const path = params.get("path") || "";
  const kind = params.get("event") || "file.created";
  const input = h("input", { id: "w-path", value: path, placeholder: "/inbox/a.csv", required: true });
  const type = h("select", { id: "w-event" },
    ["file.created", "file.updated", "file.deleted", "metadata.changed"].map((t) =>
      h("option", { value: t, selected: t === kind }, t)));
  const form = h("form", {
    class: "filters",
    onsubmit: (e) => {
      e.preventDefault();
      const q = new URLSearchParams({ path: input.value.trim(), event: type.value });
      go(`#/why?${q}`);
    },
  },
    h("label", { for: "w-path" }, "File", input),
    h("label", { for: "w-event" }, "Event", type),
    h("button", { type: "submit", class: "primary" }, "Explain"));
  const main = page("Why", h("p", { class: "muted" },
    "Type a file's path: its recent events and what every workflow decided, and what an event would do now."), form);
  if (!path) return;
  const events = await api("GET", `/v1/events?path=${encodeURIComponent(path)}&limit=20`);
  still(nav);
  const now = await api("GET", `/v1/test-match?event=${encodeURIComponent(kind)}&path=${encodeURIComponent(path)}`);
  still(nav);
  const decision = (d) => h("li", {},
    h("strong", {}, d.workflow), " ",
    badge(d.decision === "run" ? (d.run_status || "queued") : d.decision === "skipped" ? "skipped" : "not-matched"), " ",
    d.run ? h("a", { href: `#/runs/${encodeURIComponent(d.run)}` }, d.run) : null, " ",
    h("span", { class: "muted" }, d.reason || ""));
  main.append(
    h("h2", {}, `If ${kind} happened to ${now.path} now`),
    h("table", { id: "hypothetical" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Workflow"), h("th", { scope: "col" }, "Result"), h("th", { scope: "col" }, "Why"))),
      h("tbody", {}, now.results.map((r) => h("tr", { "data-workflow": r.workflow },
        h("td", {}, r.workflow),
        h("td", {}, r.matched ? badge("run") : badge("no-run")),
        h("td", { class: "reason" }, r.reason))))),
    h("h2", {}, "Its recent events"),
    events.events.length === 0
      ? h("p", { class: "muted", id: "no-events" }, "No event recorded for this path.")
      : h("ol", { id: "events" }, events.events.map((e) => h("li", { class: "panel" },
          h("p", {}, h("strong", {}, e.type), ` ${when(e.observed_at)} · ${e.source}`, e.actor ? ` · by ${e.actor}` : ""),
          e.decisions.length === 0
            ? h("p", { class: "muted" }, "No workflow's pattern matched this path: no workflow considered it.")
            : h("ul", {}, e.decisions.map(decision))))));
}

// ---- routing ---------------------------------------------------------

// Goes to `hash`; asked for the page it is on, draws it again.
function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

async function route() {
  state.nav += 1;
  if (!state.session) return showSignIn();
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  try {
    if (path === "/" || path === "") await overview();
    else if (path === "/runs") await runs(params);
    else if (path.startsWith("/runs/")) await run(decodeURIComponent(path.slice(6)));
    else if (path === "/why") await why(params);
    else page("Not found", h("p", {}, "No such page."), h("a", { href: "#/" }, "Overview"));
  } catch (err) {
    if (err instanceof Stale) return;
    if (err.status !== 401) page("Error", h("p", { class: "error", role: "alert" }, err.message));
  }
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", async () => {
  document.getElementById("sign-out").addEventListener("click", async () => {
    try { await api("DELETE", "/v1/session"); } catch (_) { /* gone already */ }
    state.session = null;
    showSignIn("Signed out.");
  });
  try {
    state.session = await api("GET", "/v1/session");
    signedIn();
  } catch (_) {
    showSignIn();
  }
});
