//! Where the workspace is, and its binaries built for a test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// The workspace root (this crate is `tests/kit/` in it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Builds binary `bin` of `package` with the test profile (reusing the running test's
/// artifacts: a test of another crate does not get it built) and returns its path.
/// Fails when cargo is not available (`CARGO` is set by `cargo test` and `cargo run`)
/// or the build does not produce the binary.
pub fn build_binary(package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").with_context(|| {
        format!("building the {bin} binary needs cargo: run this through cargo (CARGO not set)")
    })?;
    let out = Command::new(cargo)
        .current_dir(repo_root())
        .args(["build", "-p", package, "--bin", bin, "--profile", "test"])
        .arg("--message-format=json")
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("cargo build of {package} failed");
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["executable"].as_str().map(PathBuf::from))
        .find(|p| p.file_name().is_some_and(|n| n == bin))
        .with_context(|| format!("cargo built {package} but named no {bin} binary"))
}
