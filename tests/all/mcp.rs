//! The MCP tool table and `/mcp`'s front door, against the built component and the real binary.
//! (The MCP exchanges themselves are driven by the official Python SDK: tests/mcp_client.)

use crate::common;

use agent_relay::mcp::tools::{self, TOOLS};
use agent_relay_core::embed::{Options, Relay as Embedded};
use common::{OPERATOR, RelayServer};
use serde_json::{Value as Json, json};

fn embedded() -> (tempfile::TempDir, Embedded) {
    let dir = tempfile::tempdir().unwrap();
    let relay = Embedded::open(dir.path().join("relay.db"), Options::default()).unwrap();
    (dir, relay)
}

#[test]
fn every_tool_names_an_existing_export() {
    let (_dir, relay) = embedded();
    for spec in TOOLS {
        assert!(
            relay.runtime().export(spec.export).is_some(),
            "tool {} names export {}, which the component does not have",
            spec.name,
            spec.export
        );
    }
    let listed = tools::listing(relay.runtime());
    assert_eq!(listed.len(), TOOLS.len(), "every tool is listed");
}

#[test]
fn tool_schemas_are_valid_json_schema_objects_without_caller_filled_fields() {
    let (_dir, relay) = embedded();
    for tool in tools::listing(relay.runtime()) {
        let input = Json::Object(tool.input_schema.as_ref().clone());
        let output = Json::Object(tool.output_schema.as_deref().cloned().unwrap());
        for schema in [&input, &output] {
            if let Err(problem) = check_schema(schema, "") {
                panic!(
                    "{}: not a valid JSON Schema ({problem}): {schema}",
                    tool.name
                );
            }
            assert_eq!(schema["type"], "object", "{}: {schema}", tool.name);
        }
        let properties = input["properties"].as_object().unwrap();
        for filled in ["from", "agentId"] {
            assert!(
                !properties.contains_key(filled),
                "{}: {filled} comes from the token, not from arguments",
                tool.name
            );
        }
    }
}

/// The JSON Schema vocabulary the tool schemas use, checked the way the meta-schema would: every
/// keyword known and of the right JSON type, `required` naming declared properties. (The Python
/// client tests also run jsonschema's `check_schema` on every listed schema.)
fn check_schema(schema: &Json, at: &str) -> Result<(), String> {
    const TYPES: &[&str] = &[
        "null", "boolean", "object", "array", "number", "string", "integer",
    ];
    let Json::Object(object) = schema else {
        return Err(format!("{at} is not an object"));
    };
    for (keyword, value) in object {
        let place = format!("{at}/{keyword}");
        match keyword.as_str() {
            "type" => {
                let names: Vec<&Json> = match value {
                    Json::Array(names) => names.iter().collect(),
                    one => vec![one],
                };
                if !names
                    .iter()
                    .all(|n| n.as_str().is_some_and(|n| TYPES.contains(&n)))
                {
                    return Err(format!("{place}: unknown type {value}"));
                }
            }
            "properties" => {
                let properties = value.as_object().ok_or(format!("{place} not an object"))?;
                for (name, sub) in properties {
                    check_schema(sub, &format!("{place}/{name}"))?;
                }
            }
            "required" => {
                let names = value.as_array().ok_or(format!("{place} not an array"))?;
                for name in names {
                    let name = name
                        .as_str()
                        .ok_or(format!("{place}: {name} not a string"))?;
                    if object.get("properties").and_then(|p| p.get(name)).is_none() {
                        return Err(format!("{place}: {name} is not a property"));
                    }
                }
            }
            "items" | "additionalProperties" if value.is_boolean() => {}
            "items" | "additionalProperties" | "not" => check_schema(value, &place)?,
            "oneOf" | "anyOf" | "allOf" => {
                let subs = value.as_array().ok_or(format!("{place} not an array"))?;
                for (i, sub) in subs.iter().enumerate() {
                    check_schema(sub, &format!("{place}/{i}"))?;
                }
            }
            "enum" => {
                value.as_array().ok_or(format!("{place} not an array"))?;
            }
            "minimum" | "maximum" | "minLength" | "maxLength" | "minItems" | "maxItems" => {
                value.as_f64().ok_or(format!("{place} not a number"))?;
            }
            "uniqueItems" => {
                value.as_bool().ok_or(format!("{place} not a boolean"))?;
            }
            "description" | "title" | "pattern" | "format" => {
                value.as_str().ok_or(format!("{place} not a string"))?;
            }
            "nullable" => return Err(format!("{place}: OpenAPI's nullable is not JSON Schema")),
            other => return Err(format!("{at}: unexpected keyword {other}")),
        }
    }
    Ok(())
}

