//! docs/http-api.md §1 over HTTP: registration, kinds, labels, built-ins, the session guard, the
//! reaper, and identity (tokens).

use crate::common;

use common::{Backend, OPERATOR, RelayServer, json};

fn registration_hands_out_a_token_once_and_infers_kind_and_provider_tag(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let first = relay.post(
        "/v1/agents",
        OPERATOR,
        json!({"id": "bob-claude", "name": "Bob"}),
    );
    assert_eq!(first.status, 201, "{:?}", first.body);
    assert_eq!(first.body["agent"]["kind"], "provider");
    assert_eq!(
        first.body["agent"]["tags"],
        json!(["claude"]),
        "provider tag inferred from the id"
    );
    let token = first.body["token"]
        .as_str()
        .expect("a new agent gets a token")
        .to_owned();

    let again = relay.post(
        "/v1/agents",
        &token,
        json!({"id": "bob-claude", "name": "Bob"}),
    );
    assert_eq!(
        again.status, 200,
        "re-registration is an update: {:?}",
        again.body
    );
    assert_eq!(again.body["created"], false);
    assert!(
        again.body.get("token").is_none(),
        "the token is handed out only once"
    );

    let codex = relay.post(
        "/v1/agents",
        OPERATOR,
        json!({"id": "w1", "meta": {"provider": "Codex CLI"}}),
    );
    assert_eq!(codex.body["agent"]["tags"], json!(["codex"]));
    let orchestrator = relay.post(
        "/v1/agents",
        OPERATOR,
        json!({"id": "o1-claude", "meta": {"kind": "orchestrator"}}),
    );
    assert_eq!(orchestrator.body["agent"]["kind"], "orchestrator");
    assert_eq!(
        orchestrator.body["agent"]["tags"],
        json!([]),
        "only provider agents get a provider tag"
    );
}

fn registering_a_new_agent_needs_the_operator(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let alice = relay.register(json!({"id": "alice"}));
    let anonymous = relay.request("POST", "/v1/agents", None, Some(&json!({"id": "eve"})));
    assert_eq!(anonymous.status, 401);
    let as_alice = relay.post("/v1/agents", &alice, json!({"id": "eve"}));
    assert_eq!(
        as_alice.status, 403,
        "an agent cannot create agents: {:?}",
        as_alice.body
    );
    let bogus = relay.post("/v1/agents", "not-a-token", json!({"id": "eve"}));
    assert_eq!(bogus.status, 401);
    assert_eq!(
        relay.get("/v1/agents/eve", OPERATOR).status,
        404,
        "nothing was created"
    );
}

fn reregistration_keeps_label_machine_rig_and_ready_unless_sent(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    relay.register(json!({"id": "a", "label": "dev", "machine": "m1", "rig": "r1", "ready": false, "tags": ["t"]}));
    let kept = relay.post("/v1/agents", OPERATOR, json!({"id": "a", "name": "A2"}));
    let agent = &kept.body["agent"];
    assert_eq!(agent["label"], "dev");
    assert_eq!(agent["machine"], "m1");
    assert_eq!(agent["rig"], "r1");
    assert_eq!(agent["ready"], false);
    assert_eq!(agent["name"], "A2");
    let changed = relay.post(
        "/v1/agents",
        OPERATOR,
        json!({"id": "a", "label": "ops", "ready": true}),
    );
    assert_eq!(changed.body["agent"]["label"], "ops");
    assert_eq!(changed.body["agent"]["ready"], true);
    let cleared = relay.post("/v1/agents", OPERATOR, json!({"id": "a", "label": null}));
    assert!(
        cleared.body["agent"].get("label").is_none(),
        "explicit null clears the label: {:?}",
        cleared.body
    );
}

fn channel_agents_must_use_the_canonical_id(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let wrong = relay.post(
        "/v1/agents",
        OPERATOR,
        json!({"id": "mybot", "meta": {"kind": "channel", "provider": "telegram"}}),
    );
    assert_eq!(wrong.status, 400);
    assert!(
        wrong.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("telegram:mybot"),
        "{:?}",
        wrong.body
    );
    let by_tag = relay.post(
        "/v1/agents",
        OPERATOR,
        json!({"id": "bot", "tags": ["channel"]}),
    );
    assert_eq!(
        by_tag.status, 400,
        "a channel tag makes it a channel: {:?}",
        by_tag.body
    );
    let right = relay.post(
        "/v1/agents",
        OPERATOR,
        json!({"id": "telegram:mybot", "meta": {"kind": "channel", "provider": "telegram"}}),
    );
    assert_eq!(right.status, 201, "{:?}", right.body);
    assert_eq!(right.body["agent"]["kind"], "channel");
}

