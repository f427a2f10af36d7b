//! The crate's layering, read from its sources: no module imports one that imports it back, the
//! engine names no aggregate, and the settings depend on the store alone.
//!
//! A module is a file of `src/` and the files under its directory (`budgets/snapshot.rs` is part
//! of `budgets`); it depends on every module it names as `crate::<module>` outside comments.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The aggregates of `devart_domain`, which the engine must not name.
const AGGREGATES: &[&str] = &["agent", "service", "settings", "task", "user", "workflow"];

/// Each module's source, comments removed.
fn modules() -> BTreeMap<String, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = BTreeMap::new();
    let mut pending = vec![src.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("src is readable") {
            let path = entry.expect("src is readable").path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&src).expect("under src");
            let first = relative.components().next().expect("a file").as_os_str().to_string_lossy();
            let module = first.trim_end_matches(".rs").to_owned();
            if module == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("a source file is readable");
            let code: String = text.lines().map(without_comment).collect::<Vec<_>>().join("\n");
            modules.entry(module).or_insert_with(String::new).push_str(&code);
        }
    }
    modules
}

fn without_comment(line: &str) -> &str {
    line.find("//").map_or(line, |at| &line[..at])
}

/// The names `code` reaches with `prefix`: `crate::a::b` and `crate::{a, b::c}` give `a` and `b`.
fn named(code: &str, prefix: &str) -> BTreeSet<String> {
    let ident = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    let mut names = BTreeSet::new();
    for (at, _) in code.match_indices(prefix) {
        let rest = &code[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The group's items at its own depth: `a::{x, y}, b` is `a` and `b`.
            let (mut depth, mut item) = (0, String::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.insert(ident(item.trim()));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            names.insert(ident(item.trim()));
            names.remove("");
        } else {
            names.insert(ident(rest));
        }
    }
    names
}

/// Module → the other modules it depends on.
fn dependencies(modules: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    modules
        .iter()
        .map(|(module, code)| {
            let named = named(code, "crate::");
            let on = named.into_iter().filter(|n| n != module && modules.contains_key(n)).collect();
            (module.clone(), on)
        })
        .collect()
}

/// A cycle of `graph`, if it has one, as the modules along it.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let graph = dependencies(&modules());
    assert!(graph.len() > 10, "the modules are found: {graph:?}");
    if let Some(cycle) = cycle(&graph) {
        panic!("an import cycle: {}", cycle.join(" → "));
    }
}

#[test]
fn the_engine_depends_on_the_store_and_the_relay_only() {
    let modules = modules();
    let engine = &modules["handler"];
    let on = &dependencies(&modules)["handler"];
    let allowed: BTreeSet<String> = ["store", "relay", "bus"].map(String::from).into();
    assert!(on.is_subset(&allowed), "the engine depends on {on:?}");
    let aggregates = named(engine, "devart_domain::");
    let named: Vec<&String> = aggregates.iter().filter(|n| AGGREGATES.contains(&n.as_str())).collect();
    assert!(named.is_empty(), "the engine names aggregates: {named:?}");
}

#[test]
fn the_settings_depend_on_the_store_alone() {
    let on = &dependencies(&modules())["settings"];
    assert_eq!(on, &BTreeSet::from(["store".to_owned()]));
}

#[test]
fn a_cycle_is_found() {
    let graph: BTreeMap<String, BTreeSet<String>> = [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")]
        .into_iter()
        .map(|(from, to)| (from.to_owned(), BTreeSet::from([to.to_owned()])))
        .collect();
    assert_eq!(cycle(&graph), Some(["a", "b", "c", "a"].map(String::from).to_vec()));
    let acyclic: BTreeMap<String, BTreeSet<String>> =
        [("a".to_owned(), BTreeSet::from(["b".to_owned()])), ("b".to_owned(), BTreeSet::new())].into();
    assert_eq!(cycle(&acyclic), None);
    let code = "use crate::{store::{self, Beside}, handler::Engine};\nlet x = crate::queue::sync(s);";
    assert_eq!(named(code, "crate::"), ["handler", "queue", "store"].map(String::from).into());
}
