//! docs/http-api.md §2 over HTTP: sending, threads, idempotency, targets and delivery sets, the
//! inbox, read receipts, claims and leases, rollback of failed calls, and refusal of bad input.

use crate::common;

use common::{Backend, Json, OPERATOR, RelayServer, WITH_FAULTS, id_of, json};

fn a_reply_joins_the_thread_of_the_message_it_answers(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let alice = relay.register(json!({"id": "alice"}));
    let first =
        relay.send(json!({"from": "user", "to": "alice", "body": "hello", "subject": "hi"}));
    assert_eq!(first.status, 201);
    let first_id = id_of(&first);
    assert_eq!(
        first.body["message"]["threadId"], first_id,
        "a new message starts its own thread"
    );
    let answer = relay.post(
        "/v1/messages",
        &alice,
        json!({"from": "alice", "to": "user", "body": "hey", "replyTo": first_id}),
    );
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    assert_eq!(answer.body["message"]["threadId"], first_id);
    let again = relay
        .send(json!({"from": "user", "to": "alice", "body": "more", "replyTo": id_of(&answer)}));
    assert_eq!(
        again.body["message"]["threadId"], first_id,
        "a reply to a reply stays in the thread"
    );
    let thread = relay.get(&format!("/v1/threads/{first_id}"), OPERATOR);
    let bodies: Vec<&str> = thread
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["hello", "hey", "more"]);
    assert_eq!(
        relay
            .send(json!({"from": "user", "to": "alice", "body": "x", "replyTo": 999}))
            .status,
        404
    );
}

fn the_same_idempotency_key_twice_gives_one_message(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let alice = relay.register(json!({"id": "alice"}));
    let message = json!({"from": "user", "to": "alice", "body": "once", "idempotencyKey": "k-1"});
    let first = relay.send(message.clone());
    let second = relay.send(message);
    assert_eq!((first.status, second.status), (201, 200));
    assert_eq!(second.body["created"], false);
    assert_eq!(id_of(&first), id_of(&second));
    assert_eq!(
        relay.inbox_ids("alice", &alice, "").len(),
        1,
        "nothing duplicated"
    );
    let other_sender = relay.post(
        "/v1/messages",
        &alice,
        json!({"from": "alice", "to": "user", "body": "x", "idempotencyKey": "k-1"}),
    );
    assert_eq!(other_sender.status, 201, "keys are per sender");
}

