//! `tasks` and `task ID resolve|dismiss`.

use clap::{Args, ValueEnum};
use serde_json::json;

use super::relay::RelayClient;
use super::{Connection, Exit, Outcome, emit, view};

#[derive(Debug, Args)]
pub struct TasksArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// Only tasks with this status: open, claimed, resolved or dismissed.
    #[arg(long)]
    pub status: Option<String>,
    /// Only tasks from this source (e.g. github).
    #[arg(long)]
    pub source: Option<String>,
}

#[derive(Debug, Args)]
pub struct TaskArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// The task's id.
    pub id: i64,
    /// What to do with it.
    pub action: TaskAction,
    /// Why, kept in the task's history.
    #[arg(long)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TaskAction {
    /// The work is done.
    Resolve,
    /// The task needs no work.
    Dismiss,
}

pub fn list(args: &TasksArgs) -> Outcome {
    let relay = RelayClient::connect(&args.connection)?;
    let mut query = Vec::new();
    if let Some(status) = &args.status {
        query.push(("status", status.clone()));
    }
    if let Some(source) = &args.source {
        query.push(("source", source.clone()));
    }
    let tasks = relay.get("/v1/tasks", &query)?.body;
    emit(&args.connection, &tasks, view::tasks);
    Ok(Exit::Done)
}

pub fn change(args: &TaskArgs) -> Outcome {
    let relay = RelayClient::connect(&args.connection)?;
    let status = match args.action {
        TaskAction::Resolve => "resolved",
        TaskAction::Dismiss => "dismissed",
    };
    let mut input = json!({"status": status});
    if let Some(note) = &args.note {
        input["note"] = json!(note);
    }
    let task = relay
        .put(&format!("/v1/tasks/{}/status", args.id), &input)?
        .body;
    emit(&args.connection, &task, |task| {
        format!(
            "task #{} is {}",
            args.id,
            task["status"].as_str().unwrap_or(status)
        )
    });
    Ok(Exit::Done)
}
