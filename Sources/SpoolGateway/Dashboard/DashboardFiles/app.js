// Spool dashboard: a page over the public /v1 API and its event stream. Everything it shows
// comes from the API (so it is scriptable too). Data is only ever put into the page as text
// (textContent, never innerHTML): a payload holding <script> shows as those characters.
'use strict';

const STATES = ['waiting', 'pending', 'scheduled', 'processing', 'completed', 'failed', 'cancelled'];
const app = {
  session: null,          // GET /v1/session
  view: null,             // { refresh(): Promise }
  refreshing: false,
  refreshWanted: false,
  lastRefresh: 0,
  events: null,           // EventSource
  opened: 0,              // how many times the stream (re)opened
};

// ---- Small helpers -------------------------------------------------------------------

/** Makes an element: h('a', { href: '#/', class: 'x', onclick: f }, 'text', child, ...). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.className = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function svg(tag, attrs) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, String(value));
  return el;
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

/** Calls the API; changes carry the session's CSRF token. */
async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && app.session && app.session.csrf_token) headers['X-CSRF-Token'] = app.session.csrf_token;
  const response = await fetch(path, {
    method, headers, credentials: 'same-origin', body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (response.status === 401 && path !== '/v1/session') { showLogin('Your session ended: log in again.'); }
  if (!response.ok) throw new ApiError(response.status, (data && (data.detail || data.title)) || response.statusText);
  return data;
}

const isAdmin = () => !!app.session && app.session.scopes.includes('admin');
const canEnqueue = () => isAdmin() || (!!app.session && app.session.scopes.includes('enqueue'));

function pretty(value) {
  if (value === undefined || value === null) return 'null';
  return JSON.stringify(value, null, 2);
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return '–';
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 86400) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}

function when(iso) {
  if (!iso) return '–';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

const stateBadge = (state) => h('span', { class: `state ${state}` }, state);
const params = () => new URLSearchParams((location.hash.split('?')[1]) || '');

function flash(message, isError) {
  const banner = document.getElementById('banner');
  banner.textContent = message;
  banner.hidden = false;
  banner.style.background = isError ? '' : 'var(--ok)';
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => { if (!app.storeDown) banner.hidden = true; }, 5000);
}

/** Runs an action from a button: disables it meanwhile, reports errors, refreshes the view. */
async function act(button, action) {
  button.disabled = true;
  try {
    await action();
  } catch (error) {
    flash(error.message, true);
  } finally {
    button.disabled = false;
    refreshSoon(true);
  }
}

// ---- Login and session -----------------------------------------------------------------

function showLogin(message) {
  stopEvents();
  app.session = null;
  app.stats = null;  // the next user must not see the last one's figures
  document.getElementById('logout').hidden = true;
  document.getElementById('who').textContent = '';
  const error = h('p', { class: 'error', role: 'alert' }, message || '');
  const input = h('input', { type: 'password', id: 'token', name: 'token', autocomplete: 'current-password', required: true, 'aria-label': 'API token' });
  const form = h('form', { class: 'panel login', onsubmit: async (event) => {
    event.preventDefault();
    try {
      app.session = await api('POST', '/v1/session', { token: input.value.trim() });
      input.value = '';
      start();
    } catch (e) {
      error.textContent = e.status === 401 ? 'That token is not valid.' : e.message;
    }
  } },
    h('h1', {}, 'Log in'),
    h('label', { for: 'token' }, 'API token'),
    input,
    h('button', { class: 'primary', type: 'submit', id: 'login' }, 'Log in'),
    error);
  const main = document.getElementById('main');
  main.replaceChildren(form);
  input.focus();
}

async function logout() {
  try { await api('DELETE', '/v1/session'); } catch (e) { /* the cookie is cleared anyway */ }
  showLogin('Logged out.');
}

async function boot() {
  applyTheme(localStorage.getItem('spool-theme'));
  document.getElementById('theme').addEventListener('click', () => {
    const dark = document.documentElement.dataset.theme === 'dark'
      || (!document.documentElement.dataset.theme && matchMedia('(prefers-color-scheme: dark)').matches);
    const next = dark ? 'light' : 'dark';
    localStorage.setItem('spool-theme', next);
    applyTheme(next);
  });
  document.getElementById('logout').addEventListener('click', logout);
  window.addEventListener('hashchange', render);
  try {
    app.session = await api('GET', '/v1/session');
  } catch (e) {
    showLogin(e.status === 401 ? '' : e.message);
    return;
  }
  start();
}

