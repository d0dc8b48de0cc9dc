// Building the guest component: shared by the core's build script (the shipped component) and
// the test programs' (the component with the fault-injection exports), each `include!`-ing it.

const TARGET: &str = "wasm32-wasip2";

/// The workspace root, from a member's manifest directory.
fn workspace_root() -> PathBuf {
    let manifest_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    manifest_dir
        .ancestors()
        .find(|dir| dir.join("guest").join("Cargo.toml").exists())
        .expect("the crate sits inside the workspace, beside guest/")
        .to_path_buf()
}

/// Where the guest is built: a target directory of its own (the outer cargo holds the lock on
/// the main one).
fn guest_target_dir(workspace: &Path) -> PathBuf {
    env::var_os("RELAY_GUEST_TARGET_DIR").map_or_else(
        || {
            env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| workspace.join("target"), PathBuf::from)
                .join("guest")
        },
        PathBuf::from,
    )
}

/// Reruns the build script when the guest or the contract changes.
fn watch_guest(workspace: &Path) {
    for watched in ["guest/src", "guest/Cargo.toml", "wit", "Cargo.toml"] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    println!("cargo:rerun-if-env-changed=RELAY_GUEST_TARGET_DIR");
}

/// Builds the guest with `features` and copies its component to `copy`. Two build scripts
/// build the same crate into the same target directory with different features, possibly at
/// once: a lock file keeps each build and its copy together.
fn build_guest_to(workspace: &Path, target_dir: &Path, features: &str, copy: &Path) {
    std::fs::create_dir_all(target_dir).expect("creating the guest's target directory");
    let lock = std::fs::File::create(target_dir.join(".relay-build.lock"))
        .expect("creating the guest build's lock file");
    lock.lock().expect("locking the guest build");
    let built = build_guest(workspace, target_dir, features);
    std::fs::copy(&built, copy).expect("copying the guest component");
    drop(lock);
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
