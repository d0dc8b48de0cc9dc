//! The server backend: a PostgreSQL database that several relay hosts share
//! (docs/architecture.md, "PostgreSQL"; docs/operations.md, "Several relays on PostgreSQL").
//!
//! - A pool of connections (r2d2 over the blocking `postgres` client); each call takes one for
//!   its transaction: `SERIALIZABLE` for a write, `REPEATABLE READ, READ ONLY` for a read.
//! - A serialization failure or deadlock marks the session *conflicted*; the runtime rolls the
//!   call back and runs it again in a fresh instance (`runtime.rs`), so the guest never sees a
//!   retry. A lost connection marks it *unavailable*: the call answers 503 and the pool drops the
//!   connection; later calls connect afresh.
//! - The guest writes `?` placeholders in both dialects; this module turns them into `$n`
//!   outside literals and quoted names, and passes each value as the type Postgres inferred.
//! - Every committed write sends one `NOTIFY agent_relay` with this host's tag; one `LISTEN`
//!   connection per host turns the other hosts' notifications into [`Backend::changed_elsewhere`],
//!   with a slow backstop for notifications lost while it was reconnecting.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::BytesMut;
use postgres::config::{Host, SslMode};
use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, Config, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::bindings::{Executed, Rows, Setting, SettingSource, SqlDialect, StoreError, Value};
use crate::store::{Access, Backend, PageBudget, Session};

/// The channel every host listens on and every committed write notifies.
const CHANNEL: &str = "agent_relay";

/// While the listener is connected, waiters look again at least this often anyway (a
/// notification lost in a way nobody noticed costs at most this much delay).
const BACKSTOP: Duration = Duration::from_secs(5);
/// While the listener is disconnected, waiters look again this often.
const BACKSTOP_DISCONNECTED: Duration = Duration::from_secs(1);

/// Prepared statements kept per connection before the cache starts over.
const STATEMENT_CACHE: usize = 512;

/// The advisory lock that makes schema migrations of several starting hosts take turns.
const MIGRATION_LOCK: i64 = 0x7265_6c61_795f_6d67; // "relay_mg"

/// How the PostgreSQL database is used.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// Connections in this host's pool (the listener has one more of its own).
    pub pool_size: u32,
    /// How long a call waits for a connection, and a connection attempt for the server.
    pub connect_timeout: Duration,
    /// Write calls run side by side, each on its own connection (the default), or one after
    /// another on the write lane as on SQLite (for comparison: docs/benchmarks.md).
    pub concurrent_writes: bool,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
            concurrent_writes: true,
        }
    }
}

impl PostgresOptions {
    #[must_use]
    pub fn with_concurrent_writes(mut self, concurrent: bool) -> Self {
        self.concurrent_writes = concurrent;
        self
    }

    #[must_use]
    pub fn with_pool_size(mut self, pool_size: u32) -> Self {
        self.pool_size = pool_size.max(1);
        self
    }
}

/// Whether `db` names a PostgreSQL database (`postgres://` or `postgresql://`) rather than a
/// SQLite file.
pub fn is_url(db: &str) -> bool {
    let lower = db.get(..13).unwrap_or(db).to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// A relay database on a PostgreSQL server.
pub struct Postgres {
    pool: r2d2::Pool<Manager>,
    concurrent_writes: bool,
    shared: Arc<Shared>,
    /// The URL without its password, for messages and logs.
    name: String,
}

/// What the pool's sessions and the listener share.
struct Shared {
    /// This host's tag in its notifications, so it does not wake itself twice.
    tag: String,
    /// Another host committed since the last [`Backend::changed_elsewhere`].
    changed: AtomicBool,
    /// The listener is connected and listening.
    listening: AtomicBool,
    /// When waiters were last told to look again regardless.
    backstop: Mutex<Instant>,
    /// Until the schema is current, write transactions take the migration lock first.
    migrating: AtomicBool,
    /// Stops the listener when the backend goes.
    stopping: AtomicBool,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres").field("db", &self.name).finish()
    }
}

