//! Cancelling jobs and jobs that wait for others (docs/http-api.md §2, "Cancelling a job" and
//! "Jobs that wait for others"): a cancelled job is never offered again and its holder's calls
//! answer 409 `cancelled`; a job sent `after` others is claimable once they are completed, and
//! is dead-lettered (its sender told) when one of them is dead-lettered or cancelled.

use std::sync::Mutex;

use crate::common::{self, Backend, OPERATOR, RelayServer, id_of, ids, json};
use crate::jobs::{act, claim_next, message, pool, task, task_event};

/// A job from `from` (sent with its token) to the `backend` pool, waiting for `after`.
fn job_after(relay: &RelayServer, from: &str, token: &str, body: &str, after: &[i64]) -> i64 {
    let sent = relay.post(
        "/v1/messages",
        token,
        json!({"from": from, "to": "label:backend", "body": body, "claimable": true,
               "after": after}),
    );
    assert_eq!(sent.status, 201, "{:?}", sent.body);
    id_of(&sent)
}

/// The `system` notices an agent was sent, oldest first.
fn notices(relay: &RelayServer, agent: &str, token: &str) -> Vec<common::Json> {
    let told = relay.get(&format!("/v1/agents/{agent}/inbox?kind=system"), token);
    assert_eq!(told.status, 200, "{:?}", told.body);
    told.body.as_array().unwrap().clone()
}

fn cancel_during_a_lease_the_holders_renew_and_complete_get_409_cancelled(backend: Backend) {
    let (relay, alice, bob) = pool(backend);
    let boss = relay.register(json!({"id": "boss"}));
    let id = job_after(&relay, "boss", &boss, "migrate the tables", &[]);
    let claimed = claim_next(&relay, "alice", &alice, json!({"leaseMs": 60_000}));
    assert_eq!(claimed.body["id"], id, "{:?}", claimed.body);

    let cancelled = act(
        &relay,
        &boss,
        id,
        "cancel",
        json!({"reason": "wrong database"}),
    );

    assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);
    assert_eq!(cancelled.body["cancelledBy"], "boss");
    assert_eq!(cancelled.body["cancelReason"], "wrong database");
    assert!(cancelled.body["cancelledAt"].as_i64().is_some());
    assert!(
        cancelled.body.get("claimedBy").is_none(),
        "{}",
        cancelled.body
    );
    for action in ["complete", "renew", "release"] {
        let refused = act(&relay, &alice, id, action, json!({"agentId": "alice"}));
        assert_eq!(
            (refused.status, refused.code()),
            (409, "cancelled"),
            "{action}: {:?}",
            refused.body
        );
        assert!(
            refused.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("wrong database"),
            "{:?}",
            refused.body
        );
    }
    assert_eq!(claim_next(&relay, "bob", &bob, json!({})).status, 204);
    let by_id = act(&relay, &bob, id, "claim", json!({"agentId": "bob"}));
    assert_eq!((by_id.status, by_id.code()), (409, "cancelled"));
    assert_eq!(relay.inbox_ids("bob", &bob, "?state=cancelled"), [id]);
    assert!(relay.inbox_ids("bob", &bob, "?state=open").is_empty());
    let listed = relay.get("/v1/messages?state=cancelled", OPERATOR);
    assert_eq!(ids(&listed.body), [id], "{:?}", listed.body);
    let told = notices(&relay, "alice", &alice);
    assert_eq!(told.len(), 1, "the holder is told: {told:?}");
    assert_eq!(
        told[0]["payload"],
        json!({"messageId": id, "cancelledBy": "boss", "reason": "wrong database"})
    );
    let again = act(&relay, OPERATOR, id, "cancel", json!({}));
    assert_eq!(again.status, 200, "cancelling again answers it as it is");
    assert_eq!(again.body["cancelledBy"], "boss");
    assert_eq!(message(&relay, id)["cancelReason"], "wrong database");
}

