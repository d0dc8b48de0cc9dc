//! Running the relay as a service: backups while it serves, health when the disk is full, logs.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use common::*;

/// Runs `agent-relay backup --db DB --out OUT`.
fn backup_to(db: &std::path::Path, out: &std::path::Path) -> std::process::Output {
    Command::new(binary())
        .args(["backup", "--db"])
        .arg(db)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn a_backup_taken_while_serving_holds_every_acknowledged_message_and_is_owner_only() {
    let relay = Relay::start();
    relay.register(json!({"id": "alice"}));
    let mut sent = Vec::new();
    for i in 0..50 {
        let reply = relay.send(json!({"from": "user", "to": "alice", "body": format!("job {i}")}));
        assert_eq!(reply.status, 201, "{:?}", reply.body);
        sent.push(reply.body["message"]["id"].as_i64().unwrap());
    }
    let out = relay.dir.path().join("backups").join("relay-copy.db");
    let backup = backup_to(&relay.db_path(), &out);
    assert!(
        backup.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&backup.stderr)
    );
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the backup is owner-only, not {mode:o}");

    let copy = rusqlite::Connection::open(&out).unwrap();
    let ids: Vec<i64> = copy
        .prepare("SELECT id FROM messages WHERE to_target = 'alice' ORDER BY id")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(ids, sent, "every acknowledged message is in the copy");
    let check: String = copy
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");

    let again = backup_to(&relay.db_path(), &out);
    assert!(
        !again.status.success(),
        "an existing file is not overwritten"
    );
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

#[test]
fn a_backup_of_a_missing_database_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here.db");
    let out = dir.path().join("copy.db");
    let backup = backup_to(&missing, &out);
    assert!(!backup.status.success());
    assert!(
        String::from_utf8_lossy(&backup.stderr).contains("does not exist"),
        "{}",
        String::from_utf8_lossy(&backup.stderr)
    );
    assert!(!missing.exists(), "no empty database was created");
    assert!(!out.exists());
}

#[test]
fn json_logs_are_one_object_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(binary())
        .args(["--log-format", "json", "migrate", "--db"])
        .arg(dir.path().join("relay.db"))
        .output()
        .unwrap();
    assert!(output.status.success());
    let logs = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "migrate logs at info");
    for line in lines {
        let event: Json = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(event["level"].is_string(), "{event}");
        assert!(event["message"].is_string(), "{event}");
    }
}
