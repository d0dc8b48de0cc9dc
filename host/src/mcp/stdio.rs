//! `agent-relay mcp --url URL`: the relay's MCP tools over stdio, for clients that only spawn
//! processes. It holds no relay of its own: every request goes to the running relay's `/mcp`
//! with the caller's token, so push, group commit and every agent share one server, and the tools
//! are exactly the ones the server lists.
//!
//! With an agent's token it is also a Claude Code channel (`channel.rs`, docs/channels.md): it
//! declares `experimental["claude/channel"]` and pushes the agent's new messages to the session.
//! With the operator's token it forwards tools only, and says so on stderr.

use std::sync::Arc;

use anyhow::Context as _;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientConfig, ContentBlock,
    CustomNotification, JsonObject, ListResourceTemplatesResult, ListResourcesResult,
    ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse,
    ServerConfig, ServerPeerInfo, SubscribeRequestParams, SubscriptionFilter,
    UnsubscribeRequestParams,
};
use rmcp::service::{NotificationContext, RequestContext, RunningService, SubscriptionContext};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ErrorData as McpError, RoleClient, RoleServer, ServerHandler, ServiceExt};
use serde_json::Value as Json;
use tokio::sync::Mutex;

use super::channel::{self, Channel, ChannelOptions, Identity, Rest, Unknown};
use super::resources;

/// The relay's `/mcp`, reached as a client.
type RelayService = RunningService<RoleClient, ClientConfig>;

/// The stdio server: answers each request by asking the relay.
struct Forward {
    endpoint: String,
    token: Option<String>,
    /// The connection to the relay's `/mcp`, made again after the relay went away.
    relay: Mutex<Option<RelayService>>,
    info: Option<Arc<ServerPeerInfo>>,
    channel: Option<Arc<Channel>>,
}

fn relay_failed(endpoint: &str, error: impl std::fmt::Display) -> McpError {
    McpError::internal_error(
        format!("the relay at {endpoint} did not answer ({error}); is it running?"),
        None,
    )
}

async fn connect(endpoint: &str, token: Option<&str>) -> anyhow::Result<RelayService> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(endpoint);
    if let Some(token) = token {
        config = config.auth_header(token);
    }
    let transport = StreamableHttpClientTransport::from_config(config);
    let client = ClientConfig::new(
        rmcp::model::ClientCapabilities::default(),
        rmcp::model::Implementation::new("agent-relay-mcp-stdio", env!("CARGO_PKG_VERSION")),
    );
    client.serve(transport).await.with_context(|| {
        format!("connecting to {endpoint} (is the relay running, and is RELAY_TOKEN valid?)")
    })
}

impl Forward {
    /// The relay's peer, connecting again when there is none or it closed.
    async fn peer(&self) -> Result<rmcp::service::Peer<RoleClient>, McpError> {
        let mut relay = self.relay.lock().await;
        if let Some(service) = relay.as_ref()
            && !service.is_closed()
            && !service.is_transport_closed()
        {
            return Ok(service.peer().clone());
        }
        let service = connect(&self.endpoint, self.token.as_deref())
            .await
            .map_err(|error| relay_failed(&self.endpoint, format!("{error:#}")))?;
        let peer = service.peer().clone();
        *relay = Some(service);
        Ok(peer)
    }

    /// Forgets a connection that failed, so the next request connects again.
    async fn drop_relay(&self) {
        self.relay.lock().await.take();
    }

    /// After a tool the agent called succeeded: the pushed message it acted on is read.
    async fn note_action(&self, request: &CallToolRequestParams, result: &CallToolResponse) {
        let Some(channel) = &self.channel else {
            return;
        };
        let CallToolResponse::Complete(result) = result else {
            return;
        };
        if result.is_error == Some(true) {
            return;
        }
        let argument = |key: &str| {
            request
                .arguments
                .as_ref()
                .and_then(|arguments: &JsonObject| arguments.get(key))
                .and_then(Json::as_i64)
        };
        let acted_on = match request.name.as_ref() {
            "send_message" => argument("replyTo"),
            "claim_message" | "complete_claim" | "release_claim" => argument("messageId"),
            _ => None,
        };
        if let Some(id) = acted_on {
            channel.acted_on(id).await;
        }
        // The session's own reads and claims change its inbox resource too.
        if matches!(
            request.name.as_ref(),
            "mark_read"
                | "claim_message"
                | "renew_claim"
                | "release_claim"
                | "complete_claim"
                | "claim_next"
        ) {
            channel.inbox_changed().await;
        }
    }

