//! Moving from the TypeScript relay 0.6.0: a database its `initDb` created opens whole, and its
//! rules hold where this relay differed by accident (docs/differences-from-0.6.md).
//!
//! The fixture is written with SQL in 0.6.0's shapes. The tables the seed's db.ts diff shows
//! (agents, messages, channels, channel_bindings, orchestrators, and the indexes and migrations
//! around them) are copied from it; the tables it leaves out because 0.6.0 kept them from 0.4.39
//! (message_reads, tasks, task_events, pair_sessions, activity_events) are written in the shape
//! of 0.6.0's records, pair ids being text as 0.6.0's `sendPairMessage(id: string)` takes them.
//! The rows are the ones 0.6.0's functions write, field for field.

use crate::common;

use std::path::{Path, PathBuf};

use common::upgrade::{self, count, dump};
use common::{Json, OPERATOR, RelayServer, ids, json, now_ms};
use rusqlite::{Connection, params};

/// `initDb` of 0.6.0 on an empty file: its `CREATE TABLE IF NOT EXISTS` block, then the
/// migrations it runs on every start (ALTERs for columns added after 0.4, and the indexes).
const INIT_DB_060: &str = "
CREATE TABLE IF NOT EXISTS agents (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'provider',
    tags TEXT NOT NULL DEFAULT '[]',
    machine TEXT,
    rig TEXT,
    capabilities TEXT NOT NULL DEFAULT '[]',
    ready INTEGER NOT NULL DEFAULT 1,
    status TEXT NOT NULL DEFAULT 'online',
    meta TEXT NOT NULL DEFAULT '{}',
    last_seen INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
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
);
CREATE TABLE IF NOT EXISTS message_reads (
    message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    agent_id TEXT NOT NULL,
    read_at INTEGER NOT NULL,
    PRIMARY KEY (message_id, agent_id)
);
CREATE TABLE IF NOT EXISTS tasks (
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
    message_id INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_tasks_dedupe ON tasks(source, dedupe_key) WHERE dedupe_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS task_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    data TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS pair_sessions (
    id TEXT PRIMARY KEY,
    requester_id TEXT NOT NULL,
    partner_id TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    topic TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS activity_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    operator_id TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT,
    data TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_activity_operator ON activity_events(operator_id, created_at);
CREATE INDEX IF NOT EXISTS idx_activity_created ON activity_events(created_at);

CREATE TABLE IF NOT EXISTS channels (
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
);
CREATE INDEX IF NOT EXISTS idx_channels_agent ON channels(agent_id);
CREATE UNIQUE INDEX IF NOT EXISTS idx_channels_provider_account ON channels(provider, account_id);

CREATE TABLE IF NOT EXISTS channel_bindings (
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
);
CREATE INDEX IF NOT EXISTS idx_channel_bindings_channel ON channel_bindings(channel_id, priority);
CREATE UNIQUE INDEX IF NOT EXISTS idx_channel_bindings_target ON channel_bindings(channel_id, conversation_key, target_type, target_id);

CREATE TABLE IF NOT EXISTS orchestrators (
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
);

CREATE INDEX IF NOT EXISTS idx_msg_thread ON messages(thread_id);
CREATE UNIQUE INDEX IF NOT EXISTS idx_msg_idempotency ON messages(from_agent, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_msg_kind ON messages(kind);
ALTER TABLE agents ADD COLUMN label TEXT;
ALTER TABLE agents ADD COLUMN instance_id TEXT;
ALTER TABLE agents ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS idx_agents_label ON agents(label);
CREATE INDEX IF NOT EXISTS idx_agents_kind ON agents(kind);
";

/// 0.6.0 gave pairs text ids.
const PAIR_ID: &str = "0b6c3f5e-8d1a-4c2e-9f7b-5a4d3c2b1a09";

/// The ids of the fixture's messages, in the order 0.6.0 wrote them.
const SPAWN: i64 = 1;
const TASK_MESSAGE: i64 = 2;
const PAIR_REQUESTED: i64 = 3;
const PAIR_ACCEPTED: i64 = 4;
const PAIR_SAID: i64 = 5;
const HELLO: i64 = 6;
const CHANNEL_EVENT: i64 = 7;

/// A relay's worth of rows as 0.6.0 writes them, `t` a minute ago so nobody is stale yet.
fn fill_as_060(conn: &Connection, t: i64) {
    let agent = "INSERT INTO agents (id, name, kind, tags, machine, rig, capabilities, ready,
                     status, meta, last_seen, created_at, label, instance_id, epoch)
                 VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6, ?7, ?8, ?9, ?10, ?10, ?11, ?12, ?13)";
    for row in [
        // initDb's built-ins.
        params![
            "user",
            "User",
            "user",
            r#"["human"]"#,
            None::<&str>,
            "[]",
            1,
            "online",
            r#"{"builtin":true}"#,
            t,
            None::<&str>,
            None::<&str>,
            0
        ],
        params![
            "system",
            "System",
            "system",
            r#"["system"]"#,
            None::<&str>,
            "[]",
            1,
            "online",
            r#"{"builtin":true}"#,
            t,
            None::<&str>,
            None::<&str>,
            0
        ],
        // upsertAgent: provider tags inferred from the id or name.
        params![
            "alice",
            "Alice (claude)",
            "provider",
            r#"["claude"]"#,
            "laptop",
            "[]",
            1,
            "online",
            "{}",
            t,
            "dev",
            "a-1",
            1
        ],
        params![
            "bob",
            "Bob (codex)",
            "provider",
            r#"["codex"]"#,
            None::<&str>,
            "[]",
            1,
            "online",
            "{}",
            t,
            "dev",
            None::<&str>,
            0
        ],
        // upsertOrchestrator's agent: no kind given, so inferAgentKind says provider.
        params![
            "orchestrator-h1",
            "Orchestrator (build-1)",
            "provider",
            r#"["orchestrator","build-1"]"#,
            "build-1",
            r#"["orchestrator","spawn"]"#,
            1,
            "online",
            r#"{"orchestratorId":"h1","builtin":true}"#,
            t,
            None::<&str>,
            None::<&str>,
            0
        ],
        // setOrchestratorStatus(draining) mirrors offline to the agent.
        params![
            "orchestrator-h2",
            "Orchestrator (build-2)",
            "provider",
            r#"["orchestrator","build-2"]"#,
            "build-2",
            r#"["orchestrator","spawn"]"#,
            1,
            "offline",
            r#"{"orchestratorId":"h2","builtin":true}"#,
            t,
            None::<&str>,
            None::<&str>,
            0
        ],
        params![
            "telegram:bot1",
            "Support bot",
            "channel",
            "[]",
            None::<&str>,
            r#"["send","receive"]"#,
            1,
            "online",
            r#"{"kind":"channel","provider":"telegram","accountId":"bot1","target":"label:dev"}"#,
            t,
            None::<&str>,
            None::<&str>,
            0
        ],
    ] {
        conn.execute(agent, row).unwrap();
    }

    let orchestrator = "INSERT INTO orchestrators (id, hostname, status, agent_id, providers,
                            base_dir, env_keys, meta, managed_agents, last_seen, created_at)
                        VALUES (?1, ?2, ?3, ?4, ?5, '/srv/agents', '[\"ANTHROPIC_API_KEY\"]', '{}',
                            ?6, ?7, ?7)";
    conn.execute(
        orchestrator,
        params!["h1", "build-1", "online", "orchestrator-h1", r#"["claude","codex"]"#,
            r#"[{"id":"claude-1","provider":"claude","pid":4242,"status":"running","startedAt":1}]"#, t],
    )
    .unwrap();
    conn.execute(
        orchestrator,
        params![
            "h2",
            "build-2",
            "draining",
            "orchestrator-h2",
            r#"["claude"]"#,
            "[]",
            t
        ],
    )
    .unwrap();

    // upsertChannelForAgent, then upsertChannelBinding for meta.target and for a conversation.
    conn.execute(
        "INSERT INTO channels (id, provider, account_id, display_name, agent_id, transport,
             direction, topic_channels, capabilities, meta, created_at, updated_at)
         VALUES ('telegram:bot1', 'telegram', 'bot1', 'Support bot', 'telegram:bot1', 'telegram',
             'bidirectional', '[]', '[\"send\",\"receive\"]',
             '{\"kind\":\"channel\",\"provider\":\"telegram\",\"accountId\":\"bot1\",\"target\":\"label:dev\"}',
             ?1, ?1)",
        params![t],
    )
    .unwrap();
    let binding = "INSERT INTO channel_bindings (id, channel_id, conversation_key, conversation_id,
                       target_type, target_id, mode, priority, created_at, updated_at)
                   VALUES (?1, 'telegram:bot1', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)";
    for row in [
        params![
            "telegram:bot1:default:label:dev",
            "",
            None::<&str>,
            "label",
            "dev",
            "claimable",
            0,
            t
        ],
        params![
            "telegram:bot1:chat-42:agent:alice",
            "chat-42",
            "chat-42",
            "agent",
            "alice",
            "exclusive",
            0,
            t + 1
        ],
        params![
            "telegram:bot1:chat-7:broadcast",
            "chat-7",
            "chat-7",
            "broadcast",
            "",
            "broadcast",
            3,
            t + 2
        ],
    ] {
        conn.execute(binding, row).unwrap();
    }

    let pair = |event: &str| {
        json!({"pairId": PAIR_ID, "pairEvent": event, "requesterId": "alice", "partnerId": "bob"})
            .to_string()
    };
    let message = "INSERT INTO messages (from_agent, to_target, kind, channel, subject, body,
                       thread_id, reply_to, claimable, idempotency_key, payload, meta, created_at)
                   VALUES (?1, ?2, ?3, NULL, ?4, ?5, NULL, NULL, ?6, ?7, ?8, '{}', ?9)";
    for row in [
        // The spawn route: a spawn message to orchestrator:ID.
        params![
            "user",
            "orchestrator:h1",
            "spawn",
            "spawn claude",
            "fix the flaky test",
            0,
            None::<&str>,
            r#"{"provider":"claude","cwd":"/srv/agents/api","prompt":"fix the flaky test","approval":"manual"}"#,
            t + 10
        ],
        // ingestIntegrationEvent's task message.
        params![
            "system",
            "label:dev",
            "task",
            "[error] CI failed on main",
            "CI failed on main\nhttps://ci.example/1",
            1,
            None::<&str>,
            r#"{"taskId":1,"source":"ci","title":"CI failed on main","status":"open","severity":"error","dedupeKey":"main-build","externalUrl":"https://ci.example/1"}"#,
            t + 20
        ],
        // pairSystemMessage and sendPairMessage.
        params![
            "system",
            "bob",
            "pair",
            format!("Pair {PAIR_ID} requested"),
            "alice wants to pair on the flaky test",
            0,
            None::<&str>,
            pair("requested"),
            t + 30
        ],
        params![
            "system",
            "alice",
            "pair",
            format!("Pair {PAIR_ID} accepted"),
            "bob accepted",
            0,
            None::<&str>,
            pair("accepted"),
            t + 31
        ],
        params![
            "alice",
            "bob",
            "pair",
            format!("Pair {PAIR_ID}"),
            "look at tests/x.rs",
            0,
            None::<&str>,
            pair("message"),
            t + 32
        ],
        params![
            "alice",
            "user",
            "chat",
            None::<String>,
            "hello",
            0,
            "k1",
            "{}",
            t + 40
        ],
        params![
            "telegram:bot1",
            "alice",
            "channel.event",
            None::<String>,
            "hi from chat 42",
            0,
            None::<&str>,
            r#"{"conversationId":"chat-42"}"#,
            t + 50
        ],
    ] {
        conn.execute(message, row).unwrap();
    }
    // sendMessageWithResult threads every new message on itself.
    conn.execute("UPDATE messages SET thread_id = id", [])
        .unwrap();
    for (message, agent) in [(PAIR_REQUESTED, "bob"), (HELLO, "user")] {
        conn.execute(
            "INSERT INTO message_reads (message_id, agent_id, read_at) VALUES (?1, ?2, ?3)",
            params![message, agent, t + 60],
        )
        .unwrap();
    }

    conn.execute(
        "INSERT INTO tasks (source, title, body, severity, status, dedupe_key, external_url, target,
             occurrences, message_id, created_at, updated_at)
         VALUES ('ci', 'CI failed on main', 'https://ci.example/1', 'error', 'open', 'main-build',
             'https://ci.example/1', 'label:dev', 1, ?1, ?2, ?2)",
        params![TASK_MESSAGE, t + 20],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO task_events (task_id, kind, actor, data, created_at)
         VALUES (1, 'created', 'ci', '{\"severity\":\"error\"}', ?1)",
        params![t + 20],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO pair_sessions (id, requester_id, partner_id, status, topic, created_at, updated_at)
         VALUES (?1, 'alice', 'bob', 'active', 'the flaky test', ?2, ?3)",
        params![PAIR_ID, t + 30, t + 31],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO activity_events (operator_id, action, subject, data, created_at)
         VALUES ('dashboard', 'deploy', 'api', '{\"version\":\"1.2\"}', ?1)",
        params![t + 70],
    )
    .unwrap();
}

