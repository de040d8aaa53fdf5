// The droneflow dashboard: polls the REST API and redraws in place. No framework, no build.
"use strict";

const TASK_POLL_MS = 1000;
const FLEET_POLL_MS = 2000;
const DEFAULT_WINDOW_MIN = 15;
// Finished tasks kept: those updated in the last `?minutes=` (15 by default). Unfinished tasks
// are all kept, however old: a task pending for an hour is what an operator looks for.
const WINDOW_MS = windowMinutes() * 60 * 1000;
const CHART_MS = 10 * 60 * 1000;       // charts: the last 10 minutes
const BUCKET_MS = 15 * 1000;
const OVERLAP_MS = 5000;               // re-read a little: writers on other gateways commit late
const PAGE_LIMIT = 1000;
const MAX_PAGES_PER_POLL = 5;
const MAX_UNFINISHED_PAGES = 10;       // at most 10 000 unfinished tasks read at start, per status
const UNFINISHED = ["pending", "processing"];
const MAX_ROWS = 200;
const STATUSES = ["pending", "processing", "completed", "failed", "cancelled"];
const FINAL = new Set(["completed", "failed", "cancelled"]);
const TOKEN_KEY = "droneflow.admin-token";

const tasks = new Map();               // task_id → the task as the API returns it
const rows = new Map();                // task_id → its <tr>
let newestUpdate = null;               // the largest updated_at seen, as the server writes it
let unfinishedRead = false;            // the unfinished tasks of every age were read once
const unfinishedCapped = new Set();    // statuses with more unfinished tasks than were read

const $ = (id) => document.getElementById(id);

function windowMinutes() {
  const asked = Number(new URLSearchParams(window.location.search).get("minutes"));
  return Number.isFinite(asked) && asked > 0 ? asked : DEFAULT_WINDOW_MIN;
}

// --- talking to the gateway, with an admin token when it asks for one -------------------------

let tokenPrompt = null;
let tokenDeclined = false;             // asked and cancelled: wait for the header button

// Shows the dialog, saying why it is shown again (`problem`), and resolves to the token entered
// or null. Callers that arrive while it is open share the same answer.
function askForToken(problem, fromButton = false) {
  if (tokenPrompt) return tokenPrompt;
  if (tokenDeclined && !fromButton) return Promise.resolve(null);
  const dialog = $("token-dialog");
  const form = $("token-form");
  $("token-problem").textContent = problem || "";
  $("token-problem").hidden = !problem;
  form.elements.token.value = "";
  tokenPrompt = new Promise((resolve) => {
    const done = (token) => {
      dialog.close();
      tokenPrompt = null;
      tokenDeclined = !token;
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      resolve(token);
    };
    form.onsubmit = (event) => {
      event.preventDefault();
      done(form.elements.token.value.trim());
    };
    $("token-cancel").onclick = () => done(null);
    dialog.showModal();
  });
  return tokenPrompt;
}

async function refusalOf(response, token) {
  const body = await response.clone().json().catch(() => ({}));
  const detail = typeof body.detail === "string" ? body.detail : "";
  if (!token) return "This gateway asks for an admin token.";
  if (response.status === 403) return `That token is not an admin token${detail ? `: ${detail}` : "."}`;
  return `That token was refused${detail ? `: ${detail}` : "."}`;
}

async function api(path, options = {}) {
  for (;;) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const headers = { Accept: "application/json", ...(options.headers || {}) };
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await fetch(path, { ...options, headers });
    // 401: no token or a bad one; 403: a valid token that is not an admin's.
    if (response.status !== 401 && response.status !== 403) return response;
    // Read the refusal first: from the check below to askForToken nothing may await, or a token
    // entered meanwhile would be met by a dialog opened again for a refusal already answered.
    const problem = await refusalOf(response, token);
    if (sessionStorage.getItem(TOKEN_KEY) !== token) continue;  // replaced meanwhile: retry
    sessionStorage.removeItem(TOKEN_KEY);
    if (!(await askForToken(problem))) return response;
  }
}