#[test]
fn read_only_tools_say_so() {
    let (_dir, relay) = embedded();
    let read_only: Vec<String> = tools::listing(relay.runtime())
        .into_iter()
        .filter(|tool| tool.annotations.as_ref().and_then(|a| a.read_only_hint) == Some(true))
        .map(|tool| tool.name.into_owned())
        .collect();
    assert_eq!(
        read_only,
        [
            "whoami",
            "list_agents",
            "fetch_inbox",
            "get_thread",
            "list_tasks",
            "list_reservations",
            "search_messages",
            "check_paths"
        ]
    );
}

#[test]
fn send_message_takes_no_from_and_answers_what_its_output_schema_requires() {
    let (_dir, relay) = embedded();
    relay
        .call_json("register-agent", &json!({"input": {"id": "alice"}}))
        .unwrap();
    let spec = tools::find("send_message").unwrap();
    let export = relay.runtime().export(spec.export).unwrap();
    let acting = tools::Acting {
        caller: agent_relay_core::embed::Caller::Operator.to_val(),
        agent_id: "user".to_owned(),
    };
    let forged = json!({"to": "alice", "body": "hi", "from": "alice"});
    let refused = tools::arguments(spec, export, &acting, forged.as_object()).err();
    assert!(
        refused
            .as_deref()
            .is_some_and(|text| text.contains("from is filled in from your token")),
        "a from argument must be refused: {refused:?}"
    );
    let call = tools::arguments(
        spec,
        export,
        &acting,
        json!({"to": "alice", "body": "hi"}).as_object(),
    )
    .unwrap();
    let value = relay.calls().run_here(export, &call.args).unwrap();
    let answer = tools::structured(export, agent_relay_core::bridge::outcome(&value).unwrap());
    assert_eq!(answer["message"]["from"], "user");
    let schema = Json::Object(tools::output_schema(export));
    let required = schema["required"].as_array().unwrap();
    for field in required {
        assert!(
            answer.get(field.as_str().unwrap()).is_some(),
            "{answer} lacks {field} that {schema} requires"
        );
    }
}

fn initialize() -> Json {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "probe", "version": "0"}}})
}

fn post_mcp(relay: &RelayServer, token: Option<&str>, host: Option<&str>) -> (u16, String) {
    let client = reqwest::blocking::Client::new();
    let mut request = client
        .post(format!("{}/mcp", relay.base))
        .header("accept", "application/json, text/event-stream")
        .json(&initialize());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(host) = host {
        request = request.header("host", host);
    }
    let response = request.send().unwrap();
    (response.status().as_u16(), response.text().unwrap())
}

#[test]
fn mcp_without_a_valid_token_is_401_before_any_exchange() {
    let relay = RelayServer::start();
    let (status, body) = post_mcp(&relay, None, None);
    assert_eq!(status, 401, "no token: {body}");
    let (status, body) = post_mcp(&relay, Some("relay_not-a-token"), None);
    assert_eq!(status, 401, "unknown token: {body}");
    let (status, body) = post_mcp(&relay, Some(OPERATOR), None);
    assert_eq!(status, 200, "the operator's token: {body}");
    assert!(body.contains("`user`"), "the operator acts as user: {body}");
}

#[test]
fn mcp_refuses_a_foreign_host_unless_allowed() {
    let relay = RelayServer::start();
    let (status, body) = post_mcp(&relay, Some(OPERATOR), Some("evil.example:8787"));
    assert_eq!(status, 403, "a rebound DNS name must be refused: {body}");
    let relay = RelayServer::start_with(&["--mcp-allowed-host", "relay.example"]);
    let (status, body) = post_mcp(&relay, Some(OPERATOR), Some("relay.example"));
    assert_eq!(status, 200, "an allowed host: {body}");
}

