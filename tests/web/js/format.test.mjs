// web/js/format.js: text for people.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  buildQuery, clampPercent, formatAge, formatBytes, formatCount, formatCountdown, formatDateTime,
  formatDuration, formatRate, formatTimestamp, parseDate, prettyJson, safeUrl, shortId, stateLabel,
} from '../../../web/js/format.js';

describe('formatBytes', () => {
  test('bytes, then units with two, one or no decimals', () => {
    assert.equal(formatBytes(0), '0 B');
    assert.equal(formatBytes(512), '512 B');
    assert.equal(formatBytes(1536), '1.5 KB');
    assert.equal(formatBytes(12 * 1024 * 1024), '12 MB');
    assert.equal(formatBytes(150 * 1024), '150 KB');
    assert.equal(formatBytes(1.02 * 1024 ** 3), '1.02 GB');
  });
  test('never "1024 KB": the rounded value moves up a unit', () => {
    assert.equal(formatBytes(1024 * 1024 - 1), '1 MB');
  });
  test('nonsense reads as a dash', () => {
    for (const bad of [-1, NaN, 'abc', undefined]) assert.equal(formatBytes(bad), '—');
  });
});

test('clampPercent rounds into 0..100 and turns junk into 0', () => {
  assert.equal(clampPercent(42.4), 42);
  assert.equal(clampPercent(-5), 0);
  assert.equal(clampPercent(250), 100);
  assert.equal(clampPercent('77'), 77);
  assert.equal(clampPercent(undefined), 0);
  assert.equal(clampPercent('x'), 0);
});

describe('parseDate', () => {
  test('ISO strings', () => {
    assert.equal(parseDate('2024-05-01T10:00:00Z').toISOString(), '2024-05-01T10:00:00.000Z');
  });
  test('EXIF "YYYY:MM:DD HH:MM:SS" is local time', () => {
    const d = parseDate('2021:07:04 13:14:15');
    assert.deepEqual([d.getFullYear(), d.getMonth(), d.getDate(), d.getHours(), d.getMinutes(), d.getSeconds()],
      [2021, 6, 4, 13, 14, 15]);
  });
  test('epoch seconds and milliseconds', () => {
    assert.equal(parseDate(1_700_000_000).getTime(), 1_700_000_000_000);
    assert.equal(parseDate(1_700_000_000_000).getTime(), 1_700_000_000_000);
  });
  test('nothing or junk is null', () => {
    for (const bad of [null, undefined, '', 'not a date', {}]) assert.equal(parseDate(bad), null);
  });
});

test('formatDateTime: null for nothing, the raw text when unparseable, else a localised string', () => {
  assert.equal(formatDateTime(null), null);
  assert.equal(formatDateTime(''), null);
  assert.equal(formatDateTime('whenever'), 'whenever');
  const text = formatDateTime('2024-05-01T10:00:00Z');
  assert.equal(typeof text, 'string');
  assert.match(text, /2024/);
});

test('formatTimestamp: a dash for nothing, the raw text when unparseable', () => {
  assert.equal(formatTimestamp(null), '—');
  assert.equal(formatTimestamp(''), '—');
  assert.equal(formatTimestamp('later'), 'later');
  assert.match(formatTimestamp('2024-05-01T10:00:00Z'), /\d/);
});

describe('formatDuration', () => {
  const at = (ms) => new Date(Date.UTC(2024, 0, 1) + ms).toISOString();
  test('milliseconds, seconds, minutes', () => {
    assert.equal(formatDuration(at(0), at(850)), '850 ms');
    assert.equal(formatDuration(at(0), at(1234)), '1.2 s');
    assert.equal(formatDuration(at(0), at(125_000)), '2 min 5 s');
    assert.equal(formatDuration(at(0), at(180_000)), '3 min');
  });
  test('null when either end is missing or the end comes first', () => {
    assert.equal(formatDuration(null, at(5)), null);
    assert.equal(formatDuration(at(5), null), null);
    assert.equal(formatDuration(at(5000), at(0)), null);
  });
});