function applyTheme(theme) {
  if (theme === 'light' || theme === 'dark') document.documentElement.dataset.theme = theme;
}

function start() {
  // Figures that change without an event (the charts, ages, the registry) are read again every 10 s.
  clearInterval(app.tick);
  app.tick = setInterval(() => refreshSoon(false), 10000);
  const who = document.getElementById('who');
  who.textContent = app.session.auth === 'none' ? 'local (no tokens)' : `${app.session.name} · ${app.session.tenant}`;
  document.getElementById('logout').hidden = app.session.auth !== 'session';
  startEvents();
  watchHealth();
  render();
}

// ---- Live updates ----------------------------------------------------------------------

function setLive(text, on) {
  const live = document.getElementById('live');
  live.textContent = text;
  live.className = `live ${on ? 'on' : 'off'}`;
}

/** The event feed. EventSource resumes with Last-Event-ID by itself after a drop. */
function startEvents() {
  stopEvents();
  // The summary stream: at most one message a second saying what changed (the page reads its
  // data again then), however many thousands of events a second flow.
  const source = new EventSource('/v1/events/summary');
  app.events = source;
  source.addEventListener('open', () => {
    app.opened += 1;
    setLive(app.opened > 1 ? 'live (reconnected)' : 'live', true);
    // What happened while the stream was down is read from the API, not replayed.
    if (app.opened > 1) refreshSoon(true);
  });
  source.addEventListener('error', () => {
    setLive('reconnecting…', false);
    // A closed stream (401 after a session ended) does not come back by itself.
    if (source.readyState === EventSource.CLOSED) setTimeout(() => { if (app.events === source && app.session) startEvents(); }, 3000);
  });
  source.addEventListener('summary', () => {
    // (Counted on the page, so that a test can tell the stream from the 10-second re-read.)
    document.body.dataset.summaries = String(Number(document.body.dataset.summaries || 0) + 1);
    refreshSoon(false);
  });
}

function stopEvents() {
  if (app.events) app.events.close();
  app.events = null;
}

/**
 * Asks the current view to refresh. Events arrive by the thousand: refreshes are coalesced to
 * at most one a second, or the view's own `every` (an action the user took refreshes at once).
 */
function refreshSoon(now) {
  app.refreshWanted = true;
  if (now) app.urgent = true;
  if (app.refreshing) return;
  const every = (app.view && app.view.every) || 1000;
  const wait = now ? 0 : Math.max(0, every - (Date.now() - app.lastRefresh));
  clearTimeout(app.refreshTimer);
  app.refreshTimer = setTimeout(runRefresh, wait);
}

async function runRefresh() {
  if (!app.view || !app.refreshWanted) return;
  app.refreshWanted = false;
  app.urgent = false;
  app.refreshing = true;
  app.lastRefresh = Date.now();
  try { await app.view.refresh(); } catch (e) { /* shown by the view */ }
  app.refreshing = false;
  // An action the user took during that refresh is shown at once, not after the interval.
  if (app.refreshWanted) refreshSoon(app.urgent);
}

/** A banner while the store (or the gateway) cannot be reached. */
function watchHealth() {
  clearInterval(app.healthTimer);
  const check = async () => {
    let ok = false;
    try { ok = (await fetch('/readyz', { credentials: 'same-origin' })).ok; } catch (e) { ok = false; }
    const banner = document.getElementById('banner');
    if (!ok) {
      app.storeDown = true;
      banner.textContent = 'The store is unreachable: figures may be stale.';
      banner.style.background = '';
      banner.hidden = false;
    } else if (app.storeDown) {
      app.storeDown = false;
      banner.hidden = true;
    }
  };
  check();
  app.healthTimer = setInterval(check, 5000);
}

// ---- Router ----------------------------------------------------------------------------

