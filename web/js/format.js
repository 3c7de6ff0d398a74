// Text for people: sizes, times, durations, counts and ids (pure: no DOM, no network).

/** Human-readable byte size: 0 B, 512 B, 1.5 KB, 12 MB, 1.02 GB. */
export function formatBytes(bytes) {
  const n = Number(bytes);
  if (!Number.isFinite(n) || n < 0) return '—';
  if (n < 1024) return `${Math.round(n)} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let value = n / 1024;
  let i = 0;
  const digitsFor = (v) => (v >= 100 ? 0 : v >= 10 ? 1 : 2);
  // Move up a unit when the *rounded* value would reach 1024 (no "1024 KB").
  while (Number(value.toFixed(digitsFor(value))) >= 1024 && i < units.length - 1) {
    value /= 1024;
    i += 1;
  }
  return `${Number(value.toFixed(digitsFor(value)))} ${units[i]}`;
}

/** Clamp to an integer percentage 0..100 (bad input -> 0). */
export function clampPercent(value) {
  const n = Number(value);
  if (!Number.isFinite(n)) return 0;
  return Math.min(100, Math.max(0, Math.round(n)));
}

/** Parse ISO-8601 strings, EXIF "YYYY:MM:DD HH:MM:SS" and epoch numbers (s or ms) into a Date, or null. */
export function parseDate(value) {
  if (value == null || value === '') return null;
  if (typeof value === 'number') {
    const d = new Date(value < 1e12 ? value * 1000 : value);
    return Number.isNaN(d.getTime()) ? null : d;
  }
  if (typeof value !== 'string') return null;
  const exif = /^(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})/.exec(value);
  const d = exif
    ? new Date(+exif[1], +exif[2] - 1, +exif[3], +exif[4], +exif[5], +exif[6])
    : new Date(value);
  return Number.isNaN(d.getTime()) ? null : d;
}

/** Localised date + time, or the raw string if it cannot be parsed, or null. */
export function formatDateTime(value) {
  const d = parseDate(value);
  if (!d) return value == null || value === '' ? null : String(value);
  try {
    return new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' }).format(d);
  } catch {
    return d.toISOString();
  }
}

/** A server timestamp to the second (the admin pages): short date, time with seconds; "—" for none. */
export function formatTimestamp(value) {
  if (value == null || value === '') return '—';
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? String(value) : d.toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'medium' });
}

/** "1.2 s", "850 ms", "2 min 5 s" from two timestamps, or null. */
export function formatDuration(start, end) {
  const a = parseDate(start);
  const b = parseDate(end);
  if (!a || !b) return null;
  const ms = b.getTime() - a.getTime();
  if (!Number.isFinite(ms) || ms < 0) return null;
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${Number((ms / 1000).toFixed(1))} s`;
  const min = Math.floor(ms / 60_000);
  const sec = Math.round((ms % 60_000) / 1000);
  return sec ? `${min} min ${sec} s` : `${min} min`;
}

/** "in 45 s", "in 5 min", "in 2 h 5 min", "in 3 days" until `target`, or null once it has passed. */
export function formatCountdown(target, now = Date.now()) {
  const d = parseDate(target);
  if (!d) return null;
  const ms = d.getTime() - (now instanceof Date ? now.getTime() : Number(now));
  if (!Number.isFinite(ms) || ms <= 0) return null;
  const s = Math.ceil(ms / 1000);
  if (s < 60) return `in ${s} s`;
  const min = Math.round(s / 60);
  if (min < 60) return `in ${min} min`;
  const hours = Math.floor(min / 60);
  if (hours < 48) return min % 60 ? `in ${hours} h ${min % 60} min` : `in ${hours} h`;
  return `in ${Math.round(hours / 24)} days`;
}

/** Seconds as "—", "42 s", "5 min", "2 h 5 min", "3 d 4 h". */
export function formatAge(seconds) {
  if (seconds == null || seconds === '') return '—';
  const s = Number(seconds);
  if (!Number.isFinite(s) || s < 0) return '—';
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/** A rate per minute: one decimal below 10, whole above; "—" for nonsense. */
export function formatRate(value) {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) return '—';
  return n < 10 ? String(Number(n.toFixed(1))) : String(Math.round(n));
}

/** A count cell's text: just the number ("0" for anything missing). */
export function formatCount(value) {
  const n = Number(value);
  return String(Number.isFinite(n) && n > 0 ? Math.round(n) : 0);
}

/**
 * The last `length` characters of an id, what tells jobs apart in a list: an id starts
 * with its creation time (jobs made the same minute share it) and ends at random.
 * GET /api/jobs?id= finds a job by it.
 */
export function shortId(id, length = 8) {
  const s = id == null ? '' : String(id);
  return s.length > length ? s.slice(-length) : s;
}

/** Any JSON value, indented; "—" for nothing at all. */
export function prettyJson(value) {
  if (value === undefined) return '—';
  try { return JSON.stringify(value, null, 2); } catch { return String(value); }
}

/** "?a=1&b=x" from an object, leaving out null/empty values; "" when nothing is left. */
export function buildQuery(params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value != null && value !== '') q.set(key, String(value));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

/** Return an absolute http(s) URL for use in src/href, or null for anything else (javascript:, data:, junk). */
export function safeUrl(url, base = (typeof location !== 'undefined' ? location.href : 'http://localhost/')) {
  if (typeof url !== 'string' || url.trim() === '') return null;
  try {
    const u = new URL(url, base);
    return u.protocol === 'http:' || u.protocol === 'https:' ? u.href : null;
  } catch {
    return null;
  }
}

/** A state as a column heading: "retrying" -> "Retrying". */
export function stateLabel(state) {
  const s = String(state ?? '');
  return s ? s[0].toUpperCase() + s.slice(1) : '';
}
