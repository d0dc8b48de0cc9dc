// The relay's dashboard (docs/dashboard.md). Everything it shows comes from the relay's own
// routes with the token signed in with; every text from the relay goes in with textContent.

const TOKEN_KEY = "agent-relay-token";
const $ = (id) => document.getElementById(id);

const state = {
  token: null,
  operator: false,
  me: null, // the agent id for an agent token
  lastEventId: null,
  streamAbort: null,
  feedIds: new Set(),
  agents: [],
};

// ---- small helpers ---------------------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function relative(ms) {
  const diff = Math.round((Date.now() - ms) / 1000);
  const ahead = diff < 0;
  const s = Math.abs(diff);
  let text;
  if (s < 60) text = `${s} s`;
  else if (s < 3600) text = `${Math.floor(s / 60)} min`;
  else if (s < 86400) text = `${Math.floor(s / 3600)} h`;
  else text = `${Math.floor(s / 86400)} d`;
  return ahead ? `in ${text}` : `${text} ago`;
}

/** A time shown relative ("12 s ago"), the full local time as its tooltip; kept fresh. */
function when(ms) {
  if (!ms) return el("span", { class: "muted" }, "never");
  return el("time", { datetime: new Date(ms).toISOString(), title: new Date(ms).toLocaleString(), dataset: { at: ms } }, relative(ms));
}

function tick() {
  for (const node of document.querySelectorAll("time[data-at]")) node.textContent = relative(Number(node.dataset.at));
}

const shown = new WeakMap(); // a list -> the items it shows, as JSON

/** Shows `items` in `list`; nothing is redrawn when they are what it shows already (so what is
 * being typed or focused in it stays). */
function fill(list, items, render, empty) {
  const key = JSON.stringify(items);
  if (shown.get(list) === key) return;
  shown.set(list, key);
  list.replaceChildren(...(items.length ? items.map(render) : [el("li", { class: "empty" }, empty)]));
}

class RelayError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { Authorization: `Bearer ${state.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const message = data && data.error ? data.error.message : `${response.status} ${response.statusText}`;
    throw new RelayError(response.status, message);
  }
  return data;
}

const loading = new Map(); // a view's list -> the load to run after the one under way

/**
 * Runs one view's load without blocking the others; a failure shows in that view. One load per
 * view at a time: a load asked for meanwhile runs after it, so an older answer never overwrites
 * a newer one.
 */
function load(list, loader) {
  if (loading.has(list)) {
    loading.set(list, loader);
    return;
  }
  loading.set(list, null);
  loader()
    .catch((error) => {
      if (error.status === 401) return signOut("The relay no longer accepts this token; sign in again.");
      shown.delete(list);
      list.replaceChildren(el("li", { class: "error" }, `Could not load: ${error.message}`));
    })
    .finally(() => {
      const next = loading.get(list);
      loading.delete(list);
      if (next) load(list, next);
    });
}

function messageLine(message, { actions = [] } = {}) {
  const head = el("div", { class: "line" },
    el("strong", {}, message.from), " → ", el("strong", {}, message.to),
    el("span", { class: "tag" }, message.kind),
    message.subject ? el("span", { class: "subject" }, message.subject) : null,
    el("span", { class: "muted" }, "#", message.id, " "), when(message.createdAt));
  const body = el("div", { class: "body" }, message.body);
  const thread = el("button", { type: "button", class: "link", on: { click: () => showThread(message.threadId) } }, "thread");
  return el("li", { class: "message", dataset: { id: message.id } }, head, body, el("div", { class: "actions" }, ...actions, thread));
}

// ---- sign-in --------------------------------------------------------------------------------

async function signIn(token) {
  state.token = token;
  let who;
  try {
    who = await api("/v1/whoami");
  } catch (error) {
    state.token = null;
    const reason = error.status === 401 ? "The relay does not know this token (401). Check it and try again." : `Could not sign in: ${error.message}`;
    $("sign-in-error").textContent = reason;
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  state.operator = who.operator === true;
  state.me = state.operator ? "user" : who.agent.id;
  $("sign-in-error").textContent = "";
  $("sign-in").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = false;
  $("who").textContent = state.operator ? "operator (sending as user)" : `agent ${state.me}`;
  $("send-from").value = state.me;
  for (const node of document.querySelectorAll("[data-operator]")) node.hidden = !state.operator;
  for (const node of document.querySelectorAll("[data-agent]")) node.hidden = state.operator;
  buildNav();
  if (state.operator) {
    loadOperatorViews();
    loadFeed().then(openStream);
  } else {
    loadAgentViews();
    followInbox();
  }
}

function signOut(message = "") {
  sessionStorage.removeItem(TOKEN_KEY);
  if (state.streamAbort) state.streamAbort.abort();
  state.token = null;
  $("app").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
  $("who").textContent = "";
  $("live").textContent = "";
  $("sign-in-error").textContent = message;
  state.feedIds.clear();
  $("feed-list").replaceChildren();
}

function buildNav() {
  const sections = [...document.querySelectorAll("#app section.card")].filter((s) => !s.hidden && s.id !== "thread");
  $("nav").replaceChildren(...sections.map((s) => el("a", { href: `#${s.id}` }, s.querySelector("h2").firstChild.textContent.trim())));
}

