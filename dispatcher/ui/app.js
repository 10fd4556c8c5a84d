// The pkbs dashboard: read-only views of the JSON API (/v1/...), with the token the
// user pasted, kept in this tab's sessionStorage and sent as a bearer header. Every
// value is put on the page as text (textContent), never as HTML.
"use strict";

const TOKEN_KEY = "pkbs.token";
const REFRESH_MS = 2000;
const MAX_ROWS = 500; // newest jobs shown at most
const STATE_NAMES = {Q: "queued", H: "held", W: "waiting", R: "running", E: "exiting",
                     B: "begun", F: "finished", X: "finished", T: "transit"};
const $ = (id) => document.getElementById(id);

// A refusal: the API's {"error": {"pbs_errno", "message", "job_id"}}, said as the
// commands say it.
class ApiError extends Error {
  constructor(status, body) {
    const refusal = body && body.error;
    const said = refusal && [refusal.message, refusal.job_id].filter(Boolean).join(" ");
    super(said || (body && typeof body.detail === "string" && body.detail) || `HTTP ${status}`);
    this.status = status;
    this.refusal = refusal;
  }
  // A 404 that is not the API's refusal: this server has no such route (an older one).
  get noRoute() { return this.status === 404 && !this.refusal; }
}

function authHeaders(extra = {}) {
  return {...extra, Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY)}`};
}

async function request(path, options = {}) {
  const reply = await fetch(path, {...options, headers: authHeaders(options.headers),
                                   cache: "no-store"});
  if (reply.ok) return reply;
  let body = null;
  try { body = await reply.json(); } catch (e) { /* not JSON */ }
  const error = new ApiError(reply.status, body);
  if (reply.status === 401) signOut(error.message);
  throw error;
}

async function getJson(path) {
  return (await request(path)).json();
}

// -- helpers ------------------------------------------------------------------------

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function link(href, text) {
  const a = el("a", text);
  a.href = href;
  return a;
}

function fillTable(table, headings, rows) {
  const head = el("thead");
  const tr = el("tr");
  headings.forEach((h) => tr.append(el("th", h)));
  head.append(tr);
  const body = el("tbody");
  rows.forEach((cells) => {
    const row = el("tr");
    cells.forEach((cell) => {
      const td = el("td");
      if (cell instanceof Node) td.append(cell); else td.textContent = cell ?? "";
      row.append(td);
    });
    body.append(row);
  });
  table.replaceChildren(head, body);
}

function jobHref(id) { return `#/job/${encodeURIComponent(id)}`; }

function stateBadge(state) {
  const badge = el("span", state, `state state-${state}`);
  badge.title = STATE_NAMES[state] || state;
  return badge;
}

