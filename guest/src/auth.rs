//! Identity: who the caller is, and whether they may act for an agent.
//!
//! Registering a new agent hands back a random bearer token once; only its SHA-256 is stored.
//! The host establishes only whether the caller holds the operator token; which agent a bearer
//! token belongs to, and what that agent may do, is decided here.

use sha2::{Digest, Sha256};

use crate::bindings::agent_relay::relay::types::{Caller, RelayError};
use crate::db;
use crate::error::{forbidden, unauthorized};
use crate::params;

/// The identity behind a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Operator,
    Agent(String),
}

/// A fresh agent token: 32 random bytes, hex, with a prefix that makes it recognisable in configs.
pub fn new_token() -> Result<String, RelayError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| RelayError::Internal(format!("no randomness for a token: {e}")))?;
    Ok(format!("relay_{}", hex::encode(bytes)))
}

/// The stored form of a token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Establishes who is calling; anonymous callers and unknown tokens are refused.
pub fn identify(caller: &Caller) -> Result<Identity, RelayError> {
    match caller {
        Caller::Operator => Ok(Identity::Operator),
        Caller::Anonymous => Err(unauthorized(
            "missing credentials: send Authorization: Bearer <agent or operator token>",
        )),
        Caller::Bearer(token) => {
            // Looked up by its SHA-256, so the lookup's timing can tell at most how much of a
            // hash matched, which says nothing about a token that would produce it: there is
            // nothing left to compare in constant time once the row is found.
            let row = db::query_one(
                "SELECT id FROM agents WHERE token_hash = ?",
                &params![token_hash(token).as_str()],
            )?;
            match row {
                Some(row) => Ok(Identity::Agent(row.text("id")?)),
                None => Err(unauthorized("the bearer token is not valid for any agent")),
            }
        }
    }
}

/// Refuses everyone but the operator.
pub fn require_operator(caller: &Caller) -> Result<(), RelayError> {
    match identify(caller)? {
        Identity::Operator => Ok(()),
        Identity::Agent(id) => Err(forbidden(format!(
            "this operation needs the operator token; agent {id} may not do it"
        ))),
    }
}

/// Allows the operator, or the agent `agent_id` itself; refuses every other agent.
pub fn act_as(caller: &Caller, agent_id: &str) -> Result<Identity, RelayError> {
    let identity = identify(caller)?;
    match &identity {
        Identity::Agent(id) if id != agent_id => Err(forbidden(format!(
            "the token belongs to agent {id}; it cannot act as {agent_id}"
        ))),
        _ => Ok(identity),
    }
}
