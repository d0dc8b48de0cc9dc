//! Claims: leases on claimable messages (jobs). Exactly one agent holds a live claim; an expired
//! lease makes the message claimable again. The holder finishes a job by completing it, after
//! which it is never claimable again. Every claim taken counts an attempt: when a claim ends
//! without completion and the job has had `max-attempts` of them, it is dead-lettered (its
//! sender is told) until the operator retries it.

use serde_json::json;

use crate::agents;
use crate::auth::{self, Identity};
use crate::bindings::agent_relay::relay::types::{
    AgentCard, AgentKind, Caller, CancelInput, ClaimBatchInput, ClaimInput, ClaimNextInput,
    CompleteInput, JsonText, Message, RelayError, SeenToken, SendMessageInput,
};
use crate::error::{conflict, forbidden, invalid};
use crate::input::{self, MAX_SHORT_TEXT};
use crate::messages;
use crate::{db, dependencies, params, settings, tasks};

/// Jobs claim-next looks at per query; exhausted ones among them are dead-lettered on the way.
const NEXT_BATCH: u32 = 16;

/// Shortest lease a caller may ask for.
const MIN_LEASE_MS: i64 = settings::MIN_LEASE_MS;

fn lease_ms(asked: Option<i64>) -> Result<i64, RelayError> {
    let max = settings::number(settings::MAX_LEASE_MS)?;
    match asked {
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
    let (identity, agent) = agents::acting(
        caller,
        &input.agent_id,
        input.instance_id.as_deref(),
        input.epoch,
    )?;
    let lease = lease_ms(input.lease_ms)?;
    let message = messages::load_for(&agent, id)?;
    // Its sender may read it, but a job is for its recipients (docs/security.md).
    if identity != Identity::Operator && !messages::addressed_to(&message, &agent)? {
        return Err(forbidden(format!(
            "message {id} is a job for {}, which does not reach agent {}; only its recipients \
             or the operator may claim it",
            message.to, agent.id
        )));
    }
    refuse_approval_by(&message, &identity, &agent)?;
    if !message.claimable {
        return Err(conflict(format!("message {id} is not claimable")));
    }
    refuse_settled(&message)?;
    dependencies::refuse_blocked(&message)?;
    let holder = live_holder(&message, now);
    if let Some(holder) = holder.filter(|holder| *holder != agent.id) {
        return Err(conflict(format!(
            "message {id} is already claimed by {holder}"
        )));
    }
    // A holder claiming again under its live lease only extends it; any other claim is new.
    let renewing = holder.is_some();
    let max_attempts = max_attempts()?;
    if !renewing && message.attempts >= max_attempts {
        return Err(conflict(format!(
            "message {id} has had its {max_attempts} attempts; the reaper dead-letters it"
        )));
    }
    if !renewing {
        refuse_not_due(&message, now)?;
    }
    let attempts = message.attempts + u32::from(!renewing);
    // The write re-checks the lease so a claim can never overlap another, whatever ran before.
    let taken = db::execute(
        "UPDATE messages SET claimed_by = ?2, claimed_at = ?3, claim_expires_at = ?4,
             attempts = attempts + ?5, claim_lease_ms = ?6, not_before = ?7
         WHERE id = ?1 AND claimable = 1 AND completed_at IS NULL AND dead_lettered_at IS NULL
           AND (claimed_by IS NULL OR claimed_by = ?2 OR claim_expires_at <= ?3)",
        &params![
            id,
            agent.id.as_str(),
            now,
            now + lease,
            i64::from(!renewing),
            lease,
            after_lease(id, attempts, now + lease)?
        ],
    )?;
    if taken.rows_changed == 0 {
        return Err(conflict(format!("message {id} is already claimed")));
    }
    let claimed = messages::load(id)?;
    tasks::on_message_claimed(&claimed, now)?;
    as_task_left_it(claimed)
}

/// docs/security.md: an approval is a human's to answer: only the operator and `user`-kind
/// agents claim or complete one.
fn refuse_approval_by(
    message: &Message,
    identity: &Identity,
    agent: &AgentCard,
) -> Result<(), RelayError> {
    if message.kind == messages::APPROVAL
        && *identity != Identity::Operator
        && agent.kind != AgentKind::User
    {
        return Err(forbidden(format!(
            "message {} is an approval for a human; only the operator or a user-kind agent may \
             answer it, not agent {}",
            message.id, agent.id
        )));
    }
    Ok(())
}

/// The message as its task hook left it (read again only when it names a task).
fn as_task_left_it(message: Message) -> Result<Message, RelayError> {
    if tasks::names_task(&message) {
        messages::load(message.id)
    } else {
        Ok(message)
    }
}

/// PostgreSQL: a holder's call on one job (renew, release, complete) runs at READ COMMITTED with
/// the job's row locked first, so every check after it reads the row as it is now, and two
/// holders' calls on different jobs never abort each other (under SERIALIZABLE, completing
/// neighbouring jobs side by side conflicted on the read-receipt index and ran out of re-runs).
/// SQLite: nothing to do, its writers are serial.
fn lock_the_job(id: i64) -> Result<(), RelayError> {
    if db::is_postgres() {
        db::lock_rows_instead()?;
        db::query(
            "SELECT id FROM messages WHERE id = ? FOR UPDATE",
            &params![id],
        )?;
    }
    Ok(())
}

pub fn renew(
    caller: &Caller,
    id: i64,
    input: &ClaimInput,
    now: i64,
) -> Result<Message, RelayError> {
    lock_the_job(id)?;
    let (_, agent) = agents::acting(
        caller,
        &input.agent_id,
        input.instance_id.as_deref(),
        input.epoch,
    )?;
    let lease = lease_ms(input.lease_ms)?;
    let message = messages::load_for(&agent, id)?;
    refuse_cancelled(&message)?;
    require_holder(&message, &agent.id, now)?;
    db::execute(
        "UPDATE messages SET claim_expires_at = ?2, claim_lease_ms = ?3, not_before = ?4
         WHERE id = ?1",
        &params![
            id,
            now + lease,
            lease,
            after_lease(id, message.attempts, now + lease)?
        ],
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
    lock_the_job(id)?;
    let (_, agent) = agents::acting(
        caller,
        &input.agent_id,
        input.instance_id.as_deref(),
        input.epoch,
    )?;
    let message = messages::load_for(&agent, id)?;
    refuse_cancelled(&message)?;
    require_holder(&message, &agent.id, now)?;
    let backoff = match input.retry_in_ms {
        Some(ms) => retry_in_ms(ms)?,
        None => retry_backoff_ms(id, message.attempts)?,
    };
    let not_before = now + backoff;
    db::execute(
        "UPDATE messages SET claimed_by = NULL, claimed_at = NULL, claim_expires_at = NULL,
             not_before = ?2
         WHERE id = ?1",
        &params![id, not_before],
    )?;
    // Given back, it asks nothing more of the one who released it (issue 27: finished work
    // stops asking); the other recipients still find it unread.
    messages::record_read(id, &agent.id, now)?;
    let released = messages::load(id)?;
    tasks::on_claim_released(&released, &agent.id, now)?;
    if released.attempts >= max_attempts()? {
        dead_letter(&released, "released", now)?;
        return messages::load(id);
    }
    as_task_left_it(released)
}

/// Leases follow their holder (docs/http-api.md §2, "Leases that follow the holder"): for each
/// agent token that made calls (the latest at `at`, as the host noted it), every live claim
/// of that agent whose lease is more than half gone at `at` is extended to `at` plus its lease
/// length: the one it was last claimed or renewed with, or the `default-lease-ms` setting for a
/// claim taken before the relay kept it. An agent that makes no calls (a crashed session)
/// extends nothing: its claims run out and the reaper hands them on. Answers the claims
/// extended.
pub fn keep_held(seen: &[SeenToken]) -> Result<u32, RelayError> {
    let default_lease = settings::number(settings::DEFAULT_LEASE_MS)?
        .min(settings::number(settings::MAX_LEASE_MS)?);
    let mut kept = 0u32;
    for token in seen {
        let due = db::query(
            "SELECT m.id, m.attempts, COALESCE(m.claim_lease_ms, ?3) AS lease
             FROM messages m JOIN agents a ON a.id = m.claimed_by
             WHERE a.token_hash = ?1 AND m.claim_expires_at > ?2
               AND 2 * (m.claim_expires_at - ?2) < COALESCE(m.claim_lease_ms, ?3)
               AND m.completed_at IS NULL AND m.dead_lettered_at IS NULL",
            &params![auth::token_hash(&token.token), token.at, default_lease],
        )?;
        for row in &due {
            let id = row.int("id")?;
            let expires = token.at + row.int("lease")?;
            let attempts = u32::try_from(row.int("attempts")?).unwrap_or(u32::MAX);
            db::execute(
                "UPDATE messages SET claim_expires_at = ?2, not_before = ?3 WHERE id = ?1",
                &params![id, expires, after_lease(id, attempts, expires)?],
            )?;
            tasks::on_claim_renewed(&messages::load(id)?, token.at)?;
            kept = kept.saturating_add(1);
        }
    }
    Ok(kept)
}

fn require_holder(message: &Message, agent_id: &str, now: i64) -> Result<(), RelayError> {
    match live_holder(message, now) {
        Some(holder) if holder == agent_id => Ok(()),
        Some(holder) => Err(conflict(format!(
            "message {} is claimed by {holder}, not {agent_id}",
            message.id
        ))),
        // A lease that ran out but the reaper has not yet ended still names its holder.
        None => Err(conflict(match message.claimed_by.as_deref() {
            Some(expired) if expired == agent_id => format!(
                "the lease of agent {agent_id} on message {} expired and was released; claim it \
                 again",
                message.id
            ),
            Some(expired) => format!(
                "the lease of agent {expired} on message {} expired; nobody holds it now: claim \
                 it first",
                message.id
            ),
            None => format!("nobody holds message {}: claim it first", message.id),
        })),
    }
}

/// Releases every live claim the agent holds (it is being deleted), as its own release would:
/// their tasks reopen, and a job that has had its attempts is dead-lettered.
pub fn release_all_of(agent_id: &str, now: i64) -> Result<u32, RelayError> {
    tasks::release_held_by(agent_id, now)?;
    let exhausted = db::query(
        "SELECT id FROM messages WHERE claimed_by = ? AND claim_expires_at > ? AND attempts >= ?",
        &params![agent_id, now, i64::from(max_attempts()?)],
    )?;
    for row in &exhausted {
        dead_letter(&messages::load(row.int("id")?)?, "holder deleted", now)?;
    }
    let released = db::execute(
        // Handed on at once: the holder was deleted, the job did not fail (no backoff).
        "UPDATE messages SET claimed_by = NULL, claimed_at = NULL, claim_expires_at = NULL,
             not_before = NULL
         WHERE claimed_by = ? AND claim_expires_at > ?",
        &params![agent_id, now],
    )?;
    Ok(u32::try_from(released.rows_changed)
        .unwrap_or(u32::MAX)
        .saturating_add(u32::try_from(exhausted.len()).unwrap_or(u32::MAX)))
}

/// The reaper's part: claims whose lease has run out end. A job that has had its attempts is
/// dead-lettered; the others read as unclaimed again. Their tasks reopen too.
/// Returns (claims released, jobs dead-lettered).
pub fn release_expired(now: i64) -> Result<(u32, u32), RelayError> {
    tasks::release_expired(now)?;
    let exhausted = db::query(
        "SELECT id FROM messages
         WHERE claimed_by IS NOT NULL AND claim_expires_at <= ? AND attempts >= ?",
        &params![now, i64::from(max_attempts()?)],
    )?;
    for row in &exhausted {
        dead_letter(&messages::load(row.int("id")?)?, "lease expired", now)?;
    }
    let released = db::execute(
        "UPDATE messages SET claimed_by = NULL, claimed_at = NULL, claim_expires_at = NULL
         WHERE claimed_by IS NOT NULL AND claim_expires_at <= ?",
        &params![now],
    )?;
    Ok((
        u32::try_from(released.rows_changed).unwrap_or(u32::MAX),
        u32::try_from(exhausted.len()).unwrap_or(u32::MAX),
    ))
}

/// A job is not claimed before its `not_before`: the time it was sent for (`runAt`,
/// `delayMs`), or the end of its retry backoff after a release or an expired lease.
fn refuse_not_due(message: &Message, now: i64) -> Result<(), RelayError> {
    if let Some(at) = message.not_before
        && at > now
    {
        return Err(conflict(format!(
            "message {} is not claimable before {at} (its notBefore: the runAt or delayMs it \
             was sent with, or its retry backoff after a release or an expired lease)",
            message.id
        )));
    }
    Ok(())
}

/// The longest wait a release may ask for before the job's next attempt (`retryInMs`): a day.
pub const MAX_RETRY_IN_MS: i64 = 86_400_000;

/// A release's own `retryInMs`: 0 to [`MAX_RETRY_IN_MS`], or a 400 naming the field.
fn retry_in_ms(ms: i64) -> Result<i64, RelayError> {
    if (0..=MAX_RETRY_IN_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err(invalid(format!(
            "retryInMs {ms} must be between 0 and {MAX_RETRY_IN_MS} (a day)"
        )))
    }
}

/// When a job whose lease ends at `expires` (after `attempts` claims) may be claimed again if
/// its holder lets the lease run out: the end of the lease plus the retry backoff, as for a
/// release. Kept in `not_before` while the lease lives, so an expired lease needs no write
/// before the backoff applies (a release, renewal or completion sets or ends it).
fn after_lease(id: i64, attempts: u32, expires: i64) -> Result<i64, RelayError> {
    Ok(expires + retry_backoff_ms(id, attempts)?)
}

/// How long a job released after `attempts` claims waits before its next one may be taken:
/// the `retry-backoff-ms` base doubled per attempt after the first, capped at 64 times the base,
/// plus a jitter of up to a quarter of that, derived from the job's id and attempt (time is an
/// input and the guest has no randomness of its own), so jobs released together spread out.
pub fn retry_backoff_ms(id: i64, attempts: u32) -> Result<i64, RelayError> {
    let base = settings::number(settings::RETRY_BACKOFF_MS)?;
    if base <= 0 {
        return Ok(0);
    }
    let delay = base.saturating_mul(1 << attempts.saturating_sub(1).min(6));
    let mut mix = (id as u64) ^ (u64::from(attempts) << 32);
    mix = (mix ^ (mix >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    mix ^= mix >> 33;
    let jitter = i64::try_from(mix % (u64::try_from(delay / 4).unwrap_or(0) + 1)).unwrap_or(0);
    Ok(delay + jitter)
}

fn max_attempts() -> Result<u32, RelayError> {
    Ok(u32::try_from(settings::number(settings::MAX_ATTEMPTS)?).unwrap_or(u32::MAX))
}

/// A cancelled job: 409 with code `cancelled`, so its holder stops working on it.
fn refuse_cancelled(message: &Message) -> Result<(), RelayError> {
    if message.cancelled_at.is_none() {
        return Ok(());
    }
    let by = message.cancelled_by.as_deref().unwrap_or("its sender");
    let reason = message
        .cancel_reason
        .as_deref()
        .map(|reason| format!(": {reason}"))
        .unwrap_or_default();
    Err(RelayError::Cancelled(format!(
        "message {} was cancelled by {by}{reason}; stop working on it",
        message.id
    )))
}

/// A completed, dead-lettered or cancelled job is not claimable (a 409 that says which).
fn refuse_settled(message: &Message) -> Result<(), RelayError> {
    refuse_cancelled(message)?;
    let id = message.id;
    if message.completed_at.is_some() {
        let by = message
            .completed_by
            .as_deref()
            .map(|by| format!(" by {by}"))
            .unwrap_or_default();
        return Err(conflict(format!("message {id} is already completed{by}")));
    }
    if message.dead_lettered_at.is_some() {
        return Err(conflict(format!(
            "message {id} is dead-lettered after {} attempts; the operator may retry it",
            message.attempts
        )));
    }
    Ok(())
}

/// The live holder finishes the job: the claim ends, `completedBy`, `completedAt` and `result`
/// are recorded, and its task (if it is one's current message) is resolved. Completing again
/// as the one who completed it answers the message as it is.
pub fn complete(
    caller: &Caller,
    id: i64,
    input: &CompleteInput,
    now: i64,
) -> Result<Message, RelayError> {
    lock_the_job(id)?;
    let (identity, agent) = agents::acting(
        caller,
        &input.agent_id,
        input.instance_id.as_deref(),
        input.epoch,
    )?;
    let result = input::json_object("result", input.result.as_ref())?;
    let message = messages::load_for(&agent, id)?;
    refuse_approval_by(&message, &identity, &agent)?;
    if message.completed_at.is_some() && message.completed_by.as_deref() == Some(&agent.id) {
        return Ok(message);
    }
    refuse_settled(&message)?;
    // Fencing: a holder whose lease ran out (and perhaps went to another) cannot complete.
    require_holder(&message, &agent.id, now)?;
    db::execute(
        "UPDATE messages SET completed_by = ?2, completed_at = ?3, result = ?4,
             claimed_by = NULL, claimed_at = NULL, claim_expires_at = NULL
         WHERE id = ?1",
        &params![id, agent.id.as_str(), now, input::to_json_text(&result)],
    )?;
    // Done, it asks nothing more of the one who completed it: read for it.
    messages::record_read(id, &agent.id, now)?;
    let completed = messages::load(id)?;
    tasks::on_message_completed(&completed, &agent.id, now)?;
    as_task_left_it(completed)
}

/// Claims the oldest available job in the agent's inbox (see `messages::available_jobs`), in
/// the one transaction of the call, so two callers never get the same one. Exhausted jobs met on
/// the way (an expired last attempt) are dead-lettered and skipped. `None` when there is none.
///
/// On PostgreSQL the call runs at READ COMMITTED and locks the job it takes (`FOR UPDATE SKIP
/// LOCKED`, one row at a time): workers claiming side by side skip each other's rows instead of
/// aborting each other's serializable transactions, and a row someone else claimed since our
/// snapshot is re-checked when locked, so it is never taken twice (docs/architecture.md, "Two
/// dialects").
pub fn claim_next(
    caller: &Caller,
    agent_id: &str,
    input: &ClaimNextInput,
    now: i64,
) -> Result<Option<Message>, RelayError> {
    let wanted = Wanted {
        max: 1,
        instance_id: input.instance_id.as_deref(),
        epoch: input.epoch,
        lease_ms: input.lease_ms,
        kind: input.kind.as_deref(),
        channel: input.channel.as_deref(),
    };
    Ok(claim_jobs(caller, agent_id, &wanted, now)?.pop())
}

/// The most jobs one `claim-next-batch` call takes.
pub const MAX_BATCH: u32 = 100;

/// Claim-next for up to `max` jobs (1 to [`MAX_BATCH`], else a 400 naming `max`), in the same
/// order and in the one transaction, each under its own lease.
pub fn claim_next_batch(
    caller: &Caller,
    agent_id: &str,
    input: &ClaimBatchInput,
    now: i64,
) -> Result<Vec<Message>, RelayError> {
    let wanted = Wanted {
        max: input.max,
        instance_id: input.instance_id.as_deref(),
        epoch: input.epoch,
        lease_ms: input.lease_ms,
        kind: input.kind.as_deref(),
        channel: input.channel.as_deref(),
    };
    claim_jobs(caller, agent_id, &wanted, now)
}

/// What a claim-next asks for.
struct Wanted<'a> {
    max: u32,
    instance_id: Option<&'a str>,
    epoch: Option<i64>,
    lease_ms: Option<i64>,
    kind: Option<&'a str>,
    channel: Option<&'a str>,
}

/// Takes up to `wanted.max` available jobs for the agent, highest priority first, then oldest.
fn claim_jobs(
    caller: &Caller,
    agent_id: &str,
    wanted: &Wanted,
    now: i64,
) -> Result<Vec<Message>, RelayError> {
    if db::is_postgres() {
        db::lock_rows_instead()?;
    }
    let (_, agent) = agents::acting(caller, agent_id, wanted.instance_id, wanted.epoch)?;
    if !(1..=MAX_BATCH).contains(&wanted.max) {
        return Err(invalid(format!(
            "max {} must be between 1 and {MAX_BATCH}",
            wanted.max
        )));
    }
    let lease = lease_ms(wanted.lease_ms)?;
    let kind = wanted.kind.map(|k| input::id("kind", k)).transpose()?;
    let channel = wanted
        .channel
        .map(|c| input::id("channel", c))
        .transpose()?;
    let max_attempts = max_attempts()?;
    let mut wrote = false;
    let mut taken = Vec::new();
    'finding: loop {
        // On PostgreSQL the jobs found are locked until the call ends: one at a time, so the
        // call holds none it does not take.
        let batch = if db::is_postgres() {
            1
        } else {
            NEXT_BATCH.max(wanted.max)
        };
        let jobs = messages::available_jobs(&agent, kind, channel, now, batch)?;
        if jobs.is_empty() {
            if !wrote {
                // Nothing written: a held claim-next waits for messages to its targets (a write
                // names no wake key, and wakes everyone, when it dead-lettered or claimed)...
                for target in agents::targets_reaching(&agent)? {
                    db::concerns(&target);
                }
                // ...and for the first job it could take to become due.
                if let Some(due) = messages::next_due(&agent, kind, channel, now)? {
                    db::due_at(due);
                }
            }
            return Ok(taken);
        }
        for job in jobs {
            wrote = true;
            if job.attempts >= max_attempts {
                dead_letter(&messages::load(job.id)?, "lease expired", now)?;
                continue;
            }
            db::execute(
                "UPDATE messages SET claimed_by = ?2, claimed_at = ?3, claim_expires_at = ?4,
                     attempts = attempts + 1, claim_lease_ms = ?5, not_before = ?6
                 WHERE id = ?1",
                &params![
                    job.id,
                    agent.id.as_str(),
                    now,
                    now + lease,
                    lease,
                    after_lease(job.id, job.attempts + 1, now + lease)?
                ],
            )?;
            let claimed = messages::load(job.id)?;
            tasks::on_message_claimed(&claimed, now)?;
            taken.push(as_task_left_it(claimed)?);
            if taken.len() >= wanted.max as usize {
                break 'finding Ok(taken);
            }
        }
    }
}

/// Parks a job whose claims ran out (or a job it waits for failed): never claimable again until
/// retried; its sender gets a `system` message saying so (when the sender is still registered),
/// and the jobs waiting for it are dead-lettered in turn.
fn dead_letter(message: &Message, reason: &str, now: i64) -> Result<(), RelayError> {
    db::execute(
        "UPDATE messages SET dead_lettered_at = ?2,
             claimed_by = NULL, claimed_at = NULL, claim_expires_at = NULL
         WHERE id = ?1",
        &params![message.id, now],
    )?;
    tasks::on_dead_lettered(message, "dead-lettered", now)?;
    // Its sender is told while it is registered; an agent registered again under its id since
    // (the job is at or below the id's history floor) did not send it and is not told.
    if agents::load(&message.from)?.is_some() && message.id > agents::history_floor(&message.from)?
    {
        tell(
            &message.from,
            message.id,
            format!("dead letter: message {}", message.id),
            format!(
                "message {} to {} was dead-lettered {} ({reason}); the operator may retry it",
                message.id,
                message.to,
                match message.attempts {
                    0 => "before any attempt".to_owned(),
                    1 => "after 1 attempt".to_owned(),
                    n => format!("after {n} attempts"),
                }
            ),
            json!({"messageId": message.id, "attempts": message.attempts, "reason": reason}),
            now,
        )?;
    }
    fail_dependants(message.id, "dead-lettered", now)
}

/// The jobs waiting for job `id`, which was dead-lettered or cancelled (`how`), can never run:
/// each is dead-lettered with a reason naming it (docs/http-api.md §2, "Jobs that wait for
/// others").
fn fail_dependants(id: i64, how: &str, now: i64) -> Result<(), RelayError> {
    for waiting in dependencies::waiting_for(id)? {
        dead_letter(
            &messages::load(waiting)?,
            &format!("job {id} it waits for was {how}"),
            now,
        )?;
    }
    Ok(())
}

/// A `system` message from the relay to an agent about job `job` (a reply to it).
fn tell(
    to: &str,
    job: i64,
    subject: String,
    body: String,
    payload: serde_json::Value,
    now: i64,
) -> Result<(), RelayError> {
    messages::deliver(
        &Caller::Operator,
        SendMessageInput {
            from: agents::SYSTEM.to_owned(),
            to: to.to_owned(),
            kind: Some("system".to_owned()),
            channel: None,
            subject: Some(subject),
            body,
            reply_to: Some(job),
            claimable: None,
            priority: None,
            after: None,
            run_at: None,
            delay_ms: None,
            idempotency_key: None,
            payload: Some(JsonText {
                json: payload.to_string(),
            }),
            meta: None,
        },
        now,
    )?;
    Ok(())
}

/// The sender or the operator cancels an open or claimed job (docs/http-api.md §2, "Cancelling
/// a job"): it is never offered again, its live holder is told (and its renew or complete
/// answers 409 `cancelled`), and the jobs waiting for it are dead-lettered. Cancelling a
/// cancelled job answers it as it is; a completed or dead-lettered one is 409.
pub fn cancel(
    caller: &Caller,
    id: i64,
    input: &CancelInput,
    now: i64,
) -> Result<Message, RelayError> {
    lock_the_job(id)?;
    let identity = auth::identify(caller)?;
    let reason = input
        .reason
        .as_deref()
        .map(|reason| input::text("reason", reason, MAX_SHORT_TEXT))
        .transpose()?;
    let message = messages::load(id)?;
    let canceller = match &identity {
        Identity::Operator => "operator".to_owned(),
        Identity::Agent(agent) if *agent == message.from && id > agents::history_floor(agent)? => {
            agent.clone()
        }
        Identity::Agent(agent) => {
            return Err(forbidden(format!(
                "message {id} was sent by {}, not {agent}; only its sender or the operator may \
                 cancel it",
                message.from
            )));
        }
    };
    if !message.claimable {
        return Err(invalid(format!(
            "message {id} is not a job (claimable); only a job can be cancelled"
        )));
    }
    if message.cancelled_at.is_some() {
        return Ok(message);
    }
    refuse_settled(&message)?;
    let holder = live_holder(&message, now).map(str::to_owned);
    db::execute(
        "UPDATE messages SET cancelled_at = ?2, cancelled_by = ?3, cancel_reason = ?4,
             claimed_by = NULL, claimed_at = NULL, claim_expires_at = NULL
         WHERE id = ?1",
        &params![id, now, canceller.as_str(), reason],
    )?;
    tasks::on_dead_lettered(&message, "cancelled", now)?;
    if let Some(holder) = holder {
        let because = reason.map(|r| format!(": {r}")).unwrap_or_default();
        tell(
            &holder,
            id,
            format!("cancelled: message {id}"),
            format!(
                "message {id}, which you hold, was cancelled by {canceller}{because}; stop working on it"
            ),
            json!({"messageId": id, "cancelledBy": canceller, "reason": reason}),
            now,
        )?;
    }
    fail_dependants(id, "cancelled", now)?;
    messages::load(id)
}

/// The operator puts a dead letter back: claimable again, its attempts counted from zero.
pub fn retry(caller: &Caller, id: i64) -> Result<Message, RelayError> {
    auth::require_operator(caller)?;
    let message = messages::load(id)?;
    if message.completed_at.is_some() {
        return Err(conflict(format!(
            "message {id} is completed; there is nothing to retry"
        )));
    }
    if message.dead_lettered_at.is_none() {
        return Err(conflict(format!("message {id} is not dead-lettered")));
    }
    dependencies::refuse_failed_wait(&message)?;
    db::execute(
        "UPDATE messages SET dead_lettered_at = NULL, attempts = 0, not_before = NULL WHERE id = ?",
        &params![id],
    )?;
    messages::load(id)
}
