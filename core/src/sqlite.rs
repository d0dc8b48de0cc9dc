//! The embedded backend: one SQLite file in WAL mode, a pool of connections, one writer at a time.
//!
//! Every connection carries an authorizer that, while the guest is running, refuses transaction
//! control, ATTACH/DETACH, extension loading and all but a few read-only pragmas: the host owns the
//! transaction, and the guest's SQL reaches this one database only.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params_from_iter, types};

use crate::bindings::{Executed, Rows, Setting, SettingSource, StoreError, Value};
use crate::store::{Access, Backend, GroupCommitStats, PageBudget, Pending, Session};

mod group_commit;
use group_commit::Writer;

/// How hard SQLite works to keep committed writes (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// Every commit reaches the disk before it is acknowledged: survives process and power loss.
    Full,
    /// WAL's default: survives a process crash; a power loss may drop the last commits.
    Normal,
    /// No syncing at all: fastest, for throwaway databases only.
    Off,
}

impl Synchronous {
    /// The names [`Synchronous::from_str`](std::str::FromStr) takes, as `PRAGMA synchronous`
    /// spells them.
    pub const NAMES: [&'static str; 3] = ["full", "normal", "off"];

    /// The name `PRAGMA synchronous` knows it by.
    pub fn name(self) -> &'static str {
        match self {
            Synchronous::Full => "full",
            Synchronous::Normal => "normal",
            Synchronous::Off => "off",
        }
    }
}

impl std::str::FromStr for Synchronous {
    type Err = String;

    /// # Errors
    /// A name other than `full`, `normal` or `off`.
    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "full" => Ok(Synchronous::Full),
            "normal" => Ok(Synchronous::Normal),
            "off" => Ok(Synchronous::Off),
            other => Err(format!(
                "synchronous must be one of full, normal, off (not {other})"
            )),
        }
    }
}

/// How the database is opened.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub synchronous: Synchronous,
    pub busy_timeout: Duration,
    /// An upper bound on the file size, in pages (`PRAGMA max_page_count`); none when `None`.
    pub max_pages: Option<u64>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            max_pages: None,
        }
    }
}

/// A connection and the switch its authorizer reads.
struct Conn {
    sql: Connection,
    guest_running: Arc<AtomicBool>,
}

/// The capability's keyed settings, created on first write.
const SETTINGS_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS relay_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)";

/// The SQLite backend.
pub struct Sqlite {
    path: PathBuf,
    options: SqliteOptions,
    writer: Arc<Writer>,
    readers: Arc<Mutex<Vec<Conn>>>,
    /// The writer connection's `PRAGMA data_version` when last asked: it moves only when
    /// another connection (another process) commits.
    data_version: AtomicI64,
}

/// Pragmas the guest may run: schema introspection (their argument names a table or index) and
/// read-only checks. Setting any pragma is refused.
const GUEST_INTROSPECTION_PRAGMAS: &[&str] = &[
    "table_info",
    "table_xinfo",
    "index_list",
    "index_info",
    "foreign_key_list",
];
const GUEST_READ_PRAGMAS: &[&str] = &[
    "quick_check",
    "integrity_check",
    "page_count",
    "max_page_count",
    "freelist_count",
    "user_version",
    // FTS5 (the message search index) reads it itself when it opens its table.
    "data_version",
];

fn guest_may_run_pragma(name: &str, value: Option<&str>) -> bool {
    let listed = |list: &[&str]| list.iter().any(|p| p.eq_ignore_ascii_case(name));
    listed(GUEST_INTROSPECTION_PRAGMAS) || (listed(GUEST_READ_PRAGMAS) && value.is_none())
}

