//! `search-queries`: full-text search over messages.

use super::{Outcome, Relay};
use crate::bindings::agent_relay::relay::search_types::{SearchHit, SearchQuery};
use crate::bindings::agent_relay::relay::types::Caller;
use crate::bindings::exports::agent_relay::relay::search_queries::Guest;
use crate::search;

impl Guest for Relay {
    fn search_messages(caller: Caller, query: SearchQuery) -> Outcome<Vec<SearchHit>> {
        search::search(&caller, &query)
    }
}
