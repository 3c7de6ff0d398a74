// The dashboard's charts and workers panel, as data (pure: no DOM, no network, no uPlot):
// which window the URL asks for, the points of that window (pushed ones merged in), each
// small multiple as uPlot's column arrays, units, and the workers' figures in words.
//
// Points (GET /api/charts, `charts:point`) are one a minute, with times in seconds. A
// minute without a point (no web process ran) is drawn as a gap: its value is null,
// which uPlot never joins across. A point without a series' figure (no run of a queue
// that minute, so no wait or run time) leaves it undefined, which uPlot spans.

// ---------- the window ----------

/** The windows the toggle offers, in minutes (GET /api/charts?minutes=). */
export const CHART_WINDOWS = Object.freeze({ '1h': 60, '24h': 1440 });
export const DEFAULT_WINDOW = '1h';
/** The window's name in the page's URL (`?charts=24h`); the default is left out. */
export const WINDOW_PARAM = 'charts';

/** The window a query string (`?a=1` or URLSearchParams) asks for; the default for none or junk. */
export function windowFromQuery(query) {
  const params = query instanceof URLSearchParams ? query : new URLSearchParams(query || '');
  const asked = (params.get(WINDOW_PARAM) || '').trim();
  return Object.hasOwn(CHART_WINDOWS, asked) ? asked : DEFAULT_WINDOW;
}

/** `query` with the window set (the default: the parameter gone); other parameters stay. '' or '?…'. */
export function queryWithWindow(query, name) {
  const params = new URLSearchParams(query instanceof URLSearchParams ? query.toString() : query || '');
  if (Object.hasOwn(CHART_WINDOWS, name) && name !== DEFAULT_WINDOW) params.set(WINDOW_PARAM, name);
  else params.delete(WINDOW_PARAM);
  const s = params.toString();
  return s ? `?${s}` : '';
}

/** The minutes of a window by name (the default's for junk). */
export function windowMinutes(name) {
  return CHART_WINDOWS[name] ?? CHART_WINDOWS[DEFAULT_WINDOW];
}

// ---------- points ----------

/** The start of the minute `at` (ISO-8601) falls in, in epoch seconds; null for junk. */
export function minuteOf(at) {
  const ms = typeof at === 'string' ? Date.parse(at) : NaN;
  return Number.isFinite(ms) ? Math.floor(ms / 60_000) * 60 : null;
}

/**
 * The minutes a window of `minutes` shows at `now` (ms), in epoch seconds: from the
 * server's first (GET /api/charts keeps points at or after it) to the current minute's
 * start (the newest a point may be; the server's newest is the minute before).
 */
export function windowRange(minutes, now = Date.now()) {
  const current = Math.floor(now / 60_000) * 60;
  return { first: current - minutes * 60, current };
}

/**
 * `have` and `incoming` points as one list for a window of `minutes` at `now`: oldest
 * first, one per minute (for a minute in both, `incoming`'s, except that the minute so
 * far — `partial` — never replaces the minute's own point), none outside the window or
 * without a time. Only the newest minute may be one so far: an older one (its own point
 * never came, as when every web process was down as it ended) would pass for a whole
 * minute, and goes.
 */
export function mergePoints(have, incoming, minutes, now = Date.now()) {
  const { first, current } = windowRange(minutes, now);
  const byMinute = new Map();
  for (const point of [...(have || []), ...(incoming || [])]) {
    const minute = point && typeof point === 'object' ? minuteOf(point.at) : null;
    if (minute == null || minute < first || minute > current) continue;
    const held = byMinute.get(minute);
    if (point.partial === true && held && held.partial !== true) continue;
    byMinute.set(minute, point);
  }
  const newest = Math.max(...byMinute.keys());
  for (const [minute, point] of byMinute) {
    if (point.partial === true && minute < newest) byMinute.delete(minute);
  }
  return [...byMinute.entries()].sort((a, b) => a[0] - b[0]).map(([, point]) => point);
}

/**
 * Every minute of the window in epoch seconds, first to last (the minute before `now`'s,
 * or the newest point's if later), and the point of each (undefined for a minute without).
 */
export function minuteGrid(points, minutes, now = Date.now()) {
  const { first, current } = windowRange(minutes, now);
  const byMinute = new Map();
  for (const point of points || []) {
    const minute = minuteOf(point && point.at);
    if (minute != null && minute >= first && minute <= current) byMinute.set(minute, point);
  }
  const last = Math.max(current - 60, ...byMinute.keys());
  const xs = [];
  for (let x = first; x <= last; x += 60) xs.push(x);
  return { xs, points: xs.map((x) => byMinute.get(x)) };
}

// ---------- the small multiples ----------

