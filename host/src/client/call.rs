//! `agent-relay call --url URL EXPORT ARGS`: the same call as against the file, made through a
//! running relay, so its writes wake that relay's waiters.
//!
//! The route table says which request reaches an export; the arguments are put where the
//! bridge takes them from (path variables by name, `query` into the query string, `input` into
//! the body, a route's header parameter into its header).

use serde_json::{Map, Value as Json};
use std::process::ExitCode;

use std::time::Duration;

use super::relay::{RelayClient, Request, segment};
use super::{Connection, Exit, Failure};
use crate::routes::{Delivery, ROUTES, Route};

/// Calls `export` with `args` (a JSON object keyed by camelCase parameter) through the relay.
///
/// # Errors
/// The export has no route, or an argument has no place in its request.
pub fn call_remote(connection: &Connection, export: &str, args: &Json) -> anyhow::Result<ExitCode> {
    let Some(route) = ROUTES
        .iter()
        .find(|r| r.export == export && r.delivery != Delivery::Streamed)
    else {
        anyhow::bail!(
            "{export} has no HTTP route; call it against the database file instead (--db PATH)"
        );
    };
    let Some(args) = args.as_object() else {
        anyhow::bail!("ARGS must be a JSON object keyed by parameter name");
    };
    let body = request(connection, route, args.clone()).map_err(|f| anyhow::anyhow!(f.message))?;
    crate::stdout::say!("{}", serde_json::to_string_pretty(&body)?);
    Ok(ExitCode::SUCCESS)
}

fn request(
    connection: &Connection,
    route: &Route,
    mut args: Map<String, Json>,
) -> Result<Json, Failure> {
    let relay = RelayClient::connect(connection)?;
    let mut path = String::new();
    for part in route.path.split('/').filter(|p| !p.is_empty()) {
        path.push('/');
        match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Some(name) => {
                let value = args.remove(name).ok_or_else(|| {
                    Failure::usage(format!("{} needs the argument {name}", route.export))
                })?;
                path.push_str(&segment(&scalar(name, &value)?));
            }
            None => path.push_str(part),
        }
    }
    let mut query = Vec::new();
    if let Some(Json::Object(fields)) = args.remove("query") {
        for (key, value) in fields {
            if !value.is_null() {
                let text = scalar(&key, &value)?;
                query.push((key, text));
            }
        }
    }
    let body = args.remove("input");
    // Filled by the relay from the request itself.
    args.remove("rawBody");
    let header = route.header.and_then(|(header, param)| {
        args.remove(&agent_relay_core::bridge::camel_case(param))
            .map(|value| (header, value))
    });
    if let Some(extra) = args.keys().next() {
        return Err(Failure::usage(format!(
            "{} takes no argument {extra} over HTTP",
            route.export
        )));
    }
    let query: Vec<(&str, String)> = query.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let header = header
        .map(|(name, value)| scalar(name, &value).map(|value| (name, value)))
        .transpose()?;
    let request = Request {
        method: route.method,
        path: &path,
        query: &query,
        body: body.as_ref(),
        header: header.as_ref().map(|(name, value)| (*name, value.as_str())),
        wait: Duration::ZERO,
    };
    match relay.send(&request) {
        Ok(answer) => Ok(answer.body),
        Err(failure) => match failure.body {
            // The relay's own error: printed like the file-backed call prints it.
            Some(body) if body.get("error").is_some() => {
                crate::stdout::say!(
                    "{}",
                    serde_json::to_string_pretty(&body).unwrap_or_default()
                );
                Err(Failure::new(Exit::Error, failure.message))
            }
            _ => Err(failure),
        },
    }
}

/// A path, query or header value as text.
fn scalar(name: &str, value: &Json) -> Result<String, Failure> {
    match value {
        Json::String(text) => Ok(text.clone()),
        Json::Number(n) => Ok(n.to_string()),
        Json::Bool(b) => Ok(b.to_string()),
        _ => Err(Failure::usage(format!(
            "{name} must be a string, number or boolean to go in the request"
        ))),
    }
}
