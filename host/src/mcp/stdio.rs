//! `agent-relay mcp --url URL`: the relay's MCP tools over stdio, for clients that only spawn
//! processes. It holds no relay of its own: every request goes to the running relay's `/mcp`
//! with the caller's token, so push, group commit and every agent share one server, and the tools
//! are exactly the ones the server lists.

use std::sync::Arc;

use anyhow::Context as _;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ClientConfig, ListToolsResult, PaginatedRequestParams,
    ServerConfig, ServerPeerInfo,
};
use rmcp::service::{RequestContext, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ErrorData as McpError, RoleClient, RoleServer, ServerHandler, ServiceExt};

/// The stdio server: answers each request by asking the relay.
struct Forward {
    relay: RunningService<RoleClient, ClientConfig>,
    info: Option<Arc<ServerPeerInfo>>,
}

fn relay_failed(error: rmcp::ServiceError) -> McpError {
    McpError::internal_error(format!("the relay did not answer: {error}"), None)
}

impl ServerHandler for Forward {
    fn get_info(&self) -> ServerConfig {
        let mut config = super::config();
        config.instructions = self
            .info
            .as_ref()
            .and_then(|info| info.instructions.clone());
        config
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        self.relay.list_tools(request).await.map_err(relay_failed)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        self.relay
            .call_tool_once(request)
            .await
            .map_err(relay_failed)
    }
}

/// Connects to the relay at `url` (its base address or its `/mcp`) and serves stdin/stdout
/// until the client closes them.
///
/// # Errors
/// The relay cannot be reached or refuses the token.
pub async fn serve(url: &str, token: Option<&str>) -> anyhow::Result<()> {
    let base = url.trim_end_matches('/');
    let endpoint = if base.ends_with("/mcp") {
        base.to_owned()
    } else {
        format!("{base}/mcp")
    };
    let mut config = StreamableHttpClientTransportConfig::with_uri(endpoint.as_str());
    if let Some(token) = token {
        config = config.auth_header(token);
    }
    let transport = StreamableHttpClientTransport::from_config(config);
    let client = ClientConfig::new(
        rmcp::model::ClientCapabilities::default(),
        rmcp::model::Implementation::new("agent-relay-mcp-stdio", env!("CARGO_PKG_VERSION")),
    );
    let relay = client.serve(transport).await.with_context(|| {
        format!("connecting to {endpoint} (is the relay running, and is RELAY_TOKEN valid?)")
    })?;
    let info = relay.peer_info();
    let server = Forward { relay, info }
        .serve(rmcp::transport::stdio())
        .await
        .context("serving MCP on stdio")?;
    server.waiting().await.context("the stdio server stopped")?;
    Ok(())
}