/// A 0.6.0 database in `dir`, as `initDb` created it and 0.6.0 filled it.
fn database_060(dir: &Path) -> PathBuf {
    let db = dir.join("relay.db");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(INIT_DB_060).unwrap();
    fill_as_060(&conn, now_ms() - 60_000);
    db
}

/// `agent-relay migrate` on the file, which must succeed with a JSON answer.
fn migrate(db: &Path) -> Json {
    let (ok, answer, stderr) = upgrade::migrate(db, &[]);
    assert!(ok, "migrating the 0.6.0 file failed: {stderr}");
    assert!(!answer.is_null(), "migrate answered no JSON");
    answer
}

/// A relay serving the 0.6.0 fixture after `agent-relay migrate` upgraded it.
fn upgraded_060() -> RelayServer {
    let dir = tempfile::tempdir().unwrap();
    let db = database_060(dir.path());
    migrate(&db);
    RelayServer::start_in(dir, &[])
}

const TABLES: [&str; 9] = [
    "agents",
    "messages",
    "message_reads",
    "tasks",
    "task_events",
    "pair_sessions",
    "channels",
    "channel_bindings",
    "orchestrators",
];

#[test]
fn a_060_database_is_upgraded_with_every_row_kept() {
    let dir = tempfile::tempdir().unwrap();
    let db = database_060(dir.path());
    let before: Vec<i64> = TABLES.iter().map(|t| count(&db, t)).collect();

    let report = migrate(&db);

    assert_eq!(report["fromVersion"], 0, "{report}");
    let after: Vec<i64> = TABLES.iter().map(|t| count(&db, t)).collect();
    assert_eq!(after, before, "no row of {TABLES:?} lost or added");
    assert_eq!(count(&db, "activity_events"), 1);
    let steps = report["steps"].to_string();
    assert!(
        steps.contains("2 orchestrator agents") && steps.contains("1 text ids numbered"),
        "the report names what the 0.6.0 step changed: {steps}"
    );
}

