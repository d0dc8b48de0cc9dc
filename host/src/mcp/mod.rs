//! The Model Context Protocol front-end: the relay's tools for Claude Code, Codex and every MCP
//! client, at `/mcp` on the HTTP server (streamable HTTP, rmcp) and over stdio (`stdio.rs`).
//!
//! Identity comes from the bearer token of every request, not once per session: an agent's token
//! makes every tool act as that agent, the operator's acts as the built-in `user`. A request
//! without a valid token is answered 401 before any MCP exchange. No OAuth metadata is
//! advertised: clients then keep sending their configured static header.
//!
//! Every request is served statelessly (no sessions to keep or expire), in both protocol eras:
//! the initialize handshake and the 2026-07-28 per-request one. Answers are plain JSON unless the
//! call needs a stream.

pub mod channel;
pub mod resources;
pub mod stdio;
pub mod tools;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, DiscoverResult,
    Implementation, InitializeRequestParams, InitializeResult, ListResourceTemplatesResult,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams,
    ReadResourceResponse, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::Value as Json;

use agent_relay_core::bridge::{self, ErrorReply};
use agent_relay_core::calls::{Caller, Calls};
use agent_relay_core::token::OperatorToken;

use crate::client::view;
use tools::Acting;

/// The `Host` names `/mcp` always accepts (DNS-rebinding protection refuses others).
pub const LOOPBACK_HOSTS: &[&str] = &["localhost", "127.0.0.1", "::1"];

/// The agent the operator token acts as: the built-in human.
pub const OPERATOR_AGENT: &str = "user";

/// Settings of `/mcp`.
#[derive(Debug, Clone, Default)]
pub struct McpOptions {
    /// `Host` names accepted besides loopback.
    pub allowed_hosts: Vec<String>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
}

/// What the tools and the token check share.
struct ToolCalls {
    calls: Arc<Calls>,
    operator: OperatorToken,
}

/// The tools over HTTP, acting as the caller each request's token names.
#[derive(Clone)]
pub struct RelayTools {
    relay: Arc<ToolCalls>,
    tools: Arc<Vec<Tool>>,
}

impl RelayTools {
    /// Runs one tool call as `acting`: a relay error is a tool result with `isError`, never a
    /// protocol error, so the model reads what went wrong.
    async fn call(&self, acting: &Acting, request: &CallToolRequestParams) -> CallToolResult {
        let Some(spec) = tools::find(&request.name) else {
            return failure(&ErrorReply::new(
                404,
                "not_found",
                format!("no tool {}", request.name),
            ));
        };
        let Some(export) = self.relay.calls.runtime().export(spec.export) else {
            return failure(&ErrorReply::new(
                500,
                "internal",
                format!("tool {} names no export {}", spec.name, spec.export),
            ));
        };
        let call = match tools::arguments(spec, export, acting, request.arguments.as_ref()) {
            Ok(call) => call,
            Err(message) => return failure(&ErrorReply::invalid(message)),
        };
        match run(&self.relay.calls, export, call).await {
            Ok(answer) => {
                // The JSON first (clients read it), then the jobs it carries in words.
                let jobs = tools::summary(&answer, &acting.agent_id, view::now_ms());
                let mut result = CallToolResult::structured(tools::structured(export, answer));
                if let Some(jobs) = jobs {
                    result.content.push(ContentBlock::text(jobs));
                }
                result
            }
            Err(error) => failure(&error),
        }
    }

    /// Reads a resource as `acting` (`resources.rs`): the export that reads it, through the
    /// call runner, so the caller sees what its token may see and nothing more.
    async fn read(&self, acting: &Acting, uri: &str) -> Result<ReadResourceResponse, McpError> {
        let target = resources::Target::parse(uri)?;
        let (name, named) = target.call();
        let export = self.relay.calls.runtime().export(name).ok_or_else(|| {
            McpError::internal_error(format!("the component has no {name} export"), None)
        })?;
        let inputs = bridge::Inputs {
            caller: Some(acting.caller.clone()),
            named: Some(&named),
            ..bridge::Inputs::default()
        };
        let args = bridge::arguments(export, &inputs)
            .map_err(|error| resources::refused(&target, &ErrorReply::invalid(error.0)))?;
        let answer = self
            .relay
            .calls
            .run(export, args)
            .await
            .and_then(|answer| bridge::outcome(&answer))
            .map_err(|error| resources::refused(&target, &error))?;
        Ok(resources::contents(&target, &answer).into())
    }
}

/// The one place MCP hands a call to the call runner; a wait holds it like an HTTP long-poll.
async fn run(
    calls: &Arc<Calls>,
    export: &agent_relay_core::runtime::Export,
    call: tools::Call,
) -> Result<Json, ErrorReply> {
    let answer = match call.wait.filter(|wait| !wait.is_zero()) {
        Some(wait) => {
            let deadline = tokio::time::Instant::now() + wait;
            calls.hold(export, call.args, deadline).await?
        }
        None => calls.run(export, call.args).await?,
    };
    bridge::outcome(&answer)
}

fn failure(error: &ErrorReply) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(error.to_string())])
}

/// The caller of an MCP request, as the token check established it.
fn acting(context: &RequestContext<RoleServer>) -> Result<&Acting, McpError> {
    context
        .extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Acting>())
        .ok_or_else(|| McpError::internal_error("the request reached MCP unauthenticated", None))
}

