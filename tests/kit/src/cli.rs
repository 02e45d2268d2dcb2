//! The `uplink` binary run as a process on one config dir, as a user runs it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::AsyncWriteExt;

use crate::wait::bounded;

/// What one run of the CLI did.
#[derive(Debug, Clone)]
pub struct Run {
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Standard output as text (lossy).
    pub stdout: String,
    /// Standard output as bytes (`cp … -` writes an object there).
    pub stdout_bytes: Vec<u8>,
    pub stderr: String,
}

impl Run {
    /// Exited with 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// The runner of one CLI binary: `bin --config-dir DIR args…`, with `RUST_LOG` set to
/// its log filter (or removed), standard input closed unless given, killed when the
/// test drops it, and bounded by a limit when one is set.
#[derive(Debug, Clone)]
pub struct Cli {
    bin: PathBuf,
    log: Option<String>,
    limit: Option<Duration>,
}

impl Cli {
    /// `bin`, logging warnings (`RUST_LOG=warn`), without a limit of its own.
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        Self {
            bin: bin.into(),
            log: Some("warn".to_owned()),
            limit: None,
        }
    }

    /// `RUST_LOG` for the process; `None` removes it (the binary's default).
    pub fn log(mut self, filter: Option<&str>) -> Self {
        self.log = filter.map(str::to_owned);
        self
    }

    /// Fails a run that takes longer than `limit`.
    pub fn limit(mut self, limit: Duration) -> Self {
        self.limit = Some(limit);
        self
    }

    /// The binary.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The command `bin --config-dir dir args…` (killed when dropped); the caller sets
    /// up its pipes.
    pub fn command(&self, dir: &Path, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.bin);
        c.arg("--config-dir").arg(dir).args(args).kill_on_drop(true);
        match &self.log {
            Some(filter) => c.env("RUST_LOG", filter),
            None => c.env_remove("RUST_LOG"),
        };
        c
    }

    /// Runs `args` on config dir `dir` with nothing on standard input.
    pub async fn run(&self, dir: &Path, args: &[&str]) -> anyhow::Result<Run> {
        self.run_with_input(dir, args, None).await
    }

    /// Runs `args` on config dir `dir`, writing `input` (if any) to its standard input.
    pub async fn run_with_input(
        &self,
        dir: &Path,
        args: &[&str],
        input: Option<Vec<u8>>,
    ) -> anyhow::Result<Run> {
        let mut cmd = self.command(dir, args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot run {}", self.bin.display()))?;
        if let Some(input) = input {
            let mut pipe = child.stdin.take().context("no stdin pipe")?;
            pipe.write_all(&input).await?;
        }
        let out = match self.limit {
            Some(limit) => bounded(limit, child.wait_with_output()).await?,
            None => child.wait_with_output().await?,
        };
        Ok(Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stdout_bytes: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs `args`, which must succeed; returns its standard output as text.
    pub async fn ok(&self, dir: &Path, args: &[&str]) -> anyhow::Result<String> {
        let run = self.run(dir, args).await?;
        if !run.success() {
            bail!("uplink {args:?} failed: {}", run.stderr);
        }
        Ok(run.stdout)
    }
}
