//! docs/http-api.md §3 and §4 over HTTP: channel records, bindings, route resolution, inbound
//! events, outbound replies, orchestrators and spawn requests.

use crate::common;

use common::{Backend, Json, OPERATOR, RelayServer, cli_call, json};

/// Registers a Telegram channel agent `telegram:bot1` with the given extra meta; returns its token.
fn register_bridge(relay: &RelayServer, meta: Json) -> String {
    let mut full = json!({"provider": "telegram"});
    full.as_object_mut()
        .unwrap()
        .extend(meta.as_object().unwrap().clone());
    relay.register(json!({
        "id": "telegram:bot1",
        "name": "Support bot",
        "kind": "channel",
        "capabilities": ["send", "receive"],
        "meta": full,
    }))
}

fn put_binding(relay: &RelayServer, body: Json) -> Json {
    let reply = relay.put(
        "/v1/channels/telegram:bot1/bindings",
        OPERATOR,
        body.clone(),
    );
    assert_eq!(
        reply.status, 200,
        "binding {body} refused: {:?}",
        reply.body
    );
    reply.body
}

fn route(relay: &RelayServer, conversation: Option<&str>) -> Json {
    let query = conversation.map_or_else(String::new, |c| format!("?conversationId={c}"));
    let reply = relay.get(
        &format!("/v1/channels/telegram:bot1/route{query}"),
        OPERATOR,
    );
    assert_eq!(reply.status, 200, "route: {:?}", reply.body);
    reply.body
}

fn route_targets(route: &Json) -> Vec<Json> {
    route["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["target"].clone())
        .collect()
}

fn inbound(relay: &RelayServer, token: &str, body: Json) -> common::Reply {
    relay.post("/v1/channels/telegram:bot1/inbound", token, body)
}

fn channel(relay: &RelayServer) -> Json {
    let reply = relay.get("/v1/channels/telegram:bot1", OPERATOR);
    assert_eq!(reply.status, 200, "get channel: {:?}", reply.body);
    reply.body
}

fn channel_agent_with_a_non_canonical_id_is_refused(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let reply = relay.post(
        "/v1/agents",
        OPERATOR,
        json!({"id": "bot1", "kind": "channel", "meta": {"provider": "telegram"}}),
    );
    assert_eq!(reply.status, 400, "{:?}", reply.body);
    let message = reply.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("telegram:bot1"),
        "the refusal names the canonical id: {message}"
    );
    assert_eq!(relay.get("/v1/agents/bot1", OPERATOR).status, 404);
    assert_eq!(relay.get("/v1/channels/bot1", OPERATOR).status, 404);
    assert_eq!(
        relay.get("/v1/channels", OPERATOR).body,
        json!([]),
        "a refused registration records no channel"
    );
}

fn channel_record_follows_registration_and_re_registration(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let token = register_bridge(
        &relay,
        json!({
            "displayName": "Support (Telegram)",
            "accountId": "bot1",
            "direction": "inbound",
            "topicChannels": ["general", " ", "ops"],
        }),
    );
    let first = channel(&relay);
    assert_eq!(first["id"], "telegram:bot1");
    assert_eq!(first["name"], "Support (Telegram)");
    assert_eq!(first["type"], "telegram");
    assert_eq!(
        first["transport"], "telegram",
        "transport defaults to the provider"
    );
    assert_eq!(first["agentId"], "telegram:bot1");
    assert_eq!(first["accountId"], "bot1");
    assert_eq!(first["status"], "online");
    assert_eq!(first["ready"], true);
    assert_eq!(first["direction"], "inbound");
    assert_eq!(first["topicChannels"], json!(["general", "ops"]));
    assert_eq!(first["capabilities"], json!(["send", "receive"]));
    assert_eq!(first["meta"]["displayName"], "Support (Telegram)");
    assert!(first["lastSeen"].as_i64().unwrap() > 0);
    assert!(
        first["binding"].is_null() && first["target"].is_null(),
        "no meta.target, no default binding: {first}"
    );

    let again = relay.post(
        "/v1/agents",
        &token,
        json!({
            "id": "telegram:bot1",
            "name": "Renamed bot",
            "kind": "channel",
            "ready": false,
            "tags": ["support"],
            "capabilities": ["receive"],
            "meta": {"provider": "telegram", "transport": "telegram", "direction": "sideways"},
        }),
    );
    assert_eq!(again.status, 200, "{:?}", again.body);
    let second = channel(&relay);
    assert_eq!(
        second["name"], "Renamed bot",
        "display name falls back to the agent name"
    );
    assert_eq!(second["ready"], false);
    assert_eq!(second["tags"], json!(["support"]));
    assert_eq!(second["capabilities"], json!(["receive"]));
    assert_eq!(
        second["direction"], "bidirectional",
        "an unknown direction is bidirectional"
    );
    assert_eq!(second["topicChannels"], json!([]));
    let all = relay.get("/v1/channels", OPERATOR).body;
    assert_eq!(
        all.as_array().unwrap().len(),
        1,
        "re-registration updates, never duplicates"
    );
}

