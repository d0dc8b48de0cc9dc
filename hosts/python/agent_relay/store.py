"""The WIT `store` capability over Python's sqlite3, with the promises of the other hosts
(hosts/node/store.mjs): one transaction per call opened by the host, committed only when the call
succeeds; the guest may not control transactions, attach databases or load extensions."""

from __future__ import annotations

import re
import sqlite3

from wasmtime.component import Record, Variant

REFUSED_LEADING = {"BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE", "ATTACH", "DETACH", "VACUUM"}
INTROSPECTION_PRAGMAS = {"table_info", "table_xinfo", "index_list", "index_info", "foreign_key_list"}
READ_PRAGMAS = {"quick_check", "integrity_check", "page_count", "freelist_count", "user_version"}


class StoreError(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def _strip_leading(sql: str) -> str:
    rest = sql
    while True:
        text = rest.lstrip()
        if text.startswith("--"):
            end = text.find("\n")
            rest = "" if end < 0 else text[end + 1:]
        elif text.startswith("/*"):
            end = text.find("*/")
            rest = "" if end < 0 else text[end + 2:]
        else:
            return text


def refusal(sql: str) -> str | None:
    """Why the guest may not run `sql`, or None when it may."""
    if re.search(r"\bload_extension\b", sql, re.I):
        return "loading extensions is refused"
    text = _strip_leading(sql)
    m = re.match(r"EXPLAIN(\s+QUERY\s+PLAN)?\b", text, re.I)
    if m:
        text = _strip_leading(text[m.end():])
    m = re.match(r"[A-Za-z_]+", text)
    keyword = (m.group(0) if m else "").upper()
    if keyword in REFUSED_LEADING:
        return f"{keyword} is refused: the host owns the transaction and the database"
    if keyword == "PRAGMA":
        m = re.match(r'PRAGMA\s+(?:"?\w+"?\s*\.\s*)?"?(\w+)"?\s*(.*)$', text, re.I | re.S)
        name = (m.group(1) if m else "").lower()
        has_value = (re.sub(r";\s*$", "", m.group(2)) if m else "").strip() != ""
        if not (name in INTROSPECTION_PRAGMAS or (name in READ_PRAGMAS and not has_value)):
            return f"PRAGMA {name} is refused"
    return None


def _store_error(error: BaseException) -> StoreError:
    if isinstance(error, StoreError):
        return error
    message = str(error)
    name = getattr(error, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return StoreError("busy", message)
    if name == "SQLITE_FULL":
        return StoreError("full", message)
    if name.startswith("SQLITE_READONLY"):
        return StoreError("read-only", message)
    if name.startswith("SQLITE_CONSTRAINT") or isinstance(error, sqlite3.IntegrityError):
        return StoreError("constraint", message)
    if name == "SQLITE_AUTH":
        return StoreError("refused", message)
    return StoreError("other", message)


def _value_bytes(v) -> int:
    if v is None:
        return 0
    if isinstance(v, str):
        return len(v.encode())
    if isinstance(v, bytes):
        return len(v)
    return 8


def _rows(columns, rows) -> Record:
    r = Record()
    r.columns = columns
    r.rows = rows
    return r


class SqliteStore:
    """One SQLite file in WAL mode, one connection, one call at a time."""

    def __init__(self, path: str, *, synchronous: str = "FULL", busy_timeout_s: float = 5.0, run_settings=None):
        self.run_settings = {k: str(v) for k, v in (run_settings or {}).items()}
        self.db = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode = WAL").fetchall()
        self.db.execute(f"PRAGMA synchronous = {synchronous}")
        self.db.execute("PRAGMA foreign_keys = ON")
        self.db.execute("CREATE TABLE IF NOT EXISTS relay_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self.access = None

    def close(self) -> None:
        self.db.close()

    def begin(self, access: str) -> None:
        if self.access is not None:
            raise StoreError("busy", "a call is already running on this store")
        try:
            if access == "write":
                self.db.execute("BEGIN IMMEDIATE")
            else:
                self.db.execute("PRAGMA query_only = 1")
                self.db.execute("BEGIN DEFERRED")
        except sqlite3.Error as error:
            if access != "write":
                self.db.execute("PRAGMA query_only = 0")
            raise _store_error(error) from error
        self.access = access

    def finish(self, commit: bool) -> None:
        access, self.access = self.access, None
        try:
            if access == "write" and commit:
                self.db.execute("COMMIT")
            elif self.db.in_transaction:
                self.db.execute("ROLLBACK")
        except sqlite3.Error as error:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise _store_error(error) from error
        finally:
            if access is not None and access != "write":
                self.db.execute("PRAGMA query_only = 0")

    def _run(self, sql: str, params):
        if self.access is None:
            raise StoreError("other", "no call is running")
        why = refusal(sql)
        if why:
            raise StoreError("refused", why)
        return self.db.execute(sql, params)

    def _guard(self, fn):
        def wrapped(_store, *args):
            try:
                val = fn(*args)
                if not self.db.in_transaction:
                    raise StoreError("refused", "the statement ended the host's transaction")
                return val
            except Exception as error:  # every failure is the guest's store-error
                e = _store_error(error)
                return Variant(e.kind, str(e))
        return wrapped

    def _execute(self, sql, params):
        self._run(sql, params).fetchall()
        changes, last = self.db.execute("SELECT changes(), last_insert_rowid()").fetchone()
        r = Record()
        setattr(r, "rows-changed", changes)
        setattr(r, "last-insert-id", last)
        return r

    def _query(self, sql, params):
        cur = self._run(sql, params)
        columns = [d[0] for d in cur.description or []]
        return _rows(columns, [list(row) for row in cur.fetchall()])

    def _query_page(self, sql, params, max_bytes):
        cur = self._run(sql, params)
        columns = [d[0] for d in cur.description or []]
        rows = []
        left = max_bytes
        for raw in cur:
            size = sum(16 + _value_bytes(v) for v in raw)
            if size > left and rows:
                break
            left = 0 if size > left else left - size
            rows.append(list(raw))
        return _rows(columns, rows)

    def _get_setting(self, key):
        if key in self.run_settings:
            return self.run_settings[key]
        row = self._run("SELECT value FROM relay_settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _set_setting(self, key, value):
        if self.access != "write":
            raise StoreError("read-only", "writing a setting in a read-only call")
        if value == "":
            self._run("DELETE FROM relay_settings WHERE key = ?", (key,))
        else:
            self._run(
                "INSERT INTO relay_settings (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
        return None

    def _list_settings(self, prefix):
        listed = {}
        for key, value in self._run(
            "SELECT key, value FROM relay_settings WHERE substr(key, 1, length(?)) = ? ORDER BY key", (prefix, prefix)
        ).fetchall():
            listed[key] = (value, "stored")
        for key, value in self.run_settings.items():
            if key.startswith(prefix):
                listed[key] = (value, "run")
        out = []
        for key in sorted(listed):
            r = Record()
            r.key, (r.value, r.source) = key, listed[key]
            out.append(r)
        return out

    def define(self, linker_instance) -> None:
        """Defines the WIT `store` functions in a component linker instance."""
        g = self._guard
        linker_instance.add_func("dialect", lambda _s: "sqlite")
        linker_instance.add_func("lock-rows-instead", g(lambda: None))
        # Wake keys (docs/design.md, "Wake keys"): this host holds no waiting requests.
        linker_instance.add_func("concerns", lambda _s, _key: None)
        # Due times (`due-at`): likewise, nothing is held to run again.
        linker_instance.add_func("due-at", lambda _s, _at: None)
        linker_instance.add_func("execute", g(self._execute))
        linker_instance.add_func("query", g(self._query))
        linker_instance.add_func("query-page", g(self._query_page))
        linker_instance.add_func("get-setting", g(self._get_setting))
        linker_instance.add_func("set-setting", g(self._set_setting))
        linker_instance.add_func("list-settings", g(self._list_settings))
