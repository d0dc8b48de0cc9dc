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

/// The samples of a Prometheus text page, checked line by line: every sample's metric family
/// was declared by a `# TYPE` line before it, and every value is a number.
fn samples(page: &str) -> Vec<(String, f64)> {
    let mut declared: Vec<String> = Vec::new();
    let mut samples = Vec::new();
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').expect("# TYPE NAME KIND");
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "unexpected type {kind} in {line}"
            );
            declared.push(family.to_owned());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample is SERIES VALUE");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            declared
                .iter()
                .any(|family| name.starts_with(family.as_str())),
            "{name} has no # TYPE line before it"
        );
        samples.push((series.to_owned(), value));
    }
    samples
}

fn sample(samples: &[(String, f64)], series: &str) -> f64 {
    samples
        .iter()
        .find(|(name, _)| name == series)
        .map_or(0.0, |(_, value)| *value)
}

fn metrics_parse_as_prometheus_text_and_count_a_send(backend: Backend) {
    let relay = RelayServer::start_on(backend, &[]);
    let alice = relay.register(json!({"id": "alice"}));
    let sends = r#"relay_http_requests_total{method="POST",route="/v1/messages",status="201"}"#;
    let scrape = || {
        let reply = reqwest::blocking::Client::new()
            .get(format!("{}/metrics", relay.base))
            .bearer_auth(OPERATOR)
            .send()
            .unwrap();
        assert_eq!(reply.status(), 200);
        assert!(
            reply.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text"),
            "{:?}",
            reply.headers()
        );
        samples(&reply.text().unwrap())
    };
    let before = scrape();
    send_to(&relay, "alice", "counted");
    let after = scrape();
    assert_eq!(
        sample(&after, sends) - sample(&before, sends),
        1.0,
        "{after:?}"
    );
    let observed = "relay_http_request_duration_seconds_count";
    assert!(sample(&after, observed) >= 2.0, "{after:?}");
    assert!(
        after
            .iter()
            .any(|(name, _)| name == "relay_calls_in_flight"),
        "{after:?}"
    );

    let agent = relay.get("/metrics", &alice);
    assert_eq!(agent.status, 403, "{:?}", agent.body);
    let none = relay.request("GET", "/metrics", None, None);
    assert_eq!(none.status, 401, "{:?}", none.body);
}

fn scrape(relay: &RelayServer) -> Vec<(String, f64)> {
    let reply = reqwest::blocking::Client::new()
        .get(format!("{}/metrics", relay.base))
        .bearer_auth(OPERATOR)
        .send()
        .unwrap();
    assert_eq!(reply.status(), 200);
    samples(&reply.text().unwrap())
}

fn has(samples: &[(String, f64)], series: &str) -> bool {
    samples.iter().any(|(name, _)| name == series)
}

/// Calls queued, group-commit batch sizes and the memory budget: present, and moving with calls.
fn queue_batch_and_memory_metrics_move_with_calls(backend: Backend) {
    let postgres = matches!(backend, Backend::Postgres);
    let relay = RelayServer::start_on(backend, &["--max-concurrent-calls", "1"]);
    relay.register(json!({"id": "alice"}));
    let before = scrape(&relay);
    for series in [
        "relay_calls_queued",
        "relay_group_commit_batch_size_count",
        "relay_group_commit_batch_size_sum",
        r#"relay_group_commit_batch_size_bucket{le="+Inf"}"#,
        "relay_memory_budget_bytes_in_use",
        "relay_memory_budget_bytes",
    ] {
        assert!(has(&before, series), "{series} missing: {before:?}");
    }
    assert_eq!(sample(&before, "relay_calls_queued"), 0.0, "{before:?}");
    let budget = sample(&before, "relay_memory_budget_bytes");
    assert_eq!(budget, f64::from(256u32 << 20), "{before:?}");
    let in_use = sample(&before, "relay_memory_budget_bytes_in_use");
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
            let now = scrape(&relay);
            peak = peak.max(sample(&now, "relay_calls_queued"));
            peak_memory = peak_memory.max(sample(&now, "relay_memory_budget_bytes_in_use"));
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
    let mut after = scrape(&relay);
    while sample(&after, "relay_calls_queued") > 0.0 && Instant::now() < deadline {
        after = scrape(&relay);
    }
    assert_eq!(sample(&after, "relay_calls_queued"), 0.0, "{after:?}");

    let commits = "relay_group_commit_batch_size_count";
    let calls = "relay_group_commit_batch_size_sum";
    let all = r#"relay_group_commit_batch_size_bucket{le="+Inf"}"#;
    if postgres {
        // No group commit on PostgreSQL: each write commits on its own.
        assert_eq!(sample(&after, commits), 0.0, "{after:?}");
        assert_eq!(sample(&after, calls), 0.0, "{after:?}");
    } else {
        assert!(
            sample(&after, commits) > sample(&before, commits),
            "{before:?} {after:?}"
        );
        assert!(
            sample(&after, calls) >= sample(&after, commits),
            "{after:?}"
        );
        assert_eq!(sample(&after, all), sample(&after, commits), "{after:?}");
        let single = r#"relay_group_commit_batch_size_bucket{le="1.0"}"#;
        assert!(sample(&after, single) <= sample(&after, all), "{after:?}");
        assert!(has(&after, single), "{after:?}");
    }
}

crate::on_both_backends!(
    queue_batch_and_memory_metrics_move_with_calls,
    metrics_parse_as_prometheus_text_and_count_a_send,
    the_operator_stream_carries_a_send_within_a_second_and_then_a_change,
    a_resumed_operator_stream_carries_exactly_what_was_missed,
    the_operator_stream_is_the_operators_alone,
    a_reader_further_behind_than_the_bound_is_told_to_reload,
);
