//! The linear memory of all calls in flight, as one budget.
//!
//! Each call's instance may grow to its own limit ([`super::Limits::memory_bytes`]); without a
//! bound on the whole, 32 concurrent calls near that limit hold 32 times it (32 large inbox
//! reads once took the server from 150 MB to 3 GB). Every instance's memory is reserved from
//! one [`MemoryBudget`] as it grows and given back when its store is dropped. A growth the
//! budget cannot cover fails the call with [`super::CallFailure::OverBudget`]: the call runner
//! runs a read again once memory is given back, and answers a write 503.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use wasmtime::{ResourceLimiter, StoreLimits};

/// The bytes of linear memory all calls in flight may hold together.
#[derive(Debug)]
pub struct MemoryBudget {
    total: usize,
    used: Mutex<usize>,
    returned: Condvar,
}

impl MemoryBudget {
    pub fn new(total: usize) -> Arc<Self> {
        Arc::new(Self {
            total,
            used: Mutex::new(0),
            returned: Condvar::new(),
        })
    }

    /// The budget's bytes.
    pub fn total(&self) -> usize {
        self.total
    }

    /// The bytes the calls in flight hold now.
    pub fn in_use(&self) -> usize {
        *self.used.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn reserve(&self, bytes: usize) -> bool {
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        if used.saturating_add(bytes) > self.total {
            return false;
        }
        *used += bytes;
        true
    }

    fn give_back(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        *used = used.saturating_sub(bytes);
        self.returned.notify_all();
    }

    /// Blocks until some memory is given back (or a short while: memory given back just before
    /// the wait began wakes nobody); `false` once `until` has passed.
    pub fn wait_for_room(&self, until: Instant) -> bool {
        const GLANCE: Duration = Duration::from_millis(20);
        let now = Instant::now();
        if now >= until {
            return false;
        }
        let used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        drop(
            self.returned
                .wait_timeout(used, GLANCE.min(until - now))
                .unwrap_or_else(PoisonError::into_inner),
        );
        Instant::now() < until
    }
}

/// One call's share: the per-instance limits, plus what this call reserved from the budget.
pub struct CallMemory {
    limits: StoreLimits,
    budget: Arc<MemoryBudget>,
    held: usize,
    refused: bool,
}

impl CallMemory {
    pub fn new(limits: StoreLimits, budget: Arc<MemoryBudget>) -> Self {
        Self {
            limits,
            budget,
            held: 0,
            refused: false,
        }
    }

    /// Whether a growth failed because the budget was spent (not the call's own limit).
    pub fn refused(&self) -> bool {
        self.refused
    }
}

impl ResourceLimiter for CallMemory {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if !self.limits.memory_growing(current, desired, maximum)? {
            return Ok(false);
        }
        let more = desired.saturating_sub(current);
        if self.budget.reserve(more) {
            self.held += more;
            Ok(true)
        } else {
            self.refused = true;
            Ok(false)
        }
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl Drop for CallMemory {
    fn drop(&mut self) {
        self.budget.give_back(self.held);
    }
}
