//! Agents: registration (an upsert), the session guard, liveness and the reaper.
//!
//! Rules from docs/http-api.md §1: kinds are inferred when not given, provider agents get a `claude` or
//! `codex` tag, re-registration keeps what the caller does not send, channel agents must use the
//! canonical id `PROVIDER:ACCOUNT`, and the built-ins `user` and `system` always exist.

use serde_json::{Map, Value as Json};

use crate::auth::{self, Identity};
use crate::bindings::agent_relay::relay::store::Value;
use crate::bindings::agent_relay::relay::types::{
    AgentCard, AgentKind, AgentQuery, AgentStatus, Caller, Deleted, LabelInput, RegisterAgentInput,
    RegisteredAgent, RelayError, SeenToken, SessionInput, StatusInput,
};
// The WIT record `identity`, beside the guest's own `auth::Identity`.
use crate::bindings::agent_relay::relay::types::Identity as WhoAmI;
use crate::db::{self, Row, Stored};
use crate::error::{conflict, forbidden, invalid, not_found};
use crate::input::{self, MAX_SHORT_TEXT};
use crate::{params, settings, stored_enum};

pub const USER: &str = "user";
pub const SYSTEM: &str = "system";

const AGENT_COLUMNS: &str = "id, name, kind, label, tags, machine, rig, capabilities, ready, \
     status, instance_id, epoch, meta, locked, last_seen, created_at";

/// The fields an operator may lock (docs/security.md): the ones that make group membership.
const LOCKABLE: [&str; 3] = ["label", "tags", "capabilities"];

pub fn is_builtin(id: &str) -> bool {
    id == USER || id == SYSTEM
}

stored_enum!(AgentKind {
    Provider => "provider",
    User => "user",
    System => "system",
    Channel => "channel",
    Orchestrator => "orchestrator",
});

/// The kinds of the built-in agents (`user`, `system`), which no registration may claim.
pub const BUILT_IN_KINDS: [AgentKind; 2] = [AgentKind::User, AgentKind::System];

stored_enum!(AgentStatus {
    Online => "online",
    Busy => "busy",
    Offline => "offline",
});

fn card_from_row(row: &Row) -> Result<AgentCard, RelayError> {
    Ok(AgentCard {
        id: row.text("id")?,
        name: row.text("name")?,
        kind: row.case_or("kind", AgentKind::Provider)?,
        label: row.opt_text("label")?,
        tags: row.string_list("tags")?,
        machine: row.opt_text("machine")?,
        rig: row.opt_text("rig")?,
        capabilities: row.string_list("capabilities")?,
        ready: row.flag("ready")?,
        status: row.case_or("status", AgentStatus::Online)?,
        instance_id: row.opt_text("instance_id")?,
        epoch: row.int("epoch")?,
        meta: input::json_text(row.opt_text("meta")?),
        locked: row.string_list("locked")?,
        last_seen: row.int("last_seen")?,
        created_at: row.int("created_at")?,
    })
}

/// The agent with this id, if registered.
pub fn load(id: &str) -> Result<Option<AgentCard>, RelayError> {
    db::query_one(
        &format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = ?"),
        &params![id],
    )?
    .map(|row| card_from_row(&row))
    .transpose()
}

/// What a send needs to know of its sender and direct target: who they are, not their cards.
#[derive(Debug, Clone)]
pub struct Party {
    pub id: String,
    pub kind: AgentKind,
    pub status: AgentStatus,
}

impl Party {
    /// Whether the agent is in the delivery set of the targets it matches: it joins groups and is
    /// not offline (a message to its own id reaches it all the same).
    pub fn receives(&self) -> bool {
        receives(&self.id, self.kind, self.status)
    }
}

fn party_from_row(row: &Row) -> Result<Party, RelayError> {
    Ok(Party {
        id: row.text("id")?,
        kind: row.case_or("kind", AgentKind::Provider)?,
        status: row.case_or("status", AgentStatus::Online)?,
    })
}

/// The agents with these ids (those that exist), in one query, as [`Party`]s.
pub fn parties(ids: &[&str]) -> Result<Vec<Party>, RelayError> {
    let placeholders = vec!["?"; ids.len()].join(", ");
    let values: Vec<Value> = ids.iter().map(|id| Value::from(*id)).collect();
    db::query(
        &format!("SELECT id, kind, status FROM agents WHERE id IN ({placeholders})"),
        &values,
    )?
    .iter()
    .map(party_from_row)
    .collect()
}

/// The agent with this id, or 404.
pub fn require(id: &str) -> Result<AgentCard, RelayError> {
    load(id)?.ok_or_else(|| not_found(format!("agent {id} is not registered")))
}

