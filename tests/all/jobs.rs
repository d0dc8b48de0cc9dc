//! Work hand-off over HTTP (docs/http-api.md §2, finishing work): the holder completes a job, after
//! which nobody is offered it again; claim-next hands each worker the next free job (and waits for
//! one); every claim counts an attempt, and a job whose attempts ran out is dead-lettered, its
//! sender told, until the operator retries it; a task and its current message settle together.

use crate::common;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Backend, Json, OPERATOR, RelayServer, Reply, id_of, ids, json};

/// A relay with alice and bob in the `backend` pool; their tokens.
pub(crate) fn pool(backend: Backend) -> (RelayServer, String, String) {
    let relay = RelayServer::start_on(backend, &[]);
    let alice = relay.register(json!({"id": "alice", "label": "backend"}));
    let bob = relay.register(json!({"id": "bob", "label": "backend"}));
    (relay, alice, bob)
}

fn job(relay: &RelayServer, body: &str) -> i64 {
    let sent =
        relay.send(json!({"from": "user", "to": "label:backend", "body": body, "claimable": true}));
    assert_eq!(sent.status, 201, "{:?}", sent.body);
    id_of(&sent)
}

pub(crate) fn act(relay: &RelayServer, token: &str, id: i64, action: &str, body: Json) -> Reply {
    relay.post(&format!("/v1/messages/{id}/{action}"), token, body)
}

pub(crate) fn claim_next(relay: &RelayServer, agent: &str, token: &str, body: Json) -> Reply {
    relay.post(&format!("/v1/agents/{agent}/claim-next"), token, body)
}

pub(crate) fn message(relay: &RelayServer, id: i64) -> Json {
    let reply = relay.get(&format!("/v1/messages/{id}"), OPERATOR);
    assert_eq!(reply.status, 200, "message {id}: {:?}", reply.body);
    reply.body
}

fn a_completed_job_is_never_offered_again_before_or_after_its_lease_would_have_run_out(
    backend: Backend,
) {
    let (relay, alice, bob) = pool(backend);
    let id = job(&relay, "rotate the logs");
    let claimed = act(
        &relay,
        &alice,
        id,
        "claim",
        json!({"agentId": "alice", "leaseMs": 10_000}),
    );
    assert_eq!(claimed.status, 200, "{:?}", claimed.body);
    assert_eq!(claimed.body["attempts"], 1, "a claim counts an attempt");

    let done = act(
        &relay,
        &alice,
        id,
        "complete",
        json!({"agentId": "alice", "result": {"rotated": 3}}),
    );

    assert_eq!(done.status, 200, "{:?}", done.body);
    assert_eq!(done.body["completedBy"], "alice");
    assert!(done.body["completedAt"].as_i64().is_some());
    assert_eq!(done.body["result"], json!({"rotated": 3}));
    assert!(
        done.body.get("claimedBy").is_none() && done.body.get("claimExpiresAt").is_none(),
        "completing ends the claim: {}",
        done.body
    );
    for moved in [0, 20_000] {
        relay.advance(moved);
        relay.reap();
        assert!(
            !relay.inbox_ids("bob", &bob, "").contains(&id),
            "bob is not offered alice's completed job ({moved} ms later)"
        );
        let again = act(&relay, &bob, id, "claim", json!({"agentId": "bob"}));
        assert_eq!(again.status, 409, "{:?}", again.body);
        assert!(
            again.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("already completed"),
            "{:?}",
            again.body
        );
        assert_eq!(claim_next(&relay, "bob", &bob, json!({})).status, 204);
    }
    assert!(
        relay.inbox_ids("alice", &alice, "").contains(&id),
        "the holder still sees the job it completed"
    );
    assert_eq!(message(&relay, id)["completedBy"], "alice");
    let thread = relay.get(&format!("/v1/threads/{id}"), &bob);
    assert_eq!(thread.body[0]["completedBy"], "alice", "{:?}", thread.body);
}

fn only_the_live_holder_completes_and_completing_again_answers_the_same(backend: Backend) {
    let (relay, alice, bob) = pool(backend);
    let id = job(&relay, "deploy");
    let unclaimed = act(&relay, &alice, id, "complete", json!({"agentId": "alice"}));
    assert_eq!(
        unclaimed.status, 409,
        "nobody holds it: {:?}",
        unclaimed.body
    );
    relay.post(
        "/v1/agents",
        &alice,
        json!({"id": "alice", "instanceId": "alice-1"}),
    );
    act(&relay, &alice, id, "claim", json!({"agentId": "alice"}));

    let by_bob = act(&relay, &bob, id, "complete", json!({"agentId": "bob"}));
    assert_eq!(by_bob.status, 409, "{:?}", by_bob.body);
    let stale = act(
        &relay,
        &alice,
        id,
        "complete",
        json!({"agentId": "alice", "instanceId": "alice-0", "epoch": 0}),
    );
    assert_eq!(
        (stale.status, stale.code()),
        (409, "stale_session"),
        "{:?}",
        stale.body
    );
    assert!(message(&relay, id).get("completedAt").is_none());
    let first = act(
        &relay,
        &alice,
        id,
        "complete",
        json!({"agentId": "alice", "result": {"version": "1.2"}}),
    );
    assert_eq!(first.status, 200, "{:?}", first.body);
    let second = act(
        &relay,
        &alice,
        id,
        "complete",
        json!({"agentId": "alice", "result": {"version": "other"}}),
    );
    assert_eq!(
        (second.status, &second.body),
        (200, &first.body),
        "completing twice answers the same message"
    );
    let bad = act(
        &relay,
        &alice,
        job(&relay, "x"),
        "complete",
        json!({"agentId": "alice", "result": "not an object"}),
    );
    assert_eq!(bad.status, 400, "{:?}", bad.body);
}

fn a_holder_whose_lease_ran_out_and_went_to_another_cannot_complete(backend: Backend) {
    let (relay, alice, bob) = pool(backend);
    let id = job(&relay, "migrate");
    act(
        &relay,
        &alice,
        id,
        "claim",
        json!({"agentId": "alice", "leaseMs": 1_000}),
    );
    relay.advance(1_001);
    let taken = act(&relay, &bob, id, "claim", json!({"agentId": "bob"}));
    assert_eq!(taken.status, 200, "{:?}", taken.body);
    assert_eq!(taken.body["attempts"], 2);

    let late = act(&relay, &alice, id, "complete", json!({"agentId": "alice"}));

    assert_eq!(late.status, 409, "{:?}", late.body);
    assert!(message(&relay, id).get("completedAt").is_none());
    let done = act(&relay, &bob, id, "complete", json!({"agentId": "bob"}));
    assert_eq!(done.body["completedBy"], "bob", "{:?}", done.body);
}

