//! The module graph stays acyclic and one-way: the module map in `src/lib.rs`'s
//! documentation lists the top-level modules in layer order (one `* [`name`]`
//! bullet each), and a module may import (`crate::<module>`) only modules listed
//! before it. This test reads the sources and fails on any import that points up
//! (or sideways into a later module), naming the file and the line, and on a module
//! the map leaves out.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn lib_rs() -> String {
    std::fs::read_to_string(src().join("lib.rs")).expect("src/lib.rs")
}

/// The modules of lib.rs's module map (`//! * [`name`]` bullets), in order.
fn layers() -> Vec<String> {
    lib_rs()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("//! * [`"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect()
}

/// The modules lib.rs declares.
fn declared() -> Vec<String> {
    lib_rs()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').trim().to_string())
        .collect()
}

#[test]
fn the_module_map_lists_every_module_once() {
    let mut map = layers();
    let mut decl = declared();
    map.sort();
    decl.sort();
    assert_eq!(
        map, decl,
        "lib.rs's module map and its `pub mod` lines differ"
    );
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "bin") {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a source file belongs to (`None` for lib.rs and main.rs).
fn module_of(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src()).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.trim_end_matches(".rs");
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// Every `crate::<name>` in the code of `text` (comments removed), with its line.
fn crate_refs(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push((n + 1, name));
            }
            rest = after;
        }
        // `use crate::{a, b}` groups.
        if let Some(i) = code.find("crate::{") {
            let group = &code[i + "crate::{".len()..];
            for part in group.split([',', '}']) {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push((n + 1, name));
                }
            }
        }
    }
    out
}

#[test]
fn every_module_imports_only_modules_below_it_in_lib_rs() {
    let layers = layers();
    assert!(layers.len() > 10, "lib.rs lists the modules: {layers:?}");
    let rank: HashMap<&str, usize> = layers
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i))
        .collect();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut violations = Vec::new();
    let mut checked = 0;
    for file in &files {
        let Some(module) = module_of(file) else {
            continue;
        };
        let Some(&own) = rank.get(module.as_str()) else {
            violations.push(format!(
                "{}: module `{module}` is not listed in lib.rs",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read source");
        for (line, target) in crate_refs(&text) {
            let Some(&theirs) = rank.get(target.as_str()) else {
                continue; // a re-export or macro path, not a module
            };
            checked += 1;
            if theirs >= own && target != module {
                violations.push(format!(
                    "{}:{line}: `{module}` imports `{target}`, which lib.rs lists after it",
                    file.display()
                ));
            }
        }
    }
    assert!(checked > 50, "the scan found the imports ({checked})");
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_scan_sees_single_and_grouped_imports() {
    let refs = crate_refs("use crate::hub::Hub;\nuse crate::{node, session::x}; // crate::http\n");
    let names: Vec<&str> = refs.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, vec!["hub", "node", "session"]);
}
