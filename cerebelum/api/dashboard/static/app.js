// The Cerebelum dashboard: plain DOM, no framework, nothing fetched but this API.
// Every value from the API is put in the page as text (textContent), never as HTML.
"use strict";

const TOKEN_KEY = "cerebelum-token";
let timer = null; // the cluster view's refresh

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${token()}` };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok) {
    const message = body && body.error ? body.error : response.statusText;
    const err = new Error(`${response.status}: ${message}`);
    err.status = response.status;
    err.body = body;
    throw err;
  }
  return body;
}

// h("a", {href: "#"}, "text", child, ...): an element; strings become text nodes.
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "onclick" || key === "onsubmit" || key === "oninput") el[key] = value;
    else if (key === "class") el.className = value;
    else if (key === "style") { if (value) el.style.cssText = value; } // CSSOM: allowed by the CSP
    else if (value !== null && value !== undefined && value !== false) el.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function show(...nodes) {
  const view = document.getElementById("view");
  view.replaceChildren(...nodes.flat().filter((n) => n !== null && n !== undefined));
}

function say(message, isError = false) {
  const status = document.getElementById("status");
  status.textContent = message;
  status.className = isError ? "error" : "";
}

function when(value) { return value ? String(value).replace("T", " ").replace(/\+00:00$|Z$/, "") : ""; }
function json(value) { return JSON.stringify(value, null, 2); }

// --- executions ---------------------------------------------------------------------------

async function executionsView(params) {
  const form = h("form", { class: "filters" },
    h("input", { name: "workflow", placeholder: "workflow", value: params.get("workflow") || "" }),
    h("input", { name: "status", placeholder: "status", value: params.get("status") || "" }),
    h("input", { name: "id_prefix", placeholder: "id prefix", value: params.get("id_prefix") || "" }),
    h("input", { name: "input", placeholder: "input path=value", value: params.get("input") || "" }),
    h("button", { type: "submit" }, "Filter"));
  form.onsubmit = (e) => {
    e.preventDefault();
    const next = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) next.set(k, v);
    location.hash = `#/executions?${next}`;
  };
  const query = new URLSearchParams();
  for (const k of ["workflow", "status", "id_prefix", "cursor"]) {
    if (params.get(k)) query.set(k, params.get(k));
  }
  const filter = params.get("input");
  if (filter && filter.includes("=")) {
    const [path, ...rest] = filter.split("=");
    query.set(`input.${path}`, rest.join("="));
  }
  query.set("limit", "50");
  const [body, counts] = await Promise.all([api(`/executions?${query}`), api("/executions/counts")]);
  const tally = h("table", { id: "counts" },
    h("thead", {}, h("tr", {}, ["Workflow", "Status", "Count"].map((t) => h("th", {}, t)))),
    h("tbody", {}, [...counts.live, ...counts.ended].map((c) => h("tr", {},
      h("td", {}, c.workflow || ""), h("td", { class: `status ${c.status}` }, c.status),
      h("td", {}, h("a", { href: `#/executions?workflow=${encodeURIComponent(c.workflow || "")}&status=${encodeURIComponent(c.status)}` }, c.count))))));
  const rows = body.executions.map((x) => h("tr", {},
    h("td", {}, h("a", { href: `#/execution/${encodeURIComponent(x.execution_id)}` }, x.execution_id)),
    h("td", {}, x.workflow || ""), h("td", { class: `status ${x.status}` }, x.status || ""),
    h("td", {}, x.current_step || ""), h("td", {}, when(x.started_at)), h("td", {}, when(x.updated_at))));
  const more = [];
  if (body.next_cursor) {
    const next = new URLSearchParams(params);
    next.set("cursor", body.next_cursor);
    more.push(h("a", { class: "button", href: `#/executions?${next}`, id: "next-page" }, "Next page →"));
  }
  show(h("h2", {}, "Executions"),
    h("details", { open: true }, h("summary", {}, "Live, and ended in the last hour"), tally), form,
    h("table", { id: "executions" },
      h("thead", {}, h("tr", {}, ["Execution", "Workflow", "Status", "Step", "Started", "Updated"].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows)),
    body.executions.length ? null : h("p", {}, "No executions match."), more);
}

