// The dashboard's job detail (a modal <dialog>): summary, error and traceback, payload,
// and the timeline of events, which grows live while the dialog is open; a link opens the
// job's own page (/admin/jobs/{id}) for the whole of it.
import { h, idTag, say, setText, termRows } from './dom.js';
import { clampPercent, prettyJson } from './format.js';
import { describeJob } from './admin-model.js';
import { errorText } from './wire.js';

/** `admin` holds ui, api and cache (the newest copy of each job). */
export function createJobDetail(admin) {
  const { ui } = admin;
  // Events that arrive while the timeline loads wait in `buffer`; maxSeq drops repeats.
  const shown = { id: null, gen: 0, loading: false, maxSeq: -Infinity, buffer: [] };
  // The job's own page (admin-job.html), linkable: every attempt, delivery and the image.
  const pageLink = h('a', { 'data-testid': 'detail-page-link', text: "Open the job's page" });
  ui.detailSummary.after(h('p', { className: 'detail-page-link' }, pageLink));

  /** "Job <short id> · <type>" (the summary below lists the whole id). */
  function renderTitle(id, type) {
    const key = `${id} ${type || ''}`;
    if (ui.detailTitle.dataset.key === key) return;
    ui.detailTitle.dataset.key = key;
    ui.detailTitle.replaceChildren('Job ', idTag(id), type ? ` · ${type}` : '');
  }

  function renderJob(job) {
    if (!job) return;
    renderTitle(job.id, job.type);
    ui.detail.dataset.state = job.state || '';
    ui.detailSummary.replaceChildren(...termRows(describeJob(job), 'meta-row'));
    const err = errorText(job.error);
    setText(ui.detailErrorText, err);
    ui.detailErrorText.hidden = !err;
    ui.detailError.hidden = !err && !ui.detailTraceback.textContent;
  }

  function timelineRow(ev) {
    const at = ev.at ? new Date(ev.at) : null;
    return h('tr', {},
      h('td', { className: 'num', text: ev.seq == null ? '' : String(ev.seq) }),
      h('td', { text: ev.name || '' }), h('td', { text: ev.state || '' }), h('td', { text: ev.stage || '' }),
      h('td', { className: 'num', text: ev.progress == null ? '' : `${clampPercent(ev.progress)}%` }),
      h('td', { title: ev.at || '', text: at && !Number.isNaN(at.getTime()) ? at.toLocaleTimeString() : '' }),
      h('td', { className: 'cell-error', text: errorText(ev.error) }));
  }

  function appendTimeline(ev) {
    if (Number.isFinite(ev.seq) && ev.seq <= shown.maxSeq) return;
    if (Number.isFinite(ev.seq)) shown.maxSeq = ev.seq;
    ui.detailTimeline.append(timelineRow(ev));
  }

  async function load() {
    const gen = ++shown.gen;
    const id = shown.id;
    shown.loading = true;
    say(ui.detailStatus, 'Loading…');
    try {
      const data = await admin.api(`/api/jobs/${encodeURIComponent(id)}/timeline`);
      if (gen !== shown.gen) return;
      const job = data && data.job && data.job.id != null ? admin.cache.remember(data.job) : admin.cache.get(id);
      setText(ui.detailPayload, prettyJson(data ? data.payload : undefined));
      setText(ui.detailTraceback, data && typeof data.traceback === 'string' ? data.traceback : '');
      ui.detailTraceback.hidden = !ui.detailTraceback.textContent;
      ui.detailTimeline.replaceChildren();
      shown.maxSeq = -Infinity;
      const events = data && Array.isArray(data.events) ? data.events : [];
      for (const ev of events) if (ev && typeof ev === 'object') appendTimeline(ev);
      for (const ev of shown.buffer) appendTimeline(ev);
      shown.buffer = [];
      if (!events.length && !ui.detailTimeline.children.length) {
        ui.detailTimeline.append(h('tr', {}, h('td', { colSpan: 7, className: 'empty-cell', text: 'No events recorded.' })));
      }
      renderJob(job);
      say(ui.detailStatus, '');
    } catch (err) {
      if (gen !== shown.gen || err.quiet) return;
      say(ui.detailStatus, `Could not load this job: ${err.message}`, 'error');
    } finally {
      if (gen === shown.gen) shown.loading = false;
    }
  }

  function open(id) {
    shown.id = id;
    pageLink.href = `/admin/jobs/${encodeURIComponent(id)}`;
    shown.buffer = [];
    shown.maxSeq = -Infinity;
    setText(ui.detailPayload, '…');
    setText(ui.detailTraceback, '');
    ui.detailTraceback.hidden = true;
    ui.detailTimeline.replaceChildren();
    ui.detailSummary.replaceChildren();
    renderTitle(id, '');
    renderJob(admin.cache.get(id));
    if (!ui.detail.open) ui.detail.showModal();
    ui.detailClose.focus();
    load();
  }

  /** A live event of job `job` (carrying `seq`): a new timeline row if the dialog shows it. */
  function onJob(name, job, seq) {
    if (shown.id !== job.id) return;
    const ev = { seq, name, state: job.state, stage: job.stage, progress: job.progress, at: new Date().toISOString(), error: job.error };
    if (shown.loading) { shown.buffer.push(ev); return; }
    ui.detailTimeline.querySelector('.empty-cell')?.parentElement.remove();
    appendTimeline(ev);
    renderJob(job);
    if (name === 'job:failed') load(); // a new traceback exists now
  }

  /** After a reconnect: events may have been missed, so the open timeline is loaded again. */
  function reload() {
    if (shown.id != null) load();
  }

  function listen() {
    ui.detailClose.addEventListener('click', () => ui.detail.close());
    ui.detail.addEventListener('close', () => { shown.id = null; shown.gen += 1; shown.buffer = []; });
  }

  return { open, onJob, reload, listen };
}
