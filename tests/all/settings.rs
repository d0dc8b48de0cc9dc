//! Stored settings (`agent-relay settings`) and one-run settings (`--setting` on `serve` and
//! `call`), against the real binary and a real SQLite file: stored values carry their source,
//! secrets are never printed, a one-run value changes that run only and is never written, and
//! fault injection is never a stored setting.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use common::{Json, OPERATOR, RelayServer, WITH_FAULTS, binary, json};

/// Runs `agent-relay settings ARGS --db DB`.
fn settings(db: &Path, args: &[&str]) -> Output {
    Command::new(binary())
        .arg("settings")
        .args(args)
        .arg("--db")
        .arg(db)
        .env_remove("RELAY_DB")
        .output()
        .unwrap()
}

/// `settings ARGS --json` that must succeed, as JSON.
fn settings_json(db: &Path, args: &[&str]) -> Json {
    let mut with_json = args.to_vec();
    with_json.push("--json");
    let out = settings(db, &with_json);
    assert!(
        out.status.success(),
        "settings {args:?}: {}",
        common::described(&out)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The listed setting `key`.
fn listed(list: &Json, key: &str) -> Json {
    list.as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == key)
        .cloned()
        .unwrap_or_else(|| panic!("{key} is not listed: {list}"))
}

/// Every row of the file's `relay_settings` an operator could have set (the relay's own
/// bookkeeping, schema version and health probe, left out).
fn stored_rows(db: &Path) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut statement = conn
        .prepare(
            "SELECT key, value FROM relay_settings \
             WHERE key NOT IN ('schema-version', 'health-checked-at') ORDER BY key",
        )
        .unwrap();
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn stored_settings_round_trip_with_their_sources() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::migrated(dir.path());

    let fresh = listed(&settings_json(&db, &["list"]), "max-attempts");
    assert_eq!(
        (&fresh["value"], &fresh["origin"], &fresh["defaultValue"]),
        (&json!("5"), &json!("default"), &json!("5")),
        "{fresh}"
    );

    let set = settings_json(&db, &["set", "max-attempts", "3"]);
    assert_eq!(
        (&set["value"], &set["origin"]),
        (&json!("3"), &json!("stored"))
    );
    let got = settings_json(&db, &["get", "max-attempts"]);
    assert_eq!(
        (&got["value"], &got["origin"]),
        (&json!("3"), &json!("stored"))
    );
    let list = settings_json(&db, &["list"]);
    assert_eq!(listed(&list, "max-attempts")["origin"], "stored");
    assert_eq!(listed(&list, "stale-ttl-ms")["origin"], "default");
    assert_eq!(
        stored_rows(&db),
        [("max-attempts".to_owned(), "3".to_owned())]
    );

    let lines = settings(&db, &["list"]);
    let lines = String::from_utf8_lossy(&lines.stdout);
    assert!(
        lines
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["max-attempts", "3", "stored"]),
        "the text listing says KEY VALUE SOURCE: {lines}"
    );

    let unset = settings_json(&db, &["unset", "max-attempts"]);
    assert_eq!(
        (&unset["value"], &unset["origin"]),
        (&json!("5"), &json!("default"))
    );
    assert_eq!(stored_rows(&db), [], "unset leaves nothing in the file");
    assert_eq!(
        settings_json(&db, &["unset", "max-attempts"])["origin"],
        "default",
        "unsetting an absent setting is no error"
    );
}

#[test]
fn a_webhook_secret_is_stored_used_and_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::migrated(dir.path());
    let set = settings(&db, &["set", "webhook-secret:ci", "s3cret-value"]);
    assert!(set.status.success(), "{}", common::described(&set));

    for args in [
        &["list"][..],
        &["list", "--json"],
        &["get", "webhook-secret:ci"],
        &["get", "webhook-secret:ci", "--json"],
    ] {
        let out = settings(&db, args);
        assert!(out.status.success(), "{}", common::described(&out));
        assert!(
            !common::described(&out).contains("s3cret-value"),
            "settings {args:?} shows the secret: {}",
            common::described(&out)
        );
    }
    let got = settings_json(&db, &["get", "webhook-secret:ci"]);
    assert_eq!(
        (&got["secret"], &got["origin"]),
        (&json!(true), &json!("stored"))
    );
    assert!(got.get("value").is_none_or(Json::is_null), "{got}");
    let line = settings(&db, &["get", "webhook-secret:ci"]);
    assert!(
        String::from_utf8_lossy(&line.stdout).contains("(set)"),
        "{}",
        common::described(&line)
    );

    // The relay uses it: an unsigned event of source ci is refused without the operator token.
    let relay = RelayServer::start_in(dir, &[]);
    let unsigned = relay.request(
        "POST",
        "/v1/integrations/ci/events",
        None,
        Some(&json!({"title": "red"})),
    );
    assert_eq!(unsigned.status, 401, "{:?}", unsigned.body);
}

