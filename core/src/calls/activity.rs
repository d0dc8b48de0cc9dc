//! Who has been calling: the bearer tokens of the calls since the reaper last asked, each with
//! the time of its latest call. The relay counts an agent's calls as signs of life; the host only
//! remembers which credentials made calls (the guest finds whose they are and what follows).
//!
//! The memory this takes is bounded (docs/security.md, "Bearer tokens: size, what is noted"):
//! a token is at most [`super::MAX_TOKEN_BYTES`] long (the front-ends refuse longer ones), only
//! the tokens of calls the relay did not answer `unauthorized` are noted, and at most
//! [`MAX_TOKENS`] are held at once: 65,536 x (512 bytes + the map's own ~100) is under 40 MiB.
//! When the set is full the runner hands it to the relay at once (see `Calls::note_call`), so a
//! full set never means an agent's call goes unnoted.

use std::collections::HashMap;
use std::sync::Mutex;

/// Distinct tokens held between two hand-overs.
pub(super) const MAX_TOKENS: usize = 65_536;

/// Tokens handed to `record-agent-calls` in one call: 1,024 x 512 bytes is at most half a MiB
/// of the instance's memory, however many tokens were noted.
pub(super) const BATCH: usize = 1_024;

#[derive(Debug, Default)]
pub(super) struct Activity {
    seen: Mutex<HashMap<String, i64>>,
}

/// What noting a call found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Noted {
    /// Noted (or already there); room for more.
    Yes,
    /// Noted, and the set is now full: hand it over.
    Full,
    /// The set was full: not noted.
    Dropped,
}

impl Activity {
    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes a call by `token` at `now`.
    pub(super) fn note(&self, token: &str, now: i64) -> Noted {
        let mut seen = self.seen();
        if let Some(at) = seen.get_mut(token) {
            *at = (*at).max(now);
        } else if seen.len() < MAX_TOKENS {
            seen.insert(token.to_owned(), now);
        } else {
            return Noted::Dropped;
        }
        if seen.len() >= MAX_TOKENS {
            Noted::Full
        } else {
            Noted::Yes
        }
    }

    /// The tokens noted since the last take, with their latest call's time, in batches of at
    /// most [`BATCH`].
    pub(super) fn take(&self) -> Vec<Vec<(String, i64)>> {
        let taken = std::mem::take(&mut *self.seen());
        let mut batches = Vec::with_capacity(taken.len().div_ceil(BATCH));
        let mut batch = Vec::with_capacity(BATCH.min(taken.len()));
        for entry in taken {
            if batch.len() == BATCH {
                batches.push(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)));
            }
            batch.push(entry);
        }
        if !batch.is_empty() {
            batches.push(batch);
        }
        batches
    }

    /// Puts back tokens whose hand-over failed, so the next round records them (as far as
    /// there is room).
    pub(super) fn restore(&self, tokens: impl IntoIterator<Item = (String, i64)>) {
        let mut seen = self.seen();
        for (token, at) in tokens {
            if let Some(seen_at) = seen.get_mut(&token) {
                *seen_at = (*seen_at).max(at);
            } else if seen.len() < MAX_TOKENS {
                seen.insert(token, at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_out_in_bounded_batches_and_a_full_set_says_so() {
        let activity = Activity::default();
        for n in 0..(MAX_TOKENS - 1) {
            assert_eq!(activity.note(&format!("t{n}"), 1), Noted::Yes);
        }
        assert_eq!(activity.note("t0", 5), Noted::Yes, "a known token");
        assert_eq!(activity.note("last", 1), Noted::Full);
        assert_eq!(activity.note("more", 1), Noted::Dropped);
        let batches = activity.take();
        assert_eq!(batches.len(), MAX_TOKENS / BATCH);
        assert!(batches.iter().all(|batch| batch.len() == BATCH));
        let t0 = batches.iter().flatten().find(|(token, _)| token == "t0");
        assert_eq!(t0.map(|(_, at)| *at), Some(5), "the latest call's time");
        assert!(activity.take().is_empty(), "taken once");
        activity.restore(batches.into_iter().flatten().take(3));
        assert_eq!(
            activity.take().concat().len(),
            3,
            "restored for the next round"
        );
    }
}