impl Postgres {
    /// Connects to the database at `url` (checking it answers), creates the host's settings
    /// table when missing and starts this host's listener.
    ///
    /// # Errors
    /// A malformed URL, an unreachable server, refused credentials or a missing database: one
    /// line naming the database (without its password) and the cause.
    pub fn open(url: &str, options: &PostgresOptions) -> anyhow::Result<Self> {
        let (driver_url, tls_wanted, root_cert) = for_driver(url);
        let mut config: Config = driver_url.parse().map_err(|e| {
            anyhow::anyhow!("{} is not a PostgreSQL URL: {}", redact(url), cause(&e))
        })?;
        let name = describe(&config);
        // TLS only when the URL asks for it (`sslmode=require`, `prefer`, `verify-ca`,
        // `verify-full`); plain otherwise.
        if tls_wanted {
            config.ssl_mode(SslMode::Require);
        } else {
            config.ssl_mode(SslMode::Disable);
        }
        config.connect_timeout(options.connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("agent-relay");
        }
        let tls = tls_connector(root_cert.as_deref())?;
        let manager = Manager {
            config: config.clone(),
            tls: tls.clone(),
        };
        // One connection now, so a wrong URL fails here with its cause rather than as a pool
        // timeout later.
        let mut first = config
            .connect(tls.clone())
            .map_err(|e| anyhow::anyhow!("cannot connect to {name}: {}", cause(&e)))?;
        ensure_settings_table(&mut first).with_context(|| format!("preparing {name}"))?;
        drop(first);
        let pool = r2d2::Pool::builder()
            .max_size(options.pool_size.max(1))
            .min_idle(Some(1))
            .connection_timeout(options.connect_timeout)
            .error_handler(Box::new(LogPoolErrors))
            .build_unchecked(manager);
        let shared = Arc::new(Shared {
            tag: hex::encode(random_bytes()),
            changed: AtomicBool::new(false),
            listening: AtomicBool::new(false),
            backstop: Mutex::new(Instant::now()),
            migrating: AtomicBool::new(true),
            stopping: AtomicBool::new(false),
        });
        let listener = Arc::clone(&shared);
        let listen_name = name.clone();
        std::thread::Builder::new()
            .name("pg-listen".to_owned())
            .spawn(move || listen(&config, &tls, &listener, &listen_name))
            .context("starting the PostgreSQL listener")?;
        Ok(Self {
            pool,
            concurrent_writes: options.concurrent_writes,
            shared,
            name,
        })
    }

    /// The database as logs name it: `postgres://USER@HOST:PORT/DB`, never the password.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether any table but the host's settings holds the relay's schema (for `copy`, which
    /// writes only into an empty database).
    ///
    /// # Errors
    /// The catalogue could not be read.
    pub fn table_names(&self) -> anyhow::Result<Vec<String>> {
        let mut conn = self.pool.get().context("connecting")?;
        let rows = conn.client.query(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' \
             ORDER BY table_name",
            &[],
        )?;
        Ok(rows.iter().map(|row| row.get::<_, String>(0)).collect())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
    }
}

impl Backend for Postgres {
    fn begin(&self, access: Access) -> Result<Box<dyn Session>, StoreError> {
        let conn = self
            .pool
            .get()
            .map_err(|e| StoreError::Unavailable(format!("no connection to {}: {e}", self.name)))?;
        // The transaction starts with the call's first statement, so that a call may ask for
        // READ COMMITTED first (`lock_rows_instead`).
        Ok(Box::new(PgSession {
            conn,
            access,
            begun: false,
            read_committed: false,
            migrating: self.shared.migrating.load(Ordering::Relaxed),
            wrote: false,
            broken: None,
            shared: Arc::clone(&self.shared),
        }))
    }

    fn changed_elsewhere(&self) -> bool {
        let every = if self.shared.listening.load(Ordering::Relaxed) {
            BACKSTOP
        } else {
            BACKSTOP_DISCONNECTED
        };
        let backstop = {
            let mut last = self
                .shared
                .backstop
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.elapsed() >= every {
                *last = Instant::now();
                true
            } else {
                false
            }
        };
        self.shared.changed.swap(false, Ordering::Relaxed) || backstop
    }

    fn concurrent_writes(&self) -> bool {
        self.concurrent_writes
    }

    fn prepare_to_serve(&self) -> anyhow::Result<()> {
        self.shared.migrating.store(false, Ordering::Relaxed);
        Ok(())
    }
}

/// One call's transaction on a pooled connection.
struct PgSession {
    conn: r2d2::PooledConnection<Manager>,
    access: Access,
    /// `BEGIN` was sent (with the call's first statement).
    begun: bool,
    /// The call asked for READ COMMITTED (`lock_rows_instead`).
    read_committed: bool,
    /// Writes take the migration lock first (the schema is not yet known to be current).
    migrating: bool,
    wrote: bool,
    /// Set when the transaction cannot stand whatever the guest answers (conflict, lost
    /// connection); every later statement fails the same way.
    broken: Option<StoreError>,
    shared: Arc<Shared>,
}

