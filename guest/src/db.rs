//! Typed access to the host's store capability: parameters in, rows out by column name.
//!
//! Every failure becomes a `RelayError` here, so domain modules can use `?` throughout.

use std::rc::Rc;

use crate::bindings::agent_relay::relay::store::{self, Executed, Value};
use crate::bindings::agent_relay::relay::types::RelayError;

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Value::Text(text.to_owned())
    }
}

impl From<String> for Value {
    fn from(text: String) -> Self {
        Value::Text(text)
    }
}

impl From<&String> for Value {
    fn from(text: &String) -> Self {
        Value::Text(text.clone())
    }
}

impl From<i64> for Value {
    fn from(number: i64) -> Self {
        Value::Integer(number)
    }
}

impl From<bool> for Value {
    fn from(flag: bool) -> Self {
        Value::Integer(i64::from(flag))
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Self {
        value.map_or(Value::Null, Into::into)
    }
}

/// Builds a parameter list from anything that converts into a store value.
#[macro_export]
macro_rules! params {
    ($($value:expr),* $(,)?) => {
        [$($crate::bindings::agent_relay::relay::store::Value::from($value)),*]
    };
}

/// One result row, read by column name.
pub struct Row {
    /// The query's column names, shared by its rows. A row has a couple of dozen columns at
    /// most: a scan finds one faster than hashing its name would.
    columns: Rc<[String]>,
    values: Vec<Value>,
}

impl Row {
    fn value(&self, column: &str) -> Result<&Value, RelayError> {
        self.columns
            .iter()
            .position(|name| name == column)
            .and_then(|i| self.values.get(i))
            .ok_or_else(|| RelayError::Internal(format!("query has no column {column}")))
    }

    pub fn text(&self, column: &str) -> Result<String, RelayError> {
        self.opt_text(column)?
            .ok_or_else(|| RelayError::Internal(format!("column {column} is null")))
    }

    pub fn opt_text(&self, column: &str) -> Result<Option<String>, RelayError> {
        match self.value(column)? {
            Value::Null => Ok(None),
            Value::Text(text) => Ok(Some(text.clone())),
            Value::Integer(n) => Ok(Some(n.to_string())),
            _ => Err(RelayError::Internal(format!("column {column} is not text"))),
        }
    }

    pub fn int(&self, column: &str) -> Result<i64, RelayError> {
        self.opt_int(column)?
            .ok_or_else(|| RelayError::Internal(format!("column {column} is null")))
    }

    pub fn opt_int(&self, column: &str) -> Result<Option<i64>, RelayError> {
        match self.value(column)? {
            Value::Null => Ok(None),
            Value::Integer(n) => Ok(Some(*n)),
            #[allow(clippy::cast_possible_truncation)]
            Value::Real(r) => Ok(Some(*r as i64)),
            _ => Err(RelayError::Internal(format!(
                "column {column} is not an integer"
            ))),
        }
    }

    pub fn real(&self, column: &str) -> Result<f64, RelayError> {
        match self.value(column)? {
            Value::Real(r) => Ok(*r),
            #[allow(clippy::cast_precision_loss)]
            Value::Integer(n) => Ok(*n as f64),
            _ => Err(RelayError::Internal(format!(
                "column {column} is not a number"
            ))),
        }
    }

    pub fn flag(&self, column: &str) -> Result<bool, RelayError> {
        Ok(self.opt_int(column)?.unwrap_or(0) != 0)
    }

    /// A column holding a `Stored` enum's text; a text that names no case (written by an older
    /// relay) reads as `otherwise`.
    pub fn case_or<T: Stored>(&self, column: &str, otherwise: T) -> Result<T, RelayError> {
        Ok(T::from_name(&self.text(column)?).unwrap_or(otherwise))
    }

