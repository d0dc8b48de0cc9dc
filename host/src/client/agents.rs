//! `whoami`, `agents`, and the operator's `agent add | token | rm`.

use clap::{Args, Subcommand};
use serde_json::{Value as Json, json};

use super::relay::{RelayClient, segment};
use super::{Connection, DEFAULT_URL, EXIT_CODES, Exit, Failure, Outcome, emit, view};

#[derive(Debug, Args)]
pub struct WhoamiArgs {
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Args)]
pub struct AgentsArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// Only agents with this label.
    #[arg(long)]
    pub label: Option<String>,
    /// Only agents with this status: online, busy or offline.
    #[arg(long)]
    pub status: Option<String>,
    /// Only agents with this tag.
    #[arg(long)]
    pub tag: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Register a new agent and print its token once, with the lines that put it to use.
    #[command(after_help = EXIT_CODES)]
    Add(AddArgs),
    /// Give an agent a new token (the old one stops working) and print it once.
    #[command(after_help = EXIT_CODES)]
    Token(IdArgs),
    /// Remove an agent.
    #[command(after_help = EXIT_CODES)]
    Rm(IdArgs),
}

impl AgentCommand {
    pub fn connection(&self) -> &Connection {
        match self {
            AgentCommand::Add(args) => &args.connection,
            AgentCommand::Token(args) | AgentCommand::Rm(args) => &args.connection,
        }
    }
}

#[derive(Debug, Args)]
pub struct AddArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// The new agent's id.
    pub id: String,
    /// Its label (agents are addressed as a group by `label:L`).
    #[arg(long)]
    pub label: Option<String>,
    /// Its display name (the id when absent).
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// The agent's id.
    pub id: String,
}

pub fn whoami(args: &WhoamiArgs) -> Outcome {
    let relay = RelayClient::connect(&args.connection)?;
    let identity = relay.get("/v1/whoami", &[])?.body;
    emit(&args.connection, &identity, |identity| {
        if identity["operator"].as_bool().unwrap_or(false) {
            "operator (acts for any agent with --as AGENT)".to_owned()
        } else {
            view::agent(&identity["agent"])
        }
    });
    Ok(Exit::Done)
}

pub fn list(args: &AgentsArgs) -> Outcome {
    let relay = RelayClient::connect(&args.connection)?;
    let mut query = Vec::new();
    if let Some(status) = &args.status {
        query.push(("status", status.clone()));
    }
    if let Some(tag) = &args.tag {
        query.push(("tag", tag.clone()));
    }
    let agents = relay.get("/v1/agents", &query)?.body;
    // The relay filters by kind, tag and status; a label is matched here.
    let agents: Vec<Json> = agents
        .as_array()
        .into_iter()
        .flatten()
        .filter(|agent| {
            args.label
                .as_deref()
                .is_none_or(|label| agent["label"].as_str() == Some(label))
        })
        .cloned()
        .collect();
    emit(&args.connection, &Json::Array(agents), |agents| {
        view::agents(agents.as_array().map_or(&[], Vec::as_slice))
    });
    Ok(Exit::Done)
}

pub fn operate(command: &AgentCommand) -> Outcome {
    match command {
        AgentCommand::Add(args) => add(args),
        AgentCommand::Token(args) => token(args),
        AgentCommand::Rm(args) => remove(args),
    }
}

fn add(args: &AddArgs) -> Outcome {
    let relay = RelayClient::connect(&args.connection)?;
    // Registering is an upsert; `add` must not quietly change an agent that exists.
    match relay.get(&format!("/v1/agents/{}", segment(&args.id)), &[]) {
        Ok(_) => {
            return Err(Failure::new(
                Exit::Conflict,
                format!(
                    "agent {} exists; `agent-relay agent token {}` gives it a new token",
                    args.id, args.id
                ),
            ));
        }
        Err(failure) if failure.exit == Exit::NotFound => {}
        Err(failure) => return Err(failure),
    }
    let mut card = json!({"id": args.id});
    if let Some(label) = &args.label {
        card["label"] = json!(label);
    }
    if let Some(name) = &args.name {
        card["name"] = json!(name);
    }
    let registered = relay.post("/v1/agents", &card)?.body;
    print_token(&relay, &args.connection, &registered, "added");
    Ok(Exit::Done)
}

fn token(args: &IdArgs) -> Outcome {
    let relay = RelayClient::connect(&args.connection)?;
    let path = format!("/v1/agents/{}/token", segment(&args.id));
    let registered = relay.post(&path, &json!({}))?.body;
    print_token(
        &relay,
        &args.connection,
        &registered,
        "issued a new token for",
    );
    Ok(Exit::Done)
}

fn remove(args: &IdArgs) -> Outcome {
    let relay = RelayClient::connect(&args.connection)?;
    let deleted = relay
        .delete(&format!("/v1/agents/{}", segment(&args.id)))?
        .body;
    emit(&args.connection, &deleted, |deleted| {
        format!("removed agent {}", text(deleted, "id"))
    });
    Ok(Exit::Done)
}

/// Prints a token once, with the lines to export it and to add the relay to Claude Code.
fn print_token(relay: &RelayClient, connection: &Connection, registered: &Json, done: &str) {
    emit(connection, registered, |registered| {
        let id = text(&registered["agent"], "id");
        let token = text(registered, "token");
        let url = relay.url();
        let mut out = format!("{done} agent {id}; its token is shown only now:\n\n");
        if url != DEFAULT_URL {
            out.push_str(&format!("export RELAY_URL={url}\n"));
        }
        out.push_str(&format!(
            "export RELAY_TOKEN={token}\n\
             claude mcp add --transport http agent-relay {url}/mcp --header \"Authorization: Bearer $RELAY_TOKEN\"\n"
        ));
        out
    });
}

fn text<'a>(value: &'a Json, key: &str) -> &'a str {
    value[key].as_str().unwrap_or("")
}