fn guest_authorizer(
    guest_running: Arc<AtomicBool>,
) -> impl FnMut(AuthContext<'_>) -> Authorization + Send + 'static {
    move |ctx| {
        if !guest_running.load(Ordering::Relaxed) {
            return Authorization::Allow;
        }
        let allowed = match ctx.action {
            AuthAction::Transaction { .. }
            | AuthAction::Savepoint { .. }
            | AuthAction::Attach { .. }
            | AuthAction::Detach { .. } => false,
            AuthAction::Function { function_name } => {
                !function_name.eq_ignore_ascii_case("load_extension")
            }
            AuthAction::Pragma {
                pragma_name,
                pragma_value,
            } => guest_may_run_pragma(pragma_name, pragma_value),
            _ => true,
        };
        if allowed {
            Authorization::Allow
        } else {
            Authorization::Deny
        }
    }
}

impl Sqlite {
    /// Opens (creating if needed) the database file and prepares it for the relay.
    ///
    /// # Errors
    /// The file cannot be opened or is not a SQLite database.
    pub fn open(path: &Path, options: SqliteOptions) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        create_private(path)?;
        // Nothing is written here: an older database must stay as it is until it is backed up.
        let writer = open_connection(path, &options, Role::Writer)?;
        writer
            .sql
            .query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
            .with_context(|| format!("{} is not a readable SQLite database", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            options,
            data_version: AtomicI64::new(data_version(&writer.sql).unwrap_or(0)),
            writer: Arc::new(Writer::new(writer)),
            readers: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// How many write calls group commit has kept, and in how many commits.
    pub fn group_commit_stats(&self) -> GroupCommitStats {
        self.writer.stats()
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Switches the file to write-ahead logging (kept in the file from then on).
    ///
    /// # Errors
    /// The journal mode cannot be changed.
    pub fn enable_wal(&self) -> anyhow::Result<()> {
        let mode: String = self.writer.exclusive(|conn| {
            conn.sql
                .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        })?;
        anyhow::ensure!(
            mode.eq_ignore_ascii_case("wal"),
            "the database refused WAL mode ({mode})"
        );
        // The switch moves the writer's `data_version`: start counting other writers from here,
        // or the first look for them would wake every waiter for nothing.
        let now = self.writer.exclusive(|conn| data_version(&conn.sql))?;
        self.data_version.store(now, Ordering::Relaxed);
        Ok(())
    }

    /// Whether the file already holds tables (anything but the relay's settings).
    ///
    /// # Errors
    /// The schema cannot be read.
    pub fn holds_tables(&self) -> anyhow::Result<bool> {
        let count: i64 = self.writer.exclusive(|conn| {
            conn.sql.query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name != 'relay_settings'",
                [],
                |row| row.get(0),
            )
        })?;
        Ok(count > 0)
    }

    /// Writes a consistent copy of the database to `target` with SQLite's online backup.
    ///
    /// # Errors
    /// The copy could not be written.
    /// The target is a new file, created owner-only (`0600`) before SQLite writes a byte into
    /// it; an existing file or a symbolic link at `target` (dangling or not) is refused, and
    /// SQLite opens it without following links.
    pub fn backup_to(&self, target: &Path) -> anyhow::Result<()> {
        drop(create_new_private(target)?);
        let copied = self.writer.exclusive(|conn| {
            let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_NOFOLLOW
                | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let mut copy = Connection::open_with_flags(target, flags)
                .with_context(|| format!("opening {}", target.display()))?;
            let backup = rusqlite::backup::Backup::new(&conn.sql, &mut copy)?;
            backup.run_to_completion(256, Duration::from_millis(0), None)?;
            Ok(())
        });
        if copied.is_err() {
            // The file is the one made above: a half-written copy must not pass for a backup.
            let _ = std::fs::remove_file(target);
        }
        copied
    }

    fn reader(&self) -> Result<Conn, StoreError> {
        let pooled = self.readers.lock().ok().and_then(|mut idle| idle.pop());
        match pooled {
            Some(conn) => Ok(conn),
            None => open_connection(&self.path, &self.options, Role::Reader)
                .map_err(|e| StoreError::Other(format!("{e:#}"))),
        }
    }
}

/// Creates `path` empty and owner-only when it does not exist, whatever the umask, so the
/// database (and its `-wal` and `-shm`, which SQLite creates with the database's mode) and backups
/// are readable by their owner alone. An existing file keeps its mode.
///
/// # Errors
/// The file cannot be created.
///
/// A symbolic link that points nowhere is followed, and the file it names is created owner-only
/// (without this, SQLite would create it with the umask's mode).
pub fn create_private(path: &Path) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            let dangling = path.symlink_metadata().is_ok_and(|m| m.is_symlink())
                && std::fs::metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
            if dangling {
                // O_CREAT without O_EXCL follows the link; the mode applies to what it creates.
                options.create_new(false).create(true);
                options
                    .open(path)
                    .with_context(|| format!("creating {} (a symbolic link)", path.display()))?;
            }
            Ok(())
        }
        Err(error) => Err(error).with_context(|| format!("creating {}", path.display())),
    }
}

