// The dashboard's dead-letter queue: failed jobs that match the search form (its filters
// in the page's URL as `dlq.*`), retried or deleted one by one or all that match; kept
// current by `job:*` and `dlq:removed` pushes (a new dead letter joins only when every
// filter set can be checked on the pushed job, as in the jobs list).
import { busy, h, idTag, say, setText } from './dom.js';
import { buildQuery, formatTimestamp, shortId } from './format.js';
import {
  activeFilters, checkableLive, describeFilters, DLQ_FILTERS, DLQ_PREFIX, dlqItemFromJob, dlqMatches,
  emptyFilters, sameFilters,
} from './admin-model.js';
import { createFilterForm } from './admin-filters.js';
import { pageOf } from './wire.js';

const PAGE_SIZE = 50;

/** `admin` holds ui, api, cache (the newest copy of each job) and detail. */
export function createDeadLetters(admin) {
  const { ui } = admin;
  const view = { filter: emptyFilters(DLQ_FILTERS), items: new Map(), gen: 0, loading: false, loaded: false, touched: new Map(), nextBefore: null };
  const form = createFilterForm({
    form: ui.dlqFilter, more: ui.dlqMoreFilters, clear: ui.dlqFilterClear, error: ui.dlqFilterError, prefix: DLQ_PREFIX,
    fields: {
      id: ui.dlqId, type: ui.dlqType, error: ui.dlqError, queue: ui.dlqQueue, user: ui.dlqUser,
      filename: ui.dlqFilename, from: ui.dlqFrom, to: ui.dlqTo,
    },
  });

  function buildItem(item) {
    const job = item.job;
    const id = String(job.id);
    const feedback = h('p', { className: 'row-feedback', role: 'alert' });
    const retry = h('button', { type: 'button', className: 'btn btn-small', 'data-testid': 'dlq-retry', 'aria-label': `Retry job ${id}`, text: 'Retry' });
    const del = h('button', { type: 'button', className: 'btn btn-small btn-danger', 'data-testid': 'dlq-delete', 'aria-label': `Delete dead letter ${id}`, text: 'Delete' });
    const details = h('button', { type: 'button', className: 'btn btn-small btn-ghost', 'aria-haspopup': 'dialog', 'aria-label': `Details of job ${id}`, text: 'Details', onclick: () => admin.detail.open(job.id) });
    retry.addEventListener('click', () => act(id, retry, feedback, 'retry'));
    del.addEventListener('click', () => act(id, del, feedback, 'delete'));
    const err = item.error || {};
    return h('li', { className: 'row dlq-item', 'data-testid': 'dlq-item', dataset: { jobId: id } },
      h('div', { className: 'dlq-main' },
        h('p', { className: 'dlq-title' }, h('span', { className: 'row-type', text: job.type || '' }), ' ',
          idTag(id)),
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
      const item = dlqItemFromJob(job);
      if (name === 'job:failed' && checkableLive(view.filter) && !ui.dlqFilterError.textContent && dlqMatches(item, view.filter)) upsert(item, true);
    } else if (view.items.has(id)) {
      remove(id);
    }
    updateChrome();
  }

  function updateChrome() {
    const filtered = activeFilters(view.filter).length > 0;
    ui.dlqMore.hidden = !view.nextBefore || view.loading;
    ui.dlqEmpty.hidden = view.items.size > 0 || view.loading || (ui.dlqStatus.dataset.kind === 'error' && !view.loaded)
      || !!ui.dlqFilterError.textContent;
    setText(ui.dlqEmpty, !filtered ? 'The dead-letter queue is empty.'
      : checkableLive(view.filter) ? 'No dead letters match this search.'
        : 'No dead letters match this search. New matches appear after Refresh.');
    // The bulk actions act on what the search shows: every match, beyond the loaded page too.
    if (!ui.dlqRetryAll.disabled) setText(ui.dlqRetryAll, filtered ? 'Retry all that match' : 'Retry all');
    if (!ui.dlqDeleteAll.disabled) setText(ui.dlqDeleteAll, filtered ? 'Delete all that match' : 'Delete all');
  }

  async function load(more = false) {
    const gen = ++view.gen;
    if (!more) {
      view.filter = form.apply();
      view.touched.clear();
    }
    const f = view.filter;
    view.loading = true;
    say(ui.dlqStatus, 'Loading…');
    ui.dlqMore.hidden = true;
    try {
      const query = buildQuery({ ...f, limit: PAGE_SIZE, before: more ? view.nextBefore : null });
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
      if (err.status === 400 && !more) {
        // A filter the server refused (invalid_filter): its message goes next to the form.
        view.items.clear();
        ui.dlq.replaceChildren();
        view.nextBefore = null;
        say(ui.dlqStatus, '');
        form.showError(err.message);
      } else {
        say(ui.dlqStatus, `Could not load the dead-letter queue: ${err.message}`, 'error');
      }
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

  /**
   * The search the bulk actions act on: the form's, applied first if it was still being
   * typed; null while the server refuses it (nothing is retried or deleted then).
   */
  async function settledFilter() {
    if (!sameFilters(form.read(), view.filter)) await load();
    return ui.dlqFilterError.textContent ? null : view.filter;
  }

  /** A bulk action refused: a filter the server refused goes next to the form. */
  function bulkFailed(err, what) {
    if (err.quiet) return;
    if (err.status === 400) form.showError(err.message);
    else say(ui.dlqStatus, `Could not ${what}: ${err.message}`, 'error');
  }

  async function retryAll() {
    if (ui.dlqRetryAll.disabled) return;
    const f = await settledFilter();
    if (!f) return;
    const filtered = activeFilters(f).length > 0;
    const yes = await confirm(filtered ? `Retry every dead letter with ${describeFilters(f)}?` : 'Retry every job in the dead-letter queue?',
      filtered ? 'Retry all that match' : 'Retry all', false);
    if (!yes) { ui.dlqRetryAll.focus(); return; }
    try {
      const data = await busy(ui.dlqRetryAll, 'Retrying…', () => admin.api(`/api/dlq/retry${buildQuery(f)}`, 'POST'));
      const retried = data && Array.isArray(data.retried) ? data.retried : [];
      const errors = data && Array.isArray(data.errors) ? data.errors : [];
      for (const id of retried) remove(id);
      // Matches beyond the loaded page may have gone too: the list is loaded again.
      if (filtered) await load();
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
      bulkFailed(err, 'retry');
    }
    updateChrome();
  }

  async function deleteAll() {
    if (ui.dlqDeleteAll.disabled) return;
    const f = await settledFilter();
    if (!f) return;
    const filtered = activeFilters(f).length > 0;
    const yes = await confirm(filtered
      ? `Delete every dead letter with ${describeFilters(f)}? The jobs stay failed; this cannot be undone.`
      : 'Delete every entry of the dead-letter queue? The jobs stay failed; this cannot be undone.',
    filtered ? 'Delete all that match' : 'Delete all', true);
    if (!yes) { ui.dlqDeleteAll.focus(); return; }
    try {
      await busy(ui.dlqDeleteAll, 'Deleting…', () => admin.api(`/api/dlq${buildQuery(f)}`, 'DELETE'));
      if (filtered) {
        await load(); // the server pushes the ids it removed; the rest of the search shows now
        say(ui.dlqStatus, `Deleted the dead letters with ${describeFilters(f)}.`, 'ok');
      } else {
        view.items.clear();
        ui.dlq.replaceChildren();
        view.nextBefore = null;
        say(ui.dlqStatus, 'The dead-letter queue was cleared.', 'ok');
      }
    } catch (err) {
      bulkFailed(err, 'delete');
    }
    updateChrome();
  }

  /** A real in-page confirmation; resolves true only for the Confirm button (red when `danger`). */
  function confirm(text, yesLabel, danger) {
    return new Promise((resolve) => {
      setText(ui.confirmText, text);
      setText(ui.confirmYes, yesLabel);
      ui.confirmYes.classList.toggle('btn-danger-solid', danger);
      ui.confirmYes.classList.toggle('btn-primary', !danger);
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
    ui.dlqDeleteAll.addEventListener('click', deleteAll);
    // The form is filled from the URL here, before the first load.
    form.listen(() => { if (!sameFilters(form.read(), view.filter)) load(); });
    ui.dlqRefresh.addEventListener('click', () => load());
    ui.dlqMore.addEventListener('click', () => load(true));
  }

  return { load, onJob, onRemoved, reset, listen };
}
