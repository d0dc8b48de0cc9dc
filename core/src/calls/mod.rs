//! The call runner: every front-end (HTTP routes, push, the CLI, the embedding API, the reaper,
//! the MCP server) hands its calls to [`Calls`], which owns what running a call takes beyond the
//! component itself: instances, the concurrency slots and their queue timeout, the write lane
//! with its group commit, the commit signal, and the mapping of a failure to an error reply.
//!
//! Two ways in: [`Calls::run`] for servers (a slot, then a read on a blocking thread or a write
//! on the lane) and [`Calls::run_here`] for embedders and the CLI (on the calling thread).
//! [`Calls::hold`] re-runs a list export after each commit until the list has something in it.
//! Either way a front-end passes the export it resolved and gets the export's `result` value;
//! turning that into JSON is the bridge's work.
//!
//! A server's runner notes which bearer tokens made calls the relay accepted (`activity.rs`) and
//! hands them to `record-agent-calls`; a `reap` through [`Calls::run`], whoever asks for it (the
//! timer of `serve`, `POST /v1/reap`), hands them over first (`reaper.rs`).

mod activity;
mod commits;
mod lane;
mod reaper;
mod reply;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use wasmtime::component::Val;

use crate::runtime::{CallFailure, Concerns, Entry, Export, Ran, Runtime};
use crate::store::Access;
use crate::token::OperatorToken;
use activity::Activity;
use commits::Commits;
pub use commits::Waiter;
pub use lane::Arriving;
use lane::Lane;
pub use reply::{ErrorReply, failure_reply};

/// How many calls run at once and how long one waits for its turn.
#[derive(Debug, Clone)]
pub struct CallOptions {
    /// Calls running at once through [`Calls::run`]; more wait for a slot.
    pub max_concurrent_calls: usize,
    /// How long a call waits for a slot before it is answered 503.
    pub queue_timeout: Duration,
    /// Remember which bearer tokens made calls and hand them to the relay before each `reap`
    /// run through [`Calls::run`] (a server with a reaper; an embedder leaves it off).
    pub note_activity: bool,
}

impl Default for CallOptions {
    fn default() -> Self {
        Self {
            max_concurrent_calls: 32,
            queue_timeout: Duration::from_secs(10),
            note_activity: false,
        }
    }
}

/// Who a call acts as (the WIT `caller` variant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The operator: may do anything.
    Operator,
    /// An agent's bearer token (as `register-agent` handed it out); the relay decides whose.
    Bearer(String),
    /// No credentials.
    Anonymous,
}

/// The longest bearer token a front-end takes (docs/security.md, "Bearer tokens: size, what is
/// noted"). The relay's tokens are 70 bytes (`relay_` and 64 hex digits); a longer one is refused
/// before anything runs or is remembered. The operator's own token is taken at any length.
pub const MAX_TOKEN_BYTES: usize = 512;

impl Caller {
    /// The caller presenting `token` (none: anonymous); the operator's token makes the operator.
    ///
    /// # Errors
    /// 401 `unauthorized` for a token longer than [`MAX_TOKEN_BYTES`] (not the operator's).
    pub fn presenting(token: Option<&str>, operator: &OperatorToken) -> Result<Self, ErrorReply> {
        Ok(match token {
            Some(token) if operator.matches(token) => Caller::Operator,
            Some(token) if token.len() > MAX_TOKEN_BYTES => {
                return Err(ErrorReply::new(
                    401,
                    "unauthorized",
                    format!(
                        "the bearer token is {} bytes; relay tokens are at most {MAX_TOKEN_BYTES} \
                         bytes: send the token the relay issued (Authorization: Bearer <token>)",
                        token.len()
                    ),
                ));
            }
            Some(token) => Caller::Bearer(token.to_owned()),
            None => Caller::Anonymous,
        })
    }

    /// The caller an `Authorization` header value names (`Bearer <token>`; none or another
    /// scheme: anonymous).
    ///
    /// # Errors
    /// As for [`Caller::presenting`].
    pub fn authorizing(header: Option<&str>, operator: &OperatorToken) -> Result<Self, ErrorReply> {
        Self::presenting(header.and_then(bearer_token), operator)
    }

    /// The caller as the component's `caller` value.
    pub fn to_val(&self) -> Val {
        match self {
            Caller::Operator => Val::Variant("operator".to_owned(), None),
            Caller::Bearer(token) => Val::Variant(
                "bearer".to_owned(),
                Some(Box::new(Val::String(token.clone()))),
            ),
            Caller::Anonymous => Val::Variant("anonymous".to_owned(), None),
        }
    }
}

