//! `relay-bench`: measures the relay against its floor (issue 8). No figure here is tuned; this
//! binary only measures.
//!
//! `cargo build --release && cargo run --release --bin relay-bench -- [--quick|--smoke] [--json PATH]`
//!
//! In-process figures go through `agent_relay_core::embed::Relay` (a fresh component instance and one
//! SQLite transaction per call, `synchronous = full`); HTTP figures drive the `agent-relay serve`
//! binary built next to this one over loopback: set-up through reqwest, the measured load through
//! a lean keep-alive HTTP/1.1 client per thread (one write and one read per request).

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::cast_precision_loss
)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_relay_core::bindings::{Executed, Rows, Setting, StoreError, Value};
use agent_relay_core::bridge::{self, Inputs};
use agent_relay_core::embed::{Caller, Clock, Limits, Options, Relay, Synchronous};
use agent_relay_core::runtime::Runtime;
use agent_relay_core::sqlite::{Sqlite, SqliteOptions};
use agent_relay_core::store::{Access, Backend, Session};
use anyhow::{Context as _, anyhow};
use rusqlite::params_from_iter;
use serde_json::{Map, Value as Json, json};

// The same allocator as the `agent-relay` binary, for the in-process figures (component and floor
// alike).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const OPERATOR: &str = "relay-bench-operator-token-for-measuring";

/// `PRAGMA synchronous` for the in-process figures (component and floor alike): `full` unless
/// `--synchronous` says otherwise.
static SYNCHRONOUS: std::sync::OnceLock<Synchronous> = std::sync::OnceLock::new();

/// `--db URL`: the HTTP figures run against this PostgreSQL server (a fresh database on it),
/// on `--hosts N` relay hosts sharing it.
static POSTGRES: std::sync::OnceLock<(String, usize)> = std::sync::OnceLock::new();

/// `--write-lane`: PostgreSQL hosts run writes on the write lane.
static WRITE_LANE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// The base URL of worker `i`'s host, from a comma-separated list of hosts.
fn pick(bases: &str, i: usize) -> String {
    let all: Vec<&str> = bases.split(',').collect();
    all[i % all.len()].to_owned()
}

fn synchronous() -> Synchronous {
    SYNCHRONOUS.get().copied().unwrap_or(Synchronous::Full)
}

fn synchronous_name() -> &'static str {
    synchronous().name()
}

/// How long and how large each measurement is.
struct Plan {
    name: &'static str,
    in_process: Duration,
    http: Duration,
    instantiations: usize,
    poll_small: usize,
    poll_large: usize,
    polls: usize,
    /// Messages stored for the search figures, and the searches timed.
    search_messages: usize,
    searches: usize,
    backlog: usize,
    /// Idle waiters of each kind (held long-polls, open streams) for the wake figures, and the
    /// wake-ups timed.
    idle: usize,
    wakes: usize,
    /// The groups of figures to measure (all unless `--only`).
    groups: Vec<String>,
}

impl Plan {
    fn new(mode: &str) -> Self {
        match mode {
            "smoke" => Self {
                name: "smoke",
                in_process: Duration::from_millis(300),
                http: Duration::from_millis(400),
                instantiations: 50,
                poll_small: 1_000,
                poll_large: 5_000,
                polls: 5,
                search_messages: 2_000,
                searches: 5,
                backlog: 64,
                idle: 50,
                wakes: 5,
                groups: GROUPS.map(String::from).to_vec(),
            },
            "quick" => Self {
                name: "quick",
                in_process: Duration::from_secs(2),
                http: Duration::from_secs(3),
                instantiations: 500,
                poll_small: 1_000,
                poll_large: 100_000,
                polls: 21,
                search_messages: 100_000,
                searches: 100,
                backlog: 1_000,
                idle: 1_000,
                wakes: 100,
                groups: GROUPS.map(String::from).to_vec(),
            },
            _ => Self {
                name: "full",
                in_process: Duration::from_secs(5),
                http: Duration::from_secs(10),
                instantiations: 2_000,
                poll_small: 1_000,
                poll_large: 1_000_000,
                polls: 51,
                search_messages: 100_000,
                searches: 100,
                backlog: 5_000,
                idle: 1_000,
                wakes: 300,
                groups: GROUPS.map(String::from).to_vec(),
            },
        }
    }
}

/// The figures, in the order they were measured, with a note for the table.
#[derive(Default)]
struct Figures {
    rows: Vec<(String, f64, String)>,
}

impl Figures {
    fn put(&mut self, key: &str, value: f64, note: impl Into<String>) {
        let note = note.into();
        println!("{key:<26} {value:>14.3}  {note}");
        self.rows.push((key.to_owned(), value, note));
    }

    fn value(&self, key: &str) -> Option<f64> {
        self.rows.iter().find(|(k, _, _)| k == key).map(|row| row.1)
    }

    fn json(&self) -> Json {
        let map: Map<String, Json> = self
            .rows
            .iter()
            .map(|(k, v, _)| (k.clone(), json!(v)))
            .collect();
        Json::Object(map)
    }
}

const USAGE: &str = "\
usage: relay-bench [--quick|--smoke] [--json PATH] [--synchronous full|normal|off] [--only GROUP]

Measures the relay against its floor (docs/benchmarks.md) and prints one figure a line.
  --quick          shorter runs, a 100k-message inbox for poll_ms_1m (about 3 minutes)
  --smoke          a few iterations of everything, for CI (not for timing)
  --json PATH      also write the figures as one JSON object
  --synchronous M  PRAGMA synchronous of the in-process figures (default full; HTTP is always full)
  --only GROUP     run one group: instantiate, sends, polls, search or http (repeatable)
  --db URL         run the HTTP figures (only) on PostgreSQL: a fresh database is made on the
                   server URL names (the role needs CREATEDB) and dropped afterwards
  --hosts N        with --db: N relay hosts share that database; clients spread over them
  --write-lane     with --db: the hosts run writes one at a time on the write lane (as on
                   SQLite) instead of side by side, for comparison
Build first: cargo build --release (the HTTP figures start target/release/agent-relay).";

