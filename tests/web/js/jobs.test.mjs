// web/js/jobs.js: the web client's model of its cards.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  accepts, announcement, createEntry, dropLabel, entryImageId, entryName, entryView, fileOutcome,
  fileProgress, isDelayed, isFinishedCard, mergeJob, queuedView, summarizeDrop,
} from '../../../web/js/jobs.js';

const NOW = Date.UTC(2024, 0, 1, 12);
const inMs = (ms) => new Date(NOW + ms).toISOString();

test('createEntry: an upload has its file\'s upload state; a job card has none', () => {
  const entry = createEntry(3, { file: { size: 1000 }, filename: 'a.jpg' });
  assert.equal(entry.uid, 3);
  assert.equal(entry.filename, 'a.jpg');
  assert.deepEqual(entry.upload, { status: 'waiting', loaded: 0, total: 1000, error: null, xhr: null });
  assert.equal(entry.job, null);
  assert.equal(createEntry(4).upload, null);
});

describe('accepts and mergeJob', () => {
  test('events must be newer; snapshots may be as new', () => {
    const entry = createEntry(1);
    mergeJob(entry, { id: 'j', state: 'active', seq: 3 }, 3);
    assert.ok(!accepts(entry, { id: 'j' }, 3, 'event'));
    assert.ok(accepts(entry, { id: 'j' }, 4, 'event'));
    assert.ok(accepts(entry, { id: 'j', seq: 3 }, 3, 'snapshot'));
    assert.ok(!accepts(entry, { id: 'j', seq: 2 }, 2, 'snapshot'));
  });
  test('a card the person cleared takes only newer news, snapshots included', () => {
    const entry = createEntry(1);
    mergeJob(entry, { id: 'j', state: 'completed', seq: 5 }, 5);
    entry.dismissed = true;
    assert.ok(!accepts(entry, { id: 'j', seq: 5 }, 5, 'snapshot'));
    assert.ok(accepts(entry, { id: 'j', seq: 6 }, 6, 'snapshot'));
  });
  test('merging keeps fields the news leaves out and the highest seq', () => {
    const entry = createEntry(1);
    mergeJob(entry, { id: 'j', state: 'active', stage: 'decode', progress: 10 }, 2);
    mergeJob(entry, { id: 'j', progress: 60 }, 4);
    mergeJob(entry, { id: 'j', state: 'active' }, null);
    assert.deepEqual(entry.job, { id: 'j', state: 'active', stage: 'decode', progress: 60 });
    assert.equal(entry.lastSeq, 4);
  });
});

test('isFinishedCard: ended jobs and failed uploads', () => {
  for (const s of ['completed', 'failed', 'cancelled', 'upload-failed']) assert.ok(isFinishedCard(s), s);
  for (const s of ['waiting', 'uploading', 'queued', 'active', 'retrying']) assert.ok(!isFinishedCard(s), s);
});

describe('waiting jobs', () => {
  test('isDelayed: queued with run_at more than a second ahead', () => {
    assert.ok(isDelayed({ state: 'queued', run_at: inMs(60_000) }, NOW));
    assert.ok(!isDelayed({ state: 'queued', run_at: inMs(500) }, NOW));
    assert.ok(!isDelayed({ state: 'active', run_at: inMs(60_000) }, NOW));
    assert.ok(!isDelayed({ state: 'queued' }, NOW));
  });
  test('queuedView: paused, then delayed, then the place in the queue', () => {
    assert.equal(queuedView({ stage: 'paused', run_at: inMs(60_000), state: 'queued' }, NOW).badge, 'paused');
    const delayed = queuedView({ state: 'queued', run_at: inMs(5 * 60_000) }, NOW);
    assert.equal(delayed.badge, 'delayed');
    assert.match(delayed.note, /^Scheduled to start .+ \(in 5 min\)\.$/);
    assert.deepEqual(queuedView({ state: 'queued', queue_position: 0 }, NOW),
      { badge: 'queued', detail: 'waiting to start', note: 'Next in line.' });
    assert.equal(queuedView({ state: 'queued', queue_position: 1 }, NOW).note, '1 job ahead in the queue.');
    assert.equal(queuedView({ state: 'queued', queue_position: 4, stage: 'queued' }, NOW).detail, 'Stage: queued · waiting to start');
    assert.equal(queuedView({ state: 'queued' }, NOW).note, null);
  });
});

describe('entryName', () => {
  test('file name, image name, the image known by id, the task type, else untitled', () => {
    assert.equal(entryName({ filename: 'a.jpg', image: { filename: 'b.jpg' } }), 'a.jpg');
    assert.equal(entryName({ image: { filename: 'b.jpg' } }), 'b.jpg');
    assert.equal(entryName({ job: { result: { image: { filename: 'c.jpg' } } } }), 'c.jpg');
    assert.equal(entryName({ job: { image_id: 7 } }, new Map([['7', { filename: 'd.jpg' }]])), 'd.jpg');
    assert.equal(entryName({ job: { type: 'webhook.deliver' } }), 'webhook.deliver task');
    assert.equal(entryName({ job: { type: 'image', image_id: 8 } }), 'Untitled image');
    assert.equal(entryName({}), 'Untitled image');
  });
  test('entryImageId: from the image, else the job', () => {
    assert.equal(entryImageId({ image: { id: 5 }, job: { image_id: 6 } }), '5');
    assert.equal(entryImageId({ job: { image_id: 6 } }), '6');
    assert.equal(entryImageId({ job: {} }), null);
  });
});

