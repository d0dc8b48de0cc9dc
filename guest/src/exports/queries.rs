//! `queries`: agents, messages and the schema, read-only.

use super::{Outcome, Relay, now_ms};
use crate::bindings::agent_relay::relay::types::{
    AgentCard, AgentQuery, Caller, Identity, Message, MessageQuery, PollQuery, SchemaReport,
    ThreadQuery,
};
use crate::bindings::exports::agent_relay::relay::queries::Guest;
use crate::{agents, messages, schema};

impl Guest for Relay {
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
        schema::status(&caller)
    }

    fn poll_inbox(caller: Caller, agent_id: String, query: PollQuery) -> Outcome<Vec<Message>> {
        messages::inbox(&caller, &agent_id, &query, now_ms())
    }

    fn list_messages(caller: Caller, query: MessageQuery) -> Outcome<Vec<Message>> {
        messages::list(&caller, &query, now_ms())
    }
}