fn claim_next_takes_the_oldest_free_job_matching_the_filters_and_answers_204_when_none(
    backend: Backend,
) {
    let (relay, alice, bob) = pool(backend);
    let chat = relay.send(json!({"from": "user", "to": "label:backend", "body": "fyi"}));
    assert_eq!(chat.status, 201);
    let first = job(&relay, "first");
    let second = job(&relay, "second");
    let on_ops = id_of(
        &relay.send(json!({"from": "user", "to": "label:backend", "body": "ops",
        "claimable": true, "channel": "ops", "kind": "system"})),
    );
    act(&relay, &bob, first, "claim", json!({"agentId": "bob"}));

    let next = claim_next(&relay, "alice", &alice, json!({"leaseMs": 5_000}));

    assert_eq!(next.status, 200, "{:?}", next.body);
    assert_eq!(next.body["id"], second, "bob's live claim is skipped");
    assert_eq!(next.body["claimedBy"], "alice");
    assert_eq!(
        next.body["claimExpiresAt"].as_i64().unwrap() - next.body["claimedAt"].as_i64().unwrap(),
        5_000
    );
    let filtered = claim_next(&relay, "alice", &alice, json!({"kind": "job"}));
    assert_eq!(
        filtered.status, 204,
        "no other job of kind job: {:?}",
        filtered.body
    );
    assert_eq!(filtered.body, Json::Null, "204 has no body");
    let on_channel = claim_next(&relay, "alice", &alice, json!({"channel": "ops"}));
    assert_eq!(on_channel.body["id"], on_ops, "{:?}", on_channel.body);

    relay.advance(6 * 60 * 1000);
    let retaken = claim_next(&relay, "bob", &bob, json!({}));
    assert_eq!(
        retaken.body["id"], first,
        "an expired lease is free again, oldest first"
    );
    assert_eq!(retaken.body["attempts"], 2);
    let outsider = relay.register(json!({"id": "carol"}));
    assert_eq!(
        claim_next(&relay, "carol", &outsider, json!({})).status,
        204,
        "a job of another pool is not carol's"
    );
    let as_other = claim_next(&relay, "alice", &bob, json!({}));
    assert_eq!(as_other.status, 403, "{:?}", as_other.body);
    let bad = claim_next(&relay, "alice", &alice, json!({"leaseMs": 1}));
    assert_eq!(bad.status, 400, "{:?}", bad.body);
}

/// Starts a claim-next on another thread; the receiver gets the reply and when it arrived.
fn waiting_claim_next(
    relay: &RelayServer,
    agent: &str,
    token: &str,
    query: &str,
    body: Json,
) -> mpsc::Receiver<(Reply, Instant)> {
    let path = format!("/v1/agents/{agent}/claim-next{query}");
    relay.request_in_background("POST", &path, token, Some(body))
}

fn claim_next_with_wait_wakes_within_200_ms_of_a_matching_send(backend: Backend) {
    let (relay, alice, _bob) = pool(backend);
    relay.register(json!({"id": "dave", "label": "frontend"}));
    let waiting = waiting_claim_next(&relay, "alice", &alice, "", json!({"wait": 60}));
    // Let the call reach its wait; were it slower, it would still find the job at once.
    std::thread::sleep(Duration::from_millis(500));

    let elsewhere = relay.send(
        json!({"from": "user", "to": "label:frontend", "body": "css",
        "claimable": true}),
    );
    assert_eq!(elsewhere.status, 201);
    assert!(
        waiting.recv_timeout(Duration::from_millis(1000)).is_err(),
        "a job for another pool must not end alice's wait"
    );
    let id = job(&relay, "wake up");
    let sent = Instant::now();
    let (reply, arrived) = waiting
        .recv_timeout(Duration::from_secs(30))
        .expect("alice's claim-next never answered");

    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body["id"], id);
    assert_eq!(
        reply.body["claimedBy"], "alice",
        "the woken call claimed it"
    );
    let latency = arrived.saturating_duration_since(sent);
    assert!(
        latency < Duration::from_millis(200),
        "claim-next answered {latency:?} after the send's response, not within 200 ms"
    );
}

fn claim_next_with_wait_answers_204_when_the_wait_ends_without_a_job(backend: Backend) {
    let (relay, alice, _bob) = pool(backend);
    let started = Instant::now();
    let waiting = waiting_claim_next(&relay, "alice", &alice, "?wait=1", json!({}));
    let (reply, _) = waiting.recv_timeout(Duration::from_secs(30)).unwrap();
    let waited = started.elapsed();
    assert_eq!(reply.status, 204, "{:?}", reply.body);
    assert!(
        waited >= Duration::from_millis(950),
        "the call was not held for its wait: {waited:?}"
    );
    let bad = claim_next(&relay, "alice", &alice, json!({"wait": "soon"}));
    assert_eq!(bad.status, 400, "{:?}", bad.body);
}

fn sixteen_workers_with_claim_next_get_every_job_exactly_once_without_a_refusal(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let workers: Vec<(String, String)> = (0..16)
        .map(|w| {
            let id = format!("w{w}");
            let token = relay.register(json!({"id": id, "label": "pool"}));
            (id, token)
        })
        .collect();
    let jobs: BTreeSet<i64> = (0..200)
        .map(|j| {
            id_of(&relay.send(json!({"from": "user", "to": "label:pool",
                "body": format!("job {j}"), "claimable": true})))
        })
        .collect();
    let done: Mutex<Vec<i64>> = Mutex::default();
    let odd: Mutex<Vec<String>> = Mutex::default();

    std::thread::scope(|scope| {
        for (agent, token) in &workers {
            let (done, odd, base) = (&done, &odd, relay.base.clone());
            scope.spawn(move || {
                let client = reqwest::blocking::Client::new();
                loop {
                    let next = client
                        .post(format!("{base}/v1/agents/{agent}/claim-next"))
                        .bearer_auth(token)
                        .json(&json!({}))
                        .send()
                        .unwrap();
                    match next.status().as_u16() {
                        204 => return,
                        200 => {}
                        status => {
                            let body = next.text().unwrap_or_default();
                            odd.lock()
                                .unwrap()
                                .push(format!("claim-next {status}: {body}"));
                            return;
                        }
                    }
                    let id = next.json::<Json>().unwrap()["id"].as_i64().unwrap();
                    let completed = client
                        .post(format!("{base}/v1/messages/{id}/complete"))
                        .bearer_auth(token)
                        .json(&json!({"agentId": agent}))
                        .send()
                        .unwrap();
                    if completed.status().as_u16() != 200 {
                        odd.lock()
                            .unwrap()
                            .push(format!("complete {id}: {}", completed.status()));
                    }
                    done.lock().unwrap().push(id);
                }
            });
        }
    });

    let odd = odd.into_inner().unwrap();
    assert!(odd.is_empty(), "no refusals at all: {odd:?}");
    let mut done = done.into_inner().unwrap();
    let taken = done.len();
    done.sort_unstable();
    done.dedup();
    assert_eq!(taken, done.len(), "no job was handed out twice");
    assert_eq!(
        done.into_iter().collect::<BTreeSet<_>>(),
        jobs,
        "every job was handed out"
    );
}