fn cancelling_is_for_the_sender_or_the_operator_and_for_open_or_claimed_jobs(backend: Backend) {
    let (relay, alice, bob) = pool(backend);
    let boss = relay.register(json!({"id": "boss"}));
    let id = job_after(&relay, "boss", &boss, "index the docs", &[]);

    let by_worker = act(&relay, &bob, id, "cancel", json!({}));
    assert_eq!(by_worker.status, 403, "{:?}", by_worker.body);
    let chat = id_of(&relay.post(
        "/v1/messages",
        &boss,
        json!({"from": "boss", "to": "alice", "body": "hello"}),
    ));
    let not_a_job = act(&relay, &boss, chat, "cancel", json!({}));
    assert_eq!(not_a_job.status, 400, "{:?}", not_a_job.body);
    assert!(
        not_a_job.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a job")
    );
    let unknown = act(&relay, OPERATOR, 999_999, "cancel", json!({}));
    assert_eq!(unknown.status, 404, "{:?}", unknown.body);
    let long = act(
        &relay,
        &boss,
        id,
        "cancel",
        json!({"reason": "x".repeat(2000)}),
    );
    assert!(long.status >= 400 && long.status < 500, "{:?}", long.body);
    assert!(
        long.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("reason")
    );
    assert!(
        message(&relay, id).get("cancelledAt").is_none(),
        "nothing applied"
    );

    act(&relay, &alice, id, "claim", json!({"agentId": "alice"}));
    act(&relay, &alice, id, "complete", json!({"agentId": "alice"}));
    let completed = act(&relay, OPERATOR, id, "cancel", json!({}));
    assert_eq!(completed.status, 409, "{:?}", completed.body);
    assert!(message(&relay, id).get("cancelledAt").is_none());
}

fn a_chain_a_b_c_completes_in_order_with_three_workers(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let workers: Vec<(String, String)> = (0..3)
        .map(|w| {
            let id = format!("w{w}");
            (
                id.clone(),
                relay.register(json!({"id": id, "label": "backend"})),
            )
        })
        .collect();
    let boss = relay.register(json!({"id": "boss"}));
    let a = job_after(&relay, "boss", &boss, "a", &[]);
    let b = job_after(&relay, "boss", &boss, "b", &[a]);
    let c = job_after(&relay, "boss", &boss, "c", &[b]);
    assert_eq!(message(&relay, b)["blockedBy"], json!([a]));
    assert_eq!(message(&relay, c)["blockedBy"], json!([b]));
    assert_eq!(
        relay.inbox_ids("w0", &workers[0].1, "?state=blocked"),
        [b, c]
    );
    assert_eq!(relay.inbox_ids("w0", &workers[0].1, "?state=open"), [a]);
    let early = act(&relay, &workers[0].1, c, "claim", json!({"agentId": "w0"}));
    assert_eq!(early.status, 409, "{:?}", early.body);
    assert!(
        early.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("waits for")
    );

    let claimed: Mutex<Vec<i64>> = Mutex::default();
    std::thread::scope(|scope| {
        for (agent, token) in &workers {
            let (claimed, relay) = (&claimed, &relay);
            scope.spawn(move || {
                while claimed.lock().unwrap().len() < 3 {
                    let next = claim_next(relay, agent, token, json!({"wait": 2}));
                    if next.status == 204 {
                        continue;
                    }
                    assert_eq!(next.status, 200, "{:?}", next.body);
                    assert_eq!(next.body["blockedBy"], json!([]), "{:?}", next.body);
                    let id = next.body["id"].as_i64().unwrap();
                    claimed.lock().unwrap().push(id);
                    let done = act(relay, token, id, "complete", json!({"agentId": agent}));
                    assert_eq!(done.status, 200, "{:?}", done.body);
                }
            });
        }
    });

    assert_eq!(*claimed.lock().unwrap(), [a, b, c]);
    for id in [a, b, c] {
        assert!(message(&relay, id)["completedAt"].as_i64().is_some());
    }
}

/// Claims and releases job `id` until its attempts (the default 5) run out.
fn exhaust(relay: &RelayServer, agent: &str, token: &str, id: i64) {
    for _ in 0..5 {
        assert_eq!(
            act(relay, token, id, "claim", json!({"agentId": agent})).status,
            200
        );
        assert_eq!(
            act(relay, token, id, "release", json!({"agentId": agent})).status,
            200
        );
    }
    assert!(message(relay, id)["deadLetteredAt"].as_i64().is_some());
}