#[test]
fn get_thread_shows_a_recreated_agent_none_of_its_predecessors_messages() {
    let (_dir, relay) = embedded();
    let register = |id: &str| {
        relay
            .call_json("register-agent", &json!({"input": {"id": id}}))
            .unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    register("dave");
    register("alice");
    let sent = relay
        .call_json(
            "send-message",
            &json!({"input": {"from": "alice", "to": "dave", "body": "the old dave's secret"}}),
        )
        .unwrap();
    let thread = sent["message"]["threadId"].as_i64().unwrap();
    relay
        .call_json("delete-agent", &json!({"agentId": "dave"}))
        .unwrap();
    let dave = register("dave");

    let spec = tools::find("get_thread").unwrap();
    let export = relay.runtime().export(spec.export).unwrap();
    let acting = tools::Acting {
        caller: agent_relay_core::embed::Caller::Bearer(dave).to_val(),
        agent_id: "dave".to_owned(),
    };
    let call = tools::arguments(
        spec,
        export,
        &acting,
        json!({"threadId": thread}).as_object(),
    )
    .unwrap();
    let value = relay.calls().run_here(export, &call.args).unwrap();
    let answer = agent_relay_core::bridge::outcome(&value);

    let refused = answer.expect_err("the old dave's thread is not the new dave's");
    assert_eq!(refused.status, 403, "{refused:?}");
}

/// The tools' input schemas take their rules from the component (`input-rules`), by export and
/// place: the `leaseMs` of mark_read and release_claim (a claim's input, never looked at there)
/// has no lease bounds, renew_claim's has.
#[test]
fn tool_input_rules_are_the_ones_the_component_publishes() {
    let rules = common::published_input_rules();
    let (_dir, relay) = embedded();
    let mut seen = std::collections::BTreeSet::new();
    let mut problems = Vec::new();
    for spec in TOOLS {
        let export = relay.runtime().export(spec.export).unwrap();
        let schema = Json::Object(tools::input_schema(spec, export));
        for (key, inner) in schema["properties"].as_object().unwrap() {
            if key == "waitSeconds" {
                continue;
            }
            // A tool's arguments are its export's parameters, with `query` and `input` opened.
            let place = export
                .params
                .iter()
                .find_map(|(name, shape)| match shape {
                    agent_relay_core::shape::Shape::Record(fields)
                        if matches!(name.as_str(), "query" | "input")
                            && fields.iter().any(|f| f.key == *key) =>
                    {
                        Some(format!("{name}.{key}"))
                    }
                    _ => None,
                })
                .unwrap_or_else(|| key.clone());
            common::check_rules(&rules, spec.export, &place, inner, &mut seen, &mut problems);
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let lease = |tool: &str| {
        let spec = tools::find(tool).unwrap();
        let schema = tools::input_schema(spec, relay.runtime().export(spec.export).unwrap());
        schema["properties"]["leaseMs"].clone()
    };
    assert_eq!(lease("renew_claim")["minimum"], 100);
    for tool in ["mark_read", "release_claim"] {
        let schema = lease(tool);
        assert!(
            schema.is_object() && schema.get("minimum") != Some(&json!(100)),
            "{tool}: the claim's lease rule is not {tool}'s: {schema}"
        );
    }
}

/// One JSON-RPC request to `/mcp` (stateless: no session to carry between requests).
fn rpc(relay: &RelayServer, token: &str, method: &str, params: Json) -> Json {
    let response = reqwest::blocking::Client::new()
        .post(format!("{}/mcp", relay.base))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .bearer_auth(token)
        .json(&json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().unwrap()
}

#[test]
fn mcp_over_http_lists_and_reads_resources_as_the_token_may_and_cannot_subscribe() {
    let relay = RelayServer::start();
    let bob = relay.register(json!({"id": "bob"}));
    relay.register(json!({"id": "carol"}));
    let to_bob = common::id_of(&relay.send(json!({"from": "carol", "to": "bob", "body": "hi"})));
    let to_carol = common::id_of(&relay.send(json!({"from": "bob", "to": "carol", "body": "x"})));
    relay.post(
        &format!("/v1/messages/{to_carol}/read"),
        OPERATOR,
        json!({"agentId": "carol"}),
    );
    let secret = common::id_of(&relay.send(json!({"from": "user", "to": "carol", "body": "s"})));

    let initialized = rpc(&relay, &bob, "initialize", initialize()["params"].clone());
    assert_eq!(
        initialized["result"]["capabilities"]["resources"],
        json!({}),
        "resources without subscribe: {initialized}"
    );
    let listed = rpc(&relay, &bob, "resources/list", json!({}));
    assert_eq!(
        listed["result"]["resources"][0]["uri"], "relay://agents/bob/inbox",
        "{listed}"
    );
    let inbox = rpc(
        &relay,
        &bob,
        "resources/read",
        json!({"uri": "relay://agents/bob/inbox"}),
    );
    let text = inbox["result"]["contents"][0]["text"].as_str().unwrap();
    let messages: Json = serde_json::from_str(text).unwrap();
    assert_eq!(common::ids(&messages), vec![to_bob], "{inbox}");
    // Bob's own message to carol is his to read; the operator's message to carol is not.
    let own = rpc(
        &relay,
        &bob,
        "resources/read",
        json!({"uri": format!("relay://messages/{to_carol}")}),
    );
    assert!(own["result"]["contents"][0]["text"].is_string(), "{own}");
    let refused = rpc(
        &relay,
        &bob,
        "resources/read",
        json!({"uri": format!("relay://messages/{secret}")}),
    );
    assert_eq!(refused["error"]["data"]["status"], 403, "{refused}");
    assert_eq!(
        refused["error"]["data"]["error"]["code"], "forbidden",
        "{refused}"
    );
    let missing = rpc(
        &relay,
        &bob,
        "resources/read",
        json!({"uri": "relay://messages/999999"}),
    );
    assert_eq!(missing["error"]["code"], -32002, "{missing}");
    // The operator reads any inbox (as the relay lets it).
    let carols = rpc(
        &relay,
        OPERATOR,
        "resources/read",
        json!({"uri": "relay://agents/carol/inbox"}),
    );
    assert!(
        carols["result"]["contents"][0]["text"].is_string(),
        "{carols}"
    );
    let subscribe = rpc(
        &relay,
        &bob,
        "resources/subscribe",
        json!({"uri": "relay://agents/bob/inbox"}),
    );
    assert_eq!(subscribe["error"]["code"], -32601, "{subscribe}");
    assert!(
        subscribe["error"]["message"]
            .as_str()
            .unwrap()
            .contains("agent-relay mcp"),
        "{subscribe}"
    );
}

#[test]
fn lease_ms_says_its_default_and_bounds_where_the_tool_takes_a_lease() {
    let (_dir, relay) = embedded();
    let lease = |tool: &str| {
        let spec = tools::find(tool).unwrap();
        let schema = tools::input_schema(spec, relay.runtime().export(spec.export).unwrap());
        schema["properties"]["leaseMs"].clone()
    };
    for tool in ["claim_message", "renew_claim", "claim_next"] {
        let schema = lease(tool);
        assert_eq!(schema["minimum"], 100, "{tool}: {schema}");
        assert_eq!(schema["maximum"], 24 * 60 * 60 * 1000, "{tool}: {schema}");
        let text = schema["description"].as_str().unwrap_or_default();
        for words in ["default-lease-ms", "5 minutes", "100 ms", "24 hours"] {
            assert!(text.contains(words), "{tool}: {words} missing in {schema}");
        }
    }
    for tool in ["mark_read", "release_claim"] {
        let schema = lease(tool);
        assert!(
            schema.get("description").is_none(),
            "{tool} ignores a lease: {schema}"
        );
    }
}

/// Calls one tool over `/mcp` (a stateless request) with `token`; the JSON-RPC result.
fn call_tool(relay: &RelayServer, token: &str, name: &str, arguments: Json) -> Json {
    let body = rpc(
        relay,
        token,
        "tools/call",
        json!({"name": name, "arguments": arguments}),
    );
    assert!(body["error"].is_null(), "{name}: {body}");
    body["result"].clone()
}

/// The text blocks of a tool result, joined.
fn text_of(result: &Json) -> String {
    result["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|block| block["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn tool_results_say_where_each_job_stands_and_offer_only_an_open_one() {
    let relay = RelayServer::start();
    let alice = relay.register(json!({"id": "alice", "label": "dev"}));
    let job = |body: &str| {
        common::id_of(
            &relay
                .send(json!({"from": "user", "to": "label:dev", "body": body, "claimable": true})),
        )
    };
    let done = job("finished work");
    let open = job("waiting work");
    let claimed = call_tool(
        &relay,
        &alice,
        "claim_message",
        json!({"messageId": done, "leaseMs": 600_000}),
    );
    let text = text_of(&claimed);
    assert!(
        text.contains(&format!("Job {done} from user to label:dev"))
            && text.contains("held by you (10m left)")
            && text.contains(&format!("complete_claim messageId={done}")),
        "{text}"
    );
    assert_eq!(claimed["structuredContent"]["claimedBy"], "alice");
    call_tool(&relay, &alice, "complete_claim", json!({"messageId": done}));

    let inbox = text_of(&call_tool(&relay, &alice, "fetch_inbox", json!({})));
    // The line keys on `claimable`, whatever kind the relay names new jobs.
    let line = |id: i64| {
        inbox
            .lines()
            .find(|l| l.starts_with(&format!("Job {id} from user to label:dev (kind ")))
            .unwrap_or_else(|| panic!("no line for job {id}: {inbox}"))
    };
    assert!(line(done).ends_with("): completed by alice."), "{inbox}");
    assert!(
        !inbox.contains(&format!("claim_message messageId={done}")),
        "a completed job is never offered: {inbox}"
    );
    assert!(
        line(open).ends_with(&format!(
            "): open: take it with claim_message messageId={open}."
        )),
        "{inbox}"
    );
    let chat = common::id_of(&relay.send(json!({"from": "user", "to": "alice", "body": "hi"})));
    let thread = call_tool(&relay, &alice, "get_thread", json!({"threadId": chat}));
    assert_eq!(
        thread["content"].as_array().unwrap().len(),
        1,
        "no job, no words added: {thread}"
    );
}

#[test]
fn agents_reserve_check_release_and_search_through_their_tools() {
    let relay = RelayServer::start();
    let alice = relay.register(json!({"id": "alice"}));
    let bob = relay.register(json!({"id": "bob"}));
    let reserved = call_tool(
        &relay,
        &alice,
        "reserve_paths",
        json!({"project": "shop", "paths": ["src/auth/**"], "reason": "auth refactor"}),
    );
    assert_eq!(reserved["isError"], false, "{reserved}");
    assert_eq!(
        reserved["structuredContent"]["reservation"]["agentId"], "alice",
        "{reserved}"
    );
    // Bob's tools act as bob: refused, with alice's reservation as the conflict.
    let refused = call_tool(
        &relay,
        &bob,
        "reserve_paths",
        json!({"project": "shop", "paths": ["src/auth/login.rs"]}),
    );
    assert_eq!(
        refused["structuredContent"]["outcome"], "refused",
        "{refused}"
    );
    assert_eq!(
        refused["structuredContent"]["conflicts"][0]["agentId"],
        "alice"
    );
    let checked = call_tool(
        &relay,
        &bob,
        "check_paths",
        json!({"project": "shop", "paths": ["src/auth/login.rs"]}),
    );
    assert_eq!(checked["structuredContent"]["blocked"], true, "{checked}");
    let listed = call_tool(
        &relay,
        &bob,
        "list_reservations",
        json!({"project": "shop"}),
    );
    assert!(text_of(&listed).contains("src/auth/**"), "{listed}");
    let released = call_tool(&relay, &alice, "release_paths", json!({"project": "shop"}));
    assert_eq!(released["isError"], false, "{released}");
    let checked = call_tool(
        &relay,
        &bob,
        "check_paths",
        json!({"project": "shop", "paths": ["src/auth/login.rs"]}),
    );
    assert_eq!(checked["structuredContent"]["blocked"], false, "{checked}");

    relay.send(json!({"from": "alice", "to": "bob", "body": "the LRU cache stays"}));
    let found = call_tool(&relay, &bob, "search_messages", json!({"q": "lru"}));
    assert!(text_of(&found).contains("**LRU**"), "{found}");
    let bad = call_tool(&relay, &bob, "search_messages", json!({"q": "\"open"}));
    assert_eq!(bad["isError"], true, "{bad}");
    assert!(text_of(&bad).contains("unclosed quote"), "{bad}");
}

#[test]
fn send_message_takes_after_and_cancel_job_cancels_a_job_the_caller_sent() {
    let relay = RelayServer::start();
    let alice = relay.register(json!({"id": "alice", "label": "dev"}));
    let bob = relay.register(json!({"id": "bob", "label": "dev"}));
    let send = |arguments: Json| {
        let sent = call_tool(&relay, &alice, "send_message", arguments);
        assert_eq!(sent["isError"], false, "{sent}");
        sent["structuredContent"]["message"].clone()
    };
    let first = send(json!({"to": "label:dev", "body": "first", "claimable": true}));
    let waiting = send(
        json!({"to": "label:dev", "body": "second", "claimable": true,
                              "after": [first["id"]]}),
    );
    assert_eq!(waiting["blockedBy"], json!([first["id"]]), "{waiting}");

    let by_bob = call_tool(
        &relay,
        &bob,
        "cancel_job",
        json!({"messageId": first["id"]}),
    );
    assert_eq!(by_bob["isError"], true, "{by_bob}");
    assert!(text_of(&by_bob).contains("only its sender"), "{by_bob}");
    let cancelled = call_tool(
        &relay,
        &alice,
        "cancel_job",
        json!({"messageId": first["id"], "reason": "not needed"}),
    );
    assert_eq!(cancelled["isError"], false, "{cancelled}");
    assert_eq!(cancelled["structuredContent"]["cancelledBy"], "alice");
    let dead = relay.get(&format!("/v1/messages/{}", waiting["id"]), OPERATOR);
    assert!(
        dead.body["deadLetteredAt"].as_i64().is_some(),
        "{:?}",
        dead.body
    );
}

#[test]
fn claim_next_takes_priority_first_and_only_the_kind_or_channel_asked_for() {
    let relay = RelayServer::start();
    let alice = relay.register(json!({"id": "alice", "label": "dev"}));
    let bob = relay.register(json!({"id": "bob", "label": "dev"}));
    let send = |arguments: Json| {
        let sent = call_tool(&relay, &alice, "send_message", arguments);
        assert_eq!(sent["isError"], false, "{sent}");
        sent["structuredContent"]["message"]["id"].clone()
    };
    let plain = send(json!({"to": "label:dev", "body": "plain", "claimable": true}));
    let urgent = send(
        json!({"to": "label:dev", "body": "urgent", "claimable": true,
                             "priority": 900}),
    );
    let on_ops = send(json!({"to": "label:dev", "body": "ops", "claimable": true,
                             "channel": "ops"}));
    let next = |arguments: Json| {
        let taken = call_tool(&relay, &bob, "claim_next", arguments);
        assert_eq!(taken["isError"], false, "{taken}");
        taken["structuredContent"]["result"].clone()
    };
    let none = next(json!({"kind": "no-such-kind"}));
    assert_eq!(none, Json::Null, "no job of that kind: {none}");
    let ops = next(json!({"channel": "ops", "leaseMs": 60_000}));
    assert_eq!(ops["id"], on_ops, "{ops}");
    assert_eq!(ops["claimedBy"], "bob", "{ops}");
    let first = next(json!({}));
    assert_eq!(first["id"], urgent, "priority 900 first: {first}");
    assert_eq!(first["priority"], 900, "{first}");
    assert_eq!(next(json!({}))["id"], plain);
    assert_eq!(next(json!({})), Json::Null);
}
