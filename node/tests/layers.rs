//! The node's layering, checked on every `cargo test`.
//!
//! The node is one crate, so the compiler does not keep its modules from importing each
//! other in a loop. This test does: [`LAYERS`] is the layer map (the same as the one in
//! `src/lib.rs`), bottom first, and a module may import only from its own layer or the
//! layers below it. Every `crate::<module>` path in `node/src` counts (in `use` lines
//! and inline), and so does a `super::` path that climbs out of its top-level module.
//! Comments, strings and `#[cfg(test)]` items are not read: a module's tests may build
//! their fixtures with anything, as the tests in `node/tests/` do.
//!
//! The untangling is not finished, so [`STILL_UPWARD`] names the upward imports that
//! remain, each with the reason it is still there. The test fails on an upward import
//! that is not in the list, and on a listed one that no longer exists: the list only
//! shrinks, and it stays true.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, bottom first: each module's place. Same-layer imports are allowed.
const LAYERS: &[(&str, &[&str])] = &[
    // One clock, random IDs, private/atomic files, the version, date formatting,
    // BoxFuture; the pause points of crash tests.
    ("foundations", &["base", "pause"]),
    // Keys, envelopes, membership credentials, the admission-bundle layout; node.toml,
    // which names the participant and the authority's key; keys held in a PKCS#11 token.
    ("identity", &["identity", "config", "hsm"]),
    // The storage trait, the sled engine, payload files.
    ("store", &["storage"]),
    // What the node records about itself: the audit log and its checks; metrics and
    // traces; sealed backups of the store (their header states the audit log's size).
    ("audit", &["audit", "telemetry", "backup"]),
    // TLS and the per-request auth layer, the trust list, local roles, the health
    // endpoint, the authority; security alerts, which watch refusals and the trust list.
    (
        "trust",
        &[
            "tls",
            "trust",
            "local",
            "health",
            "authority",
            "alerts",
            "outbound",
            "cosigning",
        ],
    ),
    // The data space: products, agreements, delivery, queries, usage control.
    (
        "dataspace",
        &[
            "catalog",
            "contract",
            "desensitize",
            "query",
            "usage",
            "transfer",
            "recovery",
        ],
    ),
    // The gRPC services, the Dataspace Protocol's HTTPS binding, and the auditor's gRPC
    // client of a node's audit log.
    ("edges", &["service", "dsp", "console", "audit_client"]),
    // Building and running a node; operations over a whole node; the leadership of
    // replicas, which starts a node once it holds the lease.
    ("runtime", &["runtime", "rotation", "replica"]),
    // The `liutong` command.
    ("binary", &["cli", "demo", "setup"]),
];

/// Upward imports that still exist: (from, to, why it is still there). None are left;
/// the list stays so that a new one is named and explained here rather than allowed.
const STILL_UPWARD: &[(&str, &str, &str)] = &[];

/// One import of a top-level module by another.
struct Import {
    from: String,
    to: String,
    /// `src/…:line`
    at: String,
}

