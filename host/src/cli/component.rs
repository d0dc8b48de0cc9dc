//! `agent-relay component`: the relay component this binary embeds, or its exports'
//! signatures, for other hosts.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;

use agent_relay_core::bindings::StoreError;
use agent_relay_core::embed;
use agent_relay_core::runtime::{COMPONENT, Clock, Limits, Runtime};
use agent_relay_core::store::{Access, Backend, Session};

use super::read_component;

#[derive(Debug, Args)]
pub(super) struct ComponentArgs {
    /// Testing only: write (or describe) this build of the component instead of the embedded one.
    #[arg(long, value_name = "WASM", hide = true)]
    component: Option<PathBuf>,
    /// The file to write; standard output when absent.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write the exports' signatures as JSON instead of the component.
    #[arg(long)]
    signatures: bool,
}

/// Writes the relay component (the bytes this binary embeds) or its exports' signatures.
pub(super) fn component(args: &ComponentArgs) -> anyhow::Result<ExitCode> {
    let component = match &args.component {
        Some(path) => read_component(path)?,
        None => COMPONENT.to_vec(),
    };
    let bytes = if args.signatures {
        // The signatures come from the component's own types, so a runtime is needed.
        let runtime = with_component(&component)?;
        let mut text =
            serde_json::to_string_pretty(&embed::signatures(runtime.exports().values()))?;
        text.push('\n');
        text.into_bytes()
    } else {
        component
    };
    match &args.out {
        Some(path) => write_no_follow(path, &bytes)?,
        None => {
            if !args.signatures && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                anyhow::bail!("the component is binary; give --out PATH or redirect stdout");
            }
            std::io::Write::write_all(&mut std::io::stdout(), &bytes)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The component (the embedded one, or `--component`'s) loaded without a database, for what
/// its types alone answer: its signatures, `agent-relay call --list`.
pub(super) fn runtime_without_store(component: Option<&Path>) -> anyhow::Result<Runtime> {
    match component {
        Some(path) => with_component(&read_component(path)?),
        None => with_component(COMPONENT),
    }
}

fn with_component(component: &[u8]) -> anyhow::Result<Runtime> {
    Runtime::with_component(
        Arc::new(NoStore),
        Clock::default(),
        Limits::default().with_instances(1),
        component,
    )
}

/// Writes `bytes` to `path` (created, or replaced when it is a file), never through a symbolic
/// link: a link at `path` is refused (`O_NOFOLLOW`), so a link planted in a shared folder cannot
/// aim the write at another file.
fn write_no_follow(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NOFOLLOW);
    let mut file = options.open(path).map_err(|error| {
        if path.symlink_metadata().is_ok_and(|m| m.is_symlink()) {
            anyhow::anyhow!(
                "{} is a symbolic link; give the path of a file (links are not followed)",
                path.display()
            )
        } else {
            anyhow::Error::new(error).context(format!("writing {}", path.display()))
        }
    })?;
    std::io::Write::write_all(&mut file, bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// A backend for runs that never call the component.
struct NoStore;

impl Backend for NoStore {
    fn begin(&self, _: Access) -> Result<Box<dyn Session>, StoreError> {
        Err(StoreError::Other("no database is open".to_owned()))
    }
}
