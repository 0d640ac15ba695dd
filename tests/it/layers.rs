//! The house rule, checked: in `src/` and `proxy/src/`, no files import each
//! other (directly or through others), and every import points down the
//! layers that `docs/architecture.md` lists. The layers are read from that
//! document, so the picture there and this check cannot drift apart.
//!
//! An import is any path in a file, outside `#[cfg(test)]` code, that names
//! a module of the crate: a `use`, an inline `crate::x::y`, `super::z` or
//! `child::f`, also inside macro calls. It points at the file that defines
//! the longest module prefix of the path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

/// A crate's modules, by path (`deploy::replicas`; the root is empty).
type Module = Vec<String>;

#[test]
fn gantry_has_no_import_circles_and_its_imports_point_down() {
    check("src", "src");
}

#[test]
fn the_proxy_has_no_import_circles_and_its_imports_point_down() {
    check("proxy/src", "proxy/src");
}

/// The check itself must see what it is meant to see.
#[test]
fn imports_are_found_in_uses_paths_and_macros() {
    let text = r#"
        mod child;
        pub(crate) use crate::a::{b::C, d};
        pub(super) fn seen() {}
        use super::sibling::*;
        fn f() { crate::e::f(); child::g(); tracing::info!("{}", crate::h::i()); }
        #[cfg(test)]
        mod tests { use crate::never::X; }
    "#;
    let found = imports_of(text);
    let found: BTreeSet<String> = found.into_iter().map(|p| p.join("::")).collect();
    for want in [
        "crate::a::b::C",
        "crate::a::d",
        "super::sibling",
        "crate::e::f",
        "self::child::g",
        "crate::h::i",
    ] {
        assert!(found.contains(want), "{want} not in {found:?}");
    }
    assert!(!found.iter().any(|p| p.contains("never")), "{found:?}");
    assert!(
        !found.contains("crate") && !found.contains("super"),
        "{found:?}"
    );
}

fn check(dir: &str, marker: &str) {
    let root = crate::support::root();
    let layers = read_layers(&root.join("docs/architecture.md"), marker);
    let files = rust_files(&root.join(dir));
    let modules: BTreeMap<Module, PathBuf> = files
        .iter()
        .map(|f| (module_of(&root.join(dir), f), f.clone()))
        .collect();

    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).expect("read source");
        for path in imports_of(&text) {
            if let Some(target) = resolve(&path, module, &modules) {
                if &target != module {
                    edges.entry(module.clone()).or_default().insert(target);
                }
            }
        }
    }

    let mut problems = Vec::new();
    for circle in circles(&modules, &edges) {
        let names: Vec<String> = circle.iter().map(show).collect();
        problems.push(format!(
            "these files import each other: {}",
            names.join(", ")
        ));
    }
    for (module, targets) in &edges {
        if module.is_empty() {
            continue; // the crate root declares modules and re-exports the API
        }
        let Some((from_entry, from_layer)) = layer_of(module, &layers) else {
            problems.push(format!(
                "{} is in no layer of docs/architecture.md ({marker}): put it in one",
                show(module)
            ));
            continue;
        };
        for target in targets {
            if target.is_empty() {
                problems.push(format!(
                    "{} imports through the crate root's re-exports: import from the defining module",
                    show(module)
                ));
                continue;
            }
            let Some((to_entry, to_layer)) = layer_of(target, &layers) else {
                continue; // reported as the importer of its own imports
            };
            if from_entry == to_entry {
                continue; // files of one module; circles are checked above
            }
            if to_layer >= from_layer {
                problems.push(format!(
                    "{} (layer {from_layer}, {from_entry}) imports {} (layer {to_layer}, {to_entry}): imports point down, to a lower layer",
                    show(module),
                    show(target)
                ));
            }
        }
    }
    let listed: BTreeSet<&String> = layers.keys().collect();
    for entry in listed {
        let wanted: Module = entry.split("::").map(str::to_owned).collect();
        if !modules.keys().any(|m| m.starts_with(&wanted)) {
            problems.push(format!(
                "docs/architecture.md ({marker}) lists {entry}, which is not a module"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "the layers of {dir} are broken:\n  {}",
        problems.join("\n  ")
    );
}

fn show(module: &Module) -> String {
    if module.is_empty() {
        "the crate root".into()
    } else {
        module.join("::")
    }
}

/// The layers listed after `<!-- layers: MARKER -->`, in the code block that
/// follows: one line per layer, `[label] N module module ...`, by entry.
fn read_layers(doc: &Path, marker: &str) -> BTreeMap<String, u32> {
    let text = std::fs::read_to_string(doc).expect("read docs/architecture.md");
    let tag = format!("<!-- layers: {marker} -->");
    let start = text
        .find(&tag)
        .unwrap_or_else(|| panic!("docs/architecture.md has no {tag} block"));
    let block = text[start..]
        .split("```")
        .nth(1)
        .expect("a code block after the layers marker");
    let mut layers = BTreeMap::new();
    for line in block.lines().skip(1) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(at) = words.iter().position(|w| w.parse::<u32>().is_ok()) else {
            continue;
        };
        let layer: u32 = words[at].parse().expect("a layer number");
        for word in &words[at + 1..] {
            if word.starts_with('(') || *word == "--" {
                break; // the rest of the line says what the layer is for
            }
            let previous = layers.insert((*word).to_owned(), layer);
            assert!(previous.is_none(), "{word} is listed twice in {marker}");
        }
    }
    assert!(!layers.is_empty(), "no layers listed for {marker}");
    layers
}

/// The listed entry (the longest listed prefix) and layer of a module.
fn layer_of<'a>(module: &Module, layers: &'a BTreeMap<String, u32>) -> Option<(&'a str, u32)> {
    (1..=module.len()).rev().find_map(|len| {
        let key = module[..len].join("::");
        layers
            .get_key_value(&key)
            .map(|(entry, layer)| (entry.as_str(), *layer))
    })
}