fn builtin_user_and_system_always_exist_and_are_never_reaped(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let user = relay.get("/v1/agents/user", OPERATOR);
    assert_eq!(user.body["kind"], "user");
    assert_eq!(user.body["tags"], json!(["human"]));
    assert_eq!(
        relay.get("/v1/agents/system", OPERATOR).body["kind"],
        "system"
    );
    assert_eq!(relay.delete("/v1/agents/user", OPERATOR).status, 409);
    assert_eq!(
        relay
            .post("/v1/agents", OPERATOR, json!({"id": "system"}))
            .status,
        409
    );
    relay.advance(24 * 3600 * 1000);
    relay.reap();
    for id in ["user", "system"] {
        let agent = relay.get(&format!("/v1/agents/{id}"), OPERATOR);
        assert_eq!(agent.body["status"], "online", "{id} must never be reaped");
        assert_eq!(agent.body["ready"], true);
    }
}

fn a_new_instance_starts_a_new_epoch_and_stale_sessions_are_refused(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let token = relay.register(json!({"id": "a", "instanceId": "i1"}));
    assert_eq!(relay.get("/v1/agents/a", OPERATOR).body["epoch"], 1);
    let same = relay.post("/v1/agents", &token, json!({"id": "a", "instanceId": "i1"}));
    assert_eq!(
        same.body["agent"]["epoch"], 1,
        "the same instance keeps its epoch"
    );
    let new = relay.post("/v1/agents", &token, json!({"id": "a", "instanceId": "i2"}));
    assert_eq!(new.body["agent"]["epoch"], 2);
    let before = relay.get("/v1/agents/a", OPERATOR).body;

    relay.advance(1000);
    let stale = relay.post(
        "/v1/agents/a/heartbeat",
        &token,
        json!({"instanceId": "i1", "epoch": 1}),
    );
    assert_eq!(stale.status, 409);
    assert_eq!(stale.code(), "stale_session");
    let stale_epoch = relay.post(
        "/v1/agents/a/heartbeat",
        &token,
        json!({"instanceId": "i2", "epoch": 1}),
    );
    assert_eq!(stale_epoch.code(), "stale_session");
    assert_eq!(
        relay.get("/v1/agents/a", OPERATOR).body["lastSeen"],
        before["lastSeen"],
        "a refused heartbeat changes nothing"
    );

    let fresh = relay.post(
        "/v1/agents/a/heartbeat",
        &token,
        json!({"instanceId": "i2", "epoch": 2}),
    );
    assert_eq!(fresh.status, 200, "{:?}", fresh.body);
    assert!(fresh.body["lastSeen"].as_i64() > before["lastSeen"].as_i64());
}

fn the_reaper_marks_stale_agents_offline_and_a_heartbeat_brings_them_back(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let token = relay.register(json!({"id": "a"}));
    relay.register(json!({"id": "b"}));
    relay.advance(4 * 60 * 1000);
    relay.post("/v1/agents/b/heartbeat", OPERATOR, json!({}));
    relay.advance(2 * 60 * 1000);
    let report = relay.reap();
    assert_eq!(
        report["offlineAgents"],
        json!(["a"]),
        "only a is older than the 5 minute TTL"
    );
    assert_eq!(
        relay.get("/v1/agents/a", OPERATOR).body["status"],
        "offline"
    );
    assert_eq!(relay.get("/v1/agents/b", OPERATOR).body["status"], "online");
    let back = relay.post("/v1/agents/a/heartbeat", &token, json!({}));
    assert_eq!(back.body["status"], "online");
}

fn the_stale_ttl_is_a_setting(backend: Backend) {
    let relay = RelayServer::start_on(backend, &["--setting", "stale-ttl-ms=1000"]);
    relay.register(json!({"id": "a"}));
    relay.advance(1500);
    assert_eq!(relay.reap()["offlineAgents"], json!(["a"]));
}

