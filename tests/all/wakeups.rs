//! Wake keys never buy a missed wake-up (docs/design.md, "Wake keys"): a held long-poll, event
//! stream or claim-next whose agent a write concerns is always woken, whichever way the write
//! came: a send to a group target (each member's waiters, nobody else's), a claim the reaper
//! takes back when its lease ran out, a write through `agent-relay call --url` (another process,
//! through this relay), and a write by another process straight into the database.

use crate::common;

use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::sse::EventStream;
use common::{Backend, OPERATOR, RelayServer, Reply, binary, id_of, ids, json};

/// How long a woken waiter may take to answer. Generous: these tests are about whether a waiter
/// wakes, not how fast (relay-bench measures that), and they run beside the whole suite.
const WOKEN_WITHIN: Duration = Duration::from_secs(10);

/// A long-poll of the agent's inbox after message `since` (so it is held until something new).
fn held_inbox(
    relay: &RelayServer,
    agent: &str,
    token: &str,
    since: i64,
) -> mpsc::Receiver<(Reply, Instant)> {
    let path = format!("/v1/agents/{agent}/inbox?wait=60&since={since}");
    relay.request_in_background("GET", &path, token, None)
}

fn woken(waiter: &mpsc::Receiver<(Reply, Instant)>, who: &str) -> Reply {
    let (reply, _) = waiter
        .recv_timeout(WOKEN_WITHIN)
        .unwrap_or_else(|_| panic!("{who}'s waiter was not woken within {WOKEN_WITHIN:?}"));
    assert_eq!(reply.status, 200, "{who}: {:?}", reply.body);
    reply
}

fn a_send_to_a_group_wakes_each_members_long_poll_and_stream_and_no_one_elses(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let alice = relay.register(json!({"id": "alice", "label": "backend"}));
    let bob = relay.register(json!({"id": "bob", "label": "backend", "tags": ["db"]}));
    let carol = relay.register(json!({"id": "carol", "label": "frontend"}));
    let polls = [
        ("alice", held_inbox(&relay, "alice", &alice, 0)),
        ("bob", held_inbox(&relay, "bob", &bob, 0)),
    ];
    let carols = held_inbox(&relay, "carol", &carol, 0);
    let mut bobs_stream = EventStream::open(&relay, "/v1/agents/bob/stream", &bob, None);
    relay.until_waiters(4);

    let sent = id_of(&relay.send(json!({"from": "user", "to": "label:backend", "body": "all"})));
    for (who, poll) in &polls {
        assert_eq!(ids(&woken(poll, who).body), [sent], "{who}");
    }
    let (streamed, _) = bobs_stream
        .next_message(WOKEN_WITHIN)
        .expect("bob's stream was not woken by the send to his label");
    assert_eq!(streamed, sent);
    assert!(
        carols.recv_timeout(Duration::from_millis(500)).is_err(),
        "a send to label:backend must not answer carol's long-poll"
    );

    // A tag and broadcast are group targets too.
    let bobs = held_inbox(&relay, "bob", &bob, sent);
    relay.until_waiters(3);
    let tagged = id_of(&relay.send(json!({"from": "user", "to": "tag:db", "body": "db"})));
    assert_eq!(ids(&woken(&bobs, "bob").body), [tagged]);
    assert_eq!(
        bobs_stream.next_message(WOKEN_WITHIN).map(|m| m.0),
        Some(tagged)
    );
    let everyone = id_of(&relay.send(json!({"from": "user", "to": "broadcast", "body": "hi"})));
    assert_eq!(ids(&woken(&carols, "carol").body), [everyone]);
    assert_eq!(
        bobs_stream.next_message(WOKEN_WITHIN).map(|m| m.0),
        Some(everyone)
    );
}

