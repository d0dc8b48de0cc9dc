//! Jobs that wait for other jobs (docs/http-api.md §2, "Jobs that wait for others"): a job sent
//! with `after: [id, ...]` is claimable only once every job it names is completed (its
//! `blockedBy` lists those still open). When one of them is dead-lettered or cancelled, the jobs
//! waiting for it are dead-lettered too (`claims::fail_dependants`). A job names only jobs that
//! exist when it is sent, so waits cannot form a cycle; naming the job itself is refused as one.

use crate::auth::Identity;
use crate::bindings::agent_relay::relay::types::{
    Caller, Message, RelayError, SendMessageInput, SentMessage,
};
use crate::error::{conflict, invalid};
use crate::{db, messages, params};

/// The most jobs one job may wait for.
pub const MAX_AFTER: usize = 100;

/// Sends a message (`messages::send`); a job with `after` waits for the jobs it names. The
/// message is stored first and the names checked against it: a bad name fails the call, whose
/// transaction then keeps nothing of it.
pub fn send(
    caller: &Caller,
    mut input: SendMessageInput,
    now: i64,
) -> Result<SentMessage, RelayError> {
    let Some(after) = input.after.take() else {
        return messages::send(caller, input, now);
    };
    let after = parse(after)?;
    if !after.is_empty() && input.claimable != Some(true) {
        return Err(invalid(
            "after: only a job (claimable: true) waits for other jobs",
        ));
    }
    let mut sent = messages::send(caller, input, now)?;
    if after.is_empty() || !sent.created {
        return Ok(sent);
    }
    let job = &sent.message;
    if !job.claimable {
        return Err(invalid(format!(
            "after: a {} message to {} is not stored as a job, so it cannot wait for others",
            job.kind, job.to
        )));
    }
    let sender = Identity::Agent(job.from.clone());
    for &id in &after {
        check_dependency(job, &sender, id)?;
        db::execute(
            "INSERT INTO job_dependencies (message_id, depends_on) VALUES (?, ?)",
            &params![job.id, id],
        )?;
    }
    sent.message = messages::load(job.id)?;
    Ok(sent)
}

/// `after` as given: at most `MAX_AFTER` positive ids, duplicates dropped, in id order.
fn parse(mut after: Vec<i64>) -> Result<Vec<i64>, RelayError> {
    if after.len() > MAX_AFTER {
        return Err(invalid(format!(
            "after names {} jobs; at most {MAX_AFTER}",
            after.len()
        )));
    }
    if let Some(bad) = after.iter().find(|id| **id <= 0) {
        return Err(invalid(format!("after: {bad} is not a message id")));
    }
    after.sort_unstable();
    after.dedup();
    Ok(after)
}

/// A job `job` may wait for: an existing job its sender may see, not the job itself, neither
/// dead-lettered nor cancelled (nothing waiting for it could ever run).
fn check_dependency(job: &Message, sender: &Identity, id: i64) -> Result<(), RelayError> {
    if id == job.id {
        return Err(invalid(format!(
            "after: message {id} is this job itself; a job cannot wait for itself (a cycle)"
        )));
    }
    let unknown = || {
        invalid(format!(
            "after: there is no message {id} that {} may see",
            job.from
        ))
    };
    // PostgreSQL: the named job's row is share-locked until the send commits, so a cancel or
    // dead letter of it running side by side (which locks or updates that row) either waits
    // and then finds this job among those waiting for it, or made the send re-run and refuse.
    if db::is_postgres() {
        db::query(
            "SELECT id FROM messages WHERE id = ? FOR SHARE",
            &params![id],
        )?;
    }
    let dependency = match messages::load(id) {
        Ok(dependency) => dependency,
        Err(RelayError::NotFound(_)) => return Err(unknown()),
        Err(other) => return Err(other),
    };
    if !messages::visible_to(sender, &dependency)? {
        return Err(unknown());
    }
    if !dependency.claimable {
        return Err(invalid(format!(
            "after: message {id} is not a job (claimable); only jobs can be waited for"
        )));
    }
    if let Some(failed) = failure(&dependency) {
        return Err(conflict(format!(
            "after: job {id} is {failed}; a job waiting for it would never run"
        )));
    }
    Ok(())
}

/// How a job failed for those waiting for it: `cancelled`, `dead-lettered`, or `None`.
fn failure(job: &Message) -> Option<&'static str> {
    if job.cancelled_at.is_some() {
        Some("cancelled")
    } else if job.dead_lettered_at.is_some() && job.completed_at.is_none() {
        Some("dead-lettered")
    } else {
        None
    }
}

/// The unsettled jobs waiting for job `id` (not completed, dead-lettered or cancelled), oldest
/// first.
pub fn waiting_for(id: i64) -> Result<Vec<i64>, RelayError> {
    db::query(
        "SELECT d.message_id FROM job_dependencies d JOIN messages m ON m.id = d.message_id
         WHERE d.depends_on = ? AND m.completed_at IS NULL AND m.dead_lettered_at IS NULL
           AND m.cancelled_at IS NULL
         ORDER BY d.message_id",
        &params![id],
    )?
    .iter()
    .map(|row| row.int("message_id"))
    .collect()
}

/// A job waiting for jobs not completed yet is not claimable (a 409 naming them).
pub fn refuse_blocked(job: &Message) -> Result<(), RelayError> {
    if job.blocked_by.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = job.blocked_by.iter().map(i64::to_string).collect();
    Err(conflict(format!(
        "message {} waits for jobs {} (blockedBy); it is claimable once they are completed",
        job.id,
        ids.join(", ")
    )))
}

/// A dead letter whose wait failed goes back only once the job it waits for is open again (a
/// dead letter retried): a 409 naming a job it waits for that is dead-lettered or cancelled.
pub fn refuse_failed_wait(job: &Message) -> Result<(), RelayError> {
    for &id in &job.blocked_by {
        if let Some(failed) = failure(&messages::load(id)?) {
            return Err(conflict(format!(
                "message {} waits for job {id}, which is {failed}; it could never run",
                job.id
            )));
        }
    }
    Ok(())
}
