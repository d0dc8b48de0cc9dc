//! Setting a relay up and the errors a new user meets (issue 27): the admin commands refuse a
//! database that is not there (only `serve` and `migrate` create one) or that this user may not
//! read, a short operator token is refused at start, `agent-relay mcp` without a good token and
//! `agent add` with an agent's token say what to do, and `agent add --print claude` prints the
//! entries that let several agents work in one checkout (the README's recipe holds the same).
//! Against the real binary.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use common::{Json, OPERATOR, RelayServer, binary, json};

/// The output of `command`, which must end within 20 s (a `serve` that should refuse to start
/// but serves instead is killed, and the test fails instead of hanging).
fn finished(command: &mut Command) -> Output {
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("still running after 20 s: {}", common::described(&out));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `agent-relay ARGS` in `dir`, with none of the relay's variables from the test's environment.
fn in_dir(dir: &Path, args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .current_dir(dir)
        .env_remove("RELAY_DB")
        .env_remove("RELAY_TOKEN")
        .env_remove("RELAY_URL")
        .env_remove("RELAY_OPERATOR_TOKEN")
        .output()
        .unwrap()
}

/// An agent verb against `relay` with `token` as RELAY_TOKEN.
fn verb(relay: &RelayServer, token: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(binary());
    command
        .args(args)
        .env("RELAY_URL", &relay.base)
        .env_remove("RELAY_TOKEN");
    if let Some(token) = token {
        command.env("RELAY_TOKEN", token);
    }
    command.output().unwrap()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn admin_commands_refuse_a_missing_database_and_create_none() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("agent-relay.db");
    let commands: [&[&str]; 8] = [
        &["settings", "list"],
        &["settings", "set", "max-attempts", "3"],
        &["settings", "get", "stale-ttl-ms", "--json"],
        &["backup", "--out", "copy.db"],
        &["call", "whoami", "{}"],
        &["migrate", "--dry-run"],
        &["copy", "--from", "agent-relay.db", "--to", "moved.db"],
        &["settings", "list", "--db", "elsewhere/relay.db"],
    ];
    for args in commands {
        let out = in_dir(dir.path(), args);
        let stderr = common::usage_error(&out, &format!("{args:?}"));
        let named = if args.contains(&"elsewhere/relay.db") {
            dir.path().join("elsewhere/relay.db")
        } else {
            missing.clone()
        };
        assert!(
            stderr.contains(&format!("there is no database at {}", named.display()))
                && stderr.contains("`agent-relay serve` and `agent-relay migrate` create one"),
            "{args:?} names the full path and what creates a database: {}",
            common::described(&out)
        );
        assert!(!stderr.contains("panicked"), "{}", common::described(&out));
        assert_eq!(
            files_in(dir.path()),
            Vec::<String>::new(),
            "{args:?} created nothing"
        );
    }
    // A folder where the file should be is named as such.
    std::fs::create_dir(dir.path().join("folder.db")).unwrap();
    let folder = in_dir(dir.path(), &["settings", "list", "--db", "folder.db"]);
    assert!(
        common::usage_error(&folder, "a folder").contains("is a folder, not a database"),
        "{}",
        common::described(&folder)
    );
    // `migrate` creates it; then the same commands work on it.
    let made = in_dir(dir.path(), &["migrate"]);
    assert!(made.status.success(), "{}", common::described(&made));
    let listed = in_dir(dir.path(), &["settings", "list"]);
    assert!(listed.status.success(), "{}", common::described(&listed));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("max-attempts"));
    let stored = in_dir(dir.path(), &["settings", "set", "max-attempts", "3"]);
    assert!(stored.status.success(), "{}", common::described(&stored));
    let backup = in_dir(dir.path(), &["backup", "--out", "copy.db"]);
    assert!(backup.status.success(), "{}", common::described(&backup));
    // A PostgreSQL URL is not a file: it is not refused as a missing one.
    let url = in_dir(
        dir.path(),
        &[
            "settings",
            "list",
            "--db",
            "postgres://relay@127.0.0.1:1/relay",
        ],
    );
    assert_eq!(url.status.code(), Some(1), "{}", common::described(&url));
    assert!(
        !String::from_utf8_lossy(&url.stderr).contains("there is no database"),
        "{}",
        common::described(&url)
    );
}

/// Whether the tests run as root: a file they create belongs to uid 0.
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let file = tempfile::NamedTempFile::new().unwrap();
    file.as_file().metadata().unwrap().uid() == 0
}

/// Runs the binary as `nobody` when the tests run as root (root reads every file), else as
/// this user; returns the output.
fn as_another_user(args: &[&str]) -> Output {
    let root = running_as_root();
    let mut command = if root {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(binary());
        command
    } else {
        Command::new(binary())
    };
    finished(
        command
            .args(args)
            .env("HOME", "/nonexistent")
            .env_remove("XDG_CACHE_HOME")
            .env_remove("RELAY_DB")
            .env("RELAY_OPERATOR_TOKEN", OPERATOR),
    )
}

