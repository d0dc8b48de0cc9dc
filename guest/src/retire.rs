//! Deleting an agent, or the orchestrator it speaks for, and ending what it leaves behind.
//!
//! What a deleted agent leaves behind ends with it: its claims are released (their tasks reopen),
//! its file reservations released, and its pairs are cancelled or ended, the other participant
//! told. Nothing of it passes to a new agent that registers the same id.

use crate::bindings::agent_relay::relay::types::{Caller, Deleted, RelayError};
use crate::{agents, claims, orchestrators, pairs, reservations};

/// Operator: deletes an agent (never a built-in one).
pub fn delete_agent(caller: &Caller, agent_id: &str, now: i64) -> Result<Deleted, RelayError> {
    let deleted = agents::delete(caller, agent_id, now)?;
    leave_behind(agent_id, now)?;
    Ok(deleted)
}

/// Deletes an orchestrator and its agent.
pub fn delete_orchestrator(
    caller: &Caller,
    orchestrator_id: &str,
    now: i64,
) -> Result<Deleted, RelayError> {
    let (deleted, agent_id) = orchestrators::delete(caller, orchestrator_id, now)?;
    leave_behind(&agent_id, now)?;
    Ok(deleted)
}

fn leave_behind(agent_id: &str, now: i64) -> Result<(), RelayError> {
    claims::release_all_of(agent_id, now)?;
    reservations::release_all_of(agent_id, "agent deleted", now)?;
    pairs::leave_all(agent_id, now)
}
