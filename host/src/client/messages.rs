//! `send`, `inbox`, `read` and `thread`.

use std::io::Read as _;
use std::time::Duration;

use clap::Args;
use serde_json::{Value as Json, json};

use super::relay::{RelayClient, segment};
use super::{Acting, Connection, Exit, Failure, Outcome, emit, parse_duration, parse_object, view};

#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub acting: Acting,
    /// Who gets it: an agent id, `label:L`, `tag:T`, `cap:C`, `broadcast`, `orchestrator:ID`.
    pub to: String,
    /// The message; `-` reads it from standard input.
    pub body: String,
    /// A subject line.
    #[arg(long)]
    pub subject: Option<String>,
    /// Answer this message (the new one joins its thread).
    #[arg(long, value_name = "ID")]
    pub reply_to: Option<i64>,
    /// Let one agent of a group claim it as a job.
    #[arg(long)]
    pub claimable: bool,
    /// A job's priority, 0 to 1000 (default 0): higher is claimed first.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub priority: Option<i64>,
    /// A job that waits for this job to be completed first (repeat it for several, at most
    /// 100); it is dead-lettered if that job is dead-lettered or cancelled. Implies
    /// `--claimable`.
    #[arg(long, value_name = "ID")]
    pub after: Vec<i64>,
    /// A job nobody may claim for this long after it is sent (`90s`, `10m`, `2h`; at most a
    /// year). Implies `--claimable`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "run_at")]
    pub delay: Option<Duration>,
    /// A job nobody may claim before this time, in milliseconds since the Unix epoch (at most a
    /// year ahead; a past time is due now). Implies `--claimable`.
    #[arg(long, value_name = "EPOCH_MS")]
    pub run_at: Option<i64>,
    /// An idempotency key: sending again with the same key returns the first message.
    #[arg(long = "key", value_name = "IDEMPOTENCY_KEY")]
    pub key: Option<String>,
    /// Machine-readable data, a JSON object.
    #[arg(long, value_name = "JSON")]
    pub payload: Option<String>,
    /// The message kind (chat, task, system, ...); inferred when absent.
    #[arg(long)]
    pub kind: Option<String>,
}

#[derive(Debug, Args)]
pub struct InboxArgs {
    #[command(flatten)]
    pub acting: Acting,
    /// Only messages this agent has not marked read.
    #[arg(long)]
    pub unread: bool,
    /// Only messages after this id.
    #[arg(long, value_name = "ID")]
    pub since: Option<i64>,
    /// When nothing matches, wait this long for a message (`30s`, `10m`); exit 5 if none came.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub wait: Option<Duration>,
    /// Only messages of this kind (chat, task, system, pair, channel.event, spawn).
    #[arg(long)]
    pub kind: Option<String>,
    /// Only jobs in this state: open (anyone may claim it), claimed (held under a live lease),
    /// completed, dead (its attempts ran out), cancelled, blocked (waiting for jobs named in
    /// its `after`), scheduled (not claimable before a time). Without it: every message, jobs
    /// completed by others left out.
    #[arg(long, value_parser = ["open", "claimed", "completed", "dead", "cancelled", "blocked", "scheduled"])]
    pub state: Option<String>,
    /// Only messages of this thread.
    #[arg(long, value_name = "ID")]
    pub thread: Option<i64>,
    /// At most this many messages (default 50, at most 500).
    #[arg(long)]
    pub limit: Option<u32>,
}

#[derive(Debug, Args)]
pub struct ReadArgs {
    #[command(flatten)]
    pub acting: Acting,
    /// The messages to mark read.
    #[arg(required = true, value_name = "ID")]
    pub ids: Vec<i64>,
}

#[derive(Debug, Args)]
pub struct ThreadArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// The thread's id (the id of its first message).
    pub id: i64,
}