    /// Asks the relay's `/mcp` and forgets the connection when that failed (the relay went
    /// away); a refusal by the relay is passed on as it is.
    async fn forwarded<T>(
        &self,
        ask: impl AsyncFnOnce(rmcp::service::Peer<RoleClient>) -> Result<T, rmcp::ServiceError>,
    ) -> Result<T, McpError> {
        let answer = ask(self.peer().await?).await;
        match answer {
            Ok(answer) => Ok(answer),
            Err(rmcp::ServiceError::McpError(error)) => Err(error),
            Err(error) => {
                self.drop_relay().await;
                Err(relay_failed(&self.endpoint, error))
            }
        }
    }
}

/// A relay that cannot be reached, as a tool result the model reads, not a protocol failure.
fn tool_failure(error: McpError) -> CallToolResponse {
    CallToolResult::error(vec![ContentBlock::text(error.message)]).into()
}

impl ServerHandler for Forward {
    fn get_info(&self) -> ServerConfig {
        let mut config = super::config();
        let relay = self
            .info
            .as_ref()
            .and_then(|info| info.instructions.clone());
        if let Some(channel) = &self.channel {
            // The follower tells a subscribed inbox that changed (`resources.rs`).
            if let Some(resources) = config.capabilities.resources.as_mut() {
                resources.subscribe = Some(true);
            }
            let experimental = config.capabilities.experimental.get_or_insert_default();
            experimental.insert(channel::CHANNEL_CAPABILITY.to_owned(), JsonObject::new());
            if channel.options().permissions {
                experimental.insert(channel::PERMISSION_CAPABILITY.to_owned(), JsonObject::new());
            }
            let own = channel.instructions();
            config.instructions = Some(match relay {
                Some(relay) => format!("{relay}\n\n{own}"),
                None => own,
            });
        } else {
            config.instructions = relay;
        }
        config
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        self.forwarded(async |peer| peer.list_tools(request).await)
            .await
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let peer = match self.peer().await {
            Ok(peer) => peer,
            Err(error) => {
                return Ok(tool_failure(error));
            }
        };
        match peer.call_tool_once(request.clone()).await {
            Ok(result) => {
                self.note_action(&request, &result).await;
                Ok(result)
            }
            Err(error) => {
                self.drop_relay().await;
                Ok(tool_failure(relay_failed(&self.endpoint, error)))
            }
        }
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        self.forwarded(async |peer| peer.list_resources(request).await)
            .await
    }

    async fn list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        self.forwarded(async |peer| peer.list_resource_templates(request).await)
            .await
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        self.forwarded(async |peer| peer.read_resource_once(request).await)
            .await
    }

    #[allow(
        deprecated,
        reason = "the subscribe of the protocol eras clients speak today"
    )]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let Some(channel) = &self.channel else {
            return Err(McpError::invalid_request(
                "this session follows no inbox (the token is the operator's, or none): \
                 nothing can be subscribed; read resources with resources/read",
                None,
            ));
        };
        channel.attach(context.peer.clone());
        channel
            .subscriptions()
            .subscribe(&request.uri, channel.agent_id())
    }

    /// 2026-07-28's `subscriptions/listen`: the own inbox, as `resources/subscribe` gives it.
    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        let channel = self.channel.as_ref()?;
        resources::Subscriptions::accept(requested, channel.agent_id())
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), McpError> {
        let Some(channel) = &self.channel else {
            context.cancelled().await;
            return Ok(());
        };
        channel.attach(context.request_context().peer.clone());
        let key = channel.subscriptions().listen(context.sink().clone());
        context.cancelled().await;
        channel.subscriptions().stop_listening(key);
        Ok(())
    }

    #[allow(
        deprecated,
        reason = "the unsubscribe of the protocol eras clients speak today"
    )]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        match &self.channel {
            Some(channel) => channel.subscriptions().unsubscribe(&request.uri),
            None => resources::Target::parse(&request.uri).map(|_| ()),
        }
    }

    async fn on_custom_notification(
        &self,
        notification: CustomNotification,
        context: NotificationContext<RoleServer>,
    ) {
        let Some(channel) = &self.channel else {
            return;
        };
        if notification.method != channel::PERMISSION_REQUEST_METHOD
            || !channel.options().permissions
        {
            return;
        }
        channel.attach(context.peer.clone());
        let params = notification.params.unwrap_or(Json::Null);
        channel.permission_request(&params).await;
    }
}

/// The relay refused the token `agent-relay mcp` was started with: a usage error (exit 2),
/// told in one line instead of the MCP client's transport error.
#[derive(Debug)]
pub struct TokenRefused(String);

impl std::fmt::Display for TokenRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TokenRefused {}

