//! The agent relay's core: the relay component (every relay rule lives in it) and what it takes
//! to run it, with no HTTP, MCP or command line. Embedders take this crate alone.
//!
//! **To host the relay in a program,** [`Relay`] is the whole surface: open it over a SQLite
//! file with [`Options`] (the sandbox's [`Limits`], the database's [`SqliteOptions`], a
//! [`Clock`]), call any export with JSON as a [`Caller`], and read its answer or its
//! [`ErrorReply`]. `examples/embed.rs` is a complete program.
//!
//! **To build a front-end** (the `agent-relay` server is one), the layers below `Relay` are
//! public too, each with one job, top to bottom:
//! - [`bridge`]: the one conversion between JSON and the component's WIT values;
//! - [`calls`]: the call runner every front-end goes through (slots, the write lane and group
//!   commit, the commit signal, waiting calls);
//! - [`runtime`]: the component compiled once and a fresh instance per call;
//! - [`store`]: the backend trait, one transaction per call; [`sqlite`] is the embedded backend;
//! - [`shape`]: the one walk over the component's types (the bridge, OpenAPI and MCP schemas);
//! - [`token`]: the operator's credential.

pub mod bindings;
pub mod bridge;
pub mod calls;
pub mod copy;
pub mod embed;
pub mod postgres;
pub mod runtime;
pub mod shape;
pub mod sqlite;
pub mod store;
pub mod token;

pub use bridge::ErrorReply;
pub use calls::{CallOptions, Caller};
pub use embed::{Options, Relay};
pub use runtime::{Clock, Limits};
pub use sqlite::{SqliteOptions, Synchronous};
