//! Conformance: the behaviour cases in `tests/conformance/*.json`, run against the Rust host
//! through the library API (`agent_relay_core::embed`). The Node host (`hosts/node/conformance.mjs`)
//! runs the same files; both start their clock at the same instant, so every answer is
//! deterministic but for tokens. This runner writes its answers (the transcript) to
//! `target/tmp/conformance/`, and the Node runner fails on any answer that differs.
//!
//! A case: `{"name", "settings"?: {key: value}, "steps": [step]}`. A step:
//! `{"call": EXPORT, "args"?: {camelCase params}, "caller"?: "operator" | "anonymous" |
//! {"token of": AGENT_ID}, "advanceMs"?: N, "capture"?: {NAME: "/json/pointer"},
//! "expect"?: {"ok": PARTIAL} | {"error": CODE}}`, or a race
//! `{"race": [call steps], "expect": {"winners": N, "othersError": CODE}}`, or only
//! `{"advanceMs": N}`. A step marked `"dependsOnRace": true` is checked against its expectation
//! but its answer is not compared across hosts (which racer wins is up to the scheduler). `"${NAME}"` in args and expectations is replaced by a captured value; tokens of registered
//! agents are captured by themselves. A partial match checks only the keys it names; arrays match
//! element by element; `{"$oneOf": [..]}`, `{"$type": "string"}` and `{"$absent": true}` match
//! what they say.
//!
//! Both hosts run the cases on the test component (the guest built with its fault-injection
//! exports, which the shipped component lacks), so the rollback case can make calls fail.
//!
//! The Rust host runs every case on both backends (docs/testing.md): `conformance::sqlite::...`
//! on a fresh SQLite file per case, whose transcript is the one the Node runner compares with,
//! and `conformance::postgres::...` on a fresh PostgreSQL database per case, whose transcript
//! goes to `target/tmp/conformance-postgres/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agent_relay_core::bridge::ErrorReply;
use agent_relay_core::embed::{Caller, Clock, Options, Relay};
use agent_relay_core::postgres::{Postgres, PostgresOptions};
use serde_json::{Value as Json, json};

use crate::common::{Backend, postgres::Database};

/// The instant both hosts' clocks start at: 2026-01-01T00:00:00Z.
const START_MS: i64 = 1_767_225_600_000;

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/conformance")
}

/// Where a backend's transcripts go: SQLite's are the ones the Node host compares with.
fn transcripts_dir(backend: Backend) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(match backend {
        Backend::Sqlite => "conformance",
        Backend::Postgres => "conformance-postgres",
    })
}

/// A fresh database of `backend` for one case, kept open as long as the relay on it.
enum Fresh {
    Sqlite(tempfile::TempDir),
    Postgres(Database),
}

impl Fresh {
    fn new(backend: Backend) -> Fresh {
        match backend {
            Backend::Sqlite => Fresh::Sqlite(tempfile::tempdir().unwrap()),
            Backend::Postgres => Fresh::Postgres(Database::create()),
        }
    }

    fn open(&self, options: Options) -> anyhow::Result<Relay> {
        match self {
            Fresh::Sqlite(dir) => Relay::open(dir.path().join("relay.db"), options),
            Fresh::Postgres(database) => {
                let backend = Postgres::open(&database.url, &PostgresOptions::default())?;
                Relay::open_backend(Arc::new(backend), database.name(), options)
            }
        }
    }
}

/// What one case has learned so far: captured values and agents' tokens.
#[derive(Default)]
struct Memory {
    values: BTreeMap<String, Json>,
    tokens: BTreeMap<String, String>,
}

