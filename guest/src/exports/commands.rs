//! `commands`: agents, messages, claims, the reaper and the schema, each in one write transaction.

use super::{Outcome, Relay, now_ms};
use crate::bindings::agent_relay::relay::types::{
    AgentCard, Caller, CancelInput, ClaimBatchInput, ClaimInput, ClaimNextInput, CompleteInput,
    Deleted, LabelInput, Message, ReapReport, RegisterAgentInput, RegisteredAgent, SchemaReport,
    SeenToken, SendMessageInput, SentMessage, SessionInput, StatusInput,
};
use crate::bindings::exports::agent_relay::relay::commands::Guest;
use crate::{agents, channels, claims, dependencies, messages, reaper, retire, schema};

impl Guest for Relay {
    fn migrate(caller: Caller) -> Outcome<SchemaReport> {
        schema::migrate(&caller, now_ms())
    }

    fn register_agent(caller: Caller, input: RegisterAgentInput) -> Outcome<RegisteredAgent> {
        channels::register_agent(&caller, input, now_ms())
    }

    fn issue_token(caller: Caller, agent_id: String) -> Outcome<RegisteredAgent> {
        agents::issue_token(&caller, &agent_id)
    }

    fn delete_agent(caller: Caller, agent_id: String) -> Outcome<Deleted> {
        retire::delete_agent(&caller, &agent_id, now_ms())
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
        dependencies::send(&caller, input, now_ms())
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

    fn claim_next_batch(
        caller: Caller,
        agent_id: String,
        input: ClaimBatchInput,
    ) -> Outcome<Vec<Message>> {
        claims::claim_next_batch(&caller, &agent_id, &input, now_ms())
    }

    fn cancel_message(caller: Caller, message_id: i64, input: CancelInput) -> Outcome<Message> {
        claims::cancel(&caller, message_id, &input, now_ms())
    }

    fn retry_message(caller: Caller, message_id: i64) -> Outcome<Message> {
        claims::retry(&caller, message_id)
    }

    fn record_agent_calls(caller: Caller, seen: Vec<SeenToken>) -> Outcome<u32> {
        // The calls refresh their agents, and keep the claims those agents hold.
        let refreshed = agents::record_calls(&caller, &seen)?;
        claims::keep_held(&seen)?;
        Ok(refreshed)
    }

    fn reap(caller: Caller) -> Outcome<ReapReport> {
        reaper::reap(&caller, now_ms())
    }
}
