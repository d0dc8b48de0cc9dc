// The WIT `store` capability over better-sqlite3, with the Rust host's promises (host/src/sqlite.rs):
// one transaction per call, opened by the host (BEGIN IMMEDIATE for writes, a read transaction
// under `query_only` for queries), committed only when the call succeeds; the guest may not
// control transactions, attach databases or load extensions; relay settings in `relay_settings`.
//
// better-sqlite3 has no authorizer hook, so statements are vetted before they are prepared: by
// their leading keyword (after comments and EXPLAIN), by pragma name, and by a ban on
// `load_extension`. better-sqlite3 prepares one statement at a time, so nothing can hide behind a
// `;`. After every statement the transaction must still be open, or the call fails.

import Database from 'better-sqlite3';

const REFUSED_LEADING = new Set([
  'BEGIN', 'COMMIT', 'END', 'ROLLBACK', 'SAVEPOINT', 'RELEASE', 'ATTACH', 'DETACH', 'VACUUM',
]);
// As the Rust host: schema introspection (any argument) and read-only checks (no argument).
const INTROSPECTION_PRAGMAS = new Set([
  'table_info', 'table_xinfo', 'index_list', 'index_info', 'foreign_key_list',
]);
const READ_PRAGMAS = new Set([
  'quick_check', 'integrity_check', 'page_count', 'freelist_count', 'user_version',
]);

export class StoreError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind;
  }

  /** The WIT `store-error` value. */
  get value() {
    return { tag: this.kind, val: this.message };
  }
}

/** The statement without leading comments and whitespace. */
function stripLeading(sql) {
  let rest = sql;
  for (;;) {
    const trimmed = rest.replace(/^\s+/, '');
    if (trimmed.startsWith('--')) {
      const end = trimmed.indexOf('\n');
      rest = end < 0 ? '' : trimmed.slice(end + 1);
    } else if (trimmed.startsWith('/*')) {
      const end = trimmed.indexOf('*/');
      rest = end < 0 ? '' : trimmed.slice(end + 2);
    } else {
      return trimmed;
    }
  }
}

/** Why the guest may not run `sql`, or null when it may. */
export function refusal(sql) {
  if (/\bload_extension\b/i.test(sql)) return 'loading extensions is refused';
  let text = stripLeading(sql);
  const explain = /^EXPLAIN(\s+QUERY\s+PLAN)?\b/i.exec(text);
  if (explain) text = stripLeading(text.slice(explain[0].length));
  const keyword = (/^[A-Za-z_]+/.exec(text)?.[0] ?? '').toUpperCase();
  if (REFUSED_LEADING.has(keyword)) {
    return `${keyword} is refused: the host owns the transaction and the database`;
  }
  if (keyword === 'PRAGMA') {
    const m = /^PRAGMA\s+(?:"?\w+"?\s*\.\s*)?"?(\w+)"?\s*(.*)$/is.exec(text);
    const name = (m?.[1] ?? '').toLowerCase();
    const hasValue = (m?.[2] ?? '').replace(/;\s*$/, '').trim() !== '';
    const allowed = INTROSPECTION_PRAGMAS.has(name) || (READ_PRAGMAS.has(name) && !hasValue);
    if (!allowed) return `PRAGMA ${name} is refused`;
  }
  return null;
}

function storeError(error) {
  if (error instanceof StoreError) return error;
  const code = String(error?.code ?? '');
  const message = String(error?.message ?? error);
  if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) {
    return new StoreError('busy', message);
  }
  if (code === 'SQLITE_FULL') return new StoreError('full', message);
  if (code.startsWith('SQLITE_READONLY')) return new StoreError('read-only', message);
  if (code.startsWith('SQLITE_CONSTRAINT')) return new StoreError('constraint', message);
  if (code === 'SQLITE_AUTH') return new StoreError('refused', message);
  return new StoreError('other', message);
}

function bind({ numbered }, params) {
  const values = params.map(toSql);
  return numbered ? [Object.fromEntries(values.map((v, i) => [i + 1, v]))] : values;
}

function toSql(value) {
  switch (value.tag) {
    case 'null':
      return null;
    case 'blob':
      return Buffer.from(value.val);
    default:
      return value.val; // integer (BigInt), real (number), text (string)
  }
}

function valueBytes(value) {
  switch (value.tag) {
    case 'null':
      return 0;
    case 'text':
      return Buffer.byteLength(value.val);
    case 'blob':
      return value.val.length;
    default:
      return 8;
  }
}

function fromSql(value) {
  if (value === null) return { tag: 'null' };
  if (typeof value === 'bigint') return { tag: 'integer', val: value };
  if (typeof value === 'number') return { tag: 'real', val: value };
  if (typeof value === 'string') return { tag: 'text', val: value };
  return { tag: 'blob', val: new Uint8Array(value) };
}

/** The embedded backend: one SQLite file in WAL mode, one connection, one call at a time. */
export class SqliteStore {
  /**
   * `runSettings`: relay settings for this store's life only ({key: value}); calls see them
   * before the stored ones, and they are never written.
   */
  constructor(path, { synchronous = 'FULL', busyTimeoutMs = 5000, runSettings = {} } = {}) {
    this.runSettings = new Map(Object.entries(runSettings).map(([k, v]) => [k, String(v)]));
    this.db = new Database(path, { timeout: busyTimeoutMs });
    this.db.pragma('journal_mode = WAL');
    this.db.pragma(`synchronous = ${synchronous}`);
    this.db.pragma('foreign_keys = ON');
    this.db.exec(`CREATE TABLE IF NOT EXISTS relay_settings (
      key TEXT PRIMARY KEY,
      value TEXT NOT NULL
    )`);
    this.statements = new Map();
    this.changes = this.db.prepare('SELECT changes(), last_insert_rowid()').safeIntegers(true).raw(true);
    this.session = null;
  }

