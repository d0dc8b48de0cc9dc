//! Full-text search over messages (docs/http-api.md, "Search"): words in subjects and bodies,
//! ranking and snippets, who may find what, paging, malformed queries, and an existing database
//! indexed by its schema step, over real HTTP.

use crate::common;

use common::{Backend, Json, OPERATOR, RelayServer, json};

fn search(relay: &RelayServer, token: &str, query: &str) -> common::Reply {
    relay.get(&format!("/v1/messages/search?{query}"), token)
}

/// The ids of the hits, best first.
fn found(relay: &RelayServer, token: &str, query: &str) -> Vec<i64> {
    let reply = search(relay, token, query);
    assert_eq!(reply.status, 200, "{query}: {:?}", reply.body);
    reply
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|hit| hit["message"]["id"].as_i64().unwrap())
        .collect()
}

fn sent(relay: &RelayServer, message: Json) -> i64 {
    let reply = relay.send(message);
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    common::id_of(&reply)
}

fn words_in_bodies_and_subjects_are_found_ranked_and_highlighted(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    relay.register(json!({"id": "alice"}));
    let in_body = sent(
        &relay,
        json!({"from": "user", "to": "alice", "body": "We decided to keep the retry budget at three."}),
    );
    let in_subject = sent(
        &relay,
        json!({"from": "user", "to": "alice", "subject": "Retry budget decision", "body": "see thread"}),
    );
    let neither = sent(
        &relay,
        json!({"from": "user", "to": "alice", "body": "lunch at noon"}),
    );
    let hits = search(&relay, OPERATOR, "q=budget").body;
    let ids: Vec<i64> = hits
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["message"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{hits}");
    assert!(ids.contains(&in_body) && ids.contains(&in_subject));
    assert!(!ids.contains(&neither));
    for hit in hits.as_array().unwrap() {
        assert!(
            hit["snippet"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains("**budget**"),
            "{hit}"
        );
        assert!(hit["score"].as_f64().unwrap() > 0.0, "{hit}");
    }
    let scores: Vec<f64> = hits
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["score"].as_f64().unwrap())
        .collect();
    assert!(scores[0] >= scores[1], "best first: {scores:?}");

    assert_eq!(found(&relay, OPERATOR, "q=decided"), vec![in_body]);
    assert_eq!(found(&relay, OPERATOR, "q=DECIS*"), vec![in_subject]);
    assert_eq!(
        found(&relay, OPERATOR, "q=%22retry%20budget%22%20-three"),
        vec![in_subject]
    );
    assert_eq!(
        found(&relay, OPERATOR, "q=lunch%20OR%20decided").len(),
        2,
        "either word"
    );
    assert_eq!(
        found(&relay, OPERATOR, "q=budget%20lunch"),
        Vec::<i64>::new()
    );
}

fn an_agent_finds_only_what_it_may_read(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let alice = relay.register(json!({"id": "alice", "tags": ["dev"]}));
    let bob = relay.register(json!({"id": "bob"}));
    let to_alice = sent(
        &relay,
        json!({"from": "user", "to": "alice", "body": "secret plan alpha"}),
    );
    let to_bob = sent(
        &relay,
        json!({"from": "user", "to": "bob", "body": "secret plan beta"}),
    );
    let by_alice = sent(
        &relay,
        json!({"from": "alice", "to": "user", "body": "secret plan gamma"}),
    );
    let to_tag = sent(
        &relay,
        json!({"from": "user", "to": "tag:dev", "body": "secret plan delta"}),
    );
    let broadcast = sent(
        &relay,
        json!({"from": "user", "to": "broadcast", "body": "secret plan all"}),
    );
    let mut mine = found(&relay, &alice, "q=secret");
    mine.sort_unstable();
    assert_eq!(mine, vec![to_alice, by_alice, to_tag, broadcast]);
    assert!(
        !found(&relay, &alice, "q=beta").contains(&to_bob),
        "never bob's"
    );
    let mut bobs = found(&relay, &bob, "q=plan");
    bobs.sort_unstable();
    assert_eq!(bobs, vec![to_bob, broadcast]);
    assert_eq!(
        found(&relay, OPERATOR, "q=secret").len(),
        5,
        "the operator: all"
    );
    assert_eq!(search(&relay, "nobody's-token", "q=secret").status, 401);
}

fn a_search_matching_everything_is_paged(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    relay.register(json!({"id": "alice"}));
    let mut all: Vec<i64> = (0..45)
        .map(|i| {
            sent(
                &relay,
                json!({"from": "user", "to": "alice", "body": format!("status report {i}")}),
            )
        })
        .collect();
    assert_eq!(
        found(&relay, OPERATOR, "q=report").len(),
        20,
        "20 by default"
    );
    let mut seen = Vec::new();
    let mut offset = 0;
    loop {
        let page = found(
            &relay,
            OPERATOR,
            &format!("q=report&limit=16&offset={offset}"),
        );
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 16);
        offset += page.len();
        seen.extend(page);
    }
    seen.sort_unstable();
    all.sort_unstable();
    assert_eq!(seen, all, "every message once");
    // Large bodies: a page stops at the byte budget, and the next one goes on from there.
    let big = "report ".repeat(30_000);
    let bigs: Vec<i64> = (0..6)
        .map(|_| {
            sent(
                &relay,
                json!({"from": "user", "to": "alice", "subject": "huge", "body": big}),
            )
        })
        .collect();
    let first = found(&relay, OPERATOR, "q=huge&limit=100");
    assert!(
        !first.is_empty() && first.len() < bigs.len(),
        "{}",
        first.len()
    );
    let rest = found(
        &relay,
        OPERATOR,
        &format!("q=huge&limit=100&offset={}", first.len()),
    );
    assert_eq!(first.len() + rest.len(), bigs.len());
}

