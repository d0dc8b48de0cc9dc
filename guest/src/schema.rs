//! The relay's schema, owned by the guest: created on first use and upgraded step by step.
//!
//! The applied version lives in the relay setting `schema-version`. The host calls `migrate`
//! inside one write transaction when it opens a database, so a failing step leaves the file as
//! it was. On PostgreSQL there are no steps: `migrate` creates the current schema at once
//! (`POSTGRES_SCHEMA`; docs/architecture.md, "Two dialects").

use crate::bindings::agent_relay::relay::store;
use crate::bindings::agent_relay::relay::types::{Caller, RelayError, SchemaReport};
use crate::db;
use crate::error::conflict;
use crate::upgrade::{self, PAIR_SESSIONS};
use crate::{agents, auth, upgrade06};

const VERSION_KEY: &str = "schema-version";

/// One upgrade step: the version it produces, what it does, its statements, and what it does
/// to databases of the TypeScript relay before and after them (see `upgrade.rs`).
struct Step {
    version: u32,
    name: &'static str,
    statements: &'static [&'static str],
    before: fn() -> Result<(), RelayError>,
    after: fn(&mut Vec<String>) -> Result<(), RelayError>,
}

fn nothing_before() -> Result<(), RelayError> {
    Ok(())
}

/// Step 5's agent columns (docs/security.md): `locked`, the fields only the operator may change,
/// and `history_from`, the last message id of the id's past when it was re-created.
fn add_agent_locks_and_history() -> Result<(), RelayError> {
    for (column, declaration) in [
        ("locked", "locked TEXT NOT NULL DEFAULT '[]'"),
        ("history_from", "history_from INTEGER NOT NULL DEFAULT 0"),
    ] {
        if !upgrade::has_column("agents", column)? {
            db::execute(&format!("ALTER TABLE agents ADD COLUMN {declaration}"), &[])?;
        }
    }
    Ok(())
}