/// A JSON string as PostgreSQL's `jsonb` reads one, as a Postgres regular expression: no raw
/// control character, only JSON's escapes, no `\u0000` and no lone surrogate half.
macro_rules! json_string_pattern {
    () => {
        r#""([^"\\\x01-\x1f]|\\(["\\/bfnrt]|u([1-9a-cA-CeEfF][0-9a-fA-F]{3}|[dD][0-7][0-9a-fA-F]{2}|0[1-9a-fA-F][0-9a-fA-F]{2}|00[1-9a-fA-F][0-9a-fA-F]|000[1-9a-fA-F])))*""#
    };
}

/// PostgreSQL: the agent row's list `$column` (a JSON array of strings) holds the parameter.
macro_rules! postgres_list_has {
    ($column:literal) => {
        concat!(
            "CASE WHEN ",
            $column,
            r#" ~ '^[ \t\n\r]*\[[ \t\n\r]*("#,
            json_string_pattern!(),
            r#"([ \t\n\r]*,[ \t\n\r]*"#,
            json_string_pattern!(),
            r#")*[ \t\n\r]*){0,1}\][ \t\n\r]*$' THEN jsonb_exists(CAST("#,
            $column,
            " AS jsonb), ?) ELSE false END"
        )
    };
}

/// SQL conditions on an agent row: it carries the tag, the capability given as the parameter.
/// A list that is not a JSON array matches nothing (the card reads it as empty).
const HAS_TAG_SQLITE: &str = "CASE WHEN json_valid(tags) \
     THEN EXISTS (SELECT 1 FROM json_each(agents.tags) WHERE value = ?) ELSE 0 END";
const HAS_CAPABILITY_SQLITE: &str = "CASE WHEN json_valid(capabilities) \
     THEN EXISTS (SELECT 1 FROM json_each(agents.capabilities) WHERE value = ?) ELSE 0 END";
/// PostgreSQL: `jsonb_exists` on the list, for a list that is a JSON array of strings (what the
/// card reads; the pattern lets through no text the `jsonb` cast would refuse, so an odd row
/// matches nothing instead of failing the call). `jsonb_exists` is the function behind jsonb's
/// `?` operator, which the guest cannot write (`?` is its placeholder).
const HAS_TAG_POSTGRES: &str = postgres_list_has!("tags");
const HAS_CAPABILITY_POSTGRES: &str = postgres_list_has!("capabilities");

pub fn has_tag() -> &'static str {
    if db::is_postgres() {
        HAS_TAG_POSTGRES
    } else {
        HAS_TAG_SQLITE
    }
}

pub fn has_capability() -> &'static str {
    if db::is_postgres() {
        HAS_CAPABILITY_POSTGRES
    } else {
        HAS_CAPABILITY_SQLITE
    }
}

/// The agents matching an SQL condition, in id order, as [`Party`]s: no card is loaded.
pub fn parties_where(condition: &str, params: &[Value]) -> Result<Vec<Party>, RelayError> {
    db::query(
        &format!("SELECT id, kind, status FROM agents WHERE {condition} ORDER BY id"),
        params,
    )?
    .iter()
    .map(party_from_row)
    .collect()
}

const DEFAULT_LIMIT: u32 = 100;

pub fn get(caller: &Caller, id: &str) -> Result<AgentCard, RelayError> {
    auth::identify(caller)?;
    require(id)
}

/// The caller's own identity: the operator, or the card of the agent that owns the token.
pub fn whoami(caller: &Caller) -> Result<WhoAmI, RelayError> {
    Ok(match auth::identify(caller)? {
        Identity::Operator => WhoAmI {
            operator: true,
            agent: None,
        },
        Identity::Agent(id) => WhoAmI {
            operator: false,
            agent: Some(require(&id)?),
        },
    })
}

/// A page of agents in id order, filtered by kind, status and tag (see `agent-query`).
pub fn list(caller: &Caller, query: &AgentQuery) -> Result<Vec<AgentCard>, RelayError> {
    auth::identify(caller)?;
    let limit = db::page_limit(query.limit, DEFAULT_LIMIT, db::MAX_LIMIT)?;
    let mut sql = format!("SELECT {AGENT_COLUMNS} FROM agents WHERE 1 = 1");
    let mut values = Vec::new();
    if let Some(kind) = query.kind {
        sql.push_str(" AND kind = ?");
        values.push(Value::from(kind.name()));
    }
    if let Some(status) = query.status {
        sql.push_str(" AND status = ?");
        values.push(Value::from(status.name()));
    }
    if let Some(tag) = &query.tag {
        sql.push_str(&format!(" AND {}", has_tag()));
        values.push(Value::from(tag.as_str()));
    }
    if let Some(after) = &query.after {
        sql.push_str(" AND id > ?");
        values.push(Value::from(after.as_str()));
    }
    sql.push_str(" ORDER BY id LIMIT ?");
    values.push(Value::from(limit));
    db::query_page(&sql, &values)?
        .iter()
        .map(card_from_row)
        .collect()
}

