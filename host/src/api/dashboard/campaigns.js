// Switchboard dashboard: the campaigns view. Every outbound campaign with its state and
// progress, kept current from the live stream's `campaign` events; one campaign's settings,
// outcome counts and contacts (each attempt's call linked to its detail), the controls its
// state allows, and its results as CSV. Loaded before app.js, whose helpers (h, api, post,
// request, render, refresh) it uses only when called.
'use strict';

// The controls each campaign state allows (the API refuses the others with 409).
const CAMPAIGN_CONTROLS = {
  ready: ['start', 'cancel'],
  running: ['pause', 'cancel'],
  paused: ['resume', 'cancel'],
  cancelled: [],
  finished: [],
};
const CAMPAIGN_BADGE = { running: 'active', paused: 'registering', cancelled: 'failed', finished: 'ended' };

const campaignsState = {
  // Why the last control was refused (`{ id, text }`), shown on that campaign until the next.
  notice: null,
};

async function campaignsView() {
  const { campaigns } = await api('/v1/campaigns');
  const body = campaigns.length
    ? h('table', { id: 'campaigns' },
      h('thead', {}, h('tr', {}, ['Created', 'Name', 'State'].map((t) => h('th', { text: t })),
        ['Contacts', 'Pending', 'Dialling', 'Done', 'Attempts'].map((t) => h('th', { class: 'num', text: t })),
        h('th', { text: 'Outcomes' }))),
      h('tbody', {}, campaigns.map(campaignRow)))
    : h('div', { id: 'campaigns', class: 'empty' }, 'No campaign yet (POST /v1/campaigns creates one).');
  return h('section', { class: 'card' }, h('h2', {}, 'Campaigns'), body);
}

function campaignRow(p) {
  const c = p.campaign;
  return h('tr', { data: { campaign: c.id, state: c.state } },
    h('td', { text: fmtTime(c.created_at_ms) }),
    h('td', {}, h('a', { href: `#/campaign/${encodeURIComponent(c.id)}`, text: c.name })),
    h('td', {}, campaignBadge(c.state)),
    [p.contacts, p.pending, p.dialing, p.done, p.attempts].map((n) => h('td', { class: 'num', text: fmtInt(n) })),
    h('td', { class: 'outcomes', text: p.outcomes.map(([o, n]) => `${o} ${n}`).join(', ') || '—' }));
}

const campaignBadge = (s) => h('span', { class: `badge campaign-state ${CAMPAIGN_BADGE[s] ?? ''}`, text: s });

// A `campaign` event carries the campaign's whole progress: the list redraws its row from it;
// the campaign's own view is read again, since its contacts are not in the event.
function onCampaign(p) {
  const view = state.view;
  if (view?.name === 'campaigns') {
    const row = document.querySelector(`#campaigns tr[data-campaign="${CSS.escape(p.campaign.id)}"]`);
    if (row) row.replaceWith(campaignRow(p));
    else refresh('campaigns');
  } else if (view?.name === 'campaign' && view.id === p.campaign.id) {
    refresh('campaign');
  }
}

