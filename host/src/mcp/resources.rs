//! The relay's messages as MCP resources (docs/channels.md, "Resources"), for clients without
//! channels (Codex, Cursor, the Python SDK):
//!
//! - `relay://agents/{id}/inbox`: the agent's unread messages, oldest first (one page);
//! - `relay://messages/{id}`: one message;
//! - `relay://threads/{id}`: a thread's messages, in order.
//!
//! `/mcp` lists and reads them through the call runner, as the caller its token names, so a
//! resource shows exactly what the relay's own calls would show that caller (`poll-inbox`,
//! `get-message`, `get-thread`); a refusal is the relay's, with its code. `agent-relay mcp`
//! forwards listing and reading to `/mcp` as it does tools, and keeps the subscriptions itself
//! ([`Subscriptions`]): its stream follower (`channel.rs`) tells a subscribed inbox that changed
//! with `notifications/resources/updated`. `/mcp` is stateless (no session, no stream of its own
//! to push on), so it declares resources without `subscribe`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rmcp::model::{
    ErrorCode, ListResourceTemplatesResult, ListResourcesResult, ReadResourceResult, Resource,
    ResourceContents, ResourceTemplate, ResourceUpdatedNotificationParam, SubscriptionFilter,
};
use rmcp::service::{Peer, SubscriptionSink};
use rmcp::{ErrorData as McpError, RoleServer};
use serde_json::{Map, Value as Json, json};

use agent_relay_core::bridge::ErrorReply;

/// The scheme of every resource the relay serves.
pub const SCHEME: &str = "relay://";
const JSON_TYPE: &str = "application/json";

/// A resource, as its URI names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `relay://agents/{id}/inbox`
    Inbox(String),
    /// `relay://messages/{id}`
    Message(i64),
    /// `relay://threads/{id}`
    Thread(i64),
}

impl Target {
    /// The resource `uri` names.
    ///
    /// # Errors
    /// `uri` is none of the three forms; the message names them.
    pub fn parse(uri: &str) -> Result<Self, McpError> {
        let unknown = || {
            McpError::resource_not_found(
                format!(
                    "no resource {uri}: the relay serves relay://agents/{{id}}/inbox, \
                     relay://messages/{{id}} and relay://threads/{{id}}"
                ),
                None,
            )
        };
        let rest = uri.strip_prefix(SCHEME).ok_or_else(unknown)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let number = |text: &str| {
            text.parse::<i64>()
                .ok()
                .filter(|id| *id > 0)
                .ok_or_else(unknown)
        };
        match parts.as_slice() {
            ["agents", id, "inbox"] if !id.is_empty() => Ok(Self::Inbox(
                percent_decode(id).ok_or_else(unknown)?.to_owned(),
            )),
            ["messages", id] => Ok(Self::Message(number(id)?)),
            ["threads", id] => Ok(Self::Thread(number(id)?)),
            _ => Err(unknown()),
        }
    }

    /// The resource's URI.
    pub fn uri(&self) -> String {
        match self {
            Self::Inbox(agent) => inbox_uri(agent),
            Self::Message(id) => format!("{SCHEME}messages/{id}"),
            Self::Thread(id) => format!("{SCHEME}threads/{id}"),
        }
    }

    /// The export that reads it and that export's arguments (besides `caller`), by camelCase
    /// name, as the bridge takes them.
    pub fn call(&self) -> (&'static str, Map<String, Json>) {
        let named = match self {
            Self::Inbox(agent) => json!({"agentId": agent, "query": {"unread": true}}),
            Self::Message(id) => json!({"messageId": id}),
            Self::Thread(id) => json!({"threadId": id, "query": {}}),
        };
        let export = match self {
            Self::Inbox(_) => "poll-inbox",
            Self::Message(_) => "get-message",
            Self::Thread(_) => "get-thread",
        };
        match named {
            Json::Object(named) => (export, named),
            _ => (export, Map::new()),
        }
    }
}

