//! Hosting the relay inside another Rust program, as a sandboxed plugin without HTTP.
//!
//! [`Relay`] is the whole surface: open a relay over a SQLite file, call any export with JSON
//! (or typed [`Val`]) arguments as a chosen [`Caller`], list the exports. Every call runs in a
//! fresh instance of the component under the [`Limits`] (memory, time), inside one transaction
//! that is committed only when the export returns `ok` — the same promises the `agent-relay`
//! server keeps, because the server is built on this type.
//!
//! ```no_run
//! use agent_relay_core::embed::{Caller, Options, Relay};
//! use serde_json::json;
//!
//! let relay = Relay::open("plugin.db", Options::default())?;
//! let alice = relay.call_json("register-agent", &json!({"input": {"id": "alice"}}))?;
//! let token = alice["token"].as_str().unwrap_or_default().to_owned();
//! let inbox = relay.call_json_as(
//!     &Caller::Bearer(token),
//!     "poll-inbox",
//!     &json!({"agentId": "alice", "query": {}}),
//! )?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value as Json, json};
use wasmtime::component::Val;

use crate::bridge::{self, ErrorReply, Inputs};
use crate::calls::Calls;
pub use crate::calls::{CallOptions, Caller};
use crate::postgres::Postgres;
pub use crate::postgres::PostgresOptions;
use crate::runtime::Runtime;
pub use crate::runtime::{COMPONENT, CONTRACT, Clock, Export, Limits};
use crate::shape::signature;
use crate::sqlite::Sqlite;
pub use crate::sqlite::{SqliteOptions, Synchronous};
use crate::store::{Access, Backend, RunSettings};

/// How a relay is opened.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The sandbox every call runs in: linear memory and wall time per call.
    pub limits: Limits,
    /// How the SQLite file is opened (durability, busy timeout, size cap).
    pub sqlite: SqliteOptions,
    /// How a PostgreSQL database is used (pool size, connect timeout), when the database is a
    /// `postgres://` URL.
    pub postgres: PostgresOptions,
    /// Relay settings for this relay's life only (`stale-ttl-ms`, `default-lease-ms`, ...): the
    /// calls see them before the stored ones, and they are never written. Each is checked by
    /// the component's `check-run-setting` at [`Relay::open`].
    pub settings: Vec<(String, String)>,
    /// The clock the component reads; keep a clone to move time (tests, simulations).
    pub clock: Clock,
    /// Concurrency of calls through the async runner ([`Relay::calls`], what a server uses).
    pub calls: CallOptions,
    /// Another build of the component to run instead of the embedded one (the tests' build
    /// with the fault-injection exports).
    pub component: Option<Vec<u8>>,
}

/// A relay over one SQLite database, ready to take calls.
pub struct Relay {
    calls: Arc<Calls>,
    path: PathBuf,
    schema: Json,
    backup: Option<PathBuf>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("path", &self.path).finish()
    }
}

impl Relay {
    /// Opens (creating if needed) the database at `path`, compiles the component, checks
    /// `options.settings` and brings the schema up to date with its `migrate` export.
    ///
    /// # Errors
    /// The database cannot be opened, the component cannot be compiled, a run setting is
    /// refused (an unknown key, a bad value), or the migration failed (nothing of it is kept
    /// then).
    ///
    /// Before an existing database is upgraded, a consistent backup is written beside it
    /// (`<db>.v<old version>.bak`); a database newer than this relay is refused untouched.
    ///
    /// A `postgres://` or `postgresql://` URL instead of a path opens that PostgreSQL database
    /// (`options.postgres`); [`Relay::path`] then names it without its password.
    pub fn open(path: impl AsRef<Path>, options: Options) -> anyhow::Result<Self> {
        let path = path.as_ref().to_owned();
        if let Some(url) = path.to_str().filter(|db| crate::postgres::is_url(db)) {
            let backend = Arc::new(Postgres::open(url, &options.postgres)?);
            let name = backend.name().to_owned();
            return Self::open_backend(backend, name, options);
        }
        let backend = Arc::new(Sqlite::open(&path, options.sqlite.clone())?);
        Self::open_backend(backend, path, options)
    }

