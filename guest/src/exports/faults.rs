//! `faults` (the test component only): deliberate failures after a write.

use super::{Relay, now_ms};
use crate::bindings::agent_relay::relay::types::{Caller, RelayError};
use crate::bindings::exports::agent_relay::relay::faults::Guest;
use crate::faults;

impl Guest for Relay {
    fn fault_write_then_fail(caller: Caller, body: String) -> Result<(), RelayError> {
        faults::write_then_fail(&caller, &body, now_ms())
    }

    fn fault_write_then_trap(caller: Caller, body: String) -> Result<(), RelayError> {
        faults::write_then_trap(&caller, &body, now_ms())
    }

    fn fault_write_then_spin(caller: Caller, body: String) -> Result<(), RelayError> {
        faults::write_then_spin(&caller, &body, now_ms())
    }

    fn fault_write_then_exhaust_memory(caller: Caller, body: String) -> Result<(), RelayError> {
        faults::write_then_exhaust_memory(&caller, &body, now_ms())
    }
}
