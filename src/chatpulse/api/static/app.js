// chatpulse dashboard: plain JS over the REST API and the live SSE stream (no build step).
"use strict";

const API = "/api/v1";
const state = { windows: ["1m", "10m", "1h"], lbWindow: "10m", channel: null, source: null,
  chart: null, xs: [], ys: [], spikes: new Map(), history: null, search: null };
const $ = (id) => document.getElementById(id);
const fmt = new Intl.NumberFormat();

async function getJSON(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (!response.ok) {
    // problem documents (RFC 9457) say what was wrong in "detail"
    const problem = await response.json().catch(() => ({}));
    const error = new Error(problem.detail || `${path}: ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return response.json();
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}

function setStatus(on, text) {
  $("status-dot").classList.toggle("on", on);
  $("status-text").textContent = text;
}

function timeOf(iso) {
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

// ---- leaderboard and channel list ----
function renderWindowTabs() {
  const tabs = $("lb-windows");
  tabs.replaceChildren(...state.windows.map((w) => {
    const button = el("button", { type: "button", textContent: w });
    button.setAttribute("role", "tab");
    button.setAttribute("aria-selected", String(w === state.lbWindow));
    button.addEventListener("click", () => { state.lbWindow = w; renderWindowTabs(); refreshLeaderboard(); });
    return button;
  }));
}

async function refreshLeaderboard() {
  const board = await getJSON(`${API}/leaderboard?window=${state.lbWindow}&limit=10`);
  const rows = board.items.map((item, i) => {
    const row = el("tr", {},
      el("td", { textContent: String(i + 1) }),
      el("td", { textContent: item.channel }),
      el("td", { className: "num", textContent: fmt.format(item.messages) }),
      el("td", { className: "num", textContent: fmt.format(item.unique_chatters) }));
    row.dataset.channel = item.channel;
    row.classList.toggle("selected", item.channel === state.channel);
    row.addEventListener("click", () => selectChannel(item.channel));
    return row;
  });
  $("leaderboard").tBodies[0].replaceChildren(...rows);
  $("lb-empty").hidden = rows.length > 0;
  $("lb-window-start").textContent = board.window_start
    ? `${board.window} window from ${timeOf(board.window_start)}` : "no window yet";
  if (!state.channel && board.items.length) selectChannel(board.items[0].channel);
}

async function refreshChannels() {
  const page = await getJSON(`${API}/channels?limit=100`);
  $("channels").replaceChildren(...page.items.map((item) => {
    const button = el("button", { type: "button", textContent: item.channel,
      className: item.tracked ? "tracked" : "" });
    button.addEventListener("click", () => selectChannel(item.channel));
    return el("li", {}, button);
  }));
  if (!state.channel && page.items.length) selectChannel(page.items[0].channel);
}

// ---- the selected channel ----
function makeChart() {
  const target = $("chart");
  const opts = {
    width: target.clientWidth || 600, height: 240,
    scales: { x: { time: true } },
    axes: [{ stroke: "#8b93a7", grid: { stroke: "#262b38" } },
      { stroke: "#8b93a7", grid: { stroke: "#262b38" } }],
    series: [{}, { label: "messages / min", stroke: "#9b6bff", width: 2,
      fill: "rgba(155,107,255,0.15)", points: { show: false } },
    // a chat spike: a red point on its minute, nothing elsewhere
    { label: "spike", stroke: "#ff5c5c", width: 0, paths: () => null,
      points: { show: true, size: 10, stroke: "#ff5c5c", fill: "#ff5c5c" } }],
    legend: { show: true },
  };
  state.chart = new uPlot(opts, chartData(), target);
  new ResizeObserver(() => state.chart.setSize({ width: target.clientWidth, height: 240 }))
    .observe(target);
}

// the chart's series: minutes, messages, and the messages again where a minute spiked
function chartData() {
  return [state.xs, state.ys, state.xs.map((x, i) => (state.spikes.has(x) ? state.ys[i] : null))];
}

function spikeItem(spike) {
  const times = spike.baseline_median > 0
    ? `${(spike.messages / spike.baseline_median).toFixed(1)}× the usual ${fmt.format(spike.baseline_median)}`
    : "from a silent chat";
  return el("li", {}, el("time", { textContent: timeOf(spike.window_start), dateTime: spike.window_start }),
    el("span", { className: "count", textContent: `${fmt.format(spike.messages)} messages` }),
    el("span", { className: "muted small", textContent: ` ${times}` }));
}

function renderSpikes() {
  const newest = [...state.spikes.values()].sort((a, b) => b.x - a.x).slice(0, 10);
  $("spikes").replaceChildren(...newest.map((s) => spikeItem(s.spike)));
  $("spikes-empty").hidden = newest.length > 0;
  state.chart.setData(chartData());
}

function addSpike(spike) {
  const x = Date.parse(spike.window_start) / 1000;
  state.spikes.set(x, { x, spike });
  renderSpikes();
}

async function loadSpikes() {
  const page = await getJSON(`${API}/channels/${state.channel}/spikes?limit=50`);
  state.spikes = new Map();
  for (const spike of page.items) {
    const x = Date.parse(spike.window_start) / 1000;
    state.spikes.set(x, { x, spike });
  }
  renderSpikes();
}

function showWindow(stats) {
  const x = Date.parse(stats.window_start) / 1000;
  const at = state.xs.indexOf(x);
  if (at >= 0) state.ys[at] = stats.messages;
  else if (!state.xs.length || x > state.xs[state.xs.length - 1]) {
    state.xs.push(x); state.ys.push(stats.messages);
    if (state.xs.length > 60) { state.xs.shift(); state.ys.shift(); }
  } else return;
  state.chart.setData(chartData());
  if (x === state.xs[state.xs.length - 1]) {
    $("live-messages").textContent = fmt.format(stats.messages);
    $("live-chatters").textContent = fmt.format(stats.unique_chatters);
    $("live-moderation").textContent = `${fmt.format(stats.deleted_messages || 0)} deleted · `
      + `${counted(stats.timeouts, "timeout")} · ${counted(stats.bans, "ban")}`;
    $("live-sessions").textContent = sessionsText(stats);
    $("emotes").replaceChildren(...stats.top_emotes.map((e) =>
      el("li", {}, e.name || e.id, el("span", { className: "count", textContent: fmt.format(e.count) }))));
    $("chatters").replaceChildren(...(stats.top_chatters || []).map((c) =>
      el("li", {}, nameButton(c.login, c.login),
        el("span", { className: "count", textContent: fmt.format(c.count) }))));
  }
}

// "4 started · 3 ended · mean 2m 5s · p90 4m 10s" (mean and p90 of the sessions that ended)
function sessionsText(stats) {
  const started = `${fmt.format(stats.sessions_started || 0)} started`;
  const ended = `${fmt.format(stats.sessions_ended || 0)} ended`;
  if (!stats.sessions_ended) return `${started} · ${ended}`;
  return `${started} · ${ended} · mean ${duration(stats.session_mean_s)} · p90 ${duration(stats.session_p90_s)}`;
}

// "1 timeout", "3 timeouts", "0 bans"
function counted(n, noun) {
  return `${fmt.format(n || 0)} ${noun}${n === 1 ? "" : "s"}`;
}

function duration(seconds) {
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

// ---- a user's history and search: pages of messages, "older" follows next_cursor ----
function nameButton(login, label) {
  const button = el("button", { type: "button", className: "who", textContent: label });
  button.dataset.login = login;
  button.addEventListener("click", () => openHistory(login));
  return button;
}

function messageItem(m, withName) {
  const parts = [el("time", { textContent: timeOf(m.sent_at), dateTime: m.sent_at })];
  if (withName) parts.push(nameButton(m.user_login, m.display_name || m.user_login));
  // a message a moderator deleted: struck through, as Twitch's moderators see it
  if (m.deleted) {
    return el("li", { className: "deleted", title: "deleted by a moderator" }, ...parts,
      el("s", { textContent: m.text }), el("span", { className: "tag", textContent: "deleted" }));
  }
  return el("li", {}, ...parts, m.text);
}

async function loadPage(view, list, more) {
  const query = new URLSearchParams(view.params);
  if (view.cursor) query.set("before", view.cursor);
  const page = await getJSON(`${view.path}?${query}`);
  if (view !== state[view.kind]) return page;  // replaced meanwhile
  list.append(...page.items.map((m) => messageItem(m, view.kind === "search")));
  view.cursor = page.next_cursor;
  more.hidden = !page.next_cursor;
  return page;
}

async function openHistory(login) {
  if (!state.channel) return;
  const view = { kind: "history", cursor: null, params: { limit: "50" },
    path: `${API}/channels/${state.channel}/users/${encodeURIComponent(login)}/messages` };
  state.history = view;
  $("history-title").textContent = `${login} in ${state.channel}`;
  $("history").replaceChildren();
  $("history-card").hidden = false;
  await loadPage(view, $("history"), $("history-more"));
  $("history-card").scrollIntoView({ block: "nearest" });
}

async function runSearch(q) {
  if (!state.channel) return;
  const view = { kind: "search", cursor: null, params: { q, limit: "50" },
    path: `${API}/channels/${state.channel}/messages` };
  state.search = view;
  $("search-results").replaceChildren();
  $("search-note").textContent = "searching…";
  try {
    await loadPage(view, $("search-results"), $("search-more"));
    const found = $("search-results").children.length;
    $("search-note").textContent = found ? `${found} found` : (view.cursor
      ? "nothing in the newest half hour of chat; look further back" : "nothing found");
  } catch (err) {
    $("search-note").textContent = err.message;
    $("search-more").hidden = true;
  }
}

async function refreshSummary() {
  if (!state.channel) return;
  const summary = await getJSON(`${API}/channels/${state.channel}`);
  $("total-messages").textContent = fmt.format(summary.total_messages);
  $("ch-last-seen").textContent = summary.last_seen ? `last message ${timeOf(summary.last_seen)}` : "";
}

async function refreshMessages() {
  if (!state.channel) return;
  const page = await getJSON(`${API}/channels/${state.channel}/messages?limit=30`);
  $("messages").replaceChildren(...page.items.map((m) => messageItem(m, true)));
}

async function loadHistory() {
  const stats = await getJSON(`${API}/channels/${state.channel}/stats?window=1m&limit=60`);
  const items = stats.items.slice().reverse();
  state.xs = items.map((s) => Date.parse(s.window_start) / 1000);
  state.ys = items.map((s) => s.messages);
  state.chart.setData(chartData());
  if (items.length) showWindow(items[items.length - 1]);
}

function openLive() {
  if (state.source) state.source.close();
  const source = new EventSource(`${API}/channels/${state.channel}/live?window=1m`);
  source.onopen = () => setStatus(true, `live · ${state.channel}`);
  source.onerror = () => setStatus(false, "reconnecting…");
  source.onmessage = (event) => showWindow(JSON.parse(event.data));
  source.addEventListener("spike", (event) => addSpike(JSON.parse(event.data)));
  state.source = source;
}

async function selectChannel(channel) {
  if (channel === state.channel) return;
  state.channel = channel;
  history.replaceState(null, "", `#channel=${channel}`);
  $("ch-title").textContent = channel;
  for (const id of ["live-messages", "live-chatters", "total-messages"]) $(id).textContent = "–";
  $("emotes").replaceChildren();
  $("chatters").replaceChildren();
  state.spikes = new Map();
  $("spikes").replaceChildren();
  $("history-card").hidden = true;
  state.history = null;
  state.search = null;
  $("search-results").replaceChildren();
  $("search-note").textContent = "";
  $("search-more").hidden = true;
  for (const row of $("leaderboard").tBodies[0].rows) {
    row.classList.toggle("selected", row.dataset.channel === channel);
  }
  openLive();
  await Promise.all([loadHistory(), refreshSummary(), refreshMessages()]);
  await loadSpikes();
}

function every(ms, task) {
  const run = () => task().catch((err) => console.warn(err.message));
  setInterval(run, ms);
}

async function main() {
  try {
    const spec = await getJSON("/openapi.json");
    const param = spec.paths[`${API}/leaderboard`].get.parameters.find((p) => p.name === "window");
    if (param && param.schema.enum) state.windows = param.schema.enum;
  } catch (err) { console.warn(err.message); }
  if (!state.windows.includes(state.lbWindow)) state.lbWindow = state.windows[0];
  renderWindowTabs();
  makeChart();
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    runSearch($("search-q").value).catch((err) => console.warn(err.message));
  });
  $("search-more").addEventListener("click", () => {
    if (state.search) loadPage(state.search, $("search-results"), $("search-more"))
      .catch((err) => { $("search-note").textContent = err.message; });
  });
  $("history-more").addEventListener("click", () => {
    if (state.history) loadPage(state.history, $("history"), $("history-more"))
      .catch((err) => console.warn(err.message));
  });
  $("history-close").addEventListener("click", () => {
    $("history-card").hidden = true;
    state.history = null;
  });
  const wanted = new URLSearchParams(location.hash.slice(1)).get("channel");
  if (wanted) await selectChannel(wanted).catch((err) => console.warn(err.message));
  await Promise.all([refreshLeaderboard(), refreshChannels()]).catch((err) => console.warn(err.message));
  every(5000, refreshLeaderboard);
  every(15000, refreshChannels);
  every(5000, refreshSummary);
  every(3000, refreshMessages);
}

main();