fn kinds_are_inferred_when_not_given(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    relay.register(json!({"id": "alice", "label": "x"}));
    relay.register(json!({"id": "slack:team", "meta": {"kind": "channel", "provider": "slack"}}));
    let kind = |message: Json| {
        relay.send(message).body["message"]["kind"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        kind(json!({"from": "user", "to": "alice", "body": "a"})),
        "chat"
    );
    assert_eq!(
        kind(json!({"from": "user", "to": "label:x", "body": "a", "claimable": true})),
        "job"
    );
    assert_eq!(
        kind(json!({"from": "user", "to": "slack:team", "body": "a"})),
        "channel.event"
    );
    assert_eq!(
        kind(json!({"from": "slack:team", "to": "alice", "body": "a"})),
        "channel.event"
    );
    assert_eq!(
        kind(json!({"from": "user", "to": "alice", "body": "a", "kind": "system"})),
        "system",
        "a kind given is kept (the operator may send the relay's own)"
    );
}

fn group_targets_reach_exactly_their_delivery_set(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let a =
        relay.register(json!({"id": "a", "label": "x", "tags": ["t1"], "capabilities": ["rust"]}));
    let b = relay.register(json!({"id": "b", "label": "y", "tags": ["t1"]}));
    let c =
        relay.register(json!({"id": "c", "label": "x", "tags": ["t1"], "capabilities": ["rust"]}));
    relay.register(json!({"id": "slack:team", "tags": ["t1"], "meta": {"kind": "channel", "provider": "slack"}}));
    relay.put(
        "/v1/agents/c/status",
        OPERATOR,
        json!({"status": "offline"}),
    );
    let recipients = |to: &str| -> Vec<String> {
        let reply = relay.send(json!({"from": "user", "to": to, "body": to}));
        assert_eq!(reply.status, 201, "{to}: {:?}", reply.body);
        let mut ids: Vec<String> = reply.body["recipients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(recipients("label:x"), ["a"], "c is offline");
    assert_eq!(
        recipients("tag:t1"),
        ["a", "b"],
        "channels never receive group messages"
    );
    assert_eq!(recipients("cap:rust"), ["a"]);
    assert_eq!(
        recipients("broadcast"),
        ["a", "b"],
        "not user, system, channels or offline agents"
    );
    assert_eq!(recipients("b"), ["b"]);

    let bodies = |agent: &str, token: &str| -> Vec<String> {
        let reply = relay.get(&format!("/v1/agents/{agent}/inbox"), token);
        reply
            .body
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["body"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        bodies("a", &a),
        ["label:x", "tag:t1", "cap:rust", "broadcast"]
    );
    assert_eq!(bodies("b", &b), ["tag:t1", "broadcast", "b"]);
    let sent_by_a = relay.post(
        "/v1/messages",
        &a,
        json!({"from": "a", "to": "broadcast", "body": "from a"}),
    );
    assert_eq!(sent_by_a.status, 201);
    assert!(
        !bodies("a", &a).contains(&"from a".to_owned()),
        "a sender does not receive its own broadcast"
    );
    assert!(
        bodies("c", &c).contains(&"label:x".to_owned()),
        "an offline agent that polls still sees its groups"
    );
}

fn sending_needs_a_registered_sender_and_an_existing_target(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    relay.register(json!({"id": "a"}));
    assert_eq!(
        relay
            .send(json!({"from": "ghost", "to": "a", "body": "x"}))
            .status,
        404
    );
    assert_eq!(
        relay
            .send(json!({"from": "user", "to": "ghost", "body": "x"}))
            .status,
        404
    );
    assert_eq!(
        relay
            .send(json!({"from": "user", "to": "orchestrator:nowhere", "body": "x"}))
            .status,
        404
    );
    assert_eq!(
        relay
            .send(json!({"from": "user", "to": "label:", "body": "x"}))
            .status,
        400
    );
    assert_eq!(
        relay
            .send(json!({"from": "user", "to": "label:nobody-yet", "body": "x"}))
            .status,
        201,
        "a group may be empty for now"
    );
}

fn polling_peeks_and_marking_read_records_a_receipt_per_agent(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let a = relay.register(json!({"id": "a", "label": "x"}));
    let b = relay.register(json!({"id": "b", "label": "x"}));
    let id = id_of(&relay.send(json!({"from": "user", "to": "label:x", "body": "note"})));
    assert_eq!(relay.inbox_ids("a", &a, "?unread=true"), [id]);
    assert_eq!(
        relay.inbox_ids("a", &a, "?unread=true"),
        [id],
        "polling does not mark read"
    );
    assert_eq!(
        relay.get(&format!("/v1/messages/{id}"), OPERATOR).body["readBy"],
        json!([])
    );

    let read = relay.post(
        &format!("/v1/messages/{id}/read"),
        &a,
        json!({"agentId": "a"}),
    );
    assert_eq!(read.status, 200, "{:?}", read.body);
    assert_eq!(read.body["readBy"], json!(["a"]));
    relay.post(
        &format!("/v1/messages/{id}/read"),
        &a,
        json!({"agentId": "a"}),
    );
    assert!(relay.inbox_ids("a", &a, "?unread=true").is_empty());
    assert_eq!(
        relay.inbox_ids("b", &b, "?unread=true"),
        [id],
        "receipts are per agent"
    );
    assert_eq!(
        relay.inbox_ids("a", &a, ""),
        [id],
        "read messages stay in the inbox"
    );
    assert_eq!(
        relay.get(&format!("/v1/messages/{id}"), OPERATOR).body["readBy"],
        json!(["a"]),
        "a second read adds nothing"
    );
}

fn the_inbox_filters_by_since_kind_channel_thread_and_limit(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let a = relay.register(json!({"id": "a"}));
    let m1 = id_of(&relay.send(json!({"from": "user", "to": "a", "body": "1", "channel": "ops"})));
    let m2 = id_of(&relay.send(json!({"from": "user", "to": "a", "body": "2", "kind": "system"})));
    let m3 = id_of(&relay.send(json!({"from": "user", "to": "a", "body": "3", "replyTo": m1})));
    assert_eq!(relay.inbox_ids("a", &a, ""), [m1, m2, m3], "oldest first");
    assert_eq!(relay.inbox_ids("a", &a, &format!("?since={m1}")), [m2, m3]);
    assert_eq!(relay.inbox_ids("a", &a, "?kind=system"), [m2]);
    assert_eq!(relay.inbox_ids("a", &a, "?channel=ops"), [m1]);
    assert_eq!(
        relay.inbox_ids("a", &a, &format!("?threadId={m1}")),
        [m1, m3]
    );
    assert_eq!(relay.inbox_ids("a", &a, "?limit=2"), [m1, m2]);
    for bad in [
        "?limit=0",
        "?limit=501",
        "?since=abc",
        "?unread=maybe",
        "?color=red",
    ] {
        let reply = relay.get(&format!("/v1/agents/a/inbox{bad}"), &a);
        assert_eq!(reply.status, 400, "{bad}: {:?}", reply.body);
    }
}

fn only_tasks_system_channel_events_and_group_targets_are_stored_claimable(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    relay.register(json!({"id": "a", "label": "x"}));
    let claimable = |message: Json| {
        relay.send(message).body["message"]["claimable"]
            .as_bool()
            .unwrap()
    };
    assert!(!claimable(
        json!({"from": "user", "to": "a", "body": "x", "kind": "chat", "claimable": true})
    ));
    assert!(
        claimable(json!({"from": "user", "to": "a", "body": "x", "claimable": true})),
        "inferred task"
    );
    assert!(claimable(
        json!({"from": "user", "to": "a", "body": "x", "kind": "system", "claimable": true})
    ));
    assert!(claimable(
        json!({"from": "user", "to": "label:x", "body": "x", "kind": "chat", "claimable": true})
    ));
    assert!(!claimable(
        json!({"from": "user", "to": "label:x", "body": "x"})
    ));
}

fn claim_setup(backend: Backend) -> (RelayServer, String, String, i64) {
    let relay = RelayServer::start_on(backend, &[]);
    let a = relay.register(json!({"id": "a", "label": "w", "instanceId": "ia"}));
    let b = relay.register(json!({"id": "b", "label": "w"}));
    let id = id_of(
        &relay.send(json!({"from": "user", "to": "label:w", "body": "job", "claimable": true})),
    );
    (relay, a, b, id)
}

fn a_second_claimer_gets_conflict(backend: Backend) {
    let (relay, a, b, id) = claim_setup(backend);
    let first = relay.post(
        &format!("/v1/messages/{id}/claim"),
        &a,
        json!({"agentId": "a"}),
    );
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.body["claimedBy"], "a");
    let second = relay.post(
        &format!("/v1/messages/{id}/claim"),
        &b,
        json!({"agentId": "b"}),
    );
    assert_eq!(second.status, 409, "{:?}", second.body);
    assert_eq!(
        relay.get(&format!("/v1/messages/{id}"), OPERATOR).body["claimedBy"],
        "a"
    );
    assert!(
        relay.inbox_ids("b", &b, "").is_empty(),
        "a message claimed by another is not in b's inbox"
    );
    assert_eq!(
        relay.inbox_ids("a", &a, ""),
        [id],
        "the holder still sees it"
    );
    let not_claimable = id_of(&relay.send(json!({"from": "user", "to": "a", "body": "chat"})));
    assert_eq!(
        relay
            .post(
                &format!("/v1/messages/{not_claimable}/claim"),
                &a,
                json!({"agentId": "a"})
            )
            .status,
        409
    );
}

fn an_expired_lease_makes_the_message_claimable_again(backend: Backend) {
    let (relay, a, b, id) = claim_setup(backend);
    relay.post(
        &format!("/v1/messages/{id}/claim"),
        &a,
        json!({"agentId": "a", "leaseMs": 60_000}),
    );
    relay.advance(59_000);
    assert_eq!(
        relay
            .post(
                &format!("/v1/messages/{id}/claim"),
                &b,
                json!({"agentId": "b"})
            )
            .status,
        409
    );
    relay.advance(2_000);
    assert_eq!(
        relay.inbox_ids("b", &b, ""),
        [id],
        "an expired claim is visible to others again"
    );
    let taken = relay.post(
        &format!("/v1/messages/{id}/claim"),
        &b,
        json!({"agentId": "b"}),
    );
    assert_eq!(taken.status, 200, "{:?}", taken.body);
    assert_eq!(taken.body["claimedBy"], "b");
    let late = relay.post(
        &format!("/v1/messages/{id}/renew"),
        &a,
        json!({"agentId": "a"}),
    );
    assert_eq!(late.status, 409, "the old holder cannot renew");
}

fn the_holder_renews_and_releases_and_others_cannot(backend: Backend) {
    let (relay, a, b, id) = claim_setup(backend);
    let claimed = relay.post(
        &format!("/v1/messages/{id}/claim"),
        &a,
        json!({"agentId": "a", "leaseMs": 10_000}),
    );
    let expires = claimed.body["claimExpiresAt"].as_i64().unwrap();
    relay.advance(5_000);
    let renewed = relay.post(
        &format!("/v1/messages/{id}/renew"),
        &a,
        json!({"agentId": "a", "leaseMs": 10_000}),
    );
    assert_eq!(renewed.status, 200);
    let renewed_until = renewed.body["claimExpiresAt"].as_i64().unwrap();
    assert!(
        (expires + 5_000..expires + 6_000).contains(&renewed_until),
        "renewal counts the lease from now"
    );
    assert_eq!(
        relay
            .post(
                &format!("/v1/messages/{id}/renew"),
                &b,
                json!({"agentId": "b"})
            )
            .status,
        409
    );
    assert_eq!(
        relay
            .post(
                &format!("/v1/messages/{id}/release"),
                &b,
                json!({"agentId": "b"})
            )
            .status,
        409
    );
    let released = relay.post(
        &format!("/v1/messages/{id}/release"),
        &a,
        json!({"agentId": "a"}),
    );
    assert!(
        released.body.get("claimedBy").is_none(),
        "{:?}",
        released.body
    );
    assert_eq!(
        relay
            .post(
                &format!("/v1/messages/{id}/claim"),
                &b,
                json!({"agentId": "b"})
            )
            .status,
        200
    );
    for bad in [0, 99, 100 * 24 * 3600 * 1000_i64] {
        let reply = relay.post(
            &format!("/v1/messages/{id}/renew"),
            &b,
            json!({"agentId": "b", "leaseMs": bad}),
        );
        assert_eq!(reply.status, 400, "leaseMs {bad}");
    }
}

fn a_stale_epoch_is_refused_and_changes_nothing(backend: Backend) {
    let (relay, a, _b, id) = claim_setup(backend);
    relay.post(
        "/v1/agents",
        &a,
        json!({"id": "a", "instanceId": "ia-restarted"}),
    );
    let stale = relay.post(
        &format!("/v1/messages/{id}/claim"),
        &a,
        json!({"agentId": "a", "instanceId": "ia", "epoch": 1}),
    );
    assert_eq!(stale.status, 409);
    assert_eq!(stale.code(), "stale_session");
    let message = relay.get(&format!("/v1/messages/{id}"), OPERATOR).body;
    assert!(
        message.get("claimedBy").is_none(),
        "a stale claim takes nothing: {message}"
    );
    let stale_read = relay.post(
        &format!("/v1/messages/{id}/read"),
        &a,
        json!({"agentId": "a", "epoch": 1}),
    );
    assert_eq!(stale_read.code(), "stale_session");
    assert_eq!(
        relay.get(&format!("/v1/messages/{id}"), OPERATOR).body["readBy"],
        json!([])
    );
    let current = relay.post(
        &format!("/v1/messages/{id}/claim"),
        &a,
        json!({"agentId": "a", "instanceId": "ia-restarted", "epoch": 2}),
    );
    assert_eq!(current.status, 200, "{:?}", current.body);
}

fn the_reaper_releases_expired_claims(backend: Backend) {
    let (relay, a, _b, id) = claim_setup(backend);
    relay.post(
        &format!("/v1/messages/{id}/claim"),
        &a,
        json!({"agentId": "a", "leaseMs": 1_000}),
    );
    assert_eq!(relay.reap()["releasedClaims"], 0);
    relay.advance(1_001);
    assert_eq!(relay.reap()["releasedClaims"], 1);
    assert!(
        relay
            .get(&format!("/v1/messages/{id}"), OPERATOR)
            .body
            .get("claimedBy")
            .is_none()
    );
}

fn a_failed_call_rolls_back_everything_it_wrote(backend: Backend) {
    let relay = RelayServer::start_on(
        backend,
        &[
            &WITH_FAULTS[..],
            &["--call-timeout-ms", "500", "--memory-limit-mib", "32"],
        ]
        .concat(),
    );
    let user_inbox = |relay: &RelayServer| -> Vec<String> {
        relay
            .get("/v1/agents/user/inbox?limit=500", OPERATOR)
            .body
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["body"].as_str().unwrap().to_owned())
            .collect()
    };
    let failed = relay.post(
        "/v1/test/faults/write-then-fail",
        OPERATOR,
        json!({"body": "from a failed call"}),
    );
    assert_eq!(failed.status, 409, "{:?}", failed.body);
    for (fault, cause) in [
        ("write-then-trap", "trap"),
        ("write-then-spin", "deadline"),
        ("write-then-exhaust-memory", ""),
    ] {
        let reply = relay.post(
            &format!("/v1/test/faults/{fault}"),
            OPERATOR,
            json!({"body": format!("from {fault}")}),
        );
        assert_eq!(reply.status, 500, "{fault}: {:?}", reply.body);
        assert_eq!(reply.code(), "internal");
        assert!(
            reply.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(cause),
            "{fault}: {:?}",
            reply.body
        );
    }
    assert!(
        user_inbox(&relay).is_empty(),
        "every write of a failed call was rolled back: {:?}",
        user_inbox(&relay)
    );
    relay.register(json!({"id": "still-serving"}));
    assert_eq!(
        relay
            .send(json!({"from": "system", "to": "user", "body": "after"}))
            .status,
        201
    );
    assert_eq!(user_inbox(&relay), ["after"]);
}

fn fault_injection_is_refused_unless_switched_on(backend: Backend) {
    let relay = RelayServer::start_on(backend, &WITH_FAULTS[..2]);
    let reply = relay.post(
        "/v1/test/faults/write-then-fail",
        OPERATOR,
        json!({"body": "x"}),
    );
    assert_eq!(reply.status, 403, "{:?}", reply.body);
}

fn the_shipped_component_has_no_fault_injection(backend: Backend) {
    let relay = RelayServer::start_on(backend, &["--setting", "fault-injection=on"]);
    let reply = relay.post(
        "/v1/test/faults/write-then-fail",
        OPERATOR,
        json!({"body": "x"}),
    );
    assert_eq!(reply.status, 404, "{:?}", reply.body);
    let listed = std::process::Command::new(common::binary())
        .args(["call", "--list", "--db"])
        .arg(relay.dir.path().join("listed.db"))
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("send-message"), "{listed}");
    assert!(
        !listed.contains("fault"),
        "call --list shows no fault export: {listed}"
    );
}

fn callers_mistakes_get_4xx_json_errors(backend: Backend) {
    let relay = RelayServer::start_on(backend, &["--max-body-bytes", "4096"]);
    let a = relay.register(json!({"id": "a"}));
    let cases: Vec<(&str, common::Reply, u16)> = vec![
        (
            "malformed JSON",
            relay.raw(
                "POST",
                "/v1/messages",
                Some(OPERATOR),
                b"{\"from\": ".to_vec(),
            ),
            400,
        ),
        (
            "wrong type",
            relay.send(json!({"from": "user", "to": "a", "body": 5})),
            400,
        ),
        (
            "missing field",
            relay.send(json!({"from": "user", "to": "a"})),
            400,
        ),
        (
            "unknown field",
            relay.send(json!({"from": "user", "to": "a", "body": "x", "type": "chat"})),
            400,
        ),
        (
            "empty id",
            relay.send(json!({"from": "", "to": "a", "body": "x"})),
            400,
        ),
        (
            "empty agent id",
            relay.post("/v1/agents", OPERATOR, json!({"id": ""})),
            400,
        ),
        (
            "meta not an object",
            relay.send(json!({"from": "user", "to": "a", "body": "x", "meta": [1]})),
            400,
        ),
        (
            "unknown message",
            relay.get("/v1/messages/424242", OPERATOR),
            404,
        ),
        (
            "message id not a number",
            relay.get("/v1/messages/abc", OPERATOR),
            400,
        ),
        (
            "unknown agent",
            relay.get("/v1/agents/nobody/inbox", OPERATOR),
            404,
        ),
        ("unknown thread", relay.get("/v1/threads/77", OPERATOR), 404),
        (
            "oversized body",
            relay.raw(
                "POST",
                "/v1/messages",
                Some(OPERATOR),
                format!(
                    "{{\"from\":\"user\",\"to\":\"a\",\"body\":\"{}\"}}",
                    "x".repeat(10_000)
                )
                .into_bytes(),
            ),
            413,
        ),
        (
            "body is an array",
            relay.raw("POST", "/v1/messages", Some(OPERATOR), b"[1,2]".to_vec()),
            400,
        ),
        ("unknown route", relay.get("/v1/nothing-here", &a), 404),
        (
            "wrong method",
            relay.request("PATCH", "/v1/agents", Some(OPERATOR), None),
            405,
        ),
        (
            "a method HTTP does not know",
            relay.request("FOO", "/v1/messages", Some(OPERATOR), None),
            405,
        ),
        (
            "no credentials",
            relay.request("GET", "/v1/agents/a/inbox", None, None),
            401,
        ),
    ];
    for (what, reply, status) in cases {
        assert_eq!(reply.status, status, "{what}: {:?}", reply.body);
        let message = reply.body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            !message.is_empty(),
            "{what}: a JSON error with a message, got {:?}",
            reply.body
        );
    }
}

