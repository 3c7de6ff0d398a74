// web/js/admin-job-model.js: a job's page, its pure parts.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  backoffText, eventFromPush, formatElapsed, jobActions, jobIdFromPath, lastSeq, mergeEvents,
  newerJob, outcomeLabel, resultImage, splitWorker, stageShare,
} from '../../../web/js/admin-job-model.js';

describe('jobIdFromPath', () => {
  test('takes 1 to 64 lowercase hex digits after /admin/jobs/', () => {
    const id = '0195f3c2a1b04d7e8f9a0b1c2d3e4f50';
    assert.deepEqual(jobIdFromPath(`/admin/jobs/${id}`), { id, raw: id });
    assert.equal(jobIdFromPath(`/admin/jobs/${id}/`).id, id, 'a trailing slash');
    assert.equal(jobIdFromPath('/admin/jobs/a').id, 'a');
    assert.equal(jobIdFromPath(`/admin/jobs/${'f'.repeat(64)}`).id, 'f'.repeat(64));
  });
  test('refuses anything else, keeping what the path held for the message', () => {
    assert.deepEqual(jobIdFromPath('/admin/jobs/not-a-job'), { id: null, raw: 'not-a-job' });
    assert.equal(jobIdFromPath(`/admin/jobs/${'f'.repeat(65)}`).id, null, 'too long');
    assert.equal(jobIdFromPath('/admin/jobs/ABCDEF').id, null, 'upper case');
    assert.equal(jobIdFromPath('/admin/jobs/%3Cimg%3E').raw, '<img>', 'decoded for the message');
    assert.equal(jobIdFromPath('/admin/jobs/%E0%A4%A').raw, '%E0%A4%A', 'undecodable: as it came');
    assert.deepEqual(jobIdFromPath('/admin/jobs/'), { id: null, raw: '' });
    assert.equal(jobIdFromPath('/admin/jobs/ab/cd').id, null);
    assert.equal(jobIdFromPath('/admin').id, null);
    assert.equal(jobIdFromPath(undefined).id, null);
  });
});

describe('formatElapsed', () => {
  test('milliseconds, tenths of seconds, seconds, minutes, hours', () => {
    assert.equal(formatElapsed(0), '0 ms');
    assert.equal(formatElapsed(0.0423), '42 ms');
    assert.equal(formatElapsed(0.85), '850 ms');
    assert.equal(formatElapsed(0.9996), '1 s', 'no "1000 ms"');
    assert.equal(formatElapsed(1.26), '1.3 s');
    assert.equal(formatElapsed(9.97), '10 s');
    assert.equal(formatElapsed(4), '4 s');
    assert.equal(formatElapsed(42.4), '42 s');
    assert.equal(formatElapsed(59.6), '1 min', 'rounded up to a minute: no "60 s"');
    assert.equal(formatElapsed(125), '2 min 5 s');
    assert.equal(formatElapsed(3599.6), '1 h', 'no "60 min"');
    assert.equal(formatElapsed(3600), '1 h');
    assert.equal(formatElapsed(3720), '1 h 2 min');
  });
  test('a dash for nothing or nonsense', () => {
    for (const bad of [null, undefined, '', -1, NaN, 'soon']) assert.equal(formatElapsed(bad), '—');
    assert.equal(formatElapsed('2.5'), '2.5 s', 'a number as text');
  });
});

describe('splitWorker', () => {
  test('host, pid and thread; the thread keeps further colons', () => {
    assert.deepEqual(splitWorker('box-1:4242:Worker-3'), { host: 'box-1', pid: '4242', thread: 'Worker-3' });
    assert.deepEqual(splitWorker('h:1:w:extra'), { host: 'h', pid: '1', thread: 'w:extra' });
  });
  test('another form is all host; none is null', () => {
    assert.deepEqual(splitWorker('lonely'), { host: 'lonely', pid: '', thread: '' });
    assert.deepEqual(splitWorker('a:b'), { host: 'a:b', pid: '', thread: '' });
    assert.equal(splitWorker(null), null);
    assert.equal(splitWorker(''), null);
    assert.equal(splitWorker(42), null);
  });
});

