//! Tasks from integration events, signed webhooks, pair sessions, the activity feed and the health
//! report (docs/http-api.md §5, §6, §7), proven over real HTTP against the built relay.

use crate::common;

use common::{Backend, Json, OPERATOR, RelayServer, json};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A relay with one worker agent the tasks go to; returns the worker's token.
fn relay_with_worker(backend: Backend) -> (RelayServer, String) {
    let relay = RelayServer::start_on(backend, &[]);
    let token = relay.register(json!({"id": "worker", "tags": ["oncall"]}));
    (relay, token)
}

fn ingest(relay: &RelayServer, source: &str, event: Json) -> common::Reply {
    relay.post(
        &format!("/v1/integrations/{source}/events"),
        OPERATOR,
        event,
    )
}

fn task(relay: &RelayServer, id: i64) -> Json {
    let reply = relay.get(&format!("/v1/tasks/{id}"), OPERATOR);
    assert_eq!(reply.status, 200, "task {id}: {:?}", reply.body);
    reply.body
}

fn tasks(relay: &RelayServer, query: &str) -> Vec<Json> {
    let reply = relay.get(&format!("/v1/tasks{query}"), OPERATOR);
    assert_eq!(reply.status, 200, "tasks{query}: {:?}", reply.body);
    reply.body.as_array().unwrap().clone()
}

fn event_kinds(relay: &RelayServer, id: i64) -> Vec<String> {
    let reply = relay.get(&format!("/v1/tasks/{id}/events"), OPERATOR);
    assert_eq!(reply.status, 200, "events of task {id}: {:?}", reply.body);
    reply
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

fn set_status(relay: &RelayServer, id: i64, status: &str) -> common::Reply {
    relay.put(
        &format!("/v1/tasks/{id}/status"),
        OPERATOR,
        json!({"status": status}),
    )
}

fn build_failed(key: &str) -> Json {
    json!({
        "title": "Build failed on main",
        "body": "cargo test: 2 failures",
        "severity": "error",
        "dedupeKey": key,
        "externalUrl": "https://ci.example/runs/42",
        "target": "worker",
    })
}

// --- Tasks ---

fn new_event_creates_an_open_task_and_its_claimable_task_message(backend: Backend) {
    let (relay, worker) = relay_with_worker(backend);

    let reply = ingest(&relay, "ci", build_failed("main-build"));

    assert_eq!(reply.status, 201, "a new event creates: {:?}", reply.body);
    assert_eq!(reply.body["created"], true);
    let task = &reply.body["task"];
    assert_eq!(task["status"], "open");
    assert_eq!(task["source"], "ci");
    assert_eq!(task["severity"], "error");
    assert_eq!(task["target"], "worker");
    assert_eq!(task["occurrences"], 1);
    let message = &reply.body["message"];
    assert_eq!(
        task["messageId"], message["id"],
        "the task names its message"
    );
    assert_eq!(message["from"], "system");
    assert_eq!(message["to"], "worker");
    assert_eq!(message["kind"], "task");
    assert_eq!(message["claimable"], true);
    assert_eq!(message["subject"], "[error] Build failed on main");
    let payload = &message["payload"];
    assert_eq!(payload["taskId"], task["id"]);
    assert_eq!(payload["source"], "ci");
    assert_eq!(payload["title"], "Build failed on main");
    assert_eq!(payload["status"], "open");
    assert_eq!(payload["severity"], "error");
    assert_eq!(payload["dedupeKey"], "main-build");
    assert_eq!(payload["externalUrl"], "https://ci.example/runs/42");
    let inbox = relay.inbox_ids("worker", &worker, "");
    assert_eq!(
        inbox,
        vec![message["id"].as_i64().unwrap()],
        "the worker receives the task message"
    );
}

fn duplicate_event_counts_an_occurrence_and_sends_nothing(backend: Backend) {
    let (relay, worker) = relay_with_worker(backend);
    let first = ingest(&relay, "ci", build_failed("main-build"));
    let id = first.body["task"]["id"].as_i64().unwrap();

    let mut again = build_failed("main-build");
    again["severity"] = json!("critical");
    let second = ingest(&relay, "ci", again);

    assert_eq!(
        second.status, 200,
        "a duplicate is not created: {:?}",
        second.body
    );
    assert_eq!(second.body["created"], false);
    assert_eq!(second.body["reopened"], false);
    assert!(
        second.body.get("message").is_none(),
        "a duplicate sends no message: {:?}",
        second.body
    );
    assert_eq!(second.body["task"]["id"], id, "the same task");
    assert_eq!(second.body["task"]["occurrences"], 2);
    assert_eq!(
        second.body["task"]["severity"], "critical",
        "newer fields win"
    );
    assert_eq!(
        relay.inbox_ids("worker", &worker, "").len(),
        1,
        "still one task message"
    );
    assert_eq!(tasks(&relay, "").len(), 1, "still one task");
    assert_eq!(event_kinds(&relay, id), ["created", "updated"]);

    let other_source = ingest(&relay, "monitor", build_failed("main-build"));
    assert_eq!(other_source.status, 201, "the dedupe key is per source");
}

fn claiming_renewing_and_releasing_the_message_does_the_same_to_the_task(backend: Backend) {
    let (relay, worker) = relay_with_worker(backend);
    let reply = ingest(&relay, "ci", build_failed("k"));
    let id = reply.body["task"]["id"].as_i64().unwrap();
    let message_id = reply.body["message"]["id"].as_i64().unwrap();

    let claim = relay.post(
        &format!("/v1/messages/{message_id}/claim"),
        &worker,
        json!({"agentId": "worker", "leaseMs": 60_000}),
    );
    assert_eq!(claim.status, 200, "claim: {:?}", claim.body);
    let claimed = task(&relay, id);
    assert_eq!(
        claimed["status"], "claimed",
        "claiming the message claims the task"
    );
    assert_eq!(claimed["claimedBy"], "worker");
    assert_eq!(claimed["claimExpiresAt"], claim.body["claimExpiresAt"]);

    relay.advance(30_000);
    let renew = relay.post(
        &format!("/v1/messages/{message_id}/renew"),
        &worker,
        json!({"agentId": "worker", "leaseMs": 120_000}),
    );
    assert_eq!(renew.status, 200, "renew: {:?}", renew.body);
    assert_eq!(
        task(&relay, id)["claimExpiresAt"],
        renew.body["claimExpiresAt"],
        "renewing renews the task's lease"
    );

    let release = relay.post(
        &format!("/v1/messages/{message_id}/release"),
        &worker,
        json!({"agentId": "worker"}),
    );
    assert_eq!(release.status, 200, "release: {:?}", release.body);
    let released = task(&relay, id);
    assert_eq!(
        released["status"], "open",
        "releasing the message releases the task"
    );
    assert!(
        released.get("claimedBy").is_none(),
        "no holder after release: {released}"
    );
    assert_eq!(event_kinds(&relay, id), ["created", "claimed", "released"]);
}

fn reaper_releases_the_task_of_an_expired_claim(backend: Backend) {
    let (relay, worker) = relay_with_worker(backend);
    let reply = ingest(&relay, "ci", build_failed("k"));
    let id = reply.body["task"]["id"].as_i64().unwrap();
    let message_id = reply.body["message"]["id"].as_i64().unwrap();
    let claim = relay.post(
        &format!("/v1/messages/{message_id}/claim"),
        &worker,
        json!({"agentId": "worker", "leaseMs": 5_000}),
    );
    assert_eq!(claim.status, 200, "claim: {:?}", claim.body);

    relay.advance(10_000);
    relay.reap();

    assert_eq!(
        task(&relay, id)["status"],
        "open",
        "an expired claim reopens its task when reaped"
    );
    let events = relay.get(&format!("/v1/tasks/{id}/events"), OPERATOR).body;
    let last = events.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["kind"], "released");
    assert_eq!(last["actor"], "system");
}