fn meta_str<'a>(meta: &'a Map<String, Json>, key: &str) -> Option<&'a str> {
    meta.get(key)
        .and_then(Json::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// docs/http-api.md §1: the kind an agent gets when the caller names none.
fn infer_kind(
    id: &str,
    tags: &[String],
    capabilities: &[String],
    meta: &Map<String, Json>,
) -> AgentKind {
    match (id, meta_str(meta, "kind")) {
        (USER, _) => AgentKind::User,
        (SYSTEM, _) => AgentKind::System,
        (_, Some("channel" | "communication-channel")) => AgentKind::Channel,
        (_, Some("orchestrator")) => AgentKind::Orchestrator,
        _ if tags.iter().chain(capabilities).any(|t| t == "channel") => AgentKind::Channel,
        _ => AgentKind::Provider,
    }
}

/// The provider tag (`claude` or `codex`) a provider agent's id, name, meta or tags point to.
fn infer_provider_tag(
    id: &str,
    name: &str,
    tags: &[String],
    meta: &Map<String, Json>,
) -> Option<&'static str> {
    let meta_values = ["provider", "agent", "client", "model", "cli"]
        .iter()
        .filter_map(|key| meta_str(meta, key));
    let haystack: Vec<String> = [id, name]
        .into_iter()
        .chain(meta_values)
        .chain(tags.iter().map(String::as_str))
        .map(str::to_ascii_lowercase)
        .collect();
    ["claude", "codex"]
        .into_iter()
        .find(|provider| haystack.iter().any(|value| value.contains(provider)))
}

/// docs/http-api.md §1: the canonical id a channel agent must use, `PROVIDER:ACCOUNT`.
pub fn canonical_channel_id(id: &str, tags: &[String], meta: &Map<String, Json>) -> String {
    let provider = channel_provider(tags, meta);
    let account = meta_str(meta, "accountId").map_or_else(
        || {
            id.strip_prefix(&format!("{provider}:"))
                .unwrap_or(id)
                .to_owned()
        },
        str::to_owned,
    );
    format!("{provider}:{account}")
}

