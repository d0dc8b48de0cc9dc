//! `activity-commands`: recording what an operator did.

use super::{Outcome, Relay, now_ms};
use crate::activity;
use crate::bindings::agent_relay::relay::activity_types::{ActivityEvent, ActivityInput};
use crate::bindings::agent_relay::relay::types::Caller;
use crate::bindings::exports::agent_relay::relay::activity_commands::Guest;

impl Guest for Relay {
    fn record_activity(caller: Caller, input: ActivityInput) -> Outcome<ActivityEvent> {
        activity::record(&caller, &input, now_ms())
    }
}
