//! The store capability behind one small trait: a backend hands out one session per call, and the
//! session is the guest's only way to the data. SQLite (`sqlite.rs`) is the embedded backend; a
//! server database would be another implementation of these two traits.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::bindings::{Executed, Rows, Setting, SettingSource, SqlDialect, StoreError, Value};

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

    /// Whether some other process (another `serve`, an `agent-relay call`) committed to the
    /// database since the last ask, so that waiters should look again. Cheap; never blocks on a
    /// running call (a backend that cannot tell now answers `false` and tells next time).
    fn changed_elsewhere(&self) -> bool {
        false
    }

    /// Keeps a consistent copy of the data before the schema is upgraded from `from_version`,
    /// when there is data to keep, and says where it went. The relay calls it before every
    /// upgrade (`embed::Relay::open`); a backend whose database keeps its own backups keeps none
    /// (the default).
    ///
    /// # Errors
    /// The copy could not be written: the upgrade does not go ahead.
    fn backup_before_migrate(&self, from_version: u64) -> anyhow::Result<Option<PathBuf>> {
        let _ = from_version;
        Ok(None)
    }

    /// Whether write calls may run side by side, each in its own transaction on its own
    /// connection (a server database, which resolves their conflicts itself), instead of one
    /// after another on the write lane with group commit (SQLite: one writer at a time). The
    /// default is the lane.
    fn concurrent_writes(&self) -> bool {
        false
    }

    /// Once the schema is current, the backend's own settings for serving (SQLite turns on
    /// WAL). The default has none.
    ///
    /// # Errors
    /// The settings could not be applied.
    fn prepare_to_serve(&self) -> anyhow::Result<()> {
        Ok(())
    }

    /// What group commit has done so far, for a backend that commits write calls in batches
    /// (SQLite); `None` for one that does not (the default: PostgreSQL commits each call).
    fn group_commit_stats(&self) -> Option<GroupCommitStats> {
        None
    }
}

/// The upper bounds of the batch size buckets [`GroupCommitStats::by_size`] counts commits in.
pub const BATCH_SIZE_BOUNDS: [u64; 7] = [1, 2, 4, 8, 16, 32, 64];
pub(crate) const BATCH_SIZE_BUCKETS: usize = BATCH_SIZE_BOUNDS.len() + 1;

/// What group commit has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCommitStats {
    /// Successful commits of a batch.
    pub commits: u64,
    /// Write calls kept by those commits.
    pub calls: u64,
    /// Those commits by how many calls each carried: `by_size[i]` counts the commits of more
    /// calls than `BATCH_SIZE_BOUNDS[i - 1]` and at most `BATCH_SIZE_BOUNDS[i]` (the last
    /// entry: more than the last bound). Not cumulative.
    pub by_size: [u64; BATCH_SIZE_BUCKETS],
}

/// One call's transaction.
pub trait Session: Send {
    /// The SQL dialect the guest is to write in.
    fn dialect(&self) -> SqlDialect {
        SqlDialect::Sqlite
    }

