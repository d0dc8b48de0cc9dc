//! Relay settings the operator may change (stored through the host's keyed settings).

use crate::bindings::agent_relay::relay::store;
use crate::bindings::agent_relay::relay::types::RelayError;

/// Agents not seen for this long are marked offline by the reaper.
pub const STALE_TTL_MS: &str = "stale-ttl-ms";
/// The lease a claim takes when the caller names none.
pub const DEFAULT_LEASE_MS: &str = "default-lease-ms";
/// The longest lease a caller may ask for.
pub const MAX_LEASE_MS: &str = "max-lease-ms";
/// Claims a job may have; when the last of them ends without completion it is dead-lettered.
pub const MAX_ATTEMPTS: &str = "max-attempts";

/// The bytes one page of a list may hold (rows as the store counts them); a page stops before
/// the row that would pass it.
pub const PAGE_BYTES: &str = "page-bytes";

/// The page budget's bounds: a page must hold the largest single row, and stay well inside the
/// 64 MiB a call's instance has by default (the rows, the records made of them and the answer
/// are all in its memory at once).
const PAGE_BYTES_MIN: i64 = 64 << 10;
const PAGE_BYTES_MAX: i64 = 8 << 20;

const DEFAULTS: &[(&str, i64)] = &[
    (STALE_TTL_MS, 5 * 60 * 1000),
    (DEFAULT_LEASE_MS, 5 * 60 * 1000),
    (MAX_LEASE_MS, 24 * 60 * 60 * 1000),
    (MAX_ATTEMPTS, 5),
    (PAGE_BYTES, 1 << 20),
];

/// Reads a numeric setting, falling back to its default when unset or unreadable.
pub fn number(key: &str) -> Result<i64, RelayError> {
    let default = DEFAULTS
        .iter()
        .find(|(name, _)| *name == key)
        .map_or(0, |(_, value)| *value);
    Ok(store::get_setting(key)?
        .and_then(|text| text.trim().parse().ok())
        .filter(|value: &i64| *value > 0)
        .unwrap_or(default))
}

/// The page budget in bytes, within its bounds.
pub fn page_bytes() -> Result<u64, RelayError> {
    let bytes = number(PAGE_BYTES)?.clamp(PAGE_BYTES_MIN, PAGE_BYTES_MAX);
    Ok(u64::try_from(bytes).unwrap_or(1 << 20))
}
