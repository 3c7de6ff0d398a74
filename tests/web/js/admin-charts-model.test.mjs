// web/js/admin-charts-model.js: the charts' and workers panel's data.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  CHARTS, CHART_WINDOWS, DEFAULT_WINDOW, chartData, clockOffset, durationUnit, formatChartValue, formatMemory,
  formatSeconds, formatTick, heartbeatAge, isolatedIndexes, mergePoints, minuteGrid, minuteOf, queryWithWindow,
  secondsSince, seriesKeys, windowFromQuery, windowMinutes, windowRange, workersOf,
} from '../../../web/js/admin-charts-model.js';
import { filtersFromQuery, JOB_FILTERS, queryWithFilters } from '../../../web/js/admin-model.js';

const NOW = Date.parse('2025-03-01T12:00:30Z'); // half a minute into 12:00
const chart = (id) => CHARTS.find((c) => c.id === id);

/** A ChartPoint at `at` with the counts and maps given. */
function point(at, fields = {}) {
  return {
    at, finished: 0, failed: 0, retried: 0, uploads_accepted: 0, uploads_refused: 0,
    queue_depth: {}, wait: {}, run: {}, stages: {}, push: null, ...fields,
  };
}

describe('the window in the URL', () => {
  test('read from ?charts=, the default for none or junk', () => {
    assert.equal(windowFromQuery(''), DEFAULT_WINDOW);
    assert.equal(windowFromQuery('?charts=24h'), '24h');
    assert.equal(windowFromQuery(new URLSearchParams('charts=1h')), '1h');
    assert.equal(windowFromQuery('?charts=7d'), '1h');
    assert.equal(windowFromQuery('?charts=constructor'), '1h', 'not an inherited property');
    assert.equal(windowMinutes('24h'), 1440);
    assert.equal(windowMinutes('nope'), 60);
    assert.deepEqual(CHART_WINDOWS, { '1h': 60, '24h': 1440 });
  });
  test('written without touching the search filters; the default leaves the URL', () => {
    assert.equal(queryWithWindow('', '24h'), '?charts=24h');
    assert.equal(queryWithWindow('?charts=24h', '1h'), '');
    const search = queryWithWindow('?state=failed&dlq.type=x', '24h');
    assert.equal(search, '?state=failed&dlq.type=x&charts=24h');
    assert.equal(queryWithWindow(search, '1h'), '?state=failed&dlq.type=x');
    // ... and the filters' own writer keeps the window.
    assert.equal(filtersFromQuery(search, JOB_FILTERS).state, 'failed');
    assert.equal(windowFromQuery(queryWithFilters(search, { state: '' }, JOB_FILTERS)), '24h');
  });
});

