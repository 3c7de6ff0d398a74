// The dashboard's Jobs: a page of `GET /api/jobs` that matches the search form (its
// filters kept in the page's URL), then kept current by live events: a listed job is
// updated in place or leaves as its state changes; a job not listed joins only when every
// filter set can be checked on the pushed job itself (admin-model.js checkableLive).
import { h, idTag, say, setText } from './dom.js';
import { buildQuery, clampPercent } from './format.js';
import { activeFilters, checkableLive, emptyFilters, JOB_FILTERS, jobMatches, sameFilters } from './admin-model.js';
import { createFilterForm } from './admin-filters.js';
import { pageOf } from './wire.js';

const MAX_ROWS = 200;
const PAGE_SIZE = 50;

/** `admin` holds ui, api, cache (the newest copy of each job) and detail. */
export function createJobs(admin) {
  const { ui } = admin;
  const view = { filter: emptyFilters(JOB_FILTERS), rows: new Map(), gen: 0, loading: false, touched: new Set(), nextBefore: null };
  const form = createFilterForm({
    form: ui.jobsFilter, more: ui.jobsMoreFilters, clear: ui.jobsClear, error: ui.jobsFilterError,
    fields: {
      id: ui.jobsId, state: ui.jobsState, type: ui.jobsType, error: ui.jobsError, queue: ui.jobsQueue,
      user: ui.jobsUser, filename: ui.jobsFilename, sha256: ui.jobsSha256, from: ui.jobsFrom, to: ui.jobsTo,
    },
  });

  function buildRow(job) {
    const r = {
      id: idTag(job.id, 'mono row-id'),
      type: h('span', { className: 'row-type' }),
      badge: h('span', { className: 'badge' }),
      stage: h('span', { className: 'row-stage' }),
      bar: h('progress', { className: 'bar', max: 100, value: 0 }),
      attempt: h('span', { className: 'row-attempt' }),
      error: h('span', { className: 'row-error' }),
    };
    const open = h('button', { type: 'button', className: 'row-open', 'aria-haspopup': 'dialog', onclick: () => admin.detail.open(job.id) },
      r.id, r.type, r.badge, r.stage, r.bar, r.attempt, r.error);
    r.li = h('li', { className: 'row job-row', 'data-testid': 'job-row', dataset: { jobId: String(job.id) } }, open);
    return r;
  }

  function renderRow(r, job) {
    r.job = job;
    r.li.dataset.state = job.state || '';
    setText(r.type, job.type || '');
    setText(r.badge, job.state || '');
    setText(r.stage, job.stage || '');
    const pct = clampPercent(job.progress);
    if (r.bar.value !== pct) r.bar.value = pct;
    r.bar.setAttribute('aria-label', `Progress ${pct}%`);
    setText(r.attempt, job.attempt == null ? '' : `${job.attempt}/${job.max_attempts ?? '?'}`);
    r.attempt.title = 'Attempt / max attempts';
    setText(r.error, job.error && typeof job.error === 'object' ? job.error.message || job.error.type || '' : '');
  }

  /** Add a row: at the end (a loaded page), or by id (newest first) for a pushed job. */
  function addRow(job, inOrder) {
    let next = null;
    if (inOrder) {
      const id = String(job.id);
      next = [...ui.jobs.children].find((li) => li.dataset.jobId < id) || null;
      if (!next && view.nextBefore) return; // older than the loaded pages: Load more finds it
    }
    const r = buildRow(job);
    renderRow(r, job);
    view.rows.set(job.id, r);
    ui.jobs.insertBefore(r.li, next);
    while (view.rows.size > MAX_ROWS) {
      const last = ui.jobs.lastElementChild;
      if (!last) break;
      view.rows.delete(last.dataset.jobId);
      last.remove();
      view.nextBefore = ui.jobs.lastElementChild ? ui.jobs.lastElementChild.dataset.jobId : null;
    }
  }

  /** Insert, update in place or remove the row of `job` according to the filter. */
  function apply(job) {
    const r = view.rows.get(job.id);
    if (jobMatches(job, view.filter)) {
      if (r) renderRow(r, job);
      else if (checkableLive(view.filter) && !ui.jobsFilterError.textContent) addRow(job, true);
    } else if (r) {
      r.li.remove();
      view.rows.delete(job.id);
    }
  }

  function updateChrome() {
    const n = view.rows.size;
    setText(ui.jobsCount, n ? `${n} shown` : '');
    ui.jobsMore.hidden = !view.nextBefore || view.loading;
    ui.jobsEmpty.hidden = n > 0 || view.loading || ui.jobsStatus.dataset.kind === 'error' || !!ui.jobsFilterError.textContent;
    setText(ui.jobsEmpty, !activeFilters(view.filter).length ? 'No jobs yet. New ones appear here live.'
      : checkableLive(view.filter) ? 'No jobs match this search. New matches appear here live.'
        : 'No jobs match this search. New matches appear after Refresh.');
  }

  async function load(more = false) {
    const gen = ++view.gen;
    if (!more) {
      view.filter = form.apply();
      view.touched.clear();
    }
    const f = view.filter;
    view.loading = true;
    say(ui.jobsStatus, 'Loading…');
    ui.jobsMore.hidden = true;
    try {
      const query = buildQuery({ ...f, limit: PAGE_SIZE, before: more ? view.nextBefore : null });
      const page = pageOf(await admin.api(`/api/jobs${query}`));
      if (gen !== view.gen) return;
      if (!more) { view.rows.clear(); ui.jobs.replaceChildren(); }
      for (const item of page.items) {
        if (!item || item.id == null) continue;
        const job = admin.cache.remember(item);
        if (jobMatches(job, f) && !view.rows.has(job.id)) addRow(job, false);
      }
      view.nextBefore = page.nextBefore;
      view.loading = false;
      say(ui.jobsStatus, '');
      // Events that arrived while loading win over the (possibly older) list.
      for (const id of view.touched) if (admin.cache.has(id)) apply(admin.cache.get(id));
      view.touched.clear();
    } catch (err) {
      if (gen !== view.gen || err.quiet) return;
      view.loading = false;
      if (err.status === 400 && !more) {
        // A filter the server refused (invalid_filter): its message goes next to the form.
        view.rows.clear();
        ui.jobs.replaceChildren();
        view.nextBefore = null;
        say(ui.jobsStatus, '');
        form.showError(err.message);
      } else {
        say(ui.jobsStatus, `Could not load jobs: ${err.message}`, 'error');
      }
    }
    updateChrome();
  }

  /** A live event brought news of `job` (already remembered). */
  function onJob(job) {
    if (view.loading) view.touched.add(job.id);
    apply(job);
    updateChrome();
  }

  function reset() {
    view.gen += 1;
    view.rows.clear();
    ui.jobs.replaceChildren();
    ui.jobsEmpty.hidden = true;
    ui.jobsMore.hidden = true;
  }

  function listen() {
    // The form is filled from the URL here, before the first load.
    form.listen(() => { if (!sameFilters(form.read(), view.filter)) load(); });
    ui.jobsRefresh.addEventListener('click', () => load());
    ui.jobsMore.addEventListener('click', () => load(true));
  }

  return { load, onJob, reset, listen };
}
