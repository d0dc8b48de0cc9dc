//! `agent-relay watch AGENT`: follows an agent's event stream and prints each message as one JSON
//! line, reconnecting with `Last-Event-ID` so nothing is lost or printed twice.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use reqwest::StatusCode;

/// Where and how to watch.
#[derive(Debug, Clone)]
pub struct Watch {
    /// The relay's base URL, e.g. `http://127.0.0.1:8787`.
    pub url: String,
    pub agent: String,
    pub token: Option<String>,
    /// Start after this message id (the stream's `since`).
    pub since: Option<i64>,
}

/// The longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A connection silent for this long (no event, no keep-alive) is considered dead.
const SILENCE: Duration = Duration::from_secs(90);

/// Follows the stream until the relay refuses it (bad token, unknown agent) or stdout closes.
///
/// # Errors
/// The client cannot be built or stdout fails.
pub fn run(watch: &Watch) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let refused = runtime.block_on(follow(watch, &[], "agent-relay watch", |event| {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", event.data).context("writing to stdout")?;
        stdout.flush().context("writing to stdout")
    }))?;
    eprintln!(
        "agent-relay watch: the relay refused the stream ({}): {}",
        refused.status, refused.body
    );
    Ok(ExitCode::FAILURE)
}

/// The relay refused the stream with an error a reconnect will not fix.
#[derive(Debug, Clone)]
pub struct Refused {
    pub status: StatusCode,
    pub body: String,
}

/// What one connection ended with.
enum Ended {
    /// Worth reconnecting: the network or the server went away.
    Dropped(String),
    /// The relay answered with an error that a reconnect will not fix.
    Refused(Refused),
}

/// Follows the agent's stream (with the extra `query` pairs), handing every message event to
/// `deliver` in order, exactly once: after a dropped connection it reconnects with backoff and
/// `Last-Event-ID` set to the last event delivered. Lines about reconnecting go to stderr under
/// `name`. Returns when the relay refuses the stream.
///
/// # Errors
/// The HTTP client cannot be built, or `deliver` failed.
pub async fn follow(
    watch: &Watch,
    query: &[(&str, String)],
    name: &str,
    mut deliver: impl FnMut(&SseEvent) -> anyhow::Result<()>,
) -> anyhow::Result<Refused> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(SILENCE)
        .build()
        .context("building the HTTP client")?;
    let mut last_id = watch.since;
    let mut backoff = Duration::from_millis(250);
    loop {
        let before = last_id;
        match connect(&client, watch, query, &mut last_id, &mut deliver).await? {
            Ended::Refused(refused) => return Ok(refused),
            Ended::Dropped(cause) => {
                if last_id != before {
                    backoff = Duration::from_millis(250);
                }
                eprintln!(
                    "{name}: {cause}; reconnecting in {} ms",
                    backoff.as_millis()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// One connection: delivers every message event and moves `last_id` past it.
async fn connect(
    client: &reqwest::Client,
    watch: &Watch,
    query: &[(&str, String)],
    last_id: &mut Option<i64>,
    deliver: &mut impl FnMut(&SseEvent) -> anyhow::Result<()>,
) -> anyhow::Result<Ended> {
    let mut url = format!(
        "{}/v1/agents/{}/stream",
        watch.url.trim_end_matches('/'),
        watch.agent
    );
    // The pairs are the caller's own fixed words (`unread=true`), never user text.
    for (i, (key, value)) in query.iter().enumerate() {
        url.push(if i == 0 { '?' } else { '&' });
        url.push_str(key);
        url.push('=');
        url.push_str(value);
    }
    let mut request = client.get(url).header("accept", "text/event-stream");
    if let Some(token) = &watch.token {
        request = request.bearer_auth(token);
    }
    if let Some(id) = last_id {
        request = request.header("last-event-id", id.to_string());
    }
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(error) => return Ok(Ended::Dropped(format!("cannot reach the relay: {error}"))),
    };
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        return Ok(if status.is_server_error() {
            Ended::Dropped(format!("the relay answered {status}: {body}"))
        } else {
            Ended::Refused(Refused { status, body })
        });
    }
    let mut events = EventReader::default();
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return Ok(Ended::Dropped("the stream ended".to_owned())),
            Err(error) => return Ok(Ended::Dropped(format!("the stream broke: {error}"))),
        };
        for event in events.push(&chunk) {
            if event.kind.as_deref() == Some("error") {
                return Ok(if is_transient(&event.data) {
                    Ended::Dropped(format!("the stream stopped: {}", event.data))
                } else {
                    Ended::Refused(Refused {
                        status,
                        body: event.data,
                    })
                });
            }
            deliver(&event)?;
            if let Some(id) = event.id.as_deref().and_then(|id| id.parse().ok()) {
                *last_id = Some(id);
            }
        }
    }
}

/// Whether an error the relay sent mid-stream may clear by itself (overload, a busy database).
fn is_transient(error: &str) -> bool {
    let code = serde_json::from_str::<serde_json::Value>(error)
        .ok()
        .and_then(|e| e["error"]["code"].as_str().map(str::to_owned));
    matches!(
        code.as_deref(),
        Some("overloaded" | "unavailable" | "internal" | "storage_full")
    )
}

/// One server-sent event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub kind: Option<String>,
    pub data: String,
}

/// Splits a byte stream into server-sent events (the subset of the format the relay sends).
#[derive(Debug, Default)]
pub struct EventReader {
    pending: Vec<u8>,
    event: SseEvent,
    has_data: bool,
}

impl EventReader {
    /// Takes the next bytes and returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.pending.extend_from_slice(bytes);
        let mut done = Vec::new();
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if std::mem::take(&mut self.has_data) {
                    done.push(std::mem::take(&mut self.event));
                }
                self.event = SseEvent::default();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => self.event.id = Some(value.to_owned()),
                "event" => self.event.kind = Some(value.to_owned()),
                "data" => {
                    if self.has_data {
                        self.event.data.push('\n');
                    }
                    self.event.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_are_joined() {
        let mut reader = EventReader::default();
        assert!(reader.push(b": keep-alive\n\nid: 7\nda").is_empty());
        let events = reader.push(b"ta: {\"id\":7}\n\nevent: error\ndata: x\n\n");
        assert_eq!(
            events,
            [
                SseEvent {
                    id: Some("7".into()),
                    kind: None,
                    data: "{\"id\":7}".into()
                },
                SseEvent {
                    id: None,
                    kind: Some("error".into()),
                    data: "x".into()
                },
            ]
        );
    }
}