fn a_duplicate_keeps_what_it_does_not_send_and_a_reopening_takes_the_event_as_it_is(
    backend: Backend,
) {
    let (relay, _worker) = relay_with_worker(backend);
    let first = ingest(&relay, "ci", build_failed("main-build"));
    let id = first.body["task"]["id"].as_i64().unwrap();
    let bare = json!({"title": "Build failed again", "dedupeKey": "main-build",
        "target": "tag:oncall"});

    let counted = ingest(&relay, "ci", bare.clone());

    assert_eq!(counted.status, 200, "{:?}", counted.body);
    let task = &counted.body["task"];
    assert_eq!(task["title"], "Build failed again", "the newest title");
    assert_eq!(
        task["body"], "cargo test: 2 failures",
        "a body not sent is kept"
    );
    assert_eq!(
        task["externalUrl"], "https://ci.example/runs/42",
        "so is the link"
    );
    assert_eq!(
        task["target"], "worker",
        "an open task keeps its target, as it keeps its message"
    );

    assert_eq!(set_status(&relay, id, "resolved").status, 200);
    let reopened = ingest(&relay, "ci", bare);

    assert_eq!(reopened.body["reopened"], true, "{:?}", reopened.body);
    let task = &reopened.body["task"];
    assert!(
        task.get("body").is_none_or(Json::is_null)
            && task.get("externalUrl").is_none_or(Json::is_null),
        "a reopened task is the event as sent: {task}"
    );
    assert_eq!(
        task["target"], "tag:oncall",
        "and goes where the event says"
    );
}

fn resolved_task_reopens_with_a_new_message_when_the_event_comes_back(backend: Backend) {
    let (relay, worker) = relay_with_worker(backend);
    let first = ingest(&relay, "ci", build_failed("main-build"));
    let id = first.body["task"]["id"].as_i64().unwrap();
    let first_message = first.body["message"]["id"].as_i64().unwrap();
    let resolved = set_status(&relay, id, "resolved");
    assert_eq!(resolved.status, 200, "resolve: {:?}", resolved.body);
    assert_eq!(resolved.body["status"], "resolved");

    let again = ingest(&relay, "ci", build_failed("main-build"));

    assert_eq!(
        again.status, 200,
        "reopening is not creating: {:?}",
        again.body
    );
    assert_eq!(again.body["reopened"], true);
    assert_eq!(again.body["task"]["id"], id, "the same task comes back");
    assert_eq!(again.body["task"]["status"], "open");
    assert_eq!(again.body["task"]["occurrences"], 2);
    let second_message = again.body["message"]["id"]
        .as_i64()
        .expect("a reopened task sends a new message");
    assert_ne!(second_message, first_message);
    assert_eq!(again.body["task"]["messageId"], second_message);
    assert_eq!(
        relay.inbox_ids("worker", &worker, ""),
        vec![second_message],
        "the first message was completed with its task: no longer offered"
    );
}

