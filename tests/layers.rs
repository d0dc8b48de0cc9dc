//! Dependencies between modules point one way (DESIGN.md, "One call path"; docs/architecture.md).
//! Host: front-ends -> bridge -> call runner -> runtime -> store. Guest: export adapters ->
//! domains -> claims -> tasks -> messages -> agents -> auth -> db -> settings. Read from the
//! sources' own `crate::MODULE` paths (and `use crate::{a, b}` groups), so a new import that runs
//! back up fails here with its file and line.

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
    &["bridge"],
    &["push", "openapi", "embed", "client", "mcp"],
    &["http", "settings"],
    &["cli"],
];

/// The guest's modules from the bottom up, the same way. `schema` and its upgrades sit above the
/// domains: upgrading old rows applies the domains' rules (built-in agents, orchestrator agents).
/// Tasks sit below claims: a claim on a task's message is mirrored onto the task.
const GUEST_LAYERS: &[&[&str]] = &[
    &["bindings"],
    &["error", "settings"],
    &["db", "input"],
    &["auth"],
    &["agents"],
    &["messages"],
    &["webhooks"],
    &["tasks"],
    &["claims"],
    &[
        "activity",
        "channels",
        "faults",
        "health",
        "operator_settings",
        "orchestrators",
        "pairs",
    ],
    &["input_rules", "reaper", "retire"],
    &["upgrade"],
    &["upgrade06"],
    &["schema"],
    &["exports"],
];

/// Macros `db.rs` exports at the crate root: using one is using `db`.
const GUEST_ROOT_MACROS: &[&str] = &["params", "stored_enum"];

fn layer_of(layers: &[&[&str]], module: &str) -> Option<usize> {
    layers.iter().position(|layer| layer.contains(&module))
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

/// Every `crate::NAME` in `text`, and every first name in a `crate::{NAME::.., NAME}` group,
/// with its line number; comment lines are skipped.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let code: String = text
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("//") {
                ""
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let line_at = |at: usize| code[..at].matches('\n').count() + 1;
    let ident = |text: &str| -> String {
        text.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("crate::") {
        let start = from + at + "crate::".len();
        from = start;
        if code[start..].starts_with('{') {
            // The group's items at its top level: the first name of each.
            let mut depth = 0;
            let mut item_start = true;
            for (offset, c) in code[start..].char_indices() {
                match c {
                    '{' => {
                        depth += 1;
                        item_start = depth == 1;
                    }
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => item_start = true,
                    c if c.is_whitespace() => {}
                    _ if item_start && depth == 1 => {
                        let name = ident(&code[start + offset..]);
                        if !name.is_empty() {
                            found.push((line_at(start + offset), name));
                        }
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(&code[start..]);
            if !name.is_empty() {
                found.push((line_at(start), name));
            }
        }
    }
    found
}

/// The imports in the crate under `src` that do not point below their module in `layers`
/// (named `layers_name` in the messages). `roots` are the crate's entry files, in no layer; a
/// crate-root macro in `root_macros` counts as a use of `db`, where the guest defines them.
fn imports_against(
    src: &Path,
    layers: &[&[&str]],
    layers_name: &str,
    roots: &[&str],
    root_macros: &[&str],
) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let module = module_of(src, file);
        if roots.contains(&module.as_str()) {
            continue;
        }
        let Some(own) = layer_of(layers, &module) else {
            wrong.push(format!(
                "{}: module {module} has no layer; add it to {layers_name} in tests/layers.rs",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (line, used) in crate_paths(&text) {
            let used = if root_macros.contains(&used.as_str()) {
                "db".to_owned()
            } else {
                used
            };
            if used == module {
                continue;
            }
            match layer_of(layers, &used) {
                Some(layer) if layer < own => {}
                Some(_) => wrong.push(format!(
                    "{}:{line}: {module} uses crate::{used}, which is not below it",
                    file.display()
                )),
                None => wrong.push(format!(
                    "{}:{line}: {module} uses crate::{used}, which is in no layer of \
                     {layers_name} (nor a macro of db)",
                    file.display()
                )),
            }
        }
    }
    wrong
}

#[test]
fn host_modules_only_use_modules_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let wrong = imports_against(
        &src,
        HOST_LAYERS,
        "HOST_LAYERS",
        &["lib", "main", "bin"],
        &[],
    );
    assert!(
        wrong.is_empty(),
        "imports that run against the host's layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn guest_modules_only_use_modules_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest/src");
    let wrong = imports_against(
        &src,
        GUEST_LAYERS,
        "GUEST_LAYERS",
        &["lib"],
        GUEST_ROOT_MACROS,
    );
    assert!(
        wrong.is_empty(),
        "imports that run against the guest's layers:\n{}",
        wrong.join("\n")
    );
}

/// The checker itself reads what the guest writes: plain paths, groups across lines, nested
/// groups, and not comments.
#[test]
fn crate_paths_reads_paths_and_groups() {
    let text = "use crate::db::{self, Row};\n\
                // crate::ignored\n\
                use crate::{\n    agents::{self, Party},\n    params,\n};\n\
                let x = crate::settings::number(1);";
    let names: Vec<(usize, String)> = crate_paths(text);
    let expected: Vec<(usize, String)> = [(1, "db"), (4, "agents"), (5, "params"), (7, "settings")]
        .into_iter()
        .map(|(line, name)| (line, name.to_owned()))
        .collect();
    assert_eq!(names, expected);
}
