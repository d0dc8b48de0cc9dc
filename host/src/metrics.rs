//! `GET /metrics`: the server's counters in the Prometheus text format (OpenMetrics), made with
//! the `prometheus-client` crate (docs/operations.md, "Metrics").
//!
//! A request costs one counter increment (after a look-up of its labels) and one histogram
//! observation; gauges are read from the call runner when the page is scraped.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use agent_relay_core::calls::Calls;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    /// The route's path template (`/v1/agents/{agentId}/inbox`), never the path as sent.
    route: &'static str,
    status: u16,
}

/// The server's metrics and the registry that writes them.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Histogram,
    in_flight: Gauge,
    waiters: Gauge,
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
        let waiters = Gauge::default();
        registry.register(
            "waiters",
            "Held long-polls and open event streams waiting for a commit",
            waiters.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            in_flight,
            waiters,
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

    /// The page: the gauges read from `calls` now, then every metric.
    pub fn page(&self, calls: &Calls) -> String {
        self.in_flight
            .set(i64::try_from(calls.in_flight()).unwrap_or(i64::MAX));
        self.waiters
            .set(i64::try_from(calls.waiters()).unwrap_or(i64::MAX));
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}
