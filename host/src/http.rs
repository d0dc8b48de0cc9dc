//! The HTTP server: the route table mounted on axum, each request turned into one export call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, RawPathParams, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};
use axum::{Json as JsonBody, Router};
use futures_util::StreamExt as _;
use serde_json::{Map as JsonMap, Value as Json};
use sha2::{Digest as _, Sha256};

use crate::connections::{self, ConnectionLimits};
use crate::push::{self, StreamRequest};
use crate::routes::{Delivery, ROUTES, Route};
use agent_relay_core::bridge::{self, ErrorReply, Inputs};
use agent_relay_core::calls::{Caller, Calls};
use agent_relay_core::runtime::Export;
use agent_relay_core::token::OperatorToken;

/// Server settings beyond the call runner's.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// The longest `wait=SECONDS` a held request may ask for; longer asks are cut to it.
    pub max_wait: Duration,
    /// How often an idle event stream sends a keep-alive comment.
    pub keep_alive: Duration,
    /// Items a reader of `GET /v1/stream` may fall behind by before it is told to reload.
    pub operator_stream_backlog: usize,
    /// Expose `POST /v1/test/clock` to move the relay's clock (tests only).
    pub test_clock: bool,
    /// Header and idle timeouts, and the caps on open connections.
    pub connections: ConnectionLimits,
    /// `Host` names `/mcp` accepts besides loopback (it refuses others against DNS rebinding).
    pub mcp_allowed_hosts: Vec<String>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            max_wait: Duration::from_secs(300),
            keep_alive: Duration::from_secs(15),
            operator_stream_backlog: 1000,
            test_clock: false,
            connections: ConnectionLimits::default(),
            mcp_allowed_hosts: Vec::new(),
        }
    }
}

/// What every request handler shares.
pub struct App {
    pub calls: Arc<Calls>,
    pub operator: OperatorToken,
    pub options: HttpOptions,
    /// What `GET /metrics` shows.
    pub metrics: crate::metrics::Metrics,
    /// Which agent holds a token (by the token's SHA-256), for the request log only.
    callers: Mutex<HashMap<[u8; 32], String>>,
}

/// Tokens whose agent the request log remembers; past it the memory starts afresh.
const REMEMBERED_CALLERS: usize = 4096;

impl App {
    pub fn new(calls: Arc<Calls>, operator: OperatorToken, options: HttpOptions) -> Arc<Self> {
        Arc::new(Self {
            calls,
            operator,
            options,
            metrics: crate::metrics::Metrics::default(),
            callers: Mutex::new(HashMap::new()),
        })
    }

    /// Who made a request, for its log line (never the token): `operator`, `anonymous`,
    /// `unknown` (a token nobody holds: the request got 401), or the agent's id, asked of the
    /// relay (`whoami`) once per token and remembered.
    async fn who(&self, caller: &Caller, status: u16) -> String {
        let token = match caller {
            Caller::Operator => return "operator".to_owned(),
            Caller::Anonymous => return "anonymous".to_owned(),
            Caller::Bearer(_) if status == 401 => return "unknown".to_owned(),
            Caller::Bearer(token) => token,
        };
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let remembered = self
            .callers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .cloned();
        if let Some(id) = remembered {
            return id;
        }
        let Some(whoami) = self.calls.runtime().export("whoami").cloned() else {
            return "agent".to_owned();
        };
        let asked = self.calls.run(&whoami, vec![caller.to_val()]).await;
        let id = asked
            .ok()
            .and_then(|answer| bridge::outcome(&answer).ok())
            .and_then(|identity| identity["agent"]["id"].as_str().map(str::to_owned));
        let Some(id) = id else {
            return "unknown".to_owned();
        };
        let mut callers = self
            .callers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if callers.len() >= REMEMBERED_CALLERS {
            callers.clear();
        }
        callers.insert(key, id.clone());
        id
    }

