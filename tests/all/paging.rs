//! Every list is paged and bounded in bytes (issue 14, points 5 and 6): a page holds at most
//! `limit` items and stops before its rows would pass the page budget (`page-bytes`, 1 MiB by
//! default), and the last item of a page is where the next one starts. Lists that used to trap
//! at the call's 64 MiB now answer 200 with partial pages.

use crate::common;

use common::{Json, OPERATOR, RelayServer, ids, item_ids, json, resident_mib};

/// The largest body a message may have.
const LARGE_BODY: usize = 256 * 1024;

/// A page's JSON may exceed the stored bytes it was cut at by its keys and escapes, not by more.
const PAGE_JSON_BOUND: usize = 2 << 20;

/// A list read from its first page to its empty one.
struct Walk {
    items: Vec<Json>,
    pages: usize,
    largest_page: usize,
}

/// Reads `path` page by page, each next page `cursor=<the last item's field>`, until a page is
/// empty; every page must answer 200.
fn walk(relay: &RelayServer, path: &str, cursor: &str, field: &str) -> Walk {
    let mut walk = Walk {
        items: Vec::new(),
        pages: 0,
        largest_page: 0,
    };
    let mut next: Option<String> = None;
    let separator = if path.contains('?') { '&' } else { '?' };
    loop {
        let url = match &next {
            Some(at) => format!("{path}{separator}{cursor}={at}"),
            None => path.to_owned(),
        };
        let page = relay.get(&url, OPERATOR);
        assert_eq!(page.status, 200, "GET {url}: {:?}", page.body);
        let items = page.body.as_array().unwrap().clone();
        if items.is_empty() {
            return walk;
        }
        walk.pages += 1;
        walk.largest_page = walk.largest_page.max(page.body.to_string().len());
        let last = &items[items.len() - 1][field];
        next = Some(
            last.as_str()
                .map_or_else(|| last.to_string(), str::to_owned),
        );
        walk.items.extend(items);
        assert!(
            walk.pages < 10_000,
            "GET {path} never reached an empty page"
        );
    }
}

fn large_body(tag: usize) -> String {
    let mut body = format!("{tag}:");
    body.push_str(&"x".repeat(LARGE_BODY - body.len()));
    body
}

/// A relay whose acknowledged writes need not survive a power loss: these tests write tens of
/// megabytes and are about reads.
fn quick_relay() -> RelayServer {
    RelayServer::start_with(&["--synchronous", "off"])
}

#[test]
fn a_long_thread_of_large_replies_is_read_in_pages() {
    let relay = quick_relay();
    relay.register(json!({"id": "alice"}));
    let root = relay.send(json!({"from": "user", "to": "alice", "body": "root"}));
    let root_id = root.body["message"]["id"].as_i64().unwrap();
    let mut sent = vec![root_id];
    for n in 0..260 {
        let reply = relay.send(
            json!({"from": "user", "to": "alice", "body": large_body(n), "replyTo": root_id}),
        );
        assert_eq!(reply.status, 201, "reply {n}: {:?}", reply.body);
        sent.push(reply.body["message"]["id"].as_i64().unwrap());
    }

    let first = relay.get(&format!("/v1/threads/{root_id}"), OPERATOR);
    assert_eq!(first.status, 200, "the thread answers: {:?}", first.body);
    let first_len = first.body.as_array().unwrap().len();
    assert!(
        (1..sent.len()).contains(&first_len),
        "the first page is partial, not {first_len} of {}",
        sent.len()
    );

    let pages = walk(&relay, &format!("/v1/threads/{root_id}"), "since", "id");
    assert_eq!(
        item_ids(&pages.items),
        sent,
        "the pages hold the thread in order, once each"
    );
    assert!(
        pages.largest_page <= PAGE_JSON_BOUND,
        "a page of {} bytes passes the bound",
        pages.largest_page
    );
}

