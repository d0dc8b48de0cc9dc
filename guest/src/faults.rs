//! Deliberate failures for fault tests, refused unless the `fault-injection` setting is `on` for
//! this run (a stored value does not count: see `settings`).
//! Each writes a message first so a test can see that the host rolled it back.

use crate::bindings::agent_relay::relay::types::{Caller, RelayError};
use crate::error::forbidden;
use crate::{auth, db, params, settings};

fn armed(caller: &Caller, body: &str, now: i64) -> Result<(), RelayError> {
    auth::require_operator(caller)?;
    if !settings::fault_injection_on()? {
        return Err(forbidden(
            "fault injection is off; start the relay with --setting fault-injection=on (one run only)",
        ));
    }
    db::execute(
        "INSERT INTO messages (from_agent, to_target, kind, body, created_at) VALUES ('system', 'user', 'system', ?, ?)",
        &params![body, now],
    )?;
    Ok(())
}

pub fn write_then_fail(caller: &Caller, body: &str, now: i64) -> Result<(), RelayError> {
    armed(caller, body, now)?;
    Err(RelayError::Conflict(
        "failed on purpose after writing".to_owned(),
    ))
}

#[allow(clippy::panic)]
pub fn write_then_trap(caller: &Caller, body: &str, now: i64) -> Result<(), RelayError> {
    armed(caller, body, now)?;
    panic!("trapping on purpose after writing");
}

pub fn write_then_spin(caller: &Caller, body: &str, now: i64) -> Result<(), RelayError> {
    armed(caller, body, now)?;
    let mut counter: u64 = 0;
    loop {
        counter = std::hint::black_box(counter.wrapping_add(1));
    }
}

pub fn write_then_exhaust_memory(caller: &Caller, body: &str, now: i64) -> Result<(), RelayError> {
    armed(caller, body, now)?;
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1u8; 1 << 20]);
        std::hint::black_box(&hoard);
    }
}