fn meta_target_sets_the_default_binding_with_the_mode_spec_gives(backend: Backend) {
    for (target, json_target, mode) in [
        (
            "alice",
            json!({"type": "agent", "id": "alice"}),
            "exclusive",
        ),
        (
            "label:support",
            json!({"type": "label", "id": "support"}),
            "claimable",
        ),
        ("tag:ops", json!({"type": "tag", "id": "ops"}), "claimable"),
        (
            "cap:triage",
            json!({"type": "capability", "id": "triage"}),
            "claimable",
        ),
        ("broadcast", json!({"type": "broadcast"}), "broadcast"),
    ] {
        let relay = RelayServer::start_on(backend, &[]);
        register_bridge(&relay, json!({"target": target}));
        let summary = channel(&relay);
        assert_eq!(
            summary["target"], target,
            "legacy target string of {target}"
        );
        assert_eq!(
            summary["binding"]["target"], json_target,
            "binding target of {target}"
        );
        assert_eq!(
            summary["binding"]["mode"], mode,
            "mode of the default binding for {target}"
        );
        assert!(summary["binding"]["conversationId"].is_null());
        let resolved = route(&relay, Some("any-chat"));
        assert_eq!(resolved["source"], "default");
        assert_eq!(route_targets(&resolved), vec![json_target]);
    }
}

fn changing_meta_target_replaces_the_default_binding(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let token = register_bridge(&relay, json!({"target": "label:support"}));
    relay.post(
        "/v1/agents",
        &token,
        json!({"id": "telegram:bot1", "kind": "channel",
               "meta": {"provider": "telegram", "target": "broadcast"}}),
    );
    let bindings = relay
        .get("/v1/channels/telegram:bot1/bindings", OPERATOR)
        .body;
    assert_eq!(
        bindings.as_array().unwrap().len(),
        1,
        "the old meta.target binding is gone: {bindings}"
    );
    assert_eq!(channel(&relay)["target"], "broadcast");
}

fn malformed_bindings_and_unknown_channels_are_refused_with_a_reason(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    register_bridge(&relay, json!({}));
    let unknown = relay.put(
        "/v1/channels/slack:nope/bindings",
        OPERATOR,
        json!({"target": {"type": "agent", "id": "alice"}}),
    );
    assert_eq!(unknown.status, 404, "{:?}", unknown.body);
    assert!(
        unknown.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("slack:nope")
    );

    let no_id = relay.put(
        "/v1/channels/telegram:bot1/bindings",
        OPERATOR,
        json!({"target": {"type": "label"}}),
    );
    assert_eq!(no_id.status, 400, "{:?}", no_id.body);
    assert!(
        no_id.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("needs an id")
    );

    let broadcast_id = relay.put(
        "/v1/channels/telegram:bot1/bindings",
        OPERATOR,
        json!({"target": {"type": "broadcast", "id": "x"}}),
    );
    assert_eq!(broadcast_id.status, 400, "{:?}", broadcast_id.body);

    let bad_type = relay.put(
        "/v1/channels/telegram:bot1/bindings",
        OPERATOR,
        json!({"target": {"type": "planet", "id": "mars"}}),
    );
    assert_eq!(bad_type.status, 400, "{:?}", bad_type.body);

    let bridge_agent = relay.register(json!({"id": "alice"}));
    let not_operator = relay.put(
        "/v1/channels/telegram:bot1/bindings",
        &bridge_agent,
        json!({"target": {"type": "agent", "id": "alice"}}),
    );
    assert_eq!(
        not_operator.status, 403,
        "binding management is an operator call"
    );
    assert_eq!(
        relay
            .get("/v1/channels/telegram:bot1/bindings", OPERATOR)
            .body,
        json!([]),
        "no refused binding was written"
    );
    assert_eq!(
        relay
            .get("/v1/channels/telegram:bot1/route", OPERATOR)
            .status,
        200
    );
    assert_eq!(
        relay.get("/v1/channels/slack:nope/route", OPERATOR).status,
        404
    );
}

