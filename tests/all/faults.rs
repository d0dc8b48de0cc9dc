//! Faults and limits: an overloaded relay answers 503, a full database 507 with nothing
//! corrupted and recovery once space returns, oversized and over-deep input 4xx, the OpenAPI
//! document, and the token model's file and listen-address promises.

use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    Json, OPERATOR, RelayServer, Serving, WITH_FAULTS, binary, ids, json, read_until_serving,
};

#[test]
fn overload_queues_then_answers_503_and_the_server_survives() {
    let relay = RelayServer::start_with(
        &[
            &WITH_FAULTS[..],
            &[
                "--max-concurrent-calls",
                "1",
                "--queue-timeout-ms",
                "200",
                "--call-timeout-ms",
                "1500",
            ],
        ]
        .concat(),
    );
    std::thread::scope(|scope| {
        let spinning = scope.spawn(|| {
            relay.post(
                "/v1/test/faults/write-then-spin",
                OPERATOR,
                json!({"body": "spin"}),
            )
        });
        std::thread::sleep(Duration::from_millis(300));
        let queued = relay.get("/v1/agents", OPERATOR);
        assert_eq!(
            queued.status, 503,
            "a request beyond the bound waits, then gets 503: {:?}",
            queued.body
        );
        assert_eq!(queued.code(), "overloaded");
        let spun = spinning.join().unwrap();
        assert_eq!(spun.status, 500, "{:?}", spun.body);
    });
    assert_eq!(
        relay.get("/v1/agents", OPERATOR).status,
        200,
        "the slot is free again"
    );
}

fn page_limited_send(relay: &RelayServer, i: usize) -> common::Reply {
    relay.send(json!({"from": "user", "to": "a", "body": "x".repeat(3000), "idempotencyKey": format!("k{i}")}))
}

#[test]
fn a_full_database_answers_507_corrupts_nothing_and_recovers() {
    let relay = RelayServer::start_with(&["--max-db-pages", "120"]);
    relay.register(json!({"id": "a"}));
    let mut acknowledged = Vec::new();
    let mut full = None;
    for i in 0..2000 {
        let reply = page_limited_send(&relay, i);
        match reply.status {
            201 => acknowledged.push((i, reply.body["message"]["id"].as_i64().unwrap())),
            _ => {
                full = Some(reply);
                break;
            }
        }
    }
    let full = full.expect("the page limit was never reached");
    assert_eq!(full.status, 507, "{:?}", full.body);
    assert_eq!(full.code(), "storage_full");
    assert!(!acknowledged.is_empty());
    assert_eq!(
        relay.get("/v1/agents/a/inbox?limit=1", OPERATOR).status,
        200,
        "reads go on while full"
    );
    let health = relay.get("/v1/health", OPERATOR);
    assert_eq!(health.status, 200, "a full database is degraded, not down");
    assert_eq!(health.body["status"], "degraded", "{:?}", health.body);
    let database = health.body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "database")
        .unwrap();
    assert_eq!(database["status"], "degraded", "{database:?}");
    assert!(
        database["detail"]
            .as_str()
            .unwrap()
            .contains("storage full"),
        "{database:?}"
    );

    let db = relay.db_path();
    let dir = relay.stop();
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }
    let relay = RelayServer::start_in(dir, &[]);
    for (i, id) in &acknowledged {
        let message = relay.get(&format!("/v1/messages/{id}"), OPERATOR);
        assert_eq!(message.status, 200, "acknowledged message {id} survived");
        assert_eq!(message.body["idempotencyKey"], format!("k{i}"));
    }
    let after = page_limited_send(&relay, 99_999);
    assert_eq!(
        after.status, 201,
        "writes succeed once space returns: {:?}",
        after.body
    );
}