async function getJson(path) {
  const response = await api(path);
  if (response.status === 401 || response.status === 403) {
    throw new Error("an admin token is needed (Admin token…)");
  }
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function setLink(state, text) {
  const link = $("link-state");
  link.dataset.state = state;
  link.textContent = text;
}

// --- tasks -----------------------------------------------------------------------------------

async function readUnfinished() {
  // Once: later changes to these tasks reach the page through the updated_since polls.
  for (const status of UNFINISHED) {
    let cursor = null;
    for (let page = 0; page < MAX_UNFINISHED_PAGES; page++) {
      const query = new URLSearchParams({ status, limit: String(PAGE_LIMIT) });
      if (cursor) query.set("cursor", cursor);
      const body = await getJson(`/api/processing-tasks?${query}`);
      // Not merge(): the first updated_since poll must still start a window back.
      for (const task of body.tasks) keep(task);
      cursor = body.next_cursor;
      if (!cursor) break;
    }
    if (cursor) unfinishedCapped.add(status);
  }
  unfinishedRead = true;
}

async function pollTasks() {
  if (!unfinishedRead) await readUnfinished();
  const since = newestUpdate
    ? new Date(Date.parse(newestUpdate) - OVERLAP_MS).toISOString()
    : new Date(Date.now() - WINDOW_MS).toISOString();
  let cursor = null;
  for (let page = 0; page < MAX_PAGES_PER_POLL; page++) {
    const query = new URLSearchParams({ updated_since: since, limit: String(PAGE_LIMIT) });
    if (cursor) query.set("cursor", cursor);
    const body = await getJson(`/api/processing-tasks?${query}`);
    for (const task of body.tasks) merge(task);
    cursor = body.next_cursor;
    if (!cursor) break;
  }
  prune();
}

function keep(task) {
  const known = tasks.get(task.task_id);
  if (!known || known.updated_at <= task.updated_at) tasks.set(task.task_id, task);
}

function merge(task) {
  keep(task);
  if (!newestUpdate || task.updated_at > newestUpdate) newestUpdate = task.updated_at;
}

function prune() {
  const oldest = new Date(Date.now() - WINDOW_MS).toISOString();
  for (const [id, task] of tasks) {
    if (task.updated_at < oldest && FINAL.has(task.status)) tasks.delete(id);
  }
}

function shortTime(iso) {
  return iso ? new Date(iso).toLocaleTimeString() : "";
}

function taskRow(task) {
  let row = rows.get(task.task_id);
  if (row) return row;
  row = document.createElement("tr");
  row.dataset.taskId = task.task_id;
  const cells = ["id", "status", "app", "drone", "type", "priority", "attempts", "created", "updated", "action"];
  for (const name of cells) {
    const cell = document.createElement("td");
    cell.className = name;
    row.appendChild(cell);
  }
  row.querySelector(".id").innerHTML = "<code></code>";
  row.querySelector(".id code").textContent = task.task_id;
  row.querySelector(".status").innerHTML = '<span class="badge"></span>';
  const cancel = document.createElement("button");
  cancel.type = "button";
  cancel.className = "cancel";
  cancel.textContent = "Cancel";
  cancel.addEventListener("click", () => cancelTask(task.task_id, cancel));
  row.querySelector(".action").appendChild(cancel);
  rows.set(task.task_id, row);
  return row;
}

function setText(element, text) {
  if (element.textContent !== text) element.textContent = text;
}

function renderTasks() {
  const shown = [...tasks.values()]
    .sort((a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0))
    .slice(0, MAX_ROWS);
  const body = $("tasks").tBodies[0];
  const keep = new Set(shown.map((task) => task.task_id));
  for (const [id, row] of rows) {
    if (!keep.has(id)) {
      row.remove();
      rows.delete(id);
    }
  }
  shown.forEach((task, index) => {
    const row = taskRow(task);
    const badge = row.querySelector(".badge");
    setText(badge, task.status);
    badge.dataset.status = task.status;
    setText(row.querySelector(".app"), task.app_id);
    setText(row.querySelector(".drone"), task.drone_id);
    setText(row.querySelector(".type"), task.task_type);
    setText(row.querySelector(".priority"), String(task.priority));
    setText(row.querySelector(".attempts"), String(task.attempts ?? ""));
    setText(row.querySelector(".created"), shortTime(task.created_at));
    setText(row.querySelector(".updated"), shortTime(task.updated_at));
    row.querySelector(".cancel").hidden = FINAL.has(task.status);
    if (body.children[index] !== row) body.insertBefore(row, body.children[index] || null);
  });
  $("tasks-empty").hidden = shown.length > 0;
}

function renderCounts() {
  const counts = Object.fromEntries(STATUSES.map((status) => [status, 0]));
  for (const task of tasks.values()) counts[task.status] = (counts[task.status] || 0) + 1;
  const box = $("status-counts");
  for (const status of Object.keys(counts)) {
    let item = box.querySelector(`[data-status="${status}"]`);
    if (!item) {
      item = document.createElement("div");
      item.className = "status-count";
      item.dataset.status = status;
      item.innerHTML = '<span class="value"></span><span class="label"></span>';
      item.querySelector(".label").textContent = status;
      box.appendChild(item);
    }
    const capped = unfinishedCapped.has(status) ? "+" : "";
    setText(item.querySelector(".value"), `${counts[status]}${capped}`);
  }
}

async function cancelTask(taskId, button) {
  button.disabled = true;
  try {
    const response = await api(`/api/processing-tasks/${encodeURIComponent(taskId)}/cancel`, {
      method: "POST",
    });
    if (!response.ok && response.status !== 409) throw new Error(`HTTP ${response.status}`);
    await refreshTasks();
  } catch (error) {
    setLink("error", `cancel failed: ${error.message}`);
  } finally {
    button.disabled = false;
  }
}

// --- charts: inline SVG ------------------------------------------------------------------------

function buckets() {
  const now = Date.now();
  const count = Math.round(CHART_MS / BUCKET_MS);
  const start = now - count * BUCKET_MS;
  const finished = Array.from({ length: count }, () => ({ done: 0, failed: 0, latencies: [] }));
  for (const task of tasks.values()) {
    if (!FINAL.has(task.status) || !task.finished_at) continue;
    const at = Date.parse(task.finished_at);
    const index = Math.floor((at - start) / BUCKET_MS);
    if (index < 0 || index >= count) continue;
    const bucket = finished[index];
    if (task.status === "completed") bucket.done++;
    else bucket.failed++;
    bucket.latencies.push((at - Date.parse(task.created_at)) / 1000);
  }
  return finished;
}

function quantile(values, q) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

const SVG = "http://www.w3.org/2000/svg";
const W = 600, H = 160, LEFT = 44, BOTTOM = 20, TOP = 10;

function svgElement(name, attributes, text) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  if (text !== undefined) element.textContent = text;
  return element;
}

