//! `claim` (by id, or the next job), `renew`, `release`, `complete`, and the dead letters:
//! `dead` and `retry`.

use std::time::Duration;

use clap::Args;
use serde_json::{Value as Json, json};

use super::relay::{Answer, RelayClient, segment};
use super::work;
use super::{
    Acting, Connection, Exit, Failure, Outcome, emit, lease_refused, millis, parse_duration,
    parse_lease, parse_object, view,
};

#[derive(Debug, Args)]
pub struct ClaimArgs {
    #[command(flatten)]
    pub acting: Acting,
    /// The message to claim; without it, the oldest open job in the inbox (exit 5 if none).
    pub id: Option<i64>,
    /// How long the lease lasts (`30s`, `10m`, `1h`; 100ms to 24h unless the relay's
    /// max-lease-ms allows more); the relay's default (5m) when absent. Renew it before it ends,
    /// or the job goes back to the queue.
    #[arg(long, value_name = "DURATION", value_parser = parse_lease)]
    pub lease: Option<Duration>,
    /// Without an id: wait this long for a job when none is available.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "id")]
    pub wait: Option<Duration>,
    /// Without an id: take only a job of this message kind.
    #[arg(long, conflicts_with = "id")]
    pub kind: Option<String>,
    /// Without an id: take only a job sent on this channel.
    #[arg(long, conflicts_with = "id")]
    pub channel: Option<String>,
    /// Without an id: take up to this many open jobs at once (1 to 100), each under its own
    /// lease (claim-next-batch).
    #[arg(long, value_name = "N", conflicts_with_all = ["id", "keep_alive"],
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max: Option<u32>,
    /// Once claimed, stay and renew the lease (at a third of its length) until the job is
    /// completed or released (by `agent-relay complete`/`release` from another shell: exit 0),
    /// cancelled or lost (exit 3), or this process is stopped (the lease then runs out).
    #[arg(long)]
    pub keep_alive: bool,
}

#[derive(Debug, Args)]
pub struct RenewArgs {
    #[command(flatten)]
    pub acting: Acting,
    /// The claimed message.
    pub id: i64,
    /// The new lease, from now (`30s`, `10m`, `1h`; 100ms to 24h unless the relay's
    /// max-lease-ms allows more); the relay's default (5m) when absent.
    #[arg(long, value_name = "DURATION", value_parser = parse_lease)]
    pub lease: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    #[command(flatten)]
    pub acting: Acting,
    /// The claimed message.
    pub id: i64,
    /// When the job may be claimed again, from now (`0s`, `30s`, `10m`; at most 24h); the
    /// relay's retry backoff (its retry-backoff-ms setting, growing per attempt) when absent.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub retry_in: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct CompleteArgs {
    #[command(flatten)]
    pub acting: Acting,
    /// The claimed message.
    pub id: i64,
    /// What came of it, a JSON object kept with the message.
    #[arg(long, value_name = "JSON")]
    pub result: Option<String>,
}

#[derive(Debug, Args)]
pub struct DeadArgs {
    #[command(flatten)]
    pub acting: Acting,
    /// Only dead letters after this message id.
    #[arg(long, value_name = "ID")]
    pub since: Option<i64>,
    /// At most this many (default 50, at most 500).
    #[arg(long)]
    pub limit: Option<u32>,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// The dead letter to put back.
    pub id: i64,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// The job to cancel (one this token's agent sent, or any for the operator).
    pub id: i64,
    /// Why; kept on the job and told to its holder.
    #[arg(long)]
    pub reason: Option<String>,
}

/// What a claim-next asks for (`claim` without an id, `work`).
pub struct Next<'a> {
    pub lease: Option<Duration>,
    pub wait: Option<Duration>,
    pub kind: Option<&'a str>,
    pub channel: Option<&'a str>,
    /// Several at once (claim-next-batch).
    pub max: Option<u32>,
}

