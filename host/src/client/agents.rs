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
    Token(TokenArgs),
    /// Remove an agent.
    #[command(after_help = EXIT_CODES)]
    Rm(IdArgs),
}

impl AgentCommand {
    pub fn connection(&self) -> &Connection {
        match self {
            AgentCommand::Add(args) => &args.connection,
            AgentCommand::Token(args) => &args.id.connection,
            AgentCommand::Rm(args) => &args.connection,
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
    /// Its tags, comma-separated (agents are addressed as a group by `tag:T`).
    #[arg(long, value_delimiter = ',', value_name = "TAG,...")]
    pub tags: Vec<String>,
    /// Its capabilities, comma-separated (addressed as a group by `cap:C`).
    #[arg(long, value_delimiter = ',', value_name = "CAP,...")]
    pub capabilities: Vec<String>,
    /// Also print what puts the agent to work in a client: `claude` prints the `.mcp.json` entry
    /// and the `.claude/settings.json` hooks, the same for every agent of a checkout (each
    /// session's token comes from its terminal's RELAY_TOKEN).
    #[arg(long, value_enum, value_name = "CLIENT")]
    pub print: Option<Client>,
}

/// `agent token ID [--print claude]`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(flatten)]
    pub id: IdArgs,
    /// As for `agent add`: also print the client's entries (`claude`).
    #[arg(long, value_enum, value_name = "CLIENT")]
    pub print: Option<Client>,
}

/// The clients `--print` writes entries for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Client {
    /// Claude Code: `.mcp.json` (the stdio server, token from the environment) and the hooks of
    /// `.claude/settings.json`.
    Claude,
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
    operator_only(command.connection())?;
    match command {
        AgentCommand::Add(args) => add(args),
        AgentCommand::Token(args) => token(args),
        AgentCommand::Rm(args) => remove(args),
    }
}

/// Refuses an agent's token for the operator's commands before anything is asked of the relay,
/// saying where the operator token is.
fn operator_only(connection: &Connection) -> Result<(), Failure> {
    let relay = RelayClient::connect(connection)?;
    let identity = relay.get("/v1/whoami", &[])?.body;
    if identity["operator"].as_bool().unwrap_or(false) {
        return Ok(());
    }
    let holder = identity["agent"]["id"].as_str().unwrap_or("an agent");
    Err(Failure::new(
        Exit::Usage,
        format!(
            "`agent-relay agent` needs the operator token, and RELAY_TOKEN is agent {holder}'s: \
             the operator token is in the file <db>.operator-token beside the relay's database \
             (agent-relay.db.operator-token in the folder `agent-relay serve` ran in; \
             /var/lib/agent-relay/agent-relay.db.operator-token for the systemd unit), or \
             RELAY_OPERATOR_TOKEN when the relay was started with it, e.g. \
             `RELAY_TOKEN=$(cat agent-relay.db.operator-token) agent-relay agent ...`"
        ),
    ))
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
    let listed = |values: &[String]| -> Vec<String> {
        values
            .iter()
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty())
            .collect()
    };
    if !args.tags.is_empty() {
        card["tags"] = json!(listed(&args.tags));
    }
    if !args.capabilities.is_empty() {
        card["capabilities"] = json!(listed(&args.capabilities));
    }
    let registered = relay.post("/v1/agents", &card)?.body;
    print_token(&relay, &args.connection, &registered, "added", args.print);
    Ok(Exit::Done)
}

fn token(args: &TokenArgs) -> Outcome {
    let relay = RelayClient::connect(&args.id.connection)?;
    let path = format!("/v1/agents/{}/token", segment(&args.id.id));
    let registered = relay.post(&path, &json!({}))?.body;
    print_token(
        &relay,
        &args.id.connection,
        &registered,
        "issued a new token for",
        args.print,
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

/// Prints a token once, with the line that exports it for the agent's terminal, and with
/// `--print claude` the Claude Code entries that work for several agents in one checkout
/// (README, "Three agents in one checkout"). With `--json` the entries are in the document too
/// (`claude.mcpJson`, `claude.settingsJson`).
fn print_token(
    relay: &RelayClient,
    connection: &Connection,
    registered: &Json,
    done: &str,
    print: Option<Client>,
) {
    let url = relay.url();
    let mut document = registered.clone();
    if print == Some(Client::Claude) {
        document["claude"] = json!({
            "mcpJson": claude_mcp_json(url),
            "settingsJson": claude_settings_json(),
        });
    }
    emit(connection, &document, |document| {
        let id = text(&document["agent"], "id");
        let token = text(document, "token");
        let mut out = format!("{done} agent {id}; its token is shown only now.\n");
        if print == Some(Client::Claude) {
            out.push_str(&format!(
                "\n# {id}'s terminal: Claude Code, its MCP server and its hooks take the agent's \
                 token from the environment claude starts in.\n"
            ));
        } else {
            out.push('\n');
        }
        if url != DEFAULT_URL {
            out.push_str(&format!("export RELAY_URL={url}\n"));
        }
        out.push_str(&format!("export RELAY_TOKEN={token}\n"));
        if print == Some(Client::Claude) {
            let pretty = |value: &Json| serde_json::to_string_pretty(value).unwrap_or_default();
            out.push_str(&format!(
                "\n# .mcp.json in the checkout: one entry for every agent working there.\n{}\n\
                 \n# .claude/settings.json in the checkout: the hooks, the same for every agent.\n{}\n",
                pretty(&document["claude"]["mcpJson"]),
                pretty(&document["claude"]["settingsJson"]),
            ));
        } else {
            out.push_str(&format!(
                "# Claude Code: `--print claude` also prints the .mcp.json and hooks entries \
                 (`agent-relay agent token {id} --print claude` now).\n"
            ));
        }
        out
    });
}

/// The `.mcp.json` entry: the stdio server, its token from the environment of whoever starts
/// Claude Code (Claude Code expands `${VAR}` in `.mcp.json`), so one file serves every agent
/// of the checkout; `claude mcp add` would write one agent's token into the user's config, and
/// a second agent's add fails there ("already exists").
fn claude_mcp_json(url: &str) -> Json {
    json!({
        "mcpServers": {
            "agent-relay": {
                "command": "agent-relay",
                "args": ["mcp"],
                "env": {"RELAY_URL": url, "RELAY_TOKEN": "${RELAY_TOKEN}"}
            }
        }
    })
}

/// The hooks of `.claude/settings.json` (they read `RELAY_TOKEN` and `RELAY_URL` from Claude
/// Code's environment).
fn claude_settings_json() -> Json {
    let hook = |verb: &str| json!([{"hooks": [{"type": "command", "command": format!("agent-relay hook {verb}"), "timeout": 5}]}]);
    json!({
        "hooks": {
            "UserPromptSubmit": hook("claude-prompt"),
            "Stop": hook("claude-stop"),
        }
    })
}

fn text<'a>(value: &'a Json, key: &str) -> &'a str {
    value[key].as_str().unwrap_or("")
}