fn a_dead_lettered_dependency_dead_letters_its_dependants_and_tells_their_senders(
    backend: Backend,
) {
    let (relay, alice, _bob) = pool(backend);
    let boss = relay.register(json!({"id": "boss"}));
    let carol = relay.register(json!({"id": "carol", "label": "backend"}));
    let a = job_after(&relay, "boss", &boss, "a", &[]);
    let b = job_after(&relay, "boss", &boss, "b", &[a]);
    let c = job_after(&relay, "carol", &carol, "c", &[b]);

    exhaust(&relay, "alice", &alice, a);

    for id in [b, c] {
        let dead = message(&relay, id);
        assert!(dead["deadLetteredAt"].as_i64().is_some(), "{dead}");
        assert_eq!(dead["attempts"], 0);
    }
    let to_boss = notices(&relay, "boss", &boss);
    assert_eq!(
        to_boss
            .iter()
            .map(|n| n["payload"].clone())
            .collect::<Vec<_>>(),
        [
            json!({"messageId": a, "attempts": 5, "reason": "released"}),
            json!({"messageId": b, "attempts": 0,
                   "reason": format!("job {a} it waits for was dead-lettered")}),
        ]
    );
    // The notice says how many attempts there were, and a dependant never had one.
    assert!(
        to_boss[0]["body"]
            .as_str()
            .unwrap()
            .contains("dead-lettered after 5 attempts (released)"),
        "{}",
        to_boss[0]
    );
    assert!(
        to_boss[1]["body"]
            .as_str()
            .unwrap()
            .contains("dead-lettered before any attempt (job "),
        "{}",
        to_boss[1]
    );
    let to_carol = notices(&relay, "carol", &carol);
    assert_eq!(to_carol.len(), 1, "{to_carol:?}");
    assert_eq!(
        to_carol[0]["payload"]["reason"],
        format!("job {b} it waits for was dead-lettered")
    );
    let waits_for_dead = relay.post(
        "/v1/messages",
        &boss,
        json!({"from": "boss", "to": "label:backend", "body": "d", "claimable": true,
               "after": [a]}),
    );
    assert_eq!(waits_for_dead.status, 409, "{:?}", waits_for_dead.body);
    let early_retry = relay.post(&format!("/v1/messages/{b}/retry"), OPERATOR, json!({}));
    assert_eq!(early_retry.status, 409, "{:?}", early_retry.body);
    assert!(
        early_retry.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("job {a}"))
    );
    for id in [a, b] {
        let retried = relay.post(&format!("/v1/messages/{id}/retry"), OPERATOR, json!({}));
        assert_eq!(retried.status, 200, "{:?}", retried.body);
    }
    assert_eq!(message(&relay, b)["blockedBy"], json!([a]));
}

fn cancelling_a_dependency_dead_letters_its_dependants(backend: Backend) {
    let (relay, alice, _bob) = pool(backend);
    let boss = relay.register(json!({"id": "boss"}));
    let a = job_after(&relay, "boss", &boss, "a", &[]);
    let other = job_after(&relay, "boss", &boss, "other", &[]);
    let b = job_after(&relay, "boss", &boss, "b", &[a, other]);

    let cancelled = act(&relay, &boss, a, "cancel", json!({"reason": "not needed"}));
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);

    assert!(message(&relay, b)["deadLetteredAt"].as_i64().is_some());
    assert!(message(&relay, other)["deadLetteredAt"].is_null());
    let told = notices(&relay, "boss", &boss);
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(
        told[0]["payload"]["reason"],
        format!("job {a} it waits for was cancelled")
    );
    assert_eq!(
        claim_next(&relay, "alice", &alice, json!({})).body["id"],
        other
    );
}

fn a_bad_after_is_refused_naming_the_id_and_nothing_is_sent(backend: Backend) {
    let (relay, _alice, _bob) = pool(backend);
    let boss = relay.register(json!({"id": "boss"}));
    let outsider = relay.register(json!({"id": "outsider"}));
    let job = job_after(&relay, "boss", &boss, "a", &[]);
    let chat = id_of(&relay.post(
        "/v1/messages",
        &boss,
        json!({"from": "boss", "to": "alice", "body": "hi"}),
    ));
    let count =
        |relay: &RelayServer| ids(&relay.get("/v1/messages?limit=500", OPERATOR).body).len();
    let before = count(&relay);
    let next_id = chat + 1;
    let too_many: Vec<i64> = (1..=101).collect();
    // The next id first: a refused send may use up ids (PostgreSQL's sequences do).
    for (from, token, after, claimable, names) in [
        ("boss", &boss, json!([next_id]), true, "itself".to_owned()),
        ("boss", &boss, json!([999_999]), true, "999999".to_owned()),
        (
            "boss",
            &boss,
            json!([chat]),
            true,
            format!("{chat} is not a job"),
        ),
        (
            "outsider",
            &outsider,
            json!([job]),
            true,
            format!("message {job}"),
        ),
        (
            "boss",
            &boss,
            json!(too_many),
            true,
            "at most 100".to_owned(),
        ),
        ("boss", &boss, json!([job]), false, "claimable".to_owned()),
        ("boss", &boss, json!([0]), true, "after".to_owned()),
    ] {
        let refused = relay.post(
            "/v1/messages",
            token,
            json!({"from": from, "to": "label:backend", "body": "b", "claimable": claimable,
                   "after": after}),
        );
        assert_eq!(refused.status, 400, "{after}: {:?}", refused.body);
        let text = refused.body["error"]["message"].as_str().unwrap();
        assert!(
            text.contains(&names) && text.contains("after"),
            "{after}: {text}"
        );
    }
    assert_eq!(count(&relay), before, "nothing half-applied");
}