/// The server's `instructions`: who the caller is and how to work through the relay.
pub fn instructions(agent_id: &str) -> String {
    format!(
        "You are agent `{agent_id}` on agent-relay; every tool acts as you (`from` and \
         `agentId` are filled in from your token; whoami shows your card). Send with \
         send_message (`to`: an agent id, label:L, tag:T, cap:C or broadcast; `claimable: true` \
         for a job one recipient takes). Read with fetch_inbox (`waitSeconds` waits for the next \
         message) and mark_read. Take work with claim_next (or claim_message for a given job), \
         keep it with renew_claim, give it back with release_claim, and finish it with \
         complete_claim (`result`); reply with send_message `replyTo`."
    )
}

/// What `/mcp` serves: tools, and resources to list and read (no `subscribe`: a stateless
/// server has no session to tell; `agent-relay mcp` adds it over stdio).
fn config() -> ServerConfig {
    ServerConfig::new(
        ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .build(),
    )
    .with_server_info(Implementation::new(
        "agent-relay",
        env!("CARGO_PKG_VERSION"),
    ))
}

impl ServerHandler for RelayTools {
    fn get_info(&self) -> ServerConfig {
        config()
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, McpError> {
        let agent_id = acting(&context)?.agent_id.clone();
        context.peer.set_peer_info(request.clone());
        let mut result = self.negotiate_initialize(&request)?;
        result.instructions = Some(instructions(&agent_id));
        Ok(result)
    }

    async fn discover(
        &self,
        context: RequestContext<RoleServer>,
    ) -> Result<DiscoverResult, McpError> {
        let acting = acting(&context)?;
        let info = config().with_instructions(instructions(&acting.agent_id));
        Ok(DiscoverResult::from_server_info(
            self.supported_protocol_versions().into_owned(),
            info,
        ))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let acting = acting(&context)?;
        tracing::debug!(agent = %acting.agent_id, "mcp tools listed");
        Ok(ListToolsResult::with_all_items(self.tools.as_ref().clone()))
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        Ok(resources::listing(&acting(&context)?.agent_id))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(resources::templates())
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let acting = acting(&context)?.clone();
        self.read(&acting, &request.uri).await
    }

    #[allow(
        deprecated,
        reason = "the subscribe of the protocol eras clients speak today"
    )]
    async fn subscribe(
        &self,
        request: rmcp::model::SubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        Err(McpError::new(
            rmcp::model::ErrorCode::METHOD_NOT_FOUND,
            format!(
                "/mcp is stateless (no session to tell of {}): subscribe through `agent-relay \
                 mcp` over stdio, or wait with fetch_inbox waitSeconds",
                request.uri
            ),
            None,
        ))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools.iter().find(|tool| tool.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let acting = acting(&context)?.clone();
        let started = std::time::Instant::now();
        let result = self.call(&acting, &request).await;
        tracing::debug!(tool = %request.name, agent = %acting.agent_id, is_error = result.is_error == Some(true), elapsed = ?started.elapsed(), "mcp tool called");
        Ok(result.into())
    }
}

/// `/mcp`: the rmcp service behind the token check, served statelessly.
pub fn router(calls: Arc<Calls>, operator: OperatorToken, options: &McpOptions) -> Router {
    let hosts = LOOPBACK_HOSTS
        .iter()
        .map(|host| (*host).to_owned())
        .chain(options.allowed_hosts.iter().cloned());
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts)
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_max_request_body_bytes(options.max_body_bytes);
    let tools = Arc::new(tools::listing(calls.runtime()));
    let relay = Arc::new(ToolCalls { calls, operator });
    let handler = RelayTools {
        relay: Arc::clone(&relay),
        tools,
    };
    let service = StreamableHttpService::new(
        move || Ok(handler.clone()),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    Router::new()
        .route_service("/mcp", service)
        .layer(middleware::from_fn_with_state(relay, authenticate))
}

/// Establishes the caller of every MCP request from its bearer token (the `whoami` export
/// decides whose it is); 401 without a valid one, before any MCP exchange.
async fn authenticate(
    State(relay): State<Arc<ToolCalls>>,
    mut request: Request,
    next: Next,
) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let identified = match Caller::authorizing(authorization, &relay.operator) {
        Ok(caller) => identify(&relay.calls, &caller)
            .await
            .map(|agent_id| (caller, agent_id)),
        Err(error) => Err(error),
    };
    match identified {
        Ok((caller, agent_id)) => {
            request.extensions_mut().insert(Acting {
                caller: caller.to_val(),
                agent_id,
            });
            next.run(request).await
        }
        Err(error) => {
            let status =
                StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = (status, axum::Json(error.to_json())).into_response();
            if error.status == 401 {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
            }
            response
        }
    }
}

/// The agent `caller` acts as: its token's agent, or the built-in `user` for the operator.
async fn identify(calls: &Arc<Calls>, caller: &Caller) -> Result<String, ErrorReply> {
    let export = calls
        .runtime()
        .export("whoami")
        .ok_or_else(|| ErrorReply::new(500, "internal", "the component has no whoami export"))?;
    let identity = bridge::outcome(&calls.run(export, vec![caller.to_val()]).await?)?;
    if identity.get("operator").and_then(Json::as_bool) == Some(true) {
        return Ok(OPERATOR_AGENT.to_owned());
    }
    identity
        .pointer("/agent/id")
        .and_then(Json::as_str)
        .map(str::to_owned)
        .ok_or_else(|| ErrorReply::new(500, "internal", "whoami named no agent"))
}