/// The crate's files, without the binary's `main.rs` and test-only files.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).expect("read source dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if name != "main.rs" && name != "tests.rs" {
                    out.push(path);
                }
            }
        }
    }
    out.sort();
    out
}

fn module_of(src: &Path, file: &Path) -> Module {
    let relative = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = relative
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// Resolves a path written in `module` to the module file that defines it.
fn resolve(
    path: &[String],
    module: &Module,
    modules: &BTreeMap<Module, PathBuf>,
) -> Option<Module> {
    let (mut base, mut rest): (Module, &[String]) = match path.first().map(String::as_str) {
        Some("crate") => (Vec::new(), &path[1..]),
        Some("self" | "super") => (module.clone(), path),
        _ => return None,
    };
    while let Some(first) = rest.first() {
        match first.as_str() {
            "self" => {}
            "super" => {
                base.pop();
            }
            _ => break,
        }
        rest = &rest[1..];
    }
    base.extend(rest.iter().cloned());
    (0..=base.len())
        .rev()
        .map(|len| base[..len].to_vec())
        .find(|prefix| modules.contains_key(prefix))
}

/// Every path in `text` that may name a module of the crate, with `self::`
/// put in front of paths through a child module.
fn imports_of(text: &str) -> Vec<Vec<String>> {
    let file = syn::parse_file(text).expect("parse a source file");
    let children = file
        .items
        .iter()
        .filter_map(|item| match item {
            syn::Item::Mod(m) if m.content.is_none() && !is_test(&m.attrs) => {
                Some(m.ident.to_string())
            }
            _ => None,
        })
        .collect();
    let mut finder = Finder {
        children,
        paths: Vec::new(),
    };
    finder.visit_file(&file);
    finder
        .paths
        .into_iter()
        .filter_map(|path| match path.first().map(String::as_str) {
            Some("crate" | "self" | "super") => Some(path),
            Some(first) if finder.children.contains(first) => {
                Some(std::iter::once("self".to_owned()).chain(path).collect())
            }
            _ => None,
        })
        .collect()
}

fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.meta
                .require_list()
                .is_ok_and(|l| l.tokens.to_string().split_whitespace().any(|w| w == "test"))
    })
}

struct Finder {
    children: BTreeSet<String>,
    paths: Vec<Vec<String>>,
}

