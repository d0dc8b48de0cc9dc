//! Running the relay as a service: backups while it serves, health when the disk is full, logs.

use crate::common;

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
    let relay = RelayServer::start();
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
    assert_eq!(backup.status.code(), Some(2), "a usage error");
    assert!(
        String::from_utf8_lossy(&backup.stderr).contains("there is no database at"),
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

/// Opens the agent's event stream on a raw connection and reads it to its end in a thread;
/// the thread answers what it read, and when the stream ended.
fn read_stream_to_end(
    relay: &RelayServer,
    agent: &str,
    token: &str,
) -> std::thread::JoinHandle<(String, std::time::Instant)> {
    use std::io::{Read as _, Write as _};
    let addr = relay.base.trim_start_matches("http://").to_owned();
    let mut socket = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        socket,
        "GET /v1/agents/{agent}/stream HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            match socket.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    seen.extend_from_slice(&buffer[..n]);
                    // The last chunk of a chunked body: the stream has ended cleanly.
                    if seen.ends_with(b"0\r\n\r\n") {
                        break;
                    }
                }
            }
        }
        (
            String::from_utf8_lossy(&seen).into_owned(),
            std::time::Instant::now(),
        )
    })
}

#[test]
fn sigterm_answers_a_held_long_poll_ends_an_open_stream_keeps_every_write_and_exits_0() {
    let mut relay = RelayServer::start();
    let alice = relay.register(json!({"id": "alice"}));
    let sent = relay.send(json!({"from": "user", "to": "alice", "body": "before the stop"}));
    assert_eq!(sent.status, 201, "{:?}", sent.body);
    let first = sent.body["message"]["id"].as_i64().unwrap();
    let stream = read_stream_to_end(&relay, "alice", &alice);
    let poll = {
        let url = format!("{}/v1/agents/alice/inbox?since={first}&wait=60", relay.base);
        let token = alice.clone();
        std::thread::spawn(move || {
            let reply = reqwest::blocking::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .unwrap();
            (
                reply.status().as_u16(),
                reply.text().unwrap(),
                std::time::Instant::now(),
            )
        })
    };
    // Both requests are in: the poll is held (nothing after `first`), the stream has sent one.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let stopped_at = std::time::Instant::now();

    let status = relay.terminate(std::time::Duration::from_secs(8));

    let status = status.expect("the server exits within 8 s of SIGTERM");
    assert!(status.success(), "exit status {status}");
    let (code, body, answered) = poll.join().unwrap();
    assert_eq!(
        (code, body.as_str()),
        (200, "[]"),
        "the held poll answers what there is"
    );
    assert!(answered.duration_since(stopped_at) < std::time::Duration::from_secs(5));
    let (events, ended) = stream.join().unwrap();
    assert!(events.contains("before the stop"), "{events}");
    assert!(
        events.ends_with("0\r\n\r\n"),
        "the stream ends with the chunked body's last chunk, not a reset: {events:?}"
    );
    assert!(ended.duration_since(stopped_at) < std::time::Duration::from_secs(5));
    let (ok, kept) = cli_call(
        &relay.db_path(),
        "get-message",
        &json!({"messageId": first}),
    );
    assert!(ok, "{kept}");
    assert_eq!(kept["body"], "before the stop");
}