function render() {
  if (!app.session) return;
  const path = location.hash.replace(/^#/, '').split('?')[0] || '/';
  for (const link of document.querySelectorAll('#nav a')) {
    const target = link.getAttribute('href').slice(1);
    link.classList.toggle('current', target === '/' ? path === '/' : path.startsWith(target));
  }
  let view;
  if (path === '/') view = overviewView();
  else if (path === '/queues') view = queuesView();
  else if (path === '/jobs') view = jobsView();
  else if (path.startsWith('/jobs/')) view = jobView(decodeURIComponent(path.slice(6)));
  else if (path === '/dead') view = deadView();
  else if (path === '/workers') view = workersView();
  else if (path === '/topics') view = topicsView();
  else view = { el: h('p', {}, 'No such page. ', h('a', { href: '#/' }, 'Overview')), refresh: async () => {} };
  app.view = view;
  const main = document.getElementById('main');
  main.replaceChildren(view.el);
  app.refreshWanted = true;
  runRefresh();
}

/** A view whose body is rebuilt by `load()` on every refresh; errors show in place. */
function simpleView(title, load) {
  const body = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const el = h('section', {}, h('h1', {}, title), body);
  return {
    el,
    refresh: async () => {
      try {
        body.replaceChildren(...[await load()].flat());
      } catch (e) {
        if (e.status !== 401) body.replaceChildren(h('p', { class: 'error' }, e.message));
      }
    },
  };
}

// ---- Overview --------------------------------------------------------------------------

function overviewView() {
  return simpleView('Overview', async () => {
    const [hour, day] = await Promise.all([hourlyStats(), dailyStats()]);
    const { queues } = await api('GET', '/v1/queues');
    const totals = Object.fromEntries(STATES.map((s) => [s, 0]));
    for (const q of queues) for (const s of STATES) totals[s] += q.counts[s] || 0;
    const cards = h('div', { class: 'cards' }, STATES.map((s) => h('a', { class: 'card', href: `#/jobs?state=${s}` },
      h('div', { class: 'n', id: `count-${s}` }, totals[s].toLocaleString()), h('div', { class: 'l' }, s))));
    return [
      cards,
      h('div', { class: 'panel' }, h('h2', {}, 'Throughput, last hour (per minute)'), throughputChart(hour.buckets, 'hour'),
        h('h2', {}, 'Latency, last hour (ms, log scale)'), latencyChart(hour.buckets)),
      h('div', { class: 'panel' }, h('h2', {}, 'Throughput, last day (per 15 minutes)'), throughputChart(day.buckets, 'day'),
        h('h2', {}, 'Latency, last day (ms, log scale)'), latencyChart(day.buckets)),
      h('h2', {}, 'Queues'),
      queueTable(queues, false, hour.queues),
    ];
  });
}

/** The figures change by the minute: each window is read every 10 s at most, however busy the stream. */
async function cachedStats(window) {
  app.stats = app.stats || {};
  const cached = app.stats[window];
  if (cached && Date.now() - cached.at < 10000) return cached.value;
  const value = await api('GET', `/v1/stats?window=${window}`);
  app.stats[window] = { at: Date.now(), value };
  return value;
}
const hourlyStats = () => cachedStats('hour');
const dailyStats = () => cachedStats('day');

/** Completed (green) and failed (red) bars, one per bucket. */
function throughputChart(buckets, id) {
  const width = 600, height = 120, step = width / buckets.length;
  const max = Math.max(1, ...buckets.map((b) => b.completed + b.failed));
  const chart = svg('svg', { class: 'chart', id: `throughput-${id}`, viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: 'none',
    role: 'img', 'aria-label': `jobs completed and failed per bucket, most ${max}` });
  chart.append(svg('line', { class: 'axis', x1: 0, y1: height - 10, x2: width, y2: height - 10 }));
  buckets.forEach((b, i) => {
    const completed = (b.completed / max) * (height - 20), failed = (b.failed / max) * (height - 20);
    chart.append(svg('rect', { class: 'completed', x: i * step + 0.5, y: height - 10 - completed, width: Math.max(1, step - 1), height: completed }));
    chart.append(svg('rect', { class: 'failed', x: i * step + 0.5, y: height - 10 - completed - failed, width: Math.max(1, step - 1), height: failed }));
  });
  const label = svg('text', { x: 2, y: 10 });
  label.textContent = `max ${max.toLocaleString()}`;
  chart.append(label);
  const sum = (key) => buckets.reduce((n, b) => n + b[key], 0);
  return [chart, h('div', { class: 'legend' }, h('span', { class: 'ok' }, `■ completed ${sum('completed').toLocaleString()}`), ' · ',
    h('span', { class: 'bad' }, `■ failed ${sum('failed').toLocaleString()}`), ` · retried ${sum('retried').toLocaleString()}`)];
}

/** Wait and run time, p50 and p95, as lines on a log scale. */
function latencyChart(buckets) {
  const width = 600, height = 120;
  const series = [['wait_ms', 'p50', 'wait p50'], ['wait_ms', 'p95', 'wait p95'], ['run_ms', 'p50', 'run p50'], ['run_ms', 'p95', 'run p95']];
  const values = buckets.flatMap((b) => series.map(([k, p]) => b[k][p])).filter((v) => v !== undefined && v !== null);
  const chart = svg('svg', { class: 'chart', viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: 'none', role: 'img', 'aria-label': 'wait and run time percentiles' });
  if (!values.length) return h('p', { class: 'muted' }, 'No finished attempts in this window.');
  const top = Math.log10(Math.max(10, ...values) * 2);
  const y = (v) => height - 5 - (Math.log10(Math.max(1, v)) / top) * (height - 15);
  const step = width / buckets.length;
  series.forEach(([key, p], index) => {
    const points = buckets.map((b, i) => (b[key][p] === undefined || b[key][p] === null ? null : `${(i + 0.5) * step},${y(b[key][p])}`)).filter(Boolean);
    if (points.length) chart.append(svg('polyline', { class: `line line${index}`, points: points.join(' ') }));
  });
  const last = [...buckets].reverse().find((b) => b.run_ms.p50 !== undefined) || buckets[buckets.length - 1];
  const text = (v) => (v === undefined || v === null ? '–' : v >= 1000 ? `${v / 1000} s` : `${v} ms`);
  return [chart, h('div', { class: 'legend' }, series.map(([k, p, name], index) => h('span', { class: `series${index}` }, `■ ${name} ${text(last[k][p])}  `)),
    h('span', {}, '(latest bucket with data; a percentile is its histogram bucket\'s upper bound)'))];
}

// ---- Queues ----------------------------------------------------------------------------

/** `hourly`: each queue's completed and failed jobs over the last hour (GET /v1/stats). */
function queueTable(queues, withActions, hourly) {
  const rows = queues.map((q) => h('tr', { 'data-queue': q.name },
    h('td', {}, h('a', { href: `#/jobs?queue=${encodeURIComponent(q.name)}` }, q.name)),
    h('td', {}, q.paused ? h('span', { class: 'lost' }, 'paused') : 'running'),
    h('td', { class: 'num' }, q.counts.pending), h('td', { class: 'num' }, q.counts.scheduled),
    h('td', { class: 'num' }, q.running), h('td', { class: 'num' }, q.counts.failed),
    h('td', { class: 'num hide-narrow' }, q.counts.completed),
    h('td', { class: 'num' }, age(q.oldest_pending_age_seconds)),
    h('td', { class: 'num hide-narrow' }, hourly ? `${(hourly[q.name] || {}).completed || 0} / ${(hourly[q.name] || {}).failed || 0}` : '–'),
    h('td', { class: 'num hide-narrow' }, q.concurrency),
    h('td', { class: 'num hide-narrow' }, q.depth_limit === null || q.depth_limit === undefined ? '–' : q.depth_limit.toLocaleString()),
    withActions && isAdmin() ? h('td', {}, queueActions(q)) : null));
  return h('div', { class: 'scroll' }, h('table', {},
    h('thead', {}, h('tr', {}, h('th', {}, 'queue'), h('th', {}, 'status'), h('th', { class: 'num' }, 'pending'),
      h('th', { class: 'num' }, 'scheduled'), h('th', { class: 'num' }, 'running'), h('th', { class: 'num' }, 'failed'),
      h('th', { class: 'num hide-narrow' }, 'completed'), h('th', { class: 'num' }, 'oldest waiting'),
      h('th', { class: 'num hide-narrow', title: 'completed / failed in the last hour' }, 'last hour'),
      h('th', { class: 'num hide-narrow' }, 'concurrency'), h('th', { class: 'num hide-narrow' }, 'depth limit'),
      withActions && isAdmin() ? h('th', {}, 'actions') : null)),
    h('tbody', {}, rows)));
}

function queueActions(q) {
  const name = encodeURIComponent(q.name);
  const toggle = h('button', { type: 'button', class: 'pause', onclick: (e) => act(e.currentTarget,
    () => api('POST', `/v1/queues/${name}/${q.paused ? 'resume' : 'pause'}`)) }, q.paused ? 'Resume' : 'Pause');
  const retry = h('button', { type: 'button', disabled: !q.counts.failed, onclick: (e) => {
    if (confirm(`Retry all ${q.counts.failed} failed jobs of ${q.name}?`)) {
      act(e.currentTarget, async () => flash(`${(await api('POST', `/v1/queues/${name}/retry-failed`)).retried} jobs retried`));
    }
  } }, 'Retry failed');
  const waiting = q.counts.pending + q.counts.scheduled;
  const purge = h('button', { type: 'button', class: 'danger', disabled: !waiting, onclick: (e) => {
    if (confirm(`Delete all ${waiting} waiting jobs (pending and scheduled) of ${q.name}? This cannot be undone.`)) {
      act(e.currentTarget, async () => flash(`${(await api('POST', `/v1/queues/${name}/purge`)).purged} jobs deleted`));
    }
  } }, 'Purge');
  return h('div', { class: 'actions' }, toggle, retry, purge);
}

function queuesView() {
  return simpleView('Queues', async () => {
    const [{ queues }, hour] = await Promise.all([api('GET', '/v1/queues'), hourlyStats()]);
    return [queueTable(queues, true, hour.queues), isAdmin() ? null : h('p', { class: 'muted' }, 'Queue control needs an admin token.')];
  });
}

// ---- Jobs ------------------------------------------------------------------------------

function jobsView() {
  const query = params();
  const filters = { queue: query.get('queue') || '', state: query.get('state') || '', kind: query.get('kind') || '',
    tag: query.get('tag') || '', idempotency_key: query.get('idempotency_key') || '', tenant: query.get('tenant') || '' };
  const cursors = [null];      // the cursor of each page seen, for "previous"
  let page = 0;
  const selected = new Set();
  const body = h('div', {});
  const field = (name, label, input) => h('label', {}, label, input);
  const queueInput = h('input', { name: 'queue', value: filters.queue, placeholder: 'any', size: 12 });
  const stateSelect = h('select', { name: 'state' }, h('option', { value: '' }, 'any'),
    STATES.map((s) => h('option', { value: s, selected: filters.state === s }, s)));
  const kindInput = h('input', { name: 'kind', value: filters.kind, placeholder: 'any', size: 14 });
  const tagInput = h('input', { name: 'tag', value: filters.tag, placeholder: 'any', size: 10 });
  const keyInput = h('input', { name: 'idempotency_key', value: filters.idempotency_key, placeholder: 'any', size: 14 });
  const tenantInput = isAdmin() ? h('input', { name: 'tenant', value: filters.tenant, placeholder: 'any', size: 10 }) : null;
  const search = h('input', { name: 'id', placeholder: 'job id', size: 38, 'aria-label': 'Go to a job by id' });
  const form = h('form', { class: 'filters', onsubmit: (event) => {
    event.preventDefault();
    const q = new URLSearchParams();
    for (const [key, input] of [['queue', queueInput], ['state', stateSelect], ['kind', kindInput], ['tag', tagInput],
      ['idempotency_key', keyInput], ['tenant', tenantInput]]) {
      if (input && input.value.trim()) q.set(key, input.value.trim());
    }
    location.hash = `#/jobs${q.toString() ? `?${q}` : ''}`;
  } },
    field('queue', 'Queue', queueInput), field('state', 'State', stateSelect), field('kind', 'Kind', kindInput),
    field('tag', 'Tag', tagInput), field('idempotency_key', 'Idempotency key', keyInput),
    tenantInput ? field('tenant', 'Tenant', tenantInput) : null,
    h('button', { type: 'submit' }, 'Filter'));
  const goto = h('form', { class: 'filters', onsubmit: (event) => {
    event.preventDefault();
    if (search.value.trim()) location.hash = `#/jobs/${encodeURIComponent(search.value.trim())}`;
  } }, field('id', 'Find a job', search), h('button', { type: 'submit' }, 'Open'));

  const bulk = (label, path, method, allowed) => h('button', { type: 'button', disabled: !allowed, class: method === 'DELETE' ? 'danger' : null,
    onclick: (e) => {
      if (!selected.size) return;
      if (method === 'DELETE' && !confirm(`Delete ${selected.size} jobs?`)) return;
      act(e.currentTarget, async () => {
        const results = await Promise.allSettled([...selected].map((id) => api(method, path(id))));
        const failed = results.filter((r) => r.status === 'rejected');
        selected.clear();
        flash(`${label}: ${results.length - failed.length} done${failed.length ? `, ${failed.length} refused (${failed[0].reason.message})` : ''}`, failed.length > 0);
      });
    } }, label);
  const bulkBar = h('div', { class: 'actions' },
    bulk('Retry selected', (id) => `/v1/jobs/${id}/retry`, 'POST', canEnqueue()),
    bulk('Cancel selected', (id) => `/v1/jobs/${id}/cancel`, 'POST', canEnqueue()),
    bulk('Delete selected', (id) => `/v1/jobs/${id}`, 'DELETE', canEnqueue()));

  const load = async () => {
    const q = new URLSearchParams({ limit: '50' });
    for (const [key, value] of Object.entries(filters)) if (value) q.set(key, value);
    if (cursors[page]) q.set('cursor', cursors[page]);
    const result = await api('GET', `/v1/jobs?${q}`);
    cursors[page + 1] = result.next_cursor || null;
    const rows = result.jobs.map((job) => h('tr', { 'data-job': job.id },
      h('td', {}, h('input', { type: 'checkbox', 'aria-label': `select ${job.id}`, checked: selected.has(job.id),
        onchange: (e) => { if (e.target.checked) selected.add(job.id); else selected.delete(job.id); } })),
      h('td', { class: 'mono' }, h('a', { href: `#/jobs/${job.id}` }, job.id)),
      h('td', {}, stateBadge(job.state)),
      h('td', {}, job.queue), h('td', {}, job.kind),
      h('td', { class: 'num' }, `${job.attempt}/${job.max_attempts}`),
      h('td', { class: 'hide-narrow' }, job.progress ? progressBar(job.progress.percent) : ''),
      h('td', { class: 'hide-narrow' }, when(job.created_at))));
    const previous = h('button', { type: 'button', id: 'newer', disabled: page === 0, onclick: () => { page -= 1; refreshSoon(true); } }, '← Newer');
    const next = h('button', { type: 'button', id: 'older', disabled: !result.next_cursor, onclick: () => { page += 1; refreshSoon(true); } }, 'Older →');
    body.replaceChildren(
      rows.length ? h('div', { class: 'scroll' }, h('table', { id: 'jobs' },
        h('thead', {}, h('tr', {}, h('th', {}, ''), h('th', {}, 'id'), h('th', {}, 'state'), h('th', {}, 'queue'), h('th', {}, 'kind'),
          h('th', { class: 'num' }, 'attempt'), h('th', { class: 'hide-narrow' }, 'progress'), h('th', { class: 'hide-narrow' }, 'created'))),
        h('tbody', {}, rows))) : h('p', { class: 'muted' }, 'No jobs match.'),
      h('div', { class: 'pager' }, previous, h('span', { class: 'muted' }, `page ${page + 1}`), next));
  };
  // A filtered listing may scan many rows: read it again every 5 s at most.
  const filtered = Object.values(filters).some(Boolean);
  return {
    every: filtered ? 5000 : 1000,
    el: h('section', {}, h('h1', {}, 'Jobs'), form, goto, bulkBar, body),
    refresh: async () => {
      try { await load(); } catch (e) { if (e.status !== 401) body.replaceChildren(h('p', { class: 'error' }, e.message)); }
    },
  };
}

function progressBar(percent) {
  const bar = h('div', { class: 'bar', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': Math.round(percent) },
    h('span', {}));
  bar.firstChild.style.width = `${Math.max(0, Math.min(100, percent))}%`;
  return bar;
}

// ---- One job ---------------------------------------------------------------------------

function jobView(id) {
  return simpleView('Job', async () => {
    const job = await api('GET', `/v1/jobs/${encodeURIComponent(id)}`);
    let deliveries = null;
    try { deliveries = (await api('GET', `/v1/jobs/${encodeURIComponent(id)}/deliveries`)).deliveries; } catch (e) { deliveries = null; }
    const actions = h('div', { class: 'actions' },
      h('button', { type: 'button', id: 'retry', disabled: !canEnqueue() || !['failed', 'cancelled'].includes(job.state),
        onclick: (e) => act(e.currentTarget, () => api('POST', `/v1/jobs/${job.id}/retry`)) }, 'Retry'),
      h('button', { type: 'button', id: 'cancel', disabled: !canEnqueue() || !['waiting', 'pending', 'scheduled', 'processing'].includes(job.state),
        onclick: (e) => act(e.currentTarget, () => api('POST', `/v1/jobs/${job.id}/cancel`)) }, 'Cancel'),
      h('button', { type: 'button', id: 'delete', class: 'danger', disabled: !canEnqueue() || !['completed', 'failed', 'cancelled'].includes(job.state),
        onclick: (e) => {
          if (confirm('Delete this job?')) act(e.currentTarget, async () => { await api('DELETE', `/v1/jobs/${job.id}`); location.hash = '#/jobs'; });
        } }, 'Delete'));
    const fields = h('dl', { class: 'fields' },
      h('dt', {}, 'id'), h('dd', { class: 'mono' }, job.id),
      h('dt', {}, 'state'), h('dd', { id: 'job-state' }, stateBadge(job.state)),
      h('dt', {}, 'queue · kind'), h('dd', {}, `${job.queue} · `, h('span', { id: 'job-kind' }, job.kind)),
      h('dt', {}, 'tenant'), h('dd', {}, job.tenant),
      h('dt', {}, 'attempt'), h('dd', {}, `${job.attempt} of ${job.max_attempts}`),
      h('dt', {}, 'priority'), h('dd', {}, job.priority),
      h('dt', {}, 'tags'), h('dd', {}, (job.tags || []).join(', ') || '–'),
      h('dt', {}, 'idempotency key'), h('dd', {}, job.idempotency_key || '–'),
      h('dt', {}, 'worker'), h('dd', {}, job.worker_id || '–'),
      h('dt', {}, 'progress'), h('dd', {}, job.progress ? [progressBar(job.progress.percent), `${job.progress.percent}% ${job.progress.message || ''}`] : '–'),
      h('dt', {}, 'parents'), h('dd', { id: 'job-parents' }, job.depends_on
        ? [job.depends_on.slice(0, 20).flatMap((p, i) => [i ? ', ' : '', h('a', { class: 'mono', href: `#/jobs/${p}` }, p.slice(0, 8))]),
          job.depends_on.length > 20 ? ` and ${job.depends_on.length - 20} more` : '',
          job.parents_left !== undefined ? ` · ${job.parents_left} not finished` : '', ` · if one fails: ${job.on_parent_failure}`]
        : '–'),
      h('dt', {}, 'batch'), h('dd', { class: 'mono' }, job.batch_id || '–'),
      h('dt', {}, 'cancel reason'), h('dd', { id: 'cancel-reason' }, job.cancel_reason || '–'));
    const timeline = [['created', job.created_at], ['runs at', job.run_at], ['started', job.started_at]]
      .concat((job.errors || []).map((e) => [`attempt ${e.attempt} failed (${e.reason})`, e.at]))
      .concat([[job.state === 'completed' ? 'completed' : 'finished', job.finished_at]])
      .filter(([, at]) => at)
      .sort((a, b) => new Date(a[1]) - new Date(b[1]));
    return [
      actions,
      h('div', { class: 'panel' }, fields),
      h('h2', {}, 'Payload'), h('pre', { id: 'payload' }, pretty(job.payload)),
      h('h2', {}, 'Result'), h('pre', { id: 'result' }, job.result === undefined ? '–' : pretty(job.result)),
      h('h2', {}, `Errors (${(job.errors || []).length})`),
      (job.errors || []).length ? h('div', { class: 'scroll' }, h('table', { id: 'errors' },
        h('thead', {}, h('tr', {}, h('th', { class: 'num' }, 'attempt'), h('th', {}, 'at'), h('th', {}, 'reason'), h('th', {}, 'worker'), h('th', {}, 'message'))),
        h('tbody', {}, job.errors.map((e) => h('tr', {}, h('td', { class: 'num' }, e.attempt), h('td', {}, when(e.at)), h('td', {}, e.reason),
          h('td', { class: 'mono' }, e.worker || '–'), h('td', {}, h('pre', {}, e.message)))))))
        : h('p', { class: 'muted' }, 'None.'),
      h('h2', {}, 'Timeline'),
      h('ul', { class: 'timeline' }, timeline.map(([what, at]) => h('li', {}, `${when(at)} — ${what}`))),
      h('h2', {}, 'Webhook deliveries'),
      deliveries && deliveries.length ? h('div', { class: 'scroll' }, h('table', {},
        h('thead', {}, h('tr', {}, h('th', {}, 'event'), h('th', {}, 'url'), h('th', {}, 'status'), h('th', {}, 'attempts'))),
        h('tbody', {}, deliveries.map((d) => h('tr', {}, h('td', {}, d.event || ''), h('td', { class: 'mono' }, d.url || ''),
          h('td', {}, d.status || ''), h('td', {}, (d.attempts || []).map((a) => h('div', {},
            `${when(a.at)}: ${a.status_code || ''} ${a.error || ''} ${a.duration_ms !== undefined ? `(${a.duration_ms} ms)` : ''}`))))))))
        : h('p', { class: 'muted' }, deliveries ? 'None.' : 'Not available.'),
    ];
  });
}

// ---- Dead letters ----------------------------------------------------------------------

function deadView() {
  return Object.assign(deadLetters(), { every: 10000 });  // 1,000 jobs per read: not on every event
}

function deadLetters() {
  return simpleView('Dead letters', async () => {
    const { jobs, next_cursor } = await api('GET', '/v1/jobs?state=failed&limit=1000');
    const groups = new Map();
    for (const job of jobs) {
      const last = (job.errors || [])[job.errors.length - 1];
      const message = last ? last.message.split('\n')[0].slice(0, 160) : '(no error recorded)';
      const key = `${job.queue}\u0000${message}`;
      if (!groups.has(key)) groups.set(key, { queue: job.queue, message, ids: [] });
      groups.get(key).ids.push(job.id);
    }
    const sorted = [...groups.values()].sort((a, b) => b.ids.length - a.ids.length);
    if (!sorted.length) return h('p', { class: 'muted' }, 'No failed jobs.');
    return [
      next_cursor ? h('p', { class: 'muted' }, 'Grouping the newest 1,000 failed jobs.') : null,
      h('div', { class: 'scroll' }, h('table', { id: 'dead' },
        h('thead', {}, h('tr', {}, h('th', {}, 'queue'), h('th', {}, 'error'), h('th', { class: 'num' }, 'jobs'), h('th', {}, ''))),
        h('tbody', {}, sorted.map((g) => h('tr', {},
          h('td', {}, h('a', { href: `#/jobs?queue=${encodeURIComponent(g.queue)}&state=failed` }, g.queue)),
          h('td', {}, h('pre', {}, g.message)),
          h('td', { class: 'num' }, g.ids.length),
          h('td', {}, h('button', { type: 'button', disabled: !canEnqueue(), onclick: (e) => {
            if (!confirm(`Retry these ${g.ids.length} jobs?`)) return;
            act(e.currentTarget, async () => {
              const results = await Promise.allSettled(g.ids.map((id) => api('POST', `/v1/jobs/${id}/retry`)));
              flash(`${results.filter((r) => r.status === 'fulfilled').length} of ${g.ids.length} retried`);
            });
          } }, 'Retry group'))))))),
    ];
  });
}

// ---- Workers ---------------------------------------------------------------------------

function workersView() {
  return simpleView('Workers', async () => {
    const { workers } = await api('GET', '/v1/workers');
    if (!workers.length) return h('p', { class: 'muted' }, 'No workers registered.');
    return h('div', { class: 'scroll' }, h('table', { id: 'workers' },
      h('thead', {}, h('tr', {}, h('th', {}, 'worker'), h('th', {}, 'host'), h('th', {}, 'queues'), h('th', {}, 'kinds'),
        h('th', { class: 'num' }, 'running'), h('th', {}, 'last heartbeat'), h('th', {}, 'state'))),
      h('tbody', {}, workers.map((w) => h('tr', { class: w.state === 'lost' ? 'lost' : null },
        h('td', {}, w.name, h('div', { class: 'mono muted' }, w.id)), h('td', {}, `${w.host || '–'}${w.pid ? ` (pid ${w.pid})` : ''}`),
        h('td', {}, w.queues.join(', ')), h('td', {}, w.kinds.join(', ') || 'any'),
        h('td', { class: 'num' }, `${w.running}/${w.concurrency}`), h('td', {}, when(w.last_seen_at)),
        h('td', {}, w.state === 'lost' ? h('span', { class: 'lost' }, 'lost') : w.state))))));
  });
}

// ---- Topics ----------------------------------------------------------------------------

function topicsView() {
  return simpleView('Topics', async () => {
    const { topics } = await api('GET', '/v1/topics');
    if (!topics.length) return h('p', { class: 'muted' }, 'No topics: nothing was published and no subscriber is configured.');
    const rows = [];
    for (const t of topics) {
      const subs = t.subscribers.length ? t.subscribers : [null];
      subs.forEach((s, i) => rows.push(h('tr', {},
        h('td', {}, i ? '' : t.topic), h('td', { class: 'num' }, i ? '' : t.events), h('td', {}, i ? '' : when(t.last_published_at)),
        h('td', {}, s ? s.name : h('span', { class: 'muted' }, 'no subscribers')), h('td', {}, s ? `${s.queue} · ${s.kind}` : ''),
        h('td', { class: 'hide-narrow' }, s && Object.keys(s.filter).length ? JSON.stringify(s.filter) : ''),
        h('td', { class: 'hide-narrow' }, s ? s.source : ''), h('td', { class: 'num' }, s ? s.jobs : ''))));
    }
    return h('div', { class: 'scroll' }, h('table', { id: 'topics' },
      h('thead', {}, h('tr', {}, h('th', {}, 'topic'), h('th', { class: 'num' }, 'events'), h('th', {}, 'last published'),
        h('th', {}, 'subscriber'), h('th', {}, 'queue · kind'), h('th', { class: 'hide-narrow' }, 'filter'),
        h('th', { class: 'hide-narrow' }, 'source'), h('th', { class: 'num' }, 'jobs'))),
      h('tbody', {}, rows)));
  });
}

boot();
