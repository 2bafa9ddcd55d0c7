//! The house stays easy to change: no file of `src/` over 1,000 lines, and
//! no two modules of `src/` that use each other (see ARCHITECTURE.md for
//! which module owns what and which way the dependencies go).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The longest a file of `src/` may be.
const MAX_LINES: usize = 1_000;

/// A module's path from the crate root (`["pool", "worker"]`).
type Module = Vec<String>;

fn sources() -> BTreeMap<Module, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files
        .into_iter()
        .filter(|f| !f.starts_with(root.join("bin")))
        .map(|f| {
            let rel = f.strip_prefix(&root).unwrap().with_extension("");
            let mut module: Module = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|l| l == "mod") {
                module.pop();
            }
            if module == ["lib"] {
                module.clear();
            }
            (module, f)
        })
        .collect()
}

/// The code of a file without comments, strings, `pub(in path)`
/// visibilities, `#[cfg(doc)]` imports (for doc links) and its
/// `#[cfg(test)]` modules (wherever they stand).
fn code(text: &str) -> String {
    let mut out = strip_comments_and_strings(text);
    while let Some(i) = out.find("pub(in ") {
        let end = out[i..].find(')').map_or(out.len(), |e| i + e + 1);
        out.replace_range(i..end, "pub(crate)");
    }
    // Imports for doc links only: no dependency of the code.
    while let Some(i) = out.find("#[cfg(doc)]") {
        let end = out[i..].find(';').map_or(out.len(), |e| i + e + 1);
        out.replace_range(i..end, "");
    }
    while let Some(i) = out.find("#[cfg(test)]") {
        let rest = out[i + "#[cfg(test)]".len()..].trim_start();
        let item = out.len() - rest.len();
        let end = if rest.starts_with("mod ") {
            // The whole module (its braces balance once comments and
            // strings are gone), or its declaration (`mod tests;`).
            block_end(&out, item)
                .or_else(|| out[item..].find(';').map(|e| item + e + 1))
                .unwrap_or(out.len())
        } else {
            i + "#[cfg(test)]".len()
        };
        out.replace_range(i..end, "");
    }
    out
}