fn the_message_a_send_answers_with_is_the_message_stored(backend: Backend) {
    // The send answers with the record it wrote (built from the values it stored, not read
    // back): it must be exactly what reading the message returns, field for field.
    let relay = RelayServer::start_on(backend, &[]);
    relay.register(json!({"id": "alice"}));
    let bridge = relay.register(
        json!({"id": "telegram:bot1", "kind": "channel", "meta": {"provider": "telegram"}}),
    );
    relay.register(json!({"id": "bob", "label": "team"}));
    let sends = [
        json!({"from": "user", "to": "alice", "body": "plain"}),
        json!({"from": "user", "to": "alice", "body": "all fields", "subject": "s",
               "channel": "ops", "idempotencyKey": "k-1",
               "payload": {"n": 1, "nested": {"a": [1, "two", null]}}, "meta": {"m": "é"}}),
        json!({"from": "user", "to": "label:team", "body": "a task", "claimable": true}),
        json!({"from": "user", "to": "telegram:bot1", "body": "to a channel"}),
        json!({"from": "user", "to": "alice", "body": "typed", "kind": "custom.kind"}),
    ];
    let mut last = None;
    for mut send in sends {
        if let Some(parent) = last {
            send["replyTo"] = json!(parent);
        }
        let sent = relay.send(send.clone());
        assert_eq!(sent.status, 201, "{send}: {:?}", sent.body);
        let id = id_of(&sent);
        let stored = relay.get(&format!("/v1/messages/{id}"), OPERATOR);
        assert_eq!(stored.status, 200, "{:?}", stored.body);
        assert_eq!(sent.body["message"], stored.body, "{send}");
        last = Some(id);
    }
    // The channel's own send is a channel event; the reply chain shares the first thread.
    let from_channel = relay.post(
        "/v1/messages",
        &bridge,
        json!({"from": "telegram:bot1", "to": "alice", "body": "inbound"}),
    );
    assert_eq!(from_channel.status, 201, "{:?}", from_channel.body);
    let id = id_of(&from_channel);
    assert_eq!(from_channel.body["message"]["kind"], "channel.event");
    assert_eq!(
        from_channel.body["message"],
        relay.get(&format!("/v1/messages/{id}"), OPERATOR).body
    );
}