#[test]
fn upgrading_a_060_database_twice_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = database_060(dir.path());
    migrate(&db);
    let first = dump(&db);

    let again = migrate(&db);

    assert_eq!(again["steps"], json!([]), "{again}");
    assert_eq!(
        dump(&db),
        first,
        "a second upgrade leaves every row as it was"
    );
}

#[test]
fn every_row_of_a_060_database_answers_over_http() {
    let relay = upgraded_060();

    // Agents keep their cards and sessions.
    let alice = relay.get("/v1/agents/alice", OPERATOR).body;
    assert_eq!(
        (
            &alice["kind"],
            &alice["label"],
            &alice["instanceId"],
            &alice["epoch"]
        ),
        (&json!("provider"), &json!("dev"), &json!("a-1"), &json!(1)),
        "{alice}"
    );
    assert_eq!(alice["tags"], json!(["claude"]));
    assert_eq!(
        relay.get("/v1/agents/telegram:bot1", OPERATOR).body["kind"],
        "channel"
    );

    // The orchestrator's earlier spawn request is in its inbox, and it takes new ones.
    let inbox = relay.get("/v1/agents/orchestrator-h1/inbox", OPERATOR);
    assert_eq!(ids(&inbox.body), vec![SPAWN], "{:?}", inbox.body);
    let spawn = relay.post(
        "/v1/orchestrators/h1/spawn",
        OPERATOR,
        json!({"provider": "codex", "prompt": "review the fix"}),
    );
    assert_eq!(spawn.status, 201, "{:?}", spawn.body);
    assert_eq!(spawn.body["recipients"], json!(["orchestrator-h1"]));
    let orchestrator = relay.get("/v1/orchestrators/h1", OPERATOR).body;
    assert_eq!(
        orchestrator["managedAgents"][0]["pid"], 4242,
        "{orchestrator}"
    );

    // The task's message claims the task.
    let task = relay.get("/v1/tasks/1", OPERATOR).body;
    assert_eq!(
        (&task["status"], &task["messageId"]),
        (&json!("open"), &json!(TASK_MESSAGE)),
        "{task}"
    );
    let claim = relay.post(
        &format!("/v1/messages/{TASK_MESSAGE}/claim"),
        OPERATOR,
        json!({"agentId": "alice"}),
    );
    assert_eq!(claim.status, 200, "{:?}", claim.body);
    let task = relay.get("/v1/tasks/1", OPERATOR).body;
    assert_eq!(
        (&task["status"], &task["claimedBy"]),
        (&json!("claimed"), &json!("alice")),
        "{task}"
    );
    // The file went through the job step before the 0.6.0 one: attempts count from 0.
    assert_eq!(claim.body["attempts"], 1, "{:?}", claim.body);
    let events: Vec<Json> = relay
        .get("/v1/tasks/1/events", OPERATOR)
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].clone())
        .collect();
    assert_eq!(events, vec![json!("created"), json!("claimed")]);

    // The pair answers by its number and takes a message in its thread.
    let pairs = relay.get("/v1/pairs", OPERATOR);
    assert_eq!(pairs.status, 200, "{:?}", pairs.body);
    let pair = &pairs.body[0];
    assert_eq!(
        (
            &pair["id"],
            &pair["legacyId"],
            &pair["status"],
            &pair["threadId"]
        ),
        (
            &json!(1),
            &json!(PAIR_ID),
            &json!("active"),
            &json!(PAIR_REQUESTED)
        ),
        "{pair}"
    );
    let said = relay.post(
        "/v1/pairs/1/messages",
        OPERATOR,
        json!({"from": "bob", "body": "found it"}),
    );
    assert_eq!(said.status, 201, "{:?}", said.body);
    assert_eq!(said.body["message"]["to"], "alice");
    assert_eq!(said.body["message"]["threadId"], PAIR_REQUESTED);

    // Receipts and idempotency keys survive.
    let request = relay
        .get(&format!("/v1/messages/{PAIR_REQUESTED}"), OPERATOR)
        .body;
    assert_eq!(request["readBy"], json!(["bob"]));
    let replay =
        relay.send(json!({"from": "alice", "to": "user", "body": "hello", "idempotencyKey": "k1"}));
    assert_eq!(
        (replay.status, &replay.body["message"]["id"]),
        (200, &json!(HELLO)),
        "{:?}",
        replay.body
    );
    let event = relay
        .get(&format!("/v1/messages/{CHANNEL_EVENT}"), OPERATOR)
        .body;
    assert_eq!(event["payload"]["conversationId"], "chat-42");

    // The bindings route as they did, and an inbound event follows them.
    let route = |conversation: &str| {
        relay
            .get(
                &format!("/v1/channels/telegram:bot1/route?conversationId={conversation}"),
                OPERATOR,
            )
            .body
    };
    let own = route("chat-42");
    assert_eq!(own["source"], "conversation");
    assert_eq!(
        own["bindings"][0]["target"],
        json!({"type": "agent", "id": "alice"})
    );
    assert_eq!(own["bindings"][0]["mode"], "exclusive");
    let fallback = route("chat-1");
    assert_eq!(fallback["source"], "default");
    assert_eq!(
        fallback["bindings"][0]["id"],
        "telegram:bot1:default:label:dev"
    );
    assert_eq!(fallback["bindings"][0]["mode"], "claimable");
    let channel = relay.get("/v1/channels/telegram:bot1", OPERATOR).body;
    assert_eq!(channel["target"], "label:dev", "{channel}");
    let inbound = relay.post(
        "/v1/channels/telegram:bot1/inbound",
        OPERATOR,
        json!({"conversationId": "chat-1", "body": "is the build green?"}),
    );
    assert_eq!(inbound.status, 200, "{:?}", inbound.body);
    let delivered = &inbound.body["deliveries"][0]["message"];
    assert_eq!(
        (&delivered["to"], &delivered["claimable"]),
        (&json!("label:dev"), &json!(true))
    );

    // The activity feed is there.
    let activity = relay.get("/v1/activity", OPERATOR).body;
    assert_eq!(activity[0]["action"], "deploy", "{activity}");
    assert_eq!(activity[0]["data"], json!({"version": "1.2"}));
}