function axes(svg, max, unit) {
  svg.replaceChildren();
  const plotH = H - BOTTOM - TOP;
  for (const fraction of [0, 0.5, 1]) {
    const y = TOP + plotH * (1 - fraction);
    svg.appendChild(svgElement("line", { x1: LEFT, x2: W, y1: y, y2: y, class: "grid" }));
    const label = max * fraction;
    const text = `${Number.isInteger(label) ? label : label.toFixed(1)}${unit}`;
    svg.appendChild(svgElement("text", { x: LEFT - 6, y: y + 4, class: "tick", "text-anchor": "end" }, text));
  }
  svg.appendChild(svgElement("text", { x: LEFT, y: H - 4, class: "tick" }, "−10 min"));
  svg.appendChild(svgElement("text", { x: W, y: H - 4, class: "tick", "text-anchor": "end" }, "now"));
  return plotH;
}

function drawThroughput(data) {
  const svg = $("chart-throughput");
  const max = Math.max(4, ...data.map((b) => b.done + b.failed));
  const plotH = axes(svg, max, "");
  const slot = (W - LEFT) / data.length;
  data.forEach((bucket, index) => {
    const x = LEFT + index * slot + 1;
    const doneH = (bucket.done / max) * plotH;
    const failedH = (bucket.failed / max) * plotH;
    const base = TOP + plotH;
    if (doneH) svg.appendChild(svgElement("rect", { x, y: base - doneH, width: slot - 2, height: doneH, class: "bar-done", "data-count": bucket.done }));
    if (failedH) svg.appendChild(svgElement("rect", { x, y: base - doneH - failedH, width: slot - 2, height: failedH, class: "bar-failed", "data-count": bucket.failed }));
  });
}

function drawLatency(data) {
  const svg = $("chart-latency");
  const p50 = data.map((b) => quantile(b.latencies, 0.5));
  const p95 = data.map((b) => quantile(b.latencies, 0.95));
  const max = Math.max(1, ...p95.filter((v) => v !== null));
  const plotH = axes(svg, max, " s");
  const slot = (W - LEFT) / data.length;
  const line = (values, cls) => {
    const points = values
      .map((value, index) => (value === null ? null : { value, x: LEFT + (index + 0.5) * slot, y: TOP + plotH * (1 - value / max) }))
      .filter(Boolean);
    if (points.length) svg.appendChild(svgElement("polyline", { points: points.map((p) => `${p.x},${p.y}`).join(" "), class: cls }));
    for (const point of points) {
      svg.appendChild(svgElement("circle", { cx: point.x, cy: point.y, r: 2.5, class: cls, "data-seconds": point.value }));
    }
  };
  line(p95, "line-p95");
  line(p50, "line-p50");
}

// --- the fleet -------------------------------------------------------------------------------