describe('points', () => {
  test('minuteOf: the start of the minute, in epoch seconds', () => {
    assert.equal(minuteOf('2025-03-01T12:00:00Z'), Date.parse('2025-03-01T12:00:00Z') / 1000);
    assert.equal(minuteOf('2025-03-01T12:00:59.9Z'), Date.parse('2025-03-01T12:00:00Z') / 1000);
    for (const bad of [null, undefined, '', 'soon', 42]) assert.equal(minuteOf(bad), null);
  });
  test('the window ends at the current minute and starts as the server\'s does', () => {
    const { first, current } = windowRange(60, NOW);
    assert.equal(current, Date.parse('2025-03-01T12:00:00Z') / 1000);
    assert.equal(first, Date.parse('2025-03-01T11:00:00Z') / 1000);
  });
  test('merged: oldest first, one a minute (the incoming one), nothing outside the window', () => {
    const have = [point('2025-03-01T11:58:00Z', { finished: 1 }), point('2025-03-01T10:30:00Z'),
      point('2025-03-01T11:59:00Z', { finished: 2 })];
    const incoming = [point('2025-03-01T11:59:00Z', { finished: 9 }), point('2025-03-01T11:01:00Z'),
      point('2025-03-01T12:05:00Z'), { at: 'junk' }, null];
    const merged = mergePoints(have, incoming, 60, NOW);
    assert.deepEqual(merged.map((p) => [p.at, p.finished]), [
      ['2025-03-01T11:01:00Z', 0], ['2025-03-01T11:58:00Z', 1], ['2025-03-01T11:59:00Z', 9]]);
    // A wider window keeps what a narrower one drops.
    assert.equal(mergePoints(have, [], 1440, NOW).length, 3);
    assert.deepEqual(mergePoints(null, undefined, 60, NOW), []);
  });
  test('the minute so far: a newer count of it replaces it, and its own point replaces it for good', () => {
    const soFar = (finished) => point('2025-03-01T12:00:00Z', { finished, partial: true });
    const done = point('2025-03-01T12:00:00Z', { finished: 7 });
    let points = mergePoints([point('2025-03-01T11:59:00Z')], [soFar(2)], 60, NOW + 30_000);
    assert.deepEqual(points.map((p) => [p.finished, p.partial === true]), [[0, false], [2, true]]);
    points = mergePoints(points, [soFar(5)], 60, NOW + 30_000);
    assert.deepEqual(points.map((p) => p.finished), [0, 5]);
    points = mergePoints(points, [done], 60, NOW + 30_000);
    assert.deepEqual(points.map((p) => [p.finished, p.partial === true]), [[0, false], [7, false]]);
    // A count so far that arrives late (pushed before the minute's point, delivered after) is dropped.
    points = mergePoints(points, [soFar(6)], 60, NOW + 30_000);
    assert.deepEqual(points.map((p) => p.finished), [0, 7]);
    // A load's answer ending with the minute so far does not undo a point pushed meanwhile.
    assert.deepEqual(mergePoints([done], [soFar(3)], 60, NOW + 30_000).map((p) => p.finished), [7]);
    // A minute so far whose own point never came goes once a later minute is in.
    const later = point('2025-03-01T12:02:00Z', { finished: 4, partial: true });
    points = mergePoints([point('2025-03-01T11:59:00Z'), soFar(5)], [later], 60, NOW + 150_000);
    assert.deepEqual(points.map((p) => [p.at, p.partial === true]), [
      ['2025-03-01T11:59:00Z', false], ['2025-03-01T12:02:00Z', true]]);
    points = mergePoints([soFar(5)], [point('2025-03-01T12:01:00Z')], 60, NOW + 90_000);
    assert.deepEqual(points.map((p) => p.at), ['2025-03-01T12:01:00Z']);
  });
  test('the grid: every minute of the window, a point or nothing for each', () => {
    const grid = minuteGrid([point('2025-03-01T11:58:00Z'), point('2025-03-01T11:02:00Z')], 60, NOW);
    assert.equal(grid.xs.length, 60, 'an hour of minutes, 11:00 to 11:59');
    assert.equal(grid.xs[0], Date.parse('2025-03-01T11:00:00Z') / 1000);
    assert.equal(grid.xs[59], Date.parse('2025-03-01T11:59:00Z') / 1000);
    assert.ok(grid.xs.every((x, i) => i === 0 || x - grid.xs[i - 1] === 60));
    assert.equal(grid.points[2].at, '2025-03-01T11:02:00Z');
    assert.equal(grid.points[58].at, '2025-03-01T11:58:00Z');
    assert.equal(grid.points.filter(Boolean).length, 2);
    // A point of the current minute widens it by one.
    assert.equal(minuteGrid([point('2025-03-01T12:00:00Z')], 60, NOW).xs.length, 61);
  });
});

