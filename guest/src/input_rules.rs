//! The relay's input rules, published (`rule-queries.input-rules`) so that a host can describe
//! them: per export and per argument place, the checks the domains make beyond the WIT types, as
//! JSON Schema keywords. The host's OpenAPI document and MCP tool schemas take them from here.
//!
//! Every number and list comes from the module that checks it (`input`'s lengths and id pattern,
//! `db::MAX_LIMIT`, the lease bounds of `settings`, the enums' own cases), so a limit changes in
//! one place. An argument is named by its place, never by its field name alone: a new field gets
//! no rule until one is declared for it here, beside the check that enforces it.

use serde_json::{Map, Value as Json, json};

use crate::agents::BUILT_IN_KINDS;
use crate::bindings::agent_relay::relay::channel_types::RouteTargetType;
use crate::bindings::agent_relay::relay::task_types::{TaskSeverity, TaskStatus};
use crate::bindings::agent_relay::relay::types::AgentKind;
use crate::db::{self, Stored};
use crate::input::{ID_PATTERN, MAX_BODY, MAX_ID, MAX_SHORT_TEXT};
use crate::{globs, orchestrators, reservations, search, settings};

/// A check the relay makes on one argument.
#[derive(Debug, Clone)]
enum Rule {
    /// `input::id`: 1 to `MAX_ID` characters, no surrounding white space, no control characters.
    Id,
    /// An id inside something the relay builds around it, which must fit `MAX_ID` too: at most
    /// this many characters.
    IdWithin(usize),
    /// A message target (`messages::Target::parse`): an id, and not a group prefix alone.
    Target,
    /// `input::text` with `MAX_SHORT_TEXT`.
    ShortText,
    /// A short text with something besides white space.
    NotBlank,
    /// `webhooks::check_secret`: a short text, empty (no secret) or without surrounding white
    /// space.
    Secret,
    /// `input::text` with `MAX_BODY`.
    Body,
    /// A page size (`db::page_limit`): 1 to `db::MAX_LIMIT`.
    Limit,
    /// A lease asked for (`claims::lease_ms`): from `settings::MIN_LEASE_MS` to `max-lease-ms`
    /// (its default: a stored setting may move it).
    LeaseMs,
    /// One of these texts.
    OneOf(Vec<&'static str>),
    /// A channel route target (`channels::checked_target`): a broadcast names no id, every other
    /// type needs one.
    RouteTarget,
    /// An integer between these bounds (a reservation's `ttlMs`, a search's `offset`).
    Between(i64, i64),
    /// A list of this many items, at least and at most.
    Items(usize, usize),
    /// A project key (`reservations::parse_project`): a short text, not blank, no control
    /// characters.
    Project,
    /// A reservation pattern (`globs::normalise`): its length.
    Glob,
    /// A search query (`search::parse`): its length.
    Query,
}

/// The group prefixes of a target that name a group only with something after them
/// (`messages::Target::parse`).
const GROUP_PREFIXES: &[&str] = &["label:", "tag:", "cap:", "orchestrator:"];

/// The session guard (`agents::acting`) and optional lease of a claim's input.
fn claim_input(lease: bool) -> Vec<(&'static str, Rule)> {
    let mut rules = vec![("input.agentId", Rule::Id), ("input.instanceId", Rule::Id)];
    if lease {
        rules.push(("input.leaseMs", Rule::LeaseMs));
    }
    rules
}

/// Every export's rules, by the argument's place.
#[allow(clippy::too_many_lines)] // one table
fn declared() -> Vec<(&'static str, Vec<(&'static str, Rule)>)> {
    use Rule::{
        Between, Body, Glob, Id, IdWithin, Items, LeaseMs, Limit, NotBlank, OneOf, Project, Query,
        RouteTarget, Secret, ShortText, Target,
    };
    let limit = || vec![("query.limit", Limit)];
    // A job's priority and the lists' filter on it (messages::MAX_PRIORITY).
    let priority = || Between(0, crate::messages::MAX_PRIORITY);
    let registrable_kinds = AgentKind::ALL
        .iter()
        .filter(|kind| !BUILT_IN_KINDS.contains(kind))
        .map(|kind| kind.name())
        .collect();
    // A task is claimed through its message, never by setting its status (`tasks::set_status`).
    let settable_statuses = TaskStatus::ALL
        .iter()
        .filter(|status| **status != TaskStatus::Claimed)
        .map(|status| status.name())
        .collect();
    let severities = TaskSeverity::ALL.iter().map(|s| s.name()).collect();
    // An orchestrator speaks through the agent `orchestrator-ID` named `Orchestrator (HOSTNAME)`,
    // whose id and name must fit an agent's.
    let room = |built: String| MAX_ID.saturating_sub(built.chars().count());
    let orchestrator_id = IdWithin(room(orchestrators::agent_id("")));
    let hostname = IdWithin(room(orchestrators::agent_name("")));
    vec![
        // Agents.
        (
            "register-agent",
            vec![
                ("input.id", Id),
                ("input.name", Id),
                ("input.kind", OneOf(registrable_kinds)),
                ("input.label", Id),
                ("input.tags[]", Id),
                ("input.machine", ShortText),
                ("input.rig", ShortText),
                ("input.capabilities[]", Id),
                ("input.instanceId", Id),
            ],
        ),
        ("get-agent", vec![("agentId", Id)]),
        ("list-agents", limit()),
        ("delete-agent", vec![("agentId", Id)]),
        ("issue-token", vec![("agentId", Id)]),
        ("heartbeat", vec![("agentId", Id), ("input.instanceId", Id)]),
        (
            "set-agent-status",
            vec![("agentId", Id), ("input.instanceId", Id)],
        ),
        (
            "set-agent-label",
            vec![
                ("agentId", Id),
                ("input.label", Id),
                ("input.instanceId", Id),
            ],
        ),
        // Messages and claims.
        (
            "send-message",
            vec![
                ("input.from", Id),
                ("input.to", Target),
                ("input.kind", Id),
                ("input.channel", Id),
                ("input.subject", ShortText),
                ("input.body", Body),
                ("input.idempotencyKey", Id),
                ("input.priority", priority()),
                ("input.after", Items(0, crate::dependencies::MAX_AFTER)),
                ("input.after[]", Between(1, i64::MAX)),
                // A time ahead is bounded by the clock too (`messages::not_before`: a year).
                ("input.runAt", Between(0, i64::MAX)),
                (
                    "input.delayMs",
                    Between(0, crate::messages::MAX_SCHEDULE_MS),
                ),
            ],
        ),
        (
            "poll-inbox",
            vec![
                ("agentId", Id),
                ("query.limit", Limit),
                ("query.minPriority", priority()),
            ],
        ),
        ("get-thread", limit()),
        (
            "list-messages",
            vec![
                ("query.holder", Id),
                ("query.to", Target),
                ("query.kind", Id),
                ("query.limit", Limit),
                ("query.minPriority", priority()),
            ],
        ),
        ("mark-read", claim_input(false)),
        ("claim-message", claim_input(true)),
        ("renew-claim", claim_input(true)),
        (
            "release-claim",
            [
                claim_input(false),
                vec![(
                    "input.retryInMs",
                    Between(0, crate::claims::MAX_RETRY_IN_MS),
                )],
            ]
            .concat(),
        ),
        ("complete-claim", claim_input(false)),
        ("cancel-message", vec![("input.reason", ShortText)]),
        (
            "claim-next",
            vec![
                ("agentId", Id),
                ("input.instanceId", Id),
                ("input.leaseMs", LeaseMs),
                ("input.kind", Id),
                ("input.channel", Id),
            ],
        ),
        (
            "claim-next-batch",
            vec![
                ("agentId", Id),
                ("input.max", Between(1, i64::from(crate::claims::MAX_BATCH))),
                ("input.instanceId", Id),
                ("input.leaseMs", LeaseMs),
                ("input.kind", Id),
                ("input.channel", Id),
            ],
        ),
        // Tasks and integrations.
        (
            "ingest-event",
            vec![
                ("source", Id),
                ("input.title", NotBlank),
                ("input.body", Body),
                ("input.severity", OneOf(severities)),
                ("input.dedupeKey", Id),
                ("input.externalUrl", ShortText),
                ("input.target", Target),
                ("input.channel", Id),
            ],
        ),
        (
            "configure-integration",
            vec![("source", Id), ("input.secret", Secret)],
        ),
        ("list-tasks", limit()),
        ("list-task-events", limit()),
        (
            "set-task-status",
            vec![
                ("input.status", OneOf(settable_statuses)),
                ("input.note", ShortText),
            ],
        ),
        // Channels.
        ("get-channel", vec![("channelId", Id)]),
        ("list-channels", limit()),
        (
            "list-bindings",
            vec![("channelId", Id), ("query.limit", Limit)],
        ),
        ("list-all-bindings", limit()),
        (
            "upsert-binding",
            vec![
                ("channelId", Id),
                ("input.conversationId", Id),
                ("input.target", RouteTarget),
                ("input.target.id", Id),
            ],
        ),
        ("delete-binding", vec![("channelId", Id), ("bindingId", Id)]),
        (
            "resolve-route",
            vec![("channelId", Id), ("query.conversationId", Id)],
        ),
        (
            "route-inbound",
            vec![
                ("channelId", Id),
                ("input.conversationId", Id),
                ("input.body", Body),
                ("input.subject", ShortText),
                ("input.idempotencyKey", Id),
            ],
        ),
        // Orchestrators.
        (
            "register-orchestrator",
            vec![
                ("input.id", orchestrator_id),
                ("input.hostname", hostname),
                ("input.providers[]", Id),
                ("input.baseDir", NotBlank),
                ("input.envKeys[]", Id),
            ],
        ),
        ("get-orchestrator", vec![("orchestratorId", Id)]),
        ("list-orchestrators", limit()),
        ("delete-orchestrator", vec![("orchestratorId", Id)]),
        ("heartbeat-orchestrator", vec![("orchestratorId", Id)]),
        ("set-orchestrator-status", vec![("orchestratorId", Id)]),
        (
            "report-managed-agents",
            vec![
                ("orchestratorId", Id),
                ("input.agents[].id", Id),
                ("input.agents[].provider", Id),
                ("input.agents[].cwd", ShortText),
                ("input.agents[].status", Id),
            ],
        ),
        (
            "request-spawn",
            vec![
                ("orchestratorId", Id),
                ("input.from", Id),
                ("input.provider", Id),
                ("input.cwd", ShortText),
                ("input.prompt", Body),
                ("input.label", Id),
                ("input.idempotencyKey", Id),
            ],
        ),
        // Pairs.
        (
            "create-pair",
            vec![
                ("input.requesterId", Id),
                ("input.partnerId", Id),
                ("input.topic", ShortText),
                ("input.instanceId", Id),
            ],
        ),
        (
            "pair-action",
            vec![("input.agentId", Id), ("input.instanceId", Id)],
        ),
        (
            "send-pair-message",
            vec![
                ("input.from", Id),
                ("input.body", Body),
                ("input.subject", ShortText),
                ("input.instanceId", Id),
            ],
        ),
        ("list-pairs", limit()),
        // Activity.
        (
            "record-activity",
            vec![
                ("input.operatorId", Id),
                ("input.action", Id),
                ("input.subject", ShortText),
            ],
        ),
        ("list-activity", limit()),
        // Reservations and search.
        (
            "reserve-paths",
            vec![
                ("input.agentId", Id),
                ("input.project", Project),
                ("input.paths", Items(1, reservations::MAX_PATTERNS)),
                ("input.paths[]", Glob),
                (
                    "input.ttlMs",
                    Between(reservations::MIN_TTL_MS, reservations::MAX_TTL_MS),
                ),
                ("input.reason", ShortText),
                ("input.instanceId", Id),
            ],
        ),
        (
            "renew-reservation",
            vec![
                ("input.agentId", Id),
                (
                    "input.ttlMs",
                    Between(reservations::MIN_TTL_MS, reservations::MAX_TTL_MS),
                ),
                ("input.instanceId", Id),
            ],
        ),
        (
            "release-reservation",
            vec![("input.agentId", Id), ("input.instanceId", Id)],
        ),
        (
            "release-paths",
            vec![
                ("input.agentId", Id),
                ("input.project", Project),
                ("input.paths", Items(1, reservations::MAX_PATTERNS)),
                ("input.paths[]", Glob),
                ("input.instanceId", Id),
            ],
        ),
        (
            "list-reservations",
            vec![
                ("query.project", Project),
                ("query.holder", Id),
                ("query.path", Glob),
                ("query.limit", Limit),
            ],
        ),
        (
            "check-paths",
            vec![
                ("input.project", Project),
                ("input.paths", Items(1, reservations::MAX_CHECKED_PATHS)),
                ("input.paths[]", Glob),
                ("input.agentId", Id),
            ],
        ),
        (
            "search-messages",
            vec![
                ("query.q", Query),
                ("query.offset", Between(0, i64::from(search::MAX_OFFSET))),
                ("query.limit", Between(1, i64::from(search::MAX_LIMIT))),
            ],
        ),
    ]
}

