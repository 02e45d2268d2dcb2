//! Linux network namespaces, veth pairs and bridges, made with `ip` (iproute2) and
//! removed again: the plumbing of [`super::NetnsNetwork`]. Nothing here touches the
//! root namespace's interfaces: every link is created by `ip -n NS`, inside a namespace
//! this module made, and every name carries the harness's prefix.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

/// Where `ip netns add` puts its namespaces.
const NETNS_DIR: &str = "/var/run/netns";
/// The prefix of every namespace a harness makes: `shoalns-PID-…`.
pub(crate) const PREFIX: &str = "shoalns-";

/// Runs `ip ARGS`; fails with its stderr (and what the harness needs) otherwise.
pub(crate) fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context(
            "cannot run `ip` (iproute2): the network-namespace harness needs it (Debian: apt-get install iproute2)",
        )?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Creates namespace `name` with its loopback up. Fails with the reason (root and
/// iproute2 are needed) when it cannot.
pub(crate) fn add_namespace(name: &str) -> anyhow::Result<()> {
    ip(&["netns", "add", name]).with_context(|| {
        format!("cannot create network namespace {name}: the netns harness needs root (CAP_SYS_ADMIN) and iproute2")
    })?;
    ip(&["-n", name, "link", "set", "lo", "up"])
}

/// Deletes namespace `name` (its interfaces and their veth peers go with it).
pub(crate) fn delete_namespace(name: &str) -> anyhow::Result<()> {
    ip(&["netns", "del", name])
}

/// Whether namespace `name` exists.
pub(crate) fn namespace_exists(name: &str) -> bool {
    Path::new(NETNS_DIR).join(name).exists()
}

/// Namespaces left by harnesses whose process is gone (killed before their `Drop`):
/// `shoalns-PID-…` with no process PID. Only names with this harness's prefix.
pub(crate) fn orphaned_namespaces() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| {
            name.strip_prefix(PREFIX)
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        })
        .collect()
}

/// A bridge `bridge` inside namespace `ns`, up.
pub(crate) fn add_bridge(ns: &str, bridge: &str) -> anyhow::Result<()> {
    ip(&["-n", ns, "link", "add", bridge, "type", "bridge"])?;
    ip(&["-n", ns, "link", "set", bridge, "up"])
}

/// A veth pair: `hub_end` in namespace `hub`, enslaved to `bridge`, and `eth0` in
/// namespace `ns` with `cidr` (e.g. `10.77.3.2/16`); both up.
pub(crate) fn attach(
    hub: &str,
    bridge: &str,
    hub_end: &str,
    ns: &str,
    cidr: &str,
) -> anyhow::Result<()> {
    ip(&[
        "-n", hub, "link", "add", hub_end, "type", "veth", "peer", "name", "eth0", "netns", ns,
    ])?;
    ip(&["-n", hub, "link", "set", hub_end, "master", bridge])?;
    ip(&["-n", hub, "link", "set", hub_end, "up"])?;
    ip(&["-n", ns, "addr", "add", cidr, "dev", "eth0"])?;
    ip(&["-n", ns, "link", "set", "eth0", "up"])
}

/// Sets the hub end `hub_end` up or down (a cable plugged in or pulled).
pub(crate) fn set_link(hub: &str, hub_end: &str, up: bool) -> anyhow::Result<()> {
    ip(&[
        "-n",
        hub,
        "link",
        "set",
        hub_end,
        if up { "up" } else { "down" },
    ])
}

/// Moves the hub end `hub_end` onto `bridge` (a partition is a second bridge).
pub(crate) fn move_to_bridge(hub: &str, hub_end: &str, bridge: &str) -> anyhow::Result<()> {
    ip(&["-n", hub, "link", "set", hub_end, "master", bridge])
}

/// Runs `make()`'s future on a thread of its own whose network namespace is `ns`, on a
/// current-thread runtime: every socket it opens (and every process it starts) lives in
/// `ns`. For probes of addresses that exist only inside the harness (a node's metrics).
pub async fn in_namespace<T, F, Fut>(ns: &str, limit: Duration, make: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let path = Path::new(NETNS_DIR).join(ns);
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("netns {ns}"))
        .spawn(move || {
            let run = || -> anyhow::Result<T> {
                let file = std::fs::File::open(&path)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                rustix::thread::move_into_link_name_space(
                    std::os::fd::AsFd::as_fd(&file),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .with_context(|| format!("cannot enter network namespace {}", path.display()))?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    match tokio::time::timeout(limit, make()).await {
                        Ok(r) => r,
                        Err(_) => bail!("timed out after {limit:?}"),
                    }
                })
            };
            let _ = tx.send(run());
        })
        .context("cannot start a namespace thread")?;
    rx.await
        .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_namespaces_of_dead_harness_processes_are_orphans() {
        // The filter itself: a live pid (ours) is never an orphan.
        let ours = format!("{PREFIX}{}-0-hub", std::process::id());
        let name_pid = ours
            .strip_prefix(PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        assert_eq!(name_pid, Some(std::process::id()));
        assert!(!orphaned_namespaces().contains(&ours));
    }
}
