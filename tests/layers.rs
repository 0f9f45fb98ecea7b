//! The floors of `src/` (the table in `src/lib.rs`): every file imports only from its own
//! floor or the floors below; the folders of a floor that has several never import each
//! other; and no two modules import each other, directly or in a circle (neither two
//! modules of a floor, such as `model::admission` and `model::conformance`, nor two files,
//! a child module and its parent included).
//!
//! The check reads the source, every path that starts with `crate::`, `super::`, `self::`
//! or a child module's name (in `use` trees and in code alike, tests included), so an
//! upward import fails here whatever its spelling.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// A floor: its number and the top-level modules (folders) on it.
#[derive(Debug)]
struct Floor {
    level: u32,
    modules: Vec<String>,
}

/// The floor table of `src/lib.rs`: rows `//! | N | [`a`], [`b`] | what |`.
fn floors(lib: &str) -> Vec<Floor> {
    lib.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.strip_prefix("//!")?.trim().split('|').collect();
            // "", level, modules, what, ""
            let level = cells.get(1)?.trim().parse().ok()?;
            let modules = cells
                .get(2)?
                .split(',')
                .map(|m| m.trim().trim_matches(['[', ']', '`']).to_owned())
                .filter(|m| !m.is_empty())
                .collect();
            Some(Floor { level, modules })
        })
        .collect()
}

/// Blanks out comments, string and character literals, keeping line structure.
fn code_only(source: &str) -> String {
    let b = source.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if rest.starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if rest.starts_with(b"r#") || rest.starts_with(b"r\"") || rest.starts_with(b"br") {
            // A raw string: r"..", r#".."#, br#".."#.
            let start = if rest.starts_with(b"br") {
                i + 2
            } else {
                i + 1
            };
            let hashes = b[start..].iter().take_while(|&&c| c == b'#').count();
            if b.get(start + hashes) != Some(&b'"') || (i > 0 && is_ident(b[i - 1])) {
                out.push(b[i]);
                i += 1;
                continue;
            }
            let mut close = vec![b'"'];
            close.extend(std::iter::repeat_n(b'#', hashes));
            i = start + hashes + 1;
            while i < b.len() && !b[i..].starts_with(&close) {
                i += 1;
            }
            i += close.len();
            out.extend_from_slice(b"\"\"");
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.extend_from_slice(b"\"\"");
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            i += 3;
            out.extend_from_slice(b"' '");
        } else if b[i] == b'\'' && b.get(i + 1) == Some(&b'\\') {
            i += 2;
            while i < b.len() && b[i] != b'\'' {
                i += 1;
            }
            i += 1;
            out.extend_from_slice(b"' '");
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Every path the code names from `crate::` or `super::`, as written (segments), with
/// `use` trees expanded: `use crate::{a::{b, c}, d}` names `crate::a::b`, `crate::a::c`,
/// `crate::d`.
fn named_paths(code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let tokens = tokenize(code);
    // The file's child modules (`mod x;`): `x::y` names one of them, as `self::x::y` does.
    let children: BTreeSet<&str> = tokens
        .windows(3)
        .filter(|w| w[0] == "mod" && w[2] == ";")
        .map(|w| w[1].as_str())
        .collect();
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i] == "use" {
            let end = tokens[i..]
                .iter()
                .position(|t| t == ";")
                .map_or(tokens.len(), |p| i + p);
            expand(&tokens[i + 1..end], &[], &mut paths);
            i = end + 1;
            continue;
        }
        let t = tokens[i].as_str();
        let starts_path = (t == "crate" || t == "super" || t == "self" || children.contains(t))
            && tokens.get(i + 1).map(String::as_str) == Some("::")
            && (i == 0 || tokens[i - 1] != "::");
        if starts_path {
            let mut path = vec![t.to_owned()];
            let mut j = i + 1;
            while tokens.get(j).map(String::as_str) == Some("::")
                && tokens.get(j + 1).is_some_and(|t| t.bytes().all(is_ident))
            {
                path.push(tokens[j + 1].clone());
                j += 2;
            }
            paths.push(path);
            i = j;
            continue;
        }
        i += 1;
    }
    paths
        .into_iter()
        .map(|mut p| {
            if children.contains(p[0].as_str()) {
                p.insert(0, "self".into());
            }
            p
        })
        .filter(|p| matches!(p[0].as_str(), "crate" | "super" | "self"))
        .collect()
}

/// Expands a `use` tree's tokens under `prefix`.
fn expand(tokens: &[String], prefix: &[String], out: &mut Vec<Vec<String>>) {
    let mut i = 0;
    let mut path = prefix.to_vec();
    while i < tokens.len() {
        match tokens[i].as_str() {
            "::" => i += 1,
            "{" => {
                // Split the group at top-level commas.
                let mut depth = 0;
                let mut start = i + 1;
                let mut j = i + 1;
                while j < tokens.len() {
                    match tokens[j].as_str() {
                        "{" => depth += 1,
                        "}" if depth == 0 => break,
                        "}" => depth -= 1,
                        "," if depth == 0 => {
                            expand(&tokens[start..j], &path, out);
                            start = j + 1;
                        }
                        _ => {}
                    }
                    j += 1;
                }
                expand(&tokens[start..j.min(tokens.len())], &path, out);
                return;
            }
            "as" => break,
            "pub" | "(" | ")" => i += 1,
            "self" if !path.is_empty() => i += 1,
            t => {
                path.push(t.to_owned());
                i += 1;
            }
        }
    }
    if !path.is_empty() {
        out.push(path);
    }
}