fn one_agents_token_cannot_act_as_another(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let _alice = relay.register(json!({"id": "alice", "label": "x"}));
    let bob = relay.register(json!({"id": "bob", "label": "x"}));
    let job =
        relay.send(json!({"from": "user", "to": "label:x", "body": "job", "claimable": true}));
    let id = job.body["message"]["id"].as_i64().unwrap();

    let attempts = [
        relay.post("/v1/agents/alice/heartbeat", &bob, json!({})),
        relay.put("/v1/agents/alice/status", &bob, json!({"status": "busy"})),
        relay.put("/v1/agents/alice/label", &bob, json!({"label": "y"})),
        relay.get("/v1/agents/alice/inbox", &bob),
        relay.post("/v1/agents", &bob, json!({"id": "alice", "label": "mine"})),
        relay.post(
            "/v1/messages",
            &bob,
            json!({"from": "alice", "to": "bob", "body": "forged"}),
        ),
        relay.post(
            &format!("/v1/messages/{id}/claim"),
            &bob,
            json!({"agentId": "alice"}),
        ),
        relay.post(
            &format!("/v1/messages/{id}/read"),
            &bob,
            json!({"agentId": "alice"}),
        ),
        relay.delete("/v1/agents/alice", &bob),
    ];
    for (i, reply) in attempts.iter().enumerate() {
        assert_eq!(
            reply.status, 403,
            "attempt {i} acted as alice with bob's token: {:?}",
            reply.body
        );
    }
    let alice = relay.get("/v1/agents/alice", OPERATOR).body;
    assert_eq!(alice["label"], "x");
    assert_eq!(alice["status"], "online");
    let message = relay.get(&format!("/v1/messages/{id}"), OPERATOR).body;
    assert!(message.get("claimedBy").is_none());
    assert_eq!(message["readBy"], json!([]));
    assert_eq!(
        relay
            .get("/v1/agents/bob/inbox", &bob)
            .body
            .as_array()
            .unwrap()
            .len(),
        1,
        "no forged message"
    );
}

fn agents_are_listed_with_filters_and_deleted_by_the_operator(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let a = relay.register(json!({"id": "a", "tags": ["gpu"]}));
    relay.register(json!({"id": "b"}));
    relay.put("/v1/agents/b/status", OPERATOR, json!({"status": "busy"}));
    let ids = |query: &str| -> Vec<String> {
        relay
            .get(&format!("/v1/agents{query}"), &a)
            .body
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(""), ["a", "b", "system", "user"]);
    assert_eq!(ids("?tag=gpu"), ["a"]);
    assert_eq!(ids("?status=busy"), ["b"]);
    assert_eq!(ids("?kind=user"), ["user"]);
    assert_eq!(relay.get("/v1/agents?status=asleep", &a).status, 400);
    assert_eq!(relay.delete("/v1/agents/b", OPERATOR).status, 200);
    assert_eq!(relay.get("/v1/agents/b", OPERATOR).status, 404);
    assert_eq!(relay.delete("/v1/agents/b", OPERATOR).status, 404);
}

fn status_and_label_are_set_by_the_agent_itself(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let token = relay.register(json!({"id": "a", "instanceId": "i"}));
    let busy = relay.put(
        "/v1/agents/a/status",
        &token,
        json!({"status": "busy", "ready": false, "epoch": 1}),
    );
    assert_eq!(
        (busy.body["status"].as_str(), busy.body["ready"].as_bool()),
        (Some("busy"), Some(false))
    );
    let labelled = relay.put("/v1/agents/a/label", &token, json!({"label": "reviewer"}));
    assert_eq!(labelled.body["label"], "reviewer");
    let cleared = relay.put("/v1/agents/a/label", &token, json!({"label": null}));
    assert!(cleared.body.get("label").is_none());
    let stale = relay.put(
        "/v1/agents/a/status",
        &token,
        json!({"status": "online", "epoch": 7}),
    );
    assert_eq!(stale.code(), "stale_session");
    assert_eq!(relay.get("/v1/agents/a", OPERATOR).body["status"], "busy");
}

