//! Orchestrators: the per-host processes that start agents, and the spawn requests sent to them.
//!
//! Each orchestrator has an agent, `orchestrator-ID`, through which it authenticates and receives
//! messages (docs/http-api.md §4). The orchestrator's status is mirrored onto that agent so the delivery set
//! and the agent list tell the same story; a spawn request is an ordinary `spawn` message to
//! `orchestrator:ID`, so the orchestrator polls for it like any agent polls its inbox.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::auth::{self, Identity};
use crate::bindings::agent_relay::relay::channel_types::PageQuery;
use crate::bindings::agent_relay::relay::orchestrator_types::{
    ApprovalMode, ManagedAgent, Orchestrator, OrchestratorStatus, RegisterOrchestratorInput,
    RegisteredOrchestrator, SpawnInput,
};
use crate::bindings::agent_relay::relay::store::Value;
use crate::bindings::agent_relay::relay::types::{
    AgentKind, AgentStatus, Caller, Deleted, JsonText, RegisterAgentInput, RelayError,
    SendMessageInput, SentMessage,
};
use crate::db::{self, Row, Stored};
use crate::error::{invalid, not_found, too_large};
use crate::input::{self, MAX_BODY, MAX_SHORT_TEXT};
use crate::{agents, messages, params, settings, stored_enum};

const ORCHESTRATOR_COLUMNS: &str = "id, hostname, status, agent_id, providers, base_dir, env_keys, \
     meta, managed_agents, last_seen, created_at";

/// Most managed agents one report may list.
const MAX_MANAGED_AGENTS: usize = 1_000;

/// The default `limit` of the list of orchestrators.
const DEFAULT_LIMIT: u32 = 100;

/// The id of the agent an orchestrator speaks through.
pub fn agent_id(orchestrator_id: &str) -> String {
    format!("orchestrator-{orchestrator_id}")
}

/// The name of the agent an orchestrator speaks through (checked like an id, as every name).
pub fn agent_name(hostname: &str) -> String {
    format!("Orchestrator ({hostname})")
}

stored_enum!(OrchestratorStatus {
    Online => "online",
    Offline => "offline",
    Draining => "draining",
});

stored_enum!(ApprovalMode {
    Auto => "auto",
    Manual => "manual",
});

/// The agent status (and readiness) an orchestrator status shows as: a draining orchestrator is
/// alive but takes no new work.
pub fn agent_mirror(status: OrchestratorStatus) -> (AgentStatus, bool) {
    match status {
        OrchestratorStatus::Online => (AgentStatus::Online, true),
        OrchestratorStatus::Draining => (AgentStatus::Busy, false),
        OrchestratorStatus::Offline => (AgentStatus::Offline, false),
    }
}

/// A managed agent as stored: the JSON form of the WIT record.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredManagedAgent {
    id: String,
    provider: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pid: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cwd: Option<String>,
    status: String,
    started_at: i64,
}

fn orchestrator_from_row(row: &Row) -> Result<Orchestrator, RelayError> {
    let managed: Vec<StoredManagedAgent> = row
        .opt_text("managed_agents")?
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    Ok(Orchestrator {
        id: row.text("id")?,
        hostname: row.text("hostname")?,
        status: row.case_or("status", OrchestratorStatus::Online)?,
        agent_id: row.text("agent_id")?,
        providers: row.string_list("providers")?,
        base_dir: row.text("base_dir")?,
        env_keys: row.string_list("env_keys")?,
        meta: input::json_text(row.opt_text("meta")?),
        managed_agents: managed
            .into_iter()
            .map(|m| ManagedAgent {
                id: m.id,
                provider: m.provider,
                pid: m.pid,
                cwd: m.cwd,
                status: m.status,
                started_at: m.started_at,
            })
            .collect(),
        last_seen: row.int("last_seen")?,
        created_at: row.int("created_at")?,
    })
}

