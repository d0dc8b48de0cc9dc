//! Building relay errors with messages that tell the caller what to fix.

use crate::bindings::agent_relay::relay::store::StoreError;
use crate::bindings::agent_relay::relay::types::RelayError;

pub fn invalid(message: impl Into<String>) -> RelayError {
    RelayError::Invalid(message.into())
}

pub fn not_found(message: impl Into<String>) -> RelayError {
    RelayError::NotFound(message.into())
}

pub fn conflict(message: impl Into<String>) -> RelayError {
    RelayError::Conflict(message.into())
}

pub fn forbidden(message: impl Into<String>) -> RelayError {
    RelayError::Forbidden(message.into())
}

pub fn unauthorized(message: impl Into<String>) -> RelayError {
    RelayError::Unauthorized(message.into())
}

pub fn too_large(message: impl Into<String>) -> RelayError {
    RelayError::TooLarge(message.into())
}

/// A store failure as the caller sees it: a fault of the storage, never of the request.
impl From<StoreError> for RelayError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Busy(m) => RelayError::Unavailable(format!("database busy: {m}")),
            StoreError::ReadOnly(m) => {
                RelayError::Unavailable(format!("database is read-only: {m}"))
            }
            StoreError::Full(m) => RelayError::StorageFull(format!("database full: {m}")),
            StoreError::Constraint(m) => RelayError::Internal(format!("constraint failed: {m}")),
            StoreError::Refused(m) => RelayError::Internal(format!("statement refused: {m}")),
            StoreError::Unavailable(m) => {
                RelayError::Unavailable(format!("database unreachable: {m}"))
            }
            StoreError::Conflict(m) => {
                RelayError::Unavailable(format!("database conflict, retry: {m}"))
            }
            StoreError::Other(m) => RelayError::Internal(format!("database error: {m}")),
        }
    }
}