  close() {
    this.db.close();
  }

  /** Opens the one transaction of a call: `write` takes the write lock up front. */
  begin(access) {
    if (this.session) throw new StoreError('busy', 'a call is already running on this store');
    try {
      if (access === 'write') {
        this.db.exec('BEGIN IMMEDIATE');
      } else {
        this.db.pragma('query_only = 1');
        this.db.exec('BEGIN DEFERRED');
      }
    } catch (error) {
      if (access !== 'write') this.db.pragma('query_only = 0');
      throw storeError(error);
    }
    this.session = { access };
  }

  /** Ends the call's transaction: commits when `commit` is true (writes only), else rolls back. */
  finish(commit) {
    const { access } = this.session ?? {};
    this.session = null;
    try {
      if (access === 'write' && commit) {
        this.db.exec('COMMIT');
      } else if (this.db.inTransaction) {
        this.db.exec('ROLLBACK');
      }
    } catch (error) {
      if (this.db.inTransaction) this.db.exec('ROLLBACK');
      throw storeError(error);
    } finally {
      if (access !== 'write') this.db.pragma('query_only = 0');
    }
  }

  prepare(sql) {
    if (!this.session) throw new StoreError('other', 'no call is running');
    const why = refusal(sql);
    if (why) throw new StoreError('refused', why);
    let prepared = this.statements.get(sql);
    if (!prepared) {
      prepared = {
        statement: this.db.prepare(sql).safeIntegers(true),
        // better-sqlite3 binds `?NNN` parameters by name ("1", "2", ...), not by position.
        numbered: /\?\d/.test(sql),
      };
      this.statements.set(sql, prepared);
    }
    return prepared;
  }

  /** The transaction must outlive every statement of the call. */
  stillInTransaction() {
    if (!this.db.inTransaction) {
      throw new StoreError('refused', "the statement ended the host's transaction");
    }
  }

  /** The functions of the WIT `store` interface, as jco's bindings call them. */
  capability() {
    const guard = (fn) => (...args) => {
      try {
        const val = fn(...args);
        this.stillInTransaction();
        return { tag: 'ok', val };
      } catch (error) {
        return { tag: 'err', val: storeError(error).value };
      }
    };
    return {
      execute: guard((sql, params) => {
        const prepared = this.prepare(sql);
        const { statement } = prepared;
        const values = bind(prepared, params);
        if (statement.reader) statement.all(...values);
        else statement.run(...values);
        const [changes, lastId] = this.changes.get();
        return { rowsChanged: changes, lastInsertId: lastId };
      }),
      query: guard((sql, params) => {
        const prepared = this.prepare(sql);
        const { statement } = prepared;
        const values = bind(prepared, params);
        if (!statement.reader) {
          statement.run(...values);
          return { columns: [], rows: [] };
        }
        const columns = statement.columns().map((c) => c.name);
        const rows = statement.raw(true).all(...values).map((row) => row.map(fromSql));
        statement.raw(false);
        return { columns, rows };
      }),
      // One page of a list: rows until the next would pass maxBytes (the first always comes),
      // counted as the Rust host counts them (store.rs, row_bytes).
      queryPage: guard((sql, params, maxBytes) => {
        const prepared = this.prepare(sql);
        const { statement } = prepared;
        const values = bind(prepared, params);
        const columns = statement.columns().map((c) => c.name);
        const rows = [];
        let left = BigInt(maxBytes);
        for (const raw of statement.raw(true).iterate(...values)) {
          const row = raw.map(fromSql);
          const bytes = BigInt(row.reduce((sum, value) => sum + 16 + valueBytes(value), 0));
          if (bytes > left && rows.length > 0) break;
          left = bytes > left ? 0n : left - bytes;
          rows.push(row);
        }
        statement.raw(false);
        return { columns, rows };
      }),
      // This store is SQLite (better-sqlite3); the guest writes its SQLite forms.
      dialect: () => 'sqlite',
      // One writer at a time already: nothing to weaken.
      lockRowsInstead: guard(() => undefined),
      // Wake keys (docs/design.md, "Wake keys"): this host holds no waiting requests.
      concerns: () => undefined,
      // Due times (`due-at`): likewise, nothing is held to run again.
      dueAt: () => undefined,
      getSetting: guard((key) => {
        if (this.runSettings.has(key)) return this.runSettings.get(key);
        const { statement } = this.prepare('SELECT value FROM relay_settings WHERE key = ?');
        const row = statement.raw(true).get(key);
        return row === undefined ? undefined : row[0];
      }),
      setSetting: guard((key, value) => {
        if (this.session?.access !== 'write') {
          throw new StoreError('read-only', 'writing a setting in a read-only call');
        }
        // An empty value removes the setting.
        if (value === '') {
          this.prepare('DELETE FROM relay_settings WHERE key = ?').statement.run(key);
          return;
        }
        this.prepare(
          'INSERT INTO relay_settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value',
        ).statement.run(key, value);
      }),
      // The settings whose keys start with `prefix`, in key order; the run's win over stored ones.
      listSettings: guard((prefix) => {
        const { statement } = this.prepare(
          'SELECT key, value FROM relay_settings WHERE substr(key, 1, length(?)) = ? ORDER BY key',
        );
        const listed = new Map(
          statement.raw(true).all(prefix, prefix).map(([key, value]) => [key, { key, value, source: 'stored' }]),
        );
        statement.raw(false);
        for (const [key, value] of this.runSettings) {
          if (key.startsWith(prefix)) listed.set(key, { key, value, source: 'run' });
        }
        return [...listed.keys()].sort().map((key) => listed.get(key));
      }),
    };
  }
}
