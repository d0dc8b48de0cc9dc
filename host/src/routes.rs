//! The HTTP contract (docs/http-api.md §9) as a table: each route names the export it calls.
//!
//! How a route fills the export's parameters is the bridge's generic rule: path variables by
//! name, the query string into `query`, the JSON body into `input`, the caller from the
//! `Authorization` header. Two more generic rules for operations that must see the request as
//! sent: a parameter named `raw-body` gets the body's exact text, and a route may pass one
//! header's value to a named parameter (`with_header`).
//!
//! A route may also let the caller wait for the answer (see `push.rs`): a *held* route takes
//! `wait=SECONDS` and holds an empty answer (an empty list, or an option's `none`) until a write
//! commits; a *streamed* route serves
//! the export's items as server-sent events, resuming after `Last-Event-ID`. A route may answer
//! 503 when the result reports itself unavailable (`unavailable_when`), so a monitor sees the
//! status code, and 409 when the result reports itself refused (`conflict_when`: a reservation
//! refused with the conflicts that refused it). A route whose export the running component lacks is not mounted.

/// One HTTP route.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub export: &'static str,
    /// Answer 201 instead of 200 when the result says `created: true`.
    pub creates: bool,
    pub delivery: Delivery,
    /// `(HTTP header, parameter)`: the header's value, when sent, fills that parameter.
    pub header: Option<(&'static str, &'static str)>,
    /// `(field, value)`: answer 503 when the result's `field` is the string `value`.
    pub unavailable_when: Option<(&'static str, &'static str)>,
    /// `(field, value)`: answer 409 (with the result as the body) when the result's `field` is
    /// the string `value`.
    pub conflict_when: Option<(&'static str, &'static str)>,
    /// The guest serves callers without credentials here; the OpenAPI document says so.
    pub anonymous: bool,
}

/// How a route's answer reaches the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// One call, one answer.
    Once,
    /// Like `Once`, but `wait=SECONDS` (in the query or the JSON body) holds an empty answer (an
    /// empty list, or `none` of an option) until a write commits.
    Held,
    /// Server-sent events: each item of the list export as it commits, resuming after an id.
    Streamed,
}

impl Route {
    /// Passes the value of `header` to the export's parameter `param`.
    const fn with_header(self, header: &'static str, param: &'static str) -> Route {
        Route {
            header: Some((header, param)),
            ..self
        }
    }

    /// Answers 409 (with the result as the body) when the result's `field` is `value`.
    const fn conflict_when(self, field: &'static str, value: &'static str) -> Route {
        Route {
            conflict_when: Some((field, value)),
            ..self
        }
    }

    /// Documents the route as open to callers without credentials (the guest decides who may).
    const fn anonymous(self) -> Route {
        Route {
            anonymous: true,
            ..self
        }
    }

    /// Answers 503 (with the result as the body) when the result's `field` is `value`.
    const fn unavailable_when(self, field: &'static str, value: &'static str) -> Route {
        Route {
            unavailable_when: Some((field, value)),
            ..self
        }
    }
}

const fn route(method: &'static str, path: &'static str, export: &'static str) -> Route {
    Route {
        method,
        path,
        export,
        creates: false,
        delivery: Delivery::Once,
        header: None,
        unavailable_when: None,
        conflict_when: None,
        anonymous: false,
    }
}

const fn creating(method: &'static str, path: &'static str, export: &'static str) -> Route {
    Route {
        creates: true,
        ..route(method, path, export)
    }
}

const fn held(method: &'static str, path: &'static str, export: &'static str) -> Route {
    Route {
        delivery: Delivery::Held,
        ..route(method, path, export)
    }
}

const fn streamed(path: &'static str, export: &'static str) -> Route {
    Route {
        delivery: Delivery::Streamed,
        ..route("GET", path, export)
    }
}