const STEPS: &[Step] = &[
    Step {
        version: 1,
        name: "agents, messages and read receipts",
        before: nothing_before,
        after: upgrade::typescript_data,
        statements: &[
            "CREATE TABLE IF NOT EXISTS agents (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            kind TEXT NOT NULL DEFAULT 'provider',
            label TEXT,
            tags TEXT NOT NULL DEFAULT '[]',
            machine TEXT,
            rig TEXT,
            capabilities TEXT NOT NULL DEFAULT '[]',
            ready INTEGER NOT NULL DEFAULT 1,
            status TEXT NOT NULL DEFAULT 'online',
            instance_id TEXT,
            epoch INTEGER NOT NULL DEFAULT 0,
            meta TEXT NOT NULL DEFAULT '{}',
            token_hash TEXT,
            last_seen INTEGER NOT NULL,
            created_at INTEGER NOT NULL
        )",
            "CREATE INDEX IF NOT EXISTS idx_agents_label ON agents(label)",
            "CREATE INDEX IF NOT EXISTS idx_agents_kind ON agents(kind)",
            "CREATE UNIQUE INDEX IF NOT EXISTS idx_agents_token ON agents(token_hash)
            WHERE token_hash IS NOT NULL",
            "CREATE TABLE IF NOT EXISTS messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            from_agent TEXT NOT NULL,
            to_target TEXT NOT NULL,
            kind TEXT NOT NULL DEFAULT 'chat',
            channel TEXT,
            subject TEXT,
            body TEXT NOT NULL,
            thread_id INTEGER,
            reply_to INTEGER,
            claimable INTEGER NOT NULL DEFAULT 0,
            claimed_by TEXT,
            claimed_at INTEGER,
            claim_expires_at INTEGER,
            idempotency_key TEXT,
            payload TEXT NOT NULL DEFAULT '{}',
            meta TEXT NOT NULL DEFAULT '{}',
            read_by TEXT NOT NULL DEFAULT '[]',
            created_at INTEGER NOT NULL
        )",
            "CREATE INDEX IF NOT EXISTS idx_msg_to ON messages(to_target, id)",
            "CREATE INDEX IF NOT EXISTS idx_msg_thread ON messages(thread_id)",
            "CREATE INDEX IF NOT EXISTS idx_msg_kind ON messages(kind)",
            "CREATE INDEX IF NOT EXISTS idx_msg_claim_expiry ON messages(claim_expires_at)
            WHERE claimed_by IS NOT NULL",
            "CREATE UNIQUE INDEX IF NOT EXISTS idx_msg_idempotency
            ON messages(from_agent, idempotency_key) WHERE idempotency_key IS NOT NULL",
            "CREATE TABLE IF NOT EXISTS message_reads (
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            agent_id TEXT NOT NULL,
            read_at INTEGER NOT NULL,
            PRIMARY KEY (message_id, agent_id)
        )",
            "CREATE INDEX IF NOT EXISTS idx_reads_agent ON message_reads(agent_id, message_id)",
        ],
    },
    Step {
        version: 2,
        name: "channels, bindings and orchestrators",
        before: upgrade::set_aside_strict_bindings,
        after: upgrade::restore_bindings,
        statements: &[
            "CREATE TABLE IF NOT EXISTS channels (
            id TEXT PRIMARY KEY,
            provider TEXT NOT NULL,
            account_id TEXT NOT NULL,
            display_name TEXT NOT NULL,
            agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
            transport TEXT NOT NULL,
            direction TEXT NOT NULL DEFAULT 'bidirectional',
            topic_channels TEXT NOT NULL DEFAULT '[]',
            capabilities TEXT NOT NULL DEFAULT '[]',
            meta TEXT NOT NULL DEFAULT '{}',
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        )",
            "CREATE INDEX IF NOT EXISTS idx_channels_agent ON channels(agent_id)",
            "CREATE UNIQUE INDEX IF NOT EXISTS idx_channels_provider_account
            ON channels(provider, account_id)",
            // Several bindings per conversation: unique per (channel, conversation, target) only.
            "CREATE TABLE IF NOT EXISTS channel_bindings (
            id TEXT PRIMARY KEY,
            channel_id TEXT NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
            conversation_key TEXT NOT NULL DEFAULT '',
            conversation_id TEXT,
            target_type TEXT NOT NULL,
            target_id TEXT NOT NULL,
            mode TEXT NOT NULL DEFAULT 'exclusive',
            priority INTEGER NOT NULL DEFAULT 0,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        )",
            "CREATE INDEX IF NOT EXISTS idx_channel_bindings_channel
            ON channel_bindings(channel_id, priority)",
            "CREATE UNIQUE INDEX IF NOT EXISTS idx_channel_bindings_target
            ON channel_bindings(channel_id, conversation_key, target_type, target_id)",
            "CREATE TABLE IF NOT EXISTS orchestrators (
            id TEXT PRIMARY KEY,
            hostname TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'online',
            agent_id TEXT NOT NULL,
            providers TEXT NOT NULL DEFAULT '[]',
            base_dir TEXT NOT NULL,
            env_keys TEXT NOT NULL DEFAULT '[]',
            meta TEXT NOT NULL DEFAULT '{}',
            managed_agents TEXT NOT NULL DEFAULT '[]',
            last_seen INTEGER NOT NULL,
            created_at INTEGER NOT NULL
        )",
        ],
    },
    Step {
        version: 3,
        name: "tasks, pairs and activity",
        before: nothing_before,
        after: |_| Ok(()),
        statements: &[
            "CREATE TABLE IF NOT EXISTS tasks (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            source TEXT NOT NULL,
            title TEXT NOT NULL,
            body TEXT,
            severity TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'open',
            dedupe_key TEXT,
            external_url TEXT,
            target TEXT NOT NULL,
            channel TEXT,
            claimed_by TEXT,
            claim_expires_at INTEGER,
            occurrences INTEGER NOT NULL DEFAULT 1,
            message_id INTEGER NOT NULL DEFAULT 0,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        )",
            "CREATE UNIQUE INDEX IF NOT EXISTS idx_tasks_dedupe ON tasks(source, dedupe_key)
            WHERE dedupe_key IS NOT NULL",
            "CREATE INDEX IF NOT EXISTS idx_tasks_status ON tasks(status, updated_at)",
            "CREATE INDEX IF NOT EXISTS idx_tasks_message ON tasks(message_id)",
            "CREATE INDEX IF NOT EXISTS idx_tasks_claim_expiry ON tasks(claim_expires_at)
            WHERE status = 'claimed'",
            "CREATE TABLE IF NOT EXISTS task_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            task_id INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
            kind TEXT NOT NULL,
            actor TEXT NOT NULL,
            data TEXT NOT NULL DEFAULT '{}',
            created_at INTEGER NOT NULL
        )",
            "CREATE INDEX IF NOT EXISTS idx_task_events_task ON task_events(task_id, id)",
            PAIR_SESSIONS,
            "CREATE INDEX IF NOT EXISTS idx_pairs_requester ON pair_sessions(requester_id, status)",
            "CREATE INDEX IF NOT EXISTS idx_pairs_partner ON pair_sessions(partner_id, status)",
            "CREATE TABLE IF NOT EXISTS activity_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            operator_id TEXT NOT NULL,
            action TEXT NOT NULL,
            subject TEXT,
            data TEXT NOT NULL DEFAULT '{}',
            created_at INTEGER NOT NULL
        )",
            "CREATE INDEX IF NOT EXISTS idx_activity_operator ON activity_events(operator_id, created_at)",
            "CREATE INDEX IF NOT EXISTS idx_activity_created ON activity_events(created_at)",
            "CREATE INDEX IF NOT EXISTS idx_agents_last_seen ON agents(status, last_seen)",
        ],
    },
    Step {
        version: 4,
        name: "job completion, attempts and dead letters",
        before: nothing_before,
        after: upgrade::settle_finished_task_messages,
        statements: &[
            "ALTER TABLE messages ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE messages ADD COLUMN completed_by TEXT",
            "ALTER TABLE messages ADD COLUMN completed_at INTEGER",
            "ALTER TABLE messages ADD COLUMN result TEXT NOT NULL DEFAULT '{}'",
            "ALTER TABLE messages ADD COLUMN dead_lettered_at INTEGER",
            // What claim-next walks: the jobs still to do, per target, oldest first.
            "CREATE INDEX IF NOT EXISTS idx_msg_open_jobs ON messages(to_target, id)
            WHERE claimable = 1 AND completed_at IS NULL AND dead_lettered_at IS NULL",
            "CREATE INDEX IF NOT EXISTS idx_msg_dead_letters ON messages(id)
            WHERE dead_lettered_at IS NOT NULL AND completed_at IS NULL",
        ],
    },
    Step {
        version: 5,
        name: "agent locks, history floors and deleted ids",
        before: add_agent_locks_and_history,
        after: |_| Ok(()),
        statements: &["CREATE TABLE IF NOT EXISTS deleted_agents (
            id TEXT PRIMARY KEY,
            epoch INTEGER NOT NULL,
            deleted_at INTEGER NOT NULL
        )"],
    },
    Step {
        version: 6,
        name: "TypeScript 0.6.0 rows: orchestrator agents, text pair ids",
        before: nothing_before,
        after: upgrade06::typescript_06_data,
        statements: &[],
    },
    Step {
        version: 7,
        name: "the lease length of each claim, kept while its holder calls",
        before: nothing_before,
        after: |_| Ok(()),
        statements: &[LEASE_LENGTH],
    },
    Step {
        version: 8,
        name: "job priorities",
        before: nothing_before,
        after: |_| Ok(()),
        statements: JOB_PRIORITY,
    },
    Step {
        version: 9,
        name: "file reservations and message search",
        before: nothing_before,
        after: |_| Ok(()),
        statements: &[
            // Full-text search (search.rs): an FTS5 index over the messages' subject and body,
            // its content read from `messages`, kept in step by triggers in the transaction that
            // writes the message; built for the messages already there.
            "CREATE VIRTUAL TABLE IF NOT EXISTS message_search USING fts5(
            subject, body, content='messages', content_rowid='id',
            tokenize='unicode61 remove_diacritics 2'
        )",
            "CREATE TRIGGER IF NOT EXISTS message_search_insert AFTER INSERT ON messages BEGIN
            INSERT INTO message_search(rowid, subject, body) VALUES (new.id, new.subject, new.body);
        END",
            "CREATE TRIGGER IF NOT EXISTS message_search_delete AFTER DELETE ON messages BEGIN
            INSERT INTO message_search(message_search, rowid, subject, body)
                VALUES ('delete', old.id, old.subject, old.body);
        END",
            "CREATE TRIGGER IF NOT EXISTS message_search_update AFTER UPDATE OF subject, body
            ON messages BEGIN
            INSERT INTO message_search(message_search, rowid, subject, body)
                VALUES ('delete', old.id, old.subject, old.body);
            INSERT INTO message_search(rowid, subject, body) VALUES (new.id, new.subject, new.body);
        END",
            "INSERT INTO message_search(message_search) VALUES ('rebuild')",
            "CREATE TABLE IF NOT EXISTS reservations (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            project TEXT NOT NULL,
            agent_id TEXT NOT NULL,
            paths TEXT NOT NULL DEFAULT '[]',
            exclusive INTEGER NOT NULL DEFAULT 1,
            reason TEXT,
            forced INTEGER NOT NULL DEFAULT 0,
            ttl_ms INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            released_at INTEGER,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        )",
            RESERVATIONS_LIVE_INDEX,
            RESERVATIONS_AGENT_INDEX,
        ],
    },
    Step {
        version: 10,
        name: "cancelled jobs and jobs that wait for others",
        before: nothing_before,
        after: |_| Ok(()),
        statements: &[
            "ALTER TABLE messages ADD COLUMN cancelled_at INTEGER",
            "ALTER TABLE messages ADD COLUMN cancelled_by TEXT",
            "ALTER TABLE messages ADD COLUMN cancel_reason TEXT",
            "CREATE TABLE IF NOT EXISTS job_dependencies (
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            depends_on INTEGER NOT NULL,
            PRIMARY KEY (message_id, depends_on)
        )",
            JOB_DEPENDANTS_INDEX,
        ],
    },
    Step {
        version: 11,
        name: "retry backoff of released jobs",
        before: nothing_before,
        after: |_| Ok(()),
        statements: &[JOB_NOT_BEFORE],
    },
];

