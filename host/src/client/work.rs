//! `work -- COMMAND`: take the next job, run a command on it while its lease is renewed, and
//! settle the job by how the command ended (docs/agents.md, "Running a command per job"); and
//! the lease heartbeat `claim --keep-alive` shares.

use std::io::Read as _;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value as Json, json};

use super::claims::Next;
use super::relay::{Answer, RelayClient};
use super::{Acting, Exit, Failure, Outcome, millis, parse_duration, parse_lease, view};

/// The most of a command's standard output kept as the job's result.
pub const MAX_OUTPUT: usize = 64 * 1024;

#[derive(Debug, Args)]
pub struct WorkArgs {
    #[command(flatten)]
    pub acting: Acting,
    /// How long each lease lasts (`30s`, `10m`); renewed at a third of it while the command
    /// runs. The relay's default (5m) when absent.
    #[arg(long, value_name = "DURATION", value_parser = parse_lease)]
    pub lease: Option<Duration>,
    /// Wait this long for a job when none is open (exit 5 if none came).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub wait: Option<Duration>,
    /// Take only a job of this message kind.
    #[arg(long)]
    pub kind: Option<String>,
    /// Take only a job sent on this channel.
    #[arg(long)]
    pub channel: Option<String>,
    /// After a failed run, when the job may be claimed again (`0s`, `30s`; at most 24h); the
    /// relay's retry backoff when absent.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub retry_in: Option<Duration>,
    /// Keep taking jobs, one after another, until none is open (with `--wait`: none came in
    /// that time); exit 0 then if any job was done, 5 if there was none at all. A failed
    /// command does not end the loop.
    #[arg(long = "loop")]
    pub keep_going: bool,
    /// The command and its arguments, after `--`. Exit 0 when it succeeded (the job is
    /// completed with `{"exitCode": 0, "output": ...}`, its standard output cut to fit the
    /// relay's 64 KiB result, with `truncated` and `outputBytes` then), 1
    /// when it failed (the job is released for another attempt), 3 when the job was cancelled
    /// or lost while it ran (the command is stopped with SIGTERM), 5 when there was no job.
    /// It gets the job in its environment:
    /// RELAY_JOB_ID, RELAY_JOB_BODY, RELAY_JOB_SUBJECT, RELAY_JOB_FROM, RELAY_JOB_KIND,
    /// RELAY_JOB_ATTEMPT and RELAY_JOB_JSON (the whole message); its standard input is empty.
    #[arg(required = true, last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Renews one held job's lease, at a third of its length.
pub struct Heartbeat<'a> {
    relay: &'a RelayClient,
    agent: String,
    id: i64,
    lease: Duration,
    next: Instant,
}

/// How a renewal went.
pub enum Beat {
    /// Still held (or not due yet).
    Held,
    /// The job is no longer this agent's: cancelled, completed, released or taken after the
    /// lease ran out. The relay's words.
    Lost(Failure),
}

impl<'a> Heartbeat<'a> {
    /// The heartbeat of a job just claimed (`message` as the claim answered it).
    pub fn new(relay: &'a RelayClient, agent: &str, message: &Json) -> Self {
        let claimed = message["claimedAt"].as_i64().unwrap_or_default();
        let expires = message["claimExpiresAt"].as_i64().unwrap_or(claimed);
        let lease = Duration::from_millis(u64::try_from(expires - claimed).unwrap_or(0))
            .max(Duration::from_millis(300));
        Self {
            relay,
            agent: agent.to_owned(),
            id: message["id"].as_i64().unwrap_or_default(),
            lease,
            next: Instant::now() + lease / 3,
        }
    }

    /// How long until the next renewal is due.
    pub fn until_due(&self) -> Duration {
        self.next.saturating_duration_since(Instant::now())
    }

