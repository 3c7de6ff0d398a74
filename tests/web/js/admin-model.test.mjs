// web/js/admin-model.js: the dashboard's model.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  ADMIN_MESSAGES, DLQ_FILTERS, DLQ_PREFIX, JOB_FILTERS, NOT_ADMIN, activeFilters, checkableLive, createJobCache,
  describeFilters, describeJob, dlqItemFromJob, dlqMatches, emptyFilters, filterNamed, filtersFromQuery, idMatches,
  isoToLocalInput, jobMatches, localInputToIso, queryWithFilters, sameFilters,
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

describe('jobMatches: the search filters a pushed job can show', () => {
  const id = '019a0c1b2d3e4f5a6b7c8d9e0f1a2b3c';
  const job = {
    id, state: 'failed', type: 'test.flaky', created_at: '2024-01-01T10:00:00.000Z',
    error: { type: 'TransientError', message: 'Gateway Timeout' },
  };
  test('id: whole, its start, or the short id (its last 8) or its first 6 or 7 (any case)', () => {
    assert.ok(jobMatches(job, { id }));
    assert.ok(jobMatches(job, { id: '019a0c' }), 'a prefix');
    assert.ok(jobMatches(job, { id: '0F1A2B3C' }), 'the short id, upper case');
    assert.ok(jobMatches(job, { id: '0f1a2b' }), 'the start of the short id');
    assert.ok(!jobMatches(job, { id: '1a2b3c' }), 'the end of the short id is no match');
    assert.ok(!jobMatches(job, { id: '9e0f1a2b3c' }), 'over 8 characters: only a prefix');
    assert.ok(!jobMatches(job, { id: '2b3c' }), 'under 6 characters: only a prefix');
    assert.ok(!jobMatches(job, { id: `${id.slice(0, -1)}d` }), 'a whole id must be equal');
    assert.ok(idMatches(id, ''));
  });
  test('error: case-insensitive, in its type or its message', () => {
    assert.ok(jobMatches(job, { error: 'timeout' }));
    assert.ok(jobMatches(job, { error: 'transienterror' }));
    assert.ok(!jobMatches(job, { error: 'refused' }));
    assert.ok(!jobMatches({ ...job, error: null }, { error: 'timeout' }));
  });
  test('from (inclusive) and to (exclusive) on created_at', () => {
    assert.ok(jobMatches(job, { from: '2024-01-01T10:00:00Z' }));
    assert.ok(!jobMatches(job, { to: '2024-01-01T10:00:00Z' }));
    assert.ok(jobMatches(job, { from: '2024-01-01T09:00:00Z', to: '2024-01-01T10:00:00.001Z' }));
    assert.ok(jobMatches(job, { from: '2024-01-01T11:00:00+01:00' }), 'any offset');
    assert.ok(!jobMatches(job, { from: '2024-01-01T11:00:01+01:00' }));
    assert.ok(!jobMatches({ ...job, created_at: null }, { from: '2024-01-01T09:00:00Z' }), 'no time: no match');
  });
  test('every filter is AND-ed; those a job does not carry are taken as met', () => {
    assert.ok(jobMatches(job, { state: 'failed', type: 'test.flaky', error: 'gateway', id: '019a', queue: 'images', filename: 'x' }));
    assert.ok(!jobMatches(job, { state: 'failed', type: 'test.sleep', error: 'gateway' }));
  });
});