pub const ROUTES: &[Route] = &[
    // Agents
    creating("POST", "/v1/agents", "register-agent"),
    route("GET", "/v1/agents", "list-agents"),
    route("GET", "/v1/whoami", "whoami"),
    route("GET", "/v1/agents/{agentId}", "get-agent"),
    route("DELETE", "/v1/agents/{agentId}", "delete-agent"),
    route("POST", "/v1/agents/{agentId}/token", "issue-token"),
    route("POST", "/v1/agents/{agentId}/heartbeat", "heartbeat"),
    route("PUT", "/v1/agents/{agentId}/status", "set-agent-status"),
    route("PUT", "/v1/agents/{agentId}/label", "set-agent-label"),
    held("GET", "/v1/agents/{agentId}/inbox", "poll-inbox"),
    streamed("/v1/agents/{agentId}/stream", "poll-inbox"),
    // Messages, threads, receipts and claims
    creating("POST", "/v1/messages", "send-message"),
    route("GET", "/v1/messages/{messageId}", "get-message"),
    route("GET", "/v1/threads/{threadId}", "get-thread"),
    route("POST", "/v1/messages/{messageId}/read", "mark-read"),
    route("POST", "/v1/messages/{messageId}/claim", "claim-message"),
    route("POST", "/v1/messages/{messageId}/renew", "renew-claim"),
    route("POST", "/v1/messages/{messageId}/release", "release-claim"),
    route(
        "POST",
        "/v1/messages/{messageId}/complete",
        "complete-claim",
    ),
    held("POST", "/v1/agents/{agentId}/claim-next", "claim-next"),
    // claim-next with `max` (docs/http-api.md §2, "Taking several jobs at once").
    held(
        "POST",
        "/v1/agents/{agentId}/claim-next-batch",
        "claim-next-batch",
    ),
    route("GET", "/v1/messages", "list-messages"),
    route("GET", "/v1/messages/search", "search-messages"),
    route("POST", "/v1/messages/{messageId}/cancel", "cancel-message"),
    route("POST", "/v1/messages/{messageId}/retry", "retry-message"),
    // Channels, bindings and routing
    route("GET", "/v1/channels", "list-channels"),
    route("GET", "/v1/channels/{channelId}", "get-channel"),
    route("GET", "/v1/channels/{channelId}/bindings", "list-bindings"),
    route("PUT", "/v1/channels/{channelId}/bindings", "upsert-binding"),
    route(
        "DELETE",
        "/v1/channels/{channelId}/bindings/{bindingId}",
        "delete-binding",
    ),
    route("GET", "/v1/channels/{channelId}/route", "resolve-route"),
    route("GET", "/v1/bindings", "list-all-bindings"),
    route("POST", "/v1/channels/{channelId}/inbound", "route-inbound"),
    // Orchestrators and spawn requests
    creating("POST", "/v1/orchestrators", "register-orchestrator"),
    route("GET", "/v1/orchestrators", "list-orchestrators"),
    route(
        "GET",
        "/v1/orchestrators/{orchestratorId}",
        "get-orchestrator",
    ),
    route(
        "DELETE",
        "/v1/orchestrators/{orchestratorId}",
        "delete-orchestrator",
    ),
    route(
        "POST",
        "/v1/orchestrators/{orchestratorId}/heartbeat",
        "heartbeat-orchestrator",
    ),
    route(
        "PUT",
        "/v1/orchestrators/{orchestratorId}/status",
        "set-orchestrator-status",
    ),
    route(
        "PUT",
        "/v1/orchestrators/{orchestratorId}/agents",
        "report-managed-agents",
    ),
    creating(
        "POST",
        "/v1/orchestrators/{orchestratorId}/spawn",
        "request-spawn",
    ),
    // Tasks from integration events; a signed source's events carry GitHub's signature header.
    creating("POST", "/v1/integrations/{source}/events", "ingest-event")
        .with_header("x-hub-signature-256", "signature"),
    // Beyond docs/http-api.md §9: the operator sets or removes a source's shared secret.
    route("PUT", "/v1/integrations/{source}", "configure-integration"),
    route("GET", "/v1/tasks", "list-tasks"),
    route("GET", "/v1/tasks/{taskId}", "get-task"),
    route("GET", "/v1/tasks/{taskId}/events", "list-task-events"),
    route("PUT", "/v1/tasks/{taskId}/status", "set-task-status"),
    // Pair sessions
    route("POST", "/v1/pairs", "create-pair"),
    route("GET", "/v1/pairs", "list-pairs"),
    route("GET", "/v1/pairs/{pairId}", "get-pair"),
    route("POST", "/v1/pairs/{pairId}/actions", "pair-action"),
    creating("POST", "/v1/pairs/{pairId}/messages", "send-pair-message"),
    // File reservations and the commit guard's question
    route("POST", "/v1/reservations", "reserve-paths").conflict_when("outcome", "refused"),
    route("GET", "/v1/reservations", "list-reservations"),
    route("POST", "/v1/reservations/check", "check-paths"),
    route("POST", "/v1/reservations/release", "release-paths"),
    route(
        "POST",
        "/v1/reservations/{reservationId}/renew",
        "renew-reservation",
    ),
    route(
        "POST",
        "/v1/reservations/{reservationId}/release",
        "release-reservation",
    ),
    // Activity feed and health
    route("POST", "/v1/activity", "record-activity"),
    route("GET", "/v1/activity", "list-activity"),
    route("GET", "/v1/health", "health")
        .unavailable_when("status", "error")
        .anonymous(),
    route("GET", "/v1/stats", "get-stats"),
    // Maintenance (beyond docs/http-api.md §9): run the reaper now.
    route("POST", "/v1/reap", "reap"),
    // Fault injection: only the test component has these exports (and refuses them unless the
    // `fault-injection` setting is on).
    route(
        "POST",
        "/v1/test/faults/write-then-fail",
        "fault-write-then-fail",
    ),
    route(
        "POST",
        "/v1/test/faults/write-then-trap",
        "fault-write-then-trap",
    ),
    route(
        "POST",
        "/v1/test/faults/write-then-spin",
        "fault-write-then-spin",
    ),
    route(
        "POST",
        "/v1/test/faults/write-then-exhaust-memory",
        "fault-write-then-exhaust-memory",
    ),
];
