//! The MCP tools as a table: each tool names the export it calls (like `routes.rs` for HTTP).
//!
//! A tool's arguments are one JSON object. The generic rule maps them onto the export's
//! parameters: `caller` comes from the bearer token; a parameter or record field named `from` or
//! `agent-id` is the caller's own agent id (filled in, never taken from arguments, so an agent
//! token can only act as its agent); the fields of a record parameter `query` or `input` are
//! top-level arguments; any other parameter is the argument of its camelCase name. Input and
//! output schemas come from the export's WIT types, with the filled-in parameters left out.

use serde_json::{Map, Value as Json, json};
use wasmtime::component::Val;

use agent_relay_core::bridge::{self, Inputs};
use agent_relay_core::runtime::{Export, Runtime};
use agent_relay_core::shape::{Dialect, Field, Shape, camel_case, json_schema, no_rules};
use agent_relay_core::store::Access;

use crate::client::view;

/// One tool.
#[derive(Debug, Clone, Copy)]
pub struct ToolSpec {
    pub name: &'static str,
    pub export: &'static str,
    pub description: &'static str,
    /// Takes `waitSeconds`: an empty list answer is held until a write commits (at most
    /// [`MAX_WAIT_SECONDS`]).
    pub waits: bool,
}

/// The longest `waitSeconds` a tool call may hold.
pub const MAX_WAIT_SECONDS: f64 = 60.0;

const fn tool(name: &'static str, export: &'static str, description: &'static str) -> ToolSpec {
    ToolSpec {
        name,
        export,
        description,
        waits: false,
    }
}

const fn waiting(name: &'static str, export: &'static str, description: &'static str) -> ToolSpec {
    ToolSpec {
        waits: true,
        ..tool(name, export, description)
    }
}

pub const TOOLS: &[ToolSpec] = &[
    // The card of the agent the token acts as: `get-agent` with the caller's own id filled in.
    tool(
        "whoami",
        "get-agent",
        "Your own agent card: the agent your token acts as.",
    ),
    tool(
        "list_agents",
        "list-agents",
        "The agents the relay knows, optionally filtered by kind, tag or status.",
    ),
    tool(
        "send_message",
        "send-message",
        "Send a message as yourself. `to` is an agent id, label:L, tag:T, cap:C, broadcast or \
         orchestrator:ID; `claimable: true` makes it a job one recipient takes, `priority` \
         (0 to 1000) puts it before jobs of lower priority, `after` (job ids) makes it wait \
         until those jobs are completed.",
    ),
    waiting(
        "fetch_inbox",
        "poll-inbox",
        "Your inbox, oldest first (a peek: nothing is marked read). `since` pages on from a \
         message id; `waitSeconds` (at most 60) waits for a message when there is none.",
    ),
    tool(
        "mark_read",
        "mark-read",
        "Record that you have read a message.",
    ),
    tool(
        "get_thread",
        "get-thread",
        "Every message of a thread, in order.",
    ),
    tool(
        "claim_message",
        "claim-message",
        "Take a claimable message (a job) under a lease; a job someone else holds is a conflict.",
    ),
    tool(
        "renew_claim",
        "renew-claim",
        "Extend the lease of a job you hold.",
    ),
    tool(
        "release_claim",
        "release-claim",
        "Give a job you hold back, so another agent can take it.",
    ),
    waiting(
        "claim_next",
        "claim-next",
        "Take the next open job of your inbox under a lease, highest priority first, then \
         oldest (null when there is none); `kind` and `channel` take only a job of that \
         message kind or channel; `waitSeconds` (at most 60) waits for one.",
    ),
    waiting(
        "claim_next_batch",
        "claim-next-batch",
        "Take up to `max` (1 to 100) open jobs of your inbox at once, each under its own lease, \
         in claim_next's order and with its `kind` and `channel` filters (an empty list when \
         there is none); `waitSeconds` (at most 60) \
         waits for one.",
    ),
    tool(
        "complete_claim",
        "complete-claim",
        "Finish a job you hold, with an optional JSON `result` kept on the message.",
    ),
    tool(
        "cancel_job",
        "cancel-message",
        "Cancel a job you sent, with an optional `reason`: it is never offered again, its holder \
         is told to stop, and jobs waiting for it are dead-lettered.",
    ),
    tool(
        "heartbeat",
        "heartbeat",
        "Tell the relay you are alive (sets you online when you were offline).",
    ),
    tool(
        "set_status",
        "set-agent-status",
        "Set your status (online, busy, offline) and readiness.",
    ),
    tool(
        "list_tasks",
        "list-tasks",
        "Tasks from integrations (CI, error trackers), filtered by status, severity or source.",
    ),
    tool(
        "set_task_status",
        "set-task-status",
        "Resolve, dismiss or reopen a task.",
    ),
    tool(
        "reserve_paths",
        "reserve-paths",
        "Reserve paths of a project (gitignore-style globs relative to its top level) under a \
         lease before you edit them. Answers the reservation and the conflicts: other agents' \
         live reservations overlapping yours. Exclusive (the default) overlapping another \
         exclusive one is refused (`outcome: refused`) unless `force`.",
    ),
    tool(
        "release_paths",
        "release-paths",
        "Release your reservations of a project: those holding one of `paths`, or all of them.",
    ),
    tool(
        "list_reservations",
        "list-reservations",
        "Live reservations, filtered by project, holder or a path they overlap.",
    ),
    tool(
        "search_messages",
        "search-messages",
        "Full-text search over the subject and body of the messages you may read, best first, \
         with highlighted snippets. `q`: words (all must occur), \"a phrase\", prefix*, -word, \
         a OR b; page on with `offset`.",
    ),
    tool(
        "check_paths",
        "check-paths",
        "Whether paths overlap other agents' live reservations (`blocked`: an exclusive one).",
    ),
];

