//! The relay's tests, one binary: each module is the tests of one area, run against the real
//! thing (the built `agent-relay` binary on a loopback port with its own SQLite file, the
//! component in process, the CLI as a process). One binary links wasmtime once.

#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;

mod agent_cli;
mod agents;
mod batch;
mod bench_smoke;
mod calls;
mod channels;
mod cli;
mod conformance;
mod connections;
mod dashboard;
mod dependencies;
mod embed;
mod faults;
mod files;
mod guard;
mod hosts;
mod jobs;
mod layers;
mod mcp;
mod mcp_channel;
mod messages;
mod openapi;
mod operations;
mod paging;
mod push;
mod reservations;
mod schedule;
mod search;
mod settings;
mod setup;
mod stress;
mod tasks;
mod upgrade;
mod upgrade_06;
mod wakeups;
