//! Group commit: the one writer connection runs write calls one after another, each inside its
//! own savepoint of a shared transaction, and commits that transaction once for all of them.
//!
//! A call that ends while other write calls wait for the connection leaves the transaction open
//! for them and waits; the call that ends with nobody waiting (or a full batch) commits. Every
//! call is answered only after the commit that holds its writes: an acknowledged write is on disk
//! (at `synchronous = full`), one fsync serves the whole batch, and a call that fails or traps
//! rolls back to its own savepoint without touching its neighbours. When the commit itself fails,
//! every call of the batch is answered with that failure: none of them was kept.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{
    BEGIN_WRITE, COMMIT, Conn, RELEASE_CALL, ROLLBACK, ROLLBACK_TO_CALL, SAVEPOINT_CALL,
    host_statement, store_error,
};
use crate::bindings::StoreError;
use crate::store::{BATCH_SIZE_BOUNDS, BATCH_SIZE_BUCKETS, GroupCommitStats};

/// The most calls one commit covers, and the longest a batch stays open; whichever comes first.
const MAX_BATCH_CALLS: usize = 64;
const MAX_BATCH_OPEN: Duration = Duration::from_millis(4);

/// Failed batches remembered for callers that have not yet read their outcome.
const REMEMBERED_FAILURES: u64 = 4096;

/// The open shared transaction.
struct Batch {
    id: u64,
    /// Calls released into it, waiting for its commit.
    members: usize,
    opened: Instant,
}

struct State {
    /// The connection, when no call holds it.
    conn: Option<Conn>,
    /// The shared transaction, while one is open. Only the holder of `conn` changes it.
    open: Option<Batch>,
    last_batch: u64,
    /// Every batch up to this id is committed or failed.
    settled: u64,
    failures: BTreeMap<u64, StoreError>,
}

/// The writer connection, shared by write calls through group commit.
pub(super) struct Writer {
    state: Mutex<State>,
    /// Signalled when the connection is handed back.
    turn: Condvar,
    /// Signalled when a batch settles.
    settled: Condvar,
    /// Calls waiting for the connection (what keeps a batch open).
    waiting: AtomicUsize,
    /// Commits run, and the calls whose writes they carried.
    commits: AtomicU64,
    committed_calls: AtomicU64,
    /// Commits by the bucket of their size ([`BATCH_SIZE_BOUNDS`], the last: larger).
    by_size: [AtomicU64; BATCH_SIZE_BUCKETS],
}

/// How one call's savepoint ended.
enum CallEnd {
    /// Released into the batch: kept if the batch commits.
    Member,
    /// Rolled back (or never started): nothing to wait for.
    Nothing,
    /// SQLite rolled the whole transaction back (it does on SQLITE_FULL and I/O errors).
    BatchLost(StoreError),
    /// The batch's first call failed: its transaction is rolled back with nothing else in it.
    Abandoned,
}

impl Writer {
    pub(super) fn new(conn: Conn) -> Self {
        Self {
            state: Mutex::new(State {
                conn: Some(conn),
                open: None,
                last_batch: 0,
                settled: 0,
                failures: BTreeMap::new(),
            }),
            turn: Condvar::new(),
            settled: Condvar::new(),
            waiting: AtomicUsize::new(0),
            commits: AtomicU64::new(0),
            committed_calls: AtomicU64::new(0),
            by_size: Default::default(),
        }
    }