function stamp() { $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`; }

// -- views: each has start() and stop(); the current one is refreshed --------------

let current = null;

function show(id) {
  for (const section of ["login", "overview", "job"]) $(section).hidden = section !== id;
  $("logout").hidden = id === "login";
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (current) current.stop();
  current = null;
  $("login-error").textContent = message || "";
  $("server").textContent = "";
  show("login");
  $("token").focus();
}

class Poller {
  constructor(refresh) { this.refresh = refresh; this.timer = null; this.stopped = false; }
  async tick() {
    if (this.stopped) return;
    try { await this.refresh(); stamp(); } catch (e) { this.failed(e); }
    if (!this.stopped) this.timer = setTimeout(() => this.tick(), REFRESH_MS);
  }
  failed(error) { $("updated").textContent = `not updated: ${error.message}`; }
  start() { this.tick(); }
  stop() { this.stopped = true; clearTimeout(this.timer); }
}

// The overview: queues, workers, jobs (filtered by state, user, queue).
class Overview extends Poller {
  constructor(filters) {
    super(() => this.load());
    this.filters = filters;
    $("filter-state").value = filters.get("state") || "";
    $("filter-user").value = filters.get("user") || "";
    this.queueChoice = filters.get("queue") || "";
  }

  async load() {
    const user = this.filters.get("user");
    const query = new URLSearchParams({view: "summary", history: "true"});
    if (user) query.append("user", user);
    const [queues, jobs] = await Promise.all([getJson("/v1/queues"),
                                              getJson(`/v1/jobs?${query}`)]);
    this.showQueues(queues);
    this.showJobs(jobs);
    await this.showWorkers(jobs);
  }

  showQueues(reply) {
    const names = ["Queued", "Held", "Waiting", "Running", "Begun"];
    const rows = reply.queues.map((q) => {
      const counts = Object.fromEntries(String(q.attributes.state_count || "").split(" ")
        .filter(Boolean).map((pair) => pair.split(":")));
      return [q.name, q.attributes.enabled, q.attributes.started, q.attributes.total_jobs,
              ...names.map((n) => counts[n] ?? "0")];
    });
    fillTable($("queues"), ["Queue", "Enabled", "Started", "Total", ...names], rows);
    const select = $("filter-queue");
    const wanted = ["", ...reply.queues.map((q) => q.name)];
    if ([...select.options].map((o) => o.value).join() !== wanted.join()) {
      select.replaceChildren(...wanted.map((name) => {
        const option = el("option", name || "any");
        option.value = name;
        return option;
      }));
    }
    select.value = this.queueChoice;
  }

  showJobs(reply) {
    const col = Object.fromEntries(reply.columns.map((name, i) => [name, i]));
    const state = this.filters.get("state");
    const queue = this.filters.get("queue");
    const matching = reply.rows.filter((r) => (!state || r[col.job_state] === state)
                                             && (!queue || r[col.queue] === queue));
    const shown = matching.slice(-MAX_ROWS).reverse();
    const rows = shown.map((r) => [
      link(jobHref(r[col.id]), r[col.id]), r[col.Job_Name], r[col.Job_Owner],
      stateBadge(r[col.job_state]), r[col.queue], r[col["Resource_List.ncpus"]],
      r[col["resources_used.walltime"]], r[col.exec_host], r[col.comment],
    ]);
    fillTable($("jobs"), ["Job", "Name", "Owner", "S", "Queue", "NCPUs", "Elapsed",
                          "Host", "Comment"], rows);
    $("jobs").dataset.count = String(shown.length);
    $("jobs-note").textContent = matching.length > shown.length
      ? `the newest ${shown.length} of ${matching.length} jobs` : `${shown.length} jobs`;
    this.rows = reply.rows;
    this.col = col;
  }

  // Workers from the node registry (GET /v1/nodes) where the server has it; else the
  // hosts of running jobs, as their records name them.
  async showWorkers(jobs) {
    try {
      const reply = await getJson("/v1/nodes");
      const nodes = nodesOf(reply);
      fillTable($("workers"), ["Worker", "State", "Slots", "Busy", "Jobs"], nodes.map((n) => [
        n.name, n.state, n.slots, n.busy, jobLinks(n.jobs)]));
      $("workers-note").textContent = "";
      return;
    } catch (e) {
      if (!(e instanceof ApiError && e.noRoute)) throw e;
    }
    const col = Object.fromEntries(jobs.columns.map((name, i) => [name, i]));
    const hosts = new Map();
    for (const r of jobs.rows) {
      if (r[col.job_state] !== "R" || !r[col.exec_host]) continue;
      const host = String(r[col.exec_host]).split("/")[0];
      const entry = hosts.get(host) || {busy: 0, jobs: []};
      entry.busy += Number(r[col["Resource_List.ncpus"]] || 1);
      entry.jobs.push(r[col.id]);
      hosts.set(host, entry);
    }
    fillTable($("workers"), ["Host", "Busy slots", "Jobs"],
              [...hosts].map(([host, e]) => [host, e.busy, jobLinks(e.jobs)]));
    $("workers-note").textContent = hosts.size
      ? "Hosts running your jobs now." : "No job of yours runs now.";
  }
}

// A node registry's reply, whatever its wrapping: [{name, state, slots, busy, jobs}].
function nodesOf(reply) {
  const list = Array.isArray(reply) ? reply : reply.nodes || [];
  return list.map((n) => {
    const a = n.attributes || {};
    const pick = (...keys) => keys.map((k) => k.split(".").reduce((v, p) => v?.[p], n))
      .concat(keys.map((k) => a[k])).find((v) => v !== undefined && v !== null);
    let jobs = pick("jobs") || [];
    if (typeof jobs === "string") jobs = jobs.split(",").map((j) => j.trim().split("/")[0]);
    jobs = jobs.map((j) => (Array.isArray(j) ? j[0] : j)).filter(Boolean);
    return {
      name: n.name || n.id || "",
      state: pick("state") ?? "",
      slots: pick("available.ncpus", "resources_available.ncpus") ?? "",
      busy: pick("assigned.ncpus", "resources_assigned.ncpus") ?? "",
      jobs: [...new Set(jobs)],
    };
  });
}

function jobLinks(ids) {
  const span = el("span");
  ids.forEach((id, i) => {
    if (i) span.append(", ");
    span.append(link(jobHref(id), id));
  });
  return span;
}

// One job: its attributes (qstat -f), refreshed until it has finished, and its output.
class JobView extends Poller {
  constructor(jobId) {
    super(() => this.load());
    this.jobId = jobId;
    this.attributes = null;
    this.output = null;
    $("job-title").textContent = jobId;
    $("job-error").textContent = "";
    $("attributes").replaceChildren();
    $("output-stream").value = "stdout";
    $("output-stream").onchange = () => this.startOutput();
  }

  get finished() { return this.attributes && this.attributes.job_state === "F"; }

  async load() {
    if (this.finished) return;
    let reply;
    try {
      reply = await getJson(`/v1/jobs/${encodeURIComponent(this.jobId)}`);
    } catch (e) {
      if (e instanceof ApiError && e.status !== 401) $("job-error").textContent = e.message;
      throw e;
    }
    $("job-error").textContent = "";
    const first = this.attributes === null;
    this.attributes = reply.jobs[0].attributes;
    showAttributes(this.attributes);
    if (first) this.startOutput();
    else if (this.finished && this.output && this.output.waitingForEnd) this.startOutput();
  }

  startOutput() {
    if (this.output) this.output.stop();
    this.output = new OutputView(this.jobId, $("output-stream").value, this);
    this.output.start();
  }

  stop() {
    super.stop();
    if (this.output) this.output.stop();
  }
}

// Attributes the API gives as epoch seconds (qstat -f prints them as dates).
const TIME_ATTRIBUTES = new Set(["ctime", "etime", "mtime", "qtime", "stime", "obittime",
                                 "Execution_Time"]);

function showAttributes(attributes) {
  const rows = [];
  const add = (name, value) => {
    if (TIME_ATTRIBUTES.has(name) && typeof value === "number") {
      value = new Date(value * 1000).toString().replace(/ \(.*\)$/, "");
    }
    if (value !== null && typeof value === "object" && !Array.isArray(value)) {
      Object.entries(value).forEach(([k, v]) => add(`${name}.${k}`, v));
    } else {
      rows.push([name, Array.isArray(value) ? value.join(",") : value]);
    }
  };
  Object.entries(attributes).forEach(([k, v]) => add(k, v));
  fillTable($("attributes"), ["Attribute", "Value"], rows);
}

// A job's output: streamed live from GET /v1/jobs/{id}/output?follow=true (server-sent
// events over fetch, so the token goes in a header), or, where the server has no such
// route, the finished job's .o/.e from its result files.
class OutputView {
  constructor(jobId, stream, job) {
    this.jobId = jobId;
    this.stream = stream;
    this.job = job;
    this.abort = new AbortController();
    this.waitingForEnd = false;
    $("output").textContent = "";
    $("output-mode").textContent = "";
  }

  start() {
    this.follow().catch((e) => {
      if (e.name !== "AbortError") $("output-mode").textContent = `(${e.message})`;
    });
  }

  stop() { this.abort.abort(); }

  async follow() {
    const path = `/v1/jobs/${encodeURIComponent(this.jobId)}/output`;
    const query = new URLSearchParams({stream: this.stream, follow: "true"});
    let reply;
    try {
      reply = await request(`${path}?${query}`, {signal: this.abort.signal,
                                                   headers: {Accept: "text/event-stream"}});
    } catch (e) {
      if (e instanceof ApiError && e.noRoute) return this.stored();
      throw e;
    }
    $("output-mode").textContent = "(live)";
    const reader = reply.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        this.event(buffer.slice(0, cut));
        buffer = buffer.slice(cut + 2);
      }
    }
  }

  event(block) {
    let name = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) name = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
    if (!data.length) return; // a keepalive comment
    const value = JSON.parse(data.join("\n"));
    if (name === "output") this.append(value);
    else if (name === "error") $("output-mode").textContent = `(${value.message})`;
    else if (name === "end") {
      $("output-mode").textContent = `(ended, exit status ${value.Exit_status})`;
      this.job.load().catch(() => {}); // the final attributes now
    }
  }

  append(text) {
    const pre = $("output");
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.append(text);
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }

  // No live output on this server: the stored file once the job has finished.
  async stored() {
    const attributes = this.job.attributes || {};
    if (attributes.job_state !== "F") {
      this.waitingForEnd = true;
      $("output-mode").textContent = "(shown when the job has finished)";
      return;
    }
    const pathAttr = this.stream === "stdout" ? "Output_Path" : "Error_Path";
    const name = String(attributes[pathAttr] || "").split(":").pop().split("/").pop();
    const base = `/v1/jobs/${encodeURIComponent(this.jobId)}/files`;
    const listing = await getJson(base);
    if (!listing.files.some((f) => f.name === name)) {
      $("output-mode").textContent = "(not stored: see the job's comment)";
      return;
    }
    const reply = await request(`${base}/${encodeURIComponent(name)}`,
                                {signal: this.abort.signal});
    this.append(await reply.text());
    $("output-mode").textContent = `(${name})`;
  }
}

// -- routing: #/ (overview, with ?state=&user=&queue=), #/job/<id> -----------------

function route() {
  if (!sessionStorage.getItem(TOKEN_KEY)) { signOut(); return; }
  if (current) current.stop();
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  if (path.startsWith("/job/")) {
    current = new JobView(decodeURIComponent(path.slice(5)));
    show("job");
  } else {
    current = new Overview(new URLSearchParams(query || ""));
    show("overview");
  }
  current.start();
}

function filtersChanged() {
  const query = new URLSearchParams();
  for (const name of ["state", "user", "queue"]) {
    const value = $(`filter-${name}`).value.trim();
    if (value) query.set(name, value);
  }
  location.hash = `#/?${query}`;
}

async function signIn(event) {
  event.preventDefault();
  const token = $("token").value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  try {
    const server = await getJson("/v1/server");
    $("token").value = "";
    $("login-error").textContent = "";
    $("server").textContent = `${server.name} ${server.version}`;
    route();
  } catch (e) {
    sessionStorage.removeItem(TOKEN_KEY);
    $("login-error").textContent = e.message;
  }
}

async function init() {
  $("login-form").addEventListener("submit", signIn);
  $("logout").addEventListener("click", () => signOut());
  $("filters").addEventListener("change", filtersChanged);
  $("filters").addEventListener("submit", (e) => { e.preventDefault(); filtersChanged(); });
  window.addEventListener("hashchange", route);
  if (sessionStorage.getItem(TOKEN_KEY)) {
    try {
      const server = await getJson("/v1/server");
      $("server").textContent = `${server.name} ${server.version}`;
    } catch (e) { /* signOut has shown why */ }
  }
  route();
}

init();
