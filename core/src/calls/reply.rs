//! A failed call as the caller sees it: the one mapping from traps and store errors to statuses.

use crate::bindings::StoreError;
use crate::runtime::CallFailure;

/// An error as the caller receives it: `{"error": {"code", "message"}}` with an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl ErrorReply {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(400, "invalid", message)
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "error": { "code": self.code, "message": self.message } })
    }
}

impl std::fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ErrorReply {}

/// A failed call of `export` as the caller sees it, logged once here.
///
/// A call that found the memory budget spent is 503 (retry later). A store error means what the guest's `From<StoreError>` says it means: busy or read-only is
/// 503 (retry later), full is 507, and a constraint, a refused statement or anything else is a
/// bug of the relay (500).
pub fn failure_reply(export: &str, failure: &CallFailure) -> ErrorReply {
    match failure {
        CallFailure::Trap(cause) => {
            tracing::error!(export, cause = %cause, "call failed; its transaction was rolled back");
            ErrorReply::new(
                500,
                "internal",
                format!("{export} failed inside the relay component: {cause}"),
            )
        }
        CallFailure::OverBudget => {
            tracing::warn!(
                export,
                "call refused: the calls in flight hold all their memory"
            );
            ErrorReply::new(
                503,
                "overloaded",
                "the relay's memory for calls in flight is in use; retry shortly",
            )
        }
        CallFailure::Store(error) => {
            tracing::warn!(export, ?error, "store refused the call");
            match error {
                StoreError::Full(m) => {
                    ErrorReply::new(507, "storage_full", format!("the database is full: {m}"))
                }
                StoreError::Busy(m) => {
                    ErrorReply::new(503, "unavailable", format!("the database is busy: {m}"))
                }
                StoreError::ReadOnly(m) => ErrorReply::new(
                    503,
                    "unavailable",
                    format!("the database is read-only: {m}"),
                ),
                StoreError::Constraint(m) => {
                    ErrorReply::new(500, "internal", format!("constraint failed: {m}"))
                }
                StoreError::Refused(m) => {
                    ErrorReply::new(500, "internal", format!("statement refused: {m}"))
                }
                StoreError::Unavailable(m) => ErrorReply::new(
                    503,
                    "unavailable",
                    format!("the database cannot be reached: {m}"),
                ),
                StoreError::Conflict(m) => ErrorReply::new(
                    503,
                    "busy",
                    format!("the call kept losing races with other writers; retry shortly: {m}"),
                ),
                StoreError::Other(m) => {
                    ErrorReply::new(500, "internal", format!("the database failed: {m}"))
                }
            }
        }
    }
}