/// Step 10 (both dialects): the jobs waiting for a job are found by it.
const JOB_DEPENDANTS_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS idx_job_dependants ON job_dependencies(depends_on)";

/// Step 10 on PostgreSQL.
const POSTGRES_JOB_DEPENDENCIES: &str = "CREATE TABLE IF NOT EXISTS job_dependencies (
    message_id BIGINT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    depends_on BIGINT NOT NULL,
    PRIMARY KEY (message_id, depends_on)
)";

/// Step 11 (both dialects): when a released job may be claimed again (its retry backoff);
/// empty for a job claimable at once.
const JOB_NOT_BEFORE: &str = "ALTER TABLE messages ADD COLUMN not_before INTEGER";

/// Step 8 (both dialects): a job's priority (higher first, default 0) and what claim-next walks
/// since: the open jobs per target, highest priority first, then oldest.
const JOB_PRIORITY: &[&str] = &[
    "ALTER TABLE messages ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",
    "CREATE INDEX IF NOT EXISTS idx_msg_open_jobs_by_priority
        ON messages(to_target, priority DESC, id)
        WHERE claimable = 1 AND completed_at IS NULL AND dead_lettered_at IS NULL",
];

/// Step 9 (both dialects): what the live reservations of a project and of an agent are found by.
const RESERVATIONS_LIVE_INDEX: &str = "CREATE INDEX IF NOT EXISTS idx_reservations_live
    ON reservations(project, expires_at) WHERE released_at IS NULL";