/// Parameters and record fields the relay fills in with the caller's own agent id.
fn filled(wit_name: &str) -> bool {
    matches!(wit_name, "from" | "agent-id")
}

/// The fields of a record parameter `query` or `input`, which are the tool's top-level arguments.
fn flattened<'a>(param: &str, shape: &'a Shape) -> Option<&'a [Field]> {
    match shape {
        Shape::Record(fields) if matches!(param, "query" | "input") => Some(fields),
        _ => None,
    }
}

pub fn find(name: &str) -> Option<&'static ToolSpec> {
    TOOLS.iter().find(|spec| spec.name == name)
}

/// Whether the tool only reads (its export runs over a read snapshot).
pub fn read_only(export: &Export) -> bool {
    export.access == Access::Read
}

/// What an argument means, where its name and type do not say enough for a model to choose a
/// value. Its bounds come from the component's input rules (`input_schema`).
fn described(key: &str) -> Option<&'static str> {
    match key {
        // The guest's `claims::lease_ms`: the `default-lease-ms` setting when none is given,
        // from `MIN_LEASE_MS` (100) to the `max-lease-ms` setting (a day by default).
        "leaseMs" => Some(
            "How long you hold the job, in milliseconds, before it is open to others again \
             (renew_claim extends it). Leave it out for the relay's default-lease-ms setting \
             (5 minutes unless the operator changed it); at least 100 ms, at most the \
             max-lease-ms setting (24 hours unless the operator changed it).",
        ),
        // The guest's `claims::retry_in_ms`: 0 to `MAX_RETRY_IN_MS` (a day).
        "retryInMs" => Some(
            "Releasing only: how long, in milliseconds, before the job may be claimed again \
             (0: at once; at most a day). Leave it out for the relay's retry backoff, which \
             grows with each attempt.",
        ),
        // The guest's `messages::not_before`: a job only, at most `MAX_SCHEDULE_MS` (a year).
        "runAt" => Some(
            "A job (claimable: true) nobody may claim before this time, in milliseconds since \
             the Unix epoch: at most a year ahead; a past time is due now. Not with delayMs.",
        ),
        "delayMs" => Some(
            "A job (claimable: true) nobody may claim for this many milliseconds after it is \
             sent (0 to a year). Not with runAt.",
        ),
        _ => None,
    }
}

