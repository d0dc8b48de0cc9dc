//! File reservations (docs/http-api.md, "Reservations"; docs/reservations.md): the overlap of
//! patterns, the 409 of an exclusive overlap, shared reservations, leases, release by the agent,
//! the reaper and a deletion, activity events and bad input, over real HTTP on both backends.

use crate::common;

use common::{Backend, Json, OPERATOR, RelayServer, json};

/// A relay with two provider agents, `alice` and `bob`; their tokens.
fn relay_with_two(backend: Backend, extra: &[&str]) -> (RelayServer, String, String) {
    let relay = RelayServer::start_on(backend, extra);
    let alice = relay.register(json!({"id": "alice"}));
    let bob = relay.register(json!({"id": "bob"}));
    (relay, alice, bob)
}

fn reserve(relay: &RelayServer, token: &str, body: Json) -> common::Reply {
    relay.post("/v1/reservations", token, body)
}

/// Reserves exclusively as `agent` in `project`; asserts it was granted; its id.
fn granted(relay: &RelayServer, token: &str, agent: &str, project: &str, paths: &[&str]) -> i64 {
    let reply = reserve(
        relay,
        token,
        json!({"agentId": agent, "project": project, "paths": paths, "reason": "editing"}),
    );
    assert_eq!(
        reply.status, 200,
        "{agent} reserving {paths:?}: {:?}",
        reply.body
    );
    assert_eq!(reply.body["outcome"], "granted");
    reply.body["reservation"]["id"].as_i64().unwrap()
}

fn check(relay: &RelayServer, token: &str, project: &str, paths: &[&str]) -> Json {
    let reply = relay.post(
        "/v1/reservations/check",
        token,
        json!({"project": project, "paths": paths}),
    );
    assert_eq!(reply.status, 200, "check {paths:?}: {:?}", reply.body);
    reply.body
}

/// Pairs of patterns and whether they overlap (some path matches both; a pattern covers what is
/// under what it names).
const OVERLAPS: &[(&str, &str, bool)] = &[
    ("src/**", "src/a.rs", true),
    ("docs/*.md", "src/*.md", false),
    ("src/auth/**", "src/auth/login.rs", true),
    ("src/auth/**", "src/authz/x.rs", false),
    ("src", "src/main.rs", true),
    ("src/", "src/lib/mod.rs", true),
    ("README.md", "README.md", true),
    ("README.md", "docs/README.md", false),
    ("**/*.md", "docs/guide/intro.md", true),
    ("**/*.md", "src/main.rs", false),
    ("*.md", "docs/a.md", false),
    ("src/*.rs", "src/a*", true),
    ("src/a?.rs", "src/b*", false),
    ("src/[a-c]*.rs", "src/b.rs", true),
    ("src/[!a-c]*.rs", "src/b.rs", false),
    ("src/*/mod.rs", "src/net/*", true),
    ("src/*/mod.rs", "src/net/lib.rs", false),
    ("**", "anything/at/all.txt", true),
    ("a/**/z", "a/b/c/z", true),
    ("a/**/z.rs", "a/b/c/y.rs", false),
    ("**/*.md", "src/main.rs", false),
    ("**/*.md", "docs", true),
    ("a/**/b/*.rs", "a/x/**", true),
    ("*.toml", "Cargo.lock", false),
    ("tests/**/*.rs", "tests/all/main.rs", true),
    ("host/src/*.rs", "host/src/mcp/tools.rs", false),
    ("host/src/mcp", "host/src/*/tools.rs", true),
    ("[ab]*", "c*", false),
];

fn the_overlap_table_decides_who_is_refused(backend: Backend) {
    let (relay, alice, bob) = relay_with_two(backend, &[]);
    for (i, (held, asked, overlaps)) in OVERLAPS.iter().enumerate() {
        let project = format!("table-{i}");
        granted(&relay, &alice, "alice", &project, &[held]);
        let reply = reserve(
            &relay,
            &bob,
            json!({"agentId": "bob", "project": project, "paths": [asked]}),
        );
        let expected = if *overlaps { 409 } else { 200 };
        assert_eq!(
            reply.status, expected,
            "{held} held, {asked} asked: {:?}",
            reply.body
        );
        assert_eq!(
            check(&relay, &bob, &project, &[asked])["blocked"],
            *overlaps,
            "the guard's answer for {held} held, {asked} asked"
        );
    }
}

