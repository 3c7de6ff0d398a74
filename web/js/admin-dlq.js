// The dashboard's dead-letter queue: failed jobs (filtered by type and error), retried or
// deleted one by one or all at once; kept current by `job:*` and `dlq:removed` pushes.
import { busy, h, say, setText } from './dom.js';
import { buildQuery, formatTimestamp, shortId } from './format.js';
import { dlqItemFromJob, dlqMatches } from './admin-model.js';
import { pageOf } from './wire.js';

const PAGE_SIZE = 50;
const FILTER_DELAY_MS = 400;

/** `admin` holds ui, api, cache (the newest copy of each job) and detail. */
export function createDeadLetters(admin) {
  const { ui } = admin;
  const view = { filter: { type: '', error: '' }, items: new Map(), gen: 0, loading: false, loaded: false, touched: new Map(), nextBefore: null };

  function buildItem(item) {
    const job = item.job;
    const id = String(job.id);
    const feedback = h('p', { className: 'row-feedback', role: 'alert' });
    const retry = h('button', { type: 'button', className: 'btn btn-small', 'data-testid': 'dlq-retry', 'aria-label': `Retry job ${shortId(id)}`, text: 'Retry' });
    const del = h('button', { type: 'button', className: 'btn btn-small btn-danger', 'data-testid': 'dlq-delete', 'aria-label': `Delete dead letter ${shortId(id)}`, text: 'Delete' });
    const details = h('button', { type: 'button', className: 'btn btn-small btn-ghost', 'aria-haspopup': 'dialog', 'aria-label': `Details of job ${shortId(id)}`, text: 'Details', onclick: () => admin.detail.open(job.id) });
    retry.addEventListener('click', () => act(id, retry, feedback, 'retry'));
    del.addEventListener('click', () => act(id, del, feedback, 'delete'));
    const err = item.error || {};
    return h('li', { className: 'row dlq-item', 'data-testid': 'dlq-item', dataset: { jobId: id } },
      h('div', { className: 'dlq-main' },
        h('p', { className: 'dlq-title' }, h('span', { className: 'row-type', text: job.type || '' }), ' ',
          h('span', { className: 'mono', title: id, text: shortId(id) })),
        h('p', { className: 'dlq-error' }, h('strong', { text: err.type || 'Error' }), err.message ? `: ${err.message}` : ''),
        h('p', { className: 'dlq-meta', text: `${item.attempts ?? '?'} attempt${item.attempts === 1 ? '' : 's'} · failed ${formatTimestamp(item.failed_at)}` }),
        feedback),
      h('div', { className: 'actions' }, details, retry, del));
  }

  function upsert(item, atTop) {
    const id = String(item.job.id);
    const li = buildItem(item);
    const old = view.items.get(id);
    view.items.set(id, li);
    if (old) old.replaceWith(li);
    else if (atTop) ui.dlq.prepend(li);
    else ui.dlq.append(li);
  }

  function remove(id) {
    const li = view.items.get(String(id));
    if (!li) return;
    const hadFocus = li.contains(document.activeElement);
    const next = li.nextElementSibling || li.previousElementSibling;
    li.remove();
    view.items.delete(String(id));
    if (hadFocus) (next ? next.querySelector('button') : ui.dlqRetryAll).focus();
    updateChrome();
  }

  /** A job moved: a `job:failed` one joins (if the filter shows it), any other state leaves. */
  function apply(name, job) {
    const id = String(job.id);
    if (job.state === 'failed') {
      if (name === 'job:failed' && dlqMatches(dlqItemFromJob(job), view.filter)) upsert(dlqItemFromJob(job), true);
    } else if (view.items.has(id)) {
      remove(id);
    }
    updateChrome();
  }

  function updateChrome() {
    ui.dlqMore.hidden = !view.nextBefore || view.loading;
    ui.dlqEmpty.hidden = view.items.size > 0 || view.loading || (ui.dlqStatus.dataset.kind === 'error' && !view.loaded);
    setText(ui.dlqEmpty, view.filter.type || view.filter.error ? 'No dead letters match this filter.' : 'The dead-letter queue is empty.');
  }

  async function load(more = false) {
    const gen = ++view.gen;
    if (!more) {
      view.filter = { type: ui.dlqType.value.trim(), error: ui.dlqError.value.trim() };
      view.touched.clear();
    }
    const f = view.filter;
    view.loading = true;
    say(ui.dlqStatus, 'Loading…');
    ui.dlqMore.hidden = true;
    try {
      const query = buildQuery({ limit: PAGE_SIZE, type: f.type, error: f.error, before: more ? view.nextBefore : null });
      const page = pageOf(await admin.api(`/api/dlq${query}`));
      if (gen !== view.gen) return;
      if (!more) { view.items.clear(); ui.dlq.replaceChildren(); }
      for (const item of page.items) {
        if (!item || !item.job || item.job.id == null) continue;
        const job = admin.cache.remember(item.job);
        if (job.state === 'failed' && !view.items.has(String(job.id))) upsert({ ...item, job }, false);
      }
      view.nextBefore = page.nextBefore;
      view.loading = false;
      view.loaded = true;
      say(ui.dlqStatus, '');
      // Events that arrived while loading win over the (possibly older) list.
      for (const [id, name] of view.touched) if (admin.cache.has(id)) apply(name, admin.cache.get(id));
      view.touched.clear();
    } catch (err) {
      if (gen !== view.gen || err.quiet) return;
      view.loading = false;
      say(ui.dlqStatus, `Could not load the dead-letter queue: ${err.message}`, 'error');
    }
    updateChrome();
  }

  async function act(id, btn, feedback, action) {
    say(feedback, '');
    try {
      await busy(btn, action === 'retry' ? 'Retrying…' : 'Deleting…', () => (action === 'retry'
        ? admin.api(`/api/dlq/${encodeURIComponent(id)}/retry`, 'POST')
        : admin.api(`/api/dlq/${encodeURIComponent(id)}`, 'DELETE')));
      say(ui.dlqStatus, action === 'retry' ? `Job ${shortId(id)} queued again.` : `Dead letter ${shortId(id)} deleted.`, 'ok');
      remove(id);
    } catch (err) {
      if (err.status === 404 && action === 'delete') { remove(id); return; }
      if (!err.quiet) say(feedback, `Could not ${action}: ${err.message}`, 'error');
    }
  }

  async function retryAll() {
    if (ui.dlqRetryAll.disabled) return;
    try {
      const data = await busy(ui.dlqRetryAll, 'Retrying…', () => admin.api('/api/dlq/retry', 'POST'));
      const retried = data && Array.isArray(data.retried) ? data.retried : [];
      const errors = data && Array.isArray(data.errors) ? data.errors : [];
      for (const id of retried) remove(id);
      for (const e of errors) {
        const li = e && view.items.get(String(e.job_id));
        const fb = li && li.querySelector('.row-feedback');
        if (fb) say(fb, `Could not retry: ${(e.error && e.error.message) || 'unknown error'}`, 'error');
      }
      const text = retried.length || errors.length
        ? `Retried ${retried.length} job${retried.length === 1 ? '' : 's'}.${errors.length ? ` ${errors.length} could not be retried.` : ''}`
        : 'Nothing to retry.';
      say(ui.dlqStatus, text, errors.length ? 'error' : 'ok');
    } catch (err) {
      if (!err.quiet) say(ui.dlqStatus, `Could not retry: ${err.message}`, 'error');
    }
  }

  async function clearAll() {
    if (ui.dlqClear.disabled) return;
    const yes = await confirm('Delete every entry of the dead-letter queue? The jobs stay failed; this cannot be undone.', 'Clear all');
    if (!yes) { ui.dlqClear.focus(); return; }
    try {
      await busy(ui.dlqClear, 'Clearing…', () => admin.api('/api/dlq', 'DELETE'));
      view.items.clear();
      ui.dlq.replaceChildren();
      view.nextBefore = null;
      say(ui.dlqStatus, 'The dead-letter queue was cleared.', 'ok');
      updateChrome();
    } catch (err) {
      if (!err.quiet) say(ui.dlqStatus, `Could not clear: ${err.message}`, 'error');
    }
  }

  /** A real in-page confirmation; resolves true only for the Confirm button. */
  function confirm(text, yesLabel) {
    return new Promise((resolve) => {
      setText(ui.confirmText, text);
      setText(ui.confirmYes, yesLabel);
      ui.confirm.returnValue = '';
      ui.confirm.addEventListener('close', () => resolve(ui.confirm.returnValue === 'yes'), { once: true });
      ui.confirm.showModal();
    });
  }

  /** A live event brought news of `job` (already remembered). */
  function onJob(name, job) {
    if (view.loading) view.touched.set(job.id, name);
    apply(name, job);
  }

  /** Another admin deleted entries (or cleared the queue): mirror it here. */
  function onRemoved(payload) {
    if (payload && payload.all) {
      for (const id of [...view.items.keys()]) remove(id);
    } else if (payload && Array.isArray(payload.job_ids)) {
      for (const id of payload.job_ids) remove(id);
    }
  }

  function reset() {
    view.gen += 1;
    view.items.clear();
    view.loaded = false;
    ui.dlq.replaceChildren();
    ui.dlqEmpty.hidden = true;
    ui.dlqMore.hidden = true;
  }

  function listen() {
    ui.dlqRetryAll.addEventListener('click', retryAll);
    ui.dlqClear.addEventListener('click', clearAll);
    let timer = 0;
    const filterChanged = () => {
      if (ui.dlqType.value.trim() !== view.filter.type || ui.dlqError.value.trim() !== view.filter.error) load();
    };
    for (const input of [ui.dlqType, ui.dlqError]) {
      input.addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(filterChanged, FILTER_DELAY_MS); });
      input.addEventListener('keydown', (e) => { if (e.key === 'Enter') { clearTimeout(timer); filterChanged(); } });
    }
    ui.dlqFilter.addEventListener('submit', (e) => e.preventDefault());
    ui.dlqMore.addEventListener('click', () => load(true));
  }

  return { load, onJob, onRemoved, reset, listen };
}