fn a_badly_shaped_request_is_refused_with_the_place_of_the_mistake(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    relay.register(json!({"id": "alice"}));
    let cases = [
        (
            "/v1/messages",
            json!({"from": "user", "to": "alice", "body": 7}),
            "body must be",
        ),
        (
            "/v1/messages",
            json!({"from": "user", "to": "alice", "body": "x", "colour": "red"}),
            "colour is not a known field; expected: from, to, kind, channel, subject, body,",
        ),
        (
            "/v1/messages",
            json!({"from": "user", "to": "alice"}),
            "body is required",
        ),
        (
            "/v1/agents",
            json!({"id": "bob", "tags": ["ok", 3]}),
            "tags[1] must be",
        ),
    ];
    for (path, body, expected) in cases {
        let reply = relay.post(path, OPERATOR, body.clone());
        assert_eq!(reply.status, 400, "{body}: {:?}", reply.body);
        assert_eq!(reply.body["error"]["code"], "invalid", "{body}");
        let message = reply.body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(expected),
            "{body}: {message:?} does not say {expected:?}"
        );
    }
}

/// The ids and bodies of a thread page.
fn thread_bodies(reply: &common::Reply) -> Vec<String> {
    reply
        .body
        .as_array()
        .unwrap_or_else(|| panic!("not a thread page: {:?}", reply.body))
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_owned())
        .collect()
}