/**
 * The charts, in the order drawn. `fixed`: [field, label, tone] series of a point's
 * counts; `byKey`: a field mapping queue or stage -> count (`counts`) or quantiles;
 * `quantiles`: a field holding one quantiles object. `unit`: fixed ('per min', 'jobs',
 * 'ms'), or 'duration' (s, or ms / min when that reads better: durationUnit).
 */
export const CHARTS = Object.freeze([
  {
    id: 'jobs', title: 'Jobs finished and failed', unit: 'per min',
    fixed: [['finished', 'Finished', 'success'], ['failed', 'Failed', 'danger'], ['retried', 'Retried', 'warning']],
  },
  {
    id: 'uploads', title: 'Uploads', unit: 'per min',
    fixed: [['uploads_accepted', 'Accepted', 'accent'], ['uploads_refused', 'Refused', 'danger']],
  },
  { id: 'depth', title: 'Queue depth', unit: 'jobs', byKey: 'queue_depth', counts: true },
  { id: 'wait', title: 'Wait before a run, by queue', unit: 'duration', byKey: 'wait' },
  { id: 'run', title: 'Run time, by queue', unit: 'duration', byKey: 'run' },
  { id: 'stages', title: 'Image stages', unit: 'duration', byKey: 'stages' },
  { id: 'push', title: 'Push delay', unit: 'ms', quantiles: 'push' },
]);

const QUANTILES = Object.freeze(['p50', 'p95']);
// The fields keyed by queue: a queue takes the same colour (group) in each of their charts.
const QUEUE_FIELDS = Object.freeze(['queue_depth', 'wait', 'run']);

/** The keys (queues, stages) that `field` of any of `points` holds, sorted. */
export function seriesKeys(points, field) {
  const keys = new Set();
  for (const point of points || []) {
    const value = point && point[field];
    if (value && typeof value === 'object') for (const key of Object.keys(value)) keys.add(key);
  }
  return [...keys].sort();
}

/**
 * How to show durations whose largest is `maxSeconds`: ms below a second, minutes from
 * ten of them, else seconds. `factor` turns seconds into the unit.
 */
export function durationUnit(maxSeconds) {
  const max = Number(maxSeconds);
  if (!Number.isFinite(max) || max < 1) return { unit: 'ms', factor: 1000 };
  if (max >= 600) return { unit: 'min', factor: 1 / 60 };
  return { unit: 's', factor: 1 };
}

const isNumber = (v) => typeof v === 'number' && Number.isFinite(v);

function quantileOf(value, q) {
  return value && typeof value === 'object' && isNumber(value[q]) ? value[q] : undefined;
}

/**
 * One chart as uPlot draws it, for a window of `minutes` at `now`: `data` is
 * [minutes (epoch s), ...one array per series]; `series` are { label, tone | group, q }
 * (`group`: the queue's or stage's colour; a queue has the same in every chart);
 * `unit` is the unit of every value; `last` the index of the newest minute with a point
 * (null when none); `count` how many minutes have one.
 */
export function chartData(chart, points, minutes, now = Date.now()) {
  const grid = minuteGrid(points, minutes, now);
  const present = grid.points.filter(Boolean);
  const series = [];
  const columns = [];
  // A minute without a point: null (a gap); a point without this figure: undefined (spanned).
  const column = (read) => grid.points.map((p) => (p ? read(p) : null));
  let unit = chart.unit;
  let factor = 1;
  if (chart.fixed) {
    for (const [field, label, tone] of chart.fixed) {
      series.push({ label, tone });
      columns.push(column((p) => (isNumber(p[field]) ? p[field] : 0)));
    }
  } else {
    // [key (null for a chart of one quantiles field), read(point) -> its figure]
    const sources = chart.quantiles
      ? [[null, (p) => p[chart.quantiles]]]
      : seriesKeys(present, chart.byKey).map((key) => [key, (p) => (p[chart.byKey] || {})[key]]);
    const colours = QUEUE_FIELDS.includes(chart.byKey)
      ? [...new Set(QUEUE_FIELDS.flatMap((field) => seriesKeys(present, field)))].sort()
      : sources.map(([key]) => key);
    const groupOf = (key) => colours.indexOf(key);
    if (chart.counts) {
      sources.forEach(([key, read]) => {
        series.push({ label: key, group: groupOf(key) });
        columns.push(column((p) => { const v = read(p); return isNumber(v) ? v : undefined; }));
      });
    } else {
      let max = 0;
      for (const p of present) for (const [, read] of sources) max = Math.max(max, quantileOf(read(p), 'p95') ?? 0, quantileOf(read(p), 'p50') ?? 0);
      if (unit === 'duration') ({ unit, factor } = durationUnit(max));
      else if (unit === 'ms') factor = 1000;
      sources.forEach(([key, read]) => {
        for (const q of QUANTILES) {
          series.push({ label: key == null ? q : `${key} ${q}`, group: groupOf(key), q });
          columns.push(column((p) => { const v = quantileOf(read(p), q); return v === undefined ? undefined : roundTo(v * factor, 4); }));
        }
      });
    }
  }
  let last = null;
  for (let i = grid.points.length - 1; i >= 0; i -= 1) if (grid.points[i]) { last = i; break; }
  return { data: [grid.xs, ...columns], series, unit, last, count: present.length };
}