const RESERVATIONS_AGENT_INDEX: &str = "CREATE INDEX IF NOT EXISTS idx_reservations_agent
    ON reservations(agent_id) WHERE released_at IS NULL";

/// Step 9 on PostgreSQL: search (search.rs) reads a `tsvector` of subject and body, indexed.
const POSTGRES_MESSAGE_SEARCH: &str = "CREATE INDEX IF NOT EXISTS idx_msg_search ON messages
    USING GIN (to_tsvector('simple', COALESCE(subject, '') || ' ' || body))";

/// Step 9 on PostgreSQL.
const POSTGRES_RESERVATIONS: &str = r#"CREATE TABLE IF NOT EXISTS reservations (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    project TEXT COLLATE "C" NOT NULL,
    agent_id TEXT COLLATE "C" NOT NULL,
    paths TEXT COLLATE "C" NOT NULL DEFAULT '[]',
    exclusive BIGINT NOT NULL DEFAULT 1,
    reason TEXT COLLATE "C",
    forced BIGINT NOT NULL DEFAULT 0,
    ttl_ms BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    released_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
)"#;

/// Step 7 (both dialects): the lease length a claim was taken or renewed with, which the
/// holder's calls extend it by (`claims::keep_held`). Empty on claims taken before it.
const LEASE_LENGTH: &str = "ALTER TABLE messages ADD COLUMN claim_lease_ms INTEGER";