describe('chartData', () => {
  const points = [
    point('2025-03-01T11:57:00Z', {
      finished: 4, failed: 1, queue_depth: { default: 2, images: 5 },
      wait: { images: { p50: 0.2, p95: 0.5, count: 3 } }, run: { images: { p50: 1.5, p95: 4, count: 3 } },
      stages: { resize: { p50: 0.02, p95: 0.04, count: 3 } }, push: { p50: 0.003, p95: 0.012, count: 9 },
    }),
    // 11:58 has no point: a gap.
    point('2025-03-01T11:59:00Z', {
      finished: 7, uploads_accepted: 3, uploads_refused: 1, queue_depth: { images: 1 },
      wait: { default: { p50: 2, p95: 3, count: 1 } }, run: { images: { p50: 2, p95: 30, count: 2 } },
    }),
  ];
  const at = (data, minute) => data.data[0].indexOf(Date.parse(`2025-03-01T${minute}:00Z`) / 1000);

  test('counts per minute: a gap (null) where no point is, 0 for a count a point lacks', () => {
    const jobs = chartData(chart('jobs'), points, 60, NOW);
    assert.deepEqual(jobs.series.map((s) => s.label), ['Finished', 'Failed', 'Retried']);
    assert.equal(jobs.unit, 'per min');
    assert.equal(jobs.data.length, 4);
    assert.equal(jobs.data[0].length, 60);
    assert.deepEqual([57, 58, 59].map((m) => jobs.data[1][at(jobs, `11:${m}`)]), [4, null, 7]);
    assert.equal(jobs.data[2][at(jobs, '11:59')], 0);
    assert.equal(jobs.data[1][0], null, 'before the first point: a gap too');
    assert.equal(jobs.last, at(jobs, '11:59'));
    assert.equal(jobs.count, 2);
    const uploads = chartData(chart('uploads'), points, 60, NOW);
    assert.deepEqual(uploads.series.map((s) => [s.label, s.tone]), [['Accepted', 'accent'], ['Refused', 'danger']]);
    assert.deepEqual([uploads.data[1][uploads.last], uploads.data[2][uploads.last]], [3, 1]);
  });
  test('queue depth: a series per queue any point names; a queue a point lacks is spanned (undefined)', () => {
    const depth = chartData(chart('depth'), points, 60, NOW);
    assert.deepEqual(depth.series.map((s) => [s.label, s.group]), [['default', 0], ['images', 1]]);
    assert.equal(depth.data[1][at(depth, '11:57')], 2);
    assert.equal(depth.data[1][at(depth, '11:59')], undefined);
    assert.equal(depth.data[1][at(depth, '11:58')], null);
    assert.equal(depth.data[2][at(depth, '11:59')], 1);
  });
  test('durations: p50 and p95 per queue, in a unit chosen by the largest', () => {
    const run = chartData(chart('run'), points, 60, NOW);
    assert.equal(run.unit, 's');
    assert.deepEqual(run.series.map((s) => [s.label, s.q]), [['images p50', 'p50'], ['images p95', 'p95']]);
    assert.deepEqual([run.data[1][at(run, '11:57')], run.data[2][at(run, '11:59')]], [1.5, 30]);
    const wait = chartData(chart('wait'), points, 60, NOW);
    assert.deepEqual(wait.series.map((s) => s.label), ['default p50', 'default p95', 'images p50', 'images p95']);
    // A queue keeps its colour across the queue charts, whichever queues each one has.
    assert.deepEqual(run.series.map((s) => s.group), [1, 1], 'images, as in the depth and wait charts');
    assert.deepEqual(wait.series.map((s) => s.group), [0, 0, 1, 1]);
    assert.equal(wait.data[3][at(wait, '11:59')], undefined, 'no wait measured there: spanned');
    const stages = chartData(chart('stages'), points, 60, NOW);
    assert.equal(stages.unit, 'ms', 'all under a second');
    assert.deepEqual(stages.data.slice(1).map((c) => c[at(stages, '11:57')]), [20, 40]);
    assert.deepEqual(stages.series.map((s) => s.group), [0, 0]);
  });
  test('push delay: always in ms; a minute without pushes is spanned', () => {
    const push = chartData(chart('push'), points, 60, NOW);
    assert.equal(push.unit, 'ms');
    assert.deepEqual(push.series.map((s) => s.label), ['p50', 'p95']);
    assert.deepEqual([push.data[1][at(push, '11:57')], push.data[2][at(push, '11:57')]], [3, 12]);
    assert.equal(push.data[1][at(push, '11:59')], undefined);
  });
  test('no points: no series of queues, nothing to show', () => {
    const run = chartData(chart('run'), [], 60, NOW);
    assert.deepEqual(run.series, []);
    assert.equal(run.last, null);
    assert.equal(run.count, 0);
    assert.equal(run.data[0].length, 60);
  });
  test('seriesKeys: sorted, across points, ignoring junk', () => {
    assert.deepEqual(seriesKeys([{ run: { b: 1 } }, { run: { a: 1 } }, { run: null }, null], 'run'), ['a', 'b']);
  });
});

test('durationUnit: ms below a second, min from ten minutes, else s', () => {
  assert.deepEqual(durationUnit(0), { unit: 'ms', factor: 1000 });
  assert.deepEqual(durationUnit(0.999), { unit: 'ms', factor: 1000 });
  assert.deepEqual(durationUnit(1), { unit: 's', factor: 1 });
  assert.deepEqual(durationUnit(599), { unit: 's', factor: 1 });
  assert.equal(durationUnit(600).unit, 'min');
  assert.equal(durationUnit(NaN).unit, 'ms');
});

