//! `channel-commands`: bindings and inbound events, one write transaction each.

use super::{Outcome, Relay, now_ms};
use crate::bindings::agent_relay::relay::channel_types::{
    BindingInput, ChannelBinding, InboundEvent, InboundResult,
};
use crate::bindings::agent_relay::relay::types::{Caller, Deleted};
use crate::bindings::exports::agent_relay::relay::channel_commands::Guest;
use crate::channels;

impl Guest for Relay {
    fn upsert_binding(
        caller: Caller,
        channel_id: String,
        input: BindingInput,
    ) -> Outcome<ChannelBinding> {
        channels::upsert_binding(&caller, &channel_id, &input, now_ms())
    }

    fn delete_binding(caller: Caller, channel_id: String, binding_id: String) -> Outcome<Deleted> {
        channels::delete_binding(&caller, &channel_id, &binding_id)
    }

    fn route_inbound(
        caller: Caller,
        channel_id: String,
        input: InboundEvent,
    ) -> Outcome<InboundResult> {
        channels::route_inbound(&caller, &channel_id, input, now_ms())
    }
}