/// PostgreSQL's upgrade steps, after the version its relays were first created at
/// (`POSTGRES_FIRST_VERSION`): the statements that bring a Postgres relay of an earlier
/// version to the current schema, which `POSTGRES_SCHEMA` creates at once.
const POSTGRES_FIRST_VERSION: u32 = 6;
const POSTGRES_STEPS: &[(u32, &str, &[&str])] = &[
    (
        7,
        "the lease length of each claim, kept while its holder calls",
        &["ALTER TABLE messages ADD COLUMN IF NOT EXISTS claim_lease_ms BIGINT"],
    ),
    (
        8,
        "job priorities",
        &[
            "ALTER TABLE messages ADD COLUMN IF NOT EXISTS priority BIGINT NOT NULL DEFAULT 0",
            "CREATE INDEX IF NOT EXISTS idx_msg_open_jobs_by_priority
                ON messages(to_target, priority DESC, id)
                WHERE claimable = 1 AND completed_at IS NULL AND dead_lettered_at IS NULL",
        ],
    ),
    (
        9,
        "file reservations and message search",
        &[
            POSTGRES_RESERVATIONS,
            RESERVATIONS_LIVE_INDEX,
            RESERVATIONS_AGENT_INDEX,
            POSTGRES_MESSAGE_SEARCH,
        ],
    ),
    (
        10,
        "cancelled jobs and jobs that wait for others",
        &[
            "ALTER TABLE messages ADD COLUMN IF NOT EXISTS cancelled_at BIGINT",
            r#"ALTER TABLE messages ADD COLUMN IF NOT EXISTS cancelled_by TEXT COLLATE "C""#,
            r#"ALTER TABLE messages ADD COLUMN IF NOT EXISTS cancel_reason TEXT COLLATE "C""#,
            POSTGRES_JOB_DEPENDENCIES,
            JOB_DEPENDANTS_INDEX,
        ],
    ),
    (
        11,
        "retry backoff of released jobs",
        &["ALTER TABLE messages ADD COLUMN IF NOT EXISTS not_before BIGINT"],
    ),
];