// ---- operator views -------------------------------------------------------------------------

function loadOperatorViews() {
  load($("waiting-list"), loadWaiting);
  load($("agents-table").tBodies[0], loadAgents);
  load($("jobs-columns"), loadJobs);
  load($("tasks-list"), loadTasks);
  load($("channels-list"), loadChannels);
  load($("orchestrators-list"), loadOrchestrators);
  load($("activity-list"), loadActivity);
  load($("health-list"), loadHealth);
}

const drafts = new Map(); // message id -> the reply being typed

async function loadWaiting() {
  const inbox = await api("/v1/agents/user/inbox?limit=500");
  const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.reply : undefined;
  const open = inbox.filter((m) => !m.completedAt && !m.deadLetteredAt && !m.cancelledAt && (m.claimable ? !m.claimedBy || m.claimedBy === "user" : !m.readBy.includes("user")));
  $("waiting").hidden = open.length === 0;
  fill($("waiting-list"), open.reverse(), (m) => {
    const actions = [];
    if (m.kind === "approval") {
      actions.push(el("button", { type: "button", class: "allow", on: { click: () => answerApproval(m, "allow") } }, "Allow"));
      actions.push(el("button", { type: "button", class: "deny", on: { click: () => answerApproval(m, "deny") } }, "Deny"));
    }
    // What the human is typing survives the view being read again (a draft per message).
    const reply = el("input", { "aria-label": `Reply to #${m.id}`, placeholder: "Reply", dataset: { reply: m.id },
      on: { input: () => drafts.set(m.id, reply.value) } });
    reply.value = drafts.get(m.id) || "";
    const form = el("form", { class: "reply", on: { submit: (event) => { event.preventDefault(); replyTo(m, reply.value); } } }, reply, el("button", { type: "submit" }, "Reply"));
    actions.push(form);
    if (!m.claimable) actions.push(el("button", { type: "button", on: { click: () => markRead(m) } }, "Done"));
    return messageLine(m, { actions });
  }, "");
  if (focused) {
    const again = document.querySelector(`#waiting-list input[data-reply="${CSS.escape(focused)}"]`);
    if (again) again.focus();
  }
}

async function answerApproval(message, verdict) {
  try {
    if (message.claimedBy !== "user") await api(`/v1/messages/${message.id}/claim`, { method: "POST", body: { agentId: "user" } });
    await api(`/v1/messages/${message.id}/complete`, { method: "POST", body: { agentId: "user", result: { verdict } } });
    $("live").textContent = `Answered #${message.id}: ${verdict}`;
  } catch (error) {
    $("live").textContent = `Could not answer #${message.id}: ${error.message}`;
  }
  load($("waiting-list"), loadWaiting);
}