fn a_job_released_max_attempts_times_is_dead_lettered_its_sender_told_and_retry_puts_it_back(
    backend: Backend,
) {
    let (relay, alice, bob) = pool(backend);
    let boss = relay.register(json!({"id": "boss"}));
    let sent = relay.post(
        "/v1/messages",
        &boss,
        json!({"from": "boss", "to": "label:backend", "body": "poison", "claimable": true}),
    );
    let id = id_of(&sent);
    for attempt in 1..=5 {
        let claimed = claim_next(&relay, "alice", &alice, json!({}));
        assert_eq!(
            claimed.body["id"], id,
            "attempt {attempt}: {:?}",
            claimed.body
        );
        let released = act(&relay, &alice, id, "release", json!({"agentId": "alice"}));
        assert_eq!(released.status, 200, "{:?}", released.body);
        assert_eq!(
            released.body.get("deadLetteredAt").is_some(),
            attempt == 5,
            "dead-lettered exactly when the fifth (default max-attempts) claim ends: {}",
            released.body
        );
    }

    assert_eq!(claim_next(&relay, "bob", &bob, json!({})).status, 204);
    let refused = act(&relay, &bob, id, "claim", json!({"agentId": "bob"}));
    assert_eq!(refused.status, 409, "{:?}", refused.body);
    let told = relay.get("/v1/agents/boss/inbox?kind=system", &boss);
    let notices = told.body.as_array().unwrap();
    assert_eq!(notices.len(), 1, "{:?}", told.body);
    assert_eq!(notices[0]["from"], "system");
    assert_eq!(
        notices[0]["payload"],
        json!({"messageId": id, "attempts": 5, "reason": "released"})
    );
    let dead = relay.get("/v1/messages?deadLettered=true", OPERATOR);
    assert_eq!(dead.status, 200, "{:?}", dead.body);
    assert_eq!(ids(&dead.body), [id]);
    assert_eq!(relay.inbox_ids("alice", &alice, "?state=dead"), [id]);
    let seen_by_alice = relay.get("/v1/messages?deadLettered=true", &alice);
    assert_eq!(seen_by_alice.status, 200, "{:?}", seen_by_alice.body);
    assert_eq!(
        ids(&seen_by_alice.body),
        [id],
        "an agent lists the dead letters it may read (a job of its pool)"
    );
    assert_eq!(
        relay
            .post(&format!("/v1/messages/{id}/retry"), &alice, json!({}))
            .status,
        403
    );

    let retried = relay.post(&format!("/v1/messages/{id}/retry"), OPERATOR, json!({}));

    assert_eq!(retried.status, 200, "{:?}", retried.body);
    assert_eq!(retried.body["attempts"], 0);
    assert!(retried.body.get("deadLetteredAt").is_none());
    let again = claim_next(&relay, "bob", &bob, json!({}));
    assert_eq!(again.body["id"], id, "a retried job is claimable again");
    assert_eq!(
        relay
            .post(&format!("/v1/messages/{id}/retry"), OPERATOR, json!({}))
            .status,
        409,
        "only a dead letter is retried"
    );
}

fn the_reaper_dead_letters_an_expired_last_attempt_and_releases_the_others_in_one_pass(
    backend: Backend,
) {
    let relay = RelayServer::start_on(backend, &["--setting", "max-attempts=2"]);
    let alice = relay.register(json!({"id": "alice", "label": "backend"}));
    let poison = job(&relay, "poison");
    let healthy = job(&relay, "healthy");
    let lease = json!({"agentId": "alice", "leaseMs": 1_000});
    act(&relay, &alice, poison, "claim", lease.clone());
    relay.advance(1_001);
    act(&relay, &alice, poison, "claim", lease.clone());
    act(&relay, &alice, healthy, "claim", lease.clone());
    relay.advance(1_001);
    let exhausted = act(&relay, &alice, poison, "claim", lease);
    assert_eq!(
        exhausted.status, 409,
        "a third claim is refused: {:?}",
        exhausted.body
    );

    let report = relay.reap();

    assert_eq!(report["releasedClaims"], 1, "{report}");
    assert_eq!(report["deadLettered"], 1, "{report}");
    assert!(message(&relay, poison)["deadLetteredAt"].as_i64().is_some());
    assert!(message(&relay, healthy).get("deadLetteredAt").is_none());
    let told = relay.get("/v1/agents/user/inbox?kind=system", OPERATOR);
    assert_eq!(
        told.body[0]["payload"],
        json!({"messageId": poison, "attempts": 2, "reason": "lease expired"}),
        "{:?}",
        told.body
    );
}

fn claim_next_dead_letters_an_exhausted_job_it_meets_and_takes_the_next(backend: Backend) {
    let relay = RelayServer::start_on(backend, &["--setting", "max-attempts=1"]);
    let alice = relay.register(json!({"id": "alice", "label": "backend"}));
    let poison = job(&relay, "poison");
    let next = job(&relay, "next");
    let first = claim_next(&relay, "alice", &alice, json!({"leaseMs": 1_000}));
    assert_eq!(first.body["id"], poison);
    relay.advance(1_001);

    let second = claim_next(&relay, "alice", &alice, json!({}));

    assert_eq!(second.body["id"], next, "{:?}", second.body);
    assert!(message(&relay, poison)["deadLetteredAt"].as_i64().is_some());
}

/// Job `id` waits for its backoff: bob's claim-next passes over it and his claim is 409.
fn not_claimable_yet(relay: &RelayServer, bob: &str, id: i64) {
    let next = claim_next(relay, "bob", bob, json!({}));
    assert_eq!(next.status, 204, "{:?}", next.body);
    let direct = act(relay, bob, id, "claim", json!({"agentId": "bob"}));
    assert_eq!(direct.status, 409, "{:?}", direct.body);
}

fn a_released_job_is_not_offered_again_before_its_backoff_which_doubles_per_attempt(
    backend: Backend,
) {
    let relay = RelayServer::start_on(backend, &["--setting", "retry-backoff-ms=1000"]);
    let alice = relay.register(json!({"id": "alice", "label": "backend"}));
    let bob = relay.register(json!({"id": "bob", "label": "backend"}));
    let id = job(&relay, "flaky");
    let agent = json!({"agentId": "alice"});
    // (attempts, base delay): the jitter adds up to a quarter of the delay.
    for (attempt, delay) in [(1, 1_000), (2, 2_000)] {
        let taken = claim_next(&relay, "alice", &alice, json!({}));
        assert_eq!(taken.body["id"], id, "attempt {attempt}: {:?}", taken.body);
        let released = act(&relay, &alice, id, "release", agent.clone());
        assert_eq!(released.status, 200, "{:?}", released.body);

        not_claimable_yet(&relay, &bob, id);
        relay.advance(delay - 1);
        let still = claim_next(&relay, "bob", &bob, json!({}));
        assert_eq!(still.status, 204, "attempt {attempt}: {:?}", still.body);
        relay.advance(delay / 4 + 1);
    }
    let third = claim_next(&relay, "bob", &bob, json!({}));
    assert_eq!(third.body["id"], id, "{:?}", third.body);
    assert_eq!(third.body["attempts"], 3, "{:?}", third.body);
}

fn a_job_whose_lease_ran_out_waits_for_its_backoff_too(backend: Backend) {
    let relay = RelayServer::start_on(backend, &["--setting", "retry-backoff-ms=60000"]);
    let alice = relay.register(json!({"id": "alice", "label": "backend"}));
    let bob = relay.register(json!({"id": "bob", "label": "backend"}));
    let id = job(&relay, "crashes its worker");
    let taken = claim_next(&relay, "alice", &alice, json!({"leaseMs": 10_000}));
    assert_eq!(taken.body["id"], id, "{:?}", taken.body);
    // Renewed once: the backoff runs from the renewed lease's end.
    let renewed = act(
        &relay,
        &alice,
        id,
        "renew",
        json!({"agentId": "alice", "leaseMs": 20_000}),
    );
    assert_eq!(renewed.status, 200, "{:?}", renewed.body);

    // Alice crashes: the lease ends 20 s from now, then the first attempt's backoff (60 s, plus
    // a jitter of up to 15 s) must pass before anyone gets it (the relay's own clock runs too,
    // so each look leaves it a few seconds).
    relay.advance(20_000 + 55_000);
    not_claimable_yet(&relay, &bob, id);
    relay.advance(20_001);
    let again = claim_next(&relay, "bob", &bob, json!({}));
    assert_eq!(again.body["id"], id, "{:?}", again.body);
    assert_eq!(again.body["attempts"], 2, "{:?}", again.body);
}

