//! What one `send-message` costs, counted in instructions: the in-process send loop, shaped for
//! `valgrind --tool=callgrind` (docs/benchmarks.md, "Counting a send's instructions").
//!
//! ```text
//! cargo build --release -p agent-relay-core --example count-sends
//! valgrind --tool=callgrind --toggle-collect='count_sends::sends' \
//!     target/release/examples/count-sends [DIR] [SENDS] [full|normal|off]
//! ```
//!
//! Only [`sends`] is counted (the component's compilation and the warm-up are not), so the
//! total divided by SENDS is one send's instructions, the same on every run of the same binary
//! whatever else the machine does. The pool has two slots: the default 64 reserve more address
//! space than valgrind can give.

use std::path::Path;
use std::str::FromStr as _;

use agent_relay_core::Synchronous;
use agent_relay_core::embed::{Limits, Options, Relay};
use serde_json::json;

pub fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = tempfile::tempdir()?;
    let dir = args
        .next()
        .map_or_else(|| dir.path().to_owned(), Into::into);
    let count: usize = args.next().map_or(Ok(300), |n| n.parse())?;
    let synchronous = args
        .next()
        .map_or(Ok(Synchronous::Off), |name| Synchronous::from_str(&name))
        .map_err(anyhow::Error::msg)?;
    let stored = run(&dir.join("count-sends.db"), count, synchronous)?;
    eprintln!("{count} sends counted, {stored} messages stored");
    Ok(())
}

/// Opens a relay at `path`, warms it with 20 sends, then makes `count` more through
/// [`sends`]; returns how many messages wait unread (all of them: nobody reads).
pub fn run(path: &Path, count: usize, synchronous: Synchronous) -> anyhow::Result<u64> {
    let mut options = Options {
        limits: Limits::default().with_instances(2),
        ..Options::default()
    };
    options.sqlite.synchronous = synchronous;
    let relay = Relay::open(path, options)?;
    for id in ["sender", "receiver"] {
        relay.call_json("register-agent", &json!({"input": {"id": id}}))?;
    }
    for _ in 0..20 {
        send(&relay)?;
    }
    sends(&relay, count)?;
    let stats = relay.call_json("get-stats", &json!({}))?;
    let unread = stats["messages"]["unread"].as_u64();
    unread.ok_or_else(|| anyhow::anyhow!("get-stats counts no unread messages: {stats}"))
}

/// The counted part: `count` sends from one agent to another, each its own call (a fresh
/// instance, one transaction, one commit).
#[inline(never)]
pub fn sends(relay: &Relay, count: usize) -> anyhow::Result<()> {
    for _ in 0..count {
        send(relay)?;
    }
    Ok(())
}

fn send(relay: &Relay) -> anyhow::Result<()> {
    let input = json!({"input": {
        "from": "sender", "to": "receiver", "body": "the build is green again, please re-run"
    }});
    relay.call_json("send-message", &input)?;
    Ok(())
}
