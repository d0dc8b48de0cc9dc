//! Webhook authenticity: who may post integration events for a source.
//!
//! A source the operator configured with a shared secret accepts only events signed the way
//! GitHub signs them: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`, compared in
//! constant time. The signature is the credential, so no token is needed then. A source without a
//! secret needs the operator token. The secret is kept as the relay setting
//! `webhook-secret:<source>` (set here, or with `agent-relay settings set`); it has to be stored
//! as is, since verifying an HMAC needs the key.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::auth;
use crate::bindings::agent_relay::relay::store;
use crate::bindings::agent_relay::relay::task_types::Integration;
use crate::bindings::agent_relay::relay::types::{Caller, RelayError};
use crate::error::{invalid, unauthorized};
use crate::input::{self, MAX_SHORT_TEXT};

const SIGNATURE_PREFIX: &str = "sha256=";

/// The settings that hold the sources' secrets: this prefix and the source.
pub const SECRET_PREFIX: &str = "webhook-secret:";

pub fn secret_key(source: &str) -> String {
    format!("{SECRET_PREFIX}{source}")
}

/// A secret as it may be stored (empty removes it).
pub fn check_secret(secret: &str) -> Result<(), RelayError> {
    input::text("secret", secret, MAX_SHORT_TEXT)?;
    if !secret.is_empty() && secret.trim() != secret {
        return Err(invalid("secret must not have surrounding spaces"));
    }
    Ok(())
}

fn secret(source: &str) -> Result<Option<String>, RelayError> {
    Ok(store::get_setting(&secret_key(source))?.filter(|s| !s.is_empty()))
}

/// Refuses an event that is neither signed with the source's secret nor sent by the operator.
pub fn authenticate(
    caller: &Caller,
    source: &str,
    signature: Option<&str>,
    raw_body: Option<&str>,
) -> Result<(), RelayError> {
    let Some(secret) = secret(source)? else {
        return auth::require_operator(caller);
    };
    let Some(signature) = signature else {
        return Err(unauthorized(format!(
            "source {source} requires an X-Hub-Signature-256 header (sha256=HMAC of the body)"
        )));
    };
    let Some(raw_body) = raw_body else {
        return Err(unauthorized(format!(
            "source {source} requires a signed request; the raw body was not passed on"
        )));
    };
    if verify(&secret, raw_body.as_bytes(), signature) {
        Ok(())
    } else {
        Err(unauthorized(format!(
            "the X-Hub-Signature-256 of this event does not match source {source}'s secret"
        )))
    }
}

/// Whether `signature` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under `secret`.
fn verify(secret: &str, body: &[u8], signature: &str) -> bool {
    let Some(given) = signature
        .trim()
        .strip_prefix(SIGNATURE_PREFIX)
        .and_then(|hex_digest| hex::decode(hex_digest.to_ascii_lowercase()).ok())
    else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    expected.as_slice().ct_eq(&given).into()
}

/// Sets (or, with no secret, removes) a source's shared secret. Operator only.
pub fn configure(
    caller: &Caller,
    source: &str,
    secret: Option<&str>,
) -> Result<Integration, RelayError> {
    auth::require_operator(caller)?;
    input::id("source", source)?;
    let secret = secret.unwrap_or("");
    check_secret(secret)?;
    store::set_setting(&secret_key(source), secret)?;
    Ok(Integration {
        source: source.to_owned(),
        signed: !secret.is_empty(),
    })
}
