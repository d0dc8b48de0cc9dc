//! Push delivery: long-polls and event streams that wake when a write commits.
//!
//! The host knows one thing here: a call that changed rows committed (the call runner committed
//! it and raises the commit signal). Every waiting request subscribes to that signal and, when
//! woken, re-runs its export; what the answer holds is still the guest's decision. A waiter costs
//! a parked future and a watch receiver: it holds no concurrency slot, no thread and no timer
//! beyond its own deadline, so idle waiters cost no CPU.
//!
//! Two ways to wait, both generic over a list export (the route table names which):
//! - **held** ([`Calls::hold`]): an empty list answer is held until a write commits (then the
//!   export runs again) or the wait ends, when the empty list is the answer.
//! - **streamed** (here): the export runs with `since` set to the last item's `id`; every item
//!   becomes a server-sent event with that id, and an empty answer waits for the next commit.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde_json::Value as Json;
use tokio::sync::watch;
use wasmtime::component::Val;

use agent_relay_core::bridge::{self, ErrorReply, Inputs};
use agent_relay_core::calls::Calls;
use agent_relay_core::runtime::Export;

/// What a streamed export is called with, apart from the moving `since`.
pub struct StreamRequest {
    pub export: Arc<Export>,
    pub caller: Val,
    pub path: Vec<(String, String)>,
    /// Query pairs without `since`.
    pub query: Vec<(String, String)>,
    /// Where the stream starts: items after this id.
    pub since: Option<i64>,
    pub keep_alive: Duration,
}

struct Cursor {
    calls: Arc<Calls>,
    request: StreamRequest,
    commits: watch::Receiver<u64>,
    ready: VecDeque<Json>,
    ended: bool,
}

impl Cursor {
    /// Runs the export for the items after the cursor.
    async fn next_page(&mut self) -> Result<Vec<Json>, ErrorReply> {
        let export = &self.request.export;
        let mut query = self.request.query.clone();
        if let Some(since) = self.request.since {
            query.push(("since".to_owned(), since.to_string()));
        }
        let inputs = Inputs {
            caller: Some(self.request.caller.clone()),
            path: self.request.path.clone(),
            query,
            ..Inputs::default()
        };
        let args = bridge::arguments(export, &inputs).map_err(|e| ErrorReply::invalid(e.0))?;
        self.commits.borrow_and_update();
        match bridge::outcome(&self.calls.run(export, args).await?)? {
            Json::Array(items) => Ok(items),
            other => Err(ErrorReply::new(
                500,
                "internal",
                format!("{} answered {other}, not a list", export.name),
            )),
        }
    }

    /// The next event: a ready item, else the next page, else after the next commit.
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if self.ended {
                return None;
            }
            if let Some(item) = self.ready.pop_front() {
                return Some(self.item_event(&item));
            }
            match self.next_page().await {
                Ok(items) if items.is_empty() => {
                    // A closing server ends the stream cleanly once it has sent what there was.
                    if self.calls.closing() || self.commits.changed().await.is_err() {
                        return None;
                    }
                }
                Ok(items) => self.ready.extend(items),
                Err(error) => {
                    self.ended = true;
                    return Some(error_event(&error));
                }
            }
        }
    }

    fn item_event(&mut self, item: &Json) -> Event {
        match item.get("id").and_then(Json::as_i64) {
            Some(id) => {
                self.request.since = Some(id);
                Event::default().id(id.to_string()).data(item.to_string())
            }
            None => {
                self.ended = true;
                error_event(&ErrorReply::new(
                    500,
                    "internal",
                    format!(
                        "{} answered an item without an id",
                        self.request.export.name
                    ),
                ))
            }
        }
    }
}

fn error_event(error: &ErrorReply) -> Event {
    Event::default()
        .event("error")
        .data(error.to_json().to_string())
}

/// Opens an event stream. The first page is fetched before the response starts, so a refused
/// caller gets the usual JSON error and status instead of a stream.
///
/// # Errors
/// The export's own error on the first page, or a failure of that call.
pub async fn stream(calls: Arc<Calls>, request: StreamRequest) -> Result<Response, ErrorReply> {
    let keep_alive = request.keep_alive;
    let mut cursor = Cursor {
        commits: calls.commits(),
        calls,
        request,
        ready: VecDeque::new(),
        ended: false,
    };
    let first = cursor.next_page().await?;
    cursor.ready.extend(first);
    let events = futures_util::stream::unfold(cursor, |mut cursor| async move {
        let event = cursor.next_event().await?;
        Some((Ok::<_, Infallible>(event), cursor))
    });
    Ok(sse(events, keep_alive))
}

fn sse(
    events: impl Stream<Item = Result<Event, Infallible>> + Send + 'static,
    every: Duration,
) -> Response {
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(every).text("keep-alive"))
        .into_response()
}
