//! The CLI, `train` and the library build on a machine with only the Rust toolchain and a C
//! compiler: their dependency graph (default features, the host platform, normal and build
//! dependencies) holds no crate that links a system library. Read from `cargo metadata`, so it
//! checks the graph `cargo run --bin drumvae` builds, whatever features this test was built with.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use serde_json::Value;

/// `links` keys that are not system libraries: rayon-core declares one only to forbid two
/// copies of itself in one build.
const HARMLESS_LINKS: &[&str] = &["rayon-core"];

/// Crates that load or link desktop libraries without a `links` key (dlopen wrappers, GUI and
/// audio stacks), or probe for system libraries in their build scripts.
const SYSTEM_CRATES: &[&str] = &[
    "pkg-config",
    "cmake",
    "bindgen",
    "x11",
    "x11-dl",
    "xcb",
    "x11rb",
    "baseview",
    "glutin",
    "glow",
    "cpal",
    "midir",
    "jack",
    "alsa",
    "font-kit",
    "nice-plug-egui",
];

fn host_triple() -> String {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("rustc -vV names the host")
}

/// Names (with `links`) of every package `drumvae` needs to build with default features.
fn default_build_graph() -> Vec<(String, Option<String>)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--filter-platform",
        ])
        .arg(host_triple())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages: HashMap<&str, &Value> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p))
        .collect();
    let nodes: HashMap<&str, &Value> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let root = packages
        .values()
        .find(|p| p["name"] == "drumvae")
        .map(|p| p["id"].as_str().unwrap())
        .unwrap();
    let mut seen = BTreeSet::new();
    let mut todo = vec![root];
    while let Some(id) = todo.pop() {
        if !seen.insert(id) {
            continue;
        }
        for dep in nodes[id]["deps"].as_array().unwrap() {
            let kinds = dep["dep_kinds"].as_array().unwrap();
            if kinds
                .iter()
                .any(|k| k["kind"].is_null() || k["kind"] == "build")
            {
                todo.push(dep["pkg"].as_str().unwrap());
            }
        }
    }
    seen.into_iter()
        .map(|id| {
            let p = packages[id];
            (
                p["name"].as_str().unwrap().to_string(),
                p["links"].as_str().map(str::to_string),
            )
        })
        .collect()
}

#[test]
fn the_cli_and_train_link_no_system_library() {
    let graph = default_build_graph();
    assert!(
        graph.iter().any(|(n, _)| n == "candle-core"),
        "the graph walk found the model's dependencies: {graph:?}"
    );
    let linking: Vec<String> = graph
        .iter()
        .filter_map(|(name, links)| {
            links
                .as_ref()
                .filter(|l| !HARMLESS_LINKS.contains(&l.as_str()))
                .map(|l| format!("{name} (links {l})"))
        })
        .collect();
    assert!(
        linking.is_empty(),
        "the default build links system libraries through {linking:?}: put what pulls them in behind a feature (editor, standalone)"
    );
    let desktop: Vec<&str> = graph
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| SYSTEM_CRATES.contains(n))
        .collect();
    assert!(
        desktop.is_empty(),
        "the default build pulls in {desktop:?}, which need system libraries: put them behind a feature"
    );
}
