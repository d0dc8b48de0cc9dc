//! The HTTP side of the verbs: one blocking request at a time to a running relay, its answers
//! and failures turned into what the user needs to fix them.

use std::time::Duration;

use reqwest::blocking::Client;
use serde_json::Value as Json;

use super::{Acting, Connection, Exit, Failure};

/// How long a request may take beyond any wait it asks the relay for.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What to say when no token was given.
pub const NO_TOKEN: &str = "set RELAY_TOKEN or pass --token (the operator can make one: \
agent-relay agent token ID)";

/// A running relay, reached with one token.
#[derive(Debug)]
pub struct RelayClient {
    base: String,
    token: String,
    http: Client,
    timeout: Duration,
}

/// One request to the relay.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a [(&'a str, String)],
    pub body: Option<&'a Json>,
    /// One extra header, `(name, value)`.
    pub header: Option<(&'a str, &'a str)>,
    /// How long the relay may hold the request (a long-poll) before it answers.
    pub wait: Duration,
}

/// A successful answer: its status and JSON body (`null` for 204).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Json,
}

impl RelayClient {
    /// A client for the relay at `connection.url` with its token.
    ///
    /// # Errors
    /// No token, or a client that cannot be built.
    pub fn connect(connection: &Connection) -> Result<Self, Failure> {
        Self::with_timeout(connection, REQUEST_TIMEOUT)
    }

    /// As [`RelayClient::connect`], with requests cut off after `timeout` (plus any wait they ask for).
    ///
    /// # Errors
    /// As for [`RelayClient::connect`].
    pub fn with_timeout(connection: &Connection, timeout: Duration) -> Result<Self, Failure> {
        let token = connection
            .token
            .as_deref()
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| Failure::usage(NO_TOKEN))?;
        let http = Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|error| Failure::new(Exit::Error, format!("no HTTP client: {error}")))?;
        Ok(Self {
            base: connection.url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            http,
            timeout,
        })
    }

    /// The relay's address, as the user gave it.
    pub fn url(&self) -> &str {
        &self.base
    }

    pub fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Answer, Failure> {
        self.request("GET", path, query, None, Duration::ZERO)
    }

    pub fn post(&self, path: &str, body: &Json) -> Result<Answer, Failure> {
        self.request("POST", path, &[], Some(body), Duration::ZERO)
    }

    pub fn put(&self, path: &str, body: &Json) -> Result<Answer, Failure> {
        self.request("PUT", path, &[], Some(body), Duration::ZERO)
    }

    pub fn delete(&self, path: &str) -> Result<Answer, Failure> {
        self.request("DELETE", path, &[], None, Duration::ZERO)
    }

    /// One request; `wait` is how long the relay may hold it (a long-poll) before it answers.
    ///
    /// # Errors
    /// The relay is unreachable or slow, or it answered with an error status.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Json>,
        wait: Duration,
    ) -> Result<Answer, Failure> {
        self.send(&Request {
            method,
            path,
            query,
            body,
            header: None,
            wait,
        })
    }

    /// Sends `request`.
    ///
    /// # Errors
    /// As for [`RelayClient::request`].
    pub fn send(&self, request: &Request<'_>) -> Result<Answer, Failure> {
        let mut url = format!("{}{}", self.base, request.path);
        if !request.query.is_empty() {
            let mut pairs = form_urlencoded::Serializer::new(String::new());
            for (key, value) in request.query {
                pairs.append_pair(key, value);
            }
            url.push('?');
            url.push_str(&pairs.finish());
        }
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| Failure::new(Exit::Error, format!("no HTTP method {}", request.method)))?;
        let mut builder = self
            .http
            .request(method, &url)
            .bearer_auth(&self.token)
            .timeout(self.timeout + request.wait);
        if let Some(body) = request.body {
            builder = builder.json(body);
        }
        if let Some((name, value)) = request.header {
            builder = builder.header(name, value);
        }
        let response = builder.send().map_err(|error| self.unreachable(&error))?;
        let status = response.status().as_u16();
        let text = response.text().map_err(|error| self.unreachable(&error))?;
        let body = if text.trim().is_empty() {
            Json::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Json::String(text))
        };
        if (200..300).contains(&status) {
            Ok(Answer { status, body })
        } else {
            Err(refused(status, body))
        }
    }

    fn unreachable(&self, error: &reqwest::Error) -> Failure {
        let message = if error.is_connect() {
            format!(
                "no relay at {}: start one with `agent-relay serve` (or point --url / RELAY_URL at it)",
                self.base
            )
        } else if error.is_timeout() {
            format!("the relay at {} did not answer in time", self.base)
        } else {
            format!("talking to the relay at {} failed: {error}", self.base)
        };
        Failure::new(Exit::Error, message)
    }

    /// The agent a verb acts as: `--as`, or the token's owner (asked of the relay).
    ///
    /// # Errors
    /// The token is the operator's and no `--as` was given, or the relay refused the token.
    pub fn agent(&self, acting: &Acting) -> Result<String, Failure> {
        if let Some(agent) = &acting.agent {
            // The relay refuses an agent token acting for anyone else (403).
            return Ok(agent.clone());
        }
        let identity = self.get("/v1/whoami", &[])?.body;
        match identity["agent"]["id"].as_str() {
            Some(id) => Ok(id.to_owned()),
            None => Err(Failure::usage(
                "the operator token acts for no agent of its own: pass --as AGENT",
            )),
        }
    }
}

/// An error answer as a failure: the relay's message, an exit code by status, and a hint.
fn refused(status: u16, body: Json) -> Failure {
    let message = body["error"]["message"].as_str().map_or_else(
        || format!("the relay answered {status}: {body}"),
        str::to_owned,
    );
    let (exit, hint) = match status {
        401 => (
            Exit::Error,
            " (the operator can issue a new token: agent-relay agent token ID)",
        ),
        404 => (Exit::NotFound, ""),
        409 => (Exit::Conflict, ""),
        _ => (Exit::Error, ""),
    };
    Failure {
        exit,
        message: format!("{message}{hint}"),
        body: Some(body),
    }
}

/// Percent-encodes one path segment (agent ids are the caller's own strings).
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~:@".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