async function replyTo(message, body) {
  if (!body.trim()) return;
  try {
    await api("/v1/messages", { method: "POST", body: { from: "user", to: message.from, replyTo: message.id, body } });
    drafts.delete(message.id);
    if (!message.claimable) await api(`/v1/messages/${message.id}/read`, { method: "POST", body: { agentId: "user" } });
    $("live").textContent = `Replied to #${message.id}`;
  } catch (error) {
    $("live").textContent = `Could not reply: ${error.message}`;
  }
  load($("waiting-list"), loadWaiting);
}

async function markRead(message) {
  try {
    await api(`/v1/messages/${message.id}/read`, { method: "POST", body: { agentId: "user" } });
  } catch (error) {
    $("live").textContent = `Could not mark #${message.id} read: ${error.message}`;
  }
  load($("waiting-list"), loadWaiting);
}

async function pages(path, key = "id", param = "after", limit = 500) {
  const all = [];
  let cursor = null;
  for (;;) {
    const sep = path.includes("?") ? "&" : "?";
    const page = await api(`${path}${sep}limit=${limit}${cursor === null ? "" : `&${param}=${encodeURIComponent(cursor)}`}`);
    if (!page.length) return all;
    all.push(...page);
    cursor = page[page.length - 1][key];
  }
}

async function loadAgents() {
  const [agents, claimed] = await Promise.all([pages("/v1/agents"), api("/v1/messages?state=claimed&limit=500")]);
  state.agents = agents;
  const held = new Map();
  for (const m of claimed) held.set(m.claimedBy, [...(held.get(m.claimedBy) || []), m.id]);
  const body = $("agents-table").tBodies[0];
  const own = agents.filter((a) => a.id !== "user" && a.id !== "system");
  if (!own.length) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: 6, class: "empty" }, "No agents yet: register one with agent-relay agent add ID")));
  } else {
    body.replaceChildren(...agents.map((a) => el("tr", { dataset: { agent: a.id } },
      el("td", {}, el("strong", {}, a.id), a.name && a.name !== a.id ? el("div", { class: "muted" }, a.name) : null),
      el("td", {}, a.kind),
      el("td", {}, el("span", { class: `status ${a.status}` }, a.status)),
      el("td", {}, a.label ? el("span", { class: "tag" }, `label:${a.label}`) : null, ...a.tags.map((t) => el("span", { class: "tag" }, t))),
      el("td", {}, when(a.lastSeen)),
      el("td", {}, (held.get(a.id) || []).map((id) => `#${id}`).join(" ")))));
  }
  const targets = ["broadcast", ...agents.map((a) => a.id), ...new Set(agents.filter((a) => a.label).map((a) => `label:${a.label}`))];
  $("targets").replaceChildren(...targets.map((t) => el("option", { value: t })));
}

// The feed opens on the newest messages: the list is oldest first, so find the newest id with
// one-row probes, then read the last page.
async function newestMessageId() {
  const first = await api("/v1/messages?limit=1");
  if (!first.length) return 0;
  let low = first[0].id; // a message exists with this id
  let step = 1;
  let high = null;
  while (high === null) {
    const probe = await api(`/v1/messages?since=${low + step - 1}&limit=1`);
    if (probe.length) { low = probe[0].id; step *= 2; } else high = low + step - 1;
  }
  // invariant: a message with id `low` exists; none after `high`
  while (low < high) {
    const mid = Math.floor((low + high + 1) / 2);
    const probe = await api(`/v1/messages?since=${mid - 1}&limit=1`);
    if (probe.length) low = probe[0].id; else high = mid - 1;
  }
  return low;
}

const FEED_SIZE = 50;

