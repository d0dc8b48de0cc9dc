//! The component's exports: one file per WIT interface, each turning WIT arguments into a call
//! of the domain module that owns the operation and handing its answer back. No relay rule lives
//! here; the domains know nothing of the export traits.

mod activity_commands;
mod activity_queries;
mod channel_commands;
mod channel_queries;
mod commands;
#[cfg(feature = "faults")]
mod faults;
mod health_commands;
mod orchestrator_commands;
mod orchestrator_queries;
mod pair_commands;
mod pair_queries;
mod queries;
mod reservation_commands;
mod reservation_queries;
mod rule_queries;
mod search_queries;
mod settings_commands;
mod settings_queries;
mod stats_queries;
mod task_commands;
mod task_queries;

use crate::bindings::agent_relay::relay::types::RelayError;

/// The component's single entry type; it holds no state between calls.
pub struct Relay;

/// What every operation returns.
type Outcome<T> = Result<T, RelayError>;

/// The current time in milliseconds since the Unix epoch, from the host's (substitutable) clock.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