#[test]
fn no_module_imports_from_a_higher_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let layer_of = layer_map();
    let modules = top_level_modules(&src);
    let unplaced: Vec<_> = modules
        .iter()
        .filter(|m| !layer_of.contains_key(m.as_str()))
        .collect();
    assert!(
        unplaced.is_empty(),
        "modules without a layer: {unplaced:?}; place them in LAYERS (tests/layers.rs) and \
         in the map in src/lib.rs"
    );
    let gone: Vec<_> = layer_of.keys().filter(|m| !modules.contains(**m)).collect();
    assert!(
        gone.is_empty(),
        "LAYERS names modules that do not exist: {gone:?}"
    );

    let mut upward: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for import in imports(&src, &modules) {
        let (from, to) = (layer_of[import.from.as_str()], layer_of[import.to.as_str()]);
        if to > from {
            upward
                .entry((import.from, import.to))
                .or_default()
                .push(import.at);
        }
    }

    let listed: BTreeSet<(String, String)> = STILL_UPWARD
        .iter()
        .map(|(a, b, _)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
    let mut problems = Vec::new();
    for ((from, to), places) in &upward {
        if !listed.contains(&(from.clone(), to.clone())) {
            problems.push(format!(
                "{from} ({}) imports {to} ({}), a higher layer, at:\n    {}",
                LAYERS[layer_of[from.as_str()]].0,
                LAYERS[layer_of[to.as_str()]].0,
                places.join("\n    ")
            ));
        }
    }
    for (from, to) in &listed {
        if !upward.contains_key(&(from.clone(), to.clone())) {
            problems.push(format!(
                "STILL_UPWARD lists {from} → {to}, but {from} no longer imports {to} from a \
                 higher layer: remove the entry"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Modules of one layer may import each other, but not in a loop: each layer is itself
/// ordered, so every module can be read after the ones it uses. (The upward imports
/// still listed in [`STILL_UPWARD`] are left out here: the other test keeps them.)
#[test]
fn the_node_s_modules_import_each_other_in_no_loop() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = top_level_modules(&src);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for import in imports(&src, &modules) {
        let listed = STILL_UPWARD
            .iter()
            .any(|(from, to, _)| *from == import.from && *to == import.to);
        if !listed {
            graph.entry(import.from).or_default().insert(import.to);
        }
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "the node's modules import each other in a loop: {}",
            cycle.join(" → ")
        );
    }
}

/// Nor do files import each other in a loop, inside a module or across modules (a
/// module's files are ordered too). A file's `mod` and `pub use` of its own children are
/// its table of contents, not imports, and are not counted; any other path into a child
/// (`child::item`) is.
#[test]
fn the_node_s_files_import_each_other_in_no_loop() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, to) in file_imports(&src) {
        let top = |f: &str| f.split(['/', '.']).next().unwrap_or_default().to_owned();
        let listed = STILL_UPWARD
            .iter()
            .any(|(a, b, _)| *a == top(&from) && *b == top(&to));
        if !listed {
            graph.entry(from).or_default().insert(to);
        }
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "the node's files import each other in a loop: {}",
            cycle.join(" → ")
        );
    }
}

/// The same for `liutong-policy`: no two of its files import each other in a loop.
#[test]
fn the_policy_crate_has_no_cycle_between_its_files() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policy/src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, to) in file_imports(&src) {
        graph.entry(from).or_default().insert(to);
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "liutong-policy's files import each other in a loop: {}",
            cycle.join(" → ")
        );
    }
}

/// The checker itself: a made-up upward import is found, with its line, and the ways
/// a path can hide (comments, strings, test modules, `super::` within the module) are
/// not mistaken for imports.
#[test]
fn the_checker_finds_an_upward_import_and_nothing_else() {
    let modules: BTreeSet<String> = ["storage", "audit", "runtime", "alerts"]
        .map(str::to_owned)
        .into();
    let source = r##"
//! See [`crate::runtime`].
use super::log::Entry;
use crate::storage::{Storage, StorageError};
use crate::{alerts, storage::Write};
const NOTE: &str = "crate::runtime is not an import";
const RAW: &str = r#"crate::runtime"#;
fn f<'a>(x: &'a str) -> char {
    let _ = crate::runtime::now();
    '{'
}
#[cfg(test)]
mod tests {
    use super::super::merkle;
    use crate::runtime::NodeContext;
}
"##;
    let found = imports_in(source, "audit", "audit/witness.rs", 2, &modules);
    let seen: Vec<(&str, &str)> = found
        .iter()
        .map(|i| (i.to.as_str(), i.at.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("storage", "src/audit/witness.rs:4"),
            ("alerts", "src/audit/witness.rs:5"),
            ("storage", "src/audit/witness.rs:5"),
            ("runtime", "src/audit/witness.rs:9"),
        ]
    );
    // From a top-level file, `super::` is the crate root.
    let found = imports_in(
        "use super::storage::Storage;",
        "alerts",
        "alerts.rs",
        1,
        &modules,
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].to, "storage");
}