#[test]
fn many_agents_with_large_meta_are_listed_in_pages_and_groups_still_get_messages() {
    let relay = quick_relay();
    let pad = "m".repeat(64_980);
    for n in 0..600 {
        let reply = relay.post(
            "/v1/agents",
            OPERATOR,
            json!({"id": format!("agent-{n:03}"), "tags": ["crew"], "capabilities": ["build"],
                   "meta": {"pad": pad}}),
        );
        assert_eq!(reply.status, 201, "agent {n}: {:?}", reply.body);
    }

    let first = relay.get("/v1/agents", OPERATOR);
    assert_eq!(
        first.status, 200,
        "the agent list answers: {:?}",
        first.body
    );
    assert!(first.body.as_array().unwrap().len() < 600, "a partial page");
    let pages = walk(&relay, "/v1/agents", "after", "id");
    let listed: Vec<&str> = pages
        .items
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    let mut expected: Vec<String> = (0..600).map(|n| format!("agent-{n:03}")).collect();
    expected.extend(["system".to_owned(), "user".to_owned()]);
    assert_eq!(listed, expected, "every agent once, in id order");
    assert!(pages.largest_page <= PAGE_JSON_BOUND);

    let tagged = walk(&relay, "/v1/agents?tag=crew&limit=500", "after", "id");
    assert_eq!(tagged.items.len(), 600, "the tag filter pages too");

    for to in ["broadcast", "tag:crew", "cap:build"] {
        let sent = relay.send(json!({"from": "user", "to": to, "body": "standup"}));
        assert_eq!(sent.status, 201, "send to {to}: {:?}", sent.body);
        assert_eq!(
            sent.body["recipients"].as_array().unwrap().len(),
            600,
            "{to} reaches every agent"
        );
    }
}

#[test]
fn an_inbox_of_large_bodies_answers_a_partial_page_at_limit_200() {
    let relay = quick_relay();
    relay.register(json!({"id": "alice"}));
    let mut sent = Vec::new();
    for n in 0..200 {
        let reply = relay.send(json!({"from": "user", "to": "alice", "body": large_body(n)}));
        assert_eq!(reply.status, 201, "message {n}: {:?}", reply.body);
        sent.push(reply.body["message"]["id"].as_i64().unwrap());
    }
    let first = relay.get("/v1/agents/alice/inbox?limit=200", OPERATOR);
    assert_eq!(first.status, 200, "the inbox answers: {:?}", first.body);
    let page = ids(&first.body);
    assert!(!page.is_empty() && page.len() < 200, "a partial page");
    assert_eq!(page, sent[..page.len()], "the page is the oldest messages");

    let pages = walk(&relay, "/v1/agents/alice/inbox?limit=200", "since", "id");
    assert_eq!(
        item_ids(&pages.items),
        sent,
        "since the last id goes on where the page stopped"
    );
    assert!(pages.largest_page <= PAGE_JSON_BOUND);
}

#[test]
fn the_page_budget_is_a_setting() {
    let relay = RelayServer::start_with(&["--setting", "page-bytes=65536"]);
    relay.register(json!({"id": "alice"}));
    for n in 0..4 {
        let body = "y".repeat(40_000) + &n.to_string();
        assert_eq!(
            relay
                .send(json!({"from": "user", "to": "alice", "body": body}))
                .status,
            201
        );
    }
    let page = relay.get("/v1/agents/alice/inbox", OPERATOR);
    assert_eq!(
        page.body.as_array().unwrap().len(),
        1,
        "64 KiB hold one 40 KB message, not two"
    );
}

#[test]
fn a_limit_out_of_bounds_is_refused() {
    let relay = RelayServer::start();
    for path in [
        "/v1/agents?limit=0",
        "/v1/agents?limit=501",
        "/v1/channels?limit=501",
        "/v1/orchestrators?limit=0",
        "/v1/pairs?limit=501",
        "/v1/tasks?limit=501",
    ] {
        let reply = relay.get(path, OPERATOR);
        assert_eq!(reply.status, 400, "GET {path}: {:?}", reply.body);
    }
}

