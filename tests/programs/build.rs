//! Builds the test component: the guest with its `faults` feature (world `relay-with-faults`,
//! the fault-injection exports). Only the tests depend on this crate, so a product build
//! (`cargo build`, `cargo install`) never compiles it.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

include!("../../core/build/guest.rs");

fn main() {
    let workspace = workspace_root();
    watch_guest(&workspace);
    ensure_target_installed();
    let target_dir = guest_target_dir(&workspace);
    // A fixed place, for the Node host's conformance run too (`scripts/test.sh`).
    let component = target_dir.join("relay-with-faults.wasm");
    build_guest_to(&workspace, &target_dir, "faults", &component);
    println!(
        "cargo:rustc-env=RELAY_FAULTS_COMPONENT={}",
        component.display()
    );
}
