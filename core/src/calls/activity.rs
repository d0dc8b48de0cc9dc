//! Who has been calling: the bearer tokens of the calls since the reaper last asked, each with
//! the time of its latest call. The relay counts an agent's calls as signs of life; the host only
//! remembers which credentials made calls (the guest finds whose they are and what follows).

use std::collections::HashMap;
use std::sync::Mutex;

use wasmtime::component::Val;

/// Distinct tokens remembered between two asks; calls with further tokens are not noted.
const MAX_TOKENS: usize = 65_536;

#[derive(Debug, Default)]
pub(super) struct Activity {
    seen: Mutex<HashMap<String, i64>>,
}

impl Activity {
    /// Notes the call's caller (its first argument) when it presents a bearer token.
    pub(super) fn note(&self, args: &[Val], now: i64) {
        let Some(Val::Variant(case, Some(token))) = args.first() else {
            return;
        };
        let (true, Val::String(token)) = (case == "bearer", token.as_ref()) else {
            return;
        };
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(at) = seen.get_mut(token.as_str()) {
            *at = (*at).max(now);
        } else if seen.len() < MAX_TOKENS {
            seen.insert(token.clone(), now);
        }
    }

    /// The tokens noted since the last take, with their latest call's time.
    pub(super) fn take(&self) -> Vec<(String, i64)> {
        std::mem::take(
            &mut *self
                .seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_iter()
        .collect()
    }
}