test('isolatedIndexes: values with no neighbour to join (a gap or an end on both sides)', () => {
  assert.deepEqual(isolatedIndexes([null, 1, null, 2, 3, null, 4]), [1, 6]);
  assert.deepEqual(isolatedIndexes([5]), [0]);
  assert.deepEqual(isolatedIndexes([1, undefined, 2]), [], 'undefined is spanned');
  assert.deepEqual(isolatedIndexes([null, undefined, 1, undefined, null]), [2]);
  assert.deepEqual(isolatedIndexes([]), []);
});

test('values and ticks in words', () => {
  assert.equal(formatChartValue(12, 'per min'), '12');
  assert.equal(formatChartValue(3, 'jobs'), '3');
  assert.equal(formatChartValue(1.23456, 's'), '1.23 s');
  assert.equal(formatChartValue(340, 'ms'), '340 ms');
  assert.equal(formatChartValue(null, 's'), '—');
  assert.equal(formatChartValue(undefined, 'ms'), '—');
  assert.equal(formatTick(0.5), '0.5');
  assert.equal(formatTick(20), '20');
  assert.equal(formatTick(12_500), '12.5k');
  assert.equal(formatTick(null), '');
});

describe('workers', () => {
  const report = {
    at: '2025-03-01T12:00:10Z',
    workers: [
      { id: 'h:1', host: 'h', pid: 1, pool: 'images', queues: ['default', 'images'], threads: 4, busy: 1,
        running: [{ thread: 'Thread-2', job_id: 'abc', type: 'test.sleep', since: '2025-03-01T12:00:00Z' }],
        memory_bytes: 88 * 1024 * 1024, jobs_done: 12, jobs_failed: 1, started_at: '2025-03-01T11:00:00Z',
        reported_at: '2025-03-01T12:00:08Z', heartbeat_age_s: 2, alive: true },
      { id: 'h:2', host: 'h', pid: 2, threads: 2, busy: 0, running: null, alive: false, heartbeat_age_s: 90 },
      { host: 'no id' }, null,
    ],
  };
  test('read defensively; idle threads are the rest', () => {
    const [a, b, ...rest] = workersOf(report);
    assert.equal(rest.length, 0);
    assert.equal(a.idle, 3);
    assert.deepEqual(a.running, [{ thread: 'Thread-2', job_id: 'abc', type: 'test.sleep', since: '2025-03-01T12:00:00Z' }]);
    assert.equal(a.alive, true);
    assert.deepEqual([b.busy, b.idle, b.running, b.queues, b.memory_bytes, b.alive], [0, 2, [], [], null, false]);
    assert.deepEqual(workersOf(null), []);
    assert.deepEqual(workersOf({ workers: 'x' }), []);
  });
  test('busy is never below the jobs listed running', () => {
    const [w] = workersOf({ workers: [{ id: 'x', threads: 1, busy: 0, running: [{ thread: 't', job_id: 'j' }] }] });
    assert.deepEqual([w.busy, w.idle], [1, 0]);
  });
  test('ages tick from the server\'s figures, whatever the browser\'s clock says', () => {
    const receivedAt = Date.parse('2025-03-01T11:00:00Z'); // this browser runs an hour slow
    const offset = clockOffset(report, receivedAt);
    assert.equal(offset, 3_610_000, 'the server is an hour and ten seconds ahead');
    const [w] = workersOf(report);
    assert.equal(heartbeatAge(w, receivedAt, receivedAt + 3500), 5.5);
    assert.equal(heartbeatAge(w, receivedAt, receivedAt - 10), 2, 'never younger than reported');
    assert.equal(heartbeatAge({ heartbeat_age_s: null }, 0, 0), null);
    assert.equal(secondsSince(w.running[0].since, receivedAt + offset), 10);
    assert.equal(secondsSince(null, 0), null);
    assert.equal(clockOffset({}, 5), 0);
  });
  test('durations and memory in words', () => {
    assert.equal(formatSeconds(0.4), '0 s');
    assert.equal(formatSeconds(42.9), '42 s');
    assert.equal(formatSeconds(185), '3 min 5 s');
    assert.equal(formatSeconds(7500), '2 h 5 min');
    assert.equal(formatSeconds(null), '—');
    assert.equal(formatSeconds(-1), '—');
    assert.equal(formatMemory(88 * 1024 * 1024), '88 MB');
    assert.equal(formatMemory(9.5 * 1024 * 1024), '9.5 MB');
    assert.equal(formatMemory(null), '—');
  });
});