/// A claimable job for alice, claimed and released once: with `max-attempts` 1 that release
/// dead-letters it. Answers whether it was dead-lettered.
fn released_job_is_dead_lettered(relay: &RelayServer, agent: &str) -> bool {
    let token = relay.register(json!({"id": agent}));
    let sent = relay.send(json!({"from": "user", "to": agent, "body": "job", "claimable": true}));
    assert_eq!(sent.status, 201, "{:?}", sent.body);
    let id = sent.body["message"]["id"].as_i64().unwrap();
    let claim = json!({"agentId": agent});
    let claimed = relay.post(&format!("/v1/messages/{id}/claim"), &token, claim.clone());
    assert_eq!(claimed.status, 200, "{:?}", claimed.body);
    let released = relay.post(&format!("/v1/messages/{id}/release"), &token, claim);
    assert_eq!(released.status, 200, "{:?}", released.body);
    let message = relay.get(&format!("/v1/messages/{id}"), OPERATOR);
    message.body["deadLetteredAt"].as_i64().is_some()
}

#[test]
fn a_run_setting_changes_that_run_only_and_is_never_written() {
    let relay = RelayServer::start_with(&["--setting", "max-attempts=1"]);
    assert!(
        released_job_is_dead_lettered(&relay, "alice"),
        "with --setting max-attempts=1 the first release dead-letters the job"
    );
    let dir = relay.stop();
    let db = common::migrated(dir.path());
    assert_eq!(stored_rows(&db), [], "--setting wrote nothing to the file");
    assert_eq!(
        settings_json(&db, &["get", "max-attempts"])["origin"],
        "default"
    );

    let later = RelayServer::start_in(dir, &[]);
    assert!(
        !released_job_is_dead_lettered(&later, "bob"),
        "a later server without the flag uses the default (5 attempts)"
    );
}

#[test]
fn a_run_setting_on_call_is_seen_by_that_call_only() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::migrated(dir.path());
    let out = Command::new(binary())
        .args(["call", "--setting", "stale-ttl-ms=60000", "--db"])
        .arg(&db)
        .args(["get-relay-setting", r#"{"key":"stale-ttl-ms"}"#])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::described(&out));
    let seen: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&seen["value"], &seen["origin"]),
        (&json!("60000"), &json!("run"))
    );
    assert_eq!(stored_rows(&db), []);
    assert_eq!(
        settings_json(&db, &["get", "stale-ttl-ms"])["value"],
        "300000"
    );
}

#[test]
fn fault_injection_cannot_be_stored() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::migrated(dir.path());
    let refused = settings(&db, &["set", "fault-injection", "on"]);
    assert!(
        common::usage_error(&refused, "fault-injection").contains("--setting fault-injection=on"),
        "the refusal says how to give it for one run: {}",
        common::described(&refused)
    );
    assert_eq!(stored_rows(&db), []);
    // Nor through `call`, the other way to reach the stored settings.
    let called = Command::new(binary())
        .args(["call", "--db"])
        .arg(&db)
        .args([
            "set-relay-setting",
            r#"{"key":"fault-injection","value":"on"}"#,
        ])
        .output()
        .unwrap();
    assert!(!called.status.success(), "{}", common::described(&called));
    assert_eq!(stored_rows(&db), []);
}

/// A fresh database whose `relay_settings` holds `fault-injection=on`, as older relays stored it.
fn database_where_an_older_relay_stored_fault_injection() -> (tempfile::TempDir, std::path::PathBuf)
{
    let dir = tempfile::tempdir().unwrap();
    let db = common::migrated(dir.path());
    settings_json(&db, &["list"]);
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "INSERT INTO relay_settings (key, value) VALUES ('fault-injection', 'on')",
            [],
        )
        .unwrap();
    (dir, db)
}

#[test]
fn the_database_and_json_may_come_before_or_after_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::migrated(dir.path());
    let before = Command::new(binary())
        .args(["settings", "--db"])
        .arg(&db)
        .args(["--json", "set", "max-attempts", "3"])
        .env_remove("RELAY_DB")
        .output()
        .unwrap();
    assert!(before.status.success(), "{}", common::described(&before));
    let stored: Json = serde_json::from_slice(&before.stdout).unwrap();
    assert_eq!(
        (&stored["value"], &stored["origin"]),
        (&json!("3"), &json!("stored"))
    );
    let after = settings_json(&db, &["get", "max-attempts"]);
    assert_eq!(
        after["value"], "3",
        "the same file, named after the command"
    );
}