fn a_second_exclusive_reservation_is_refused_with_the_first(backend: Backend) {
    let (relay, alice, bob) = relay_with_two(backend, &[]);
    let first = granted(
        &relay,
        &alice,
        "alice",
        "repo",
        &["src/auth/**", "README.md"],
    );
    let refused = reserve(
        &relay,
        &bob,
        json!({"agentId": "bob", "project": "repo", "paths": ["src/auth/login.rs"], "ttlMs": 60_000}),
    );
    assert_eq!(refused.status, 409, "{:?}", refused.body);
    assert_eq!(refused.body["outcome"], "refused");
    assert!(refused.body["reservation"].is_null());
    let conflict = &refused.body["conflicts"][0];
    assert_eq!(conflict["reservationId"], first);
    assert_eq!(conflict["agentId"], "alice");
    assert_eq!(conflict["held"], "src/auth/**");
    assert_eq!(conflict["path"], "src/auth/login.rs");
    assert_eq!(conflict["reason"], "editing");
    assert!(conflict["expiresAt"].as_i64().unwrap() > 0);
    let bobs = relay.get("/v1/reservations?holder=bob", OPERATOR);
    assert_eq!(
        bobs.body,
        json!([]),
        "nothing was stored for the refused one"
    );

    // Another project never collides; the agent's own reservations never conflict.
    granted(&relay, &bob, "bob", "other-repo", &["src/auth/login.rs"]);
    granted(&relay, &alice, "alice", "repo", &["src/auth/login.rs"]);

    // Forced: granted, recorded, the conflict still told.
    let forced = reserve(
        &relay,
        &bob,
        json!({"agentId": "bob", "project": "repo", "paths": ["src/auth/login.rs"], "force": true}),
    );
    assert_eq!(forced.status, 200, "{:?}", forced.body);
    assert_eq!(forced.body["reservation"]["forced"], true);
    assert_eq!(forced.body["conflicts"][0]["agentId"], "alice");
}

fn shared_reservations_coexist_and_report_each_other(backend: Backend) {
    let (relay, alice, bob) = relay_with_two(backend, &[]);
    let shared = |token: &str, agent: &str| {
        reserve(
            &relay,
            token,
            json!({"agentId": agent, "project": "repo", "paths": ["docs/**"], "exclusive": false}),
        )
    };
    let first = shared(&alice, "alice");
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.body["conflicts"], json!([]));
    let second = shared(&bob, "bob");
    assert_eq!(second.status, 200, "{:?}", second.body);
    assert_eq!(second.body["conflicts"][0]["agentId"], "alice");
    assert_eq!(second.body["conflicts"][0]["exclusive"], false);
    // An exclusive one over shared ones is granted (only exclusive against exclusive refuses),
    // and the guard is not blocked by shared reservations.
    let exclusive = reserve(
        &relay,
        &bob,
        json!({"agentId": "bob", "project": "repo", "paths": ["docs/a.md"]}),
    );
    assert_eq!(exclusive.status, 200, "{:?}", exclusive.body);
    assert_eq!(
        check(&relay, OPERATOR, "repo", &["docs/b.md"])["blocked"],
        false
    );
    assert_eq!(
        check(&relay, OPERATOR, "repo", &["docs/a.md"])["blocked"],
        true
    );
    assert_eq!(
        check(&relay, &bob, "repo", &["docs/a.md"])["blocked"],
        false,
        "bob's own"
    );
}

