// Switchboard dashboard: plain JavaScript over the /v1 API, no libraries and no build step.
// Every value from the API is put into the page as text (never as HTML), so a caller's words in
// a transcript cannot inject markup.
'use strict';

const TOKEN_KEY = 'switchboard-token';
const LOG_LIMIT = 1000;
const PAGE_SIZE = 50;

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  view: null,
  // Bumped on every navigation so a slow response never paints over a newer view.
  generation: 0,
  // Ids whose `ended` event arrived: hidden from the active list even if the store has not
  // written the end yet.
  ended: new Set(),
  logs: [],
  refreshTimers: new Map(),
};

const $ = (sel, root = document) => root.querySelector(sel);

// Builds an element: attrs may hold `class`, `text`, `data` (dataset), properties or attributes.
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k === 'data') Object.assign(el.dataset, v);
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

const pad = (n) => String(n).padStart(2, '0');
function fmtTime(ms) {
  if (ms === null || ms === undefined) return '—';
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
function fmtDuration(ms) {
  if (ms === null || ms === undefined || ms < 0) return '—';
  const s = Math.floor(ms / 1000);
  return s >= 3600 ? `${Math.floor(s / 3600)}:${pad(Math.floor(s / 60) % 60)}:${pad(s % 60)}`
    : `${Math.floor(s / 60)}:${pad(s % 60)}`;
}
const fmtInt = (n) => (n ?? 0).toLocaleString('en-US');
const fmtMs = (n) => (n === null || n === undefined ? '—' : `${Math.round(n)} ms`);

// ---- API -------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body, path) {
    const detail = typeof body.detail === 'string' ? body.detail : JSON.stringify(body.detail ?? body);
    super(`${path}: ${status} ${body.error ?? ''} ${detail ?? ''}`.trim());
    this.status = status;
    // The API's own sentence, for views that show it alone (e.g. why a control was refused).
    this.detail = detail;
  }
}

function authHeaders() {
  return state.token ? { Authorization: `Bearer ${state.token}` } : {};
}

async function request(path, options = {}) {
  const resp = await fetch(path, {
    ...options,
    headers: { ...authHeaders(), ...(options.headers ?? {}) },
    cache: 'no-store',
  });
  if (resp.status === 401) {
    askForToken(state.token ? 'The token was refused.' : null);
    throw new ApiError(401, { error: 'unauthorized' }, path);
  }
  return resp;
}

async function api(path, options) {
  const resp = await request(path, options);
  const body = await resp.json().catch(() => ({ error: 'not JSON' }));
  if (!resp.ok) throw new ApiError(resp.status, body, path);
  return body;
}

const post = (path, body = {}) => api(path, {
  method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
});

function showError(err) {
  const banner = $('#error');
  if (!err) { banner.hidden = true; return; }
  if (err.status === 401) return;
  banner.textContent = err.message ?? String(err);
  banner.hidden = false;
}

// ---- token -----------------------------------------------------------------------------------

function askForToken(message) {
  $('#view').replaceChildren();
  $('#login').hidden = false;
  const error = $('#login-error');
  error.textContent = message ?? '';
  error.hidden = !message;
  $('#token').focus();
}

async function submitToken(event) {
  event.preventDefault();
  state.token = $('#token').value.trim();
  try {
    await api('/v1/agents');
  } catch (err) {
    if (err.status !== 401) showError(err);
    sessionStorage.removeItem(TOKEN_KEY);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, state.token);
  $('#token').value = '';
  $('#login').hidden = true;
  start();
}

function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  location.reload();
}

// ---- live events -----------------------------------------------------------------------------

// The stream is read with fetch rather than EventSource so the token travels in the
// Authorization header, never in a URL (where logs, history and proxies would keep it).
let streamRunning = false;
async function runStream() {
  if (streamRunning) return;
  streamRunning = true;
  const status = $('#stream-status');
  for (;;) {
    try {
      const resp = await request('/v1/events', { headers: { Accept: 'text/event-stream' } });
      if (!resp.ok) throw new Error(`events: ${resp.status}`);
      status.textContent = 'live';
      status.className = 'stream on';
      // Anything may have happened while disconnected.
      if (state.view) refresh(state.view.name, 0);
      refresh('active', 0);
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let end;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          parseEvent(block);
        }
      }
    } catch (err) {
      if (err.status === 401) { streamRunning = false; return; }
    }
    status.textContent = 'reconnecting';
    status.className = 'stream off';
    await new Promise((r) => setTimeout(r, 2000));
  }
}

function parseEvent(block) {
  let name = 'message';
  let data = '';
  for (const line of block.split('\n')) {
    if (line.startsWith('event:')) name = line.slice(6).trim();
    else if (line.startsWith('data:')) data += line.slice(5).replace(/^ /, '');
  }
  if (!data) return;
  try {
    onEvent(name, JSON.parse(data));
  } catch (err) {
    console.warn('bad event', name, err);
  }
}