fn task_events_list_the_whole_history_with_actors(backend: Backend) {
    let (relay, worker) = relay_with_worker(backend);
    let reply = ingest(&relay, "ci", build_failed("k"));
    let id = reply.body["task"]["id"].as_i64().unwrap();
    let message_id = reply.body["message"]["id"].as_i64().unwrap();
    ingest(&relay, "ci", build_failed("k"));
    relay.post(
        &format!("/v1/messages/{message_id}/claim"),
        &worker,
        json!({"agentId": "worker"}),
    );
    relay.post(
        &format!("/v1/messages/{message_id}/release"),
        &worker,
        json!({"agentId": "worker"}),
    );
    relay.post(
        &format!("/v1/messages/{message_id}/claim"),
        &worker,
        json!({"agentId": "worker"}),
    );
    let resolved = relay.put(
        &format!("/v1/tasks/{id}/status"),
        &worker,
        json!({"status": "resolved", "note": "fixed in #7"}),
    );
    assert_eq!(
        resolved.status, 200,
        "the worker resolves: {:?}",
        resolved.body
    );
    let reopened = set_status(&relay, id, "open");
    assert_eq!(reopened.status, 200, "reopen: {:?}", reopened.body);
    assert_eq!(set_status(&relay, id, "dismissed").status, 200);

    let events = relay.get(&format!("/v1/tasks/{id}/events"), OPERATOR).body;
    let events = events.as_array().unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "created",
            "updated",
            "claimed",
            "released",
            "claimed",
            "resolved",
            "reopened",
            "dismissed"
        ]
    );
    let actors: Vec<&str> = events
        .iter()
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    assert_eq!(
        actors,
        [
            "integration:ci",
            "integration:ci",
            "worker",
            "worker",
            "worker",
            "worker",
            "operator",
            "operator"
        ]
    );
    assert_eq!(
        events[5]["data"]["note"], "fixed in #7",
        "the note is kept with the event"
    );
    assert_eq!(events[5]["data"]["from"], "claimed");
    assert!(
        events
            .iter()
            .all(|e| e["taskId"] == id && e["createdAt"].is_i64())
    );
}

fn illegal_status_changes_are_refused(backend: Backend) {
    let (relay, _) = relay_with_worker(backend);
    let id = ingest(&relay, "ci", build_failed("k")).body["task"]["id"]
        .as_i64()
        .unwrap();

    let reopen_open = set_status(&relay, id, "open");
    assert_eq!(
        reopen_open.status, 409,
        "an open task cannot be reopened: {:?}",
        reopen_open.body
    );
    let claim_by_api = set_status(&relay, id, "claimed");
    assert_eq!(
        claim_by_api.status, 400,
        "claimed comes only from claiming the message: {:?}",
        claim_by_api.body
    );
    assert_eq!(set_status(&relay, id, "resolved").status, 200);
    let resolve_twice = set_status(&relay, id, "resolved");
    assert_eq!(
        resolve_twice.status, 409,
        "a resolved task cannot be resolved again: {:?}",
        resolve_twice.body
    );
    let dismiss_resolved = set_status(&relay, id, "dismissed");
    assert_eq!(
        dismiss_resolved.status, 409,
        "a resolved task must be reopened first: {:?}",
        dismiss_resolved.body
    );
    assert_eq!(
        set_status(&relay, 999, "resolved").status,
        404,
        "unknown task"
    );
    assert_eq!(
        task(&relay, id)["status"],
        "resolved",
        "refused changes changed nothing"
    );
    assert_eq!(event_kinds(&relay, id), ["created", "resolved"]);
}

// --- Who may change a task ---

/// A task sent to two on-call agents, alice and bob; returns (relay, alice, bob, task, message).
fn task_for_two(backend: Backend) -> (RelayServer, String, String, i64, i64) {
    let relay = RelayServer::start_on(backend, &[]);
    let alice = relay.register(json!({"id": "alice", "tags": ["oncall"]}));
    let bob = relay.register(json!({"id": "bob", "tags": ["oncall"]}));
    let mut event = build_failed("k");
    event["target"] = json!("tag:oncall");
    let reply = ingest(&relay, "ci", event);
    assert_eq!(reply.status, 201, "ingest: {:?}", reply.body);
    let id = reply.body["task"]["id"].as_i64().unwrap();
    let message = reply.body["message"]["id"].as_i64().unwrap();
    (relay, alice, bob, id, message)
}

fn set_status_as(relay: &RelayServer, token: &str, id: i64, status: &str) -> common::Reply {
    relay.put(
        &format!("/v1/tasks/{id}/status"),
        token,
        json!({"status": status}),
    )
}

fn another_agent_cannot_resolve_or_dismiss_a_task_someone_else_holds(backend: Backend) {
    let (relay, alice, bob, id, message) = task_for_two(backend);
    let claim = relay.post(
        &format!("/v1/messages/{message}/claim"),
        &alice,
        json!({"agentId": "alice"}),
    );
    assert_eq!(claim.status, 200, "alice claims: {:?}", claim.body);

    for status in ["resolved", "dismissed"] {
        let refused = set_status_as(&relay, &bob, id, status);
        assert_eq!(
            refused.status, 403,
            "bob may not make alice's task {status}: {:?}",
            refused.body
        );
        let says = refused.body["error"]["message"].as_str().unwrap();
        assert!(
            says.contains("alice") && says.contains("operator"),
            "the refusal says who may: {says}"
        );
    }
    let held = task(&relay, id);
    assert_eq!(held["status"], "claimed", "bob changed nothing: {held}");
    assert_eq!(held["claimedBy"], "alice");

    let resolved = set_status_as(&relay, &alice, id, "resolved");
    assert_eq!(
        resolved.status, 200,
        "the holder resolves: {:?}",
        resolved.body
    );
    assert_eq!(event_kinds(&relay, id), ["created", "claimed", "resolved"]);
}

