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

use agent_relay::watch::EventReader;
use common::{Json, Relay, json};
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

fn send(relay: &Relay, to: &str, body: &str) -> (i64, Instant) {
    let reply = relay.send(json!({"from": "user", "to": to, "body": body}));
    let answered = Instant::now();
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    (reply.body["message"]["id"].as_i64().unwrap(), answered)
}

struct Summary {
    median_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    n: usize,
}

fn summarize(mut latencies: Vec<Duration>) -> Summary {
    latencies.sort();
    let n = latencies.len();
    let at = |q: f64| latencies[((n as f64 * q).ceil() as usize).clamp(1, n) - 1];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Summary {
        median_ms: ms(at(0.5)),
        p99_ms: ms(at(0.99)),
        max_ms: ms(latencies[n - 1]),
        n,
    }
}

fn print_summary(what: &str, s: &Summary) {
    println!(
        "{what:<52} median {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms   N={}",
        s.median_ms, s.p99_ms, s.max_ms, s.n
    );
}

/// Long-polls `agent`'s inbox `sends` times, each woken by one send once the poll waits.
fn long_poll_latency(relay: &Relay, agent: &str, token: &str, sends: usize) -> Summary {
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
    let mut since = 0;
    let mut latencies = Vec::with_capacity(sends);
    for n in 0..sends {
        go.send(since).unwrap();
        // Let the poll reach its wait before the message commits.
        std::thread::sleep(Duration::from_millis(25));
        let (id, answered) = send(relay, agent, &format!("poll {n}"));
        let (body, arrived) = arrivals.recv().unwrap();
        assert_eq!(
            body[0]["id"], id,
            "the poll delivered the message just sent"
        );
        latencies.push(arrived.saturating_duration_since(answered));
        since = id;
    }
    summarize(latencies)
}

/// Streams `agent`'s inbox and times each of `sends` messages from send response to its event.
fn stream_latency(relay: &Relay, agent: &str, token: &str, sends: usize) -> Summary {
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
    let mut latencies = Vec::with_capacity(sends);
    for n in 0..sends {
        let (id, answered) = send(relay, agent, &format!("stream {n}"));
        let event = loop {
            let chunk = runtime.block_on(response.chunk()).unwrap().unwrap();
            if let Some(event) = reader.push(&chunk).pop() {
                break event;
            }
        };
        latencies.push(Instant::now().saturating_duration_since(answered));
        assert_eq!(event.id, Some(id.to_string()), "events arrive in order");
    }
    summarize(latencies)
}

/// Opens `count` idle requests (raw HTTP/1.1 on their own sockets) and keeps them open.
fn open_idle(
    runtime: &tokio::runtime::Runtime,
    relay: &Relay,
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

fn main() {
    // `cargo bench` passes `--bench`; any other argument filters like a test name would.
    let sends = env_number("PUSH_SENDS", 200);
    let waiters = env_number("PUSH_WAITERS", 1000);
    let relay = Relay::start_with(&["--max-wait-secs", "600"]);
    let pid = relay.pid();
    let alice = relay.register(json!({"id": "alice"}));
    let bob = relay.register(json!({"id": "bob"}));
    let carol = relay.register(json!({"id": "carol"}));
    println!("agent-relay push delivery, server pid {pid}, {sends} sends, {waiters} idle waiters");

    let polls = long_poll_latency(&relay, "alice", &alice, sends);
    print_summary("long-poll wake-up (send response -> poll answer)", &polls);
    let streamed = stream_latency(&relay, "bob", &bob, sends);
    print_summary("stream wake-up (send response -> event)", &streamed);

    settle(pid);
    let idle_rss = status_kb(pid, "VmRSS:");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let polls_open = open_idle(
        &runtime,
        &relay,
        "/v1/agents/carol/inbox?wait=600",
        &carol,
        waiters,
    );
    settle(pid);
    let polls_rss = status_kb(pid, "VmRSS:");
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(10));
    let idle_cpu = cpu_ticks(pid) - before;
    println!(
        "server RSS idle {idle_rss} kB; with {waiters} idle long-polls {polls_rss} kB \
         (+{} kB, {:.1} kB per waiter); CPU over 10 s with them idle: {idle_cpu} ticks",
        polls_rss.saturating_sub(idle_rss),
        polls_rss.saturating_sub(idle_rss) as f64 / waiters as f64
    );

    let herd = long_poll_latency(&relay, "alice", &alice, sends.min(50));
    print_summary(
        &format!("long-poll wake-up with {waiters} other waiters"),
        &herd,
    );
    drop(polls_open);

    settle(pid);
    let base_rss = status_kb(pid, "VmRSS:");
    let streams_open = open_idle(&runtime, &relay, "/v1/agents/carol/stream", &carol, waiters);
    settle(pid);
    let streams_rss = status_kb(pid, "VmRSS:");
    println!(
        "server RSS before streams {base_rss} kB; with {waiters} idle streams {streams_rss} kB \
         (+{} kB, {:.1} kB per stream)",
        streams_rss.saturating_sub(base_rss),
        streams_rss.saturating_sub(base_rss) as f64 / waiters as f64
    );
    drop(streams_open);
}