fn the_bearer_scheme_is_case_insensitive(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let alice = relay.register(json!({"id": "alice"}));
    let client = reqwest::blocking::Client::new();
    let status_with = |authorization: String| {
        client
            .get(format!("{}/v1/agents/alice/inbox", relay.base))
            .header("Authorization", authorization)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };

    for scheme in ["bearer", "BEARER", "Bearer", "bEaReR"] {
        assert_eq!(
            status_with(format!("{scheme} {alice}")),
            200,
            "scheme {scheme} with the agent's token"
        );
        assert_eq!(
            status_with(format!("{scheme} {OPERATOR}")),
            200,
            "scheme {scheme} with the operator's token"
        );
    }
    assert_eq!(
        status_with(format!("Basic {alice}")),
        401,
        "another scheme is no bearer token"
    );
    assert_eq!(
        status_with(format!("bearer{alice}")),
        401,
        "the scheme ends at a space"
    );
}

// --- Deleting an agent, and its id used again ---

fn claim(relay: &RelayServer, token: &str, agent: &str, message: i64) -> common::Reply {
    relay.post(
        &format!("/v1/messages/{message}/claim"),
        token,
        json!({"agentId": agent, "leaseMs": 600_000}),
    )
}

fn pair(relay: &RelayServer, token: &str, requester: &str, partner: &str) -> i64 {
    let reply = relay.post(
        "/v1/pairs",
        token,
        json!({"requesterId": requester, "partnerId": partner}),
    );
    assert_eq!(reply.status, 200, "pair: {:?}", reply.body);
    reply.body["id"].as_i64().unwrap()
}

fn pair_events(relay: &RelayServer, agent: &str, token: &str) -> Vec<String> {
    relay
        .get(&format!("/v1/agents/{agent}/inbox?kind=pair"), token)
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["payload"]["pairEvent"].as_str().unwrap().to_owned())
        .collect()
}

fn deleting_an_agent_releases_its_claims_and_ends_its_pairs(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let gus = relay.register(json!({"id": "gus", "label": "x"}));
    let alice = relay.register(json!({"id": "alice", "label": "x"}));
    let bob = relay.register(json!({"id": "bob"}));
    let job =
        relay.send(json!({"from": "user", "to": "label:x", "body": "job", "claimable": true}));
    let job = job.body["message"]["id"].as_i64().unwrap();
    assert_eq!(claim(&relay, &gus, "gus", job).status, 200);
    let event = relay.post(
        "/v1/integrations/ci/events",
        OPERATOR,
        json!({"title": "red build", "target": "gus"}),
    );
    let task = event.body["task"]["id"].as_i64().unwrap();
    let task_message = event.body["message"]["id"].as_i64().unwrap();
    assert_eq!(claim(&relay, &gus, "gus", task_message).status, 200);
    let pending = pair(&relay, &gus, "gus", "alice");
    let active = pair(&relay, &bob, "bob", "gus");
    let accepted = relay.post(
        &format!("/v1/pairs/{active}/actions"),
        &gus,
        json!({"agentId": "gus", "action": "accept"}),
    );
    assert_eq!(accepted.status, 200, "{:?}", accepted.body);

    assert_eq!(relay.delete("/v1/agents/gus", OPERATOR).status, 200);

    let released = relay.get(&format!("/v1/messages/{job}"), OPERATOR).body;
    assert!(
        released.get("claimedBy").is_none(),
        "the claim is released: {released}"
    );
    assert_eq!(
        claim(&relay, &alice, "alice", job).status,
        200,
        "another agent takes the job at once"
    );
    let task = relay.get(&format!("/v1/tasks/{task}"), OPERATOR).body;
    assert_eq!(task["status"], "open", "the task reopens: {task}");
    let pairs = |id: i64| relay.get(&format!("/v1/pairs/{id}"), OPERATOR).body["status"].clone();
    assert_eq!(pairs(pending), "cancelled");
    assert_eq!(pairs(active), "ended");
    assert_eq!(
        pair_events(&relay, "alice", &alice),
        ["requested", "cancelled"],
        "the partner of the pending pair is told"
    );
    assert_eq!(
        pair_events(&relay, "bob", &bob),
        ["accepted", "ended"],
        "the partner of the active pair is told"
    );
}

