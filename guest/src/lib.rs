//! The relay's behaviour as a WebAssembly component.
//!
//! Every exported operation arrives in `exports/` (one file per WIT interface) and is handed to
//! the module of its domain. Each domain operation follows the same steps: parse (check every
//! field of the request before the stored records are read), authorise (who may), apply (read
//! and write through the store), answer (build the record to return); the long ones name each
//! step as a function (`agents::register`, `messages::send`, `tasks::ingest`). The guest sees
//! nothing but the store capability, the clock and randomness; the host wraps every call in one
//! transaction, so an `Err` undoes everything the call wrote.

#![allow(unsafe_code)] // the `export!` macro emits the component ABI glue

// The shipped world, or (feature `faults`, built for the tests only) the one that adds the
// fault-injection exports.
#[cfg(not(feature = "faults"))]
mod bindings {
    wit_bindgen::generate!({
        world: "relay",
        path: "../wit",
        generate_all,
    });
}
#[cfg(feature = "faults")]
mod bindings {
    wit_bindgen::generate!({
        world: "relay-with-faults",
        path: "../wit",
        generate_all,
    });
}

// Export adapters on top; below them the domains, then the modules they share, down to the
// store. Dependencies point downwards only (docs/architecture.md; `tests/all/layers.rs` checks).
mod exports;

mod activity;
mod agents;
mod auth;
mod channels;
mod claims;
mod db;
mod dependencies;
mod error;
#[cfg(feature = "faults")]
mod faults;
mod globs;
mod health;
mod input;
mod input_rules;
mod messages;
mod operator_settings;
mod orchestrators;
mod pairs;
mod reaper;
mod reservations;
mod retire;
mod schema;
mod search;
mod settings;
mod stats;
mod tasks;
mod upgrade;
mod upgrade06;
mod webhooks;

use exports::Relay;
bindings::export!(Relay with_types_in bindings);
