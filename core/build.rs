//! Compiles the guest crate to a wasm32-wasip2 component and hands its path to the core, so that
//! building the crate is the whole build. The WIT files are concatenated for `agent-relay wit`.
//! The test component (with the fault-injection exports) is built by `tests/programs`, for the
//! tests only.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

include!("build/guest.rs");

fn main() {
    let workspace = workspace_root();
    watch_guest(&workspace);
    ensure_target_installed();
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let component = out.join("relay.wasm");
    build_guest_to(&workspace, &guest_target_dir(&workspace), "", &component);
    println!("cargo:rustc-env=RELAY_COMPONENT={}", component.display());
    std::fs::write(out.join("contract.wit"), contract(&workspace.join("wit")))
        .expect("writing contract.wit");
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