fn a_release_may_say_when_the_job_comes_back_with_retry_in_ms(backend: Backend) {
    let relay = RelayServer::start_on(backend, &["--setting", "retry-backoff-ms=600000"]);
    let alice = relay.register(json!({"id": "alice", "label": "backend"}));
    let bob = relay.register(json!({"id": "bob", "label": "backend"}));
    let id = job(&relay, "flaky");
    let taken = claim_next(&relay, "alice", &alice, json!({}));
    assert_eq!(taken.body["id"], id, "{:?}", taken.body);

    // Out of bounds: a 400 naming the field, and nothing changed.
    for bad in [json!(-1), json!(86_400_001), json!("soon")] {
        let refused = act(
            &relay,
            &alice,
            id,
            "release",
            json!({"agentId": "alice", "retryInMs": bad}),
        );
        assert_eq!(refused.status, 400, "{bad}: {:?}", refused.body);
        assert!(
            refused.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("retryInMs"),
            "{:?}",
            refused.body
        );
    }
    assert_eq!(message(&relay, id)["claimedBy"], "alice");

    // Its own 30 s, not the setting's 10 minutes (the relay's clock also runs on its own, so
    // the early look leaves it a second).
    let released = act(
        &relay,
        &alice,
        id,
        "release",
        json!({"agentId": "alice", "retryInMs": 30_000}),
    );
    assert_eq!(released.status, 200, "{:?}", released.body);
    relay.advance(29_000);
    not_claimable_yet(&relay, &bob, id);
    relay.advance(1_000);
    let again = claim_next(&relay, "bob", &bob, json!({}));
    assert_eq!(again.body["id"], id, "{:?}", again.body);

    // 0: at once.
    act(
        &relay,
        &bob,
        id,
        "release",
        json!({"agentId": "bob", "retryInMs": 0}),
    );
    let at_once = claim_next(&relay, "alice", &alice, json!({}));
    assert_eq!(at_once.body["id"], id, "{:?}", at_once.body);
}

fn a_released_job_is_claimable_at_once_without_a_backoff_setting(backend: Backend) {
    let (relay, alice, bob) = pool(backend);
    let id = job(&relay, "flaky");
    claim_next(&relay, "alice", &alice, json!({}));
    act(&relay, &alice, id, "release", json!({"agentId": "alice"}));

    let again = claim_next(&relay, "bob", &bob, json!({}));

    assert_eq!(again.body["id"], id, "{:?}", again.body);
}

fn the_inbox_state_filter_shows_open_claimed_completed_and_dead_jobs(backend: Backend) {
    let relay = RelayServer::start_on(backend, &["--setting", "max-attempts=1"]);
    let alice = relay.register(json!({"id": "alice", "label": "backend"}));
    let open = job(&relay, "open");
    let claimed = job(&relay, "claimed");
    let completed = job(&relay, "completed");
    let dead = job(&relay, "dead");
    let chat = id_of(&relay.send(json!({"from": "user", "to": "alice", "body": "hi"})));
    let agent = json!({"agentId": "alice"});
    act(&relay, &alice, claimed, "claim", agent.clone());
    act(&relay, &alice, completed, "claim", agent.clone());
    act(&relay, &alice, completed, "complete", agent.clone());
    act(&relay, &alice, dead, "claim", agent.clone());
    act(&relay, &alice, dead, "release", agent);

    assert_eq!(relay.inbox_ids("alice", &alice, "?state=open"), [open]);
    assert_eq!(
        relay.inbox_ids("alice", &alice, "?state=claimed"),
        [claimed]
    );
    assert_eq!(
        relay.inbox_ids("alice", &alice, "?state=completed"),
        [completed]
    );
    assert_eq!(relay.inbox_ids("alice", &alice, "?state=dead"), [dead]);
    assert_eq!(
        relay.inbox_ids("alice", &alice, ""),
        [open, claimed, completed, dead, chat],
        "without a state: everything alice may see"
    );
    let bad = relay.get("/v1/agents/alice/inbox?state=finished", &alice);
    assert_eq!(bad.status, 400, "{:?}", bad.body);
}

// --- Tasks and their messages ---

pub(crate) fn task_event(relay: &RelayServer) -> (i64, i64) {
    let reply = relay.post(
        "/v1/integrations/ci/events",
        OPERATOR,
        json!({"title": "Build failed", "dedupeKey": "main", "target": "label:backend"}),
    );
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    (
        reply.body["task"]["id"].as_i64().unwrap(),
        reply.body["message"]["id"].as_i64().unwrap(),
    )
}

pub(crate) fn task(relay: &RelayServer, id: i64) -> Json {
    relay.get(&format!("/v1/tasks/{id}"), OPERATOR).body
}

fn completing_a_task_message_resolves_its_task(backend: Backend) {
    let (relay, alice, _bob) = pool(backend);
    let (task_id, message_id) = task_event(&relay);
    let claimed = claim_next(&relay, "alice", &alice, json!({"kind": "task"}));
    assert_eq!(claimed.body["id"], message_id);
    assert_eq!(claimed.body["payload"]["status"], "claimed");

    let done = act(
        &relay,
        &alice,
        message_id,
        "complete",
        json!({"agentId": "alice", "result": {"fix": "abc123"}}),
    );

    assert_eq!(done.status, 200, "{:?}", done.body);
    assert_eq!(done.body["payload"]["status"], "resolved");
    assert_eq!(task(&relay, task_id)["status"], "resolved");
    let events = relay
        .get(&format!("/v1/tasks/{task_id}/events"), OPERATOR)
        .body;
    let last = events.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["kind"], "resolved");
    assert_eq!(last["actor"], "alice", "the holder resolved it");
    assert_eq!(last["data"]["result"], json!({"fix": "abc123"}));
}

fn a_resolved_tasks_message_cannot_be_claimed_again_and_a_new_event_reopens_it(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let tw = relay.register(json!({"id": "t-w", "label": "backend"}));
    let tx = relay.register(json!({"id": "t-x", "label": "backend"}));
    let (task_id, message_id) = task_event(&relay);
    act(
        &relay,
        &tw,
        message_id,
        "claim",
        json!({"agentId": "t-w", "leaseMs": 1_000}),
    );

    let resolved = relay.put(
        &format!("/v1/tasks/{task_id}/status"),
        OPERATOR,
        json!({"status": "resolved"}),
    );

    assert_eq!(resolved.status, 200, "{:?}", resolved.body);
    let settled = message(&relay, message_id);
    assert_eq!(settled["completedBy"], "operator");
    assert!(
        settled.get("claimedBy").is_none(),
        "the claim ended: {settled}"
    );
    assert_eq!(settled["payload"]["status"], "resolved");
    relay.advance(1_001);
    relay.reap();
    let again = act(&relay, &tx, message_id, "claim", json!({"agentId": "t-x"}));
    assert_eq!(again.status, 409, "{:?}", again.body);
    assert_eq!(claim_next(&relay, "t-x", &tx, json!({})).status, 204);

    let reopened = relay.post(
        "/v1/integrations/ci/events",
        OPERATOR,
        json!({"title": "Build failed", "dedupeKey": "main", "target": "label:backend"}),
    );
    assert_eq!(reopened.body["reopened"], true, "{:?}", reopened.body);
    let fresh = claim_next(&relay, "t-x", &tx, json!({}));
    assert_eq!(fresh.body["id"], reopened.body["message"]["id"]);
    assert_eq!(fresh.body["payload"]["status"], "claimed");
}

