//! Upgrading databases written by the TypeScript relay (0.4.x and 0.5): older tables gain the
//! columns the current schema has, and the data moves into its current shape. Every function here
//! is safe to run twice: a second run finds nothing to do.

use crate::bindings::agent_relay::relay::types::RelayError;
use crate::db;
use crate::params;

/// The pair table as schema step 3 creates it; step 6 (`upgrade06`) rebuilds 0.6.0's text-id table in this shape.
pub const PAIR_SESSIONS: &str = "CREATE TABLE IF NOT EXISTS pair_sessions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            requester_id TEXT NOT NULL,
            partner_id TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending',
            topic TEXT,
            thread_id INTEGER,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        )";

/// The name of the table a `CREATE TABLE IF NOT EXISTS name (` statement creates.
fn created_table(sql: &str) -> Option<&str> {
    let rest = sql
        .trim_start()
        .strip_prefix("CREATE TABLE IF NOT EXISTS ")?;
    rest.split(|c: char| c.is_whitespace() || c == '(').next()
}

/// The table and column an `ALTER TABLE name ADD COLUMN column ...` statement adds.
fn added_column(sql: &str) -> Option<(&str, &str)> {
    let rest = sql.trim_start().strip_prefix("ALTER TABLE ")?;
    let (table, rest) = rest.split_once(' ')?;
    let column = rest
        .strip_prefix("ADD COLUMN ")?
        .split_whitespace()
        .next()?;
    Some((table, column))
}

/// A column as `PRAGMA table_info` describes it: name, declared type, NOT NULL, default.
type Column = (String, String, bool, Option<String>);

fn columns(schema: &str, table: &str) -> Result<Vec<Column>, RelayError> {
    db::query(&format!("PRAGMA {schema}.table_info({table})"), &[])?
        .iter()
        .map(|row| {
            Ok((
                row.text("name")?,
                row.opt_text("type")?.unwrap_or_default(),
                row.flag("notnull")?,
                row.opt_text("dflt_value")?,
            ))
        })
        .collect()
}

pub fn table_exists(table: &str) -> Result<bool, RelayError> {
    Ok(db::query_one(
        "SELECT 1 AS present FROM sqlite_master WHERE type = 'table' AND name = ?",
        &params![table],
    )?
    .is_some())
}

pub fn has_column(table: &str, column: &str) -> Result<bool, RelayError> {
    Ok(columns("main", table)?
        .iter()
        .any(|(name, ..)| name == column))
}

/// Runs a `CREATE TABLE IF NOT EXISTS` statement; when the table already exists in an older
/// shape, adds the columns it lacks (with their defaults). Returns the columns added.
pub fn create_or_reconcile(sql: &str) -> Result<Vec<String>, RelayError> {
    // A column a step adds may already be there (a file another release wrote): kept as it is.
    if let Some((table, column)) = added_column(sql)
        && has_column(table, column)?
    {
        return Ok(Vec::new());
    }
    let Some(table) = created_table(sql) else {
        db::execute(sql, &[])?;
        return Ok(Vec::new());
    };
    if !table_exists(table)? {
        db::execute(sql, &[])?;
        return Ok(Vec::new());
    }
    // Learn the wanted shape from a temporary twin of the statement.
    let shape = format!("relay_shape_{table}");
    let twin = sql.replacen(
        &format!("CREATE TABLE IF NOT EXISTS {table}"),
        &format!("CREATE TEMP TABLE {shape}"),
        1,
    );
    db::execute(&twin, &[])?;
    let wanted = columns("temp", &shape)?;
    db::execute(&format!("DROP TABLE temp.{shape}"), &[])?;
    let present = columns("main", table)?;
    let mut added = Vec::new();
    for (name, kind, not_null, default) in wanted {
        if present.iter().any(|(existing, ..)| *existing == name) {
            continue;
        }
        let declaration = match (not_null, default) {
            (true, Some(default)) => format!("{name} {kind} NOT NULL DEFAULT {default}"),
            (false, Some(default)) => format!("{name} {kind} DEFAULT {default}"),
            (_, None) => format!("{name} {kind}"),
        };
        db::execute(
            &format!("ALTER TABLE {table} ADD COLUMN {declaration}"),
            &[],
        )?;
        added.push(format!("{table}.{name}"));
    }
    Ok(added)
}

/// 0.4.x messages: `type` becomes `kind`; system messages about tasks and pairs become `task`
/// and `pair` messages with their ids in `payload`. Runs only when `kind` was just added.
pub fn messages_type_to_kind() -> Result<(), RelayError> {
    if !has_column("messages", "type")? {
        return Ok(());
    }
    db::execute(
        "UPDATE messages SET
            kind = CASE
                WHEN type = 'system' AND json_valid(meta) AND json_extract(meta, '$.taskId') IS NOT NULL THEN 'task'
                WHEN type = 'system' AND json_valid(meta) AND json_extract(meta, '$.pairId') IS NOT NULL THEN 'pair'
                WHEN type IS NULL OR type IN ('message', 'chat') THEN 'chat'
                ELSE type
            END",
        &[],
    )?;
    db::execute(
        "UPDATE messages SET payload = (
            SELECT json_group_object(key, value) FROM json_each(messages.meta)
            WHERE key IN ('taskId', 'source', 'title', 'status', 'severity', 'dedupeKey', 'externalUrl')
         )
         WHERE kind = 'task' AND json_valid(meta) AND json_extract(meta, '$.taskId') IS NOT NULL",
        &[],
    )?;
    db::execute(
        "UPDATE messages SET payload = (
            SELECT json_group_object(key, value) FROM json_each(messages.meta)
            WHERE key IN ('pairId', 'pairEvent', 'requesterId', 'partnerId')
         )
         WHERE kind = 'pair' AND json_valid(meta) AND json_extract(meta, '$.pairId') IS NOT NULL",
        &[],
    )?;
    Ok(())
}

