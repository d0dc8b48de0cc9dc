//! The store capability behind one small trait: a backend hands out one session per call, and the
//! session is the guest's only way to the data. SQLite (`sqlite.rs`) is the embedded backend; a
//! server database would be another implementation of these two traits.

use crate::bindings::{Executed, Rows, StoreError, Value};

/// How a call uses the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A read snapshot; any write is refused.
    Read,
    /// The write lock, taken up front; committed only when the call succeeds.
    Write,
}

/// A database the relay can run calls against.
pub trait Backend: Send + Sync + 'static {
    /// Opens a transaction for one call.
    ///
    /// # Errors
    /// When no connection can be had or the transaction cannot start (busy, read-only file).
    fn begin(&self, access: Access) -> Result<Box<dyn Session>, StoreError>;
}

/// One call's transaction.
pub trait Session: Send {
    /// Runs a statement that writes.
    ///
    /// # Errors
    /// The statement failed, was refused (transaction control, ATTACH, extensions), or wrote
    /// during a read-only call.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<Executed, StoreError>;
    /// Runs a statement that returns rows.
    ///
    /// # Errors
    /// As for [`Session::execute`].
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Rows, StoreError>;
    /// Reads a relay setting.
    ///
    /// # Errors
    /// The settings could not be read.
    fn get_setting(&mut self, key: &str) -> Result<Option<String>, StoreError>;
    /// Writes a relay setting.
    ///
    /// # Errors
    /// The settings could not be written (also in a read-only call).
    fn set_setting(&mut self, key: &str, value: &str) -> Result<(), StoreError>;
    /// Whether the call changed any rows so far (settings aside): a call that did not is not
    /// announced to waiters. A backend that cannot tell says true.
    fn wrote(&self) -> bool {
        true
    }
    /// Ends the transaction: commits when `commit` is true, else rolls back.
    ///
    /// # Errors
    /// The commit failed; nothing of the call was kept.
    fn finish(self: Box<Self>, commit: bool) -> Result<(), StoreError>;

    /// Ends the call like [`Session::finish`] but may leave its writes to a later, shared commit:
    /// then the returned [`Pending`] must be settled before the call is answered. A backend
    /// without group commit commits here and returns `None`.
    ///
    /// # Errors
    /// As for [`Session::finish`].
    fn finish_later(self: Box<Self>, commit: bool) -> Result<Option<Box<dyn Pending>>, StoreError> {
        self.finish(commit).map(|()| None)
    }
}

/// A write call whose transaction ended but whose commit is still to come.
pub trait Pending: Send {
    /// Commits the shared transaction now if it is still open, else waits for whoever commits
    /// it; the outcome for this call's writes.
    ///
    /// # Errors
    /// The shared commit failed: nothing of the call was kept.
    fn settle(self: Box<Self>) -> Result<(), StoreError>;
}