/// Agent ids are plain text (letters, digits, `-`, `_`, `.`, `:`), so a URI carries them as they
/// are; `%XX` escapes are undone for a client that escapes anyway. `None` for a broken escape.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = text.get(at + 1..at + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The URI of `agent`'s inbox.
pub fn inbox_uri(agent: &str) -> String {
    format!("{SCHEME}agents/{agent}/inbox")
}

/// `resources/list`: the caller's own inbox.
pub fn listing(agent: &str) -> ListResourcesResult {
    ListResourcesResult::with_all_items(vec![
        Resource::new(inbox_uri(agent), format!("inbox of {agent}"))
            .with_title(format!("Unread messages of {agent}"))
            .with_description(
                "Your unread messages, oldest first (one page: fetch_inbox pages on). Subscribe \
                 to be told when a message arrives (agent-relay mcp over stdio).",
            )
            .with_mime_type(JSON_TYPE),
    ])
}

/// `resources/templates/list`: the three forms.
pub fn templates() -> ListResourceTemplatesResult {
    ListResourceTemplatesResult::with_all_items(vec![
        ResourceTemplate::new(format!("{SCHEME}agents/{{id}}/inbox"), "inbox")
            .with_title("An agent's unread messages")
            .with_description(
                "The unread messages of agent {id}'s inbox, oldest first, as the relay's \
                 poll-inbox answers (your own inbox; the operator may read any).",
            )
            .with_mime_type(JSON_TYPE),
        ResourceTemplate::new(format!("{SCHEME}messages/{{id}}"), "message")
            .with_title("A message")
            .with_description("Message {id}, if you may see it (get-message).")
            .with_mime_type(JSON_TYPE),
        ResourceTemplate::new(format!("{SCHEME}threads/{{id}}"), "thread")
            .with_title("A thread")
            .with_description(
                "The messages of thread {id} you may see, in order (get-thread; one page).",
            )
            .with_mime_type(JSON_TYPE),
    ])
}

/// `resources/read`'s answer: the relay's answer as JSON text, fresh only now (a client must
/// not keep it: the next message changes it).
pub fn contents(target: &Target, answer: &Json) -> ReadResourceResult {
    let text = serde_json::to_string_pretty(answer).unwrap_or_else(|_| answer.to_string());
    let mut result = ReadResourceResult::new(vec![
        ResourceContents::text(text, target.uri()).with_mime_type(JSON_TYPE),
    ]);
    result.ttl_ms = Some(0);
    result
}

/// The relay refused to read a resource: a protocol error carrying the relay's status, code and
/// message (404: the resource-not-found code; any other refusal: invalid params or request).
pub fn refused(target: &Target, error: &ErrorReply) -> McpError {
    let code = match error.status {
        404 => ErrorCode::RESOURCE_NOT_FOUND,
        400 | 422 => ErrorCode::INVALID_PARAMS,
        status if status < 500 => ErrorCode::INVALID_REQUEST,
        _ => ErrorCode::INTERNAL_ERROR,
    };
    McpError::new(
        code,
        format!("{}: {} ({})", target.uri(), error.message, error.code),
        Some(json!({"status": error.status, "error": error.to_json()["error"]})),
    )
}

/// What a stdio session subscribed to: URIs by `resources/subscribe` (the handshake era), and
/// the open `subscriptions/listen` streams (2026-07-28), each told through its own sink.
#[derive(Debug, Default)]
pub struct Subscriptions {
    uris: Mutex<BTreeSet<String>>,
    listening: Mutex<BTreeMap<u64, SubscriptionSink>>,
    next: AtomicU64,
}

