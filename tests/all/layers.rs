//! Dependencies between modules point one way (docs/design.md, "One call path";
//! docs/architecture.md). Server: front-ends -> the core crate. Core: embed -> bridge -> call
//! runner -> runtime -> store. Guest: export adapters ->
//! domains -> claims -> tasks -> messages -> agents -> auth -> db -> settings. Read from the
//! sources' own `crate::MODULE` paths (and `use crate::{a, b}` groups), so a new import that runs
//! back up fails here with its file and line.

use std::path::{Path, PathBuf};

/// The core crate's modules (`core/src`) from the bottom up; a module may use only modules of
/// lower layers.
const CORE_LAYERS: &[&[&str]] = &[
    &["bindings", "token", "shape"],
    &["store"],
    &["sqlite", "postgres", "runtime"],
    &["calls"],
    &["bridge"],
    &["embed"],
    &["copy"],
];

/// The server's modules (`host/src`) from the bottom up, the same way. The whole core is below
/// all of them: the server reaches it only as `agent_relay_core::`, and the core cannot reach the
/// server at all (it does not depend on it).
const SERVER_LAYERS: &[&[&str]] = &[
    &["stdout"],
    &["routes", "connections", "metrics", "dashboard"],
    &["push", "openapi", "client"],
    // `agent-relay mcp` follows the agent's stream with the client's follower (channel.rs).
    &["mcp"],
    &["http"],
    &["cli"],
];

/// Libraries of the server alone: the core, which embedders take, must not pull them in.
const SERVER_ONLY_CRATES: &[&str] = &[
    "axum",
    "hyper",
    "hyper-util",
    "rmcp",
    "reqwest",
    "clap",
    "tower-http",
    "tracing-subscriber",
    "prometheus-client",
];

/// The guest's modules from the bottom up, the same way. `schema` and its upgrades sit above the
/// domains: upgrading old rows applies the domains' rules (built-in agents, orchestrator agents).
/// Tasks sit below claims: a claim on a task's message is mirrored onto the task.
const GUEST_LAYERS: &[&[&str]] = &[
    &["bindings"],
    &["error", "settings"],
    &["db", "input", "globs"],
    &["auth"],
    &["agents"],
    &["messages"],
    &["webhooks"],
    &["tasks", "dependencies"],
    &["claims"],
    &[
        "activity",
        "channels",
        "faults",
        "health",
        "operator_settings",
        "orchestrators",
        "pairs",
        "search",
        "stats",
    ],
    &["reservations"],
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
                "{}: module {module} has no layer; add it to {layers_name} in tests/all/layers.rs",
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
fn core_modules_only_use_modules_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/src");
    let wrong = imports_against(&src, CORE_LAYERS, "CORE_LAYERS", &["lib"], &[]);
    assert!(
        wrong.is_empty(),
        "imports that run against the core's layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn server_modules_only_use_modules_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let wrong = imports_against(
        &src,
        SERVER_LAYERS,
        "SERVER_LAYERS",
        &["lib", "main", "bin"],
        &[],
    );
    assert!(
        wrong.is_empty(),
        "imports that run against the server's layers:\n{}",
        wrong.join("\n")
    );
}

/// The packages `cargo tree` says `package` needs to build, over the `edges` kinds (every
/// depth), by name.
fn dependencies_of(package: &str, edges: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = std::process::Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["tree", "--offline", "--package", package, "--edges", edges])
        .args(["--prefix", "none", "--format", "{p}"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let names: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect();
    assert!(
        names.iter().any(|name| name == "wasmtime"),
        "cargo tree listed too little to judge: {names:?}"
    );
    names
}

/// The crate boundary: the core needs no HTTP, MCP or command-line library, so an embedder
/// compiles none.
#[test]
fn the_core_crate_depends_on_no_server_library() {
    let names = dependencies_of("agent-relay-core", "normal");
    let server_only: Vec<&&str> = SERVER_ONLY_CRATES
        .iter()
        .filter(|crate_name| names.iter().any(|name| name == *crate_name))
        .collect();
    assert!(
        server_only.is_empty(),
        "the core crate pulls in server libraries: {server_only:?}"
    );
}

/// Test programs stay out of the product: building or installing `agent-relay` never compiles
/// the component with the fault-injection exports (only the tests depend on it).
#[test]
fn the_product_does_not_build_the_test_component() {
    let names = dependencies_of("agent-relay", "normal,build");
    assert!(
        !names.iter().any(|name| name == "agent-relay-test-programs"),
        "the product's build pulls in the test programs: {names:?}"
    );
    let with_tests = dependencies_of("agent-relay", "normal,build,dev");
    assert!(
        with_tests
            .iter()
            .any(|name| name == "agent-relay-test-programs"),
        "the tests no longer build the test component: {with_tests:?}"
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
