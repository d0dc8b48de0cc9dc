//! `GET /metrics`: the server's counters in the Prometheus text format (OpenMetrics), made with
//! the `prometheus-client` crate (docs/operations.md, "Metrics").
//!
//! A request costs one counter increment (after a look-up of its labels) and one histogram
//! observation; gauges are read from the call runner when the page is scraped. The relay's
//! counts (agents by status, messages and jobs by state) are the guest's: a scrape asks for them
//! with `get-stats` through the call runner, as the operator, at most once per
//! [`COUNT_EVERY`]; a scrape in between shows the last counts.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use agent_relay_core::bridge;
use agent_relay_core::calls::{Caller, Calls};
use agent_relay_core::store::{BATCH_SIZE_BOUNDS, GroupCommitStats};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    /// The route's path template (`/v1/agents/{agentId}/inbox`), never the path as sent.
    route: &'static str,
    status: u16,
}

/// The export that counts what the relay holds.
const STATS: &str = "get-stats";

/// A scrape asks the relay for its counts at most this often.
pub const COUNT_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

/// The server's metrics and the registry that writes them.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Histogram,
    in_flight: Gauge,
    queued: Gauge,
    waiters: Gauge,
    wakeups: WakeUps,
    batch_sizes: BatchSizes,
    memory_in_use: Gauge,
    memory_budget: Gauge,
    agents: Family<StatusLabel, Gauge>,
    messages: Family<StateLabel, Gauge>,
    jobs: Family<StateLabel, Gauge>,
    /// When the counts were last asked for (held while asking, so scrapes side by side ask once).
    counted: tokio::sync::Mutex<Option<Instant>>,
}

/// `relay_group_commit_batch_size`: a histogram written from the counts the SQLite writer keeps
/// (read at each scrape); empty on a backend without group commit.
#[derive(Clone, Debug, Default)]
struct BatchSizes(Arc<Mutex<Option<GroupCommitStats>>>);

impl EncodeMetric for BatchSizes {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let stats = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unwrap_or_default();
        #[allow(clippy::cast_precision_loss)]
        let buckets: Vec<(f64, u64)> = BATCH_SIZE_BOUNDS
            .iter()
            .map(|bound| *bound as f64)
            .chain([f64::MAX])
            .zip(stats.by_size)
            .collect();
        #[allow(clippy::cast_precision_loss)]
        let sum = stats.calls as f64;
        encoder.encode_histogram::<NoLabelSet>(sum, stats.commits, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// `relay_waiter_wakeups_total`: the runner's own count (`Calls::wakeups`), read at each scrape.
#[derive(Clone, Debug, Default)]
struct WakeUps(Arc<std::sync::atomic::AtomicU64>);

impl EncodeMetric for WakeUps {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let count = self.0.load(std::sync::atomic::Ordering::Relaxed);
        encoder.encode_counter::<NoLabelSet, _, u64>(&count, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("relay");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            requests.clone(),
        );
        let latency = Histogram::new([
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
        ]);
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its answer (held requests: their wait included)",
            latency.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "calls_in_flight",
            "Calls holding one of --max-concurrent-calls slots",
            in_flight.clone(),
        );
        let queued = Gauge::default();
        registry.register(
            "calls_queued",
            "Calls waiting for one of --max-concurrent-calls slots",
            queued.clone(),
        );
        let waiters = Gauge::default();
        registry.register(
            "waiters",
            "Held long-polls and open event streams waiting for a commit",
            waiters.clone(),
        );
        let wakeups = WakeUps::default();
        registry.register(
            "waiter_wakeups",
            "Times a held long-poll or event stream was woken by a commit that concerns it, to \
             look again",
            wakeups.clone(),
        );
        let batch_sizes = BatchSizes::default();
        registry.register(
            "group_commit_batch_size",
            "Write calls each SQLite group commit carried (none on PostgreSQL)",
            batch_sizes.clone(),
        );
        let memory_in_use = Gauge::default();
        registry.register(
            "memory_budget_bytes_in_use",
            "Bytes of linear memory the calls in flight hold from the memory budget",
            memory_in_use.clone(),
        );
        let memory_budget = Gauge::default();
        registry.register(
            "memory_budget_bytes",
            "The memory budget of all calls in flight (--calls-memory-mib)",
            memory_budget.clone(),
        );
        let agents = Family::<StatusLabel, Gauge>::default();
        registry.register(
            "agents",
            "Agents by status (counted by the relay at most once a second)",
            agents.clone(),
        );
        let messages = Family::<StateLabel, Gauge>::default();
        registry.register(
            "messages",
            "Messages that are not jobs: unread (no recipient read them yet) or read",
            messages.clone(),
        );
        let jobs = Family::<StateLabel, Gauge>::default();
        registry.register(
            "jobs",
            "Jobs (claimable messages) by state, as GET /v1/messages?state= selects them",
            jobs.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            in_flight,
            queued,
            waiters,
            wakeups,
            batch_sizes,
            memory_in_use,
            memory_budget,
            agents,
            messages,
            jobs,
            counted: tokio::sync::Mutex::new(None),
        }
    }
}