async function loadFeed() {
  const list = $("feed-list");
  try {
    const newest = await newestMessageId();
    const recent = newest ? await api(`/v1/messages?since=${Math.max(0, newest - FEED_SIZE)}&limit=${FEED_SIZE}`) : [];
    state.feedIds.clear();
    list.replaceChildren();
    for (const m of recent) addToFeed(m);
    if (!recent.length) list.replaceChildren(el("li", { class: "empty" }, "No messages yet: send one below, or with agent-relay send."));
    state.lastEventId = newest || null;
  } catch (error) {
    list.replaceChildren(el("li", { class: "error" }, `Could not load: ${error.message}`));
  }
}

function addToFeed(message) {
  if (state.feedIds.has(message.id)) return;
  state.feedIds.add(message.id);
  const list = $("feed-list");
  const empty = list.querySelector(".empty");
  if (empty) empty.remove();
  list.prepend(messageLine(message));
  while (list.children.length > 200) {
    state.feedIds.delete(Number(list.lastElementChild.dataset.id));
    list.lastElementChild.remove();
  }
}

async function showThread(threadId) {
  const section = $("thread");
  section.hidden = false;
  $("thread-id").textContent = `#${threadId}`;
  load($("thread-list"), async () => {
    const thread = await api(`/v1/threads/${threadId}`);
    const messages = Array.isArray(thread) ? thread : thread.messages || [];
    fill($("thread-list"), messages, (m) => messageLine(m), "Nothing in this thread you may read.");
  });
  section.scrollIntoView({ block: "nearest" });
  $("thread-close").focus();
}

const JOB_STATES = [
  ["open", "Open", "No open jobs: send a message with “as a job” ticked."],
  ["scheduled", "Scheduled", "No job waits for a time (a job sent with delayMs or runAt, or one backing off after a failed attempt)."],
  ["blocked", "Waiting", "No job waits for another."],
  ["claimed", "Claimed", "Nobody holds a job right now."],
  ["completed", "Completed", "No job completed yet."],
  ["dead", "Dead-lettered", "No dead letters."],
  ["cancelled", "Cancelled", "No job cancelled."],
];

// A scheduled job turns open at its time with no write to tell the stream: look again then.
let nextDue = null;

async function loadJobs() {
  const lists = await Promise.all(JOB_STATES.map(([s]) => api(`/v1/messages?state=${s}&limit=100`)));
  clearTimeout(nextDue);
  const due = lists[JOB_STATES.findIndex(([s]) => s === "scheduled")].map((m) => m.notBefore).filter(Boolean);
  if (due.length) nextDue = setTimeout(() => loadJobs().catch(() => {}), Math.min(Math.max(Math.min(...due) - Date.now() + 100, 100), 3600000));
  $("jobs-columns").replaceChildren(...JOB_STATES.map(([s, title, empty], i) => {
    const items = lists[i].slice().reverse();
    const ul = el("ul", { class: "items", id: `jobs-${s}` });
    fill(ul, items, (m) => {
      const actions = [];
      if (s === "claimed") actions.push(el("span", { class: "holder" }, "held by ", el("strong", {}, m.claimedBy), ", lease ends ", when(m.claimExpiresAt)));
      if (s === "completed") actions.push(el("span", {}, "by ", el("strong", {}, m.completedBy || "?"), " ", when(m.completedAt), m.result && Object.keys(m.result).length ? ` result ${JSON.stringify(m.result)}` : ""));
      if (s === "scheduled") actions.push(el("span", {}, "due ", when(m.notBefore)));
      if (s === "blocked") actions.push(el("span", {}, "waits for ", (m.blockedBy || []).map((id) => `#${id}`).join(", ")));
      if (s === "cancelled") actions.push(el("span", {}, "by ", el("strong", {}, m.cancelledBy || "?"), " ", when(m.cancelledAt), m.cancelReason ? `: ${m.cancelReason}` : ""));
      if (s === "dead") actions.push(el("button", { type: "button", on: { click: () => retry(m) } }, "Retry"));
      if (s === "open" || s === "scheduled" || s === "blocked" || s === "claimed") actions.push(el("button", { type: "button", class: "cancel", on: { click: () => cancel(m) } }, "Cancel"));
      actions.push(el("span", { class: "muted" }, `attempts ${m.attempts}`));
      return messageLine(m, { actions });
    }, empty);
    return el("div", { class: "column" }, el("h3", {}, `${title} (${lists[i].length === 100 ? "100+" : lists[i].length})`), ul);
  }));
}

