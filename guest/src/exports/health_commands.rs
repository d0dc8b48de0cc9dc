//! `health-commands`: the health report (a write transaction: it proves the store writable).

use super::{Outcome, Relay, now_ms};
use crate::bindings::agent_relay::relay::health_types::HealthReport;
use crate::bindings::agent_relay::relay::types::Caller;
use crate::bindings::exports::agent_relay::relay::health_commands::Guest;
use crate::health;

impl Guest for Relay {
    fn health(_caller: Caller) -> Outcome<HealthReport> {
        health::report(now_ms())
    }
}