/// Python's `urllib` sends the whole body before it reads the answer: the relay must read past
/// the limit (and drop it) so the client sees the 413 and its JSON, not a reset connection.
#[test]
fn a_body_over_the_limit_is_answered_413_json_to_python_urllib() {
    let relay = RelayServer::start_with(&["--max-body-bytes", "65536"]);
    let script = r#"
import json, sys, urllib.error, urllib.request
body = json.dumps({"from": "user", "to": "a", "body": "x" * 1_000_000}).encode()
request = urllib.request.Request(sys.argv[1] + "/v1/messages", data=body, method="POST",
    headers={"Authorization": "Bearer " + sys.argv[2], "Content-Type": "application/json"})
try:
    urllib.request.urlopen(request, timeout=30)
    print(json.dumps({"status": 200}))
except urllib.error.HTTPError as error:
    print(json.dumps({"status": error.code, "body": json.loads(error.read())}))
"#;
    let out = Command::new("python3")
        .args(["-c", script, &relay.base, OPERATOR])
        .output()
        .expect("python3 runs the urllib client");
    assert!(
        out.status.success(),
        "urllib met an error instead of the answer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["status"], 413, "{answer}");
    assert_eq!(answer["body"]["error"]["code"], "too_large", "{answer}");
    // The connection was read to the end: the relay still answers on it and others.
    assert_eq!(relay.get("/v1/health", OPERATOR).status, 200);
}

#[test]
fn oversized_and_overdeep_input_is_refused_with_a_message() {
    let relay = RelayServer::start();
    relay.register(json!({"id": "a"}));
    let mut deep = json!({});
    for _ in 0..200 {
        deep = json!({ "d": deep });
    }
    let cases = [
        ("deep JSON", relay.send(json!({"from": "user", "to": "a", "body": "x", "meta": deep})), 400),
        ("long id", relay.post("/v1/agents", OPERATOR, json!({"id": "x".repeat(300)})), 413),
        ("many tags", relay.post("/v1/agents", OPERATOR, json!({"id": "b", "tags": (0..100).map(|i| format!("t{i}")).collect::<Vec<_>>()})), 413),
        ("huge meta", relay.send(json!({"from": "user", "to": "a", "body": "x", "meta": {"blob": "y".repeat(70_000)}})), 413),
        ("huge body", relay.send(json!({"from": "user", "to": "a", "body": "z".repeat(300_000)})), 413),
        ("control characters in an id", relay.post("/v1/agents", OPERATOR, json!({"id": "a\u{0}b"})), 400),
        ("negative id", relay.get("/v1/messages/-1", OPERATOR), 404),
        ("id beyond range", relay.get("/v1/messages/99999999999999999999999", OPERATOR), 400),
    ];
    for (what, reply, status) in cases {
        assert_eq!(reply.status, status, "{what}: {:?}", reply.body);
        assert!(
            reply.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }
}

#[test]
fn the_openapi_document_describes_every_route() {
    let relay = RelayServer::start();
    let doc = relay.request("GET", "/v1/openapi.json", None, None);
    assert_eq!(doc.status, 200);
    assert_eq!(doc.body["openapi"], "3.0.3");
    let send = &doc.body["paths"]["/v1/messages"]["post"];
    assert_eq!(send["operationId"], "send-message");
    let required = send["requestBody"]["content"]["application/json"]["schema"]["required"]
        .as_array()
        .unwrap();
    for field in ["from", "to", "body"] {
        assert!(
            required.contains(&Json::from(field)),
            "{field} is required in the schema"
        );
    }
    let inbox = &doc.body["paths"]["/v1/agents/{agentId}/inbox"]["get"]["parameters"];
    let names: Vec<&str> = inbox
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"agentId") && names.contains(&"since") && names.contains(&"limit"),
        "{names:?}"
    );
}

#[test]
fn the_generated_operator_token_file_is_owner_only_and_never_logged() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("relay.db");
    let mut child = Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .env_remove("RELAY_OPERATOR_TOKEN")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = read_until_serving(&mut child).log.join("\n");
    child.kill().unwrap();
    child.wait().unwrap();
    let file = dir.path().join("relay.db.operator-token");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o600,
        "the operator token file is readable by its owner only"
    );
    let token = std::fs::read_to_string(&file).unwrap();
    assert!(
        log.contains("relay.db.operator-token"),
        "the log says where the token is:\n{log}"
    );
    assert!(
        !log.contains(token.trim()),
        "the token itself is never logged"
    );
}

#[test]
fn serving_beyond_loopback_warns_about_tls() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(binary())
        .args(["serve", "--listen", "0.0.0.0:0", "--db"])
        .arg(dir.path().join("relay.db"))
        .env("RELAY_OPERATOR_TOKEN", OPERATOR)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let warned = read_until_serving(&mut child)
        .log
        .iter()
        .any(|line| line.contains("WARN") && line.contains("TLS"));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(warned, "serve warns when bound beyond loopback without TLS");
}

/// Starts `serve` on `dir/relay.db` inside a private mount namespace where `dir` is mounted
/// read-only; returns the child and its base URL.
fn serve_read_only(dir: &Path) -> (std::process::Child, String) {
    let script = format!(
        "mount --bind '{0}' '{0}' && mount -o remount,ro,bind '{0}' '{0}' && exec '{1}' serve --listen 127.0.0.1:0 --db '{0}/relay.db'",
        dir.display(),
        binary().display()
    );
    let mut child = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .env("RELAY_OPERATOR_TOKEN", OPERATOR)
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare runs (the test needs root to make a read-only mount)");
    let Serving { base, mut rest, .. } = read_until_serving(&mut child);
    std::thread::spawn(move || for _ in rest.by_ref() {});
    (child, base)
}