// Cancel asks for a reason first (a form of its own, outside the job lists that reloads redraw);
// a refusal (the job completed meanwhile: 409) is shown beside it, with the relay's words.
let cancelling = null;

function cancel(message) {
  cancelling = message.id;
  $("cancel-id").textContent = `#${message.id}`;
  $("cancel-error").textContent = "";
  $("cancel-form").hidden = false;
  $("cancel-reason").focus();
  $("cancel-reason").select();
}

async function confirmCancel(event) {
  event.preventDefault();
  const id = cancelling;
  if (id === null) return;
  try {
    await api(`/v1/messages/${id}/cancel`, { method: "POST", body: { reason: $("cancel-reason").value.trim() || "cancelled on the dashboard" } });
    $("cancel-form").hidden = true;
    cancelling = null;
  } catch (error) {
    $("cancel-error").textContent = `The relay refused to cancel #${id}: ${error.message}`;
  }
  load($("jobs-columns"), loadJobs);
}

function keepJob() {
  $("cancel-form").hidden = true;
  $("cancel-error").textContent = "";
  cancelling = null;
}

async function retry(message) {
  try {
    await api(`/v1/messages/${message.id}/retry`, { method: "POST", body: {} });
  } catch (error) {
    $("live").textContent = `Could not retry #${message.id}: ${error.message}`;
  }
  load($("jobs-columns"), loadJobs);
}

async function loadTasks() {
  const tasks = await api("/v1/tasks?limit=100");
  fill($("tasks-list"), tasks, (t) => {
    const events = el("ul", { class: "items sub" });
    const show = el("button", { type: "button", class: "link", on: { click: () => load(events, async () => {
      const list = await api(`/v1/tasks/${t.id}/events`);
      fill(events, list, (e) => el("li", {}, el("span", { class: "tag" }, e.kind || e.type || "event"), " ", when(e.createdAt), " ", e.summary || e.title || ""), "No events.");
    }) } }, "events");
    return el("li", {},
      el("div", { class: "line" }, el("strong", {}, t.title || t.externalId || `task ${t.id}`),
        el("span", { class: `tag ${t.status}` }, t.status), t.severity ? el("span", { class: `tag sev-${t.severity}` }, t.severity) : null,
        el("span", { class: "muted" }, t.source || ""), when(t.updatedAt || t.createdAt)),
      el("div", { class: "actions" }, show), events);
  }, "No tasks: they open when an integration posts to /v1/integrations/SOURCE/events.");
}

function targetText(target) {
  if (!target) return "?";
  if (target.type === "agent") return target.id;
  if (target.type === "broadcast") return "broadcast";
  return `${target.type}:${target.id}`;
}

function bindingLine(b) {
  return el("li", { class: "line" }, el("span", {}, b.conversationId ? `conversation ${b.conversationId}` : "default"),
    " → ", el("strong", {}, targetText(b.target)), el("span", { class: "tag" }, b.mode), b.priority ? el("span", { class: "muted" }, `priority ${b.priority}`) : null);
}