fn a_recreated_id_reads_none_of_its_predecessors_threads(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let old = relay.register(json!({"id": "dave", "label": "ops"}));
    let alice = relay.register(json!({"id": "alice"}));
    let bob = relay.register(json!({"id": "bob"}));
    let private = id_of(&relay.post(
        "/v1/messages",
        &alice,
        json!({"from": "alice", "to": "dave", "body": "the old dave's secret"}),
    ));
    let answer = relay.post(
        "/v1/messages",
        &old,
        json!({"from": "dave", "to": "alice", "body": "the old dave's answer", "replyTo": private}),
    );
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    let to_label =
        id_of(&relay.send(json!({"from": "user", "to": "label:ops", "body": "ops only"})));
    let job = id_of(&relay.post(
        "/v1/messages",
        &old,
        json!({"from": "dave", "to": "bob", "body": "the old dave's job", "claimable": true}),
    ));
    assert_eq!(relay.delete("/v1/agents/dave", OPERATOR).status, 200);
    let dave = relay.register(json!({"id": "dave", "label": "ops"}));

    for thread in [private, to_label, job] {
        let reply = relay.get(&format!("/v1/threads/{thread}"), &dave);
        assert_eq!(
            reply.status, 403,
            "thread {thread} holds nothing the new dave may see: {:?}",
            reply.body
        );
        assert_eq!(reply.code(), "forbidden");
        assert_eq!(
            relay.get(&format!("/v1/messages/{thread}"), &dave).status,
            403,
            "as a single read of message {thread}"
        );
    }
    // A job of the old dave dead-lettered after the new one exists tells nobody: the new dave
    // did not send it.
    for _ in 0..5 {
        let claimed = relay.post(
            &format!("/v1/messages/{job}/claim"),
            &bob,
            json!({"agentId": "bob"}),
        );
        assert_eq!(claimed.status, 200, "{:?}", claimed.body);
        let released = relay.post(
            &format!("/v1/messages/{job}/release"),
            &bob,
            json!({"agentId": "bob"}),
        );
        assert_eq!(released.status, 200, "{:?}", released.body);
    }
    assert!(
        relay.get(&format!("/v1/messages/{job}"), OPERATOR).body["deadLetteredAt"].is_i64(),
        "the job is dead-lettered"
    );
    let notices = relay.get("/v1/agents/dave/inbox", &dave);
    assert_eq!(
        notices.body,
        json!([]),
        "the new dave is not told of the old dave's job"
    );
    assert_eq!(
        relay.get(&format!("/v1/threads/{job}"), &dave).status,
        403,
        "nor does its thread open to him"
    );

    // A thread seen message by message: the new dave sees only what reaches the new dave.
    let fresh = relay.post(
        "/v1/messages",
        &alice,
        json!({"from": "alice", "to": "dave", "body": "welcome", "replyTo": private}),
    );
    assert_eq!(fresh.status, 201, "{:?}", fresh.body);
    let seen = relay.get(&format!("/v1/threads/{private}"), &dave);
    assert_eq!(seen.status, 200, "{:?}", seen.body);
    assert_eq!(thread_bodies(&seen), ["welcome"]);
    assert_eq!(
        thread_bodies(&relay.get(&format!("/v1/threads/{private}"), &alice)),
        ["the old dave's secret", "the old dave's answer", "welcome"],
        "alice keeps her part of the thread"
    );
    assert_eq!(
        thread_bodies(&relay.get(&format!("/v1/threads/{private}"), OPERATOR)).len(),
        3,
        "the operator sees all of it"
    );
    assert_eq!(
        relay.get("/v1/threads/99999", &dave).status,
        404,
        "a thread that does not exist is still 404"
    );
}

