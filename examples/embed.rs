//! The relay as a sandboxed plugin inside another Rust program: no HTTP, no server process.
//!
//! `cargo run --release -p agent-relay-core --example embed [-- DB_PATH]` (a temporary database when no path is
//! given). Every call below runs in a fresh instance of the relay component, under a memory limit
//! and a deadline, inside one SQLite transaction.

use std::path::Path;
use std::time::Duration;

use agent_relay_core::embed::{Caller, Limits, Options, Relay};
use serde_json::{Value as Json, json};
use wasmtime::component::Val;

pub fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = std::env::args_os()
        .nth(1)
        .map_or_else(|| dir.path().join("plugin.db"), Into::into);
    for line in run(&path)? {
        println!("{line}");
    }
    Ok(())
}

/// Hosts the relay over the database at `path` and walks through a job hand-out; returns what it
/// saw, one line per step.
pub fn run(path: &Path) -> anyhow::Result<Vec<String>> {
    let mut seen = Vec::new();
    let options = Options {
        limits: Limits::default()
            .with_memory_bytes(32 << 20)
            .with_call_timeout(Duration::from_secs(2))
            .with_instances(8),
        ..Options::default()
    };
    let relay = Relay::open(path, options)?;
    seen.push(format!("exports: {}", relay.exports().count()));

    // Registering is an operator call; each new agent's token is handed out once.
    let token = |id: &str| -> anyhow::Result<Caller> {
        let registered = relay.call_json(
            "register-agent",
            &json!({"input": {"id": id, "label": "backend"}}),
        )?;
        let token = registered["token"].as_str().unwrap_or_default();
        Ok(Caller::Bearer(token.to_owned()))
    };
    let alice = token("alice")?;
    let bob = token("bob")?;

    let sent = relay.call_json(
        "send-message",
        &json!({"input": {"from": "user", "to": "label:backend", "body": "fix the flaky test",
                          "claimable": true}}),
    )?;
    let id = sent["message"]["id"].clone();
    seen.push(format!("sent message {id} to {}", sent["recipients"]));

    let claimed = relay.call_json_as(
        &alice,
        "claim-message",
        &json!({"messageId": id, "input": {"agentId": "alice"}}),
    )?;
    seen.push(format!("claimed by {}", claimed["claimedBy"]));
    match relay.call_json_as(
        &bob,
        "claim-message",
        &json!({"messageId": id, "input": {"agentId": "bob"}}),
    ) {
        Ok(_) => anyhow::bail!("a second claimer must not win"),
        Err(error) => seen.push(format!("bob: {} ({})", error.code, error.message)),
    }

    // The typed form: WIT values in, WIT values out.
    let message = relay.call(&Caller::Operator, "get-message", &[Val::S64(id_of(&id)?)])?;
    if let Some(Val::Record(fields)) = message {
        let body = fields.iter().find(|(name, _)| name == "body");
        seen.push(format!("typed get-message: {:?}", body.map(|(_, v)| v)));
    }
    Ok(seen)
}

fn id_of(id: &Json) -> anyhow::Result<i64> {
    id.as_i64()
        .ok_or_else(|| anyhow::anyhow!("message id {id} is not a number"))
}