fn dismissing_a_claimed_task_completes_its_message_and_ends_the_claim(backend: Backend) {
    let (relay, alice, _bob) = pool(backend);
    let (task_id, message_id) = task_event(&relay);
    act(
        &relay,
        &alice,
        message_id,
        "claim",
        json!({"agentId": "alice"}),
    );

    let dismissed = relay.put(
        &format!("/v1/tasks/{task_id}/status"),
        &alice,
        json!({"status": "dismissed"}),
    );

    assert_eq!(dismissed.status, 200, "{:?}", dismissed.body);
    let settled = message(&relay, message_id);
    assert_eq!(settled["completedBy"], "alice");
    assert_eq!(settled["payload"]["status"], "dismissed");
    let late = act(
        &relay,
        &alice,
        message_id,
        "complete",
        json!({"agentId": "alice"}),
    );
    assert_eq!(
        late.status, 200,
        "the one who settled it completing again is answered as is: {:?}",
        late.body
    );
    assert_eq!(task(&relay, task_id)["status"], "dismissed");
}

fn deleting_the_holder_of_a_last_attempt_dead_letters_the_job_and_frees_the_others(
    backend: Backend,
) {
    let relay = RelayServer::start_on(backend, &["--setting", "max-attempts=1"]);
    let alice = relay.register(json!({"id": "alice", "label": "backend"}));
    let bob = relay.register(json!({"id": "bob", "label": "backend"}));
    let (last, other) = (job(&relay, "last attempt"), job(&relay, "the next one"));
    assert_eq!(
        claim_next(&relay, "alice", &alice, json!({})).body["id"],
        last
    );
    assert_eq!(
        claim_next(&relay, "alice", &alice, json!({})).body["id"],
        other
    );
    let retried_before = message(&relay, other)["attempts"].clone();
    assert_eq!(retried_before, 1);

    assert_eq!(relay.delete("/v1/agents/alice", OPERATOR).status, 200);

    for id in [last, other] {
        let gone = message(&relay, id);
        assert!(
            gone.get("claimedBy").is_none(),
            "deleting alice ends her claim on {id}: {gone}"
        );
        assert!(
            gone.get("deadLetteredAt").is_some(),
            "with max-attempts 1 a job whose only attempt ended with its holder is dead-lettered: {gone}"
        );
    }
    assert_eq!(claim_next(&relay, "bob", &bob, json!({})).status, 204);
}

fn deleting_a_holder_hands_its_jobs_to_the_next_worker(backend: Backend) {
    let (relay, alice, bob) = pool(backend);
    let id = job(&relay, "half done");
    assert_eq!(
        claim_next(&relay, "alice", &alice, json!({})).body["id"],
        id
    );
    assert_eq!(claim_next(&relay, "bob", &bob, json!({})).status, 204);

    assert_eq!(relay.delete("/v1/agents/alice", OPERATOR).status, 200);

    let taken = claim_next(&relay, "bob", &bob, json!({}));
    assert_eq!(taken.body["id"], id, "{:?}", taken.body);
    assert_eq!(taken.body["attempts"], 2);
}

fn a_recreated_id_claims_no_job_sent_to_the_old_one(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    relay.register(json!({"id": "carol", "label": "backend"}));
    let old = job(&relay, "for the old carol");
    assert_eq!(relay.delete("/v1/agents/carol", OPERATOR).status, 200);
    let carol = relay.register(json!({"id": "carol", "label": "backend"}));

    let none = claim_next(&relay, "carol", &carol, json!({}));

    assert_eq!(
        none.status, 204,
        "job {old} was sent before this carol was registered: {:?}",
        none.body
    );
    let new = job(&relay, "for the new carol");
    assert_eq!(
        claim_next(&relay, "carol", &carol, json!({})).body["id"],
        new
    );
}

fn a_bad_wait_is_refused_in_the_query_or_the_body_even_when_the_other_is_good(backend: Backend) {
    let (relay, alice, _bob) = pool(backend);
    for (query, body) in [
        ("?wait=-1", json!({})),
        ("", json!({"wait": -1})),
        ("", json!({"wait": "soon"})),
        ("?wait=1", json!({"wait": -1})),
        ("?wait=x", json!({"wait": 1})),
    ] {
        let reply = relay.post(
            &format!("/v1/agents/alice/claim-next{query}"),
            &alice,
            body.clone(),
        );
        assert_eq!(reply.status, 400, "{query} {body}: {:?}", reply.body);
        assert_eq!(reply.code(), "invalid");
    }
    let fine = relay.post(
        "/v1/agents/alice/claim-next?wait=0",
        &alice,
        json!({"wait": 0}),
    );
    assert_eq!(fine.status, 204, "{:?}", fine.body);
}

fn only_a_jobs_recipients_or_the_operator_claim_it(backend: Backend) {
    let (relay, alice, bob) = pool(backend);
    let carol = relay.register(json!({"id": "carol", "label": "frontend"}));
    let for_bob = relay.post(
        "/v1/messages",
        &alice,
        json!({"from": "alice", "to": "bob", "body": "yours", "claimable": true}),
    );
    assert_eq!(for_bob.status, 201, "{:?}", for_bob.body);
    let for_bob = id_of(&for_bob);

    let taken = act(
        &relay,
        &alice,
        for_bob,
        "claim",
        json!({"agentId": "alice"}),
    );

    assert_eq!(
        taken.status, 403,
        "alice sent it to bob; she may not take it: {:?}",
        taken.body
    );
    let says = taken.body["error"]["message"].as_str().unwrap();
    assert!(says.contains("bob") && says.contains("operator"), "{says}");
    let completed = act(
        &relay,
        &alice,
        for_bob,
        "complete",
        json!({"agentId": "alice"}),
    );
    assert_ne!(completed.status, 200, "{:?}", completed.body);
    let next = claim_next(&relay, "bob", &bob, json!({}));
    assert_eq!(next.status, 200, "bob still gets his job: {:?}", next.body);
    assert_eq!(next.body["id"], for_bob);

    // A group's job: whoever the target reaches may claim it, its sender too when in the group.
    let for_backend = relay.post(
        "/v1/messages",
        &alice,
        json!({"from": "alice", "to": "label:backend", "body": "ours", "claimable": true}),
    );
    let for_backend = id_of(&for_backend);
    let own = act(
        &relay,
        &alice,
        for_backend,
        "claim",
        json!({"agentId": "alice"}),
    );
    assert_eq!(own.status, 200, "alice is in backend: {:?}", own.body);

    let from_outside = relay.post(
        "/v1/messages",
        &carol,
        json!({"from": "carol", "to": "label:backend", "body": "theirs", "claimable": true}),
    );
    let from_outside = id_of(&from_outside);
    let refused = act(
        &relay,
        &carol,
        from_outside,
        "claim",
        json!({"agentId": "carol"}),
    );
    assert_eq!(
        refused.status, 403,
        "carol is not in backend: {:?}",
        refused.body
    );
    let by_operator = act(
        &relay,
        OPERATOR,
        from_outside,
        "claim",
        json!({"agentId": "carol"}),
    );
    assert_eq!(
        by_operator.status, 200,
        "the operator may: {:?}",
        by_operator.body
    );
}

