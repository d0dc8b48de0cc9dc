//! The relay's behaviour as a WebAssembly component.
//!
//! Every exported operation arrives here and is handed to the module of its domain. Each module
//! follows the same three steps: validate the input, read and write through the store, build the
//! record to return. The guest sees nothing but the store capability, the clock and randomness;
//! the host wraps every call in one transaction, so an `Err` undoes everything the call wrote.

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

mod activity;
mod agents;
mod auth;
mod channels;
mod claims;
mod db;
mod error;
#[cfg(feature = "faults")]
mod faults;
mod health;
mod input;
mod messages;
mod orchestrators;
mod pairs;
mod schema;
mod settings;
mod tasks;
mod upgrade;
mod upgrade06;
mod webhooks;

use bindings::agent_relay::relay::types::{
    AgentCard, AgentQuery, Caller, ClaimInput, ClaimNextInput, CompleteInput, Deleted, Identity,
    LabelInput, Message, MessageQuery, PollQuery, ReapReport, RegisterAgentInput, RegisteredAgent,
    RelayError, SchemaReport, SeenToken, SendMessageInput, SentMessage, SessionInput, StatusInput,
    ThreadQuery,
};
use bindings::exports::agent_relay::relay::{commands, queries};

/// The component's single entry type; it holds no state between calls.
struct Relay;

/// What every operation returns.
type Outcome<T> = Result<T, RelayError>;

/// The current time in milliseconds since the Unix epoch, from the host's (substitutable) clock.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What a deleted agent leaves behind ends with it: its claims are released (their tasks reopen)
/// and its pairs are cancelled or ended, the other participant told. Nothing of it passes to a
/// new agent that registers the same id.
fn retire_agent(agent_id: &str, now: i64) -> Outcome<()> {
    claims::release_all_of(agent_id, now)?;
    pairs::leave_all(agent_id, now)
}

impl queries::Guest for Relay {
    fn whoami(caller: Caller) -> Outcome<Identity> {
        agents::whoami(&caller)
    }

    fn get_agent(caller: Caller, agent_id: String) -> Outcome<AgentCard> {
        agents::get(&caller, &agent_id)
    }

    fn list_agents(caller: Caller, query: AgentQuery) -> Outcome<Vec<AgentCard>> {
        agents::list(&caller, &query)
    }

    fn get_message(caller: Caller, message_id: i64) -> Outcome<Message> {
        messages::get(&caller, message_id)
    }

    fn get_thread(caller: Caller, thread_id: i64, query: ThreadQuery) -> Outcome<Vec<Message>> {
        messages::thread(&caller, thread_id, &query)
    }

    fn schema_status(caller: Caller) -> Outcome<SchemaReport> {
        auth::require_operator(&caller)?;
        schema::status()
    }

    fn poll_inbox(caller: Caller, agent_id: String, query: PollQuery) -> Outcome<Vec<Message>> {
        messages::inbox(&caller, &agent_id, &query, now_ms())
    }

    fn list_messages(caller: Caller, query: MessageQuery) -> Outcome<Vec<Message>> {
        messages::list(&caller, &query)
    }
}

impl commands::Guest for Relay {
    fn migrate(caller: Caller) -> Outcome<SchemaReport> {
        auth::require_operator(&caller)?;
        schema::migrate(now_ms())
    }

    fn register_agent(caller: Caller, input: RegisterAgentInput) -> Outcome<RegisteredAgent> {
        agents::register(&caller, input, now_ms())
    }

    fn issue_token(caller: Caller, agent_id: String) -> Outcome<RegisteredAgent> {
        agents::issue_token(&caller, &agent_id)
    }

    fn delete_agent(caller: Caller, agent_id: String) -> Outcome<Deleted> {
        let now = now_ms();
        let deleted = agents::delete(&caller, &agent_id, now)?;
        retire_agent(&agent_id, now)?;
        Ok(deleted)
    }

    fn heartbeat(caller: Caller, agent_id: String, input: SessionInput) -> Outcome<AgentCard> {
        agents::heartbeat(&caller, &agent_id, &input, now_ms())
    }

    fn set_agent_status(
        caller: Caller,
        agent_id: String,
        input: StatusInput,
    ) -> Outcome<AgentCard> {
        agents::set_status(&caller, &agent_id, &input, now_ms())
    }

    fn set_agent_label(caller: Caller, agent_id: String, input: LabelInput) -> Outcome<AgentCard> {
        agents::set_label(&caller, &agent_id, &input, now_ms())
    }

    fn send_message(caller: Caller, input: SendMessageInput) -> Outcome<SentMessage> {
        messages::send(&caller, input, now_ms())
    }

    fn mark_read(caller: Caller, message_id: i64, input: ClaimInput) -> Outcome<Message> {
        messages::mark_read(&caller, message_id, &input, now_ms())
    }

    fn claim_message(caller: Caller, message_id: i64, input: ClaimInput) -> Outcome<Message> {
        claims::claim(&caller, message_id, &input, now_ms())
    }

    fn renew_claim(caller: Caller, message_id: i64, input: ClaimInput) -> Outcome<Message> {
        claims::renew(&caller, message_id, &input, now_ms())
    }

    fn release_claim(caller: Caller, message_id: i64, input: ClaimInput) -> Outcome<Message> {
        claims::release(&caller, message_id, &input, now_ms())
    }

    fn complete_claim(caller: Caller, message_id: i64, input: CompleteInput) -> Outcome<Message> {
        claims::complete(&caller, message_id, &input, now_ms())
    }

    fn claim_next(
        caller: Caller,
        agent_id: String,
        input: ClaimNextInput,
    ) -> Outcome<Option<Message>> {
        claims::claim_next(&caller, &agent_id, &input, now_ms())
    }

    fn retry_message(caller: Caller, message_id: i64) -> Outcome<Message> {
        claims::retry(&caller, message_id)
    }

    fn record_agent_calls(caller: Caller, seen: Vec<SeenToken>) -> Outcome<u32> {
        auth::require_operator(&caller)?;
        agents::record_calls(&seen)
    }

    fn reap(caller: Caller) -> Outcome<ReapReport> {
        auth::require_operator(&caller)?;
        let now = now_ms();
        let offline_agents = agents::reap_stale(now)?;
        let (released_claims, dead_lettered) = claims::release_expired(now)?;
        let offline_orchestrators = orchestrators::reap_stale(now)?;
        Ok(ReapReport {
            offline_agents,
            released_claims,
            dead_lettered,
            offline_orchestrators,
        })
    }
}

bindings::export!(Relay with_types_in bindings);