/// Creates `path` as a new owner-only (`0600`) file whatever the umask, for a copy of the
/// database (a backup): `O_CREAT|O_EXCL|O_NOFOLLOW`, so an existing file or a symbolic link at
/// `path`, even one that points nowhere, is refused rather than written through. Missing
/// parent folders are created owner-only (`0700`).
///
/// # Errors
/// Something is at `path` already (the message says whether a file or a link), or the file or
/// its folders cannot be created.
pub fn create_new_private(path: &Path) -> anyhow::Result<std::fs::File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dirs(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    options.open(path).map_err(|error| {
        let link = path.symlink_metadata().is_ok_and(|m| m.is_symlink());
        if link {
            anyhow::anyhow!(
                "{} is a symbolic link; a copy of the database is written only to a new file, \
                 never through a link: remove the link or choose another path",
                path.display()
            )
        } else if error.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!(
                "{} already exists; choose a new file for the copy",
                path.display()
            )
        } else {
            anyhow::Error::new(error).context(format!("creating {}", path.display()))
        }
    })
}

/// Creates `dir` and any missing parents owner-only (`0700`) whatever the umask; folders that
/// exist keep their mode.
///
/// # Errors
/// A folder cannot be created.
pub fn create_private_dirs(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// What a connection is for: the writer, or one of the pooled readers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Writer,
    Reader,
}

fn open_connection(path: &Path, options: &SqliteOptions, role: Role) -> anyhow::Result<Conn> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut sql = Connection::open_with_flags(path, flags)
        .with_context(|| format!("opening {}", path.display()))?;
    sql.busy_timeout(options.busy_timeout)?;
    sql.set_prepared_statement_cache_capacity(128);
    let synchronous = match options.synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
        Synchronous::Off => "OFF",
    };
    // Statement and savepoint journals stay in memory: as temporary files their creation and
    // removal would ride along with every commit's fsync.
    sql.execute_batch(&format!(
        "PRAGMA foreign_keys = ON; PRAGMA synchronous = {synchronous}; PRAGMA temp_store = MEMORY;"
    ))?;
    if role == Role::Reader {
        // Set once for the connection's life: changing a flag pragma expires every prepared
        // statement, so toggling it per call would re-prepare all of them each time.
        sql.execute_batch("PRAGMA query_only = 1")?;
    }
    if let Some(pages) = options.max_pages {
        sql.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))?;
    }
    let guest_running = Arc::new(AtomicBool::new(false));
    sql.authorizer(Some(guest_authorizer(Arc::clone(&guest_running))))?;
    Ok(Conn { sql, guest_running })
}

/// The host's own transaction statements. They run from the statement cache (parsed once per
/// connection); because a cached statement skips the authorizer, the guest may not run these
/// exact texts itself.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";
const BEGIN_READ: &str = "BEGIN DEFERRED";
const COMMIT: &str = "COMMIT";
const ROLLBACK: &str = "ROLLBACK";
/// Each write call runs in this savepoint of its batch's transaction (see `group_commit`).
const SAVEPOINT_CALL: &str = "SAVEPOINT relay_call";
const RELEASE_CALL: &str = "RELEASE relay_call";
const ROLLBACK_TO_CALL: &str = "ROLLBACK TO relay_call";
const HOST_STATEMENTS: &[&str] = &[
    BEGIN_WRITE,
    BEGIN_READ,
    COMMIT,
    ROLLBACK,
    SAVEPOINT_CALL,
    RELEASE_CALL,
    ROLLBACK_TO_CALL,
];

