//! The HTTP server: the route table mounted on axum, each request turned into one export call.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak, mpsc};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, RawPathParams, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};
use axum::{Json as JsonBody, Router};
use serde_json::{Map as JsonMap, Value as Json};
use tokio::sync::{Semaphore, oneshot};
use wasmtime::component::Val;

use crate::bridge::{self, ErrorReply, Inputs};
use crate::push::{self, StreamRequest};
use crate::routes::{Delivery, ROUTES, Route};
use crate::runtime::{CallFailure, Export, Prepared, Runtime};
use crate::store::{Access, Pending};
use crate::token::OperatorToken;

/// Server settings beyond the runtime's.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Calls running at once; more wait for a slot.
    pub max_concurrent_calls: usize,
    /// How long a request waits for a slot before it is answered 503.
    pub queue_timeout: Duration,
    /// The longest `wait=SECONDS` a held request may ask for; longer asks are cut to it.
    pub max_wait: Duration,
    /// How often an idle event stream sends a keep-alive comment.
    pub keep_alive: Duration,
    /// Expose `POST /v1/test/clock` to move the relay's clock (tests only).
    pub test_clock: bool,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            max_concurrent_calls: 32,
            queue_timeout: Duration::from_secs(10),
            max_wait: Duration::from_secs(300),
            keep_alive: Duration::from_secs(15),
            test_clock: false,
        }
    }
}

/// What every request handler shares.
pub struct App {
    pub runtime: Runtime,
    pub operator: OperatorToken,
    pub options: HttpOptions,
    slots: Semaphore,
    writes: mpsc::Sender<WriteJob>,
    /// Write requests received but not yet queued for the lane (parsing, making an instance):
    /// while there are any, the lane waits a moment for them before it commits its batch.
    arriving: Arc<AtomicUsize>,
}

/// Counts one write request as arriving until it is queued (or fails).
pub struct Arriving(Arc<AtomicUsize>);

impl Drop for Arriving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A write call queued for the write lane, with an instance made for it beforehand.
struct WriteJob {
    export: String,
    args: Vec<Val>,
    prepared: Prepared,
    reply: oneshot::Sender<LaneAnswer>,
}

/// The lane's answer, with the spent instance for the requester to drop (off the lane).
type LaneAnswer = (Result<Val, CallFailure>, Prepared);

/// A write call that ran and waits for its batch's commit before it is answered.
struct Unsettled {
    reply: oneshot::Sender<LaneAnswer>,
    value: Val,
    prepared: Prepared,
    pending: Box<dyn Pending>,
}

impl App {
    pub fn new(runtime: Runtime, operator: OperatorToken, options: HttpOptions) -> Arc<Self> {
        let slots = Semaphore::new(options.max_concurrent_calls);
        let (writes, queue) = mpsc::channel();
        let arriving = Arc::new(AtomicUsize::new(0));
        let app = Arc::new(Self {
            runtime,
            operator,
            options,
            slots,
            writes,
            arriving: Arc::clone(&arriving),
        });
        let lane = Arc::downgrade(&app);
        if let Err(error) = std::thread::Builder::new()
            .name("write-lane".to_owned())
            .spawn(move || write_lane(&lane, &queue, &arriving))
        {
            tracing::error!(%error, "could not start the write lane; writes will fail");
        }
        app
    }

    /// The `caller` value for a request, from its `Authorization` header.
    pub fn caller(&self, headers: &HeaderMap) -> Val {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(bearer_token);
        match bearer {
            Some(token) if self.operator.matches(token) => {
                Val::Variant("operator".to_owned(), None)
            }
            Some(token) => Val::Variant(
                "bearer".to_owned(),
                Some(Box::new(Val::String(token.to_owned()))),
            ),
            None => Val::Variant("anonymous".to_owned(), None),
        }
    }

    /// Marks a request for `export` as arriving when the export writes (see [`App::invoke`]).
    pub fn arriving(&self, export: &str) -> Option<Arriving> {
        let writes = self
            .runtime
            .export(export)
            .is_some_and(|e| e.access == Access::Write);
        writes.then(|| {
            self.arriving.fetch_add(1, Ordering::SeqCst);
            Arriving(Arc::clone(&self.arriving))
        })
    }

