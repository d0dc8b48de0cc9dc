//! Test harness: a real `agent-relay serve` process on a loopback port with its own database (a
//! SQLite file, or a fresh PostgreSQL database: `Backend`), and a small HTTP client. The relay's
//! clock is moved through the test-only clock route.

#![allow(dead_code, clippy::unwrap_used)]

pub mod metrics;
pub mod postgres;
pub mod sse;
pub mod upgrade;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use serde_json::{Value as Json, json};

pub const OPERATOR: &str = "test-operator-token-of-the-relay-suite";

/// `serve` arguments that run the test component (the guest built with its fault-injection
/// exports, which the shipped component lacks) with fault injection switched on.
pub const WITH_FAULTS: [&str; 4] = [
    "--component",
    agent_relay_test_programs::FAULTS_COMPONENT,
    "--setting",
    "fault-injection=on",
];

/// The built `agent-relay` binary.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agent-relay"))
}

/// The database a test server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `relay.db` in the server's temporary directory.
    Sqlite,
    /// A database of its own in the cluster `RELAY_TEST_POSTGRES` names (`postgres::Database`).
    Postgres,
}

/// Turns test functions taking a `Backend` into two tests each, one per backend, in the calling
/// module's `sqlite` and `postgres` submodules: `on_both_backends!(a_name, another)` gives
/// `MODULE::sqlite::a_name` and `MODULE::postgres::a_name`, so `-- messages::` runs a module on
/// both, `-- postgres::` every Postgres variant. A test function left out of the list is unused,
/// which the lints refuse.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name($crate::common::Backend::Sqlite)
                }
            )+
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    super::$name($crate::common::Backend::Postgres)
                }
            )+
        }
    };
}

/// A running relay server.
pub struct RelayServer {
    pub base: String,
    pub dir: tempfile::TempDir,
    /// The backend it runs on.
    pub backend: Backend,
    child: Child,
    client: reqwest::blocking::Client,
    /// The server's log lines after the one that said where it listens.
    logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Its Postgres database, dropped after the server is stopped (`Drop` runs before the fields
    /// are dropped).
    database: Option<postgres::Database>,
}

/// An HTTP answer: status and JSON body (`null` when the body is not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Json,
}

impl Reply {
    /// The error code of an error reply.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

/// The id of the message a reply carries (`{"message": {"id": ...}}`, as a send answers).
pub fn id_of(reply: &Reply) -> i64 {
    reply.body["message"]["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no message in {:?}", reply.body))
}

/// The ids of a JSON list of records (messages, tasks, pairs...), in order.
pub fn ids(list: &Json) -> Vec<i64> {
    item_ids(
        list.as_array()
            .unwrap_or_else(|| panic!("not a list: {list}")),
    )
}

/// The ids of these records, in order.
pub fn item_ids(items: &[Json]) -> Vec<i64> {
    items.iter().map(|m| m["id"].as_i64().unwrap()).collect()
}

/// The log of a starting `agent-relay serve`, read up to the line that says it is serving.
pub struct Serving {
    /// `http://ADDR`, from that line's `listen=ADDR`.
    pub base: String,
    /// The lines read, that one included.
    pub log: Vec<String>,
    /// The rest of the log. Keep reading it (or drop it and end the process): a server whose
    /// log pipe is full blocks.
    pub rest: std::io::Lines<BufReader<ChildStderr>>,
}

/// Reads the log of `child`, a starting `agent-relay serve` whose stderr is piped, up to the
/// line `agent-relay serving ... listen=ADDR`. Panics with the exit status and the log so far if
/// the log ends first.
pub fn read_until_serving(child: &mut Child) -> Serving {
    let stderr = child.stderr.take().expect("serve's stderr is piped");
    let mut rest = BufReader::new(stderr).lines();
    let mut log = Vec::new();
    loop {
        let Some(Ok(line)) = rest.next() else {
            let status = child.wait().unwrap();
            panic!(
                "agent-relay serve exited ({status}) before listening:\n{}",
                log.join("\n")
            );
        };
        let listen = line
            .contains("agent-relay serving")
            .then(|| line.split("listen=").nth(1))
            .flatten()
            .and_then(|addr| addr.split_whitespace().next())
            .map(|addr| format!("http://{addr}"));
        log.push(line);
        if let Some(base) = listen {
            return Serving { base, log, rest };
        }
    }
}

/// A finished command's exit code and output, for an assertion's message.
pub fn described(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The stderr of a command that must have stopped with a usage error: exit 2, no panic.
/// `what` names the case in the failure message.
pub fn usage_error(out: &std::process::Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{what}: {}", described(out));
    assert!(!stderr.contains("panicked"), "{what}: {}", described(out));
    stderr
}

/// Milliseconds since the Unix epoch, by the machine's clock.
pub fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// A process's resident memory now, in MiB (Linux `/proc`).
pub fn resident_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib / 1024
}

