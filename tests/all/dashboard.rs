//! What a dashboard lives on (docs/http-api.md §10): the operator's event stream `GET /v1/stream`
//! (every message as it commits, a `change` after other commits, resuming after
//! `Last-Event-ID`, `reload` for a reader past its bound, the operator's alone) and `GET /metrics`.

use crate::common;

use std::time::{Duration, Instant};

use common::sse::EventStream;
use common::{Backend, Json, OPERATOR, RelayServer, id_of, json};

/// The operator stream, resuming after `last_event_id` when given.
fn operator_stream(relay: &RelayServer, last_event_id: Option<i64>) -> EventStream {
    EventStream::open(relay, "/v1/stream", OPERATOR, last_event_id)
}

fn send_to(relay: &RelayServer, agent: &str, body: &str) -> i64 {
    id_of(&relay.send(json!({"from": "user", "to": agent, "body": body})))
}

fn the_operator_stream_carries_a_send_within_a_second_and_then_a_change(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let alice = relay.register(json!({"id": "alice"}));
    let old: Vec<i64> = (0..3)
        .map(|n| send_to(&relay, "alice", &format!("old {n}")))
        .collect();
    let mut stream = operator_stream(&relay, None);

    let started = Instant::now();
    let sent = id_of(&relay.send(json!({
        "from": "user", "to": "alice", "body": "now", "claimable": true
    })));
    let (id, message) = stream
        .next_message(Duration::from_secs(1))
        .expect("the send reached the operator stream within 1 s");
    assert_eq!(
        id, sent,
        "a fresh stream starts at the present, not at {old:?}"
    );
    assert_eq!(message["body"], "now");
    assert_eq!(message["to"], "alice");
    assert!(started.elapsed() < Duration::from_secs(1));

    // Every wake-up ends with one `change`, also one that brought messages (a commit may hold
    // a claim beside a send); a change also follows the check for other processes' commits.
    let after_send = stream
        .next(Duration::from_secs(5))
        .expect("a change after the send");
    assert_eq!(after_send.kind.as_deref(), Some("change"), "{after_send:?}");
    while let Some(event) = stream.next(Duration::from_millis(600)) {
        assert_eq!(event.kind.as_deref(), Some("change"), "{event:?}");
    }
    // A claim adds no message: the stream says that something changed.
    let claimed = relay.post(
        &format!("/v1/messages/{sent}/claim"),
        &alice,
        json!({"agentId": "alice"}),
    );
    assert_eq!(claimed.status, 200, "{:?}", claimed.body);
    let change = stream
        .next(Duration::from_secs(1))
        .expect("a change event within 1 s of the claim");
    assert_eq!(change.kind.as_deref(), Some("change"), "{change:?}");
    assert_eq!(
        change.id, None,
        "a change carries no id: resuming keeps the message cursor"
    );
}

fn a_resumed_operator_stream_carries_exactly_what_was_missed(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    relay.register(json!({"id": "alice"}));
    relay.register(json!({"id": "bob"}));
    let mut stream = operator_stream(&relay, None);
    let first = vec![send_to(&relay, "alice", "a1"), send_to(&relay, "bob", "b1")];
    assert_eq!(stream.take_ids(2), first);
    drop(stream);

    let missed = vec![
        send_to(&relay, "bob", "b2"),
        id_of(&relay.send(json!({"from": "alice", "to": "broadcast", "body": "all"}))),
        send_to(&relay, "alice", "a2"),
    ];
    let mut resumed = operator_stream(&relay, Some(first[1]));
    assert_eq!(resumed.take_ids(3), missed, "what was missed, in order");
    assert_eq!(
        resumed.next_message(Duration::from_millis(500)),
        None,
        "nothing repeated or beyond"
    );
    let after = send_to(&relay, "bob", "b3");
    assert_eq!(resumed.take_ids(1), [after], "and then it follows on");

    let from_start = relay.get("/v1/stream?since=yesterday", OPERATOR);
    assert_eq!(from_start.status, 400, "{:?}", from_start.body);
    let unknown = relay.get("/v1/stream?kind=chat", OPERATOR);
    assert_eq!(unknown.status, 400, "{:?}", unknown.body);
}

