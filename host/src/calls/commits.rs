//! The commit signal: what long-polls and event streams wait on.

use tokio::sync::watch;

/// A sequence number bumped after every committed call that changed rows.
#[derive(Debug)]
pub(super) struct Commits {
    sequence: watch::Sender<u64>,
}

impl Default for Commits {
    fn default() -> Self {
        Self {
            sequence: watch::Sender::new(0),
        }
    }
}

impl Commits {
    /// Records that writes were committed and wakes every waiter.
    pub(super) fn committed(&self) {
        self.sequence.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that has seen every commit so far: its next `changed` is the next commit.
    pub(super) fn subscribe(&self) -> watch::Receiver<u64> {
        self.sequence.subscribe()
    }
}