async function campaignView(view) {
  const path = `/v1/campaigns/${encodeURIComponent(view.id)}`;
  const [p, { contacts }] = await Promise.all([api(path), api(`${path}/contacts`)]);
  const c = p.campaign;
  const s = c.settings;
  const notice = campaignsState.notice?.id === c.id ? campaignsState.notice.text : null;
  const fact = (label, value) => h('div', {}, h('dt', { text: label }), h('dd', { text: value ?? '—' }));
  const w = s.window;
  const retries = Object.entries(s.retry ?? {})
    .map(([why, r]) => `${why.replace('_', ' ')}: again after ${r.delay_s} s, up to ${r.max_attempts} in all`).join('; ');
  return h('div', { id: 'campaign', data: { campaign: c.id, state: c.state } },
    h('section', { class: 'card' },
      h('div', { class: 'detail-head' },
        h('a', { href: '#/campaigns' }, '← Campaigns'),
        h('h2', { text: c.name }),
        campaignBadge(c.state),
        h('span', { class: 'spacer' }),
        campaignControls(c),
        resultsLink(c.id)),
      notice ? h('div', { id: 'campaign-notice', class: 'notice warn', role: 'status', text: notice }) : null,
      h('dl', { class: 'facts' },
        fact('Agent', s.agent ?? (s.number ? `as dialled to ${s.number}` : null)),
        fact('Via', s.via),
        fact('Caller id', s.from),
        fact('Pacing', `${s.pacing.max_concurrent} at once, ${s.pacing.calls_per_second} calls/s`),
        fact('Window', `${w.days.join(' ')} ${w.start}–${w.end}${w.holidays.length ? `, not ${w.holidays.join(' ')}` : ''}`),
        fact('Default time zone', s.default_time_zone),
        fact('Attempts per day', s.max_attempts_per_day),
        fact('Retries', retries || null),
        fact('Opt-out key', s.opt_out_key),
        fact('Until', s.until),
        fact('Consent basis', s.consent_basis),
        fact('Created', fmtTime(c.created_at_ms)))),
    h('section', { class: 'card' },
      h('h2', {}, 'Progress'),
      h('table', { id: 'campaign-progress' },
        h('thead', {}, h('tr', {}, ['Contacts', 'Pending', 'Dialling', 'Done', 'Attempts']
          .map((t) => h('th', { class: 'num', text: t })))),
        h('tbody', {}, h('tr', {}, ['contacts', 'pending', 'dialing', 'done', 'attempts']
          .map((k) => h('td', { class: 'num', data: { count: k }, text: fmtInt(p[k]) }))))),
      h('h3', {}, 'Outcomes'),
      p.outcomes.length
        ? h('table', { id: 'campaign-outcomes' },
          h('tbody', {}, p.outcomes.map(([o, n]) => h('tr', { data: { outcome: o } },
            h('td', { text: o }), h('td', { class: 'num', text: fmtInt(n) })))))
        : h('div', { id: 'campaign-outcomes', class: 'empty' }, 'No contact done yet.')),
    h('section', { class: 'card' },
      h('h2', {}, 'Contacts'),
      h('table', { id: 'campaign-contacts' },
        h('thead', {}, h('tr', {}, ['Number', 'Name', 'State'].map((t) => h('th', { text: t })),
          h('th', { class: 'num', text: 'Attempts' }),
          ['Outcome', 'Agent outcome', 'Calls'].map((t) => h('th', { text: t })))),
        h('tbody', {}, contacts.map(contactRow)))));
}

function contactRow(k) {
  const calls = k.attempts.filter((a) => a.call_id);
  return h('tr', { data: { number: k.number } },
    h('td', { class: 'mono', text: k.number }),
    h('td', { text: k.name || '—' }),
    h('td', { text: k.state }),
    h('td', { class: 'num', text: k.attempts_made }),
    h('td', { class: 'outcome', text: k.outcome ?? '—' }),
    h('td', { text: k.agent_outcome ?? '—' }),
    h('td', { class: 'calls' }, calls.length ? calls.map((a) => h('a', {
      href: `#/call/${encodeURIComponent(a.call_id)}`, class: 'mono', title: a.call_id, data: { call: a.call_id },
      text: `#${a.attempt} ${a.outcome ?? 'in progress'}`,
    })) : '—'));
}

function campaignControls(c) {
  const buttons = CAMPAIGN_CONTROLS[c.state].map((action) => h('button', {
    type: 'button', class: action === 'cancel' ? 'secondary danger-text' : null, data: { control: action },
    onclick: () => controlCampaign(c.id, action, buttons),
  }, action[0].toUpperCase() + action.slice(1)));
  return h('span', { class: 'controls' }, buttons);
}

async function controlCampaign(id, action, buttons = []) {
  for (const b of buttons) b.disabled = true;
  campaignsState.notice = null;
  try {
    await post(`/v1/campaigns/${encodeURIComponent(id)}/${action}`);
  } catch (err) {
    // A 409 says why in the API's words (another operator changed the campaign meanwhile).
    if (err.status === 409) campaignsState.notice = { id, text: err.detail };
    else showError(err);
  }
  render(false);
}

// The export is fetched with the token and saved from a blob URL: a plain link would not send
// the Authorization header. Each click fetches it afresh.
function resultsLink(id) {
  const link = h('a', {
    id: 'campaign-results', href: '#', download: `${id}.csv`,
    onclick: async (event) => {
      if (link.dataset.fetched) {
        // The click below, on the fetched file: let the browser save it.
        delete link.dataset.fetched;
        return;
      }
      event.preventDefault();
      const path = `/v1/campaigns/${encodeURIComponent(id)}/results.csv`;
      try {
        const resp = await request(path);
        if (!resp.ok) throw new ApiError(resp.status, await resp.json().catch(() => ({})), path);
        if (link.href.startsWith('blob:')) URL.revokeObjectURL(link.href);
        link.href = URL.createObjectURL(await resp.blob());
        link.dataset.fetched = 'yes';
        link.click();
      } catch (err) {
        showError(err);
      }
    },
  }, 'Results CSV');
  return link;
}
