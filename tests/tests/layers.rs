//! The agent's layers (`agent/src/lib.rs`, "Layout"): no module imports one of a
//! higher layer, and modules of one layer import each other without a cycle.
//!
//! Read from the source: every `crate::NAME` outside comments and outside the tests
//! beside the code (`#[cfg(test)] mod …`, `tests.rs`) is an import of NAME.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers from the bottom; a module may import its own layer and those below.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "leaf types",
        &[
            "collect_error",
            "paths",
            "metrics",
            "http_client",
            "BUILD_TARGET",
        ],
    ),
    ("collectors", &["collectors"]),
    (
        "metric store",
        &["snapshot", "scheduler", "output_registry"],
    ),
    ("alert evaluation", &["alerts"]),
    ("outputs", &["outputs", "remote_write"]),
    ("daemon and CLI", &["config", "cli", "daemon"]),
];

fn agent_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/src")
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read agent/src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its tests and comments.
fn production_code(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut end = lines.len();
    for (i, line) in lines.iter().enumerate() {
        let next = lines.get(i + 1).map(|l| l.trim_start()).unwrap_or("");
        if line.trim() == "#[cfg(test)]"
            && (next.starts_with("mod ") || next.starts_with("pub(crate) mod test_support"))
        {
            end = i;
            break;
        }
    }
    lines[..end]
        .iter()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules each file imports: file (relative to agent/src) → modules.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let root = agent_src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut out = BTreeMap::new();
    for file in files {
        let relative = file
            .strip_prefix(&root)
            .expect("under agent/src")
            .to_string_lossy()
            .into_owned();
        if file.file_name().is_some_and(|n| n == "tests.rs") || relative == "main.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read");
        let code = production_code(&text);
        let mut modules = BTreeSet::new();
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                modules.insert(name);
            }
        }
        out.insert(relative, modules);
    }
    out
}

fn module_of(file: &str) -> String {
    file.split('/')
        .next()
        .unwrap_or(file)
        .trim_end_matches(".rs")
        .to_string()
}

#[test]
fn no_module_imports_a_higher_layer() {
    let mut upward = BTreeSet::new();
    let mut unknown = BTreeSet::new();
    for (file, modules) in imports() {
        let own = module_of(&file);
        if own == "lib" {
            continue;
        }
        let Some(own_layer) = layer_of(&own) else {
            unknown.insert(own.clone());
            continue;
        };
        for module in modules.iter().filter(|m| **m != own) {
            match layer_of(module) {
                None => {
                    unknown.insert(module.clone());
                }
                Some(layer) if layer > own_layer => {
                    upward.insert((file.clone(), module.clone()));
                }
                Some(_) => {}
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "modules in no layer (add them to LAYERS and to the Layout in agent/src/lib.rs): {unknown:?}"
    );
    assert!(
        upward.is_empty(),
        "imports from a lower layer to a higher one: {upward:?}"
    );
}

#[test]
fn modules_of_one_layer_form_no_cycle() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, modules) in imports() {
        let own = module_of(&file);
        for module in modules {
            if module != own && layer_of(&module).is_some() {
                edges.entry(own.clone()).or_default().insert(module);
            }
        }
    }
    // Depth-first search for a back edge.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        if let Some(cycle) = visit(node, &edges, &mut Vec::new(), &mut done) {
            panic!("import cycle between modules: {}", cycle.join(" -> "));
        }
    }
}

/// `agent/src/lib.rs` states the layers.
#[test]
fn lib_states_the_layers() {
    let lib = std::fs::read_to_string(agent_src().join("lib.rs")).expect("lib.rs");
    assert!(
        lib.contains("//! # Layout"),
        "agent/src/lib.rs has no Layout"
    );
    for (name, _) in LAYERS {
        assert!(
            lib.to_lowercase().contains(&name.to_lowercase()),
            "agent/src/lib.rs does not name the layer {name:?}"
        );
    }
}