fn the_operator_stream_is_the_operators_alone(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let alice = relay.register(json!({"id": "alice"}));
    let agent = relay.get("/v1/stream", &alice);
    assert_eq!(agent.status, 403, "{:?}", agent.body);
    assert_eq!(agent.code(), "forbidden");
    let none = relay.request("GET", "/v1/stream", None, None);
    assert_eq!(none.status, 401, "{:?}", none.body);
    assert_eq!(none.code(), "unauthorized");
    let unknown = relay.get("/v1/stream", "relay_not-a-token");
    assert_eq!(unknown.status, 401, "{:?}", unknown.body);
    let post = relay.post("/v1/stream", OPERATOR, json!({}));
    assert_eq!(post.status, 405, "{:?}", post.body);
    assert_eq!(post.code(), "method_not_allowed");
}

fn a_reader_further_behind_than_the_bound_is_told_to_reload(backend: Backend) {
    let relay = RelayServer::start_on(backend, &["--operator-stream-backlog", "4"]);
    relay.register(json!({"id": "alice"}));
    let sent: Vec<i64> = (0..10)
        .map(|n| send_to(&relay, "alice", &format!("m{n}")))
        .collect();

    let mut near = operator_stream(&relay, Some(sent[5]));
    assert_eq!(
        near.take_ids(4),
        sent[6..],
        "four behind is within the bound"
    );

    let mut far = operator_stream(&relay, Some(sent[0]));
    let event = far
        .next(Duration::from_secs(10))
        .expect("a reader nine behind gets an event");
    assert_eq!(event.kind.as_deref(), Some("reload"), "{event:?}");
    let data: Json = serde_json::from_str(&event.data).unwrap();
    assert_eq!(data["backlog"], 4, "{data}");
    assert_eq!(
        far.next(Duration::from_secs(10)),
        None,
        "the stream ends after reload"
    );
    assert!(far.ended, "the server closed the stream");
}

fn metrics_parse_as_prometheus_text_and_count_a_send(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let alice = relay.register(json!({"id": "alice"}));
    let sends = r#"relay_http_requests_total{method="POST",route="/v1/messages",status="201"}"#;
    let before = relay.scrape();
    send_to(&relay, "alice", "counted");
    let after = relay.scrape();
    assert_eq!(after.value(sends) - before.value(sends), 1.0, "{after:?}");
    let observed = "relay_http_request_duration_seconds_count";
    assert!(after.value(observed) >= 2.0, "{after:?}");
    assert!(after.has("relay_calls_in_flight"), "{after:?}");

    let agent = relay.get("/metrics", &alice);
    assert_eq!(agent.status, 403, "{:?}", agent.body);
    let none = relay.request("GET", "/metrics", None, None);
    assert_eq!(none.status, 401, "{:?}", none.body);
}

/// The counts of `GET /v1/stats` as the gauges name them: `(series, value)`.
fn stats_series(stats: &Json) -> Vec<(String, f64)> {
    let mut series = Vec::new();
    for (family, label) in [
        ("agents", "status"),
        ("messages", "state"),
        ("jobs", "state"),
    ] {
        for (name, count) in stats[family].as_object().expect("an object of counts") {
            series.push((
                format!("relay_{family}{{{label}=\"{name}\"}}"),
                count.as_f64().expect("a count"),
            ));
        }
    }
    series
}

