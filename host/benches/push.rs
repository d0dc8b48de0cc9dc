//! Push delivery, measured against a real `agent-relay serve`: wake-up latency (from a send's HTTP
//! response to the delivery on a waiting long-poll and on an event stream), and the server's
//! memory and CPU with a thousand idle waiters.
//!
//! `cargo bench -p agent-relay --bench push` (PUSH_SENDS, default 200; PUSH_WAITERS, default 1000).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "../../tests/common/mod.rs"]
mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use agent_relay::client::watch::EventReader;
use common::{Json, RelayServer, json};
use tokio::io::AsyncWriteExt;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A field of /proc/PID/status in kB.
fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
        .unwrap_or(0)
}

/// User plus system CPU time of the process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Waits until the server has used no CPU for a whole second (all waiters parked).
fn settle(pid: u32) {
    let mut last = cpu_ticks(pid);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = cpu_ticks(pid);
        if now == last {
            return;
        }
        last = now;
    }
}

/// Sends one message; returns its id, when the request was issued and when it was answered.
fn send(relay: &RelayServer, to: &str, body: &str) -> (i64, Instant, Instant) {
    let requested = Instant::now();
    let reply = relay.send(json!({"from": "user", "to": to, "body": body}));
    let answered = Instant::now();
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    (
        reply.body["message"]["id"].as_i64().unwrap(),
        requested,
        answered,
    )
}

/// Milliseconds from `from` to `to`, negative when `to` came first.
fn signed_ms(from: Instant, to: Instant) -> f64 {
    if to >= from {
        (to - from).as_secs_f64() * 1000.0
    } else {
        -((from - to).as_secs_f64() * 1000.0)
    }
}

/// Wake-up times of one run: from the send's response, and from the moment the send was issued.
#[derive(Default)]
struct Latencies {
    after_response: Vec<f64>,
    after_request: Vec<f64>,
}

impl Latencies {
    fn record(&mut self, requested: Instant, answered: Instant, delivered: Instant) {
        self.after_response.push(signed_ms(answered, delivered));
        self.after_request.push(signed_ms(requested, delivered));
    }

    fn print(&self, what: &str) {
        println!("{what}");
        for (from, values) in [
            ("send response", &self.after_response),
            ("send request", &self.after_request),
        ] {
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let n = sorted.len();
            let at = |q: f64| sorted[((n as f64 * q).ceil() as usize).clamp(1, n) - 1];
            println!(
                "  from the {from:<14} to delivery: median {:>6.2} ms  p99 {:>6.2} ms  \
                 min {:>6.2} ms  max {:>6.2} ms  N={n}",
                at(0.5),
                at(0.99),
                sorted[0],
                sorted[n - 1]
            );
        }
    }
}

/// Long-polls `agent`'s inbox (after `since`) `sends` times, each woken by one send once the poll
/// waits. Returns the times and the last message id.
fn long_poll_latency(
    relay: &RelayServer,
    agent: &str,
    token: &str,
    mut since: i64,
    sends: usize,
) -> (Latencies, i64) {
    let (go, polls) = mpsc::channel::<i64>();
    let (done, arrivals) = mpsc::channel::<(Json, Instant)>();
    let url = format!("{}/v1/agents/{agent}/inbox", relay.base);
    let token = token.to_owned();
    std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        for since in polls {
            let response = client
                .get(format!("{url}?since={since}&wait=60"))
                .bearer_auth(&token)
                .send()
                .unwrap();
            let body: Json = response.json().unwrap();
            done.send((body, Instant::now())).unwrap();
        }
    });
    let mut latencies = Latencies::default();
    for n in 0..sends {
        go.send(since).unwrap();
        // Let the poll reach its wait before the message commits.
        std::thread::sleep(Duration::from_millis(25));
        let (id, requested, answered) = send(relay, agent, &format!("poll {n}"));
        let (body, arrived) = arrivals.recv().unwrap();
        assert_eq!(
            body[0]["id"], id,
            "the poll delivered the message just sent"
        );
        latencies.record(requested, answered, arrived);
        since = id;
    }
    (latencies, since)
}

