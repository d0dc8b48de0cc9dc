//! Upgrading databases written by the TypeScript relay 0.6.0, whose tables already have the
//! current columns but whose rows follow 0.6.0's rules where this relay's differ
//! (docs/differences-from-0.6.md):
//!
//! - 0.6.0 registered an orchestrator's agent without a kind (so `provider`), with
//!   `meta: {orchestratorId, builtin: true}`; here `orchestrator:ID` reaches only agents of kind
//!   `orchestrator`, so every agent an orchestrator names becomes one.
//! - 0.6.0 pair ids are text; here they are integers. Text ids are numbered in creation order,
//!   the old id stays in `pair_sessions.legacy_id` (shown as `legacyId`, searchable with
//!   `?legacyId=`), and the pair messages' `payload.pairId` follows, keeping the old id as
//!   `payload.legacyPairId`.
//!
//! Every function here is safe to run on any database: one the relay wrote itself, or one
//! upgraded already, has nothing for it to do.

use serde_json::{Map, Value as Json};

use crate::bindings::agent_relay::relay::orchestrator_types::OrchestratorStatus;
use crate::bindings::agent_relay::relay::types::RelayError;
use crate::db::{self, Row, Stored};
use crate::orchestrators;
use crate::params;
use crate::upgrade::{PAIR_SESSIONS, has_column, table_exists};

/// The step's hook: orchestrator agents first, then pair ids. `upgraded` names what changed.
pub fn typescript_06_data(upgraded: &mut Vec<String>) -> Result<(), RelayError> {
    let agents = orchestrator_agents_as_orchestrators()?;
    if agents > 0 {
        upgraded.push(format!(
            "agents: {agents} orchestrator agents of kind orchestrator"
        ));
    }
    let pairs = integer_pair_ids()?;
    if pairs > 0 {
        upgraded.push(format!("pair_sessions: {pairs} text ids numbered"));
    }
    Ok(())
}

/// Adds `items` to `list` unless already there, keeping the list's order.
fn with_all(mut list: Vec<String>, items: &[&str]) -> Vec<String> {
    for item in items {
        if !list.iter().any(|present| present == item) {
            list.push((*item).to_owned());
        }
    }
    list
}

/// Every agent named by `orchestrators.agent_id` gets what registering an orchestrator gives its
/// agent here (kind, tags, capabilities, `meta.orchestratorId`) and the status the orchestrator's
/// status mirrors to. Returns how many agents changed.
fn orchestrator_agents_as_orchestrators() -> Result<usize, RelayError> {
    let rows = db::query(
        "SELECT o.id, o.hostname, o.status, a.id AS agent_id, a.kind, a.tags, a.capabilities,
             a.meta
         FROM orchestrators o JOIN agents a ON a.id = o.agent_id ORDER BY o.id",
        &[],
    )?;
    let mut changed = 0;
    for row in &rows {
        if rewrite_orchestrator_agent(row)? {
            changed += 1;
        }
    }
    Ok(changed)
}

fn rewrite_orchestrator_agent(row: &Row) -> Result<bool, RelayError> {
    let id = row.text("id")?;
    let hostname = row.text("hostname")?;
    let tags = with_all(row.string_list("tags")?, &["orchestrator", &hostname]);
    let capabilities = with_all(row.string_list("capabilities")?, &["orchestrator", "spawn"]);
    let mut meta: Map<String, Json> = row
        .opt_text("meta")?
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    meta.insert("orchestratorId".to_owned(), Json::from(id.as_str()));
    let (status, ready) =
        orchestrators::agent_mirror(row.case_or("status", OrchestratorStatus::Online)?);
    let changed = db::execute(
        "UPDATE agents SET kind = 'orchestrator', tags = ?2, capabilities = ?3, meta = ?4,
             status = ?5, ready = ?6
         WHERE id = ?1 AND (kind != 'orchestrator' OR tags != ?2 OR capabilities != ?3
             OR meta != ?4 OR status != ?5 OR ready != ?6)",
        &params![
            row.text("agent_id")?,
            db::to_json_list(&tags),
            db::to_json_list(&capabilities),
            Json::Object(meta).to_string(),
            status.name(),
            ready,
        ],
    )?;
    Ok(changed.rows_changed > 0)
}

