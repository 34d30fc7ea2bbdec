//! No import cycle anywhere in `src/`, and the layers of DESIGN.md §4 point
//! one way.
//!
//! The module graph is read from the sources: every path that starts with
//! `crate::`, `$crate::`, `super::` or `self::`, every `use` (with its
//! `{…}` groups), and every name a `use` brought into a file that is then
//! used as the head of a path (`quant::rows::…` after `use crate::quant`).
//! A name a module merely re-exports (`pub use session::Session` in
//! `qat/mod.rs`) leads to the module that defines it. Code under
//! `#[cfg(test)]` is left out (tests may reach anywhere), and so are the
//! bodies of `macro_rules!` (their `$crate::` paths expand at the callers;
//! a call names the macro's module).
//!
//! The check: for every folder, the graph among its children (each child
//! with everything below it) has no cycle. The folder's own file (`mod.rs`,
//! `lib.rs`) is the folder's shared vocabulary and stands outside that
//! check; the crate's top level is checked against the layer order too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    Path,
    Punct(char),
}

/// The tokens of Rust source that matter for paths: comments, strings and
/// character literals are dropped, lifetimes are kept as identifiers.
fn tokens(src: &str) -> Vec<Tok> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied();
        if ch == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if ch == '"' {
            i = skip_string(&c, i + 1);
        } else if (ch == 'r' || ch == 'b' || ch == 'c')
            && matches!(next, Some('"') | Some('#') | Some('r'))
            && raw_string_start(&c, i).is_some()
        {
            let (hashes, body) = raw_string_start(&c, i).unwrap();
            i = body;
            if hashes == usize::MAX {
                i = skip_string(&c, i);
            } else {
                loop {
                    if i >= c.len() {
                        break;
                    }
                    if c[i] == '"' && (1..=hashes).all(|k| c.get(i + k) == Some(&'#')) {
                        i += 1 + hashes;
                        break;
                    }
                    i += 1;
                }
            }
        } else if ch == '\'' {
            // A character literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if next == Some('\\') {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(c[start..i].iter().collect()));
        } else if ch == ':' && next == Some(':') {
            out.push(Tok::Path);
            i += 2;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch.is_ascii_digit() {
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_' || c[i] == '.') {
                i += 1;
            }
        } else {
            out.push(Tok::Punct(ch));
            i += 1;
        }
    }
    out
}