function roundTo(value, digits) {
  return Number(value.toPrecision(digits));
}

/**
 * The indexes of values drawn as a line of their own length zero: set, with no set
 * neighbour across a gap (null) or the ends. A lone minute would not show otherwise.
 */
export function isolatedIndexes(values) {
  const found = [];
  const list = values || [];
  // Undefined is spanned: the neighbour that counts is the nearest value that is not.
  const neighbour = (i, step) => {
    for (let j = i + step; j >= 0 && j < list.length; j += step) if (list[j] !== undefined) return list[j];
    return null;
  };
  list.forEach((v, i) => {
    if (v != null && neighbour(i, -1) == null && neighbour(i, 1) == null) found.push(i);
  });
  return found;
}

/** A value as the legend shows it: "12", "1.25 s", "340 ms", "—" for none. */
export function formatChartValue(value, unit) {
  if (!isNumber(value)) return '—';
  if (unit === 'per min' || unit === 'jobs') return String(Math.round(value * 100) / 100);
  return `${roundTo(value, 3)} ${unit}`;
}

/** An axis tick: a count or duration without its unit (the axis label names it): "1.5", "20", "1.2k". */
export function formatTick(value) {
  if (!isNumber(value)) return '';
  const abs = Math.abs(value);
  if (abs >= 10_000) return `${roundTo(value / 1000, 3)}k`;
  return String(roundTo(value, 3));
}

// ---------- workers ----------

const count = (v) => (isNumber(v) && v > 0 ? Math.round(v) : 0);

/** The workers of GET /api/workers or a `workers:stats` push, read defensively; idle = threads - busy. */
export function workersOf(payload) {
  const list = payload && Array.isArray(payload.workers) ? payload.workers : [];
  return list.filter((w) => w && typeof w === 'object' && w.id != null).map((w) => {
    const threads = count(w.threads);
    const running = (Array.isArray(w.running) ? w.running : []).filter((r) => r && r.job_id != null).map((r) => ({
      thread: String(r.thread ?? ''), job_id: String(r.job_id), type: String(r.type ?? ''), since: r.since ?? null,
    }));
    const busy = Math.max(count(w.busy), running.length);
    return {
      id: String(w.id), host: String(w.host ?? ''), pid: w.pid ?? null, pool: String(w.pool ?? ''),
      queues: Array.isArray(w.queues) ? w.queues.map(String) : [],
      threads, busy, idle: Math.max(0, threads - busy), running,
      memory_bytes: isNumber(w.memory_bytes) ? w.memory_bytes : null,
      jobs_done: count(w.jobs_done), jobs_failed: count(w.jobs_failed),
      started_at: w.started_at ?? null, reported_at: w.reported_at ?? null,
      heartbeat_age_s: isNumber(w.heartbeat_age_s) ? w.heartbeat_age_s : null,
      alive: w.alive !== false,
    };
  });
}

/**
 * The server's clock minus this browser's (ms), from a push's `at` received at
 * `receivedAt`; 0 without one. Ages computed with it do not depend on the browser's clock.
 */
export function clockOffset(payload, receivedAt) {
  const at = payload && typeof payload.at === 'string' ? Date.parse(payload.at) : NaN;
  return Number.isFinite(at) ? at - receivedAt : 0;
}

/** A worker's heartbeat age (s) at `now`: the server's age when received, plus the time since. */
export function heartbeatAge(worker, receivedAt, now = Date.now()) {
  if (!worker || !isNumber(worker.heartbeat_age_s)) return null;
  return worker.heartbeat_age_s + Math.max(0, now - receivedAt) / 1000;
}

/** Seconds since `since` (ISO-8601) on the server's clock (`serverNow`, ms), or null. */
export function secondsSince(since, serverNow) {
  const at = typeof since === 'string' ? Date.parse(since) : NaN;
  return Number.isFinite(at) ? Math.max(0, (serverNow - at) / 1000) : null;
}

/** A short duration that ticks: "0 s", "42 s", "3 min 5 s", "2 h 5 min"; "—" for none. */
export function formatSeconds(seconds) {
  if (!isNumber(seconds) || seconds < 0) return '—';
  const s = Math.floor(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/** Resident memory in megabytes (MiB): "84 MB", "9.5 MB"; "—" for none. */
export function formatMemory(bytes) {
  if (!isNumber(bytes) || bytes < 0) return '—';
  const mb = bytes / (1024 * 1024);
  return `${mb < 10 ? Number(mb.toFixed(1)) : Math.round(mb)} MB`;
}