/// Finished work stops asking (issue 27): completing or releasing a job marks it read for the
/// one who did it, so its unread inbox (what the hooks count) no longer lists it.
fn completing_or_releasing_a_job_marks_it_read_for_the_one_who_did_it(backend: Backend) {
    let (relay, alice, bob) = pool(backend);
    let done = job(&relay, "refactor the auth module");
    let given_back = job(&relay, "rename the flags");
    for id in [done, given_back] {
        let claimed = act(&relay, &alice, id, "claim", json!({"agentId": "alice"}));
        assert_eq!(claimed.status, 200, "{:?}", claimed.body);
    }
    let unread = relay.inbox_ids("alice", &alice, "?unread=true");
    assert!(
        unread.contains(&done) && unread.contains(&given_back),
        "held jobs are unread until finished: {unread:?}"
    );

    let completed = act(
        &relay,
        &alice,
        done,
        "complete",
        json!({"agentId": "alice"}),
    );
    assert_eq!(completed.status, 200, "{:?}", completed.body);
    assert_eq!(
        completed.body["readBy"],
        json!(["alice"]),
        "{}",
        completed.body
    );
    let released = act(
        &relay,
        &alice,
        given_back,
        "release",
        json!({"agentId": "alice"}),
    );
    assert_eq!(released.status, 200, "{:?}", released.body);
    assert_eq!(
        released.body["readBy"],
        json!(["alice"]),
        "{}",
        released.body
    );

    let unread = relay.inbox_ids("alice", &alice, "?unread=true");
    assert!(
        !unread.contains(&done) && !unread.contains(&given_back),
        "neither asks anything of alice now: {unread:?}"
    );
    assert!(
        relay.inbox_ids("alice", &alice, "").contains(&done),
        "the completed job is still in her inbox, read"
    );
    assert!(
        relay
            .inbox_ids("bob", &bob, "?unread=true")
            .contains(&given_back),
        "the released job still asks bob, who has not read it"
    );
}

/// Claims stay with an agent that keeps calling (issue 27; docs/http-api.md §2, "Leases follow
/// the holder"): each call the holder makes with its token, handed to the relay before a reaper
/// round, extends a live claim whose lease is past its half to the call's time plus the lease
/// length it was taken with. Held through three lease lengths, the job is offered to nobody else.
/// A silent holder's job goes to the next worker once its lease has run out.
fn a_job_stays_with_a_holder_that_keeps_calling_and_leaves_a_silent_one(backend: Backend) {
    const LEASE: i64 = 60_000;
    let (relay, alice, bob) = pool(backend);
    let id = job(&relay, "migrate the schema");
    let claimed = act(
        &relay,
        &alice,
        id,
        "claim",
        json!({"agentId": "alice", "leaseMs": LEASE}),
    );
    assert_eq!(claimed.status, 200, "{:?}", claimed.body);
    let claimed_at = claimed.body["claimedAt"].as_i64().unwrap();

    let mut moved = 0;
    while moved <= 3 * LEASE {
        relay.advance(LEASE / 3);
        moved += LEASE / 3;
        // Alice is at work: she looks at her inbox now and then.
        assert!(relay.inbox_ids("alice", &alice, "").contains(&id));
        relay.reap();
        let next = claim_next(&relay, "bob", &bob, json!({}));
        assert_eq!(
            next.status, 204,
            "{moved} ms after the claim, the job is still alice's: {:?}",
            next.body
        );
        let held = message(&relay, id);
        assert_eq!(held["claimedBy"], "alice", "{moved} ms: {held}");
        let left = held["claimExpiresAt"].as_i64().unwrap() - claimed_at - moved;
        assert!(
            left > 0 && left <= LEASE + 1_000,
            "{moved} ms: the lease is extended by its own length at most ({left} ms left)"
        );
    }
    let held = message(&relay, id);
    assert_eq!(
        held["attempts"], 1,
        "kept alive, never claimed again: {held}"
    );

    // Alice falls silent (a crashed session makes no calls): within the lease the job stays...
    relay.advance(LEASE / 3);
    relay.reap();
    assert_eq!(claim_next(&relay, "bob", &bob, json!({})).status, 204);
    // ...after it, the reaper releases it and bob gets it.
    relay.advance(LEASE);
    relay.reap();
    let next = claim_next(&relay, "bob", &bob, json!({}));
    assert_eq!(
        next.status, 200,
        "the silent holder's job is handed on: {:?}",
        next.body
    );
    assert_eq!(next.body["id"], id);
    assert_eq!(next.body["claimedBy"], "bob");
    assert_eq!(next.body["attempts"], 2);
}

/// The lease length a claim keeps alive is the one it was last taken or renewed with; the
/// relay's default for one taken without `leaseMs`.
fn calls_extend_a_claim_by_the_lease_it_was_taken_or_renewed_with(backend: Backend) {
    let (relay, alice, _bob) = pool(backend);
    let id = job(&relay, "index the docs");
    let claimed = act(&relay, &alice, id, "claim", json!({"agentId": "alice"}));
    assert_eq!(claimed.status, 200, "{:?}", claimed.body);
    let claimed_at = claimed.body["claimedAt"].as_i64().unwrap();
    // The default lease is five minutes: four minutes in, a call extends it by five.
    relay.advance(240_000);
    relay.inbox_ids("alice", &alice, "");
    relay.reap();
    let expires = message(&relay, id)["claimExpiresAt"].as_i64().unwrap();
    let extended = expires - claimed_at;
    assert!(
        (540_000..542_000).contains(&extended),
        "extended to the call plus the default lease: {extended} ms after the claim"
    );

    let renewed = act(
        &relay,
        &alice,
        id,
        "renew",
        json!({"agentId": "alice", "leaseMs": 20_000}),
    );
    assert_eq!(renewed.status, 200, "{:?}", renewed.body);
    let renewed_until = renewed.body["claimExpiresAt"].as_i64().unwrap();
    relay.advance(15_000);
    relay.inbox_ids("alice", &alice, "");
    relay.reap();
    let expires = message(&relay, id)["claimExpiresAt"].as_i64().unwrap();
    let extended = expires - renewed_until;
    assert!(
        (15_000..17_000).contains(&extended),
        "extended by the renewed 20 s, from the call 15 s later: {extended} ms"
    );
}