/// After an opening `"` at `i`: the index after the closing one.
fn skip_string(c: &[char], mut i: usize) -> usize {
    while i < c.len() {
        match c[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// A (raw) string literal with a prefix at `i` (`r"`, `r#"`, `b"`, `br"`,
/// `c"`, `cr#"`): the number of `#` (`usize::MAX` for a plain, escaped
/// string) and the index of the body.
fn raw_string_start(c: &[char], i: usize) -> Option<(usize, usize)> {
    if i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_') {
        return None;
    }
    let mut j = i;
    if c[j] == 'b' || c[j] == 'c' {
        j += 1;
    }
    if c.get(j) == Some(&'"') {
        return Some((usize::MAX, j + 1));
    }
    if c.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let mut hashes = 0;
    while c.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    (c.get(j) == Some(&'"')).then_some((hashes, j + 1))
}

/// One `use` import: the name it binds in the file and the path it names
/// (relative as written: its head is `crate`, `super`, `self` or a name).
#[derive(Debug, Clone)]
struct Import {
    name: String,
    path: Vec<String>,
}

/// What one file says: the paths it uses (as written, with the inline
/// module they appear in) and its imports.
#[derive(Debug, Default)]
struct FileInfo {
    /// (inline module path inside the file, path segments as written).
    paths: Vec<(Vec<String>, Vec<String>)>,
    imports: Vec<Import>,
}

fn ident(t: Option<&Tok>) -> Option<&str> {
    match t {
        Some(Tok::Ident(s)) => Some(s),
        _ => None,
    }
}

/// The index after the item that starts at `i` (skipping `#[cfg(test)]`
/// items): after its `;` or its outermost `{…}` block.
fn skip_item(t: &[Tok], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < t.len() {
        match t[i] {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            Tok::Punct(';') if depth == 0 => return i + 1,
            _ => {}
        }
        i += 1;
    }
    i
}

/// The index after an attribute `#[…]` or `#![…]` at `i`, and whether it
/// is `cfg(test)`.
fn attribute(t: &[Tok], i: usize) -> Option<(usize, bool)> {
    let mut j = i + 1;
    if t.get(j) == Some(&Tok::Punct('!')) {
        j += 1;
    }
    if t.get(j) != Some(&Tok::Punct('[')) {
        return None;
    }
    let start = j;
    let mut depth = 0;
    while j < t.len() {
        match t[j] {
            Tok::Punct('[') => depth += 1,
            Tok::Punct(']') => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            _ => {}
        }
        j += 1;
    }
    let inner = &t[start + 1..j];
    let is_test = inner.len() == 4
        && ident(inner.first()) == Some("cfg")
        && ident(inner.get(2)) == Some("test");
    Some((j + 1, is_test))
}

/// Reads a `use` tree at `i` under `prefix`, adding its imports; returns
/// the index after it.
fn use_tree(t: &[Tok], mut i: usize, prefix: Vec<String>, out: &mut Vec<Import>) -> usize {
    let mut path = prefix;
    loop {
        match t.get(i) {
            Some(Tok::Ident(s)) => {
                path.push(s.clone());
                i += 1;
                if t.get(i) == Some(&Tok::Path) {
                    i += 1;
                    continue;
                }
                let mut name = path.last().unwrap().clone();
                if ident(t.get(i)) == Some("as") {
                    name = ident(t.get(i + 1)).unwrap_or("_").to_string();
                    i += 2;
                }
                if name == "self" {
                    path.pop();
                    name = path.last().cloned().unwrap_or_default();
                }
                out.push(Import { name, path });
                return i;
            }
            Some(Tok::Punct('{')) => {
                i += 1;
                loop {
                    match t.get(i) {
                        Some(Tok::Punct('}')) => return i + 1,
                        Some(Tok::Punct(',')) => i += 1,
                        None => return i,
                        _ => i = use_tree(t, i, path.clone(), out),
                    }
                }
            }
            Some(Tok::Punct('*')) => {
                out.push(Import {
                    name: "*".into(),
                    path,
                });
                return i + 1;
            }
            _ => return i,
        }
    }
}

fn scan(src: &str) -> FileInfo {
    let t = tokens(src);
    let mut info = FileInfo::default();
    // Inline modules: (name, brace depth at which it was opened).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < t.len() {
        match &t[i] {
            Tok::Punct('#') => {
                if let Some((after, is_test)) = attribute(&t, i) {
                    i = after;
                    if is_test {
                        while t.get(i) == Some(&Tok::Punct('#')) {
                            i = attribute(&t, i).map_or(i + 1, |a| a.0);
                        }
                        i = skip_item(&t, i);
                    }
                    continue;
                }
                i += 1;
            }
            Tok::Punct('{') => {
                depth += 1;
                i += 1;
            }
            Tok::Punct('}') => {
                if inline.last().is_some_and(|m| m.1 == depth) {
                    inline.pop();
                }
                depth -= 1;
                i += 1;
            }
            Tok::Ident(k) if k == "macro_rules" && t.get(i + 1) == Some(&Tok::Punct('!')) => {
                // A macro's paths are its callers' (`$crate::…` expands
                // where it is used); the call itself names the macro's
                // module.
                i = skip_item(&t, i);
            }
            Tok::Ident(k) if k == "mod" => {
                if let (Some(name), Some(Tok::Punct('{'))) = (ident(t.get(i + 1)), t.get(i + 2)) {
                    depth += 1;
                    inline.push((name.to_string(), depth));
                    i += 3;
                } else {
                    i += 1;
                }
            }
            Tok::Ident(k) if k == "use" => {
                let mut imports = Vec::new();
                i = use_tree(&t, i + 1, Vec::new(), &mut imports);
                let at: Vec<String> = inline.iter().map(|m| m.0.clone()).collect();
                for imp in imports {
                    info.paths.push((at.clone(), imp.path.clone()));
                    if at.is_empty() {
                        info.imports.push(imp);
                    }
                }
            }
            Tok::Ident(head) => {
                // A path: an identifier followed by `::` (not itself after
                // `::`, which is the middle of a path already read).
                let after_path = i > 0 && t[i - 1] == Tok::Path;
                if !after_path && t.get(i + 1) == Some(&Tok::Path) {
                    let mut path = vec![head.clone()];
                    let mut j = i + 1;
                    while t.get(j) == Some(&Tok::Path) {
                        match ident(t.get(j + 1)) {
                            Some(s) => {
                                path.push(s.to_string());
                                j += 2;
                            }
                            None => break,
                        }
                    }
                    let at = inline.iter().map(|m| m.0.clone()).collect();
                    info.paths.push((at, path));
                    i = j;
                } else {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    info
}

/// `src/a/b.rs` and `src/a/b/mod.rs` → ["a", "b"]; `src/lib.rs` → [].
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let file = parts.pop().unwrap();
    let stem = file.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_string());
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

struct Crate {
    files: BTreeMap<Vec<String>, FileInfo>,
}

impl Crate {
    fn read(src: &Path) -> Crate {
        let mut paths = Vec::new();
        rust_files(src, &mut paths);
        let mut files = BTreeMap::new();
        for p in paths {
            let rel = p.strip_prefix(src).unwrap();
            if rel.starts_with("bin") {
                continue;
            }
            files.insert(module_of(rel), scan(&std::fs::read_to_string(&p).unwrap()));
        }
        Crate { files }
    }

    fn is_module(&self, m: &[String]) -> bool {
        self.files.contains_key(m)
    }

    /// The absolute form of `path` as written in module `module` (file
    /// module plus inline modules), or None for paths outside the crate.
    fn absolute(&self, module: &[String], path: &[String]) -> Option<Vec<String>> {
        let mut base = module.to_vec();
        let mut rest = path;
        match rest.first().map(String::as_str) {
            Some("crate") => {
                base.clear();
                rest = &rest[1..];
            }
            Some("super") | Some("self") => {
                while let Some(h) = rest.first() {
                    match h.as_str() {
                        "super" => {
                            base.pop()?;
                        }
                        "self" => {}
                        _ => break,
                    }
                    rest = &rest[1..];
                }
            }
            Some(head) => {
                // A name in scope: a child module, or something imported.
                let file = self.file_module(module);
                let mut child = module.to_vec();
                child.push(head.to_string());
                if self.is_module(&child) {
                    base = module.to_vec();
                } else {
                    // (`use libc;` names itself: outside the crate.)
                    let imp = self.files[&file]
                        .imports
                        .iter()
                        .find(|imp| imp.name == head && imp.path[0] != head)?;
                    let mut target = self.absolute(&file, &imp.path)?;
                    target.extend(rest[1..].iter().cloned());
                    return Some(target);
                }
            }
            None => return None,
        }
        base.extend(rest.iter().cloned());
        Some(base)
    }

    /// The file module a (possibly inline) module lives in.
    fn file_module(&self, module: &[String]) -> Vec<String> {
        let mut m = module.to_vec();
        while !self.is_module(&m) {
            m.pop();
        }
        m
    }

    /// The module that defines what `abs` names, following re-exports.
    fn defining_module(&self, abs: &[String], hops: usize) -> Vec<String> {
        let mut n = abs.len();
        while n > 0 && !self.is_module(&abs[..n]) {
            n -= 1;
        }
        let m = abs[..n].to_vec();
        if let (Some(name), true) = (abs.get(n), hops < 16) {
            if let Some(imp) = self.files[&m].imports.iter().find(|i| &i.name == name) {
                if let Some(mut target) = self.absolute(&m, &imp.path) {
                    target.extend(abs[n + 1..].iter().cloned());
                    return self.defining_module(&target, hops + 1);
                }
            }
        }
        m
    }

    /// File module → the file modules it uses.
    fn edges(&self) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
        let mut edges = BTreeMap::new();
        for (m, info) in &self.files {
            let out: &mut BTreeSet<Vec<String>> = edges.entry(m.clone()).or_default();
            for (inline, path) in &info.paths {
                let mut at = m.clone();
                at.extend(inline.iter().cloned());
                let Some(abs) = self.absolute(&at, path) else {
                    continue;
                };
                let target = self.defining_module(&abs, 0);
                if &target != m {
                    out.insert(target);
                }
            }
        }
        edges
    }
}

/// The child of `parent` that `m` lies in (None when `m` is `parent`
/// itself or outside it).
fn child_of(parent: &[String], m: &[String]) -> Option<String> {
    (m.len() > parent.len() && m.starts_with(parent)).then(|| m[parent.len()].clone())
}

/// A cycle in `graph`, if any.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for next in g.get(n).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = stack.iter().position(|s| s == next).unwrap();
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(next, g, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0 {
            let mut stack = Vec::new();
            if let Some(c) = visit(n, graph, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

fn src_crate() -> Crate {
    Crate::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

/// For each folder, the graph among its children.
fn sibling_graphs(c: &Crate) -> BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> {
    let edges = c.edges();
    let mut graphs: BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for parent in c.files.keys() {
        let g = graphs.entry(parent.clone()).or_default();
        for (from, tos) in &edges {
            let Some(a) = child_of(parent, from) else {
                continue;
            };
            g.entry(a.clone()).or_default();
            for to in tos {
                if let Some(b) = child_of(parent, to) {
                    if a != b {
                        g.get_mut(&a).unwrap().insert(b);
                    }
                }
            }
        }
    }
    graphs
}

#[test]
fn no_module_is_in_an_import_cycle() {
    let c = src_crate();
    assert!(c.files.len() > 20, "src/ was read");
    let mut cycles = Vec::new();
    for (parent, g) in sibling_graphs(&c) {
        if let Some(cycle) = find_cycle(&g) {
            let at = if parent.is_empty() {
                "crate".to_string()
            } else {
                format!("crate::{}", parent.join("::"))
            };
            cycles.push(format!("among the modules of {at}: {}", cycle.join(" -> ")));
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

/// DESIGN.md §4: `capi → model → (qat, opencog) → ggml → quant`, each
/// layer using only layers below it (`error` and `rng` are shared
/// vocabulary; the command line in `src/bin/` is a separate crate target).
#[test]
fn top_level_modules_point_one_way() {
    let rank = |m: &str| match m {
        "quant" => 0,
        "error" | "rng" => 1,
        "ggml" => 2,
        "opencog" => 3,
        "qat" => 3,
        "model" => 4,
        "calibrator" => 4,
        "capi" => 5,
        other => panic!("unknown top-level module {other}: give it a layer here"),
    };
    let c = src_crate();
    let top = &sibling_graphs(&c)[&Vec::new()];
    for (from, tos) in top {
        for to in tos {
            assert!(
                rank(to) < rank(from),
                "{from} uses {to}, which is not below it (DESIGN.md §4)"
            );
        }
    }
}

#[test]
fn the_reader_finds_known_edges_and_cycles() {
    let c = src_crate();
    let edges = c.edges();
    let m = |s: &str| s.split("::").map(String::from).collect::<Vec<_>>();
    // `use super::...` between siblings, `crate::` paths and a name
    // re-exported by a folder (`crate::qat::Session` lives in qat::session).
    assert!(edges[&m("qat::measure")].contains(&m("ggml::compute")));
    assert!(edges[&m("capi::context")].contains(&m("qat::session")));
    assert!(!edges[&m("capi::context")].contains(&m("qat")));
    assert!(edges[&m("ggml::tensor")].contains(&m("ggml::tensor_rows")));
    // A planted cycle is found.
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(find_cycle(&g).unwrap(), ["a", "b", "c", "a"]);
    g.get_mut("c").unwrap().clear();
    assert!(find_cycle(&g).is_none());
    // Comments, strings and test modules are not read.
    let info = scan(
        "// crate::x::y\nfn f() { let s = \"crate::a::b\"; let c = '\"'; crate::q::r(); }\n#[cfg(test)]\nmod tests { use crate::z; }",
    );
    let paths: Vec<_> = info.paths.iter().map(|p| p.1.join("::")).collect();
    assert_eq!(paths, ["crate::q::r"]);
}
