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
