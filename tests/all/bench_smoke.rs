//! The benchmark runs in CI only as a smoke test: tiny counts, every figure present and positive.
//! Its timings mean nothing here.

use std::process::Command;

const KEYS: &[&str] = &[
    "instantiate_us",
    "send_component_ops",
    "send_native_floor_ops",
    "send_overhead_ratio",
    "http_send_ops_1",
    "http_send_ops_16",
    "http_send_ops_64",
    "http_send_p50_ms_16",
    "http_send_p99_ms_16",
    "http_bare_ops_16",
    "http_bare_cpu_us_16",
    "http_send_vs_bare_16",
    "cli_version_ms",
    "cli_inbox_ms",
    "hook_prompt_ms",
    "hook_stop_ms",
    "poll_ms_1k",
    "poll_ms_1m",
    "poll_scale_ratio",
    "search_ms",
    "search_common_ms",
    "search_poll_ms",
    "claim_ops_16",
    "claim_next_ops_16",
    "claim_next_batch_ops_16",
    "wake_p50_ms_idle_1000",
    "wake_p99_ms_idle_1000",
    "http_server_cpu_us_16_idle_1000",
    "idle_1000_cpu_ratio",
    "rss_mb_64",
    "register_ops",
    "fanout_10_ops",
];

#[test]
fn the_benchmark_runs_in_smoke_mode_and_reports_every_figure() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let output = Command::new(env!("CARGO_BIN_EXE_relay-bench"))
        .args(["--smoke", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "relay-bench --smoke failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let figures: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for key in KEYS {
        let value = figures[key].as_f64();
        assert!(
            value.is_some_and(|v| v > 0.0 && v.is_finite()),
            "{key} is {:?} in {figures}",
            figures[key]
        );
    }
}
