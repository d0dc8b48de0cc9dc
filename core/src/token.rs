//! The operator token: from `RELAY_OPERATOR_TOKEN`, or generated once and kept beside the
//! database with owner-only permissions. The token itself is never logged.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Where the operator token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Environment,
    File(PathBuf),
    Generated(PathBuf),
}

/// The operator's credential, held as a hash so comparisons take constant time.
#[derive(Clone)]
pub struct OperatorToken {
    hash: [u8; 32],
}

impl std::fmt::Debug for OperatorToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OperatorToken(..)")
    }
}

impl OperatorToken {
    pub fn new(token: &str) -> Self {
        Self {
            hash: Sha256::digest(token.as_bytes()).into(),
        }
    }

    /// Whether `presented` is the operator token, in time independent of where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.hash.ct_eq(&presented).into()
    }
}

/// The token file that belongs to a database: `<db>.operator-token`.
pub fn file_for(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".operator-token");
    PathBuf::from(name)
}

/// The shortest operator token taken, in characters. The operator token opens every route; one
/// a person makes up (`secret`, `test-token`) can be guessed. The generated one has 73.
pub const MIN_CHARS: usize = 32;

/// Refuses an operator token shorter than [`MIN_CHARS`], saying where it came from and how to
/// make a good one (never the token itself).
///
/// # Errors
/// The token is too short.
pub fn check_length(token: &str, source: &Source) -> anyhow::Result<()> {
    let chars = token.chars().count();
    if chars >= MIN_CHARS {
        return Ok(());
    }
    let (what, fix) = match source {
        Source::Environment => (
            "RELAY_OPERATOR_TOKEN".to_owned(),
            "set it to a longer one, e.g. `export RELAY_OPERATOR_TOKEN=$(openssl rand -hex 32)`, \
             or unset it to use the token file beside the database"
                .to_owned(),
        ),
        Source::File(path) | Source::Generated(path) => (
            format!("the token in {}", path.display()),
            "remove the file to have a new one generated at start, or set RELAY_OPERATOR_TOKEN \
             (e.g. `export RELAY_OPERATOR_TOKEN=$(openssl rand -hex 32)`)"
                .to_owned(),
        ),
    };
    anyhow::bail!(
        "{what} is {chars} characters long; the operator token must have at least {MIN_CHARS}, \
         as anyone who guesses it may do anything on the relay: {fix}"
    )
}

/// The operator token of `RELAY_OPERATOR_TOKEN`, when it is set, checked for length before
/// anything is opened.
///
/// # Errors
/// It is set but too short.
pub fn check_environment() -> anyhow::Result<()> {
    match std::env::var("RELAY_OPERATOR_TOKEN") {
        Ok(token) if !token.trim().is_empty() => check_length(token.trim(), &Source::Environment),
        _ => Ok(()),
    }
}

/// Whether `RELAY_OPERATOR_TOKEN` holds a token.
pub fn from_environment() -> bool {
    std::env::var("RELAY_OPERATOR_TOKEN").is_ok_and(|token| !token.trim().is_empty())
}

/// Loads the operator token (environment first, then the file), generating the file if needed.
///
/// # Errors
/// The file exists but cannot be read, or cannot be created; the token is shorter than
/// [`MIN_CHARS`].
pub fn load_or_create(db: &Path) -> anyhow::Result<(String, Source)> {
    if let Ok(token) = std::env::var("RELAY_OPERATOR_TOKEN")
        && !token.trim().is_empty()
    {
        check_length(token.trim(), &Source::Environment)?;
        return Ok((token.trim().to_owned(), Source::Environment));
    }
    let path = file_for(db);
    anyhow::ensure!(
        path.exists() || path.symlink_metadata().is_err(),
        "{} is a symbolic link that points nowhere; remove it (the token file is created only as \
         a new file) or set RELAY_OPERATOR_TOKEN",
        path.display()
    );
    if path.exists() {
        let token = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let source = Source::File(path);
        check_length(token.trim(), &source)?;
        return Ok((token.trim().to_owned(), source));
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("no randomness for the operator token: {e}"))?;
    let token = format!("relay_op_{}", hex::encode(bytes));
    write_private(&path, &token)?;
    Ok((token, Source::Generated(path)))
}

#[cfg(unix)]
fn write_private(path: &Path, token: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    // O_EXCL already refuses any link at `path`; O_NOFOLLOW says so once more.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(file, "{token}")?;
    Ok(())
}

#[cfg(not(unix))]
fn write_private(path: &Path, token: &str) -> anyhow::Result<()> {
    std::fs::write(path, format!("{token}\n"))
        .with_context(|| format!("creating {}", path.display()))
}