/// The orchestrator with this id, if registered.
fn load(id: &str) -> Result<Option<Orchestrator>, RelayError> {
    db::query_one(
        &format!("SELECT {ORCHESTRATOR_COLUMNS} FROM orchestrators WHERE id = ?"),
        &params![id],
    )?
    .map(|row| orchestrator_from_row(&row))
    .transpose()
}

/// The orchestrator with this id, or 404.
fn require(id: &str) -> Result<Orchestrator, RelayError> {
    input::id("orchestratorId", id)?;
    load(id)?.ok_or_else(|| not_found(format!("orchestrator {id} is not registered")))
}

/// Authorises a call made by the orchestrator itself (its agent's token) or the operator.
fn acting(caller: &Caller, id: &str) -> Result<Orchestrator, RelayError> {
    input::id("orchestratorId", id)?;
    auth::act_as(caller, &agent_id(id))?;
    require(id)
}

/// A page of orchestrators by hostname, then id.
pub fn list(caller: &Caller, query: &PageQuery) -> Result<Vec<Orchestrator>, RelayError> {
    auth::identify(caller)?;
    let limit = db::page_limit(query.limit, DEFAULT_LIMIT, db::MAX_LIMIT)?;
    let mut sql = format!("SELECT {ORCHESTRATOR_COLUMNS} FROM orchestrators");
    let mut values = Vec::new();
    if let Some(after) = &query.after {
        let after = Value::from(after.as_str());
        db::require_cursor(
            "after",
            "SELECT 1 AS found FROM orchestrators WHERE id = ?",
            &after,
        )?;
        sql.push_str(
            " WHERE (hostname, id) > (SELECT hostname, id FROM orchestrators WHERE id = ?)",
        );
        values.push(after);
    }
    sql.push_str(" ORDER BY hostname, id LIMIT ?");
    values.push(Value::from(limit));
    db::query_page(&sql, &values)?
        .iter()
        .map(orchestrator_from_row)
        .collect()
}

pub fn get(caller: &Caller, id: &str) -> Result<Orchestrator, RelayError> {
    auth::identify(caller)?;
    require(id)
}

/// docs/http-api.md §4: registering an orchestrator registers (or refreshes) its agent too. The operator
/// registers a new one; afterwards the orchestrator's own token may re-register it.
pub fn register(
    caller: &Caller,
    input: RegisterOrchestratorInput,
    now: i64,
) -> Result<RegisteredOrchestrator, RelayError> {
    let id = input::id("id", &input.id)?.to_owned();
    let agent_id = agent_id(&id);
    input::id("id", &agent_id)?;
    let hostname = input::id("hostname", &input.hostname)?.to_owned();
    let providers = input::id_list("providers", &input.providers)?;
    if input.base_dir.trim().is_empty() {
        return Err(invalid("baseDir must not be empty"));
    }
    input::text("baseDir", &input.base_dir, MAX_SHORT_TEXT)?;
    let env_keys = input::id_list("envKeys", input.env_keys.as_deref().unwrap_or_default())?;
    let meta = input::json_object("meta", input.meta.as_ref())?;

    let existing = load(&id)?;
    if existing.is_some() {
        auth::act_as(caller, &agent_id)?;
    } else {
        auth::require_operator(caller)?;
    }

    let mut agent_meta = Map::new();
    agent_meta.insert("orchestratorId".to_owned(), Json::from(id.as_str()));
    // Authorised above; the orchestrator's own agent gets its kind and id from this record,
    // which only the operator creates, so it registers with the operator's authority.
    let agent = agents::register(
        &Caller::Operator,
        RegisterAgentInput {
            id: agent_id.clone(),
            name: Some(agent_name(&hostname)),
            kind: Some(AgentKind::Orchestrator),
            label: None,
            tags: Some(vec!["orchestrator".to_owned(), hostname.clone()]),
            machine: Some(hostname.clone()),
            rig: None,
            capabilities: Some(vec!["orchestrator".to_owned(), "spawn".to_owned()]),
            ready: Some(true),
            status: Some(AgentStatus::Online),
            instance_id: None,
            meta: Some(JsonText {
                json: input::to_json_text(&agent_meta),
            }),
            locked: None,
            keep_history: None,
        },
        now,
    )?;

    db::execute(
        "INSERT INTO orchestrators (id, hostname, status, agent_id, providers, base_dir, env_keys,
             meta, last_seen, created_at)
         VALUES (?1, ?2, 'online', ?3, ?4, ?5, ?6, ?7, ?8, ?8)
         ON CONFLICT(id) DO UPDATE SET
             hostname = ?2, status = 'online', agent_id = ?3, providers = ?4, base_dir = ?5,
             env_keys = ?6, meta = ?7, last_seen = ?8",
        &params![
            id.as_str(),
            hostname,
            agent_id,
            db::to_json_list(&providers),
            input.base_dir,
            db::to_json_list(&env_keys),
            input::to_json_text(&meta),
            now,
        ],
    )?;
    Ok(RegisteredOrchestrator {
        orchestrator: require(&id)?,
        created: existing.is_none(),
        token: agent.token,
    })
}

