//! `reservation-commands`: reserving, renewing and releasing paths.

use super::{Outcome, Relay, now_ms};
use crate::bindings::agent_relay::relay::reservation_types::{
    ReleasePathsInput, ReleaseReservationInput, RenewReservationInput, Reservation,
    ReservationAnswer, ReserveInput,
};
use crate::bindings::agent_relay::relay::types::Caller;
use crate::bindings::exports::agent_relay::relay::reservation_commands::Guest;
use crate::reservations;

impl Guest for Relay {
    fn reserve_paths(caller: Caller, input: ReserveInput) -> Outcome<ReservationAnswer> {
        reservations::reserve(&caller, &input, now_ms())
    }

    fn renew_reservation(
        caller: Caller,
        reservation_id: i64,
        input: RenewReservationInput,
    ) -> Outcome<Reservation> {
        reservations::renew(&caller, reservation_id, &input, now_ms())
    }

    fn release_reservation(
        caller: Caller,
        reservation_id: i64,
        input: ReleaseReservationInput,
    ) -> Outcome<Reservation> {
        reservations::release(&caller, reservation_id, &input, now_ms())
    }

    fn release_paths(caller: Caller, input: ReleasePathsInput) -> Outcome<Vec<Reservation>> {
        reservations::release_paths(&caller, &input, now_ms())
    }
}