// Break 1: 0.6.0 stored its orchestrators' agents as providers.
#[test]
fn orchestrator_agents_written_by_060_receive_orchestrator_messages() {
    let relay = upgraded_060();

    let agent = relay.get("/v1/agents/orchestrator-h1", OPERATOR).body;
    assert_eq!(agent["kind"], "orchestrator", "{agent}");
    assert_eq!(agent["tags"], json!(["orchestrator", "build-1"]));
    assert_eq!(agent["capabilities"], json!(["orchestrator", "spawn"]));
    assert_eq!(
        agent["meta"],
        json!({"orchestratorId": "h1", "builtin": true}),
        "0.6.0's meta is kept"
    );
    let sent = relay.send(json!({"from": "user", "to": "orchestrator:h1", "body": "status?"}));

    assert_eq!(sent.status, 201, "{:?}", sent.body);
    assert_eq!(sent.body["recipients"], json!(["orchestrator-h1"]));
    let inbox = relay.get("/v1/agents/orchestrator-h1/inbox", OPERATOR).body;
    assert_eq!(
        ids(&inbox),
        vec![SPAWN, sent.body["message"]["id"].as_i64().unwrap()]
    );
}

// Break 3: 0.6.0 pair ids were text.
#[test]
fn text_pair_ids_from_060_are_numbered_and_found_by_their_old_id() {
    let relay = upgraded_060();

    let found = relay.get(&format!("/v1/pairs?legacyId={PAIR_ID}"), OPERATOR);
    assert_eq!(found.status, 200, "{:?}", found.body);
    assert_eq!(ids(&found.body), vec![1], "the old id finds the pair");
    for odd in ["nope", ""] {
        let none = relay.get(&format!("/v1/pairs?legacyId={odd}"), OPERATOR);
        assert_eq!(
            (none.status, &none.body),
            (200, &json!([])),
            "a filter is only compared: {odd:?} matches no pair"
        );
    }
    for message in [PAIR_REQUESTED, PAIR_ACCEPTED, PAIR_SAID] {
        let payload = &relay.get(&format!("/v1/messages/{message}"), OPERATOR).body["payload"];
        assert_eq!(
            (&payload["pairId"], &payload["legacyPairId"]),
            (&json!(1), &json!(PAIR_ID)),
            "message {message} links to the numbered pair: {payload}"
        );
    }
    let ended = relay.post(
        "/v1/pairs/1/actions",
        OPERATOR,
        json!({"agentId": "alice", "action": "end"}),
    );
    assert_eq!(ended.status, 200, "{:?}", ended.body);
    let created = relay.post(
        "/v1/pairs",
        OPERATOR,
        json!({"requesterId": "bob", "partnerId": "alice"}),
    );
    assert_eq!(created.status, 200, "{:?}", created.body);
    assert_eq!(
        (&created.body["id"], &created.body["legacyId"]),
        (&json!(2), &Json::Null),
        "new pairs are numbered after the upgraded ones"
    );
}