fn expiry_renewal_and_release_end_conflicts(backend: Backend) {
    let (relay, alice, bob) = relay_with_two(backend, &[]);
    let id = reserve(
        &relay,
        &alice,
        json!({"agentId": "alice", "project": "repo", "paths": ["src/**"], "ttlMs": 60_000}),
    )
    .body["reservation"]["id"]
        .as_i64()
        .unwrap();
    relay.advance(50_000);
    let renewed = relay.post(
        &format!("/v1/reservations/{id}/renew"),
        &alice,
        json!({"agentId": "alice", "ttlMs": 120_000}),
    );
    assert_eq!(renewed.status, 200, "{:?}", renewed.body);
    assert_eq!(renewed.body["ttlMs"], 120_000);
    relay.advance(100_000);
    assert_eq!(
        check(&relay, &bob, "repo", &["src/a.rs"])["blocked"],
        true,
        "renewed"
    );
    relay.advance(30_000);
    assert_eq!(
        check(&relay, &bob, "repo", &["src/a.rs"])["blocked"],
        false,
        "expired"
    );
    let late = relay.post(
        &format!("/v1/reservations/{id}/renew"),
        &alice,
        json!({"agentId": "alice"}),
    );
    assert_eq!(late.status, 409, "{:?}", late.body);
    assert!(
        late.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );

    let again = granted(&relay, &alice, "alice", "repo", &["src/**"]);
    let by_bob = relay.post(
        &format!("/v1/reservations/{again}/release"),
        &bob,
        json!({"agentId": "bob"}),
    );
    assert_eq!(
        by_bob.status, 403,
        "bob cannot release alice's: {:?}",
        by_bob.body
    );
    let as_alice = relay.post(
        &format!("/v1/reservations/{again}/release"),
        &bob,
        json!({"agentId": "alice"}),
    );
    assert_eq!(
        as_alice.status, 403,
        "nor act as alice: {:?}",
        as_alice.body
    );
    let released = relay.post(
        &format!("/v1/reservations/{again}/release"),
        &alice,
        json!({"agentId": "alice"}),
    );
    assert_eq!(released.status, 200, "{:?}", released.body);
    assert!(released.body["releasedAt"].as_i64().is_some());
    assert_eq!(check(&relay, &bob, "repo", &["src/a.rs"])["blocked"], false);
    granted(&relay, &bob, "bob", "repo", &["src/a.rs"]);

    // Releasing by path: only the reservations holding that pattern.
    granted(&relay, &alice, "alice", "repo2", &["a/**"]);
    granted(&relay, &alice, "alice", "repo2", &["b/**"]);
    let by_path = relay.post(
        "/v1/reservations/release",
        &alice,
        json!({"agentId": "alice", "project": "repo2", "paths": ["a/**"]}),
    );
    assert_eq!(by_path.status, 200, "{:?}", by_path.body);
    assert_eq!(by_path.body.as_array().unwrap().len(), 1);
    let left = relay.get("/v1/reservations?project=repo2", &bob).body;
    assert_eq!(left[0]["paths"], json!(["b/**"]));
    assert_eq!(left.as_array().unwrap().len(), 1);
}

