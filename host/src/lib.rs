//! The agent relay host: serves the relay component (all relay behaviour lives in the guest) over
//! HTTP and a CLI, giving it SQLite through the store capability.

pub mod bindings;
pub mod bridge;
pub mod calls;
pub mod cli;
pub mod client;
pub mod connections;
pub mod embed;
pub mod http;
pub mod mcp;
pub mod openapi;
pub mod push;
pub mod routes;
pub mod runtime;
pub mod settings;
pub mod shape;
pub mod sqlite;
pub mod store;
pub mod token;
pub mod watch;