fn malformed_queries_are_refused_naming_the_problem(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    sent(
        &relay,
        json!({"from": "user", "to": "user", "body": "anything"}),
    );
    let long = "word ".repeat(200);
    let many = (0..20)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join("%20");
    for (query, status, needle) in [
        ("q=", 400, "q is empty"),
        ("q=%22unclosed", 400, "unclosed quote"),
        ("q=OR", 400, "OR needs a word"),
        ("q=a%20OR", 400, "OR needs a word"),
        ("q=-a", 400, "not excluded"),
        ("q=***", 400, "no letters or digits"),
        ("q=NEAR(a%20b)%20%5E", 400, "no letters or digits"),
        (&format!("q={long}"), 413, "longer than 500"),
        (&format!("q={many}"), 413, "at most 16"),
        ("q=a&offset=20000", 400, "offset"),
        ("q=a&limit=0", 400, "limit"),
        ("q=a&limit=101", 400, "limit"),
    ] {
        let reply = search(&relay, OPERATOR, query);
        assert_eq!(reply.status, status, "{query}: {:?}", reply.body);
        let message = reply.body["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(needle), "{query}: {needle} in {message}");
    }
    // What FTS5 or tsquery would read as syntax is only words here.
    assert_eq!(
        search(&relay, OPERATOR, "q=anything%20AND%20NOT%20(x:*)").status,
        200
    );
}

crate::on_both_backends!(
    words_in_bodies_and_subjects_are_found_ranked_and_highlighted,
    an_agent_finds_only_what_it_may_read,
    a_search_matching_everything_is_paged,
    malformed_queries_are_refused_naming_the_problem,
);

/// A database from before the search index (schema 7, no index, no triggers) gets its messages
/// indexed by the upgrade step.
#[test]
fn an_existing_database_is_indexed_by_its_schema_step() {
    let relay = RelayServer::start();
    let old = sent(
        &relay,
        json!({"from": "user", "to": "user", "body": "archived decision about caching"}),
    );
    let dir = relay.stop();
    let db = dir.path().join("relay.db");
    let connection = rusqlite::Connection::open(&db).unwrap();
    connection
        .execute_batch(
            "DROP TRIGGER message_search_insert; DROP TRIGGER message_search_delete;
             DROP TRIGGER message_search_update; DROP TABLE message_search;
             DROP TABLE reservations;
             UPDATE relay_settings SET value = '7' WHERE key = 'schema-version';",
        )
        .unwrap();
    drop(connection);
    let relay = RelayServer::start_in(dir, &[]);
    assert_eq!(found(&relay, OPERATOR, "q=caching"), vec![old]);
    let new = sent(
        &relay,
        json!({"from": "user", "to": "user", "body": "fresh caching note"}),
    );
    let mut both = found(&relay, OPERATOR, "q=caching");
    both.sort_unstable();
    assert_eq!(both, vec![old, new]);
}