impl PgSession {
    /// Starts the transaction before the call's first statement.
    fn begin_now(&mut self) -> Result<(), StoreError> {
        if let Some(broken) = &self.broken {
            return Err(broken.clone());
        }
        if self.begun {
            return Ok(());
        }
        let begin = match self.access {
            Access::Write if self.migrating => format!(
                "BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"
            ),
            Access::Write if self.read_committed => {
                "BEGIN ISOLATION LEVEL READ COMMITTED".to_owned()
            }
            Access::Write => "BEGIN ISOLATION LEVEL SERIALIZABLE".to_owned(),
            Access::Read => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY".to_owned(),
        };
        let begun = self.conn.client.batch_execute(&begin);
        begun.map_err(|e| self.failed(&e))?;
        self.begun = true;
        Ok(())
    }

    /// The guest's statement, prepared on this connection: rewritten and checked the first time
    /// only, then found by the guest's own text.
    fn statement(&mut self, sql: &str) -> Result<Statement, StoreError> {
        self.begin_now()?;
        if let Some(statement) = self.conn.statements.get(sql) {
            return Ok(statement.clone());
        }
        let rewritten = rewrite(sql)?;
        if rewritten.statements > 1 {
            return Err(StoreError::Refused(
                "one statement per call of execute or query".to_owned(),
            ));
        }
        let prepared = self.conn.client.prepare(&rewritten.sql);
        let statement = prepared.map_err(|e| self.failed(&e))?;
        if self.conn.statements.len() >= STATEMENT_CACHE {
            self.conn.statements.clear();
        }
        self.conn
            .statements
            .insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    /// Maps a failure, remembering the ones that void the call.
    fn failed(&mut self, error: &postgres::Error) -> StoreError {
        let mapped = store_error(error);
        if matches!(mapped, StoreError::Conflict(_) | StoreError::Unavailable(_)) {
            self.broken = Some(mapped.clone());
        }
        if self.conn.client.is_closed() {
            self.conn.tainted = true;
        }
        mapped
    }

    fn run_query(
        &mut self,
        sql: &str,
        params: &[Value],
        budget: Option<u64>,
    ) -> Result<Rows, StoreError> {
        let statement = self.statement(sql)?;
        let columns: Vec<String> = statement
            .columns()
            .iter()
            .map(|c| c.name().to_owned())
            .collect();
        let types: Vec<Type> = statement
            .columns()
            .iter()
            .map(|c| c.type_().clone())
            .collect();
        let args: Vec<Param<'_>> = params.iter().map(Param).collect();
        let mut page = budget.map(PageBudget::new);
        let read = read_rows(
            &mut self.conn.client,
            &statement,
            &args,
            &types,
            &columns,
            page.as_mut(),
        );
        let rows = match read {
            Ok(rows) => rows,
            Err(Failure::Db(e)) => return Err(self.failed(&e)),
            Err(Failure::Store(e)) => return Err(e),
        };
        if self.access == Access::Write && !is_select(sql) {
            self.wrote = true;
        }
        Ok(Rows { columns, rows })
    }
}

impl Session for PgSession {
    fn dialect(&self) -> SqlDialect {
        SqlDialect::Postgres
    }

