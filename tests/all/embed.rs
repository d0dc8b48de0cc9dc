//! The plugin-hosting example (`examples/embed.rs`) runs as a test: the library API is exercised
//! exactly as docs/embedding.md shows it.

#[allow(dead_code)]
#[path = "../../examples/embed.rs"]
mod example;

#[test]
fn the_embedding_example_hosts_the_relay_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let seen = example::run(&dir.path().join("plugin.db")).unwrap();
    let text = seen.join("\n");
    assert!(text.contains("claimed by \"alice\""), "{text}");
    assert!(text.contains("bob: conflict"), "{text}");
    assert!(text.contains("fix the flaky test"), "{text}");
}

#[allow(dead_code)]
#[path = "../../examples/count_sends.rs"]
mod count_sends;

#[test]
fn the_send_counting_example_stores_every_send_it_counts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("count.db");
    let stored = count_sends::run(&path, 7, agent_relay_core::Synchronous::Off).unwrap();
    // 20 warm-up sends, then the 7 counted ones, none of them read.
    assert_eq!(stored, 27);
}

#[test]
fn the_component_command_writes_the_embedded_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("relay.wasm");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_agent-relay"))
        .args(["component", "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        std::fs::read(&out).unwrap(),
        agent_relay_core::embed::COMPONENT,
        "other hosts must get exactly the component this binary runs"
    );
}
