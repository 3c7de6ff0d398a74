// web/js/admin-model.js: the dashboard's model.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  ADMIN_MESSAGES, NOT_ADMIN, createJobCache, describeJob, dlqItemFromJob, dlqMatches, jobMatches,
} from '../../../web/js/admin-model.js';
import { errorMessage, NETWORK_ERROR } from '../../../web/js/api.js';

test('a refused token reads as not an admin\'s', () => {
  assert.equal(errorMessage(401, '', ADMIN_MESSAGES), NOT_ADMIN);
  assert.equal(errorMessage(403, '', ADMIN_MESSAGES), NOT_ADMIN);
  assert.equal(errorMessage(0, undefined, ADMIN_MESSAGES), NETWORK_ERROR);
  assert.equal(errorMessage(413, '', ADMIN_MESSAGES), 'Request failed (HTTP 413).');
});

describe('createJobCache', () => {
  test('keeps the newest copy of each job', () => {
    const cache = createJobCache();
    cache.remember({ id: 'j', seq: 5, state: 'active' });
    const kept = cache.remember({ id: 'j', seq: 4, state: 'queued' });
    assert.equal(kept.state, 'active');
    assert.equal(cache.remember({ id: 'j', seq: 5, state: 'completed' }).state, 'completed', 'as new: taken');
    assert.equal(cache.remember({ id: 'j', state: 'failed' }).state, 'failed', 'unordered: taken');
    assert.ok(cache.has('j'));
    assert.equal(cache.get('j').state, 'failed');
  });
  test('past its size the oldest twentieth goes at once', () => {
    const cache = createJobCache(100);
    for (let i = 0; i < 101; i += 1) cache.remember({ id: i });
    assert.equal(cache.size, 95);
    assert.ok(!cache.has(0) && !cache.has(5));
    assert.ok(cache.has(6) && cache.has(100));
    cache.clear();
    assert.equal(cache.size, 0);
  });
});

describe('jobMatches', () => {
  const now = Date.UTC(2024, 0, 1);
  test('state and type filters', () => {
    const job = { id: 1, state: 'failed', type: 'image.process' };
    assert.ok(jobMatches(job, { state: '', type: '' }, now));
    assert.ok(jobMatches(job, { state: 'failed', type: 'image.process' }, now));
    assert.ok(!jobMatches(job, { state: 'active', type: '' }, now));
    assert.ok(!jobMatches(job, { state: '', type: 'image' }, now), 'type matches exactly');
    assert.ok(!jobMatches({ state: 'failed' }, {}, now), 'no id');
  });
  test('"delayed" is a queued job whose run_at is ahead', () => {
    const ahead = new Date(now + 60_000).toISOString();
    assert.ok(jobMatches({ id: 1, state: 'queued', run_at: ahead }, { state: 'delayed' }, now));
    assert.ok(!jobMatches({ id: 1, state: 'queued', run_at: new Date(now - 1).toISOString() }, { state: 'delayed' }, now));
    assert.ok(!jobMatches({ id: 1, state: 'active', run_at: ahead }, { state: 'delayed' }, now));
    assert.ok(!jobMatches({ id: 1, state: 'queued' }, { state: 'delayed' }, now));
  });
});

describe('dead letters', () => {
  test('dlqItemFromJob: what a job:failed event tells', () => {
    const job = { id: 'j', attempt: 3, finished_at: 'T', error: { type: 'OSError', message: 'disk' } };
    assert.deepEqual(dlqItemFromJob(job), {
      job, error: { type: 'OSError', message: 'disk', traceback: null }, attempts: 3, failed_at: 'T', payload: null,
    });
    assert.deepEqual(dlqItemFromJob({ id: 'k' }).error, { type: 'Error', message: '', traceback: null });
  });
  test('dlqMatches: exact type, error text anywhere in type or message, any case', () => {
    const item = { job: { type: 'webhook.deliver' }, error: { type: 'HTTPError', message: 'Gateway Timeout' } };
    assert.ok(dlqMatches(item, {}));
    assert.ok(dlqMatches(item, { type: 'webhook.deliver', error: 'timeout' }));
    assert.ok(dlqMatches(item, { error: 'httperror' }));
    assert.ok(!dlqMatches(item, { type: 'webhook' }));
    assert.ok(!dlqMatches(item, { error: 'refused' }));
    assert.ok(!dlqMatches({ error: {} }, {}));
  });
});

test('describeJob leaves out what is unknown', () => {
  const rows = describeJob({ id: 'j1', type: 'test.sleep', state: 'active', progress: 33.3, attempt: 1, max_attempts: 3, priority: 'high', queue_position: null });
  assert.deepEqual(rows, [
    ['ID', 'j1'], ['Type', 'test.sleep'], ['State', 'active'], ['Progress', '33%'], ['Attempts', '1 of 3'], ['Priority', 'high'],
  ]);
  assert.deepEqual(describeJob({ id: 2, attempt: 1 })[1], ['Attempts', '1 of ?']);
  assert.match(Object.fromEntries(describeJob({ id: 3, created_at: '2024-01-01T00:00:00Z' })).Created, /\d/);
  assert.deepEqual(describeJob(null), []);
});