/// The groups of figures, in the order they run.
const GROUPS: [&str; 5] = ["instantiate", "sends", "polls", "search", "http"];

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut mode = "full";
    let mut json_path = None;
    let mut only: Vec<String> = Vec::new();
    let mut database: Option<String> = None;
    let mut hosts = 1;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            // Internal: the bare server `http_bare_ops_16` measures (started by this binary).
            BARE_SERVER => return bare_server(),
            "--quick" => mode = "quick",
            "--smoke" => mode = "smoke",
            "--only" => {
                let group = iter.next().context("--only needs a group")?;
                anyhow::ensure!(
                    GROUPS.contains(&group.as_str()),
                    "unknown group {group}; the groups: {}",
                    GROUPS.join(", ")
                );
                only.push(group.clone());
            }
            "--db" => {
                let url = iter.next().context("--db needs a postgres:// URL")?;
                anyhow::ensure!(
                    agent_relay_core::postgres::is_url(url),
                    "--db takes a postgres:// URL (the SQLite figures need no --db)"
                );
                database = Some(url.clone());
                if only.is_empty() {
                    only.push("http".to_owned());
                }
            }
            "--write-lane" => {
                let _ = WRITE_LANE.set(true);
            }
            "--hosts" => {
                let count: usize = iter
                    .next()
                    .context("--hosts needs a number")?
                    .parse()
                    .context("--hosts needs a number")?;
                hosts = count.max(1);
            }
            "--json" => {
                json_path = Some(PathBuf::from(iter.next().context("--json needs a path")?))
            }
            "--synchronous" => {
                let mode = iter
                    .next()
                    .context("--synchronous needs full, normal or off")?
                    .parse::<Synchronous>()
                    .map_err(|error| anyhow!(error))?;
                let _ = SYNCHRONOUS.set(mode);
            }
            other => anyhow::bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    match database {
        Some(url) => {
            let _ = POSTGRES.set((url, hosts));
        }
        None => anyhow::ensure!(hosts == 1, "--hosts goes with --db postgres://..."),
    }
    let mut plan = Plan::new(mode);
    if !only.is_empty() {
        plan.groups = only;
    }
    let server = std::env::current_exe()?.with_file_name("agent-relay");
    anyhow::ensure!(
        server.exists(),
        "{} is missing: run `cargo build --release` first",
        server.display()
    );
    let dir = std::env::temp_dir().join(format!("relay-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    println!(
        "relay-bench ({} mode), scratch databases in {}",
        plan.name,
        dir.display()
    );
    println!("{:<26} {:>14}  note", "figure", "value");
    let mut figures = Figures::default();
    let result = run(&plan, &dir, &server, &mut figures);
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    if let Some(path) = json_path {
        std::fs::write(&path, serde_json::to_string_pretty(&figures.json())?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn run(plan: &Plan, dir: &Path, server: &Path, figures: &mut Figures) -> anyhow::Result<()> {
    let wanted = |group: &str| plan.groups.iter().any(|g| g == group);
    if wanted("instantiate") {
        instantiation(plan, dir, figures)?;
    }
    if wanted("sends") {
        sends(plan, dir, figures)?;
    }
    if wanted("polls") {
        polls(plan, dir, figures)?;
    }
    if wanted("search") {
        search(plan, &dir.join("search.db"), figures)?;
    }
    if wanted("http") {
        http(plan, dir, server, figures)?;
    }
    Ok(())
}

fn open(path: &Path) -> anyhow::Result<Relay> {
    let mut options = Options::default();
    options.sqlite.synchronous = synchronous();
    Relay::open(path, options)
}

fn call(relay: &Relay, export: &str, args: &Json) -> anyhow::Result<Json> {
    relay
        .call_json(export, args)
        .map_err(|e| anyhow!("{export}: {} {}", e.code, e.message))
}

fn register(relay: &Relay, input: &Json) -> anyhow::Result<()> {
    call(relay, "register-agent", &json!({ "input": input })).map(|_| ())
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or(0.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Runs `op` repeatedly for `duration`; operations per second.
fn rate(
    duration: Duration,
    mut op: impl FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<(usize, f64)> {
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < duration {
        op(n)?;
        n += 1;
    }
    Ok((n, n as f64 / started.elapsed().as_secs_f64()))
}

fn instantiation(plan: &Plan, dir: &Path, figures: &mut Figures) -> anyhow::Result<()> {
    let relay = open(&dir.join("instantiate.db"))?;
    let runtime = relay.runtime();
    let mut samples = Vec::with_capacity(plan.instantiations);
    for _ in 0..plan.instantiations {
        let elapsed = runtime.time_instantiation().map_err(|e| anyhow!("{e}"))?;
        samples.push(elapsed.as_secs_f64() * 1e6);
    }
    figures.put(
        "instantiate_us",
        median(samples),
        format!(
            "median of {} Store::new + instantiate (Runtime::time_instantiation)",
            plan.instantiations
        ),
    );
    register(&relay, &json!({"id": "alice"}))?;
    let mut calls = Vec::with_capacity(plan.instantiations);
    for _ in 0..plan.instantiations {
        let started = Instant::now();
        call(&relay, "get-agent", &json!({"agentId": "alice"}))?;
        calls.push(started.elapsed().as_secs_f64() * 1e6);
    }
    figures.put(
        "get_agent_call_us",
        median(calls),
        "median whole in-process call_json(get-agent): read txn + instance + one query",
    );
    Ok(())
}

// ---- the recording capability: the floor replays exactly what the component ran ----

type Statement = (String, Vec<Value>);

struct Recorder {
    inner: Sqlite,
    log: Arc<Mutex<Vec<Vec<Statement>>>>,
}

struct RecordingSession {
    inner: Box<dyn Session>,
    statements: Vec<Statement>,
    log: Arc<Mutex<Vec<Vec<Statement>>>>,
}

impl Backend for Recorder {
    fn begin(&self, access: Access) -> Result<Box<dyn Session>, StoreError> {
        Ok(Box::new(RecordingSession {
            inner: self.inner.begin(access)?,
            statements: Vec::new(),
            log: Arc::clone(&self.log),
        }))
    }
}

impl Session for RecordingSession {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<Executed, StoreError> {
        self.statements.push((sql.to_owned(), params.to_vec()));
        self.inner.execute(sql, params)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Rows, StoreError> {
        self.statements.push((sql.to_owned(), params.to_vec()));
        self.inner.query(sql, params)
    }

    fn get_setting(&mut self, key: &str) -> Result<Option<String>, StoreError> {
        self.statements.push((
            "SELECT value FROM relay_settings WHERE key = ?1".to_owned(),
            vec![Value::Text(key.to_owned())],
        ));
        self.inner.get_setting(key)
    }

    fn set_setting(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.statements.push((
            "INSERT INTO relay_settings (key, value) VALUES (?1, ?2) \
             ON CONFLICT(key) DO UPDATE SET value = excluded.value"
                .to_owned(),
            vec![Value::Text(key.to_owned()), Value::Text(value.to_owned())],
        ));
        self.inner.set_setting(key, value)
    }

    fn list_settings(&mut self, prefix: &str) -> Result<Vec<Setting>, StoreError> {
        self.statements.push((
            "SELECT key, value FROM relay_settings WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key"
                .to_owned(),
            vec![Value::Text(prefix.to_owned())],
        ));
        self.inner.list_settings(prefix)
    }

    fn finish(self: Box<Self>, commit: bool) -> Result<(), StoreError> {
        let Self {
            inner,
            statements,
            log,
        } = *self;
        inner.finish(commit)?;
        if commit && let Ok(mut log) = log.lock() {
            log.push(statements);
        }
        Ok(())
    }
}

fn to_sql(value: &Value) -> rusqlite::types::Value {
    match value {
        Value::Null => rusqlite::types::Value::Null,
        Value::Integer(i) => rusqlite::types::Value::Integer(*i),
        Value::Real(r) => rusqlite::types::Value::Real(*r),
        Value::Text(t) => rusqlite::types::Value::Text(t.clone()),
        Value::Blob(b) => rusqlite::types::Value::Blob(b.clone()),
    }
}

fn send_input(to: &str) -> Json {
    json!({"input": {"from": "a", "to": to, "body": "hello from the benchmark"}})
}

fn sends(plan: &Plan, dir: &Path, figures: &mut Figures) -> anyhow::Result<()> {
    // One prepared database (migrated, agents a and b), copied for each run.
    let template = dir.join("send-template.db");
    {
        let relay = open(&template)?;
        register(&relay, &json!({"id": "a"}))?;
        register(&relay, &json!({"id": "b"}))?;
    }
    let copy = |name: &str| -> anyhow::Result<PathBuf> {
        let path = dir.join(name);
        std::fs::copy(&template, &path)?;
        let wal = PathBuf::from(format!("{}-wal", template.display()));
        if wal.exists() {
            std::fs::copy(&wal, format!("{}-wal", path.display()))?;
        }
        Ok(path)
    };

    // Three databases from the same template, advanced in step: the component's, the recorder's
    // (the same sends once more, through a capability that logs every statement) and the floor's
    // (the logged statements replayed natively, so its rows and ids follow the recorder's). The
    // timed parts alternate in rounds, so a drift of the machine (the fsync's latency moves by
    // tens of percent over minutes here) weighs on the component and the floor alike.
    let relay = open(&copy("send-component.db")?)?;
    let input = send_input("b");
    let log = Arc::new(Mutex::new(Vec::new()));
    let recorder = Runtime::new(
        Arc::new(Recorder {
            inner: Sqlite::open(
                &copy("send-recorded.db")?,
                SqliteOptions {
                    synchronous: synchronous(),
                    ..SqliteOptions::default()
                },
            )?,
            log: Arc::clone(&log),
        }),
        Clock::default(),
        Limits::default(),
    )?;
    let export = recorder
        .export("send-message")
        .context("no send-message export")?;
    let Json::Object(named) = &input else {
        anyhow::bail!("the input is an object")
    };
    let inputs = Inputs {
        caller: Some(Caller::Operator.to_val()),
        named: Some(named),
        ..Inputs::default()
    };
    let values = bridge::arguments(export, &inputs).map_err(|e| anyhow!("{}", e.0))?;
    let floor_db = copy("send-floor.db")?;
    let conn = rusqlite::Connection::open(&floor_db)?;
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA synchronous = {};",
        synchronous_name()
    ))?;
    let backend = Sqlite::open(
        &copy("send-backend.db")?,
        SqliteOptions {
            synchronous: synchronous(),
            ..SqliteOptions::default()
        },
    )?;
    let before: i64 = conn.query_row("SELECT count(*) FROM messages", [], |r| r.get(0))?;

    const ROUNDS: u32 = 10;
    let (mut count, mut statements) = (0usize, 0usize);
    let mut component_time = Duration::ZERO;
    let mut floor_time = Duration::ZERO;
    let mut backend_time = Duration::ZERO;
    let mut round_ratios = Vec::new();
    for _ in 0..ROUNDS {
        // The component, as an embedding host calls it.
        let started = Instant::now();
        let (n, _) = rate(plan.in_process / ROUNDS, |_| {
            call(&relay, "send-message", &input).map(|_| ())
        })?;
        let component = started.elapsed();
        // Untimed: the same number of sends through the recording capability.
        for _ in 0..n {
            let value = recorder.call(export, &values).map_err(|e| anyhow!("{e}"))?;
            bridge::outcome(&value).map_err(|e| anyhow!("{}", e.message))?;
        }
        let recorded: Vec<Vec<Statement>> =
            std::mem::take(&mut *log.lock().map_err(|_| anyhow!("poisoned"))?);
        anyhow::ensure!(
            recorded.len() == n,
            "recorded {} sends of {n}",
            recorded.len()
        );
        statements += recorded.iter().map(Vec::len).sum::<usize>();
        // The floor: those statements replayed natively, one BEGIN IMMEDIATE..COMMIT per send.
        let started = Instant::now();
        for statements in &recorded {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            for (sql, params) in statements {
                let mut stmt = conn.prepare_cached(sql)?;
                let params = params_from_iter(params.iter().map(to_sql));
                if stmt.column_count() > 0 {
                    let columns = stmt.column_count();
                    let mut rows = stmt.query(params)?;
                    while let Some(row) = rows.next()? {
                        for i in 0..columns {
                            let _ = row.get_ref(i)?;
                        }
                    }
                } else {
                    stmt.execute(params)?;
                }
            }
            conn.execute_batch("COMMIT")?;
        }
        let floor = started.elapsed();
        // The same statements once more through the host's own SQLite backend (sessions, group
        // commit, authorizer), without the component: what the host adds on its own.
        let started = Instant::now();
        for statements in &recorded {
            let mut session = backend.begin(Access::Write).map_err(|e| anyhow!("{e:?}"))?;
            for (sql, params) in statements {
                // `query` steps any statement, returning rows or not.
                session.query(sql, params).map_err(|e| anyhow!("{e:?}"))?;
            }
            session.finish(true).map_err(|e| anyhow!("{e:?}"))?;
        }
        backend_time += started.elapsed();
        round_ratios.push(component.as_secs_f64() / floor.as_secs_f64().max(1e-9));
        count += n;
        component_time += component;
        floor_time += floor;
    }
    let after: i64 = conn.query_row("SELECT count(*) FROM messages", [], |r| r.get(0))?;
    anyhow::ensure!(
        usize::try_from(after - before)? == count,
        "the replay stored {} messages for {count} sends",
        after - before
    );
    let per_send = statements as f64 / count.max(1) as f64;
    let component_ops = count as f64 / component_time.as_secs_f64();
    let floor_ops = count as f64 / floor_time.as_secs_f64();
    figures.put(
        "send_component_ops",
        component_ops,
        format!(
            "in-process send-message/s via Relay::call_json, synchronous={} ({count} sends)",
            synchronous_name()
        ),
    );
    figures.put(
        "send_native_floor_ops",
        floor_ops,
        format!(
            "the recorded statements ({per_send:.1}/send) replayed on rusqlite, prepare_cached, synchronous={}",
            synchronous_name()
        ),
    );
    figures.put(
        "send_host_backend_ops",
        count as f64 / backend_time.as_secs_f64(),
        "the recorded statements replayed through the host's SQLite backend (no component)",
    );
    round_ratios.sort_by(f64::total_cmp);
    figures.put(
        "send_overhead_ratio",
        floor_ops / component_ops,
        format!(
            "floor ops/s / component ops/s, over {ROUNDS} alternating rounds (per round {:.2}-{:.2})",
            round_ratios.first().copied().unwrap_or(0.0),
            round_ratios.last().copied().unwrap_or(0.0)
        ),
    );

    // Register and fan-out, in process, on the component's database.
    let (n, register_ops) = rate(plan.in_process, |i| {
        register(&relay, &json!({"id": format!("r{i}")}))
    })?;
    figures.put(
        "register_ops",
        register_ops,
        format!("in-process register-agent/s, new ids ({n})"),
    );
    for i in 0..10 {
        register(&relay, &json!({"id": format!("t{i}"), "label": "team"}))?;
    }
    let fanout = send_input("label:team");
    let first = call(&relay, "send-message", &fanout)?;
    let recipients = first["recipients"].as_array().map_or(0, Vec::len);
    anyhow::ensure!(
        recipients == 10,
        "label:team reached {recipients} agents, not 10"
    );
    let (n, fanout_ops) = rate(plan.in_process, |_| {
        call(&relay, "send-message", &fanout).map(|_| ())
    })?;
    figures.put(
        "fanout_10_ops",
        fanout_ops,
        format!("in-process sends/s to label:team (10 recipients each, {n})"),
    );
    Ok(())
}

fn polls(plan: &Plan, dir: &Path, figures: &mut Figures) -> anyhow::Result<()> {
    let small = poll_ms(plan, &dir.join("poll-small.db"), plan.poll_small)?;
    figures.put(
        "poll_ms_1k",
        small,
        format!(
            "median 50-message poll-inbox, {} messages stored",
            plan.poll_small
        ),
    );
    let large = poll_ms(plan, &dir.join("poll-large.db"), plan.poll_large)?;
    figures.put(
        "poll_ms_1m",
        large,
        format!(
            "median 50-message poll-inbox, {} messages stored{}",
            plan.poll_large,
            if plan.poll_large < 1_000_000 {
                " (NOT 1M: reduced for this mode)"
            } else {
                ""
            }
        ),
    );
    figures.put(
        "poll_large_messages",
        plan.poll_large as f64,
        "messages stored for poll_ms_1m",
    );
    figures.put("poll_scale_ratio", large / small, "poll_ms_1m / poll_ms_1k");
    Ok(())
}

/// A database with `total` messages, 50 of them to `p`, the rest copies of one real send to
/// `other` inserted natively; the median time of a 50-message poll of `p`'s inbox.
fn poll_ms(plan: &Plan, path: &Path, total: usize) -> anyhow::Result<f64> {
    let relay = open(path)?;
    register(&relay, &json!({"id": "p"}))?;
    register(&relay, &json!({"id": "other"}))?;
    let sent = call(&relay, "send-message", &send_input_from("p", "other"))?;
    let template = sent["message"]["id"].as_i64().context("a message id")?;
    {
        let conn = rusqlite::Connection::open(path)?;
        let columns: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info('messages') WHERE name <> 'id'")?
            .query_map([], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        let columns = columns.join(", ");
        let copies = total.saturating_sub(51);
        let sql = format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1) \
             INSERT INTO messages ({columns}) SELECT {columns} FROM n, messages WHERE messages.id = ?2"
        );
        let mut left = copies;
        while left > 0 {
            let batch = left.min(100_000);
            conn.execute_batch("BEGIN IMMEDIATE")?;
            conn.execute(&sql, rusqlite::params![i64::try_from(batch)?, template])?;
            conn.execute_batch("COMMIT")?;
            left -= batch;
        }
    }
    for _ in 0..50 {
        call(&relay, "send-message", &send_input_from("other", "p"))?;
    }
    let query = json!({"agentId": "p", "query": {"limit": 50}});
    let mut samples = Vec::with_capacity(plan.polls);
    for _ in 0..plan.polls {
        let started = Instant::now();
        let inbox = call(&relay, "poll-inbox", &query)?;
        samples.push(started.elapsed().as_secs_f64() * 1e3);
        let got = inbox.as_array().map_or(0, Vec::len);
        anyhow::ensure!(got == 50, "the poll returned {got} messages, not 50");
    }
    Ok(median(samples))
}

/// Search beside an inbox poll, on one database of `search_messages` messages with varied
/// bodies (inserted natively; the search index's triggers index them as they go in): the
/// median of `searches` searches for a word in 1 message of 1,000, for a word in every message
/// (one page of the best 20), and of as many 50-message polls.
fn search(plan: &Plan, path: &Path, figures: &mut Figures) -> anyhow::Result<()> {
    let relay = open(path)?;
    register(&relay, &json!({"id": "p"}))?;
    register(&relay, &json!({"id": "other"}))?;
    {
        let conn = rusqlite::Connection::open(path)?;
        let mut left = plan.search_messages.saturating_sub(50);
        let mut next = 0usize;
        while left > 0 {
            let batch = left.min(50_000);
            conn.execute_batch("BEGIN IMMEDIATE")?;
            conn.execute(
                "WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2) \
                 INSERT INTO messages (from_agent, to_target, kind, subject, body, created_at) \
                 SELECT 'other', 'user', 'chat', 'status report ' || (i % 97), \
                   'the build of topic' || (i % 1000) || ' went ' || \
                   CASE i % 3 WHEN 0 THEN 'green after the cache fix' \
                     WHEN 1 THEN 'red on the flaky network test' \
                     ELSE 'slowly but the deploy went out' END, i FROM n",
                rusqlite::params![i64::try_from(next)?, i64::try_from(next + batch - 1)?],
            )?;
            conn.execute_batch("COMMIT")?;
            next += batch;
            left -= batch;
        }
    }
    for _ in 0..50 {
        call(&relay, "send-message", &send_input_from("other", "p"))?;
    }
    let timed = |export: &str, args: &Json, expect: usize| -> anyhow::Result<f64> {
        let mut samples = Vec::with_capacity(plan.searches);
        for _ in 0..plan.searches {
            let started = Instant::now();
            let answer = call(&relay, export, args)?;
            samples.push(started.elapsed().as_secs_f64() * 1e3);
            let got = answer.as_array().map_or(0, Vec::len);
            anyhow::ensure!(got == expect, "{export} answered {got} items, not {expect}");
        }
        Ok(median(samples))
    };
    let stored = plan.search_messages;
    let rare = timed(
        "search-messages",
        &json!({"query": {"q": "topic123", "limit": 20}}),
        (plan.search_messages / 1_000).clamp(1, 20),
    )?;
    figures.put(
        "search_ms",
        rare,
        format!(
            "median of {} searches for a word in 1 message of 1,000 (page of 20), {stored} messages",
            plan.searches
        ),
    );
    let common = timed(
        "search-messages",
        &json!({"query": {"q": "build", "limit": 20}}),
        20,
    )?;
    figures.put(
        "search_common_ms",
        common,
        format!(
            "the same for a word in every message of {stored} (the best 20 of the newest 5,000)"
        ),
    );
    let poll = timed(
        "poll-inbox",
        &json!({"agentId": "p", "query": {"limit": 50}}),
        50,
    )?;
    figures.put(
        "search_poll_ms",
        poll,
        "beside them, the median 50-message poll-inbox on that database",
    );
    Ok(())
}

fn send_input_from(from: &str, to: &str) -> Json {
    json!({"input": {"from": from, "to": to, "body": "hello from the benchmark"}})
}

// ---- over HTTP, against the real server ----

struct Server {
    child: Child,
    base: String,
    /// Calls the server ran again after a lost serialization race (PostgreSQL), from its log.
    reruns: Arc<AtomicUsize>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(binary: &Path, db: &Path) -> anyhow::Result<Server> {
    start_server_with(binary, db, &[])
}

/// [`start_server`] with more arguments for `serve`.
fn start_server_with(binary: &Path, db: &Path, extra: &[&str]) -> anyhow::Result<Server> {
    let mut child = Command::new(binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(db)
        .args(extra)
        .args(
            WRITE_LANE
                .get()
                .filter(|lane| **lane)
                .map(|_| "--db-write-lane"),
        )
        .env("RELAY_OPERATOR_TOKEN", OPERATOR)
        // Debug for the runtime: each re-run after a lost race is one line, counted below.
        .env("RELAY_LOG", "info,agent_relay_core::runtime=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let stderr = child.stderr.take().context("the server's stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let base = loop {
        let Some(Ok(line)) = lines.next() else {
            let status = child.wait()?;
            anyhow::bail!("agent-relay serve exited ({status}) before listening");
        };
        if let Some(addr) = line.split("listen=").nth(1) {
            break format!(
                "http://{}",
                addr.split_whitespace().next().unwrap_or_default()
            );
        }
    };
    let reruns = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&reruns);
    std::thread::spawn(move || {
        for line in lines.by_ref().map_while(Result::ok) {
            if line.contains("running it again") {
                counted.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    Ok(Server {
        child,
        base,
        reruns,
    })
}

/// The hidden argument that makes this binary the bare server of `http_bare_ops_16`.
const BARE_SERVER: &str = "--bare-server";

/// A server set up as `agent-relay serve` is (a multi-threaded tokio runtime, the relay's own
/// connection handling: limits, timeouts, accounting) whose one route `POST /v1/messages`
/// answers a fixed 201 JSON body without the component or a database: the HTTP front-end's
/// own limit on this machine. Prints `listen=ADDR` on standard error like the relay.
fn bare_server() -> anyhow::Result<()> {
    use agent_relay::connections::{self, ConnectionLimits};
    let router = axum::Router::new().route(
        "/v1/messages",
        axum::routing::post(|_body: axum::body::Bytes| async {
            (
                axum::http::StatusCode::CREATED,
                axum::Json(json!({"id": 1, "created": true, "deliveredTo": ["sink"]})),
            )
        }),
    );
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    tokio.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        eprintln!("bare server listen={}", listener.local_addr()?);
        connections::serve(
            listener,
            router,
            ConnectionLimits::default(),
            std::future::pending(),
        )
        .await?;
        Ok(())
    })
}

/// Starts [`bare_server`] (this binary again); its base URL.
fn start_bare_server() -> anyhow::Result<Server> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg(BARE_SERVER)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the bare server")?;
    let stderr = child.stderr.take().context("the bare server's stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let base = loop {
        let Some(Ok(line)) = lines.next() else {
            let status = child.wait()?;
            anyhow::bail!("the bare server exited ({status}) before listening");
        };
        if let Some(addr) = line.split("listen=").nth(1) {
            break format!("http://{}", addr.trim());
        }
    };
    Ok(Server {
        child,
        base,
        reruns: Arc::new(AtomicUsize::new(0)),
    })
}

/// A lean HTTP/1.1 keep-alive client over one TCP connection, so the load generator (which shares
/// the machine's cores with the server) spends a write and a read per request, not a runtime.
struct LoadClient {
    stream: std::net::TcpStream,
    host: String,
    buffer: Vec<u8>,
}

impl LoadClient {
    fn connect(base: &str) -> anyhow::Result<Self> {
        let host = base.trim_start_matches("http://").to_owned();
        let stream = std::net::TcpStream::connect(&host)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Self {
            stream,
            host,
            buffer: Vec::with_capacity(4096),
        })
    }

    /// POSTs `body` to `path` as the operator; the status and the response body.
    fn post(&mut self, path: &str, body: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
        self.request("POST", path, body)
    }

    /// GETs `path` as the operator; the status and the response body.
    fn get(&mut self, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        self.request("GET", path, &[])
    }

    fn request(&mut self, method: &str, path: &str, body: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
        use std::io::{Read as _, Write as _};
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {OPERATOR}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        let mut request = Vec::with_capacity(head.len() + body.len());
        request.extend_from_slice(head.as_bytes());
        request.extend_from_slice(body);
        self.stream.write_all(&request)?;
        self.buffer.clear();
        let mut chunk = [0_u8; 4096];
        let header_end = loop {
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                break end + 4;
            }
            let n = self.stream.read(&mut chunk)?;
            anyhow::ensure!(n > 0, "the server closed the connection");
            self.buffer.extend_from_slice(&chunk[..n]);
        };
        let head = std::str::from_utf8(&self.buffer[..header_end])?;
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("a status line")?;
        let length: usize = if status == 204 {
            0
        } else {
            head.lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .context("a Content-Length header (chunked answers are not expected)")?
        };
        while self.buffer.len() < header_end + length {
            let n = self.stream.read(&mut chunk)?;
            anyhow::ensure!(n > 0, "the server closed the connection mid-body");
            self.buffer.extend_from_slice(&chunk[..n]);
        }
        Ok((
            status,
            self.buffer[header_end..header_end + length].to_vec(),
        ))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn client() -> anyhow::Result<reqwest::blocking::Client> {
    Ok(reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?)
}

fn post(client: &reqwest::blocking::Client, url: &str, body: &Json) -> anyhow::Result<(u16, Json)> {
    let response = client.post(url).bearer_auth(OPERATOR).json(body).send()?;
    let status = response.status().as_u16();
    let body = response.json().unwrap_or(Json::Null);
    Ok((status, body))
}

/// Sends for `duration` with `clients` concurrent clients: (ops/s, p50 ms, p99 ms, failures).
fn http_sends(
    base: &str,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<(f64, f64, f64, usize)> {
    let started = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|i| {
            let base = pick(base, i);
            std::thread::spawn(move || -> anyhow::Result<(Vec<f64>, usize)> {
                let mut client = LoadClient::connect(&base)?;
                let body = serde_json::to_vec(
                    &json!({"from": format!("s{i}"), "to": "sink", "body": "hello over http"}),
                )?;
                let mut latencies = Vec::new();
                let mut failures = 0;
                while started.elapsed() < duration {
                    let sent = Instant::now();
                    let (status, _) = client.post("/v1/messages", &body)?;
                    if status == 201 {
                        latencies.push(sent.elapsed().as_secs_f64() * 1e3);
                    } else {
                        failures += 1;
                    }
                }
                Ok((latencies, failures))
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failures = 0;
    for handle in handles {
        let (l, f) = handle.join().map_err(|_| anyhow!("a client panicked"))??;
        latencies.extend(l);
        failures += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    Ok((
        latencies.len() as f64 / elapsed,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        failures,
    ))
}

/// CPU time (user + system) the process has used so far, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // Fields after the command name (which is in parentheses and may hold spaces).
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}

fn vm_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn http(plan: &Plan, dir: &Path, binary: &Path, figures: &mut Figures) -> anyhow::Result<()> {
    let scratch = match POSTGRES.get() {
        Some((url, _)) => Some(ScratchDatabase::create(url)?),
        None => None,
    };
    let servers: Vec<Server> = match (&scratch, POSTGRES.get()) {
        (Some(scratch), Some((_, hosts))) => {
            println!("  (PostgreSQL: {hosts} relay host(s) on {})", scratch.shown);
            let mut servers = Vec::new();
            for _ in 0..*hosts {
                servers.push(start_server(binary, Path::new(&scratch.url))?);
            }
            servers
        }
        _ => vec![start_server(binary, &dir.join("http.db"))?],
    };
    let base = servers
        .iter()
        .map(|s| s.base.clone())
        .collect::<Vec<_>>()
        .join(",");
    let pids: Vec<u32> = servers.iter().map(|s| s.child.id()).collect();
    let pid = pids[0];
    let server_cpu_seconds = || pids.iter().map(|&pid| cpu_seconds(pid)).sum::<f64>();
    let reruns = || {
        servers
            .iter()
            .map(|s| s.reruns.load(Ordering::Relaxed))
            .sum::<usize>()
    };
    let setup = client()?;
    let agents = format!("{}/v1/agents", pick(&base, 0));
    for id in std::iter::once("sink".to_owned()).chain((0..64).map(|i| format!("s{i}"))) {
        let (status, body) = post(&setup, &agents, &json!({"id": id}))?;
        anyhow::ensure!(
            (200..300).contains(&status),
            "registering {id}: {status} {body}"
        );
    }
    for i in 0..16 {
        let (status, body) = post(
            &setup,
            &agents,
            &json!({"id": format!("w{i}"), "label": "workers"}),
        )?;
        anyhow::ensure!(
            (200..300).contains(&status),
            "registering w{i}: {status} {body}"
        );
    }
    // Warm the server (first instances, connections).
    http_sends(&base, 4, Duration::from_millis(200))?;
    println!("  (idle server VmRSS {:.1} MB)", vm_rss_mb(pid));

    for clients in [1, 16, 64] {
        let peak = Arc::new(Mutex::new(0.0_f64));
        let done = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (peak, done) = (Arc::clone(&peak), Arc::clone(&done));
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    let rss = vm_rss_mb(pid);
                    if let Ok(mut peak) = peak.lock() {
                        *peak = peak.max(rss);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        let cpu_before = server_cpu_seconds();
        let client_before = cpu_seconds(std::process::id());
        let (ops, p50, p99, failures) = http_sends(&base, clients, plan.http)?;
        let server_cpu = server_cpu_seconds() - cpu_before;
        let client_cpu = cpu_seconds(std::process::id()) - client_before;
        done.store(true, Ordering::Relaxed);
        let _ = sampler.join();
        let failed = if failures > 0 {
            format!(", {failures} non-2xx answers not counted")
        } else {
            String::new()
        };
        figures.put(
            &format!("http_send_ops_{clients}"),
            ops,
            format!(
                "POST /v1/messages/s, {clients} keep-alive clients, {:.1} s{failed}",
                plan.http.as_secs_f64()
            ),
        );
        figures.put(
            &format!("http_server_cpu_us_{clients}"),
            server_cpu * 1e6 / (ops * plan.http.as_secs_f64()).max(1.0),
            "server CPU time (user+system, /proc) per acknowledged send",
        );
        figures.put(
            &format!("http_client_cpu_us_{clients}"),
            client_cpu * 1e6 / (ops * plan.http.as_secs_f64()).max(1.0),
            "the load generator's own CPU time per acknowledged send (it shares the cores)",
        );
        if clients == 16 {
            figures.put(
                "http_send_p50_ms_16",
                p50,
                "median send latency, 16 clients",
            );
            figures.put(
                "http_send_p99_ms_16",
                p99,
                "99th percentile send latency, 16 clients",
            );
        }
        if clients == 64 {
            figures.put(
                "http_send_p99_ms_64",
                p99,
                "99th percentile send latency, 64 clients",
            );
            let peak = *peak.lock().map_err(|_| anyhow!("poisoned"))?;
            figures.put(
                "rss_mb_64",
                peak,
                "server peak VmRSS (sampled every 50 ms) while 64 clients send",
            );
        }
    }

    bare(plan, figures)?;
    cli(plan, binary, &pick(&base, 0), &setup, figures)?;
    claims(plan, &base, figures)?;
    claim_next_jobs(plan, &base, figures, &reruns, None)?;
    claim_next_jobs(plan, &base, figures, &reruns, Some(10))?;
    drop(servers);
    drop(scratch);
    if POSTGRES.get().is_none() {
        wake_idle(plan, dir, binary, figures)?;
    }
    Ok(())
}

/// A send's wake-up of its own waiter while many other waiters are held (docs/benchmarks.md):
/// on a fresh server, 16 clients send as in `http_send_ops_16` with no waiter held; then
/// `plan.idle` held long-polls and as many open event streams wait on other agents, the same
/// load runs again (`http_server_cpu_us_16_idle_1000`, and the ratio of the two), and one
/// agent's long-poll is woken by a send to it, round after round: from the send's start to the
/// waiter's answer (`wake_p50_ms_idle_1000`, `wake_p99_ms_idle_1000`). SQLite only.
fn wake_idle(plan: &Plan, dir: &Path, binary: &Path, figures: &mut Figures) -> anyhow::Result<()> {
    use std::io::Write as _;
    let idle = plan.idle;
    let room = (4 * idle + 256).to_string();
    let server = start_server_with(
        binary,
        &dir.join("wake.db"),
        &[
            "--max-connections-per-peer",
            &room,
            "--max-connections",
            &room,
        ],
    )?;
    let base = server.base.clone();
    let pid = server.child.id();
    let setup = client()?;
    let agents = format!("{base}/v1/agents");
    let ids = ["sink".to_owned(), "wk".to_owned()]
        .into_iter()
        .chain((0..16).map(|i| format!("s{i}")))
        .chain((0..idle).map(|i| format!("i{i}")));
    for id in ids {
        let (status, body) = post(&setup, &agents, &json!({"id": id}))?;
        anyhow::ensure!(
            (200..300).contains(&status),
            "registering {id}: {status} {body}"
        );
    }
    http_sends(&base, 4, Duration::from_millis(200))?;
    let cpu_per_send = || -> anyhow::Result<f64> {
        let before = cpu_seconds(pid);
        let (ops, _, _, _) = http_sends(&base, 16, plan.http)?;
        Ok((cpu_seconds(pid) - before) * 1e6 / (ops * plan.http.as_secs_f64()).max(1.0))
    };
    let quiet = cpu_per_send()?;

    // The idle waiters: requests written and never read (nothing is sent to their agents).
    let host = base.trim_start_matches("http://").to_owned();
    let mut held = Vec::with_capacity(2 * idle);
    for i in 0..idle {
        for path in [
            format!("/v1/agents/i{i}/inbox?wait=300"),
            format!("/v1/agents/i{i}/stream"),
        ] {
            let mut stream = std::net::TcpStream::connect(&host)?;
            write!(
                stream,
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {OPERATOR}\r\n\r\n"
            )?;
            held.push(stream);
        }
    }
    let waiters = || -> f64 {
        reqwest::blocking::Client::new()
            .get(format!("{base}/metrics"))
            .bearer_auth(OPERATOR)
            .send()
            .and_then(reqwest::blocking::Response::text)
            .ok()
            .and_then(|page| {
                page.lines()
                    .find_map(|line| line.strip_prefix("relay_waiters ")?.trim().parse().ok())
            })
            .unwrap_or(0.0)
    };
    let until = Instant::now() + Duration::from_secs(60);
    while waiters() < (2 * idle) as f64 {
        anyhow::ensure!(
            Instant::now() < until,
            "the {} idle waiters were not all held after 60 s ({} are)",
            2 * idle,
            waiters()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let busy = cpu_per_send()?;

    let mut sender = LoadClient::connect(&base)?;
    let body = serde_json::to_vec(&json!({"from": "sink", "to": "wk", "body": "wake up"}))?;
    let mut since = 0;
    let mut samples = Vec::new();
    for _ in 0..plan.wakes {
        let (woken, woke) = std::sync::mpsc::channel();
        let (waiter_base, path) = (
            base.clone(),
            format!("/v1/agents/wk/inbox?wait=30&since={since}"),
        );
        let waiter = std::thread::spawn(move || -> anyhow::Result<u16> {
            let mut client = LoadClient::connect(&waiter_base)?;
            let (status, _) = client.get(&path)?;
            let _ = woken.send(Instant::now());
            Ok(status)
        });
        // Let it reach its wait (were it slower, it would find the message at once).
        std::thread::sleep(Duration::from_millis(30));
        // From the send's start: a woken long-poll may answer before the send's own answer is
        // read (the waiter's re-run is a read on a worker, the send's answer waits for its
        // batch), so "from the send's answer" can be below zero.
        let sending = Instant::now();
        let (status, reply) = sender.post("/v1/messages", &body)?;
        anyhow::ensure!(status == 201, "a send answered {status}");
        since = serde_json::from_slice::<Json>(&reply)?["message"]["id"]
            .as_i64()
            .context("a message id")?;
        let at = woke
            .recv_timeout(Duration::from_secs(30))
            .context("the waiter never woke")?;
        let status = waiter
            .join()
            .map_err(|_| anyhow!("the waiter panicked"))??;
        anyhow::ensure!(status == 200, "the waiter's long-poll answered {status}");
        samples.push(at.saturating_duration_since(sending).as_secs_f64() * 1e3);
    }
    drop(held);
    samples.sort_by(f64::total_cmp);
    let shown = format!("{idle} held long-polls and {idle} open streams on other agents");
    figures.put(
        "wake_p50_ms_idle_1000",
        percentile(&samples, 0.5),
        format!(
            "median ms from a send's start to its own waiter's answer, {} rounds, {shown}",
            samples.len()
        ),
    );
    figures.put(
        "wake_p99_ms_idle_1000",
        percentile(&samples, 0.99),
        format!("99th percentile of the same, {shown}"),
    );
    figures.put(
        "http_server_cpu_us_16_idle_1000",
        busy,
        format!("server CPU per send, 16 clients, with {shown}"),
    );
    figures.put(
        "idle_1000_cpu_ratio",
        busy / quiet,
        format!(
            "http_server_cpu_us_16_idle_1000 / the same server's {quiet:.1} us with no waiter held"
        ),
    );
    Ok(())
}

/// `http_bare_ops_16`: the same 16 clients against the bare server, run right after the relay's
/// own 16-client phase; and `http_send_vs_bare_16`, the relay's share of that limit.
fn bare(plan: &Plan, figures: &mut Figures) -> anyhow::Result<()> {
    let server = start_bare_server()?;
    http_sends(&server.base, 4, Duration::from_millis(100))?;
    let cpu_before = cpu_seconds(server.child.id());
    let (ops, _, _, failures) = http_sends(&server.base, 16, plan.http)?;
    let cpu = cpu_seconds(server.child.id()) - cpu_before;
    anyhow::ensure!(
        failures == 0,
        "the bare server answered {failures} non-201s"
    );
    figures.put(
        "http_bare_ops_16",
        ops,
        "the same load against a bare axum route (fixed 201, no component, no database)",
    );
    figures.put(
        "http_bare_cpu_us_16",
        // At least one tick of /proc's 10 ms clock, so a short run still shows a figure.
        cpu.max(0.01) * 1e6 / (ops * plan.http.as_secs_f64()).max(1.0),
        "the bare server's CPU time per answer (user+system, /proc)",
    );
    let send = figures
        .value("http_send_ops_16")
        .context("http_send_ops_16 is measured before the bare route")?;
    figures.put(
        "http_send_vs_bare_16",
        send / ops.max(1.0),
        "http_send_ops_16 / http_bare_ops_16",
    );
    Ok(())
}

/// `cli_inbox_ms`, `hook_prompt_ms`, `hook_stop_ms`: median whole-process time of `agent-relay
/// inbox`, `agent-relay hook claude-prompt` and `hook claude-stop` (stdin `{}`) as an agent against the running relay at `base`
/// (50 runs each; 5 in smoke mode), and of `agent-relay --version` for comparison.
fn cli(
    plan: &Plan,
    binary: &Path,
    base: &str,
    setup: &reqwest::blocking::Client,
    figures: &mut Figures,
) -> anyhow::Result<()> {
    let (status, issued) = post(setup, &format!("{base}/v1/agents/w0/token"), &json!({}))?;
    anyhow::ensure!(status == 200, "issuing w0's token: {status} {issued}");
    let token = issued["token"]
        .as_str()
        .context("issue-token answered no token")?
        .to_owned();
    let runs = if plan.name == "smoke" { 5 } else { 50 };
    let time = |args: &[&str], stdin: &[u8]| -> anyhow::Result<f64> {
        use std::io::Write as _;
        let mut samples = Vec::with_capacity(runs);
        for _ in 0..runs {
            let started = Instant::now();
            let mut child = Command::new(binary)
                .args(args)
                .env("RELAY_URL", base)
                .env("RELAY_TOKEN", &token)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            if let Some(mut input) = child.stdin.take() {
                input.write_all(stdin)?;
            }
            let status = child.wait()?;
            samples.push(started.elapsed().as_secs_f64() * 1e3);
            anyhow::ensure!(status.success(), "agent-relay {args:?} failed: {status}");
        }
        Ok(median(samples))
    };
    let version = time(&["--version"], b"")?;
    let inbox = time(&["inbox"], b"")?;
    let hook = time(&["hook", "claude-prompt"], b"{}")?;
    let stop = time(&["hook", "claude-stop"], b"{}")?;
    figures.put(
        "cli_version_ms",
        version,
        format!("median whole-process `agent-relay --version`, {runs} runs"),
    );
    figures.put(
        "cli_inbox_ms",
        inbox,
        format!("median whole-process `agent-relay inbox` against the running relay, {runs} runs"),
    );
    figures.put(
        "hook_prompt_ms",
        hook,
        format!("median whole-process `agent-relay hook claude-prompt`, {runs} runs"),
    );
    figures.put(
        "hook_stop_ms",
        stop,
        format!("median whole-process `agent-relay hook claude-stop`, {runs} runs"),
    );
    Ok(())
}

/// A database of its own on the PostgreSQL server of `--db`, dropped when done.
struct ScratchDatabase {
    admin: String,
    name: String,
    url: String,
    shown: String,
}

impl ScratchDatabase {
    fn create(admin: &str) -> anyhow::Result<Self> {
        let name = format!("relay_bench_{}", std::process::id());
        let mut client = postgres::Client::connect(admin, postgres::NoTls).with_context(|| {
            format!(
                "connecting to {}",
                agent_relay_core::postgres::redact(admin)
            )
        })?;
        // Two commands: neither may run inside a transaction block, which one batch would be.
        client.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))?;
        client.batch_execute(&format!("CREATE DATABASE {name}"))?;
        let (head, query) = admin.split_once('?').map_or((admin, ""), |(h, q)| (h, q));
        let server = head.rsplit_once('/').map_or(head, |(server, _)| server);
        let url = if query.is_empty() {
            format!("{server}/{name}")
        } else {
            format!("{server}/{name}?{query}")
        };
        let shown = agent_relay_core::postgres::redact(&url);
        Ok(Self {
            admin: admin.to_owned(),
            name,
            url,
            shown,
        })
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = client.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// Queues `backlog` claimable jobs to label:workers.
fn queue_jobs(base: &str, backlog: usize) -> anyhow::Result<Vec<i64>> {
    let setup = client()?;
    let url = format!("{}/v1/messages", pick(base, 0));
    let mut ids = Vec::with_capacity(backlog);
    for i in 0..backlog {
        let body = json!({"from": "sink", "to": "label:workers", "body": format!("job {i}"), "claimable": true});
        let (status, reply) = post(&setup, &url, &body)?;
        anyhow::ensure!(
            (200..300).contains(&status),
            "queueing a job: {status} {reply}"
        );
        ids.push(reply["message"]["id"].as_i64().context("a message id")?);
    }
    Ok(ids)
}

/// The same backlog as `claims`, taken with claim-next (or, with `batch`, that many at a time
/// with claim-next-batch) and finished with complete: each worker asks for the next jobs until
/// there are none. Counts jobs claimed and completed per second, and the answers that were
/// neither jobs nor "none left" (refusals).
#[allow(clippy::too_many_lines)] // one measured run, its workers and its figures
fn claim_next_jobs(
    plan: &Plan,
    base: &str,
    figures: &mut Figures,
    reruns: &dyn Fn() -> usize,
    batch: Option<u32>,
) -> anyhow::Result<()> {
    let backlog = queue_jobs(base, plan.backlog)?.len();
    let reruns_before = reruns();
    let completed = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let odd = Arc::new(Mutex::new(None::<String>));
    let deadline = plan.http * 4;
    let started = Instant::now();
    let handles: Vec<_> = (0..16)
        .map(|w| {
            let (completed, refused, odd) = (
                Arc::clone(&completed),
                Arc::clone(&refused),
                Arc::clone(&odd),
            );
            let base = pick(base, w);
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut client = LoadClient::connect(&base)?;
                let agent = format!("w{w}");
                let (route, next) = match batch {
                    None => ("claim-next", json!({"leaseMs": 600_000})),
                    Some(max) => ("claim-next-batch", json!({"leaseMs": 600_000, "max": max})),
                };
                let next = serde_json::to_vec(&next)?;
                let done = serde_json::to_vec(&json!({"agentId": agent}))?;
                let note = |status: u16, reply: &[u8]| {
                    refused.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut odd) = odd.lock() {
                        odd.get_or_insert_with(|| {
                            format!("{status} {}", String::from_utf8_lossy(reply))
                        });
                    }
                };
                while started.elapsed() < deadline {
                    let (status, reply) =
                        client.post(&format!("/v1/agents/{agent}/{route}"), &next)?;
                    if status == 204 {
                        break;
                    }
                    if status != 200 {
                        note(status, &reply);
                        continue;
                    }
                    let jobs = match serde_json::from_slice(&reply)? {
                        Json::Array(jobs) => jobs,
                        job => vec![job],
                    };
                    if jobs.is_empty() {
                        break;
                    }
                    for job in jobs {
                        let id = job["id"].as_i64().context("a job id")?;
                        let (status, reply) =
                            client.post(&format!("/v1/messages/{id}/complete"), &done)?;
                        if status == 200 {
                            completed.fetch_add(1, Ordering::Relaxed);
                        } else {
                            note(status, &reply);
                        }
                    }
                }
                Ok(())
            })
        })
        .collect();
    for handle in handles {
        handle.join().map_err(|_| anyhow!("a worker panicked"))??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(odd) = odd.lock().map_err(|_| anyhow!("poisoned"))?.take() {
        eprintln!("  claim-next or complete refused: {odd}");
    }
    let completed = completed.load(Ordering::Relaxed);
    let key = |name: &str| match batch {
        None => format!("claim_next_{name}_16"),
        Some(_) => format!("claim_next_batch_{name}_16"),
    };
    if POSTGRES.get().is_some() && batch.is_none() {
        // Each job is two write calls (claim-next, complete), plus one empty claim-next a worker.
        let calls = (2 * completed + 16) as f64;
        let reran = reruns() - reruns_before;
        figures.put(
            &key("rerun_rate"),
            reran as f64 / calls,
            format!("calls re-run after a lost serialization race per call ({reran} re-runs, {calls} calls)"),
        );
    }
    let how = match batch {
        None => "claim-next".to_owned(),
        Some(max) => format!("claim-next-batch, max {max}"),
    };
    figures.put(
        &key("ops"),
        completed as f64 / elapsed,
        format!(
            "jobs claimed ({how}) and completed/s, 16 workers over a backlog of {backlog} \
             ({completed} completed, {} refused)",
            refused.load(Ordering::Relaxed)
        ),
    );
    Ok(())
}

/// A claimable backlog to label:workers; 16 workers walk it in order, each claiming every
/// message not yet known as taken, so they collide on the same messages.
fn claims(plan: &Plan, base: &str, figures: &mut Figures) -> anyhow::Result<()> {
    let ids = Arc::new(queue_jobs(base, plan.backlog)?);
    let taken: Arc<Vec<AtomicBool>> =
        Arc::new((0..ids.len()).map(|_| AtomicBool::new(false)).collect());
    let claimed = Arc::new(AtomicUsize::new(0));
    let conflicts = Arc::new(AtomicUsize::new(0));
    let odd = Arc::new(Mutex::new(None::<String>));
    let deadline = plan.http * 4;
    let started = Instant::now();
    let handles: Vec<_> = (0..16)
        .map(|w| {
            let (ids, taken, claimed, conflicts, odd) = (
                Arc::clone(&ids),
                Arc::clone(&taken),
                Arc::clone(&claimed),
                Arc::clone(&conflicts),
                Arc::clone(&odd),
            );
            let base = pick(base, w);
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut client = LoadClient::connect(&base)?;
                let body =
                    serde_json::to_vec(&json!({"agentId": format!("w{w}"), "leaseMs": 600_000}))?;
                for (index, id) in ids.iter().enumerate() {
                    if started.elapsed() > deadline {
                        break;
                    }
                    if taken[index].load(Ordering::Relaxed) {
                        continue;
                    }
                    let (status, reply) =
                        client.post(&format!("/v1/messages/{id}/claim"), &body)?;
                    if (200..300).contains(&status) {
                        taken[index].store(true, Ordering::Relaxed);
                        claimed.fetch_add(1, Ordering::Relaxed);
                    } else {
                        taken[index].store(true, Ordering::Relaxed);
                        conflicts.fetch_add(1, Ordering::Relaxed);
                        if status != 409
                            && let Ok(mut odd) = odd.lock()
                        {
                            odd.get_or_insert_with(|| {
                                format!("{status} {}", String::from_utf8_lossy(&reply))
                            });
                        }
                    }
                }
                Ok(())
            })
        })
        .collect();
    for handle in handles {
        handle.join().map_err(|_| anyhow!("a worker panicked"))??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(odd) = odd.lock().map_err(|_| anyhow!("poisoned"))?.take() {
        eprintln!("  a claim failed with an unexpected answer: {odd}");
    }
    let claimed = claimed.load(Ordering::Relaxed);
    figures.put(
        "claim_ops_16",
        claimed as f64 / elapsed,
        format!(
            "successful claims/s, 16 workers over a backlog of {} ({claimed} claimed, {} refused)",
            ids.len(),
            conflicts.load(Ordering::Relaxed)
        ),
    );
    Ok(())
}
