// The Node host's store keeps the Rust host's promises: `node --test store.test.mjs`.

import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

import { SqliteStore, refusal } from './store.mjs';

function openStore() {
  const store = new SqliteStore(join(mkdtempSync(join(tmpdir(), 'relay-store-')), 'test.db'));
  const capability = store.capability();
  store.begin('write');
  capability.execute('CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)', []);
  store.finish(true);
  return { store, capability };
}

const text = (val) => ({ tag: 'text', val });
const count = (store) => store.db.prepare('SELECT count(*) AS n FROM notes').get().n;

test('transaction control, ATTACH and extensions are refused from the guest', () => {
  const { store, capability } = openStore();
  store.begin('write');
  for (const sql of [
    'COMMIT', 'rollback', '  -- sneaky\n BEGIN', '/* x */ SAVEPOINT s', 'RELEASE s', 'END',
    "ATTACH DATABASE '/tmp/other.db' AS other", 'DETACH other', 'VACUUM',
    "SELECT load_extension('evil')", 'PRAGMA journal_mode = DELETE', 'PRAGMA foreign_keys = OFF',
    'EXPLAIN COMMIT',
  ]) {
    const answer = capability.execute(sql, []);
    assert.equal(answer.tag, 'err', sql);
    assert.equal(answer.val.tag, 'refused', `${sql}: ${answer.val.val}`);
  }
  assert.equal(capability.query('SELECT 1; COMMIT', []).tag, 'err', 'one statement at a time');
  assert.ok(store.db.inTransaction, "the host's transaction is still open");
  store.finish(false);
  assert.equal(refusal('PRAGMA table_info(notes)'), null);
  assert.equal(refusal('PRAGMA user_version'), null);
  assert.notEqual(refusal('PRAGMA user_version = 3'), null);
  assert.equal(refusal('SELECT body FROM notes WHERE body = "begin"'), null);
});

test('a call that fails leaves nothing written; one that succeeds is committed', () => {
  const { store, capability } = openStore();
  store.begin('write');
  assert.equal(capability.execute('INSERT INTO notes (body) VALUES (?)', [text('lost')]).tag, 'ok');
  store.finish(false);
  assert.equal(count(store), 0);
  store.begin('write');
  const inserted = capability.execute('INSERT INTO notes (body) VALUES (?)', [text('kept')]);
  assert.deepEqual(inserted, { tag: 'ok', val: { rowsChanged: 1n, lastInsertId: 1n } });
  store.finish(true);
  assert.equal(count(store), 1);
});

test('a read-only call cannot write, not even a setting', () => {
  const { store, capability } = openStore();
  store.begin('read');
  const write = capability.execute('INSERT INTO notes (body) VALUES (?)', [text('no')]);
  assert.equal(write.val.tag, 'read-only');
  assert.equal(capability.setSetting('k', 'v').val.tag, 'read-only');
  const rows = capability.query('SELECT count(*) AS n FROM notes', []);
  assert.deepEqual(rows.val, { columns: ['n'], rows: [[{ tag: 'integer', val: 0n }]] });
  store.finish(true);
  store.begin('write');
  assert.equal(capability.execute('INSERT INTO notes (body) VALUES (?)', [text('yes')]).tag, 'ok');
  store.finish(true);
});

test('settings live in relay_settings and follow the transaction', () => {
  const { store, capability } = openStore();
  store.begin('write');
  capability.setSetting('stale-ttl-ms', '1000');
  store.finish(false);
  store.begin('read');
  assert.deepEqual(capability.getSetting('stale-ttl-ms'), { tag: 'ok', val: undefined });
  store.finish(true);
  store.begin('write');
  capability.setSetting('stale-ttl-ms', '1000');
  store.finish(true);
  store.begin('read');
  assert.deepEqual(capability.getSetting('stale-ttl-ms'), { tag: 'ok', val: '1000' });
  store.finish(true);
});

test('run settings are answered first and never written; an empty value removes a stored one', () => {
  const dir = mkdtempSync(join(tmpdir(), 'relay-store-'));
  const store = new SqliteStore(join(dir, 'test.db'), { runSettings: { 'max-attempts': 2 } });
  const capability = store.capability();
  store.begin('write');
  capability.setSetting('max-attempts', '7');
  capability.setSetting('page-bytes', '65536');
  store.finish(true);
  store.begin('read');
  assert.deepEqual(capability.getSetting('max-attempts'), { tag: 'ok', val: '2' });
  assert.deepEqual(capability.listSettings('')?.val, [
    { key: 'max-attempts', value: '2', source: 'run' },
    { key: 'page-bytes', value: '65536', source: 'stored' },
  ]);
  store.finish(true);
  store.begin('write');
  capability.setSetting('page-bytes', '');
  store.finish(true);
  store.close();
  const later = new SqliteStore(join(dir, 'test.db'));
  const again = later.capability();
  later.begin('read');
  assert.deepEqual(again.listSettings('')?.val, [{ key: 'max-attempts', value: '7', source: 'stored' }]);
  later.finish(true);
  later.close();
});

test('a page stops before the row that would pass its byte budget, and always holds one', () => {
  const { store, capability } = openStore();
  store.begin('write');
  for (const body of ['a'.repeat(100), 'b'.repeat(100), 'c'.repeat(100)]) {
    capability.execute('INSERT INTO notes (body) VALUES (?)', [text(body)]);
  }
  store.finish(true);
  store.begin('read');
  const sql = 'SELECT id, body FROM notes ORDER BY id';
  // A row counts 16 per value, 8 per number and its text's bytes: 16 + 8 + 16 + 100 = 140.
  const page = (maxBytes) => capability.queryPage(sql, [], maxBytes).val.rows.length;
  assert.equal(page(280n), 2);
  assert.equal(page(279n), 1);
  assert.equal(page(1n), 1, 'the first row always comes');
  assert.equal(page(10000n), 3);
  store.finish(false);
});