    /// Who a request acts as, from its `Authorization` header.
    ///
    /// # Errors
    /// 401 for a bearer token longer than any the relay issues (`calls::MAX_TOKEN_BYTES`).
    pub fn caller(&self, headers: &HeaderMap) -> Result<Caller, ErrorReply> {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok());
        Caller::authorizing(authorization, &self.operator)
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

/// The deadline of a held request: `wait=SECONDS` in the query, or a JSON body's `wait` field
/// (taken out, so the export never sees it), cut to the server's maximum.
fn wait_deadline(
    pairs: &mut Vec<(String, String)>,
    body: Option<&mut Json>,
    max_wait: Duration,
) -> Result<Option<tokio::time::Instant>, ErrorReply> {
    let in_body = body
        .and_then(Json::as_object_mut)
        .and_then(|fields| fields.remove("wait"))
        .filter(|wait| !wait.is_null());
    let wait = |value: &Json| {
        bridge::wait_for("wait", value, max_wait).map_err(|e| ErrorReply::invalid(e.0))
    };
    // Both are checked when both are sent (a bad one is a 400 either way); the query's wins.
    let in_query = take_pair(pairs, "wait")?
        .map(|text| wait(&Json::String(text)))
        .transpose()?;
    let in_body = in_body.as_ref().map(wait).transpose()?;
    Ok(in_query
        .or(in_body)
        .map(|wait| tokio::time::Instant::now() + wait))
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

/// One request of a route: **parse** it into the export's arguments, **run** them through the
/// call runner, **answer** with the status the result calls for (and one log line).
async fn handle(
    app: Arc<App>,
    route: Route,
    export: Arc<Export>,
    params: RawPathParams,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let caller = match app.caller(&headers) {
        Ok(caller) => caller,
        Err(error) => {
            app.metrics
                .request(route.method, route.path, error.status, started.elapsed());
            tracing::info!(method = route.method, path = route.path, status = error.status, code = %error.code, caller = "unknown", "refused");
            return error_response(&error);
        }
    };
    let arriving = app.calls.arriving(&export);
    let request = Request {
        route,
        export: &export,
        caller: &caller,
        params: &params,
        query: raw_query.as_deref(),
        headers: &headers,
    };
    let result = async {
        let (args, deadline) = parse(&app, &request, body).await?;
        let answer = match deadline {
            Some(deadline) => {
                // A held write call is not about to reach the lane: it waits for others' commits.
                drop(arriving);
                app.calls.hold(&export, args, deadline).await?
            }
            None => app.calls.run_arriving(&export, args, arriving).await?,
        };
        bridge::outcome(&answer)
    }
    .await;
    answer(&app, &request, started.elapsed(), result).await
}

/// What a request brought, beside its body.
struct Request<'a> {
    route: Route,
    export: &'a Export,
    caller: &'a Caller,
    params: &'a RawPathParams,
    query: Option<&'a str>,
    headers: &'a HeaderMap,
}

/// The export's arguments from the path, the query, the JSON body and the route's header, and
/// the deadline of a held route's `wait`.
async fn parse(
    app: &App,
    request: &Request<'_>,
    body: Body,
) -> Result<(Vec<wasmtime::component::Val>, Option<tokio::time::Instant>), ErrorReply> {
    let body = read_body(request.headers, body, app.options.max_body_bytes).await?;
    let mut json: Option<Json> = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(
            serde_json::from_slice(&body)
                .map_err(|e| ErrorReply::invalid(format!("the body is not valid JSON: {e}")))?,
        )
    };
    let mut query = query_pairs(request.query);
    let deadline = match request.route.delivery {
        Delivery::Held => wait_deadline(&mut query, json.as_mut(), app.options.max_wait)?,
        Delivery::Once | Delivery::Streamed => None,
    };
    let request_parts = request_parts(request.export, request.route, request.headers, &body);
    let inputs = Inputs {
        caller: Some(request.caller.to_val()),
        path: path_pairs(request.params),
        query,
        body: json.as_ref(),
        named: (!request_parts.is_empty()).then_some(&request_parts),
    };
    let args = bridge::arguments(request.export, &inputs).map_err(|e| ErrorReply::invalid(e.0))?;
    Ok((args, deadline))
}