    /// A column holding a JSON array of strings; anything unreadable counts as empty.
    pub fn string_list(&self, column: &str) -> Result<Vec<String>, RelayError> {
        Ok(self
            .opt_text(column)?
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default())
    }
}

/// Runs a statement that returns rows.
pub fn query(sql: &str, params: &[Value]) -> Result<Vec<Row>, RelayError> {
    storable(params)?;
    let rows = store::query(sql, params)?;
    let columns: Rc<[String]> = rows.columns.into();
    Ok(rows
        .rows
        .into_iter()
        .map(|values| Row {
            columns: Rc::clone(&columns),
            values,
        })
        .collect())
}

/// Runs the query of one page of a list: its rows in order up to the relay's page budget (the
/// `page-bytes` setting), so a page of large rows is cut short instead of running the call out
/// of memory. The first row always comes; the caller's cursor goes on after the last row.
pub fn query_page(sql: &str, params: &[Value]) -> Result<Vec<Row>, RelayError> {
    storable(params)?;
    let budget = crate::settings::page_bytes()?;
    let rows = store::query_page(sql, params, budget)?;
    let columns: Rc<[String]> = rows.columns.into();
    Ok(rows
        .rows
        .into_iter()
        .map(|values| Row {
            columns: Rc::clone(&columns),
            values,
        })
        .collect())
}

/// The most items one page of any list may ask for.
pub const MAX_LIMIT: u32 = 500;

/// The `limit` of a list query: its default when absent, else between 1 and `max`.
pub fn page_limit(limit: Option<u32>, default: u32, max: u32) -> Result<i64, RelayError> {
    match limit.unwrap_or(default) {
        0 => Err(RelayError::Invalid(format!(
            "limit must be between 1 and {max}"
        ))),
        n if n > max => Err(RelayError::Invalid(format!(
            "limit must be between 1 and {max}"
        ))),
        n => Ok(i64::from(n)),
    }
}

/// Refuses a page cursor that names no item of the list (`exists` selects its row by `?`):
/// a deleted item's place in an order by other columns is lost, and an empty page would read as
/// the end.
pub fn require_cursor(field: &str, exists: &str, cursor: &Value) -> Result<(), RelayError> {
    if query_one(exists, std::slice::from_ref(cursor))?.is_none() {
        return Err(RelayError::Invalid(format!(
            "{field} must be the id of an item of this list (the last one of the page before)"
        )));
    }
    Ok(())
}

/// PostgreSQL's text cannot hold the NUL character (U+0000), which SQLite stores as any other:
/// on Postgres a text parameter holding it is the caller's to fix (400), not a database failure
/// (docs/architecture.md, "Two dialects").
fn storable(params: &[Value]) -> Result<(), RelayError> {
    let holds_nul = |value: &Value| matches!(value, Value::Text(text) if text.contains('\0'));
    if params.iter().any(holds_nul) && is_postgres() {
        return Err(RelayError::Invalid(
            "text holding the NUL character (U+0000) cannot be stored in this relay's \
             PostgreSQL database; leave that character out"
                .to_owned(),
        ));
    }
    Ok(())
}

/// Runs a statement expected to return at most one row.
pub fn query_one(sql: &str, params: &[Value]) -> Result<Option<Row>, RelayError> {
    Ok(query(sql, params)?.into_iter().next())
}

/// Runs a statement that writes.
pub fn execute(sql: &str, params: &[Value]) -> Result<Executed, RelayError> {
    storable(params)?;
    Ok(store::execute(sql, params)?)
}

/// Runs an `INSERT` into a table with an integer `id` and returns the new row's id, by
/// `RETURNING id` (both dialects have it; Postgres has no last-insert id to ask for).
///
/// On PostgreSQL, calls that number rows take turns from here to their commit (a transaction
/// advisory lock): sequences hand out ids before commit, so two calls writing side by side could
/// otherwise commit id 8 before id 7, and a reader that had seen 8 and asks for what came
/// `since` it would never see 7 (inboxes, streams and activity resume by id). On SQLite writers
/// take turns anyway.
pub fn insert_returning_id(sql: &str, params: &[Value]) -> Result<i64, RelayError> {
    if is_postgres() {
        query(
            "SELECT 1 AS held FROM pg_advisory_xact_lock(?)",
            &params![NUMBERING_LOCK],
        )?;
    }
    query_one(&format!("{sql} RETURNING id"), params)?
        .ok_or_else(|| RelayError::Internal("an insert returned no id".to_owned()))?
        .int("id")
}

/// The advisory lock that makes numbered inserts commit in id order on PostgreSQL ("relay_id").
const NUMBERING_LOCK: i64 = 0x7265_6c61_795f_6964;

/// A list of strings as stored: a JSON array.
pub fn to_json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".to_owned())
}

