//! Dependencies between the host's modules point one way (DESIGN.md, "One call path"):
//! front-ends -> bridge -> call runner -> runtime -> store. Read from the sources' own
//! `crate::MODULE` paths, so a new import that runs back up fails here with its file and line.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

/// The host's modules from the bottom up; a module may use only modules of lower layers.
const HOST_LAYERS: &[&[&str]] = &[
    &[
        "bindings",
        "token",
        "routes",
        "watch",
        "shape",
        "connections",
    ],
    &["store"],
    &["sqlite", "runtime"],
    &["calls"],
    &["bridge", "input_rules"],
    &["push", "openapi", "embed", "client", "mcp"],
    &["http"],
    &["cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    HOST_LAYERS.iter().position(|layer| layer.contains(&module))
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

/// The top-level module a file under `src` belongs to (`calls/lane.rs` -> `calls`).
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next().unwrap().as_os_str();
    Path::new(first)
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// Every `crate::NAME` in `text`, with its line number.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push((number + 1, name));
            }
            rest = after;
        }
    }
    found
}

#[test]
fn host_modules_only_use_modules_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        if matches!(module.as_str(), "lib" | "main" | "bin") {
            continue;
        }
        let Some(own) = layer_of(&module) else {
            wrong.push(format!(
                "{}: module {module} has no layer; add it to HOST_LAYERS in tests/layers.rs",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (line, used) in crate_paths(&text) {
            if used == module {
                continue;
            }
            match layer_of(&used) {
                Some(layer) if layer < own => {}
                _ => wrong.push(format!(
                    "{}:{line}: {module} uses crate::{used}, which is not below it",
                    file.display()
                )),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that run against the host's layers:\n{}",
        wrong.join("\n")
    );
}
