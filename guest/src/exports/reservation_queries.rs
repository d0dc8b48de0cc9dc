//! `reservation-queries`: live reservations and the commit guard's question.

use super::{Outcome, Relay, now_ms};
use crate::bindings::agent_relay::relay::reservation_types::{
    CheckAnswer, CheckPathsInput, Reservation, ReservationQuery,
};
use crate::bindings::agent_relay::relay::types::Caller;
use crate::bindings::exports::agent_relay::relay::reservation_queries::Guest;
use crate::reservations;

impl Guest for Relay {
    fn list_reservations(caller: Caller, query: ReservationQuery) -> Outcome<Vec<Reservation>> {
        reservations::list(&caller, &query, now_ms())
    }

    fn check_paths(caller: Caller, input: CheckPathsInput) -> Outcome<CheckAnswer> {
        reservations::check(&caller, &input, now_ms())
    }
}
