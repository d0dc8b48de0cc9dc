//! Connections cannot be held for free (issue 14, point 7): a request head must arrive within
//! the header timeout, an idle connection is closed after the idle timeout (a held long-poll or
//! event stream is not idle), and one peer address, or everyone together, may hold only so many
//! connections; beyond that a new one is answered 503 while the relay keeps serving others.

use crate::common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{OPERATOR, RelayServer};

fn address(relay: &RelayServer) -> SocketAddr {
    relay.base.trim_start_matches("http://").parse().unwrap()
}

/// Reads until the server closes the connection or `within` passes; how long it stayed open.
fn closed_within(
    stream: &mut TcpStream,
    within: Duration,
    mut tick: impl FnMut(&mut TcpStream),
) -> Option<Duration> {
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buffer = [0_u8; 4096];
    while started.elapsed() < within {
        match stream.read(&mut buffer) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(started.elapsed()),
        }
        tick(stream);
    }
    None
}

/// The first answer on a connection: its status line and headers, then the body by its length.
fn read_answer(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut text = Vec::new();
    let mut byte = [0_u8; 1];
    while !text.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "the answer ended early");
        text.push(byte[0]);
    }
    let head = String::from_utf8(text).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0_u8; length];
    stream.read_exact(&mut body).unwrap();
    head + &String::from_utf8_lossy(&body)
}

#[test]
fn a_request_head_sent_a_byte_at_a_time_is_cut_off_at_the_header_timeout() {
    let relay = RelayServer::start_with(&["--header-timeout-ms", "1000"]);
    let mut slow = TcpStream::connect(address(&relay)).unwrap();
    slow.write_all(b"GET /v1/health HTTP/1.1\r\nHost: relay\r\n")
        .unwrap();
    let mut headers = 0;
    let open = closed_within(&mut slow, Duration::from_secs(10), |stream| {
        headers += 1;
        let _ = stream.write_all(format!("X-Slow-{headers}: 1\r\n").as_bytes());
    });
    let open = open.expect("a slow request head is closed");
    assert!(
        open < Duration::from_millis(3000),
        "closed after {open:?}, not within the 1 s header timeout (plus a tick)"
    );
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let relay = RelayServer::start_with(&["--idle-timeout-ms", "1000"]);
    let mut idle = TcpStream::connect(address(&relay)).unwrap();
    idle.write_all(b"GET /v1/health HTTP/1.1\r\nHost: relay\r\n\r\n")
        .unwrap();
    let answer = read_answer(&mut idle);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let open = closed_within(&mut idle, Duration::from_secs(10), |_| {})
        .expect("an idle keep-alive connection is closed");
    assert!(
        (Duration::from_millis(900)..Duration::from_millis(3000)).contains(&open),
        "closed after {open:?} of idleness, not at the 1 s idle timeout"
    );

    let mut silent = TcpStream::connect(address(&relay)).unwrap();
    let open = closed_within(&mut silent, Duration::from_secs(10), |_| {})
        .expect("a connection that never sends a byte is closed too");
    assert!(open < Duration::from_millis(3000), "closed after {open:?}");
}

#[test]
fn a_held_long_poll_and_an_event_stream_are_not_idle() {
    let relay = RelayServer::start_with(&["--idle-timeout-ms", "300", "--keep-alive-secs", "1"]);
    relay.register(common::json!({"id": "alice"}));
    let started = Instant::now();
    let held = relay.get("/v1/agents/alice/inbox?wait=1.5", OPERATOR);
    assert_eq!(
        held.status, 200,
        "the long-poll is answered: {:?}",
        held.body
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "it was held its whole wait"
    );

    let mut stream = TcpStream::connect(address(&relay)).unwrap();
    stream
        .write_all(
            format!(
                "GET /v1/agents/alice/stream HTTP/1.1\r\nHost: relay\r\n\
                 Authorization: Bearer {OPERATOR}\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    let open = closed_within(&mut stream, Duration::from_millis(1500), |_| {});
    assert_eq!(open, None, "an event stream outlives the idle timeout");
}

#[test]
fn connections_beyond_the_cap_of_one_address_are_answered_503() {
    let relay = RelayServer::start_with(&["--max-connections-per-peer", "4"]);
    let held: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(address(&relay)).unwrap())
        .collect();
    // The four are admitted once the server has accepted them; a fifth is over the cap.
    std::thread::sleep(Duration::from_millis(200));
    let mut fifth = TcpStream::connect(address(&relay)).unwrap();
    fifth
        .write_all(b"GET /v1/health HTTP/1.1\r\nHost: relay\r\n\r\n")
        .unwrap();
    let answer = read_answer(&mut fifth);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\"overloaded\""), "{answer}");

    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reply = relay.request("GET", "/v1/health", None, None);
        if reply.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slots came back when the four closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_total_cap_holds_across_addresses() {
    let relay = RelayServer::start_with(&["--max-connections", "3"]);
    let _held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(address(&relay)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let other = from_address([127, 0, 0, 2]);
    let status = other
        .get(format!("{}/v1/health", relay.base))
        .send()
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 503);
}