/// The list of jobs (issue 27; docs/http-api.md §2, "The list of jobs"): `GET /v1/messages`
/// by state, holder, target and kind, combined; for the operator across every inbox.
fn the_operator_lists_jobs_by_state_holder_target_and_kind(backend: Backend) {
    let relay = RelayServer::start_on(backend, &["--setting", "max-attempts=1"]);
    let alice = relay.register(json!({"id": "alice", "label": "backend"}));
    let bob = relay.register(json!({"id": "bob", "label": "backend"}));
    let open = job(&relay, "open");
    let by_alice = job(&relay, "claimed by alice");
    let by_bob = job(&relay, "claimed by bob");
    let completed = job(&relay, "completed by alice");
    let dead = job(&relay, "dead");
    let for_bob = id_of(
        &relay.send(json!({"from": "user", "to": "bob", "body": "review", "claimable": true})),
    );
    let chat = id_of(&relay.send(json!({"from": "user", "to": "alice", "body": "hi"})));
    let as_alice = json!({"agentId": "alice"});
    act(&relay, &alice, by_alice, "claim", as_alice.clone());
    act(&relay, &bob, by_bob, "claim", json!({"agentId": "bob"}));
    act(&relay, &alice, completed, "claim", as_alice.clone());
    act(&relay, &alice, completed, "complete", as_alice.clone());
    act(&relay, &alice, dead, "claim", as_alice.clone());
    act(&relay, &alice, dead, "release", as_alice);
    let list = |query: &str| {
        let reply = relay.get(&format!("/v1/messages{query}"), OPERATOR);
        assert_eq!(reply.status, 200, "{query}: {:?}", reply.body);
        reply.body
    };

    assert_eq!(ids(&list("?state=open")), [open, for_bob]);
    let claimed = list("?state=claimed");
    assert_eq!(ids(&claimed), [by_alice, by_bob]);
    assert_eq!(claimed[0]["claimedBy"], "alice", "{claimed}");
    assert!(claimed[0]["claimExpiresAt"].as_i64().is_some(), "{claimed}");
    assert_eq!(ids(&list("?state=completed")), [completed]);
    assert_eq!(ids(&list("?state=dead")), [dead]);
    assert_eq!(
        ids(&list("?deadLettered=true")),
        [dead],
        "the old filter still works"
    );
    assert_eq!(
        ids(&list("?holder=alice")),
        [by_alice, completed],
        "what alice holds and what she completed"
    );
    assert_eq!(ids(&list("?state=claimed&holder=bob")), [by_bob]);
    assert_eq!(ids(&list("?to=bob")), [for_bob]);
    assert_eq!(ids(&list("?kind=chat")), [chat]);
    assert_eq!(ids(&list("?to=label:backend&state=open")), [open]);
    let everything = list("");
    assert_eq!(
        ids(&everything)[..7],
        [open, by_alice, by_bob, completed, dead, for_bob, chat],
        "without filters: everything"
    );
    assert_eq!(
        everything[7]["kind"], "system",
        "and the dead letter's notice to its sender: {everything}"
    );

    // A lease that ran out is open again, before any reaper round.
    relay.advance(600_000);
    assert_eq!(ids(&list("?state=open")), [open, by_alice, by_bob, for_bob]);
    assert_eq!(ids(&list("?holder=alice")), [completed]);
}

/// An agent may list messages too, and sees only what it may read one by one: messages to it,
/// to its groups, and those it sent, never another agent's.
fn an_agent_lists_only_the_messages_it_may_read(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let alice = relay.register(json!({"id": "alice", "label": "backend"}));
    let bob = relay.register(json!({"id": "bob", "label": "backend"}));
    let carol = relay.register(json!({"id": "carol", "label": "frontend"}));
    let shared = job(&relay, "for the backend pool");
    let for_bob = id_of(
        &relay.send(json!({"from": "user", "to": "bob", "body": "bob's", "claimable": true})),
    );
    let for_frontend =
        id_of(&relay.send(
            json!({"from": "user", "to": "label:frontend", "body": "css", "claimable": true}),
        ));
    let from_alice = id_of(&relay.post(
        "/v1/messages",
        &alice,
        json!({"from": "alice", "to": "carol", "body": "a question"}),
    ));
    act(&relay, &bob, shared, "claim", json!({"agentId": "bob"}));
    let list = |token: &str, query: &str| {
        let reply = relay.get(&format!("/v1/messages{query}"), token);
        assert_eq!(reply.status, 200, "{query}: {:?}", reply.body);
        ids(&reply.body)
    };

    assert_eq!(list(&alice, ""), [shared, from_alice]);
    assert_eq!(
        list(&alice, "?state=claimed&holder=bob"),
        [shared],
        "a job of her pool that bob holds"
    );
    assert_eq!(list(&alice, "?to=bob"), Vec::<i64>::new(), "not bob's own");
    assert_eq!(list(&alice, "?to=label:frontend"), Vec::<i64>::new());
    assert_eq!(list(&bob, ""), [shared, for_bob]);
    assert_eq!(list(&carol, ""), [for_frontend, from_alice]);
    assert_eq!(list(OPERATOR, "").len(), 4);
}

/// A filter the relay does not know is a 400 that names the allowed values or the rule.
fn a_bad_list_filter_is_refused_naming_what_is_allowed(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    relay.register(json!({"id": "alice"}));
    let bad = relay.get("/v1/messages?state=later", OPERATOR);
    assert_eq!(bad.status, 400, "{:?}", bad.body);
    let message = bad.body["error"]["message"].as_str().unwrap();
    for allowed in ["open", "claimed", "completed", "dead", "scheduled"] {
        assert!(message.contains(allowed), "{message}");
    }
    for query in ["?holder=", "?to=label:", "?kind=%20x"] {
        let bad = relay.get(&format!("/v1/messages{query}"), OPERATOR);
        assert_eq!(bad.status, 400, "{query}: {:?}", bad.body);
        assert_eq!(
            bad.body["error"]["code"], "invalid",
            "{query}: {:?}",
            bad.body
        );
    }
    let unknown = relay.get("/v1/messages?owner=alice", OPERATOR);
    assert_eq!(unknown.status, 400, "{:?}", unknown.body);
    let anonymous = relay.get("/v1/messages", "not-a-token");
    assert_eq!(anonymous.status, 401, "{:?}", anonymous.body);
}

/// "task" named two things (issue 27; docs/differences-from-0.6.md): a claimable message sent
/// without a kind is a `job` now; `task`, 0.6.0's name for it, is still accepted on input, stored
/// claimable and found by its own name. `kind=job` finds only `job` rows, `kind=task` only
/// `task` ones (0.6.0's jobs and integration tasks' messages).
fn a_claimable_message_without_a_kind_is_a_job_and_task_is_still_accepted(backend: Backend) {
    let (relay, alice, _bob) = pool(backend);
    let new = job(&relay, "new style");
    assert_eq!(message(&relay, new)["kind"], "job");
    let old = relay.send(
        json!({"from": "user", "to": "label:backend", "body": "old style",
        "kind": "task", "claimable": true}),
    );
    assert_eq!(old.status, 201, "{:?}", old.body);
    let old = id_of(&old);
    let direct = relay.send(
        json!({"from": "user", "to": "alice", "body": "old, direct", "kind": "task", "claimable": true}),
    );
    let direct = id_of(&direct);
    for id in [old, direct] {
        let stored = message(&relay, id);
        assert_eq!(
            (&stored["kind"], &stored["claimable"]),
            (&json!("task"), &json!(true)),
            "{stored}"
        );
    }
    let listed = |kind: &str| {
        ids(&relay
            .get(&format!("/v1/messages?kind={kind}"), OPERATOR)
            .body)
    };
    assert_eq!(listed("job"), [new]);
    assert_eq!(listed("task"), [old, direct]);

    for expected in [old, direct] {
        let next = claim_next(&relay, "alice", &alice, json!({"kind": "task"}));
        assert_eq!(next.status, 200, "{:?}", next.body);
        assert_eq!(next.body["id"], expected);
    }
    assert_eq!(
        claim_next(&relay, "alice", &alice, json!({"kind": "task"})).status,
        204,
        "kind=task does not take a job"
    );
    let next = claim_next(&relay, "alice", &alice, json!({"kind": "job"}));
    assert_eq!(next.body["id"], new, "{:?}", next.body);
}