/// One call counted in [`Calls::queued`] while it waits for a slot (also when its request is
/// dropped while waiting).
struct Queued<'a>(&'a AtomicUsize);

impl<'a> Queued<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive
/// (RFC 9110 section 11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The call runner over one runtime.
pub struct Calls {
    runtime: Runtime,
    options: CallOptions,
    slots: Semaphore,
    lane: Lane,
    commits: Commits,
    activity: Option<Activity>,
    /// A hand-over of a full activity set is under way.
    handing_over: AtomicBool,
    /// Calls run so far (each run of a held request counts).
    runs: AtomicU64,
    /// Calls waiting for a slot now.
    queued: AtomicUsize,
}

impl Calls {
    /// A runner for `runtime`, with its write lane started.
    pub fn new(runtime: Runtime, options: CallOptions) -> Arc<Self> {
        Arc::new_cyclic(|this| Self {
            runtime,
            slots: Semaphore::new(options.max_concurrent_calls.max(1)),
            activity: options.note_activity.then(Activity::default),
            handing_over: AtomicBool::new(false),
            options,
            lane: Lane::start(this.clone()),
            commits: Commits::default(),
            runs: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
        })
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    pub fn options(&self) -> &CallOptions {
        &self.options
    }

    /// Calls holding a concurrency slot now (running, or answered by the lane's next commit).
    pub fn in_flight(&self) -> usize {
        self.options
            .max_concurrent_calls
            .max(1)
            .saturating_sub(self.slots.available_permits())
    }

    /// Calls waiting for one of the `max_concurrent_calls` slots now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Waiters (held requests, event streams) subscribed to the commit signal now.
    pub fn waiters(&self) -> usize {
        self.commits.waiters()
    }

    /// Of those, the ones that listen only for their wake keys: they have run once and named
    /// them (the others, still to name theirs or naming none, wake on every commit).
    pub fn keyed_waiters(&self) -> usize {
        self.commits.keyed_waiters()
    }

    /// How many calls have run (every re-run of a held request counts once).
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// A receiver of the commit signal: its next `changed` comes after the next committed call
    /// that changed rows, whatever it concerns.
    pub fn commits(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }

    /// A new waiter (a held request, an event stream): woken by every commit until its first
    /// run named its wake keys, then only by the commits that concern it (see [`Waiter`]).
    pub fn waiter(&self) -> Waiter {
        self.commits.waiter()
    }

    /// Times a held request or event stream was woken by a commit to run its export again.
    pub fn wakeups(&self) -> u64 {
        self.commits.wakeups()
    }

    /// The server is stopping: held requests answer what they have now (an empty list after
    /// their next run) and event streams end, so connections can close.
    pub fn close(&self) {
        self.commits.close();
    }

    /// Whether [`Calls::close`] was called.
    pub fn closing(&self) -> bool {
        self.commits.closing()
    }

    /// Wakes the waiters when another process commits to the database (another `serve`, an
    /// `agent-relay call`): every `interval`, while anyone waits, asks the backend. Runs until
    /// the runner closes.
    pub async fn watch_other_writers(self: Arc<Self>, interval: Duration) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.closing() {
            ticks.tick().await;
            if self.commits.waiters() == 0 {
                continue;
            }
            let calls = Arc::clone(&self);
            let changed =
                tokio::task::spawn_blocking(move || calls.runtime.backend().changed_elsewhere())
                    .await
                    .unwrap_or(false);
            if changed {
                tracing::debug!("another process committed; waiters look again");
                // Its wake keys are unknown here: every waiter looks again.
                self.commits.committed(&[]);
            }
        }
    }

    /// Marks a request for `export` as arriving when the export writes, from when it is received
    /// (see [`Calls::run_arriving`]).
    pub fn arriving(&self, export: &Export) -> Option<Arriving> {
        (export.access == Access::Write).then(|| self.lane.arriving())
    }

    /// Runs one export within the concurrency bound: a write on the write lane, a read on a
    /// blocking thread. Returns the export's `result` value (the relay's own error included).
    /// A `reap` by the operator first hands the relay the calls noted since the last one.
    ///
    /// # Errors
    /// A failure of the call (trap, store, overload) as the caller is to see it.
    pub async fn run(self: &Arc<Self>, export: &Export, args: Vec<Val>) -> Result<Val, ErrorReply> {
        self.run_arriving(export, args, self.arriving(export)).await
    }

