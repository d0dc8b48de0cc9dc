//! Files the relay creates are its owner's alone: the database with its `-wal` and `-shm`, the
//! backup written before an upgrade, and the compiled component cache are `0600` whatever the
//! umask (each test runs the binary under umask 000, so a permissive umask cannot hide a miss).

use crate::common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use common::{RelayServer, binary, json};

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
    let relay = RelayServer::start_under_umask("000", cache.path());
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

/// Runs the binary with `args` under umask `000`, in `cwd`, with `envs` set; its output.
fn run_under_umask_000(
    cwd: &Path,
    args: &[&std::ffi::OsStr],
    envs: &[(&str, &std::ffi::OsStr)],
) -> std::process::Output {
    let mut command = Command::new("sh");
    command
        .args(["-c", "umask 000 && exec \"$@\"", "sh"])
        .arg(binary())
        .args(args)
        .current_dir(cwd)
        .env_remove("RELAY_COMPONENT_CACHE")
        .env_remove("XDG_CACHE_HOME")
        .env("RELAY_LOG", "info");
    for (key, value) in envs {
        command.env(key, value);
    }
    command.output().unwrap()
}

/// A fresh relay database in `dir`, made by `migrate` (no component cache).
fn fresh_database(dir: &Path) -> std::path::PathBuf {
    let db = dir.join("relay.db");
    let output = Command::new(binary())
        .args(["migrate", "--db"])
        .arg(&db)
        .env("RELAY_COMPONENT_CACHE", "off")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    db
}

fn os(text: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(text)
}

#[test]
fn a_backup_refuses_a_symlink_at_its_path_dangling_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_database(dir.path());
    let target = dir.path().join("elsewhere.db");
    let link = dir.path().join("backup.db");
    std::os::unix::fs::symlink(&target, &link).unwrap();

    let dangling = run_under_umask_000(
        dir.path(),
        &[
            os("backup"),
            os("--db"),
            db.as_os_str(),
            os("--out"),
            link.as_os_str(),
        ],
        &[("RELAY_COMPONENT_CACHE", os("off"))],
    );
    let stderr = String::from_utf8_lossy(&dangling.stderr);
    assert!(
        !target.exists(),
        "the backup must not follow the link and create {} (mode {:o})",
        target.display(),
        std::fs::metadata(&target).map_or(0, |m| m.permissions().mode() & 0o777)
    );
    assert!(!dangling.status.success(), "refused: {stderr}");
    assert!(stderr.contains("symbolic link"), "says why: {stderr}");

    // A link to a file that exists is refused too, and the file is left as it was.
    std::fs::write(&target, b"keep me").unwrap();
    let existing = run_under_umask_000(
        dir.path(),
        &[
            os("backup"),
            os("--db"),
            db.as_os_str(),
            os("--out"),
            link.as_os_str(),
        ],
        &[("RELAY_COMPONENT_CACHE", os("off"))],
    );
    assert!(!existing.status.success(), "{existing:?}");
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
}

#[test]
fn a_backup_creates_missing_folders_owner_only_and_the_file_0600() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_database(dir.path());
    let out = dir.path().join("new").join("nested").join("copy.db");
    let output = run_under_umask_000(
        dir.path(),
        &[
            os("backup"),
            os("--db"),
            db.as_os_str(),
            os("--out"),
            out.as_os_str(),
        ],
        &[("RELAY_COMPONENT_CACHE", os("off"))],
    );
    assert!(output.status.success(), "{output:?}");
    assert_owner_only(&out);
    for folder in [
        dir.path().join("new"),
        dir.path().join("new").join("nested"),
    ] {
        assert_eq!(mode(&folder), 0o700, "{} is owner-only", folder.display());
    }
}

#[test]
fn the_backup_before_an_upgrade_never_follows_a_dangling_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('private');")
        .unwrap();
    let target = dir.path().join("planted.db");
    std::os::unix::fs::symlink(&target, dir.path().join("old.db.v0.bak")).unwrap();

    let output = run_under_umask_000(
        dir.path(),
        &[os("migrate"), os("--db"), db.as_os_str()],
        &[("RELAY_COMPONENT_CACHE", os("off"))],
    );
    assert!(output.status.success(), "{output:?}");
    assert!(
        !target.exists(),
        "the upgrade's backup followed the link to {}",
        target.display()
    );
    let report: common::Json = serde_json::from_slice(&output.stdout).unwrap();
    let backup = Path::new(report["backup"].as_str().unwrap());
    assert_owner_only(backup);
}

#[test]
fn an_empty_or_relative_xdg_cache_home_never_puts_the_cache_in_the_working_directory() {
    for value in ["", "relative-cache"] {
        let cwd = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let db = cwd.path().join("relay.db");
        let output = run_under_umask_000(
            cwd.path(),
            &[os("migrate"), os("--db"), db.as_os_str()],
            &[
                ("XDG_CACHE_HOME", os(value)),
                ("HOME", home.path().as_os_str()),
            ],
        );
        assert!(output.status.success(), "{output:?}");
        let in_cwd = cwd.path().join(value).join("agent-relay");
        assert!(
            !in_cwd.exists(),
            "XDG_CACHE_HOME={value:?} put the compiled code in {}",
            in_cwd.display()
        );
        let cached = home.path().join(".cache").join("agent-relay");
        assert_eq!(mode(&cached), 0o700, "the cache falls back to $HOME/.cache");
    }
}

#[test]
fn a_cache_folder_others_may_write_is_skipped_with_a_warning() {
    let cache = tempfile::tempdir().unwrap();
    let folder = cache.path().join("agent-relay");
    std::fs::create_dir(&folder).unwrap();
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o777)).unwrap();
    let db_dir = tempfile::tempdir().unwrap();
    let db = db_dir.path().join("relay.db");
    let output = run_under_umask_000(
        db_dir.path(),
        &[os("migrate"), os("--db"), db.as_os_str()],
        &[("XDG_CACHE_HOME", cache.path().as_os_str())],
    );
    assert!(output.status.success(), "the relay still runs: {output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("WARN") && stderr.contains("agent-relay") && stderr.contains("writable"),
        "a warning names the cache folder: {stderr}"
    );
    assert_eq!(
        std::fs::read_dir(&folder).unwrap().count(),
        0,
        "nothing is written to or loaded from it"
    );
}