/// The status a result calls for: 201 for a creating route's `created: true`, 204 for an
/// option's `none` (claim-next found no job), 503 when the route says the result reports itself
/// unavailable, 409 when it reports itself refused, else 200.
fn status_of(route: Route, export: &Export, body: &Json) -> u16 {
    let created = route.creates && body.get("created").and_then(Json::as_bool) == Some(true);
    let unavailable = route
        .unavailable_when
        .is_some_and(|(field, value)| body.get(field).and_then(Json::as_str) == Some(value));
    let refused = route
        .conflict_when
        .is_some_and(|(field, value)| body.get(field).and_then(Json::as_str) == Some(value));
    let nothing = body.is_null() && bridge::answers_option(export);
    match (unavailable, created, nothing) {
        (true, _, _) => 503,
        _ if refused => 409,
        (false, true, _) => 201,
        (false, false, true) => 204,
        (false, false, false) => 200,
    }
}

/// The response, and the request's one info line naming the caller's agent (never its token).
async fn answer(
    app: &App,
    request: &Request<'_>,
    elapsed: Duration,
    result: Result<Json, ErrorReply>,
) -> Response {
    let route = request.route;
    let status = match &result {
        Ok(body) => status_of(route, request.export, body),
        Err(error) => error.status,
    };
    app.metrics
        .request(route.method, route.path, status, elapsed);
    match result {
        Ok(body) => {
            let who = app.who(request.caller, status).await;
            tracing::info!(
                method = route.method,
                path = route.path,
                status,
                ?elapsed,
                caller = %who,
                "answered"
            );
            if status == 204 {
                return StatusCode::NO_CONTENT.into_response();
            }
            reply(status, &body)
        }
        Err(error) => {
            let who = app.who(request.caller, error.status).await;
            tracing::info!(method = route.method, path = route.path, status = error.status, code = %error.code, ?elapsed, caller = %who, "refused");
            error_response(&error)
        }
    }
}

/// How much of a too-large body is read (and dropped) before it is answered 413: a client that
/// sends its whole body before it reads the answer (Python's `urllib`, `requests`) would otherwise
/// meet a closed connection instead of the 413.
const DRAIN_BYTES: usize = 16 << 20;

/// The request body, up to `limit` bytes.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ErrorReply> {
    let too_large = || {
        ErrorReply::new(
            413,
            "too_large",
            format!("the request body is larger than {limit} bytes"),
        )
    };
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<usize>().ok());
    if announced.is_some_and(|length| length > limit.saturating_add(DRAIN_BYTES)) {
        // Too much to read only to drop it: the connection is closed after the answer.
        return Err(too_large());
    }
    let unreadable =
        |e: axum::Error| ErrorReply::invalid(format!("the request body could not be read: {e}"));
    let mut frames = body.into_data_stream();
    let mut first = Bytes::new();
    let mut more: Vec<u8> = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = frames.next().await {
        let chunk = chunk.map_err(unreadable)?;
        seen += chunk.len();
        if seen > limit {
            while seen <= limit.saturating_add(DRAIN_BYTES) {
                match frames.next().await {
                    Some(Ok(chunk)) => seen += chunk.len(),
                    Some(Err(_)) | None => break,
                }
            }
            return Err(too_large());
        }
        if first.is_empty() && more.is_empty() {
            first = chunk;
        } else {
            if more.is_empty() {
                more.extend_from_slice(&first);
            }
            more.extend_from_slice(&chunk);
        }
    }
    Ok(if more.is_empty() {
        first
    } else {
        Bytes::from(more)
    })
}

