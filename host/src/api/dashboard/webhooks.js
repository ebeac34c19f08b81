// Switchboard dashboard: the webhooks view. Each configured webhook's recent deliveries
// (status, attempts, HTTP codes, last error) and the dead letters of all, each with a resend
// button, over /v1/webhooks. Loaded before app.js, whose helpers (h, api, post, render) it
// uses only when called.
'use strict';

const WEBHOOK_LIMIT = 50;

const webhooksState = {
  // What the last resend did, shown until the next one.
  notice: null,
};

async function webhooksView() {
  const file = await api('/v1/config');
  const names = (file.webhooks ?? []).map((w) => w.name);
  const [dead, ...lists] = await Promise.all([
    api(`/v1/webhooks/dead-letters?limit=${WEBHOOK_LIMIT}`),
    ...names.map((n) => api(`/v1/webhooks/${encodeURIComponent(n)}/deliveries?limit=${WEBHOOK_LIMIT}`)),
  ]);
  const notice = webhooksState.notice;
  return h('div', { id: 'webhooks' },
    notice ? h('div', { id: 'webhooks-notice', class: `notice ${notice.kind}`, role: 'status', text: notice.text }) : null,
    h('section', { class: 'card' },
      h('h2', {}, 'Dead letters'),
      h('p', { class: 'muted' },
        'Deliveries that ran out of attempts (or that the receiver refused with 410 Gone). ' +
        'Resend queues one again with the same webhook-id, so a receiver that already has it ignores it.'),
      deliveryTable('dead-letters', dead.deliveries, true)),
    names.length
      ? names.map((name, i) => h('section', { class: 'card', data: { webhook: name } },
        h('h2', {}, `Deliveries to ${name}`),
        deliveryTable(`deliveries-${name}`, lists[i].deliveries, false)))
      : h('section', { class: 'card' }, h('div', { class: 'empty' }, 'No webhook is configured ([[webhooks]]).')));
}

function deliveryTable(id, rows, withWebhook) {
  if (!rows.length) return h('div', { id, class: 'empty' }, 'None.');
  const heads = ['Updated', ...(withWebhook ? ['Webhook'] : []), 'Type', 'Call', 'Status', 'Attempts', 'Codes', 'Last error', ''];
  return h('table', { id },
    h('thead', {}, h('tr', {}, heads.map((t) => h('th', { text: t })))),
    h('tbody', {}, rows.map((d) => h('tr', { data: { delivery: d.id, webhookId: d.webhook_id } },
      h('td', { text: fmtTime(d.updated_at_ms) }),
      withWebhook ? h('td', { text: d.webhook }) : null,
      h('td', { class: 'mono', text: d.type }),
      h('td', { class: 'mono' }, d.payload?.data?.call_id
        ? h('a', { href: `#/call/${encodeURIComponent(d.payload.data.call_id)}`, text: d.payload.data.call_id })
        : '—'),
      h('td', {}, h('span', { class: `badge ${d.status === 'dead' ? 'failed' : d.status === 'delivered' ? 'loaded' : 'registering'}`, text: d.status })),
      h('td', { class: 'num', text: d.attempts }),
      h('td', { class: 'mono', text: d.codes.map((c) => c ?? '—').join(' ') || '—' }),
      h('td', { class: d.last_error ? 'bad' : null, text: d.last_error ?? '—' }),
      h('td', { class: 'actions' }, d.status === 'pending'
        ? null
        : h('button', { type: 'button', class: 'secondary', data: { resend: d.id }, onclick: () => resend(d) }, 'Resend'))))));
}

async function resend(d) {
  try {
    await post(`/v1/webhooks/deliveries/${d.id}/resend`);
    webhooksState.notice = { kind: 'good', text: `${d.type} ${d.webhook_id} queued again for ${d.webhook}.` };
  } catch (err) {
    webhooksState.notice = { kind: 'warn', text: err.message };
  }
  render();
}