/// The current schema in PostgreSQL's words (docs/architecture.md, "Two dialects"): the same
/// tables, columns, defaults and indexes as the SQLite steps above leave, created in one go (a
/// Postgres relay starts at the current version; the upgrade steps are SQLite's). Integer ids
/// are identity columns that still take an explicit id, so a copied relay keeps its ids; times,
/// counters and 0/1 flags are `BIGINT`, so the guest reads integers as on SQLite; text and JSON
/// are `TEXT` (JSON stored as text, exactly as on SQLite) in the "C" collation, so text sorts
/// and compares byte by byte as SQLite's BINARY does. `channel_bindings.rowid` stands in for
/// SQLite's implicit rowid (the bindings' last tie-break), so one statement serves both.
const POSTGRES_SCHEMA: &[&str] = &[
    r#"CREATE TABLE IF NOT EXISTS agents (
        id TEXT COLLATE "C" PRIMARY KEY,
        name TEXT COLLATE "C" NOT NULL,
        kind TEXT COLLATE "C" NOT NULL DEFAULT 'provider',
        label TEXT COLLATE "C",
        tags TEXT COLLATE "C" NOT NULL DEFAULT '[]',
        machine TEXT COLLATE "C",
        rig TEXT COLLATE "C",
        capabilities TEXT COLLATE "C" NOT NULL DEFAULT '[]',
        ready BIGINT NOT NULL DEFAULT 1,
        status TEXT COLLATE "C" NOT NULL DEFAULT 'online',
        instance_id TEXT COLLATE "C",
        epoch BIGINT NOT NULL DEFAULT 0,
        meta TEXT COLLATE "C" NOT NULL DEFAULT '{}',
        token_hash TEXT COLLATE "C",
        last_seen BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        locked TEXT COLLATE "C" NOT NULL DEFAULT '[]',
        history_from BIGINT NOT NULL DEFAULT 0
    )"#,
    "CREATE INDEX IF NOT EXISTS idx_agents_label ON agents(label)",
    "CREATE INDEX IF NOT EXISTS idx_agents_kind ON agents(kind)",
    "CREATE UNIQUE INDEX IF NOT EXISTS idx_agents_token ON agents(token_hash)
        WHERE token_hash IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS idx_agents_last_seen ON agents(status, last_seen)",
    r#"CREATE TABLE IF NOT EXISTS messages (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        from_agent TEXT COLLATE "C" NOT NULL,
        to_target TEXT COLLATE "C" NOT NULL,
        kind TEXT COLLATE "C" NOT NULL DEFAULT 'chat',
        channel TEXT COLLATE "C",
        subject TEXT COLLATE "C",
        body TEXT COLLATE "C" NOT NULL,
        thread_id BIGINT,
        reply_to BIGINT,
        claimable BIGINT NOT NULL DEFAULT 0,
        claimed_by TEXT COLLATE "C",
        claimed_at BIGINT,
        claim_expires_at BIGINT,
        idempotency_key TEXT COLLATE "C",
        payload TEXT COLLATE "C" NOT NULL DEFAULT '{}',
        meta TEXT COLLATE "C" NOT NULL DEFAULT '{}',
        read_by TEXT COLLATE "C" NOT NULL DEFAULT '[]',
        created_at BIGINT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        completed_by TEXT COLLATE "C",
        completed_at BIGINT,
        result TEXT COLLATE "C" NOT NULL DEFAULT '{}',
        dead_lettered_at BIGINT,
        claim_lease_ms BIGINT,
        priority BIGINT NOT NULL DEFAULT 0,
        cancelled_at BIGINT,
        cancelled_by TEXT COLLATE "C",
        cancel_reason TEXT COLLATE "C",
        not_before BIGINT
    )"#,
    "CREATE INDEX IF NOT EXISTS idx_msg_to ON messages(to_target, id)",
    "CREATE INDEX IF NOT EXISTS idx_msg_thread ON messages(thread_id)",
    "CREATE INDEX IF NOT EXISTS idx_msg_kind ON messages(kind)",
    "CREATE INDEX IF NOT EXISTS idx_msg_claim_expiry ON messages(claim_expires_at)
        WHERE claimed_by IS NOT NULL",
    "CREATE UNIQUE INDEX IF NOT EXISTS idx_msg_idempotency
        ON messages(from_agent, idempotency_key) WHERE idempotency_key IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS idx_msg_open_jobs ON messages(to_target, id)
        WHERE claimable = 1 AND completed_at IS NULL AND dead_lettered_at IS NULL",
    "CREATE INDEX IF NOT EXISTS idx_msg_dead_letters ON messages(id)
        WHERE dead_lettered_at IS NOT NULL AND completed_at IS NULL",
    "CREATE INDEX IF NOT EXISTS idx_msg_open_jobs_by_priority
        ON messages(to_target, priority DESC, id)
        WHERE claimable = 1 AND completed_at IS NULL AND dead_lettered_at IS NULL",
    r#"CREATE TABLE IF NOT EXISTS message_reads (
        message_id BIGINT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        agent_id TEXT COLLATE "C" NOT NULL,
        read_at BIGINT NOT NULL,
        PRIMARY KEY (message_id, agent_id)
    )"#,
    "CREATE INDEX IF NOT EXISTS idx_reads_agent ON message_reads(agent_id, message_id)",
    r#"CREATE TABLE IF NOT EXISTS channels (
        id TEXT COLLATE "C" PRIMARY KEY,
        provider TEXT COLLATE "C" NOT NULL,
        account_id TEXT COLLATE "C" NOT NULL,
        display_name TEXT COLLATE "C" NOT NULL,
        agent_id TEXT COLLATE "C" NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
        transport TEXT COLLATE "C" NOT NULL,
        direction TEXT COLLATE "C" NOT NULL DEFAULT 'bidirectional',
        topic_channels TEXT COLLATE "C" NOT NULL DEFAULT '[]',
        capabilities TEXT COLLATE "C" NOT NULL DEFAULT '[]',
        meta TEXT COLLATE "C" NOT NULL DEFAULT '{}',
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    )"#,
    "CREATE INDEX IF NOT EXISTS idx_channels_agent ON channels(agent_id)",
    "CREATE UNIQUE INDEX IF NOT EXISTS idx_channels_provider_account
        ON channels(provider, account_id)",
    r#"CREATE TABLE IF NOT EXISTS channel_bindings (
        id TEXT COLLATE "C" PRIMARY KEY,
        channel_id TEXT COLLATE "C" NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
        conversation_key TEXT COLLATE "C" NOT NULL DEFAULT '',
        conversation_id TEXT COLLATE "C",
        target_type TEXT COLLATE "C" NOT NULL,
        target_id TEXT COLLATE "C" NOT NULL,
        mode TEXT COLLATE "C" NOT NULL DEFAULT 'exclusive',
        priority BIGINT NOT NULL DEFAULT 0,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        rowid BIGINT GENERATED BY DEFAULT AS IDENTITY
    )"#,
    "CREATE INDEX IF NOT EXISTS idx_channel_bindings_channel
        ON channel_bindings(channel_id, priority)",
    "CREATE UNIQUE INDEX IF NOT EXISTS idx_channel_bindings_target
        ON channel_bindings(channel_id, conversation_key, target_type, target_id)",
    r#"CREATE TABLE IF NOT EXISTS orchestrators (
        id TEXT COLLATE "C" PRIMARY KEY,
        hostname TEXT COLLATE "C" NOT NULL,
        status TEXT COLLATE "C" NOT NULL DEFAULT 'online',
        agent_id TEXT COLLATE "C" NOT NULL,
        providers TEXT COLLATE "C" NOT NULL DEFAULT '[]',
        base_dir TEXT COLLATE "C" NOT NULL,
        env_keys TEXT COLLATE "C" NOT NULL DEFAULT '[]',
        meta TEXT COLLATE "C" NOT NULL DEFAULT '{}',
        managed_agents TEXT COLLATE "C" NOT NULL DEFAULT '[]',
        last_seen BIGINT NOT NULL,
        created_at BIGINT NOT NULL
    )"#,
    r#"CREATE TABLE IF NOT EXISTS tasks (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        source TEXT COLLATE "C" NOT NULL,
        title TEXT COLLATE "C" NOT NULL,
        body TEXT COLLATE "C",
        severity TEXT COLLATE "C" NOT NULL,
        status TEXT COLLATE "C" NOT NULL DEFAULT 'open',
        dedupe_key TEXT COLLATE "C",
        external_url TEXT COLLATE "C",
        target TEXT COLLATE "C" NOT NULL,
        channel TEXT COLLATE "C",
        claimed_by TEXT COLLATE "C",
        claim_expires_at BIGINT,
        occurrences BIGINT NOT NULL DEFAULT 1,
        message_id BIGINT NOT NULL DEFAULT 0,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    )"#,
    "CREATE UNIQUE INDEX IF NOT EXISTS idx_tasks_dedupe ON tasks(source, dedupe_key)
        WHERE dedupe_key IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS idx_tasks_status ON tasks(status, updated_at)",
    "CREATE INDEX IF NOT EXISTS idx_tasks_message ON tasks(message_id)",
    "CREATE INDEX IF NOT EXISTS idx_tasks_claim_expiry ON tasks(claim_expires_at)
        WHERE status = 'claimed'",
    r#"CREATE TABLE IF NOT EXISTS task_events (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        task_id BIGINT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
        kind TEXT COLLATE "C" NOT NULL,
        actor TEXT COLLATE "C" NOT NULL,
        data TEXT COLLATE "C" NOT NULL DEFAULT '{}',
        created_at BIGINT NOT NULL
    )"#,
    "CREATE INDEX IF NOT EXISTS idx_task_events_task ON task_events(task_id, id)",
    r#"CREATE TABLE IF NOT EXISTS pair_sessions (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        requester_id TEXT COLLATE "C" NOT NULL,
        partner_id TEXT COLLATE "C" NOT NULL,
        status TEXT COLLATE "C" NOT NULL DEFAULT 'pending',
        topic TEXT COLLATE "C",
        thread_id BIGINT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        legacy_id TEXT COLLATE "C"
    )"#,
    "CREATE INDEX IF NOT EXISTS idx_pairs_requester ON pair_sessions(requester_id, status)",
    "CREATE INDEX IF NOT EXISTS idx_pairs_partner ON pair_sessions(partner_id, status)",
    "CREATE UNIQUE INDEX IF NOT EXISTS idx_pairs_legacy ON pair_sessions(legacy_id)
        WHERE legacy_id IS NOT NULL",
    r#"CREATE TABLE IF NOT EXISTS activity_events (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        operator_id TEXT COLLATE "C" NOT NULL,
        action TEXT COLLATE "C" NOT NULL,
        subject TEXT COLLATE "C",
        data TEXT COLLATE "C" NOT NULL DEFAULT '{}',
        created_at BIGINT NOT NULL
    )"#,
    "CREATE INDEX IF NOT EXISTS idx_activity_operator ON activity_events(operator_id, created_at)",
    "CREATE INDEX IF NOT EXISTS idx_activity_created ON activity_events(created_at)",
    r#"CREATE TABLE IF NOT EXISTS deleted_agents (
        id TEXT COLLATE "C" PRIMARY KEY,
        epoch BIGINT NOT NULL,
        deleted_at BIGINT NOT NULL
    )"#,
    POSTGRES_RESERVATIONS,
    RESERVATIONS_LIVE_INDEX,
    RESERVATIONS_AGENT_INDEX,
    POSTGRES_MESSAGE_SEARCH,
    POSTGRES_JOB_DEPENDENCIES,
    JOB_DEPENDANTS_INDEX,
];