    /// Runs one export within the concurrency bound: a write on the write lane, a read on a
    /// blocking thread.
    ///
    /// # Errors
    /// The relay's own error, or a failure of the call (trap, store, overload).
    pub async fn invoke(
        self: &Arc<Self>,
        export: &str,
        args: Vec<Val>,
    ) -> Result<Json, ErrorReply> {
        let arriving = self.arriving(export);
        self.invoke_arriving(export, args, arriving).await
    }

    /// [`App::invoke`] for a request counted as arriving since it was received; the count pauses
    /// while it waits for a slot and ends when the call is queued.
    ///
    /// # Errors
    /// As for [`App::invoke`].
    pub async fn invoke_arriving(
        self: &Arc<Self>,
        export: &str,
        args: Vec<Val>,
        arriving: Option<Arriving>,
    ) -> Result<Json, ErrorReply> {
        // A request waiting for a slot is not about to arrive: the lane must not wait for it
        // (slots free up only as the lane answers).
        drop(arriving);
        let permit = tokio::time::timeout(self.options.queue_timeout, self.slots.acquire())
            .await
            .map_err(|_| {
                ErrorReply::new(
                    503,
                    "overloaded",
                    "the relay is at its concurrency limit; retry shortly",
                )
            })?
            .map_err(|_| ErrorReply::new(503, "unavailable", "the relay is shutting down"))?;
        let arriving = self.arriving(export);
        let write = self
            .runtime
            .export(export)
            .filter(|e| e.access == Access::Write);
        if let Some(write) = write {
            // The instance is made here, so the lane only runs the call.
            let prepared = self
                .runtime
                .prepare(write)
                .map_err(|failure| failure_reply(export, &failure))?;
            let (reply, answer) = oneshot::channel();
            let job = WriteJob {
                export: export.to_owned(),
                args,
                prepared,
                reply,
            };
            let queued = self.writes.send(job);
            drop(arriving);
            if queued.is_err() {
                return Err(ErrorReply::new(
                    503,
                    "unavailable",
                    "the write lane has stopped",
                ));
            }
            let (outcome, spent) = answer
                .await
                .map_err(|_| ErrorReply::new(500, "internal", "the write lane dropped the call"))?;
            drop(spent);
            drop(permit);
            let value = outcome.map_err(|failure| failure_reply(export, &failure))?;
            return bridge::outcome(&value);
        }
        let app = Arc::clone(self);
        let name = export.to_owned();
        let outcome = tokio::task::spawn_blocking(move || {
            let export = app
                .runtime
                .export(&name)
                .ok_or_else(|| ErrorReply::new(500, "internal", format!("no export {name}")))?;
            app.runtime
                .call(export, &args)
                .map_err(|failure| failure_reply(&name, &failure))
        })
        .await
        .map_err(|e| ErrorReply::new(500, "internal", format!("the call's thread failed: {e}")))?;
        drop(permit);
        bridge::outcome(&outcome?)
    }
}

/// Most write calls one commit settles in the lane (the store may commit sooner).
const LANE_BATCH: usize = 64;

/// How long the lane, out of queued calls, waits for write requests still arriving before it
/// commits what it has, and how often it looks again meanwhile.
const GATHER_WINDOW: Duration = Duration::from_micros(300);
const GATHER_POLL: Duration = Duration::from_micros(50);

