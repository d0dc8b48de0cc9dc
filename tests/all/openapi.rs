//! The served OpenAPI document is valid OpenAPI 3.0.3 in the ways code generators trip over, and
//! states the rules the relay enforces (the full validation and a Schemathesis run are
//! `tests/openapi/check.sh`, which needs Python); the shape walker gives MCP its tool schemas.

use crate::common;

use std::collections::BTreeMap;

use agent_relay_core::embed::{Options, Relay as Embedded};
use agent_relay_core::shape::{self, Shape, params_schema};
use common::{OPERATOR, RelayServer, operations};
use serde_json::{Value as Json, json};

fn document() -> Json {
    let relay = RelayServer::start();
    let reply = relay.request("GET", "/v1/openapi.json", None, None);
    assert_eq!(reply.status, 200);
    reply.body
}

/// Every `required` array in the document, with where it sits.
fn required_arrays<'a>(at: String, value: &'a Json, out: &mut Vec<(String, &'a Json)>) {
    match value {
        Json::Object(map) => {
            for (key, inner) in map {
                if key == "required" && inner.is_array() {
                    out.push((at.clone(), inner));
                }
                required_arrays(format!("{at}/{key}"), inner, out);
            }
        }
        Json::Array(items) => {
            for (i, inner) in items.iter().enumerate() {
                required_arrays(format!("{at}/{i}"), inner, out);
            }
        }
        _ => {}
    }
}

fn param<'a>(op: &'a Json, name: &str) -> &'a Json {
    op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no parameter {name} in {op}"))
}

#[test]
fn operation_ids_are_unique() {
    let doc = document();
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (method, path, op) in operations(&doc) {
        let id = op["operationId"].as_str().unwrap().to_owned();
        seen.entry(id).or_default().push(format!("{method} {path}"));
    }
    let twice: Vec<_> = seen.iter().filter(|(_, routes)| routes.len() > 1).collect();
    assert!(twice.is_empty(), "operationIds used twice: {twice:?}");
    assert!(seen.contains_key("poll-inbox") && seen.contains_key("poll-inbox-stream"));
}

#[test]
fn no_required_array_is_empty() {
    let doc = document();
    let mut arrays = Vec::new();
    required_arrays(String::new(), &doc, &mut arrays);
    assert!(!arrays.is_empty());
    let empty: Vec<&String> = arrays
        .iter()
        .filter(|(_, a)| a.as_array().unwrap().is_empty())
        .map(|(at, _)| at)
        .collect();
    assert!(
        empty.is_empty(),
        "OpenAPI 3.0 forbids empty required: {empty:?}"
    );
}

#[test]
fn bodies_with_required_fields_are_required() {
    let doc = document();
    let send = &doc["paths"]["/v1/messages"]["post"]["requestBody"];
    assert_eq!(send["required"], true);
    let schema = &send["content"]["application/json"]["schema"];
    for field in ["from", "to", "body"] {
        assert!(
            schema["required"]
                .as_array()
                .unwrap()
                .contains(&json!(field)),
            "{field} is required in {schema}"
        );
    }
    // A heartbeat's session guard is all optional: the body may be left out.
    let heartbeat = &doc["paths"]["/v1/agents/{agentId}/heartbeat"]["post"]["requestBody"];
    assert_eq!(heartbeat["required"], false);
    for (method, path, op) in operations(&doc) {
        if let Some(body) = op.get("requestBody") {
            let schema = &body["content"]["application/json"]["schema"];
            assert_eq!(
                body["required"],
                json!(schema.get("required").is_some()),
                "{method} {path}: a body is required exactly when it has required fields"
            );
        }
    }
}

#[test]
fn health_is_open_and_everything_else_needs_a_token() {
    let doc = document();
    for (method, path, op) in operations(&doc) {
        let expected = if path == "/v1/health" {
            json!([])
        } else {
            json!([{"bearer": []}])
        };
        assert_eq!(op["security"], expected, "{method} {path}");
    }
}

#[test]
fn the_stream_answers_server_sent_events() {
    let doc = document();
    let stream = &doc["paths"]["/v1/agents/{agentId}/stream"]["get"];
    assert!(
        stream["responses"]["200"]["content"]
            .get("text/event-stream")
            .is_some(),
        "{stream}"
    );
    assert_eq!(param(stream, "Last-Event-ID")["in"], "header");
    let inbox = &doc["paths"]["/v1/agents/{agentId}/inbox"]["get"];
    assert_eq!(param(inbox, "wait")["schema"]["minimum"], 0);
}