/// Agents written before kinds existed get the kind docs/http-api.md §1 infers.
pub fn infer_agent_kinds() -> Result<(), RelayError> {
    db::execute(
        "UPDATE agents SET kind = CASE
            WHEN id = 'user' THEN 'user'
            WHEN id = 'system' THEN 'system'
            WHEN json_valid(meta) AND json_extract(meta, '$.kind') IN ('channel', 'communication-channel') THEN 'channel'
            WHEN json_valid(meta) AND json_extract(meta, '$.kind') = 'orchestrator' THEN 'orchestrator'
            WHEN json_valid(tags) AND EXISTS (SELECT 1 FROM json_each(agents.tags) WHERE value = 'channel') THEN 'channel'
            WHEN json_valid(capabilities) AND EXISTS (SELECT 1 FROM json_each(agents.capabilities) WHERE value = 'channel') THEN 'channel'
            ELSE 'provider'
         END",
        &[],
    )?;
    Ok(())
}

/// Legacy `read_by` JSON arrays become one read receipt per agent (kept in place as well).
pub fn read_by_to_receipts() -> Result<(), RelayError> {
    if !has_column("messages", "read_by")? {
        return Ok(());
    }
    db::execute(
        "INSERT OR IGNORE INTO message_reads (message_id, agent_id, read_at)
         SELECT m.id, r.value, m.created_at
         FROM messages m, json_each(m.read_by) r
         WHERE json_valid(m.read_by) AND json_type(m.read_by) = 'array' AND r.type = 'text'",
        &[],
    )?;
    Ok(())
}

/// Messages from before threads start their own thread.
pub fn backfill_threads() -> Result<(), RelayError> {
    db::execute(
        "UPDATE messages SET thread_id = id WHERE thread_id IS NULL",
        &[],
    )?;
    Ok(())
}

/// 0.5-era channel bindings allowed one binding per conversation (`UNIQUE(channel_id,
/// conversation_key)`). Before the current table is created the old one is set aside; after,
/// its rows are copied over and it is dropped (`restore_bindings`).
pub fn set_aside_strict_bindings() -> Result<(), RelayError> {
    let sql = db::query_one(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'channel_bindings'",
        &[],
    )?
    .and_then(|row| row.opt_text("sql").ok().flatten())
    .unwrap_or_default();
    let strict = sql
        .replace(' ', "")
        .contains("UNIQUE(channel_id,conversation_key)");
    if strict {
        db::execute(
            "ALTER TABLE channel_bindings RENAME TO channel_bindings_strict",
            &[],
        )?;
    }
    Ok(())
}

/// Copies the set-aside bindings (if any were) into the relaxed table, every row kept.
pub fn restore_bindings(added: &mut Vec<String>) -> Result<(), RelayError> {
    if !table_exists("channel_bindings_strict")? {
        return Ok(());
    }
    db::execute(
        "INSERT INTO channel_bindings (id, channel_id, conversation_key, conversation_id, target_type,
             target_id, mode, priority, created_at, updated_at)
         SELECT id, channel_id, conversation_key, conversation_id, target_type, target_id, mode,
             priority, created_at, updated_at
         FROM channel_bindings_strict",
        &[],
    )?;
    db::execute("DROP TABLE channel_bindings_strict", &[])?;
    added.push("channel_bindings: one binding per conversation relaxed".to_owned());
    Ok(())
}

/// After step 1: the data of a TypeScript relay's database moves into the current shape.
/// `added` names the columns the step had to add, which tells which release wrote the file.
#[allow(clippy::ptr_arg)] // the step hook signature, shared with `restore_bindings`
pub fn typescript_data(added: &mut Vec<String>) -> Result<(), RelayError> {
    if added.iter().any(|c| c == "messages.kind") {
        messages_type_to_kind()?;
    }
    if added.iter().any(|c| c == "agents.kind") {
        infer_agent_kinds()?;
    }
    read_by_to_receipts()?;
    backfill_threads()
}

/// After step 4: the messages of tasks already resolved or dismissed, and the superseded
/// messages of reopened tasks, were claimable again in older releases; they are settled now
/// (completed when the task last changed, by nobody known), so no one takes them again.
pub fn settle_finished_task_messages(_: &mut Vec<String>) -> Result<(), RelayError> {
    db::execute(
        "UPDATE messages SET completed_at = (
             SELECT t.updated_at FROM tasks t WHERE t.id = json_extract(messages.payload, '$.taskId'))
         WHERE kind = 'task' AND claimable = 1 AND completed_at IS NULL AND json_valid(payload)
           AND EXISTS (SELECT 1 FROM tasks t
                       WHERE t.id = json_extract(messages.payload, '$.taskId')
                         AND (t.status IN ('resolved', 'dismissed') OR t.message_id != messages.id))",
        &[],
    )?;
    Ok(())
}
