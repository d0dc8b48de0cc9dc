// The Node host's limits (`node --test limits.test.mjs`, after transpiling the fault-injection test
// component into build/ as scripts/test.sh does): a call that loops is stopped within twice the
// time limit, one that allocates past the memory limit fails cleanly; each time nothing it wrote
// stays, Node goes on and the next call works.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

import { ErrorReply, Relay } from './relay.mjs';

async function faulty(options) {
  const dir = mkdtempSync(join(tmpdir(), 'relay-limits-'));
  const relay = await Relay.load(join(dir, 'relay.db'), { settings: { 'fault-injection': 'on' }, ...options });
  return { relay, done: () => { relay.close(); rmSync(dir, { recursive: true, force: true }); } };
}

function stopped(relay, name, args) {
  try {
    relay.callJson(name, args);
  } catch (error) {
    assert.ok(error instanceof ErrorReply, `${error}`);
    return error;
  }
  assert.fail(`${name} was not stopped`);
}

test('a looping call is stopped within twice the time limit, and the next call works', async () => {
  const { relay, done } = await faulty({ timeLimitMs: 1000 });
  try {
    const started = performance.now();
    const error = stopped(relay, 'fault-write-then-spin', { body: 'spun' });
    const took = performance.now() - started;
    assert.equal(error.code, 'internal');
    assert.equal(error.limit, 'time');
    assert.ok(took >= 1000 && took < 2000, `stopped after ${took} ms`);
    // Rolled back, and the next call (in a new worker) works.
    relay.callJson('register-agent', { input: { id: 'after' } });
    assert.deepEqual(relay.callJson('list-messages', {}), []);
  } finally {
    done();
  }
});

test('a call past the memory limit fails cleanly, and the next call works', async () => {
  const { relay, done } = await faulty({ memoryLimitBytes: 32 << 20 });
  try {
    const error = stopped(relay, 'fault-write-then-exhaust-memory', { body: 'big' });
    assert.equal(error.code, 'internal');
    assert.equal(error.limit, 'memory', error.message);
    relay.callJson('register-agent', { input: { id: 'after' } });
    assert.deepEqual(relay.callJson('list-messages', {}), []);
  } finally {
    done();
  }
});

test('a trap rolls back and is not a limit', async () => {
  const { relay, done } = await faulty({});
  try {
    const error = stopped(relay, 'fault-write-then-trap', { body: 'trapped' });
    assert.equal(error.code, 'internal');
    assert.equal(error.limit, undefined);
    assert.deepEqual(relay.callJson('list-messages', {}), []);
  } finally {
    done();
  }
});