pub fn send(args: &SendArgs) -> Outcome {
    let body = if args.body == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|error| Failure::usage(format!("reading the body from stdin: {error}")))?;
        text
    } else {
        args.body.clone()
    };
    let payload = args
        .payload
        .as_deref()
        .map(|text| parse_object("--payload", text))
        .transpose()?;
    let relay = RelayClient::connect(&args.acting.connection)?;
    let from = relay.agent(&args.acting)?;
    let mut input = json!({"from": from, "to": args.to, "body": body});
    let optional = [
        ("subject", args.subject.clone().map(Json::from)),
        ("replyTo", args.reply_to.map(Json::from)),
        ("idempotencyKey", args.key.clone().map(Json::from)),
        ("payload", payload),
        ("kind", args.kind.clone().map(Json::from)),
        (
            "claimable",
            (args.claimable
                || !args.after.is_empty()
                || args.delay.is_some()
                || args.run_at.is_some())
            .then_some(Json::Bool(true)),
        ),
        ("priority", args.priority.map(Json::from)),
        (
            "delayMs",
            args.delay
                .map(|delay| Json::from(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))),
        ),
        ("runAt", args.run_at.map(Json::from)),
        ("after", (!args.after.is_empty()).then(|| json!(args.after))),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            input[key] = value;
        }
    }
    let sent = relay.post("/v1/messages", &input)?.body;
    emit(&args.acting.connection, &sent, |sent| {
        let id = &sent["message"]["id"];
        let recipients: Vec<&str> = sent["recipients"]
            .as_array()
            .map(|r| r.iter().filter_map(Json::as_str).collect())
            .unwrap_or_default();
        let to = if recipients.is_empty() {
            "nobody online yet; it waits in their inbox".to_owned()
        } else {
            recipients.join(", ")
        };
        if sent["created"].as_bool() == Some(false) {
            format!("already sent as #{id} (same idempotency key); nothing new was sent")
        } else {
            format!("sent #{id} to {} ({to})", args.to)
        }
    });
    Ok(Exit::Done)
}

pub fn inbox(args: &InboxArgs) -> Outcome {
    let relay = RelayClient::connect(&args.acting.connection)?;
    let agent = relay.agent(&args.acting)?;
    let mut query = Vec::new();
    if args.unread {
        query.push(("unread", "true".to_owned()));
    }
    if let Some(since) = args.since {
        query.push(("since", since.to_string()));
    }
    if let Some(kind) = &args.kind {
        query.push(("kind", kind.clone()));
    }
    if let Some(state) = &args.state {
        query.push(("state", state.clone()));
    }
    if let Some(thread) = args.thread {
        query.push(("threadId", thread.to_string()));
    }
    if let Some(limit) = args.limit {
        query.push(("limit", limit.to_string()));
    }
    let wait = args.wait.unwrap_or_default();
    if args.wait.is_some() {
        query.push(("wait", format!("{:.3}", wait.as_secs_f64())));
    }
    let path = format!("/v1/agents/{}/inbox", segment(&agent));
    let messages = relay.request("GET", &path, &query, None, wait)?.body;
    let empty = messages.as_array().is_none_or(Vec::is_empty);
    emit(&args.acting.connection, &messages, |messages| {
        let empty = match &args.state {
            Some(state) => format!("no {state} jobs for {agent}"),
            None => format!("no messages for {agent}"),
        };
        view::messages(messages, Some(&agent), &empty)
    });
    Ok(if empty && args.wait.is_some() {
        Exit::Nothing
    } else {
        Exit::Done
    })
}

pub fn read(args: &ReadArgs) -> Outcome {
    let relay = RelayClient::connect(&args.acting.connection)?;
    let agent = relay.agent(&args.acting)?;
    let mut read = Vec::new();
    for id in &args.ids {
        let message = relay.post(
            &format!("/v1/messages/{id}/read"),
            &json!({"agentId": agent}),
        )?;
        read.push(message.body);
    }
    emit(&args.acting.connection, &Json::Array(read), |_| {
        let ids: Vec<String> = args.ids.iter().map(|id| format!("#{id}")).collect();
        format!("marked {} read for {agent}", ids.join(", "))
    });
    Ok(Exit::Done)
}

pub fn thread(args: &ThreadArgs) -> Outcome {
    let relay = RelayClient::connect(&args.connection)?;
    let thread = relay.get(&format!("/v1/threads/{}", args.id), &[])?.body;
    // Whose view it is, so the token's own claims read "held by you"; only for people.
    let viewer = if args.connection.json {
        None
    } else {
        relay
            .get("/v1/whoami", &[])
            .ok()
            .and_then(|who| who.body["agent"]["id"].as_str().map(str::to_owned))
    };
    emit(&args.connection, &thread, |thread| {
        thread
            .as_array()
            .into_iter()
            .flatten()
            .map(|message| view::message(message, viewer.as_deref()))
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(Exit::Done)
}
