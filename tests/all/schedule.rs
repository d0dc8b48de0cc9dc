//! Jobs that wait for a time (docs/http-api.md §2, "Jobs that wait for a time"): a job sent
//! with `runAt` or `delayMs` is listed as `scheduled` and claimed by nobody before its
//! `notBefore`; a claim-next held waiting is answered when it becomes due (or when a job comes
//! back from its retry backoff), with no polling by the client.

use crate::common;
use crate::jobs::{act, claim_next, message, pool};

use std::time::{Duration, Instant};

use common::{Backend, Json, OPERATOR, RelayServer, Reply, id_of, ids, json, now_ms};

fn scheduled_job(relay: &RelayServer, body: &str, when: Json) -> Reply {
    let mut message = json!({"from": "user", "to": "label:backend", "body": body,
        "claimable": true});
    for (field, value) in when.as_object().unwrap() {
        message[field] = value.clone();
    }
    relay.send(message)
}

fn listed(relay: &RelayServer, state: &str) -> Vec<i64> {
    let reply = relay.get(&format!("/v1/messages?state={state}"), OPERATOR);
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    ids(&reply.body)
}

fn jobs_counted(relay: &RelayServer, state: &str) -> i64 {
    let stats = relay.get("/v1/stats", OPERATOR);
    assert_eq!(stats.status, 200, "{:?}", stats.body);
    stats.body["jobs"][state].as_i64().unwrap()
}

fn a_scheduled_job_is_listed_as_scheduled_and_claimed_by_nobody_before_its_time(backend: Backend) {
    let (relay, alice, bob) = pool(backend);
    let before = now_ms();
    let sent = scheduled_job(&relay, "nightly build", json!({"delayMs": 60_000}));
    assert_eq!(sent.status, 201, "{:?}", sent.body);
    let id = id_of(&sent);
    let not_before = sent.body["message"]["notBefore"]
        .as_i64()
        .expect("notBefore on the sent job");
    assert!(
        (before + 60_000..=now_ms() + 60_000).contains(&not_before),
        "notBefore {not_before} is not 60 s after the send"
    );
    assert_eq!(message(&relay, id)["notBefore"], not_before);
    // A runAt in the past is due now; one ahead is kept as given.
    let past = scheduled_job(&relay, "overdue", json!({"runAt": before - 3_600_000}));
    assert_eq!(past.status, 201, "{:?}", past.body);
    assert_eq!(
        past.body["message"]["notBefore"],
        Json::Null,
        "{:?}",
        past.body
    );
    let at = before + 120_000;
    let later = scheduled_job(&relay, "later", json!({"runAt": at}));
    assert_eq!(later.body["message"]["notBefore"], at, "{:?}", later.body);
    let later = id_of(&later);

    assert_eq!(listed(&relay, "scheduled"), vec![id, later]);
    assert_eq!(listed(&relay, "open"), vec![id_of(&past)]);
    assert_eq!(jobs_counted(&relay, "scheduled"), 2);
    assert_eq!(
        relay.inbox_ids("bob", &bob, "?state=scheduled"),
        vec![id, later]
    );

    // The overdue job is taken at once; the scheduled ones by nobody, by id nor by claim-next.
    let first = claim_next(&relay, "alice", &alice, json!({}));
    assert_eq!(first.body["id"], id_of(&past), "{:?}", first.body);
    let none = claim_next(&relay, "bob", &bob, json!({}));
    assert_eq!(none.status, 204, "{:?}", none.body);
    let early = act(&relay, &bob, id, "claim", json!({"agentId": "bob"}));
    assert_eq!(early.status, 409, "{:?}", early.body);
    let said = early.body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        said.contains("notBefore") && said.contains(&not_before.to_string()),
        "the refusal says when: {said}"
    );

    // Its time comes (the relay's clock also runs, hence the second of slack).
    relay.advance(61_000);
    assert_eq!(listed(&relay, "scheduled"), vec![later]);
    let due = claim_next(&relay, "bob", &bob, json!({}));
    assert_eq!(due.body["id"], id, "{:?}", due.body);
    assert_eq!(due.body["attempts"], 1, "{:?}", due.body);
    assert_eq!(jobs_counted(&relay, "scheduled"), 1);
    relay.advance(60_000);
    let last = act(&relay, &bob, later, "claim", json!({"agentId": "bob"}));
    assert_eq!(last.status, 200, "{:?}", last.body);
}

