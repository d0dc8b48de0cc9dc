//! `channel-commands`: bindings, inbound events and orchestrators, one write transaction each.

use super::{Outcome, Relay, now_ms};
use crate::bindings::agent_relay::relay::channel_types::{
    BindingInput, ChannelBinding, InboundEvent, InboundResult, ManagedAgentsInput, Orchestrator,
    OrchestratorStatusInput, RegisterOrchestratorInput, RegisteredOrchestrator, SpawnInput,
};
use crate::bindings::agent_relay::relay::types::{Caller, Deleted, SentMessage};
use crate::bindings::exports::agent_relay::relay::channel_commands::Guest;
use crate::{channels, orchestrators, retire};

impl Guest for Relay {
    fn upsert_binding(
        caller: Caller,
        channel_id: String,
        input: BindingInput,
    ) -> Outcome<ChannelBinding> {
        channels::upsert_binding(&caller, &channel_id, &input, now_ms())
    }

    fn delete_binding(caller: Caller, channel_id: String, binding_id: String) -> Outcome<Deleted> {
        channels::delete_binding(&caller, &channel_id, &binding_id)
    }

    fn route_inbound(
        caller: Caller,
        channel_id: String,
        input: InboundEvent,
    ) -> Outcome<InboundResult> {
        channels::route_inbound(&caller, &channel_id, input, now_ms())
    }

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