    /// Renews the lease when a third of it has passed since the last renewal.
    pub fn beat(&mut self) -> Result<Beat, Failure> {
        if Instant::now() < self.next {
            return Ok(Beat::Held);
        }
        let input = json!({"agentId": self.agent, "leaseMs": millis(self.lease)});
        match self
            .relay
            .post(&format!("/v1/messages/{}/renew", self.id), &input)
        {
            Ok(_) => {
                self.next = Instant::now() + self.lease / 3;
                Ok(Beat::Held)
            }
            Err(failure) if failure.exit == Exit::Conflict || failure.exit == Exit::NotFound => {
                Ok(Beat::Lost(failure))
            }
            // The relay unreachable for a moment: try again soon, the lease has two thirds left.
            Err(failure) => {
                eprintln!("agent-relay: renewing #{}: {}", self.id, failure.message);
                self.next = Instant::now() + Duration::from_secs(1).min(self.lease / 6);
                Ok(Beat::Held)
            }
        }
    }
}

/// Whether a renewal's refusal says the job was cancelled (the worker must stop).
pub fn cancelled(failure: &Failure) -> bool {
    failure
        .body
        .as_ref()
        .is_some_and(|body| body["error"]["code"] == "cancelled")
}

pub fn work(args: &WorkArgs) -> Outcome {
    let relay = RelayClient::connect(&args.acting.connection)?;
    let agent = relay.agent(&args.acting)?;
    let mut done = 0_u32;
    let mut stopping = None;
    let next = Next {
        lease: args.lease,
        wait: args.wait,
        kind: args.kind.as_deref(),
        channel: args.channel.as_deref(),
        max: None,
    };
    loop {
        let Some(Answer { body: job, .. }) = next.take(&relay, &agent)? else {
            if done > 0 {
                eprintln!("agent-relay: no open job left for {agent} ({done} done)");
                return Ok(Exit::Done);
            }
            return Err(next.none_for(&agent));
        };
        // From the first job on, SIGINT and SIGTERM stop the command and release its job.
        let stopping = stopping.get_or_insert_with(stop_signals);
        let outcome = run_job(&relay, &agent, &job, args, stopping)?;
        match outcome {
            Exit::Done => done += 1,
            failed if !args.keep_going => return Ok(failed),
            _ => {}
        }
        if !args.keep_going {
            return Ok(Exit::Done);
        }
    }
}

/// Runs the command on one claimed job and settles the job by how it ended: completed with its
/// output on exit 0, released otherwise; stopped (SIGTERM) when the job is cancelled or lost.
fn run_job(
    relay: &RelayClient,
    agent: &str,
    job: &Json,
    args: &WorkArgs,
    stopping: &AtomicBool,
) -> Outcome {
    let id = job["id"].as_i64().unwrap_or_default();
    eprintln!(
        "agent-relay: took job #{id} (attempt {}): running {}",
        job["attempts"],
        view::one_line(&args.command.join(" "))
    );
    let mut child = match spawn(&args.command, job) {
        Ok(child) => child,
        Err(error) => {
            release(relay, agent, id, args.retry_in)?;
            return Err(Failure::new(
                Exit::Error,
                format!(
                    "could not run {}: {error}; released job #{id}",
                    args.command[0]
                ),
            ));
        }
    };
    let output = collect(&mut child);
    let mut heartbeat = Heartbeat::new(relay, agent, job);
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| Failure::new(Exit::Error, format!("waiting for the command: {e}")))?
        {
            break status;
        }
        if stopping.load(Ordering::SeqCst) {
            stop(&mut child);
            release(relay, agent, id, args.retry_in)?;
            return Err(Failure::new(
                Exit::Error,
                format!("interrupted: stopped the command and released job #{id}"),
            ));
        }
        if let Beat::Lost(failure) = heartbeat.beat()? {
            stop(&mut child);
            let why = if cancelled(&failure) {
                "was cancelled"
            } else {
                "is no longer held"
            };
            return Err(Failure {
                exit: Exit::Conflict,
                message: format!("job #{id} {why} ({}): stopped the command", failure.message),
                body: failure.body,
            });
        }
        std::thread::sleep(heartbeat.until_due().min(Duration::from_millis(50)));
    };
    let (text, seen) = output.join().unwrap_or_default();
    if status.success() {
        let result = success(text, seen);
        relay.post(
            &format!("/v1/messages/{id}/complete"),
            &json!({"agentId": agent, "result": result}),
        )?;
        eprintln!("agent-relay: completed job #{id}");
        return Ok(Exit::Done);
    }
    release(relay, agent, id, args.retry_in)?;
    let code = status.code();
    eprintln!(
        "agent-relay: the command {}: released job #{id} for another attempt",
        code.map_or_else(
            || "was ended by a signal".to_owned(),
            |code| format!("exited {code}")
        )
    );
    Ok(Exit::Error)
}

