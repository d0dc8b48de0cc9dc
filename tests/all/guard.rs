//! Several agents in one repository from the command line: `reserve`, `unreserve`, `search`, and
//! the git pre-commit guard in a real repository (`git init`, real commits) against a real relay.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::{OPERATOR, RelayServer, binary, described, json};

/// Runs `program ARGS` in `repo` as the agent with `token` (none: no RELAY_TOKEN), with git
/// kept from the machine's own configuration.
fn run_in(
    repo: &Path,
    url: &str,
    token: Option<&str>,
    program: &Path,
    args: &[&str],
) -> (bool, String) {
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(repo)
        .env("RELAY_URL", url)
        .env_remove("RELAY_TOKEN")
        .env_remove("RELAY_PROJECT")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid");
    if let Some(token) = token {
        command.env("RELAY_TOKEN", token);
    }
    let output = command.output().unwrap();
    (output.status.success(), described(&output))
}

fn git(repo: &Path, url: &str, token: Option<&str>, args: &[&str]) -> (bool, String) {
    run_in(repo, url, token, Path::new("git"), args)
}

fn relay_cli(repo: &Path, url: &str, token: Option<&str>, args: &[&str]) -> (bool, String) {
    run_in(repo, url, token, &binary(), args)
}

fn write(repo: &Path, path: &str, text: &str) {
    let path = repo.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn the_guard_refuses_a_commit_on_held_paths_names_the_holder_and_runs_the_existing_hook() {
    let relay = RelayServer::start();
    let url = relay.base.clone();
    let alice = relay.register(json!({"id": "alice"}));
    let bob = relay.register(json!({"id": "bob"}));
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("shop");
    std::fs::create_dir(&repo).unwrap();
    assert!(git(&repo, &url, None, &["init", "-q"]).0);
    // A hook the repository already had: it must go on running.
    let existing = "#!/bin/sh\necho ran >> \"$(git rev-parse --show-toplevel)/../hook-ran\"\n";
    write(&repo, ".git/hooks/pre-commit", existing);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(
            repo.join(".git/hooks/pre-commit"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }
    let hook_runs = || {
        std::fs::read_to_string(dir.path().join("hook-ran"))
            .unwrap_or_default()
            .lines()
            .count()
    };

    let (ok, out) = relay_cli(&repo, &url, None, &["guard", "install"]);
    assert!(ok, "{out}");
    assert!(out.contains("the existing hook runs first"), "{out}");
    assert_eq!(
        std::fs::read_to_string(repo.join(".git/hooks/pre-commit.before-agent-relay")).unwrap(),
        existing,
        "the existing hook is kept as it was"
    );
    let (ok, out) = relay_cli(&repo, &url, None, &["guard", "install"]);
    assert!(ok && out.contains("already installed"), "{out}");

    // Alice reserves the auth code; the project is the folder's name (no origin, no RELAY_PROJECT).
    let (ok, out) = relay_cli(
        &repo,
        &url,
        Some(&alice),
        &[
            "reserve",
            "src/auth/**",
            "--ttl",
            "1h",
            "--reason",
            "auth refactor",
        ],
    );
    assert!(ok, "{out}");
    let held = relay.get("/v1/reservations", OPERATOR).body;
    assert_eq!(held[0]["project"], "shop", "{held}");
    assert_eq!(held[0]["ttlMs"], 3_600_000);

    // Bob's commit touching it is refused, naming alice and why.
    write(&repo, "src/auth/login.rs", "fn login() {}\n");
    write(&repo, "README.md", "shop\n");
    assert!(git(&repo, &url, None, &["add", "."]).0);
    let (ok, out) = git(&repo, &url, Some(&bob), &["commit", "-qm", "login"]);
    assert!(!ok, "the commit must be refused: {out}");
    assert!(
        out.contains("src/auth/login.rs is held by alice (auth refactor)"),
        "{out}"
    );
    assert_eq!(hook_runs(), 1, "the existing hook ran first");
    let (ok, out) = relay_cli(
        &repo,
        &url,
        Some(&bob),
        &["guard", "check", "src/auth/x.rs", "docs/y.md"],
    );
    assert!(!ok && out.contains("alice"), "{out}");
    let (ok, out) = relay_cli(&repo, &url, Some(&bob), &["guard", "check", "docs/y.md"]);
    assert!(ok, "{out}");

    // Alice herself may commit what she holds; after she releases it, bob may too.
    let (ok, out) = relay_cli(&repo, &url, Some(&alice), &["guard", "check", "--staged"]);
    assert!(ok, "her own reservation never blocks her: {out}");
    let (ok, out) = relay_cli(&repo, &url, Some(&alice), &["unreserve"]);
    assert!(ok && out.contains("released reservation"), "{out}");
    let (ok, out) = git(&repo, &url, Some(&bob), &["commit", "-qm", "login"]);
    assert!(ok, "{out}");
    assert_eq!(hook_runs(), 2);

    // The relay down: allowed with a warning by default, refused with --allow-offline false.
    write(&repo, "src/auth/more.rs", "\n");
    assert!(git(&repo, &url, None, &["add", "."]).0);
    let closed = "http://127.0.0.1:9";
    let (ok, out) = relay_cli(&repo, closed, Some(&bob), &["guard", "check", "--staged"]);
    assert!(ok && out.contains("allowed without a check"), "{out}");
    let (ok, out) = relay_cli(
        &repo,
        closed,
        Some(&bob),
        &["guard", "check", "--staged", "--allow-offline", "false"],
    );
    assert!(!ok && out.contains("refused"), "{out}");
}

#[test]
fn reserve_takes_the_project_from_origin_and_reports_conflicts_and_search_finds_messages() {
    let relay = RelayServer::start();
    let url = relay.base.clone();
    let alice = relay.register(json!({"id": "alice"}));
    let bob = relay.register(json!({"id": "bob"}));
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    assert!(git(repo, &url, None, &["init", "-q"]).0);
    let origin = "https://example.invalid/team/shop.git";
    assert!(git(repo, &url, None, &["remote", "add", "origin", origin]).0);
    let (ok, out) = relay_cli(
        repo,
        &url,
        Some(&alice),
        &["reserve", "docs/", "--reason", "rewrite"],
    );
    assert!(ok, "{out}");
    assert_eq!(
        relay.get("/v1/reservations", OPERATOR).body[0]["project"],
        origin
    );
    let (ok, out) = relay_cli(repo, &url, Some(&bob), &["reserve", "docs/guide.md"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("docs/guide.md is held by alice (rewrite)") && out.contains("--force"),
        "{out}"
    );
    let (ok, out) = relay_cli(
        repo,
        &url,
        Some(&bob),
        &["reserve", "docs/guide.md", "--shared"],
    );
    assert!(
        ok && out.contains("also: docs/guide.md is held by alice"),
        "{out}"
    );
    let (ok, out) = relay_cli(repo, &url, Some(&bob), &["reserve", "src/**", "--json"]);
    assert!(ok && out.contains("\"outcome\":\"granted\""), "{out}");

    relay.send(json!({"from": "alice", "to": "bob", "subject": "caching", "body": "we keep the LRU cache"}));
    let (ok, out) = relay_cli(repo, &url, Some(&bob), &["search", "lru"]);
    assert!(ok && out.contains("**LRU**"), "{out}");
    let (ok, out) = relay_cli(repo, &url, Some(&bob), &["search", "\"unclosed"]);
    assert!(!ok && out.contains("unclosed quote"), "{out}");
}
