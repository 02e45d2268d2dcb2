//! The shape ARCHITECTURE.md promises, checked on every run: no import cycle between the
//! modules of any crate, and no production source file over 800 lines.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use shoal_test_kit::{files_under, repo_root, require_tool};

/// Longest production file ARCHITECTURE.md allows: a file past it holds several jobs.
const MAX_LINES: usize = 800;

#[test]
fn no_module_imports_one_that_imports_it() {
    require_tool(
        "python3",
        &["--version"],
        "install Python 3 (Debian: python3)",
    );
    let root = repo_root();
    let out = std::process::Command::new("python3")
        .arg(root.join("tests/scripts/cycles.py"))
        .arg(&root)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "import cycles between modules:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("0 cycles"), "{stdout}");
}

/// A test file, a test module or a generated one may be long; production code may not.
fn is_production(rel: &Path) -> bool {
    let s = rel.to_string_lossy();
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    s.ends_with(".rs")
        && s.contains("/src/")
        && !s.starts_with("target/")
        && !s.contains("/target/")
        && !s.starts_with("tests/")
        && name != "tests.rs"
        && !name.ends_with("_tests.rs")
        && !s.contains("/tests/")
        && !s.contains("/testing/")
}

#[test]
fn no_production_file_is_over_800_lines() {
    let root = repo_root();
    let mut long = Vec::new();
    for dir in [
        "proto",
        "satellite-free-discovery",
        "storage-node",
        "uplink",
    ] {
        for rel in files_under(&root.join(dir)).unwrap() {
            let rel = Path::new(dir).join(rel);
            if !is_production(&rel) {
                continue;
            }
            let text = std::fs::read_to_string(root.join(&rel)).unwrap();
            let lines = text.lines().count();
            if lines > MAX_LINES {
                long.push(format!("{} ({lines} lines)", rel.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "production files over {MAX_LINES} lines: {long:?}"
    );
}