/// The operations of an OpenAPI document: method (as the document spells it), path, operation.
pub fn operations(doc: &Json) -> Vec<(String, String, &Json)> {
    doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .iter()
                .map(move |(method, op)| (method.clone(), path.clone(), op))
        })
        .collect()
}

impl RelayServer {
    pub fn start() -> RelayServer {
        Self::start_with(&[])
    }

    /// Starts a server on a fresh database with extra `serve` arguments.
    pub fn start_with(extra: &[&str]) -> RelayServer {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, extra)
    }

    /// Starts a server on the database `relay.db` in `dir` (which may already hold data).
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> RelayServer {
        Self::launch(dir, extra, Command::new(binary()))
    }

    /// Starts a server with extra `serve` arguments on a fresh database of `backend`: a new
    /// SQLite file, or a new database in the test cluster (`RELAY_TEST_POSTGRES`; without it
    /// this panics saying how to run the test), dropped with the server.
    pub fn start_on(backend: Backend, extra: &[&str]) -> RelayServer {
        match backend {
            Backend::Sqlite => Self::start_with(extra),
            Backend::Postgres => {
                let database = postgres::Database::create();
                let mut server = Self::launch_on(
                    tempfile::tempdir().unwrap(),
                    std::ffi::OsStr::new(&database.url),
                    extra,
                    Command::new(binary()),
                );
                server.backend = Backend::Postgres;
                server.database = Some(database);
                server
            }
        }
    }

    /// Starts a server on an existing database (a SQLite file or a `postgres://` URL) that it
    /// does not own: several servers may share one (tests/all/hosts.rs).
    pub fn start_at(db: &str, extra: &[&str]) -> RelayServer {
        let mut server = Self::launch_on(
            tempfile::tempdir().unwrap(),
            std::ffi::OsStr::new(db),
            extra,
            Command::new(binary()),
        );
        if db.starts_with("postgres") {
            server.backend = Backend::Postgres;
        }
        server
    }

    /// Starts a server on a fresh database under this umask (octal, e.g. `000`), with its
    /// component cache in `cache_home` (as `XDG_CACHE_HOME`).
    pub fn start_under_umask(umask: &str, cache_home: &Path) -> RelayServer {
        let mut command = Command::new("sh");
        command
            .args(["-c", "umask \"$0\" && exec \"$@\"", umask])
            .arg(binary())
            .env("XDG_CACHE_HOME", cache_home)
            .env_remove("RELAY_COMPONENT_CACHE");
        Self::launch(tempfile::tempdir().unwrap(), &[], command)
    }

    fn launch(dir: tempfile::TempDir, extra: &[&str], command: Command) -> RelayServer {
        let db = dir.path().join("relay.db");
        Self::launch_on(dir, db.as_os_str(), extra, command)
    }

    fn launch_on(
        dir: tempfile::TempDir,
        db: &std::ffi::OsStr,
        extra: &[&str],
        mut command: Command,
    ) -> RelayServer {
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0", "--test-clock", "--db"])
            .arg(db)
            .args(extra)
            .env("RELAY_OPERATOR_TOKEN", OPERATOR)
            .env("RELAY_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let Serving {
            base,
            rest: mut lines,
            ..
        } = read_until_serving(&mut child);
        // Keep draining the log so the server never blocks on a full pipe.
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = std::sync::Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in lines.by_ref().map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        RelayServer {
            base,
            dir,
            backend: Backend::Sqlite,
            child,
            client,
            logs,
            database: None,
        }
    }

    /// The server's log lines so far (after the line that said where it listens).
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// The server's process id (for memory and CPU readings).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends the server SIGTERM and waits up to `within` for it to exit; its exit status, or
    /// `None` if it was still running (then it is killed).
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM failed");
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The SQLite file it serves (for a `Backend::Sqlite` server).
    pub fn db_path(&self) -> PathBuf {
        assert_eq!(
            self.backend,
            Backend::Sqlite,
            "a Postgres server has no database file"
        );
        self.dir.path().join("relay.db")
    }

    /// What `--db` names for another process on the same database: the SQLite file's path, or
    /// the Postgres database's URL.
    pub fn db_arg(&self) -> std::ffi::OsString {
        match &self.database {
            Some(database) => database.url.clone().into(),
            None => self.dir.path().join("relay.db").into_os_string(),
        }
    }

    /// Stops the server and hands back its directory (to restart on the same database; a
    /// SQLite server's only: a Postgres server's database is dropped with it).
    pub fn stop(mut self) -> tempfile::TempDir {
        assert_eq!(
            self.backend,
            Backend::Sqlite,
            "stop() hands back the SQLite file's directory; a Postgres server's database is dropped with it"
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Json>,
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        let text = response.text().unwrap();
        Reply {
            status,
            body: serde_json::from_str(&text).unwrap_or(Json::Null),
        }
    }

    /// Sends a raw body (for malformed-JSON and size tests).
    pub fn raw(&self, method: &str, path: &str, token: Option<&str>, body: Vec<u8>) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request
            .header("content-type", "application/json")
            .send()
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().unwrap();
        Reply {
            status,
            body: serde_json::from_str(&text).unwrap_or(Json::Null),
        }
    }

    /// The operator's `GET /metrics`, checked (200, OpenMetrics text, every sample declared)
    /// and read.
    pub fn scrape(&self) -> metrics::Samples {
        let reply = self
            .client
            .get(format!("{}/metrics", self.base))
            .bearer_auth(OPERATOR)
            .send()
            .unwrap();
        assert_eq!(reply.status(), 200);
        let content_type = reply.headers()["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        metrics::Samples::parse(&reply.text().unwrap())
    }

    /// A sample's value in the operator's `GET /metrics` (the series as the page writes it, with
    /// its labels when it has any).
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.scrape().get(series)
    }

    /// Waits until at least `count` long-polls and event streams wait for commits
    /// (`relay_waiters`): each has subscribed before its first read, so a send from now on
    /// reaches it. Fails after 10 s.
    pub fn until_waiters(&self, count: u32) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let held = self.metric("relay_waiters").unwrap_or(0.0);
            if held >= f64::from(count) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{held} waiters after 10 s, not {count}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn get(&self, path: &str, token: &str) -> Reply {
        self.request("GET", path, Some(token), None)
    }

    pub fn post(&self, path: &str, token: &str, body: Json) -> Reply {
        self.request("POST", path, Some(token), Some(&body))
    }

    pub fn put(&self, path: &str, token: &str, body: Json) -> Reply {
        self.request("PUT", path, Some(token), Some(&body))
    }

    pub fn delete(&self, path: &str, token: &str) -> Reply {
        self.request("DELETE", path, Some(token), None)
    }

    /// Sends a request on another thread, for one that waits (a long-poll, a waiting
    /// claim-next), with a client that gives it 120 s; the receiver gets the reply and the moment
    /// it arrived.
    pub fn request_in_background(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Json>,
    ) -> mpsc::Receiver<(Reply, Instant)> {
        let (sender, receiver) = mpsc::channel();
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let url = format!("{}{path}", self.base);
        let token = token.to_owned();
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap();
            let mut request = client.request(method, url).bearer_auth(token);
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.send().unwrap();
            let arrived = Instant::now();
            let status = response.status().as_u16();
            let body = serde_json::from_str(&response.text().unwrap()).unwrap_or(Json::Null);
            let _ = sender.send((Reply { status, body }, arrived));
        });
        receiver
    }

    /// Registers an agent as the operator and returns its token.
    pub fn register(&self, card: Json) -> String {
        let reply = self.post("/v1/agents", OPERATOR, card.clone());
        assert_eq!(
            reply.status, 201,
            "registering {card} failed: {:?}",
            reply.body
        );
        reply.body["token"].as_str().unwrap().to_owned()
    }

    /// Sends a message as the operator (who may send as anyone) and returns the reply.
    pub fn send(&self, message: Json) -> Reply {
        self.post("/v1/messages", OPERATOR, message)
    }

    /// Moves the relay's clock forward.
    pub fn advance(&self, ms: i64) {
        let reply = self.post("/v1/test/clock", OPERATOR, json!({ "advanceMs": ms }));
        assert_eq!(
            reply.status, 200,
            "moving the clock failed: {:?}",
            reply.body
        );
    }

    /// Runs the reaper now.
    pub fn reap(&self) -> Json {
        let reply = self.post("/v1/reap", OPERATOR, json!({}));
        assert_eq!(reply.status, 200, "reap failed: {:?}", reply.body);
        reply.body
    }

    /// Ids of the messages in an agent's inbox.
    pub fn inbox_ids(&self, agent: &str, token: &str, query: &str) -> Vec<i64> {
        let reply = self.get(&format!("/v1/agents/{agent}/inbox{query}"), token);
        assert_eq!(reply.status, 200, "inbox of {agent}: {:?}", reply.body);
        ids(&reply.body)
    }
}