    /// [`Calls::run`], with the wake keys the call named (`store.concerns`; empty: none): what
    /// a waiter listens for after the run (see [`Waiter::listen`]).
    ///
    /// # Errors
    /// As for [`Calls::run`].
    pub async fn run_keyed(
        self: &Arc<Self>,
        export: &Export,
        args: Vec<Val>,
    ) -> Result<(Val, Concerns), ErrorReply> {
        if export.name == reaper::REAP && self.activity.is_some() {
            return self
                .run(export, args)
                .await
                .map(|value| (value, Concerns::default()));
        }
        let token = self.activity.as_ref().and_then(|_| bearer_of(&args));
        let answer = self.run_call_keyed(export, args, None).await;
        if let (Some(token), Ok((value, _))) = (token, &answer)
            && !is_unauthorized(value)
        {
            self.note_call(&token);
        }
        answer
    }

    /// [`Calls::run`] for a request counted as arriving since it was received: the write lane
    /// waits a moment for arriving writes before it commits. The count pauses while the request
    /// waits for a slot and ends when the call is queued.
    ///
    /// # Errors
    /// As for [`Calls::run`].
    pub async fn run_arriving(
        self: &Arc<Self>,
        export: &Export,
        args: Vec<Val>,
        arriving: Option<Arriving>,
    ) -> Result<Val, ErrorReply> {
        if export.name == reaper::REAP && self.activity.is_some() {
            drop(arriving);
            return self.reap_round(export, args).await;
        }
        let token = self.activity.as_ref().and_then(|_| bearer_of(&args));
        let answer = self.run_call(export, args, arriving).await;
        if let (Some(token), Ok(value)) = (token, &answer)
            && !is_unauthorized(value)
        {
            self.note_call(&token);
        }
        answer
    }

    /// Runs one export within the slots (the body of [`Calls::run_arriving`]).
    async fn run_call(
        self: &Arc<Self>,
        export: &Export,
        args: Vec<Val>,
        arriving: Option<Arriving>,
    ) -> Result<Val, ErrorReply> {
        self.run_call_keyed(export, args, arriving)
            .await
            .map(|(value, _)| value)
    }

    /// [`Calls::run_call`] with the call's wake keys.
    async fn run_call_keyed(
        self: &Arc<Self>,
        export: &Export,
        args: Vec<Val>,
        arriving: Option<Arriving>,
    ) -> Result<(Val, Concerns), ErrorReply> {
        // A request waiting for a slot is not about to arrive: the lane must not wait for it
        // (slots free up only as the lane answers).
        drop(arriving);
        let queued = Queued::enter(&self.queued);
        let permit = tokio::time::timeout(self.options.queue_timeout, self.slots.acquire()).await;
        drop(queued);
        let permit = permit
            .map_err(|_| {
                ErrorReply::new(
                    503,
                    "overloaded",
                    "the relay is at its concurrency limit; retry shortly",
                )
            })?
            .map_err(|_| ErrorReply::new(503, "unavailable", "the relay is shutting down"))?;
        let outcome =
            if export.access == Access::Write && self.runtime.backend().concurrent_writes() {
                // A server database: the write runs on a blocking thread of its own, in its own
                // transaction, and wakes the waiters once committed.
                let calls = Arc::clone(self);
                let entry = export.entry();
                tokio::task::spawn_blocking(move || calls.write_here(entry, &args))
                    .await
                    .map_err(|e| {
                        ErrorReply::new(500, "internal", format!("the call's thread failed: {e}"))
                    })?
            } else if export.access == Access::Write {
                let arriving = self.lane.arriving();
                // The instance is made here, so the lane only runs the call.
                let prepared = self
                    .runtime
                    .prepare(export.entry())
                    .map_err(|failure| failure_reply(&export.name, &failure))?;
                self.lane.run(prepared, args, arriving).await?
            } else if tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
            {
                // A read runs right here, the worker handing its other tasks to another thread
                // for the while: no hop to a blocking thread and back, which cost a lone read
                // two thread wake-ups (~150 us on an idle machine, docs/benchmarks.md). Outside
                // the runtime's context, as the component's synchronous WASI needs.
                let entry = export.entry();
                let until = std::time::Instant::now() + self.options.queue_timeout;
                tokio::task::block_in_place(|| self.read(entry, &args, until))
            } else {
                let calls = Arc::clone(self);
                let entry = export.entry();
                let until = std::time::Instant::now() + self.options.queue_timeout;
                tokio::task::spawn_blocking(move || calls.read(entry, &args, until))
                    .await
                    .map_err(|e| {
                        ErrorReply::new(500, "internal", format!("the call's thread failed: {e}"))
                    })?
            };
        drop(permit);
        outcome.map_err(|failure| failure_reply(&export.name, &failure))
    }