fn conversation_binding_beats_the_default(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    register_bridge(&relay, json!({"target": "label:support"}));
    put_binding(
        &relay,
        json!({"conversationId": "chat-42", "target": {"type": "agent", "id": "alice"}}),
    );
    let own = route(&relay, Some("chat-42"));
    assert_eq!(own["source"], "conversation");
    assert_eq!(own["conversationId"], "chat-42");
    assert_eq!(
        route_targets(&own),
        vec![json!({"type": "agent", "id": "alice"})],
        "only the conversation's bindings, not the default"
    );
    let other = route(&relay, Some("chat-7"));
    assert_eq!(other["source"], "default");
    assert_eq!(
        route_targets(&other),
        vec![json!({"type": "label", "id": "support"})]
    );
    let none = route(&relay, None);
    assert_eq!(none["source"], "default");
}

fn routes_come_highest_priority_first_then_newest(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    register_bridge(&relay, json!({}));
    put_binding(
        &relay,
        json!({"target": {"type": "label", "id": "low"}, "priority": 1}),
    );
    relay.advance(1_000);
    put_binding(
        &relay,
        json!({"target": {"type": "label", "id": "high"}, "priority": 5}),
    );
    relay.advance(1_000);
    put_binding(
        &relay,
        json!({"target": {"type": "label", "id": "newest-low"}, "priority": 1}),
    );
    let ids: Vec<Json> = route_targets(&route(&relay, None))
        .into_iter()
        .map(|t| t["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!("high"), json!("newest-low"), json!("low")]);
    assert_eq!(
        channel(&relay)["target"],
        "label:high",
        "the channel's default binding is its top route"
    );
}

fn second_binding_for_the_same_conversation_coexists_and_upsert_updates(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    register_bridge(&relay, json!({}));
    let first = put_binding(
        &relay,
        json!({"conversationId": "chat-42", "target": {"type": "agent", "id": "alice"}}),
    );
    assert_eq!(first["mode"], "exclusive");
    assert_eq!(first["priority"], 0);
    put_binding(
        &relay,
        json!({"conversationId": "chat-42", "target": {"type": "label", "id": "ops"}}),
    );
    assert_eq!(
        route_targets(&route(&relay, Some("chat-42"))).len(),
        2,
        "both bindings route"
    );

    relay.advance(10);
    let updated = put_binding(
        &relay,
        json!({"conversationId": "chat-42", "target": {"type": "agent", "id": "alice"},
               "mode": "broadcast", "priority": 9}),
    );
    assert_eq!(
        updated["id"], first["id"],
        "same conversation and target: same binding"
    );
    assert_eq!(updated["mode"], "broadcast");
    assert_eq!(updated["priority"], 9);
    assert_eq!(updated["createdAt"], first["createdAt"]);
    assert!(updated["updatedAt"].as_i64() > first["updatedAt"].as_i64());
    let all = relay
        .get("/v1/channels/telegram:bot1/bindings", OPERATOR)
        .body;
    assert_eq!(
        all.as_array().unwrap().len(),
        2,
        "an upsert adds no third binding: {all}"
    );
}

fn deleted_binding_no_longer_routes(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    register_bridge(&relay, json!({"target": "label:support"}));
    let binding = put_binding(
        &relay,
        json!({"conversationId": "chat-42", "target": {"type": "agent", "id": "alice"}}),
    );
    let id = binding["id"].as_str().unwrap();
    let path = format!("/v1/channels/telegram:bot1/bindings/{id}");
    let deleted = relay.delete(&path, OPERATOR);
    assert_eq!(deleted.status, 200, "{:?}", deleted.body);
    assert_eq!(deleted.body["id"], id);
    let after = route(&relay, Some("chat-42"));
    assert_eq!(
        after["source"], "default",
        "the conversation falls back to the default"
    );
    assert_eq!(
        relay.delete(&path, OPERATOR).status,
        404,
        "deleting twice is 404"
    );
}

fn inbound_to_an_exclusive_agent_route_reaches_that_agent_only(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let bridge = register_bridge(&relay, json!({"target": "alice"}));
    let alice = relay.register(json!({"id": "alice"}));
    let bob = relay.register(json!({"id": "bob"}));
    let reply = inbound(
        &relay,
        &bridge,
        json!({"conversationId": "chat-42", "body": "hello", "payload": {"user": "carol"}}),
    );
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let deliveries = reply.body["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 1);
    let message = &deliveries[0]["message"];
    assert_eq!(message["from"], "telegram:bot1");
    assert_eq!(message["to"], "alice");
    assert_eq!(message["kind"], "channel.event");
    assert_eq!(message["claimable"], false);
    assert_eq!(message["payload"]["conversationId"], "chat-42");
    assert_eq!(
        message["payload"]["user"], "carol",
        "the bridge's payload is kept"
    );
    let id = message["id"].as_i64().unwrap();
    assert_eq!(relay.inbox_ids("alice", &alice, ""), vec![id]);
    assert!(relay.inbox_ids("bob", &bob, "").is_empty());
}

fn inbound_to_a_claimable_label_route_has_a_single_winner(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let bridge = register_bridge(&relay, json!({"target": "label:support"}));
    let alice = relay.register(json!({"id": "alice", "label": "support"}));
    let bob = relay.register(json!({"id": "bob", "label": "support"}));
    let reply = inbound(
        &relay,
        &bridge,
        json!({"conversationId": "c1", "body": "help"}),
    );
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let message = &reply.body["deliveries"][0]["message"];
    assert_eq!(message["to"], "label:support");
    assert_eq!(message["claimable"], true);
    let id = message["id"].as_i64().unwrap();
    assert_eq!(relay.inbox_ids("alice", &alice, ""), vec![id]);
    assert_eq!(relay.inbox_ids("bob", &bob, ""), vec![id]);

    let won = relay.post(
        &format!("/v1/messages/{id}/claim"),
        &alice,
        json!({"agentId": "alice"}),
    );
    assert_eq!(won.status, 200, "{:?}", won.body);
    let lost = relay.post(
        &format!("/v1/messages/{id}/claim"),
        &bob,
        json!({"agentId": "bob"}),
    );
    assert_eq!(lost.status, 409, "a second claimer loses: {:?}", lost.body);
    assert!(
        relay.inbox_ids("bob", &bob, "").is_empty(),
        "claimed elsewhere, gone from bob's inbox"
    );
}

fn inbound_to_a_broadcast_route_reaches_every_agent(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let bridge = register_bridge(&relay, json!({"target": "broadcast"}));
    let alice = relay.register(json!({"id": "alice"}));
    let bob = relay.register(json!({"id": "bob", "label": "ops"}));
    let reply = inbound(&relay, &bridge, json!({"body": "deploy at 5"}));
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let message = &reply.body["deliveries"][0]["message"];
    assert_eq!(message["to"], "broadcast");
    assert_eq!(message["claimable"], false);
    let id = message["id"].as_i64().unwrap();
    let mut recipients: Vec<String> =
        serde_json::from_value(reply.body["deliveries"][0]["recipients"].clone()).unwrap();
    recipients.sort();
    assert_eq!(
        recipients,
        vec!["alice", "bob"],
        "channels and built-ins are not recipients"
    );
    assert_eq!(relay.inbox_ids("alice", &alice, ""), vec![id]);
    assert_eq!(relay.inbox_ids("bob", &bob, ""), vec![id]);
    assert!(
        relay.inbox_ids("telegram:bot1", &bridge, "").is_empty(),
        "the bridge does not hear its own event"
    );
}

fn inbound_sends_one_message_per_route(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let bridge = register_bridge(&relay, json!({}));
    relay.register(json!({"id": "alice"}));
    put_binding(
        &relay,
        json!({"conversationId": "c1", "target": {"type": "agent", "id": "alice"}}),
    );
    put_binding(
        &relay,
        json!({"conversationId": "c1", "target": {"type": "label", "id": "ops"}}),
    );
    let reply = inbound(
        &relay,
        &bridge,
        json!({"conversationId": "c1", "body": "hi"}),
    );
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let targets: Vec<&str> = reply.body["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["message"]["to"].as_str().unwrap())
        .collect();
    assert_eq!(targets.len(), 2);
    assert!(
        targets.contains(&"alice") && targets.contains(&"label:ops"),
        "{targets:?}"
    );
}

fn unrouted_inbound_is_a_conflict_and_writes_nothing(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let bridge = register_bridge(&relay, json!({}));
    let alice = relay.register(json!({"id": "alice"}));
    let before = relay.send(json!({"from": "alice", "to": "alice", "body": "marker"}));
    let before_id = before.body["message"]["id"].as_i64().unwrap();

    let reply = inbound(
        &relay,
        &bridge,
        json!({"conversationId": "c1", "body": "anyone?"}),
    );
    assert_eq!(reply.status, 409, "{:?}", reply.body);
    assert!(
        reply.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no route"),
        "the refusal says why: {:?}",
        reply.body
    );

    let after = relay.send(json!({"from": "alice", "to": "alice", "body": "marker"}));
    assert_eq!(
        after.body["message"]["id"].as_i64().unwrap(),
        before_id + 1,
        "no message was stored for the refused event"
    );
    assert_eq!(relay.inbox_ids("alice", &alice, "").len(), 2);
}

fn inbound_needs_the_bridges_own_token(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    register_bridge(&relay, json!({"target": "broadcast"}));
    let alice = relay.register(json!({"id": "alice"}));
    let reply = inbound(&relay, &alice, json!({"body": "spoofed"}));
    assert_eq!(reply.status, 403, "{:?}", reply.body);
}

fn outbound_reply_reaches_the_bridge_inbox(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let bridge = register_bridge(&relay, json!({"target": "alice"}));
    let alice = relay.register(json!({"id": "alice"}));
    let event = inbound(
        &relay,
        &bridge,
        json!({"conversationId": "chat-42", "body": "hi"}),
    );
    let event_id = event.body["deliveries"][0]["message"]["id"]
        .as_i64()
        .unwrap();
    let answer = relay.post(
        "/v1/messages",
        &alice,
        json!({"from": "alice", "to": "telegram:bot1", "body": "hello back",
               "replyTo": event_id, "payload": {"conversationId": "chat-42"}}),
    );
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    assert_eq!(
        answer.body["recipients"],
        json!(["telegram:bot1"]),
        "the reply's recipients name the bridge that will see it"
    );
    let inbox = relay.get("/v1/agents/telegram:bot1/inbox", &bridge);
    let messages = inbox.body.as_array().unwrap();
    assert_eq!(messages.len(), 1, "{:?}", inbox.body);
    assert_eq!(messages[0]["kind"], "channel.event");
    assert_eq!(messages[0]["payload"]["conversationId"], "chat-42");
    assert_eq!(messages[0]["threadId"], event_id);
}

fn register_orchestrator(relay: &RelayServer) -> String {
    let reply = relay.post(
        "/v1/orchestrators",
        OPERATOR,
        json!({"id": "devbox", "hostname": "devbox.local", "providers": ["claude", "codex"],
               "baseDir": "/srv/agents", "envKeys": ["ANTHROPIC_API_KEY"]}),
    );
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    assert_eq!(reply.body["created"], true);
    reply.body["token"].as_str().unwrap().to_owned()
}

fn orchestrator_agent_is_created_and_deleted_with_it(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let token = register_orchestrator(&relay);
    let orchestrator = relay.get("/v1/orchestrators/devbox", OPERATOR).body;
    assert_eq!(orchestrator["status"], "online");
    assert_eq!(orchestrator["agentId"], "orchestrator-devbox");
    assert_eq!(orchestrator["providers"], json!(["claude", "codex"]));
    assert_eq!(orchestrator["baseDir"], "/srv/agents");
    assert_eq!(orchestrator["envKeys"], json!(["ANTHROPIC_API_KEY"]));
    assert_eq!(orchestrator["managedAgents"], json!([]));

    let agent = relay.get("/v1/agents/orchestrator-devbox", OPERATOR);
    assert_eq!(agent.status, 200, "{:?}", agent.body);
    assert_eq!(agent.body["kind"], "orchestrator");
    assert_eq!(agent.body["tags"], json!(["orchestrator", "devbox.local"]));
    assert_eq!(agent.body["capabilities"], json!(["orchestrator", "spawn"]));

    let again = relay.post(
        "/v1/orchestrators",
        &token,
        json!({"id": "devbox", "hostname": "devbox.local", "providers": ["claude"],
               "baseDir": "/srv/agents"}),
    );
    assert_eq!(
        again.status, 200,
        "its own token re-registers it: {:?}",
        again.body
    );
    assert!(again.body["token"].is_null());
    let stranger = relay.register(json!({"id": "alice"}));
    let hijack = relay.post(
        "/v1/orchestrators",
        &stranger,
        json!({"id": "devbox", "hostname": "x", "providers": [], "baseDir": "/"}),
    );
    assert_eq!(hijack.status, 403, "{:?}", hijack.body);
    let listed = relay.get("/v1/orchestrators", OPERATOR).body;
    assert_eq!(listed.as_array().unwrap().len(), 1);

    let deleted = relay.delete("/v1/orchestrators/devbox", OPERATOR);
    assert_eq!(deleted.status, 200, "{:?}", deleted.body);
    assert_eq!(relay.get("/v1/orchestrators/devbox", OPERATOR).status, 404);
    assert_eq!(
        relay.get("/v1/agents/orchestrator-devbox", OPERATOR).status,
        404,
        "its agent goes with it"
    );
}

fn orchestrator_status_is_mirrored_to_its_agent(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let token = register_orchestrator(&relay);
    for (status, agent_status, ready) in [
        ("draining", "busy", false),
        ("offline", "offline", false),
        ("online", "online", true),
    ] {
        let reply = relay.put(
            "/v1/orchestrators/devbox/status",
            &token,
            json!({"status": status}),
        );
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(reply.body["status"], status);
        let agent = relay.get("/v1/agents/orchestrator-devbox", OPERATOR).body;
        assert_eq!(agent["status"], agent_status, "agent status for {status}");
        assert_eq!(agent["ready"], ready, "agent readiness for {status}");
    }
    let bad = relay.put(
        "/v1/orchestrators/devbox/status",
        &token,
        json!({"status": "asleep"}),
    );
    assert_eq!(bad.status, 400, "{:?}", bad.body);
}

fn managed_agents_round_trip(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let token = register_orchestrator(&relay);
    let agents = json!([
        {"id": "claude-1", "provider": "claude", "pid": 4242, "cwd": "/srv/agents/api",
         "status": "running", "startedAt": 1_700_000_000_000_i64},
        {"id": "codex-1", "provider": "codex", "status": "starting", "startedAt": 1_700_000_000_500_i64},
    ]);
    let reply = relay.put(
        "/v1/orchestrators/devbox/agents",
        &token,
        json!({"agents": agents}),
    );
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let stored = relay.get("/v1/orchestrators/devbox", OPERATOR).body;
    assert_eq!(stored["managedAgents"], agents);
    let cleared = relay.put(
        "/v1/orchestrators/devbox/agents",
        &token,
        json!({"agents": []}),
    );
    assert_eq!(
        cleared.body["managedAgents"],
        json!([]),
        "a report replaces the last one"
    );
}

fn spawn_request_becomes_a_spawn_message_to_the_orchestrator(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let token = register_orchestrator(&relay);
    let alice = relay.register(json!({"id": "alice"}));
    let reply = relay.post(
        "/v1/orchestrators/devbox/spawn",
        &alice,
        json!({"provider": "claude", "cwd": "/srv/agents/api", "prompt": "fix the test",
               "label": "api", "approval": "auto"}),
    );
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let message = &reply.body["message"];
    assert_eq!(message["from"], "alice");
    assert_eq!(message["to"], "orchestrator:devbox");
    assert_eq!(message["kind"], "spawn");
    assert_eq!(
        message["payload"],
        json!({"provider": "claude", "cwd": "/srv/agents/api", "prompt": "fix the test",
               "label": "api", "approval": "auto"})
    );
    let inbox = relay.inbox_ids("orchestrator-devbox", &token, "?kind=spawn");
    assert_eq!(inbox, vec![message["id"].as_i64().unwrap()]);
}

fn an_agent_cannot_make_itself_an_orchestrator_or_a_channel(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    register_orchestrator(&relay);
    let bob = relay.register(json!({"id": "bob"}));

    for (card, field) in [
        (
            json!({"id": "bob", "kind": "orchestrator", "meta": {"orchestratorId": "devbox"}}),
            "kind",
        ),
        (
            json!({"id": "bob", "meta": {"kind": "orchestrator"}}),
            "kind",
        ),
        (
            json!({"id": "bob", "kind": "channel", "meta": {"provider": "custom", "accountId": "bob"}}),
            "kind",
        ),
        (json!({"id": "bob", "kind": "user"}), "kind"),
        (
            json!({"id": "bob", "meta": {"orchestratorId": "devbox"}}),
            "meta.orchestratorId",
        ),
    ] {
        let refused = relay.post("/v1/agents", &bob, card.clone());
        assert_eq!(
            refused.status, 403,
            "{card} is the operator's to give: {:?}",
            refused.body
        );
        let says = refused.body["error"]["message"].as_str().unwrap();
        assert!(
            says.contains(field) && says.contains("operator"),
            "the refusal names {field}: {says}"
        );
    }
    let card = relay.get("/v1/agents/bob", OPERATOR).body;
    assert_eq!(card["kind"], "provider", "bob is unchanged: {card}");
    assert_eq!(card["meta"], json!({}));
}

fn spawn_requests_reach_only_the_orchestrators_registered_agent(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let orchestrator = register_orchestrator(&relay);
    let alice = relay.register(json!({"id": "alice"}));
    // Even a card the operator wrote does not make an agent the orchestrator.
    let lookalike = relay.register(
        json!({"id": "lookalike", "kind": "orchestrator", "meta": {"orchestratorId": "devbox"}}),
    );

    let spawn = relay.post(
        "/v1/orchestrators/devbox/spawn",
        &alice,
        json!({"provider": "claude", "prompt": "the secret is 42"}),
    );
    assert_eq!(spawn.status, 201, "{:?}", spawn.body);
    let id = spawn.body["message"]["id"].as_i64().unwrap();

    assert_eq!(
        spawn.body["recipients"],
        json!(["orchestrator-devbox"]),
        "the delivery set is the registered agent alone"
    );
    assert_eq!(
        relay.inbox_ids("orchestrator-devbox", &orchestrator, "?kind=spawn"),
        vec![id]
    );
    assert!(
        relay
            .inbox_ids("lookalike", &lookalike, "?kind=spawn")
            .is_empty(),
        "an agent claiming the id in its meta reads no spawn request"
    );
    let read = relay.get(&format!("/v1/messages/{id}"), &lookalike);
    assert_eq!(read.status, 403, "{:?}", read.body);
}

fn spawn_for_a_provider_the_orchestrator_does_not_offer_is_400(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let token = register_orchestrator(&relay);
    let reply = relay.post(
        "/v1/orchestrators/devbox/spawn",
        OPERATOR,
        json!({"provider": "gemini", "prompt": "hi"}),
    );
    assert_eq!(reply.status, 400, "{:?}", reply.body);
    let message = reply.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("gemini") && message.contains("claude"),
        "{message}"
    );
    assert!(
        relay
            .inbox_ids("orchestrator-devbox", &token, "")
            .is_empty(),
        "nothing was sent"
    );
    let unknown = relay.post(
        "/v1/orchestrators/nowhere/spawn",
        OPERATOR,
        json!({"provider": "claude"}),
    );
    assert_eq!(unknown.status, 404);
}

fn stale_orchestrators_are_reaped_when_the_clock_moves(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let token = register_orchestrator(&relay);
    relay.advance(4 * 60 * 1000);
    let heartbeat = relay.post("/v1/orchestrators/devbox/heartbeat", &token, json!({}));
    assert_eq!(heartbeat.status, 200, "{:?}", heartbeat.body);
    relay.advance(4 * 60 * 1000);
    let early = relay.reap();
    assert_eq!(
        early["offlineOrchestrators"],
        json!([]),
        "a heartbeat 4 minutes ago keeps it online"
    );

    relay.advance(2 * 60 * 1000);
    let report = relay.reap();
    assert_eq!(report["offlineOrchestrators"], json!(["devbox"]));
    assert_eq!(
        relay.get("/v1/orchestrators/devbox", OPERATOR).body["status"],
        "offline"
    );
    assert_eq!(
        relay.get("/v1/agents/orchestrator-devbox", OPERATOR).body["status"],
        "offline"
    );

    let back = relay.post("/v1/orchestrators/devbox/heartbeat", &token, json!({}));
    assert_eq!(back.body["status"], "online", "a heartbeat brings it back");
}

#[test]
fn channel_and_orchestrator_exports_are_callable_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("relay.db");
    let (ok, bridge) = cli_call(
        &db,
        "register-agent",
        &json!({"input": {"id": "slack:team1", "kind": "channel", "meta": {"provider": "slack", "target": "broadcast"}}}),
    );
    assert!(ok, "{bridge}");
    let (ok, route) = cli_call(
        &db,
        "resolve-route",
        &json!({"channelId": "slack:team1", "query": {}}),
    );
    assert!(ok, "{route}");
    assert_eq!(route["bindings"][0]["target"], json!({"type": "broadcast"}));
    let (ok, orchestrator) = cli_call(
        &db,
        "register-orchestrator",
        &json!({"input": {"id": "box", "hostname": "box", "providers": ["codex"], "baseDir": "/tmp"}}),
    );
    assert!(ok, "{orchestrator}");
    let (ok, refused) = cli_call(
        &db,
        "request-spawn",
        &json!({"orchestratorId": "box", "input": {"provider": "claude"}}),
    );
    assert!(!ok);
    assert_eq!(refused["error"]["code"], "invalid", "{refused}");
}

fn spawn_requests_come_only_through_the_spawn_route(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let orchestrator = register_orchestrator(&relay);
    let alice = relay.register(json!({"id": "alice"}));
    let draining = relay.put(
        "/v1/orchestrators/devbox/status",
        &orchestrator,
        json!({"status": "draining"}),
    );
    assert_eq!(draining.status, 200, "{:?}", draining.body);

    for to in ["orchestrator:devbox", "orchestrator-devbox"] {
        let forged = json!({"from": "alice", "to": to, "kind": "spawn", "body": "spawn",
                            "payload": {"provider": "evil", "cwd": "/etc"}});
        let refused = relay.post("/v1/messages", &alice, forged.clone());
        assert_eq!(refused.status, 403, "{forged}: {:?}", refused.body);
        let says = refused.body["error"]["message"].as_str().unwrap();
        assert!(says.contains("/v1/orchestrators/{id}/spawn"), "{says}");
        let mut as_operator = forged;
        as_operator["from"] = json!("user");
        assert_eq!(
            relay.send(as_operator.clone()).status,
            403,
            "the operator too: {as_operator}"
        );
    }
    assert!(
        relay
            .inbox_ids("orchestrator-devbox", &orchestrator, "?kind=spawn")
            .is_empty(),
        "the draining orchestrator got no spawn request"
    );
    let through_the_route = relay.post(
        "/v1/orchestrators/devbox/spawn",
        &alice,
        json!({"provider": "claude"}),
    );
    assert_eq!(
        through_the_route.status, 409,
        "the route refuses while draining: {:?}",
        through_the_route.body
    );
}

crate::on_both_backends!(
    channel_agent_with_a_non_canonical_id_is_refused,
    channel_record_follows_registration_and_re_registration,
    meta_target_sets_the_default_binding_with_the_mode_spec_gives,
    changing_meta_target_replaces_the_default_binding,
    malformed_bindings_and_unknown_channels_are_refused_with_a_reason,
    conversation_binding_beats_the_default,
    routes_come_highest_priority_first_then_newest,
    second_binding_for_the_same_conversation_coexists_and_upsert_updates,
    deleted_binding_no_longer_routes,
    inbound_to_an_exclusive_agent_route_reaches_that_agent_only,
    inbound_to_a_claimable_label_route_has_a_single_winner,
    inbound_to_a_broadcast_route_reaches_every_agent,
    inbound_sends_one_message_per_route,
    unrouted_inbound_is_a_conflict_and_writes_nothing,
    inbound_needs_the_bridges_own_token,
    outbound_reply_reaches_the_bridge_inbox,
    orchestrator_agent_is_created_and_deleted_with_it,
    orchestrator_status_is_mirrored_to_its_agent,
    managed_agents_round_trip,
    spawn_request_becomes_a_spawn_message_to_the_orchestrator,
    an_agent_cannot_make_itself_an_orchestrator_or_a_channel,
    spawn_requests_reach_only_the_orchestrators_registered_agent,
    spawn_for_a_provider_the_orchestrator_does_not_offer_is_400,
    stale_orchestrators_are_reaped_when_the_clock_moves,
    spawn_requests_come_only_through_the_spawn_route,
);
