//! The command line: `call` invokes any export as the operator; `wit`, `migrate` and `--help`.

use crate::common;

use std::process::Command;

use common::{binary, cli_call, json};

#[test]
fn call_invokes_exports_against_the_database_and_prints_json() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("relay.db");
    let (ok, registered) = cli_call(
        &db,
        "register-agent",
        &json!({"input": {"id": "alice", "label": "dev"}}),
    );
    assert!(ok, "{registered}");
    assert_eq!(registered["agent"]["label"], "dev");
    let (ok, sent) = cli_call(
        &db,
        "send-message",
        &json!({"input": {"from": "user", "to": "label:dev", "body": "hi"}}),
    );
    assert!(ok, "{sent}");
    assert_eq!(sent["recipients"], json!(["alice"]));
    let (ok, inbox) = cli_call(&db, "poll-inbox", &json!({"agentId": "alice", "query": {}}));
    assert!(ok);
    assert_eq!(inbox[0]["body"], "hi");
}

#[test]
fn call_reports_mistakes_as_json_errors_with_a_failing_exit() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("relay.db");
    let (ok, error) = cli_call(&db, "get-agent", &json!({"agentId": "nobody"}));
    assert!(!ok);
    assert_eq!(error["error"]["code"], "not_found");
    let (ok, error) = cli_call(&db, "send-message", &json!({"input": {"from": 1}}));
    assert!(!ok);
    assert_eq!(error["error"]["code"], "invalid");
    let (ok, error) = cli_call(&db, "get-agent", &json!({"agentId": "a", "extra": 1}));
    assert!(!ok);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("extra")
    );
    let unknown = Command::new(binary())
        .args(["call", "--db"])
        .arg(&db)
        .arg("no-such-export")
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("call --list"));
}

#[test]
fn wit_prints_the_contract_and_help_explains_the_commands() {
    let wit = Command::new(binary()).arg("wit").output().unwrap();
    let text = String::from_utf8_lossy(&wit.stdout);
    assert!(text.contains("package agent-relay:relay@0.6.0"));
    assert!(text.contains("send-message: func"));
    let help = Command::new(binary()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for command in ["serve", "call", "migrate", "wit"] {
        assert!(help.contains(command), "--help mentions {command}");
    }
}

#[test]
fn migrate_creates_the_schema_and_a_second_run_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("relay.db");
    let run = || {
        let out = Command::new(binary())
            .args(["migrate", "--db"])
            .arg(&db)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<common::Json>(&out.stdout).unwrap()
    };
    let first = run();
    assert!(first["toVersion"].as_u64().unwrap() >= 1);
    let second = run();
    assert_eq!(second["fromVersion"], second["toVersion"]);
    assert_eq!(second["steps"], json!([]));
}

#[test]
fn component_out_refuses_a_symbolic_link_and_writes_nothing_where_it_points() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("victim");
    let link = dir.path().join("relay.wasm");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let output = Command::new(binary())
        .args(["component", "--out"])
        .arg(&link)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !target.exists(),
        "component --out wrote through the link to {}",
        target.display()
    );
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("symbolic link"), "{stderr}");

    // A plain path is written (and written again).
    let out = dir.path().join("plain.wasm");
    for _ in 0..2 {
        let written = Command::new(binary())
            .args(["component", "--out"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(written.status.success(), "{written:?}");
    }
    assert_eq!(&std::fs::read(&out).unwrap()[..4], b"\0asm");
}

/// A reader that stops early (`agent-relay call --list | head`) ends the program quietly: exit
/// 0, no panic on standard error. The read end is closed before the program has started
/// writing (it is closed as soon as the process exists; starting takes milliseconds), so every
/// write meets a closed pipe.
#[test]
fn a_closed_standard_output_ends_the_program_quietly() {
    for args in [&["call", "--list"][..], &["wit"][..]] {
        let mut child = Command::new(binary())
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{args:?}: {:?}, stderr: {stderr}",
            output.status
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
