// Switchboard dashboard: the configuration view. Editors for routes, the default agent, the
// registration accounts, the trunks, the webhooks and each agent's settings and secrets over the
// /v1/config API, and the audit list of every change. Loaded before app.js, whose helpers
// (h, api, request, state, render) it uses only when called.
//
// Every write sends the ETag of the effective configuration this page drew (If-Match): when
// someone changed it meanwhile the API answers 409 and the view reloads and says so. A 400
// names the request field at fault; its message goes next to that field. Secrets and passwords
// are write-only: the API shows them as ***, and an empty password field keeps the stored one.
// Values set by the environment cannot change here and say which variable set them.
'use strict';

const AUDIT_LIMIT = 100;

const configState = {
  // The ETag of the effective configuration the view shows.
  etag: null,
  // What the last write did (saved, or a conflict), shown until the next write.
  notice: null,
};

// The account, trunk and webhook fields the editors offer (the file's names); fields they do
// not offer keep what the entry has. `numeric` ones are sent as numbers, `list` ones as
// arrays, `bool` ones as true or false.
const ACCOUNT_EDIT = [
  { name: 'registrar', hint: 'host:port (an IP address)' },
  { name: 'aor', hint: 'sip:user@domain' },
  { name: 'auth-user', hint: 'digest user (default: the AOR user)' },
  { name: 'password', secret: true },
  { name: 'transport', hint: 'udp, tcp or tls' },
  { name: 'expires', numeric: true, hint: 'seconds' },
];
const TRUNK_EDIT = [
  { name: 'outbound-proxy', hint: 'host:port' },
  { name: 'domain', hint: 'the Request-URI host' },
  { name: 'transport', hint: 'udp, tcp or tls' },
  { name: 'from-user' },
  { name: 'auth-user' },
  { name: 'password', secret: true },
  { name: 'allowed-prefixes', list: true, hint: '+1555, +4930' },
  { name: 'channels', numeric: true, hint: 'calls at once, inbound and outbound (no cap when empty)' },
];
const WEBHOOK_EDIT = [
  { name: 'url', hint: 'https://hooks.example.com/switchboard' },
  { name: 'events', list: true, hint: 'call.started, call.answered, call.ended, call.transferred, call.outcome, recording.ready' },
  { name: 'secret', secret: true },
  { name: 'allow-local', bool: true, hint: 'true to send to a loopback or link-local address' },
  { name: 'timeout-ms', numeric: true, hint: 'per attempt (10000)' },
  { name: 'max-attempts', numeric: true, hint: 'then a dead letter (8)' },
  { name: 'retry-ms', numeric: true, hint: 'first retry, doubling (5000)' },
  { name: 'queue-limit', numeric: true, hint: 'pending deliveries (10000)' },
];

// The tables of named entries the editors change, and how each is listed.
const ENTRY_TABLES = {
  accounts: {
    what: 'account', title: 'Registration accounts', empty: 'No registration account.', fields: ACCOUNT_EDIT,
    columns: ['Registrar', 'Address of record', 'Password', 'State'],
    cells: (name, v, registrations) => [v.registrar, v.aor, v.password ?? '—', accountState(name, registrations)],
  },
  trunks: {
    what: 'trunk', title: 'Trunks', empty: 'No trunk.', fields: TRUNK_EDIT,
    columns: ['Outbound proxy', 'Domain', 'Password', 'Allowed prefixes'],
    cells: (name, v) => [v['outbound-proxy'], v.domain ?? '—', v.password ?? '—', fieldText(v['allowed-prefixes']) || '—'],
  },
  webhooks: {
    what: 'webhook', title: 'Webhooks', empty: 'No webhook.', fields: WEBHOOK_EDIT,
    columns: ['URL', 'Events', 'Secret', 'Attempts'],
    cells: (name, v) => [v.url, fieldText(v.events), v.secret ?? '—', v['max-attempts']],
  },
};

// The effective configuration and its ETag.
async function loadEffective() {
  const path = '/v1/config/effective';
  const resp = await request(path);
  const body = await resp.json().catch(() => ({ error: 'not JSON' }));
  if (!resp.ok) throw new ApiError(resp.status, body, path);
  configState.etag = resp.headers.get('ETag');
  return body;
}

