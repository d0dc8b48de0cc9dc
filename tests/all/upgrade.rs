//! Databases written by the TypeScript relay (0.4.x, 0.5) open and are upgraded in place with
//! nothing lost; the fixtures are written here with SQL in the shapes those releases used.

use crate::common;

use std::path::Path;

use common::upgrade::{count, dump, migrate};
use common::{Json, OPERATOR, RelayServer, cli_call, json};
use rusqlite::Connection;

const LEGACY_04: &str = "
CREATE TABLE agents (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, tags TEXT NOT NULL DEFAULT '[]', machine TEXT,
    rig TEXT, capabilities TEXT NOT NULL DEFAULT '[]', ready INTEGER NOT NULL DEFAULT 1,
    status TEXT NOT NULL DEFAULT 'online', meta TEXT NOT NULL DEFAULT '{}',
    last_seen INTEGER NOT NULL, created_at INTEGER NOT NULL, label TEXT, instance_id TEXT,
    epoch INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT, from_agent TEXT NOT NULL, to_target TEXT NOT NULL,
    type TEXT NOT NULL DEFAULT 'message', channel TEXT, subject TEXT, body TEXT NOT NULL,
    thread_id INTEGER, reply_to INTEGER, claimable INTEGER NOT NULL DEFAULT 0, claimed_by TEXT,
    claimed_at INTEGER, claim_expires_at INTEGER, idempotency_key TEXT,
    meta TEXT NOT NULL DEFAULT '{}', read_by TEXT NOT NULL DEFAULT '[]', created_at INTEGER NOT NULL
);
INSERT INTO agents (id, name, tags, meta, last_seen, created_at, label) VALUES
    ('user', 'User', '[\"human\"]', '{\"builtin\":true}', 1000, 1000, NULL),
    ('alice', 'Alice', '[\"claude\"]', '{}', 1000, 1000, 'dev'),
    ('bob', 'Bob', '[]', '{}', 1000, 1000, 'dev'),
    ('slack:team', 'Slack', '[]', '{\"kind\":\"channel\",\"provider\":\"slack\"}', 1000, 1000, NULL);
INSERT INTO messages (from_agent, to_target, type, body, thread_id, reply_to, claimable, claimed_by,
        claimed_at, claim_expires_at, idempotency_key, meta, read_by, created_at) VALUES
    ('alice', 'user', 'message', 'hello', NULL, NULL, 0, NULL, NULL, NULL, 'k1', '{\"mood\":\"fine\"}', '[\"user\",\"alice\"]', 2000),
    ('user', 'label:dev', 'system', '[error] CI failed', NULL, NULL, 1, 'alice', 2100, 99999999999999,
        NULL, '{\"taskId\":7,\"source\":\"ci\",\"severity\":\"error\"}', '[]', 2100),
    ('user', 'alice', 'system', 'pair requested', NULL, NULL, 0, NULL, NULL, NULL, NULL,
        '{\"pairId\":3,\"pairEvent\":\"requested\",\"requesterId\":\"bob\",\"partnerId\":\"alice\"}', '[\"alice\"]', 2200),
    ('user', 'alice', 'message', 'answer', 1, 1, 0, NULL, NULL, NULL, NULL, '{}', '[]', 2300);
";

const INDEX_04: &str = "CREATE UNIQUE INDEX idx_msg_idempotency ON messages(from_agent, idempotency_key) WHERE idempotency_key IS NOT NULL;";

const CHANNELS_05: &str = "
CREATE TABLE channels (
    id TEXT PRIMARY KEY, provider TEXT NOT NULL, account_id TEXT NOT NULL, display_name TEXT NOT NULL,
    agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE, transport TEXT NOT NULL,
    direction TEXT NOT NULL DEFAULT 'bidirectional', topic_channels TEXT NOT NULL DEFAULT '[]',
    capabilities TEXT NOT NULL DEFAULT '[]', meta TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL
);
CREATE TABLE channel_bindings (
    id TEXT PRIMARY KEY, channel_id TEXT NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    conversation_key TEXT NOT NULL DEFAULT '', conversation_id TEXT, target_type TEXT NOT NULL,
    target_id TEXT NOT NULL, mode TEXT NOT NULL DEFAULT 'exclusive', priority INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
    UNIQUE(channel_id, conversation_key)
);
INSERT INTO channels VALUES ('slack:team', 'slack', 'team', 'Slack', 'slack:team', 'slack', 'bidirectional', '[]', '[]', '{}', 1000, 1000);
INSERT INTO channel_bindings VALUES ('slack:team:C1:agent:alice', 'slack:team', 'C1', 'C1', 'agent', 'alice', 'exclusive', 0, 1000, 1000);
";