fn path_pairs(params: &RawPathParams) -> Vec<(String, String)> {
    params
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Where a stream starts: after `Last-Event-ID`, else after the `since` query parameter (taken
/// out of the pairs the export sees).
fn stream_start(
    headers: &HeaderMap,
    query: &mut Vec<(String, String)>,
) -> Result<Option<i64>, ErrorReply> {
    let since_query = take_pair(query, "since")?;
    let last_event = headers
        .get("last-event-id")
        .map(|value| value.to_str().unwrap_or("").to_owned());
    match last_event.or(since_query) {
        Some(text) => Ok(Some(text.trim().parse::<i64>().map_err(|_| {
            ErrorReply::invalid(format!(
                "Last-Event-ID (or since) must be a message id, not {text}"
            ))
        })?)),
        None => Ok(None),
    }
}

/// The operator's event stream, `GET /v1/stream` (docs/http-api.md §10): every message as it
/// commits (`event: message`, id = message id, from `list-messages` as the operator sees it), a
/// `change` event after other commits, `reload` for a reader further behind than
/// `--operator-stream-backlog`. Without `Last-Event-ID` or `since` it starts at the newest
/// message. Operator only: no token is 401, an agent's token 403.
async fn operator_stream(
    State(app): State<Arc<App>>,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let opened = async {
        let caller = app.caller(&headers)?;
        refuse_unless_operator(
            &app,
            &caller,
            "the operator event stream needs the operator token",
        )
        .await?;
        let Some(export) = app.calls.runtime().export("list-messages").cloned() else {
            return Err(ErrorReply::new(
                404,
                "not_found",
                "this component has no list-messages export to stream",
            ));
        };
        let export = Arc::new(export);
        let mut query = query_pairs(raw_query.as_deref());
        let since = stream_start(&headers, &mut query)?;
        if let Some((name, _)) = query.first() {
            return Err(ErrorReply::invalid(format!(
                "GET /v1/stream takes only since (or Last-Event-ID), not {name}"
            )));
        }
        let caller = caller.to_val();
        let since = match since {
            Some(since) => Some(since),
            None => push::newest_id(&app.calls, &export, &caller).await?,
        };
        let request = StreamRequest {
            export,
            caller,
            path: Vec::new(),
            query,
            since,
            keep_alive: app.options.keep_alive,
            follow: Some(push::Follow {
                item_event: "message",
                backlog: app.options.operator_stream_backlog,
            }),
        };
        push::stream(Arc::clone(&app.calls), request).await
    }
    .await;
    opened.unwrap_or_else(|error| {
        tracing::info!(path = "/v1/stream", status = error.status, code = %error.code, "stream refused");
        error_response(&error)
    })
}

/// Passes the operator; refuses anyone else: 401 without a token or with one the relay does not
/// know (asked of the relay with `whoami`), 403 with an agent's.
async fn refuse_unless_operator(app: &App, caller: &Caller, needs: &str) -> Result<(), ErrorReply> {
    match caller {
        Caller::Operator => Ok(()),
        Caller::Anonymous => Err(ErrorReply::new(401, "unauthorized", needs)),
        Caller::Bearer(_) => {
            let known = match app.calls.runtime().export("whoami").cloned() {
                Some(whoami) => app
                    .calls
                    .run(&whoami, vec![caller.to_val()])
                    .await
                    .is_ok_and(|answer| bridge::outcome(&answer).is_ok()),
                None => false,
            };
            Err(if known {
                ErrorReply::new(403, "forbidden", format!("{needs}, not an agent's"))
            } else {
                ErrorReply::new(401, "unauthorized", needs)
            })
        }
    }
}

/// An event stream route: starts after `Last-Event-ID` (or the `since` query parameter).
async fn handle_stream(
    app: Arc<App>,
    route: Route,
    export: Arc<Export>,
    params: RawPathParams,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let opened = async {
        let mut query = query_pairs(raw_query.as_deref());
        let since = stream_start(&headers, &mut query)?;
        let request = StreamRequest {
            export,
            caller: app.caller(&headers)?.to_val(),
            path: path_pairs(&params),
            query,
            since,
            keep_alive: app.options.keep_alive,
            follow: None,
        };
        push::stream(Arc::clone(&app.calls), request).await
    }
    .await;
    opened.unwrap_or_else(|error| {
        tracing::debug!(path = route.path, status = error.status, code = %error.code, "stream refused");
        error_response(&error)
    })
}

/// `GET /metrics` (docs/operations.md, "Metrics"): the operator's, like the stream.
async fn metrics_page(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let allowed = match app.caller(&headers) {
        Ok(caller) => {
            refuse_unless_operator(&app, &caller, "the metrics need the operator token").await
        }
        Err(error) => Err(error),
    };
    if let Err(error) = allowed {
        return error_response(&error);
    }
    metrics_answer(&app).await
}

/// The metrics page as an answer (OpenMetrics text).
async fn metrics_answer(app: &App) -> Response {
    let page = app.metrics.page(&app.calls).await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        page,
    )
        .into_response()
}

/// The router of `--metrics-listen`: `GET /metrics` with no token (docs/operations.md).
pub fn metrics_router(app: Arc<App>) -> Router {
    Router::new()
        .route(
            "/metrics",
            axum::routing::get(
                |State(app): State<Arc<App>>| async move { metrics_answer(&app).await },
            )
            .fallback(method_not_allowed),
        )
        .fallback(not_found)
        .with_state(app)
}

async fn advance_clock(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    if !matches!(app.caller(&headers), Ok(Caller::Operator)) {
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
    let clock = app.calls.runtime().clock();
    clock.advance(ms);
    reply(200, &serde_json::json!({ "now": clock.now_ms() }))
}

async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    error_response(&ErrorReply::new(
        404,
        "not_found",
        format!("no route for {method} {}", uri.path()),
    ))
}

/// The method a route of the table answers; `None` for a name that is no HTTP method the
/// relay serves (a route is never served under another method than its own).
fn method_filter(method: &str) -> Option<MethodFilter> {
    match method {
        "GET" => Some(MethodFilter::GET),
        "POST" => Some(MethodFilter::POST),
        "PUT" => Some(MethodFilter::PUT),
        "DELETE" => Some(MethodFilter::DELETE),
        "PATCH" => Some(MethodFilter::PATCH),
        _ => None,
    }
}

/// The router for every route of the table whose export the component has.
pub fn router(app: Arc<App>) -> Router {
    let mut by_path: Vec<(&'static str, MethodRouter<Arc<App>>)> = Vec::new();
    for route in ROUTES {
        let route = *route;
        // Resolved once here; the export travels with every request of the route.
        let Some(export) = app.calls.runtime().export(route.export) else {
            continue;
        };
        let Some(filter) = method_filter(route.method) else {
            tracing::error!(
                method = route.method,
                path = route.path,
                "route not mounted: its method is not one the relay serves"
            );
            continue;
        };
        let export = Arc::new(export.clone());
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
                    handle_stream(app, route, Arc::clone(&export), params, query, headers)
                },
            )
        } else {
            methods.on(
                filter,
                move |State(app): State<Arc<App>>,
                      params: RawPathParams,
                      query: RawQuery,
                      headers: HeaderMap,
                      body: Body| {
                    handle(
                        app,
                        route,
                        Arc::clone(&export),
                        params,
                        query,
                        headers,
                        body,
                    )
                },
            )
        };
    }
    let mut router = Router::new();
    for (path, methods) in by_path {
        router = router.route(path, methods.fallback(method_not_allowed));
    }
    let openapi = Arc::new(crate::openapi::document(app.calls.runtime()));
    router = router.route(
        "/v1/openapi.json",
        axum::routing::get(move || {
            let openapi = Arc::clone(&openapi);
            async move { JsonBody(openapi.as_ref().clone()) }
        }),
    );
    router = router
        .route(
            "/v1/stream",
            axum::routing::get(operator_stream).fallback(method_not_allowed),
        )
        .route(
            "/metrics",
            axum::routing::get(metrics_page).fallback(method_not_allowed),
        );
    // The dashboard page at `/` (static files; the page calls the routes above).
    router = router.merge(crate::dashboard::router());
    if app.options.test_clock {
        router = router.route("/v1/test/clock", axum::routing::post(advance_clock));
    }
    let limit = app.options.max_body_bytes;
    let mcp = crate::mcp::router(
        Arc::clone(&app.calls),
        app.operator.clone(),
        &crate::mcp::McpOptions {
            allowed_hosts: app.options.mcp_allowed_hosts.clone(),
            max_body_bytes: limit,
        },
    );
    router
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(app)
        // `/mcp` checks its own body size, and answers its own errors.
        .merge(mcp)
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
    let limits = app.options.connections;
    connections::serve(listener, router(app), limits, shutdown).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::method_filter;
    use crate::routes::ROUTES;

    /// Every route of the table is mounted under its own method (an unknown one was once served
    /// as POST).
    #[test]
    fn every_route_has_a_method_the_router_serves() {
        for route in ROUTES {
            assert!(
                method_filter(route.method).is_some(),
                "{} {} has no method the router serves",
                route.method,
                route.path
            );
        }
        assert!(method_filter("FOO").is_none());
        assert!(method_filter("post").is_none());
    }
}