// --- one execution ------------------------------------------------------------------------

async function executionView(id, params) {
  let row;
  try {
    row = await api(`/executions/${encodeURIComponent(id)}`);
  } catch (err) {
    if (err.status !== 410) throw err;
    // Its start was refused (dead-lettered): no execution will ever exist; show why, and the
    // dead letter to replay once the cause is fixed.
    show(h("h2", {}, `Execution ${id}`),
      h("p", { id: "fate" }, h("span", { class: "status failed" }, "start refused"), ` ${err.body.reason}`),
      await deadLetters(id));
    return;
  }
  const events = (await api(`/executions/${encodeURIComponent(id)}/events?limit=10000`)).events;
  const catalogue = await api("/workflows").catch(() => null);
  let graph = null;
  for (const w of (catalogue && catalogue.workflows) || []) {
    for (const v of w.versions) if (w.name === row.workflow && v.version === row.workflow_version) graph = v.graph;
  }
  const steps = new Map(row.steps.map((s) => [s.step, s]));
  const first = events.length ? events[0].data.at : 0;
  const timeline = h("table", { id: "timeline" },
    h("thead", {}, h("tr", {}, ["v", "+ms", "event", "details"].map((t) => h("th", {}, t)))),
    h("tbody", {}, events.map((e) => {
      const { execution_id, version, type, schema, at, ...rest } = e.data;
      return h("tr", {}, h("td", {}, version), h("td", {}, at - first), h("td", {}, type),
        h("td", { class: "mono" }, JSON.stringify(rest)));
    })));
  const stepTable = h("table", { id: "steps" },
    h("thead", {}, h("tr", {}, ["Step", "Status", "Attempts", "Duration", "Ran on", "Last error"].map((t) => h("th", {}, t)))),
    h("tbody", {}, row.steps.map((s) => h("tr", {},
      h("td", {}, s.step, s.children ? h("div", { class: "children" }, ...s.children.map((c) =>
        h("a", { href: `#/execution/${encodeURIComponent(c)}`, class: "child" }, c))) : null),
      h("td", { class: `status ${s.status}` }, s.status), h("td", {}, s.attempts),
      h("td", {}, s.duration_ms === null ? "" : `${s.duration_ms} ms`),
      // Every worker that ran it, in the order it did (the grid names workers the same way).
      h("td", { class: "worker" }, [...new Set(s.runs.map((r) => r.worker).filter(Boolean))].join(", ")),
      h("td", {}, s.last_error ? h("details", {}, h("summary", {}, `${s.last_error.type}: ${s.last_error.message}`),
        h("pre", {}, s.last_error.traceback || "")) : "")))));
  const rerunOf = params.get("rerun_of");
  const letters = await deadLetters(id);
  show(
    h("h2", {}, `Execution ${row.execution_id}`),
    h("p", {}, h("span", { class: `status ${row.status}` }, row.status), ` ${row.workflow} ${row.workflow_version}`,
      ` · partition ${row.partition} · owner ${row.owner || "none"} · v${row.last_version}`),
    row.blocked ? h("p", { id: "blocked", class: "status blocked" },
      `Blocked: waits for a worker with version ${row.blocked.waiting_for} (its worker has ${(row.blocked.versions_here || []).join(", ") || "none"}). ${row.blocked.reason}`) : null,
    row.queued ? h("p", { id: "queued", class: "status queued" }, "Queued: waits for a permit of ",
      h("a", { href: `#/execution/${encodeURIComponent(row.queued.limiter)}` }, row.queued.limiter),
      row.queued.step ? ` (step ${row.queued.step})` : ` (key ${row.queued.key})`) : null,
    row.parent ? h("p", { id: "parent" }, "Child of ", h("a", { href: `#/execution/${encodeURIComponent(row.parent.execution_id)}` },
      row.parent.execution_id), ` (its node ${row.parent.step})`) : null,
    rerunOf ? h("p", { id: "rerun-of" }, "Run again of ", h("a", { href: `#/execution/${encodeURIComponent(rerunOf)}` }, rerunOf)) : null,
    actions(row, graph), letters,
    h("h3", {}, "Graph"), graph ? drawGraph(graph, steps, row.current_step) : h("p", {}, "No live worker published this version's graph."),
    h("h3", {}, "Steps"), stepTable,
    h("h3", {}, "State at a version"), timeTravel(row),
    h("h3", {}, "Timeline"), timeline,
    h("h3", {}, "Inputs, output, error"), h("pre", {}, json({ inputs: row.inputs, output: row.output, error: row.error })));
}

