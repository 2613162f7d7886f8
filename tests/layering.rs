//! The workspace's crate graph, read from `cargo metadata`: dependencies between Candor crates
//! point one way (cli → experiment → {data, calib, backend, results}; report → {results,
//! calib}; local → {backend, infer}), `candor-calib` and `candor-infer` depend on no other Candor
//! crate, nothing depends on `candor-cli`, and only `candor-infer`/`candor-local` (and the
//! binary) pull in candle; the served backend (`candor-served`) and the HTTP server
//! (`candor-server`) see models only through `candor-backend`. Changing the graph means changing this table, the README's
//! architecture section and ../shared/DESIGN.md together.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// Every Candor crate and the Candor crates it may depend on (normal dependencies).
const ALLOWED: &[(&str, &[&str])] = &[
    ("candor-calib", &[]),
    ("candor-infer", &[]),
    ("candor-data", &[]),
    ("candor-backend", &[]),
    ("candor-results", &["candor-calib"]),
    ("candor-report", &["candor-calib", "candor-results"]),
    ("candor-local", &["candor-backend", "candor-infer"]),
    ("candor-served", &["candor-backend"]),
    ("candor-server", &["candor-backend"]),
    ("candor-experiment", &["candor-backend", "candor-calib", "candor-data", "candor-results"]),
    (
        "candor-cli",
        &[
            "candor-backend",
            "candor-calib",
            "candor-data",
            "candor-experiment",
            "candor-infer",
            "candor-local",
            "candor-report",
            "candor-results",
            "candor-served",
            "candor-server",
        ],
    ),
];

/// Crates that must not reach candle, directly or through any dependency.
const MODEL_FREE: &[&str] = &[
    "candor-calib",
    "candor-data",
    "candor-backend",
    "candor-results",
    "candor-report",
    "candor-experiment",
    "candor-served",
    "candor-server",
];

/// The host's target triple (`rustc -vV`), so `cargo metadata` needs only this platform's
/// packages, which the build has already fetched (it runs offline).
fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let output = Command::new(rustc).arg("-vV").output().expect("rustc -vV runs");
    let text = String::from_utf8(output.stdout).expect("rustc prints UTF-8");
    text.lines().find_map(|line| line.strip_prefix("host: ")).expect("rustc -vV names the host").to_string()
}

fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline", "--locked", "--filter-platform"])
        .arg(host_triple())
        .arg("--manifest-path")
        .arg(&manifest)
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

/// The workspace members' names and, per member, (dependency name, kind) for every dependency.
fn workspace_dependencies(metadata: &Value) -> BTreeMap<String, Vec<(String, Option<String>)>> {
    let members: BTreeSet<&str> = metadata["workspace_members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|package| members.contains(package["id"].as_str().unwrap()))
        .map(|package| {
            let dependencies = package["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| (d["name"].as_str().unwrap().to_string(), d["kind"].as_str().map(str::to_string)))
                .collect();
            (package["name"].as_str().unwrap().to_string(), dependencies)
        })
        .collect()
}

#[test]
fn candor_crates_depend_on_each_other_only_as_the_layering_allows() {
    let dependencies = workspace_dependencies(&metadata());
    let names: BTreeSet<&str> = dependencies.keys().map(String::as_str).collect();
    let allowed: BTreeMap<&str, BTreeSet<&str>> =
        ALLOWED.iter().map(|(name, deps)| (*name, deps.iter().copied().collect())).collect();
    assert_eq!(names, allowed.keys().copied().collect(), "the workspace's crates are not those of the layering table");
    for (name, deps) in &dependencies {
        let normal: BTreeSet<&str> = deps
            .iter()
            .filter(|(dep, kind)| names.contains(dep.as_str()) && kind.is_none())
            .map(|(dep, _)| dep.as_str())
            .collect();
        assert_eq!(normal, allowed[name.as_str()], "{name}'s Candor dependencies");
        for (dep, kind) in deps {
            assert_ne!(dep, "candor-cli", "{name} depends on the binary crate ({kind:?})");
            if name == "candor-calib" || name == "candor-infer" {
                assert!(!names.contains(dep.as_str()), "{name} must not depend on {dep} ({kind:?})");
            }
        }
    }
}

#[test]
fn the_model_free_crates_never_reach_candle() {
    let metadata = metadata();
    let packages: BTreeMap<&str, &str> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    // Normal-dependency edges of the resolved graph.
    let mut edges: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for node in metadata["resolve"]["nodes"].as_array().unwrap() {
        let normal = node["deps"].as_array().unwrap().iter().filter(|dep| {
            dep["dep_kinds"].as_array().unwrap().iter().any(|kind| kind["kind"].is_null())
        });
        edges.insert(node["id"].as_str().unwrap(), normal.map(|dep| dep["pkg"].as_str().unwrap()).collect());
    }
    for crate_name in MODEL_FREE {
        let start = packages.iter().find(|(_, name)| *name == crate_name).map(|(id, _)| *id).expect("a workspace crate");
        let (mut seen, mut stack) = (BTreeSet::new(), vec![start]);
        while let Some(id) = stack.pop() {
            if seen.insert(id) {
                stack.extend(edges.get(id).into_iter().flatten());
            }
        }
        let reached: Vec<&str> = seen.iter().map(|id| packages[id]).filter(|name| name.starts_with("candle") || *name == "candor-infer").collect();
        assert!(reached.is_empty(), "{crate_name} reaches {reached:?}");
    }
}
