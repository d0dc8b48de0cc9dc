//! Push delivery over HTTP: long-polls that wake when a matching message commits, server-sent
//! event streams that resume without loss or duplicates, the same tokens as the inbox, a thousand
//! idle waiters, and `agent-relay watch`.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::sse::EventStream;
use common::{Backend, Json, OPERATOR, RelayServer, id_of, ids, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Starts a long-poll on another thread; the receiver gets the reply and when it arrived.
fn long_poll(
    relay: &RelayServer,
    path: String,
    token: &str,
) -> mpsc::Receiver<(common::Reply, Instant)> {
    relay.request_in_background("GET", &path, token, None)
}

fn a_long_poll_answers_at_once_when_the_inbox_has_something(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let alice = relay.register(json!({"id": "alice"}));
    let sent = id_of(&relay.send(json!({"from": "user", "to": "alice", "body": "waiting"})));
    let started = Instant::now();
    let reply = relay.get("/v1/agents/alice/inbox?wait=30", &alice);
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(ids(&reply.body), [sent]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a non-empty inbox must not be held (took {:?})",
        started.elapsed()
    );
}

fn a_long_poll_with_nothing_to_deliver_answers_an_empty_list_when_the_wait_ends(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let alice = relay.register(json!({"id": "alice"}));
    let started = Instant::now();
    let reply = relay.get("/v1/agents/alice/inbox?wait=1", &alice);
    let waited = started.elapsed();
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body, json!([]));
    assert!(
        waited >= Duration::from_millis(950),
        "the poll was not held for its wait: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(20),
        "held far too long: {waited:?}"
    );
}

fn the_wait_is_cut_to_the_servers_maximum_and_must_be_a_number(backend: Backend) {
    let relay = RelayServer::start_on(backend, &["--max-wait-secs", "1"]);
    let alice = relay.register(json!({"id": "alice"}));
    let started = Instant::now();
    let reply = relay.get("/v1/agents/alice/inbox?wait=3600", &alice);
    assert_eq!((reply.status, reply.body.clone()), (200, json!([])));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "an hour's wait must be cut to --max-wait-secs 1, took {:?}",
        started.elapsed()
    );
    let bad = relay.get("/v1/agents/alice/inbox?wait=soon", &alice);
    assert_eq!((bad.status, bad.code()), (400, "invalid"), "{:?}", bad.body);
}

fn a_long_poll_wakes_within_200_ms_of_a_matching_send_and_not_for_another_agents(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let alice = relay.register(json!({"id": "alice"}));
    relay.register(json!({"id": "bob"}));
    let poll = long_poll(&relay, "/v1/agents/alice/inbox?wait=60".to_owned(), &alice);
    // Let the poll reach its wait; were it slower, it would still find the message at once.
    std::thread::sleep(Duration::from_millis(500));

    let to_bob = relay.send(json!({"from": "user", "to": "bob", "body": "not for alice"}));
    assert_eq!(to_bob.status, 201);
    assert!(
        poll.recv_timeout(Duration::from_millis(1000)).is_err(),
        "a message to bob must not end alice's long-poll"
    );

    let to_alice = relay.send(json!({"from": "user", "to": "alice", "body": "wake up"}));
    let answered = Instant::now();
    assert_eq!(to_alice.status, 201);
    let (reply, arrived) = poll
        .recv_timeout(Duration::from_secs(30))
        .expect("alice's long-poll never answered");
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(ids(&reply.body), [id_of(&to_alice)]);
    let latency = arrived.saturating_duration_since(answered);
    assert!(
        latency < Duration::from_millis(200),
        "the long-poll answered {latency:?} after the send's response, not within 200 ms"
    );
}

fn a_long_poll_keeps_the_inbox_filters(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let alice = relay.register(json!({"id": "alice"}));
    let first = id_of(&relay.send(json!({"from": "user", "to": "alice", "body": "old"})));
    let poll = long_poll(
        &relay,
        format!("/v1/agents/alice/inbox?since={first}&kind=system&wait=60"),
        &alice,
    );
    std::thread::sleep(Duration::from_millis(300));
    relay.send(json!({"from": "user", "to": "alice", "body": "chat"}));
    assert!(
        poll.recv_timeout(Duration::from_millis(800)).is_err(),
        "a chat message must not answer a poll for kind=system"
    );
    let system =
        id_of(&relay.send(json!({"from": "user", "to": "alice", "body": "sys", "kind": "system"})));
    let (reply, _) = poll.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(ids(&reply.body), [system]);
}

