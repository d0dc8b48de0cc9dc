//! Compiles the guest crate to a wasm32-wasip2 component and hands its path to the host, so that
//! `cargo build -p agent-relay` is the whole build. The WIT files are concatenated for
//! `agent-relay wit`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir
        .parent()
        .expect("host/ sits inside the workspace")
        .to_path_buf();
    for watched in ["guest/src", "guest/Cargo.toml", "wit", "Cargo.toml"] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    println!("cargo:rerun-if-env-changed=RELAY_GUEST_TARGET_DIR");

    ensure_target_installed();

    // A separate target directory: the outer cargo holds the lock on the main one.
    let target_dir = env::var_os("RELAY_GUEST_TARGET_DIR").map_or_else(
        || {
            env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| workspace.join("target"), PathBuf::from)
                .join("guest")
        },
        PathBuf::from,
    );
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    // The shipped component, and the test component with the fault-injection exports: the same
    // crate with its `faults` feature, kept at a fixed place in the guest's target directory for
    // the tests (`serve --component`) and the Node host's conformance run. Each is copied out
    // before the next build overwrites the artifact.
    for (features, copy, var) in [
        ("", out.join("relay.wasm"), "RELAY_COMPONENT"),
        (
            "faults",
            target_dir.join("relay-with-faults.wasm"),
            "RELAY_FAULTS_COMPONENT",
        ),
    ] {
        let built = build_guest(&workspace, &target_dir, features);
        std::fs::copy(&built, &copy).expect("copying the guest component");
        println!("cargo:rustc-env={var}={}", copy.display());
    }

    std::fs::write(out.join("contract.wit"), contract(&workspace.join("wit")))
        .expect("writing contract.wit");
}

/// Builds the guest crate with `features` and returns its component.
fn build_guest(workspace: &Path, target_dir: &Path, features: &str) -> PathBuf {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut build = Command::new(cargo);
    build
        .current_dir(workspace)
        .args([
            "build",
            "--release",
            "--target",
            TARGET,
            "-p",
            "agent-relay-guest",
            "--features",
            features,
            "--target-dir",
        ])
        .arg(target_dir);
    // Settings of the outer build (clippy's wrapper, host rustflags) must not leak into the guest's.
    for var in [
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_MAKEFLAGS",
        "MFLAGS",
        "MAKEFLAGS",
    ] {
        build.env_remove(var);
    }
    let status = build.status().expect("failed to run cargo for the guest");
    assert!(
        status.success(),
        "building the guest component (guest/) for {TARGET} failed; see the errors above"
    );
    let component = target_dir
        .join(TARGET)
        .join("release")
        .join("agent_relay_guest.wasm");
    assert!(
        component.exists(),
        "the guest build produced no component at {}",
        component.display()
    );
    component
}

/// Installs the wasm32-wasip2 standard library through rustup when it is missing.
fn ensure_target_installed() {
    let sysroot = Command::new(env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned()))
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    let installed = sysroot.is_some_and(|root| root.join("lib/rustlib").join(TARGET).exists());
    if installed {
        return;
    }
    let added = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status();
    assert!(
        added.is_ok_and(|s| s.success()),
        "the {TARGET} target is missing and `rustup target add {TARGET}` failed; install it and rebuild"
    );
}

/// Every WIT file of the contract, relay.wit first, as one text.
fn contract(wit_dir: &Path) -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir(wit_dir)
        .expect("reading wit/")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "wit"))
        .collect();
    files.sort_by_key(|path| (path.file_name() != Some("relay.wit".as_ref()), path.clone()));
    files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).expect("reading a wit file");
            format!(
                "// ---- {} ----\n{text}",
                path.file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