// The commands refused for an execution (a start, a signal it never waits for, ...), each with
// its Replay button; null when there are none.
async function deadLetters(id) {
  const body = await api(`/dlq?execution_id=${encodeURIComponent(id)}&limit=50`);
  if (!body.dead_letters.length) return null;
  return h("div", {}, h("h3", {}, "Refused commands (dead letters)"), h("table", { id: "dead-letters" },
    h("thead", {}, h("tr", {}, ["Id", "At", "Command", "Reason", "Replayed", ""].map((t) => h("th", {}, t)))),
    h("tbody", {}, body.dead_letters.map((d) => h("tr", {}, h("td", {}, h("a", { href: "#/dlq" }, d.id)), h("td", {}, when(d.at)),
      h("td", {}, d.command && d.command.type ? `${d.command.type}${d.command.signal ? " " + d.command.signal : ""}` : "(not JSON)"),
      h("td", {}, d.reason), h("td", {}, d.replayed_at ? `by ${d.replayed_by}` : ""), h("td", {}, replayButton(d)))))));
}

function replayButton(d) {
  const replay = h("button", { class: "replay" }, d.replayed_at ? "Replay again" : "Replay");
  replay.onclick = async () => {
    try {
      await api(`/dlq/${d.id}/replay${d.replayed_at ? "?force=true" : ""}`, { method: "POST", body: {} });
      await route();
      say(`replayed ${d.id}`);
    } catch (err) { say(String(err), true); }
  };
  return replay;
}

function actions(row, graph) {
  if (["completed", "failed", "cancelled"].includes(row.status)) {
    // A new execution of the same workflow (its newest version) with the same inputs; its page
    // links back here.
    const again = h("button", { id: "run-again" }, "Run again");
    again.onclick = async () => {
      try {
        const started = await api("/executions?wait=10", { method: "POST", body: { workflow: row.workflow, inputs: row.inputs ?? {} } });
        location.hash = `#/execution/${encodeURIComponent(started.execution_id)}?rerun_of=${encodeURIComponent(row.execution_id)}`;
      } catch (err) { say(String(err), true); }
    };
    return h("div", { class: "actions" }, again);
  }
  const waitsFor = graph && graph.nodes.find((n) => (n.kind === "approval" || n.kind === "signal") && n.name === row.current_step);
  const signal = h("input", { id: "signal-name", placeholder: "signal", value: waitsFor ? waitsFor.signal : "" });
  const payload = h("input", { id: "signal-payload", placeholder: '{"approved": true}', value: waitsFor && waitsFor.kind === "approval" ? '{"approved": true}' : "" });
  const send = h("button", { id: "send-signal" }, waitsFor && waitsFor.kind === "approval" ? "Approve" : "Send signal");
  send.onclick = async () => {
    try {
      const body = payload.value ? JSON.parse(payload.value) : null;
      await api(`/executions/${encodeURIComponent(row.execution_id)}/signals/${encodeURIComponent(signal.value)}`, { method: "POST", body });
      say(`signal ${signal.value} sent`);
      setTimeout(route, 800);
    } catch (err) { say(String(err), true); }
  };
  const cancel = h("button", { id: "cancel" }, "Cancel");
  cancel.onclick = async () => {
    if (!confirm(`Cancel ${row.execution_id}?`)) return;
    try {
      await api(`/executions/${encodeURIComponent(row.execution_id)}/cancel`, { method: "POST", body: { reason: "cancelled from the dashboard" } });
      say("cancel sent");
      setTimeout(route, 800);
    } catch (err) { say(String(err), true); }
  };
  return h("div", { class: "actions" }, signal, payload, send, cancel);
}