fn a_long_poll_needs_the_agents_token(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    relay.register(json!({"id": "alice"}));
    let bob = relay.register(json!({"id": "bob"}));
    let started = Instant::now();
    let other = relay.get("/v1/agents/alice/inbox?wait=30", &bob);
    assert_eq!((other.status, other.code()), (403, "forbidden"));
    let unknown = relay.get("/v1/agents/alice/inbox?wait=30", "no-such-token");
    assert_eq!(unknown.status, 401, "{:?}", unknown.body);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a refused caller must not be held"
    );
}

/// Alice's (or another agent's) event stream, resuming after `last_event_id` when given.
fn agent_stream(relay: &RelayServer, agent: &str, token: &str, last: Option<i64>) -> EventStream {
    EventStream::open(relay, &format!("/v1/agents/{agent}/stream"), token, last)
}

fn send_to(relay: &RelayServer, agent: &str, body: &str) -> i64 {
    id_of(&relay.send(json!({"from": "user", "to": agent, "body": body})))
}

fn a_stream_delivers_the_inbox_and_then_each_message_as_it_commits_in_order(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let alice = relay.register(json!({"id": "alice"}));
    let before: Vec<i64> = (0..3)
        .map(|n| send_to(&relay, "alice", &format!("m{n}")))
        .collect();
    let mut stream = agent_stream(&relay, "alice", &alice, None);
    assert_eq!(
        stream.take_ids(3),
        before,
        "the waiting inbox first, oldest first"
    );
    relay.register(json!({"id": "bob"}));
    send_to(&relay, "bob", "not for alice");
    let after: Vec<i64> = (3..8)
        .map(|n| send_to(&relay, "alice", &format!("m{n}")))
        .collect();
    assert_eq!(stream.take_ids(5), after, "new messages in commit order");
    assert!(
        stream.next(Duration::from_millis(500)).is_none(),
        "nothing beyond alice's messages is pushed"
    );
}

fn a_stream_resumes_after_last_event_id_with_nothing_lost_or_repeated(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let alice = relay.register(json!({"id": "alice"}));
    let sent: Vec<i64> = (0..3)
        .map(|n| send_to(&relay, "alice", &format!("m{n}")))
        .collect();
    let mut stream = agent_stream(&relay, "alice", &alice, None);
    let seen = stream.take_ids(2);
    drop(stream);
    let mut all = sent.clone();
    all.extend((3..5).map(|n| send_to(&relay, "alice", &format!("m{n}"))));

    let mut resumed = agent_stream(&relay, "alice", &alice, Some(*seen.last().unwrap()));
    let rest = resumed.take_ids(3);
    assert!(
        resumed.next(Duration::from_millis(500)).is_none(),
        "a resumed stream repeats nothing"
    );
    let delivered: Vec<i64> = seen.into_iter().chain(rest).collect();
    assert_eq!(delivered, all, "every message exactly once, in order");

    let since = relay.get(&format!("/v1/agents/alice/stream?since={}", all[3]), "bad");
    assert_eq!(since.status, 401, "the since form is authenticated too");
}

fn a_stream_needs_the_agents_token_and_is_refused_before_it_starts(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    relay.register(json!({"id": "alice"}));
    let bob = relay.register(json!({"id": "bob"}));
    let other = relay.get("/v1/agents/alice/stream", &bob);
    assert_eq!(
        (other.status, other.code()),
        (403, "forbidden"),
        "{:?}",
        other.body
    );
    let wrong = relay.get("/v1/agents/alice/stream", "not-a-token");
    assert_eq!(
        (wrong.status, wrong.code()),
        (401, "unauthorized"),
        "{:?}",
        wrong.body
    );
    let none = relay.request("GET", "/v1/agents/alice/stream", None, None);
    assert_eq!(none.status, 401);
    let missing = relay.get("/v1/agents/nobody/stream", OPERATOR);
    assert_eq!(missing.status, 404, "{:?}", missing.body);
    let bad_cursor = relay.get("/v1/agents/alice/stream?since=yesterday", OPERATOR);
    assert_eq!(bad_cursor.status, 400);
}

fn a_stream_does_not_push_a_message_claimed_by_someone_else(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let alice = relay.register(json!({"id": "alice", "label": "backend"}));
    let bob = relay.register(json!({"id": "bob", "label": "backend"}));
    let job = id_of(
        &relay
            .send(json!({"from": "user", "to": "label:backend", "body": "job", "claimable": true})),
    );
    let claim = relay.post(
        &format!("/v1/messages/{job}/claim"),
        &bob,
        json!({"agentId": "bob"}),
    );
    assert_eq!(claim.status, 200, "{:?}", claim.body);
    let mut stream = agent_stream(&relay, "alice", &alice, None);
    let note = send_to(&relay, "alice", "plain note");
    assert_eq!(
        stream.take_ids(1),
        [note],
        "the job bob holds under a live lease is not pushed to alice"
    );
}