/// Records a sign of life with the given status, on the orchestrator and on its agent.
fn touch(id: &str, status: OrchestratorStatus, now: i64) -> Result<Orchestrator, RelayError> {
    db::execute(
        "UPDATE orchestrators SET status = ?2, last_seen = ?3 WHERE id = ?1",
        &params![id, status.name(), now],
    )?;
    let (agent_status, ready) = agent_mirror(status);
    db::execute(
        "UPDATE agents SET status = ?2, ready = ?3, last_seen = ?4 WHERE id = ?1",
        &params![agent_id(id), agent_status.name(), ready, now],
    )?;
    require(id)
}

/// A heartbeat brings an offline orchestrator back online; a draining one stays draining.
pub fn heartbeat(caller: &Caller, id: &str, now: i64) -> Result<Orchestrator, RelayError> {
    let orchestrator = acting(caller, id)?;
    let status = match orchestrator.status {
        OrchestratorStatus::Offline => OrchestratorStatus::Online,
        other => other,
    };
    touch(id, status, now)
}

pub fn set_status(
    caller: &Caller,
    id: &str,
    status: OrchestratorStatus,
    now: i64,
) -> Result<Orchestrator, RelayError> {
    acting(caller, id)?;
    touch(id, status, now)
}

/// Replaces the list of agents the orchestrator runs.
pub fn report_agents(
    caller: &Caller,
    id: &str,
    managed: Vec<ManagedAgent>,
    now: i64,
) -> Result<Orchestrator, RelayError> {
    let orchestrator = acting(caller, id)?;
    if managed.len() > MAX_MANAGED_AGENTS {
        return Err(too_large(format!(
            "agents has more than {MAX_MANAGED_AGENTS} entries"
        )));
    }
    let mut stored = Vec::with_capacity(managed.len());
    for agent in managed {
        input::id("agents[].id", &agent.id)?;
        input::id("agents[].provider", &agent.provider)?;
        input::id("agents[].status", &agent.status)?;
        if let Some(cwd) = &agent.cwd {
            input::text("agents[].cwd", cwd, MAX_SHORT_TEXT)?;
        }
        stored.push(StoredManagedAgent {
            id: agent.id,
            provider: agent.provider,
            pid: agent.pid,
            cwd: agent.cwd,
            status: agent.status,
            started_at: agent.started_at,
        });
    }
    let json = serde_json::to_string(&stored)
        .map_err(|e| RelayError::Internal(format!("managed agents do not serialise: {e}")))?;
    db::execute(
        "UPDATE orchestrators SET managed_agents = ?2 WHERE id = ?1",
        &params![id, json],
    )?;
    touch(id, orchestrator.status, now)
}

