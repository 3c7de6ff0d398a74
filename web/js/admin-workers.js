// The dashboard's Workers panel: each worker process as it last reported (host, pid,
// pool, threads busy and idle, the job each busy thread runs, heartbeat age, memory, jobs
// handled). GET /api/workers fills it, `workers:stats` pushes keep it current, and the
// ages tick here between pushes. A dead process (alive false) stays, greyed and marked,
// until the server forgets it.
import { h, idTag, setHidden, setText, say } from './dom.js';
import { formatCount, formatTimestamp } from './format.js';
import { clockOffset, formatMemory, formatSeconds, heartbeatAge, secondsSince, workersOf } from './admin-charts-model.js';

const TICK_MS = 1000;

/** `admin` holds ui, api and the session counter. */
export function createWorkers(admin) {
  const { ui } = admin;
  const rows = new Map(); // worker id -> { tr, cells, worker, runningKey }
  let receivedAt = 0; // when the figures shown arrived (this browser's clock, ms)
  let offset = 0; // the server's clock minus this browser's (ms)
  let ticker = 0;

  function buildRow(id) {
    const cells = {
      host: h('span', { className: 'roster-host' }),
      pid: h('span', { className: 'mono roster-pid' }),
      dead: h('span', { className: 'badge roster-dead', 'data-testid': 'worker-dead', text: 'Dead', hidden: true }),
      pool: h('td', { dataset: { label: 'pool', field: 'pool' } }),
      queues: h('td', { dataset: { label: 'queues', field: 'queues' } }),
      busy: h('span', { dataset: { field: 'busy' } }),
      idle: h('span', { dataset: { field: 'idle' } }),
      running: h('td', { className: 'roster-running', dataset: { label: 'running', field: 'running' } }),
      heartbeat: h('td', { className: 'num', dataset: { label: 'heartbeat', field: 'heartbeat' } }),
      memory: h('td', { className: 'num', dataset: { label: 'memory', field: 'memory' } }),
      done: h('td', { className: 'num', dataset: { label: 'done', field: 'done' } }),
      failed: h('td', { className: 'num', dataset: { label: 'failed', field: 'failed' } }),
    };
    const tr = h('tr', { 'data-testid': 'worker-row', dataset: { workerId: id } },
      h('th', { scope: 'row', className: 'roster-process' }, cells.host, ' ', cells.pid, ' ', cells.dead),
      cells.pool, cells.queues,
      h('td', { className: 'roster-threads', dataset: { label: 'threads', field: 'threads' } },
        h('span', {}, cells.busy, ' busy · ', cells.idle, ' idle')),
      cells.running, cells.heartbeat, cells.memory, cells.done, cells.failed);
    return { tr, cells, worker: null, runningKey: '' };
  }

  /** The running jobs as a list: thread, short id (a link to the job's page), type, running for. */
  function runningList(worker) {
    if (!worker.running.length) return h('span', { className: 'roster-none', text: worker.alive ? 'Idle' : '—' });
    return h('ul', { className: 'roster-jobs' }, worker.running.map((job) => h('li', {
      'data-testid': 'worker-job', dataset: { jobId: job.job_id, thread: job.thread },
    },
    h('span', { className: 'roster-thread', text: job.thread }), ' ',
    h('a', { href: `/admin/jobs/${encodeURIComponent(job.job_id)}`, className: 'roster-job' }, idTag(job.job_id)), ' ',
    h('span', { className: 'roster-type', text: job.type }), ' ',
    h('span', { className: 'roster-since', title: `Running since ${formatTimestamp(job.since)}`, dataset: { since: job.since || '' } }))));
  }

  /** Heartbeat ages and running times, as of now (called every second). */
  function tick() {
    const now = Date.now();
    for (const row of rows.values()) {
      const age = heartbeatAge(row.worker, receivedAt, now);
      setText(row.cells.heartbeat, age == null ? '—' : `${formatSeconds(age)} ago`);
      // A dead process's jobs ran for as long as it was heard of, no longer.
      const reported = Date.parse(row.worker.reported_at || '');
      const until = row.worker.alive || !Number.isFinite(reported) ? now + offset : reported;
      for (const since of row.cells.running.querySelectorAll('.roster-since')) {
        const seconds = secondsSince(since.dataset.since, until);
        setText(since, seconds == null ? '' : `for ${formatSeconds(seconds)}`);
      }
    }
  }

  function fillRow(row, w) {
    row.worker = w;
    const { cells, tr } = row;
    tr.dataset.alive = String(w.alive);
    tr.dataset.pool = w.pool;
    setText(cells.host, w.host);
    setText(cells.pid, w.pid == null ? '' : `pid ${w.pid}`);
    setHidden(cells.dead, w.alive);
    setText(cells.pool, w.pool || '—');
    setText(cells.queues, w.queues.length ? w.queues.join(', ') : '—');
    setText(cells.busy, String(w.busy));
    setText(cells.idle, String(w.idle));
    cells.busy.parentElement.title = `${w.threads} thread${w.threads === 1 ? '' : 's'}`;
    setText(cells.memory, formatMemory(w.memory_bytes));
    setText(cells.done, formatCount(w.jobs_done));
    setText(cells.failed, formatCount(w.jobs_failed));
    cells.failed.dataset.some = String(w.jobs_failed > 0);
    // Rebuilt only when the jobs change, so a focused link keeps its focus between pushes.
    const runningKey = JSON.stringify([w.alive, w.running]);
    if (runningKey !== row.runningKey) {
      row.runningKey = runningKey;
      cells.running.replaceChildren(runningList(w));
    }
  }

  /** Show GET /api/workers or a `workers:stats` push. */
  function render(data) {
    const list = workersOf(data);
    receivedAt = Date.now();
    offset = clockOffset(data, receivedAt);
    const seen = new Set();
    list.forEach((w, index) => {
      seen.add(w.id);
      let row = rows.get(w.id);
      if (!row) { row = buildRow(w.id); rows.set(w.id, row); }
      fillRow(row, w);
      // Move only rows that are out of place (moving a row would drop the focus of its link).
      if (ui.roster.children[index] !== row.tr) ui.roster.insertBefore(row.tr, ui.roster.children[index] || null);
    });
    for (const [id, row] of rows) if (!seen.has(id)) { row.tr.remove(); rows.delete(id); }
    tick();
    const dead = list.filter((w) => !w.alive).length;
    const threads = list.filter((w) => w.alive).reduce((n, w) => n + w.threads, 0);
    const busy = list.filter((w) => w.alive).reduce((n, w) => n + w.busy, 0);
    setText(ui.rosterSummary, list.length
      ? `${list.length - dead} alive${dead ? `, ${dead} dead` : ''} · ${busy} of ${threads} threads busy`
      : '');
    setHidden(ui.rosterEmpty, list.length > 0);
    setHidden(ui.rosterWrap, list.length === 0);
    say(ui.rosterStatus, ''); // fresh figures: no "Loading…", no old error
    clearInterval(ticker);
    ticker = list.length ? setInterval(tick, TICK_MS) : 0;
  }

  async function load() {
    const gen = admin.session;
    if (!rows.size) say(ui.rosterStatus, 'Loading…');
    try {
      const data = await admin.api('/api/workers');
      if (gen === admin.session) render(data);
    } catch (err) {
      if (!err.quiet) say(ui.rosterStatus, `Could not load the workers: ${err.message}`, 'error');
    }
  }

  function reset() {
    clearInterval(ticker);
    ticker = 0;
    rows.clear();
    ui.roster.replaceChildren();
    setText(ui.rosterSummary, '');
    say(ui.rosterStatus, '');
    setHidden(ui.rosterEmpty, true);
    setHidden(ui.rosterWrap, true);
  }

  return { render, load, reset };
}