/// Runs one of the host's transaction statements.
fn host_statement(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Refuses the host's own statement texts from the guest (see [`HOST_STATEMENTS`]).
fn refuse_host_statement(sql: &str) -> Result<(), StoreError> {
    if HOST_STATEMENTS
        .iter()
        .any(|h| h.eq_ignore_ascii_case(sql.trim()))
    {
        return Err(StoreError::Refused(format!(
            "transaction control is the host's: {sql}"
        )));
    }
    Ok(())
}

/// `PRAGMA data_version` of the connection (the host's statement, outside any guest call).
fn data_version(sql: &rusqlite::Connection) -> rusqlite::Result<i64> {
    sql.query_row("PRAGMA data_version", [], |row| row.get(0))
}

impl Backend for Sqlite {
    fn group_commit_stats(&self) -> Option<GroupCommitStats> {
        Some(self.writer.stats())
    }

    /// A copy beside the file, `<db>.v<version>.bak`, when the database holds tables.
    fn backup_before_migrate(&self, from_version: u64) -> anyhow::Result<Option<PathBuf>> {
        if !self.holds_tables()? {
            return Ok(None);
        }
        let target = backup_path(&self.path, from_version);
        self.backup_to(&target)?;
        Ok(Some(target))
    }

    fn prepare_to_serve(&self) -> anyhow::Result<()> {
        self.enable_wal()
    }

    fn changed_elsewhere(&self) -> bool {
        let Some(Ok(now)) = self.writer.try_exclusive(|conn| data_version(&conn.sql)) else {
            // The writer is busy: its own commit wakes the waiters; ask again next time.
            return false;
        };
        self.data_version.swap(now, Ordering::Relaxed) != now
    }

    fn begin(&self, access: Access) -> Result<Box<dyn Session>, StoreError> {
        match access {
            Access::Write => {
                let (conn, batch, savepoint) = self.writer.begin_call()?;
                conn.guest_running.store(true, Ordering::Relaxed);
                let changes_at_begin = conn.sql.total_changes();
                Ok(Box::new(WriteSession {
                    conn: Some(conn),
                    writer: Arc::clone(&self.writer),
                    batch,
                    savepoint,
                    last_error: None,
                    changes_at_begin,
                    setting_changes: 0,
                }))
            }
            Access::Read => {
                let conn = self.reader()?;
                host_statement(&conn.sql, BEGIN_READ).map_err(store_error)?;
                conn.guest_running.store(true, Ordering::Relaxed);
                Ok(Box::new(ReadSession {
                    conn: Some(conn),
                    pool: Arc::clone(&self.readers),
                }))
            }
        }
    }
}

/// A read call: a snapshot on a pooled reader connection (`query_only`), handed back at the end.
struct ReadSession {
    conn: Option<Conn>,
    pool: Arc<Mutex<Vec<Conn>>>,
}

impl ReadSession {
    fn conn(&self) -> &Conn {
        self.conn
            .as_ref()
            .expect("a reader is held until the session ends")
    }

    /// Rolls the snapshot back and returns the connection to the pool.
    fn end(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.guest_running.store(false, Ordering::Relaxed);
            let clean = conn.sql.is_autocommit() || host_statement(&conn.sql, ROLLBACK).is_ok();
            if clean && let Ok(mut idle) = self.pool.lock() {
                idle.push(conn);
            }
        }
    }
}

impl Session for ReadSession {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<Executed, StoreError> {
        run_execute(&self.conn().sql, sql, params)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Rows, StoreError> {
        run_query(&self.conn().sql, sql, params, None)
    }

    fn query_page(
        &mut self,
        sql: &str,
        params: &[Value],
        max_bytes: u64,
    ) -> Result<Rows, StoreError> {
        run_query(
            &self.conn().sql,
            sql,
            params,
            Some(PageBudget::new(max_bytes)),
        )
    }