/// A rule as JSON Schema keywords.
fn keywords(rule: &Rule) -> Json {
    let id = |max: usize| json!({"minLength": 1, "maxLength": max, "pattern": ID_PATTERN});
    match rule {
        Rule::Id => id(MAX_ID),
        Rule::IdWithin(max) => id(*max),
        Rule::Target => {
            let mut target = id(MAX_ID);
            target["not"] = json!({ "enum": GROUP_PREFIXES });
            target
        }
        Rule::ShortText => json!({"maxLength": MAX_SHORT_TEXT}),
        Rule::NotBlank => json!({"maxLength": MAX_SHORT_TEXT, "pattern": "\\S"}),
        Rule::Secret => {
            json!({"maxLength": MAX_SHORT_TEXT, "pattern": "^(?:\\S(?:[\\s\\S]*\\S)?)?$"})
        }
        Rule::Body => json!({"maxLength": MAX_BODY}),
        Rule::Limit => json!({"minimum": 1, "maximum": db::MAX_LIMIT}),
        Rule::LeaseMs => json!({
            "minimum": settings::MIN_LEASE_MS,
            "maximum": settings::default_number(settings::MAX_LEASE_MS),
        }),
        Rule::OneOf(texts) => json!({ "enum": texts }),
        Rule::Between(min, max) => json!({"minimum": min, "maximum": max}),
        Rule::Items(min, max) => json!({"minItems": min, "maxItems": max}),
        Rule::Project => json!({
            "maxLength": reservations::MAX_PROJECT,
            "pattern": concat!(
                "^[^\\x00-\\x1f\\x7f-\\x9f]*",
                "[^\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]",
                "[^\\x00-\\x1f\\x7f-\\x9f]*$"
            ),
        }),
        // Their languages are more than a regular expression says: the lengths only (the
        // guest names what is wrong with anything else, 400).
        Rule::Glob => json!({"minLength": 1, "maxLength": globs::MAX_PATTERN}),
        Rule::Query => json!({"maxLength": search::MAX_QUERY}),
        Rule::RouteTarget => {
            let named: Vec<&str> = RouteTargetType::ALL
                .iter()
                .filter(|t| **t != RouteTargetType::Broadcast)
                .map(|t| t.name())
                .collect();
            json!({"oneOf": [
                {"properties": {"type": {"enum": [RouteTargetType::Broadcast.name()]}},
                 "not": {"required": ["id"]}},
                {"properties": {"type": {"enum": named}}, "required": ["id"]}
            ]})
        }
    }
}

/// One rule: the export, the argument's place, the JSON Schema keywords.
pub type Published = (String, String, Map<String, Json>);

/// Every rule as (export, place, keywords as a JSON object).
pub fn all() -> Vec<Published> {
    declared()
        .into_iter()
        .flat_map(|(export, rules)| {
            rules.into_iter().map(move |(at, rule)| {
                let map = match keywords(&rule) {
                    Json::Object(map) => map,
                    _ => Map::new(),
                };
                (export.to_owned(), at.to_owned(), map)
            })
        })
        .collect()
}