    /// The guest locks the rows it changes (`FOR UPDATE SKIP LOCKED`): a backend that isolates
    /// calls by aborting the losers of a race may run this call at a weaker level instead
    /// (PostgreSQL: READ COMMITTED). Only before the call's first statement. The default, for
    /// a backend whose writers take turns, changes nothing.
    ///
    /// # Errors
    /// The call already ran a statement.
    fn lock_rows_instead(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
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
    /// Runs a list's query for one page: rows in order until the next would take the answer past
    /// `max_bytes` ([`row_bytes`]); the first row always comes. A backend that can stop reading
    /// early should (this default reads every row first).
    ///
    /// # Errors
    /// As for [`Session::execute`].
    fn query_page(
        &mut self,
        sql: &str,
        params: &[Value],
        max_bytes: u64,
    ) -> Result<Rows, StoreError> {
        let mut rows = self.query(sql, params)?;
        let mut page = PageBudget::new(max_bytes);
        let fit = rows.rows.iter().take_while(|row| page.admits(row)).count();
        rows.rows.truncate(fit);
        Ok(rows)
    }
    /// Reads a relay setting.
    ///
    /// # Errors
    /// The settings could not be read.
    fn get_setting(&mut self, key: &str) -> Result<Option<String>, StoreError>;
    /// Writes a relay setting; an empty value removes it.
    ///
    /// # Errors
    /// The settings could not be written (also in a read-only call).
    fn set_setting(&mut self, key: &str, value: &str) -> Result<(), StoreError>;
    /// The stored settings whose keys start with `prefix`, in key order.
    ///
    /// # Errors
    /// The settings could not be read.
    fn list_settings(&mut self, prefix: &str) -> Result<Vec<Setting>, StoreError>;
    /// Whether the call changed any rows so far (settings aside): a call that did not is not
    /// announced to waiters. A backend that cannot tell says true.
    fn wrote(&self) -> bool {
        true
    }
    /// An error that voids the call whatever the guest answered: `conflict` (the transaction
    /// lost a serialization race: the runtime rolls back and runs the call again in a fresh
    /// instance) or `unavailable` (the connection went: the call answers 503).
    fn broken(&self) -> Option<StoreError> {
        None
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

/// A backend whose calls see settings given for this run of the host (`--setting`) before the
/// stored ones. The run's values live here only: nothing of them is ever written.
pub struct RunSettings {
    backend: Arc<dyn Backend>,
    settings: Arc<BTreeMap<String, String>>,
}

impl RunSettings {
    /// `backend` with `settings` laid over its stored ones; `backend` itself when there are none.
    pub fn over(
        backend: Arc<dyn Backend>,
        settings: impl IntoIterator<Item = (String, String)>,
    ) -> Arc<dyn Backend> {
        let settings: BTreeMap<String, String> = settings.into_iter().collect();
        if settings.is_empty() {
            return backend;
        }
        Arc::new(Self {
            backend,
            settings: Arc::new(settings),
        })
    }
}

impl Backend for RunSettings {
    fn begin(&self, access: Access) -> Result<Box<dyn Session>, StoreError> {
        Ok(Box::new(RunSession {
            inner: self.backend.begin(access)?,
            settings: Arc::clone(&self.settings),
        }))
    }

    fn changed_elsewhere(&self) -> bool {
        self.backend.changed_elsewhere()
    }

    fn backup_before_migrate(&self, from_version: u64) -> anyhow::Result<Option<PathBuf>> {
        self.backend.backup_before_migrate(from_version)
    }

    fn prepare_to_serve(&self) -> anyhow::Result<()> {
        self.backend.prepare_to_serve()
    }

    fn concurrent_writes(&self) -> bool {
        self.backend.concurrent_writes()
    }

    fn group_commit_stats(&self) -> Option<GroupCommitStats> {
        self.backend.group_commit_stats()
    }
}

/// A call's session that answers the run's settings first.
struct RunSession {
    inner: Box<dyn Session>,
    settings: Arc<BTreeMap<String, String>>,
}

impl Session for RunSession {
    fn dialect(&self) -> SqlDialect {
        self.inner.dialect()
    }

    fn lock_rows_instead(&mut self) -> Result<(), StoreError> {
        self.inner.lock_rows_instead()
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<Executed, StoreError> {
        self.inner.execute(sql, params)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Rows, StoreError> {
        self.inner.query(sql, params)
    }

    fn query_page(
        &mut self,
        sql: &str,
        params: &[Value],
        max_bytes: u64,
    ) -> Result<Rows, StoreError> {
        self.inner.query_page(sql, params, max_bytes)
    }

    fn get_setting(&mut self, key: &str) -> Result<Option<String>, StoreError> {
        match self.settings.get(key) {
            Some(value) => Ok(Some(value.clone())),
            None => self.inner.get_setting(key),
        }
    }

    fn set_setting(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.inner.set_setting(key, value)
    }

    fn list_settings(&mut self, prefix: &str) -> Result<Vec<Setting>, StoreError> {
        let mut listed: BTreeMap<String, Setting> = self
            .inner
            .list_settings(prefix)?
            .into_iter()
            .map(|setting| (setting.key.clone(), setting))
            .collect();
        for (key, value) in self.settings.iter().filter(|(k, _)| k.starts_with(prefix)) {
            let run = Setting {
                key: key.clone(),
                value: value.clone(),
                source: SettingSource::Run,
            };
            listed.insert(key.clone(), run);
        }
        Ok(listed.into_values().collect())
    }

    fn wrote(&self) -> bool {
        self.inner.wrote()
    }

    fn broken(&self) -> Option<StoreError> {
        self.inner.broken()
    }

    fn finish(self: Box<Self>, commit: bool) -> Result<(), StoreError> {
        self.inner.finish(commit)
    }

    fn finish_later(self: Box<Self>, commit: bool) -> Result<Option<Box<dyn Pending>>, StoreError> {
        self.inner.finish_later(commit)
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

/// The bytes a row counts against a page budget: text and blob lengths, 8 per number, and 16
/// per value for its place in the lists that carry it.
pub fn row_bytes(row: &[Value]) -> u64 {
    row.iter()
        .map(|value| {
            16 + match value {
                Value::Null => 0,
                Value::Integer(_) | Value::Real(_) => 8,
                Value::Text(text) => text.len() as u64,
                Value::Blob(bytes) => bytes.len() as u64,
            }
        })
        .sum()
}

/// A page filling up: admits rows while they fit, and always the first.
#[derive(Debug)]
pub struct PageBudget {
    left: u64,
    first: bool,
}

impl PageBudget {
    pub fn new(max_bytes: u64) -> Self {
        Self {
            left: max_bytes,
            first: true,
        }
    }

    /// Whether the row joins the page (it is counted when it does).
    pub fn admits(&mut self, row: &[Value]) -> bool {
        let bytes = row_bytes(row);
        if bytes > self.left && !std::mem::take(&mut self.first) {
            return false;
        }
        self.first = false;
        self.left = self.left.saturating_sub(bytes);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_stops_before_the_row_that_would_pass_its_budget_and_always_holds_one() {
        // 16 + 8 for the number, 16 + 100 for the text: 140 bytes a row.
        let row = [Value::Integer(1), Value::Text("x".repeat(100))];
        assert_eq!(row_bytes(&row), 140);
        let fits = |budget| {
            let mut page = PageBudget::new(budget);
            (0..3).take_while(|_| page.admits(&row)).count()
        };
        assert_eq!(fits(280), 2);
        assert_eq!(fits(279), 1);
        assert_eq!(fits(1), 1, "the first row always comes");
        assert_eq!(fits(10_000), 3);
    }
}
