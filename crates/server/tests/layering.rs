//! The layering stays as the README draws it: the use cases (`src/app`)
//! know nothing of HTTP, and the JSON API and the worker hang off the use
//! cases without importing each other, nor does the console. Read from the sources, so that a
//! new `use` that crosses a line fails here, not in review.

use std::path::Path;

fn sources(dir: &str) -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&root).expect("source dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            out.push((path.display().to_string(), std::fs::read_to_string(&path).expect("source")));
        }
    }
    assert!(!out.is_empty(), "no sources in {dir}");
    out
}

fn refuse(dir: &str, forbidden: &[&str]) {
    for (file, text) in sources(dir) {
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for f in forbidden {
                assert!(!code.contains(f), "{file}:{}: `{f}` crosses a layer: {line}", n + 1);
            }
        }
    }
}

#[test]
fn the_use_cases_know_nothing_of_http() {
    refuse(
        "app",
        &[
            "axum",
            "hyper",
            "http::",
            "crate::api",
            "crate::extract",
            "crate::problem",
            "crate::observe",
            "crate::worker",
            "Json<",
        ],
    );
}

#[test]
fn the_api_and_the_worker_do_not_import_each_other() {
    refuse("api", &["crate::worker"]);
    refuse("worker", &["crate::api", "crate::extract", "crate::problem", "axum"]);
}

#[test]
fn the_console_hangs_off_the_use_cases_too() {
    refuse("console", &["crate::api", "crate::worker", "crate::extract", "crate::problem"]);
    refuse("api", &["crate::console"]);
}

#[test]
fn no_handler_answers_untyped_json() {
    refuse("api", &["serde_json::Value", "json!("]);
}

/// Every `.rs` file under `dir` (relative to the workspace's `crates/`).
fn all_sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).expect("source dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            all_sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push((path.display().to_string(), std::fs::read_to_string(&path).expect("source")));
        }
    }
}

/// The OpenAPI document names each schema by its Rust type's name alone:
/// two wire types of one name would silently share one schema (the second
/// described as the first). Each name is used once.
#[test]
fn wire_types_have_names_of_their_own() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    all_sources(&crates.join("server").join("src"), &mut files);
    all_sources(&crates.join("domain").join("src"), &mut files);
    let mut seen: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for (file, text) in files {
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            let derives_schema = line.trim_start().starts_with("#[derive(") && line.contains("ToSchema");
            let implements_schema = line.trim_start().starts_with("impl utoipa::ToSchema for ");
            let name = if derives_schema {
                // The type the derive is on: the next `pub struct` / `pub enum` line.
                lines[n + 1..].iter().find_map(|l| {
                    let l = l.trim_start();
                    ["pub struct ", "pub enum ", "struct ", "enum "]
                        .iter()
                        .find_map(|p| l.strip_prefix(p))
                        .map(|rest| {
                            rest.split(|c: char| !c.is_alphanumeric() && c != '_')
                                .next()
                                .unwrap_or("")
                                .to_string()
                        })
                })
            } else if implements_schema {
                line.trim_start().strip_prefix("impl utoipa::ToSchema for ").map(|rest| {
                    rest.split(|c: char| !c.is_alphanumeric() && c != '_')
                        .next()
                        .unwrap_or("")
                        .to_string()
                })
            } else {
                None
            };
            let Some(name) = name.filter(|n| !n.is_empty()) else { continue };
            let here = format!("{file}:{}", n + 1);
            if let Some(first) = seen.insert(name.clone(), here.clone()) {
                panic!("two wire types are named {name}: {first} and {here}");
            }
        }
    }
    assert!(seen.len() > 50, "found only {} wire types", seen.len());
}