/// The write lane: runs write calls one after another on one thread, leaving each call's commit
/// to a batch that stays open while more calls are queued; when the queue runs dry (or the batch
/// is full) the batch is committed once and every call in it is answered. Fewer thread hand-offs
/// and one fsync per batch.
/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive
/// (RFC 9110 section 11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn write_lane(lane: &Weak<App>, queue: &mpsc::Receiver<WriteJob>, arriving: &AtomicUsize) {
    let mut unsettled: Vec<Unsettled> = Vec::new();
    // When the queue ran dry with calls waiting for their commit.
    let mut dry_since: Option<Instant> = None;
    loop {
        let job = if unsettled.is_empty() {
            match queue.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        } else {
            match queue.try_recv() {
                Ok(job) => job,
                Err(mpsc::TryRecvError::Empty) => {
                    // Requests on their way in join this batch if they come within the window.
                    let since = *dry_since.get_or_insert_with(Instant::now);
                    if arriving.load(Ordering::SeqCst) > 0 && since.elapsed() < GATHER_WINDOW {
                        match queue.recv_timeout(GATHER_POLL) {
                            Ok(job) => job,
                            Err(mpsc::RecvTimeoutError::Timeout) => continue,
                            Err(mpsc::RecvTimeoutError::Disconnected) => {
                                settle(lane, &mut unsettled);
                                return;
                            }
                        }
                    } else {
                        settle(lane, &mut unsettled);
                        dry_since = None;
                        continue;
                    }
                }
                Err(mpsc::TryRecvError::Disconnected) => {
                    settle(lane, &mut unsettled);
                    return;
                }
            }
        };
        let Some(app) = lane.upgrade() else {
            return;
        };
        // A host-side panic costs its own call (its requester gets a 500), never the lane.
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_write(&app, job, &mut unsettled);
        }));
        if ran.is_err() {
            tracing::error!("a write call panicked in the host; the lane goes on");
        }
        drop(app);
        if unsettled.len() >= LANE_BATCH {
            settle(lane, &mut unsettled);
        }
    }
}

fn run_write(app: &App, job: WriteJob, unsettled: &mut Vec<Unsettled>) {
    let WriteJob {
        export,
        args,
        mut prepared,
        reply,
    } = job;
    let Some(export) = app.runtime.export(&export) else {
        let failure = CallFailure::Trap(format!("no export {export}"));
        let _ = reply.send((Err(failure), prepared));
        return;
    };
    match app.runtime.call_later(&mut prepared, export, &args) {
        Ok((value, Some(pending))) => unsettled.push(Unsettled {
            reply,
            value,
            prepared,
            pending,
        }),
        Ok((value, None)) => {
            if matches!(value, Val::Result(Ok(_))) {
                app.runtime.announce_commit();
            }
            let _ = reply.send((Ok(value), prepared));
        }
        Err(failure) => {
            let _ = reply.send((Err(failure), prepared));
        }
    }
}

/// Commits the open batch and answers every call waiting on it.
fn settle(lane: &Weak<App>, unsettled: &mut Vec<Unsettled>) {
    let mut committed = false;
    for call in unsettled.drain(..) {
        let answer = match call.pending.settle() {
            Ok(()) => {
                committed = true;
                Ok(call.value)
            }
            Err(error) => Err(CallFailure::Store(error)),
        };
        let _ = call.reply.send((answer, call.prepared));
    }
    if committed && let Some(app) = lane.upgrade() {
        app.runtime.announce_commit();
    }
}

/// A failed call as the caller sees it, logged once here.
pub fn failure_reply(export: &str, failure: &CallFailure) -> ErrorReply {
    match failure {
        CallFailure::Trap(cause) => {
            tracing::error!(export, cause = %cause, "call failed; its transaction was rolled back");
            ErrorReply::new(
                500,
                "internal",
                format!("{export} failed inside the relay component: {cause}"),
            )
        }
        CallFailure::Store(error) => {
            tracing::warn!(export, ?error, "store refused the call");
            use crate::bindings::StoreError as E;
            match error {
                E::Full(m) => {
                    ErrorReply::new(507, "storage_full", format!("the database is full: {m}"))
                }
                E::Busy(m) => {
                    ErrorReply::new(503, "unavailable", format!("the database is busy: {m}"))
                }
                E::ReadOnly(m) => ErrorReply::new(
                    503,
                    "unavailable",
                    format!("the database is read-only: {m}"),
                ),
                E::Constraint(m) | E::Refused(m) | E::Other(m) => {
                    ErrorReply::new(503, "unavailable", format!("the database failed: {m}"))
                }
            }
        }
    }
}

fn reply(status: u16, body: &Json) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, JsonBody(body)).into_response()
}

fn error_response(error: &ErrorReply) -> Response {
    reply(error.status, &error.to_json())
}

fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(url_decode_pairs).unwrap_or_default()
}

fn url_decode_pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Removes the host's own query parameter `key` (at most once) from the pairs the export sees.
fn take_pair(pairs: &mut Vec<(String, String)>, key: &str) -> Result<Option<String>, ErrorReply> {
    let mut found = None;
    for (_, value) in pairs.extract_if(.., |(k, _)| k == key) {
        if found.replace(value).is_some() {
            return Err(ErrorReply::invalid(format!(
                "query parameter {key} is given more than once"
            )));
        }
    }
    Ok(found)
}

