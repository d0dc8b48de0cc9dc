//! One round of the reaper: what went quiet is marked so, what a lease no longer covers returns.

use crate::bindings::agent_relay::relay::types::{Caller, ReapReport, RelayError};
use crate::{agents, auth, claims, orchestrators};

/// Operator: marks stale agents offline, releases expired claims (dead-lettering exhausted ones)
/// and marks stale orchestrators offline.
pub fn reap(caller: &Caller, now: i64) -> Result<ReapReport, RelayError> {
    auth::require_operator(caller)?;
    let offline_agents = agents::reap_stale(now)?;
    let (released_claims, dead_lettered) = claims::release_expired(now)?;
    let offline_orchestrators = orchestrators::reap_stale(now)?;
    Ok(ReapReport {
        offline_agents,
        released_claims,
        dead_lettered,
        offline_orchestrators,
    })
}
