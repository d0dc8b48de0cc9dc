//! Files the relay creates are its owner's alone: the database with its `-wal` and `-shm`, the
//! backup written before an upgrade, and the compiled component cache are `0600` whatever the
//! umask (each test runs the binary under umask 000, so a permissive umask cannot hide a miss).

use crate::common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use common::{Relay, binary, json};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{} should exist: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn assert_owner_only(path: &Path) {
    assert_eq!(
        mode(path),
        0o600,
        "{} must be readable by its owner only",
        path.display()
    );
}

#[test]
fn database_wal_shm_and_component_cache_are_owner_only_under_umask_000() {
    let cache = tempfile::tempdir().unwrap();
    let relay = Relay::start_under_umask("000", cache.path());
    // A write, so the WAL and the shared-memory index exist.
    relay.register(json!({"id": "alice"}));
    let sent = relay.send(json!({"from": "user", "to": "alice", "body": "private"}));
    assert_eq!(sent.status, 201, "{:?}", sent.body);

    let db = relay.db_path();
    assert_owner_only(&db);
    assert_owner_only(&db.with_extension("db-wal"));
    assert_owner_only(&db.with_extension("db-shm"));
    let compiled: Vec<_> = std::fs::read_dir(cache.path().join("agent-relay"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert_eq!(compiled.len(), 1, "one cached component: {compiled:?}");
    assert_owner_only(&compiled[0]);
}

#[test]
fn the_backup_before_an_upgrade_is_owner_only_under_umask_000() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.db");
    // Any database with tables and no relay schema version is upgraded, after a backup.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('private');")
        .unwrap();

    let output = Command::new("sh")
        .args(["-c", "umask 000 && exec \"$@\"", "sh"])
        .arg(binary())
        .args(["migrate", "--db"])
        .arg(&db)
        .env("RELAY_COMPONENT_CACHE", "off")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "migrate: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    assert_owner_only(&dir.path().join("old.db.v0.bak"));
}