describe('mergeEvents', () => {
  const stored = [
    { seq: 1, name: 'job:queued', worker: null },
    { seq: 2, name: 'job:active', worker: 'h:1:w' },
    { seq: 3, name: 'job:progress', worker: null },
  ];
  test('one per seq, in seq order; the stored copy wins over the pushed one', () => {
    const pushed = [
      { seq: 5, name: 'job:completed', live: true },
      { seq: 2, name: 'job:active', worker: null, live: true },
      { seq: 4, name: 'job:progress', live: true },
    ];
    const merged = mergeEvents(stored, pushed);
    assert.deepEqual(merged.map((ev) => ev.seq), [1, 2, 3, 4, 5]);
    assert.equal(merged[1].worker, 'h:1:w');
    assert.equal(merged[1].live, undefined, 'the stored copy');
    assert.equal(merged[4].live, true);
  });
  test('events without a seq, junk and missing lists are left out', () => {
    assert.deepEqual(mergeEvents(stored, [{ name: 'job:progress' }, null, 'x']).map((ev) => ev.seq), [1, 2, 3]);
    assert.deepEqual(mergeEvents(undefined, null), []);
    assert.deepEqual(mergeEvents([], [{ seq: 7 }]).map((ev) => ev.seq), [7]);
  });
  test('lastSeq: the highest seq, -Infinity for none', () => {
    assert.equal(lastSeq(stored), 3);
    assert.equal(lastSeq([{ seq: 9 }, { seq: 4 }, {}]), 9);
    assert.equal(lastSeq([]), -Infinity);
    assert.equal(lastSeq(null), -Infinity);
  });
});

test('eventFromPush: a pushed job as an event row, its time the push\'s', () => {
  const job = { id: 'j', state: 'active', stage: 'thumbnail', progress: 40, error: null };
  assert.deepEqual(eventFromPush('job:progress', job, 7, '2026-01-02T03:04:05.678Z'), {
    seq: 7, name: 'job:progress', state: 'active', stage: 'thumbnail', progress: 40, error: null,
    at: '2026-01-02T03:04:05.678Z', worker: null, live: true,
  });
  const bare = eventFromPush('job:queued', {}, undefined, undefined);
  assert.equal(bare.seq, null);
  assert.equal(bare.progress, null);
  assert.ok(!Number.isNaN(new Date(bare.at).getTime()), 'no time sent: now');
});

test('newerJob: the copy with the higher seq, the second one when they cannot be ordered', () => {
  const a = { id: 'j', seq: 5 };
  const b = { id: 'j', seq: 4 };
  assert.equal(newerJob(a, b), a);
  assert.equal(newerJob(b, a), a);
  const same = { id: 'j', seq: 5 };
  assert.equal(newerJob(a, same), same, 'as new: the second');
  assert.equal(newerJob(null, b), b);
  assert.equal(newerJob(a, null), a);
  assert.equal(newerJob({ id: 'j' }, b), b);
});

test('resultImage: a completed image job\'s <Image>, else null', () => {
  const image = { id: 'i', thumbnail_url: '/t', preview_url: '/p' };
  assert.equal(resultImage({ result: { image } }), image);
  assert.equal(resultImage({ result: { runs: 2 } }), null);
  assert.equal(resultImage({ result: { image: 'x' } }), null);
  assert.equal(resultImage({ result: null }), null);
  assert.equal(resultImage(null), null);
});

describe('jobActions', () => {
  test('retry a failed job; cancel one not yet ended; delete an image that exists', () => {
    assert.deepEqual(jobActions({ state: 'failed', image_id: 'i' }, true), { retry: true, cancel: false, deleteImage: true });
    for (const state of ['queued', 'delayed', 'active', 'retrying']) {
      assert.deepEqual(jobActions({ state }), { retry: false, cancel: true, deleteImage: false }, state);
    }
    assert.deepEqual(jobActions({ state: 'completed', image_id: 'i' }, true), { retry: false, cancel: false, deleteImage: true });
    assert.deepEqual(jobActions({ state: 'cancelled' }), { retry: false, cancel: false, deleteImage: false });
  });
  test('no image, or one already gone: nothing to delete', () => {
    assert.equal(jobActions({ state: 'completed', image_id: 'i' }, false).deleteImage, false);
    assert.equal(jobActions({ state: 'completed', image_id: null }, true).deleteImage, false);
    assert.deepEqual(jobActions(null), { retry: false, cancel: false, deleteImage: false });
  });
});

test('backoffText: the wait after an attempt, before the next', () => {
  assert.equal(backoffText({ number: 1, backoff_s: 4.2 }), 'Waited 4.2 s before attempt 2');
  assert.equal(backoffText({ number: 2, backoff_s: 0 }), 'Waited 0 ms before attempt 3');
  assert.equal(backoffText({ backoff_s: 61 }), 'Waited 1 min 1 s before the next attempt');
  assert.equal(backoffText({ number: 3, backoff_s: null }), null, 'the last attempt');
  assert.equal(backoffText(null), null);
});

test('stageShare: a stage\'s whole percentage of its attempt', () => {
  assert.equal(stageShare(0.5, 2), 25);
  assert.equal(stageShare(2, 2), 100);
  assert.equal(stageShare(3, 2), 100, 'never above 100');
  assert.equal(stageShare(null, 2), 0, 'still running');
  assert.equal(stageShare(1, 0), 0);
  assert.equal(stageShare(1, null), 0);
  assert.equal(stageShare(-1, 2), 0);
});

test('outcomeLabel: "running" while an attempt runs', () => {
  assert.equal(outcomeLabel(null), 'running');
  assert.equal(outcomeLabel('lost'), 'lost');
});
