//! `settings-queries`: the settings with their values in effect, and checking a one-run value.

use super::{Outcome, Relay};
use crate::bindings::agent_relay::relay::settings_types::RelaySetting;
use crate::bindings::agent_relay::relay::types::Caller;
use crate::bindings::exports::agent_relay::relay::settings_queries::Guest;
use crate::operator_settings;

impl Guest for Relay {
    fn list_relay_settings(caller: Caller) -> Outcome<Vec<RelaySetting>> {
        operator_settings::list_all(&caller)
    }

    fn get_relay_setting(caller: Caller, key: String) -> Outcome<RelaySetting> {
        operator_settings::get_one(&caller, &key)
    }

    fn check_run_setting(caller: Caller, key: String, value: String) -> Outcome<RelaySetting> {
        operator_settings::check_run(&caller, &key, &value)
    }
}