fn cancelling_a_claimed_task_message_reopens_its_task(backend: Backend) {
    let (relay, alice, _bob) = pool(backend);
    let (task_id, message_id) = task_event(&relay);
    let claimed = claim_next(&relay, "alice", &alice, json!({"kind": "task"}));
    assert_eq!(claimed.body["id"], message_id, "{:?}", claimed.body);
    assert_eq!(task(&relay, task_id)["status"], "claimed");

    let cancelled = act(&relay, OPERATOR, message_id, "cancel", json!({}));

    assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);
    assert_eq!(task(&relay, task_id)["status"], "open");
    let events = relay
        .get(&format!("/v1/tasks/{task_id}/events"), OPERATOR)
        .body;
    let last = events.as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["kind"].as_str(), last["data"]["reason"].as_str()),
        (Some("released"), Some("cancelled")),
        "{last}"
    );
}

fn sends_racing_a_cancel_leave_no_job_waiting_for_the_cancelled_one(backend: Backend) {
    let (relay, _alice, _bob) = pool(backend);
    let boss = relay.register(json!({"id": "boss"}));
    let a = job_after(&relay, "boss", &boss, "a", &[]);
    let sent: Mutex<Vec<i64>> = Mutex::default();
    let odd: Mutex<Vec<String>> = Mutex::default();
    std::thread::scope(|scope| {
        for sender in 0..6 {
            let (relay, boss, sent, odd) = (&relay, &boss, &sent, &odd);
            scope.spawn(move || {
                for n in 0..15 {
                    let reply = relay.post(
                        "/v1/messages",
                        boss,
                        json!({"from": "boss", "to": "label:backend", "claimable": true,
                               "body": format!("{sender}/{n}"), "after": [a]}),
                    );
                    match reply.status {
                        201 => sent.lock().unwrap().push(id_of(&reply)),
                        409 => {}
                        status => odd
                            .lock()
                            .unwrap()
                            .push(format!("{status}: {:?}", reply.body)),
                    }
                }
            });
        }
        let (relay, boss, sent) = (&relay, &boss, &sent);
        scope.spawn(move || {
            // Cancel once some of the sends are in, while the others still run.
            while sent.lock().unwrap().len() < 10 {
                std::thread::yield_now();
            }
            let cancelled = act(relay, boss, a, "cancel", json!({}));
            assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);
        });
    });
    assert!(odd.lock().unwrap().is_empty(), "{:?}", odd.lock().unwrap());
    let sent = sent.into_inner().unwrap();
    assert!(sent.len() >= 10, "{sent:?}");
    for id in sent {
        assert!(
            message(&relay, id)["deadLetteredAt"].as_i64().is_some(),
            "job {id} was sent after {a} and must not wait for the cancelled job forever"
        );
    }
}

crate::on_both_backends!(
    sends_racing_a_cancel_leave_no_job_waiting_for_the_cancelled_one,
    cancelling_a_claimed_task_message_reopens_its_task,
    cancel_during_a_lease_the_holders_renew_and_complete_get_409_cancelled,
    cancelling_is_for_the_sender_or_the_operator_and_for_open_or_claimed_jobs,
    a_chain_a_b_c_completes_in_order_with_three_workers,
    a_dead_lettered_dependency_dead_letters_its_dependants_and_tells_their_senders,
    cancelling_a_dependency_dead_letters_its_dependants,
    a_bad_after_is_refused_naming_the_id_and_nothing_is_sent,
);
