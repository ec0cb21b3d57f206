// Webhooks management UI: a client of the public JSON API (same origin, bearer token).
// Plain modern JavaScript; every value from the API reaches the page through textContent.

const TOKEN_KEY = "webhooks.token";
const PAGE = 20;
const POLL_MS = 2500;
// The guide's example payload ("Webhook Payload"), the test form's starting point.
const EXAMPLE_PAYLOAD = {
  id: "1",
  workflowDefinitionId: "1",
  status: "COMPLETED",
  startTime: "2025-05-21T21:26:58.211Z",
  endTime: "2025-05-21T21:27:09.442Z",
};
const EXAMPLE_EVENT = "workflow.execution.completed";

const state = {
  token: null,
  eventTypes: [], // [{name, description, category}] from GET /api/event-types
  webhooks: [],
  webhooksNext: null,
  current: null, // the webhook of the detail view
  deliveries: [],
  deliveriesNext: null,
  deliveriesOf: null, // the webhook whose deliveries are loaded
  deliveriesSeen: null, // their versions at the last refresh; a change re-reads the health
  editing: null, // the webhook the form edits; null: a new one
  testing: null, // the registered webhook the test dialog sends to; null: any URL
  events: [], // the Events view's listing
  eventsNext: null,
  pollTimer: 0,
  route: "",
};

// ---------------------------------------------------------------- helpers

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

/** Builds an element: h("li", {class: "x", dataset: {id}}, "text", child). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const dateFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
const relFmt = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

function formatDate(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : dateFmt.format(d);
}

function ago(iso) {
  const s = (new Date(iso).getTime() - Date.now()) / 1000;
  if (!Number.isFinite(s)) return iso;
  const a = Math.abs(s);
  if (a < 45) return relFmt.format(Math.round(s), "second");
  if (a < 2700) return relFmt.format(Math.round(s / 60), "minute");
  if (a < 79200) return relFmt.format(Math.round(s / 3600), "hour");
  return relFmt.format(Math.round(s / 86400), "day");
}

function timeEl(iso, relative = false) {
  return h("time", { datetime: iso, title: formatDate(iso) }, relative ? ago(iso) : formatDate(iso));
}

function formatDuration(ms) {
  if (typeof ms !== "number") return "—";
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}

let toastTimer = 0;
function toast(message) {
  const el = $("#toast");
  el.textContent = message;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.textContent = ""; }, 5000);
}

/** A strong random secret: 256 bits, in the Standard Webhooks form (whsec_ + base64). */
function generateSecret() {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return "whsec_" + btoa(String.fromCharCode(...bytes));
}

/** The token's claims, for showing who is signed in (the API verifies the token, not us). */
function claimsOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = decodeURIComponent(
      [...atob(part)].map((c) => "%" + c.charCodeAt(0).toString(16).padStart(2, "0")).join(""),
    );
    return JSON.parse(json);
  } catch {
    return {};
  }
}

// ---------------------------------------------------------------- API client

/** An RFC 9457 problem from the API (or one made up for a network failure). */
class Problem extends Error {
  constructor(body, status) {
    super(body.detail || body.title || `HTTP ${status}`);
    this.status = status;
    this.title = body.title || `HTTP ${status}`;
    this.detail = body.detail || "";
    this.errors = Array.isArray(body.errors) ? body.errors : [];
  }
}

/** Calls the API; answers {data, headers}, throws Problem. A 401 signs out unless quiet. */
async function api(method, path, body, { signingIn = false } = {}) {
  const headers = { Accept: "application/json", Authorization: `Bearer ${state.token}` };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new Problem({ title: "Network error", detail: `The API could not be reached (${e.message}).` }, 0);
  }
  const type = res.headers.get("Content-Type") || "";
  let data = null;
  if (res.status !== 204 && type.includes("json")) {
    try { data = await res.json(); } catch { data = null; }
  }
  if (!res.ok) {
    const problem = new Problem(data && typeof data === "object" ? data : { title: res.statusText }, res.status);
    if (res.status === 401 && !signingIn) {
      signOut(`Signed out: ${problem.detail || problem.title}`);
    }
    throw problem;
  }
  return { data, headers: res.headers };
}

