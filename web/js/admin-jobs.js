// The dashboard's Recent jobs: a filtered page of `GET /api/jobs`, then kept current by
// live events (a job moves into, within or out of the filter as its state changes).
import { h, say, setText } from './dom.js';
import { buildQuery, clampPercent, shortId } from './format.js';
import { jobMatches } from './admin-model.js';
import { pageOf } from './wire.js';

const MAX_ROWS = 200;
const PAGE_SIZE = 50;
const FILTER_DELAY_MS = 400;

/** `admin` holds ui, api, cache (the newest copy of each job) and detail. */
export function createRecentJobs(admin) {
  const { ui } = admin;
  const view = { filter: { state: '', type: '' }, rows: new Map(), gen: 0, loading: false, touched: new Set(), nextBefore: null };

  function buildRow(job) {
    const r = {
      id: h('span', { className: 'mono', title: String(job.id), text: shortId(job.id) }),
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

  function addRow(job, atTop) {
    const r = buildRow(job);
    renderRow(r, job);
    view.rows.set(job.id, r);
    if (atTop) ui.jobs.prepend(r.li); else ui.jobs.append(r.li);
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
      if (r) renderRow(r, job); else addRow(job, true);
    } else if (r) {
      r.li.remove();
      view.rows.delete(job.id);
    }
  }

  function updateChrome() {
    const n = view.rows.size;
    setText(ui.jobsCount, n ? `${n} shown` : '');
    ui.jobsMore.hidden = !view.nextBefore || view.loading;
    ui.jobsEmpty.hidden = n > 0 || view.loading || ui.jobsStatus.dataset.kind === 'error';
  }

  async function load(more = false) {
    const gen = ++view.gen;
    if (!more) {
      view.filter = { state: ui.jobsState.value, type: ui.jobsType.value.trim() };
      view.touched.clear();
    }
    const f = view.filter;
    view.loading = true;
    say(ui.jobsStatus, 'Loading…');
    ui.jobsMore.hidden = true;
    try {
      const query = buildQuery({ state: f.state, type: f.type, limit: PAGE_SIZE, before: more ? view.nextBefore : null });
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
      say(ui.jobsStatus, `Could not load jobs: ${err.message}`, 'error');
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
    let timer = 0;
    const filterChanged = () => {
      const type = ui.jobsType.value.trim();
      if (type !== view.filter.type || ui.jobsState.value !== view.filter.state) load();
    };
    ui.jobsState.addEventListener('change', filterChanged);
    ui.jobsType.addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(filterChanged, FILTER_DELAY_MS); });
    ui.jobsFilter.addEventListener('submit', (e) => e.preventDefault());
    ui.jobsType.addEventListener('keydown', (e) => { if (e.key === 'Enter') { clearTimeout(timer); filterChanged(); } });
    ui.jobsMore.addEventListener('click', () => load(true));
  }

  return { load, onJob, reset, listen };
}
