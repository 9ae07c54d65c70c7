//! The import graph of src/: every `crate::` import runs down the layers (README, "Layout";
//! src/lib.rs), and the files of cluster/ import each other without a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top to bottom: a module may import only modules after it.
const LAYERS: [&str; 15] = [
    "main",
    "startup",
    "shutdown",
    "cluster",
    "http",
    "socket",
    "auth",
    "limits",
    "chat",
    "expansion",
    "ai",
    "store",
    "telemetry",
    "config",
    "domain",
];

/// Every `.rs` file under `dir`, with its text.
fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable").flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("a source file is readable");
            out.push((path.to_string_lossy().replace('\\', "/"), text));
        }
    }
}

/// The names following `prefix` in `text`: `crate::chat::X` → `chat`, and each of a group,
/// `super::{lease, sweeper::sweep}` → `lease`, `sweeper`.
fn imported<'a>(text: &'a str, prefix: &str) -> BTreeSet<&'a str> {
    let first = |rest: &'a str| {
        let rest = rest.trim_start();
        let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
        (end > 0).then(|| &rest[..end])
    };
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices(prefix) {
        let rest = &text[at + prefix.len()..];
        match rest.strip_prefix('{') {
            Some(group) => {
                names.extend(group[..group.find('}').unwrap_or(group.len())].split(',').filter_map(first))
            }
            None => names.extend(first(rest)),
        }
    }
    names
}

#[test]
fn imports_run_down_the_layers() {
    let mut files = Vec::new();
    sources(Path::new("src"), &mut files);
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
    let mut upward = Vec::new();
    for (path, text) in &files {
        let module = path.trim_start_matches("src/").split(['/', '.']).next().unwrap_or_default();
        let module = if module == "lib" { continue } else { module };
        let Some(from) = rank(module) else { panic!("{path}: module {module} is in no layer") };
        for to in imported(text, "crate::") {
            if rank(to).is_some_and(|to| to <= from) && to != module {
                upward.push(format!("{path} imports crate::{to}"));
            }
        }
    }
    assert!(upward.is_empty(), "imports running back up: {upward:#?}");
}

#[test]
fn the_files_of_cluster_import_each_other_without_a_circle() {
    let mut files = Vec::new();
    sources(Path::new("src/cluster"), &mut files);
    let graph: BTreeMap<String, BTreeSet<String>> = files
        .iter()
        .map(|(path, text)| {
            let name = path.rsplit('/').next().unwrap_or_default().trim_end_matches(".rs").to_owned();
            let uses =
                imported(text, "super::").into_iter().map(str::to_owned).filter(|n| n != &name).collect();
            (name, uses)
        })
        .collect();
    // mod.rs is the parent every file may reach through `super::`: only the files count.
    let files_only = |n: &String| graph.contains_key(n) && n != "mod";
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        ok: &dyn Fn(&String) -> bool,
    ) {
        if let Some(at) = path.iter().position(|p| p == n) {
            panic!("a circle in cluster/: {:?}", &path[at..]);
        }
        path.push(n.to_owned());
        for next in g.get(n).into_iter().flatten().filter(|m| ok(m)) {
            visit(next, g, path, ok);
        }
        path.pop();
    }
    for name in graph.keys().filter(|n| files_only(n)) {
        visit(name, &graph, &mut Vec::new(), &files_only);
    }
}