impl Finder {
    fn use_tree(&mut self, prefix: Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                let mut prefix = prefix;
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
            }
            syn::UseTree::Name(n) => self.push(prefix, n.ident.to_string()),
            syn::UseTree::Rename(r) => self.push(prefix, r.ident.to_string()),
            syn::UseTree::Glob(_) => self.paths.push(prefix),
            syn::UseTree::Group(g) => {
                for tree in &g.items {
                    self.use_tree(prefix.clone(), tree);
                }
            }
        }
    }

    fn push(&mut self, mut prefix: Vec<String>, last: String) {
        if last != "self" {
            prefix.push(last);
        }
        self.paths.push(prefix);
    }

    /// Paths in a macro's tokens: `a::b::c` sequences.
    fn tokens(&mut self, tokens: TokenStream) {
        let mut path: Vec<String> = Vec::new();
        let mut colons = 0;
        for token in tokens {
            match token {
                TokenTree::Ident(ident) if path.is_empty() || colons == 2 => {
                    path.push(ident.to_string());
                    colons = 0;
                }
                TokenTree::Punct(p) if p.as_char() == ':' && !path.is_empty() && colons < 2 => {
                    colons += 1;
                }
                other => {
                    if path.len() > 1 {
                        self.paths.push(std::mem::take(&mut path));
                    }
                    path.clear();
                    colons = 0;
                    match other {
                        TokenTree::Group(group) => self.tokens(group.stream()),
                        TokenTree::Ident(ident) => path.push(ident.to_string()),
                        _ => {}
                    }
                }
            }
        }
        if path.len() > 1 {
            self.paths.push(path);
        }
    }
}

impl<'ast> Visit<'ast> for Finder {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs: &[syn::Attribute] = match item {
            syn::Item::Const(i) => &i.attrs,
            syn::Item::Enum(i) => &i.attrs,
            syn::Item::Fn(i) => &i.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Mod(i) => &i.attrs,
            syn::Item::Static(i) => &i.attrs,
            syn::Item::Struct(i) => &i.attrs,
            syn::Item::Trait(i) => &i.attrs,
            syn::Item::Type(i) => &i.attrs,
            syn::Item::Use(i) => &i.attrs,
            _ => &[],
        };
        if !is_test(attrs) {
            syn::visit::visit_item(self, item);
        }
    }

    fn visit_impl_item_fn(&mut self, item: &'ast syn::ImplItemFn) {
        if !is_test(&item.attrs) {
            syn::visit::visit_impl_item_fn(self, item);
        }
    }

    /// `pub(crate)`, `pub(super)`: who may see an item, not an import.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(Vec::new(), &item.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        self.paths
            .push(path.segments.iter().map(|s| s.ident.to_string()).collect());
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.visit_path(&mac.path);
        self.tokens(mac.tokens.clone());
    }
}

/// Groups of modules that import each other (strongly connected, more than one).
fn circles(
    modules: &BTreeMap<Module, PathBuf>,
    edges: &BTreeMap<Module, BTreeSet<Module>>,
) -> Vec<Vec<Module>> {
    // Tarjan's algorithm, iteratively.
    let nodes: Vec<&Module> = modules.keys().collect();
    let index_of: BTreeMap<&Module, usize> =
        nodes.iter().enumerate().map(|(i, m)| (*m, i)).collect();
    let next: Vec<Vec<usize>> = nodes
        .iter()
        .map(|m| {
            edges
                .get(*m)
                .map(|t| t.iter().filter_map(|t| index_of.get(t).copied()).collect())
                .unwrap_or_default()
        })
        .collect();
    let n = nodes.len();
    let (mut index, mut low, mut on_stack) = (vec![usize::MAX; n], vec![0; n], vec![false; n]);
    let (mut stack, mut out, mut counter) = (Vec::new(), Vec::new(), 0);
    for start in 0..n {
        if index[start] != usize::MAX {
            continue;
        }
        let mut work = vec![(start, 0usize)];
        while let Some(&mut (v, ref mut child)) = work.last_mut() {
            if *child == 0 {
                index[v] = counter;
                low[v] = counter;
                counter += 1;
                stack.push(v);
                on_stack[v] = true;
            }
            if let Some(&w) = next[v].get(*child) {
                *child += 1;
                if index[w] == usize::MAX {
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut group = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    group.push(nodes[w].clone());
                    if w == v {
                        break;
                    }
                }
                if group.len() > 1 {
                    group.sort();
                    out.push(group);
                }
            }
        }
    }
    out
}
