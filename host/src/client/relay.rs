//! The HTTP side of the verbs: one blocking request at a time to a running relay, its answers
//! and failures turned into what the user needs to fix them.

use std::time::Duration;

use serde_json::Value as Json;
use ureq::http;

use super::{Acting, Connection, Exit, Failure, identity};

/// How long a request may take beyond any wait it asks the relay for.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What to say when no token was given.
pub const NO_TOKEN: &str = "set RELAY_TOKEN or pass --token (the operator can make one: \
agent-relay agent token ID)";

/// The largest answer read (a page of the inbox is far smaller; ureq's default is 10 MB).
const MAX_ANSWER_BYTES: u64 = 256 << 20;

/// A running relay, reached with one token.
///
/// A blocking HTTP/1.1 client on the calling thread (ureq): a verb starts no runtime and no
/// thread for its one or two requests, which is most of what a client verb costs beyond the
/// process itself (docs/benchmarks.md, "The agent CLI's start-up").
#[derive(Debug)]
pub struct RelayClient {
    base: String,
    token: String,
    /// `Bearer TOKEN`.
    authorization: String,
    http: ureq::Agent,
    timeout: Duration,
    /// The agent acted as came from the remembered answer (`identity`), not from the relay.
    remembered_agent: std::sync::atomic::AtomicBool,
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
        let http = ureq::Agent::config_builder()
            .timeout_connect(Some(timeout.min(Duration::from_secs(5))))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .new_agent();
        Ok(Self {
            base: connection.url.trim_end_matches('/').to_owned(),
            authorization: format!("Bearer {token}"),
            token: token.to_owned(),
            http,
            timeout,
            remembered_agent: std::sync::atomic::AtomicBool::new(false),
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
        let mut builder = http::Request::builder()
            .method(request.method)
            .uri(&url)
            .header("authorization", &self.authorization);
        if let Some((name, value)) = request.header {
            builder = builder.header(name, value);
        }
        let timeout = self.timeout + request.wait;
        let answer = match request.body {
            Some(body) => {
                let bytes = serde_json::to_vec(body)
                    .map_err(|error| Failure::new(Exit::Error, format!("no JSON body: {error}")))?;
                let built = builder
                    .header("content-type", "application/json")
                    .body(bytes);
                self.exchange(built, timeout)
            }
            None => self.exchange(builder.body(()), timeout),
        };
        let (status, text) = answer.map_err(|error| self.unreachable(&error))?;
        let body = if text.trim().is_empty() {
            Json::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Json::String(text))
        };
        if (200..300).contains(&status) {
            Ok(Answer { status, body })
        } else {
            if matches!(status, 401 | 403)
                && self
                    .remembered_agent
                    .load(std::sync::atomic::Ordering::Relaxed)
            {
                // Perhaps not the token's agent after all: the next run asks the relay.
                identity::forget(&self.base, &self.token);
            }
            Err(refused(status, body))
        }
    }

    /// Runs one request within `timeout`: the status and the body as text.
    fn exchange<B: ureq::AsSendBody>(
        &self,
        request: Result<http::Request<B>, http::Error>,
        timeout: Duration,
    ) -> Result<(u16, String), ureq::Error> {
        // Timeouts per phase, not one global one: with a global timeout ureq resolves the host
        // on a thread of its own, a thread per request.
        let request = self
            .http
            .configure_request(request?)
            .timeout_send_request(Some(self.timeout))
            .timeout_send_body(Some(self.timeout))
            .timeout_recv_response(Some(timeout))
            .timeout_recv_body(Some(self.timeout))
            .build();
        let mut response = self.http.run(request)?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_string()?;
        Ok((status, text))
    }

    fn unreachable(&self, error: &ureq::Error) -> Failure {
        let refused = matches!(
            error,
            ureq::Error::ConnectionFailed | ureq::Error::HostNotFound
        ) || matches!(error, ureq::Error::Io(io) if matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::AddrNotAvailable
        ));
        let message = if refused {
            format!(
                "no relay at {}: start one with `agent-relay serve` (or point --url / RELAY_URL at it)",
                self.base
            )
        } else if matches!(error, ureq::Error::Timeout(_)) {
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
        if let Some(agent) = identity::remembered(&self.base, &self.token) {
            self.remembered_agent
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return Ok(agent);
        }
        let identity = self.get("/v1/whoami", &[])?.body;
        match identity["agent"]["id"].as_str() {
            Some(id) => {
                identity::remember(&self.base, &self.token, id);
                Ok(id.to_owned())
            }
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