#[test]
fn fault_injection_stored_by_an_older_relay_is_ignored_with_a_warning() {
    let (dir, db) = database_where_an_older_relay_stored_fault_injection();
    let listing = settings_json(&db, &["get", "fault-injection"]);
    assert_eq!(
        (&listing["value"], &listing["origin"]),
        (&json!("off"), &json!("default"))
    );
    assert!(listing["ignored"].is_string(), "{listing}");

    let relay = RelayServer::start_in(dir, &WITH_FAULTS[..2]);
    let fault = relay.post(
        "/v1/test/faults/write-then-fail",
        OPERATOR,
        json!({"body": "x"}),
    );
    assert_eq!(
        fault.status, 403,
        "a stored value does not arm it: {:?}",
        fault.body
    );
    let dir = relay.stop();

    // The one-run flag still arms it.
    let relay = RelayServer::start_in(dir, &WITH_FAULTS);
    let fault = relay.post(
        "/v1/test/faults/write-then-fail",
        OPERATOR,
        json!({"body": "x"}),
    );
    assert_eq!(fault.status, 409, "--setting arms it: {:?}", fault.body);
}

#[test]
fn opening_the_database_warns_about_a_stored_setting_it_ignores() {
    let (_dir, db) = database_where_an_older_relay_stored_fault_injection();
    let out = Command::new(binary())
        .args(["call", "--db"])
        .arg(&db)
        .args(["whoami", "{}"])
        .env("RELAY_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("WARN") && stderr.contains("fault-injection"),
        "a warning names the ignored setting: {}",
        common::described(&out)
    );
}

#[test]
fn bad_keys_and_values_are_clear_errors_with_a_usage_exit() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::migrated(dir.path());
    for (args, says) in [
        (&["get", "stale-ttl"][..], "unknown setting"),
        (&["set", "nope", "1"], "unknown setting"),
        (&["unset", "schema-version"], "unknown setting"),
        (
            &["set", "max-attempts", "zero"],
            "must be a whole number from 1",
        ),
        (
            &["set", "page-bytes", "10"],
            "must be a whole number from 65536",
        ),
        (&["set", "webhook-secret:", "x"], "source"),
        (
            &["set", "webhook-secret:ci", " padded "],
            "surrounding spaces",
        ),
    ] {
        let out = settings(&db, args);
        let stderr = common::usage_error(&out, &format!("settings {args:?}"));
        assert!(
            stderr.contains(says),
            "settings {args:?} should say {says:?}: {}",
            common::described(&out)
        );
    }
    let unknown = settings(&db, &["get", "stale-ttl"]);
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("stale-ttl-ms"),
        "an unknown key's error names the known ones: {}",
        common::described(&unknown)
    );
    assert_eq!(stored_rows(&db), []);

    // A one-run value is checked the same way, before the server listens.
    let serve = Command::new(binary())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--setting",
            "max-attempts=-1",
            "--db",
        ])
        .arg(&db)
        .env("RELAY_OPERATOR_TOKEN", OPERATOR)
        .output()
        .unwrap();
    assert!(!serve.status.success(), "{}", common::described(&serve));
    assert!(
        String::from_utf8_lossy(&serve.stderr).contains("--setting max-attempts=-1"),
        "{}",
        common::described(&serve)
    );
    let call = Command::new(binary())
        .args(["call", "--setting", "no-such-thing=1", "--db"])
        .arg(&db)
        .args(["whoami", "{}"])
        .output()
        .unwrap();
    assert!(!call.status.success(), "{}", common::described(&call));
    assert!(
        String::from_utf8_lossy(&call.stderr).contains("unknown setting"),
        "{}",
        common::described(&call)
    );
}

#[test]
fn settings_help_says_what_is_stored_and_what_is_one_run() {
    let help = |args: &[&str]| {
        let out = Command::new(binary()).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for command in ["serve", "call"] {
        let text = help(&[command, "--help"]);
        assert!(
            text.contains("this run only") && text.contains("agent-relay settings set"),
            "{command} --help says --setting is one run only: {text}"
        );
    }
    let settings_help = help(&["settings", "--help"]);
    assert!(
        settings_help.contains("list") && settings_help.contains("unset"),
        "{settings_help}"
    );
}