#[test]
fn a_read_only_database_answers_503_keeps_serving_reads_and_recovers() {
    let relay = RelayServer::start();
    relay.register(json!({"id": "a"}));
    let id = relay
        .send(json!({"from": "user", "to": "a", "body": "before"}))
        .body["message"]["id"]
        .as_i64()
        .unwrap();
    let db = relay.db_path();
    let dir = relay.stop();
    {
        // A read-only file cannot hold a write-ahead log: hand it over in rollback-journal mode.
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        conn.query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(()))
            .unwrap();
    }
    let (mut child, base) = serve_read_only(dir.path());
    let client = reqwest::blocking::Client::new();
    let read = client
        .get(format!("{base}/v1/messages/{id}"))
        .bearer_auth(OPERATOR)
        .send()
        .unwrap();
    assert_eq!(read.status().as_u16(), 200, "reads go on");
    let write = client
        .post(format!("{base}/v1/messages"))
        .bearer_auth(OPERATOR)
        .json(&json!({"from": "user", "to": "a", "body": "while read-only"}))
        .send()
        .unwrap();
    assert_eq!(write.status().as_u16(), 503);
    let body: Json = write.json().unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("read-only"),
        "{body}"
    );
    child.kill().unwrap();
    child.wait().unwrap();

    let relay = RelayServer::start_in(dir, &[]);
    assert_eq!(
        relay.get(&format!("/v1/messages/{id}"), OPERATOR).body["body"],
        "before"
    );
    assert_eq!(
        relay
            .send(json!({"from": "user", "to": "a", "body": "after"}))
            .status,
        201,
        "writable again"
    );
    let inbox: Vec<String> = relay
        .get("/v1/agents/a/inbox", OPERATOR)
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        inbox,
        ["before", "after"],
        "nothing from the read-only time was half-written"
    );
}

/// Concurrent writes share commits (group commit); a call that fails or traps in the middle of a
/// batch rolls back alone, and every acknowledged send is there, once, after a restart.
#[test]
fn failing_calls_among_concurrent_sends_roll_back_alone() {
    let relay = RelayServer::start_with(&WITH_FAULTS);
    relay.register(json!({"id": "a"}));
    relay.register(json!({"id": "b"}));
    let acknowledged: Vec<i64> = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..8)
            .map(|t| {
                let relay = &relay;
                scope.spawn(move || {
                    (0..25)
                        .map(|i| {
                            let reply = relay.send(json!({"from": "a", "to": "b", "body": format!("m{t}-{i}"), "idempotencyKey": format!("k{t}-{i}")}));
                            assert_eq!(reply.status, 201, "{:?}", reply.body);
                            reply.body["message"]["id"].as_i64().unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let faults: Vec<_> = ["write-then-fail", "write-then-trap"]
            .into_iter()
            .map(|fault| {
                let relay = &relay;
                scope.spawn(move || {
                    for i in 0..15 {
                        let reply = relay.post(
                            &format!("/v1/test/faults/{fault}"),
                            OPERATOR,
                            json!({"body": format!("fault {fault} {i}")}),
                        );
                        assert!(
                            matches!(reply.status, 409 | 500),
                            "{fault}: {:?}",
                            reply.body
                        );
                    }
                })
            })
            .collect();
        for fault in faults {
            fault.join().unwrap();
        }
        senders
            .into_iter()
            .flat_map(|s| s.join().unwrap())
            .collect()
    });
    assert_eq!(acknowledged.len(), 200);
    let dir = relay.stop();
    let relay = RelayServer::start_in(dir, &[]);
    let inbox = relay.get("/v1/agents/b/inbox?limit=500", OPERATOR);
    let mut stored = ids(&inbox.body);
    stored.sort_unstable();
    let mut expected = acknowledged.clone();
    expected.sort_unstable();
    assert_eq!(stored, expected, "every acknowledged send, once");
    let user = relay.get("/v1/agents/user/inbox?limit=500", OPERATOR);
    let leaked: Vec<&Json> = user
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["body"].as_str().is_some_and(|b| b.starts_with("fault ")))
        .collect();
    assert!(leaked.is_empty(), "failed calls wrote nothing: {leaked:?}");
}