/// Removes the orchestrator and its agent; messages already sent stay. `retire` ends what the
/// agent leaves behind; its id is returned for that.
pub fn delete(caller: &Caller, id: &str, now: i64) -> Result<(Deleted, String), RelayError> {
    let orchestrator = acting(caller, id)?;
    db::execute("DELETE FROM orchestrators WHERE id = ?", &params![id])?;
    if agents::load(&orchestrator.agent_id)?.is_some() {
        agents::remove(&orchestrator.agent_id, now)?;
    }
    Ok((Deleted { id: id.to_owned() }, orchestrator.agent_id))
}

/// docs/http-api.md §4: a `spawn` message to `orchestrator:ID`, for a provider the orchestrator offers.
pub fn spawn(
    caller: &Caller,
    id: &str,
    input: SpawnInput,
    now: i64,
) -> Result<SentMessage, RelayError> {
    let identity = auth::identify(caller)?;
    let orchestrator = require(id)?;
    let provider = input::id("provider", &input.provider)?.to_owned();
    if !orchestrator.providers.contains(&provider) {
        return Err(invalid(format!(
            "orchestrator {id} does not offer provider {provider}; it offers: {}",
            if orchestrator.providers.is_empty() {
                "none".to_owned()
            } else {
                orchestrator.providers.join(", ")
            }
        )));
    }
    if let Some(cwd) = &input.cwd {
        input::text("cwd", cwd, MAX_SHORT_TEXT)?;
    }
    if let Some(prompt) = &input.prompt {
        input::text("prompt", prompt, MAX_BODY)?;
    }
    if let Some(label) = &input.label {
        input::id("label", label)?;
    }
    let from = match (input.from, identity) {
        (Some(from), _) => from,
        (None, Identity::Agent(agent)) => agent,
        (None, Identity::Operator) => agents::USER.to_owned(),
    };
    let approval = input.approval.unwrap_or(ApprovalMode::Manual).name();

    let mut payload = Map::new();
    payload.insert("provider".to_owned(), Json::from(provider.as_str()));
    for (key, value) in [
        ("cwd", &input.cwd),
        ("prompt", &input.prompt),
        ("label", &input.label),
    ] {
        if let Some(value) = value {
            payload.insert(key.to_owned(), Json::from(value.as_str()));
        }
    }
    payload.insert("approval".to_owned(), Json::from(approval));

    messages::deliver(
        caller,
        SendMessageInput {
            from,
            to: format!("orchestrator:{id}"),
            kind: Some("spawn".to_owned()),
            channel: None,
            subject: Some(format!("spawn {provider}")),
            body: input
                .prompt
                .unwrap_or_else(|| format!("spawn a {provider} agent")),
            reply_to: None,
            claimable: None,
            priority: None,
            after: None,
            run_at: None,
            delay_ms: None,
            idempotency_key: input.idempotency_key,
            payload: Some(JsonText {
                json: input::to_json_text(&payload),
            }),
            meta: None,
        },
        now,
    )
}

/// Marks orchestrators not seen within the stale TTL offline, and their agents with them.
pub fn reap_stale(now: i64) -> Result<Vec<String>, RelayError> {
    let cutoff = now - settings::number(settings::STALE_TTL_MS)?;
    let stale: Vec<(String, String)> = db::query(
        "SELECT id, agent_id FROM orchestrators
         WHERE status != 'offline' AND last_seen < ? ORDER BY id",
        &params![cutoff],
    )?
    .iter()
    .map(|row| Ok((row.text("id")?, row.text("agent_id")?)))
    .collect::<Result<_, RelayError>>()?;
    for (id, agent) in &stale {
        db::execute(
            "UPDATE orchestrators SET status = 'offline' WHERE id = ?",
            &params![id.as_str()],
        )?;
        db::execute(
            "UPDATE agents SET status = 'offline', ready = 0 WHERE id = ?",
            &params![agent.as_str()],
        )?;
    }
    Ok(stale.into_iter().map(|(id, _)| id).collect())
}
