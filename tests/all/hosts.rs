//! Several relay hosts on one PostgreSQL database (docs/operations.md, "Several relays on
//! PostgreSQL"): jobs shared by workers on every host are each completed exactly once, a send
//! through one host wakes a long-poll and a stream on the others, a host killed with `kill -9`
//! loses nothing it acknowledged, the database going away answers 503 and the relay recovers by
//! itself, and `agent-relay copy` moves a relay from SQLite to PostgreSQL and back unchanged.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::common::postgres::Database;
use crate::common::{Json, OPERATOR, RelayServer, binary, id_of, json};

/// `count` relay hosts serving one fresh database.
fn hosts(count: usize) -> (Database, Vec<RelayServer>) {
    let database = Database::create();
    let servers = (0..count)
        .map(|_| RelayServer::start_at(&database.url, &[]))
        .collect();
    (database, servers)
}

#[test]
fn twelve_workers_on_three_hosts_complete_300_jobs_each_exactly_once() {
    let (_database, servers) = hosts(3);
    let workers: Vec<(String, String)> = (0..12)
        .map(|w| {
            let id = format!("w{w}");
            // Registered through any host: the token works on every one.
            let token = servers[w % 3].register(json!({"id": id, "label": "pool"}));
            (id, token)
        })
        .collect();
    let jobs: BTreeSet<i64> = (0..300)
        .map(|j| {
            id_of(
                &servers[j % 3].send(json!({"from": "user", "to": "label:pool",
                "body": format!("job {j}"), "claimable": true})),
            )
        })
        .collect();
    assert_eq!(jobs.len(), 300);
    let done: Mutex<Vec<(i64, String)>> = Mutex::default();
    let odd: Mutex<Vec<String>> = Mutex::default();
    std::thread::scope(|scope| {
        for (w, (agent, token)) in workers.iter().enumerate() {
            let base = servers[w % 3].base.clone();
            let (done, odd) = (&done, &odd);
            scope.spawn(move || {
                let client = reqwest::blocking::Client::new();
                loop {
                    let next = client
                        .post(format!("{base}/v1/agents/{agent}/claim-next"))
                        .bearer_auth(token)
                        .json(&json!({"leaseMs": 600_000}))
                        .send()
                        .unwrap();
                    match next.status().as_u16() {
                        204 => return,
                        200 => {}
                        status => {
                            odd.lock().unwrap().push(format!(
                                "claim-next {status}: {}",
                                next.text().unwrap_or_default()
                            ));
                            return;
                        }
                    }
                    let id = next.json::<Json>().unwrap()["id"].as_i64().unwrap();
                    let completed = client
                        .post(format!("{base}/v1/messages/{id}/complete"))
                        .bearer_auth(token)
                        .json(&json!({"agentId": agent}))
                        .send()
                        .unwrap();
                    if completed.status().as_u16() == 200 {
                        done.lock().unwrap().push((id, agent.clone()));
                    } else {
                        odd.lock()
                            .unwrap()
                            .push(format!("complete {id}: {}", completed.status()));
                    }
                }
            });
        }
    });
    let odd = odd.into_inner().unwrap();
    assert!(odd.is_empty(), "no refusals: {odd:?}");
    let done = done.into_inner().unwrap();
    let completed: BTreeSet<i64> = done.iter().map(|(id, _)| *id).collect();
    assert_eq!(done.len(), 300, "300 completions, none twice");
    assert_eq!(completed, jobs, "every job was completed");
    let by_host: BTreeSet<usize> = done
        .iter()
        .map(|(_, agent)| agent[1..].parse::<usize>().unwrap() % 3)
        .collect();
    assert_eq!(by_host.len(), 3, "workers on every host took jobs");
    // Every host sees the same end: each job completed by the worker that finished it.
    for server in &servers {
        for (id, agent) in done.iter().step_by(37) {
            let message = server.get(&format!("/v1/messages/{id}"), OPERATOR);
            assert_eq!(message.status, 200, "{:?}", message.body);
            assert_eq!(
                message.body["completedBy"].as_str(),
                Some(agent.as_str()),
                "{:?}",
                message.body
            );
        }
    }
}