/// A WIT enum kept in the store (and in payloads) as the text of its case.
pub trait Stored: Sized + 'static {
    /// The text this case is stored and shown as.
    fn name(self) -> &'static str;
    /// The case a stored text names; `None` for a text that names none.
    fn from_name(text: &str) -> Option<Self>;
    /// Every case, in the order the WIT declares them.
    const ALL: &'static [Self];
}

/// Declares the text of each case of a WIT enum (`Stored`), in one place per enum.
#[macro_export]
macro_rules! stored_enum {
    ($type:ident { $($case:ident => $text:literal),+ $(,)? }) => {
        impl $crate::db::Stored for $type {
            const ALL: &'static [Self] = &[$(Self::$case),+];

            fn name(self) -> &'static str {
                match self {
                    $(Self::$case => $text,)+
                }
            }

            fn from_name(text: &str) -> Option<Self> {
                match text {
                    $($text => Some(Self::$case),)+
                    _ => None,
                }
            }
        }
    };
}

/// The SQL dialect of the store this call runs on (docs/architecture.md, "Two dialects").
pub use crate::bindings::agent_relay::relay::store::SqlDialect;

/// Which dialect this call's store speaks; asked of the host once per instance (each call has
/// a fresh one).
pub fn dialect() -> SqlDialect {
    thread_local! {
        static DIALECT: std::cell::Cell<Option<SqlDialect>> = const { std::cell::Cell::new(None) };
    }
    DIALECT.with(|known| {
        known.get().unwrap_or_else(|| {
            let asked = store::dialect();
            known.set(Some(asked));
            asked
        })
    })
}

/// Whether this call's store is PostgreSQL.
#[allow(dead_code)] // until the domain modules' Postgres forms use it
pub fn is_postgres() -> bool {
    dialect() == SqlDialect::Postgres
}

/// Asks the store to run this call at READ COMMITTED where it would abort the losers of a race
/// instead (PostgreSQL): for a call whose statements lock the rows they change and re-check them
/// (`FOR UPDATE SKIP LOCKED`). Before the call's first statement.
pub fn lock_rows_instead() -> Result<(), RelayError> {
    store::lock_rows_instead().map_err(RelayError::from)
}

/// Names a wake key of this call (docs/design.md, "Wake keys"): a message target. A read names
/// the targets its answer depends on; a write names the target of every message it changed,
/// and only a write that changes nothing else a keyed read depends on may name any (a write
/// that names none wakes every waiter).
pub fn concerns(target: &str) {
    store::concerns(target);
}

/// Says that this write changes nothing a keyed read depends on (no message, no delivery set:
/// an agent's last-seen time, say). It names the empty key, which no read names (a target is
/// never empty), so its commit wakes only the waiters whose read named no key (the operator's
/// stream, the dashboard). A write that calls this and then changes more must name no key.
pub fn concerns_no_message() {
    store::concerns("");
}

/// Names the time (epoch ms) at which this read's answer may change with no write: a held
/// request runs again then (an empty claim-next names when its first job becomes due).
pub fn due_at(at: i64) {
    store::due_at(at);
}