/// Where the `{ ... }` block that opens at or after `from` ends (one past
/// its `}`), or `None` when an item ends first (`mod name;`).
fn block_end(code: &str, from: usize) -> Option<usize> {
    let open = from + code[from..].find(['{', ';'])?;
    if code[open..].starts_with(';') {
        return None;
    }
    let mut depth = 0usize;
    for (i, c) in code[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(open + i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// `text` without comments (doc comments included) and with every string
/// literal emptied.
fn strip_comments_and_strings(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut last = ' ';
    while let Some(c) = chars.next() {
        let after_ident = last.is_alphanumeric() || last == '_';
        last = c;
        match c {
            // A raw string: r"..." or r#"..."# (any number of #).
            'r' if !after_ident && matches!(chars.peek(), Some('"' | '#')) => {
                let mut hashes = 0;
                while chars.peek() == Some(&'#') {
                    chars.next();
                    hashes += 1;
                }
                if chars.peek() != Some(&'"') {
                    // `r#ident`, a raw identifier.
                    out.push('r');
                    out.extend(std::iter::repeat_n('#', hashes));
                    continue;
                }
                chars.next();
                let close: String = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                let mut body = String::new();
                for c in chars.by_ref() {
                    body.push(c);
                    if body.ends_with(&close) {
                        break;
                    }
                }
                out.push_str("\"\"");
                last = '"';
            }
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if !escaped && c == '"' {
                        break;
                    }
                    escaped = !escaped && c == '\\';
                }
                out.push_str("\"\"");
            }
            // A char literal such as '"' must not open a string.
            '\'' => {
                let rest: String = chars.clone().take(3).collect();
                if rest.starts_with("\"'") || rest.starts_with("\\\"'") {
                    for _ in 0..if rest.starts_with('"') { 2 } else { 3 } {
                        chars.next();
                    }
                    out.push_str("' '");
                } else {
                    out.push(c);
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Paths beginning with `crate::`, `super::` or `self::` in `use` trees and
/// in code, each expanded (`a::{b, c::d}` gives `a::b` and `a::c::d`).
fn paths(code: &str) -> Vec<Vec<String>> {
    fn expand(tree: &str, prefix: &str, out: &mut Vec<String>) {
        let tree = tree.trim();
        match tree.find('{') {
            None => {
                let name = tree.split(" as ").next().unwrap_or("").trim();
                if name == "self" {
                    out.push(prefix.trim_end_matches("::").to_string());
                } else if !name.is_empty() {
                    out.push(format!("{prefix}{name}"));
                }
            }
            Some(open) => {
                let head = format!("{prefix}{}", &tree[..open]);
                let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
                let (mut depth, mut start) = (0, 0);
                for (i, c) in inner.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            expand(&inner[start..i], &head, out);
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
                expand(&inner[start..], &head, out);
            }
        }
    }
    let mut flat = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let before = rest[..i].chars().last();
        rest = &rest[i + 4..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let end = rest.find(';').unwrap_or(rest.len());
        let tree: String = rest[..end].split_whitespace().collect::<Vec<_>>().join(" ");
        expand(&tree, "", &mut flat);
    }
    // Paths written inline in code.
    let bytes: Vec<char> = code.chars().collect();
    let text: String = bytes.iter().collect();
    for start in ["crate::", "super::"] {
        let mut at = 0;
        while let Some(i) = text[at..].find(start) {
            let i = at + i;
            at = i + start.len();
            if i > 0 {
                let b = text[..i].chars().last().unwrap();
                if b.is_alphanumeric() || b == '_' {
                    continue;
                }
            }
            let len = text[i..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(text.len() - i);
            flat.push(text[i..i + len].to_string());
        }
    }
    flat.into_iter()
        .map(|p| {
            p.split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect()
}

/// Which module each item name is defined in (to see through re-exports
/// such as `crate::Pending` or `crate::pool::default_workers`).
fn definitions(files: &BTreeMap<Module, String>) -> BTreeMap<String, BTreeSet<Module>> {
    let mut defs: BTreeMap<String, BTreeSet<Module>> = BTreeMap::new();
    for (module, code) in files {
        let words: Vec<&str> = code
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .collect();
        for pair in words.windows(2) {
            if matches!(
                pair[0],
                "struct" | "enum" | "trait" | "type" | "fn" | "const" | "static" | "union"
            ) && pair[1].starts_with(|c: char| c.is_alphabetic() || c == '_')
            {
                defs.entry(pair[1].to_string())
                    .or_default()
                    .insert(module.clone());
            }
        }
    }
    defs
}

/// Inline modules (`mod name { ... }`) become modules of their own, so that
/// `super::` inside one is read from where it stands.
fn split_inline(files: BTreeMap<Module, String>) -> BTreeMap<Module, String> {
    let mut out = BTreeMap::new();
    let mut work: Vec<(Module, String)> = files.into_iter().collect();
    while let Some((module, mut code)) = work.pop() {
        let mut at = 0;
        while let Some(i) = code[at..].find("mod ") {
            let i = at + i;
            at = i + 4;
            if code[..i]
                .chars()
                .last()
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
            {
                continue;
            }
            let name: String = code[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let after = code[at + name.len()..].trim_start();
            if name.is_empty() || !after.starts_with('{') {
                continue;
            }
            let Some(end) = block_end(&code, at) else {
                break;
            };
            let open = at + code[at..].find('{').unwrap_or(0);
            let mut child = module.clone();
            child.push(name);
            work.push((child, code[open + 1..end - 1].to_string()));
            code.replace_range(i..end, "");
            at = i;
        }
        out.insert(module, code);
    }
    out
}

fn resolve(
    from: &Module,
    path: &[String],
    modules: &BTreeSet<Module>,
    defs: &BTreeMap<String, BTreeSet<Module>>,
) -> Option<Module> {
    let (mut base, mut rest): (Module, &[String]) = match path.first()?.as_str() {
        "crate" => (Vec::new(), &path[1..]),
        "self" => (from.clone(), &path[1..]),
        "super" => (from.clone(), path),
        _ => return None,
    };
    while rest.first().is_some_and(|s| s == "super") {
        base.pop();
        rest = &rest[1..];
    }
    for segment in rest {
        let mut next = base.clone();
        next.push(segment.clone());
        if modules.contains(&next) {
            base = next;
            continue;
        }
        if let Some(found) = defs.get(segment) {
            let under: Vec<&Module> = found.iter().filter(|m| m.starts_with(&base)).collect();
            if under.len() == 1 {
                return Some(under[0].clone());
            }
        }
        break;
    }
    Some(base)
}

#[test]
fn no_file_of_src_is_over_the_limit() {
    let long: Vec<String> = sources()
        .values()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).unwrap().lines().count();
            (lines > MAX_LINES).then(|| format!("{} has {lines} lines", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "split these along their seams (at most {MAX_LINES} lines each): {long:#?}"
    );
}

/// Which modules each module uses (itself and its ancestors left out).
fn edges(files: &BTreeMap<Module, String>) -> BTreeSet<(Module, Module)> {
    let modules: BTreeSet<Module> = files.keys().cloned().collect();
    let defs = definitions(files);
    let mut edges = BTreeSet::new();
    for (module, code) in files {
        for path in paths(code) {
            if let Some(target) = resolve(module, &path, &modules, &defs)
                && !module.starts_with(&target)
            {
                edges.insert((module.clone(), target));
            }
        }
    }
    edges
}

/// The longest path both modules start with.
fn common(a: &Module, b: &Module) -> Module {
    a.iter()
        .zip(b)
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x.clone())
        .collect()
}

/// Pairs of units (a module with its own submodules) that use each other:
/// for each edge `x -> y` and each edge `u -> v` back, the smallest units
/// that hold `x` and `v` on one side and `y` and `u` on the other, when
/// neither holds the other; named with one such pair of edges.
fn cycles(files: &BTreeMap<Module, String>) -> Vec<String> {
    let edges = edges(files);
    let mut found: BTreeMap<(Module, Module), String> = BTreeMap::new();
    for (x, y) in &edges {
        for (u, v) in &edges {
            // x -> y and u -> v, with x and v in unit A, y and u in unit B.
            let (a, b) = (common(x, v), common(y, u));
            if a.starts_with(&b) || b.starts_with(&a) {
                continue;
            }
            let key = if a < b { (a, b) } else { (b, a) };
            found.entry(key).or_insert_with(|| {
                format!(
                    "({} -> {}, {} -> {})",
                    x.join("::"),
                    y.join("::"),
                    u.join("::"),
                    v.join("::")
                )
            });
        }
    }
    found
        .into_iter()
        .map(|((a, b), via)| format!("{} <-> {} {via}", a.join("::"), b.join("::")))
        .collect()
}

fn files() -> BTreeMap<Module, String> {
    split_inline(
        sources()
            .into_iter()
            .map(|(m, f)| (m, code(&std::fs::read_to_string(f).unwrap())))
            .collect(),
    )
}

#[test]
fn no_two_modules_use_each_other() {
    let cycles = cycles(&files());
    assert!(
        cycles.is_empty(),
        "these modules use each other; move what both need so the dependency goes one way: {cycles:#?}"
    );
}

#[test]
fn the_checker_sees_a_cycle_and_a_re_export() {
    let mut files = BTreeMap::new();
    files.insert(vec!["a".to_string()], code("use crate::b::Thing;\n"));
    files.insert(
        vec!["b".to_string()],
        code("pub struct Thing;\nfn f() { crate::Other::new(); } // crate::a\n"),
    );
    files.insert(vec!["c".to_string()], code("pub struct Other;\n"));
    let modules: BTreeSet<Module> = files.keys().cloned().collect();
    let defs = definitions(&files);
    let a = vec!["a".to_string()];
    let b = vec!["b".to_string()];
    let paths_b = paths(&files[&b]);
    assert_eq!(
        paths_b,
        vec![vec!["crate".to_string(), "Other".into(), "new".into()]]
    );
    assert_eq!(
        resolve(&b, &paths_b[0], &modules, &defs),
        Some(vec!["c".to_string()])
    );
    let paths_a = paths(&files[&a]);
    assert_eq!(resolve(&a, &paths_a[0], &modules, &defs), Some(b));
}

#[test]
fn the_checker_sees_cycles_between_units_and_not_in_docs_or_tests() {
    let file = |m: &str, text: &str| -> (Module, String) {
        let module = if m.is_empty() {
            Vec::new()
        } else {
            m.split("::").map(str::to_string).collect()
        };
        (module, code(text))
    };
    // `p`'s child uses `q`, `q` uses `p`'s other child: `p` and `q` use
    // each other though no two files do.
    let files = split_inline(BTreeMap::from([
        file("p", "mod a;\nmod b;\npub use b::Thing;\n"),
        file("p::a", "use crate::q::Other;\n"),
        file("p::b", "pub struct Thing;\n"),
        file("q", "pub struct Other;\nfn f(_: crate::p::Thing) {}\n"),
    ]));
    let found = cycles(&files);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("p <-> q "), "{found:?}");

    // Doc links, doc-only imports, strings, raw strings and unit tests are
    // no edges; an inline module's `super` is read from where it stands.
    let files = split_inline(BTreeMap::from([
        file(
            "x",
            concat!(
                "//! [`crate::y`]\n",
                "#[cfg(doc)]\nuse crate::y::Y;\n",
                "const S: &str = \"crate::y::Y\";\n",
                "const R: &str = r#\"a \"quoted\" crate::y::Y\"#;\n",
                "#[cfg(test)]\nmod tests {\n    use crate::y::Y;\n}\n",
                "mod inner {\n    use super::super::z::Z;\n}\n",
                "pub struct X;\n",
            ),
        ),
        file("y", "pub struct Y;\nfn f(_: crate::x::X) {}\n"),
        file("z", "pub struct Z;\n"),
    ]));
    assert!(cycles(&files).is_empty(), "{:?}", cycles(&files));
    let edges = edges(&files);
    let x_inner = vec!["x".to_string(), "inner".to_string()];
    assert!(
        edges.contains(&(x_inner, vec!["z".to_string()])),
        "{edges:?}"
    );
    assert!(
        !edges.iter().any(|(from, _)| from == &vec!["x".to_string()]),
        "{edges:?}"
    );
}