describe('entryView', () => {
  const withJob = (job, extra = {}) => ({ ...createEntry(1), job, ...extra });

  test('uploads: waiting, under way, sent, failed, cancelled', () => {
    const up = (upload) => entryView({ ...createEntry(1), upload: { total: 2048, loaded: 0, ...upload } });
    assert.deepEqual(up({ status: 'waiting' }), { state: 'waiting', badge: 'waiting', percent: 0, detail: 'Waiting to upload · 2 KB' });
    assert.equal(up({ status: 'uploading', loaded: 1024 }).detail, 'Uploading 1 KB of 2 KB (50%)');
    assert.equal(up({ status: 'uploading', loaded: 2048 }).detail, 'Uploaded 2 KB · waiting for the server…');
    const failed = up({ status: 'error', error: 'This file is too large.' });
    assert.equal(failed.state, 'upload-failed');
    assert.equal(failed.error, 'This file is too large.');
    assert.equal(up({ status: 'cancelled' }).badge, 'cancelled');
    assert.equal(up({ status: 'done' }).detail, 'Waiting for the server…');
  });

  test('an active job: stage, percent, and the attempt past the first', () => {
    const view = entryView(withJob({ state: 'active', stage: 'resize', progress: 42.6, attempt: 2, max_attempts: 3 }), NOW);
    assert.deepEqual(view, { state: 'active', badge: 'active', percent: 43, detail: 'Stage: resize · 43% · attempt 2 of 3', note: null, error: null });
  });

  test('a completed job took its time; a duplicate says so', () => {
    const job = { state: 'completed', progress: 80, started_at: inMs(0), finished_at: inMs(1500) };
    const view = entryView(withJob(job, { duplicate: true }), NOW);
    assert.equal(view.percent, 100);
    assert.equal(view.detail, 'Stage: done · took 1.5 s');
    assert.equal(view.note, 'Already uploaded — showing the existing image.');
  });

  test('a failed job: its reason, and whether another run may help', () => {
    const view = entryView(withJob({ state: 'failed', attempt: 3, error: { type: 'OSError', message: 'disk full' } }), NOW);
    assert.equal(view.detail, 'gave up after 3 attempts');
    assert.equal(view.error, 'disk full');
    assert.equal(view.note, 'This looks temporary: retrying may work.');
    const withAction = entryView(withJob({ state: 'failed', error: null }, { actionError: 'Could not retry: x' }), NOW);
    assert.equal(withAction.error, 'Processing failed. — Could not retry: x');
  });

  test('retrying says why and when', () => {
    const view = entryView(withJob({ state: 'retrying', attempt: 1, max_attempts: 3, error: { message: 'timeout' } }), NOW);
    assert.equal(view.detail, 'attempt 1 of 3');
    assert.equal(view.note, 'Attempt failed: timeout. Retrying soon.');
  });

  test('a failed action shows on a job that has not ended', () => {
    const view = entryView(withJob({ state: 'queued' }, { actionError: 'Could not cancel: x' }), NOW);
    assert.equal(view.error, 'Could not cancel: x');
  });

  test('nothing known yet', () => {
    assert.deepEqual(entryView(createEntry(1)), { state: 'queued', badge: 'queued', percent: 0, detail: '' });
  });
});

test('announcement: one sentence per state reached, nothing for the others', () => {
  assert.equal(announcement({ state: 'completed' }, 'a.jpg'), 'a.jpg: done.');
  assert.equal(announcement({ state: 'failed', error: 'broken' }, 'a.jpg'), 'a.jpg: failed. broken');
  assert.equal(announcement({ state: 'upload-failed' }, 'a.jpg'), 'a.jpg: upload failed.');
  assert.equal(announcement({ state: 'waiting' }, 'a.jpg'), null);
});

describe('a drop of files', () => {
  test('fileProgress: upload is the first half, processing the second, an end is 100', () => {
    assert.equal(fileProgress({ status: 'uploading', loaded: 50, total: 100 }, null), 25);
    assert.equal(fileProgress({ status: 'done' }, null), 50);
    assert.equal(fileProgress(null, { state: 'active', progress: 50 }), 75);
    assert.equal(fileProgress(null, { state: 'failed' }), 100);
    assert.equal(fileProgress({ status: 'error' }, null), 100);
    assert.equal(fileProgress({ status: 'uploading', loaded: 5, total: 0 }, null), 0);
    assert.equal(fileProgress(null, null), 0);
  });
  test('fileOutcome', () => {
    assert.equal(fileOutcome(null, { state: 'completed' }), 'completed');
    assert.equal(fileOutcome(null, { state: 'active' }), null);
    assert.equal(fileOutcome({ status: 'error' }, null), 'failed');
    assert.equal(fileOutcome({ status: 'cancelled' }, null), 'cancelled');
    assert.equal(fileOutcome({ status: 'uploading' }, null), null);
  });
  test('summarizeDrop: the average stays under 100 until every file has ended', () => {
    const going = summarizeDrop([
      { upload: null, job: { state: 'completed' } },
      { upload: null, job: { state: 'active', progress: 100 } },
    ]);
    assert.deepEqual(going, { total: 2, done: 1, completed: 1, failed: 0, cancelled: 0, percent: 99, finished: false });
    const ended = summarizeDrop([
      { upload: null, job: { state: 'completed' } },
      { upload: { status: 'error' }, job: null },
      { upload: null, job: { state: 'cancelled' } },
    ]);
    assert.deepEqual(ended, { total: 3, done: 3, completed: 1, failed: 1, cancelled: 1, percent: 100, finished: true });
    assert.equal(summarizeDrop(null).total, 0);
  });
  test('dropLabel', () => {
    assert.equal(dropLabel({ total: 3, done: 2, failed: 0, cancelled: 0 }), '2 of 3 done');
    assert.equal(dropLabel({ total: 3, done: 3, failed: 1, cancelled: 1 }), '3 of 3 done · 1 failed · 1 cancelled');
    assert.equal(dropLabel({ total: 0 }), '');
  });
});