impl Subscriptions {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.uris
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `resources/subscribe`: only the inbox of the session's own agent, whose stream the
    /// session follows, can be subscribed.
    ///
    /// # Errors
    /// Any other URI (the message says which one can be), or the agent is not known yet.
    pub fn subscribe(&self, uri: &str, agent: Option<&str>) -> Result<(), McpError> {
        let target = Target::parse(uri)?;
        let Some(agent) = agent else {
            return Err(McpError::invalid_request(
                "this session follows no inbox (the token is not an agent's, or the relay has \
                 not said whose it is yet): nothing can be subscribed; read resources instead",
                None,
            ));
        };
        if target != Target::Inbox(agent.to_owned()) {
            return Err(McpError::invalid_params(
                format!(
                    "only your own inbox, {}, can be subscribed (this session follows its \
                     stream); read {uri} with resources/read instead",
                    inbox_uri(agent)
                ),
                None,
            ));
        }
        self.lock().insert(target.uri());
        Ok(())
    }

    /// `resources/unsubscribe`: no more updates for `uri` (not subscribed: nothing to do).
    ///
    /// # Errors
    /// `uri` is not a relay resource.
    pub fn unsubscribe(&self, uri: &str) -> Result<(), McpError> {
        let target = Target::parse(uri)?;
        self.lock().remove(&target.uri());
        Ok(())
    }

    /// What `subscriptions/listen` accepts of `requested`: the own inbox, when asked for by its
    /// URI (`None`: this session follows no inbox, and does not serve the method).
    pub fn accept(
        requested: &SubscriptionFilter,
        agent: Option<&str>,
    ) -> Option<SubscriptionFilter> {
        let own = inbox_uri(agent?);
        let mut accepted = SubscriptionFilter::new();
        accepted.resource_subscriptions = requested
            .resource_subscriptions
            .as_ref()
            .map(|uris| uris.iter().filter(|uri| **uri == own).cloned().collect());
        Some(accepted)
    }

    /// A `subscriptions/listen` stream opened: it is told until [`Self::stop_listening`].
    pub fn listen(&self, sink: SubscriptionSink) -> u64 {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock_listening().insert(key, sink);
        key
    }

    pub fn stop_listening(&self, key: u64) {
        self.lock_listening().remove(&key);
    }

    fn lock_listening(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, SubscriptionSink>> {
        self.listening
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `agent`'s inbox changed: tells the session when it subscribed to it, by either era's way.
    pub async fn inbox_changed(&self, peer: Option<&Peer<RoleServer>>, agent: &str) {
        let uri = inbox_uri(agent);
        let subscribed = self.lock().contains(&uri);
        if let (true, Some(peer)) = (subscribed, peer)
            && let Err(error) = peer
                .notify_resource_updated(ResourceUpdatedNotificationParam::new(uri.clone()))
                .await
        {
            tracing::debug!(%error, "could not tell the session its inbox changed");
        }
        let sinks: Vec<SubscriptionSink> = self.lock_listening().values().cloned().collect();
        for sink in sinks {
            // A stream that did not ask for this inbox refuses it: nothing to tell there.
            if let Err(error) = sink.notify_resource_updated(uri.clone()).await {
                tracing::debug!(%error, "a listening stream was not told of the inbox");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_name_the_three_resources_and_nothing_else() {
        assert_eq!(
            Target::parse("relay://agents/bob/inbox").ok(),
            Some(Target::Inbox("bob".into()))
        );
        assert_eq!(
            Target::parse("relay://agents/a%3Ab/inbox").ok(),
            Some(Target::Inbox("a:b".into()))
        );
        assert_eq!(
            Target::parse("relay://messages/7").ok(),
            Some(Target::Message(7))
        );
        assert_eq!(
            Target::parse("relay://threads/3").ok(),
            Some(Target::Thread(3))
        );
        for bad in [
            "relay://messages/x",
            "relay://messages/-1",
            "relay://agents//inbox",
            "relay://agents/bob",
            "relay://agents/b%zz/inbox",
            "file:///etc/passwd",
            "relay://threads/1/more",
        ] {
            let code = Target::parse(bad).err().map(|error| error.code);
            assert_eq!(code, Some(ErrorCode::RESOURCE_NOT_FOUND), "{bad}");
        }
    }
}