impl Drop for RelayServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates the relay's database at `db` with `agent-relay migrate` (only `serve` and `migrate`
/// create one; the other commands refuse a missing database).
pub fn migrate(db: &Path) {
    let out = Command::new(binary())
        .args(["migrate", "--db"])
        .arg(db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "migrate {}: {}",
        db.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A new relay database `relay.db` in `dir`, made by `agent-relay migrate`.
pub fn migrated(dir: &Path) -> PathBuf {
    let db = dir.join("relay.db");
    migrate(&db);
    db
}

/// Runs `agent-relay call EXPORT ARGS` against a database (created first when missing); returns
/// the exit success and the JSON.
pub fn cli_call(db: &Path, export: &str, args: &Json) -> (bool, Json) {
    if !db.exists() {
        migrate(db);
    }
    let output = Command::new(binary())
        .args(["call", "--db"])
        .arg(db)
        .arg(export)
        .arg(args.to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    (
        output.status.success(),
        serde_json::from_str(&text).unwrap_or(Json::Null),
    )
}

/// An export and the place of one of its arguments (`send-message`, `input.to`).
pub type Place = (String, String);

/// The input rules the component publishes (`agent-relay call input-rules`), as JSON Schema
/// keywords by export and place.
pub fn published_input_rules() -> std::collections::BTreeMap<Place, Json> {
    let dir = tempfile::tempdir().unwrap();
    let (ok, answer) = cli_call(&dir.path().join("relay.db"), "input-rules", &json!({}));
    assert!(ok, "agent-relay call input-rules failed: {answer}");
    let rules = answer.as_array().expect("input-rules answers a list");
    assert!(!rules.is_empty(), "the component publishes no input rule");
    rules
        .iter()
        .map(|rule| {
            let place = (
                rule["export"].as_str().unwrap().to_owned(),
                rule["at"].as_str().unwrap().to_owned(),
            );
            assert!(rule["keywords"].is_object(), "{rule}");
            (place, rule["keywords"].clone())
        })
        .collect()
}

/// Bounds a schema has from its integer type alone (`shape::json_schema`), not from a rule.
const TYPE_BOUNDS: &[i64] = &[
    i64::MIN,
    i32::MIN as i64,
    i16::MIN as i64,
    i8::MIN as i64,
    0,
    i8::MAX as i64,
    u8::MAX as i64,
    i16::MAX as i64,
    u16::MAX as i64,
    i32::MAX as i64,
    u32::MAX as i64,
    i64::MAX,
];

/// Checks the schema of the value at `place` of `export`'s arguments, and the values inside it
/// (`.key` per property, `[]` per list item), against the published rules: where the component
/// states a rule every keyword of it is there with its value; where it states none, the schema
/// has no rule keyword (no length, pattern, `not` or bound beyond its type's). Each checked place
/// goes into `seen`, each disagreement into `problems`.
pub fn check_rules(
    rules: &std::collections::BTreeMap<Place, Json>,
    export: &str,
    place: &str,
    schema: &Json,
    seen: &mut std::collections::BTreeSet<Place>,
    problems: &mut Vec<String>,
) {
    let key = (export.to_owned(), place.to_owned());
    match rules.get(&key) {
        Some(rule) => {
            for (keyword, value) in rule.as_object().unwrap() {
                // JSON Schema allows `null` in the enum of an optional value.
                let found = match (keyword.as_str(), &schema[keyword]) {
                    ("enum", Json::Array(names)) => {
                        Json::Array(names.iter().filter(|n| !n.is_null()).cloned().collect())
                    }
                    (_, found) => found.clone(),
                };
                if found != *value {
                    problems.push(format!(
                        "{export} {place}: the component's rule has {keyword}: {value}, the \
                         schema has {found}"
                    ));
                }
            }
        }
        None => {
            for keyword in ["minLength", "maxLength", "pattern", "not"] {
                if let Some(value) = schema.get(keyword) {
                    problems.push(format!(
                        "{export} {place}: the schema has {keyword}: {value}, but the \
                         component states no rule there"
                    ));
                }
            }
            for keyword in ["minimum", "maximum"] {
                if let Some(value) = schema.get(keyword)
                    && !value.as_i64().is_some_and(|n| TYPE_BOUNDS.contains(&n))
                {
                    problems.push(format!(
                        "{export} {place}: the schema has {keyword}: {value}, but the \
                         component states no rule there"
                    ));
                }
            }
        }
    }
    seen.insert(key);
    if let Some(properties) = schema.get("properties").and_then(Json::as_object) {
        for (name, inner) in properties {
            let inner_place = if place.is_empty() {
                name.clone()
            } else {
                format!("{place}.{name}")
            };
            check_rules(rules, export, &inner_place, inner, seen, problems);
        }
    }
    if let Some(items) = schema.get("items") {
        check_rules(rules, export, &format!("{place}[]"), items, seen, problems);
    }
}