/// The provider of a channel agent: from its meta, a `channel:PROVIDER` tag, else `custom`.
pub fn channel_provider(tags: &[String], meta: &Map<String, Json>) -> String {
    ["provider", "channelType", "transport"]
        .iter()
        .find_map(|key| meta_str(meta, key))
        .map(str::to_owned)
        .or_else(|| {
            tags.iter()
                .find_map(|tag| tag.strip_prefix("channel:"))
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "custom".to_owned())
}

/// Registers an agent, or re-registers one (an upsert): the fields sent replace the stored ones,
/// the others are kept.
pub fn register(
    caller: &Caller,
    input: RegisterAgentInput,
    now: i64,
) -> Result<RegisteredAgent, RelayError> {
    // Who is calling comes first: a caller without credentials learns nothing about the ids.
    auth::identify(caller)?;
    let request = parse_registration(input)?;
    let existing = load(&request.id)?;
    let identity = authorise_registration(caller, &request.id, existing.as_ref())?;
    let card = merge_registration(&request, existing.as_ref())?;
    refuse_self_authority(&identity, &request, existing.as_ref(), &card)?;
    check_kind(&request.id, &card)?;
    refuse_locked_changes(&identity, existing.as_ref(), &card)?;
    let session = next_session(&request, existing.as_ref())?;
    let token = match existing {
        None => Some(auth::new_token()?),
        Some(_) => None,
    };
    store_registration(&request.id, &card, &session, token.as_deref(), now)?;
    Ok(RegisteredAgent {
        agent: require(&request.id)?,
        created: existing.is_none(),
        token,
    })
}

/// A registration as sent, each field checked: `None` where the caller sent nothing, so that the
/// stored value is kept (or the default given).
struct Registration {
    id: String,
    name: Option<String>,
    kind: Option<AgentKind>,
    /// Absent is `{}`: a registration replaces the meta, it never keeps it.
    meta: Map<String, Json>,
    capabilities: Option<Vec<String>>,
    tags: Option<Vec<String>>,
    locked: Option<Vec<String>>,
    keep_history: Option<bool>,
    /// `Some(None)` clears the label.
    label: Option<Option<String>>,
    machine: Option<String>,
    rig: Option<String>,
    ready: Option<bool>,
    status: Option<AgentStatus>,
    instance_id: Option<String>,
}

/// Parse: every field of the request is checked before the stored record is read, so a bad
/// request is refused for what it says, whatever is stored. The built-ins are never registered.
fn parse_registration(input: RegisterAgentInput) -> Result<Registration, RelayError> {
    let id = input::id("id", &input.id)?.to_owned();
    if is_builtin(&id) {
        return Err(conflict(format!(
            "{id} is a built-in agent and cannot be registered"
        )));
    }
    if let Some(name) = &input.name {
        input::id("name", name)?;
    }
    let meta = input::json_object("meta", input.meta.as_ref())?;
    let capabilities = input
        .capabilities
        .as_deref()
        .map(|list| input::id_list("capabilities", list))
        .transpose()?;
    let tags = input
        .tags
        .as_deref()
        .map(|list| input::id_list("tags", list))
        .transpose()?;
    let locked = input.locked.as_deref().map(lockable).transpose()?;
    if let Some(Some(label)) = &input.label {
        input::id("label", label)?;
    }
    for (field, text) in [("machine", &input.machine), ("rig", &input.rig)] {
        if let Some(text) = text {
            input::text(field, text, MAX_SHORT_TEXT)?;
        }
    }
    if let Some(instance_id) = &input.instance_id {
        input::id("instanceId", instance_id)?;
    }
    Ok(Registration {
        id,
        name: input.name,
        kind: input.kind,
        meta,
        capabilities,
        tags,
        locked,
        keep_history: input.keep_history,
        label: input.label,
        machine: input.machine,
        rig: input.rig,
        ready: input.ready,
        status: input.status,
        instance_id: input.instance_id,
    })
}

/// Authorise: an agent that exists re-registers itself (or the operator does it for it); only
/// the operator creates one, since creating hands out its token.
fn authorise_registration(
    caller: &Caller,
    id: &str,
    existing: Option<&AgentCard>,
) -> Result<Identity, RelayError> {
    match existing {
        Some(_) => auth::act_as(caller, id),
        None => {
            auth::require_operator(caller)?;
            Ok(Identity::Operator)
        }
    }
}

/// The card a registration writes: the request laid over the stored record.
struct Card {
    name: String,
    kind: AgentKind,
    meta: Map<String, Json>,
    label: Option<String>,
    tags: Vec<String>,
    capabilities: Vec<String>,
    machine: Option<String>,
    rig: Option<String>,
    ready: bool,
    status: AgentStatus,
    locked: Vec<String>,
}

/// Re-registration keeps what the caller does not send (docs/http-api.md §1); a kind not sent is inferred
/// from the result, and a provider agent gets the provider tag its id, name, meta or tags point
/// to. A kept name is checked again: a stored one may come from an older relay.
fn merge_registration(
    request: &Registration,
    existing: Option<&AgentCard>,
) -> Result<Card, RelayError> {
    let id = request.id.as_str();
    let name = match (&request.name, existing) {
        (Some(name), _) => name.clone(),
        (None, Some(agent)) => agent.name.clone(),
        (None, None) => id.to_owned(),
    };
    input::text("name", &name, MAX_SHORT_TEXT)?;
    let capabilities = match &request.capabilities {
        Some(list) => list.clone(),
        None => existing.map(|a| a.capabilities.clone()).unwrap_or_default(),
    };
    let mut tags = match &request.tags {
        Some(list) => list.clone(),
        None => existing.map(|a| a.tags.clone()).unwrap_or_default(),
    };
    let kind = request
        .kind
        .unwrap_or_else(|| infer_kind(id, &tags, &capabilities, &request.meta));
    if kind == AgentKind::Provider
        && let Some(tag) = infer_provider_tag(id, &name, &tags, &request.meta)
        && !tags.iter().any(|t| t == tag)
    {
        tags.push(tag.to_owned());
    }
    let label = match &request.label {
        Some(label) => label.clone(),
        None => existing.and_then(|a| a.label.clone()),
    };
    Ok(Card {
        name,
        kind,
        meta: request.meta.clone(),
        label,
        tags,
        capabilities,
        machine: match &request.machine {
            Some(machine) => Some(machine.clone()),
            None => existing.and_then(|a| a.machine.clone()),
        },
        rig: match &request.rig {
            Some(rig) => Some(rig.clone()),
            None => existing.and_then(|a| a.rig.clone()),
        },
        ready: request
            .ready
            .unwrap_or_else(|| existing.is_none_or(|a| a.ready)),
        status: request.status.unwrap_or(AgentStatus::Online),
        locked: match &request.locked {
            Some(fields) => fields.clone(),
            None => existing.map(|a| a.locked.clone()).unwrap_or_default(),
        },
    })
}

/// An agent re-registering itself keeps the authority the operator gave it and takes no more
/// (docs/security.md): no privileged kind or meta mark it lacks, and neither `locked` nor
/// `keepHistory`, which only the operator sends.
fn refuse_self_authority(
    identity: &Identity,
    request: &Registration,
    existing: Option<&AgentCard>,
    card: &Card,
) -> Result<(), RelayError> {
    if *identity == Identity::Operator {
        return Ok(());
    }
    refuse_self_promotion(existing, card.kind, &card.meta)?;
    for (field, sent) in [
        ("locked", request.locked.is_some()),
        ("keepHistory", request.keep_history.is_some()),
    ] {
        if sent {
            return Err(forbidden(format!(
                "{field} is set only by the operator; agent {} may not send it",
                request.id
            )));
        }
    }
    Ok(())
}

/// docs/http-api.md §1: the kinds `user` and `system` belong to the built-ins, and a channel agent uses the
/// canonical id `PROVIDER:ACCOUNT` that its bridge's messages are routed by.
fn check_kind(id: &str, card: &Card) -> Result<(), RelayError> {
    if BUILT_IN_KINDS.contains(&card.kind) {
        return Err(invalid(
            "kind user and system are reserved for the built-in agents",
        ));
    }
    if card.kind == AgentKind::Channel {
        let expected = canonical_channel_id(id, &card.tags, &card.meta);
        if expected != id {
            return Err(invalid(format!(
                "channel agent id must be canonical: {expected}"
            )));
        }
    }
    Ok(())
}

/// An agent changes none of the group fields the operator locked on its card (docs/security.md);
/// sending the value it has is no change. The operator changes them freely.
fn refuse_locked_changes(
    identity: &Identity,
    existing: Option<&AgentCard>,
    card: &Card,
) -> Result<(), RelayError> {
    let Some(existing) = existing.filter(|_| *identity != Identity::Operator) else {
        return Ok(());
    };
    refuse_locked_change(existing, "label", existing.label == card.label)?;
    refuse_locked_change(existing, "tags", existing.tags == card.tags)?;
    refuse_locked_change(
        existing,
        "capabilities",
        existing.capabilities == card.capabilities,
    )
}

/// The session a registration leaves the agent in, and where its history starts.
struct Session {
    instance_id: Option<String>,
    epoch: i64,
    /// The last message id of the agent's past (0: it sees every message).
    history_from: i64,
}

/// A new instance id starts a new session: the epoch moves on by one. A re-created id starts
/// after its past: a later epoch than the deleted agent's, and none of its old messages unless
/// the operator keeps them (`keepHistory`).
fn next_session(
    request: &Registration,
    existing: Option<&AgentCard>,
) -> Result<Session, RelayError> {
    let (instance_id, mut epoch) = match (existing, request.instance_id.clone()) {
        (Some(a), Some(new)) if a.instance_id.as_deref() != Some(new.as_str()) => {
            (Some(new), a.epoch + 1)
        }
        (Some(a), None) => (a.instance_id.clone(), a.epoch),
        (Some(a), Some(same)) => (Some(same), a.epoch),
        (None, Some(new)) => (Some(new), 1),
        (None, None) => (None, 0),
    };
    let keep_history = request.keep_history == Some(true);
    let history_from = match existing {
        Some(_) if keep_history => 0,
        Some(_) => history_floor(&request.id)?,
        None => match past_epoch(&request.id)? {
            Some(old) => {
                epoch = epoch.max(old + 1);
                if keep_history { 0 } else { last_message_id()? }
            }
            None => 0,
        },
    };
    Ok(Session {
        instance_id,
        epoch,
        history_from,
    })
}

/// Apply: one upsert writes the card (a new agent also gets its token's hash), and a new agent's
/// id is no longer a deleted one's.
fn store_registration(
    id: &str,
    card: &Card,
    session: &Session,
    token: Option<&str>,
    now: i64,
) -> Result<(), RelayError> {
    db::execute(
        "INSERT INTO agents (id, name, kind, label, tags, machine, rig, capabilities, ready, status,
             instance_id, epoch, meta, token_hash, last_seen, created_at, locked, history_from)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?15, ?16, ?17)
         ON CONFLICT(id) DO UPDATE SET
             name = ?2, kind = ?3, label = ?4, tags = ?5, machine = ?6, rig = ?7,
             capabilities = ?8, ready = ?9, status = ?10, instance_id = ?11, epoch = ?12,
             meta = ?13, last_seen = ?15, locked = ?16, history_from = ?17",
        &params![
            id,
            card.name.as_str(),
            card.kind.name(),
            card.label.as_deref(),
            db::to_json_list(&card.tags),
            card.machine.as_deref(),
            card.rig.as_deref(),
            db::to_json_list(&card.capabilities),
            card.ready,
            card.status.name(),
            session.instance_id.as_deref(),
            session.epoch,
            input::to_json_text(&card.meta),
            token.map(auth::token_hash),
            now,
            db::to_json_list(&card.locked),
            session.history_from,
        ],
    )?;
    if token.is_some() {
        db::execute("DELETE FROM deleted_agents WHERE id = ?", &params![id])?;
    }
    Ok(())
}

