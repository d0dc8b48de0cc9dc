//! `orchestrator-commands`: registering orchestrators, their liveness and reports, spawn
//! requests; one write transaction each.

use super::{Outcome, Relay, now_ms};
use crate::bindings::agent_relay::relay::orchestrator_types::{
    ManagedAgentsInput, Orchestrator, OrchestratorStatusInput, RegisterOrchestratorInput,
    RegisteredOrchestrator, SpawnInput,
};
use crate::bindings::agent_relay::relay::types::{Caller, Deleted, SentMessage};
use crate::bindings::exports::agent_relay::relay::orchestrator_commands::Guest;
use crate::{orchestrators, retire};

impl Guest for Relay {
    fn register_orchestrator(
        caller: Caller,
        input: RegisterOrchestratorInput,
    ) -> Outcome<RegisteredOrchestrator> {
        orchestrators::register(&caller, input, now_ms())
    }

    fn heartbeat_orchestrator(caller: Caller, orchestrator_id: String) -> Outcome<Orchestrator> {
        orchestrators::heartbeat(&caller, &orchestrator_id, now_ms())
    }

    fn set_orchestrator_status(
        caller: Caller,
        orchestrator_id: String,
        input: OrchestratorStatusInput,
    ) -> Outcome<Orchestrator> {
        orchestrators::set_status(&caller, &orchestrator_id, input.status, now_ms())
    }

    fn report_managed_agents(
        caller: Caller,
        orchestrator_id: String,
        input: ManagedAgentsInput,
    ) -> Outcome<Orchestrator> {
        orchestrators::report_agents(&caller, &orchestrator_id, input.agents, now_ms())
    }

    fn delete_orchestrator(caller: Caller, orchestrator_id: String) -> Outcome<Deleted> {
        retire::delete_orchestrator(&caller, &orchestrator_id, now_ms())
    }

    fn request_spawn(
        caller: Caller,
        orchestrator_id: String,
        input: SpawnInput,
    ) -> Outcome<SentMessage> {
        orchestrators::spawn(&caller, &orchestrator_id, input, now_ms())
    }
}
