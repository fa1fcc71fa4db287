//! The folders of `src/` are layers, and a layer uses only the layers below it: reads every
//! `crate::…` path in `src/` and fails on (a) a path from a lower layer up to a higher one and
//! (b) a cycle between modules. Run: `cargo test --test layers`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers, lowest first. A new folder in `src/` must be added here.
const LAYERS: &[&str] = &[
    "base", "conf", "system", "state", "planning", "effects", "ops", "package", "cmd",
];

/// Names `lib.rs` re-exports at the crate root, and the layer they come from.
const ROOT_REEXPORTS: &[(&str, &str)] = &[("Error", "base"), ("Result", "base"), ("run", "cmd")];

/// One source file: its module path (`state::tree`, `conf` for `conf/mod.rs`) and text.
struct Source {
    module: String,
    text: String,
}

fn rank(layer: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == layer)
}

fn layer_of(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

/// Every `crate::a::b` reference in `text` (comments included: a doc link is a dependency too),
/// as the node it names: `a::b` when that module exists, else `a` (a folder's `mod.rs` or a
/// root re-export, mapped to its layer).
fn references(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        // `$crate::` and `rdkms_crate::` are not this crate's root.
        let before = text[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let rest = &text[i + "crate::".len()..];
        let segments: Vec<&str> = rest
            .split("::")
            .map(|s| {
                let end = s
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(s.len());
                &s[..end]
            })
            .take_while(|s| !s.is_empty())
            .take(2)
            .collect();
        let Some(first) = segments.first() else {
            continue;
        };
        if let Some((_, layer)) = ROOT_REEXPORTS.iter().find(|(name, _)| name == first) {
            out.insert(layer.to_string());
            continue;
        }
        let node = match segments.get(1) {
            Some(second) if modules.contains(&format!("{first}::{second}")) => {
                format!("{first}::{second}")
            }
            _ => first.to_string(),
        };
        out.insert(node);
    }
    out
}

/// Everything wrong with the layering of `sources`, one line each.
fn violations(sources: &[Source]) -> Vec<String> {
    let modules: BTreeSet<String> = sources.iter().map(|s| s.module.clone()).collect();
    let mut wrong = Vec::new();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in sources {
        let Some(from_rank) = rank(layer_of(&s.module)) else {
            wrong.push(format!(
                "{}: folder `{}` is not in tests/layers.rs's LAYERS table",
                s.module,
                layer_of(&s.module)
            ));
            continue;
        };
        // Paths to other folders are written from `crate::`, so the check sees every one.
        if s.text.contains("super::super") {
            wrong.push(format!(
                "{}: reaches another folder with super::super; write crate::…",
                s.module
            ));
        }
        for to in references(&s.text, &modules) {
            match rank(layer_of(&to)) {
                None => wrong.push(format!(
                    "{}: uses crate::{to}, which is in no layer",
                    s.module
                )),
                Some(to_rank) if to_rank > from_rank => wrong.push(format!(
                    "{}: uses crate::{to}, a higher layer ({} above {})",
                    s.module,
                    layer_of(&to),
                    layer_of(&s.module)
                )),
                Some(_) => {}
            }
            if to != s.module {
                graph.entry(s.module.clone()).or_default().insert(to);
            }
        }
    }
    wrong.extend(
        cycles(&graph)
            .into_iter()
            .map(|c| format!("cycle: {}", c.join(" → "))),
    );
    wrong
}

/// One cycle per strongly connected group of modules, written from its smallest name back to it.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let reaches = |from: &str, to: &str| -> Option<Vec<String>> {
        // Breadth-first, so the cycle shown is a shortest one.
        let mut prev: BTreeMap<String, String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([from.to_string()]);
        while let Some(n) = queue.pop_front() {
            for m in graph.get(&n).into_iter().flatten() {
                if prev.contains_key(m) {
                    continue;
                }
                prev.insert(m.clone(), n.clone());
                if m == to {
                    let mut path = vec![to.to_string()];
                    let mut at = to.to_string();
                    while let Some(p) = prev.get(&at).filter(|p| *p != from) {
                        path.push(p.clone());
                        at = p.clone();
                    }
                    path.push(from.to_string());
                    path.reverse();
                    return Some(path);
                }
                queue.push_back(m.clone());
            }
        }
        None
    };
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    for node in graph.keys() {
        if seen.contains(node) {
            continue;
        }
        if let Some(path) = reaches(node, node) {
            seen.extend(path.iter().cloned());
            out.push(path);
        }
    }
    out
}

fn read_sources(dir: &Path, prefix: &str, out: &mut Vec<Source>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let join = |n: &str| {
            if prefix.is_empty() {
                n.to_string()
            } else {
                format!("{prefix}::{n}")
            }
        };
        if path.is_dir() {
            read_sources(&path, &join(&name), out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let module = match name.as_str() {
                "mod" => prefix.to_string(),
                _ => join(&name),
            };
            // lib.rs and main.rs sit above every layer.
            if module == "lib" || module == "main" {
                continue;
            }
            out.push(Source {
                module,
                text: std::fs::read_to_string(&path).unwrap(),
            });
        }
    }
}

#[test]
fn src_imports_only_downwards_and_has_no_cycle() {
    let mut sources = Vec::new();
    read_sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        "",
        &mut sources,
    );
    assert!(
        sources.len() > 50,
        "read only {} files of src/",
        sources.len()
    );
    let wrong = violations(&sources);
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

fn source(module: &str, text: &str) -> Source {
    Source {
        module: module.to_string(),
        text: text.to_string(),
    }
}

#[test]
fn the_check_catches_an_upward_import_and_a_cycle() {
    let sources = [
        source("base::error", "use crate::state::tree::Tree;"),
        source("state::tree", "use crate::base::error::Error;"),
        source("effects::build", "use crate::effects::script::X;"),
        source("effects::script", "fn f() { crate::effects::build::Y }"),
        source("cmd::cli", "use crate::Result; use crate::effects::build;"),
    ];
    let wrong = violations(&sources);
    assert!(
        wrong.contains(
            &"base::error: uses crate::state::tree, a higher layer (state above base)".to_string()
        ),
        "{wrong:?}"
    );
    assert!(
        wrong.iter().any(|w| w.starts_with("cycle: ")
            && w.contains("effects::build")
            && w.contains("effects::script")),
        "{wrong:?}"
    );
    assert!(
        wrong
            .iter()
            .any(|w| w.contains("cycle: base::error → state::tree")),
        "{wrong:?}"
    );
    assert_eq!(wrong.len(), 3, "{wrong:?}");
}