/// Set once this process is asked to stop (SIGINT, SIGTERM), which no longer ends it: the
/// running command is stopped and its job released first.
fn stop_signals() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = Arc::clone(&flag);
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut interrupt), Ok(mut terminate)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return;
            };
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            set.store(true, Ordering::SeqCst);
        });
    });
    flag
}

/// Starts the command with the job in its environment, its standard output piped, in a
/// process group of its own (so stopping it reaches what it started).
fn spawn(command: &[String], job: &Json) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt as _;
    let text = |key: &str| job[key].as_str().unwrap_or_default().to_owned();
    Command::new(&command[0])
        .process_group(0)
        .args(&command[1..])
        .env("RELAY_JOB_ID", job["id"].to_string())
        .env("RELAY_JOB_BODY", text("body"))
        .env("RELAY_JOB_SUBJECT", text("subject"))
        .env("RELAY_JOB_FROM", text("from"))
        .env("RELAY_JOB_KIND", text("kind"))
        .env("RELAY_JOB_ATTEMPT", job["attempts"].to_string())
        .env("RELAY_JOB_JSON", job.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
}

/// The largest result the relay keeps, serialised (the guest's limit on a JSON object).
const MAX_RESULT_JSON: usize = 64 * 1024;

/// The result of a successful run: its exit code and output, the output cut (at a character
/// boundary) until the serialised result fits the relay's limit, noted with `truncated` and
/// `outputBytes` (every byte the command wrote) when anything was left out.
fn success(mut text: String, seen: usize) -> Json {
    let mut cut = seen > MAX_OUTPUT;
    loop {
        let mut result = json!({"exitCode": 0, "output": text});
        if cut {
            result["truncated"] = json!(true);
            result["outputBytes"] = json!(seen);
        }
        let json = result.to_string().len();
        if json <= MAX_RESULT_JSON || text.is_empty() {
            return result;
        }
        // Keep the share of the text that fits (escapes such as \u0000 make a byte of text up
        // to six of JSON); always shorter, so this ends.
        let mut end = text.len() * MAX_RESULT_JSON / json;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        cut = true;
    }
}

/// Reads the command's standard output on a thread of its own (so a full pipe never stalls
/// it): the first [`MAX_OUTPUT`] bytes as text, and how many bytes came in all.
fn collect(child: &mut Child) -> JoinHandle<(String, usize)> {
    let pipe = child.stdout.take();
    std::thread::spawn(move || {
        let Some(mut pipe) = pipe else {
            return (String::new(), 0);
        };
        let mut kept = Vec::new();
        let mut seen = 0;
        let mut chunk = [0_u8; 8192];
        while let Ok(n) = pipe.read(&mut chunk) {
            if n == 0 {
                break;
            }
            seen += n;
            let room = MAX_OUTPUT.saturating_sub(kept.len());
            kept.extend_from_slice(&chunk[..n.min(room)]);
        }
        (String::from_utf8_lossy(&kept).into_owned(), seen)
    })
}

/// Asks the command's process group to stop (SIGTERM, through `kill`: the crate keeps to safe
/// code), then ends the command (SIGKILL) if it has not within five seconds.
fn stop(child: &mut Child) {
    let asked = Command::new("kill")
        .args(["-TERM", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if asked {
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn release(
    relay: &RelayClient,
    agent: &str,
    id: i64,
    retry_in: Option<Duration>,
) -> Result<(), Failure> {
    let mut input = json!({"agentId": agent});
    if let Some(retry_in) = retry_in {
        input["retryInMs"] = json!(millis(retry_in));
    }
    relay.post(&format!("/v1/messages/{id}/release"), &input)?;
    Ok(())
}