/// Whether `pair_sessions.id` is declared as something other than an integer (0.6.0: text).
fn pair_ids_are_text() -> Result<bool, RelayError> {
    let declared = db::query("PRAGMA table_info(pair_sessions)", &[])?
        .iter()
        .find_map(|row| match row.text("name") {
            Ok(name) if name == "id" => Some(row.opt_text("type")),
            _ => None,
        })
        .transpose()?
        .flatten()
        .unwrap_or_default();
    Ok(!declared.eq_ignore_ascii_case("INTEGER"))
}

/// Rebuilds a `pair_sessions` table with text ids as the current one: the pairs are numbered in
/// the order they were created, each keeping its old id as `legacy_id`; then the pair messages'
/// payloads and the pairs' threads follow. Returns how many pairs were numbered.
fn integer_pair_ids() -> Result<usize, RelayError> {
    if !table_exists("pair_sessions")? {
        return Ok(0);
    }
    let mut numbered = 0;
    if pair_ids_are_text()? {
        db::execute(
            "ALTER TABLE pair_sessions RENAME TO pair_sessions_text",
            &[],
        )?;
        db::execute(PAIR_SESSIONS, &[])?;
        db::execute("ALTER TABLE pair_sessions ADD COLUMN legacy_id TEXT", &[])?;
        numbered = db::execute(
            "INSERT INTO pair_sessions (requester_id, partner_id, status, topic, thread_id,
                 legacy_id, created_at, updated_at)
             SELECT requester_id, partner_id, status, topic, thread_id, CAST(id AS TEXT),
                 created_at, updated_at
             FROM pair_sessions_text ORDER BY created_at, rowid",
            &[],
        )?
        .rows_changed;
        db::execute("DROP TABLE pair_sessions_text", &[])?;
        for index in [
            "CREATE INDEX IF NOT EXISTS idx_pairs_requester ON pair_sessions(requester_id, status)",
            "CREATE INDEX IF NOT EXISTS idx_pairs_partner ON pair_sessions(partner_id, status)",
        ] {
            db::execute(index, &[])?;
        }
    } else if !has_column("pair_sessions", "legacy_id")? {
        db::execute("ALTER TABLE pair_sessions ADD COLUMN legacy_id TEXT", &[])?;
    }
    db::execute(
        "CREATE UNIQUE INDEX IF NOT EXISTS idx_pairs_legacy ON pair_sessions(legacy_id)
         WHERE legacy_id IS NOT NULL",
        &[],
    )?;
    pair_payloads_follow()?;
    pair_threads_from_messages()?;
    Ok(usize::try_from(numbered).unwrap_or(usize::MAX))
}

/// A message whose `payload.pairId` is an old text id now names the pair's number, and keeps
/// the old id as `legacyPairId`.
fn pair_payloads_follow() -> Result<(), RelayError> {
    db::execute(
        "UPDATE messages SET payload = json_set(payload,
             '$.pairId', (SELECT p.id FROM pair_sessions p
                          WHERE p.legacy_id = json_extract(messages.payload, '$.pairId')),
             '$.legacyPairId', json_extract(payload, '$.pairId'))
         WHERE json_valid(payload) AND json_type(payload, '$.pairId') = 'text'
           AND EXISTS (SELECT 1 FROM pair_sessions p
                       WHERE p.legacy_id = json_extract(messages.payload, '$.pairId'))",
        &[],
    )?;
    Ok(())
}

/// 0.6.0 started a new thread with every pair message; a pair's later messages here join the
/// thread of its first one.
fn pair_threads_from_messages() -> Result<(), RelayError> {
    db::execute(
        "UPDATE pair_sessions SET thread_id = (
             SELECT min(m.thread_id) FROM messages m
             WHERE m.kind = 'pair' AND json_valid(m.payload)
               AND json_type(m.payload, '$.pairId') = 'integer'
               AND json_extract(m.payload, '$.pairId') = pair_sessions.id)
         WHERE thread_id IS NULL",
        &[],
    )?;
    Ok(())
}
