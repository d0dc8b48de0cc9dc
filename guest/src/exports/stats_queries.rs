//! `stats-queries`: the relay's counts, for the operator.

use super::{Outcome, Relay, now_ms};
use crate::bindings::agent_relay::relay::stats_types::RelayStats;
use crate::bindings::agent_relay::relay::types::Caller;
use crate::bindings::exports::agent_relay::relay::stats_queries::Guest;
use crate::stats;

impl Guest for Relay {
    fn get_stats(caller: Caller) -> Outcome<RelayStats> {
        stats::stats(&caller, now_ms())
    }
}