fn fixture(dir: &Path, sql: &[&str]) -> std::path::PathBuf {
    let db = dir.join("relay.db");
    let conn = Connection::open(&db).unwrap();
    for part in sql {
        conn.execute_batch(part).unwrap();
    }
    db
}

fn message(db: &Path, id: i64) -> Json {
    let (ok, message) = cli_call(db, "get-message", &json!({"messageId": id}));
    assert!(ok, "{message}");
    message
}

#[test]
fn a_04_database_is_upgraded_row_by_row_with_a_backup() {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture(dir.path(), &[LEGACY_04, INDEX_04]);
    let before = (count(&db, "agents"), count(&db, "messages"));

    let (dry_ok, dry, _) = migrate(&db, &["--dry-run"]);
    assert!(dry_ok);
    assert_eq!(dry["fromVersion"], 0);
    assert_eq!(dry["steps"].as_array().unwrap().len(), 11);
    assert_eq!(
        count(&db, "messages"),
        before.1,
        "a dry run changes nothing"
    );

    let (ok, report, stderr) = migrate(&db, &[]);
    assert!(ok, "{stderr}");
    assert_eq!(
        (report["fromVersion"].as_u64(), report["toVersion"].as_u64()),
        (Some(0), Some(11))
    );
    let after = (count(&db, "agents"), count(&db, "messages"));
    eprintln!(
        "0.4 fixture rows before: agents {}, messages {}, receipts 0; after: agents {}, messages {}, receipts {}",
        before.0,
        before.1,
        after.0,
        after.1,
        count(&db, "message_reads")
    );
    assert_eq!(after.1, before.1, "no message lost or added");
    assert_eq!(
        after.0,
        before.0 + 1,
        "only the built-in system agent is added"
    );

    let hello = message(&db, 1);
    assert_eq!(hello["kind"], "chat");
    assert_eq!(hello["threadId"], 1, "thread ids are back-filled");
    assert_eq!(hello["meta"], json!({"mood": "fine"}));
    let mut read_by: Vec<String> = hello["readBy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    read_by.sort();
    assert_eq!(read_by, ["alice", "user"], "read_by became receipts");
    let task = message(&db, 2);
    assert_eq!(task["kind"], "task");
    assert_eq!(task["payload"]["taskId"], 7);
    assert_eq!(task["payload"]["source"], "ci");
    assert_eq!(task["claimedBy"], "alice", "claims survive");
    assert_eq!(
        task["attempts"], 0,
        "an existing claimable message starts at 0 attempts"
    );
    let pair = message(&db, 3);
    assert_eq!(pair["kind"], "pair");
    assert_eq!(
        pair["payload"],
        json!({"pairId": 3, "pairEvent": "requested", "requesterId": "bob", "partnerId": "alice"})
    );
    assert_eq!(pair["readBy"], json!(["alice"]));
    let answer = message(&db, 4);
    assert_eq!(
        (answer["threadId"].as_i64(), answer["replyTo"].as_i64()),
        (Some(1), Some(1))
    );

    let kind = |id: &str| {
        cli_call(&db, "get-agent", &json!({"agentId": id})).1["kind"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(kind("alice"), "provider");
    assert_eq!(kind("slack:team"), "channel");
    assert_eq!(kind("user"), "user");
    let (_, replay) = cli_call(
        &db,
        "send-message",
        &json!({"input": {"from": "alice", "to": "user", "body": "hello", "idempotencyKey": "k1"}}),
    );
    assert_eq!(
        (
            replay["created"].as_bool(),
            replay["message"]["id"].as_i64()
        ),
        (Some(false), Some(1)),
        "idempotency keys survive"
    );

    let backup = Path::new(
        report["backup"]
            .as_str()
            .expect("a backup is named in the report"),
    );
    assert!(
        backup
            .file_name()
            .unwrap()
            .to_string_lossy()
            .contains(".v0.bak")
    );
    let old = Connection::open(backup).unwrap();
    let old_type: String = old
        .query_row("SELECT type FROM messages WHERE id = 2", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        old_type, "system",
        "the backup holds the old shape and data"
    );
    assert_eq!(count(backup, "messages"), before.1);
}

#[test]
fn upgrading_twice_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture(dir.path(), &[LEGACY_04, INDEX_04, CHANNELS_05]);
    assert!(migrate(&db, &[]).0);
    let first = dump(&db);
    let (ok, report, _) = migrate(&db, &[]);
    assert!(ok);
    assert_eq!(report["steps"], json!([]));
    assert!(
        report.get("backup").is_none(),
        "nothing to upgrade, nothing to back up"
    );
    assert_eq!(
        dump(&db),
        first,
        "a second upgrade leaves the content as it was"
    );
}

#[test]
fn a_failing_step_leaves_the_original_intact() {
    let dir = tempfile::tempdir().unwrap();
    // Two messages share a sender and idempotency key (no unique index in this old file): the
    // upgrade's unique index cannot be built, so the upgrade must fail as a whole.
    let db = fixture(
        dir.path(),
        &[
            LEGACY_04,
            "INSERT INTO messages (from_agent, to_target, body, idempotency_key, created_at) VALUES ('alice', 'user', 'again', 'k1', 3000)",
        ],
    );
    let before = dump(&db);
    let (ok, _, stderr) = migrate(&db, &[]);
    assert!(!ok, "the upgrade must fail");
    assert!(stderr.contains("migrating"), "{stderr}");
    assert_eq!(
        dump(&db),
        before,
        "the failed upgrade was rolled back completely"
    );
}

#[test]
fn a_database_newer_than_the_relay_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("relay.db");
    assert!(migrate(&db, &[]).0);
    Connection::open(&db)
        .unwrap()
        .execute(
            "UPDATE relay_settings SET value = '99' WHERE key = 'schema-version'",
            [],
        )
        .unwrap();
    let before = dump(&db);
    let (ok, _, stderr) = migrate(&db, &[]);
    assert!(!ok);
    assert!(stderr.contains("newer"), "{stderr}");
    assert_eq!(dump(&db), before);
}

#[test]
fn a_migrated_05_database_serves_sends_claims_and_channels() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path(), &[LEGACY_04, INDEX_04, CHANNELS_05]);
    let relay = RelayServer::start_in(dir, &[]);
    let bindings = relay.get("/v1/channels/slack:team/bindings", OPERATOR);
    assert_eq!(bindings.status, 200, "{:?}", bindings.body);
    assert_eq!(
        bindings.body.as_array().unwrap().len(),
        1,
        "the 0.5 binding survived"
    );
    let second = relay.put("/v1/channels/slack:team/bindings", OPERATOR, json!({"conversationId": "C1", "target": {"type": "agent", "id": "bob"}, "mode": "exclusive"}));
    assert_eq!(
        second.status, 200,
        "a second binding for the same conversation: {:?}",
        second.body
    );
    assert_eq!(
        relay
            .get("/v1/channels/slack:team/bindings", OPERATOR)
            .body
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let job = relay
        .send(json!({"from": "user", "to": "label:dev", "body": "new job", "claimable": true}));
    assert_eq!(job.status, 201, "{:?}", job.body);
    let id = job.body["message"]["id"].as_i64().unwrap();
    assert!(id > 4, "new ids continue after the old ones");
    let claimed = relay.post(
        &format!("/v1/messages/{id}/claim"),
        OPERATOR,
        json!({"agentId": "bob"}),
    );
    assert_eq!(claimed.status, 200, "{:?}", claimed.body);
    let again = relay.post(
        &format!("/v1/messages/{id}/claim"),
        OPERATOR,
        json!({"agentId": "alice"}),
    );
    assert_eq!(again.status, 409);
    let token = relay.post("/v1/agents/alice/token", OPERATOR, json!({}));
    assert_eq!(
        token.status, 200,
        "an agent from the old relay gets a token: {:?}",
        token.body
    );
    let alice = token.body["token"].as_str().unwrap();
    assert_eq!(relay.get("/v1/agents/alice/inbox", alice).status, 200);
}