impl Memory {
    fn substitute(&self, value: &Json) -> Json {
        match value {
            Json::String(text) => {
                if let Some(name) = text.strip_prefix("${").and_then(|t| t.strip_suffix('}'))
                    && let Some(found) = self.values.get(name)
                {
                    return found.clone();
                }
                let mut out = text.clone();
                for (name, found) in &self.values {
                    let shown = found
                        .as_str()
                        .map_or_else(|| found.to_string(), str::to_owned);
                    out = out.replace(&format!("${{{name}}}"), &shown);
                }
                Json::String(out)
            }
            Json::Array(items) => Json::Array(items.iter().map(|v| self.substitute(v)).collect()),
            Json::Object(map) => Json::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), self.substitute(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    fn caller(&self, spec: Option<&Json>) -> Result<Caller, String> {
        match spec {
            None => Ok(Caller::Operator),
            Some(Json::String(s)) if s == "operator" => Ok(Caller::Operator),
            Some(Json::String(s)) if s == "anonymous" => Ok(Caller::Anonymous),
            Some(Json::Object(o)) if o.contains_key("token of") => {
                let id = o["token of"].as_str().unwrap_or_default();
                self.tokens
                    .get(id)
                    .map(|t| Caller::Bearer(t.clone()))
                    .ok_or_else(|| format!("no token was handed out for {id}"))
            }
            Some(Json::Object(o)) if o.contains_key("bearer") => Ok(Caller::Bearer(
                o["bearer"].as_str().unwrap_or_default().to_owned(),
            )),
            Some(other) => Err(format!("unknown caller {other}")),
        }
    }

    fn learn(&mut self, step: &Json, answer: &Json) -> Result<(), String> {
        if let (Some(token), Some(id)) = (answer["token"].as_str(), answer["agent"]["id"].as_str())
        {
            self.tokens.insert(id.to_owned(), token.to_owned());
        }
        if let Some(Json::Object(captures)) = step.get("capture") {
            for (name, pointer) in captures {
                let pointer = pointer.as_str().unwrap_or_default();
                let found = answer
                    .pointer(pointer)
                    .ok_or_else(|| format!("capture {name}: nothing at {pointer} in {answer}"))?;
                self.values.insert(name.clone(), found.clone());
            }
        }
        Ok(())
    }
}

/// Whether `actual` has everything `expected` names; the error says where it differs.
fn matches(expected: &Json, actual: Option<&Json>, at: &str) -> Result<(), String> {
    if let Some(Json::Array(options)) = expected.get("$oneOf") {
        return match actual {
            Some(a) if options.contains(a) => Ok(()),
            _ => Err(format!("{at}: {actual:?} is none of {options:?}")),
        };
    }
    if let Some(kind) = expected.get("$type").and_then(Json::as_str) {
        let found = match actual {
            Some(Json::String(_)) => "string",
            Some(Json::Number(_)) => "number",
            Some(Json::Bool(_)) => "boolean",
            Some(Json::Array(_)) => "array",
            Some(Json::Object(_)) => "object",
            Some(Json::Null) | None => "absent",
        };
        return if found == kind {
            Ok(())
        } else {
            Err(format!("{at}: expected a {kind}, got {actual:?}"))
        };
    }
    if expected.get("$absent").is_some() {
        return match actual {
            None | Some(Json::Null) => Ok(()),
            Some(a) => Err(format!("{at}: expected no value, got {a}")),
        };
    }
    let Some(actual) = actual else {
        return Err(format!("{at}: missing, expected {expected}"));
    };
    match (expected, actual) {
        (Json::Object(want), Json::Object(got)) => want
            .iter()
            .try_for_each(|(k, v)| matches(v, got.get(k), &format!("{at}/{k}"))),
        (Json::Array(want), Json::Array(got)) => {
            if want.len() != got.len() {
                return Err(format!(
                    "{at}: expected {} items, got {}: {actual}",
                    want.len(),
                    got.len()
                ));
            }
            want.iter()
                .zip(got)
                .enumerate()
                .try_for_each(|(i, (w, g))| matches(w, Some(g), &format!("{at}/{i}")))
        }
        _ if expected == actual => Ok(()),
        _ => Err(format!("{at}: expected {expected}, got {actual}")),
    }
}

/// Tokens are random; everything else must be the same on every host.
fn redact(value: &Json) -> Json {
    match value {
        Json::Object(map) => Json::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if k == "token" && v.is_string() {
                        json!("<token>")
                    } else {
                        redact(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Json::Array(items) => Json::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

fn answer_json(result: &Result<Json, ErrorReply>) -> Json {
    match result {
        Ok(ok) => json!({"ok": redact(ok)}),
        // How a trap is worded is the host's own; the relay's messages must match.
        Err(e) if e.code == "internal" => json!({"error": e.code}),
        Err(e) => json!({"error": e.code, "message": e.message}),
    }
}

fn check(expect: Option<&Json>, result: &Result<Json, ErrorReply>) -> Result<(), String> {
    match (expect, result) {
        (Some(e), Err(error)) if e.get("error").is_some() => {
            if e["error"] == error.code {
                Ok(())
            } else {
                Err(format!(
                    "expected error {}, got {}: {}",
                    e["error"], error.code, error.message
                ))
            }
        }
        (Some(e), Ok(ok)) if e.get("error").is_some() => {
            Err(format!("expected error {}, got ok {ok}", e["error"]))
        }
        (_, Err(error)) => Err(format!(
            "expected ok, got {}: {}",
            error.code, error.message
        )),
        (Some(e), Ok(ok)) => match e.get("ok") {
            Some(want) => matches(want, Some(ok), ""),
            None => Ok(()),
        },
        (None, Ok(_)) => Ok(()),
    }
}

fn call(relay: &Relay, memory: &Memory, step: &Json) -> Result<Result<Json, ErrorReply>, String> {
    let export = step["call"].as_str().ok_or("a step needs call")?;
    let caller = memory.caller(step.get("caller"))?;
    let args = memory.substitute(step.get("args").unwrap_or(&Json::Null));
    Ok(relay.call_json_as(&caller, export, &args))
}

/// Runs one case; returns its transcript, or what went wrong and at which step.
fn run_case(case: &Json, db: &Fresh) -> Result<Vec<Json>, String> {
    let settings = case["settings"]
        .as_object()
        .map(|s| {
            s.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let clock = Clock::fixed(START_MS);
    let relay = db
        .open(Options {
            settings,
            clock: clock.clone(),
            component: Some(
                std::fs::read(agent_relay_test_programs::FAULTS_COMPONENT)
                    .map_err(|e| format!("reading the test component: {e}"))?,
            ),
            ..Options::default()
        })
        .map_err(|e| format!("opening: {e:#}"))?;
    let mut memory = Memory::default();
    let mut transcript = Vec::new();
    for (i, step) in case["steps"]
        .as_array()
        .ok_or("a case needs steps")?
        .iter()
        .enumerate()
    {
        let at = |e: String| format!("step {i} ({}): {e}", step_name(step));
        if let Some(ms) = step.get("advanceMs").and_then(Json::as_i64) {
            clock.advance(ms);
        }
        if let Some(Json::Array(racers)) = step.get("race") {
            let results: Vec<Result<Json, ErrorReply>> = std::thread::scope(|scope| {
                let handles: Vec<_> = racers
                    .iter()
                    .map(|racer| {
                        let (relay, memory) = (&relay, &memory);
                        scope.spawn(move || call(relay, memory, racer))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .collect::<Result<_, _>>()
            })
            .map_err(at)?;
            let entry = race_outcome(&results);
            check_race(step.get("expect"), &entry).map_err(at)?;
            transcript.push(entry);
            continue;
        }
        if step.get("call").is_none() {
            continue;
        }
        let result = call(&relay, &memory, step).map_err(at)?;
        let expect = step.get("expect").map(|e| memory.substitute(e));
        check(expect.as_ref(), &result).map_err(at)?;
        if let Ok(ok) = &result {
            memory.learn(step, ok).map_err(at)?;
        }
        let answer = if step.get("dependsOnRace").is_some() {
            json!("depends on which racer won")
        } else {
            answer_json(&result)
        };
        transcript.push(json!({"step": i, "call": step["call"], "answer": answer}));
    }
    Ok(transcript)
}

fn step_name(step: &Json) -> String {
    step.get("call")
        .and_then(Json::as_str)
        .map_or_else(|| "race".to_owned(), str::to_owned)
}

/// A race is judged by how many won and how the others lost; which one won may differ by host.
fn race_outcome(results: &[Result<Json, ErrorReply>]) -> Json {
    let winners = results.iter().filter(|r| r.is_ok()).count();
    let mut losers: Vec<&str> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| e.code.as_str()))
        .collect();
    losers.sort_unstable();
    json!({"race": {"winners": winners, "losers": losers}})
}

fn check_race(expect: Option<&Json>, entry: &Json) -> Result<(), String> {
    let Some(expect) = expect else {
        return Ok(());
    };
    let race = &entry["race"];
    if let Some(winners) = expect.get("winners")
        && *winners != race["winners"]
    {
        return Err(format!("expected {winners} winner(s), got {race}"));
    }
    if let Some(code) = expect.get("othersError")
        && race["losers"]
            .as_array()
            .is_some_and(|l| l.iter().any(|c| c != code))
    {
        return Err(format!("the losers must all get {code}: {race}"));
    }
    Ok(())
}

fn case_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

fn every_conformance_case_passes_on_the_rust_host(backend: Backend) {
    let out = transcripts_dir(backend);
    std::fs::create_dir_all(&out).unwrap();
    let files = case_files();
    assert!(!files.is_empty(), "no cases in {}", cases_dir().display());
    let mut failures = Vec::new();
    for file in &files {
        let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
        let case: Json = serde_json::from_str(&std::fs::read_to_string(file).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let db = Fresh::new(backend);
        match run_case(&case, &db) {
            Ok(transcript) => {
                let text = serde_json::to_string_pretty(&transcript).unwrap();
                std::fs::write(out.join(format!("{stem}.json")), text + "\n").unwrap();
                println!("ok   {stem}");
            }
            Err(error) => {
                let _ = std::fs::remove_file(out.join(format!("{stem}.json")));
                println!("FAIL {stem}: {error}");
                failures.push(format!("{stem}: {error}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "conformance cases failed on the Rust host ({backend:?}):\n{}",
        failures.join("\n")
    );
}

crate::on_both_backends!(every_conformance_case_passes_on_the_rust_host);