/// Completing a job nobody holds says to claim it first; a holder whose lease ran out is told it
/// expired and was released (issue 27).
fn completing_a_job_nobody_holds_says_to_claim_it_first(backend: Backend) {
    let (relay, alice, _bob) = pool(backend);
    let id = job(&relay, "write the changelog");
    let says = |reply: &Reply| {
        assert_eq!(reply.status, 409, "{:?}", reply.body);
        reply.body["error"]["message"].as_str().unwrap().to_owned()
    };
    let unclaimed = act(&relay, &alice, id, "complete", json!({"agentId": "alice"}));
    assert_eq!(
        says(&unclaimed),
        format!("nobody holds message {id}: claim it first")
    );

    let claimed = act(
        &relay,
        &alice,
        id,
        "claim",
        json!({"agentId": "alice", "leaseMs": 1_000}),
    );
    assert_eq!(claimed.status, 200, "{:?}", claimed.body);
    relay.advance(2_000);
    let late = says(&act(
        &relay,
        &alice,
        id,
        "complete",
        json!({"agentId": "alice"}),
    ));
    assert!(
        late.contains("expired") && late.contains("claim it again"),
        "{late}"
    );
    relay.reap();
    let released = act(&relay, &alice, id, "complete", json!({"agentId": "alice"}));
    assert_eq!(
        says(&released),
        format!("nobody holds message {id}: claim it first")
    );
}

fn job_at(relay: &RelayServer, body: &str, priority: i64) -> i64 {
    let sent = relay.send(json!({"from": "user", "to": "label:backend", "body": body,
        "claimable": true, "priority": priority}));
    assert_eq!(sent.status, 201, "{:?}", sent.body);
    assert_eq!(
        sent.body["message"]["priority"], priority,
        "{:?}",
        sent.body
    );
    id_of(&sent)
}

/// Issue 31: claim-next takes the highest priority first, then the oldest, also when 16
/// workers claim at once; the inbox and the list filter and sort by priority.
fn claim_next_takes_the_highest_priority_first_then_the_oldest_under_16_workers(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let workers: Vec<(String, String)> = (0..16)
        .map(|n| {
            let id = format!("w{n}");
            let token = relay.register(json!({"id": id, "label": "backend"}));
            (id, token)
        })
        .collect();
    let low: Vec<i64> = (0..16).map(|n| job(&relay, &format!("low {n}"))).collect();
    let high: Vec<i64> = (0..16)
        .map(|n| job_at(&relay, &format!("high {n}"), 5))
        .collect();
    let urgent = job_at(&relay, "urgent", 1000);

    let inbox = relay.get(
        "/v1/agents/w1/inbox?minPriority=5&byPriority=true&limit=2",
        &workers[1].1,
    );
    assert_eq!(inbox.status, 200, "{:?}", inbox.body);
    assert_eq!(ids(&inbox.body), vec![urgent, high[0]]);

    let first_round = Mutex::new(BTreeSet::new());
    std::thread::scope(|scope| {
        for (id, token) in &workers {
            let (relay, first_round) = (&relay, &first_round);
            scope.spawn(move || {
                let next = claim_next(relay, id, token, json!({}));
                assert_eq!(next.status, 200, "{:?}", next.body);
                first_round
                    .lock()
                    .unwrap()
                    .insert(next.body["id"].as_i64().unwrap());
            });
        }
    });
    let mut expected: BTreeSet<i64> = high[..15].iter().copied().collect();
    expected.insert(urgent);
    assert_eq!(
        first_round.into_inner().unwrap(),
        expected,
        "16 workers at once take the 16 highest priorities, the oldest of a priority first"
    );
    let (w0, t0) = &workers[0];
    let next = claim_next(&relay, w0, t0, json!({}));
    assert_eq!(next.body["id"], high[15], "{:?}", next.body);
    let next = claim_next(&relay, w0, t0, json!({}));
    assert_eq!(next.body["id"], low[0], "then the oldest of priority 0");

    let sorted = relay.get("/v1/messages?byPriority=true&limit=3", OPERATOR);
    assert_eq!(sorted.status, 200, "{:?}", sorted.body);
    assert_eq!(ids(&sorted.body), vec![urgent, high[0], high[1]]);
    let at_least = relay.get("/v1/messages?minPriority=6", OPERATOR);
    assert_eq!(ids(&at_least.body), vec![urgent]);
}

/// Issue 31, bad input: a negative or huge priority is a 400 naming `priority`, and nothing
/// is sent; a bad `minPriority` filter names it.
fn a_negative_or_huge_priority_is_refused_naming_the_field(backend: Backend) {
    let (relay, alice, _) = pool(backend);
    for priority in [json!(-1), json!(1001), json!(i64::MAX)] {
        let sent = relay.send(json!({"from": "user", "to": "label:backend", "body": "x",
            "claimable": true, "priority": priority}));
        assert_eq!(sent.status, 400, "{priority}: {:?}", sent.body);
        assert!(
            sent.body.to_string().contains("priority"),
            "names the field: {:?}",
            sent.body
        );
    }
    assert_eq!(
        claim_next(&relay, "alice", &alice, json!({})).status,
        204,
        "nothing sent"
    );
    let bad = relay.get("/v1/messages?minPriority=-3", OPERATOR);
    assert_eq!(bad.status, 400, "{:?}", bad.body);
    assert!(
        bad.body.to_string().contains("minPriority"),
        "{:?}",
        bad.body
    );
}

crate::on_both_backends!(
    a_completed_job_is_never_offered_again_before_or_after_its_lease_would_have_run_out,
    only_the_live_holder_completes_and_completing_again_answers_the_same,
    a_holder_whose_lease_ran_out_and_went_to_another_cannot_complete,
    claim_next_takes_the_oldest_free_job_matching_the_filters_and_answers_204_when_none,
    claim_next_with_wait_wakes_within_200_ms_of_a_matching_send,
    claim_next_with_wait_answers_204_when_the_wait_ends_without_a_job,
    sixteen_workers_with_claim_next_get_every_job_exactly_once_without_a_refusal,
    a_job_released_max_attempts_times_is_dead_lettered_its_sender_told_and_retry_puts_it_back,
    the_reaper_dead_letters_an_expired_last_attempt_and_releases_the_others_in_one_pass,
    claim_next_dead_letters_an_exhausted_job_it_meets_and_takes_the_next,
    a_released_job_is_not_offered_again_before_its_backoff_which_doubles_per_attempt,
    a_release_may_say_when_the_job_comes_back_with_retry_in_ms,
    a_job_whose_lease_ran_out_waits_for_its_backoff_too,
    a_released_job_is_claimable_at_once_without_a_backoff_setting,
    the_inbox_state_filter_shows_open_claimed_completed_and_dead_jobs,
    completing_a_task_message_resolves_its_task,
    a_resolved_tasks_message_cannot_be_claimed_again_and_a_new_event_reopens_it,
    dismissing_a_claimed_task_completes_its_message_and_ends_the_claim,
    deleting_the_holder_of_a_last_attempt_dead_letters_the_job_and_frees_the_others,
    deleting_a_holder_hands_its_jobs_to_the_next_worker,
    a_recreated_id_claims_no_job_sent_to_the_old_one,
    a_bad_wait_is_refused_in_the_query_or_the_body_even_when_the_other_is_good,
    only_a_jobs_recipients_or_the_operator_claim_it,
    completing_or_releasing_a_job_marks_it_read_for_the_one_who_did_it,
    a_job_stays_with_a_holder_that_keeps_calling_and_leaves_a_silent_one,
    calls_extend_a_claim_by_the_lease_it_was_taken_or_renewed_with,
    the_operator_lists_jobs_by_state_holder_target_and_kind,
    an_agent_lists_only_the_messages_it_may_read,
    a_bad_list_filter_is_refused_naming_what_is_allowed,
    a_claimable_message_without_a_kind_is_a_job_and_task_is_still_accepted,
    completing_a_job_nobody_holds_says_to_claim_it_first,
    claim_next_takes_the_highest_priority_first_then_the_oldest_under_16_workers,
    a_negative_or_huge_priority_is_refused_naming_the_field,
);