    /// As [`Relay::open`], over any backend: the one place another database plugs in. `name`
    /// is how messages and logs name the database (its file, or a URL without its password);
    /// `options.sqlite` is not used.
    ///
    /// # Errors
    /// As for [`Relay::open`]; the backup is the backend's
    /// ([`Backend::backup_before_migrate`]).
    pub fn open_backend(
        backend: Arc<dyn Backend>,
        name: impl Into<PathBuf>,
        options: Options,
    ) -> anyhow::Result<Self> {
        let runtime = runtime(Arc::clone(&backend), &options)?;
        let mut relay = Self {
            calls: Calls::new(runtime, options.calls),
            path: name.into(),
            schema: Json::Null,
            backup: None,
        };
        relay.check_run_settings(&options.settings)?;
        let status = relay.schema_status()?;
        let pending = status["steps"]
            .as_array()
            .is_some_and(|steps| !steps.is_empty());
        if pending {
            relay.backup =
                backend.backup_before_migrate(status["fromVersion"].as_u64().unwrap_or(0))?;
        }
        match relay.call_json("migrate", &json!({})) {
            Ok(report) => relay.schema = report,
            // An up-to-date database that cannot take writes (a read-only file or mount) is
            // still served: reads work, writes answer 503 until it is writable again.
            Err(error) if !pending && error.status == 503 => {
                tracing::warn!(db = %relay.path.display(), reason = %error.message, "serving a database that cannot take writes");
                relay.schema = status;
                return Ok(relay);
            }
            Err(error) => anyhow::bail!("migrating the database: {}", error.message),
        }
        backend.prepare_to_serve()?;
        relay.warn_ignored_settings();
        Ok(relay)
    }

    /// Refuses a run setting the component does not take (the rules are the component's).
    fn check_run_settings(&self, settings: &[(String, String)]) -> anyhow::Result<()> {
        if self.calls.runtime().export("check-run-setting").is_none() {
            return Ok(());
        }
        for (key, value) in settings {
            self.call_json("check-run-setting", &json!({"key": key, "value": value}))
                .map_err(|e| anyhow::anyhow!("--setting {key}={value}: {}", e.message))?;
        }
        Ok(())
    }

    /// Logs every stored setting the relay does not use (a one-run setting an older version
    /// stored, a value outside its bounds).
    fn warn_ignored_settings(&self) {
        let Ok(Json::Array(settings)) = self.call_json("list-relay-settings", &json!({})) else {
            return;
        };
        for setting in &settings {
            if let Some(why) = setting["ignored"].as_str() {
                tracing::warn!(key = %setting["key"].as_str().unwrap_or(""), "ignoring a stored setting: {why}");
            }
        }
    }

    /// Opens the database only to read its schema version and the pending upgrade steps;
    /// nothing is written.
    ///
    /// # Errors
    /// The database cannot be read, or is newer than this relay.
    pub fn inspect(path: impl AsRef<Path>, options: Options) -> anyhow::Result<Json> {
        let mut path = path.as_ref().to_owned();
        let backend: Arc<dyn Backend> =
            if let Some(url) = path.to_str().filter(|db| crate::postgres::is_url(db)) {
                let backend = Postgres::open(url, &options.postgres)?;
                path = PathBuf::from(backend.name());
                Arc::new(backend)
            } else {
                anyhow::ensure!(path.exists(), "{} does not exist", path.display());
                Arc::new(Sqlite::open(&path, options.sqlite.clone())?)
            };
        let runtime = runtime(backend, &options)?;
        Self {
            calls: Calls::new(runtime, options.calls),
            path,
            schema: Json::Null,
            backup: None,
        }
        .schema_status()
    }

    fn schema_status(&self) -> anyhow::Result<Json> {
        self.call_json("schema-status", &json!({}))
            .map_err(|e| anyhow::anyhow!("{} is not usable: {}", self.path.display(), e.message))
    }