/// Kinds that carry authority (spawn requests, chat bridges, the built-ins); only the operator
/// gives them.
fn is_privileged(kind: AgentKind) -> bool {
    matches!(
        kind,
        AgentKind::Orchestrator | AgentKind::Channel | AgentKind::System | AgentKind::User
    )
}

/// An agent re-registering itself keeps the authority the operator gave it, and takes no more:
/// no privileged kind, no `meta.orchestratorId` and no `meta.builtin` it does not already have
/// (docs/security.md).
fn refuse_self_promotion(
    existing: Option<&AgentCard>,
    kind: AgentKind,
    meta: &Map<String, Json>,
) -> Result<(), RelayError> {
    let Some(existing) = existing else {
        return Ok(());
    };
    if is_privileged(kind) && kind != existing.kind {
        return Err(forbidden(format!(
            "kind {} is given only by the operator; agent {} may not take it",
            kind.name(),
            existing.id
        )));
    }
    let stored: Map<String, Json> = serde_json::from_str(&existing.meta.json).unwrap_or_default();
    if let Some(wanted) = meta.get("orchestratorId")
        && stored.get("orchestratorId") != Some(wanted)
    {
        return Err(forbidden(format!(
            "meta.orchestratorId is set only by the operator; agent {} may not set it",
            existing.id
        )));
    }
    // `meta.builtin: true` exempts an agent from the reaper (`reapable`), so only the operator
    // gives it; an agent keeping the one it has is no change.
    let builtin = Some(&Json::Bool(true));
    if meta.get("builtin") == builtin && stored.get("builtin") != builtin {
        return Err(forbidden(format!(
            "meta.builtin is set only by the operator; agent {} may not set it",
            existing.id
        )));
    }
    Ok(())
}