function onEvent(name, data) {
  const view = state.view?.name;
  switch (name) {
    case 'log':
      addLog(data);
      return;
    case 'agent-reload':
      if (view === 'agents') refresh('agents');
      return;
    case 'registration':
      if (view === 'registrations') refresh('registrations');
      if (view === 'config') onRegistration(data);
      return;
    case 'config-change':
      if (view === 'config') onConfigChange(data);
      return;
    case 'campaign':
      onCampaign(data);
      return;
    case 'lagged':
      if (view) refresh(view);
      refresh('active');
      return;
    default:
    {
      if (!data.call_id) return;
      const mine = view === 'call' && state.view.id === data.call_id;
      if (name === 'ended' || (name === 'state' && data.state === 'ended')) {
        state.ended.add(data.call_id);
        // Events arrive once stored: the history already holds the call.
        if (view === 'calls') refresh('calls');
      }
      refresh('active');
      if (mine) refresh('call');
    }
  }
}

// Coalesces bursts of events into one reload per target.
function refresh(target, delay = 250) {
  if (state.refreshTimers.has(target)) return;
  state.refreshTimers.set(target, setTimeout(() => {
    state.refreshTimers.delete(target);
    if (target === 'active') loadActive();
    else if (state.view?.name === target) render(false);
  }, delay));
}

// ---- active calls (on every view: the count in the header) ------------------------------------

let activeCalls = [];
async function loadActive() {
  try {
    const body = await api('/v1/calls?active=true&limit=200');
    activeCalls = body.calls.filter((c) => !state.ended.has(c.id));
    // Once the store no longer lists an ended call as active, it need not be remembered.
    for (const id of state.ended) {
      if (!body.calls.some((c) => c.id === id)) state.ended.delete(id);
    }
  } catch (err) {
    showError(err);
    return;
  }
  $('#active-count').textContent = activeCalls.length ? String(activeCalls.length) : '';
  const table = $('#active-calls');
  if (table) table.replaceWith(activeTable());
}

function activeTable() {
  if (!activeCalls.length) {
    return h('div', { id: 'active-calls', class: 'empty' }, 'No call in progress.');
  }
  return h('table', { id: 'active-calls' },
    h('thead', {}, h('tr', {},
      ['Started', 'Direction', 'Leg', 'Caller', 'Callee', 'Agent', 'Duration', 'State']
        .map((t) => h('th', { text: t })))),
    h('tbody', {}, activeCalls.map((c) => h('tr', { class: 'link', data: { id: c.id } },
      h('td', {}, h('a', { href: `#/call/${encodeURIComponent(c.id)}`, text: fmtTime(c.started_at_ms) })),
      h('td', { text: c.direction }),
      h('td', { class: 'leg', text: c.transport ?? '—' }),
      h('td', { text: c.caller }),
      h('td', { text: c.callee }),
      h('td', { text: agentLabel(c) }),
      h('td', { class: 'num', data: { since: c.answered_at_ms ?? c.started_at_ms } },
        fmtDuration(Date.now() - (c.answered_at_ms ?? c.started_at_ms))),
      h('td', {}, h('span', { class: `badge ${c.state}`, text: c.live ? 'live' : c.state }))))));
}

const agentLabel = (c) => (c.agent ? (c.agent_version ? `${c.agent} ${c.agent_version}` : c.agent) : '—');

// ---- views -----------------------------------------------------------------------------------