fn a_claim_the_reaper_takes_back_wakes_a_worker_waiting_in_claim_next(backend: Backend) {
    // Only the test's own reaper pass runs, and nobody goes quiet for it.
    let relay = RelayServer::start_on(
        backend,
        &[
            "--reap-interval-secs",
            "3600",
            "--setting",
            "stale-ttl-ms=3600000",
        ],
    );
    let alice = relay.register(json!({"id": "alice", "label": "backend"}));
    let bob = relay.register(json!({"id": "bob", "label": "backend"}));
    let sent = relay
        .send(json!({"from": "user", "to": "label:backend", "body": "crashes", "claimable": true}));
    let id = id_of(&sent);
    let taken = relay.post(
        "/v1/agents/alice/claim-next",
        &alice,
        json!({"leaseMs": 120_000}),
    );
    assert_eq!(taken.body["id"], id, "{:?}", taken.body);
    let waiting = relay.request_in_background(
        "POST",
        "/v1/agents/bob/claim-next",
        &bob,
        Some(json!({"wait": 60})),
    );
    relay.until_waiters(1);
    assert!(
        waiting.recv_timeout(Duration::from_millis(300)).is_err(),
        "the job is alice's while her lease runs"
    );

    // Alice's lease runs out (on the relay's clock; its due timer is two minutes of wall time
    // away), and the reaper's pass is what must wake bob. (The pass first records the calls
    // agents made, last-seen times that concern no held claim-next: were bob woken by that, he
    // would take the job himself and the pass would release nothing.)
    relay.advance(120_001);
    let report = relay.reap();
    assert_eq!(report["releasedClaims"], 1, "{report}");
    let reply = woken(&waiting, "bob");
    assert_eq!(reply.body["id"], id, "{:?}", reply.body);
    assert_eq!(reply.body["claimedBy"], "bob", "{:?}", reply.body);
    assert_eq!(reply.body["attempts"], 2, "{:?}", reply.body);
}

/// `agent-relay call` as another process: through the relay (`--url`) or into its database.
fn call(relay: &RelayServer, through_url: bool, body: &str) -> serde_json::Value {
    let mut command = Command::new(binary());
    command.arg("call");
    if through_url {
        command.args(["--url", &relay.base, "--token", OPERATOR]);
    } else {
        command.arg("--db").arg(relay.db_arg());
    }
    let input = json!({"input": {"from": "user", "to": "label:backend", "body": body}});
    let out = command
        .arg("send-message")
        .arg(input.to_string())
        .env("RELAY_OPERATOR_TOKEN", OPERATOR)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::described(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn writes_by_another_process_wake_the_waiters_they_concern(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let alice = relay.register(json!({"id": "alice", "label": "backend"}));
    let carol = relay.register(json!({"id": "carol", "label": "frontend"}));
    let carols = held_inbox(&relay, "carol", &carol, 0);
    let mut alices_stream = EventStream::open(&relay, "/v1/agents/alice/stream", &alice, None);
    let mut seen = Vec::new();
    for (through_url, body) in [(true, "through the relay"), (false, "into the database")] {
        let poll = held_inbox(&relay, "alice", &alice, seen.last().copied().unwrap_or(0));
        relay.until_waiters(3);
        let sent = call(&relay, through_url, body);
        let id = sent["message"]["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("{sent}"));
        seen.push(id);
        let reply = woken(&poll, body);
        assert_eq!(ids(&reply.body), [id], "{body}");
        let (streamed, message) = alices_stream
            .next_message(WOKEN_WITHIN)
            .unwrap_or_else(|| panic!("alice's stream was not woken by a call {body}"));
        assert_eq!((streamed, message["body"].as_str()), (id, Some(body)));
    }
    assert!(
        carols.recv_timeout(Duration::from_millis(300)).is_err(),
        "neither write was carol's"
    );
}

crate::on_both_backends!(
    a_send_to_a_group_wakes_each_members_long_poll_and_stream_and_no_one_elses,
    a_claim_the_reaper_takes_back_wakes_a_worker_waiting_in_claim_next,
    writes_by_another_process_wake_the_waiters_they_concern,
);
