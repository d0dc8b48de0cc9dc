//! `channel-queries`: channels, their bindings and routes, read-only.

use super::{Outcome, Relay};
use crate::bindings::agent_relay::relay::channel_types::{
    ChannelBinding, ChannelRoute, ChannelSummary, PageQuery, RouteQuery,
};
use crate::bindings::agent_relay::relay::types::Caller;
use crate::bindings::exports::agent_relay::relay::channel_queries::Guest;
use crate::channels;

impl Guest for Relay {
    fn list_channels(caller: Caller, query: PageQuery) -> Outcome<Vec<ChannelSummary>> {
        channels::list(&caller, &query)
    }

    fn get_channel(caller: Caller, channel_id: String) -> Outcome<ChannelSummary> {
        channels::get(&caller, &channel_id)
    }

    fn list_bindings(
        caller: Caller,
        channel_id: String,
        query: PageQuery,
    ) -> Outcome<Vec<ChannelBinding>> {
        channels::list_bindings(&caller, &channel_id, &query)
    }

    fn list_all_bindings(caller: Caller, query: PageQuery) -> Outcome<Vec<ChannelBinding>> {
        channels::list_all_bindings(&caller, &query)
    }

    fn resolve_route(
        caller: Caller,
        channel_id: String,
        query: RouteQuery,
    ) -> Outcome<ChannelRoute> {
        channels::resolve_route(&caller, &channel_id, &query)
    }
}