    pub(super) fn stats(&self) -> GroupCommitStats {
        GroupCommitStats {
            commits: self.commits.load(Ordering::Relaxed),
            calls: self.committed_calls.load(Ordering::Relaxed),
            by_size: std::array::from_fn(|i| self.by_size[i].load(Ordering::Relaxed)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `work` on the connection outside any call, once no batch is open (start-up,
    /// settings, backups).
    pub(super) fn exclusive<R>(&self, work: impl FnOnce(&Conn) -> R) -> R {
        let mut state = self.lock();
        loop {
            if state.open.is_none()
                && let Some(conn) = state.conn.take()
            {
                drop(state);
                let result = work(&conn);
                let mut state = self.lock();
                state.conn = Some(conn);
                self.turn.notify_one();
                return result;
            }
            // A batch left open is always finished by a waiting call; check back shortly.
            state = self
                .settled
                .wait_timeout(state, Duration::from_millis(1))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Runs `work` on the connection if it is free and no batch is open, else returns `None`
    /// at once.
    pub(super) fn try_exclusive<R>(&self, work: impl FnOnce(&Conn) -> R) -> Option<R> {
        let mut state = self.lock();
        if state.open.is_some() {
            return None;
        }
        let conn = state.conn.take()?;
        drop(state);
        let result = work(&conn);
        let mut state = self.lock();
        state.conn = Some(conn);
        self.turn.notify_one();
        Some(result)
    }

    /// Takes the connection for one call: the first call of a batch opens its transaction, a
    /// call joining an open batch gets a savepoint of its own (the first needs none: it can roll
    /// the whole transaction back). Returns the connection, the batch the call belongs to and
    /// whether the call runs in a savepoint.
    pub(super) fn begin_call(&self) -> Result<(Conn, u64, bool), StoreError> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let mut state = self.lock();
        let conn = loop {
            if let Some(conn) = state.conn.take() {
                break conn;
            }
            state = self
                .turn
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        };
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        let joined = state.open.as_ref().map(|batch| batch.id);
        let batch = match joined {
            Some(id) => id,
            None => {
                state.last_batch += 1;
                state.last_batch
            }
        };
        drop(state);
        if joined.is_none()
            && let Err(error) = host_statement(&conn.sql, BEGIN_WRITE)
        {
            // No batch was opened: nothing else depends on this connection.
            let mut state = self.lock();
            state.settled = state.settled.max(batch);
            state.conn = Some(conn);
            self.turn.notify_one();
            self.settled.notify_all();
            return Err(store_error(error));
        }
        if joined.is_none() {
            let mut state = self.lock();
            state.open = Some(Batch {
                id: batch,
                members: 0,
                opened: Instant::now(),
            });
            return Ok((conn, batch, false));
        }
        if let Err(error) = host_statement(&conn.sql, SAVEPOINT_CALL) {
            let error = store_error(error);
            let end = if conn.sql.is_autocommit() {
                CallEnd::BatchLost(error.clone())
            } else {
                CallEnd::Nothing
            };
            return self.settle(conn, batch, end, false).and(Err(error));
        }
        Ok((conn, batch, true))
    }

    /// Ends one call: its savepoint is released (`keep`) or rolled back, then the batch is left
    /// open for a waiting call or committed. Returns once the call's writes are committed (or
    /// are known to be lost).
    ///
    /// With `later`, a kept call does not wait: the batch stays open and `Ok(true)` says the
    /// caller must settle it with [`Writer::commit_batch`] (`Ok(false)`: nothing to wait for).
    pub(super) fn end_call(
        &self,
        conn: Conn,
        batch: u64,
        savepoint: bool,
        keep: bool,
        last_error: Option<StoreError>,
        later: bool,
    ) -> Result<bool, StoreError> {
        let end = if conn.sql.is_autocommit() {
            CallEnd::BatchLost(last_error.unwrap_or_else(|| {
                StoreError::Other("SQLite rolled the transaction back before commit".to_owned())
            }))
        } else if !savepoint {
            // The batch's first call: its transaction holds nothing else yet.
            if keep {
                CallEnd::Member
            } else {
                CallEnd::Abandoned
            }
        } else if keep {
            match host_statement(&conn.sql, RELEASE_CALL) {
                Ok(()) => CallEnd::Member,
                Err(error) => {
                    let error = store_error(error);
                    if undo_call(&conn) {
                        return self
                            .settle(conn, batch, CallEnd::Nothing, later)
                            .and(Err(error));
                    }
                    CallEnd::BatchLost(error)
                }
            }
        } else if undo_call(&conn) {
            CallEnd::Nothing
        } else {
            CallEnd::BatchLost(StoreError::Other(
                "the call's savepoint could not be rolled back".to_owned(),
            ))
        };
        self.settle(conn, batch, end, later)
    }

    /// Hands the connection on (the batch stays open) or commits the batch, then reports the
    /// fate of the call's writes: `Ok(true)` when a `later` caller must still settle the batch.
    fn settle(
        &self,
        conn: Conn,
        batch: u64,
        end: CallEnd,
        later: bool,
    ) -> Result<bool, StoreError> {
        let mut state = self.lock();
        if matches!(end, CallEnd::Abandoned) {
            let rolled_back = host_statement(&conn.sql, ROLLBACK).map_err(store_error);
            state.open = None;
            finish_batch(&mut state, batch, None);
            state.conn = Some(conn);
            self.turn.notify_one();
            self.settled.notify_all();
            return rolled_back.map(|()| false);
        }
        if let CallEnd::BatchLost(error) = end {
            // Nothing of the batch survives: tell its waiting members, start afresh.
            let _ = host_statement(&conn.sql, ROLLBACK);
            state.open = None;
            finish_batch(&mut state, batch, Some(error.clone()));
            state.conn = Some(conn);
            self.turn.notify_one();
            self.settled.notify_all();
            return Err(error);
        }
        let member = matches!(end, CallEnd::Member);
        let Some(open) = state.open.as_mut() else {
            state.conn = Some(conn);
            self.turn.notify_one();
            return Ok(false);
        };
        if member {
            open.members += 1;
        }
        let full = open.members >= MAX_BATCH_CALLS || open.opened.elapsed() >= MAX_BATCH_OPEN;
        if (later || self.waiting.load(Ordering::SeqCst) > 0) && !full {
            // Another call is about to take the connection and will commit (or pass on) later,
            // or the caller settles the batch itself once it has no more calls to add.
            state.conn = Some(conn);
            self.turn.notify_one();
            if !member {
                return Ok(false);
            }
            if later {
                return Ok(true);
            }
            while state.settled < batch {
                state = self
                    .settled
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            return state.failures.get(&batch).cloned().map_or(Ok(false), Err);
        }
        let committed = self.commit_open(state, conn, batch);
        match committed {
            Err(error) if member => Err(error),
            _ => Ok(false),
        }
    }

    /// Commits the open batch `batch` (the caller holds the connection), records its fate and
    /// hands the connection on.
    fn commit_open(
        &self,
        mut state: MutexGuard<'_, State>,
        conn: Conn,
        batch: u64,
    ) -> Result<(), StoreError> {
        let members = state.open.take().map_or(0, |open| open.members);
        drop(state);
        let committed = host_statement(&conn.sql, COMMIT).map_err(|error| {
            let _ = host_statement(&conn.sql, ROLLBACK);
            store_error(error)
        });
        if committed.is_ok() && members > 0 {
            self.commits.fetch_add(1, Ordering::Relaxed);
            self.committed_calls
                .fetch_add(members as u64, Ordering::Relaxed);
            let bucket = BATCH_SIZE_BOUNDS
                .iter()
                .position(|bound| members as u64 <= *bound)
                .unwrap_or(BATCH_SIZE_BOUNDS.len());
            self.by_size[bucket].fetch_add(1, Ordering::Relaxed);
            tracing::trace!(calls = members, "committed a batch");
        }
        let mut state = self.lock();
        finish_batch(&mut state, batch, committed.as_ref().err().cloned());
        state.conn = Some(conn);
        self.turn.notify_one();
        self.settled.notify_all();
        committed
    }

    /// Settles batch `batch` for a call that ended with `later`: commits it if it is still open,
    /// else reads how it ended.
    pub(super) fn commit_batch(&self, batch: u64) -> Result<(), StoreError> {
        let mut state = self.lock();
        loop {
            if state.settled >= batch {
                return state.failures.get(&batch).cloned().map_or(Ok(()), Err);
            }
            let open_here = state.open.as_ref().is_some_and(|open| open.id == batch);
            if open_here && let Some(conn) = state.conn.take() {
                return self.commit_open(state, conn, batch);
            }
            // A call holds the connection: it commits the batch or hands it back.
            state = self
                .settled
                .wait_timeout(state, Duration::from_millis(1))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }
}

/// Rolls the call's savepoint back and drops it; false when that failed (the batch is unusable).
fn undo_call(conn: &Conn) -> bool {
    host_statement(&conn.sql, ROLLBACK_TO_CALL).is_ok()
        && host_statement(&conn.sql, RELEASE_CALL).is_ok()
}

fn finish_batch(state: &mut State, batch: u64, failure: Option<StoreError>) {
    if let Some(error) = failure {
        state.failures.insert(batch, error);
        let horizon = batch.saturating_sub(REMEMBERED_FAILURES);
        state.failures.retain(|id, _| *id > horizon);
    }
    state.settled = state.settled.max(batch);
}