fn an_idempotency_key_belongs_to_one_identity_of_its_sender(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let old = relay.register(json!({"id": "gina"}));
    relay.register(json!({"id": "alice"}));
    let bob = relay.register(json!({"id": "bob"}));
    let first = relay.post(
        "/v1/messages",
        &old,
        json!({"from": "gina", "to": "alice", "subject": "private", "body": "the old gina's secret",
               "idempotencyKey": "k-1"}),
    );
    assert_eq!(first.status, 201, "{:?}", first.body);
    let first = id_of(&first);
    assert_eq!(relay.delete("/v1/agents/gina", OPERATOR).status, 200);
    let gina = relay.register(json!({"id": "gina"}));

    let sent = relay.post(
        "/v1/messages",
        &gina,
        json!({"from": "gina", "to": "bob", "body": "the new gina's note", "idempotencyKey": "k-1"}),
    );

    assert_eq!(sent.status, 201, "{:?}", sent.body);
    assert_eq!(sent.body["created"], true, "{:?}", sent.body);
    assert_eq!(sent.body["message"]["body"], "the new gina's note");
    assert_eq!(sent.body["message"]["to"], "bob");
    assert_ne!(sent.body["message"]["id"], first);
    assert_eq!(sent.body["recipients"], json!(["bob"]));
    let new = id_of(&sent);
    assert_eq!(relay.inbox_ids("bob", &bob, ""), [new], "bob got it");

    // A replay by the new gina answers what she stored, with its own recipients.
    let replay = relay.post(
        "/v1/messages",
        &gina,
        json!({"from": "gina", "to": "alice", "body": "elsewhere", "idempotencyKey": "k-1"}),
    );
    assert_eq!(replay.body["created"], false, "{:?}", replay.body);
    assert_eq!(replay.body["message"]["id"], new);
    assert_eq!(replay.body["message"]["to"], "bob");
    assert_eq!(
        replay.body["recipients"],
        json!(["bob"]),
        "the recipients of the stored message, not of the replayed request"
    );
    let kept = relay.get(&format!("/v1/messages/{first}"), OPERATOR);
    assert_eq!(
        kept.body["body"], "the old gina's secret",
        "the old message stays"
    );
}