// Break 2: 0.6.0's reaper passed over every agent with meta.builtin.
#[test]
fn agents_marked_builtin_in_meta_are_not_reaped() {
    let relay = RelayServer::start();
    relay.register(json!({"id": "watcher", "meta": {"builtin": true}}));
    relay.register(json!({"id": "plain"}));
    relay.register(json!({"id": "sayer", "meta": {"builtin": "yes"}}));
    relay.advance(10 * 60 * 1000);

    let report = relay.reap();

    assert_eq!(
        report["offlineAgents"],
        json!(["plain", "sayer"]),
        "{report}"
    );
    assert_eq!(
        relay.get("/v1/agents/watcher", OPERATOR).body["status"],
        "online"
    );
    let health = relay.get("/v1/health", OPERATOR).body;
    let stale = health["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "stale-agents")
        .unwrap()
        .clone();
    assert_eq!(
        stale["status"], "ok",
        "an exempt agent is not reported stale: {stale}"
    );
}

// The exemption above is the operator's to give (docs/security.md), like meta.orchestratorId.
#[test]
fn only_the_operator_marks_an_agent_builtin() {
    let relay = RelayServer::start();
    let bob = relay.register(json!({"id": "bob", "meta": {"team": "api"}}));
    let watcher = relay.register(json!({"id": "watcher", "meta": {"builtin": true}}));

    let refused = relay.post(
        "/v1/agents",
        &bob,
        json!({"id": "bob", "meta": {"team": "api", "builtin": true}}),
    );

    assert_eq!(refused.status, 403, "{:?}", refused.body);
    let says = refused.body["error"]["message"].as_str().unwrap();
    assert!(
        says.contains("meta.builtin") && says.contains("operator"),
        "the refusal names meta.builtin: {says}"
    );
    assert_eq!(
        relay.get("/v1/agents/bob", OPERATOR).body["meta"],
        json!({"team": "api"}),
        "bob is unchanged"
    );
    let kept = relay.post(
        "/v1/agents",
        &watcher,
        json!({"id": "watcher", "meta": {"builtin": true}}),
    );
    assert_eq!(
        kept.status, 200,
        "keeping its own mark is no change: {:?}",
        kept.body
    );
    let given = relay.post(
        "/v1/agents",
        OPERATOR,
        json!({"id": "bob", "meta": {"builtin": true}}),
    );
    assert_eq!(given.status, 200, "the operator gives it: {:?}", given.body);
    relay.advance(10 * 60 * 1000);
    assert_eq!(relay.reap()["offlineAgents"], json!([]));
}

fn register_orchestrator(relay: &RelayServer, id: &str) -> String {
    let reply = relay.post(
        "/v1/orchestrators",
        OPERATOR,
        json!({"id": id, "hostname": format!("{id}.local"), "providers": ["claude"],
               "baseDir": "/srv/agents"}),
    );
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    reply.body["token"].as_str().unwrap().to_owned()
}

// Break 4: 0.6.0 took a draining orchestrator out of delivery.
#[test]
fn a_draining_orchestrator_refuses_new_spawn_requests() {
    let relay = RelayServer::start();
    let token = register_orchestrator(&relay, "devbox");
    let before = relay.post(
        "/v1/orchestrators/devbox/spawn",
        OPERATOR,
        json!({"provider": "claude", "idempotencyKey": "first"}),
    );
    assert_eq!(before.status, 201, "{:?}", before.body);
    let drain = relay.put(
        "/v1/orchestrators/devbox/status",
        &token,
        json!({"status": "draining"}),
    );
    assert_eq!(drain.status, 200, "{:?}", drain.body);

    let refused = relay.post(
        "/v1/orchestrators/devbox/spawn",
        OPERATOR,
        json!({"provider": "claude"}),
    );
    let as_message = relay.send(
        json!({"from": "user", "to": "orchestrator:devbox", "kind": "spawn",
                                       "body": "spawn", "payload": {"provider": "claude"}}),
    );

    assert_eq!(refused.status, 409, "{:?}", refused.body);
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("draining"),
        "the refusal names the state: {:?}",
        refused.body
    );
    // A spawn message that skips the route is refused whatever the orchestrator's state
    // (docs/security.md, the relay's own kinds).
    assert_eq!(as_message.status, 403, "{:?}", as_message.body);
    assert!(
        as_message.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/v1/orchestrators/{id}/spawn"),
        "the refusal names the route: {:?}",
        as_message.body
    );
    let replay = relay.post(
        "/v1/orchestrators/devbox/spawn",
        OPERATOR,
        json!({"provider": "claude", "idempotencyKey": "first"}),
    );
    assert_eq!(
        (replay.status, &replay.body["message"]["id"]),
        (200, &before.body["message"]["id"]),
        "a request from before the drain is still answered"
    );
    let chat =
        relay.send(json!({"from": "user", "to": "orchestrator:devbox", "body": "how long?"}));
    assert_eq!(
        chat.status, 201,
        "other messages still reach it: {:?}",
        chat.body
    );
    relay.put(
        "/v1/orchestrators/devbox/status",
        &token,
        json!({"status": "online"}),
    );
    let after = relay.post(
        "/v1/orchestrators/devbox/spawn",
        OPERATOR,
        json!({"provider": "claude"}),
    );
    assert_eq!(
        after.status, 201,
        "back online, it takes requests: {:?}",
        after.body
    );
}