fn the_reaper_and_a_deletion_free_an_agents_paths(backend: Backend) {
    let (relay, alice, bob) = relay_with_two(backend, &["--setting", "stale-ttl-ms=60000"]);
    let carol = relay.register(json!({"id": "carol"}));
    granted(&relay, &alice, "alice", "repo", &["src/**"]);
    granted(&relay, &carol, "carol", "repo", &["docs/**"]);
    // Long leases, but alice goes quiet while bob and carol keep calling.
    relay.advance(50_000);
    relay.post("/v1/agents/bob/heartbeat", &bob, json!({}));
    relay.post("/v1/agents/carol/heartbeat", &carol, json!({}));
    relay.advance(20_000);
    let report = relay.reap();
    assert_eq!(report["offlineAgents"], json!(["alice"]), "{report}");
    assert_eq!(check(&relay, &bob, "repo", &["src/a.rs"])["blocked"], false);
    assert_eq!(check(&relay, &bob, "repo", &["docs/a.md"])["blocked"], true);

    let deleted = relay.delete("/v1/agents/carol", OPERATOR);
    assert_eq!(deleted.status, 200, "{:?}", deleted.body);
    assert_eq!(
        check(&relay, &bob, "repo", &["docs/a.md"])["blocked"],
        false
    );
    assert_eq!(relay.get("/v1/reservations", &bob).body, json!([]));

    let events = relay.get("/v1/activity?limit=50", OPERATOR).body;
    let seen: Vec<(String, String, String)> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"].as_str().unwrap().starts_with("reservation."))
        .map(|e| {
            (
                e["operatorId"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
                e["data"]["why"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String)> = [
        ("carol", "reservation.released", "agent deleted"),
        ("alice", "reservation.released", "agent offline"),
        ("carol", "reservation.created", ""),
        ("alice", "reservation.created", ""),
    ]
    .iter()
    .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned()))
    .collect();
    assert_eq!(seen, expected);
}

fn lists_filter_by_project_holder_and_path_and_page(backend: Backend) {
    let (relay, alice, bob) = relay_with_two(backend, &[]);
    let a1 = granted(&relay, &alice, "alice", "repo", &["src/**"]);
    let b1 = granted(&relay, &bob, "bob", "repo", &["docs/*.md"]);
    let a2 = granted(&relay, &alice, "alice", "other", &["src/**"]);
    let ids = |query: &str| -> Vec<i64> {
        let reply = relay.get(&format!("/v1/reservations{query}"), &bob);
        assert_eq!(reply.status, 200, "{query}: {:?}", reply.body);
        common::ids(&reply.body)
    };
    assert_eq!(ids(""), vec![a1, b1, a2]);
    assert_eq!(ids("?project=repo"), vec![a1, b1]);
    assert_eq!(ids("?holder=alice"), vec![a1, a2]);
    assert_eq!(ids("?project=repo&path=docs/guide.md"), vec![b1]);
    assert_eq!(ids("?path=src/main.rs"), vec![a1, a2]);
    assert_eq!(ids("?limit=2"), vec![a1, b1]);
    assert_eq!(ids(&format!("?limit=2&after={b1}")), vec![a2]);
    assert_eq!(ids(&format!("?after={a2}")), Vec::<i64>::new());
}

fn bad_input_is_refused_naming_the_field_and_writes_nothing(backend: Backend) {
    let (relay, alice, _bob) = relay_with_two(backend, &[]);
    relay.register(json!({"id": "carol"}));
    let many: Vec<String> = (0..10_000).map(|i| format!("f{i}.rs")).collect();
    let cases: Vec<(Json, u16, &str)> = vec![
        (json!({"paths": ["../x"]}), 400, "escapes the project"),
        (
            json!({"paths": ["src/../../x"]}),
            400,
            "escapes the project",
        ),
        (json!({"paths": ["/etc/passwd"]}), 400, "absolute"),
        (json!({"paths": ["C:/x"]}), 400, "absolute"),
        (json!({"paths": []}), 400, "paths is empty"),
        (json!({"paths": [""]}), 400, "paths[0]"),
        (json!({"paths": ["ok.rs", "src/[a-"]}), 400, "paths[1]"),
        (json!({"paths": ["src/a**b"]}), 400, "not a valid glob"),
        (json!({"paths": ["a//b"]}), 400, "empty segment"),
        (json!({"paths": ["a\\b"]}), 400, "backslash"),
        (json!({"paths": many}), 413, "10000 entries"),
        (json!({"paths": ["a"], "ttlMs": 0}), 400, "ttlMs"),
        (
            json!({"paths": ["a"], "ttlMs": 3_153_600_000_000i64}),
            400,
            "ttlMs",
        ),
        (json!({"paths": ["a"], "project": ""}), 400, "project"),
        (
            json!({"paths": ["a"], "agentId": "carol"}),
            403,
            "cannot act as carol",
        ),
    ];
    for (patch, status, needle) in cases {
        let mut body = json!({"agentId": "alice", "project": "repo"});
        for (key, value) in patch.as_object().unwrap() {
            body[key] = value.clone();
        }
        let reply = reserve(&relay, &alice, body.clone());
        assert_eq!(reply.status, status, "{patch}: {:?}", reply.body);
        let message = reply.body["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(needle), "{needle} in {message}");
    }
    assert_eq!(relay.get("/v1/reservations", OPERATOR).body, json!([]));
    let anonymous = relay.request("GET", "/v1/reservations", None, None);
    assert_eq!(anonymous.status, 401);
    let as_other = relay.post(
        "/v1/reservations/check",
        &alice,
        json!({"project": "repo", "paths": ["a"], "agentId": "carol"}),
    );
    assert_eq!(as_other.status, 403, "{:?}", as_other.body);
}

crate::on_both_backends!(
    the_overlap_table_decides_who_is_refused,
    a_second_exclusive_reservation_is_refused_with_the_first,
    shared_reservations_coexist_and_report_each_other,
    expiry_renewal_and_release_end_conflicts,
    the_reaper_and_a_deletion_free_an_agents_paths,
    lists_filter_by_project_holder_and_path_and_page,
    bad_input_is_refused_naming_the_field_and_writes_nothing,
);