fn an_agent_cannot_settle_an_open_task_nor_reopen_one(backend: Backend) {
    let (relay, alice, _bob, id, message) = task_for_two(backend);

    let open = set_status_as(&relay, &alice, id, "resolved");
    assert_eq!(
        open.status, 403,
        "an open task is settled by the operator or after a claim: {:?}",
        open.body
    );
    assert!(
        open.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("claims its message {message}")),
        "the refusal names the message to claim: {:?}",
        open.body
    );

    assert_eq!(set_status(&relay, id, "dismissed").status, 200);
    let reopen = set_status_as(&relay, &alice, id, "open");
    assert_eq!(
        reopen.status, 403,
        "reopening is the operator's: {:?}",
        reopen.body
    );
    assert_eq!(task(&relay, id)["status"], "dismissed");
    assert_eq!(event_kinds(&relay, id), ["created", "dismissed"]);
}

fn a_holder_whose_lease_ran_out_may_no_longer_change_the_task(backend: Backend) {
    let (relay, alice, _bob, id, message) = task_for_two(backend);
    let claim = relay.post(
        &format!("/v1/messages/{message}/claim"),
        &alice,
        json!({"agentId": "alice", "leaseMs": 5_000}),
    );
    assert_eq!(claim.status, 200, "claim: {:?}", claim.body);

    relay.advance(10_000);
    let late = set_status_as(&relay, &alice, id, "resolved");

    assert_eq!(
        late.status, 403,
        "an expired lease is no authority: {:?}",
        late.body
    );
    assert_eq!(task(&relay, id)["status"], "claimed", "nothing changed");
}

fn bad_severity_and_empty_title_are_refused_and_write_nothing(backend: Backend) {
    let (relay, worker) = relay_with_worker(backend);

    let bad_severity = ingest(
        &relay,
        "ci",
        json!({"title": "x", "severity": "fatal", "target": "worker"}),
    );
    assert_eq!(
        bad_severity.status, 400,
        "unknown severity: {:?}",
        bad_severity.body
    );
    assert!(
        bad_severity.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("critical"),
        "the error names the allowed severities"
    );
    let empty_title = ingest(&relay, "ci", json!({"title": "  ", "target": "worker"}));
    assert_eq!(
        empty_title.status, 400,
        "empty title: {:?}",
        empty_title.body
    );
    let no_title = ingest(&relay, "ci", json!({"target": "worker"}));
    assert_eq!(no_title.status, 400, "missing title: {:?}", no_title.body);

    assert!(tasks(&relay, "").is_empty(), "no task was written");
    assert!(
        relay.inbox_ids("worker", &worker, "").is_empty(),
        "no message was sent"
    );
}