describe('search filters', () => {
  test('from the URL: plain names for the jobs, dlq.-prefixed for the dead letters', () => {
    const query = '?state=failed&type=image.process&error=timeout&dlq.error=%20refused%20&other=1';
    assert.deepEqual(filtersFromQuery(query, JOB_FILTERS), {
      ...emptyFilters(JOB_FILTERS), state: 'failed', type: 'image.process', error: 'timeout',
    });
    assert.deepEqual(filtersFromQuery(new URLSearchParams(query), DLQ_FILTERS, DLQ_PREFIX), {
      ...emptyFilters(DLQ_FILTERS), error: 'refused',
    });
    assert.deepEqual(filtersFromQuery('', ['id']), { id: '' });
  });
  test('into the URL: a section\'s own names replaced, the other\'s and anything else kept', () => {
    const start = '?state=failed&dlq.type=test.flaky&x=1';
    const jobs = { ...emptyFilters(JOB_FILTERS), error: 'time out', from: '2024-01-01T10:00:00.000Z' };
    assert.equal(queryWithFilters(start, jobs, JOB_FILTERS),
      '?dlq.type=test.flaky&x=1&error=time+out&from=2024-01-01T10%3A00%3A00.000Z');
    assert.equal(queryWithFilters(start, emptyFilters(DLQ_FILTERS), DLQ_FILTERS, DLQ_PREFIX), '?state=failed&x=1');
    assert.equal(queryWithFilters('?dlq.id=abc', { id: '' }, ['id'], DLQ_PREFIX), '');
  });
  test('a round trip through the URL gives the same filters', () => {
    const f = { ...emptyFilters(JOB_FILTERS), id: '0f1a2b3c', state: 'delayed', filename: 'a&b=c.jpg', to: '2024-05-01T00:00:00.000Z' };
    const back = filtersFromQuery(queryWithFilters('', f, JOB_FILTERS), JOB_FILTERS);
    assert.deepEqual(back, f);
    assert.ok(sameFilters(back, f));
  });
  test('which are set; whether two searches are the same', () => {
    assert.deepEqual(activeFilters({ id: '', type: 'x', error: '  ', state: null }), ['type']);
    assert.ok(sameFilters({ type: 'x', error: '' }, { type: 'x' }), 'unset = absent');
    assert.ok(!sameFilters({ type: 'x' }, { type: 'y' }));
    assert.ok(!sameFilters({ type: 'x' }, { type: 'x', user: 'u' }));
  });
  test('a job not listed can join live only when its own fields settle every filter set', () => {
    assert.ok(checkableLive(emptyFilters(JOB_FILTERS)));
    assert.ok(checkableLive({ id: 'abc', state: 'failed', type: 't', error: 'e', from: 'x', to: 'y' }));
    for (const key of ['queue', 'user', 'filename', 'sha256']) {
      assert.ok(!checkableLive({ state: 'failed', [key]: 'v' }), key);
    }
  });
  test('the filters in words, for a confirmation', () => {
    assert.equal(describeFilters({ error: 'timeout', type: 'image.process' }),
      'type = image.process and error containing "timeout"', 'in the form\'s order');
    assert.equal(describeFilters({ id: '0f1a2b3c', queue: 'images', user: 'u1' }),
      'an id starting or ending with 0f1a2b3c, queue = images and owner = u1');
    assert.equal(describeFilters({ id: '019a0c1b2d3e4f5a6b7c8d9e0f1a2b3c' }), 'id 019a0c1b2d3e4f5a6b7c8d9e0f1a2b3c');
    assert.match(describeFilters({ from: '2024-01-01T10:00:00Z', to: '' }), /^created at or after .*\d/);
    assert.equal(describeFilters({}), '');
  });
  test('the filter a refusal is about', () => {
    assert.equal(filterNamed('sha256 must be 6 to 64 hexadecimal digits', JOB_FILTERS), 'sha256');
    assert.equal(filterNamed("unknown state 'x'", JOB_FILTERS), 'state');
    assert.equal(filterNamed('from must be before to', DLQ_FILTERS), 'from');
    assert.equal(filterNamed('sha256 must be 6 to 64 hexadecimal digits', DLQ_FILTERS), null);
    assert.equal(filterNamed('', JOB_FILTERS), null);
  });
  test('datetime-local values (local time) and ISO times', () => {
    const iso = localInputToIso('2024-03-05T07:08');
    const d = new Date(iso);
    assert.deepEqual([d.getFullYear(), d.getMonth(), d.getDate(), d.getHours(), d.getMinutes()], [2024, 2, 5, 7, 8]);
    assert.match(iso, /Z$/);
    assert.equal(isoToLocalInput(iso), '2024-03-05T07:08', 'minutes only when no seconds');
    assert.equal(isoToLocalInput(localInputToIso('2024-03-05T07:08:09')), '2024-03-05T07:08:09');
    assert.equal(localInputToIso(''), '');
    assert.equal(localInputToIso('junk'), '');
    assert.equal(isoToLocalInput('junk'), '');
    assert.equal(isoToLocalInput(''), '');
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
  test('dlqMatches: id (prefix or short id) and the creation time as well', () => {
    const item = { job: { id: '019a0c1b2d3e4f5a6b7c8d9e0f1a2b3c', type: 't', created_at: '2024-01-01T10:00:00Z' }, error: {} };
    assert.ok(dlqMatches(item, { id: '0f1a2b3c', from: '2024-01-01T10:00:00Z' }));
    assert.ok(!dlqMatches(item, { id: 'ffffff' }));
    assert.ok(!dlqMatches(item, { to: '2024-01-01T09:00:00Z' }));
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