/// Scrapes until every series of `expected` has its value (the counts are asked for at most
/// once a second); fails after 5 s with the last page.
fn until_counted(relay: &RelayServer, expected: &[(&str, f64)]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let page = relay.scrape();
        if expected
            .iter()
            .all(|(series, value)| page.get(series) == Some(*value))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not {expected:?} after 5 s: {page:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `GET /v1/stats` counts agents by status, messages read or not and jobs by state, as the
/// listings select them; `/metrics` shows the same counts as gauges and follows a send, a
/// claim, a completion, a dead letter and a lease running out.
fn agents_messages_and_jobs_are_counted_by_state(backend: Backend) {
    // One claim without completion dead-letters a job.
    let relay = RelayServer::start_on(backend, &["--setting", "max-attempts=1"]);
    let alice = relay.register(json!({"id": "alice"}));
    relay.register(json!({"id": "bob", "status": "busy"}));
    let stats = relay.get("/v1/stats", OPERATOR);
    assert_eq!(stats.status, 200, "{:?}", stats.body);
    // alice, bob and the built-in agents (user, system).
    let agents_online = stats.body["agents"]["online"].as_f64().unwrap();
    assert!(agents_online >= 1.0, "{:?}", stats.body);
    assert_eq!(stats.body["agents"]["busy"], 1, "{:?}", stats.body);
    assert_eq!(
        stats.body["jobs"],
        json!({"open": 0, "claimed": 0, "completed": 0, "dead": 0, "cancelled": 0, "blocked": 0,
            "scheduled": 0})
    );
    assert_eq!(stats.body["messages"], json!({"unread": 0, "read": 0}));
    let page = relay.scrape();
    for (series, value) in stats_series(&stats.body) {
        assert_eq!(page.get(&series), Some(value), "{series}: {page:?}");
    }

    let chat = send_to(&relay, "alice", "hello");
    send_to(&relay, "alice", "unread");
    let read = relay.post(
        &format!("/v1/messages/{chat}/read"),
        &alice,
        json!({"agentId": "alice"}),
    );
    assert_eq!(read.status, 200, "{:?}", read.body);
    let job = |body: &str| {
        id_of(&relay.send(json!({"from": "user", "to": "alice", "body": body, "claimable": true})))
    };
    let done = job("done");
    let held = job("held");
    let open = job("open");
    let later = relay.send(json!({"from": "user", "to": "alice", "body": "later",
        "claimable": true, "delayMs": 600_000}));
    assert_eq!(later.status, 201, "{:?}", later.body);
    for id in [done, held] {
        let claimed = relay.post(
            &format!("/v1/messages/{id}/claim"),
            &alice,
            json!({"agentId": "alice", "leaseMs": 60_000}),
        );
        assert_eq!(claimed.status, 200, "{:?}", claimed.body);
    }
    let completed = relay.post(
        &format!("/v1/messages/{done}/complete"),
        &alice,
        json!({"agentId": "alice"}),
    );
    assert_eq!(completed.status, 200, "{:?}", completed.body);

    let stats = relay.get("/v1/stats", OPERATOR).body;
    assert_eq!(
        stats["messages"],
        json!({"unread": 1, "read": 1}),
        "{stats}"
    );
    assert_eq!(
        stats["jobs"],
        json!({"open": 1, "claimed": 1, "completed": 1, "dead": 0, "cancelled": 0, "blocked": 0,
            "scheduled": 1}),
        "{stats}"
    );
    // The counts are the listings' lengths.
    for state in [
        "open",
        "claimed",
        "completed",
        "dead",
        "cancelled",
        "blocked",
        "scheduled",
    ] {
        let listed = relay.get(&format!("/v1/messages?state={state}"), OPERATOR);
        assert_eq!(
            listed.body.as_array().unwrap().len() as i64,
            stats["jobs"][state].as_i64().unwrap(),
            "{state}: {:?}",
            listed.body
        );
    }
    until_counted(
        &relay,
        &[
            (r#"relay_jobs{state="open"}"#, 1.0),
            (r#"relay_jobs{state="claimed"}"#, 1.0),
            (r#"relay_jobs{state="completed"}"#, 1.0),
            (r#"relay_jobs{state="scheduled"}"#, 1.0),
            (r#"relay_messages{state="unread"}"#, 1.0),
            (r#"relay_messages{state="read"}"#, 1.0),
        ],
    );

    // A lease that ran out makes its job open again, counted at the relay's time.
    relay.advance(61_000);
    let stats = relay.get("/v1/stats", OPERATOR).body;
    assert_eq!(stats["jobs"]["open"], 2, "{stats}");
    assert_eq!(stats["jobs"]["claimed"], 0, "{stats}");
    until_counted(
        &relay,
        &[
            (r#"relay_jobs{state="open"}"#, 2.0),
            (r#"relay_jobs{state="claimed"}"#, 0.0),
        ],
    );

    // The reaper dead-letters it: it had its one attempt.
    relay.reap();
    let stats = relay.get("/v1/stats", OPERATOR).body;
    assert_eq!(
        stats["jobs"],
        json!({"open": 1, "claimed": 0, "completed": 1, "dead": 1, "cancelled": 0, "blocked": 0,
            "scheduled": 1}),
        "{stats}"
    );
    until_counted(
        &relay,
        &[
            (r#"relay_jobs{state="open"}"#, 1.0),
            (r#"relay_jobs{state="dead"}"#, 1.0),
        ],
    );

    // A cancelled job leaves the open ones.
    let cancelled = relay.post(
        &format!("/v1/messages/{open}/cancel"),
        OPERATOR,
        json!({"reason": "not needed"}),
    );
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);
    let stats = relay.get("/v1/stats", OPERATOR).body;
    assert_eq!(stats["jobs"]["open"], 0, "{stats}");
    assert_eq!(stats["jobs"]["cancelled"], 1, "{stats}");
    until_counted(
        &relay,
        &[
            (r#"relay_jobs{state="open"}"#, 0.0),
            (r#"relay_jobs{state="cancelled"}"#, 1.0),
        ],
    );

    // The operator's alone.
    let agent = relay.get("/v1/stats", &alice);
    assert_eq!(agent.status, 403, "{:?}", agent.body);
    let none = relay.request("GET", "/v1/stats", None, None);
    assert_eq!(none.status, 401, "{:?}", none.body);
}

/// However often it is scraped, `/metrics` asks the relay for its counts at most once a second:
/// scrapes within a second of a count show that count, and a later one shows the new.
fn metrics_count_at_most_once_a_second(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    relay.register(json!({"id": "alice"}));
    let open = r#"relay_jobs{state="open"}"#;
    let first = relay.scrape();
    let counted_at = Instant::now();
    assert_eq!(first.get(open), Some(0.0), "{first:?}");
    relay.send(json!({"from": "user", "to": "alice", "body": "j", "claimable": true}));
    let mut again = 0;
    while counted_at.elapsed() < Duration::from_millis(800) {
        let page = relay.scrape();
        if counted_at.elapsed() < Duration::from_millis(900) {
            assert_eq!(
                page.get(open),
                Some(0.0),
                "counted again within a second: {page:?}"
            );
            again += 1;
        }
    }
    assert!(again > 0, "no scrape within a second of the first");
    until_counted(&relay, &[(open, 1.0)]);
}

/// Calls queued, group-commit batch sizes and the memory budget: present, and moving with calls.
fn queue_batch_and_memory_metrics_move_with_calls(backend: Backend) {
    let postgres = matches!(backend, Backend::Postgres);
    let relay = RelayServer::start_on(backend, &["--max-concurrent-calls", "1"]);
    relay.register(json!({"id": "alice"}));
    let before = relay.scrape();
    for series in [
        "relay_calls_queued",
        "relay_group_commit_batch_size_count",
        "relay_group_commit_batch_size_sum",
        r#"relay_group_commit_batch_size_bucket{le="+Inf"}"#,
        "relay_memory_budget_bytes_in_use",
        "relay_memory_budget_bytes",
    ] {
        assert!(before.has(series), "{series} missing: {before:?}");
    }
    assert_eq!(before.value("relay_calls_queued"), 0.0, "{before:?}");
    let budget = before.value("relay_memory_budget_bytes");
    assert_eq!(budget, f64::from(256u32 << 20), "{before:?}");
    let in_use = before.value("relay_memory_budget_bytes_in_use");
    assert!((0.0..=budget).contains(&in_use), "{before:?}");

    // Eight senders against one slot: calls queue, and the gauges show it (and the memory the
    // running call holds) while they do.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let base = relay.base.clone();
    let (peak, peak_memory) = std::thread::scope(|scope| {
        for n in 0..8 {
            let (stop, base) = (&stop, &base);
            scope.spawn(move || {
                let client = reqwest::blocking::Client::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = client
                        .post(format!("{base}/v1/messages"))
                        .bearer_auth(OPERATOR)
                        .json(&json!({"from": "user", "to": "alice", "body": format!("q{n}")}))
                        .send();
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let (mut peak, mut peak_memory) = (0.0f64, 0.0f64);
        while (peak < 1.0 || peak_memory <= 0.0) && Instant::now() < deadline {
            let now = relay.scrape();
            peak = peak.max(now.value("relay_calls_queued"));
            peak_memory = peak_memory.max(now.value("relay_memory_budget_bytes_in_use"));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (peak, peak_memory)
    });
    assert!(peak >= 1.0, "no call was ever seen queued");
    assert!(
        peak_memory > 0.0 && peak_memory <= budget,
        "memory in use {peak_memory}, budget {budget}"
    );
    // Once the senders are gone, nothing waits.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = relay.scrape();
    while after.value("relay_calls_queued") > 0.0 && Instant::now() < deadline {
        after = relay.scrape();
    }
    assert_eq!(after.value("relay_calls_queued"), 0.0, "{after:?}");

    let commits = "relay_group_commit_batch_size_count";
    let calls = "relay_group_commit_batch_size_sum";
    let all = r#"relay_group_commit_batch_size_bucket{le="+Inf"}"#;
    if postgres {
        // No group commit on PostgreSQL: each write commits on its own.
        assert_eq!(after.value(commits), 0.0, "{after:?}");
        assert_eq!(after.value(calls), 0.0, "{after:?}");
    } else {
        assert!(
            after.value(commits) > before.value(commits),
            "{before:?} {after:?}"
        );
        assert!(after.value(calls) >= after.value(commits), "{after:?}");
        assert_eq!(after.value(all), after.value(commits), "{after:?}");
        let single = r#"relay_group_commit_batch_size_bucket{le="1.0"}"#;
        assert!(after.value(single) <= after.value(all), "{after:?}");
        assert!(after.has(single), "{after:?}");
    }
}

/// The page's files go gzipped to a client that accepts gzip (the same bytes once unzipped),
/// as they are to one that does not; each form has its own entity tag and revalidates to 304.
#[test]
fn the_page_is_served_gzipped_to_clients_that_accept_it() {
    use std::io::Read as _;
    let relay = RelayServer::start();
    let client = reqwest::blocking::Client::new();
    let get = |path: &str, accept: Option<&str>, tag: Option<&str>| {
        let mut request = client.get(format!("{}{path}", relay.base));
        if let Some(accept) = accept {
            request = request.header("accept-encoding", accept);
        }
        if let Some(tag) = tag {
            request = request.header("if-none-match", tag);
        }
        let reply = request.send().unwrap();
        let header = |name: &str| {
            reply
                .headers()
                .get(name)
                .map(|value| value.to_str().unwrap().to_owned())
        };
        let (status, etag, encoding, vary) = (
            reply.status().as_u16(),
            header("etag").unwrap(),
            header("content-encoding"),
            header("vary"),
        );
        (
            status,
            etag,
            encoding,
            vary,
            reply.bytes().unwrap().to_vec(),
        )
    };
    let (mut plain_total, mut gzip_total) = (0, 0);
    for path in ["/", "/dashboard/app.js", "/dashboard/style.css"] {
        let (status, plain_tag, encoding, vary, plain) = get(path, None, None);
        assert_eq!((status, encoding), (200, None), "{path}");
        assert_eq!(vary.as_deref(), Some("accept-encoding"), "{path}");
        let (status, gzip_tag, encoding, vary, gzipped) = get(path, Some("gzip, br"), None);
        assert_eq!(status, 200, "{path}");
        assert_eq!(encoding.as_deref(), Some("gzip"), "{path}");
        assert_eq!(vary.as_deref(), Some("accept-encoding"), "{path}");
        assert_ne!(plain_tag, gzip_tag, "{path}: one tag per form");
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(gzipped.as_slice())
            .read_to_end(&mut unzipped)
            .unwrap();
        assert_eq!(unzipped, plain, "{path}: the same file");
        assert!(
            gzipped.len() * 2 < plain.len(),
            "{path}: {} of {}",
            gzipped.len(),
            plain.len()
        );
        plain_total += plain.len();
        gzip_total += gzipped.len();

        // Each form revalidates with its own tag; `q=0` refuses gzip.
        let (status, tag, _, _, body) = get(path, Some("gzip"), Some(&gzip_tag));
        assert_eq!(
            (status, tag.as_str(), body.len()),
            (304, gzip_tag.as_str(), 0),
            "{path}"
        );
        let (status, ..) = get(path, None, Some(&plain_tag));
        assert_eq!(status, 304, "{path}");
        let (status, _, encoding, ..) = get(path, None, Some(&gzip_tag));
        assert_eq!(
            (status, encoding),
            (200, None),
            "{path}: the gzip tag is not the plain file's"
        );
        let (status, _, encoding, ..) = get(path, Some("gzip;q=0, identity"), None);
        assert_eq!((status, encoding), (200, None), "{path}");
    }
    eprintln!("the page: {plain_total} bytes as it is, {gzip_total} gzipped");
}

/// `relay_waiter_wakeups_total` counts the held requests a commit woke: a send to an agent
/// whose long-poll is held moves it; a send to another agent does not. SQLite only: on
/// PostgreSQL every waiter also looks again every few seconds anyway (the backstop for a lost
/// notification, docs/operations.md), which this count would include.
#[test]
fn the_wakeups_counter_moves_when_a_send_wakes_a_held_long_poll() {
    let relay = RelayServer::start_on(Backend::Sqlite, &[]);
    let alice = relay.register(json!({"id": "alice"}));
    relay.register(json!({"id": "bob"}));
    let series = "relay_waiter_wakeups_total";
    let before = relay.scrape().value(series);
    let waiting =
        relay.request_in_background("GET", "/v1/agents/alice/inbox?wait=30", &alice, None);
    relay.until_waiters(1);
    // The long-poll's first run named alice's wake keys once it holds.
    std::thread::sleep(Duration::from_millis(200));
    let elsewhere = relay.send(json!({"from": "user", "to": "bob", "body": "not for alice"}));
    assert_eq!(elsewhere.status, 201, "{:?}", elsewhere.body);
    assert_eq!(
        relay.scrape().value(series),
        before,
        "a send to bob woke nobody"
    );
    let sent = relay.send(json!({"from": "user", "to": "alice", "body": "wake up"}));
    let (reply, _) = waiting
        .recv_timeout(Duration::from_secs(10))
        .expect("the long-poll never answered");
    assert_eq!(common::ids(&reply.body), vec![id_of(&sent)]);
    assert_eq!(relay.scrape().value(series), before + 1.0);
}

crate::on_both_backends!(
    agents_messages_and_jobs_are_counted_by_state,
    metrics_count_at_most_once_a_second,
    queue_batch_and_memory_metrics_move_with_calls,
    metrics_parse_as_prometheus_text_and_count_a_send,
    the_operator_stream_carries_a_send_within_a_second_and_then_a_change,
    a_resumed_operator_stream_carries_exactly_what_was_missed,
    the_operator_stream_is_the_operators_alone,
    a_reader_further_behind_than_the_bound_is_told_to_reload,
);