impl Next<'_> {
    /// Claims the next job (or up to `max`) for `agent`; `None` when there is none.
    pub fn take(&self, relay: &RelayClient, agent: &str) -> Result<Option<Answer>, Failure> {
        // The agent is the path's; the body carries the lease, the kind and how many.
        let mut input = json!({});
        if let Some(lease) = self.lease {
            input["leaseMs"] = json!(millis(lease));
        }
        if let Some(kind) = self.kind {
            input["kind"] = json!(kind);
        }
        if let Some(channel) = self.channel {
            input["channel"] = json!(channel);
        }
        let query = match self.wait {
            Some(wait) => vec![("wait", format!("{:.3}", wait.as_secs_f64()))],
            None => Vec::new(),
        };
        let route = match self.max {
            Some(max) => {
                input["max"] = json!(max);
                "claim-next-batch"
            }
            None => "claim-next",
        };
        let path = format!("/v1/agents/{}/{route}", segment(agent));
        let answer = relay
            .request(
                "POST",
                &path,
                &query,
                Some(&input),
                self.wait.unwrap_or_default(),
            )
            .map_err(|failure| lease_refused(failure, self.lease))?;
        let none = answer.status == 204 || answer.body.as_array().is_some_and(Vec::is_empty);
        Ok((!none).then_some(answer))
    }

    /// "No open job" for `agent` (exit 5).
    pub fn none_for(&self, agent: &str) -> Failure {
        let of_kind = self
            .kind
            .map(|kind| format!(" of kind {kind}"))
            .unwrap_or_default();
        let on_channel = self
            .channel
            .map(|channel| format!(" on channel {channel}"))
            .unwrap_or_default();
        Failure::new(
            Exit::Nothing,
            format!("no open job{of_kind}{on_channel} to claim for {agent}"),
        )
    }
}

/// The body of a lease call: the agent, and the lease when one was asked for.
fn lease_input(agent: &str, lease: Option<Duration>) -> Json {
    let mut input = json!({"agentId": agent});
    if let Some(lease) = lease {
        input["leaseMs"] = json!(millis(lease));
    }
    input
}

pub fn claim(args: &ClaimArgs) -> Outcome {
    let relay = RelayClient::connect(&args.acting.connection)?;
    let agent = relay.agent(&args.acting)?;
    let answer = match args.id {
        Some(id) => relay
            .post(
                &format!("/v1/messages/{id}/claim"),
                &lease_input(&agent, args.lease),
            )
            .map_err(|failure| lease_refused(failure, args.lease))?,
        None => {
            let next = Next {
                lease: args.lease,
                wait: args.wait,
                kind: args.kind.as_deref(),
                channel: args.channel.as_deref(),
                max: args.max,
            };
            next.take(&relay, &agent)?
                .ok_or_else(|| next.none_for(&agent))?
        }
    };
    if let Some(jobs) = answer.body.as_array() {
        emit(&args.acting.connection, &answer.body, |_| {
            let mut out = format!("claimed {}:\n", jobs.len());
            for job in jobs {
                out.push_str(&view::message(job, Some(&agent)));
            }
            out
        });
        return Ok(Exit::Done);
    }
    emit(&args.acting.connection, &answer.body, |message| {
        format!("claimed:\n{}", view::message(message, Some(&agent)))
    });
    if args.keep_alive {
        return keep_alive(&relay, &agent, &answer.body);
    }
    Ok(Exit::Done)
}

/// Renews a claimed job's lease until it is no longer this agent's: completed or released
/// meanwhile (done), or cancelled or taken by another after its lease ran out (a conflict).
fn keep_alive(relay: &RelayClient, agent: &str, job: &Json) -> Outcome {
    let id = job["id"].as_i64().unwrap_or_default();
    let mut heartbeat = work::Heartbeat::new(relay, agent, job);
    eprintln!("agent-relay: keeping #{id} alive until it is completed or released");
    loop {
        std::thread::sleep(heartbeat.until_due());
        let work::Beat::Lost(failure) = heartbeat.beat()? else {
            continue;
        };
        let now = relay.get(&format!("/v1/messages/{id}"), &[])?.body;
        let settled = now["completedBy"] == json!(agent)
            || (now["claimedBy"].is_null() && now["cancelledAt"].is_null());
        if settled && !work::cancelled(&failure) {
            let how = if now["completedAt"].is_null() {
                "released"
            } else {
                "completed"
            };
            eprintln!("agent-relay: #{id} was {how}: no longer kept alive");
            return Ok(Exit::Done);
        }
        return Err(failure);
    }
}

pub fn renew(args: &RenewArgs) -> Outcome {
    lease_call(&args.acting, args.id, "renew", args.lease, None, "renewed")
}

pub fn release(args: &ReleaseArgs) -> Outcome {
    lease_call(
        &args.acting,
        args.id,
        "release",
        None,
        args.retry_in,
        "released",
    )
}