/// Identifiers, `::` and single punctuation characters.
fn tokenize(code: &str) -> Vec<String> {
    let b = code.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if is_ident(b[i]) {
            let start = i;
            while i < b.len() && is_ident(b[i]) {
                i += 1;
            }
            tokens.push(code[start..i].to_owned());
        } else if b[i..].starts_with(b"::") {
            tokens.push("::".into());
            i += 2;
        } else if b[i].is_ascii_whitespace() {
            i += 1;
        } else {
            tokens.push((b[i] as char).to_string());
            i += 1;
        }
    }
    tokens
}

/// `src/a/b.rs` → `[a, b]`; `src/a/mod.rs` → `[a]`; `src/lib.rs` → `[]`.
fn module_of(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// Resolves a named path to absolute segments after `crate`, from the file's module
/// (code inside `mod tests` counts as the file's own, which is what `super::*` reaches).
fn resolve(path: &[String], module: &[String]) -> Vec<String> {
    if path[0] == "crate" {
        return path[1..].to_vec();
    }
    if path[0] == "self" {
        return module.iter().chain(&path[1..]).cloned().collect();
    }
    let mut base = module.to_vec();
    let mut rest = path;
    while rest.first().map(String::as_str) == Some("super") {
        base.pop();
        rest = &rest[1..];
    }
    base.extend(rest.iter().cloned());
    base
}

/// A file and the modules it imports, as absolute paths.
struct Source {
    file: String,
    module: Vec<String>,
    imports: Vec<Vec<String>>,
}

fn read_sources(src: &Path) -> Vec<Source> {
    let mut files = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|path: PathBuf| {
            let relative = path.strip_prefix(src).unwrap();
            let module = module_of(relative);
            let code = code_only(&std::fs::read_to_string(&path).unwrap());
            let in_tests_module = |p: &Vec<String>| p.first().map(String::as_str) == Some("super");
            let imports = named_paths(&code)
                .into_iter()
                .map(|p| {
                    // `super::` inside `mod tests` is the file itself: only a path that
                    // climbs out of the file is an import.
                    let from = if in_tests_module(&p) && code_has_tests_super(&code, &p) {
                        let mut m = module.clone();
                        m.push("tests".into());
                        m
                    } else {
                        module.clone()
                    };
                    resolve(&p, &from)
                })
                .filter(|p| !p.is_empty())
                .collect();
            Source {
                file: format!("src/{}", relative.display()),
                module,
                imports,
            }
        })
        .collect()
}

/// Whether this `super::` path appears only inside the file's `mod tests` (where it means
/// the file's own module).
fn code_has_tests_super(code: &str, path: &[String]) -> bool {
    let Some(tests) = code.find("mod tests") else {
        return false;
    };
    let written = path.join("::");
    !code[..tests].contains(&written)
}

/// What is wrong with the floors: upward imports, imports between the folders of one
/// floor, and circles between modules.
fn violations(floors: &[Floor], sources: &[Source]) -> Vec<String> {
    let floor_of: BTreeMap<&str, (u32, usize)> = floors
        .iter()
        .flat_map(|f| {
            f.modules
                .iter()
                .map(move |m| (m.as_str(), (f.level, f.modules.len())))
        })
        .collect();
    let modules: BTreeSet<&[String]> = sources.iter().map(|s| s.module.as_slice()).collect();
    // The module (file) an imported path is in: its longest prefix that is one.
    let module_of_import = |import: &[String]| -> Vec<String> {
        (1..=import.len())
            .rev()
            .map(|n| &import[..n])
            .find(|prefix| modules.contains(prefix))
            .unwrap_or(&[])
            .to_vec()
    };
    let mut problems = Vec::new();
    // Modules one level below a top folder (`model::admission`): the nodes of the circle check.
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // Files: the nodes of the file-level circle check.
    let mut file_edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for source in sources {
        let Some(top) = source.module.first() else {
            continue; // lib.rs declares the floors
        };
        let Some(&(level, shared)) = floor_of.get(top.as_str()) else {
            problems.push(format!(
                "{}: top-level module `{top}` is on no floor of the table in src/lib.rs",
                source.file
            ));
            continue;
        };
        let me = component(&source.module);
        for import in &source.imports {
            let target = &import[0];
            let Some(&(target_level, _)) = floor_of.get(target.as_str()) else {
                continue; // an item of lib.rs, or a macro
            };
            let named = format!("crate::{}", import.join("::"));
            if target_level > level {
                problems.push(format!(
                    "{}: imports {named} from floor {target_level}, above its floor {level}",
                    source.file
                ));
            } else if target_level == level && target != top && shared > 1 {
                problems.push(format!(
                    "{}: imports {named}: `{top}` and `{target}` share floor {level} and must not import each other",
                    source.file
                ));
            }
            let module = module_of_import(import);
            let other = component(&module);
            if other != me && !me.starts_with(&format!("{other}::")) {
                edges.entry(me.clone()).or_default().insert(other);
            }
            if module != source.module {
                file_edges
                    .entry(source.module.join("::"))
                    .or_default()
                    .insert(module.join("::"));
            }
        }
    }
    // Circles between modules, and between files (a child module and its parent count).
    let mut found = circles(&edges);
    found.extend(circles(&file_edges));
    found.sort();
    found.dedup();
    problems.extend(found);
    problems
}