async function loadChannels() {
  const [channels, bindings] = await Promise.all([api("/v1/channels"), api("/v1/bindings")]);
  fill($("channels-list"), channels, (c) => {
    const own = bindings.filter((b) => b.channelId === c.id);
    const routes = el("ul", { class: "items sub" });
    const conversation = el("input", { "aria-label": `Conversation on ${c.id}`, placeholder: "conversation id" });
    const lookUp = el("form", { class: "reply", on: { submit: (event) => {
      event.preventDefault();
      load(routes, async () => {
        const answer = await api(`/v1/channels/${encodeURIComponent(c.id)}/route?conversationId=${encodeURIComponent(conversation.value.trim())}`);
        shown.delete(routes);
        fill(routes, answer.bindings, bindingLine, "No route: an inbound message here would be refused (409).");
        routes.prepend(el("li", { class: "muted" }, `resolves by its ${answer.source} bindings:`));
      });
    } } }, conversation, el("button", { type: "submit" }, "Route"));
    return el("li", {}, el("div", { class: "line" }, el("strong", {}, c.id), el("span", { class: `status ${c.status || ""}` }, c.status || ""),
      el("span", { class: "muted" }, c.direction || ""), when(c.lastSeen)),
      el("ul", { class: "items sub" }, own.length ? own.map(bindingLine) : el("li", { class: "empty" }, "No bindings: PUT /v1/channels/ID/bindings routes a conversation.")),
      el("div", { class: "actions" }, lookUp), routes);
  }, "No channels: register a channel agent (id PROVIDER:ACCOUNT) to see it here.");
}

async function loadOrchestrators() {
  const [orchestrators, spawns] = await Promise.all([api("/v1/orchestrators"), api("/v1/messages?kind=spawn&limit=50")]);
  const items = [...orchestrators.map((o) => ({ o })), ...spawns.slice().reverse().map((m) => ({ m }))];
  fill($("orchestrators-list"), items, ({ o, m }) => {
    if (m) return messageLine(m);
    const managed = o.managedAgents || o.agents || [];
    return el("li", {}, el("div", { class: "line" }, el("strong", {}, o.id), el("span", { class: `status ${o.status}` }, o.status || ""), when(o.lastSeen)),
      el("div", { class: "muted" }, `${managed.length} managed: `, managed.map((a) => a.id || a.agentId || a).join(", ")));
  }, "No orchestrators: one registers with POST /v1/orchestrators.");
}

async function loadActivity() {
  const activity = await api("/v1/activity?limit=50");
  fill($("activity-list"), activity, (a) => el("li", {}, el("div", { class: "line" },
    el("strong", {}, a.operatorId), " ", a.action, a.subject ? el("span", { class: "subject" }, a.subject) : null, when(a.createdAt))),
  "No activity recorded: operators record it with POST /v1/activity.");
}

async function loadHealth() {
  const response = await fetch("/v1/health", { headers: { Authorization: `Bearer ${state.token}` } });
  const health = await response.json();
  $("health-list").replaceChildren(
    el("li", {}, el("span", { class: `status ${health.status}` }, health.status), ` version ${health.version} `, when(health.generatedAt)),
    ...health.checks.map((c) => el("li", {}, el("span", { class: `status ${c.status}` }, c.status), " ", el("strong", {}, c.name), ": ", c.detail)));
}

// ---- the operator event stream: fetch + a server-sent-events parser ---------------------------

// The views are read again after a change, at most once a second however busy the relay is.
let reloadPending = false;
let lastReload = 0;
function reloadSoon() {
  if (reloadPending) return;
  reloadPending = true;
  setTimeout(() => {
    reloadPending = false;
    lastReload = Date.now();
    loadOperatorViews();
  }, Math.max(150, 1000 - (Date.now() - lastReload)));
}

async function openStream() {
  let delay = 500;
  while (state.token && state.operator) {
    const abort = new AbortController();
    state.streamAbort = abort;
    try {
      const headers = { Authorization: `Bearer ${state.token}`, Accept: "text/event-stream" };
      if (state.lastEventId !== null) headers["Last-Event-ID"] = String(state.lastEventId);
      const response = await fetch("/v1/stream", { headers, signal: abort.signal, cache: "no-store" });
      if (response.status === 401) return signOut("The relay no longer accepts this token; sign in again.");
      if (!response.ok) throw new Error(`stream: ${response.status}`);
      $("live").textContent = "live";
      delay = 500;
      const reload = await readEvents(response.body, onEvent);
      if (reload) {
        state.lastEventId = null;
        await loadFeed();
        loadOperatorViews();
        continue;
      }
    } catch (error) {
      if (abort.signal.aborted) return;
    }
    if (!state.token) return;
    $("live").textContent = "reconnecting…";
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 10000);
  }
}