/// Renew (with a `lease`) or release (with a `retry_in`) a held job.
fn lease_call(
    acting: &Acting,
    id: i64,
    action: &str,
    lease: Option<Duration>,
    retry_in: Option<Duration>,
    done: &str,
) -> Outcome {
    let relay = RelayClient::connect(&acting.connection)?;
    let agent = relay.agent(acting)?;
    let mut input = lease_input(&agent, lease);
    if let Some(retry_in) = retry_in {
        input["retryInMs"] = json!(millis(retry_in));
    }
    let message = relay
        .post(&format!("/v1/messages/{id}/{action}"), &input)
        .map_err(|failure| lease_refused(failure, lease))?
        .body;
    emit(&acting.connection, &message, |message| {
        let state = view::job_state(message, Some(&agent), view::now_ms());
        format!("{done} #{id}: {state}")
    });
    Ok(Exit::Done)
}

pub fn complete(args: &CompleteArgs) -> Outcome {
    let result = args
        .result
        .as_deref()
        .map(|text| parse_object("--result", text))
        .transpose()?;
    let relay = RelayClient::connect(&args.acting.connection)?;
    let agent = relay.agent(&args.acting)?;
    let mut input = json!({"agentId": agent});
    if let Some(result) = result {
        input["result"] = result;
    }
    let message = relay
        .post(&format!("/v1/messages/{}/complete", args.id), &input)?
        .body;
    emit(&args.acting.connection, &message, |message| {
        let state = view::job_state(message, Some(&agent), view::now_ms());
        format!("completed #{}: {state}", args.id)
    });
    Ok(Exit::Done)
}

/// The operator's dead letters (`GET /v1/messages?deadLettered=true`), or, for an agent (its
/// own token, or `--as`), the dead jobs of its inbox (`?state=dead`).
pub fn dead(args: &DeadArgs) -> Outcome {
    let relay = RelayClient::connect(&args.acting.connection)?;
    let operator = args.acting.agent.is_none()
        && relay.get("/v1/whoami", &[])?.body["operator"].as_bool() == Some(true);
    let mut query = Vec::new();
    if let Some(since) = args.since {
        query.push(("since", since.to_string()));
    }
    if let Some(limit) = args.limit {
        query.push(("limit", limit.to_string()));
    }
    let (letters, viewer) = if operator {
        query.push(("deadLettered", "true".to_owned()));
        (relay.get("/v1/messages", &query)?.body, None)
    } else {
        let agent = relay.agent(&args.acting)?;
        query.push(("state", "dead".to_owned()));
        let path = format!("/v1/agents/{}/inbox", segment(&agent));
        (relay.get(&path, &query)?.body, Some(agent))
    };
    emit(&args.acting.connection, &letters, |letters| {
        let empty = match &viewer {
            Some(agent) => format!("no dead jobs for {agent}"),
            None => "no dead letters".to_owned(),
        };
        let mut out = view::messages(letters, viewer.as_deref(), &empty);
        if letters.as_array().is_some_and(|l| !l.is_empty()) {
            out.push_str("(the operator puts one back with `agent-relay retry ID`)\n");
        }
        out
    });
    Ok(Exit::Done)
}

/// The sender or the operator cancels a job (`POST /v1/messages/{id}/cancel`): never offered
/// again; its holder is told to stop, jobs waiting for it are dead-lettered.
pub fn cancel(args: &CancelArgs) -> Outcome {
    let relay = RelayClient::connect(&args.connection)?;
    let mut input = json!({});
    if let Some(reason) = &args.reason {
        input["reason"] = json!(reason);
    }
    let message = relay
        .post(&format!("/v1/messages/{}/cancel", args.id), &input)?
        .body;
    emit(&args.connection, &message, |_| {
        format!(
            "cancelled #{}: never offered again; jobs waiting for it are dead-lettered",
            args.id
        )
    });
    Ok(Exit::Done)
}

/// Operator: puts a dead letter back (`POST /v1/messages/{id}/retry`), open again.
pub fn retry(args: &RetryArgs) -> Outcome {
    let relay = RelayClient::connect(&args.connection)?;
    let path = format!("/v1/messages/{}/retry", args.id);
    let message = relay
        .request("POST", &path, &[], None, Duration::ZERO)?
        .body;
    emit(&args.connection, &message, |message| {
        let state = view::job_state(message, None, view::now_ms());
        format!(
            "retried #{}: {state}, its attempts reset; agents can claim it again",
            args.id
        )
    });
    Ok(Exit::Done)
}
