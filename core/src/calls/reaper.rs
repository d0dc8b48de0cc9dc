//! The reaper's one entry (docs/security.md, "One reaper entry"): a `reap` run through the
//! runner by the operator first hands the relay the calls agents made since the last hand-over
//! (`record-agent-calls`, in bounded batches), so whoever asks for a round - the timer of
//! `serve`, `POST /v1/reap` - finds the same agents stale. What counts as stale is the relay's
//! rule; the host only keeps the order.
//!
//! When recording fails the round does not run: an agent is never taken offline for calls that
//! were made but not recorded. The tokens of the failed batches are kept for the next round.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use wasmtime::component::Val;

use super::activity::Noted;
use super::{Caller, Calls, ErrorReply};
use crate::runtime::Export;

/// The export of a reaper round.
pub(super) const REAP: &str = "reap";

/// The export that takes the tokens that made calls.
const RECORD: &str = "record-agent-calls";

impl Calls {
    /// A `reap` by `args`' caller: the operator's first hands over the noted calls; anyone
    /// else's goes to the relay as it is (which refuses it).
    pub(super) async fn reap_round(
        self: &Arc<Self>,
        reap: &Export,
        args: Vec<Val>,
    ) -> Result<Val, ErrorReply> {
        let by_operator =
            matches!(args.first(), Some(Val::Variant(case, None)) if case == "operator");
        if by_operator && let Err(error) = self.record_activity().await {
            return Err(ErrorReply::new(
                503,
                "unavailable",
                format!(
                    "recording the agents' calls failed ({}), so the reaper round did not run \
                     and no agent was taken offline; the calls are kept for the next round: \
                     retry shortly",
                    error.message
                ),
            ));
        }
        self.run_call(reap, args, None).await
    }

    /// Notes a call the relay accepted from `token`; a set that is now full is handed over at
    /// once (in the background), so later calls are noted too.
    pub(super) fn note_call(self: &Arc<Self>, token: &str) {
        let Some(activity) = &self.activity else {
            return;
        };
        let noted = activity.note(token, self.runtime.clock().now_ms());
        if noted == Noted::Full && !self.handing_over.swap(true, Ordering::SeqCst) {
            let calls = Arc::clone(self);
            tokio::spawn(async move {
                if let Err(error) = calls.record_activity().await {
                    tracing::warn!(message = %error.message, "recording the agents' calls (the set was full) failed; they are kept for the next round");
                }
                calls.handing_over.store(false, Ordering::SeqCst);
            });
        } else if noted == Noted::Dropped {
            tracing::debug!("the set of calling tokens is full; a hand-over is under way");
        }
    }

    /// Hands the noted calls to `record-agent-calls`, a batch per call; answers how many agents
    /// were refreshed. On a failure the failed batch and the ones after it are noted again.
    async fn record_activity(self: &Arc<Self>) -> Result<u32, ErrorReply> {
        let Some(activity) = &self.activity else {
            return Ok(0);
        };
        let mut batches = activity.take().into_iter();
        let Some(record) = self.runtime.export(RECORD).cloned() else {
            return Ok(0);
        };
        let mut refreshed = 0u32;
        while let Some(batch) = batches.next() {
            let list = batch
                .iter()
                .map(|(token, at)| {
                    Val::Record(vec![
                        ("token".to_owned(), Val::String(token.clone())),
                        ("at".to_owned(), Val::S64(*at)),
                    ])
                })
                .collect();
            let answer = self
                .run_call(
                    &record,
                    vec![Caller::Operator.to_val(), Val::List(list)],
                    None,
                )
                .await;
            let failure = match answer {
                Ok(Val::Result(Ok(Some(count)))) => {
                    if let Val::U32(count) = *count {
                        refreshed = refreshed.saturating_add(count);
                    }
                    None
                }
                Ok(Val::Result(Ok(None))) => None,
                Ok(Val::Result(Err(error))) => Some(ErrorReply::new(
                    500,
                    "internal",
                    format!("{RECORD} answered {error:?}"),
                )),
                Ok(other) => Some(ErrorReply::new(
                    500,
                    "internal",
                    format!("{RECORD} answered {other:?}"),
                )),
                Err(error) => Some(error),
            };
            if let Some(error) = failure {
                activity.restore(batch.into_iter().chain(batches.flatten()));
                return Err(error);
            }
        }
        if refreshed > 0 {
            tracing::debug!(refreshed, "agents seen alive by their calls");
        }
        Ok(refreshed)
    }
}