#[test]
fn every_list_goes_on_from_its_last_item() {
    let relay = RelayServer::start();
    let alice = relay.register(json!({"id": "alice"}));
    for name in ["zed", "amy", "Kim"] {
        relay.register(
            json!({"id": format!("telegram:{name}"), "name": name, "kind": "channel",
                              "meta": {"provider": "telegram"}}),
        );
    }
    let channels = walk(&relay, "/v1/channels?limit=1", "after", "id");
    let names: Vec<&str> = channels
        .items
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["amy", "Kim", "zed"], "channels by name, one a page");

    for (n, conversation) in ["c1", "c2", "c3"].iter().enumerate() {
        let put = relay.put(
            "/v1/channels/telegram:amy/bindings",
            OPERATOR,
            json!({"conversationId": conversation, "target": {"type": "agent", "id": "alice"},
                   "priority": n}),
        );
        assert_eq!(put.status, 200, "{:?}", put.body);
    }
    let bindings = walk(
        &relay,
        "/v1/channels/telegram:amy/bindings?limit=1",
        "after",
        "id",
    );
    let whole = relay.get("/v1/channels/telegram:amy/bindings", OPERATOR);
    assert_eq!(
        Json::Array(bindings.items.clone()),
        whole.body,
        "one a page, the same bindings in the same order as the whole list"
    );
    let conversations: Vec<&str> = bindings
        .items
        .iter()
        .filter_map(|b| b["conversationId"].as_str())
        .collect();
    assert_eq!(conversations, ["c3", "c2", "c1"], "highest priority first");
    let put = relay.put(
        "/v1/channels/telegram:Kim/bindings",
        OPERATOR,
        json!({"conversationId": "k1", "target": {"type": "agent", "id": "alice"}}),
    );
    assert_eq!(put.status, 200, "{:?}", put.body);
    let every = walk(&relay, "/v1/bindings?limit=1", "after", "id");
    let whole = relay.get("/v1/bindings", OPERATOR);
    assert_eq!(
        Json::Array(every.items.clone()),
        whole.body,
        "every channel's bindings, one a page, as the whole list orders them"
    );
    let conversations: Vec<&str> = every
        .items
        .iter()
        .filter_map(|b| b["conversationId"].as_str())
        .collect();
    assert_eq!(
        conversations,
        ["k1", "c3", "c2", "c1"],
        "by channel (telegram:Kim before telegram:amy), then route order"
    );

    for (id, host) in [("o1", "b.local"), ("o2", "a.local"), ("o3", "c.local")] {
        let reply = relay.post(
            "/v1/orchestrators",
            OPERATOR,
            json!({"id": id, "hostname": host, "providers": ["claude"], "baseDir": "/srv"}),
        );
        assert!(reply.status < 300, "{:?}", reply.body);
    }
    let orchestrators = walk(&relay, "/v1/orchestrators?limit=1", "after", "id");
    let hosts: Vec<&str> = orchestrators
        .items
        .iter()
        .map(|o| o["hostname"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, ["a.local", "b.local", "c.local"]);

    for key in ["k1", "k2", "k3"] {
        let event = json!({"title": format!("build {key}"), "dedupeKey": key, "target": "alice"});
        let reply = relay.post("/v1/integrations/ci/events", OPERATOR, event);
        assert_eq!(reply.status, 201, "{:?}", reply.body);
    }
    let tasks = walk(&relay, "/v1/tasks?limit=1", "after", "id");
    assert_eq!(
        item_ids(&tasks.items),
        [3, 2, 1],
        "tasks most recently changed first"
    );
    let resolved = relay.put(
        "/v1/tasks/1/status",
        OPERATOR,
        json!({"status": "resolved"}),
    );
    assert_eq!(resolved.status, 200, "{:?}", resolved.body);
    let history = walk(&relay, "/v1/tasks/1/events?limit=1", "since", "id");
    let kinds: Vec<&str> = history
        .items
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["created", "resolved"]);

    for partner in ["bob", "carol", "dave"] {
        relay.register(json!({"id": partner}));
        let pair = relay.post(
            "/v1/pairs",
            &alice,
            json!({"requesterId": "alice", "partnerId": partner}),
        );
        assert_eq!(pair.status, 200, "{:?}", pair.body);
    }
    let pairs = walk(&relay, "/v1/pairs?limit=1", "before", "id");
    assert_eq!(item_ids(&pairs.items), [3, 2, 1], "pairs newest first");

    for n in 0..3 {
        let reply = relay.post(
            "/v1/activity",
            OPERATOR,
            json!({"operatorId": "ops", "action": format!("step {n}")}),
        );
        assert!(reply.status < 300, "{:?}", reply.body);
    }
    let activity = walk(&relay, "/v1/activity?limit=1", "before", "id");
    assert_eq!(activity.items.len(), 3);

    let unknown = relay.get("/v1/channels?after=telegram:nobody", OPERATOR);
    assert_eq!(
        unknown.status, 400,
        "a cursor that names nothing is refused, not read as the end"
    );
}