    /// Runs a read. A read that found the memory budget spent has done nothing: it runs again
    /// when memory is given back (so large reads queue behind each other while small calls go
    /// on), until `until`.
    fn read(
        &self,
        entry: Entry,
        args: &[Val],
        until: std::time::Instant,
    ) -> Result<(Val, Concerns), CallFailure> {
        loop {
            self.runs.fetch_add(1, Ordering::Relaxed);
            let ran = self
                .runtime
                .prepare(entry)
                .and_then(|mut prepared| self.runtime.run(&mut prepared, args));
            match ran {
                Err(CallFailure::OverBudget) if self.runtime.memory().wait_for_room(until) => {}
                ran => return ran.map(|ran| (ran.value, ran.concerns)),
            }
        }
    }

    /// Runs a write call on this thread in its own transaction (backends with concurrent
    /// writes); wakes the waiters when it committed a change.
    fn write_here(&self, entry: Entry, args: &[Val]) -> Result<(Val, Concerns), CallFailure> {
        self.runs.fetch_add(1, Ordering::Relaxed);
        let ran = self
            .runtime
            .prepare(entry)
            .and_then(|mut prepared| self.runtime.run_committed(&mut prepared, args))?;
        self.announce(&ran);
        Ok((ran.value, ran.concerns))
    }

    /// Runs one export on the calling thread, outside the slots and the lane: for embedders and
    /// the CLI, whose threads are their own bound. Returns once the call's writes are committed.
    /// Not on an async runtime's worker thread (the component's WASI runs synchronously).
    ///
    /// # Errors
    /// As for [`Calls::run`].
    pub fn run_here(&self, export: &Export, args: &[Val]) -> Result<Val, ErrorReply> {
        self.runs.fetch_add(1, Ordering::Relaxed);
        let ran = self
            .runtime
            .prepare(export.entry())
            .and_then(|mut prepared| self.runtime.run_committed(&mut prepared, args))
            .map_err(|failure| failure_reply(&export.name, &failure))?;
        self.announce(&ran);
        Ok(ran.value)
    }

    /// Runs a list export until its answer is not empty (an empty list, or the `none` of an
    /// option), re-running it after each
    /// commit that changed rows, or until `deadline`, when the (empty) answer is returned.
    ///
    /// # Errors
    /// As for [`Calls::run`]; the export's own error is its `result` value, not an error here.
    pub async fn hold(
        self: &Arc<Self>,
        export: &Export,
        args: Vec<Val>,
        deadline: Instant,
    ) -> Result<Val, ErrorReply> {
        let mut waiter = self.waiter();
        loop {
            // Mark the commits seen before the call: any commit its snapshot misses wakes us.
            waiter.before_run();
            let (answer, concerns) = self.run_keyed(export, args.clone()).await?;
            if !is_empty(&answer) || self.closing() {
                return Ok(answer);
            }
            waiter.listen(&concerns.keys);
            // A job becoming due changes the answer with no write: run again then.
            let due = concerns
                .due_at
                .map_or(deadline, |at| deadline.min(self.instant_of(at)));
            tokio::select! {
                changed = waiter.changed() => if !changed { return Ok(answer) },
                () = tokio::time::sleep_until(due) => if due >= deadline { return Ok(answer) },
            }
        }
    }

    /// The moment the call's clock reads `at` (epoch ms): now when that time has passed.
    fn instant_of(&self, at: i64) -> Instant {
        let ahead = at.saturating_sub(self.runtime.clock().now_ms());
        Instant::now() + Duration::from_millis(u64::try_from(ahead).unwrap_or(0))
    }

    /// Wakes the waiters when a committed call changed rows.
    fn announce(&self, ran: &Ran) {
        if ran.wrote && matches!(ran.value, Val::Result(Ok(_))) {
            self.commits.committed(&ran.concerns.keys);
        }
    }
}

/// The token of a call's caller (its first argument), when it is a bearer token.
fn bearer_of(args: &[Val]) -> Option<String> {
    match args.first() {
        Some(Val::Variant(case, Some(token))) if case == "bearer" => match token.as_ref() {
            Val::String(token) => Some(token.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// Whether the relay refused the caller's credentials (its `unauthorized` error).
fn is_unauthorized(answer: &Val) -> bool {
    matches!(answer, Val::Result(Err(Some(error)))
        if matches!(error.as_ref(), Val::Variant(case, _) if case == "unauthorized"))
}

/// `ok` of an empty list, or of an option's `none`.
fn is_empty(answer: &Val) -> bool {
    match answer {
        Val::Result(Ok(Some(value))) => {
            matches!(value.as_ref(), Val::List(items) if items.is_empty())
                || matches!(value.as_ref(), Val::Option(None))
        }
        _ => false,
    }
}
