// The dashboard's Queues table: counts by state, oldest wait, throughput, pause/resume.
// The count columns are the states the server counts (the keys of each queue's
// `counts`), so a state it starts counting shows up without a change here.
import { h, say, setText } from './dom.js';
import { formatAge, formatCount, formatRate, stateLabel } from './format.js';
import { countedStates, queuesOf } from './wire.js';

/** `admin` holds ui, api and the session counter. */
export function createQueues(admin) {
  const { ui } = admin;
  const rows = new Map(); // name -> { tr, cells, oldest, rate, badge, button, paused, pending }
  // Until the first figures arrive: the columns admin.html starts with.
  let columns = [...ui.queuesHead.querySelectorAll('th[data-count]')].map((th) => th.dataset.count);

  /** Make the count columns those of `states` (rows are rebuilt: their cells no longer fit). */
  function syncColumns(states) {
    if (!states.length || (states.length === columns.length && states.every((s, i) => s === columns[i]))) return;
    columns = states;
    for (const th of ui.queuesHead.querySelectorAll('th[data-count]')) th.remove();
    ui.queuesHead.firstElementChild.after(...states.map((state) =>
      h('th', { scope: 'col', dataset: { count: state } }, stateLabel(state))));
    for (const row of rows.values()) row.tr.remove();
    rows.clear();
  }

  function buildRow(name) {
    const cells = {};
    const tds = columns.map((state) => {
      cells[state] = h('td', { className: 'num', dataset: { state, label: state } }, '0');
      return cells[state];
    });
    const row = {
      cells, paused: false, pending: false,
      oldest: h('td', { className: 'num', dataset: { label: 'oldest waiting' } }),
      rate: h('td', { className: 'num', dataset: { label: 'per min' } }),
      badge: h('span', { className: 'badge' }),
      button: h('button', { type: 'button', className: 'btn btn-small' }),
    };
    row.button.addEventListener('click', () => toggle(name, row));
    row.tr = h('tr', { 'data-testid': 'queue-row', dataset: { queue: name } },
      h('th', { scope: 'row', text: name }), tds, row.oldest, row.rate,
      h('td', { dataset: { label: 'status' } }, row.badge), h('td', { className: 'actions' }, row.button));
    return row;
  }

  function renderButton(name, row) {
    const b = row.button;
    b.dataset.testid = row.paused ? 'resume-button' : 'pause-button';
    b.disabled = row.pending;
    setText(b, row.pending ? (row.paused ? 'Resuming…' : 'Pausing…') : (row.paused ? 'Resume' : 'Pause'));
    b.setAttribute('aria-label', `${b.textContent} queue ${name}`);
    row.tr.dataset.paused = String(row.paused);
    setText(row.badge, row.paused ? 'Paused' : 'Running');
    row.badge.dataset.paused = String(row.paused);
  }

  /** Show `GET /api/queues` or a `queues:stats` push. */
  function render(data) {
    const list = queuesOf(data);
    setText(ui.workers, Number.isFinite(data && data.workers) ? String(data.workers) : '—');
    syncColumns(countedStates(list));
    const seen = new Set();
    list.forEach((q, index) => {
      const name = String(q.name);
      seen.add(name);
      let row = rows.get(name);
      if (!row) { row = buildRow(name); rows.set(name, row); }
      const counts = q.counts && typeof q.counts === 'object' ? q.counts : {};
      for (const state of columns) setText(row.cells[state], formatCount(counts[state]));
      setText(row.oldest, formatAge(q.oldest_waiting_s));
      setText(row.rate, formatRate(q.throughput_per_min));
      if (!row.pending) row.paused = q.paused === true;
      renderButton(name, row);
      // Move only rows that are out of place (moving a row would drop the focus of its button).
      if (ui.queues.children[index] !== row.tr) ui.queues.insertBefore(row.tr, ui.queues.children[index] || null);
    });
    for (const [name, row] of rows) if (!seen.has(name)) { row.tr.remove(); rows.delete(name); }
    if (!list.length) say(ui.queuesStatus, 'No queues.');
    else if (ui.queuesStatus.dataset.kind !== 'error' && ui.queuesStatus.dataset.kind !== 'ok') say(ui.queuesStatus, '');
    const at = data && data.at ? new Date(data.at) : new Date();
    setText(ui.queuesAt, `Updated ${Number.isNaN(at.getTime()) ? '' : at.toLocaleTimeString()}`);
  }

  async function load() {
    const gen = admin.session;
    if (!rows.size) say(ui.queuesStatus, 'Loading…');
    try {
      const data = await admin.api('/api/queues');
      if (gen === admin.session) render(data);
    } catch (err) {
      if (!err.quiet) say(ui.queuesStatus, `Could not load the queues: ${err.message}`, 'error');
    }
  }

  async function toggle(name, row) {
    if (row.pending) return;
    const hadFocus = document.activeElement === row.button;
    const action = row.paused ? 'resume' : 'pause';
    row.pending = true;
    renderButton(name, row);
    try {
      const data = await admin.api(`/api/queues/${encodeURIComponent(name)}/${action}`, 'POST');
      row.paused = data && typeof data.paused === 'boolean' ? data.paused : action === 'pause';
      say(ui.queuesStatus, `Queue ${name} ${row.paused ? 'paused' : 'resumed'}.`, 'ok');
    } catch (err) {
      if (!err.quiet) say(ui.queuesStatus, `Could not ${action} queue ${name}: ${err.message}`, 'error');
    } finally {
      row.pending = false;
      renderButton(name, row);
      if (hadFocus && row.tr.isConnected && document.activeElement === document.body) row.button.focus();
    }
  }

  function reset() {
    rows.clear();
    ui.queues.replaceChildren();
  }

  return { render, load, reset };
}