/// Starts a claim-next held for up to 30 s and waits until the relay holds it.
fn held_claim_next(
    relay: &RelayServer,
    agent: &str,
    token: &str,
) -> std::sync::mpsc::Receiver<(Reply, Instant)> {
    let waiting = relay.request_in_background(
        "POST",
        &format!("/v1/agents/{agent}/claim-next"),
        token,
        Some(json!({"wait": 30})),
    );
    relay.until_waiters(1);
    waiting
}

/// The epoch ms (machine clock) of a moment measured with `Instant`.
fn epoch_of(moment: Instant) -> i64 {
    now_ms() - i64::try_from(moment.elapsed().as_millis()).unwrap()
}

fn a_held_claim_next_gets_a_scheduled_job_within_200_ms_of_its_time(backend: Backend) {
    let (relay, alice, _bob) = pool(backend);
    let waiting = held_claim_next(&relay, "alice", &alice);
    let sent = scheduled_job(&relay, "at its time", json!({"delayMs": 1_500}));
    assert_eq!(sent.status, 201, "{:?}", sent.body);
    let due = sent.body["message"]["notBefore"].as_i64().unwrap();
    assert!(
        waiting.recv_timeout(Duration::from_millis(1_000)).is_err(),
        "the held claim-next was answered before the job was due"
    );
    let (reply, arrived) = waiting
        .recv_timeout(Duration::from_secs(20))
        .expect("the held claim-next never answered");
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body["id"], id_of(&sent), "{:?}", reply.body);
    let late = epoch_of(arrived) - due;
    assert!(
        (0..200).contains(&late),
        "answered {late} ms after the job's time {due}, not within 200 ms"
    );
}

fn a_held_claim_next_gets_a_job_back_from_its_backoff_at_its_time(backend: Backend) {
    let (relay, alice, bob) = pool(backend);
    let sent = scheduled_job(&relay, "flaky", json!({}));
    let id = id_of(&sent);
    let taken = claim_next(&relay, "alice", &alice, json!({}));
    assert_eq!(taken.body["id"], id, "{:?}", taken.body);
    let waiting = held_claim_next(&relay, "bob", &bob);
    let released = act(
        &relay,
        &alice,
        id,
        "release",
        json!({"agentId": "alice", "retryInMs": 1_200}),
    );
    assert_eq!(released.status, 200, "{:?}", released.body);
    let due = released.body["notBefore"]
        .as_i64()
        .expect("notBefore after the release");
    let (reply, arrived) = waiting
        .recv_timeout(Duration::from_secs(20))
        .expect("the held claim-next never answered");
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body["id"], id, "{:?}", reply.body);
    let late = epoch_of(arrived) - due;
    assert!(
        (0..200).contains(&late),
        "answered {late} ms after the job's time {due}, not within 200 ms"
    );
}

fn a_bad_time_is_refused_naming_the_field_and_nothing_is_stored(backend: Backend) {
    let (relay, _alice, _bob) = pool(backend);
    let year = 365 * 86_400_000_i64;
    let cases = [
        (
            json!({"runAt": now_ms() + 60_000, "delayMs": 5}),
            "runAt and delayMs",
        ),
        (json!({"runAt": -1}), "runAt"),
        (json!({"runAt": now_ms() + 2 * year}), "runAt"),
        (json!({"delayMs": -5}), "delayMs"),
        (json!({"delayMs": year + 1}), "delayMs"),
    ];
    for (when, field) in cases {
        let reply = scheduled_job(&relay, "bad", when.clone());
        assert_eq!(reply.status, 400, "{when}: {:?}", reply.body);
        let said = reply.body["error"]["message"].as_str().unwrap_or_default();
        assert!(said.contains(field), "{when}: {said} does not name {field}");
    }
    let chat = relay.send(json!({"from": "user", "to": "alice", "body": "hi", "delayMs": 1000}));
    assert_eq!(chat.status, 400, "{:?}", chat.body);
    assert!(
        chat.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("delayMs"),
        "{:?}",
        chat.body
    );
    let all = relay.get("/v1/messages", OPERATOR);
    assert_eq!(
        ids(&all.body),
        Vec::<i64>::new(),
        "a refused send stored nothing"
    );
}

crate::on_both_backends!(
    a_scheduled_job_is_listed_as_scheduled_and_claimed_by_nobody_before_its_time,
    a_held_claim_next_gets_a_scheduled_job_within_200_ms_of_its_time,
    a_held_claim_next_gets_a_job_back_from_its_backoff_at_its_time,
    a_bad_time_is_refused_naming_the_field_and_nothing_is_stored,
);
