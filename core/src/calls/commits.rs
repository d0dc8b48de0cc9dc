//! The commit signal: what long-polls and event streams wait on, by wake key.
//!
//! Each waiter (a held request, an event stream) has a signal of its own. It is registered for
//! every commit until its export has run; then for the wake keys that run named
//! (`store.concerns`, docs/design.md "Wake keys"), or still for every commit when it named none.
//! A commit wakes the waiters registered for one of its keys and those registered for every
//! commit; a commit without keys (a write that named none, another process's write, closing)
//! wakes them all. The host only matches keys: which keys a call names is the guest's decision.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

/// A sequence number bumped after every committed call that changed rows, and whether the
/// server is closing (held requests answer what they have, streams end).
#[derive(Debug)]
pub(super) struct Commits {
    sequence: watch::Sender<u64>,
    closing: AtomicBool,
    shared: Arc<Shared>,
}

/// What the waiters share with the signal: the registry, and the count of wake-ups.
#[derive(Debug, Default)]
struct Shared {
    registry: Mutex<Registry>,
    next_id: AtomicU64,
    /// Times a waiter was woken to run its export again.
    wakeups: AtomicU64,
}

type Signal = Arc<watch::Sender<u64>>;

#[derive(Debug, Default)]
struct Registry {
    /// Waiters woken by every commit: not run yet, or their read named no key.
    everyone: HashMap<u64, Signal>,
    /// Waiters by the keys their last read named.
    by_key: HashMap<String, HashMap<u64, Signal>>,
    /// The keys of each waiter in `by_key`.
    keys_of: HashMap<u64, Vec<String>>,
}

impl Registry {
    fn remove(&mut self, id: u64) -> Option<Signal> {
        if let Some(signal) = self.everyone.remove(&id) {
            return Some(signal);
        }
        let keys = self.keys_of.remove(&id)?;
        let mut found = None;
        for key in keys {
            if let Some(waiters) = self.by_key.get_mut(&key) {
                found = waiters.remove(&id).or(found);
                if waiters.is_empty() {
                    self.by_key.remove(&key);
                }
            }
        }
        found
    }

    fn insert(&mut self, id: u64, signal: Signal, keys: Option<&[String]>) {
        match keys {
            None => {
                self.everyone.insert(id, signal);
            }
            Some(keys) => {
                for key in keys {
                    self.by_key
                        .entry(key.clone())
                        .or_default()
                        .insert(id, Arc::clone(&signal));
                }
                self.keys_of.insert(id, keys.to_vec());
            }
        }
    }

    fn len(&self) -> usize {
        self.everyone.len() + self.keys_of.len()
    }
}

fn raise(signal: &watch::Sender<u64>) {
    signal.send_modify(|n| *n = n.wrapping_add(1));
}

impl Default for Commits {
    fn default() -> Self {
        Self {
            sequence: watch::Sender::new(0),
            closing: AtomicBool::new(false),
            shared: Arc::default(),
        }
    }
}

impl Shared {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Commits {
    /// Records that writes were committed and wakes the waiters they concern: those registered
    /// for one of `keys` and those registered for every commit; every waiter when `keys` is
    /// empty.
    pub(super) fn committed(&self, keys: &[String]) {
        self.sequence.send_modify(|n| *n = n.wrapping_add(1));
        let registry = self.shared.registry();
        registry.everyone.values().for_each(|signal| raise(signal));
        if keys.is_empty() {
            for waiters in registry.by_key.values() {
                waiters.values().for_each(|signal| raise(signal));
            }
        } else {
            for key in keys {
                if let Some(waiters) = registry.by_key.get(key) {
                    waiters.values().for_each(|signal| raise(signal));
                }
            }
        }
    }

    /// Marks the server as closing and wakes every waiter to see it.
    pub(super) fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.committed(&[]);
    }

    pub(super) fn closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// How many waiters (held requests, streams) are registered now.
    pub(super) fn waiters(&self) -> usize {
        self.shared.registry().len()
    }

    /// How many of them listen only for their wake keys (the others wake on every commit).
    pub(super) fn keyed_waiters(&self) -> usize {
        self.shared.registry().keys_of.len()
    }

    /// Times a waiter was woken to run its export again.
    pub(super) fn wakeups(&self) -> u64 {
        self.shared.wakeups.load(Ordering::Relaxed)
    }

    /// A receiver that has seen every commit so far: its next `changed` is the next commit.
    pub(super) fn subscribe(&self) -> watch::Receiver<u64> {
        self.sequence.subscribe()
    }

    /// A new waiter, registered for every commit until its first run names its keys.
    pub(super) fn waiter(&self) -> Waiter {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let signal = Arc::new(watch::Sender::new(0));
        let receiver = signal.subscribe();
        self.shared.registry().insert(id, signal, None);
        Waiter {
            id,
            receiver,
            keys: None,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// One held request or event stream waiting for the commits that concern it. Use:
/// [`Waiter::before_run`], run the export, [`Waiter::listen`] for the keys it named, then
/// [`Waiter::changed`]; a commit between the run's snapshot and the wait is never missed.
#[derive(Debug)]
pub struct Waiter {
    id: u64,
    receiver: watch::Receiver<u64>,
    /// The keys it is registered for; `None`: every commit.
    keys: Option<Vec<String>>,
    shared: Arc<Shared>,
}

impl Waiter {
    /// Marks every commit so far as seen: call it just before each run of the export, so any
    /// commit the run's snapshot misses wakes the waiter.
    pub fn before_run(&mut self) {
        self.receiver.borrow_and_update();
    }

    /// Registers for the wake keys the last run named (empty: every commit). A waiter that
    /// changes from one set of keys to another looks again once, since a commit concerning only
    /// the new keys may have come between its run and now.
    pub fn listen(&mut self, keys: &[String]) {
        let mut wanted: Vec<String> = keys.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let wanted = (!wanted.is_empty()).then_some(wanted);
        if wanted == self.keys {
            return;
        }
        let mut registry = self.shared.registry();
        let Some(signal) = registry.remove(self.id) else {
            return;
        };
        registry.insert(self.id, signal, wanted.as_deref());
        drop(registry);
        // Until now it was registered for every commit, or for other keys.
        if self.keys.is_some() {
            self.receiver.mark_changed();
        }
        self.keys = wanted;
    }

    /// Waits for a commit that concerns this waiter (or the server closing). Returns `false`
    /// when the signal is gone.
    pub async fn changed(&mut self) -> bool {
        let woken = self.receiver.changed().await.is_ok();
        if woken {
            self.shared.wakeups.fetch_add(1, Ordering::Relaxed);
        }
        woken
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.shared.registry().remove(self.id);
    }
}