fn layer_map() -> BTreeMap<&'static str, usize> {
    let mut map = BTreeMap::new();
    for (layer, (_, modules)) in LAYERS.iter().enumerate() {
        for m in *modules {
            assert!(map.insert(*m, layer).is_none(), "{m} is in LAYERS twice");
        }
    }
    map
}

/// The crate's top-level modules: `name.rs` and `name/` under `src`, but the crate
/// roots.
fn top_level_modules(src: &Path) -> BTreeSet<String> {
    fs::read_dir(src)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", src.display()))
        .map(|e| e.expect("directory entry").path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_owned();
            if p.is_dir() {
                Some(name)
            } else {
                name.strip_suffix(".rs").map(str::to_owned)
            }
        })
        .filter(|m| m != "lib" && m != "main")
        .collect()
}

/// Every import between top-level modules in the crate at `src`.
fn imports(src: &Path, modules: &BTreeSet<String>) -> Vec<Import> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut all = Vec::new();
    for file in files {
        let relative = file.strip_prefix(src).expect("under src");
        let parts: Vec<&str> = relative
            .iter()
            .map(|p| p.to_str().expect("UTF-8 path"))
            .collect();
        let top = parts[0].trim_end_matches(".rs");
        if top == "lib" || top == "main" {
            continue;
        }
        // How deep the file's module is: `a.rs` and `a/mod.rs` are 1, `a/b.rs` is 2.
        let depth = parts.len() - usize::from(parts.last() == Some(&"mod.rs"));
        let text = fs::read_to_string(&file).expect("readable source");
        let shown = parts.join("/");
        all.extend(imports_in(&text, top, &shown, depth, modules));
    }
    all
}