// What a value's source says: `file`, `live`, or `environment (VARIABLE)`.
function sourceBadge(s) {
  const text = s.source === 'environment' && s.variable ? `environment (${s.variable})` : s.source;
  return h('span', { class: `source ${s.source}`, data: { source: s.source }, text });
}
const fromEnvironment = (s) => s?.source === 'environment';

// ---- writing ---------------------------------------------------------------------------------

function clearErrors(form) {
  for (const el of form.querySelectorAll('.field-error, .form-error')) {
    el.textContent = '';
    el.hidden = true;
  }
}

// Shows `message` next to the input named `field`, or above the form's buttons when the form
// has no such input.
function showFieldError(form, field, message) {
  const slot = form.querySelector(`.field-error[data-field="${CSS.escape(field)}"]`) ??
    form.querySelector('.form-error');
  slot.textContent = slot.classList.contains('form-error') ? `${field}: ${message}` : message;
  slot.hidden = false;
  form.querySelector(`[name="${CSS.escape(field)}"]`)?.focus();
}

// One write with the view's ETag. Success and conflicts reload the view (with a notice); a
// refused value is shown in `form`. Answers whether it applied.
async function configWrite(method, path, body, form) {
  clearErrors(form);
  configState.notice = null;
  $('#config-notice')?.remove();
  const headers = { 'If-Match': configState.etag ?? '' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let resp;
  try {
    resp = await request(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    showFieldError(form, 'request', err.message);
    return false;
  }
  const reply = await resp.json().catch(() => ({}));
  if (resp.ok) {
    configState.notice = { kind: 'good', text: `Saved: ${reply.change.action} ${reply.change.target}.` };
    reloadConfig();
    return true;
  }
  if (resp.status === 409) {
    configState.notice = {
      kind: 'warn',
      text: 'Someone changed the configuration since this page loaded it (409): it has been ' +
        'reloaded. Check the values and make your change again.',
    };
    reloadConfig();
    return false;
  }
  const detail = typeof reply.detail === 'string' ? reply.detail : JSON.stringify(reply);
  if (resp.status === 403) {
    showFieldError(form, 'token', `${detail} (the token this tab holds cannot change the configuration)`);
  } else {
    showFieldError(form, reply.field ?? 'request', detail);
  }
  return false;
}

// Draws the view again, typing or not.
function reloadConfig() {
  for (const form of document.querySelectorAll('form[data-dirty]')) delete form.dataset.dirty;
  // A focused input would keep the old view (see morph in app.js).
  document.activeElement?.blur();
  if (state.view?.name === 'config') render(false);
}

// A labelled input with the slot for its error.
function field(name, attrs = {}) {
  return h('label', { class: 'field' },
    h('span', { class: 'label', text: attrs.label ?? name }),
    attrs.control ?? h('input', { name, ...attrs.input }),
    h('span', { class: 'field-error bad', data: { field: name }, hidden: true }));
}

// A form whose typing marks it dirty (data-dirty): live re-renders then leave the view alone
// (see morph in app.js); `submit` gets the form.
function editorForm(id, submit, ...children) {
  const form = h('form', {
    id, class: 'editor',
    oninput: () => { form.dataset.dirty = ''; },
    onsubmit: async (e) => {
      e.preventDefault();
      const button = form.querySelector('button[type=submit]');
      button.disabled = true;
      try {
        await submit(form);
      } finally {
        button.disabled = false;
      }
    },
  }, ...children, h('p', { class: 'form-error bad', hidden: true }));
  return form;
}

const value = (form, name) => form.elements[name]?.value.trim() ?? '';

function agentSelect(name, agents, selected, attrs = {}) {
  return h('select', { name, ...attrs },
    h('option', { value: '', text: '— agent —' }),
    agents.map((a) => h('option', { value: a, selected: a === selected, text: a })));
}

const removeButton = (label, onclick) => h('button', {
  type: 'button', class: 'secondary danger-text', title: label, onclick,
}, 'Remove');

// ---- routes and the default agent --------------------------------------------------------------

function routesCard(eff, agents) {
  const routes = Object.entries(eff.routes);
  const rows = routes.map(([pattern, r]) => {
    const row = h('tr', { data: { pattern } });
    const form = editorForm(null, (f) => configWrite('PUT',
      `/v1/config/routes/${encodeURIComponent(pattern)}`, { agent: value(f, 'agent') }, f),
    agentSelect('agent', agents, r.agent, { disabled: fromEnvironment(r) }),
    fromEnvironment(r) ? null : h('button', { type: 'submit', class: 'secondary' }, 'Save'),
    fromEnvironment(r) ? null : removeButton(`Remove the route ${pattern}`,
      () => configWrite('DELETE', `/v1/config/routes/${encodeURIComponent(pattern)}`, undefined, form)));
    form.classList.add('inline');
    row.append(h('td', { class: 'mono', text: pattern }), h('td', {}, form), h('td', {}, sourceBadge(r)));
    return row;
  });
  const add = editorForm('route-form', (f) => {
    const pattern = value(f, 'pattern');
    if (!pattern) {
      showFieldError(f, 'pattern', 'a number, an extension or a prefix such as +4930*');
      return false;
    }
    return configWrite('PUT', `/v1/config/routes/${encodeURIComponent(pattern)}`,
      { agent: value(f, 'agent') }, f);
  },
  field('pattern', { input: { placeholder: '+4930 1234, 1000 or +4930*' } }),
  field('agent', { control: agentSelect('agent', agents) }),
  h('button', { type: 'submit' }, 'Add route'));

  const d = eff.default_agent;
  const fallback = editorForm('default-agent-form',
    (f) => (value(f, 'agent')
      ? configWrite('PUT', '/v1/config/default-agent', { agent: value(f, 'agent') }, f)
      : configWrite('DELETE', '/v1/config/default-agent', undefined, f)),
    field('agent', {
      label: 'Default agent (calls no route matches)',
      control: agentSelect('agent', agents, d?.value, { disabled: fromEnvironment(d) }),
    }),
    d ? sourceBadge(d) : h('span', { class: 'muted', text: 'none' }),
    fromEnvironment(d) ? null : h('button', { type: 'submit', class: 'secondary' }, 'Save'));

  return h('section', { class: 'card' },
    h('h2', {}, 'Routes'),
    routes.length
      ? h('table', { id: 'config-routes' },
        h('thead', {}, h('tr', {}, ['Number or prefix', 'Agent', 'Source'].map((t) => h('th', { text: t })))),
        h('tbody', {}, rows))
      : h('div', { id: 'config-routes', class: 'empty' }, 'No route.'),
    h('h3', {}, 'Add a route'), add,
    h('h3', {}, 'Default agent'), fallback);
}

// ---- registration accounts and trunks -------------------------------------------------------------

// The body a SIP entry's editor sends: the entry as it is (passwords ***, which keeps them),
// with the fields the form offers as typed. An empty field is left out (the default), an empty
// password keeps the stored one.
function sipBody(form, fields, current) {
  const body = { ...(current ?? {}) };
  delete body.name;
  for (const f of fields) {
    const text = value(form, f.name);
    if (f.secret) {
      if (text) body[f.name] = text;
      continue;
    }
    if (!text) {
      delete body[f.name];
    } else if (f.bool) {
      body[f.name] = text === 'true';
    } else if (f.numeric && /^[0-9]+$/.test(text)) {
      body[f.name] = Number(text);
    } else if (f.list) {
      body[f.name] = text.split(',').map((s) => s.trim()).filter(Boolean);
    } else {
      body[f.name] = text;
    }
  }
  return body;
}

function fieldText(v) {
  if (v === null || v === undefined) return '';
  return Array.isArray(v) ? v.join(', ') : String(v);
}

// The add/edit form of a table of named entries (`accounts`, `trunks` or `webhooks`); `entry`
// is the one being edited.
function sipForm(table, fields, entry) {
  const [name, current] = entry ?? [null, null];
  const { what } = ENTRY_TABLES[table];
  const form = editorForm(`${what}-form`,
    (f) => {
      const target = name ?? value(f, 'name');
      if (!target) {
        showFieldError(f, 'name', `the ${what} needs a name`);
        return false;
      }
      return configWrite('PUT', `/v1/config/${table}/${encodeURIComponent(target)}`,
        sipBody(f, fields, current?.value), f);
    },
    name
      ? h('input', { type: 'hidden', name: 'name', value: name })
      : field('name'),
    fields.map((f) => field(f.name, {
      input: f.secret
        ? {
          type: 'password', autocomplete: 'new-password',
          placeholder: current?.value?.[f.name] ? '*** (empty keeps the stored one)' : '',
        }
        : { value: fieldText(current?.value?.[f.name]), placeholder: f.hint ?? '' },
    })),
    h('div', { class: 'toolbar' },
      h('button', { type: 'submit' }, name ? `Save ${what} ${name}` : `Add ${what}`),
      name ? h('button', {
        type: 'button', class: 'secondary', onclick: reloadConfig,
      }, 'Cancel') : null));
  if (name) form.dataset.name = name;
  return form;
}

// Fills the editor slot of a SIP card with the form for `entry`.
function editEntry(slot, table, fields, entry) {
  slot.replaceChildren(h('h3', {}, `Edit ${entry[0]}`), sipForm(table, fields, entry));
  slot.querySelector('input:not([type=hidden])')?.focus();
}

function accountState(name, registrations) {
  const s = registrations.find((r) => r.account === name);
  return h('span', {
    class: `badge ${s?.state ?? ''}`, data: { accountState: name },
    title: s?.last_error ?? '', text: s?.state ?? '—',
  });
}

function sipCard(table, eff, registrations) {
  const t = ENTRY_TABLES[table];
  const fields = t.fields;
  const entries = Object.entries(eff[table] ?? {});
  const slot = h('div', { class: 'editor-slot' });
  const list = h('form', { class: 'inline-errors' }, h('p', { class: 'form-error bad', hidden: true }));
  const columns = ['Name', ...t.columns, 'Source', ''];
  const rows = entries.map(([name, e]) => {
    const cells = t.cells(name, e.value, registrations);
    const actions = fromEnvironment(e) ? h('span', { class: 'muted', text: 'set by the environment' }) : [
      h('button', {
        type: 'button', class: 'secondary', data: { edit: name },
        onclick: () => editEntry(slot, table, fields, [name, e]),
      }, 'Edit'),
      removeButton(`Remove ${name}`, () => configWrite('DELETE',
        `/v1/config/${table}/${encodeURIComponent(name)}`, undefined, list)),
    ];
    return h('tr', { data: { name } },
      h('td', { text: name }),
      cells.map((c) => h('td', { class: 'mono' }, c instanceof Node ? c : fieldText(c))),
      h('td', {}, sourceBadge(e)),
      h('td', { class: 'actions' }, actions));
  });
  slot.append(h('h3', {}, `Add ${t.what === 'account' ? 'an' : 'a'} ${t.what}`), sipForm(table, fields, null));
  return h('section', { class: 'card' },
    h('h2', {}, t.title),
    entries.length
      ? h('table', { id: `config-${table}` },
        h('thead', {}, h('tr', {}, columns.map((c) => h('th', { text: c })))),
        h('tbody', {}, rows))
      : h('div', { id: `config-${table}`, class: 'empty' }, t.empty),
    list,
    slot);
}

// ---- agent settings and secrets ------------------------------------------------------------------

function agentValuesCard(eff, agents) {
  const rows = [];
  for (const [agent, a] of Object.entries(eff.agents)) {
    for (const [kind, values] of [['settings', a.settings], ['secrets', a.secrets]]) {
      for (const [key, s] of Object.entries(values)) {
        const path = `/v1/config/agents/${encodeURIComponent(agent)}/${kind}/${encodeURIComponent(key)}`;
        const form = editorForm(null, (f) => configWrite('PUT', path, { value: value(f, 'value') }, f),
          h('input', {
            name: 'value', disabled: fromEnvironment(s),
            type: kind === 'secrets' ? 'password' : 'text',
            value: kind === 'secrets' ? '' : s.value,
            placeholder: kind === 'secrets' ? '*** (write-only)' : '',
          }),
          fromEnvironment(s) ? null : h('button', { type: 'submit', class: 'secondary' }, 'Save'),
          fromEnvironment(s) ? null : removeButton(`Remove ${key}`, () => configWrite('DELETE', path, undefined, form)));
        form.classList.add('inline');
        rows.push(h('tr', { data: { agent, kind, key } },
          h('td', { text: agent }), h('td', { text: kind === 'secrets' ? 'secret' : 'setting' }),
          h('td', { class: 'mono', text: key }), h('td', {}, form), h('td', {}, sourceBadge(s))));
      }
    }
  }
  const add = editorForm('agent-value-form', (f) => {
    const [agent, key] = [value(f, 'agent'), value(f, 'key')];
    if (!agent) return showFieldError(f, 'agent', 'choose an agent');
    if (!key) return showFieldError(f, 'key', 'the setting needs a name');
    return configWrite('PUT', `/v1/config/agents/${encodeURIComponent(agent)}/${value(f, 'kind')}/${encodeURIComponent(key)}`,
      { value: f.elements.value.value }, f);
  },
  field('agent', { control: agentSelect('agent', agents) }),
  field('kind', {
    control: h('select', { name: 'kind' },
      h('option', { value: 'settings', text: 'setting' }),
      h('option', { value: 'secrets', text: 'secret (write-only)' })),
  }),
  field('key'),
  field('value'),
  h('button', { type: 'submit' }, 'Set'));
  return h('section', { class: 'card' },
    h('h2', {}, 'Agent settings and secrets'),
    rows.length
      ? h('table', { id: 'config-agent-values' },
        h('thead', {}, h('tr', {}, ['Agent', 'Kind', 'Name', 'Value', 'Source'].map((t) => h('th', { text: t })))),
        h('tbody', {}, rows))
      : h('div', { id: 'config-agent-values', class: 'empty' }, 'No setting or secret.'),
    h('h3', {}, 'Set a setting or a secret'), add);
}

// ---- the audit list ----------------------------------------------------------------------------

const shown = (v) => (v === null || v === undefined ? '—' : typeof v === 'string' ? v : JSON.stringify(v));

function auditRow(c) {
  return h('tr', { data: { id: c.id, target: c.target } },
    h('td', { text: fmtTime(c.at_ms) }),
    h('td', { text: c.who }),
    h('td', { text: c.action }),
    h('td', { class: 'mono', text: c.target }),
    h('td', { class: 'mono data', text: shown(c.before) }),
    h('td', { class: 'mono data', text: shown(c.after) }));
}

function auditCard(changes) {
  return h('section', { class: 'card' },
    h('h2', {}, 'Changes'),
    h('table', { id: 'audit' },
      h('thead', {}, h('tr', {}, ['When', 'Who', 'Action', 'What', 'Before', 'After'].map((t) => h('th', { text: t })))),
      h('tbody', {}, changes.map(auditRow))));
}

// ---- the view and its live updates -----------------------------------------------------------------

async function configView() {
  const [eff, loaded, regs, audit, file] = await Promise.all([
    loadEffective(), api('/v1/agents'), api('/v1/registrations'),
    api(`/v1/config/audit?limit=${AUDIT_LIMIT}`), api('/v1/config')]);
  const agents = [...new Set([...loaded.agents.map((a) => a.name), ...Object.keys(eff.agents)])].sort();
  const notice = configState.notice;
  return h('div', { id: 'config-editors', data: { etag: configState.etag ?? '' } },
    notice ? h('div', { id: 'config-notice', class: `notice ${notice.kind}`, role: 'status', text: notice.text }) : null,
    h('p', { class: 'muted' },
      'Changes apply at once to new calls and are kept across restarts; each value shows where it ' +
      'comes from (file, environment or live change). Values the environment sets are changed there. ' +
      'Changing the configuration needs a token with write scope.'),
    routesCard(eff, agents),
    sipCard('accounts', eff, regs.registrations),
    sipCard('trunks', eff, regs.registrations),
    sipCard('webhooks', eff, regs.registrations),
    agentValuesCard(eff, agents),
    auditCard(audit.changes),
    h('details', { class: 'card' },
      h('summary', {}, 'The file as loaded (with environment overrides; secrets as ***)'),
      h('pre', { id: 'config', class: 'config mono', text: JSON.stringify(file, null, 2) })));
}

// A change from anyone: into the audit list at once; the editors reload unless the operator is
// typing (their save then meets the new ETag, and the 409 reloads).
function onConfigChange(change) {
  const audit = $('#audit tbody');
  if (!audit || audit.querySelector(`tr[data-id="${change.id}"]`)) return;
  audit.prepend(auditRow(change));
  while (audit.childElementCount > AUDIT_LIMIT) audit.lastElementChild.remove();
  refresh('config');
}

// A registration's new state, in place.
function onRegistration(status) {
  const badges = [...document.querySelectorAll('[data-account-state]')];
  // An account this view does not show yet (just added): the view is older than the event.
  if (!badges.some((b) => b.dataset.accountState === status.account)) {
    refresh('config');
    return;
  }
  for (const badge of badges) {
    if (badge.dataset.accountState !== status.account) continue;
    badge.className = `badge ${status.state}`;
    badge.textContent = status.state;
    badge.title = status.last_error ?? '';
  }
}