fn an_agent_may_not_send_the_relays_own_kinds(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let alice = relay.register(json!({"id": "alice"}));
    let bob = relay.register(json!({"id": "bob"}));
    let bridge = relay
        .register(json!({"id": "slack:team", "kind": "channel", "meta": {"provider": "slack"}}));
    for kind in ["system", "pair", "channel.event", "spawn"] {
        let refused = relay.post(
            "/v1/messages",
            &alice,
            json!({"from": "alice", "to": "bob", "body": "the relay says so", "kind": kind}),
        );
        assert_eq!(refused.status, 403, "{kind}: {:?}", refused.body);
        assert_eq!(refused.code(), "forbidden", "{kind}");
        let says = refused.body["error"]["message"].as_str().unwrap();
        assert!(
            says.contains(kind) && says.contains("chat") && says.contains("job"),
            "{kind}: the refusal names the kinds an agent may send: {says}"
        );
    }
    assert!(
        relay.inbox_ids("bob", &bob, "").is_empty(),
        "nothing was sent"
    );

    // What agents send today keeps working: chats, jobs handed on, kinds of their own, and the
    // channel events of a channel's own traffic.
    for (token, message) in [
        (
            &alice,
            json!({"from": "alice", "to": "bob", "body": "hi", "kind": "chat"}),
        ),
        (
            &alice,
            json!({"from": "alice", "to": "bob", "body": "a job", "kind": "task", "claimable": true}),
        ),
        (
            &alice,
            json!({"from": "alice", "to": "bob", "body": "mine", "kind": "review.request"}),
        ),
        (
            &alice,
            json!({"from": "alice", "to": "slack:team", "body": "out", "kind": "channel.event"}),
        ),
        (
            &bridge,
            json!({"from": "slack:team", "to": "alice", "body": "in", "kind": "channel.event"}),
        ),
    ] {
        let sent = relay.post("/v1/messages", token, message.clone());
        assert_eq!(sent.status, 201, "{message}: {:?}", sent.body);
        assert_eq!(sent.body["message"]["kind"], message["kind"]);
    }
    let system =
        relay.send(json!({"from": "system", "to": "bob", "body": "notice", "kind": "system"}));
    assert_eq!(system.status, 201, "the operator may: {:?}", system.body);
}