/** The next page's path from a `Link: <...>; rel="next"` header, made relative to the page. */
function nextLink(headers) {
  const link = headers.get("Link") || "";
  const m = link.match(/<([^>]+)>\s*;\s*rel="next"/);
  return m ? m[1].replace(/^\//, "") : null;
}

// ---------------------------------------------------------------- problems in forms

function clearErrors(root) {
  for (const el of $$(".error", root)) el.textContent = "";
  for (const el of $$("[aria-invalid]", root)) el.removeAttribute("aria-invalid");
  const alert = $(".alert", root);
  if (alert) { alert.hidden = true; alert.replaceChildren(); }
}

/** Shows a problem: each `errors[]` entry next to the field it names, the rest in the alert. */
function showProblem(root, problem, alertEl = $(".alert", root)) {
  clearErrors(root);
  const loose = [];
  let first = null;
  for (const { field = "", message = "" } of problem.errors) {
    const name = String(field).split(/[[.]/)[0];
    const box = name && root.querySelector(`[data-field="${CSS.escape(name)}"]`);
    if (!box) { loose.push(field ? `${field}: ${message}` : message); continue; }
    const err = $(".error", box);
    err.textContent = err.textContent ? `${err.textContent} ${field}: ${message}` : fieldMessage(field, name, message);
    const input = box.matches("fieldset") ? box : $("input, select, textarea", box);
    if (input) {
      if (!box.matches("fieldset")) input.setAttribute("aria-invalid", "true");
      first ??= box.matches("fieldset") ? $("input", box) : input;
    }
  }
  if (alertEl && (loose.length || !problem.errors.length || problem.status !== 422)) {
    const parts = [h("strong", {}, problem.title)];
    if (!problem.errors.length && problem.detail) parts.push(problem.detail);
    if (loose.length) parts.push(h("ul", {}, loose.map((m) => h("li", {}, m))));
    alertEl.replaceChildren(...parts);
    alertEl.hidden = false;
  }
  if (first) first.focus();
}

/** `events[3]` is shown as "events[3]: ..." so the user knows which entry; a plain field as is. */
function fieldMessage(field, name, message) {
  return field === name ? message : `${field}: ${message}`;
}

// ---------------------------------------------------------------- views and routing

const views = ["signin", "list", "events", "detail"];

function showView(name, title) {
  $("#booting").hidden = true;
  for (const v of views) $(`#view-${v}`).hidden = v !== name;
  document.title = title ? `${title} · Webhooks` : "Webhooks";
}

function focusHeading(id) {
  const el = $(id);
  if (el) el.focus({ preventScroll: false });
}

async function route() {
  const hash = location.hash;
  if (hash.startsWith("#token=")) {
    // A sign-in link: take the token, then drop it from the address bar and history.
    const token = decodeURIComponent(hash.slice("#token=".length));
    history.replaceState(null, "", location.pathname + location.search + "#/");
    await signIn(token);
    return;
  }
  if (!state.token) {
    stopPolling();
    showSignin();
    return;
  }
  const m = hash.match(/^#\/webhooks\/([A-Za-z0-9_-]+)$/);
  const previous = state.route;
  state.route = m ? `detail:${m[1]}` : hash === "#/events" ? "events" : "list";
  const moved = previous !== "" && previous !== state.route;
  for (const a of $$("#mainnav a")) a.removeAttribute("aria-current");
  $(state.route === "events" ? "#nav-events" : "#nav-webhooks").setAttribute("aria-current", "page");
  if (m) await showDetail(m[1], previous !== state.route);
  else if (state.route === "events") await showEvents(moved);
  else await showList(moved);
}

// ---------------------------------------------------------------- sign in

function showSignin(message) {
  $("#account").hidden = true;
  $("#mainnav").hidden = true;
  showView("signin", "Sign in");
  const form = $("#signin-form");
  clearErrors(form);
  if (message) {
    $("#signin-token-error").textContent = message;
    $("#signin-token").setAttribute("aria-invalid", "true");
  }
  $("#signin-token").focus();
}

async function signIn(token) {
  token = token.trim().replace(/^Bearer\s+/i, "");
  const form = $("#signin-form");
  clearErrors(form);
  if (!token) {
    showSignin("Enter an API token.");
    return false;
  }
  state.token = token;
  try {
    const { data } = await api("GET", "api/event-types", undefined, { signingIn: true });
    state.eventTypes = Array.isArray(data) ? data : [];
  } catch (e) {
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    showSignin(e.detail ? `${e.title}: ${e.detail}` : e.title);
    return false;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $("#signin-token").value = "";
  const claims = claimsOf(token);
  const who = claims.tenant && claims.tenant !== claims.sub ? `${claims.sub} · ${claims.tenant}` : claims.sub || "signed in";
  $("#who").textContent = who;
  $("#account").hidden = false;
  $("#mainnav").hidden = false;
  buildEventPicker();
  buildEventSelect();
  buildEventsFilter();
  state.route = "";
  if (!location.hash.startsWith("#/")) history.replaceState(null, "", "#/");
  await route();
  return true;
}

function signOut(message) {
  state.token = null;
  state.current = null;
  state.deliveriesOf = null;
  sessionStorage.removeItem(TOKEN_KEY);
  stopPolling();
  for (const d of $$("dialog[open]")) d.close();
  state.route = "";
  showSignin(message);
}

// ---------------------------------------------------------------- webhook list

async function showList(moveFocus) {
  stopPolling();
  state.current = null;
  showView("list", "Webhooks");
  if (moveFocus) focusHeading("#list-title");
  const alert = $("#list-alert");
  alert.hidden = true;
  try {
    const { data, headers } = await api("GET", `api/webhooks?limit=${PAGE}`);
    state.webhooks = data;
    state.webhooksNext = nextLink(headers);
  } catch (e) {
    if (e.status !== 401) showProblem($("#view-list"), e, alert);
    return;
  }
  renderList();
}

async function loadMoreWebhooks() {
  if (!state.webhooksNext) return;
  try {
    const { data, headers } = await api("GET", state.webhooksNext);
    state.webhooks.push(...data);
    state.webhooksNext = nextLink(headers);
    renderList();
  } catch (e) {
    if (e.status !== 401) showProblem($("#view-list"), e, $("#list-alert"));
  }
}

function eventsSummary(events) {
  const shown = events.slice(0, 3).join(", ");
  return events.length > 3 ? `${shown} and ${events.length - 3} more` : shown;
}

function activeBadge(active) {
  return h("span", { class: active ? "badge active" : "badge" }, active ? "Active" : "Disabled");
}

/** The endpoint's health in words: `open` is the circuit breaker holding deliveries back. */
const HEALTH_WORDS = { healthy: "Healthy", failing: "Failing", open: "Breaker open" };

function failures(n) {
  return n === 1 ? "1 consecutive failure" : `${n} consecutive failures`;
}

function healthBadge(health) {
  const status = health?.status || "healthy";
  const label = HEALTH_WORDS[status] || status;
  return h("span", { class: `badge health-${status}`, title: health?.lastError || null }, label);
}

/** One line on the health: what the list row and the detail's summary say. */
function healthLine(health) {
  if (!health || health.status === "healthy") {
    // lastSuccessAt is written only on a change of state: the start of this healthy stretch.
    return health?.lastSuccessAt ? ["Delivering normally since ", timeEl(health.lastSuccessAt, true), "."] : ["No failed attempt."];
  }
  const parts = [`${failures(health.consecutiveFailures)}`];
  if (health.failingSince) parts.push(", failing since ", timeEl(health.failingSince, true));
  if (health.status === "open") {
    parts.push(". Deliveries are paused");
    if (health.nextProbeAt) parts.push(" until the next probe ", timeEl(health.nextProbeAt, true));
  }
  parts.push(".");
  return parts;
}

/** The dispatcher disabled this webhook itself: say when and why. */
function disabledWhen(w) {
  return ["Disabled automatically", w.disabledAt ? [" ", timeEl(w.disabledAt, true)] : ""];
}

function disabledLine(w) {
  return w.disabledReason ? [...disabledWhen(w), ": ", w.disabledReason] : null;
}

function renderList() {
  const list = $("#webhook-list");
  const items = state.webhooks.map((w) => {
    const last = h("span", { class: "wh-last" }, "Last delivery: …");
    const reason = disabledLine(w);
    const unwell = w.health && w.health.status !== "healthy";
    const li = h(
      "li",
      { class: "wh-item", dataset: { id: w.id } },
      h("a", { class: "wh-link", href: `#/webhooks/${w.id}` }, w.url),
      h("span", { class: "badges" }, activeBadge(w.active), healthBadge(w.health)),
      h("span", { class: "wh-events" }, `${w.events.length === 1 ? "1 event" : `${w.events.length} events`}: ${eventsSummary(w.events)}`),
      last,
      reason ? h("span", { class: "wh-reason" }, reason) : null,
      unwell && !reason ? h("span", { class: "wh-reason" }, healthLine(w.health)) : null,
    );
    lastDelivery(w.id, last);
    return li;
  });
  list.replaceChildren(...items);
  $("#list-empty").hidden = state.webhooks.length > 0;
  $("#list-more").hidden = !state.webhooksNext;
}

/** Fills a list row's "last delivery" from the newest delivery record. */
async function lastDelivery(id, el) {
  try {
    const { data } = await api("GET", `api/webhooks/${encodeURIComponent(id)}/deliveries?limit=1`);
    const d = data[0];
    el.replaceChildren(
      ...(d ? ["Last delivery", statusBadge(d.status), timeEl(d.updatedAt, true)] : [h("span", {}, "No deliveries yet")]),
    );
  } catch {
    el.textContent = "";
  }
}

function statusBadge(status) {
  return h("span", { class: `status ${status}` }, status);
}

// ---------------------------------------------------------------- events

async function showEvents(moveFocus) {
  stopPolling();
  state.current = null;
  showView("events", "Events");
  if (moveFocus) focusHeading("#events-page-title");
  await loadEvents();
}

/** The first page of `GET /api/events`, with the chosen type filter (the API checks it). */
async function loadEvents() {
  const form = $("#events-filter");
  clearErrors(form);
  $("#events-alert").hidden = true;
  const type = $("#events-type").value;
  const query = new URLSearchParams({ limit: String(PAGE) });
  if (type) query.set("event", type);
  try {
    const { data, headers } = await api("GET", `api/events?${query}`);
    state.events = data;
    state.eventsNext = nextLink(headers);
  } catch (e) {
    if (e.status !== 401) showProblem(form, e, $("#events-alert"));
    return;
  }
  renderEvents();
}

async function loadMoreEvents() {
  if (!state.eventsNext) return;
  try {
    const { data, headers } = await api("GET", state.eventsNext);
    state.events.push(...data);
    state.eventsNext = nextLink(headers);
    renderEvents();
  } catch (e) {
    if (e.status !== 401) showProblem($("#events-filter"), e, $("#events-alert"));
  }
}

function renderEvents() {
  $("#event-list").replaceChildren(...state.events.map(eventItem));
  $("#events-empty").hidden = state.events.length > 0;
  $("#events-more").hidden = !state.eventsNext;
}

function eventItem(ev) {
  const body = h("div", { class: "dl-body" }, h("p", { class: "muted small-text" }, "Loading…"));
  const details = h(
    "details",
    {},
    h(
      "summary",
      {},
      h("span", { class: `status ${ev.status === "fannedOut" ? "succeeded" : "pending"}` }, ev.status === "fannedOut" ? "fanned out" : "queued"),
      h("span", { class: "dl-event" }, ev.event),
      h("span", { class: "dl-meta" }, timeEl(ev.timestamp, true)),
    ),
    body,
  );
  details.addEventListener("toggle", () => { if (details.open && !body.dataset.loaded) loadEvent(ev, body); });
  return h("li", { class: "delivery", dataset: { id: ev.id } }, details);
}

/** `GET /api/events/{id}`: the payload and each webhook's delivery of the event. */
async function loadEvent(ev, body) {
  try {
    const { data } = await api("GET", `api/events/${encodeURIComponent(ev.id)}`);
    const deliveries = data.deliveries || [];
    body.replaceChildren(
      h("dl", { class: "kv" },
        h("dt", {}, "Event ID"), h("dd", { class: "mono" }, data.id),
        h("dt", {}, "Time"), h("dd", {}, timeEl(data.timestamp)),
        h("dt", {}, "Webhooks"), h("dd", {}, data.fanOut === 1 ? "1 subscribed" : `${data.fanOut} subscribed`)),
      h("pre", { class: "payload", tabindex: "0", "aria-label": `Payload of ${data.id}` }, JSON.stringify(data.payload, null, 2)),
      deliveries.length
        ? h("ul", { class: "event-deliveries", "aria-label": `Deliveries of ${data.id}` }, deliveries.map((d) => h(
          "li", {},
          statusBadge(d.status),
          h("a", { class: "mono", href: `#/webhooks/${d.webhookId}` }, d.webhookId),
          h("span", { class: "muted" }, d.attempts === 1 ? "1 attempt" : `${d.attempts} attempts`),
        )))
        : h("p", { class: "muted small-text" }, "No webhook subscribed to it."),
    );
    body.dataset.loaded = "1";
  } catch (e) {
    if (e.status !== 401) body.replaceChildren(h("p", { class: "dl-message bad" }, e.detail ? `${e.title}: ${e.detail}` : e.title));
  }
}

function buildEventsFilter() {
  $("#events-type").replaceChildren(
    h("option", { value: "" }, "All event types"),
    ...[...groupedEventTypes()].map(([category, types]) =>
      h("optgroup", { label: category }, types.map((t) => h("option", { value: t.name }, t.name)))),
  );
}

// ---------------------------------------------------------------- webhook detail

async function showDetail(id, moveFocus) {
  stopPolling();
  const alert = $("#detail-alert");
  alert.hidden = true;
  if (state.deliveriesOf !== id) {
    state.deliveriesOf = id;
    state.deliveries = [];
    state.deliveriesNext = null;
    state.deliveriesSeen = null;
    $("#delivery-list").replaceChildren();
    $("#deliveries-empty").hidden = true;
  }
  showView("detail", "Webhook");
  $("#detail-head").hidden = true;
  $(".detail-grid").hidden = true;
  $("#crumb-id").textContent = id;
  try {
    const { data } = await api("GET", `api/webhooks/${encodeURIComponent(id)}`);
    state.current = data;
  } catch (e) {
    if (e.status !== 401) showProblem($("#view-detail"), e, alert);
    return;
  }
  renderDetail();
  $("#detail-head").hidden = false;
  $(".detail-grid").hidden = false;
  if (moveFocus) focusHeading("#detail-title");
  loadStats(state.current);
  await refreshDeliveries();
  startPolling();
}

function renderDetail() {
  const w = state.current;
  document.title = `${w.url} · Webhooks`;
  $("#detail-title").textContent = w.url;
  const badge = $("#detail-badge");
  badge.className = w.active ? "badge active" : "badge";
  badge.textContent = w.active ? "Active" : "Disabled";
  $("#detail-health").replaceChildren(healthBadge(w.health));
  $("#detail-signing").textContent = w.hasSecret ? "Signed with a secret" : "Unsigned (no secret)";
  $("#detail-toggle").textContent = w.active ? "Disable" : "Enable";
  const notice = $("#detail-disabled");
  notice.hidden = !w.disabledReason;
  notice.replaceChildren(...(w.disabledReason
    ? [h("strong", {}, disabledWhen(w)), h("span", {}, w.disabledReason), h("span", { class: "muted" }, "Enable it to deliver again; that also resets its health.")]
    : []));
  $("#detail-events").replaceChildren(...w.events.map((e) => h("li", {}, e)));
  const previous = w.previousSecrets || [];
  $("#detail-facts").replaceChildren(
    h("dt", {}, "ID"), h("dd", { class: "mono" }, w.id),
    h("dt", {}, "Created"), h("dd", {}, timeEl(w.createdAt)),
    h("dt", {}, "Updated"), h("dd", {}, timeEl(w.updatedAt)),
    ...(previous.length
      ? [
        h("dt", {}, previous.length === 1 ? "Previous secret" : "Previous secrets"),
        h("dd", { id: "previous-secrets" }, h("ul", { class: "plain" }, previous.map((p) => h("li", {}, "signs until ", timeEl(p.expiresAt))))),
      ]
      : []),
  );
  renderHealth(w.health);
}

function renderHealth(health) {
  const status = health?.status || "healthy";
  $("#health-summary").replaceChildren(healthBadge(health), " ", h("span", {}, healthLine(health)));
  const facts = [];
  const fact = (label, value) => value && facts.push(h("dt", {}, label), h("dd", {}, value));
  if (status === "healthy" && health?.lastSuccessAt) fact("Healthy since", timeEl(health.lastSuccessAt));
  if (health?.lastFailureAt) fact("Last failure", timeEl(health.lastFailureAt));
  if (health?.lastError) fact("Last error", health.lastError);
  if (status === "open" && health.nextProbeAt) fact("Next probe", timeEl(health.nextProbeAt));
  $("#health-facts").replaceChildren(...facts);
}

/** The 24 h counts of `GET /api/webhooks/{id}/stats`. */
async function loadStats(w) {
  try {
    const { data } = await api("GET", `api/webhooks/${encodeURIComponent(w.id)}/stats`);
    if (state.current?.id !== w.id) return;
    const by = data.byStatus || {};
    const rate = typeof data.successRate === "number" ? `${Math.round(data.successRate * 1000) / 10}%` : "—";
    const stat = (label, value, cls) => h("div", { class: `stat ${cls || ""}` }, h("dt", {}, label), h("dd", {}, String(value)));
    $("#stats").replaceChildren(
      stat("Deliveries", data.total),
      stat("Success rate", rate),
      stat("Succeeded", by.succeeded ?? 0, by.succeeded ? "ok" : ""),
      stat("Failed", by.failed ?? 0, by.failed ? "bad" : ""),
      stat("Pending", by.pending ?? 0),
      stat("Skipped", by.skipped ?? 0),
    );
    const failedAttempts = data.failedAttempts === 1 ? "1 failed" : `${data.failedAttempts} failed`;
    $("#stats-note").textContent = `${data.attempts === 1 ? "1 attempt" : `${data.attempts} attempts`}, ${failedAttempts}.${data.complete ? "" : " Counted from the newest deliveries only."}`;
  } catch (e) {
    if (e.status !== 401) $("#stats-note").textContent = `Statistics unavailable: ${e.detail || e.title}`;
  }
}

/** Re-reads the webhook (health, disabled reason) and its stats, after deliveries changed. */
async function refreshWebhook() {
  const w = state.current;
  if (!w) return;
  try {
    const { data } = await api("GET", `api/webhooks/${encodeURIComponent(w.id)}`);
    if (state.current?.id !== w.id || $("dialog[open]")) return;
    state.current = data;
    renderDetail();
  } catch (e) {
    if (e.status !== 401) showProblem($("#view-detail"), e, $("#detail-alert"));
    return;
  }
  await loadStats(state.current);
}

// ---------------------------------------------------------------- deliveries

function deliveryVersion(d) {
  return `${d.status}|${d.updatedAt}|${d.attempts.length}`;
}

function attemptRow(a) {
  const code = a.statusCode;
  const codeCell = code === null || code === undefined
    ? h("span", { class: "none" }, "no response")
    : h("span", { class: code >= 200 && code < 300 ? "code-ok" : "code-bad" }, String(code));
  const body = a.responseBody
    ? h("pre", {}, a.responseBody)
    : h("span", { class: "none" }, "empty");
  return h(
    "tr",
    {},
    h("td", { class: "num", "data-label": "Attempt" }, String(a.attempt)),
    h("td", { "data-label": "Time" }, timeEl(a.at)),
    h("td", { class: "num", "data-label": "HTTP status" }, codeCell),
    h("td", { class: "num", "data-label": "Duration" }, formatDuration(a.durationMs)),
    h("td", { "data-label": "Message" }, a.message),
    h("td", { "data-label": "Response" }, body),
  );
}

function deliveryItem(d, open) {
  const n = d.attempts.length;
  const details = h(
    "details",
    { open },
    h(
      "summary",
      {},
      statusBadge(d.status),
      h("span", { class: "dl-event" }, d.event),
      h("span", { class: "dl-meta" }, `${n === 1 ? "1 attempt" : `${n} attempts`} · `, timeEl(d.createdAt, true)),
    ),
    h(
      "div",
      { class: "dl-body" },
      d.note ? h("p", { class: "dl-note" }, d.note) : null,
      h(
        "dl",
        { class: "kv" },
        h("dt", {}, "Delivery ID"), h("dd", { class: "mono" }, d.id),
        h("dt", {}, "Event ID"), h("dd", { class: "mono" }, d.eventId),
        h("dt", {}, "Created"), h("dd", {}, timeEl(d.createdAt)),
        ...(d.nextAttemptAt ? [h("dt", {}, "Next attempt"), h("dd", {}, timeEl(d.nextAttemptAt))] : []),
      ),
      deliveryActions(d),
      n === 0
        ? h("p", { class: "muted" }, "No attempt yet.")
        : h(
          "table",
          { class: "attempts" },
          h("caption", { class: "sr-only" }, `Attempts of delivery ${d.id}`),
          h("thead", {}, h("tr", {}, ["Attempt", "Time", "HTTP status", "Duration", "Message", "Response"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, d.attempts.map(attemptRow)),
        ),
    ),
  );
  return h("li", { class: "delivery", dataset: { id: d.id, version: deliveryVersion(d) } }, details);
}

function deliveryActions(d) {
  const box = h("div", { class: "dl-actions" });
  const payload = h("div", { class: "dl-payload", id: `payload-${d.id}`, hidden: true });
  const show = h("button", { type: "button", class: "btn small", "aria-expanded": "false", "aria-controls": payload.id }, "Show payload");
  show.addEventListener("click", () => togglePayload(d, show, payload));
  box.append(show);
  // A pending delivery is still being attempted: the API refuses to resend it.
  if (d.status !== "pending") {
    const button = h("button", { type: "button", class: "btn small", "aria-describedby": `resend-msg-${d.id}` }, "Resend");
    const message = h("p", { class: "dl-message", id: `resend-msg-${d.id}`, role: "status" });
    button.addEventListener("click", () => resend(d, button, message));
    box.append(button, message);
  }
  return [box, payload];
}

/** The stored event's payload (`GET /api/events/{id}`), read when first asked for. */
async function togglePayload(d, button, box) {
  const open = button.getAttribute("aria-expanded") === "true";
  button.setAttribute("aria-expanded", String(!open));
  button.textContent = open ? "Show payload" : "Hide payload";
  box.hidden = open;
  if (open || box.dataset.loaded) return;
  box.replaceChildren(h("p", { class: "muted small-text" }, "Loading…"));
  try {
    const { data } = await api("GET", `api/events/${encodeURIComponent(d.eventId)}`);
    const others = data.fanOut > 1 ? ` It went to ${data.fanOut} webhooks.` : "";
    box.replaceChildren(
      h("p", { class: "muted small-text" }, `Payload of this ${data.event} event.${others}`),
      h("pre", { class: "payload", tabindex: "0", "aria-label": `Payload of ${d.eventId}` }, JSON.stringify(data.payload, null, 2)),
    );
    box.dataset.loaded = "1";
  } catch (e) {
    if (e.status === 401) return;
    box.replaceChildren(h("p", { class: "dl-message bad" }, e.detail ? `${e.title}: ${e.detail}` : e.title));
  }
}

/** `POST .../resend`: the same delivery gets a fresh cycle of attempts; polling shows them. */
async function resend(d, button, message) {
  const w = state.current;
  button.disabled = true;
  message.className = "dl-message";
  message.textContent = "";
  try {
    const { data } = await api("POST", `api/webhooks/${encodeURIComponent(w.id)}/deliveries/${encodeURIComponent(d.id)}/resend`);
    message.textContent = `Resend queued (cycle ${data.cycle}): new attempts appear below.`;
    toast("Resend queued.");
    setTimeout(refreshDeliveries, 500);
  } catch (e) {
    if (e.status === 401) return;
    message.className = "dl-message bad";
    message.textContent = e.detail ? `${e.title}: ${e.detail}` : e.title;
  } finally {
    button.disabled = false;
  }
}

/** Updates the list in place: unchanged deliveries keep their element (and open state, focus). */
function renderDeliveries() {
  const ol = $("#delivery-list");
  const existing = new Map($$(":scope > li", ol).map((li) => [li.dataset.id, li]));
  state.deliveries.forEach((d, i) => {
    let li = existing.get(d.id);
    if (li && li.dataset.version !== deliveryVersion(d)) {
      const hadFocus = li.contains(document.activeElement);
      const fresh = deliveryItem(d, $("details", li).open);
      li.replaceWith(fresh);
      li = fresh;
      if (hadFocus) $("summary", li).focus();
    } else if (!li) {
      li = deliveryItem(d, false);
    }
    existing.delete(d.id);
    if (ol.children[i] !== li) ol.insertBefore(li, ol.children[i] || null);
  });
  for (const stale of existing.values()) stale.remove();
  $("#deliveries-empty").hidden = state.deliveries.length > 0;
  $("#deliveries-more").hidden = !state.deliveriesNext;
}

async function refreshDeliveries() {
  const w = state.current;
  if (!w) return;
  try {
    const { data, headers } = await api("GET", `api/webhooks/${encodeURIComponent(w.id)}/deliveries?limit=${PAGE}`);
    if (state.current !== w) return;
    // Keep older pages the user loaded; the first page replaces what it covers.
    const fresh = new Set(data.map((d) => d.id));
    const older = state.deliveries.filter((d) => !fresh.has(d.id) && data.length === PAGE);
    state.deliveries = [...data, ...older];
    if (!older.length) state.deliveriesNext = nextLink(headers);
    renderDeliveries();
    // A delivery that moved on may have changed the endpoint's health (or disabled it).
    const seen = state.deliveries.map(deliveryVersion).join(",");
    if (state.deliveriesSeen !== null && state.deliveriesSeen !== seen) refreshWebhook();
    state.deliveriesSeen = seen;
  } catch (e) {
    if (e.status !== 401) {
      stopPolling();
      showProblem($("#view-detail"), e, $("#detail-alert"));
    }
  }
}

async function loadMoreDeliveries() {
  if (!state.deliveriesNext) return;
  try {
    const { data, headers } = await api("GET", state.deliveriesNext);
    const known = new Set(state.deliveries.map((d) => d.id));
    state.deliveries.push(...data.filter((d) => !known.has(d.id)));
    state.deliveriesNext = nextLink(headers);
    renderDeliveries();
  } catch (e) {
    if (e.status !== 401) showProblem($("#view-detail"), e, $("#detail-alert"));
  }
}

function startPolling() {
  stopPolling();
  state.pollTimer = setInterval(() => {
    if (!$("#auto-refresh").checked || document.hidden || !state.current) return;
    if ($("dialog[open]")) return;
    refreshDeliveries();
  }, POLL_MS);
}

function stopPolling() {
  clearInterval(state.pollTimer);
  state.pollTimer = 0;
}

// ---------------------------------------------------------------- dialogs

function openDialog(dialog) {
  dialog.opener = document.activeElement;
  dialog.showModal();
}

function closeDialog(dialog) {
  if (dialog.open) dialog.close();
}

for (const dialog of $$("dialog")) {
  // Focus goes back to what opened the dialog, or to the heading of the view now shown.
  dialog.addEventListener("close", () => {
    const back = dialog.opener;
    dialog.opener = null;
    if ($("dialog[open]")) return;
    if (back && document.contains(back) && !back.closest("[hidden]") && back !== document.body) back.focus();
    else $(".view:not([hidden]) h1")?.focus();
  });
  dialog.addEventListener("click", (e) => {
    if (e.target.closest("[data-close]")) closeDialog(dialog);
  });
}

// ---------------------------------------------------------------- create / edit

function groupedEventTypes() {
  const groups = new Map();
  for (const t of state.eventTypes) {
    if (!groups.has(t.category)) groups.set(t.category, []);
    groups.get(t.category).push(t);
  }
  return groups;
}

function buildEventPicker() {
  const box = $("#wh-event-groups");
  const groups = [...groupedEventTypes()].map(([category, types]) =>
    h(
      "fieldset",
      { class: "event-group" },
      h("legend", {}, category),
      types.map((t) => {
        const id = `ev-${t.name.replace(/\./g, "-")}`;
        return h(
          "div",
          { class: "event-option" },
          h("input", { type: "checkbox", id, name: "events", value: t.name, "aria-describedby": `${id}-desc` }),
          h("label", { for: id }, t.name),
          h("span", { class: "desc", id: `${id}-desc` }, t.description),
        );
      }),
    ),
  );
  box.replaceChildren(...groups);
}

/** Subscriptions that are not one event type (wildcards such as `task.*` or `*`), kept on edit. */
function setOtherSubscriptions(filters) {
  $("#wh-other")?.remove();
  if (!filters.length) return;
  const group = h(
    "fieldset",
    { class: "event-group", id: "wh-other" },
    h("legend", {}, "Wildcard subscriptions"),
    filters.map((f, i) => {
      const id = `ev-other-${i}`;
      return h(
        "div",
        { class: "event-option" },
        h("input", { type: "checkbox", id, name: "events", value: f, checked: true }),
        h("label", { for: id }, f),
      );
    }),
  );
  $("#wh-event-groups").append(group);
}

function openWebhookForm(webhook) {
  state.editing = webhook || null;
  const form = $("#wh-form");
  form.reset();
  clearErrors(form);
  const editing = Boolean(webhook);
  $("#wh-title").textContent = editing ? "Edit webhook" : "New webhook";
  $("#wh-submit").textContent = editing ? "Save changes" : "Create webhook";
  $("#wh-active-field").hidden = !editing;
  $("#wh-secret-hint").textContent = editing
    ? (webhook.hasSecret
      ? "Leave empty to keep the current secret; enter or generate one to replace it."
      : "This webhook sends unsigned deliveries; enter or generate a secret to sign them.")
    : "Signs every delivery (HMAC-SHA256 in X-Webhook-Signature). Recommended. Shown once, after you save.";
  const known = new Set(state.eventTypes.map((t) => t.name));
  const chosen = new Set(webhook ? webhook.events : []);
  for (const box of $$('#wh-event-groups input[name="events"]')) box.checked = chosen.has(box.value);
  setOtherSubscriptions(webhook ? webhook.events.filter((e) => !known.has(e)) : []);
  $("#wh-url").value = webhook ? webhook.url : "";
  $("#wh-active").checked = webhook ? webhook.active : true;
  openDialog($("#dlg-webhook"));
  $("#wh-url").focus();
}

async function submitWebhookForm(e) {
  e.preventDefault();
  const form = $("#wh-form");
  const submit = $("#wh-submit");
  clearErrors(form);
  const body = {
    url: $("#wh-url").value.trim(),
    events: $$('#wh-form input[name="events"]:checked').map((b) => b.value),
  };
  const secret = $("#wh-secret").value;
  const editing = state.editing;
  if (editing) {
    body.active = $("#wh-active").checked;
    if (secret) body.secret = secret;
  } else if (secret) {
    body.secret = secret;
  }
  submit.disabled = true;
  try {
    const { data } = editing
      ? await api("PUT", `api/webhooks/${encodeURIComponent(editing.id)}`, body)
      : await api("POST", "api/webhooks", body);
    closeDialog($("#dlg-webhook"));
    state.current = data;
    toast(editing ? "Webhook saved." : "Webhook created.");
    if (!editing) {
      state.route = "";
      location.hash = `#/webhooks/${data.id}`;
    } else {
      renderDetail();
    }
    if (typeof data.secret === "string" && data.secret) showSecretOnce(data.secret);
  } catch (err) {
    if (err.status !== 401) showProblem(form, err);
  } finally {
    submit.disabled = false;
  }
}

function showSecretOnce(secret) {
  $("#secret-value").value = secret;
  $("#secret-copy").textContent = "Copy";
  openDialog($("#dlg-secret"));
  $("#secret-value").select();
}

async function copySecret() {
  const input = $("#secret-value");
  try {
    await navigator.clipboard.writeText(input.value);
  } catch {
    input.select();
    document.execCommand("copy");
  }
  $("#secret-copy").textContent = "Copied";
  toast("Secret copied to the clipboard.");
}

// ---------------------------------------------------------------- enable / disable / delete

async function toggleActive() {
  const w = state.current;
  if (!w) return;
  const button = $("#detail-toggle");
  button.disabled = true;
  try {
    const { data } = await api("PUT", `api/webhooks/${encodeURIComponent(w.id)}`, { active: !w.active });
    state.current = data;
    renderDetail();
    toast(data.active ? "Webhook enabled: events are delivered again." : "Webhook disabled: events are not delivered.");
  } catch (e) {
    if (e.status !== 401) showProblem($("#view-detail"), e, $("#detail-alert"));
  } finally {
    button.disabled = false;
    button.focus();
  }
}

function askDelete() {
  const w = state.current;
  if (!w) return;
  const dialog = $("#dlg-delete");
  clearErrors(dialog);
  $("#delete-url").textContent = w.url;
  openDialog(dialog);
  $("#dlg-delete [data-close]").focus();
}

async function confirmDelete() {
  const w = state.current;
  const dialog = $("#dlg-delete");
  const button = $("#delete-confirm");
  button.disabled = true;
  try {
    await api("DELETE", `api/webhooks/${encodeURIComponent(w.id)}`);
    dialog.opener = null;
    closeDialog(dialog);
    state.current = null;
    toast(`Webhook deleted: ${w.url}`);
    location.hash = "#/";
  } catch (e) {
    if (e.status !== 401) showProblem(dialog, e);
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------- rotate the secret

function openRotateForm() {
  const form = $("#rotate-form");
  form.reset();
  clearErrors(form);
  openDialog($("#dlg-rotate"));
  $("#rotate-secret").focus();
}

async function submitRotate(e) {
  e.preventDefault();
  const w = state.current;
  const form = $("#rotate-form");
  const submit = $("#rotate-submit");
  clearErrors(form);
  const body = { overlapSeconds: Number($("#rotate-overlap").value) };
  const secret = $("#rotate-secret").value;
  if (secret) body.secret = secret;
  submit.disabled = true;
  try {
    const { data } = await api("POST", `api/webhooks/${encodeURIComponent(w.id)}/rotate-secret`, body);
    closeDialog($("#dlg-rotate"));
    state.current = data;
    renderDetail();
    const kept = data.previousSecrets?.length || 0;
    toast(kept ? "Secret rotated: the previous one signs too until its overlap ends." : "Secret rotated: only the new one signs.");
    if (typeof data.secret === "string" && data.secret) showSecretOnce(data.secret);
  } catch (err) {
    if (err.status !== 401) showProblem(form, err);
  } finally {
    submit.disabled = false;
  }
}

// ---------------------------------------------------------------- recover

/** A `datetime-local` value (the user's local time) as the API's ISO-8601; "" stays "". */
function isoOfLocal(value) {
  if (!value) return "";
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? value : d.toISOString();
}

function localOf(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

function openRecoverForm() {
  const form = $("#recover-form");
  form.reset();
  clearErrors(form);
  $("#recover-result").replaceChildren();
  $("#recover-since").value = localOf(new Date(Date.now() - 24 * 3600 * 1000));
  openDialog($("#dlg-recover"));
  $("#recover-since").focus();
}

async function submitRecover(e) {
  e.preventDefault();
  const w = state.current;
  const form = $("#recover-form");
  const result = $("#recover-result");
  const submit = $("#recover-submit");
  clearErrors(form);
  result.replaceChildren();
  // Empty "since" goes to the API as "", so its own words say what is missing.
  const body = { since: isoOfLocal($("#recover-since").value) };
  const until = isoOfLocal($("#recover-until").value);
  if (until) body.until = until;
  submit.disabled = true;
  try {
    const { data } = await api("POST", `api/webhooks/${encodeURIComponent(w.id)}/recover`, body);
    const queued = data.queued === 1 ? "1 failed delivery" : `${data.queued} failed deliveries`;
    const scanned = data.scanned === 1 ? "1 delivery" : `${data.scanned} deliveries`;
    result.replaceChildren(
      h(
        "div",
        { class: data.queued ? "result-box ok" : "result-box" },
        h("span", { class: "result-title" }, data.queued || !data.complete ? `Queued ${queued} to be delivered again` : "No failed delivery to recover"),
        h("span", { class: "result-message" }, `Examined ${scanned} of events from `, timeEl(data.since), " to ", timeEl(data.until), ". ",
          data.complete ? "That is the whole window." : "The rest of the window is worked through in the background."),
      ),
    );
    if (data.queued) setTimeout(refreshDeliveries, 500);
  } catch (err) {
    if (err.status !== 401) showProblem(form, err);
  } finally {
    submit.disabled = false;
  }
}

// ---------------------------------------------------------------- test event

function buildEventSelect() {
  const select = $("#test-event");
  select.replaceChildren(
    ...[...groupedEventTypes()].map(([category, types]) =>
      h("optgroup", { label: category }, types.map((t) => h("option", { value: t.name }, t.name)))),
  );
}

/** Opened on a webhook's page, the test goes to that webhook (`POST /api/webhooks/{id}/test`):
 * its URL and stored secret, which the user need not have kept. Otherwise any URL. */
function openTestForm(webhook) {
  const form = $("#test-form");
  clearErrors(form);
  state.testing = webhook || null;
  $("#test-result").replaceChildren();
  $("#test-url-field").hidden = Boolean(webhook);
  $("#test-secret-field").hidden = Boolean(webhook);
  const target = $("#test-target");
  target.hidden = !webhook;
  target.replaceChildren(...(webhook
    ? ["To ", h("strong", { class: "mono break" }, webhook.url), webhook.hasSecret ? ", signed with its secret (and any previous one still valid)." : ", unsigned (it has no secret)."]
    : []));
  $("#test-url").value = webhook ? webhook.url : "";
  const preferred = webhook?.events.find((e) => state.eventTypes.some((t) => t.name === e));
  $("#test-event").value = webhook && preferred && !webhook.events.includes(EXAMPLE_EVENT) ? preferred : EXAMPLE_EVENT;
  $("#test-payload").value = JSON.stringify(EXAMPLE_PAYLOAD, null, 2);
  $("#test-secret").value = "";
  openDialog($("#dlg-test"));
  (webhook ? $("#test-event") : $("#test-url")).focus();
}

async function submitTest(e) {
  e.preventDefault();
  const form = $("#test-form");
  const result = $("#test-result");
  clearErrors(form);
  result.replaceChildren();
  let payload;
  try {
    payload = JSON.parse($("#test-payload").value);
  } catch (err) {
    showProblem(form, { status: 422, title: "Invalid payload", errors: [{ field: "payload", message: `is not valid JSON (${err.message})` }] });
    return;
  }
  const webhook = state.testing;
  const body = webhook ? { event: $("#test-event").value, payload } : { url: $("#test-url").value.trim(), event: $("#test-event").value, payload };
  const secret = $("#test-secret").value;
  if (secret && !webhook) body.secret = secret;
  const submit = $("#test-submit");
  submit.disabled = true;
  submit.textContent = "Sending…";
  try {
    const path = webhook ? `api/webhooks/${encodeURIComponent(webhook.id)}/test` : "api/webhooks/test";
    const { data } = await api("POST", path, body);
    const status = data.statusCode === null || data.statusCode === undefined ? "no HTTP response" : `HTTP ${data.statusCode}`;
    result.replaceChildren(
      h(
        "div",
        { class: data.success ? "result-box ok" : "result-box bad" },
        h("span", { class: "result-title" }, `${data.success ? "Delivered" : "Not delivered"} · ${status}`),
        h("span", { class: "result-message" }, data.message),
      ),
    );
    result.scrollIntoView({ block: "nearest" });
  } catch (err) {
    if (err.status !== 401) showProblem(form, err);
  } finally {
    submit.disabled = false;
    submit.textContent = "Send test";
  }
}

// ---------------------------------------------------------------- wiring

$("#signin-form").addEventListener("submit", (e) => {
  e.preventDefault();
  signIn($("#signin-token").value);
});
$("#sign-out").addEventListener("click", () => {
  signOut();
  history.replaceState(null, "", location.pathname + location.search);
});
$("#list-new").addEventListener("click", () => openWebhookForm(null));
$("#list-test").addEventListener("click", () => openTestForm(null));
$("#list-more").addEventListener("click", loadMoreWebhooks);
$("#detail-edit").addEventListener("click", () => openWebhookForm(state.current));
$("#detail-test").addEventListener("click", () => openTestForm(state.current));
$("#detail-toggle").addEventListener("click", toggleActive);
$("#detail-rotate").addEventListener("click", openRotateForm);
$("#rotate-form").addEventListener("submit", submitRotate);
$("#rotate-generate").addEventListener("click", () => {
  const input = $("#rotate-secret");
  input.value = generateSecret();
  input.focus();
  input.select();
});
$("#deliveries-recover").addEventListener("click", openRecoverForm);
$("#events-filter").addEventListener("submit", (e) => {
  e.preventDefault();
  loadEvents();
});
$("#events-more").addEventListener("click", loadMoreEvents);
$("#recover-form").addEventListener("submit", submitRecover);
$("#detail-delete").addEventListener("click", askDelete);
$("#deliveries-refresh").addEventListener("click", refreshDeliveries);
$("#deliveries-more").addEventListener("click", loadMoreDeliveries);
$("#wh-form").addEventListener("submit", submitWebhookForm);
$("#wh-generate").addEventListener("click", () => {
  const input = $("#wh-secret");
  input.value = generateSecret();
  input.focus();
  input.select();
});
$("#secret-copy").addEventListener("click", copySecret);
$("#delete-confirm").addEventListener("click", confirmDelete);
$("#test-form").addEventListener("submit", submitTest);
window.addEventListener("hashchange", route);

const saved = sessionStorage.getItem(TOKEN_KEY);
if (location.hash.startsWith("#token=")) {
  route();
} else if (saved) {
  signIn(saved);
} else {
  showSignin();
}
