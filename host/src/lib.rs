//! The agent relay server: the relay component (from `agent-relay-core`, where every relay rule
//! lives, in the guest) served over HTTP, MCP and a command line.

pub mod cli;
pub mod client;
pub mod connections;
pub mod dashboard;
pub mod http;
pub mod mcp;
pub mod metrics;
pub mod openapi;
pub mod push;
pub mod routes;
pub mod stdout;
