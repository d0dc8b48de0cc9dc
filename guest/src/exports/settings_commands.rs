//! `settings-commands`: storing and removing settings.

use super::{Outcome, Relay};
use crate::bindings::agent_relay::relay::settings_types::RelaySetting;
use crate::bindings::agent_relay::relay::types::Caller;
use crate::bindings::exports::agent_relay::relay::settings_commands::Guest;
use crate::operator_settings;

impl Guest for Relay {
    fn set_relay_setting(caller: Caller, key: String, value: String) -> Outcome<RelaySetting> {
        operator_settings::store_one(&caller, &key, &value)
    }

    fn unset_relay_setting(caller: Caller, key: String) -> Outcome<RelaySetting> {
        operator_settings::unset(&caller, &key)
    }
}
