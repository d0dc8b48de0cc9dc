//! `activity-queries`: the operators' activity feed, read-only.

use super::{Outcome, Relay};
use crate::activity;
use crate::bindings::agent_relay::relay::activity_types::{ActivityEvent, ActivityQuery};
use crate::bindings::agent_relay::relay::types::Caller;
use crate::bindings::exports::agent_relay::relay::activity_queries::Guest;

impl Guest for Relay {
    fn list_activity(caller: Caller, query: ActivityQuery) -> Outcome<Vec<ActivityEvent>> {
        activity::list(&caller, &query)
    }
}
