//! Whose a token is, remembered between runs: a verb acting as "the token's own agent" asked
//! the relay (`GET /v1/whoami`) on every run, a second round trip for `agent-relay inbox` and
//! the Claude Code hooks, which run at every prompt. A token belongs to one agent for as long
//! as it is valid (a new token is a new secret; a deleted agent's token is refused), so the
//! answer is kept in an owner-only file named by a hash of the relay's address and the token
//! (never the token itself), beside the relay's other caches
//! (`$XDG_CACHE_HOME/agent-relay/agents/`). A wrong or stale entry costs nothing but the
//! relay's refusal: the token, not the remembered name, is what the relay checks. Entries not
//! written for [`KEPT_FOR`] are removed whenever a new one is written, so tokens that are gone
//! (rotated, their agents deleted, a test suite's) do not pile up.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

/// How long an entry is kept after it was written: a token unused that long is most likely
/// gone, and one still in use costs a single `whoami` to be remembered again.
const KEPT_FOR: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// The file that remembers whose `token` is on the relay at `url`; `None` when there is no
/// usable cache folder.
fn entry(url: &str, token: &str) -> Option<PathBuf> {
    let dir = agent_relay_core::runtime::cache_base()?
        .join("agent-relay")
        .join("agents");
    agent_relay_core::runtime::create_private_dir(&dir).ok()?;
    let key = Sha256::new()
        .chain_update(url.as_bytes())
        .chain_update([0])
        .chain_update(token.as_bytes())
        .finalize();
    Some(dir.join(hex::encode(&key[..16])))
}

/// The agent remembered for `token` on the relay at `url`.
pub fn remembered(url: &str, token: &str) -> Option<String> {
    let text = std::fs::read_to_string(entry(url, token)?).ok()?;
    let agent = text.trim();
    (!agent.is_empty() && !agent.contains(['/', '\n'])).then(|| agent.to_owned())
}

/// Remembers that `token` is `agent`'s on the relay at `url` (best effort: a verb that cannot
/// write the file asks the relay again next time).
pub fn remember(url: &str, token: &str, agent: &str) {
    let Some(path) = entry(url, token) else {
        return;
    };
    let temporary = path.with_extension(format!("{}.tmp", std::process::id()));
    let written = agent_relay_core::runtime::write_private(&temporary, agent.as_bytes())
        .and_then(|()| std::fs::rename(&temporary, &path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    if let Some(dir) = path.parent() {
        prune(dir, SystemTime::now());
    }
}

/// Removes the entries in `dir` written more than [`KEPT_FOR`] before `now` (and what a killed
/// verb left half-written), best effort. Only a remembering run does this: a run that finds its
/// entry reads one file and nothing more.
fn prune(dir: &Path, now: SystemTime) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let written = entry.metadata().and_then(|metadata| metadata.modified());
        let stale = written
            .ok()
            .and_then(|at| now.duration_since(at).ok())
            .is_some_and(|age| age > KEPT_FOR);
        if stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Forgets whose `token` is (after the relay refused a request made as the remembered agent).
pub fn forget(url: &str, token: &str) {
    if let Some(path) = entry(url, token) {
        let _ = std::fs::remove_file(path);
    }
}