/// Streams `agent`'s inbox and times each of `sends` messages from send response to its event.
fn stream_latency(relay: &RelayServer, agent: &str, token: &str, sends: usize) -> Latencies {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut response = runtime
        .block_on(
            reqwest::Client::new()
                .get(format!("{}/v1/agents/{agent}/stream", relay.base))
                .bearer_auth(token)
                .send(),
        )
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut reader = EventReader::default();
    let mut latencies = Latencies::default();
    for n in 0..sends {
        let (id, requested, answered) = send(relay, agent, &format!("stream {n}"));
        let event = loop {
            let chunk = runtime.block_on(response.chunk()).unwrap().unwrap();
            if let Some(event) = reader.push(&chunk).pop() {
                break event;
            }
        };
        latencies.record(requested, answered, Instant::now());
        assert_eq!(event.id, Some(id.to_string()), "events arrive in order");
    }
    latencies
}

/// Opens `count` idle requests (raw HTTP/1.1 on their own sockets) and keeps them open.
fn open_idle(
    runtime: &tokio::runtime::Runtime,
    relay: &RelayServer,
    path: &str,
    token: &str,
    count: usize,
) -> Vec<tokio::net::TcpStream> {
    let addr = relay.base.trim_start_matches("http://").to_owned();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n");
    runtime.block_on(async {
        let mut sockets = Vec::with_capacity(count);
        for _ in 0..count {
            let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
            socket.write_all(request.as_bytes()).await.unwrap();
            sockets.push(socket);
        }
        sockets
    })
}

fn rss(pid: u32) -> u64 {
    settle(pid);
    status_kb(pid, "VmRSS:")
}

/// CPU ticks the server uses over ten quiet seconds, once the threads that ran the last calls
/// have ended (an idle blocking thread lingers ten seconds).
fn idle_cpu(pid: u32) -> u64 {
    std::thread::sleep(Duration::from_secs(11));
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(10));
    cpu_ticks(pid) - before
}

fn main() {
    let sends = env_number("PUSH_SENDS", 200);
    let waiters = env_number("PUSH_WAITERS", 1000);
    let relay = RelayServer::start_with(&["--max-wait-secs", "600"]);
    let pid = relay.pid();
    let alice = relay.register(json!({"id": "alice"}));
    let bob = relay.register(json!({"id": "bob"}));
    let carol = relay.register(json!({"id": "carol"}));
    println!("agent-relay push delivery: server pid {pid}, {sends} sends, {waiters} idle waiters");

    let (polls, last) = long_poll_latency(&relay, "alice", &alice, 0, sends);
    polls.print("long-poll wake-up (inbox?since=LAST&wait=60, one waiter)");
    stream_latency(&relay, "bob", &bob, sends).print("stream wake-up (one stream)");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let poll_path = "/v1/agents/carol/inbox?wait=600";
    let idle_rss = rss(pid);
    let quiet_cpu = idle_cpu(pid);
    let first = open_idle(&runtime, &relay, poll_path, &carol, waiters);
    let first_rss = rss(pid);
    let waiting_cpu = idle_cpu(pid);
    println!(
        "server idle: RSS {idle_rss} kB, {quiet_cpu} CPU ticks in 10 s (the wasmtime epoch ticker's own)"
    );
    println!(
        "{waiters} idle long-polls, first time: RSS {first_rss} kB (+{} kB, {:.1} kB each, \
         including the allocator's high-water mark from starting them), {waiting_cpu} CPU ticks \
         in 10 s",
        first_rss.saturating_sub(idle_rss),
        first_rss.saturating_sub(idle_rss) as f64 / waiters as f64
    );

    let (herd, _) = long_poll_latency(&relay, "alice", &alice, last, sends.min(50));
    herd.print(&format!(
        "long-poll wake-up with {waiters} waiters on another agent (each send re-runs all of them)"
    ));
    drop(first);
    let warm_rss = rss(pid);
    let second = open_idle(&runtime, &relay, poll_path, &carol, waiters);
    let second_rss = rss(pid);
    println!(
        "{waiters} idle long-polls, again on a warm server: RSS {warm_rss} -> {second_rss} kB \
         (+{} kB, {:.1} kB each)",
        second_rss.saturating_sub(warm_rss),
        second_rss.saturating_sub(warm_rss) as f64 / waiters as f64
    );
    drop(second);

    let before_streams = rss(pid);
    let streams = open_idle(&runtime, &relay, "/v1/agents/carol/stream", &carol, waiters);
    let streams_rss = rss(pid);
    println!(
        "{waiters} idle streams: RSS {before_streams} -> {streams_rss} kB (+{} kB, {:.1} kB each)",
        streams_rss.saturating_sub(before_streams),
        streams_rss.saturating_sub(before_streams) as f64 / waiters as f64
    );
    drop(streams);
}