/// The deadline of a held request: `wait=SECONDS`, cut to the server's maximum.
fn wait_deadline(
    pairs: &mut Vec<(String, String)>,
    max_wait: Duration,
) -> Result<Option<tokio::time::Instant>, ErrorReply> {
    let Some(text) = take_pair(pairs, "wait")? else {
        return Ok(None);
    };
    let wait = text
        .trim()
        .parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| {
            ErrorReply::invalid(format!(
                "wait must be a number of seconds (at most {}), not {text}",
                max_wait.as_secs()
            ))
        })?;
    Ok(Some(tokio::time::Instant::now() + wait.min(max_wait)))
}

/// Parameters filled from the request as sent rather than from its JSON: the exact body for a
/// parameter named `raw-body`, and the route's header for its parameter.
fn request_parts(
    export: &Export,
    route: Route,
    headers: &HeaderMap,
    body: &Bytes,
) -> JsonMap<String, Json> {
    let mut parts = JsonMap::new();
    if export.params.iter().any(|(name, _)| name == "raw-body") {
        let text = String::from_utf8_lossy(body).into_owned();
        parts.insert("rawBody".to_owned(), Json::String(text));
    }
    if let Some((header, param)) = route.header
        && let Some(value) = headers.get(header).and_then(|v| v.to_str().ok())
    {
        parts.insert(bridge::camel_case(param), Json::String(value.to_owned()));
    }
    parts
}

async fn handle(
    app: Arc<App>,
    route: Route,
    params: RawPathParams,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let arriving = app.arriving(route.export);
    let result = async {
        let body = body.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ErrorReply::new(
                    413,
                    "too_large",
                    format!(
                        "the request body is larger than {} bytes",
                        app.options.max_body_bytes
                    ),
                )
            } else {
                ErrorReply::invalid(format!("the request body could not be read: {rejection}"))
            }
        })?;
        let json: Option<Json> = if body.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            Some(
                serde_json::from_slice(&body)
                    .map_err(|e| ErrorReply::invalid(format!("the body is not valid JSON: {e}")))?,
            )
        };
        let export = app.runtime.export(route.export).ok_or_else(|| {
            ErrorReply::new(
                500,
                "internal",
                format!("route names unknown export {}", route.export),
            )
        })?;
        let mut query = query_pairs(raw_query.as_deref());
        let deadline = match route.delivery {
            Delivery::Held => wait_deadline(&mut query, app.options.max_wait)?,
            Delivery::Once | Delivery::Streamed => None,
        };
        let request_parts = request_parts(export, route, &headers, &body);
        let inputs = Inputs {
            caller: Some(app.caller(&headers)),
            path: path_pairs(&params),
            query,
            body: json.as_ref(),
            named: (!request_parts.is_empty()).then_some(&request_parts),
        };
        let args = bridge::arguments(export, &inputs).map_err(|e| ErrorReply::invalid(e.0))?;
        match deadline {
            Some(deadline) => push::hold(&app, route.export, args, deadline).await,
            None => app.invoke_arriving(route.export, args, arriving).await,
        }
    }
    .await;
    let elapsed = started.elapsed();
    match result {
        Ok(body) => {
            let created =
                route.creates && body.get("created").and_then(Json::as_bool) == Some(true);
            let unavailable = route.unavailable_when.is_some_and(|(field, value)| {
                body.get(field).and_then(Json::as_str) == Some(value)
            });
            let status = match (unavailable, created) {
                (true, _) => 503,
                (false, true) => 201,
                (false, false) => 200,
            };
            tracing::debug!(
                method = route.method,
                path = route.path,
                status,
                ?elapsed,
                "answered"
            );
            reply(status, &body)
        }
        Err(error) => {
            tracing::debug!(method = route.method, path = route.path, status = error.status, code = %error.code, ?elapsed, "refused");
            error_response(&error)
        }
    }
}

