// web/js/wire.js: what the server sends, decoded.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  JOB_EVENTS, countedStates, errorText, eventSeq, isNewer, isTerminal, isTransientFailure,
  isUnauthorizedMessage, jobFromEvent, nextSeq, pageOf, queuesOf, shouldApply, shouldReplace,
  snapshotJobs, stateFromEvent,
} from '../../../web/js/wire.js';

test('one event name per transition', () => {
  assert.deepEqual(JOB_EVENTS, ['job:queued', 'job:active', 'job:progress', 'job:retrying',
    'job:completed', 'job:failed', 'job:cancelled']);
  assert.ok(Object.isFrozen(JOB_EVENTS));
});

test('stateFromEvent: the state a transition reaches; job:progress and junk have none', () => {
  assert.equal(stateFromEvent('job:completed'), 'completed');
  assert.equal(stateFromEvent('job:queued'), 'queued');
  assert.equal(stateFromEvent('job:progress'), null);
  assert.equal(stateFromEvent('queues:stats'), null);
  assert.equal(stateFromEvent(undefined), null);
});

test('isTerminal', () => {
  for (const s of ['completed', 'failed', 'cancelled']) assert.ok(isTerminal(s), s);
  for (const s of ['queued', 'active', 'retrying', 'upload-failed', undefined]) assert.ok(!isTerminal(s), s);
});

test('eventSeq: the event\'s seq, else its job\'s, else null', () => {
  assert.equal(eventSeq({ seq: 4, job: { seq: 2 } }), 4);
  assert.equal(eventSeq({ job: { seq: 2 } }), 2);
  assert.equal(eventSeq({ job: {} }), null);
  assert.equal(eventSeq({ seq: '4' }), null);
  assert.equal(eventSeq(null), null);
});

describe('jobFromEvent', () => {
  test('a copy of the job with its seq', () => {
    const payload = { job: { id: 'j1', state: 'active', progress: 40 }, seq: 3 };
    const decoded = jobFromEvent('job:progress', payload);
    assert.deepEqual(decoded, { job: { id: 'j1', state: 'active', progress: 40 }, seq: 3 });
    assert.notEqual(decoded.job, payload.job);
  });
  test('a missing state comes from the event name, else from the copy held', () => {
    assert.equal(jobFromEvent('job:failed', { job: { id: 1 } }).job.state, 'failed');
    assert.equal(jobFromEvent('job:progress', { job: { id: 1 } }, { state: 'active' }).job.state, 'active');
    assert.equal(jobFromEvent('job:progress', { job: { id: 1 } }).job.state, '');
  });
  test('null without a job that has an id', () => {
    for (const bad of [null, 'x', {}, { job: 'x' }, { job: {} }, { job: { id: null } }]) {
      assert.equal(jobFromEvent('job:queued', bad), null);
    }
  });
});

test('snapshotJobs: jobs with ids, oldest first', () => {
  const jobs = snapshotJobs({ jobs: [
    { id: 'b', created_at: '2024-01-01T00:00:02Z' }, null, { id: null },
    { id: 'a', created_at: '2024-01-01T00:00:01Z' }, { id: 'undated' },
  ] });
  assert.deepEqual(jobs.map((j) => j.id), ['undated', 'a', 'b']);
  assert.deepEqual(snapshotJobs(null), []);
  assert.deepEqual(snapshotJobs({ jobs: 'x' }), []);
});

