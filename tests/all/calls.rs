//! The call runner (`agent_relay_core::calls`) driven the way the server drives it, over the built
//! component and a real SQLite file: held requests wake only when a call changed rows.

use std::sync::Arc;
use std::time::Duration;

use agent_relay_core::bridge::{self, Inputs};
use agent_relay_core::calls::{Caller, Calls};
use agent_relay_core::embed::{Options, Relay, SqliteOptions, Synchronous};
use agent_relay_core::runtime::Export;
use serde_json::{Value as Json, json};
use wasmtime::component::Val;

const HELD: usize = 1000;
const HEALTH_PROBES: u64 = 100;

fn open(dir: &tempfile::TempDir) -> Relay {
    let options = Options {
        sqlite: SqliteOptions {
            synchronous: Synchronous::Off,
            ..SqliteOptions::default()
        },
        ..Options::default()
    };
    Relay::open(dir.path().join("relay.db"), options).unwrap()
}

fn export(calls: &Calls, name: &str) -> Export {
    calls.runtime().export(name).unwrap().clone()
}

fn args(export: &Export, named: &Json) -> Vec<Val> {
    let inputs = Inputs {
        caller: Some(Caller::Operator.to_val()),
        named: named.as_object(),
        ..Inputs::default()
    };
    bridge::arguments(export, &inputs).unwrap()
}

/// Waits (without a clock: the calls run on other threads) until `calls` has run `count` calls.
async fn runs_reach(calls: &Calls, count: u64) {
    tokio::time::timeout(Duration::from_secs(60), async {
        while calls.runs() < count {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {count} calls ran", calls.runs()));
}

#[test]
fn health_probes_and_an_idle_reaper_wake_no_held_long_poll() {
    let dir = tempfile::tempdir().unwrap();
    let relay = open(&dir);
    relay
        .call_json("register-agent", &json!({"input": {"id": "alice"}}))
        .unwrap();
    let calls = Arc::clone(relay.calls());
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(async {
        let inbox = Arc::new(export(&calls, "poll-inbox"));
        let poll = args(&inbox, &json!({"agentId": "alice", "query": {}}));
        let health = export(&calls, "health");
        let reap = export(&calls, "reap");
        let signal = calls.commits();
        let start = calls.runs();

        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        let held: Vec<_> = (0..HELD)
            .map(|_| {
                let (calls, inbox, poll) = (Arc::clone(&calls), Arc::clone(&inbox), poll.clone());
                tokio::spawn(async move { calls.hold(&inbox, poll, deadline).await })
            })
            .collect();
        // Every held request has run once and waits on the commit signal from before that run.
        runs_reach(&calls, start + HELD as u64).await;

        for _ in 0..HEALTH_PROBES {
            let report = calls.run(&health, args(&health, &json!({}))).await.unwrap();
            assert!(matches!(report, Val::Result(Ok(_))), "{report:?}");
        }
        let reaped = calls.run(&reap, args(&reap, &json!({}))).await.unwrap();
        assert!(matches!(reaped, Val::Result(Ok(_))), "{reaped:?}");

        assert!(
            !signal.has_changed().unwrap(),
            "health probes (a setting write) and an idle reaper changed no rows, so they must not raise the commit signal"
        );
        assert_eq!(
            calls.runs() - start,
            HELD as u64 + HEALTH_PROBES + 1,
            "0 held long-polls re-ran after {HEALTH_PROBES} health probes and an idle reap"
        );

        // A write that changes rows wakes every held request, and each re-runs once.
        let send = export(&calls, "send-message");
        let sent = calls
            .run(
                &send,
                args(&send, &json!({"input": {"from": "user", "to": "alice", "body": "wake"}})),
            )
            .await
            .unwrap();
        assert!(matches!(sent, Val::Result(Ok(_))), "{sent:?}");
        for answer in held {
            let answer = bridge::outcome(&answer.await.unwrap().unwrap()).unwrap();
            assert_eq!(answer[0]["body"], "wake", "{answer}");
        }
        assert_eq!(
            calls.runs() - start,
            2 * HELD as u64 + HEALTH_PROBES + 2,
            "the message woke each held long-poll into exactly one re-run"
        );
    });
}

/// Wake keys (docs/design.md): a send wakes only the held long-polls whose inbox its target
/// reaches; a write that names no key (registering an agent) still wakes every one.
#[test]
fn a_send_wakes_only_the_held_long_polls_it_concerns() {
    let dir = tempfile::tempdir().unwrap();
    let relay = open(&dir);
    for id in ["alice", "bob", "carol"] {
        relay
            .call_json("register-agent", &json!({"input": {"id": id}}))
            .unwrap();
    }
    let calls = Arc::clone(relay.calls());
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(async {
        let inbox = Arc::new(export(&calls, "poll-inbox"));
        let send = export(&calls, "send-message");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        let start = calls.runs();
        let hold = |agent: &str| {
            let (calls, inbox) = (Arc::clone(&calls), Arc::clone(&inbox));
            let poll = args(&inbox, &json!({"agentId": agent, "query": {}}));
            tokio::spawn(async move { calls.hold(&inbox, poll, deadline).await })
        };
        let alice = hold("alice");
        let bob = hold("bob");
        runs_reach(&calls, start + 2).await;
        // Until a held long-poll has named its keys (just after its first run) every commit
        // wakes it, rightly: wait for both to listen by key before counting.
        tokio::time::timeout(Duration::from_secs(60), async {
            while calls.keyed_waiters() < 2 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("both long-polls name their wake keys");
        let woken = calls.wakeups();
        for n in 0..20 {
            let body = json!({"input": {"from": "user", "to": "carol", "body": format!("c{n}")}});
            let sent = calls.run(&send, args(&send, &body)).await.unwrap();
            assert!(matches!(sent, Val::Result(Ok(_))), "{sent:?}");
        }
        assert_eq!(
            calls.wakeups() - woken,
            0,
            "sends to carol woke no long-poll of alice or bob"
        );
        let body = json!({"input": {"from": "user", "to": "bob", "body": "for bob"}});
        calls.run(&send, args(&send, &body)).await.unwrap();
        let answer = bridge::outcome(&bob.await.unwrap().unwrap()).unwrap();
        assert_eq!(answer[0]["body"], "for bob", "{answer}");
        assert_eq!(calls.wakeups() - woken, 1, "only bob's long-poll woke");
        assert!(!alice.is_finished());
        // Registering an agent names no wake key: alice looks again (and keeps waiting).
        let register = export(&calls, "register-agent");
        calls
            .run(
                &register,
                args(&register, &json!({"input": {"id": "dave"}})),
            )
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(30), async {
            while calls.wakeups() - woken < 2 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("a write without keys wakes alice's long-poll");
        alice.abort();
    });
}