function drawGraph(graph, steps, current) {
  const box = (node) => {
    const s = steps.get(node.name);
    const state = s ? s.status : "pending";
    const label = node.kind === "step" ? node.name : `${node.kind}: ${node.name}`;
    const rate = node.rate_limit ? ` ≤${node.rate_limit.limit}/${node.rate_limit.per_s}s` : "";
    return h("div", { class: `node ${state}${node.name === current ? " current" : ""}`, title: node.kind }, label,
      s && s.attempts > 1 ? h("small", {}, ` ×${s.attempts}`) : null, rate ? h("small", {}, rate) : null);
  };
  const lanes = graph.nodes.map((node) => node.kind === "parallel"
    ? h("div", { class: "parallel" }, node.branches.map(box))
    : box(node));
  const rules = graph.rules.map((r) => h("li", {}, r.text));
  if (graph.concurrency) rules.unshift(h("li", {}, `at most ${graph.concurrency.limit} live per ${graph.concurrency.key} (others queued)`));
  return h("div", {}, h("div", { class: "graph" }, lanes.flatMap((lane, i) => i ? [h("span", { class: "arrow" }, "→"), lane] : [lane])),
    rules.length ? h("ul", { class: "rules" }, rules) : null);
}

function timeTravel(row) {
  const out = h("pre", { id: "state" });
  const changes = h("pre", { id: "changes" });
  const label = h("span", {}, `v${row.last_version}`);
  const slider = h("input", { type: "range", id: "version", min: 1, max: row.last_version, value: row.last_version });
  const load = async () => {
    const v = Number(slider.value);
    label.textContent = `v${v}`;
    try {
      const state = await api(`/executions/${encodeURIComponent(row.execution_id)}/state?version=${v}`);
      out.textContent = json(state.state);
      if (v > 1) {
        const diff = await api(`/executions/${encodeURIComponent(row.execution_id)}/state?diff=${v - 1}..${v}`);
        changes.textContent = diff.changes.map((c) => `${c.op.padEnd(8)} ${c.path}: ${c.op === "added" ? "" : JSON.stringify(c.from) + " → "}${c.op === "removed" ? "(gone)" : JSON.stringify(c.to)}`).join("\n");
      } else changes.textContent = "(the start)";
    } catch (err) { say(String(err), true); }
  };
  slider.oninput = load;
  load();
  return h("div", { class: "travel" }, h("div", {}, slider, " ", label),
    h("div", { class: "columns" }, h("div", {}, h("h4", {}, "State"), out), h("div", {}, h("h4", {}, "Changed by this event"), changes)));
}

// --- cluster ------------------------------------------------------------------------------

async function clusterView() {
  const grid = h("div", { class: "grid", id: "partitions" });
  const legend = h("ul", { class: "legend" });
  const summary = h("p", {});
  show(h("h2", {}, "Cluster"), summary, grid, legend);
  const draw = async () => {
    try {
      const view = await api("/cluster");
      // A worker keeps its colour while others come and go (a hash of its id, spread over the
      // wheel by the golden angle), so a failover shows as cells changing colour.
      const colour = (owner) => {
        let n = 0;
        for (const c of owner) n = (n * 31 + c.charCodeAt(0)) % 1000003;
        return `hsl(${(n * 137.508) % 360}, 60%, 78%)`;
      };
      summary.textContent = `${view.workers.length} workers · lag ${view.lag} · live ${view.live_executions ?? "?"} · group ${view.state}` +
        (view.unowned_partitions.length ? ` · ${view.unowned_partitions.length} partitions unowned` : "");
      grid.replaceChildren(...view.partitions.map((p) => h("div", {
        class: `cell${p.owner ? "" : " unowned"}`, "data-owner": p.owner || "",
        style: p.owner ? `background: ${colour(p.owner)}` : null,
        title: `partition ${p.partition}\nowner ${p.owner || "none"}\nlag ${p.lag}\nlive ${p.live_executions ?? "?"}`,
      }, h("b", {}, p.partition), h("small", {}, `lag ${p.lag}`), h("small", {}, `live ${p.live_executions ?? "?"}`))));
      legend.replaceChildren(...view.workers.map((w) => h("li", {},
        h("span", { class: "swatch", style: `background: ${colour(w.client_id)}` }),
        `${w.client_id}: ${w.partitions.length} partitions, lag ${w.lag}`)));
      say(`updated ${new Date().toLocaleTimeString()}`);
    } catch (err) { say(String(err), true); }
  };
  await draw();
  timer = setInterval(draw, 2000);
}