/// Every import of one file of the crate at `src` by another: (from, to), as paths
/// under `src`. A `crate::`, `super::` or `self::` path names the file of the longest
/// module prefix it reaches; a `child::` path in a file names that child's file.
fn file_imports(src: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let module_of = |file: &Path| -> Vec<String> {
        let relative = file.strip_prefix(src).expect("under src");
        let mut parts: Vec<String> = relative
            .iter()
            .map(|p| {
                p.to_str()
                    .expect("UTF-8 path")
                    .trim_end_matches(".rs")
                    .to_owned()
            })
            .collect();
        if parts
            .last()
            .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
        {
            parts.pop();
        }
        parts
    };
    let shown = |file: &Path| {
        file.strip_prefix(src)
            .expect("under src")
            .to_str()
            .expect("UTF-8 path")
            .to_owned()
    };
    let by_module: BTreeMap<Vec<String>, String> =
        files.iter().map(|f| (module_of(f), shown(f))).collect();
    let mut out = Vec::new();
    for file in &files {
        let here = module_of(file);
        let from = shown(file);
        let tokens = tokens(&fs::read_to_string(file).expect("readable source"));
        // The child modules this file declares (`mod name;`).
        let children: BTreeSet<&str> = tokens
            .windows(3)
            .filter(|w| w[0].1 == "mod" && w[2].1 == ";")
            .map(|w| w[1].1.as_str())
            .collect();
        let mut i = 0;
        while i < tokens.len() {
            let t = tokens[i].1.as_str();
            if t == "#" && is_cfg_test(&tokens, i) {
                i = end_of_item(&tokens, i);
                continue;
            }
            // `pub use child::…` is the module's table of contents, not an import.
            let public_use = t == "pub"
                && (tokens.get(i + 1).is_some_and(|(_, t)| t == "use")
                    || tokens.get(i + 4).is_some_and(|(_, t)| t == "use"));
            if public_use {
                while tokens.get(i).is_some_and(|(_, t)| t != ";") {
                    i += 1;
                }
                continue;
            }
            // A path into one of the file's own children: `child::item`.
            if children.contains(t)
                && tokens.get(i + 1).is_some_and(|(_, t)| t == "::")
                && i.checked_sub(1).is_none_or(|p| tokens[p].1 != "::")
            {
                let child = [here.clone(), vec![t.to_owned()]].concat();
                if let Some(to) = by_module.get(&child) {
                    out.push((from.clone(), to.clone()));
                }
                i += 2;
                continue;
            }
            let starts_path = matches!(t, "crate" | "super" | "self")
                && tokens.get(i + 1).is_some_and(|(_, t)| t == "::")
                && !i
                    .checked_sub(1)
                    .is_some_and(|p| tokens[p].1 == "::" || tokens[p].1 == "$");
            if !starts_path {
                i += 1;
                continue;
            }
            let mut base = if t == "crate" {
                Vec::new()
            } else {
                here.clone()
            };
            let mut j = i;
            let mut segments = Vec::new();
            while let Some((_, word)) = tokens.get(j) {
                match word.as_str() {
                    "crate" | "self" if j == i => {}
                    "super" if segments.is_empty() => {
                        base.pop();
                    }
                    w if w.chars().all(|c| c.is_alphanumeric() || c == '_') => {
                        segments.push(w.to_owned())
                    }
                    _ => break,
                }
                if tokens.get(j + 1).is_some_and(|(_, t)| t == "::") {
                    j += 2;
                } else {
                    j += 1;
                    break;
                }
            }
            let groups = if tokens.get(j).is_some_and(|(_, t)| t == "{") {
                first_segments(&tokens, j)
                    .into_iter()
                    .map(|g| [segments.clone(), vec![g]].concat())
                    .collect()
            } else {
                vec![segments]
            };
            for path in groups {
                let full = [base.clone(), path].concat();
                let target = (0..=full.len())
                    .rev()
                    .find_map(|n| by_module.get(&full[..n]));
                if let Some(to) = target
                    && *to != from
                {
                    out.push((from.clone(), to.clone()));
                }
            }
            i = j.max(i + 1);
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("readable directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The imports of other top-level modules in one file of module `top`, whose module
/// is `depth` levels below the crate root.
fn imports_in(
    text: &str,
    top: &str,
    shown: &str,
    depth: usize,
    modules: &BTreeSet<String>,
) -> Vec<Import> {
    let tokens = tokens(text);
    let mut found = Vec::new();
    // Brace depths at which inline modules (`mod name {`) opened.
    let mut inline: Vec<usize> = Vec::new();
    let mut braces = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        let (line, ref t) = tokens[i];
        match t.as_str() {
            "{" => braces += 1,
            "}" => {
                braces = braces.saturating_sub(1);
                if inline.last() == Some(&braces) {
                    inline.pop();
                }
            }
            "#" if is_cfg_test(&tokens, i) => {
                i = end_of_item(&tokens, i);
                continue;
            }
            "mod" if tokens.get(i + 2).is_some_and(|(_, t)| t == "{") => inline.push(braces),
            "crate" | "super" if tokens.get(i + 1).is_some_and(|(_, t)| t == "::") => {
                let previous = i.checked_sub(1).map(|p| tokens[p].1.as_str());
                if previous == Some("::") || previous == Some("$") {
                    i += 1;
                    continue;
                }
                let mut j = i;
                let mut supers = 0;
                while tokens.get(j).is_some_and(|(_, t)| t == "super")
                    && tokens.get(j + 1).is_some_and(|(_, t)| t == "::")
                {
                    supers += 1;
                    j += 2;
                }
                let at_root = if supers == 0 {
                    j += 2;
                    true
                } else {
                    supers >= depth + inline.len()
                };
                if at_root {
                    for target in first_segments(&tokens, j) {
                        if target != top && modules.contains(&target) {
                            found.push(Import {
                                from: top.to_owned(),
                                to: target,
                                at: format!("src/{shown}:{line}"),
                            });
                        }
                    }
                }
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// The first path segment after a `crate::`, or of each item of a `{…}` group there.
fn first_segments(tokens: &[(usize, String)], at: usize) -> Vec<String> {
    match tokens.get(at).map(|(_, t)| t.as_str()) {
        Some("{") => {
            let mut out = Vec::new();
            let mut nesting = 0;
            let mut expect_item = true;
            for (_, t) in &tokens[at + 1..] {
                match t.as_str() {
                    "{" => nesting += 1,
                    "}" if nesting == 0 => break,
                    "}" => nesting -= 1,
                    "," if nesting == 0 => expect_item = true,
                    word if expect_item && nesting == 0 => {
                        out.push(word.to_owned());
                        expect_item = false;
                    }
                    _ => {}
                }
            }
            out
        }
        Some(word) => vec![word.to_owned()],
        None => Vec::new(),
    }
}

/// Whether the attribute starting at `i` is `#[cfg(test)]`.
fn is_cfg_test(tokens: &[(usize, String)], i: usize) -> bool {
    let want = ["#", "[", "cfg", "(", "test", ")", "]"];
    tokens.len() >= i + want.len()
        && tokens[i..i + want.len()]
            .iter()
            .zip(want)
            .all(|((_, t), w)| t == w)
}

/// The token after the item that the attribute at `i` belongs to: after its `;` or its
/// closing `}`.
fn end_of_item(tokens: &[(usize, String)], i: usize) -> usize {
    let mut nesting = 0usize;
    for (k, (_, t)) in tokens.iter().enumerate().skip(i + 7) {
        match t.as_str() {
            "{" => nesting += 1,
            "}" => {
                nesting -= 1;
                if nesting == 0 {
                    return k + 1;
                }
            }
            ";" if nesting == 0 => return k + 1,
            _ => {}
        }
    }
    tokens.len()
}

/// The source as tokens with their line numbers: identifiers, `::`, and single
/// punctuation characters. Comments, string and character literals are left out.
fn tokens(text: &str) -> Vec<(usize, String)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    let newlines = |s: &[char]| s.iter().filter(|c| **c == '\n').count();
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let (mut nesting, start) = (0, i);
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    nesting += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    nesting -= 1;
                    i += 2;
                    if nesting == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            line += newlines(&chars[start..i.min(chars.len())]);
        } else if c == '"' || (c == 'b' && next == Some('"')) {
            let start = i;
            i += if c == 'b' { 2 } else { 1 };
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            line += newlines(&chars[start..i.min(chars.len())]);
        } else if (c == 'r' || (c == 'b' && next == Some('r')))
            && raw_string_hashes(&chars, i + usize::from(c == 'b') + 1).is_some()
        {
            let open = i + usize::from(c == 'b') + 1;
            let hashes = raw_string_hashes(&chars, open).expect("checked");
            let start = i;
            i = open + hashes + 1;
            loop {
                if i >= chars.len() {
                    break;
                }
                if chars[i] == '"' && (1..=hashes).all(|h| chars.get(i + h) == Some(&'#')) {
                    i += hashes + 1;
                    break;
                }
                i += 1;
            }
            line += newlines(&chars[start..i.min(chars.len())]);
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if next == Some('\\') {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((line, chars[start..i].iter().collect()));
        } else if c == ':' && next == Some(':') {
            out.push((line, "::".to_owned()));
            i += 2;
        } else {
            out.push((line, c.to_string()));
            i += 1;
        }
    }
    out
}

/// If a raw string's `#`s and opening quote start at `at`, how many `#`s there are.
fn raw_string_hashes(chars: &[char], at: usize) -> Option<usize> {
    let hashes = chars[at.min(chars.len())..]
        .iter()
        .take_while(|c| **c == '#')
        .count();
    (chars.get(at + hashes) == Some(&'"')).then_some(hashes)
}

/// A cycle in `graph`, as the modules along it, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|p| p == node) {
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
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}