#[test]
fn a_database_this_user_may_not_read_is_named_with_the_cause() {
    use std::os::unix::fs::PermissionsExt as _;
    let root = running_as_root();
    // A folder others may enter holding a database only its owner reads (mode 0600), and a
    // folder closed to others (0700), as /var/lib/agent-relay is.
    let open_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(open_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let file_closed = common::migrated(open_dir.path());
    if !root {
        std::fs::set_permissions(&file_closed, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    let closed_dir = tempfile::tempdir().unwrap();
    let dir_closed = common::migrated(closed_dir.path());
    std::fs::set_permissions(
        closed_dir.path(),
        std::fs::Permissions::from_mode(if root { 0o700 } else { 0o000 }),
    )
    .unwrap();
    for db in [&file_closed, &dir_closed] {
        let db_arg = db.to_str().unwrap();
        for args in [
            &["settings", "list", "--db", db_arg][..],
            &["backup", "--db", db_arg, "--out", "/nonexistent/copy.db"],
            &["serve", "--listen", "127.0.0.1:0", "--db", db_arg],
            &["migrate", "--db", db_arg],
        ] {
            let out = as_another_user(args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success(),
                "{args:?}: {}",
                common::described(&out)
            );
            assert!(
                stderr.contains(&format!("cannot open the database {db_arg}"))
                    && stderr.contains("permission denied")
                    && stderr.contains("run the command as the user the relay runs as"),
                "{args:?} names the path and the cause: {}",
                common::described(&out)
            );
            assert!(
                !stderr.contains("Error code 14"),
                "{}",
                common::described(&out)
            );
        }
    }
    std::fs::set_permissions(closed_dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&file_closed, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn a_short_operator_token_is_refused_at_start_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let out = finished(
        Command::new(binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(dir.path().join("relay.db"))
            .env("RELAY_OPERATOR_TOKEN", "letmein-123"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", common::described(&out));
    assert!(
        stderr.contains("RELAY_OPERATOR_TOKEN is 11 characters long")
            && stderr.contains("at least 32")
            && stderr.contains("openssl rand -hex 32"),
        "{}",
        common::described(&out)
    );
    assert!(!stderr.contains("letmein"), "the token is never printed");
    assert_eq!(
        files_in(dir.path()),
        Vec::<String>::new(),
        "refused before the database was created"
    );
    // A short token in the file beside the database is refused too, naming the file.
    let db = common::migrated(dir.path());
    let file = dir.path().join("relay.db.operator-token");
    std::fs::write(&file, "short\n").unwrap();
    let out = finished(
        Command::new(binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(&db)
            .env_remove("RELAY_OPERATOR_TOKEN"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", common::described(&out));
    assert!(
        stderr.contains(&format!("the token in {}", file.display()))
            && stderr.contains("at least 32")
            && stderr.contains("remove the file"),
        "{}",
        common::described(&out)
    );
    // `serve --help` says where the operator token comes from.
    let help = Command::new(binary())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("RELAY_OPERATOR_TOKEN")
            && help.contains("at least 32")
            && help.contains(".operator-token"),
        "{help}"
    );
}

#[test]
fn mcp_without_a_good_token_says_set_relay_token_and_exits_2() {
    let relay = RelayServer::start();
    for token in [None, Some(""), Some("relay_not-a-token")] {
        let mut command = Command::new(binary());
        command
            .args(["mcp", "--url", &relay.base])
            .env_remove("RELAY_TOKEN")
            .stdin(std::process::Stdio::null());
        if let Some(token) = token {
            command.env("RELAY_TOKEN", token);
        }
        let out = command.output().unwrap();
        let stderr = common::usage_error(&out, &format!("{token:?}"));
        assert!(
            stderr.contains("set RELAY_TOKEN") && stderr.contains("agent-relay agent token ID"),
            "{token:?}: {}",
            common::described(&out)
        );
        assert!(
            !stderr.contains("Transport") && !stderr.contains("AuthRequired"),
            "no transport internals: {}",
            common::described(&out)
        );
    }
}

#[test]
fn agent_add_with_an_agents_token_says_where_the_operator_token_is() {
    let relay = RelayServer::start();
    let alice = relay.register(json!({"id": "alice"}));
    for args in [
        &["agent", "add", "bob"][..],
        &["agent", "token", "alice"],
        &["agent", "rm", "alice"],
    ] {
        let out = verb(&relay, Some(&alice), args);
        let stderr = common::usage_error(&out, &format!("{args:?}"));
        assert!(
            stderr.contains("needs the operator token")
                && stderr.contains("agent alice's")
                && stderr.contains("agent-relay.db.operator-token")
                && stderr.contains("RELAY_OPERATOR_TOKEN"),
            "{args:?}: {}",
            common::described(&out)
        );
    }
    let agents = relay.get("/v1/agents", OPERATOR).body;
    assert!(
        agents
            .as_array()
            .unwrap()
            .iter()
            .all(|agent| agent["id"] != "bob"),
        "nothing was added: {agents}"
    );
}

/// The JSON document that follows the line starting with `header` in `out`, up to a blank line.
fn block_after(out: &str, header: &str) -> Json {
    let mut lines = out.lines().skip_while(|line| !line.starts_with(header));
    lines
        .next()
        .unwrap_or_else(|| panic!("no {header:?} in {out}"));
    let block: Vec<&str> = lines.take_while(|line| !line.trim().is_empty()).collect();
    serde_json::from_str(&block.join("\n"))
        .unwrap_or_else(|error| panic!("{header}: {error}: {}", block.join("\n")))
}

/// The here-document `cat > FILE <<'JSON'` of the README's section "Three agents in one
/// checkout", with the README's address made `base`'s.
fn readme_file(file: &str, base: &str) -> Json {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let section = readme
        .split("\n## ")
        .find(|section| section.starts_with("Three agents in one checkout"))
        .expect("README has a section \"Three agents in one checkout\"");
    let start = format!("cat > {file} <<'JSON'\n");
    let body = &section[section.find(&start).expect(&start) + start.len()..];
    let body = &body[..body.find("\nJSON\n").unwrap()];
    let host = base.trim_start_matches("http://");
    serde_json::from_str(&body.replace("127.0.0.1:8787", host)).unwrap()
}

#[test]
fn agent_add_takes_tags_and_capabilities_and_prints_the_claude_entries_for_a_shared_checkout() {
    let relay = RelayServer::start();
    let add = |id: &str, extra: &[&str]| {
        let mut args = vec!["agent", "add", id, "--label", "backend"];
        args.extend_from_slice(extra);
        let out = verb(&relay, Some(OPERATOR), &args);
        assert!(out.status.success(), "{}", common::described(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let alice = add(
        "alice",
        &[
            "--tags",
            "checkout,reviewers",
            "--capabilities",
            "rust,sql",
            "--print",
            "claude",
        ],
    );
    let token = alice
        .lines()
        .find_map(|line| line.strip_prefix("export RELAY_TOKEN="))
        .unwrap_or_else(|| panic!("no export line: {alice}"))
        .to_owned();
    assert!(
        alice.contains(&format!("export RELAY_URL={}", relay.base)),
        "{alice}"
    );
    assert!(!alice.contains("claude mcp add"), "{alice}");
    let me: Json =
        serde_json::from_slice(&verb(&relay, Some(&token), &["whoami", "--json"]).stdout).unwrap();
    assert_eq!(me["agent"]["tags"], json!(["checkout", "reviewers"]));
    assert_eq!(me["agent"]["capabilities"], json!(["rust", "sql"]));

    let mcp = block_after(&alice, "# .mcp.json");
    assert_eq!(
        mcp,
        json!({"mcpServers": {"agent-relay": {
            "command": "agent-relay",
            "args": ["mcp"],
            "env": {"RELAY_URL": relay.base, "RELAY_TOKEN": "${RELAY_TOKEN}"}
        }}})
    );
    let hooks = block_after(&alice, "# .claude/settings.json");
    let command = |event: &str| hooks["hooks"][event][0]["hooks"][0]["command"].clone();
    assert_eq!(
        command("UserPromptSubmit"),
        "agent-relay hook claude-prompt"
    );
    assert_eq!(command("Stop"), "agent-relay hook claude-stop");
    // What the README's recipe writes is exactly what the command prints.
    assert_eq!(readme_file(".mcp.json", &relay.base), mcp);
    assert_eq!(readme_file(".claude/settings.json", &relay.base), hooks);

    // A second agent of the same checkout gets the same entries (its token differs), and
    // `--json` carries them too.
    let bob_out = verb(
        &relay,
        Some(OPERATOR),
        &["agent", "add", "bob", "--print", "claude", "--json"],
    );
    assert!(bob_out.status.success(), "{}", common::described(&bob_out));
    let bob: Json = serde_json::from_slice(&bob_out.stdout).unwrap();
    assert_eq!(bob["claude"]["mcpJson"], mcp);
    assert_eq!(bob["claude"]["settingsJson"], hooks);
    assert_ne!(bob["token"].as_str().unwrap(), token);
    // Without --print, the export line and a pointer to the entries; `agent token` prints them.
    let carol = add("carol", &[]);
    assert!(
        carol.contains("export RELAY_TOKEN=") && carol.contains("--print claude"),
        "{carol}"
    );
    let reissued = verb(
        &relay,
        Some(OPERATOR),
        &["agent", "token", "carol", "--print", "claude"],
    );
    assert!(
        reissued.status.success(),
        "{}",
        common::described(&reissued)
    );
    assert_eq!(
        block_after(&String::from_utf8_lossy(&reissued.stdout), "# .mcp.json"),
        mcp
    );
}
