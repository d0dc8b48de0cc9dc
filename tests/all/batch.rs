//! Taking several jobs at once (docs/http-api.md §2, "Taking several jobs at once"):
//! `POST /v1/agents/{id}/claim-next-batch` with `max` takes up to that many jobs in claim-next's
//! order, each under a lease of its own, and never one another worker took.

use crate::common;
use crate::jobs::{act, pool};

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Backend, Json, OPERATOR, RelayServer, Reply, json};

fn batch(relay: &RelayServer, agent: &str, token: &str, body: Json) -> Reply {
    relay.post(&format!("/v1/agents/{agent}/claim-next-batch"), token, body)
}

fn jobs_sent(relay: &RelayServer, count: usize, priority: impl Fn(usize) -> i64) -> Vec<i64> {
    (0..count)
        .map(|n| {
            let sent = relay.send(json!({"from": "user", "to": "label:backend",
                "body": format!("job {n}"), "claimable": true, "priority": priority(n)}));
            assert_eq!(sent.status, 201, "{:?}", sent.body);
            common::id_of(&sent)
        })
        .collect()
}

fn ids_of(reply: &Reply) -> Vec<i64> {
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    common::ids(&reply.body)
}

fn a_batch_takes_up_to_max_jobs_in_claim_next_order_each_under_its_own_lease(backend: Backend) {
    let (relay, alice, bob) = pool(backend);
    // Five jobs; the last two of higher priority.
    let ids = jobs_sent(&relay, 5, |n| if n >= 3 { 5 } else { 0 });
    let first = batch(
        &relay,
        "alice",
        &alice,
        json!({"max": 3, "leaseMs": 60_000}),
    );
    assert_eq!(ids_of(&first), vec![ids[3], ids[4], ids[0]]);
    for job in first.body.as_array().unwrap() {
        assert_eq!(job["claimedBy"], "alice", "{job}");
        assert_eq!(job["attempts"], 1, "{job}");
        assert!(job["claimExpiresAt"].as_i64().is_some(), "{job}");
    }
    // Each lease is its own: releasing one leaves the others held.
    let released = act(
        &relay,
        &alice,
        ids[0],
        "release",
        json!({"agentId": "alice"}),
    );
    assert_eq!(released.status, 200, "{:?}", released.body);
    let rest = batch(&relay, "bob", &bob, json!({"max": 100}));
    assert_eq!(ids_of(&rest), vec![ids[0], ids[1], ids[2]]);
    let none = batch(&relay, "bob", &bob, json!({"max": 10}));
    assert_eq!(ids_of(&none), Vec::<i64>::new());
}

fn four_workers_taking_ten_at_a_time_get_every_one_of_200_jobs_exactly_once(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let workers: Vec<(String, String)> = (0..4)
        .map(|n| {
            let id = format!("worker-{n}");
            let token = relay.register(json!({"id": id, "label": "backend"}));
            (id, token)
        })
        .collect();
    let sent: BTreeSet<i64> = jobs_sent(&relay, 200, |_| 0).into_iter().collect();
    let taken: Vec<Vec<i64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = workers
            .iter()
            .map(|(id, token)| {
                let relay = &relay;
                scope.spawn(move || {
                    let mut mine = Vec::new();
                    loop {
                        let reply = batch(relay, id, token, json!({"max": 10}));
                        let got = ids_of(&reply);
                        if got.is_empty() {
                            return mine;
                        }
                        assert!(got.len() <= 10, "{got:?}");
                        for job in &got {
                            let done = act(relay, token, *job, "complete", json!({"agentId": id}));
                            assert_eq!(done.status, 200, "{job}: {:?}", done.body);
                        }
                        mine.extend(got);
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all: Vec<i64> = taken.iter().flatten().copied().collect();
    let unique: BTreeSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), unique.len(), "a job was handed out twice");
    assert_eq!(unique, sent, "a job was lost");
    let completed = relay.get("/v1/messages?state=completed&limit=500", OPERATOR);
    assert_eq!(common::ids(&completed.body).len(), 200);
}

fn a_held_batch_is_answered_when_a_job_arrives(backend: Backend) {
    let (relay, alice, _bob) = pool(backend);
    let waiting = relay.request_in_background(
        "POST",
        "/v1/agents/alice/claim-next-batch",
        &alice,
        Some(json!({"max": 5, "wait": 30})),
    );
    relay.until_waiters(1);
    let ids = jobs_sent(&relay, 1, |_| 0);
    let (reply, _) = waiting
        .recv_timeout(Duration::from_secs(20))
        .expect("the held batch never answered");
    assert_eq!(ids_of(&reply), ids);
}

fn a_max_out_of_bounds_is_refused_naming_it_and_nothing_is_taken(backend: Backend) {
    let (relay, alice, _bob) = pool(backend);
    let ids = jobs_sent(&relay, 2, |_| 0);
    for max in [json!(0), json!(101), json!(-1), json!("ten")] {
        let reply = batch(&relay, "alice", &alice, json!({"max": max}));
        assert_eq!(reply.status, 400, "{max}: {:?}", reply.body);
        let said = reply.body["error"]["message"].as_str().unwrap_or_default();
        assert!(said.contains("max"), "{max}: {said}");
    }
    let missing = batch(&relay, "alice", &alice, json!({}));
    assert_eq!(missing.status, 400, "{:?}", missing.body);
    let open = relay.get("/v1/messages?state=open", OPERATOR);
    assert_eq!(common::ids(&open.body), ids, "a refused batch took nothing");
    let other = batch(&relay, "bob", &alice, json!({"max": 2}));
    assert_eq!(
        other.status, 403,
        "alice takes no jobs as bob: {:?}",
        other.body
    );
}

crate::on_both_backends!(
    a_batch_takes_up_to_max_jobs_in_claim_next_order_each_under_its_own_lease,
    four_workers_taking_ten_at_a_time_get_every_one_of_200_jobs_exactly_once,
    a_held_batch_is_answered_when_a_job_arrives,
    a_max_out_of_bounds_is_refused_naming_it_and_nothing_is_taken,
);