/// The tool's input schema: its arguments, without the ones the relay fills in, with the
/// input rules the component publishes for the export (the same walker and rules as the
/// OpenAPI document).
pub fn input_schema(spec: &ToolSpec, export: &Export) -> Map<String, Json> {
    let rules = |at: &str, _: &Shape| export.input_rule(at);
    let mut properties = Map::new();
    let mut required = Vec::new();
    let mut add = |key: String, at: String, shape: &Shape| {
        if !matches!(shape, Shape::Option(_) | Shape::Json) {
            required.push(Json::String(key.clone()));
        }
        let mut schema = json_schema(shape, &at, Dialect::JsonSchema, &rules);
        // Described where the export checks it (`release_claim` takes a lease it ignores).
        if let (Some(text), Some(_), Json::Object(fields)) =
            (described(&key), export.input_rule(&at), &mut schema)
        {
            fields.insert("description".to_owned(), json!(text));
        }
        properties.insert(key, schema);
    };
    for (name, shape) in &export.params {
        if name == "caller" || filled(name) {
            continue;
        }
        let key = camel_case(name);
        match flattened(name, shape) {
            Some(fields) => {
                for field in fields.iter().filter(|field| !filled(&field.name)) {
                    add(
                        field.key.clone(),
                        format!("{key}.{}", field.key),
                        &field.shape,
                    );
                }
            }
            None => add(key.clone(), key, shape),
        }
    }
    if spec.waits {
        properties.insert(
            "waitSeconds".to_owned(),
            json!({"type": "number", "minimum": 0, "maximum": MAX_WAIT_SECONDS,
                   "description": "wait this long for an answer when there is none yet"}),
        );
    }
    let mut schema = Map::new();
    schema.insert("type".to_owned(), json!("object"));
    schema.insert("properties".to_owned(), Json::Object(properties));
    schema.insert("required".to_owned(), Json::Array(required));
    schema.insert("additionalProperties".to_owned(), Json::Bool(false));
    schema
}

/// The key a list answer is wrapped in, and the key of any other answer that is not an object
/// (an optional record, say): structured content is always an object.
pub const LIST_KEY: &str = "items";
pub const VALUE_KEY: &str = "result";

/// The `ok` shape of an export's result.
fn ok_shape(export: &Export) -> Option<&Shape> {
    match export.result.as_ref()? {
        Shape::Result { ok, .. } => ok.as_deref(),
        other => Some(other),
    }
}

/// Under which key the answer travels, when it is not an object itself.
fn wrapping(export: &Export) -> Option<&'static str> {
    match ok_shape(export) {
        Some(Shape::List(_)) => Some(LIST_KEY),
        Some(Shape::Record(_)) => None,
        _ => Some(VALUE_KEY),
    }
}

/// The tool's output schema: the export's `ok` type, wrapped when it is not an object.
pub fn output_schema(export: &Export) -> Map<String, Json> {
    let ok = ok_shape(export).map_or(json!({}), |shape| {
        json_schema(shape, "", Dialect::JsonSchema, &no_rules)
    });
    let object = match wrapping(export) {
        Some(key) => json!({"type": "object", "properties": {key: ok}, "required": [key]}),
        None => ok,
    };
    match object {
        Json::Object(map) => map,
        _ => Map::new(),
    }
}

/// An export's answer as structured content (an object).
pub fn structured(export: &Export, answer: Json) -> Json {
    match wrapping(export) {
        Some(key) => json!({ key: answer }),
        None => answer,
    }
}