    fn lock_rows_instead(&mut self) -> Result<(), StoreError> {
        if self.begun {
            return Err(StoreError::Refused(
                "lock-rows-instead comes before the call's first statement".to_owned(),
            ));
        }
        self.read_committed = true;
        Ok(())
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<Executed, StoreError> {
        // A statement prepared before is one statement; only a new text may be a script.
        let script = if self.conn.statements.contains_key(sql) {
            None
        } else {
            Some(rewrite(sql)?).filter(|rewritten| rewritten.statements > 1)
        };
        if let Some(rewritten) = script {
            self.begin_now()?;
            // Schema scripts: several statements, no parameters, in a write call only.
            if !params.is_empty() {
                return Err(StoreError::Refused(
                    "parameters go with one statement at a time".to_owned(),
                ));
            }
            if self.access != Access::Write {
                return Err(StoreError::ReadOnly("a read-only call".to_owned()));
            }
            let ran = self.conn.client.batch_execute(&rewritten.sql);
            ran.map_err(|e| self.failed(&e))?;
            self.wrote = true;
            return Ok(Executed {
                rows_changed: 0,
                last_insert_id: 0,
            });
        }
        let statement = self.statement(sql)?;
        let params: Vec<Param<'_>> = params.iter().map(Param).collect();
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let changed = self.conn.client.execute(&statement, &refs);
        let changed = changed.map_err(|e| self.failed(&e))?;
        self.wrote |= self.access == Access::Write && (changed > 0 || is_ddl(sql));
        Ok(Executed {
            rows_changed: changed,
            last_insert_id: 0,
        })
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Rows, StoreError> {
        self.run_query(sql, params, None)
    }

    fn query_page(
        &mut self,
        sql: &str,
        params: &[Value],
        max_bytes: u64,
    ) -> Result<Rows, StoreError> {
        self.run_query(sql, params, Some(max_bytes))
    }

    fn get_setting(&mut self, key: &str) -> Result<Option<String>, StoreError> {
        let rows = self.query(
            "SELECT value FROM relay_settings WHERE key = ?",
            &[Value::Text(key.to_owned())],
        )?;
        Ok(rows
            .rows
            .into_iter()
            .next()
            .and_then(|row| match row.into_iter().next() {
                Some(Value::Text(value)) => Some(value),
                _ => None,
            }))
    }

    fn set_setting(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        if self.access != Access::Write {
            return Err(StoreError::ReadOnly(
                "writing a setting in a read-only call".to_owned(),
            ));
        }
        if value.is_empty() {
            self.execute(
                "DELETE FROM relay_settings WHERE key = ?",
                &[Value::Text(key.to_owned())],
            )?;
        } else {
            self.execute(
                "INSERT INTO relay_settings (key, value) VALUES (?, ?) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[Value::Text(key.to_owned()), Value::Text(value.to_owned())],
            )?;
        }
        Ok(())
    }

    fn list_settings(&mut self, prefix: &str) -> Result<Vec<Setting>, StoreError> {
        let rows = self.query(
            "SELECT key, value FROM relay_settings WHERE starts_with(key, ?) ORDER BY key",
            &[Value::Text(prefix.to_owned())],
        )?;
        Ok(rows
            .rows
            .into_iter()
            .filter_map(|row| match row.as_slice() {
                [Value::Text(key), Value::Text(value)] => Some(Setting {
                    key: key.clone(),
                    value: value.clone(),
                    source: SettingSource::Stored,
                }),
                _ => None,
            })
            .collect())
    }

    fn wrote(&self) -> bool {
        self.wrote
    }

    fn broken(&self) -> Option<StoreError> {
        self.broken.clone()
    }

    fn finish(mut self: Box<Self>, commit: bool) -> Result<(), StoreError> {
        if !self.begun {
            // No statement ran: there is no transaction to end.
            return match self.broken.take() {
                Some(broken) if commit => Err(broken),
                _ => Ok(()),
            };
        }
        if !commit || self.broken.is_some() {
            if self.conn.client.batch_execute("ROLLBACK").is_err() {
                self.conn.tainted = true;
            }
            return match self.broken.take() {
                Some(broken) if commit => Err(broken),
                _ => Ok(()),
            };
        }
        // One notification per committed write call, carrying only this host's tag.
        let end = if self.wrote {
            format!(
                "SELECT pg_notify('{CHANNEL}', '{}'); COMMIT",
                self.shared.tag
            )
        } else {
            "COMMIT".to_owned()
        };
        let committed = self.conn.client.batch_execute(&end);
        if let Err(error) = committed {
            let mapped = store_error(&error);
            // A failed COMMIT leaves nothing; make sure the connection is not reused mid-way.
            if self.conn.client.batch_execute("ROLLBACK").is_err() {
                self.conn.tainted = true;
            }
            return Err(mapped);
        }
        Ok(())
    }
}

/// A pooled connection and its prepared statements.
pub struct PgConnection {
    client: Client,
    /// Statements prepared on this connection, by the guest's own text (before rewriting).
    statements: HashMap<String, Statement>,
    /// Left in an unknown state (a failed rollback): the pool drops it.
    tainted: bool,
}

/// r2d2's side of the pool: how to connect and whether a connection still works.
struct Manager {
    config: Config,
    tls: MakeRustlsConnect,
}

impl r2d2::ManageConnection for Manager {
    type Connection = PgConnection;
    type Error = postgres::Error;

    fn connect(&self) -> Result<PgConnection, postgres::Error> {
        Ok(PgConnection {
            client: self.config.connect(self.tls.clone())?,
            statements: HashMap::new(),
            tainted: false,
        })
    }

    fn is_valid(&self, conn: &mut PgConnection) -> Result<(), postgres::Error> {
        conn.client.simple_query("").map(|_| ())
    }

    fn has_broken(&self, conn: &mut PgConnection) -> bool {
        conn.tainted || conn.client.is_closed()
    }
}

/// Logs the pool's connection failures once each (they also reach the calls as 503s).
#[derive(Debug)]
struct LogPoolErrors;

impl r2d2::HandleError<postgres::Error> for LogPoolErrors {
    fn handle_error(&self, error: postgres::Error) {
        tracing::warn!(cause = %cause(&error), "PostgreSQL connection failed");
    }
}

/// The host's settings table (the same on both backends).
fn ensure_settings_table(client: &mut Client) -> anyhow::Result<()> {
    // Hosts starting together take turns, so CREATE ... IF NOT EXISTS does not race itself.
    client.batch_execute(&format!(
        "SET client_min_messages = warning; BEGIN; SELECT pg_advisory_xact_lock({MIGRATION_LOCK}); \
         CREATE TABLE IF NOT EXISTS relay_settings (key TEXT COLLATE \"C\" PRIMARY KEY, value TEXT NOT NULL); \
         COMMIT"
    ))?;
    Ok(())
}

/// Holds one connection that `LISTEN`s, turning other hosts' notifications into
/// `shared.changed`; reconnects when the connection goes, and wakes everyone once it is back
/// (notifications sent meanwhile are lost).
fn listen(config: &Config, tls: &MakeRustlsConnect, shared: &Shared, name: &str) {
    let mut warned = false;
    while !shared.stopping.load(Ordering::Relaxed) {
        let connected = config.connect(tls.clone()).and_then(|mut client| {
            client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
            Ok(client)
        });
        let mut client = match connected {
            Ok(client) => client,
            Err(error) => {
                if !warned {
                    tracing::warn!(db = name, cause = %cause(&error), "cannot listen for other relay hosts' writes; retrying every second");
                    warned = true;
                }
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        if warned {
            tracing::info!(db = name, "listening for other relay hosts' writes again");
            warned = false;
        }
        shared.listening.store(true, Ordering::Relaxed);
        shared.changed.store(true, Ordering::Relaxed);
        loop {
            if shared.stopping.load(Ordering::Relaxed) {
                return;
            }
            let next = client
                .notifications()
                .timeout_iter(Duration::from_millis(500))
                .next();
            match next {
                Ok(Some(note)) => {
                    if note.payload() != shared.tag {
                        shared.changed.store(true, Ordering::Relaxed);
                    }
                }
                Ok(None) => {
                    if client.is_closed() {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(db = name, cause = %cause(&error), "lost the listening connection; reconnecting");
                    break;
                }
            }
        }
        shared.listening.store(false, Ordering::Relaxed);
    }
}

/// A guest value passed as whatever type Postgres inferred for its placeholder.
#[derive(Debug)]
struct Param<'a>(&'a Value);

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self.0 {
            Value::Null => Ok(IsNull::Yes),
            Value::Integer(n) => integer_to_sql(*n, ty, out),
            #[allow(clippy::cast_possible_truncation)]
            Value::Real(r) => match *ty {
                Type::FLOAT8 => r.to_sql(ty, out),
                Type::FLOAT4 => (*r as f32).to_sql(ty, out),
                Type::INT8 | Type::INT4 | Type::INT2 if r.fract() == 0.0 => {
                    integer_to_sql(*r as i64, ty, out)
                }
                _ if is_text(ty) => r.to_string().as_str().to_sql(ty, out),
                _ => Err(format!("a real number cannot be passed as {ty}").into()),
            },
            Value::Text(text) => match *ty {
                Type::INT8 => text.trim().parse::<i64>()?.to_sql(ty, out),
                Type::INT4 => text.trim().parse::<i32>()?.to_sql(ty, out),
                Type::INT2 => text.trim().parse::<i16>()?.to_sql(ty, out),
                Type::FLOAT8 => text.trim().parse::<f64>()?.to_sql(ty, out),
                Type::BOOL => matches!(text.as_str(), "1" | "true" | "t").to_sql(ty, out),
                Type::BYTEA => text.as_bytes().to_sql(ty, out),
                Type::JSON => {
                    out.extend_from_slice(text.as_bytes());
                    Ok(IsNull::No)
                }
                Type::JSONB => {
                    out.extend_from_slice(&[1]);
                    out.extend_from_slice(text.as_bytes());
                    Ok(IsNull::No)
                }
                _ => text.as_str().to_sql(ty, out),
            },
            Value::Blob(bytes) => bytes.as_slice().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn integer_to_sql(
    n: i64,
    ty: &Type,
    out: &mut BytesMut,
) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
    #[allow(clippy::cast_precision_loss)]
    match *ty {
        Type::INT8 => n.to_sql(ty, out),
        Type::INT4 => i32::try_from(n)?.to_sql(ty, out),
        Type::INT2 => i16::try_from(n)?.to_sql(ty, out),
        Type::BOOL => (n != 0).to_sql(ty, out),
        Type::FLOAT8 => (n as f64).to_sql(ty, out),
        Type::FLOAT4 => (n as f32).to_sql(ty, out),
        _ if is_text(ty) => n.to_string().as_str().to_sql(ty, out),
        _ => Err(format!("an integer cannot be passed as {ty}").into()),
    }
}

fn is_text(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN
    )
}

/// Why reading a query's rows stopped.
enum Failure {
    Db(postgres::Error),
    Store(StoreError),
}

/// Runs a query and reads its rows, stopping early when the page is full.
fn read_rows(
    client: &mut Client,
    statement: &Statement,
    args: &[Param<'_>],
    types: &[Type],
    columns: &[String],
    mut page: Option<&mut PageBudget>,
) -> Result<Vec<Vec<Value>>, Failure> {
    let mut iter = client
        .query_raw(statement, args.iter())
        .map_err(Failure::Db)?;
    let mut rows = Vec::new();
    while let Some(row) = iter.next().map_err(Failure::Db)? {
        let mut values = Vec::with_capacity(types.len());
        for (i, ty) in types.iter().enumerate() {
            values.push(read_value(&row, i, ty, &columns[i]).map_err(Failure::Store)?);
        }
        if let Some(page) = page.as_deref_mut()
            && !page.admits(&values)
        {
            break;
        }
        rows.push(values);
    }
    Ok(rows)
}

/// Text from any textual column, JSON included (kept as its text).
struct AnyText(String);

impl<'a> FromSql<'a> for AnyText {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        let raw = if *ty == Type::JSONB {
            raw.strip_prefix(&[1]).ok_or("unknown jsonb version")?
        } else {
            raw
        };
        Ok(AnyText(std::str::from_utf8(raw)?.to_owned()))
    }

    fn accepts(ty: &Type) -> bool {
        is_text(ty) || matches!(*ty, Type::JSON | Type::JSONB)
    }
}

/// One column of a row as a guest value.
fn read_value(row: &postgres::Row, i: usize, ty: &Type, column: &str) -> Result<Value, StoreError> {
    let bad = |e: postgres::Error| StoreError::Other(format!("column {column}: {e}"));
    let value = match *ty {
        Type::INT8 => row
            .try_get::<_, Option<i64>>(i)
            .map_err(bad)?
            .map(Value::Integer),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)
            .map_err(bad)?
            .map(|n| Value::Integer(n.into())),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)
            .map_err(bad)?
            .map(|n| Value::Integer(n.into())),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)
            .map_err(bad)?
            .map(|b| Value::Integer(i64::from(b))),
        Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(i)
            .map_err(bad)?
            .map(Value::Real),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(i)
            .map_err(bad)?
            .map(|r| Value::Real(r.into())),
        Type::BYTEA => row
            .try_get::<_, Option<Vec<u8>>>(i)
            .map_err(bad)?
            .map(Value::Blob),
        Type::OID => row
            .try_get::<_, Option<u32>>(i)
            .map_err(bad)?
            .map(|n| Value::Integer(n.into())),
        _ if AnyText::accepts(ty) => row
            .try_get::<_, Option<AnyText>>(i)
            .map_err(bad)?
            .map(|t| Value::Text(t.0)),
        _ => {
            return Err(StoreError::Other(format!(
                "column {column} has type {ty}, which the relay does not read: cast it to BIGINT, \
                 DOUBLE PRECISION or TEXT"
            )));
        }
    };
    Ok(value.unwrap_or(Value::Null))
}

/// Maps a Postgres error onto the store's errors.
fn store_error(error: &postgres::Error) -> StoreError {
    let text = cause(error);
    let Some(code) = error.code() else {
        return if error.is_closed() || error.source().is_some_and(|s| s.is::<std::io::Error>()) {
            StoreError::Unavailable(text)
        } else {
            StoreError::Other(text)
        };
    };
    let class = &code.code()[..2];
    if *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED {
        StoreError::Conflict(text)
    } else if class == "23" {
        StoreError::Constraint(text)
    } else if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
        StoreError::ReadOnly(text)
    } else if *code == SqlState::DISK_FULL || *code == SqlState::PROGRAM_LIMIT_EXCEEDED {
        StoreError::Full(text)
    } else if class == "08" || class == "57" || class == "53" {
        StoreError::Unavailable(text)
    } else if *code == SqlState::LOCK_NOT_AVAILABLE || *code == SqlState::QUERY_CANCELED {
        StoreError::Busy(text)
    } else if class == "42" && code.code() == "42501" {
        StoreError::Refused(text)
    } else {
        StoreError::Other(text)
    }
}