#[test]
fn a_write_by_agent_relay_call_wakes_a_held_long_poll_within_a_second() {
    let relay = RelayServer::start();
    let alice = relay.register(json!({"id": "alice"}));
    let poll = {
        let url = format!("{}/v1/agents/alice/inbox?wait=20", relay.base);
        std::thread::spawn(move || {
            let reply = reqwest::blocking::Client::new()
                .get(url)
                .bearer_auth(alice)
                .send()
                .unwrap();
            let body: serde_json::Value = reply.json().unwrap();
            (body, std::time::Instant::now())
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));

    let (ok, sent) = cli_call(
        &relay.db_path(),
        "send-message",
        &json!({"input": {"from": "user", "to": "alice", "body": "from another process"}}),
    );
    let written = std::time::Instant::now();

    assert!(ok, "{sent}");
    let (inbox, answered) = poll.join().unwrap();
    assert_eq!(inbox[0]["body"], "from another process", "{inbox}");
    let took = answered.saturating_duration_since(written);
    eprintln!("a call's write reached the held poll {took:?} after the call exited");
    assert!(took < std::time::Duration::from_secs(1), "took {took:?}");
}

#[test]
fn every_request_is_one_info_line_naming_the_callers_agent_never_its_token() {
    let relay = RelayServer::start();
    let alice = relay.register(json!({"id": "alice"}));
    assert_eq!(relay.get("/v1/agents/alice/inbox", &alice).status, 200);
    assert_eq!(
        relay.get("/v1/agents/alice/inbox", "not-a-token").status,
        401
    );
    assert_eq!(relay.get("/v1/agents/alice/inbox", &alice).status, 200);
    std::thread::sleep(std::time::Duration::from_millis(200));

    let logs = relay.logs();
    let inbox: Vec<&String> = logs
        .iter()
        .filter(|line| line.contains("/v1/agents/{agentId}/inbox"))
        .collect();
    assert_eq!(inbox.len(), 3, "one line a request: {logs:#?}");
    for line in &inbox {
        assert!(line.contains("INFO"), "{line}");
        assert!(
            line.contains("method=\"GET\"") || line.contains("method=GET"),
            "{line}"
        );
        assert!(line.contains("elapsed="), "{line}");
    }
    assert!(
        inbox[0].contains("status=200") && inbox[0].contains("caller=alice"),
        "{}",
        inbox[0]
    );
    assert!(
        inbox[1].contains("status=401") && inbox[1].contains("caller=unknown"),
        "{}",
        inbox[1]
    );
    assert!(inbox[2].contains("caller=alice"), "{}", inbox[2]);
    let everything = logs.join("\n");
    assert!(!everything.contains(&alice), "a token reached the logs");
    assert!(
        !everything.contains("not-a-token"),
        "a token reached the logs"
    );
    assert!(
        logs.iter().any(|line| line.contains("caller=operator")),
        "the operator's registration is logged as the operator"
    );
}

#[test]
fn an_agent_that_only_polls_is_alive_and_a_silent_one_is_reaped() {
    let relay = RelayServer::start_with(&["--reap-interval-secs", "1"]);
    let alice = relay.register(json!({"id": "alice", "label": "pool"}));
    let _bob = relay.register(json!({"id": "bob", "label": "pool"}));
    // Four of the five stale minutes pass; alice polls her inbox (a read, no heartbeat), bob
    // says nothing.
    relay.advance(4 * 60_000);
    assert_eq!(relay.get("/v1/agents/alice/inbox", &alice).status, 200);
    // The reaper records alice's call on its next round (every second here).
    std::thread::sleep(std::time::Duration::from_millis(2_500));
    relay.advance(2 * 60_000);
    std::thread::sleep(std::time::Duration::from_millis(2_500));

    let status = |id: &str| relay.get(&format!("/v1/agents/{id}"), OPERATOR).body["status"].clone();
    assert_eq!(status("bob"), "offline", "six minutes without a call");
    assert_eq!(status("alice"), "online", "two minutes after her last call");
    let sent = relay.send(json!({"from": "user", "to": "label:pool", "body": "job 2"}));
    assert_eq!(sent.body["recipients"], json!(["alice"]), "{:?}", sent.body);

    // Bob comes back by making any call with his token: online again at the next round.
    let bob_token = relay.post("/v1/agents/bob/token", OPERATOR, json!({})).body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(relay.get("/v1/agents/bob/inbox", &bob_token).status, 200);
    std::thread::sleep(std::time::Duration::from_millis(2_500));
    assert_eq!(status("bob"), "online", "a call counts as a sign of life");
}

/// An agent's status as the operator sees it.
fn status_of(relay: &RelayServer, id: &str) -> Json {
    relay.get(&format!("/v1/agents/{id}"), OPERATOR).body["status"].clone()
}

/// The flood of docs/security.md ("Bearer tokens: size, what is noted"): 3 s of requests (a
/// thousand or more), each with another 100 KB token nobody holds. It must cost the server no lasting memory, and the
/// reaper rounds after it must still count the calls of an agent that was polling all along.
#[test]
fn a_flood_of_long_unknown_tokens_neither_grows_memory_nor_takes_a_polling_agent_offline() {
    let relay = RelayServer::start_with(&["--reap-interval-secs", "1"]);
    let alice = relay.register(json!({"id": "alice", "label": "pool"}));
    relay.register(json!({"id": "bob", "label": "pool"}));
    // Let the server settle (first calls, the first reaper round) before the first reading.
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    let before = resident_mib(relay.pid());

    // Four of the five stale minutes pass. The flood runs for 3 s (three reaper rounds) and
    // alice polls once in its middle (no heartbeat), so the round that takes her call takes a
    // whole second of the flood with it; bob says nothing.
    relay.advance(4 * 60_000);
    let client = reqwest::blocking::Client::new();
    let started = std::time::Instant::now();
    let mut polled = false;
    let mut sent = 0;
    while started.elapsed() < std::time::Duration::from_secs(3) {
        if !polled && started.elapsed() >= std::time::Duration::from_millis(1_500) {
            assert_eq!(relay.get("/v1/agents/alice/inbox", &alice).status, 200);
            polled = true;
        }
        let token = format!("{sent:06}{}", "x".repeat(100 * 1024));
        let status = client
            .get(format!("{}/v1/whoami", relay.base))
            .bearer_auth(&token)
            .send()
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 401, "flood request {sent}");
        sent += 1;
    }
    assert!(sent >= 300, "only {sent} flood requests in 3 s");
    let after = resident_mib(relay.pid());
    eprintln!("{sent} flood requests: server RSS before {before} MiB, after {after} MiB");

    // A round records alice's poll; two minutes later (six after her registration) a second
    // round finds bob stale and must not find alice so.
    std::thread::sleep(std::time::Duration::from_millis(2_500));
    relay.advance(2 * 60_000);
    std::thread::sleep(std::time::Duration::from_millis(2_500));
    assert_eq!(status_of(&relay, "bob"), "offline", "six minutes silent");
    assert_eq!(
        status_of(&relay, "alice"),
        "online",
        "alice polled two minutes ago; the flood must not have cost her her calls"
    );
    let job = relay.send(json!({"from": "user", "to": "label:pool", "body": "job"}));
    assert_eq!(job.body["recipients"], json!(["alice"]), "{:?}", job.body);
    assert!(
        after <= before + 48,
        "{sent} refused requests grew the server from {before} MiB to {after} MiB"
    );
    let after_rounds = resident_mib(relay.pid());
    assert!(
        after_rounds <= before + 48,
        "after the reaper rounds the server holds {after_rounds} MiB (from {before} MiB)"
    );
}

/// `POST /v1/reap` is the same reaper entry as the timer: the calls agents made are recorded
/// before anyone is found stale (docs/security.md, "One reaper entry").
#[test]
fn a_manual_reap_counts_the_calls_agents_made_first() {
    // The timer stays out of the way (an hour); only the manual route reaps here.
    let relay = RelayServer::start_with(&["--reap-interval-secs", "3600"]);
    let alice = relay.register(json!({"id": "alice", "label": "pool"}));
    relay.register(json!({"id": "bob", "label": "pool"}));
    // Alice polls every 200 s (inside the 5-minute stale time); bob is silent.
    for _ in 0..2 {
        relay.advance(200_000);
        assert_eq!(relay.get("/v1/agents/alice/inbox", &alice).status, 200);
        relay.reap();
    }
    assert_eq!(status_of(&relay, "bob"), "offline", "400 s silent");
    assert_eq!(
        status_of(&relay, "alice"),
        "online",
        "alice polled just before each reap"
    );
    let sent = relay.send(json!({"from": "user", "to": "label:pool", "body": "job"}));
    assert_eq!(sent.body["recipients"], json!(["alice"]), "{:?}", sent.body);
}