/// The fields to lock, checked and in a fixed order.
fn lockable(fields: &[String]) -> Result<Vec<String>, RelayError> {
    if let Some(unknown) = fields.iter().find(|f| !LOCKABLE.contains(&f.as_str())) {
        return Err(invalid(format!(
            "locked may name {}; not {unknown}",
            LOCKABLE.join(", ")
        )));
    }
    Ok(LOCKABLE
        .iter()
        .filter(|field| fields.iter().any(|f| f == *field))
        .map(|field| (*field).to_owned())
        .collect())
}

/// Refuses an agent's change of a field the operator locked.
fn refuse_locked_change(agent: &AgentCard, field: &str, unchanged: bool) -> Result<(), RelayError> {
    if unchanged || !agent.locked.iter().any(|f| f == field) {
        return Ok(());
    }
    Err(forbidden(format!(
        "the operator locked the {field} of agent {}; only the operator may change it",
        agent.id
    )))
}

/// The last message id of the agent's past: it sees only later messages (0: all of them).
pub fn history_floor(id: &str) -> Result<i64, RelayError> {
    Ok(
        db::query_one("SELECT history_from FROM agents WHERE id = ?", &params![id])?
            .map(|row| row.int("history_from"))
            .transpose()?
            .unwrap_or(0),
    )
}

/// The epoch a deleted agent of this id had, if one was deleted.
fn past_epoch(id: &str) -> Result<Option<i64>, RelayError> {
    db::query_one(
        "SELECT epoch FROM deleted_agents WHERE id = ?",
        &params![id],
    )?
    .map(|row| row.int("epoch"))
    .transpose()
}

fn last_message_id() -> Result<i64, RelayError> {
    Ok(
        db::query_one("SELECT COALESCE(MAX(id), 0) AS last_id FROM messages", &[])?
            .map(|row| row.int("last_id"))
            .transpose()?
            .unwrap_or(0),
    )
}

pub fn issue_token(caller: &Caller, id: &str) -> Result<RegisteredAgent, RelayError> {
    auth::require_operator(caller)?;
    if is_builtin(id) {
        return Err(conflict(format!(
            "{id} is a built-in agent; the operator acts for it"
        )));
    }
    require(id)?;
    let token = auth::new_token()?;
    db::execute(
        "UPDATE agents SET token_hash = ? WHERE id = ?",
        &params![auth::token_hash(&token), id],
    )?;
    Ok(RegisteredAgent {
        agent: require(id)?,
        created: false,
        token: Some(token),
    })
}

pub fn delete(caller: &Caller, id: &str, now: i64) -> Result<Deleted, RelayError> {
    auth::require_operator(caller)?;
    if is_builtin(id) {
        return Err(conflict(format!(
            "{id} is a built-in agent and cannot be deleted"
        )));
    }
    remove(id, now)?;
    Ok(Deleted { id: id.to_owned() })
}

/// Removes an agent and remembers that its id was used, so that a new agent with the same id
/// starts after this one's past (see [`register`]). Its claims and pairs are ended by `retire`,
/// which deletes agents.
pub fn remove(id: &str, now: i64) -> Result<(), RelayError> {
    let agent = require(id)?;
    db::execute(
        "INSERT INTO deleted_agents (id, epoch, deleted_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(id) DO UPDATE SET
             epoch = CASE WHEN deleted_agents.epoch > ?2 THEN deleted_agents.epoch ELSE ?2 END,
             deleted_at = ?3",
        &params![id, agent.epoch, now],
    )?;
    db::execute("DELETE FROM agents WHERE id = ?", &params![id])?;
    Ok(())
}