/// The error's own words, the server's message included.
fn cause(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut text = error.to_string();
            let mut source = error.source();
            while let Some(inner) = source {
                let more = inner.to_string();
                if !text.contains(&more) {
                    text.push_str(": ");
                    text.push_str(&more);
                }
                source = inner.source();
            }
            text
        }
    }
}

/// `postgres://USER@HOST:PORT/DB` from a parsed URL: what messages call the database.
fn describe(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(host, port)| match host {
            Host::Tcp(name) => format!("{name}:{port}"),
            #[cfg(unix)]
            Host::Unix(path) => format!("{}:{port}", path.display()),
        })
        .collect();
    let user = config
        .get_user()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    let db = config.get_dbname().unwrap_or("");
    format!("postgres://{user}{}/{db}", hosts.join(","))
}

/// The URL with any password replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or("");
            let hidden = if credentials.contains(':') {
                ":***"
            } else {
                ""
            };
            format!("{scheme}://{user}{hidden}@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

/// The URL as the driver takes it, whether it asks for TLS, and the CA file it names: libpq's
/// `sslmode=verify-ca|verify-full` become `require` (the certificate is always verified) and
/// `sslrootcert=FILE` is taken out (the driver does not know it).
fn for_driver(url: &str) -> (String, bool, Option<std::path::PathBuf>) {
    let Some((head, query)) = url.split_once('?') else {
        return (url.to_owned(), false, None);
    };
    let mut tls = false;
    let mut root = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", "require" | "prefer" | "verify-ca" | "verify-full")) => {
                tls = true;
                kept.push("sslmode=require".to_owned());
            }
            Some(("sslrootcert", file)) => root = Some(std::path::PathBuf::from(file)),
            _ => kept.push(pair.to_owned()),
        }
    }
    let url = if kept.is_empty() {
        head.to_owned()
    } else {
        format!("{head}?{}", kept.join("&"))
    };
    (url, tls, root)
}

