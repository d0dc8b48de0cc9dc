//! The per-call time of the same `send-message` as the Node runner's `--bench`, through the
//! library API: a fresh component instance and one transaction per call.
//!
//! `cargo bench -p agent-relay --bench embed_send -- [CALLS] [full|normal|off]` (default 1000,
//! full); `scripts/bench-embed.sh` runs it beside the Node host.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::Instant;

use agent_relay_core::embed::{Options, Relay, SqliteOptions, Synchronous};
use serde_json::json;

fn main() {
    // `cargo bench` passes `--bench`; the figures are the arguments after it.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let n: u32 = args.first().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let mode = args.get(1).map_or("full", String::as_str);
    let synchronous = match mode {
        "off" => Synchronous::Off,
        "normal" => Synchronous::Normal,
        _ => Synchronous::Full,
    };
    let options = Options {
        sqlite: SqliteOptions {
            synchronous,
            ..SqliteOptions::default()
        },
        ..Options::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::open(dir.path().join("bench.db"), options).unwrap();
    relay
        .call_json("register-agent", &json!({"input": {"id": "alice"}}))
        .unwrap();
    let send = |i: u32| {
        relay
            .call_json(
                "send-message",
                &json!({"input": {"from": "user", "to": "alice", "body": format!("message {i}")}}),
            )
            .unwrap();
    };
    for i in 0..n.min(50) {
        send(i);
    }
    let started = Instant::now();
    for i in 0..n {
        send(i);
    }
    let per_call = started.elapsed().as_secs_f64() * 1e6 / f64::from(n.max(1));
    println!(
        "rust host: send-message {per_call:.0} µs per call over {n} calls (synchronous={mode})"
    );
}
