//! One round of the reaper: what went quiet is marked so (its reservations released), what a
//! lease no longer covers returns.

use crate::bindings::agent_relay::relay::types::{Caller, ReapReport, RelayError};
use crate::{agents, auth, claims, orchestrators, reservations};

/// Operator: marks stale agents offline (releasing their reservations), releases expired claims (dead-lettering exhausted ones)
/// and marks stale orchestrators offline.
pub fn reap(caller: &Caller, now: i64) -> Result<ReapReport, RelayError> {
    auth::require_operator(caller)?;
    let offline_agents = agents::reap_stale(now)?;
    for agent_id in &offline_agents {
        reservations::release_all_of(agent_id, "agent offline", now)?;
    }
    let (released_claims, dead_lettered) = claims::release_expired(now)?;
    let offline_orchestrators = orchestrators::reap_stale(now)?;
    Ok(ReapReport {
        offline_agents,
        released_claims,
        dead_lettered,
        offline_orchestrators,
    })
}