impl Metrics {
    /// Counts one answered request of a route.
    pub fn request(&self, method: &'static str, route: &'static str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status,
            })
            .inc();
        self.latency.observe(took.as_secs_f64());
    }

    /// The page: the gauges read from `calls` now (and the relay's counts, when the last are
    /// older than [`COUNT_EVERY`]), then every metric.
    pub async fn page(&self, calls: &Arc<Calls>) -> String {
        self.count(calls).await;
        self.in_flight
            .set(i64::try_from(calls.in_flight()).unwrap_or(i64::MAX));
        self.queued
            .set(i64::try_from(calls.queued()).unwrap_or(i64::MAX));
        self.waiters
            .set(i64::try_from(calls.waiters()).unwrap_or(i64::MAX));
        self.wakeups
            .0
            .store(calls.wakeups(), std::sync::atomic::Ordering::Relaxed);
        let runtime = calls.runtime();
        *self
            .batch_sizes
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = runtime.backend().group_commit_stats();
        let memory = runtime.memory();
        self.memory_in_use
            .set(i64::try_from(memory.in_use()).unwrap_or(i64::MAX));
        self.memory_budget
            .set(i64::try_from(memory.total()).unwrap_or(i64::MAX));
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }

    /// Asks the relay for its counts unless it was asked within [`COUNT_EVERY`]. A failed count
    /// (the relay overloaded, shutting down) leaves the last counts shown until the next try.
    async fn count(&self, calls: &Arc<Calls>) {
        let mut counted = self.counted.lock().await;
        if counted.is_some_and(|at| at.elapsed() < COUNT_EVERY) {
            return;
        }
        *counted = Some(Instant::now());
        let Some(export) = calls.runtime().export(STATS).cloned() else {
            return;
        };
        let answer = calls
            .run(&export, vec![Caller::Operator.to_val()])
            .await
            .and_then(|value| bridge::outcome(&value));
        match answer {
            Ok(stats) => {
                set_each(&stats["agents"], |status, n| {
                    self.agents.get_or_create(&StatusLabel { status }).set(n);
                });
                set_each(&stats["messages"], |state, n| {
                    self.messages.get_or_create(&StateLabel { state }).set(n);
                });
                set_each(&stats["jobs"], |state, n| {
                    self.jobs.get_or_create(&StateLabel { state }).set(n);
                });
            }
            Err(error) => {
                tracing::debug!(code = %error.code, message = %error.message, "counting for the metrics failed; the last counts stay");
            }
        }
    }
}

/// Each `name: count` of a JSON object of counts.
fn set_each(counts: &serde_json::Value, mut set: impl FnMut(String, i64)) {
    if let Some(counts) = counts.as_object() {
        for (name, count) in counts {
            if let Some(n) = count.as_i64() {
                set(name.clone(), n);
            }
        }
    }
}