    fn get_setting(&mut self, key: &str) -> Result<Option<String>, StoreError> {
        read_setting(&self.conn().sql, key)
    }

    fn set_setting(&mut self, _key: &str, _value: &str) -> Result<(), StoreError> {
        Err(StoreError::ReadOnly(
            "writing a setting in a read-only call".to_owned(),
        ))
    }

    fn list_settings(&mut self, prefix: &str) -> Result<Vec<Setting>, StoreError> {
        read_settings(&self.conn().sql, prefix)
    }

    fn wrote(&self) -> bool {
        false
    }

    fn finish(mut self: Box<Self>, _commit: bool) -> Result<(), StoreError> {
        self.end();
        Ok(())
    }
}

impl Drop for ReadSession {
    fn drop(&mut self) {
        self.end();
    }
}

/// A write call: the writer connection inside a group-committed batch (in its own savepoint when
/// it joined a batch other calls are in).
struct WriteSession {
    conn: Option<Conn>,
    writer: Arc<Writer>,
    batch: u64,
    /// Whether the call runs in its own savepoint (it joined a batch other calls are in).
    savepoint: bool,
    /// The last failure a statement met: the cause to report if SQLite dropped the transaction.
    last_error: Option<StoreError>,
    /// The connection's change counter when the call began, and the changes of the call's own
    /// setting writes (a setting changes no row a waiter reads).
    changes_at_begin: u64,
    setting_changes: u64,
}

impl WriteSession {
    fn conn(&self) -> &Conn {
        self.conn
            .as_ref()
            .expect("the writer is held until the session ends")
    }

    fn noted<T>(&mut self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(error) = &result {
            self.last_error = Some(error.clone());
        }
        result
    }

    /// Ends the call's savepoint; `Ok(true)` when `later` left the batch for the caller to
    /// settle.
    fn end(&mut self, keep: bool, later: bool) -> Result<bool, StoreError> {
        let Some(conn) = self.conn.take() else {
            return Ok(false);
        };
        conn.guest_running.store(false, Ordering::Relaxed);
        self.writer.end_call(
            conn,
            self.batch,
            self.savepoint,
            keep,
            self.last_error.take(),
            later,
        )
    }
}

impl Session for WriteSession {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<Executed, StoreError> {
        let result = run_execute(&self.conn().sql, sql, params);
        self.noted(result)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Rows, StoreError> {
        let result = run_query(&self.conn().sql, sql, params, None);
        self.noted(result)
    }

    fn query_page(
        &mut self,
        sql: &str,
        params: &[Value],
        max_bytes: u64,
    ) -> Result<Rows, StoreError> {
        let budget = Some(PageBudget::new(max_bytes));
        let result = run_query(&self.conn().sql, sql, params, budget);
        self.noted(result)
    }

    fn get_setting(&mut self, key: &str) -> Result<Option<String>, StoreError> {
        read_setting(&self.conn().sql, key)
    }

    fn set_setting(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        let sql = &self.conn().sql;
        let before = sql.total_changes();
        let result = store_setting(sql, key, value).map_err(store_error);
        let changed = sql.total_changes() - before;
        self.setting_changes += changed;
        self.noted(result)
    }

    fn list_settings(&mut self, prefix: &str) -> Result<Vec<Setting>, StoreError> {
        let result = read_settings(&self.conn().sql, prefix);
        self.noted(result)
    }

    /// SQLite's change counter (triggers included) moved by more than the setting writes.
    fn wrote(&self) -> bool {
        self.conn.as_ref().is_some_and(|conn| {
            conn.sql.total_changes() - self.changes_at_begin > self.setting_changes
        })
    }

    fn finish(mut self: Box<Self>, commit: bool) -> Result<(), StoreError> {
        self.end(commit, false).map(|_| ())
    }