describe('ordering by seq', () => {
  test('shouldApply drops anything not newer than the last seq seen', () => {
    const ev = (seq) => ({ job: { id: 'j' }, seq });
    assert.ok(shouldApply(null, ev(1)));
    assert.ok(shouldApply(3, ev(4)));
    assert.ok(!shouldApply(3, ev(3)));
    assert.ok(!shouldApply(3, ev(2)));
    assert.ok(shouldApply(3, { job: { id: 'j' } }), 'an event without seq cannot be ordered: applied');
    assert.ok(!shouldApply(null, { job: {} }));
    assert.ok(!shouldApply(null, null));
  });
  test('shouldReplace takes a snapshot as new as what is known', () => {
    assert.ok(shouldReplace(3, { id: 'j', seq: 3 }));
    assert.ok(shouldReplace(3, { id: 'j', seq: 5 }));
    assert.ok(!shouldReplace(3, { id: 'j', seq: 2 }));
    assert.ok(shouldReplace(null, { id: 'j', seq: 1 }));
    assert.ok(shouldReplace(3, { id: 'j' }));
    assert.ok(!shouldReplace(3, { seq: 9 }));
  });
  test('nextSeq keeps the highest', () => {
    assert.equal(nextSeq(null, 2), 2);
    assert.equal(nextSeq(5, 2), 5);
    assert.equal(nextSeq(5, 7), 7);
    assert.equal(nextSeq(5, undefined), 5);
    assert.equal(nextSeq(undefined, undefined), null);
  });
  test('isNewer compares with the copy held; unordered things are newer', () => {
    assert.ok(isNewer(undefined, 1));
    assert.ok(isNewer({ seq: 1 }, 2));
    assert.ok(!isNewer({ seq: 2 }, 2));
    assert.ok(!isNewer({ seq: 3 }, 2));
    assert.ok(isNewer({}, 2));
    assert.ok(isNewer({ seq: 3 }, null));
  });
});

describe('isTransientFailure', () => {
  const failed = (error) => ({ state: 'failed', error });
  test('errors another run may fix', () => {
    assert.ok(isTransientFailure(failed({ type: 'TimeLimitExceeded' })));
    assert.ok(isTransientFailure(failed({ type: 'ConnectionResetError' })));
  });
  test('problems with the input are not', () => {
    assert.ok(!isTransientFailure(failed({ type: 'InvalidImage' })));
    assert.ok(!isTransientFailure({ state: 'completed', error: { type: 'OSError' } }));
    assert.ok(!isTransientFailure(failed(null)));
    assert.ok(!isTransientFailure(null));
  });
  test('the server\'s own word wins', () => {
    assert.ok(isTransientFailure(failed({ type: 'InvalidImage', retryable: true })));
    assert.ok(!isTransientFailure(failed({ type: 'OSError', retryable: false })));
  });
});

test('errorText', () => {
  assert.equal(errorText({ type: 'ValueError', message: 'bad' }), 'ValueError: bad');
  assert.equal(errorText({ type: 'ValueError' }), 'ValueError');
  assert.equal(errorText({ message: 'bad' }), 'bad');
  assert.equal(errorText(null), '');
  assert.equal(errorText('boom'), '');
});

test('pageOf: items and the next cursor', () => {
  assert.deepEqual(pageOf({ items: [1, 2], next_before: 'c' }), { items: [1, 2], nextBefore: 'c' });
  assert.deepEqual(pageOf({ items: 'x' }), { items: [], nextBefore: null });
  assert.deepEqual(pageOf(null), { items: [], nextBefore: null });
});

test('queuesOf keeps named queues', () => {
  assert.deepEqual(queuesOf({ queues: [{ name: 'a' }, null, {}, { name: 0 }] }), [{ name: 'a' }, { name: 0 }]);
  assert.deepEqual(queuesOf({}), []);
});

describe('countedStates', () => {
  test('the keys of the counts, in the order the server sends them', () => {
    const counts = { queued: 1, delayed: 0, active: 2, retrying: 0, completed: 9, failed: 1, cancelled: 0 };
    assert.deepEqual(countedStates([{ name: 'default', counts }, { name: 'low', counts }]),
      ['queued', 'delayed', 'active', 'retrying', 'completed', 'failed', 'cancelled']);
  });
  test('a state only one queue has is counted too; queues without counts add nothing', () => {
    assert.deepEqual(countedStates([{ counts: { queued: 0 } }, { counts: null }, { counts: { queued: 1, paused: 2 } }]),
      ['queued', 'paused']);
    assert.deepEqual(countedStates(null), []);
  });
});

test('isUnauthorizedMessage', () => {
  assert.ok(isUnauthorizedMessage('Unauthorized: unknown token'));
  assert.ok(isUnauthorizedMessage('  unauthorized'));
  assert.ok(!isUnauthorizedMessage('timeout'));
  assert.ok(!isUnauthorizedMessage(undefined));
});