#[test]
fn a_send_through_one_host_wakes_a_long_poll_and_a_stream_on_the_others() {
    let (_database, servers) = hosts(3);
    let alice = servers[0].register(json!({"id": "alice"}));
    servers[0].register(json!({"id": "bob"}));
    // A stream on host C, read on a thread of its own.
    let (lines, stream_lines) = mpsc::channel::<String>();
    let stream_url = format!("{}/v1/agents/alice/stream", servers[2].base);
    let stream_token = alice.clone();
    std::thread::spawn(move || {
        let mut response = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap()
            .get(stream_url)
            .bearer_auth(stream_token)
            .send()
            .unwrap();
        let mut buffer = [0u8; 4096];
        while let Ok(n) = response.read(&mut buffer) {
            if n == 0
                || lines
                    .send(String::from_utf8_lossy(&buffer[..n]).into_owned())
                    .is_err()
            {
                return;
            }
        }
    });
    // A long-poll on host B; give it and the stream a moment to be waiting.
    let poll =
        servers[1].request_in_background("GET", "/v1/agents/alice/inbox?wait=30", &alice, None);
    servers[1].until_waiters(1);
    servers[2].until_waiters(1);
    let sent = servers[0].send(json!({"from": "bob", "to": "alice", "body": "across hosts"}));
    let acknowledged = Instant::now();
    let id = id_of(&sent);
    let (reply, arrived) = poll
        .recv_timeout(Duration::from_secs(10))
        .expect("the long-poll on host B never answered");
    let woke = arrived.saturating_duration_since(acknowledged);
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(
        crate::common::ids(&reply.body),
        vec![id],
        "host B's long-poll got the message sent through host A"
    );
    // Well under the 5 s backstop (which wakes every waiter of a host by itself), so only host
    // A's notification can have woken it; room for a busy 2-core machine (once 993 ms).
    assert!(
        woke < Duration::from_millis(2_000),
        "host B's long-poll woke {woke:?} after host A acknowledged the send, not within 2 s"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = String::new();
    while !seen.contains("across hosts") {
        let left = deadline.saturating_duration_since(Instant::now());
        match stream_lines.recv_timeout(left) {
            Ok(chunk) => seen.push_str(&chunk),
            Err(_) => panic!("host C's stream never carried the message; it sent: {seen:?}"),
        }
    }
    assert!(
        seen.contains(&format!("id: {id}")),
        "the stream's event has the message's id: {seen:?}"
    );
}

#[test]
fn a_host_killed_under_send_load_loses_no_acknowledged_message_and_the_others_keep_answering() {
    let (_database, mut servers) = hosts(3);
    for id in ["alice", "bob"] {
        servers[0].register(json!({"id": id}));
    }
    let acknowledged: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..6)
        .map(|s| {
            let base = servers[s % 3].base.clone();
            let (acknowledged, stop) = (Arc::clone(&acknowledged), Arc::clone(&stop));
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let mut n = 0;
                let mut failures_after_kill = 0;
                while !stop.load(Ordering::Relaxed) {
                    let body = format!("sender {s} message {n}");
                    n += 1;
                    let sent = client
                        .post(format!("{base}/v1/messages"))
                        .bearer_auth(OPERATOR)
                        .json(&json!({"from": "bob", "to": "alice", "body": body}))
                        .send();
                    match sent {
                        Ok(reply)
                            if reply.status().as_u16() == 201 || reply.status().as_u16() == 200 =>
                        {
                            let id = reply.json::<Json>().unwrap()["message"]["id"]
                                .as_i64()
                                .unwrap();
                            acknowledged.lock().unwrap().push((body, id));
                        }
                        // The killed host's senders see their connection go; nothing acknowledged.
                        _ => failures_after_kill += 1,
                    }
                }
                failures_after_kill
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let before_kill = acknowledged.lock().unwrap().len();
    let killed = servers.remove(0);
    Command::new("kill")
        .args(["-9", &killed.pid().to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        let _ = sender.join().unwrap();
    }
    drop(killed);
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(before_kill > 0, "sends were acknowledged before the kill");
    assert!(
        acknowledged.len() > before_kill,
        "the other hosts kept acknowledging sends after the kill ({before_kill} before, {} in all)",
        acknowledged.len()
    );
    // Every acknowledged message is there once, read through a surviving host.
    let mut stored: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut cursor = 0;
    loop {
        let page = servers[1].get(&format!("/v1/messages?limit=500&since={cursor}"), OPERATOR);
        assert_eq!(page.status, 200, "{:?}", page.body);
        let items = page.body.as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            break;
        }
        for item in &items {
            stored
                .entry(item["body"].as_str().unwrap().to_owned())
                .or_default()
                .push(item["id"].as_i64().unwrap());
            cursor = cursor.max(item["id"].as_i64().unwrap());
        }
    }
    for (body, id) in &acknowledged {
        assert_eq!(
            stored.get(body),
            Some(&vec![*id]),
            "acknowledged message {id} ({body}) is stored exactly once"
        );
    }
    assert!(
        stored.values().all(|ids| ids.len() == 1),
        "no message is stored twice"
    );
}

/// Takes the database away from every connection the relays hold (the pools' and the
/// listeners') and refuses new ones, as a restarting server would, or gives it back; the rest of
/// the test cluster goes on serving the other tests.
fn away(database: &Database, away: bool) {
    let mut admin =
        postgres::Client::connect(&crate::common::postgres::cluster_url(), postgres::NoTls)
            .unwrap();
    let sql = if away {
        format!(
            "ALTER DATABASE {db} ALLOW_CONNECTIONS false; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'",
            db = database.name()
        )
    } else {
        format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", database.name())
    };
    admin.batch_execute(&sql).unwrap();
}

#[test]
fn the_database_going_away_answers_503_and_the_relay_recovers_by_itself() {
    let database = Database::create();
    let relay = RelayServer::start_at(&database.url, &[]);
    for id in ["alice", "bob"] {
        relay.register(json!({"id": id}));
    }
    let sent = relay.send(json!({"from": "bob", "to": "alice", "body": "before"}));
    assert!(sent.status < 300, "{:?}", sent.body);
    away(&database, true);
    let down = relay.send(json!({"from": "bob", "to": "alice", "body": "while down"}));
    assert_eq!(
        down.status, 503,
        "a send while the database is away: {:?}",
        down.body
    );
    assert_eq!(down.code(), "unavailable", "{:?}", down.body);
    let read = relay.get("/v1/agents/alice/inbox", OPERATOR);
    assert_eq!(
        read.status, 503,
        "a read while the database is away: {:?}",
        read.body
    );
    away(&database, false);
    // Back by itself: later calls succeed without a restart of the relay.
    let deadline = Instant::now() + Duration::from_secs(15);
    let after = loop {
        let reply = relay.send(json!({"from": "bob", "to": "alice", "body": "after"}));
        if reply.status < 300 || Instant::now() > deadline {
            break reply;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(after.status < 300, "the relay recovered: {:?}", after.body);
    let inbox = relay.get("/v1/agents/alice/inbox", OPERATOR);
    let bodies: Vec<&str> = inbox
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(
        bodies,
        ["before", "after"],
        "what was acknowledged is there, the refused send is not"
    );
}

#[test]
fn under_send_load_the_database_going_away_loses_nothing_acknowledged() {
    // Two hosts under a steady send load; the database is taken away from them for a second
    // (every connection of theirs closed, new ones refused: what a restart does to them, without
    // restarting the cluster the other tests share) and given back.
    let database = Database::create();
    let servers: Vec<RelayServer> = (0..2)
        .map(|_| RelayServer::start_at(&database.url, &[]))
        .collect();
    for id in ["alice", "bob"] {
        servers[0].register(json!({"id": id}));
    }
    let acknowledged: Arc<Mutex<Vec<i64>>> = Arc::default();
    let refused: Arc<Mutex<Vec<u16>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..4)
        .map(|s| {
            let base = servers[s % 2].base.clone();
            let (acknowledged, refused, stop) = (
                Arc::clone(&acknowledged),
                Arc::clone(&refused),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(20))
                    .build()
                    .unwrap();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let reply = client
                        .post(format!("{base}/v1/messages"))
                        .bearer_auth(OPERATOR)
                        .json(&json!({"from": "bob", "to": "alice", "body": format!("{s}/{n}")}))
                        .send()
                        .unwrap();
                    let status = reply.status().as_u16();
                    if status < 300 {
                        let body: Json = reply.json().unwrap();
                        acknowledged
                            .lock()
                            .unwrap()
                            .push(body["message"]["id"].as_i64().unwrap());
                    } else {
                        refused.lock().unwrap().push(status);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(800));
    away(&database, true);
    // Away for a second, and until a send has been refused (on a busy machine a second can pass
    // before any sender's call gets its answer).
    let away_since = Instant::now();
    while (away_since.elapsed() < Duration::from_millis(1000) || refused.lock().unwrap().is_empty())
        && away_since.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let during = acknowledged.lock().unwrap().len();
    away(&database, false);
    // Back by itself: the senders' later calls succeed again.
    let deadline = Instant::now() + Duration::from_secs(15);
    while acknowledged.lock().unwrap().len() < during + 20 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    let refused = refused.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= during + 20,
        "sends succeed again once the database is back ({during} before, {} in all)",
        acknowledged.len()
    );
    assert!(!refused.is_empty(), "sends were refused while it was away");
    assert!(
        refused.iter().all(|status| *status == 503),
        "what was refused was refused with 503: {refused:?}"
    );
    let mut stored = BTreeSet::new();
    let mut cursor = 0;
    loop {
        let page = servers[1].get(&format!("/v1/messages?limit=500&since={cursor}"), OPERATOR);
        assert_eq!(page.status, 200, "{:?}", page.body);
        let ids = crate::common::ids(&page.body);
        if ids.is_empty() {
            break;
        }
        cursor = *ids.iter().max().unwrap();
        stored.extend(ids);
    }
    let lost: Vec<&i64> = acknowledged
        .iter()
        .filter(|id| !stored.contains(id))
        .collect();
    assert!(lost.is_empty(), "acknowledged and lost: {lost:?}");
}

/// Every table of a SQLite relay file, row for row, as text; the search index's shadow tables
/// (its storage, laid out as the rows arrived) are read through the index itself.
fn dump(path: &std::path::Path) -> BTreeMap<String, Vec<String>> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'message\\_search\\_%' ESCAPE '\\' ORDER BY name",
        )
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    tables
        .into_iter()
        .map(|table| {
            let mut statement = conn
                .prepare(&format!("SELECT * FROM \"{table}\" ORDER BY 1, 2"))
                .unwrap();
            let columns = statement.column_count();
            let mut rows: Vec<String> = statement
                .query_map([], |row| {
                    Ok((0..columns)
                        .map(|i| format!("{:?}", row.get_ref(i).unwrap()))
                        .collect::<Vec<_>>()
                        .join("|"))
                })
                .unwrap()
                .map(Result::unwrap)
                .collect();
            rows.sort();
            (table, rows)
        })
        .collect()
}

fn copy(from: &str, to: &str) -> String {
    let output = Command::new(binary())
        .args(["copy", "--from", from, "--to", to])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "copy {from} -> {to}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn a_relay_copied_to_postgres_and_back_is_unchanged_and_answers_the_same() {
    // A relay with a bit of everything: agents, a thread, reads, a claimed job, a completed one.
    let original = RelayServer::start();
    let alice = original.register(json!({"id": "alice", "label": "pool", "tags": ["rust"]}));
    let bob = original.register(json!({"id": "bob"}));
    let first = id_of(&original.post(
        "/v1/messages",
        &bob,
        json!({"from": "bob", "to": "alice", "body": "hello"}),
    ));
    original.post(
        "/v1/messages",
        &alice,
        json!({"from": "alice", "to": "bob", "body": "hi", "replyTo": first}),
    );
    original.post(
        &format!("/v1/messages/{first}/read"),
        &alice,
        json!({"agentId": "alice"}),
    );
    let jobs: Vec<i64> = (0..3)
        .map(|j| {
            id_of(&original.post(
                "/v1/messages",
                &bob,
                json!({"from": "bob", "to": "label:pool", "body": format!("job {j}"), "claimable": true}),
            ))
        })
        .collect();
    let claim = |relay: &RelayServer| {
        relay.post(
            "/v1/agents/alice/claim-next",
            &alice,
            json!({"leaseMs": 600_000}),
        )
    };
    let taken = claim(&original).body["id"].as_i64().unwrap();
    original.post(
        &format!("/v1/messages/{taken}/complete"),
        &alice,
        json!({"agentId": "alice"}),
    );
    let held = claim(&original).body["id"].as_i64().unwrap();
    let views = |relay: &RelayServer| {
        (
            relay.get("/v1/agents/alice/inbox", &alice).body,
            relay.get(&format!("/v1/threads/{first}"), &alice).body,
            relay.get(&format!("/v1/messages/{held}"), &alice).body,
            relay.get("/v1/agents", &alice).body,
        )
    };
    let before = views(&original);
    let dir = original.stop();
    let source = dir.path().join("relay.db");

    let database = Database::create();
    let counts = copy(source.to_str().unwrap(), &database.url);
    assert!(
        counts.contains("messages"),
        "copy prints row counts: {counts}"
    );
    let back = dir.path().join("back.db");
    copy(&database.url, back.to_str().unwrap());
    assert_eq!(
        dump(&source),
        dump(&back),
        "SQLite -> PostgreSQL -> SQLite gives every table's rows back unchanged"
    );

    // The PostgreSQL copy serves the same state; a new job gets the next id, not an old one.
    let served = RelayServer::start_at(&database.url, &[]);
    assert_eq!(
        views(&served),
        before,
        "inbox, thread, claim and agents as before"
    );
    let next = claim(&served).body["id"].as_i64().unwrap();
    assert!(
        jobs.contains(&next) && next != taken && next != held,
        "the third job is next"
    );
    let newer = id_of(&served.post(
        "/v1/messages",
        &bob,
        json!({"from": "bob", "to": "alice", "body": "after the move"}),
    ));
    assert!(
        newer > *jobs.iter().max().unwrap(),
        "ids go on after the copied ones"
    );

    // A copy never lands on a database that holds something.
    let refused = Command::new(binary())
        .args([
            "copy",
            "--from",
            source.to_str().unwrap(),
            "--to",
            &database.url,
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[test]
fn hosts_racing_for_one_registration_one_idempotency_key_and_one_job_have_exactly_one_winner() {
    let (_database, servers) = hosts(2);
    for round in 0..5 {
        // The same new agent registered through both hosts at once: one creates it (and gets
        // the token), the other finds it there.
        let id = format!("racer{round}");
        let answers: Vec<crate::common::Reply> = std::thread::scope(|scope| {
            let racing: Vec<_> = servers
                .iter()
                .map(|server| {
                    let id = id.clone();
                    scope.spawn(move || server.post("/v1/agents", OPERATOR, json!({"id": id})))
                })
                .collect();
            racing.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let created: Vec<bool> = answers
            .iter()
            .map(|a| {
                assert!(a.status < 300, "{:?}", a.body);
                a.body["created"].as_bool().unwrap()
            })
            .collect();
        assert_eq!(
            created.iter().filter(|c| **c).count(),
            1,
            "exactly one host created {id}: {answers:?}"
        );

        // The same idempotency key through both hosts at once: one message.
        let key = format!("key-{round}");
        let pool = format!("pool{round}");
        let claimers = [format!("a{round}"), format!("b{round}")];
        for claimer in &claimers {
            servers[0].register(json!({"id": claimer, "label": pool}));
        }
        let sent: Vec<crate::common::Reply> = std::thread::scope(|scope| {
            let racing: Vec<_> = servers
                .iter()
                .map(|server| {
                    let (key, id, to) = (key.clone(), id.clone(), format!("label:{pool}"));
                    scope.spawn(move || {
                        server.send(json!({"from": id, "to": to, "body": "once",
                            "idempotencyKey": key, "claimable": true}))
                    })
                })
                .collect();
            racing.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let ids: BTreeSet<i64> = sent.iter().map(id_of).collect();
        assert_eq!(ids.len(), 1, "one message for one key: {sent:?}");
        let fresh = sent
            .iter()
            .filter(|s| s.body["created"].as_bool() != Some(false))
            .count();
        assert_eq!(
            fresh, 1,
            "one send created it, the other was told: {sent:?}"
        );

        // Two agents claim that job at once, each through its own host: one holds it, the
        // other gets 409.
        let job = *ids.iter().next().unwrap();
        let claims: Vec<crate::common::Reply> = std::thread::scope(|scope| {
            let racing: Vec<_> = servers
                .iter()
                .zip(&claimers)
                .map(|(server, claimer)| {
                    scope.spawn(move || {
                        server.post(
                            &format!("/v1/messages/{job}/claim"),
                            OPERATOR,
                            json!({"agentId": claimer}),
                        )
                    })
                })
                .collect();
            racing.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let mut statuses: Vec<u16> = claims.iter().map(|c| c.status).collect();
        statuses.sort_unstable();
        assert_eq!(
            statuses,
            [200, 409],
            "one claim wins, the other is 409: {claims:?}"
        );
    }
}

#[test]
fn a_reader_following_since_misses_none_of_the_messages_two_hosts_write_side_by_side() {
    // Ids are handed out before commit; were two sends to commit out of id order, a reader that
    // saw the higher id and asks `since` it would never see the lower one.
    let (_database, servers) = hosts(2);
    let alice = servers[0].register(json!({"id": "alice"}));
    servers[0].register(json!({"id": "bob"}));
    let acknowledged: Mutex<BTreeSet<i64>> = Mutex::default();
    let seen: Mutex<BTreeSet<i64>> = Mutex::default();
    let sending = AtomicBool::new(true);
    std::thread::scope(|scope| {
        let senders: Vec<_> = (0..8)
            .map(|s| {
                let (server, acknowledged) = (&servers[s % 2], &acknowledged);
                scope.spawn(move || {
                    for n in 0..40 {
                        let sent = server.send(
                            json!({"from": "bob", "to": "alice", "body": format!("{s}/{n}")}),
                        );
                        acknowledged.lock().unwrap().insert(id_of(&sent));
                    }
                })
            })
            .collect();
        let (reader, seen, sending) = (&servers[1], &seen, &sending);
        let alice = &alice;
        scope.spawn(move || {
            let mut cursor = 0;
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                let done = !sending.load(Ordering::Relaxed);
                let page = reader.get(
                    &format!("/v1/agents/alice/inbox?since={cursor}&limit=500"),
                    alice,
                );
                assert_eq!(page.status, 200, "{:?}", page.body);
                let ids = crate::common::ids(&page.body);
                for id in &ids {
                    seen.lock().unwrap().insert(*id);
                    cursor = cursor.max(*id);
                }
                if done && ids.is_empty() {
                    return;
                }
            }
        });
        for sender in senders {
            sender.join().unwrap();
        }
        sending.store(false, Ordering::Relaxed);
    });
    let acknowledged = acknowledged.into_inner().unwrap();
    let seen = seen.into_inner().unwrap();
    assert_eq!(acknowledged.len(), 320);
    let missed: Vec<&i64> = acknowledged.difference(&seen).collect();
    assert!(
        missed.is_empty(),
        "the reader following `since` never saw {} acknowledged messages: {missed:?}",
        missed.len()
    );
}

#[test]
fn tls_is_used_when_the_url_asks_for_it_and_the_servers_certificate_is_checked() {
    let ca = std::env::var("RELAY_TEST_POSTGRES_CA")
        .expect("RELAY_TEST_POSTGRES_CA: run under tests/postgres/with-cluster.sh (its CA)");
    let database = Database::create();
    let ssl_connections = |database: &Database| -> i64 {
        let mut admin =
            postgres::Client::connect(&crate::common::postgres::cluster_url(), postgres::NoTls)
                .unwrap();
        admin
            .query_one(
                "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.datname = $1 AND s.ssl",
                &[&database.name()],
            )
            .unwrap()
            .get(0)
    };
    // Plain without sslmode.
    let plain = RelayServer::start_at(&database.url, &[]);
    plain.register(json!({"id": "alice"}));
    assert_eq!(ssl_connections(&database), 0, "no TLS unless the URL asks");
    drop(plain);
    // TLS, the certificate checked against the CA the URL names.
    let url = format!("{}?sslmode=verify-full&sslrootcert={ca}", database.url);
    let secure = RelayServer::start_at(&url, &[]);
    let agents = secure.get("/v1/agents", OPERATOR);
    assert_eq!(agents.status, 200, "{:?}", agents.body);
    assert!(
        ssl_connections(&database) >= 1,
        "the relay's connections use TLS"
    );
    drop(secure);
    // A certificate nobody vouches for (the system's roots do not know the test CA): refused at
    // start, one line naming the database and the cause, exit code 1.
    let refused = Command::new(binary())
        .args(["migrate", "--db"])
        .arg(format!("{}?sslmode=require", database.url))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot connect to postgres://") && stderr.contains("certificate"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A Postgres relay created before the lease length was kept (schema 6) is upgraded in place
/// when served (guest/src/schema.rs, `POSTGRES_STEPS`): the column is added, its old claims
/// read on, and new claims keep their lease length.
#[test]
fn a_postgres_relay_at_schema_6_is_upgraded_in_place() {
    let database = Database::create();
    let relay = RelayServer::start_at(&database.url, &[]);
    let alice = relay.register(json!({"id": "alice"}));
    let old = id_of(
        &relay.send(json!({"from": "user", "to": "alice", "body": "old", "claimable": true})),
    );
    let claimed = relay.post(
        &format!("/v1/messages/{old}/claim"),
        &alice,
        json!({"agentId": "alice"}),
    );
    assert_eq!(claimed.status, 200, "{:?}", claimed.body);
    drop(relay);
    // As a 0.6 Postgres relay left it: no lease lengths, no priorities, version 6.
    let mut client = postgres::Client::connect(&database.url, postgres::NoTls).unwrap();
    client
        .batch_execute(
            "ALTER TABLE messages DROP COLUMN claim_lease_ms; \
             ALTER TABLE messages DROP COLUMN priority; \
             UPDATE relay_settings SET value = '6' WHERE key = 'schema-version'",
        )
        .unwrap();

    let relay = RelayServer::start_at(&database.url, &[]);
    let held = relay.get(&format!("/v1/messages/{old}"), OPERATOR);
    assert_eq!(held.body["claimedBy"], "alice", "{:?}", held.body);
    let new = id_of(
        &relay.send(json!({"from": "user", "to": "alice", "body": "new", "claimable": true})),
    );
    let claimed = relay.post(
        &format!("/v1/messages/{new}/claim"),
        &alice,
        json!({"agentId": "alice", "leaseMs": 60_000}),
    );
    assert_eq!(claimed.status, 200, "{:?}", claimed.body);
    let rows = client
        .query("SELECT id, claim_lease_ms FROM messages ORDER BY id", &[])
        .unwrap();
    let leases: Vec<(i64, Option<i64>)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    assert_eq!(leases, vec![(old, None), (new, Some(60_000))]);
    let version = client
        .query_one(
            "SELECT value FROM relay_settings WHERE key = 'schema-version'",
            &[],
        )
        .unwrap();
    assert_eq!(version.get::<_, String>(0), "11");
}