fn a_recreated_id_starts_fresh_without_the_old_agents_past(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let old = relay.register(json!({"id": "gus", "instanceId": "old", "label": "x"}));
    let alice = relay.register(json!({"id": "alice"}));
    let secret = relay.send(json!({"from": "alice", "to": "gus", "body": "the password is 42"}));
    let secret = secret.body["message"]["id"].as_i64().unwrap();
    let job =
        relay.send(json!({"from": "user", "to": "label:x", "body": "job", "claimable": true}));
    let job = job.body["message"]["id"].as_i64().unwrap();
    assert_eq!(claim(&relay, &old, "gus", job).status, 200);
    let pending = pair(&relay, &alice, "alice", "gus");
    assert_eq!(relay.delete("/v1/agents/gus", OPERATOR).status, 200);

    let reply = relay.post(
        "/v1/agents",
        OPERATOR,
        json!({"id": "gus", "instanceId": "new", "label": "x"}),
    );
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    assert!(
        reply.body["agent"]["epoch"].as_i64().unwrap() > 1,
        "a new epoch: {:?}",
        reply.body
    );
    let gus = reply.body["token"].as_str().unwrap().to_owned();

    assert!(
        relay.inbox_ids("gus", &gus, "").is_empty(),
        "nothing sent before the new gus existed"
    );
    assert_eq!(
        relay.get(&format!("/v1/messages/{secret}"), &gus).status,
        403,
        "the old direct message is not the new gus's"
    );
    for action in ["claim", "renew", "read"] {
        let reply = relay.post(
            &format!("/v1/messages/{job}/{action}"),
            &gus,
            json!({"agentId": "gus"}),
        );
        assert_eq!(
            reply.status, 403,
            "{action} of an old job: {:?}",
            reply.body
        );
    }
    let accept = relay.post(
        &format!("/v1/pairs/{pending}/actions"),
        &gus,
        json!({"agentId": "gus", "action": "accept"}),
    );
    assert_eq!(
        accept.status, 409,
        "the old pending pair was cancelled: {:?}",
        accept.body
    );
    let fresh = relay.send(json!({"from": "alice", "to": "gus", "body": "welcome"}));
    let fresh = fresh.body["message"]["id"].as_i64().unwrap();
    assert_eq!(relay.inbox_ids("gus", &gus, ""), vec![fresh]);
}

fn the_operator_may_keep_an_ids_history_and_only_the_operator(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    relay.register(json!({"id": "gus"}));
    let secret = relay.send(json!({"from": "user", "to": "gus", "body": "kept"}));
    let secret = secret.body["message"]["id"].as_i64().unwrap();
    assert_eq!(relay.delete("/v1/agents/gus", OPERATOR).status, 200);

    let gus = relay.register(json!({"id": "gus", "keepHistory": true}));

    assert_eq!(relay.inbox_ids("gus", &gus, ""), vec![secret]);
    let refused = relay.post(
        "/v1/agents",
        &gus,
        json!({"id": "gus", "keepHistory": true}),
    );
    assert_eq!(refused.status, 403, "{:?}", refused.body);
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("keepHistory"),
        "{:?}",
        refused.body
    );
}

// --- Group membership locked by the operator ---

fn an_operator_lock_keeps_an_agent_out_of_groups_it_was_not_given(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let alice = relay.register(json!({"id": "alice", "label": "frontend", "tags": ["web"],
        "locked": ["label", "tags", "capabilities"]}));
    let job = relay
        .send(json!({"from": "user", "to": "label:backend", "body": "deploy", "claimable": true}));
    let job = job.body["message"]["id"].as_i64().unwrap();

    for (card, field) in [
        (json!({"id": "alice", "label": "backend"}), "label"),
        (json!({"id": "alice", "tags": ["web", "db"]}), "tags"),
        (
            json!({"id": "alice", "capabilities": ["deploy"]}),
            "capabilities",
        ),
        (json!({"id": "alice", "locked": []}), "locked"),
    ] {
        let refused = relay.post("/v1/agents", &alice, card.clone());
        assert_eq!(refused.status, 403, "{card}: {:?}", refused.body);
        let says = refused.body["error"]["message"].as_str().unwrap();
        assert!(
            says.contains(field) && says.contains("operator"),
            "names {field}: {says}"
        );
    }
    let relabel = relay.put(
        "/v1/agents/alice/label",
        &alice,
        json!({"label": "backend"}),
    );
    assert_eq!(relabel.status, 403, "{:?}", relabel.body);
    assert_eq!(
        claim(&relay, &alice, "alice", job).status,
        403,
        "the backend job stays out of alice's reach"
    );

    let unchanged = relay.post(
        "/v1/agents",
        &alice,
        json!({"id": "alice", "label": "frontend", "machine": "box-2"}),
    );
    assert_eq!(
        unchanged.status, 200,
        "a lock refuses changes only: {:?}",
        unchanged.body
    );
    assert_eq!(
        unchanged.body["agent"]["locked"],
        json!(["label", "tags", "capabilities"])
    );
    let by_operator = relay.put(
        "/v1/agents/alice/label",
        OPERATOR,
        json!({"label": "backend"}),
    );
    assert_eq!(by_operator.status, 200, "{:?}", by_operator.body);
}

