//! A network for tests of the real `uplink` binary: a [`Cluster`] of storage nodes, a
//! DHT every node has joined, an access grant pinned to the first node, and config dirs
//! that import it. Used by the catalog and gateway tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use shoal_proto::Identity;
use shoal_proto::address::AddressScope;
use shoal_test_kit::{Cli, wait_until};
use tokio::io::{AsyncBufReadExt, BufReader};
use uplink::discovery::DhtNodes;
use uplink::store::NodeSource;
use uplink::{Access, RootSecret};

use crate::{Cluster, NodeOptions};

/// Waits until a DHT client joining through the first node sees every node.
pub async fn wait_all_seen(cluster: &Cluster) -> anyhow::Result<()> {
    let nodes = cluster.nodes.len();
    let seed = (cluster.node(0).node_id(), cluster.node(0).grpc_addr());
    let probe = DhtNodes::new(
        Arc::new(Identity::random()),
        vec![seed],
        0,
        AddressScope::Local,
    );
    let seen = wait_until(
        Duration::from_secs(60),
        "a DHT client sees every node",
        || {
            let probe = &probe;
            async move { probe.sample(nodes).await.is_ok_and(|n| n.len() >= nodes) }
        },
    )
    .await;
    probe.shutdown().await;
    seen
}

#[derive(Debug)]
pub struct CliNet {
    pub cluster: Cluster,
    /// The `uplink` binary, built for this test run, and how it is run.
    pub cli: Cli,
    pub grant: String,
    /// The `config.toml` every config dir gets.
    pub config: String,
    pub work: tempfile::TempDir,
}

impl CliNet {
    /// Starts `nodes` nodes and waits until a DHT client sees all of them.
    pub async fn start(nodes: usize, config: &str) -> anyhow::Result<CliNet> {
        let bin = shoal_test_kit::build_binary("uplink-cli", "uplink")?;
        let cluster = Cluster::start(
            nodes,
            NodeOptions {
                allocate: 1 << 30,
                ..NodeOptions::default()
            },
        )
        .await?;
        wait_all_seen(&cluster).await?;
        let grant = Access::new(RootSecret::random(), vec![cluster.node(0).pinned()]).to_grant()?;
        Ok(CliNet {
            cluster,
            cli: Cli::new(bin).log(Some("warn,s3s=off")),
            grant,
            config: config.to_string(),
            work: tempfile::tempdir()?,
        })
    }

    /// Stops every node, then starts them again on their directories, identities and
    /// ports (the first, everyone's bootstrap, first), and waits until a DHT client sees
    /// them all. The DHT records the nodes held in memory are gone after it.
    pub async fn restart_all(&mut self) -> anyhow::Result<()> {
        for n in &mut self.cluster.nodes {
            n.stop().await?;
        }
        for n in &mut self.cluster.nodes {
            n.restart().await?;
        }
        wait_all_seen(&self.cluster).await
    }

    /// A new config dir with the grant imported (its catalog recovered from the
    /// network). Returns the dir and what `access import` printed.
    pub async fn config_dir(&self, name: &str) -> anyhow::Result<(PathBuf, String)> {
        let dir = self.work.path().join(name);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("config.toml"), &self.config)?;
        let out = self.ok(&dir, &["access", "import", &self.grant]).await?;
        Ok((dir, out))
    }

    /// A command of config dir `dir`: (success, stdout, stderr).
    pub async fn run(&self, dir: &Path, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
        let run = self.cli.run(dir, args).await?;
        Ok((run.success(), run.stdout, run.stderr))
    }

    /// A command that must succeed; returns its stdout.
    pub async fn ok(&self, dir: &Path, args: &[&str]) -> anyhow::Result<String> {
        self.cli.ok(dir, args).await
    }

    /// The command for `uplink --config-dir dir args...` (killed when dropped).
    pub fn command(&self, dir: &Path, args: &[&str]) -> tokio::process::Command {
        self.cli.command(dir, args)
    }
}

pub const ACCESS_KEY: &str = "SHOALTESTKEY";
pub const SECRET_KEY: &str = "shoal-test-secret-key-0123456789";

/// A running `uplink gateway` process (credentials [`ACCESS_KEY`], [`SECRET_KEY`]).
#[derive(Debug)]
pub struct GatewayProc {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
}

impl GatewayProc {
    /// Starts `uplink gateway` on config dir `dir` and waits (120 s at most) until it
    /// says where it listens.
    pub async fn start(net: &CliNet, dir: &Path) -> anyhow::Result<GatewayProc> {
        let mut child = net
            .command(
                dir,
                &[
                    "gateway",
                    "--listen",
                    "127.0.0.1:0",
                    "--access-key",
                    ACCESS_KEY,
                    "--secret-key",
                    SECRET_KEY,
                ],
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.split("on http://").nth(1) {
                    return Ok(rest.trim().parse::<SocketAddr>()?);
                }
            }
            bail!("the gateway exited before saying where it listens")
        })
        .await
        .context("the gateway did not start within 120 s")??;
        // Keep draining its output so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(GatewayProc { child, addr })
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGTERM, then the exit status (a clean shutdown exits 0) and how long it took;
    /// fails if the process is still there `limit` after the signal.
    pub async fn stop_within(
        mut self,
        limit: Duration,
    ) -> anyhow::Result<(std::process::ExitStatus, Duration)> {
        let pid = self.child.id().context("the gateway is not running")?;
        let sent = std::time::Instant::now();
        terminate(pid)?;
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .with_context(|| format!("the gateway did not stop within {limit:?} of SIGTERM"))??;
        Ok((status, sent.elapsed()))
    }

    /// SIGTERM, then the exit status (within 90 s).
    pub async fn stop(self) -> anyhow::Result<std::process::ExitStatus> {
        Ok(self.stop_within(Duration::from_secs(90)).await?.0)
    }
}

/// Sends SIGTERM to `pid` (a process this test started).
pub fn terminate(pid: u32) -> anyhow::Result<()> {
    let pid = rustix::process::Pid::from_raw(pid as i32).context("pid 0")?;
    rustix::process::kill_process(pid, rustix::process::Signal::TERM)
        .with_context(|| format!("kill -TERM {pid:?}"))?;
    Ok(())
}