#[test]
fn the_documented_bounds_are_the_relays() {
    let doc = document();
    let inbox = &doc["paths"]["/v1/agents/{agentId}/inbox"]["get"];
    let limit = &param(inbox, "limit")["schema"];
    assert_eq!(
        (&limit["minimum"], &limit["maximum"]),
        (&json!(1), &json!(500))
    );
    let since = &param(inbox, "since")["schema"];
    assert_eq!(since["format"], "int64");
    let agent_id = &param(inbox, "agentId")["schema"];
    assert_eq!(
        (&agent_id["minLength"], &agent_id["maxLength"]),
        (&json!(1), &json!(200))
    );
    let claim = &doc["paths"]["/v1/messages/{messageId}/claim"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"];
    let lease = &claim["properties"]["leaseMs"];
    assert_eq!(
        (&lease["minimum"], &lease["maximum"]),
        (&json!(100), &json!(86_400_000))
    );
    assert!(
        doc["paths"]["/v1/messages/{messageId}"]["get"]["responses"]
            .get("404")
            .is_some()
    );
}

/// claim-next answers 204 without a body when there is no job, so the document has a 204 without
/// content and its 200 always carries a message; the wait may come in the body too.
#[test]
fn claim_next_is_documented_as_it_answers() {
    let relay = RelayServer::start();
    let doc = relay.request("GET", "/v1/openapi.json", None, None).body;
    let op = &doc["paths"]["/v1/agents/{agentId}/claim-next"]["post"];
    let responses = &op["responses"];
    assert!(responses["204"].is_object(), "{responses}");
    assert!(responses["204"].get("content").is_none(), "{responses}");
    let ok = &responses["200"]["content"]["application/json"]["schema"];
    assert_eq!(ok["type"], "object", "{ok}");
    assert!(ok.get("nullable").is_none(), "a 200 is never null: {ok}");
    assert!(ok["properties"].get("attempts").is_some(), "{ok}");
    let body = &op["requestBody"]["content"]["application/json"]["schema"]["properties"];
    assert_eq!(body["wait"]["minimum"], 0, "{body}");
    assert_eq!(body["leaseMs"]["minimum"], 100, "{body}");
    assert_eq!(param(op, "wait")["in"], "query");
    // A plain operation has no 204.
    assert!(
        doc["paths"]["/v1/messages/{messageId}/claim"]["post"]["responses"]
            .get("204")
            .is_none()
    );

    assert_eq!(
        relay
            .post("/v1/agents", OPERATOR, json!({"id": "w"}))
            .status,
        201
    );
    let none = relay.post("/v1/agents/w/claim-next", OPERATOR, json!({"wait": 0}));
    assert_eq!((none.status, &none.body), (204, &Json::Null));
}

/// Ids the document's pattern refuses are the ids the relay refuses.
#[test]
fn the_relay_refuses_the_ids_the_pattern_refuses() {
    let relay = RelayServer::start();
    let doc = relay.request("GET", "/v1/openapi.json", None, None).body;
    let schema = &doc["paths"]["/v1/agents"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"]["properties"]["id"];
    assert!(
        schema["pattern"]
            .as_str()
            .is_some_and(|p| p.starts_with('^')),
        "{schema}"
    );
    let cases = [
        ("ok-id", 201),
        ("in ner", 201),
        (" lead", 400),
        ("trail\u{3000}", 400),
        ("a\u{7}b", 400),
        ("", 400),
    ];
    for (id, status) in cases {
        let reply = relay.post("/v1/agents", OPERATOR, json!({"id": id}));
        assert_eq!(reply.status, status, "{id:?}: {:?}", reply.body);
    }
}

#[test]
fn an_exports_parameters_become_one_json_schema_without_the_named_ones() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Embedded::open(dir.path().join("relay.db"), Options::default()).unwrap();
    let export = relay.runtime().export("poll-inbox").unwrap();
    let rules = |at: &str, _: &Shape| export.input_rule(at);
    let schema = params_schema(&export.params, &["caller"], &rules);
    assert_eq!(schema["type"], "object");
    assert!(schema["properties"].get("caller").is_none(), "{schema}");
    assert_eq!(
        schema["required"],
        json!(["agentId"]),
        "the query may be left out"
    );
    assert_eq!(schema["properties"]["agentId"]["maxLength"], 200);
    let limit = &schema["properties"]["query"]["properties"]["limit"];
    assert_eq!(limit["type"], json!(["integer", "null"]), "{limit}");
    assert_eq!(limit["maximum"], 500);
    let send = relay.runtime().export("send-message").unwrap();
    let schema = params_schema(&send.params, &["caller"], &shape::no_rules);
    assert_eq!(schema["required"], json!(["input"]));
    assert_eq!(
        schema["properties"]["input"]["properties"]["meta"],
        json!({"type": ["object", "null"], "additionalProperties": true})
    );
}

/// Found by Schemathesis: a caller without credentials got 409 for a built-in id instead of 401.
#[test]
fn registering_without_credentials_is_refused_before_the_id_is_looked_at() {
    let relay = RelayServer::start();
    for id in ["system", "newcomer"] {
        let reply = relay.request("POST", "/v1/agents", None, Some(&json!({"id": id})));
        assert_eq!(reply.status, 401, "{id}: {:?}", reply.body);
    }
}

/// Lengths are counted in characters, as the document's `maxLength` counts them.
#[test]
fn an_id_of_200_characters_is_taken_whatever_its_bytes() {
    let relay = RelayServer::start();
    let id = "é".repeat(200);
    let reply = relay.post("/v1/agents", OPERATOR, json!({"id": id}));
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let longer = "é".repeat(201);
    let reply = relay.post("/v1/agents", OPERATOR, json!({"id": longer}));
    assert_eq!(reply.status, 413, "{:?}", reply.body);
}

/// `wait` is any number of seconds from 0 (the document's minimum); longer ones are cut.
#[test]
fn any_non_negative_wait_is_taken_and_cut_to_the_maximum() {
    let relay = RelayServer::start_with(&["--max-wait-secs", "1"]);
    let token = relay.register(json!({"id": "waiter"}));
    let held = relay.get("/v1/agents/waiter/inbox?wait=1e30", &token);
    assert_eq!(held.status, 200, "{:?}", held.body);
    let negative = relay.get("/v1/agents/waiter/inbox?wait=-1", &token);
    assert_eq!(negative.status, 400, "{:?}", negative.body);
}

/// One source for input rules: every rule the document states is one the component publishes
/// (`input-rules`) for that export and that place of its arguments, and every published rule of
/// a documented export is in the document. A field named like another export's rule-bearing
/// field gets no rule of its own: mark-read and release-claim take a `leaseMs` (their input is a
/// claim's) but never look at it, unlike claim-message.
#[test]
fn every_rule_in_the_document_is_one_the_component_publishes() {
    let rules = common::published_input_rules();
    let dir = tempfile::tempdir().unwrap();
    let embedded = Embedded::open(dir.path().join("relay.db"), Options::default()).unwrap();
    let relay = RelayServer::start();
    let doc = relay.request("GET", "/v1/openapi.json", None, None).body;
    let mut seen = std::collections::BTreeSet::new();
    let mut problems = Vec::new();
    let mut documented = std::collections::BTreeSet::new();
    for (method, path, op) in operations(&doc) {
        let id = op["operationId"].as_str().unwrap();
        let name = id.strip_suffix("-stream").unwrap_or(id);
        let export = embedded
            .runtime()
            .export(name)
            .unwrap_or_else(|| panic!("{method} {path}: no export {name}"));
        documented.insert(name.to_owned());
        for parameter in op["parameters"].as_array().unwrap() {
            let key = parameter["name"].as_str().unwrap();
            let place = match parameter["in"].as_str().unwrap() {
                "query" if key == "wait" => continue,
                "query" => format!("query.{key}"),
                "header" if key == "Last-Event-ID" => continue,
                _ => key.to_owned(),
            };
            let schema = &parameter["schema"];
            common::check_rules(&rules, name, &place, schema, &mut seen, &mut problems);
        }
        let Some(body) = op.get("requestBody") else {
            continue;
        };
        let mut schema = body["content"]["application/json"]["schema"].clone();
        // The wait a held route takes in its body is the server's, not an argument.
        if let Some(properties) = schema["properties"].as_object_mut() {
            properties.remove("wait");
        }
        let root = if export.params.iter().any(|(n, _)| n == "input") {
            "input"
        } else {
            ""
        };
        common::check_rules(&rules, name, root, &schema, &mut seen, &mut problems);
    }
    for (export, place) in rules.keys() {
        if documented.contains(export) && !seen.contains(&(export.clone(), place.clone())) {
            problems.push(format!(
                "{export} {place}: the component states a rule the document lacks"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    let claim = &doc["paths"]["/v1/messages/{messageId}/claim"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"]["properties"]["leaseMs"];
    assert_eq!(claim["minimum"], 100, "{claim}");
    for action in ["read", "release"] {
        let path = format!("/v1/messages/{{messageId}}/{action}");
        let lease = &doc["paths"][path.as_str()]["post"]["requestBody"]["content"]["application/json"]
            ["schema"]["properties"]["leaseMs"];
        assert!(
            lease.is_object() && lease.get("minimum") != Some(&json!(100)),
            "{action}: the claim's lease rule is not {action}'s: {lease}"
        );
    }
    // And the relay takes any lease there, as the document now says.
    let token = relay.register(json!({"id": "reader", "label": "readers"}));
    let sent = relay.send(json!({"from": "user", "to": "label:readers", "body": "job",
        "claimable": true}));
    let id = sent.body["message"]["id"].as_i64().unwrap();
    let claimed = relay.post(
        &format!("/v1/messages/{id}/claim"),
        &token,
        json!({"agentId": "reader", "leaseMs": 1000}),
    );
    assert_eq!(claimed.status, 200, "{:?}", claimed.body);
    for action in ["read", "release"] {
        let reply = relay.post(
            &format!("/v1/messages/{id}/{action}"),
            &token,
            json!({"agentId": "reader", "leaseMs": 1}),
        );
        assert_eq!(reply.status, 200, "{action}: {:?}", reply.body);
    }
    let short = relay.post(
        &format!("/v1/messages/{id}/claim"),
        &token,
        json!({"agentId": "reader", "leaseMs": 1}),
    );
    assert_eq!(
        short.status, 400,
        "a claim's lease is checked: {:?}",
        short.body
    );
}