function parseHash() {
  const [path, query = ''] = location.hash.replace(/^#\/?/, '').split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query);
  if (DETAILS[parts[0]] && parts[1]) return { name: parts[0], id: parts[1], params };
  const name = VIEWS[parts[0]] && !DETAILS[parts[0]] ? parts[0] : 'calls';
  return { name, params };
}

async function render(navigated = true) {
  const hash = location.hash;
  const view = parseHash();
  state.view = view;
  const generation = ++state.generation;
  for (const a of document.querySelectorAll('header nav a')) {
    a.classList.toggle('current', a.dataset.view === (DETAILS[view.name] ?? view.name));
  }
  try {
    const content = await VIEWS[view.name](view);
    if (generation !== state.generation) return;
    showError(null);
    const main = $('#view');
    if (navigated) main.replaceChildren(content);
    else morph(main, content);
    // Which route the content shows (for tests and for anyone reading the DOM).
    main.dataset.route = hash;
  } catch (err) {
    if (generation === state.generation) showError(err);
  }
}

// A live re-render keeps what the operator is doing: inputs keep focus and value, forms with
// typing not saved yet (data-dirty) keep it, the log keeps its lines.
function morph(main, content) {
  const focused = document.activeElement;
  if (focused && main.contains(focused) && focused.matches('input, select')) return;
  if (main.querySelector('form[data-dirty]')) return;
  main.replaceChildren(content);
}

const VIEWS = {
  calls: callsView,
  call: callView,
  agents: agentsView,
  registrations: registrationsView,
  usage: usageView,
  logs: logsView,
  config: configView,
  webhooks: webhooksView,
  campaigns: campaignsView,
  campaign: campaignView,
};

// The views of one item (`#/call/<id>`), by the list view they belong to.
const DETAILS = { call: 'calls', campaign: 'campaigns' };

async function callsView(view) {
  const params = view.params;
  const query = new URLSearchParams({ active: 'false', limit: params.get('limit') ?? PAGE_SIZE });
  for (const key of ['text', 'agent', 'number']) {
    if (params.get(key)) query.set(key, params.get(key));
  }
  const history = await api(`/v1/calls?${query}`);
  const rows = h('tbody', {}, history.calls.map(historyRow));
  let cursor = history.next_cursor;
  const more = h('button', {
    id: 'more', type: 'button', class: 'secondary', hidden: !cursor,
    onclick: async () => {
      more.disabled = true;
      try {
        query.set('cursor', cursor);
        const next = await api(`/v1/calls?${query}`);
        rows.append(...next.calls.map(historyRow));
        cursor = next.next_cursor;
        more.hidden = !cursor;
      } catch (err) {
        showError(err);
      }
      more.disabled = false;
    },
  }, 'More');

  const field = (name, placeholder) => h('input', {
    name, placeholder, value: params.get(name) ?? '', type: 'search',
  });
  const form = h('form', {
    id: 'search', class: 'filters',
    onsubmit: (e) => {
      e.preventDefault();
      const next = new URLSearchParams();
      for (const [k, v] of new FormData(form)) if (v.trim()) next.set(k, v.trim());
      if (params.get('limit')) next.set('limit', params.get('limit'));
      location.hash = `#/calls?${next}`;
    },
  },
  field('text', 'Search transcripts'),
  field('agent', 'Agent'),
  field('number', 'Number'),
  h('button', { type: 'submit' }, 'Search'),
  h('a', { href: '#/calls' }, 'Clear'));

  return h('div', {},
    h('section', { class: 'card' }, h('h2', {}, 'Active calls'), activeTable()),
    h('section', { class: 'card' }, h('h2', {}, 'History'), form,
      history.calls.length
        ? h('table', { id: 'history' },
          h('thead', {}, h('tr', {},
            ['Started', 'Direction', 'Leg', 'Caller', 'Callee', 'Agent', 'Duration', 'Ended', 'Tokens in/out']
              .map((t) => h('th', { text: t })))),
          rows)
        : h('div', { id: 'history', class: 'empty' }, 'No finished call matches.'),
      h('div', { class: 'toolbar' }, more)));
}

function historyRow(c) {
  return h('tr', { class: 'link', data: { id: c.id } },
    h('td', {}, h('a', { href: `#/call/${encodeURIComponent(c.id)}`, text: fmtTime(c.started_at_ms) })),
    h('td', { text: c.direction }),
    h('td', { class: 'leg', text: c.transport ?? '—' }),
    h('td', { text: c.caller }),
    h('td', { text: c.callee }),
    h('td', { text: agentLabel(c) }),
    h('td', { class: 'num', text: fmtDuration((c.ended_at_ms ?? 0) - (c.answered_at_ms ?? c.started_at_ms)) }),
    h('td', {}, h('span', { class: `badge ${c.state}`, text: c.end_reason ?? c.state })),
    h('td', { class: 'num', text: `${fmtInt(c.input_tokens)} / ${fmtInt(c.output_tokens)}` }));
}

async function callView(view) {
  const d = await api(`/v1/calls/${encodeURIComponent(view.id)}`);
  const c = d.call;
  const start = c.started_at_ms;
  const end = c.ended_at_ms ?? (d.live ? Date.now() : null);
  const fact = (label, value) => h('div', {}, h('dt', { text: label }), h('dd', { text: value ?? '—' }));
  const hangup = d.live && h('button', {
    id: 'hangup', type: 'button', class: 'danger',
    onclick: async () => {
      hangup.disabled = true;
      try {
        await post(`/v1/calls/${encodeURIComponent(c.id)}/hangup`);
      } catch (err) {
        showError(err);
        hangup.disabled = false;
      }
    },
  }, 'Hang up');

  return h('div', {},
    h('section', { class: 'card' },
      h('div', { class: 'detail-head' },
        h('a', { href: '#/calls' }, '← Calls'),
        h('h2', { class: 'mono', text: c.id }),
        h('span', { id: 'call-state', class: `badge ${d.live ? 'active' : c.state}`, text: d.live ? 'live' : c.state }),
        h('span', { class: 'spacer' }),
        hangup),
      h('dl', { class: 'facts' },
        fact('Direction', c.direction),
        fact('Leg', c.transport),
        fact('Caller', c.caller),
        fact('Callee', c.callee),
        fact('Agent', agentLabel(c)),
        fact('Started', fmtTime(start)),
        fact('Answered', fmtTime(c.answered_at_ms)),
        fact('Ended', fmtTime(c.ended_at_ms)),
        fact('Duration', end ? fmtDuration(end - start) : '—'),
        fact('End reason', c.end_reason),
        fact('Outcome', c.outcome),
        fact('Tokens in / out', `${fmtInt(c.input_tokens)} / ${fmtInt(c.output_tokens)}`),
        c.metadata !== null && fact('Metadata', JSON.stringify(c.metadata))),
      d.recording_url && recordingPlayer(d.recording_url)),
    h('div', { class: 'columns' },
      h('div', {},
        h('section', { class: 'card' }, h('h2', {}, 'Transcript'), transcript(d.transcript, start)),
        h('section', { class: 'card' }, h('h2', {}, 'Turn latency'), latencyTable(d.latencies)),
        h('section', { class: 'card' }, h('h2', {}, 'Usage'), usageTable(d.usage))),
      h('section', { class: 'card' }, h('h2', {}, 'Events'), timeline(d.events, d.transcript, start))));
}

// The recording is fetched with the token and played from a blob URL: an <audio src> request
// could not carry the Authorization header.
function recordingPlayer(url) {
  const box = h('div', { id: 'recording' });
  const load = h('button', {
    type: 'button', class: 'secondary',
    onclick: async () => {
      load.disabled = true;
      try {
        const resp = await request(url);
        if (!resp.ok) throw new ApiError(resp.status, await resp.json().catch(() => ({})), url);
        const audio = h('audio', { controls: true, src: URL.createObjectURL(await resp.blob()) });
        box.replaceChildren(audio);
        audio.play().catch(() => {});
      } catch (err) {
        showError(err);
        load.disabled = false;
      }
    },
  }, 'Play recording');
  box.append(h('h3', {}, 'Recording'), load);
  return box;
}

const offset = (at, start) => `+${((at - start) / 1000).toFixed(1)} s`;

function transcript(lines, start) {
  if (!lines.length) return h('div', { id: 'transcript', class: 'empty' }, 'Nothing said yet.');
  return h('div', { id: 'transcript', class: 'transcript' }, lines.map((l) =>
    h('div', { class: `line ${l.role}`, title: offset(l.at_ms, start) },
      h('span', { class: 'who', text: l.role }), l.text)));
}

function latencyTable(turns) {
  if (!turns.length) return h('div', { class: 'empty' }, 'No model turn measured.');
  const cols = ['host_in_ms', 'model_ms', 'host_out_ms', 'total_ms'];
  return h('table', { id: 'latency' },
    h('thead', {}, h('tr', {}, h('th', {}, 'Turn'),
      ['Host in', 'Model', 'Host out', 'Total'].map((t) => h('th', { class: 'num', text: t })))),
    h('tbody', {}, turns.map((t) => h('tr', {}, h('td', { text: t.turn }),
      cols.map((k) => h('td', { class: 'num', text: fmtMs(t[k]) }))))));
}

// One row per provider, stage, kind and unit, summed over the call. No total row: kinds
// overlap (`input` is the total that `input-text` and `input-audio` split).
function usageTable(usage) {
  if (!usage.length) return h('div', { id: 'call-usage', class: 'empty' }, 'No usage reported.');
  return h('table', { id: 'call-usage' },
    h('thead', {}, h('tr', {}, ['Provider', 'Stage', 'Kind'].map((t) => h('th', { text: t })),
      h('th', { class: 'num', text: 'Amount' }), h('th', { text: 'Unit' }))),
    h('tbody', {}, usage.map((u) => h('tr', {},
      [u.provider, u.stage, u.kind].map((t) => h('td', { text: t })),
      h('td', { class: 'num', text: u.amount.toLocaleString('en-US', { maximumFractionDigits: 2 }) }),
      h('td', { text: u.unit })))));
}

// One line of the most telling fields per event kind; everything else as compact JSON.
function eventLabel(e) {
  const d = e.data ?? {};
  switch (e.kind) {
    case 'state': return [`state ${d.state}`, ''];
    case 'progress': return [`progress ${d.status}`, ''];
    case 'transcript': return ['transcript', `${d.role}: ${d.text}`];
    case 'created': return ['created', `${d.direction} ${d.caller} → ${d.callee} via ${d.transport}, agent ${d.agent ?? '—'} ${d.agent_version ?? ''}`];
    case 'answered': return ['answered', `${d.codec}, model ${d.model}`];
    case 'ended': return ['ended', `${d.reason}${d.abnormal ? ' (abnormal)' : ''}`];
    case 'turn-latency': return ['turn-latency', `turn ${d.turn}: ${fmtMs(d.total_ms)}`];
    case 'handoff': return [`handoff ${d.status}`, `${d.from} → ${d.to}${d.gap_ms != null ? `, greeting after ${fmtMs(d.gap_ms)}` : ''}${d.detail ? ` (${d.detail})` : ''}`];
    case 'greeting-reworded': return ['greeting-reworded', `asked "${d.asked}", spoken "${d.spoken}"`];
    default: {
      const rest = { ...d };
      delete rest.type;
      return [e.kind, Object.keys(rest).length ? JSON.stringify(rest) : ''];
    }
  }
}

// The store keeps what was said apart from the other events; the timeline puts it back in
// its place, so a turn reads in order.
function timeline(events, lines, start) {
  const said = lines.map((l) => ({ at_ms: l.at_ms, seq: l.seq, kind: 'transcript', data: l }));
  const all = [...events, ...said].sort((a, b) => a.at_ms - b.at_ms || a.seq - b.seq);
  if (!all.length) return h('div', { id: 'timeline', class: 'empty' }, 'No event recorded yet.');
  return h('table', { id: 'timeline', class: 'timeline' },
    h('thead', {}, h('tr', {}, ['Time', 'Event', 'Details'].map((t) => h('th', { text: t })))),
    h('tbody', {}, all.map((e) => {
      const [kind, detail] = eventLabel(e);
      const bad = ['agent-fault', 'model-error', 'rejected', 'not-answered'].includes(e.kind) ||
        (e.kind === 'ended' && e.data?.abnormal);
      return h('tr', { data: { kind: e.kind }, class: bad ? 'bad' : null },
        h('td', { class: 'num mono', text: offset(e.at_ms, start) }),
        h('td', { class: 'kind', text: kind }),
        h('td', { class: 'data', text: detail.length > 400 ? `${detail.slice(0, 400)}…` : detail }));
    })));
}

async function agentsView() {
  const a = await api('/v1/agents');
  const result = h('div', { id: 'reload-result' });
  const reload = h('button', {
    id: 'reload-agents', type: 'button',
    onclick: async () => {
      reload.disabled = true;
      try {
        const r = await post('/v1/agents/reload');
        result.replaceChildren(r.errors.length
          ? h('ul', { class: 'bad' }, r.errors.map((e) => h('li', { text: `${e.path}: ${e.message}` })))
          : h('span', { class: 'good' }, 'Reloaded: every agent is current.'));
      } catch (err) {
        showError(err);
      }
      reload.disabled = false;
    },
  }, 'Reload agents');

  const history = [...a.history].reverse();
  return h('div', {},
    h('section', { class: 'card' },
      h('div', { class: 'toolbar' }, h('h2', {}, 'Agents'), h('span', { class: 'spacer' }), reload),
      result,
      a.agents.length
        ? h('table', { id: 'agents' },
          h('thead', {}, h('tr', {}, ['Name', 'Version', 'Description', 'Numbers', 'Hash', 'Loaded', '']
            .map((t) => h('th', { text: t })))),
          h('tbody', {}, a.agents.map((v) => h('tr', { data: { name: v.name } },
            h('td', { text: v.name }),
            h('td', { text: v.version }),
            h('td', { text: v.description }),
            h('td', { text: (v.numbers ?? []).join(', ') || '—' }),
            h('td', { class: 'mono', title: v.hash, text: v.hash.slice(0, 12) }),
            h('td', { text: fmtTime(v.loaded_at_ms) }),
            h('td', {}, talkButton(v, a.routes))))))
        : h('div', { class: 'empty' }, 'No agent is loaded.')),
    h('section', { class: 'card' },
      h('h2', {}, 'Routes'),
      h('p', { class: 'muted' }, `Default agent: ${a.default_agent ?? 'none'}${a.default_version ? ` ${a.default_version}` : ''}`),
      a.routes.length
        ? h('table', { id: 'routes' },
          h('thead', {}, h('tr', {}, ['Number', 'Agent', 'Version now', 'From'].map((t) => h('th', { text: t })))),
          h('tbody', {}, a.routes.map((r) => h('tr', {},
            h('td', { class: 'mono', text: r.pattern }),
            h('td', { text: r.agent }),
            h('td', { class: r.version ? null : 'bad', text: r.version ?? 'not loaded' }),
            h('td', { text: r.source })))))
        : h('div', { class: 'empty' }, 'No route.')),
    h('section', { class: 'card' },
      h('h2', {}, 'Reload history'),
      history.length
        ? h('table', { id: 'reload-history' },
          h('thead', {}, h('tr', {}, ['At', 'Agent', 'Result', 'Details'].map((t) => h('th', { text: t })))),
          h('tbody', {}, history.map((e) => h('tr', {},
            h('td', { text: fmtTime(e.at_ms) }),
            h('td', { text: e.agent }),
            h('td', {}, h('span', { class: `badge ${e.kind}`, text: e.kind })),
            h('td', { class: e.error ? 'bad' : null },
              e.error ?? (e.version ? `${e.version} (${e.hash.slice(0, 12)}, ${e.load_ms} ms)` : ''))))))
        : h('div', { class: 'empty' }, 'Nothing reloaded yet.')));
}

// ---- talk: a web call from this page to an agent ----------------------------------------------

// The number a web call to agent `v` dials: its first own number, else the first plain number
// a route gives it (patterns such as prefixes cannot be dialled).
function talkNumber(v, routes) {
  return (v.numbers ?? [])[0] ??
    routes.find((r) => r.agent === v.name && /^\+?[0-9]+$/.test(r.pattern))?.pattern;
}

function talkButton(v, routes) {
  const number = talkNumber(v, routes);
  if (!number) return null;
  return h('button', {
    type: 'button', class: 'secondary talk', data: { number },
    title: `Call ${v.name} at ${number} from this browser (microphone and speakers)`,
    onclick: () => startTalk(v.name, number),
  }, 'Talk');
}

// The web call script the host serves (same origin, so this page's CSP allows it), loaded the
// first time someone talks: a dashboard that never calls never fetches it.
let widgetLoading = null;
function loadWidget() {
  if (window.Switchboard) return Promise.resolve(window.Switchboard);
  widgetLoading ??= new Promise((resolve, reject) => {
    const script = h('script', { src: '/webrtc/widget.js' });
    script.addEventListener('load', () => resolve(window.Switchboard));
    script.addEventListener('error', () => {
      widgetLoading = null;
      script.remove();
      reject(new Error('The web call script (/webrtc/widget.js) did not load.'));
    });
    document.head.append(script);
  });
  return widgetLoading;
}

// The talk panel sits outside the views, so a call goes on while the operator looks around;
// one call at a time.
let talking = null;
const TALK_EVENTS = 200;
const TALK_BADGE = { connected: 'active', ended: 'ended', failed: 'failed' };

async function startTalk(agent, number) {
  const panel = $('#talk');
  if (talking) {
    panel.hidden = false;
    return;
  }
  const badge = h('span', { id: 'talk-state', class: 'badge', text: 'starting' });
  const link = h('a', { id: 'talk-call', class: 'mono' }, '—');
  const meter = h('meter', { id: 'talk-level', min: 0, max: 1, value: 0, title: 'Level of the agent audio heard' });
  const error = h('p', { id: 'talk-error', class: 'bad', hidden: true });
  const said = h('div', { id: 'talk-transcript', class: 'transcript' });
  const events = h('div', { id: 'talk-events', class: 'talk-events' });
  const keys = [...'123456789*0#'].map((k) => h('button', {
    type: 'button', class: 'secondary', data: { key: k }, disabled: true,
    onclick: () => talking?.key(k),
  }, k));
  const hangup = h('button', {
    id: 'talk-hangup', type: 'button', class: 'danger', onclick: () => talking?.hangup(),
  }, 'Hang up');
  const close = h('button', {
    id: 'talk-close', type: 'button', class: 'secondary', hidden: true,
    onclick: () => { panel.hidden = true; panel.replaceChildren(); },
  }, 'Close');
  panel.replaceChildren(
    h('div', { class: 'toolbar' }, h('h2', {}, `Talk to ${agent} (${number})`), badge,
      h('span', { class: 'spacer' }), hangup, close),
    h('div', { class: 'talk-facts muted' }, 'Call ', link, h('span', { class: 'spacer' }), 'Heard ', meter),
    error,
    said,
    h('div', { id: 'talk-keypad', class: 'keypad' }, keys),
    h('h3', {}, 'Events'),
    events);
  panel.hidden = false;
  for (const k of ['state', 'status', 'energy', 'reason']) delete panel.dataset[k];

  const over = (message) => {
    clearInterval(levels);
    meter.value = 0;
    talking = null;
    hangup.hidden = true;
    close.hidden = false;
    for (const k of keys) k.disabled = true;
    if (message) {
      error.textContent = message;
      error.hidden = false;
    }
  };
  let levels = null;
  let Switchboard;
  try {
    Switchboard = await loadWidget();
  } catch (err) {
    badge.textContent = 'failed';
    badge.className = 'badge failed';
    over(err.message);
    return;
  }
  talking = Switchboard.call({
    number,
    token: state.token,
    endpoint: `/v1/webrtc/${encodeURIComponent(number)}`,
    onState: (s, call) => {
      panel.dataset.state = s;
      badge.textContent = s;
      badge.className = `badge ${TALK_BADGE[s] ?? ''}`;
      if (call.status !== null) panel.dataset.status = String(call.status);
      if (call.callId && !link.getAttribute('href')) {
        link.textContent = call.callId;
        link.href = `#/call/${encodeURIComponent(call.callId)}`;
      }
      if (s === 'connected') for (const k of keys) k.disabled = false;
      if (s === 'ended') {
        // The host's reason (its `ended` event), or who closed the connection.
        panel.dataset.reason = call.reason;
        badge.textContent = `ended: ${call.reason}`;
        over(null);
      }
      if (s === 'failed') over(call.error.message);
    },
    onEvent: (e) => {
      if (e.type === 'transcript') {
        said.append(h('div', { class: `line ${e.role}` }, h('span', { class: 'who', text: e.role }), e.text));
        said.scrollTop = said.scrollHeight;
      }
      const data = { ...e };
      for (const k of ['call_id', 'seq', 'at_ms']) delete data[k];
      const [kind, detail] = eventLabel({ kind: e.type, data });
      events.append(h('div', { data: { kind: e.type } },
        h('span', { class: 'kind', text: kind }), ' ', detail.length > 200 ? `${detail.slice(0, 200)}…` : detail));
      while (events.childElementCount > TALK_EVENTS) events.firstElementChild.remove();
      events.scrollTop = events.scrollHeight;
    },
  });
  // What the page hears, from the connection's own counters.
  levels = setInterval(async () => {
    const heard = (await talking?.stats())?.received;
    if (!heard) return;
    meter.value = heard.level;
    panel.dataset.energy = String(heard.energy);
  }, 250);
}

async function registrationsView() {
  const r = await api('/v1/registrations');
  const fetched = Date.now();
  if (!r.registrations.length) {
    return h('section', { class: 'card' }, h('h2', {}, 'Registrations'),
      h('div', { id: 'registrations', class: 'empty' }, 'No registration account is configured ([[sip.accounts]]).'));
  }
  return h('section', { class: 'card' }, h('h2', {}, 'Registrations'),
    h('table', { id: 'registrations' },
      h('thead', {}, h('tr', {}, ['Account', 'Address of record', 'State', 'Last error', 'Failures', 'Expires', 'Next refresh', 'Successes']
        .map((t) => h('th', { text: t })))),
      h('tbody', {}, r.registrations.map((s) => h('tr', { data: { account: s.account } },
        h('td', { text: s.account }),
        h('td', { class: 'mono', text: s.aor }),
        h('td', {}, h('span', { class: `badge ${s.state}`, text: s.state })),
        h('td', { class: s.last_error ? 'bad' : null, text: s.last_error ?? '—' }),
        h('td', { class: 'num', text: s.failures }),
        h('td', { class: 'num', text: s.expires_secs ? `${s.expires_secs} s` : '—' }),
        s.next_attempt_secs === null
          ? h('td', { class: 'num', text: '—' })
          : h('td', { class: 'num', data: { due: fetched + s.next_attempt_secs * 1000 } }, countdown(fetched + s.next_attempt_secs * 1000)),
        h('td', { class: 'num', text: s.successes }))))));
}

const countdown = (due) => `in ${fmtDuration(Math.max(0, due - Date.now()))}`;

async function usageView() {
  const u = await api('/v1/usage');
  const days = u.days;
  const body = [h('h2', {}, 'Token usage per day (last 30 days, UTC)')];
  if (!days.length) {
    body.push(h('div', { id: 'usage', class: 'empty' }, 'No tokens used in this period.'));
  } else {
    body.push(chart(days),
      h('div', { class: 'legend muted' }, h('span', { class: 'in' }), 'input', h('span', { class: 'out' }), 'output'),
      h('table', { id: 'usage' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Day'), ['Input', 'Output', 'Total'].map((t) => h('th', { class: 'num', text: t })))),
        h('tbody', {}, days.map((d) => h('tr', {},
          h('td', { text: d.day }),
          h('td', { class: 'num', text: fmtInt(d.input_tokens) }),
          h('td', { class: 'num', text: fmtInt(d.output_tokens) }),
          h('td', { class: 'num', text: fmtInt(d.input_tokens + d.output_tokens) })))),
        h('tfoot', {}, h('tr', {},
          h('th', {}, 'Total'),
          h('th', { class: 'num', text: fmtInt(u.total.input_tokens) }),
          h('th', { class: 'num', text: fmtInt(u.total.output_tokens) }),
          h('th', { class: 'num', text: fmtInt(u.total.input_tokens + u.total.output_tokens) })))));
  }
  return h('section', { class: 'card' }, ...body);
}

// Stacked bars (input below output), one per day, in inline SVG.
function chart(days) {
  const NS = 'http://www.w3.org/2000/svg';
  const svg = (tag, attrs, text) => {
    const el = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (text !== undefined) el.textContent = text;
    return el;
  };
  const W = 900; const H = 200; const top = 10; const bottom = 20;
  const max = Math.max(...days.map((d) => d.input_tokens + d.output_tokens), 1);
  const step = W / days.length;
  const bar = Math.max(2, Math.min(40, step * 0.7));
  const scale = (n) => (n / max) * (H - top - bottom);
  const root = svg('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img' });
  days.forEach((d, i) => {
    const x = i * step + (step - bar) / 2;
    const hin = scale(d.input_tokens);
    const hout = scale(d.output_tokens);
    const title = `${d.day}: ${fmtInt(d.input_tokens)} in, ${fmtInt(d.output_tokens)} out`;
    const group = svg('g', {});
    group.append(svg('title', {}, title),
      svg('rect', { class: 'in', x, y: H - bottom - hin, width: bar, height: hin }),
      svg('rect', { class: 'out', x, y: H - bottom - hin - hout, width: bar, height: hout }));
    if (days.length <= 15 || i % Math.ceil(days.length / 15) === 0) {
      group.append(svg('text', { x: x + bar / 2, y: H - 6, 'text-anchor': 'middle' }, d.day.slice(5)));
    }
    root.append(group);
  });
  return root;
}

// ---- logs ------------------------------------------------------------------------------------

const LEVELS = ['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR'];
const logFilter = { level: 'INFO', text: '', paused: false };

function logPasses(l) {
  return LEVELS.indexOf(l.level) >= LEVELS.indexOf(logFilter.level) &&
    (!logFilter.text || `${l.target} ${l.line}`.toLowerCase().includes(logFilter.text));
}

function logRow(l) {
  const d = new Date(l.at_ms);
  return h('div', { class: `log ${l.level}` },
    h('span', { class: 'at', text: `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${String(d.getMilliseconds()).padStart(3, '0')} ` }),
    h('span', { class: 'lvl', text: l.level }),
    h('span', { class: 'tgt', text: `${l.target} ` }),
    l.line);
}

function addLog(line) {
  state.logs.push(line);
  if (state.logs.length > LOG_LIMIT) state.logs.splice(0, state.logs.length - LOG_LIMIT);
  const box = $('#log-lines');
  if (!box || logFilter.paused || !logPasses(line)) return;
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 30;
  box.append(logRow(line));
  while (box.childElementCount > LOG_LIMIT) box.firstElementChild.remove();
  if (atBottom) box.scrollTop = box.scrollHeight;
}

function logsView() {
  const box = h('div', { id: 'log-lines', class: 'logs mono' });
  const fill = () => {
    box.replaceChildren(...state.logs.filter(logPasses).map(logRow));
    box.scrollTop = box.scrollHeight;
  };
  const level = h('select', {
    onchange: () => { logFilter.level = level.value; fill(); },
  }, LEVELS.map((l) => h('option', { value: l, selected: l === logFilter.level }, `${l} and above`)));
  const text = h('input', {
    type: 'search', placeholder: 'Filter', value: logFilter.text,
    oninput: () => { logFilter.text = text.value.toLowerCase(); fill(); },
  });
  const pause = h('input', {
    type: 'checkbox', checked: logFilter.paused,
    onchange: () => { logFilter.paused = pause.checked; if (!pause.checked) fill(); },
  });
  const clear = h('button', {
    type: 'button', class: 'secondary',
    onclick: () => { state.logs.length = 0; fill(); },
  }, 'Clear');
  setTimeout(fill);
  return h('section', { class: 'card' },
    h('div', { class: 'toolbar' }, h('h2', {}, 'Log'), h('span', { class: 'muted' }, `live, last ${LOG_LIMIT} lines since this page opened`),
      h('span', { class: 'spacer' }), level, text, h('label', {}, pause, ' Pause'), clear),
    box);
}

// ---- start -----------------------------------------------------------------------------------

// Durations of running calls and registration countdowns tick without a reload; while calls
// are shown as active, the list is also re-read now and then in case an event was missed
// (the stream dropped or lagged).
let ticks = 0;
function tick() {
  if (++ticks % 5 === 0 && activeCalls.length) refresh('active', 0);
  for (const el of document.querySelectorAll('[data-since]')) {
    el.textContent = fmtDuration(Date.now() - Number(el.dataset.since));
  }
  for (const el of document.querySelectorAll('[data-due]')) {
    el.textContent = countdown(Number(el.dataset.due));
  }
}

// A click anywhere on a call row opens the call (the time cell is the keyboard-friendly link).
function openRow(event) {
  const row = event.target.closest('tr.link[data-id]');
  if (!row || event.target.closest('a, button')) return;
  location.hash = `#/call/${encodeURIComponent(row.dataset.id)}`;
}

function start() {
  $('#forget-token').hidden = !state.token;
  render();
  loadActive();
  runStream();
}

document.addEventListener('DOMContentLoaded', () => {
  $('#login-form').addEventListener('submit', submitToken);
  $('#forget-token').addEventListener('click', forgetToken);
  $('#view').addEventListener('click', openRow);
  window.addEventListener('hashchange', () => render());
  setInterval(tick, 1000);
  start();
});
