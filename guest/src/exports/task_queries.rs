//! `task-queries`: tasks and their events, read-only.

use super::{Outcome, Relay};
use crate::bindings::agent_relay::relay::task_types::{Task, TaskEvent, TaskEventQuery, TaskQuery};
use crate::bindings::agent_relay::relay::types::Caller;
use crate::bindings::exports::agent_relay::relay::task_queries::Guest;
use crate::tasks;

impl Guest for Relay {
    fn list_tasks(caller: Caller, query: TaskQuery) -> Outcome<Vec<Task>> {
        tasks::list(&caller, &query)
    }

    fn get_task(caller: Caller, task_id: i64) -> Outcome<Task> {
        tasks::get(&caller, task_id)
    }

    fn list_task_events(
        caller: Caller,
        task_id: i64,
        query: TaskEventQuery,
    ) -> Outcome<Vec<TaskEvent>> {
        tasks::events(&caller, task_id, &query)
    }
}
