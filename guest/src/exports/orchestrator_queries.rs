//! `orchestrator-queries`: orchestrators, read-only.

use super::{Outcome, Relay};
use crate::bindings::agent_relay::relay::channel_types::PageQuery;
use crate::bindings::agent_relay::relay::orchestrator_types::Orchestrator;
use crate::bindings::agent_relay::relay::types::Caller;
use crate::bindings::exports::agent_relay::relay::orchestrator_queries::Guest;
use crate::orchestrators;

impl Guest for Relay {
    fn list_orchestrators(caller: Caller, query: PageQuery) -> Outcome<Vec<Orchestrator>> {
        orchestrators::list(&caller, &query)
    }

    fn get_orchestrator(caller: Caller, orchestrator_id: String) -> Outcome<Orchestrator> {
        orchestrators::get(&caller, &orchestrator_id)
    }
}
