//! `pair-commands`: creating pairs, acting on them and messaging within them.

use super::{Outcome, Relay, now_ms};
use crate::bindings::agent_relay::relay::pair_types::{
    CreatePairInput, Pair, PairActionInput, PairMessageInput,
};
use crate::bindings::agent_relay::relay::types::{Caller, SentMessage};
use crate::bindings::exports::agent_relay::relay::pair_commands::Guest;
use crate::pairs;

impl Guest for Relay {
    fn create_pair(caller: Caller, input: CreatePairInput) -> Outcome<Pair> {
        pairs::create(&caller, &input, now_ms())
    }

    fn pair_action(caller: Caller, pair_id: i64, input: PairActionInput) -> Outcome<Pair> {
        pairs::act(&caller, pair_id, &input, now_ms())
    }

    fn send_pair_message(
        caller: Caller,
        pair_id: i64,
        input: PairMessageInput,
    ) -> Outcome<SentMessage> {
        pairs::send(&caller, pair_id, input, now_ms())
    }
}