/// `[model, admission, pod]` → `model::admission`.
fn component(path: &[String]) -> String {
    path.iter().take(2).cloned().collect::<Vec<_>>().join("::")
}

/// Every circle of imports between modules, each once.
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut found = BTreeSet::new();
    for start in edges.keys() {
        // Depth-first from `start`, looking for a way back to it.
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((node, path)) = stack.pop() {
            for next in edges.get(&node).into_iter().flatten() {
                if next == start {
                    let mut circle = path.clone();
                    // One spelling per circle: rotated to start at its smallest module.
                    let min = circle
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, m)| *m)
                        .map_or(0, |(i, _)| i);
                    circle.rotate_left(min);
                    let first = circle[0].clone();
                    circle.push(first);
                    found.insert(format!("import circle: {}", circle.join(" → ")));
                } else if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    found.into_iter().collect()
}

#[test]
fn every_file_imports_only_from_its_floor_or_below() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    let floors = floors(&lib);
    assert!(
        floors.len() >= 5,
        "src/lib.rs should hold the floor table: {floors:?}"
    );
    // The table names exactly the modules lib.rs declares.
    let declared: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix("pub mod ")
                .or_else(|| l.strip_prefix("pub(crate) mod "))
        })
        .map(|m| m.trim_end_matches(';').to_owned())
        .collect();
    let tabled: BTreeSet<String> = floors.iter().flat_map(|f| f.modules.clone()).collect();
    assert_eq!(
        declared, tabled,
        "src/lib.rs declares other modules than its floor table names"
    );

    let sources = read_sources(&root.join("src"));
    assert!(sources.len() > 40, "read only {} files", sources.len());
    let problems = violations(&floors, &sources);
    assert!(
        problems.is_empty(),
        "the floors are broken:\n  {}",
        problems.join("\n  ")
    );
}

/// The checker itself finds what it is for: without this, a checker that reads nothing
/// would pass.
#[test]
fn the_check_finds_upward_and_sideways_imports_and_circles() {
    let floors = floors(
        "//! | 1 | [`model`] | pure |\n//! | 2 | [`plumbing`] | io |\n//! | 4 | [`controllers`], [`webhooks`] | workers |",
    );
    let source = |file: &str, text: &str| {
        let relative = Path::new(file);
        let module = module_of(relative);
        let imports = named_paths(&code_only(text))
            .into_iter()
            .map(|p| resolve(&p, &module))
            .collect();
        Source {
            file: file.into(),
            module,
            imports,
        }
    };
    let sources = [
        // Upward, inside a use tree.
        source(
            "model/status.rs",
            "use crate::{model::api, plumbing::{client::{self, X}}};",
        ),
        // Sideways on a shared floor, written inline.
        source(
            "controllers/placement.rs",
            "fn f() { crate::webhooks::server::answer(); }",
        ),
        // A circle: model::a → model::b → model::a, the second through super.
        source("model/a.rs", "use crate::model::b::Thing;"),
        source("model/b.rs", "use super::a::Other;"),
        // A circle between a file and its child module (`mod child;`, used by its name).
        source("model/d/mod.rs", "mod child;\nfn f() { child::g(); }"),
        source("model/d/child.rs", "use super::Shared;"),
        // Not imports: a comment and a string.
        source(
            "model/c.rs",
            "// crate::plumbing::x\nconst S: &str = \"crate::plumbing::y\";",
        ),
    ];
    let problems = violations(&floors, &sources);
    let has = |what: &str| problems.iter().any(|p| p.contains(what));
    assert!(
        has("model/status.rs: imports crate::plumbing::client"),
        "{problems:#?}"
    );
    assert!(
        has("controllers/placement.rs: imports crate::webhooks::server::answer"),
        "{problems:#?}"
    );
    assert!(
        has("import circle: model::a → model::b → model::a"),
        "{problems:#?}"
    );
    assert!(
        has("import circle: model::d → model::d::child → model::d"),
        "{problems:#?}"
    );
    assert!(!has("model/c.rs"), "{problems:#?}");
    assert_eq!(problems.len(), 5, "{problems:#?}");
}