/// The session guard: a call that names an instance id or epoch must name the current ones.
pub fn check_session(
    agent: &AgentCard,
    instance_id: Option<&str>,
    epoch: Option<i64>,
) -> Result<(), RelayError> {
    let instance_matches =
        instance_id.is_none_or(|given| agent.instance_id.as_deref() == Some(given));
    let epoch_matches = epoch.is_none_or(|given| given == agent.epoch);
    if instance_matches && epoch_matches {
        return Ok(());
    }
    Err(RelayError::StaleSession(format!(
        "agent {} is in session {} epoch {}; this call came from instance {} epoch {}",
        agent.id,
        agent.instance_id.as_deref().unwrap_or("(none)"),
        agent.epoch,
        instance_id.unwrap_or("(any)"),
        epoch.map_or_else(|| "(any)".to_owned(), |e| e.to_string()),
    )))
}

/// Authorises a call acting for `agent_id` and checks its session guard; returns the agent.
pub fn acting(
    caller: &Caller,
    agent_id: &str,
    instance_id: Option<&str>,
    epoch: Option<i64>,
) -> Result<(Identity, AgentCard), RelayError> {
    input::id("agentId", agent_id)?;
    let identity = auth::act_as(caller, agent_id)?;
    let agent = require(agent_id)?;
    check_session(&agent, instance_id, epoch)?;
    Ok((identity, agent))
}

pub fn heartbeat(
    caller: &Caller,
    id: &str,
    input: &SessionInput,
    now: i64,
) -> Result<AgentCard, RelayError> {
    acting(caller, id, input.instance_id.as_deref(), input.epoch)?;
    db::execute(
        "UPDATE agents SET last_seen = ?2,
             status = CASE WHEN status = 'offline' THEN 'online' ELSE status END
         WHERE id = ?1",
        &params![id, now],
    )?;
    require(id)
}

pub fn set_status(
    caller: &Caller,
    id: &str,
    input: &StatusInput,
    now: i64,
) -> Result<AgentCard, RelayError> {
    let (_, agent) = acting(caller, id, input.instance_id.as_deref(), input.epoch)?;
    if is_builtin(id) {
        return Err(conflict(format!(
            "{id} is a built-in agent and is always online"
        )));
    }
    db::execute(
        "UPDATE agents SET status = ?2, ready = ?3, last_seen = ?4 WHERE id = ?1",
        &params![
            id,
            input.status.name(),
            input.ready.unwrap_or(agent.ready),
            now
        ],
    )?;
    require(id)
}

pub fn set_label(
    caller: &Caller,
    id: &str,
    input: &LabelInput,
    now: i64,
) -> Result<AgentCard, RelayError> {
    let (identity, agent) = acting(caller, id, input.instance_id.as_deref(), input.epoch)?;
    let label = match &input.label {
        Some(label) => Some(input::id("label", label)?),
        None => None,
    };
    if identity != Identity::Operator {
        refuse_locked_change(&agent, "label", agent.label.as_deref() == label)?;
    }
    db::execute(
        "UPDATE agents SET label = ?2, last_seen = ?3 WHERE id = ?1",
        &params![id, label, now],
    )?;
    require(id)
}

/// The agents the reaper marks offline (and health counts as stale), given the cutoff. It passes
/// over the built-ins by id and, as 0.6.0 did, every agent whose `meta.builtin` is true (0.6.0
/// marked its orchestrators' agents so).
pub fn reapable() -> &'static str {
    if db::is_postgres() {
        REAPABLE_POSTGRES
    } else {
        REAPABLE_SQLITE
    }
}

const REAPABLE_SQLITE: &str =
    "status != 'offline' AND last_seen < ? AND id NOT IN ('user', 'system')
     AND NOT (json_valid(meta) AND json_type(meta, '$.builtin') IS 'true')";
/// PostgreSQL: `meta` is read as `jsonb` only when it may mark the agent (an object naming
/// `builtin`), so the cast meets only the meta texts the relay wrote.
const REAPABLE_POSTGRES: &str = r#"status != 'offline' AND last_seen < ? AND id NOT IN ('user', 'system')
     AND NOT (CASE WHEN meta LIKE '%"builtin"%' AND meta ~ '^[ \t\n\r]*[{]'
              THEN (CAST(meta AS jsonb) -> 'builtin') IS NOT DISTINCT FROM 'true'::jsonb
              ELSE false END)"#;