fn path_pairs(params: &RawPathParams) -> Vec<(String, String)> {
    params
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// An event stream route: starts after `Last-Event-ID` (or the `since` query parameter).
async fn handle_stream(
    app: Arc<App>,
    route: Route,
    params: RawPathParams,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let opened = async {
        let mut query = query_pairs(raw_query.as_deref());
        let since_query = take_pair(&mut query, "since")?;
        let last_event = headers
            .get("last-event-id")
            .map(|value| value.to_str().unwrap_or("").to_owned());
        let since = match last_event.or(since_query) {
            Some(text) => Some(text.trim().parse::<i64>().map_err(|_| {
                ErrorReply::invalid(format!(
                    "Last-Event-ID (or since) must be a message id, not {text}"
                ))
            })?),
            None => None,
        };
        let request = StreamRequest {
            export: route.export,
            caller: app.caller(&headers),
            path: path_pairs(&params),
            query,
            since,
            keep_alive: app.options.keep_alive,
        };
        push::stream(Arc::clone(&app), request).await
    }
    .await;
    opened.unwrap_or_else(|error| {
        tracing::debug!(path = route.path, status = error.status, code = %error.code, "stream refused");
        error_response(&error)
    })
}

async fn advance_clock(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    if !matches!(app.caller(&headers), Val::Variant(ref case, _) if case == "operator") {
        return error_response(&ErrorReply::new(
            401,
            "unauthorized",
            "moving the clock needs the operator token",
        ));
    }
    let advance = serde_json::from_slice::<Json>(&body)
        .ok()
        .and_then(|v| v.get("advanceMs").and_then(Json::as_i64));
    let Some(ms) = advance else {
        return error_response(&ErrorReply::invalid("send {\"advanceMs\": N}"));
    };
    app.runtime.clock().advance(ms);
    reply(
        200,
        &serde_json::json!({ "now": app.runtime.clock().now_ms() }),
    )
}

async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    error_response(&ErrorReply::new(
        404,
        "not_found",
        format!("no route for {method} {}", uri.path()),
    ))
}

fn method_filter(method: &str) -> MethodFilter {
    match method {
        "GET" => MethodFilter::GET,
        "PUT" => MethodFilter::PUT,
        "DELETE" => MethodFilter::DELETE,
        "PATCH" => MethodFilter::PATCH,
        _ => MethodFilter::POST,
    }
}

/// The router for every route of the table.
pub fn router(app: Arc<App>) -> Router {
    let mut by_path: Vec<(&'static str, MethodRouter<Arc<App>>)> = Vec::new();
    for route in ROUTES {
        let route = *route;
        let filter = method_filter(route.method);
        let slot = match by_path.iter().position(|(path, _)| *path == route.path) {
            Some(slot) => slot,
            None => {
                by_path.push((route.path, MethodRouter::new()));
                by_path.len() - 1
            }
        };
        let methods = std::mem::take(&mut by_path[slot].1);
        by_path[slot].1 = if route.delivery == Delivery::Streamed {
            methods.on(
                filter,
                move |State(app): State<Arc<App>>,
                      params: RawPathParams,
                      query: RawQuery,
                      headers: HeaderMap| {
                    handle_stream(app, route, params, query, headers)
                },
            )
        } else {
            methods.on(
                filter,
                move |State(app): State<Arc<App>>,
                      params: RawPathParams,
                      query: RawQuery,
                      headers: HeaderMap,
                      body: Result<Bytes, BytesRejection>| {
                    handle(app, route, params, query, headers, body)
                },
            )
        };
    }
    let mut router = Router::new();
    for (path, methods) in by_path {
        router = router.route(path, methods.fallback(method_not_allowed));
    }
    let openapi = Arc::new(crate::openapi::document(&app.runtime));
    router = router.route(
        "/v1/openapi.json",
        axum::routing::get(move || {
            let openapi = Arc::clone(&openapi);
            async move { JsonBody(openapi.as_ref().clone()) }
        }),
    );
    if app.options.test_clock {
        router = router.route("/v1/test/clock", axum::routing::post(advance_clock));
    }
    let limit = app.options.max_body_bytes;
    router
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(app)
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> Response {
    error_response(&ErrorReply::new(
        405,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    ))
}

/// Serves on a bound listener until `shutdown` completes.
///
/// # Errors
/// The server failed.
pub async fn serve_on(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let router = router(app);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
