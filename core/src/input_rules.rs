//! The checks the relay makes on what a caller sends, beyond the WIT types, as schema keywords
//! (lengths, bounds, patterns) for the OpenAPI document and the MCP tool schemas.
//!
//! The guest makes these checks (`guest/src/input.rs` and the domain modules); this module only
//! tells clients in advance, so a client can validate before it sends. The Schemathesis run in CI
//! (`tests/openapi/check.sh`) fails when the two drift apart: a value the document allows that
//! the relay refuses, or one it forbids that the relay takes.

use serde_json::{Map, Value as Json, json};

use crate::shape::Shape;

/// Longest identifier (agent id, label, tag, ...), in characters (`input::MAX_ID`).
pub const MAX_ID: u64 = 200;
/// Longest short text (name, subject, title, ...), in characters (`input::MAX_SHORT_TEXT`).
pub const MAX_SHORT_TEXT: u64 = 1_000;
/// Longest message body or prompt, in characters (`input::MAX_BODY`).
pub const MAX_BODY: u64 = 256 * 1024;
/// Most entries of a list page (`messages::MAX_LIMIT`).
pub const MAX_LIMIT: u64 = 500;
/// Shortest lease (`claims::MIN_LEASE_MS`) and the default longest (setting `max-lease-ms`).
pub const LEASE_MS: (u64, u64) = (100, 24 * 60 * 60 * 1000);

/// What `input::id` accepts: not empty, no surrounding white space (Unicode's, as Rust's `trim`
/// sees it), no control characters.
const ID_PATTERN: &str = concat!(
    "^[^\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]",
    "(?:[^\\x00-\\x1f\\x7f-\\x9f]*",
    "[^\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000])?$"
);

/// Fields and parameters the relay reads as identifiers, by JSON name (list items as the list's
/// name).
const IDS: &[&str] = &[
    "id",
    "agentId",
    "channelId",
    "bindingId",
    "orchestratorId",
    "source",
    "name",
    "label",
    "tags",
    "capabilities",
    "instanceId",
    "from",
    "to",
    "channel",
    "kind",
    "idempotencyKey",
    "conversationId",
    "operatorId",
    "action",
    "dedupeKey",
    "target",
    "partnerId",
    "requesterId",
    "hostname",
    "providers",
    "envKeys",
    "provider",
    "status",
];

/// Short free texts, by JSON name.
const SHORT_TEXTS: &[&str] = &[
    "subject",
    "title",
    "externalUrl",
    "baseDir",
    "cwd",
    "topic",
    "machine",
    "rig",
    "note",
    "secret",
];

/// Long free texts, by JSON name.
const LONG_TEXTS: &[&str] = &["body", "prompt"];

/// Query-string filters the relay checks like the body fields of the same name; other filters
/// are only compared (an odd value matches nothing).
const CHECKED_QUERIES: &[&str] = &["conversationId"];

/// What an orchestrator's agent adds around its id (`orchestrator-ID`) and its hostname
/// (`Orchestrator (HOSTNAME)`, the agent's name, which is checked like an id).
const ORCHESTRATOR_AGENT_PREFIX: u64 = "orchestrator-".len() as u64;
const ORCHESTRATOR_NAME_FRAME: u64 = "Orchestrator ()".len() as u64;

/// The route target types that name something (all but `broadcast`).
const NAMED_TARGETS: &[&str] = &["agent", "label", "tag", "capability", "orchestrator"];

/// The extra keywords for the value at `at` of `export`'s arguments (see
/// [`crate::shape::Rules`]).
pub fn rules(export: &str, at: &str, shape: &Shape) -> Option<Map<String, Json>> {
    let key = at.rsplit('.').next().unwrap_or(at).trim_end_matches("[]");
    let in_query = at.starts_with("query.");
    let extra = match shape {
        Shape::Integer(_) => match key {
            "limit" => json!({"minimum": 1, "maximum": MAX_LIMIT}),
            "leaseMs" => json!({"minimum": LEASE_MS.0, "maximum": LEASE_MS.1}),
            _ => return None,
        },
        // The built-in kinds belong to the built-in agents; a task is claimed through its message.
        Shape::Enum(names) if !in_query && matches!(key, "kind" | "status") => {
            let refused = ["user", "system", "claimed"];
            if !names.iter().any(|n| refused.contains(&n.as_str())) {
                return None;
            }
            let names: Vec<&String> = names
                .iter()
                .filter(|n| !refused.contains(&n.as_str()))
                .collect();
            json!({"enum": names})
        }
        // A broadcast target names nothing; every other target names its agent or group.
        Shape::Record(fields) if key == "target" && fields.iter().any(|f| f.key == "type") => {
            json!({"oneOf": [
                {"properties": {"type": {"enum": ["broadcast"]}}, "not": {"required": ["id"]}},
                {"properties": {"type": {"enum": NAMED_TARGETS}}, "required": ["id"]}
            ]})
        }
        // An orchestrator's agent is `orchestrator-ID`, named `Orchestrator (HOSTNAME)`: both
        // must fit the limits of an agent's id and name.
        Shape::String if export == "register-orchestrator" && at == "input.id" => {
            let mut id = id();
            id.insert(
                "maxLength".to_owned(),
                json!(MAX_ID - ORCHESTRATOR_AGENT_PREFIX),
            );
            return Some(id);
        }
        Shape::String if export == "register-orchestrator" && at == "input.hostname" => {
            let mut id = id();
            id.insert(
                "maxLength".to_owned(),
                json!(MAX_ID - ORCHESTRATOR_NAME_FRAME),
            );
            return Some(id);
        }
        Shape::String if in_query && !CHECKED_QUERIES.contains(&key) => return None,
        Shape::String => match key {
            // A target names a group only with something after its prefix.
            "to" | "target" => {
                let mut id = id();
                id.insert(
                    "not".to_owned(),
                    json!({"enum": ["label:", "tag:", "cap:", "orchestrator:"]}),
                );
                return Some(id);
            }
            "severity" => json!({"enum": ["info", "warning", "error", "critical"]}),
            // Not blank: something other than white space.
            "title" | "baseDir" => json!({"maxLength": MAX_SHORT_TEXT, "pattern": "\\S"}),
            // Empty (no secret) or without surrounding white space.
            "secret" => {
                json!({"maxLength": MAX_SHORT_TEXT, "pattern": "^(?:\\S(?:[\\s\\S]*\\S)?)?$"})
            }
            _ if IDS.contains(&key) => return Some(id()),
            _ if SHORT_TEXTS.contains(&key) => json!({"maxLength": MAX_SHORT_TEXT}),
            _ if LONG_TEXTS.contains(&key) => json!({"maxLength": MAX_BODY}),
            _ => return None,
        },
        _ => return None,
    };
    match extra {
        Json::Object(map) => Some(map),
        _ => None,
    }
}

fn id() -> Map<String, Json> {
    match json!({"minLength": 1, "maxLength": MAX_ID, "pattern": ID_PATTERN}) {
        Json::Object(map) => map,
        _ => Map::new(),
    }
}