describe('formatCountdown', () => {
  const now = Date.UTC(2024, 0, 1);
  const after = (ms) => new Date(now + ms).toISOString();
  test('seconds, minutes, hours, days', () => {
    assert.equal(formatCountdown(after(45_000), now), 'in 45 s');
    assert.equal(formatCountdown(after(5 * 60_000), now), 'in 5 min');
    assert.equal(formatCountdown(after(125 * 60_000), now), 'in 2 h 5 min');
    assert.equal(formatCountdown(after(3 * 3600_000), now), 'in 3 h');
    assert.equal(formatCountdown(after(72 * 3600_000), now), 'in 3 days');
  });
  test('accepts a Date for now', () => {
    assert.equal(formatCountdown(after(10_000), new Date(now)), 'in 10 s');
  });
  test('null once passed or unparseable', () => {
    assert.equal(formatCountdown(after(-1000), now), null);
    assert.equal(formatCountdown(after(0), now), null);
    assert.equal(formatCountdown('soon', now), null);
  });
});

test('formatAge', () => {
  assert.equal(formatAge(null), '—');
  assert.equal(formatAge(''), '—');
  assert.equal(formatAge(-3), '—');
  assert.equal(formatAge(42.4), '42 s');
  assert.equal(formatAge(300), '5 min');
  assert.equal(formatAge(2 * 3600 + 5 * 60), '2 h 5 min');
  assert.equal(formatAge(3 * 86400 + 4 * 3600), '3 d 4 h');
});

test('formatRate: one decimal below 10, whole numbers above', () => {
  assert.equal(formatRate(0), '0');
  assert.equal(formatRate(2.46), '2.5');
  assert.equal(formatRate(12.6), '13');
  assert.equal(formatRate(-1), '—');
  assert.equal(formatRate('x'), '—');
});

test('formatCount: the number, 0 for anything missing', () => {
  assert.equal(formatCount(7), '7');
  assert.equal(formatCount(undefined), '0');
  assert.equal(formatCount(-2), '0');
  assert.equal(formatCount('3'), '3');
});

test('shortId keeps the last characters: the random end, not the creation time all jobs of a minute share', () => {
  assert.equal(shortId('0123456789abcdef'), '89abcdef');
  const sameMinute = ['019a0c1b2d3e4f5a6b7c8d9e0f1a2b3c', '019a0c1b2e00112233445566778899aa'];
  assert.notEqual(shortId(sameMinute[0]), shortId(sameMinute[1]));
  assert.equal(shortId(sameMinute[1]), '778899aa');
  assert.equal(shortId('abc'), 'abc');
  assert.equal(shortId(null), '');
  assert.equal(shortId(123456789012, 4), '9012');
});

test('prettyJson', () => {
  assert.equal(prettyJson(undefined), '—');
  assert.equal(prettyJson({ a: 1 }), '{\n  "a": 1\n}');
  const loop = {};
  loop.self = loop;
  assert.equal(prettyJson(loop), '[object Object]');
});

test('buildQuery leaves out empty values', () => {
  assert.equal(buildQuery({ state: 'failed', type: '', limit: 50, before: null }), '?state=failed&limit=50');
  assert.equal(buildQuery({ type: 'a b&c' }), '?type=a+b%26c');
  assert.equal(buildQuery({}), '');
  assert.equal(buildQuery(null), '');
});

describe('safeUrl', () => {
  test('http(s) URLs, made absolute', () => {
    assert.equal(safeUrl('https://example.test/a.webp'), 'https://example.test/a.webp');
    assert.equal(safeUrl('/files/x?sig=1', 'http://localhost:8000/'), 'http://localhost:8000/files/x?sig=1');
  });
  test('anything that could run script or is junk is refused', () => {
    for (const bad of ['javascript:alert(1)', 'data:text/html,<b>x</b>', '', '   ', null, 42]) {
      assert.equal(safeUrl(bad), null, String(bad));
    }
  });
});

test('stateLabel capitalises a state for a column heading', () => {
  assert.equal(stateLabel('retrying'), 'Retrying');
  assert.equal(stateLabel(''), '');
  assert.equal(stateLabel(null), '');
});