fn register_bridge(relay: &RelayServer, id: &str, target: &str) {
    let account = id.split_once(':').unwrap().1;
    relay.register(json!({"id": id, "kind": "channel",
                          "meta": {"provider": "telegram", "accountId": account, "target": target}}));
}

// Break 5: 0.6.0 upserted a binding without a mode as exclusive.
#[test]
fn an_upserted_binding_without_a_mode_is_exclusive() {
    let relay = RelayServer::start();
    register_bridge(&relay, "telegram:bot1", "label:support");

    let upserted = relay.put(
        "/v1/channels/telegram:bot1/bindings",
        OPERATOR,
        json!({"conversationId": "chat-42", "target": {"type": "label", "id": "ops"}}),
    );

    assert_eq!(upserted.status, 200, "{:?}", upserted.body);
    assert_eq!(upserted.body["mode"], "exclusive");
    let channel = relay.get("/v1/channels/telegram:bot1", OPERATOR).body;
    assert_eq!(
        channel["binding"]["mode"], "claimable",
        "the default binding from meta.target keeps its mode by target type"
    );
}

// Break 6: 0.6.0 listed every channel's bindings when no channel was given.
#[test]
fn the_operator_lists_every_binding_of_every_channel() {
    let relay = RelayServer::start();
    register_bridge(&relay, "telegram:bot2", "broadcast");
    register_bridge(&relay, "telegram:bot1", "label:support");
    let bound = relay.put(
        "/v1/channels/telegram:bot1/bindings",
        OPERATOR,
        json!({"conversationId": "chat-42", "target": {"type": "agent", "id": "alice"}, "priority": 5}),
    );
    assert_eq!(bound.status, 200, "{:?}", bound.body);
    let agent = relay.register(json!({"id": "alice"}));

    let all = relay.get("/v1/bindings", OPERATOR);
    let as_agent = relay.get("/v1/bindings", &agent);

    assert_eq!(all.status, 200, "{:?}", all.body);
    let listed: Vec<(Json, Json)> = all
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["channelId"].clone(), b["target"]["type"].clone()))
        .collect();
    assert_eq!(
        listed,
        vec![
            (json!("telegram:bot1"), json!("agent")),
            (json!("telegram:bot1"), json!("label")),
            (json!("telegram:bot2"), json!("broadcast")),
        ],
        "by channel, then highest priority first"
    );
    assert_eq!(as_agent.status, 403, "{:?}", as_agent.body);
}

// Decision: binding ids of upgraded rows stay usable in the binding routes.
#[test]
fn a_060_binding_is_deleted_by_its_old_id() {
    let relay = upgraded_060();

    let deleted = relay.delete(
        "/v1/channels/telegram:bot1/bindings/telegram:bot1:chat-42:agent:alice",
        OPERATOR,
    );

    assert_eq!(deleted.status, 200, "{:?}", deleted.body);
    let route = relay
        .get(
            "/v1/channels/telegram:bot1/route?conversationId=chat-42",
            OPERATOR,
        )
        .body;
    assert_eq!(route["source"], "default", "{route}");
}