// --- workflows and dead letters -----------------------------------------------------------

async function workflowsView() {
  const body = await api("/workflows");
  show(h("h2", {}, "Workflows"), body.workflows.map((w) => h("section", {},
    h("h3", {}, w.name),
    w.versions.map((v) => h("div", {},
      h("p", {}, `${v.version}${v.newest ? " (new starts)" : ""} · live ${v.live_executions ?? "?"} · `,
        h("span", { class: v.blocked_executions ? "status blocked" : "" }, `blocked ${v.blocked_executions ?? "?"}`),
        ` · workers ${v.workers.join(", ") || "none"}`),
      v.graph ? drawGraph(v.graph, new Map(), null) : null)))),
    body.workflows.length ? null : h("p", {}, "No live worker has published its workflows."));
}

async function dlqView(params) {
  const query = new URLSearchParams({ limit: "50" });
  if (params.get("cursor")) query.set("cursor", params.get("cursor"));
  const body = await api(`/dlq?${query}`);
  const rows = body.dead_letters.map((d) => h("tr", {}, h("td", {}, d.id), h("td", {}, when(d.at)),
    h("td", {}, d.execution_id ? h("a", { href: `#/execution/${encodeURIComponent(d.execution_id)}` }, d.execution_id) : ""),
    h("td", {}, d.reason), h("td", {}, d.replayed_at ? `by ${d.replayed_by}` : ""), h("td", {}, replayButton(d))));
  const more = body.next_cursor ? h("a", { class: "button", href: `#/dlq?cursor=${encodeURIComponent(body.next_cursor)}` }, "Next page →") : null;
  show(h("h2", {}, "Dead letters"), h("table", {},
    h("thead", {}, h("tr", {}, ["Id", "At", "Execution", "Reason", "Replayed", ""].map((t) => h("th", {}, t)))),
    h("tbody", {}, rows)), more);
}

// --- routing ------------------------------------------------------------------------------

async function route() {
  if (timer) { clearInterval(timer); timer = null; }
  const [path, search] = (location.hash.slice(1) || "/executions").split("?");
  const params = new URLSearchParams(search || "");
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", path.startsWith(`/${a.dataset.nav}`));
  if (!token()) { say("Give an API token first.", true); return; }
  try {
    if (path.startsWith("/execution/")) await executionView(decodeURIComponent(path.slice("/execution/".length)), params);
    else if (path === "/cluster") await clusterView();
    else if (path === "/workflows") await workflowsView();
    else if (path === "/dlq") await dlqView(params);
    else await executionsView(params);
    if (path !== "/cluster") say("");
  } catch (err) { say(String(err), true); }
}

// The namespace this API serves, beside the title (/healthz needs no token).
async function showNamespace() {
  try {
    const response = await fetch("/healthz");
    const body = await response.json();
    if (body && body.namespace) document.getElementById("namespace").textContent = body.namespace;
  } catch (_) { /* shown once the API answers; nothing depends on it */ }
}

document.addEventListener("DOMContentLoaded", () => {
  showNamespace();
  const form = document.getElementById("token-form");
  const input = document.getElementById("token");
  input.value = token();
  form.onsubmit = (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    route();
  };
  window.addEventListener("hashchange", route);
  route();
});