async function refreshFleet() {
  const [drones, apps, queues] = await Promise.all([
    getJson("/api/drones"),
    getJson("/api/applications"),
    getJson("/api/queues").catch(() => null),
  ]);
  renderDrones(drones.drones);
  renderApps(apps.applications);
  setText($("count-drones"), String(drones.count));
  setText($("count-apps"), String(apps.count));
  if (queues) {
    setText($("queue-intake"), String(queues.intake));
    setText($("queue-events"), String(queues.drone_events));
    setText($("queue-dead"), String(queues.dead_letters));
  }
}

function renderDrones(drones) {
  const body = $("drones").tBodies[0];
  body.replaceChildren(
    ...drones.map((drone) => {
      const row = document.createElement("tr");
      row.dataset.droneId = drone.drone_id;
      const load = drone.capacity ? Math.round((100 * drone.tasks_held) / drone.capacity) : 0;
      const cells = [
        ["id", drone.drone_id],
        ["load", null],
        ["queued", String(drone.tasks_queued)],
        ["gateway", drone.gateway],
        ["since", shortTime(drone.connected_since)],
        ["seen", shortTime(drone.last_seen)],
      ];
      cells.forEach(([name, text]) => {
        const cell = document.createElement("td");
        cell.className = name;
        if (name === "load") {
          cell.innerHTML = '<span class="meter"><span></span></span><span class="held"></span>';
          cell.querySelector(".meter span").style.width = `${load}%`;
          cell.querySelector(".held").textContent = `${drone.tasks_held} / ${drone.capacity}`;
        } else {
          cell.textContent = text;
        }
        row.appendChild(cell);
      });
      return row;
    }),
  );
  $("drones-empty").hidden = drones.length > 0;
  $("drone-ids").replaceChildren(
    ...drones.map((drone) => Object.assign(document.createElement("option"), { value: drone.drone_id })),
  );
}

function renderApps(apps) {
  $("apps").replaceChildren(
    ...apps.map((app) => {
      const item = document.createElement("li");
      item.dataset.appId = app.app_id;
      item.textContent = `${app.app_id} — since ${shortTime(app.connected_since)} on ${app.gateways.join(", ")}`;
      return item;
    }),
  );
  $("apps-empty").hidden = apps.length > 0;
}

// --- submitting ------------------------------------------------------------------------------

async function submitTask(event) {
  event.preventDefault();
  const form = event.target;
  const result = $("submit-result");
  let input;
  try {
    input = JSON.parse(form.elements.input_data.value || "{}");
  } catch (error) {
    result.textContent = `Input data is not JSON: ${error.message}`;
    result.dataset.state = "error";
    return;
  }
  const body = {
    app_id: form.elements.app_id.value,
    drone_id: form.elements.drone_id.value,
    task_type: form.elements.task_type.value,
    priority: Number(form.elements.priority.value || 3),
    input_data: input,
  };
  const response = await api("/api/processing-tasks", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    result.textContent = `Refused (HTTP ${response.status}): ${JSON.stringify(answer.detail ?? answer)}`;
    result.dataset.state = "error";
    return;
  }
  result.dataset.state = "ok";
  result.replaceChildren("Created ", Object.assign(document.createElement("code"), { textContent: answer.task_id }));
  result.dataset.taskId = answer.task_id;
  await refreshTasks();
}

// --- the loops -------------------------------------------------------------------------------

let tasksBusy = null;

function refreshTasks() {
  // One poll at a time; a caller arriving meanwhile waits for the one in flight and then polls.
  const run = async () => {
    await pollTasks();
    renderTasks();
    renderCounts();
    const data = buckets();
    drawThroughput(data);
    drawLatency(data);
  };
  tasksBusy = (tasksBusy || Promise.resolve()).catch(() => {}).then(run);
  return tasksBusy;
}

function every(ms, action) {
  const tick = async () => {
    try {
      await action();
      setLink("live", "live");
    } catch (error) {
      // fetch rejects with a TypeError when the gateway cannot be reached at all.
      setLink("error", error instanceof TypeError ? `not reachable: ${error.message}` : error.message);
    }
    setTimeout(tick, ms);
  };
  tick();
}

document.addEventListener("DOMContentLoaded", () => {
  for (const label of document.querySelectorAll(".window-minutes")) label.textContent = String(windowMinutes());
  $("submit-form").addEventListener("submit", submitTask);
  $("token-button").addEventListener("click", () => askForToken("", true));
  every(TASK_POLL_MS, refreshTasks);
  every(FLEET_POLL_MS, refreshFleet);
});