    /// The backup written before an upgrade at [`Relay::open`], if one was needed.
    pub fn backup(&self) -> Option<&Path> {
        self.backup.as_deref()
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the migration at [`Relay::open`] did (`fromVersion`, `toVersion`, `steps`).
    pub fn schema_report(&self) -> &Json {
        &self.schema
    }

    /// The clock the component reads; [`Clock::advance`] moves it.
    pub fn clock(&self) -> &Clock {
        self.calls.runtime().clock()
    }

    /// Every exported function, in name order.
    pub fn exports(&self) -> impl Iterator<Item = &Export> {
        self.calls.runtime().exports().values()
    }

    /// The engine underneath.
    pub fn runtime(&self) -> &Runtime {
        self.calls.runtime()
    }

    /// The call runner underneath, for hosts that serve it further (the HTTP server does).
    pub fn calls(&self) -> &Arc<Calls> {
        &self.calls
    }

    /// Calls `export` as the operator. `args` is a JSON object keyed by the export's parameter
    /// names in camelCase, without `caller` (as `agent-relay call` takes them).
    ///
    /// # Errors
    /// As for [`Relay::call_json_as`].
    pub fn call_json(&self, export: &str, args: &Json) -> Result<Json, ErrorReply> {
        self.call_json_as(&Caller::Operator, export, args)
    }

    /// Calls `export` as `caller` and returns its answer as JSON.
    ///
    /// # Errors
    /// The relay's own error (`not_found`, `conflict`, ...); `invalid` when the arguments do not
    /// fit the export; `internal` when the call trapped or ran out of time or memory; `unavailable`
    /// or `storage_full` when the database refused the transaction. Nothing was written in each
    /// case.
    pub fn call_json_as(
        &self,
        caller: &Caller,
        export: &str,
        args: &Json,
    ) -> Result<Json, ErrorReply> {
        let export = self.find(export)?;
        let empty = Map::new();
        let named = match args {
            Json::Object(named) => named,
            Json::Null => &empty,
            _ => {
                return Err(ErrorReply::invalid(
                    "the arguments must be a JSON object keyed by parameter name",
                ));
            }
        };
        let inputs = Inputs {
            caller: Some(caller.to_val()),
            named: Some(named),
            ..Inputs::default()
        };
        let values = bridge::arguments(export, &inputs).map_err(|e| ErrorReply::invalid(e.0))?;
        bridge::outcome(&self.calls.run_here(export, &values)?)
    }

    /// Calls `export` as `caller` with typed arguments (every parameter after `caller`, in order)
    /// and returns the `ok` value (`None` for an export that returns nothing).
    ///
    /// # Errors
    /// As for [`Relay::call_json_as`]; the relay's error arrives as its [`ErrorReply`].
    pub fn call(
        &self,
        caller: &Caller,
        export: &str,
        args: &[Val],
    ) -> Result<Option<Val>, ErrorReply> {
        let export = self.find(export)?;
        let mut values = Vec::with_capacity(args.len() + 1);
        values.push(caller.to_val());
        values.extend_from_slice(args);
        match self.calls.run_here(export, &values)? {
            Val::Result(Ok(ok)) => Ok(ok.map(|v| *v)),
            other => bridge::outcome(&other).map(|_| None),
        }
    }

    fn find(&self, name: &str) -> Result<&Export, ErrorReply> {
        self.calls.runtime().export(name).ok_or_else(|| {
            ErrorReply::new(
                404,
                "not_found",
                format!("the relay component has no export {name}"),
            )
        })
    }
}

/// The exports' signatures as JSON, for hosts in other languages that need the component's types
/// to convert JSON arguments (the Node host's bridge reads this); each type as
/// [`signature`] writes it.
pub fn signatures<'a>(exports: impl IntoIterator<Item = &'a Export>) -> Json {
    let exports: Vec<Json> = exports
        .into_iter()
        .map(|export| {
            json!({
                "name": export.name,
                "interface": export.interface,
                "access": match export.access { Access::Read => "read", Access::Write => "write" },
                "params": export.params.iter()
                    .map(|(name, shape)| json!({"name": name, "type": signature(shape)}))
                    .collect::<Vec<_>>(),
                "result": export.result.as_ref().map(signature),
            })
        })
        .collect();
    json!({ "package": "agent-relay:relay@0.6.0", "exports": exports })
}

fn runtime(backend: Arc<dyn Backend>, options: &Options) -> anyhow::Result<Runtime> {
    let (clock, limits) = (options.clock.clone(), options.limits.clone());
    let backend = RunSettings::over(backend, options.settings.iter().cloned());
    match &options.component {
        Some(component) => Runtime::with_component(backend, clock, limits, component),
        None => Runtime::new(backend, clock, limits),
    }
}
