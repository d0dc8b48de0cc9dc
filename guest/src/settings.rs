//! Relay settings: which keys exist, their defaults and bounds, and the values in effect.
//!
//! A value is either stored (see `operator_settings`, what `agent-relay settings set` calls) and
//! holds for every run, or given to one run of the host (`--setting`) and never written; the
//! store answers the run's value first. Fault injection is a one-run setting only: a value an
//! older relay stored is ignored. A stored value outside its bounds is ignored too (the default
//! applies), so a bad write by an older version cannot break a call.

use crate::bindings::agent_relay::relay::store;
#[cfg(feature = "faults")]
use crate::bindings::agent_relay::relay::store::SettingSource;
use crate::bindings::agent_relay::relay::types::RelayError;

/// Agents not seen for this long are marked offline by the reaper.
pub const STALE_TTL_MS: &str = "stale-ttl-ms";
/// The lease a claim takes when the caller names none.
pub const DEFAULT_LEASE_MS: &str = "default-lease-ms";
/// The longest lease a caller may ask for.
pub const MAX_LEASE_MS: &str = "max-lease-ms";
/// Claims a job may have; when the last of them ends without completion it is dead-lettered.
pub const MAX_ATTEMPTS: &str = "max-attempts";
/// The delay (ms) before a released job's next attempt may be claimed, doubled for each
/// attempt it has had, capped, with a deterministic jitter (`claims::retry_backoff_ms`).
pub const RETRY_BACKOFF_MS: &str = "retry-backoff-ms";
/// The bytes one page of a list may hold (rows as the store counts them); a page stops before
/// the row that would pass it.
pub const PAGE_BYTES: &str = "page-bytes";
/// Arms the fault-injection exports of the test component, for one run only.
pub const FAULT_INJECTION: &str = "fault-injection";

/// Shortest lease a claim may ask for (and so the least either lease setting may be).
pub const MIN_LEASE_MS: i64 = 100;

const SECOND: i64 = 1000;
const DAY: i64 = 24 * 60 * 60 * SECOND;

/// What values a setting takes.
pub enum Kind {
    /// A whole number within bounds.
    Number { default: i64, min: i64, max: i64 },
    /// `on` or `off`, given for one run only.
    RunSwitch,
}

/// A setting the relay knows (besides the per-source webhook secrets).
pub struct Known {
    pub key: &'static str,
    pub kind: Kind,
    pub about: &'static str,
}

pub const KNOWN: &[Known] = &[
    Known {
        key: STALE_TTL_MS,
        kind: Kind::Number {
            default: 5 * 60 * SECOND,
            min: SECOND,
            max: 366 * DAY,
        },
        about: "agents and orchestrators not seen for this long (ms) go offline",
    },
    Known {
        key: DEFAULT_LEASE_MS,
        kind: Kind::Number {
            default: 5 * 60 * SECOND,
            min: MIN_LEASE_MS,
            max: 30 * DAY,
        },
        about: "the lease (ms) a claim takes when it names none (at most max-lease-ms)",
    },
    Known {
        key: MAX_LEASE_MS,
        kind: Kind::Number {
            default: DAY,
            min: MIN_LEASE_MS,
            max: 30 * DAY,
        },
        about: "the longest lease (ms) a claim may ask for",
    },
    Known {
        key: MAX_ATTEMPTS,
        kind: Kind::Number {
            default: 5,
            min: 1,
            max: 10_000,
        },
        about: "claims a job may have; when the last ends without completion it is dead-lettered",
    },
    Known {
        key: RETRY_BACKOFF_MS,
        kind: Kind::Number {
            default: 0,
            min: 0,
            max: 60 * 60 * SECOND,
        },
        about: "the base delay (ms) before a released job may be claimed again, \
                doubled per attempt with jitter, capped at 64 times",
    },
    // A page must hold the largest single row, and stay well inside the 64 MiB a call's instance
    // has by default (the rows, the records made of them and the answer are all in its memory).
    Known {
        key: PAGE_BYTES,
        kind: Kind::Number {
            default: 1 << 20,
            min: 64 << 10,
            max: 8 << 20,
        },
        about: "the bytes of stored rows one page of a list may hold",
    },
    Known {
        key: FAULT_INJECTION,
        kind: Kind::RunSwitch,
        about: "on: the test component's fault-injection exports work (one run only, never stored)",
    },
];

/// `text` as a whole number within `min..=max`; why not otherwise.
pub fn parse_number(text: &str, min: i64, max: i64) -> Result<i64, String> {
    text.trim()
        .parse::<i64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("must be a whole number from {min} to {max}, got {text:?}"))
}

/// A numeric setting's default (what holds while nobody sets it); `None` for a key that is not
/// a numeric setting.
pub fn default_number(key: &str) -> Option<i64> {
    match KNOWN.iter().find(|k| k.key == key).map(|k| &k.kind) {
        Some(Kind::Number { default, .. }) => Some(*default),
        _ => None,
    }
}

/// A numeric setting in effect: the run's or the stored value when it is within the bounds,
/// else the default.
pub fn number(key: &str) -> Result<i64, RelayError> {
    let Some(Kind::Number { default, min, max }) =
        KNOWN.iter().find(|k| k.key == key).map(|k| &k.kind)
    else {
        return Err(RelayError::Invalid(format!(
            "{key} is not a numeric setting"
        )));
    };
    Ok(store::get_setting(key)?
        .and_then(|text| parse_number(&text, *min, *max).ok())
        .unwrap_or(*default))
}

/// The page budget in bytes.
pub fn page_bytes() -> Result<u64, RelayError> {
    Ok(u64::try_from(number(PAGE_BYTES)?).unwrap_or(1 << 20))
}

/// Whether fault injection is on: only a value given for this run counts, never a stored one.
#[cfg(feature = "faults")]
pub fn fault_injection_on() -> Result<bool, RelayError> {
    Ok(store::list_settings(FAULT_INJECTION)?
        .iter()
        .any(|s| s.key == FAULT_INJECTION && s.source == SettingSource::Run && s.value == "on"))
}
