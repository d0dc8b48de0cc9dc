//! The write lane: write calls run one after another on one thread, each leaving its commit to a
//! batch that stays open while more calls are queued; when the queue runs dry (or the batch is
//! full) the batch is committed once and every call in it is answered. Fewer thread hand-offs
//! and one fsync per batch.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use wasmtime::component::Val;

use super::{Calls, ErrorReply};
use crate::runtime::{CallFailure, Concerns, Prepared, Ran};
use crate::store::Pending;

/// Most write calls one commit settles in the lane (the store may commit sooner).
const LANE_BATCH: usize = 64;

/// How long the lane, out of queued calls, waits for write requests still arriving before it
/// commits what it has, and how often it looks again meanwhile.
const GATHER_WINDOW: Duration = Duration::from_micros(300);
const GATHER_POLL: Duration = Duration::from_micros(50);

/// The lane's queue and the count of write requests on their way to it.
pub(super) struct Lane {
    queue: mpsc::Sender<WriteJob>,
    /// Write requests received but not yet queued (parsing, making an instance): while there
    /// are any, the lane waits a moment for them before it commits its batch.
    arriving: Arc<AtomicUsize>,
}

/// Counts one write request as arriving until it is queued (or fails).
pub struct Arriving(Arc<AtomicUsize>);

impl Drop for Arriving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A write call queued for the lane, with an instance made for it beforehand.
struct WriteJob {
    prepared: Prepared,
    args: Vec<Val>,
    reply: oneshot::Sender<LaneAnswer>,
}

/// The lane's answer, with the spent instance for the requester to drop (off the lane).
type LaneAnswer = (Result<(Val, Concerns), CallFailure>, Prepared);

/// A write call that ran and waits for its batch's commit before it is answered.
struct Unsettled {
    reply: oneshot::Sender<LaneAnswer>,
    value: Val,
    wrote: bool,
    concerns: Concerns,
    prepared: Prepared,
    pending: Box<dyn Pending>,
}

impl Lane {
    /// Starts the lane's thread for the runner `calls`; it ends when the runner is dropped.
    pub(super) fn start(calls: Weak<Calls>) -> Self {
        let (queue, jobs) = mpsc::channel();
        let arriving = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&arriving);
        if let Err(error) = std::thread::Builder::new()
            .name("write-lane".to_owned())
            .spawn(move || write_lane(&calls, &jobs, &counted))
        {
            tracing::error!(%error, "could not start the write lane; writes will fail");
        }
        Self { queue, arriving }
    }

    pub(super) fn arriving(&self) -> Arriving {
        self.arriving.fetch_add(1, Ordering::SeqCst);
        Arriving(Arc::clone(&self.arriving))
    }

    /// Queues a prepared write call and waits for its answer (after its batch's commit).
    ///
    /// # Errors
    /// The lane has stopped or dropped the call (the call's own failure is the inner result).
    pub(super) async fn run(
        &self,
        prepared: Prepared,
        args: Vec<Val>,
        arriving: Arriving,
    ) -> Result<Result<(Val, Concerns), CallFailure>, ErrorReply> {
        let (reply, answer) = oneshot::channel();
        let queued = self.queue.send(WriteJob {
            prepared,
            args,
            reply,
        });
        drop(arriving);
        if queued.is_err() {
            return Err(ErrorReply::new(
                503,
                "unavailable",
                "the write lane has stopped",
            ));
        }
        let (outcome, spent) = answer
            .await
            .map_err(|_| ErrorReply::new(500, "internal", "the write lane dropped the call"))?;
        drop(spent);
        Ok(outcome)
    }
}

fn write_lane(calls: &Weak<Calls>, queue: &mpsc::Receiver<WriteJob>, arriving: &AtomicUsize) {
    let mut unsettled: Vec<Unsettled> = Vec::new();
    // When the queue ran dry with calls waiting for their commit.
    let mut dry_since: Option<Instant> = None;
    loop {
        let job = if unsettled.is_empty() {
            match queue.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        } else {
            match queue.try_recv() {
                Ok(job) => job,
                Err(mpsc::TryRecvError::Empty) => {
                    // Requests on their way in join this batch if they come within the window.
                    let since = *dry_since.get_or_insert_with(Instant::now);
                    if arriving.load(Ordering::SeqCst) > 0 && since.elapsed() < GATHER_WINDOW {
                        match queue.recv_timeout(GATHER_POLL) {
                            Ok(job) => job,
                            Err(mpsc::RecvTimeoutError::Timeout) => continue,
                            Err(mpsc::RecvTimeoutError::Disconnected) => {
                                settle(calls, &mut unsettled);
                                return;
                            }
                        }
                    } else {
                        settle(calls, &mut unsettled);
                        dry_since = None;
                        continue;
                    }
                }
                Err(mpsc::TryRecvError::Disconnected) => {
                    settle(calls, &mut unsettled);
                    return;
                }
            }
        };
        let Some(runner) = calls.upgrade() else {
            return;
        };
        // A host-side panic costs its own call (its requester gets a 500), never the lane.
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_write(&runner, job, &mut unsettled);
        }));
        if ran.is_err() {
            tracing::error!("a write call panicked in the host; the lane goes on");
        }
        drop(runner);
        if unsettled.len() >= LANE_BATCH {
            settle(calls, &mut unsettled);
        }
    }
}

fn run_write(calls: &Calls, job: WriteJob, unsettled: &mut Vec<Unsettled>) {
    let WriteJob {
        mut prepared,
        args,
        reply,
    } = job;
    calls.runs.fetch_add(1, Ordering::Relaxed);
    match calls.runtime.run(&mut prepared, &args) {
        Ok(Ran {
            value,
            pending: Some(pending),
            wrote,
            concerns,
        }) => unsettled.push(Unsettled {
            reply,
            value,
            wrote,
            concerns,
            prepared,
            pending,
        }),
        Ok(ran) => {
            calls.announce(&ran);
            let _ = reply.send((Ok((ran.value, ran.concerns)), prepared));
        }
        Err(failure) => {
            let _ = reply.send((Err(failure), prepared));
        }
    }
}

/// Commits the open batch and answers every call waiting on it; wakes the waiters the calls it
/// kept concern (all of them when one that changed rows named no wake key).
fn settle(calls: &Weak<Calls>, unsettled: &mut Vec<Unsettled>) {
    let mut changed = false;
    // The batch's wake keys; `None` once a call that changed rows named none.
    let mut keys: Option<Vec<String>> = Some(Vec::new());
    for call in unsettled.drain(..) {
        let answer = match call.pending.settle() {
            Ok(()) => {
                if call.wrote {
                    changed = true;
                    match &mut keys {
                        Some(_) if call.concerns.keys.is_empty() => keys = None,
                        Some(keys) => keys.extend(call.concerns.keys.iter().cloned()),
                        None => {}
                    }
                }
                Ok((call.value, call.concerns))
            }
            Err(error) => Err(CallFailure::Store(error)),
        };
        let _ = call.reply.send((answer, call.prepared));
    }
    if changed && let Some(runner) = calls.upgrade() {
        let mut keys = keys.unwrap_or_default();
        keys.sort_unstable();
        keys.dedup();
        runner.commits.committed(&keys);
    }
}