/// Alice's inbox holding 200 of the largest messages (50 MB), and her token.
fn inbox_of_large_messages(relay: &RelayServer) -> String {
    let alice = relay.register(json!({"id": "alice"}));
    relay.register(json!({"id": "bob"}));
    for n in 0..200 {
        let reply = relay.send(json!({"from": "user", "to": "alice", "body": large_body(n)}));
        assert_eq!(reply.status, 201, "message {n}: {:?}", reply.body);
    }
    alice
}

/// 32 clients at once, each reading `inbox?limit=200` three times: the statuses they got.
fn thirty_two_large_readers(relay: &RelayServer, alice: &str) -> Vec<u16> {
    std::thread::scope(|scope| {
        let readers: Vec<_> = (0..32)
            .map(|_| {
                scope.spawn(|| {
                    (0..3)
                        .map(|_| relay.get("/v1/agents/alice/inbox?limit=200", alice).status)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        readers
            .into_iter()
            .flat_map(|reader| reader.join().unwrap())
            .collect()
    })
}

/// The bound docs/limits.md states for default flags.
const RESIDENT_BOUND_MIB: u64 = 512;

#[test]
fn thirty_two_large_inbox_reads_at_once_stay_under_the_memory_bound_and_small_sends_go_on() {
    let relay = quick_relay();
    let alice = inbox_of_large_messages(&relay);
    let pid = relay.pid();
    let done = std::sync::atomic::AtomicBool::new(false);
    let (statuses, peak, sends) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(resident_mib(pid));
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            peak
        });
        let sender = scope.spawn(|| {
            let mut took = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let started = std::time::Instant::now();
                let reply = relay.send(json!({"from": "user", "to": "bob", "body": "small"}));
                assert_eq!(
                    reply.status, 201,
                    "a small send during the reads: {:?}",
                    reply.body
                );
                took.push(started.elapsed());
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            took
        });
        let statuses = thirty_two_large_readers(&relay, &alice);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (statuses, sampler.join().unwrap(), sender.join().unwrap())
    });
    assert!(
        statuses.iter().all(|&s| s == 200),
        "every read answered: {statuses:?}"
    );
    // Each of these reads made SQLite sort every matching row, bodies and all, in memory
    // before the page was cut: 1.9-2.0 GB at the peak, and small sends waited 3.7 s.
    assert!(
        peak <= RESIDENT_BOUND_MIB,
        "peak resident memory {peak} MiB, above the stated {RESIDENT_BOUND_MIB} MiB"
    );
    let mut sends = sends;
    sends.sort();
    // The bound is the regression's (3.7 s), with room for a busy 2-core CI machine: a quiet
    // one gives ~20 ms, a loaded one once 342 ms.
    let median = sends[sends.len() / 2];
    assert!(
        median < std::time::Duration::from_millis(1_000),
        "a small send's median during the reads was {median:?} ({} sends)",
        sends.len()
    );
}

#[test]
fn under_a_small_memory_budget_large_reads_wait_their_turn_instead_of_failing() {
    let relay = RelayServer::start_with(&["--synchronous", "off", "--calls-memory-mib", "16"]);
    let alice = inbox_of_large_messages(&relay);
    // The budget binds only when reads overlap; on a loaded machine one round of readers can run
    // one after another, so up to five rounds are tried, and every read of every round answers.
    let refusals = || {
        relay
            .logs()
            .iter()
            .filter(|line| line.contains("memory allocation of"))
            .count()
    };
    for _ in 0..5 {
        let statuses = thirty_two_large_readers(&relay, &alice);
        assert!(
            statuses.iter().all(|&s| s == 200),
            "every read answered: {statuses:?}"
        );
        if refusals() > 0 {
            break;
        }
    }
    // The budget did bind: the guest's allocator reports each growth it was refused.
    let refused = refusals();
    assert!(refused > 0, "no read ever found the budget spent");
}