/// The relay's own words from an error answer, or the answer as it came.
fn refusal(body: &str) -> String {
    serde_json::from_str::<Json>(body)
        .ok()
        .and_then(|json| json["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.to_owned())
}

/// How `agent-relay mcp` runs.
#[derive(Debug, Clone)]
pub struct StdioOptions {
    /// The relay's base address or its `/mcp`.
    pub url: String,
    pub token: Option<String>,
    pub channel: ChannelOptions,
    /// How often an agent's session asks the relay `whoami`, so the relay notes the agent's call
    /// while the session is alive (docs/channels.md, "Keeping the agent alive").
    pub keepalive: std::time::Duration,
}

/// While the session lives, one cheap authenticated call (`GET /v1/whoami`) every `every`: the
/// relay notes each call of an agent's token as a sign of life (the reaper hands the tokens to
/// `record-agent-calls`), so an idle session keeps its agent seen and its jobs' claims alive.
async fn keep_alive(rest: Rest, every: std::time::Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match rest.whoami().await {
            Ok(Identity::Agent(_)) => {}
            Ok(Identity::Operator) => return,
            Err(Unknown::Refused(status, body)) if status == 401 => {
                eprintln!(
                    "agent-relay mcp: the relay refuses RELAY_TOKEN now ({status}): {body}; the \
                     session no longer keeps the agent seen"
                );
                return;
            }
            Err(error) => tracing::debug!(?error, "the keep-alive call failed; trying again"),
        }
    }
}

/// Connects to the relay at `url` (its base address or its `/mcp`) and serves stdin/stdout
/// until the client closes them.
///
/// # Errors
/// The relay refuses the token.
pub async fn serve(options: &StdioOptions) -> anyhow::Result<()> {
    let base = options.url.trim_end_matches('/');
    let (base, endpoint) = match base.strip_suffix("/mcp") {
        Some(root) => (root.to_owned(), base.to_owned()),
        None => (base.to_owned(), format!("{base}/mcp")),
    };
    let token = options.token.as_deref();
    let identity = match token {
        Some(token) => Some(Rest::new(&base, token)?.whoami().await),
        None => None,
    };
    // Whether this token gets a channel: an agent's does; one the relay could not be asked
    // about yet may (the channel asks again once the relay is up); no other does.
    let (pushes, known) = match &identity {
        Some(Ok(Identity::Agent(agent))) => (true, Some(agent.clone())),
        Some(Ok(Identity::Operator)) => {
            eprintln!(
                "agent-relay mcp: RELAY_TOKEN is the operator's, which acts as `user` and has no \
                 inbox of its own to follow: serving the tools only, no channel messages will \
                 be pushed (use an agent's token for that)"
            );
            (false, None)
        }
        Some(Err(Unknown::Refused(status, body))) => {
            return Err(TokenRefused(format!(
                "the relay at {base} refused RELAY_TOKEN ({status}: {}): set RELAY_TOKEN to the \
                 agent's token (agent-relay agent token ID makes one); serving nothing",
                refusal(body)
            ))
            .into());
        }
        Some(Err(Unknown::Unreachable(error))) => {
            eprintln!(
                "agent-relay mcp: the relay at {base} cannot be reached ({error}); the tools \
                 answer an error until it is up, and the channel starts pushing once it is"
            );
            (true, None)
        }
        None => {
            eprintln!(
                "agent-relay mcp: no RELAY_TOKEN: the relay will refuse every tool, and no \
                 channel messages are pushed"
            );
            (false, None)
        }
    };
    let channel = match token {
        Some(token) if pushes => Some(Arc::new(Channel::new(
            Rest::new(&base, token)?,
            known,
            &base,
            token,
            options.channel.clone(),
        ))),
        _ => None,
    };
    let relay = if matches!(identity, Some(Err(Unknown::Unreachable(_)))) {
        None
    } else {
        Some(connect(&endpoint, token).await?)
    };
    let info = relay.as_ref().and_then(|relay| relay.peer_info());
    let forward = Forward {
        endpoint,
        token: options.token.clone(),
        relay: Mutex::new(relay),
        info,
        channel: channel.clone(),
    };
    let server = forward
        .serve(rmcp::transport::stdio())
        .await
        .context("serving MCP on stdio")?;
    if let Some(channel) = channel {
        channel.attach(server.peer().clone());
        tokio::spawn(channel.run());
    }
    let keeping = match token {
        Some(token) if pushes => Some(tokio::spawn(keep_alive(
            Rest::new(&base, token)?,
            options.keepalive,
        ))),
        _ => None,
    };
    let stopped = server.waiting().await;
    if let Some(keeping) = keeping {
        keeping.abort();
    }
    stopped.context("the stdio server stopped")?;
    Ok(())
}
