//! `pair-queries`: pair sessions, read-only.

use super::{Outcome, Relay};
use crate::bindings::agent_relay::relay::pair_types::{Pair, PairQuery};
use crate::bindings::agent_relay::relay::types::Caller;
use crate::bindings::exports::agent_relay::relay::pair_queries::Guest;
use crate::pairs;

impl Guest for Relay {
    fn list_pairs(caller: Caller, query: PairQuery) -> Outcome<Vec<Pair>> {
        pairs::list(&caller, &query)
    }

    fn get_pair(caller: Caller, pair_id: i64) -> Outcome<Pair> {
        pairs::get(&caller, pair_id)
    }
}
