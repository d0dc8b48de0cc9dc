//! The HTTP contract (SPEC section 9) as a table: each route names the export it calls.
//!
//! How a route fills the export's parameters is the bridge's generic rule: path variables by
//! name, the query string into `query`, the JSON body into `input`, the caller from the
//! `Authorization` header.

/// One HTTP route.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub export: &'static str,
    /// Answer 201 instead of 200 when the result says `created: true`.
    pub creates: bool,
}

const fn route(method: &'static str, path: &'static str, export: &'static str) -> Route {
    Route {
        method,
        path,
        export,
        creates: false,
    }
}

const fn creating(method: &'static str, path: &'static str, export: &'static str) -> Route {
    Route {
        method,
        path,
        export,
        creates: true,
    }
}

pub const ROUTES: &[Route] = &[
    // Agents
    creating("POST", "/v1/agents", "register-agent"),
    route("GET", "/v1/agents", "list-agents"),
    route("GET", "/v1/agents/{agentId}", "get-agent"),
    route("DELETE", "/v1/agents/{agentId}", "delete-agent"),
    route("POST", "/v1/agents/{agentId}/heartbeat", "heartbeat"),
    route("PUT", "/v1/agents/{agentId}/status", "set-agent-status"),
    route("PUT", "/v1/agents/{agentId}/label", "set-agent-label"),
    route("GET", "/v1/agents/{agentId}/inbox", "poll-inbox"),
    // Messages, threads, receipts and claims
    creating("POST", "/v1/messages", "send-message"),
    route("GET", "/v1/messages/{messageId}", "get-message"),
    route("GET", "/v1/threads/{threadId}", "get-thread"),
    route("POST", "/v1/messages/{messageId}/read", "mark-read"),
    route("POST", "/v1/messages/{messageId}/claim", "claim-message"),
    route("POST", "/v1/messages/{messageId}/renew", "renew-claim"),
    route("POST", "/v1/messages/{messageId}/release", "release-claim"),
    // Maintenance (beyond SPEC 9): run the reaper now.
    route("POST", "/v1/reap", "reap"),
    // Fault injection (refused unless the `fault-injection` setting is on).
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
