//! The commit signal: what long-polls and event streams wait on.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// A sequence number bumped after every committed call that changed rows, and whether the
/// server is closing (held requests answer what they have, streams end).
#[derive(Debug)]
pub(super) struct Commits {
    sequence: watch::Sender<u64>,
    closing: AtomicBool,
}

impl Default for Commits {
    fn default() -> Self {
        Self {
            sequence: watch::Sender::new(0),
            closing: AtomicBool::new(false),
        }
    }
}

impl Commits {
    /// Records that writes were committed and wakes every waiter.
    pub(super) fn committed(&self) {
        self.sequence.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Marks the server as closing and wakes every waiter to see it.
    pub(super) fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.committed();
    }

    pub(super) fn closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// How many waiters (held requests, streams) hold a receiver now.
    pub(super) fn waiters(&self) -> usize {
        self.sequence.receiver_count()
    }

    /// A receiver that has seen every commit so far: its next `changed` is the next commit.
    pub(super) fn subscribe(&self) -> watch::Receiver<u64> {
        self.sequence.subscribe()
    }
}
