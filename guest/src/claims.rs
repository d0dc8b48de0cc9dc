//! Claims: leases on claimable messages. Exactly one agent holds a live claim; an expired lease
//! makes the message claimable again.

use crate::agents;
use crate::bindings::agent_relay::relay::types::{Caller, ClaimInput, Message, RelayError};
use crate::error::{conflict, invalid};
use crate::messages;
use crate::{db, params, settings, tasks};

/// Shortest lease a caller may ask for.
const MIN_LEASE_MS: i64 = 100;

fn lease_ms(input: &ClaimInput) -> Result<i64, RelayError> {
    let max = settings::number(settings::MAX_LEASE_MS)?;
    match input.lease_ms {
        None => Ok(settings::number(settings::DEFAULT_LEASE_MS)?.min(max)),
        Some(ms) if (MIN_LEASE_MS..=max).contains(&ms) => Ok(ms),
        Some(ms) => Err(invalid(format!(
            "leaseMs {ms} must be between {MIN_LEASE_MS} and {max}"
        ))),
    }
}

/// Who holds a live claim on the message at `now`, if anyone.
pub fn live_holder(message: &Message, now: i64) -> Option<&str> {
    match (&message.claimed_by, message.claim_expires_at) {
        (Some(holder), Some(expires)) if expires > now => Some(holder),
        _ => None,
    }
}

pub fn claim(
    caller: &Caller,
    id: i64,
    input: &ClaimInput,
    now: i64,
) -> Result<Message, RelayError> {
    let (_, agent) = agents::acting(
        caller,
        &input.agent_id,
        input.instance_id.as_deref(),
        input.epoch,
    )?;
    let lease = lease_ms(input)?;
    let message = messages::load_for(&agent, id)?;
    if !message.claimable {
        return Err(conflict(format!("message {id} is not claimable")));
    }
    if let Some(holder) = live_holder(&message, now).filter(|holder| *holder != agent.id) {
        return Err(conflict(format!(
            "message {id} is already claimed by {holder}"
        )));
    }
    // The write re-checks the lease so a claim can never overlap another, whatever ran before.
    let taken = db::execute(
        "UPDATE messages SET claimed_by = ?2, claimed_at = ?3, claim_expires_at = ?4
         WHERE id = ?1 AND claimable = 1
           AND (claimed_by IS NULL OR claimed_by = ?2 OR claim_expires_at <= ?3)",
        &params![id, agent.id.as_str(), now, now + lease],
    )?;
    if taken.rows_changed == 0 {
        return Err(conflict(format!("message {id} is already claimed")));
    }
    let claimed = messages::load(id)?;
    tasks::on_message_claimed(&claimed, now)?;
    Ok(claimed)
}

pub fn renew(
    caller: &Caller,
    id: i64,
    input: &ClaimInput,
    now: i64,
) -> Result<Message, RelayError> {
    let (_, agent) = agents::acting(
        caller,
        &input.agent_id,
        input.instance_id.as_deref(),
        input.epoch,
    )?;
    let lease = lease_ms(input)?;
    let message = messages::load_for(&agent, id)?;
    require_holder(&message, &agent.id, now)?;
    db::execute(
        "UPDATE messages SET claim_expires_at = ?2 WHERE id = ?1",
        &params![id, now + lease],
    )?;
    let renewed = messages::load(id)?;
    tasks::on_claim_renewed(&renewed, now)?;
    Ok(renewed)
}

pub fn release(
    caller: &Caller,
    id: i64,
    input: &ClaimInput,
    now: i64,
) -> Result<Message, RelayError> {
    let (_, agent) = agents::acting(
        caller,
        &input.agent_id,
        input.instance_id.as_deref(),
        input.epoch,
    )?;
    let message = messages::load_for(&agent, id)?;
    require_holder(&message, &agent.id, now)?;
    db::execute(
        "UPDATE messages SET claimed_by = NULL, claimed_at = NULL, claim_expires_at = NULL WHERE id = ?",
        &params![id],
    )?;
    let released = messages::load(id)?;
    tasks::on_claim_released(&released, &agent.id, now)?;
    Ok(released)
}

fn require_holder(message: &Message, agent_id: &str, now: i64) -> Result<(), RelayError> {
    match live_holder(message, now) {
        Some(holder) if holder == agent_id => Ok(()),
        Some(holder) => Err(conflict(format!(
            "message {} is claimed by {holder}, not {agent_id}",
            message.id
        ))),
        None => Err(conflict(format!(
            "agent {agent_id} holds no live claim on message {}; claim it again",
            message.id
        ))),
    }
}

/// Clears claims whose lease has run out, so they read as unclaimed; their tasks reopen too.
pub fn release_expired(now: i64) -> Result<u32, RelayError> {
    tasks::release_expired(now)?;
    let released = db::execute(
        "UPDATE messages SET claimed_by = NULL, claimed_at = NULL, claim_expires_at = NULL
         WHERE claimed_by IS NOT NULL AND claim_expires_at <= ?",
        &params![now],
    )?;
    Ok(u32::try_from(released.rows_changed).unwrap_or(u32::MAX))
}