    fn finish_later(
        mut self: Box<Self>,
        commit: bool,
    ) -> Result<Option<Box<dyn Pending>>, StoreError> {
        let pending = self.end(commit, true)?;
        Ok(pending.then(|| {
            Box::new(PendingBatch {
                writer: Arc::clone(&self.writer),
                batch: self.batch,
            }) as Box<dyn Pending>
        }))
    }
}

impl Drop for WriteSession {
    fn drop(&mut self) {
        // A session dropped without `finish` (a trap unwinding) keeps nothing of its call.
        let _ = self.end(false, false);
    }
}

/// A kept call in a batch that is still open.
struct PendingBatch {
    writer: Arc<Writer>,
    batch: u64,
}

impl Pending for PendingBatch {
    fn settle(self: Box<Self>) -> Result<(), StoreError> {
        self.writer.commit_batch(self.batch)
    }
}

fn to_sql(value: &Value) -> types::Value {
    match value {
        Value::Null => types::Value::Null,
        Value::Integer(n) => types::Value::Integer(*n),
        Value::Real(r) => types::Value::Real(*r),
        Value::Text(t) => types::Value::Text(t.clone()),
        Value::Blob(b) => types::Value::Blob(b.clone()),
    }
}

fn from_sql(value: types::ValueRef<'_>) -> Value {
    match value {
        types::ValueRef::Null => Value::Null,
        types::ValueRef::Integer(n) => Value::Integer(n),
        types::ValueRef::Real(r) => Value::Real(r),
        types::ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        types::ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

/// Sorts SQLite's failures into the capability's closed set.
pub fn store_error(error: rusqlite::Error) -> StoreError {
    let text = error.to_string();
    match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy(text),
        Some(ErrorCode::DiskFull) => StoreError::Full(text),
        Some(ErrorCode::ReadOnly) => StoreError::ReadOnly(text),
        Some(ErrorCode::ConstraintViolation) => StoreError::Constraint(text),
        Some(ErrorCode::AuthorizationForStatementDenied) => StoreError::Refused(text),
        _ => StoreError::Other(text),
    }
}

fn run_execute(conn: &Connection, sql: &str, params: &[Value]) -> Result<Executed, StoreError> {
    refuse_host_statement(sql)?;
    let mut statement = conn.prepare_cached(sql).map_err(store_error)?;
    let changed = statement
        .execute(params_from_iter(params.iter().map(to_sql)))
        .map_err(store_error)?;
    Ok(Executed {
        rows_changed: changed as u64,
        last_insert_id: conn.last_insert_rowid(),
    })
}

/// Runs a query; with a page budget it stops reading at the first row that does not fit.
fn run_query(
    conn: &Connection,
    sql: &str,
    params: &[Value],
    mut page: Option<PageBudget>,
) -> Result<Rows, StoreError> {
    refuse_host_statement(sql)?;
    let mut statement = conn.prepare_cached(sql).map_err(store_error)?;
    let columns: Vec<String> = statement.column_names().map(str::to_owned).collect();
    let width = columns.len();
    let mut rows = statement
        .query(params_from_iter(params.iter().map(to_sql)))
        .map_err(store_error)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(store_error)? {
        let mut values = Vec::with_capacity(width);
        for i in 0..width {
            values.push(from_sql(row.get_ref(i).map_err(store_error)?));
        }
        if page.as_mut().is_some_and(|page| !page.admits(&values)) {
            break;
        }
        out.push(values);
    }
    Ok(Rows { columns, rows: out })
}

fn read_setting(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    conn.prepare_cached("SELECT value FROM relay_settings WHERE key = ?")
        .and_then(|mut s| s.query_row([key], |row| row.get(0)).optional())
        .or_else(|error| match &error {
            // A database older than the settings table has no settings yet.
            rusqlite::Error::SqliteFailure(_, Some(message))
                if message.contains("no such table") =>
            {
                Ok(None)
            }
            _ => Err(error),
        })
        .map_err(store_error)
}

/// The stored settings whose keys start with `prefix` (compared as text: no LIKE wildcards).
fn read_settings(conn: &Connection, prefix: &str) -> Result<Vec<Setting>, StoreError> {
    let listed = conn
        .prepare_cached(
            "SELECT key, value FROM relay_settings WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key",
        )
        .and_then(|mut statement| {
            statement
                .query_map([prefix], |row| {
                    Ok(Setting {
                        key: row.get(0)?,
                        value: row.get(1)?,
                        source: SettingSource::Stored,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
        });
    match listed {
        Err(rusqlite::Error::SqliteFailure(_, Some(message)))
            if message.contains("no such table") =>
        {
            Ok(Vec::new())
        }
        other => other.map_err(store_error),
    }
}

fn store_setting(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.execute_batch(SETTINGS_TABLE)?;
    if value.is_empty() {
        return conn
            .prepare_cached("DELETE FROM relay_settings WHERE key = ?1")?
            .execute([key])
            .map(|_| ());
    }
    conn.prepare_cached(
        "INSERT INTO relay_settings (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = ?2",
    )?
    .execute([key, value])
    .map(|_| ())
}

/// `<db>.v<version>.bak`, or with `-2`, `-3`, ... when that is taken already (by a file, or by
/// a symbolic link even if it points nowhere: a backup is never written through a link).
fn backup_path(db: &Path, version: u64) -> PathBuf {
    let base = format!("{}.v{version}.bak", db.display());
    std::iter::once(PathBuf::from(&base))
        .chain((2..).map(|n| PathBuf::from(format!("{base}-{n}"))))
        .find(|candidate| candidate.symlink_metadata().is_err())
        .unwrap_or_else(|| PathBuf::from(base))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_temp() -> (tempfile::TempDir, Sqlite) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let sqlite = Sqlite::open(&dir.path().join("relay.db"), SqliteOptions::default())
            .expect("the database opens");
        (dir, sqlite)
    }

    /// Runs `sql` (a `CREATE TABLE`) in a committed write call.
    fn create_table(sqlite: &Sqlite, sql: &str) {
        let mut session = sqlite.begin(Access::Write).expect("a write session");
        session
            .execute(sql, &[])
            .expect("the guest may create a table");
        session.finish(true).expect("committed");
    }

    /// The integers of the one row `sql` returns, read in a read session.
    fn read_integers(sqlite: &Sqlite, sql: &str) -> Vec<i64> {
        let mut reader = sqlite.begin(Access::Read).expect("a read session");
        let rows = reader.query(sql, &[]).expect("read");
        reader.finish(false).expect("read ends");
        rows.rows[0]
            .iter()
            .map(|v| match v {
                Value::Integer(n) => *n,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn the_guest_cannot_run_transaction_control_even_from_the_statement_cache() {
        let (_dir, sqlite) = open_temp();
        // A first call caches the host's BEGIN IMMEDIATE and COMMIT on the writer.
        create_table(&sqlite, "CREATE TABLE t (x INTEGER)");
        let mut session = sqlite.begin(Access::Write).expect("a write session");
        session
            .execute("INSERT INTO t (x) VALUES (1)", &[])
            .expect("the guest may write");
        // The host's own texts (cached, so the authorizer would not see them) and variants the
        // authorizer does see are all refused.
        for sql in [
            "COMMIT",
            "commit",
            " ROLLBACK ",
            "BEGIN IMMEDIATE",
            "COMMIT;",
            "END",
            "SAVEPOINT s",
            "RELEASE s",
        ] {
            let refused = session.execute(sql, &[]);
            assert!(
                matches!(refused, Err(StoreError::Refused(_))),
                "{sql}: {refused:?}"
            );
        }
        session.finish(false).expect("rolled back");
        assert_eq!(
            read_integers(&sqlite, "SELECT count(*) FROM t"),
            [0],
            "the write was rolled back"
        );
    }

    #[test]
    fn a_read_session_refuses_writes_and_leaves_its_connection_reusable() {
        let (_dir, sqlite) = open_temp();
        create_table(&sqlite, "CREATE TABLE t (x INTEGER)");
        for _ in 0..3 {
            let mut reader = sqlite.begin(Access::Read).expect("a read session");
            let refused = reader.execute("INSERT INTO t (x) VALUES (1)", &[]);
            assert!(
                matches!(refused, Err(StoreError::ReadOnly(_))),
                "a write in a read session: {refused:?}"
            );
            let rows = reader.query("SELECT count(*) FROM t", &[]).expect("reads");
            assert!(
                matches!(rows.rows.as_slice(), [row] if matches!(row.as_slice(), [Value::Integer(0)])),
                "{:?}",
                rows.rows
            );
            reader.finish(false).expect("read ends");
        }
    }

    #[test]
    fn concurrent_calls_share_commits_and_keep_their_own_fate() {
        let (_dir, sqlite) = open_temp();
        create_table(
            &sqlite,
            "CREATE TABLE t (writer INTEGER, n INTEGER, kept INTEGER)",
        );
        let before = sqlite.group_commit_stats();
        let sqlite = Arc::new(sqlite);
        let threads: Vec<_> = (0..8_i64)
            .map(|writer| {
                let sqlite = Arc::clone(&sqlite);
                std::thread::spawn(move || {
                    let mut kept = 0;
                    for n in 0..40_i64 {
                        let keep = n % 5 != 0;
                        let mut session = sqlite.begin(Access::Write).expect("a write session");
                        session
                            .execute(
                                "INSERT INTO t (writer, n, kept) VALUES (?1, ?2, ?3)",
                                &[
                                    Value::Integer(writer),
                                    Value::Integer(n),
                                    Value::Integer(i64::from(keep)),
                                ],
                            )
                            .expect("inserted");
                        // Hold the writer a moment so other calls queue behind this one.
                        std::thread::sleep(Duration::from_micros(200));
                        if n % 13 == 7 {
                            // Dropped without finish, as when a call traps: nothing kept.
                            drop(session);
                            continue;
                        }
                        session.finish(keep).expect("ended");
                        kept += usize::from(keep);
                    }
                    kept
                })
            })
            .collect();
        let kept: usize = threads.into_iter().map(|t| t.join().expect("joined")).sum();
        let counts = read_integers(
            &sqlite,
            "SELECT count(*), count(DISTINCT writer || ':' || n), min(kept) FROM t",
        );
        assert_eq!(
            counts,
            vec![kept as i64, kept as i64, 1],
            "every kept call's row once, no rolled-back row"
        );
        let stats = sqlite.group_commit_stats();
        assert_eq!(stats.calls - before.calls, kept as u64);
        assert!(
            stats.commits - before.commits < kept as u64 / 2,
            "calls waiting behind each other share commits: {stats:?} for {kept} calls"
        );
    }

    #[test]
    fn calls_ended_later_are_invisible_until_their_batch_is_settled() {
        let (_dir, sqlite) = open_temp();
        create_table(&sqlite, "CREATE TABLE t (x INTEGER)");
        let count = |sqlite: &Sqlite| read_integers(sqlite, "SELECT count(*) FROM t")[0];
        let mut tickets = Vec::new();
        for (x, keep) in [(1, true), (2, false), (3, true)] {
            let mut session = sqlite.begin(Access::Write).expect("a write session");
            session
                .execute("INSERT INTO t (x) VALUES (?1)", &[Value::Integer(x)])
                .expect("inserted");
            let pending = session.finish_later(keep).expect("ended");
            assert_eq!(pending.is_some(), keep, "only kept calls wait for a commit");
            tickets.extend(pending);
        }
        assert_eq!(count(&sqlite), 0, "nothing is visible before the commit");
        let before = sqlite.group_commit_stats();
        for ticket in tickets {
            ticket.settle().expect("the batch commits");
        }
        assert_eq!(
            count(&sqlite),
            2,
            "both kept calls, not the rolled-back one"
        );
        let after = sqlite.group_commit_stats();
        assert_eq!(
            (after.commits - before.commits, after.calls - before.calls),
            (1, 2),
            "one commit for the batch"
        );
    }
}
