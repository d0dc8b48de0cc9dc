//! Push delivery: long-polls and event streams that wake when a write commits.
//!
//! The host knows one thing here: a call that changed rows committed (the call runner committed
//! it and raises the commit signal of the waiters it concerns, by the wake keys the guest named:
//! docs/design.md, "Wake keys"). Every waiting request registers a waiter before its first run
//! and, when woken, re-runs its export; what the answer holds is still the guest's decision. A
//! waiter costs a parked future and a watch receiver: it holds no concurrency slot, no thread and
//! no timer beyond its own deadline, so idle waiters cost no CPU, and a write that does not
//! concern them does not run their export.
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
use wasmtime::component::Val;

use agent_relay_core::bridge::{self, ErrorReply, Inputs};
use agent_relay_core::calls::{Calls, Waiter};
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
    /// The operator stream's extras; `None` for an agent's stream.
    pub follow: Option<Follow>,
}

/// How the operator stream (`GET /v1/stream`, docs/http-api.md §10) differs from an agent's.
#[derive(Debug, Clone, Copy)]
pub struct Follow {
    /// The `event:` name of an item (`message`).
    pub item_event: &'static str,
    /// Items a reader may fall behind by: past it the stream sends `event: reload` and ends.
    pub backlog: usize,
}

/// An event telling the reader that writes committed beyond the items it was sent (a claim, a
/// receipt, an agent's status): it reloads what it shows.
const CHANGE_EVENT: &str = "change";
/// The last event of a stream whose reader fell behind its bound.
const RELOAD_EVENT: &str = "reload";

struct Cursor {
    calls: Arc<Calls>,
    request: StreamRequest,
    commits: Waiter,
    ready: VecDeque<Json>,
    ended: bool,
    /// Items sent since the stream last caught up (an empty page).
    behind: usize,
    /// A commit woke the stream and no `change` event has told of it yet.
    changed: bool,
    /// An event decided before the stream started (`reload` on opening), sent first.
    told: Option<Event>,
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
        self.commits.before_run();
        let (answer, concerns) = self.calls.run_keyed(export, args).await?;
        self.commits.listen(&concerns.keys);
        match bridge::outcome(&answer)? {
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
        if let Some(event) = self.told.take() {
            return Some(event);
        }
        loop {
            if self.ended {
                return None;
            }
            if let Some(item) = self.ready.pop_front() {
                return Some(self.item_event(&item));
            }
            match self.next_page().await {
                Ok(items) if items.is_empty() => {
                    self.behind = 0;
                    if std::mem::take(&mut self.changed) {
                        return Some(Event::default().event(CHANGE_EVENT).data("{}"));
                    }
                    // A closing server ends the stream cleanly once it has sent what there was.
                    if self.calls.closing() || !self.commits.changed().await {
                        return None;
                    }
                    self.changed = self.request.follow.is_some();
                }
                Ok(items) => {
                    if let Some(event) = self.take_page(items) {
                        return Some(event);
                    }
                }
                Err(error) => {
                    self.ended = true;
                    return Some(error_event(&error));
                }
            }
        }
    }

    /// Keeps a page's items to send, unless they put the reader past its bound.
    fn take_page(&mut self, items: Vec<Json>) -> Option<Event> {
        self.behind += items.len();
        let event = self.fallen_behind();
        if event.is_none() {
            self.ready.extend(items);
        }
        event
    }

    /// `event: reload` (and the end) when the reader is further behind than its bound; the items
    /// past the bound are never held.
    fn fallen_behind(&mut self) -> Option<Event> {
        let follow = self.request.follow?;
        if self.behind <= follow.backlog {
            return None;
        }
        self.ended = true;
        self.ready.clear();
        // `since` is the last item sent: where a reload's list should pick up.
        let data = serde_json::json!({ "after": self.request.since, "backlog": follow.backlog });
        Some(Event::default().event(RELOAD_EVENT).data(data.to_string()))
    }

    fn item_event(&mut self, item: &Json) -> Event {
        match item.get("id").and_then(Json::as_i64) {
            Some(id) => {
                self.request.since = Some(id);
                let event = Event::default().id(id.to_string()).data(item.to_string());
                match self.request.follow {
                    Some(follow) => event.event(follow.item_event),
                    None => event,
                }
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
        commits: calls.waiter(),
        calls,
        request,
        ready: VecDeque::new(),
        ended: false,
        behind: 0,
        changed: false,
        told: None,
    };
    let first = cursor.next_page().await?;
    cursor.told = cursor.take_page(first);
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

/// The newest item's id of a list export with `since` and `limit` (the operator's view of
/// `list-messages`), found with `limit=1` probes: how far a fresh operator stream skips, so
/// it starts at the present instead of replaying every stored message. About two probes per
/// bit of the newest id (some forty for a million messages), each reading one row.
///
/// # Errors
/// A probe's call failed or was refused.
pub async fn newest_id(
    calls: &Arc<Calls>,
    export: &Arc<Export>,
    caller: &Val,
) -> Result<Option<i64>, ErrorReply> {
    // The first id after `since`, if any.
    let probe = async |since: Option<i64>| -> Result<Option<i64>, ErrorReply> {
        let mut query = vec![("limit".to_owned(), "1".to_owned())];
        if let Some(since) = since {
            query.push(("since".to_owned(), since.to_string()));
        }
        let inputs = Inputs {
            caller: Some(caller.clone()),
            query,
            ..Inputs::default()
        };
        let args = bridge::arguments(export, &inputs).map_err(|e| ErrorReply::invalid(e.0))?;
        let answer = bridge::outcome(&calls.run(export, args).await?)?;
        Ok(answer
            .get(0)
            .and_then(|item| item.get("id"))
            .and_then(Json::as_i64))
    };
    let Some(mut low) = probe(None).await? else {
        return Ok(None);
    };
    // `low` is an id that exists; find `high` with no id above it, doubling the step.
    let mut step: i64 = 1;
    let mut high = loop {
        let bound = low.saturating_add(step);
        match probe(Some(bound)).await? {
            Some(id) => {
                low = id;
                step = step.saturating_mul(2);
            }
            None => break bound,
        }
    };
    // The newest id lies in low..=high: is there one at or above the middle?
    while high > low {
        let middle = low + (high - low + 1) / 2;
        match probe(Some(middle - 1)).await? {
            Some(id) => low = id,
            None => high = middle - 1,
        }
    }
    Ok(Some(low))
}
