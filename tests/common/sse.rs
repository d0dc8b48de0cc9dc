//! A server-sent event stream read on the test's side: an agent's `/v1/agents/{id}/stream` or the
//! operator's `/v1/stream` (docs/http-api.md), parsed by the CLI's own `EventReader`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use agent_relay::client::watch::{EventReader, SseEvent};

use super::{Json, RelayServer};

pub struct EventStream {
    runtime: tokio::runtime::Runtime,
    response: reqwest::Response,
    reader: EventReader,
    ready: VecDeque<SseEvent>,
    /// Whether the server closed the stream.
    pub ended: bool,
}

impl EventStream {
    /// Opens `path` with `token`, resuming after `last_event_id` when given; asserts the server
    /// answered 200 with `text/event-stream`.
    pub fn open(
        relay: &RelayServer,
        path: &str,
        token: &str,
        last_event_id: Option<i64>,
    ) -> EventStream {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut request = reqwest::Client::new()
            .get(format!("{}{path}", relay.base))
            .bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = runtime.block_on(request.send()).unwrap();
        assert_eq!(response.status(), 200, "the stream {path} was refused");
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "a stream is text/event-stream"
        );
        EventStream {
            runtime,
            response,
            reader: EventReader::default(),
            ready: VecDeque::new(),
            ended: false,
        }
    }

    /// The next event, or `None` when none comes within `within` or the stream ended.
    pub fn next(&mut self, within: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + within;
        while self.ready.is_empty() {
            let response = &mut self.response;
            let chunk = self
                .runtime
                .block_on(async { tokio::time::timeout_at(deadline, response.chunk()).await })
                .ok()?
                .unwrap();
            let Some(chunk) = chunk else {
                self.ended = true;
                return None;
            };
            self.ready.extend(self.reader.push(&chunk));
        }
        self.ready.pop_front()
    }

    /// The next `message` event within `within`, as (id, data), passing over `change` events;
    /// any other event fails the test.
    pub fn next_message(&mut self, within: Duration) -> Option<(i64, Json)> {
        let deadline = Instant::now() + within;
        loop {
            let event = self.next(deadline.saturating_duration_since(Instant::now()))?;
            match event.kind.as_deref() {
                Some("change") => continue,
                Some("message") | None => return Some(message_of(&event)),
                other => panic!("unexpected event {other:?}: {}", event.data),
            }
        }
    }

    /// The ids of the next `count` message events, failing if they do not come within 30 s each.
    pub fn take_ids(&mut self, count: usize) -> Vec<i64> {
        (0..count)
            .map(|n| {
                self.next_message(Duration::from_secs(30))
                    .unwrap_or_else(|| panic!("message event {} of {count} never came", n + 1))
                    .0
            })
            .collect()
    }
}

/// A message event's message and id, checking that the event id is the message id.
fn message_of(event: &SseEvent) -> (i64, Json) {
    let data: Json = serde_json::from_str(&event.data).unwrap();
    let id = data["id"].as_i64().unwrap();
    assert_eq!(
        event.id,
        Some(id.to_string()),
        "the event id is the message id"
    );
    (id, data)
}