fn a_thousand_idle_long_polls_are_held_and_all_woken_by_one_send(backend: Backend) {
    const WAITERS: usize = 1000;
    // A thousand connections from one address: beyond the default per-address cap (512).
    let relay = RelayServer::start_on(backend, &["--max-connections-per-peer", "1100"]);
    let alice = relay.register(json!({"id": "alice"}));
    let addr = relay.base.trim_start_matches("http://").to_owned();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let request = format!(
        "GET /v1/agents/alice/inbox?wait=240 HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer {alice}\r\nConnection: close\r\n\r\n"
    );
    let waiters: Vec<_> = runtime.block_on(async {
        let mut waiters = Vec::with_capacity(WAITERS);
        for _ in 0..WAITERS {
            let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
            socket.write_all(request.as_bytes()).await.unwrap();
            waiters.push(tokio::spawn(async move {
                let mut answer = Vec::new();
                socket.read_to_end(&mut answer).await.map(|_| answer)
            }));
        }
        waiters
    });
    std::thread::sleep(Duration::from_secs(2));
    let early = waiters.iter().filter(|w| w.is_finished()).count();
    assert_eq!(
        early, 0,
        "{early} of {WAITERS} idle long-polls answered before any message"
    );
    assert_eq!(
        relay.get("/v1/agents/alice", OPERATOR).status,
        200,
        "the relay still answers other requests while {WAITERS} polls wait"
    );

    let sent = send_to(&relay, "alice", "everyone wake up");
    let answers = runtime.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(120),
            futures_util::future::join_all(waiters),
        )
        .await
        .expect("the long-polls did not all answer after the send")
    });
    for answer in answers {
        let answer = String::from_utf8(answer.unwrap().unwrap()).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "a waiter got {answer}");
        let body = answer.split("\r\n\r\n").nth(1).unwrap();
        let body: Json = serde_json::from_str(body).unwrap();
        assert_eq!(ids(&body), [sent], "every waiter gets the message");
    }
}

fn watch_prints_each_message_as_one_json_line(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let alice = relay.register(json!({"id": "alice"}));
    let first = send_to(&relay, "alice", "before");
    let mut watch = Command::new(common::binary())
        .args([
            "watch",
            "alice",
            "--url",
            &relay.base,
            "--since",
            &first.to_string(),
        ])
        .env("RELAY_TOKEN", &alice)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines_to, lines) = mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines_to.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let second = send_to(&relay, "alice", "after");
    let third = send_to(&relay, "alice", "again");
    let printed: Vec<Json> = (0..2)
        .map(|_| {
            let line = lines
                .recv_timeout(Duration::from_secs(30))
                .expect("watch printed nothing");
            serde_json::from_str(&line).unwrap()
        })
        .collect();
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(
        printed
            .iter()
            .map(|m| m["id"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [second, third],
        "watch prints the messages after --since, in order"
    );
    assert_eq!(printed[0]["body"], "after");
}

fn watch_with_a_wrong_token_fails(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    relay.register(json!({"id": "alice"}));
    let output = Command::new(common::binary())
        .args(["watch", "alice", "--url", &relay.base, "--token", "wrong"])
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "watch with a wrong token must fail"
    );
    assert!(output.stdout.is_empty());
}

crate::on_both_backends!(
    a_long_poll_answers_at_once_when_the_inbox_has_something,
    a_long_poll_with_nothing_to_deliver_answers_an_empty_list_when_the_wait_ends,
    the_wait_is_cut_to_the_servers_maximum_and_must_be_a_number,
    a_long_poll_wakes_within_200_ms_of_a_matching_send_and_not_for_another_agents,
    a_long_poll_keeps_the_inbox_filters,
    a_long_poll_needs_the_agents_token,
    a_stream_delivers_the_inbox_and_then_each_message_as_it_commits_in_order,
    a_stream_resumes_after_last_event_id_with_nothing_lost_or_repeated,
    a_stream_needs_the_agents_token_and_is_refused_before_it_starts,
    a_stream_does_not_push_a_message_claimed_by_someone_else,
    a_thousand_idle_long_polls_are_held_and_all_woken_by_one_send,
    watch_prints_each_message_as_one_json_line,
    watch_with_a_wrong_token_fails,
);