/// The schema version this build writes.
pub fn latest_version() -> u32 {
    STEPS.last().map_or(0, |step| step.version)
}

/// The schema version found and the steps `migrate` would run; refuses a newer database.
pub fn status(caller: &Caller) -> Result<SchemaReport, RelayError> {
    auth::require_operator(caller)?;
    let from_version = current_version()?;
    let latest = check_not_newer(from_version)?;
    let steps = if db::is_postgres() {
        postgres_steps(from_version)?
    } else {
        STEPS
            .iter()
            .filter(|step| step.version > from_version)
            .map(|step| format!("{}: {}", step.version, step.name))
            .collect()
    };
    Ok(SchemaReport {
        from_version,
        to_version: latest,
        steps,
    })
}

fn current_version() -> Result<u32, RelayError> {
    Ok(store::get_setting(VERSION_KEY)?
        .and_then(|text| text.parse().ok())
        .unwrap_or(0))
}

fn check_not_newer(from_version: u32) -> Result<u32, RelayError> {
    let latest = latest_version();
    if from_version > latest {
        return Err(conflict(format!(
            "database schema version {from_version} is newer than this relay understands \
             ({latest}); use a newer agent-relay"
        )));
    }
    Ok(latest)
}

/// Operator: brings the database to the latest schema and makes sure the built-in agents exist.
pub fn migrate(caller: &Caller, now: i64) -> Result<SchemaReport, RelayError> {
    auth::require_operator(caller)?;
    let from_version = current_version()?;
    let latest = check_not_newer(from_version)?;
    let steps = if db::is_postgres() {
        let steps = postgres_steps(from_version)?;
        let statements: Vec<&str> = if from_version == 0 {
            POSTGRES_SCHEMA.to_vec()
        } else {
            POSTGRES_STEPS
                .iter()
                .filter(|(version, ..)| *version > from_version)
                .flat_map(|(_, _, statements)| statements.iter().copied())
                .collect()
        };
        for statement in statements {
            db::execute(statement, &[])?;
        }
        steps
    } else {
        run_sqlite_steps(from_version)?
    };
    if from_version != latest {
        store::set_setting(VERSION_KEY, &latest.to_string())?;
    }
    agents::ensure_builtins(now)?;
    Ok(SchemaReport {
        from_version,
        to_version: latest,
        steps,
    })
}

