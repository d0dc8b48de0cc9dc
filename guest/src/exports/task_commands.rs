//! `task-commands`: integration events, task status and integrations, one write transaction each.

use super::{Outcome, Relay, now_ms};
use crate::bindings::agent_relay::relay::task_types::{
    IngestedEvent, Integration, IntegrationEventInput, IntegrationInput, Task, TaskStatusInput,
};
use crate::bindings::agent_relay::relay::types::Caller;
use crate::bindings::exports::agent_relay::relay::task_commands::Guest;
use crate::{tasks, webhooks};

impl Guest for Relay {
    fn ingest_event(
        caller: Caller,
        source: String,
        input: IntegrationEventInput,
        signature: Option<String>,
        raw_body: Option<String>,
    ) -> Outcome<IngestedEvent> {
        tasks::ingest(
            &caller,
            &source,
            input,
            signature.as_deref(),
            raw_body.as_deref(),
            now_ms(),
        )
    }

    fn set_task_status(caller: Caller, task_id: i64, input: TaskStatusInput) -> Outcome<Task> {
        tasks::set_status(&caller, task_id, &input, now_ms())
    }

    fn configure_integration(
        caller: Caller,
        source: String,
        input: IntegrationInput,
    ) -> Outcome<Integration> {
        webhooks::configure(&caller, &source, input.secret.as_deref())
    }
}