/// An HTTP client whose connections come from another loopback address.
fn from_address(ip: [u8; 4]) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::from(ip)))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[test]
fn health_answers_while_one_client_holds_many_idle_sockets() {
    let relay = RelayServer::start_with(&["--max-connections-per-peer", "200"]);
    let held: Vec<TcpStream> = (0..2000)
        .filter_map(|_| TcpStream::connect(address(&relay)).ok())
        .collect();
    assert!(
        held.len() >= 1000,
        "the client opened {} sockets",
        held.len()
    );
    let monitor = from_address([127, 0, 0, 3]);
    for _ in 0..5 {
        let started = Instant::now();
        let reply = monitor
            .get(format!("{}/v1/health", relay.base))
            .send()
            .unwrap();
        assert_eq!(reply.status().as_u16(), 200, "health from another address");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "health took {:?}",
            started.elapsed()
        );
    }
    drop(held);
}

/// A bearer token longer than any the relay issues is refused at the front door, on every
/// front-end, naming the limit (docs/security.md, "Bearer tokens: size, what is noted").
#[test]
fn an_over_long_bearer_token_is_refused_naming_the_limit() {
    let relay = RelayServer::start();
    let alice = relay.register(common::json!({"id": "alice"}));
    let long = format!("relay_{}", "a".repeat(600));
    let client = reqwest::blocking::Client::new();
    let refused = |response: reqwest::blocking::Response, what: &str| {
        let status = response.status().as_u16();
        let body: common::Json = response.json().unwrap_or_default();
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized", "{what}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert!(
            message.contains("512 bytes"),
            "{what}: the refusal names the limit: {message}"
        );
    };
    for path in [
        "/v1/whoami",
        "/v1/agents/alice/inbox",
        "/v1/agents/alice/stream",
    ] {
        let response = client
            .get(format!("{}{path}", relay.base))
            .bearer_auth(&long)
            .send()
            .unwrap();
        refused(response, path);
    }
    let response = client
        .post(format!("{}/mcp", relay.base))
        .header("accept", "application/json, text/event-stream")
        .bearer_auth(&long)
        .json(
            &common::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "probe", "version": "0"}}}),
        )
        .send()
        .unwrap();
    refused(response, "/mcp");
    // A short unknown token is the usual refusal; the agent's own token still works.
    let unknown = relay.get("/v1/whoami", "relay_not-a-token");
    assert_eq!(unknown.status, 401);
    assert!(
        !unknown.body.to_string().contains("512 bytes"),
        "{:?}",
        unknown.body
    );
    assert_eq!(relay.get("/v1/whoami", &alice).status, 200);
}

/// An event stream whose reader stopped reading holds the answer's buffers only until the idle
/// timeout: a connection whose writes make no progress that long is closed (docs/security.md,
/// "Streams that are not read").
#[test]
fn a_stream_whose_reader_does_not_read_is_closed_at_the_idle_timeout() {
    let relay = RelayServer::start_with(&["--idle-timeout-ms", "1000", "--keep-alive-secs", "60"]);
    relay.register(common::json!({"id": "alice"}));
    let mut stream = TcpStream::connect(address(&relay)).unwrap();
    stream
        .write_all(
            format!(
                "GET /v1/agents/alice/stream HTTP/1.1\r\nHost: relay\r\n\
                 Authorization: Bearer {OPERATOR}\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    // 12 MB of messages for a reader that reads nothing: more than the socket buffers hold.
    let body = "m".repeat(200 * 1024);
    for n in 0..60 {
        let sent = relay.send(common::json!({"from": "user", "to": "alice", "body": body}));
        assert_eq!(sent.status, 201, "message {n}: {:?}", sent.body);
    }
    std::thread::sleep(Duration::from_secs(4));
    // Now read what was sent: the server must have given up on the connection.
    let open = closed_within(&mut stream, Duration::from_secs(10), |_| {});
    assert!(
        open.is_some(),
        "a stream that was not read for 4 s (idle timeout 1 s) is still open"
    );
}