/// The jobs an answer carries, in words for the model, beside the JSON: one line each with where
/// the job stands (`open`, `held by you (10m left)`, `claimed by bob (4m left)`, `completed by
/// bob`, `dead`) and, for an open job or one the caller holds, the tool that acts on it next. A
/// completed job is never offered to be claimed. `None` when the answer carries no job. Only the
/// relay's own fields are used (ids, names, kind), each escaped to one line; the sender's text
/// stays in the JSON.
pub fn summary(answer: &Json, agent: &str, now: i64) -> Option<String> {
    let carried: Vec<&Json> = match answer {
        Json::Array(items) => items.iter().collect(),
        Json::Object(map) if map.contains_key("claimable") => vec![answer],
        Json::Object(map) => map.get("message").into_iter().collect(),
        _ => Vec::new(),
    };
    let lines: Vec<String> = carried
        .into_iter()
        .filter_map(|message| job_line(message, agent, now))
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

/// One job's line of [`summary`].
fn job_line(message: &Json, agent: &str, now: i64) -> Option<String> {
    let job = view::job(message, now)?;
    let id = message["id"].as_i64()?;
    let field = |key: &str| view::one_line(message[key].as_str().unwrap_or("?"));
    let state = view::job_state(message, Some(agent), now);
    let next = match job {
        view::Job::Open => format!(": take it with claim_message messageId={id}"),
        view::Job::Held { holder, .. } if holder == agent => format!(
            ": finish it with complete_claim messageId={id}, keep it with renew_claim, or give \
             it back with release_claim"
        ),
        view::Job::Dead => " (its attempts ran out; only the operator can put it back)".to_owned(),
        _ => String::new(),
    };
    Some(format!(
        "Job {id} from {} to {} (kind {}): {}{next}.",
        field("from"),
        field("to"),
        field("kind"),
        view::one_line(&state)
    ))
}

/// What the caller of a tool is: the export's `caller` value and the agent it acts as.
#[derive(Debug, Clone)]
pub struct Acting {
    pub caller: Val,
    pub agent_id: String,
}

/// A tool call's arguments as the export's, and how long it may wait.
pub struct Call {
    pub args: Vec<Val>,
    pub wait: Option<std::time::Duration>,
}

/// Maps a tool's arguments onto its export's parameters (see the module docs).
///
/// # Errors
/// An argument the tool does not take, one the relay fills in, or one of the wrong shape; the
/// text says which.
pub fn arguments(
    spec: &ToolSpec,
    export: &Export,
    acting: &Acting,
    arguments: Option<&Map<String, Json>>,
) -> Result<Call, String> {
    let mut given = arguments.cloned().unwrap_or_default();
    let wait = if spec.waits {
        given.remove("waitSeconds")
    } else {
        None
    };
    let wait = match wait {
        None | Some(Json::Null) => None,
        Some(value) => Some(
            bridge::wait_for(
                "waitSeconds",
                &value,
                std::time::Duration::from_secs_f64(MAX_WAIT_SECONDS),
            )
            .map_err(|e| e.0)?,
        ),
    };
    let me = Json::String(acting.agent_id.clone());
    let mut named = Map::new();
    for (name, shape) in &export.params {
        let key = camel_case(name);
        if name == "caller" {
            continue;
        }
        if filled(name) {
            named.insert(key, me.clone());
            continue;
        }
        match flattened(name, shape) {
            Some(fields) => {
                let mut values = Map::new();
                for field in fields {
                    if filled(&field.name) {
                        values.insert(field.key.clone(), me.clone());
                    } else if let Some(value) = given.remove(&field.key) {
                        values.insert(field.key.clone(), value);
                    }
                }
                named.insert(key, Json::Object(values));
            }
            None => {
                if let Some(value) = given.remove(&key) {
                    named.insert(key, value);
                }
            }
        }
    }
    if let Some(unknown) = given.keys().next() {
        let filled_in = export.params.iter().any(|(name, shape)| {
            (filled(name) && camel_case(name) == *unknown)
                || flattened(name, shape).is_some_and(|fields| {
                    fields
                        .iter()
                        .any(|field| filled(&field.name) && field.key == *unknown)
                })
        });
        return Err(if filled_in {
            format!(
                "{unknown} is filled in from your token (you act as {}); leave it out",
                acting.agent_id
            )
        } else {
            let known: Vec<String> = input_schema(spec, export)
                .get("properties")
                .and_then(Json::as_object)
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default();
            bridge::no_such_argument(spec.name, unknown, &known).0
        });
    }
    let inputs = Inputs {
        caller: Some(acting.caller.clone()),
        named: Some(&named),
        ..Inputs::default()
    };
    let args = bridge::arguments(export, &inputs).map_err(|e| e.0)?;
    Ok(Call { args, wait })
}

/// Every tool with its schemas, as MCP lists them.
pub fn listing(runtime: &Runtime) -> Vec<rmcp::model::Tool> {
    TOOLS
        .iter()
        .filter_map(|spec| {
            let Some(export) = runtime.export(spec.export) else {
                tracing::error!(
                    tool = spec.name,
                    export = spec.export,
                    "tool names no export"
                );
                return None;
            };
            let annotations = rmcp::model::ToolAnnotations::new().read_only(read_only(export));
            Some(
                rmcp::model::Tool::new(spec.name, spec.description, input_schema(spec, export))
                    .with_raw_output_schema(output_schema(export).into())
                    .with_annotations(annotations),
            )
        })
        .collect()
}
