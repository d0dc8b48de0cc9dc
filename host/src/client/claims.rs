//! `claim` (by id, or the next job), `renew`, `release` and `complete`.

use std::time::Duration;

use clap::Args;
use serde_json::{Value as Json, json};

use super::relay::{RelayClient, segment};
use super::{Acting, Exit, Failure, Outcome, emit, millis, parse_duration, parse_object, view};

#[derive(Debug, Args)]
pub struct ClaimArgs {
    #[command(flatten)]
    pub acting: Acting,
    /// The message to claim; without it, the oldest claimable message in the inbox (exit 5 if none).
    pub id: Option<i64>,
    /// How long the lease lasts (`30s`, `10m`, `1h`); the relay's default when absent.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub lease: Option<Duration>,
    /// Without an id: wait this long for a job when none is available.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "id")]
    pub wait: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct RenewArgs {
    #[command(flatten)]
    pub acting: Acting,
    /// The claimed message.
    pub id: i64,
    /// The new lease, from now (`30s`, `10m`, `1h`); the relay's default when absent.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub lease: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    #[command(flatten)]
    pub acting: Acting,
    /// The claimed message.
    pub id: i64,
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
        Some(id) => relay.post(
            &format!("/v1/messages/{id}/claim"),
            &lease_input(&agent, args.lease),
        )?,
        None => {
            // The agent is the path's; the body carries only the lease.
            let mut input = json!({});
            if let Some(lease) = args.lease {
                input["leaseMs"] = json!(millis(lease));
            }
            let wait = args.wait.unwrap_or_default();
            let query = match args.wait {
                Some(wait) => vec![("wait", format!("{:.3}", wait.as_secs_f64()))],
                None => Vec::new(),
            };
            let path = format!("/v1/agents/{}/claim-next", segment(&agent));
            relay.request("POST", &path, &query, Some(&input), wait)?
        }
    };
    if answer.status == 204 {
        return Err(Failure::new(
            Exit::Nothing,
            format!("nothing to claim for {agent}"),
        ));
    }
    emit(&args.acting.connection, &answer.body, |message| {
        format!("claimed:\n{}", view::message(message))
    });
    Ok(Exit::Done)
}

pub fn renew(args: &RenewArgs) -> Outcome {
    lease_call(&args.acting, args.id, "renew", args.lease, "renewed")
}

pub fn release(args: &ReleaseArgs) -> Outcome {
    lease_call(&args.acting, args.id, "release", None, "released")
}

fn lease_call(
    acting: &Acting,
    id: i64,
    action: &str,
    lease: Option<Duration>,
    done: &str,
) -> Outcome {
    let relay = RelayClient::connect(&acting.connection)?;
    let agent = relay.agent(acting)?;
    let message = relay
        .post(
            &format!("/v1/messages/{id}/{action}"),
            &lease_input(&agent, lease),
        )?
        .body;
    emit(&acting.connection, &message, |message| {
        let state = view::claim_state(message, view::now_ms());
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
    emit(&args.acting.connection, &message, |_| {
        format!("completed #{}", args.id)
    });
    Ok(Exit::Done)
}