fn groups_stay_self_declared_without_a_lock_and_a_lock_names_known_fields(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let bob = relay.register(json!({"id": "bob", "label": "frontend"}));

    let moved = relay.post("/v1/agents", &bob, json!({"id": "bob", "label": "backend"}));

    assert_eq!(moved.status, 200, "open by default: {:?}", moved.body);
    assert_eq!(moved.body["agent"]["label"], "backend");
    assert_eq!(moved.body["agent"]["locked"], json!([]));
    let unknown = relay.post(
        "/v1/agents",
        OPERATOR,
        json!({"id": "bob", "locked": ["name"]}),
    );
    assert_eq!(unknown.status, 400, "{:?}", unknown.body);
}

// --- The steps of a registration ---

fn the_kinds_user_and_system_belong_to_the_builtins_alone(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    for kind in ["user", "system"] {
        let refused = relay.post("/v1/agents", OPERATOR, json!({"id": "bob", "kind": kind}));
        assert_eq!(
            refused.status, 400,
            "not even the operator gives kind {kind}: {:?}",
            refused.body
        );
        let says = refused.body["error"]["message"].as_str().unwrap();
        assert!(says.contains("reserved for the built-in agents"), "{says}");
    }
    assert_eq!(
        relay.get("/v1/agents/bob", OPERATOR).status,
        404,
        "nothing was registered"
    );
}

fn a_malformed_registration_is_refused_for_what_it_says_before_who_sends_it(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let alice = relay.register(json!({"id": "alice"}));
    relay.register(json!({"id": "bob"}));
    let not_hers = relay.post("/v1/agents", &alice, json!({"id": "bob", "tags": ["web"]}));
    assert_eq!(
        not_hers.status, 403,
        "a well-formed card of another agent: {:?}",
        not_hers.body
    );

    for (card, field) in [
        (json!({"id": "bob", "tags": [" web"]}), "tags"),
        (json!({"id": "eve", "label": ""}), "label"),
        (json!({"id": "alice", "locked": ["name"]}), "locked"),
    ] {
        let refused = relay.post("/v1/agents", &alice, card.clone());
        assert_eq!(
            (refused.status, refused.code()),
            (400, "invalid"),
            "{card} is malformed whoever sends it: {:?}",
            refused.body
        );
        let says = refused.body["error"]["message"].as_str().unwrap();
        assert!(says.contains(field), "the refusal names {field}: {says}");
    }
}

crate::on_both_backends!(
    registration_hands_out_a_token_once_and_infers_kind_and_provider_tag,
    registering_a_new_agent_needs_the_operator,
    reregistration_keeps_label_machine_rig_and_ready_unless_sent,
    channel_agents_must_use_the_canonical_id,
    builtin_user_and_system_always_exist_and_are_never_reaped,
    a_new_instance_starts_a_new_epoch_and_stale_sessions_are_refused,
    the_reaper_marks_stale_agents_offline_and_a_heartbeat_brings_them_back,
    the_stale_ttl_is_a_setting,
    one_agents_token_cannot_act_as_another,
    agents_are_listed_with_filters_and_deleted_by_the_operator,
    status_and_label_are_set_by_the_agent_itself,
    the_bearer_scheme_is_case_insensitive,
    deleting_an_agent_releases_its_claims_and_ends_its_pairs,
    a_recreated_id_starts_fresh_without_the_old_agents_past,
    the_operator_may_keep_an_ids_history_and_only_the_operator,
    an_operator_lock_keeps_an_agent_out_of_groups_it_was_not_given,
    groups_stay_self_declared_without_a_lock_and_a_lock_names_known_fields,
    the_kinds_user_and_system_belong_to_the_builtins_alone,
    a_malformed_registration_is_refused_for_what_it_says_before_who_sends_it,
);