/// Takes a database of this relay back to schema 3, the shape before job completion (the columns
/// and indexes step 4 adds are dropped), as the previous release left it.
fn back_to_schema_3(db: &Path) {
    let conn = Connection::open(db).unwrap();
    conn.execute_batch(
        "DROP INDEX idx_msg_open_jobs;
         DROP INDEX idx_msg_dead_letters;
         DROP INDEX idx_msg_open_jobs_by_priority;
         ALTER TABLE messages DROP COLUMN attempts;
         ALTER TABLE messages DROP COLUMN completed_by;
         ALTER TABLE messages DROP COLUMN completed_at;
         ALTER TABLE messages DROP COLUMN result;
         ALTER TABLE messages DROP COLUMN dead_lettered_at;
         UPDATE relay_settings SET value = '3' WHERE key = 'schema-version';",
    )
    .unwrap();
}

#[test]
fn a_schema_3_database_gains_attempts_and_settles_the_messages_of_finished_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("relay.db");
    assert!(migrate(&db, &[]).0);
    for id in ["alice", "bob"] {
        let (ok, reply) = cli_call(
            &db,
            "register-agent",
            &json!({"input": {"id": id, "label": "dev"}}),
        );
        assert!(ok, "{reply}");
    }
    back_to_schema_3(&db);
    // What the previous release wrote: a claimed job, a chat, and task 1, resolved while its
    // message stayed claimable (0.6 did not settle them together).
    Connection::open(&db)
        .unwrap()
        .execute_batch(
            "INSERT INTO messages (id, from_agent, to_target, kind, body, thread_id, claimable,
                 claimed_by, claimed_at, claim_expires_at, payload, created_at) VALUES
                 (1, 'user', 'label:dev', 'task', 'job', 1, 1, 'alice', 5000, 99999999999999, '{}', 5000),
                 (2, 'user', 'alice', 'chat', 'hello', 2, 0, NULL, NULL, NULL, '{}', 5100),
                 (3, 'system', 'label:dev', 'task', 'CI failed', 3, 1, NULL, NULL, NULL,
                  '{\"taskId\":1,\"status\":\"open\"}', 5200);
             INSERT INTO tasks (id, source, title, severity, status, target, message_id,
                 created_at, updated_at) VALUES
                 (1, 'ci', 'CI failed', 'error', 'resolved', 'label:dev', 3, 5200, 6000);",
        )
        .unwrap();

    let (ok, report, stderr) = migrate(&db, &[]);

    assert!(ok, "{stderr}");
    assert_eq!(
        (report["fromVersion"].as_u64(), report["toVersion"].as_u64()),
        (Some(3), Some(11))
    );
    let claimed = message(&db, 1);
    assert_eq!(claimed["attempts"], 0);
    assert_eq!(claimed["claimedBy"], "alice", "the live claim is kept");
    assert!(claimed.get("completedAt").is_none());
    assert_eq!(claimed["result"], json!({}));
    assert_eq!(message(&db, 2)["body"], "hello");
    let settled = message(&db, 3);
    assert_eq!(
        settled["completedAt"], 6000,
        "the resolved task's message is settled when the task was"
    );
    assert!(settled.get("completedBy").is_none(), "by nobody known");
    let (ok, refused) = cli_call(
        &db,
        "claim-message",
        &json!({"messageId": 3, "input": {"agentId": "bob"}}),
    );
    assert!(
        !ok,
        "a resolved task's message cannot be claimed: {refused}"
    );
    let (ok, again, _) = migrate(&db, &[]);
    assert!(ok);
    assert_eq!(again["steps"], json!([]), "upgrading twice changes nothing");
}