fn a_reply_to_a_message_one_may_not_read_is_refused_as_a_missing_one(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let alice = relay.register(json!({"id": "alice"}));
    let bob = relay.register(json!({"id": "bob"}));
    let eve = relay.register(json!({"id": "eve"}));
    let private = id_of(&relay.post(
        "/v1/messages",
        &alice,
        json!({"from": "alice", "to": "bob", "body": "between us"}),
    ));
    let missing = private + 1000;
    let reply_to = |token: &str, from: &str, parent: i64| {
        relay.post(
            "/v1/messages",
            token,
            json!({"from": from, "to": "alice", "body": "me too", "replyTo": parent}),
        )
    };

    let refused = reply_to(&eve, "eve", private);
    let absent = reply_to(&eve, "eve", missing);

    assert_eq!(refused.status, 404, "{:?}", refused.body);
    assert_eq!(absent.status, 404, "{:?}", absent.body);
    assert_eq!(refused.code(), absent.code());
    let shape = |reply: &common::Reply, id: i64| {
        reply.body["error"]["message"]
            .as_str()
            .unwrap()
            .replace(&id.to_string(), "N")
    };
    assert_eq!(
        shape(&refused, private),
        shape(&absent, missing),
        "nothing tells an existing message from a missing one"
    );
    assert!(
        relay.inbox_ids("alice", &alice, "").is_empty(),
        "eve joined no thread"
    );
    for (token, from) in [(&bob, "bob"), (&alice, "alice")] {
        let joined = reply_to(token, from, private);
        assert_eq!(joined.status, 201, "{from} may: {:?}", joined.body);
        assert_eq!(joined.body["message"]["threadId"], private);
    }
}

fn a_malformed_send_is_refused_for_what_it_says_before_who_sends_it(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let alice = relay.register(json!({"id": "alice"}));
    relay.register(json!({"id": "bob"}));
    let as_bob = relay.post(
        "/v1/messages",
        &alice,
        json!({"from": "bob", "to": "alice", "body": "hi"}),
    );
    assert_eq!(
        as_bob.status, 403,
        "alice does not act as bob: {:?}",
        as_bob.body
    );

    for (caller, message, field) in [
        (
            alice.as_str(),
            json!({"from": "bob", "to": "label:", "body": "hi"}),
            "label",
        ),
        (
            OPERATOR,
            json!({"from": "nobody", "to": "alice", "body": "hi", "idempotencyKey": " k"}),
            "idempotencyKey",
        ),
        (
            OPERATOR,
            json!({"from": "alice", "to": "nobody", "body": "hi", "channel": ""}),
            "channel",
        ),
    ] {
        let refused = relay.post("/v1/messages", caller, message.clone());
        assert_eq!(
            (refused.status, refused.code()),
            (400, "invalid"),
            "{message} is malformed whoever sends it, to whomever: {:?}",
            refused.body
        );
        let says = refused.body["error"]["message"].as_str().unwrap();
        assert!(says.contains(field), "the refusal names {field}: {says}");
    }
}

crate::on_both_backends!(
    a_reply_joins_the_thread_of_the_message_it_answers,
    the_same_idempotency_key_twice_gives_one_message,
    kinds_are_inferred_when_not_given,
    group_targets_reach_exactly_their_delivery_set,
    sending_needs_a_registered_sender_and_an_existing_target,
    polling_peeks_and_marking_read_records_a_receipt_per_agent,
    the_inbox_filters_by_since_kind_channel_thread_and_limit,
    only_tasks_system_channel_events_and_group_targets_are_stored_claimable,
    a_second_claimer_gets_conflict,
    an_expired_lease_makes_the_message_claimable_again,
    the_holder_renews_and_releases_and_others_cannot,
    a_stale_epoch_is_refused_and_changes_nothing,
    the_reaper_releases_expired_claims,
    a_failed_call_rolls_back_everything_it_wrote,
    fault_injection_is_refused_unless_switched_on,
    the_shipped_component_has_no_fault_injection,
    callers_mistakes_get_4xx_json_errors,
    the_message_a_send_answers_with_is_the_message_stored,
    a_badly_shaped_request_is_refused_with_the_place_of_the_mistake,
    a_recreated_id_reads_none_of_its_predecessors_threads,
    an_idempotency_key_belongs_to_one_identity_of_its_sender,
    an_agent_may_not_send_the_relays_own_kinds,
    a_reply_to_a_message_one_may_not_read_is_refused_as_a_missing_one,
    a_malformed_send_is_refused_for_what_it_says_before_who_sends_it,
);