/// Calls an agent made with its own token are signs of life, as a heartbeat is: its last-seen
/// moves to its latest call and, if it was offline, it is online again.
///
/// Its wake keys (docs/design.md, "Wake keys"): an agent back online joins delivery sets again,
/// which every keyed read may depend on, so then it names none and wakes every waiter; moving
/// last-seen times alone concerns no held inbox or claim-next.
pub fn record_calls(caller: &Caller, seen: &[SeenToken]) -> Result<u32, RelayError> {
    auth::require_operator(caller)?;
    let mut refreshed = 0u32;
    let mut back_online = false;
    for token in seen {
        let hash = auth::token_hash(&token.token);
        let revived = db::execute(
            "UPDATE agents SET last_seen = ?2, status = 'online'
             WHERE token_hash = ?1 AND status = 'offline'",
            &params![hash.as_str(), token.at],
        )?;
        back_online |= revived.rows_changed > 0;
        let moved = db::execute(
            "UPDATE agents SET last_seen = ?2
             WHERE token_hash = ?1 AND last_seen < ?2 AND status != 'offline'",
            &params![hash.as_str(), token.at],
        )?;
        let changed = revived.rows_changed + moved.rows_changed;
        refreshed = refreshed.saturating_add(u32::try_from(changed).unwrap_or(0));
    }
    if !back_online {
        db::concerns_no_message();
    }
    Ok(refreshed)
}

/// Marks agents not seen within the stale TTL offline; built-ins are exempt.
pub fn reap_stale(now: i64) -> Result<Vec<String>, RelayError> {
    let cutoff = now - settings::number(settings::STALE_TTL_MS)?;
    let stale: Vec<String> = db::query(
        &format!("SELECT id FROM agents WHERE {} ORDER BY id", reapable()),
        &params![cutoff],
    )?
    .iter()
    .map(|row| row.text("id"))
    .collect::<Result<_, _>>()?;
    if !stale.is_empty() {
        db::execute(
            &format!("UPDATE agents SET status = 'offline' WHERE {}", reapable()),
            &params![cutoff],
        )?;
    }
    Ok(stale)
}

/// The built-in agents exist, online and ready, whatever happened to them.
pub fn ensure_builtins(now: i64) -> Result<(), RelayError> {
    for (id, name, tags) in [
        (USER, "User", r#"["human"]"#),
        (SYSTEM, "System", r#"["system"]"#),
    ] {
        db::execute(
            "INSERT INTO agents (id, name, kind, tags, capabilities, ready, status, meta, last_seen, created_at)
             VALUES (?1, ?2, ?1, ?3, '[]', 1, 'online', '{\"builtin\":true}', ?4, ?4)
             ON CONFLICT(id) DO UPDATE SET kind = ?1, status = 'online', ready = 1
             WHERE agents.kind != ?1 OR agents.status != 'online' OR agents.ready != 1",
            &params![id, name, tags, now],
        )?;
    }
    Ok(())
}

/// Whether group targets (label, tag, capability, broadcast, orchestrator) can reach an agent at
/// all: the built-ins and channels only ever receive what is addressed to their own id.
pub fn joins_groups(agent: &AgentCard) -> bool {
    joins(&agent.id, agent.kind)
}

fn joins(id: &str, kind: AgentKind) -> bool {
    !is_builtin(id)
        && !matches!(
            kind,
            AgentKind::Channel | AgentKind::User | AgentKind::System
        )
}

/// Whether an agent is in the delivery set of the targets it matches.
fn receives(id: &str, kind: AgentKind, status: AgentStatus) -> bool {
    joins(id, kind) && status != AgentStatus::Offline
}

/// Every target string that reaches this agent, its own id first (docs/http-api.md §2).
pub fn targets_reaching(agent: &AgentCard) -> Result<Vec<String>, RelayError> {
    let mut targets = vec![agent.id.clone()];
    if !joins_groups(agent) {
        return Ok(targets);
    }
    targets.push("broadcast".to_owned());
    if let Some(label) = &agent.label {
        targets.push(format!("label:{label}"));
    }
    targets.extend(agent.tags.iter().map(|t| format!("tag:{t}")));
    targets.extend(agent.capabilities.iter().map(|c| format!("cap:{c}")));
    for orchestrator in orchestrators_of(&agent.id)? {
        targets.push(format!("orchestrator:{orchestrator}"));
    }
    Ok(targets)
}

/// The orchestrators whose registered agent (`orchestrators.agent_id`) this is. Read from the
/// orchestrators table only: an agent's card (kind, meta) is partly its own to write.
fn orchestrators_of(agent_id: &str) -> Result<Vec<String>, RelayError> {
    db::query(
        "SELECT id FROM orchestrators WHERE agent_id = ? ORDER BY id",
        &params![agent_id],
    )?
    .iter()
    .map(|row| row.text("id"))
    .collect()
}

/// The registered agent of orchestrator `orchestrator_id`, if that orchestrator exists.
pub fn orchestrator_agent(orchestrator_id: &str) -> Result<Option<String>, RelayError> {
    db::query_one(
        "SELECT agent_id FROM orchestrators WHERE id = ?",
        &params![orchestrator_id],
    )?
    .map(|row| row.text("agent_id"))
    .transpose()
}