/// rustls with the ring provider, trusting the system's root certificates, or only the CA file
/// the URL names (`sslrootcert`).
fn tls_connector(root_cert: Option<&std::path::Path>) -> anyhow::Result<MakeRustlsConnect> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    match root_cert {
        Some(file) => {
            let certs = CertificateDer::pem_file_iter(file)
                .with_context(|| format!("reading sslrootcert {}", file.display()))?;
            for cert in certs {
                let cert =
                    cert.with_context(|| format!("reading sslrootcert {}", file.display()))?;
                roots
                    .add(cert)
                    .with_context(|| format!("a certificate in {}", file.display()))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                // A certificate rustls cannot read is skipped, as every TLS client does.
                let _ = roots.add(cert);
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("setting up TLS")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

fn random_bytes() -> [u8; 8] {
    let mut bytes = [0u8; 8];
    // A tag that is not random only risks a host ignoring another's notification: the
    // backstop still wakes its waiters.
    let _ = getrandom::fill(&mut bytes);
    bytes
}

/// A statement with `?` placeholders turned into `$n`, and how many statements it holds.
#[derive(Debug, PartialEq, Eq)]
struct Rewritten {
    sql: String,
    statements: usize,
}

/// The first word of each statement that a guest may run: reads, writes and schema changes.
/// Transaction control, session settings, LISTEN/NOTIFY, COPY, DO blocks, functions and
/// extensions are the host's or nobody's.
const ALLOWED: [&str; 8] = [
    "SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "VALUES", "CREATE", "ALTER",
];
const ALLOWED_CREATE: [&str; 5] = ["TABLE", "INDEX", "UNIQUE", "SEQUENCE", "VIEW"];

/// Rewrites placeholders (`?` to `$n`, `?N` to `$N`) outside string literals, quoted names and
/// comments, and refuses statements a guest may not run.
fn rewrite(sql: &str) -> Result<Rewritten, StoreError> {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.char_indices().peekable();
    let mut next_param = 0u32;
    let mut starts = vec![0usize];
    while let Some((at, c)) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push(c);
                // Up to the closing quote; a doubled quote stays inside.
                while let Some((_, inner)) = chars.next() {
                    out.push(inner);
                    if inner == c {
                        if chars.peek().map(|&(_, n)| n) == Some(c) {
                            out.push(c);
                            chars.next();
                        } else {
                            break;
                        }
                    }
                }
            }
            '-' if chars.peek().map(|&(_, n)| n) == Some('-') => {
                for (_, inner) in chars.by_ref() {
                    if inner == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek().map(|&(_, n)| n) == Some('*') => {
                chars.next();
                let mut last = ' ';
                for (_, inner) in chars.by_ref() {
                    if last == '*' && inner == '/' {
                        break;
                    }
                    last = inner;
                }
                out.push(' ');
            }
            '?' => {
                let mut digits = String::new();
                while let Some(&(_, d)) = chars.peek() {
                    if d.is_ascii_digit() {
                        digits.push(d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                let number = if digits.is_empty() {
                    next_param += 1;
                    next_param
                } else {
                    let n: u32 = digits
                        .parse()
                        .map_err(|_| StoreError::Refused(format!("bad placeholder ?{digits}")))?;
                    next_param = next_param.max(n);
                    n
                };
                out.push('$');
                out.push_str(&number.to_string());
            }
            ';' => {
                out.push(c);
                starts.push(at + 1);
            }
            '$' if chars
                .peek()
                .is_some_and(|&(_, n)| n == '$' || n.is_ascii_alphabetic()) =>
            {
                return Err(StoreError::Refused(
                    "dollar-quoted text is not taken from the guest".to_owned(),
                ));
            }
            _ => out.push(c),
        }
    }
    let mut statements = 0;
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(sql.len());
        let text = sql.get(start..end).unwrap_or("");
        let mut words = text
            .split(|c: char| c.is_whitespace() || c == '(' || c == ';')
            .filter(|w| !w.is_empty() && !w.starts_with("--"));
        let Some(first) = words.next() else {
            continue;
        };
        statements += 1;
        let first = first.to_ascii_uppercase();
        let allowed = ALLOWED.contains(&first.as_str())
            && (first != "CREATE"
                || words
                    .next()
                    .is_some_and(|w| ALLOWED_CREATE.contains(&w.to_ascii_uppercase().as_str())))
            && (first != "ALTER"
                || words
                    .next()
                    .is_some_and(|w| w.eq_ignore_ascii_case("TABLE")));
        if !allowed {
            return Err(StoreError::Refused(format!(
                "{first} statements are not run for the guest"
            )));
        }
    }
    Ok(Rewritten {
        sql: out,
        statements,
    })
}

fn first_word(sql: &str) -> String {
    sql.split(|c: char| c.is_whitespace() || c == '(')
        .find(|w| !w.is_empty())
        .unwrap_or("")
        .to_ascii_uppercase()
}

fn is_select(sql: &str) -> bool {
    matches!(first_word(sql).as_str(), "SELECT" | "VALUES")
}

fn is_ddl(sql: &str) -> bool {
    matches!(first_word(sql).as_str(), "CREATE" | "ALTER" | "DROP")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_numbered_outside_literals_and_names() {
        let rewritten = rewrite("SELECT a FROM t WHERE b = ? AND c = '?' AND \"d?\" = ?").unwrap();
        assert_eq!(
            rewritten.sql,
            "SELECT a FROM t WHERE b = $1 AND c = '?' AND \"d?\" = $2"
        );
        assert_eq!(rewritten.statements, 1);
        let numbered = rewrite("UPDATE t SET a = ?2 WHERE id = ?1 AND 'it''s ?' <> ?3").unwrap();
        assert_eq!(
            numbered.sql,
            "UPDATE t SET a = $2 WHERE id = $1 AND 'it''s ?' <> $3"
        );
    }

    #[test]
    fn transaction_control_and_code_are_refused() {
        for sql in [
            "COMMIT",
            "select 1; commit",
            "BEGIN",
            "SET search_path = x",
            "LISTEN x",
            "COPY t TO '/tmp/x'",
            "DO $$ BEGIN END $$",
            "CREATE FUNCTION f() RETURNS int AS 'select 1' LANGUAGE sql",
            "CREATE EXTENSION dblink",
            "  -- comment\n rollback",
        ] {
            assert!(
                matches!(rewrite(sql), Err(StoreError::Refused(_))),
                "{sql} was let through"
            );
        }
        assert_eq!(
            rewrite("CREATE TABLE a (x INT); CREATE UNIQUE INDEX b ON a (x);")
                .unwrap()
                .statements,
            2
        );
    }

    #[test]
    fn urls_are_told_apart_and_passwords_never_shown() {
        assert!(is_url("postgres://u@h/db"));
        assert!(is_url("PostgreSQL://u@h/db"));
        assert!(!is_url("agent-relay.db"));
        assert!(!is_url("./postgres"));
        assert_eq!(
            redact("postgres://relay:secret@db.example:5433/relay?sslmode=require"),
            "postgres://relay:***@db.example:5433/relay?sslmode=require"
        );
        assert_eq!(redact("postgres://relay@h/db"), "postgres://relay@h/db");
        assert_eq!(
            for_driver(
                "postgres://u@h/db?sslmode=verify-full&sslrootcert=/ca.pem&connect_timeout=3"
            ),
            (
                "postgres://u@h/db?sslmode=require&connect_timeout=3".to_owned(),
                true,
                Some(std::path::PathBuf::from("/ca.pem"))
            )
        );
        assert_eq!(
            for_driver("postgres://u@h/db"),
            ("postgres://u@h/db".to_owned(), false, None)
        );
        assert!(!for_driver("postgres://u@h/db?sslmode=disable").1);
    }
}