/** Reads events until the stream ends; true when the server said `reload`. */
async function readEvents(body, handle) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { type: "message", data: [], id: null };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return false;
    buffer += value;
    let newline;
    while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
      if (line === "") {
        if (event.data.length) {
          if (event.type === "reload") return true;
          handle(event.type, event.data.join("\n"), event.id);
        }
        event = { type: "message", data: [], id: null };
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") event.type = text;
      else if (field === "data") event.data.push(text);
      else if (field === "id") event.id = text;
    }
  }
}

function onEvent(type, data, id) {
  if (type === "message") {
    const message = JSON.parse(data);
    if (id) state.lastEventId = Number(id);
    addToFeed(message);
    reloadSoon();
  } else if (type === "change") {
    reloadSoon();
  }
}

// ---- an agent's own view --------------------------------------------------------------------

function loadAgentViews() {
  load($("inbox-list"), async () => {
    const inbox = await api(`/v1/agents/${encodeURIComponent(state.me)}/inbox?limit=500`);
    fill($("inbox-list"), inbox.slice().reverse(), (m) => messageLine(m), "Your inbox is empty: messages to you show here as they arrive.");
  });
  load($("claims-list"), async () => {
    const claims = await api(`/v1/messages?state=claimed&holder=${encodeURIComponent(state.me)}&limit=500`);
    fill($("claims-list"), claims, (m) => messageLine(m, { actions: [el("span", { class: "holder" }, "lease ends ", when(m.claimExpiresAt))] }), "You hold no claims.");
  });
}

/** Waits on the inbox (`wait=`) and reloads the agent's views when something arrives. */
async function followInbox() {
  let since = 0;
  while (state.token && !state.operator) {
    try {
      const fresh = await api(`/v1/agents/${encodeURIComponent(state.me)}/inbox?since=${since}&limit=500&wait=25`);
      $("live").textContent = "live";
      if (fresh.length) {
        since = fresh[fresh.length - 1].id;
        loadAgentViews();
      }
    } catch (error) {
      if (error.status === 401) return signOut("The relay no longer accepts this token; sign in again.");
      $("live").textContent = "reconnecting…";
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
}

// ---- sending ---------------------------------------------------------------------------------

async function send(event) {
  event.preventDefault();
  const status = $("send-status");
  const message = { from: state.me, to: $("send-to").value.trim(), body: $("send-body").value };
  const subject = $("send-subject").value.trim();
  if (subject) message.subject = subject;
  if ($("send-claimable").checked) message.claimable = true;
  status.textContent = "sending…";
  try {
    const sent = await api("/v1/messages", { method: "POST", body: message });
    status.textContent = `sent #${sent.message.id} to ${sent.recipients.length} recipient(s)`;
    $("send-body").value = "";
    if (!state.operator) loadAgentViews();
  } catch (error) {
    status.textContent = `not sent: ${error.message}`;
  }
}

// ---- start -----------------------------------------------------------------------------------

$("sign-in-form").addEventListener("submit", (event) => {
  event.preventDefault();
  signIn($("token").value.trim());
  $("token").value = "";
});
$("sign-out").addEventListener("click", () => signOut());
$("send-form").addEventListener("submit", send);
$("cancel-form").addEventListener("submit", confirmCancel);
$("cancel-keep").addEventListener("click", keepJob);
$("thread-close").addEventListener("click", () => { $("thread").hidden = true; });
setInterval(tick, 1000);
const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) signIn(saved);
else $("token").focus();