fn tasks_list_filters_by_status_severity_and_source(backend: Backend) {
    let (relay, _) = relay_with_worker(backend);
    let a = ingest(
        &relay,
        "ci",
        json!({"title": "a", "severity": "error", "target": "worker"}),
    );
    ingest(
        &relay,
        "ci",
        json!({"title": "b", "severity": "info", "target": "worker"}),
    );
    ingest(
        &relay,
        "sentry",
        json!({"title": "c", "severity": "error", "target": "worker"}),
    );
    // Listing is newest-updated first: make the dismissal strictly the latest change.
    relay.advance(1_000);
    set_status(&relay, a.body["task"]["id"].as_i64().unwrap(), "dismissed");

    let titles = |query: &str| -> Vec<String> {
        tasks(&relay, query)
            .iter()
            .map(|t| t["title"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(titles("?severity=error"), ["a", "c"]);
    assert_eq!(titles("?source=ci"), ["a", "b"]);
    assert_eq!(titles("?status=open"), ["c", "b"]);
    assert_eq!(titles("?status=dismissed&source=ci"), ["a"]);
    assert_eq!(relay.get("/v1/tasks?status=gone", OPERATOR).status, 400);
}

// --- Webhook authenticity ---

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn post_signed(
    relay: &RelayServer,
    source: &str,
    body: &[u8],
    signature: Option<&str>,
) -> common::Reply {
    let client = reqwest::blocking::Client::new();
    let mut request = client
        .post(format!("{}/v1/integrations/{source}/events", relay.base))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("X-Hub-Signature-256", signature);
    }
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    common::Reply {
        status,
        body: response.json().unwrap_or(Json::Null),
    }
}

fn relay_with_signed_source(backend: Backend) -> RelayServer {
    let (relay, _) = relay_with_worker(backend);
    let configured = relay.put("/v1/integrations/ci", OPERATOR, json!({"secret": "s3cret"}));
    assert_eq!(configured.status, 200, "configure: {:?}", configured.body);
    assert_eq!(configured.body["signed"], true);
    relay
}

fn signed_webhook_is_accepted_without_a_token(backend: Backend) {
    let relay = relay_with_signed_source(backend);
    let body = br#"{"title": "Deploy failed", "severity": "critical", "target": "worker"}"#;

    let reply = post_signed(&relay, "ci", body, Some(&sign("s3cret", body)));

    assert_eq!(
        reply.status, 201,
        "a correctly signed event is accepted: {:?}",
        reply.body
    );
    assert_eq!(reply.body["task"]["title"], "Deploy failed");
}

fn unsigned_or_tampered_webhook_is_refused_and_writes_nothing(backend: Backend) {
    let relay = relay_with_signed_source(backend);
    let body = br#"{"title": "Deploy failed", "target": "worker"}"#;
    let tampered = br#"{"title": "Deploy failed!", "target": "worker"}"#;

    let unsigned = post_signed(&relay, "ci", body, None);
    let with_operator_but_unsigned = ingest(
        &relay,
        "ci",
        json!({"title": "Deploy failed", "target": "worker"}),
    );
    let altered = post_signed(&relay, "ci", tampered, Some(&sign("s3cret", body)));
    let wrong_secret = post_signed(&relay, "ci", body, Some(&sign("guess", body)));
    let garbage = post_signed(&relay, "ci", body, Some("sha256=not-hex"));

    for (what, reply) in [
        ("unsigned", &unsigned),
        (
            "operator token without signature",
            &with_operator_but_unsigned,
        ),
        ("tampered body", &altered),
        ("wrong secret", &wrong_secret),
        ("malformed signature", &garbage),
    ] {
        assert_eq!(
            reply.status, 401,
            "{what} must be refused: {:?}",
            reply.body
        );
        assert_eq!(reply.code(), "unauthorized", "{what}");
    }
    assert!(
        tasks(&relay, "").is_empty(),
        "a refused event writes no task"
    );
    let inbox = relay.get("/v1/agents/worker/inbox", OPERATOR);
    assert_eq!(inbox.body, json!([]), "a refused event sends no message");
}

fn source_without_secret_needs_the_operator_token(backend: Backend) {
    let (relay, worker) = relay_with_worker(backend);
    let event = json!({"title": "x", "target": "worker"});

    let anonymous = relay.request("POST", "/v1/integrations/ci/events", None, Some(&event));
    let agent = relay.post("/v1/integrations/ci/events", &worker, event.clone());
    let signed_anyway = post_signed(
        &relay,
        "ci",
        event.to_string().as_bytes(),
        Some(&sign("s", event.to_string().as_bytes())),
    );

    assert_eq!(anonymous.status, 401, "anonymous: {:?}", anonymous.body);
    assert_eq!(
        agent.status, 403,
        "an agent token is not the operator's: {:?}",
        agent.body
    );
    assert_eq!(
        signed_anyway.status, 401,
        "a signature means nothing without a secret: {:?}",
        signed_anyway.body
    );
    assert!(tasks(&relay, "").is_empty());
    assert_eq!(
        ingest(&relay, "ci", event).status,
        201,
        "the operator may post"
    );
}

fn removing_the_secret_goes_back_to_the_operator_token(backend: Backend) {
    let relay = relay_with_signed_source(backend);
    let body = br#"{"title": "x", "target": "worker"}"#;
    let removed = relay.put("/v1/integrations/ci", OPERATOR, json!({}));
    assert_eq!(removed.body["signed"], false);

    assert_eq!(
        post_signed(&relay, "ci", body, Some(&sign("s3cret", body))).status,
        401,
        "the old secret no longer admits"
    );
    assert_eq!(
        ingest(&relay, "ci", json!({"title": "x", "target": "worker"})).status,
        201
    );
}

// --- Pair sessions ---

struct Pairing {
    relay: RelayServer,
    alice: String,
    bob: String,
    carol: String,
}

fn pairing(backend: Backend) -> Pairing {
    let relay = RelayServer::start_on(backend, &[]);
    let alice = relay.register(json!({"id": "alice"}));
    let bob = relay.register(json!({"id": "bob"}));
    let carol = relay.register(json!({"id": "carol"}));
    Pairing {
        relay,
        alice,
        bob,
        carol,
    }
}

impl Pairing {
    fn create(&self) -> i64 {
        let reply = self.relay.post(
            "/v1/pairs",
            &self.alice,
            json!({"requesterId": "alice", "partnerId": "bob", "topic": "flaky test"}),
        );
        assert_eq!(reply.status, 200, "create pair: {:?}", reply.body);
        assert_eq!(reply.body["status"], "pending");
        reply.body["id"].as_i64().unwrap()
    }

    fn act(&self, pair: i64, token: &str, agent: &str, action: &str) -> common::Reply {
        self.relay.post(
            &format!("/v1/pairs/{pair}/actions"),
            token,
            json!({"agentId": agent, "action": action}),
        )
    }

    fn say(&self, pair: i64, token: &str, from: &str, body: &str) -> common::Reply {
        self.relay.post(
            &format!("/v1/pairs/{pair}/messages"),
            token,
            json!({"from": from, "body": body}),
        )
    }

    /// The pair messages in an agent's inbox, as (pairEvent, from).
    fn pair_inbox(&self, agent: &str, token: &str) -> Vec<(String, String)> {
        let reply = self
            .relay
            .get(&format!("/v1/agents/{agent}/inbox?kind=pair"), token);
        assert_eq!(reply.status, 200, "inbox of {agent}: {:?}", reply.body);
        reply
            .body
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["payload"]["pairEvent"].as_str().unwrap().to_owned(),
                    m["from"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

fn pair_event(event: &str, from: &str) -> (String, String) {
    (event.to_owned(), from.to_owned())
}

fn pair_request_accept_message_and_end_notify_the_other_participant(backend: Backend) {
    let p = pairing(backend);
    let pair = p.create();

    let accepted = p.act(pair, &p.bob, "bob", "accept");
    assert_eq!(accepted.status, 200, "accept: {:?}", accepted.body);
    assert_eq!(accepted.body["status"], "active");
    assert_eq!(
        p.say(pair, &p.alice, "alice", "can you look at tests/x.rs?")
            .status,
        201
    );
    assert_eq!(p.say(pair, &p.bob, "bob", "on it").status, 201);
    let ended = p.act(pair, &p.bob, "bob", "end");
    assert_eq!(ended.status, 200, "end: {:?}", ended.body);
    assert_eq!(ended.body["status"], "ended");

    assert_eq!(
        p.pair_inbox("bob", &p.bob),
        [
            pair_event("requested", "system"),
            pair_event("message", "alice")
        ]
    );
    assert_eq!(
        p.pair_inbox("alice", &p.alice),
        [
            pair_event("accepted", "system"),
            pair_event("message", "bob"),
            pair_event("ended", "system")
        ]
    );
    let inbox = p
        .relay
        .get("/v1/agents/alice/inbox?kind=pair", &p.alice)
        .body;
    let first = &inbox[0];
    assert_eq!(first["payload"]["pairId"], pair);
    assert_eq!(first["payload"]["requesterId"], "alice");
    assert_eq!(first["payload"]["partnerId"], "bob");
    let thread_id = p.relay.get(&format!("/v1/pairs/{pair}"), &p.alice).body["threadId"]
        .as_i64()
        .unwrap();
    assert!(
        inbox
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["threadId"] == thread_id),
        "a pair's messages share one thread"
    );
}

fn no_pair_message_after_the_pair_ended(backend: Backend) {
    let p = pairing(backend);
    let pair = p.create();
    p.act(pair, &p.bob, "bob", "accept");
    p.act(pair, &p.alice, "alice", "end");

    let late = p.say(pair, &p.alice, "alice", "one more thing");

    assert_eq!(
        late.status, 409,
        "messages go only while active: {:?}",
        late.body
    );
    assert!(
        !p.pair_inbox("bob", &p.bob)
            .iter()
            .any(|(event, _)| event == "message"),
        "bob received nothing"
    );
}

fn pair_decline_and_cancel_end_a_pending_pair(backend: Backend) {
    let p = pairing(backend);
    let declined = p.create();
    let reply = p.act(declined, &p.bob, "bob", "decline");
    assert_eq!(
        reply.body["status"], "declined",
        "decline: {:?}",
        reply.body
    );
    let cancelled = p.create();
    let reply = p.act(cancelled, &p.alice, "alice", "cancel");
    assert_eq!(
        reply.body["status"], "cancelled",
        "cancel: {:?}",
        reply.body
    );

    assert_eq!(
        p.pair_inbox("alice", &p.alice),
        [pair_event("declined", "system")]
    );
    assert_eq!(
        p.pair_inbox("bob", &p.bob),
        [
            pair_event("requested", "system"),
            pair_event("requested", "system"),
            pair_event("cancelled", "system")
        ]
    );
    assert_eq!(
        p.say(declined, &p.alice, "alice", "hi").status,
        409,
        "no messages on a declined pair"
    );
}

fn wrong_state_and_wrong_role_pair_actions_are_conflicts(backend: Backend) {
    let p = pairing(backend);
    let pair = p.create();

    for (token, agent, action, why) in [
        (&p.alice, "alice", "accept", "the requester cannot accept"),
        (&p.alice, "alice", "decline", "the requester cannot decline"),
        (&p.bob, "bob", "cancel", "the partner cannot cancel"),
        (&p.bob, "bob", "end", "a pending pair cannot end"),
    ] {
        let reply = p.act(pair, token, agent, action);
        assert_eq!(reply.status, 409, "{why}: {:?}", reply.body);
    }
    assert_eq!(
        p.say(pair, &p.alice, "alice", "early").status,
        409,
        "no messages while pending"
    );
    assert_eq!(p.act(pair, &p.bob, "bob", "accept").status, 200);
    for (token, agent, action, why) in [
        (&p.bob, "bob", "accept", "accept twice"),
        (
            &p.alice,
            "alice",
            "cancel",
            "an active pair cannot be cancelled",
        ),
    ] {
        assert_eq!(p.act(pair, token, agent, action).status, 409, "{why}");
    }
    let again = p.relay.post(
        "/v1/pairs",
        &p.bob,
        json!({"requesterId": "bob", "partnerId": "alice"}),
    );
    assert_eq!(
        again.status, 409,
        "one open pair per two agents: {:?}",
        again.body
    );
    let solo = p.relay.post(
        "/v1/pairs",
        &p.bob,
        json!({"requesterId": "bob", "partnerId": "bob"}),
    );
    assert_eq!(solo.status, 400, "no pairing with oneself");
    assert_eq!(
        p.relay.get(&format!("/v1/pairs/{pair}"), &p.alice).body["status"],
        "active",
        "refusals changed nothing"
    );
}

fn outsiders_cannot_act_on_read_or_message_a_pair(backend: Backend) {
    let p = pairing(backend);
    let pair = p.create();

    let act = p.act(pair, &p.carol, "carol", "accept");
    let impersonate = p.act(pair, &p.carol, "bob", "accept");
    let read = p.relay.get(&format!("/v1/pairs/{pair}"), &p.carol);
    p.act(pair, &p.bob, "bob", "accept");
    let say = p.say(pair, &p.carol, "carol", "let me in");
    let list_other = p.relay.get("/v1/pairs?agentId=alice", &p.carol);
    let on_behalf = p.relay.post(
        "/v1/pairs",
        &p.carol,
        json!({"requesterId": "alice", "partnerId": "carol"}),
    );

    assert_eq!(act.status, 403, "an outsider cannot act: {:?}", act.body);
    assert_eq!(
        impersonate.status, 403,
        "carol's token cannot act as bob: {:?}",
        impersonate.body
    );
    assert_eq!(
        read.status, 403,
        "an outsider cannot read the pair: {:?}",
        read.body
    );
    assert_eq!(
        say.status, 403,
        "an outsider cannot message the pair: {:?}",
        say.body
    );
    assert_eq!(list_other.status, 403, "an agent lists only its own pairs");
    assert_eq!(
        on_behalf.status, 403,
        "an agent cannot request a pair for another"
    );
    assert!(
        p.pair_inbox("alice", &p.alice)
            .iter()
            .all(|(_, from)| from != "carol"),
        "carol wrote nothing"
    );
}

fn a_participant_lists_its_own_pairs(backend: Backend) {
    let p = pairing(backend);
    let with_bob = p.create();
    let reply = p.relay.post(
        "/v1/pairs",
        &p.carol,
        json!({"requesterId": "carol", "partnerId": "alice"}),
    );
    let with_carol = reply.body["id"].as_i64().unwrap();
    p.act(with_bob, &p.bob, "bob", "accept");

    let ids = |token: &str, query: &str| -> Vec<i64> {
        let reply = p.relay.get(&format!("/v1/pairs{query}"), token);
        assert_eq!(reply.status, 200, "pairs{query}: {:?}", reply.body);
        reply
            .body
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(
        ids(&p.alice, ""),
        [with_carol, with_bob],
        "newest first, both of alice's"
    );
    assert_eq!(ids(&p.bob, ""), [with_bob]);
    assert_eq!(ids(&p.carol, ""), [with_carol]);
    assert_eq!(ids(&p.alice, "?status=active"), [with_bob]);
    assert_eq!(ids(OPERATOR, "?agentId=bob"), [with_bob]);
    assert_eq!(ids(OPERATOR, "").len(), 2);
}

// --- Activity feed ---

fn record(relay: &RelayServer, operator: &str, action: &str) -> i64 {
    let reply = relay.post(
        "/v1/activity",
        OPERATOR,
        json!({"operatorId": operator, "action": action, "data": {"n": 1}}),
    );
    assert_eq!(reply.status, 200, "record: {:?}", reply.body);
    reply.body["id"].as_i64().unwrap()
}

fn actions(relay: &RelayServer, query: &str) -> Vec<String> {
    let reply = relay.get(&format!("/v1/activity{query}"), OPERATOR);
    assert_eq!(reply.status, 200, "activity{query}: {:?}", reply.body);
    reply
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

fn activity_lists_newest_first_filtered_by_operator_and_time_and_paged(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let start = record(&relay, "ana", "opened-dashboard");
    let t0 = relay.get("/v1/activity", OPERATOR).body[0]["createdAt"]
        .as_i64()
        .unwrap();
    relay.advance(60_000);
    record(&relay, "ben", "paused-agent");
    relay.advance(60_000);
    record(&relay, "ana", "resolved-task");
    relay.advance(60_000);
    let last = record(&relay, "ana", "closed-dashboard");

    assert_eq!(
        actions(&relay, ""),
        [
            "closed-dashboard",
            "resolved-task",
            "paused-agent",
            "opened-dashboard"
        ]
    );
    assert_eq!(
        actions(&relay, "?operatorId=ana"),
        ["closed-dashboard", "resolved-task", "opened-dashboard"]
    );
    assert_eq!(
        actions(
            &relay,
            &format!("?since={}&until={}", t0 + 30_000, t0 + 150_000)
        ),
        ["resolved-task", "paused-agent"]
    );
    assert_eq!(
        actions(&relay, &format!("?operatorId=ana&since={}", t0 + 1)),
        ["closed-dashboard", "resolved-task"]
    );
    assert_eq!(
        actions(&relay, "?limit=2"),
        ["closed-dashboard", "resolved-task"]
    );
    let page_two = relay.get("/v1/activity?limit=2", OPERATOR).body[1]["id"]
        .as_i64()
        .unwrap();
    assert_eq!(
        actions(&relay, &format!("?limit=2&before={page_two}")),
        ["paused-agent", "opened-dashboard"]
    );
    assert!(start < last);
    let event = &relay.get("/v1/activity?limit=1", OPERATOR).body[0];
    assert_eq!(event["operatorId"], "ana");
    assert_eq!(event["data"], json!({"n": 1}));
}

fn activity_needs_an_operator_id_and_the_operator_token(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let agent = relay.register(json!({"id": "worker"}));

    let no_operator = relay.post("/v1/activity", OPERATOR, json!({"action": "x"}));
    let empty_operator = relay.post(
        "/v1/activity",
        OPERATOR,
        json!({"operatorId": "", "action": "x"}),
    );
    let by_agent = relay.post(
        "/v1/activity",
        &agent,
        json!({"operatorId": "ana", "action": "x"}),
    );
    let read_by_agent = relay.get("/v1/activity", &agent);

    assert_eq!(
        no_operator.status, 400,
        "operatorId is required: {:?}",
        no_operator.body
    );
    assert_eq!(
        empty_operator.status, 400,
        "operatorId must not be empty: {:?}",
        empty_operator.body
    );
    assert_eq!(
        by_agent.status, 403,
        "agents do not record operator activity: {:?}",
        by_agent.body
    );
    assert_eq!(read_by_agent.status, 403);
    assert!(actions(&relay, "").is_empty(), "nothing was recorded");
}

// --- Health ---

fn check<'a>(report: &'a Json, name: &str) -> &'a Json {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {report}"))
}

fn health_is_ok_on_a_fresh_relay_and_open_to_monitors(backend: Backend) {
    let relay = RelayServer::start_on(backend, &["--reap-interval-secs", "3600"]);
    relay.register(json!({"id": "worker"}));

    let reply = relay.request("GET", "/v1/health", None, None);

    assert_eq!(
        reply.status, 200,
        "health without a token: {:?}",
        reply.body
    );
    assert_eq!(reply.body["status"], "ok", "{}", reply.body);
    assert_eq!(reply.body["version"], env!("CARGO_PKG_VERSION"));
    assert!(reply.body["generatedAt"].is_i64());
    for name in [
        "database",
        "stale-agents",
        "expired-claims",
        "orchestrators",
    ] {
        assert_eq!(
            check(&reply.body, name)["status"],
            "ok",
            "{name}: {}",
            reply.body
        );
    }
    // SQLite's file is also checked for damage (`PRAGMA quick_check`); PostgreSQL checks its own
    // pages, so there the check is that the database takes a write.
    let detail = check(&reply.body, "database")["detail"].clone();
    match backend {
        Backend::Sqlite => assert_eq!(detail, "writable; quick check ok", "{}", reply.body),
        Backend::Postgres => assert_eq!(detail, "writable", "{}", reply.body),
    }
}

fn health_is_degraded_while_an_agent_is_stale_and_ok_once_reaped(backend: Backend) {
    let relay = RelayServer::start_on(backend, &["--reap-interval-secs", "3600"]);
    relay.register(json!({"id": "worker"}));

    relay.advance(10 * 60 * 1000);
    let stale = relay.request("GET", "/v1/health", None, None);

    assert_eq!(
        stale.status, 200,
        "degraded is still served: {:?}",
        stale.body
    );
    assert_eq!(stale.body["status"], "degraded", "{}", stale.body);
    let agents = check(&stale.body, "stale-agents");
    assert_eq!(agents["status"], "degraded");
    assert!(
        agents["detail"].as_str().unwrap().contains("worker"),
        "the detail names the agent: {agents}"
    );
    assert_eq!(check(&stale.body, "database")["status"], "ok");

    relay.reap();
    let reaped = relay.request("GET", "/v1/health", None, None);
    assert_eq!(
        reaped.body["status"], "ok",
        "after reaping: {}",
        reaped.body
    );
}

fn health_reports_expired_claims_until_reaped(backend: Backend) {
    let relay = RelayServer::start_on(backend, &["--reap-interval-secs", "3600"]);
    let worker = relay.register(json!({"id": "worker"}));
    let reply = ingest(&relay, "ci", json!({"title": "x", "target": "worker"}));
    let message_id = reply.body["message"]["id"].as_i64().unwrap();
    let claim = relay.post(
        &format!("/v1/messages/{message_id}/claim"),
        &worker,
        json!({"agentId": "worker", "leaseMs": 1_000}),
    );
    assert_eq!(claim.status, 200, "claim: {:?}", claim.body);

    relay.advance(2_000);
    let expired = relay.request("GET", "/v1/health", None, None);

    let claims = check(&expired.body, "expired-claims");
    assert_eq!(claims["status"], "degraded", "{}", expired.body);
    assert!(
        claims["detail"]
            .as_str()
            .unwrap()
            .starts_with("1 message claim(s) and 1 task claim(s)"),
        "{claims}"
    );
    relay.reap();
    assert_eq!(
        check(
            &relay.request("GET", "/v1/health", None, None).body,
            "expired-claims"
        )["status"],
        "ok"
    );
}

fn health_is_degraded_while_an_orchestrator_is_offline(backend: Backend) {
    let relay = RelayServer::start_on(backend, &["--reap-interval-secs", "3600"]);
    let registered = relay.post(
        "/v1/orchestrators",
        OPERATOR,
        json!({"id": "host1", "hostname": "host1", "providers": ["claude"], "baseDir": "/srv"}),
    );
    assert_eq!(registered.status, 201, "register: {:?}", registered.body);
    let online = relay.request("GET", "/v1/health", None, None);
    assert_eq!(
        check(&online.body, "orchestrators")["status"],
        "ok",
        "{}",
        online.body
    );

    let offline = relay.put(
        "/v1/orchestrators/host1/status",
        OPERATOR,
        json!({"status": "offline"}),
    );
    assert_eq!(offline.status, 200, "status: {:?}", offline.body);
    let report = relay.request("GET", "/v1/health", None, None);

    assert_eq!(report.body["status"], "degraded", "{}", report.body);
    let orchestrators = check(&report.body, "orchestrators");
    assert_eq!(orchestrators["status"], "degraded");
    assert!(
        orchestrators["detail"].as_str().unwrap().contains("host1"),
        "the detail names it: {orchestrators}"
    );
}

crate::on_both_backends!(
    new_event_creates_an_open_task_and_its_claimable_task_message,
    duplicate_event_counts_an_occurrence_and_sends_nothing,
    claiming_renewing_and_releasing_the_message_does_the_same_to_the_task,
    reaper_releases_the_task_of_an_expired_claim,
    a_duplicate_keeps_what_it_does_not_send_and_a_reopening_takes_the_event_as_it_is,
    resolved_task_reopens_with_a_new_message_when_the_event_comes_back,
    task_events_list_the_whole_history_with_actors,
    illegal_status_changes_are_refused,
    another_agent_cannot_resolve_or_dismiss_a_task_someone_else_holds,
    an_agent_cannot_settle_an_open_task_nor_reopen_one,
    a_holder_whose_lease_ran_out_may_no_longer_change_the_task,
    bad_severity_and_empty_title_are_refused_and_write_nothing,
    tasks_list_filters_by_status_severity_and_source,
    signed_webhook_is_accepted_without_a_token,
    unsigned_or_tampered_webhook_is_refused_and_writes_nothing,
    source_without_secret_needs_the_operator_token,
    removing_the_secret_goes_back_to_the_operator_token,
    pair_request_accept_message_and_end_notify_the_other_participant,
    no_pair_message_after_the_pair_ended,
    pair_decline_and_cancel_end_a_pending_pair,
    wrong_state_and_wrong_role_pair_actions_are_conflicts,
    outsiders_cannot_act_on_read_or_message_a_pair,
    a_participant_lists_its_own_pairs,
    activity_lists_newest_first_filtered_by_operator_and_time_and_paged,
    activity_needs_an_operator_id_and_the_operator_token,
    health_is_ok_on_a_fresh_relay_and_open_to_monitors,
    health_is_degraded_while_an_agent_is_stale_and_ok_once_reaped,
    health_reports_expired_claims_until_reaped,
    health_is_degraded_while_an_orchestrator_is_offline,
);