/// What `migrate` does on PostgreSQL from this version: nothing at the current one; on an
/// empty database it creates the current schema in one step; from a version Postgres relays
/// were created at since (`POSTGRES_FIRST_VERSION` on), it runs `POSTGRES_STEPS`. Any other
/// version has no upgrade path there.
fn postgres_steps(from_version: u32) -> Result<Vec<String>, RelayError> {
    let latest = latest_version();
    match from_version {
        0 => Ok(vec![format!(
            "{latest}: the current schema, created at once (PostgreSQL)"
        )]),
        version if version == latest => Ok(Vec::new()),
        version if (POSTGRES_FIRST_VERSION..latest).contains(&version) => Ok(POSTGRES_STEPS
            .iter()
            .filter(|(step, ..)| *step > version)
            .map(|(step, name, _)| format!("{step}: {name} (PostgreSQL)"))
            .collect()),
        version => Err(conflict(format!(
            "this PostgreSQL database is at schema version {version}, but Postgres relays are \
             created at version {POSTGRES_FIRST_VERSION} or later and have no upgrade steps \
             before it; copy the relay into an empty database instead (agent-relay copy)"
        ))),
    }
}

/// SQLite's upgrade steps after `from_version`, each with what it did.
fn run_sqlite_steps(from_version: u32) -> Result<Vec<String>, RelayError> {
    let mut steps = Vec::new();
    for step in STEPS.iter().filter(|step| step.version > from_version) {
        (step.before)()?;
        let mut added = Vec::new();
        for statement in step.statements {
            added.extend(upgrade::create_or_reconcile(statement)?);
        }
        (step.after)(&mut added)?;
        let mut name = format!("{}: {}", step.version, step.name);
        if !added.is_empty() {
            name = format!("{name} (upgraded: {})", added.join(", "));
        }
        steps.push(name);
    }
    Ok(steps)
}
