//! The network of real hosts (issue 24): storage-node processes each in a network
//! namespace of its own, with the public network's rules (no `local_network`; the
//! harness's private range declared as a test range), the uplink CLI in client
//! namespaces. Needs root and iproute2: without them these tests fail, saying so.
//!
//! - A node whose link goes down in the middle of an upload is replaced, and the upload
//!   succeeds.
//! - The public-network rules hold: a node announcing an address it does not own is
//!   refused by the others (their dial-back reaches someone else), and a segment's
//!   pieces land at most one per /24 even when two nodes share one.
//! - A network split in two halves, each with a client writing, heals, and both clients'
//!   catalogs converge.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use shoal_test_kit::{bounded, build_binary, test_data, wait_until};
use shoal_tests::netns::{GRPC_PORT, Member, NetnsNetwork, NetnsOptions, NodeSpec};
use shoal_tests::process_net::Binaries;

/// Longest one uplink command may take.
const COMMAND: Duration = Duration::from_secs(180);

fn binaries() -> Binaries {
    Binaries {
        storage_node: build_binary("storage-node", "storage-node").unwrap(),
        uplink: build_binary("uplink-cli", "uplink").unwrap(),
    }
}

async fn start(options: NetnsOptions) -> NetnsNetwork {
    let bins = tokio::task::spawn_blocking(binaries).await.unwrap();
    let nodes = options.nodes;
    let net = tokio::task::spawn_blocking(move || NetnsNetwork::start(bins, options))
        .await
        .unwrap()
        .unwrap();
    net.wait_seen(0, nodes, Duration::from_secs(120))
        .await
        .unwrap();
    net
}

/// The one segment of `bucket/key` in config dir `dir`'s catalog: (node id, address)
/// of each of its pieces.
fn placements(dir: &Path, bucket: &str, key: &str) -> Vec<([u8; 32], SocketAddr)> {
    let paths = uplink::config::Paths::resolve(Some(dir.to_path_buf())).unwrap();
    let catalog_dir = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("catalog-"))
        })
        .expect("a catalog dir");
    let catalog = uplink::catalog::Catalog::open(&catalog_dir, paths.writer_id().unwrap()).unwrap();
    let entry = catalog.object(bucket, key).unwrap().expect("the object");
    assert_eq!(entry.segments().len(), 1, "one segment");
    entry.segments()[0]
        .pieces
        .iter()
        .map(|p| (p.node_id, p.address))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_mid_upload_is_replaced_and_the_upload_succeeds() {
    bounded(Duration::from_secs(900), async {
        // Catalog blobs with slack too: the default catalog scheme shrunk to 10 nodes
        // needs every node (see `Scheme::shrink_to`), the cut one included.
        let net = start(NetnsOptions {
            nodes: 10,
            uplink_config: "scheme = \"2/3/4/6\"\ncatalog_scheme = \"2/3/4/6\"\npiece_timeout_secs = 5\nlong_tail_grace_ms = 500\n"
                .into(),
            ..NetnsOptions::default()
        })
        .await;
        let dir = net.import(0, "writer").await.unwrap();
        net.uplink_ok(0, &dir, &["mb", "shoal://mid"], COMMAND)
            .await
            .unwrap();
        let work = net.scratch("mid-upload").unwrap();
        let file = work.join("big");
        std::fs::write(&file, test_data(48 << 20, 24)).unwrap();
        let mut up = net
            .uplink_command(0, &dir, &["cp", file.to_str().unwrap(), "shoal://mid/big"])
            .unwrap()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The first node (not the seed) seen receiving a piece loses its link.
        let victim = std::cell::Cell::new(None);
        wait_until(Duration::from_secs(120), "a node receiving a piece", || {
            let (net, victim) = (&net, &victim);
            async move {
                for i in 1..net.len() {
                    if net
                        .metric(i, "shoal_node_active_streams")
                        .await
                        .is_ok_and(|v| v > 0.0)
                    {
                        victim.set(Some(i));
                        return true;
                    }
                }
                false
            }
        })
        .await
        .unwrap();
        let victim = victim.get().unwrap();
        net.cut(Member::Node(victim)).unwrap();
        assert!(
            matches!(up.try_wait(), Ok(None)),
            "the upload ended before the cut"
        );
        let out = tokio::time::timeout(COMMAND, up.wait_with_output())
            .await
            .expect("the upload ended")
            .unwrap();
        assert!(
            out.status.success(),
            "the upload failed with node {victim} cut off: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Its pieces are elsewhere: none on the node that was cut.
        let cut_id = net.node(victim).node_id.clone();
        let placed = placements(&dir, "mid", "big");
        assert!(placed.len() >= 4, "{placed:?}");
        assert!(
            placed
                .iter()
                .all(|(id, _)| shoal_proto::NodeId(*id).to_hex() != cut_id),
            "a piece is recorded on the node that was cut off"
        );
        // Every byte comes back with the node still cut off.
        let back = work.join("back");
        net.uplink_ok(
            0,
            &dir,
            &["cp", "shoal://mid/big", back.to_str().unwrap()],
            COMMAND,
        )
        .await
        .unwrap();
        assert!(
            std::fs::read(&back).unwrap() == std::fs::read(&file).unwrap(),
            "the object differs"
        );
        net.heal().unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_network_rules_hold_on_real_hosts() {
    bounded(Duration::from_secs(900), async {
        let mut net = start(NetnsOptions {
            nodes: 6,
            uplink_config: "scheme = \"2/3/4/6\"\n".into(),
            ..NetnsOptions::default()
        })
        .await;
        // Node 6 shares node 0's /24; node 7 announces node 2's address as its own.
        // Six /24s for seven honest nodes, six pieces a segment: without the rule two
        // pieces would often share node 0's /24.
        let twin = net.address(1, 3);
        let liar_claims = SocketAddr::new(IpAddr::V4(net.node(2).ip), GRPC_PORT);
        let before: f64 = {
            let mut sum = 0.0;
            for i in 0..net.len() {
                sum += net
                    .metric(i, "shoal_dht_dialbacks_failed_total")
                    .await
                    .unwrap();
            }
            sum
        };
        // Setting up and starting a node blocks (at most a minute).
        let liar = tokio::task::block_in_place(|| {
            net.add_node(NodeSpec {
                ip: Some(twin),
                ..NodeSpec::default()
            })
            .unwrap();
            net.add_node(NodeSpec {
                external_address: Some(liar_claims),
                ..NodeSpec::default()
            })
            .unwrap()
        });
        let honest: Vec<String> = (0..net.len())
            .filter(|&i| i != liar)
            .map(|i| net.node(i).node_id.clone())
            .collect();
        // The others dial the liar back at the address it claims, reach node 2 (whose
        // TLS key is not the liar's) and refuse it.
        wait_until(
            Duration::from_secs(120),
            "a dial-back of the liar failing",
            || {
                let net = &net;
                async move {
                    let mut sum = 0.0;
                    for i in (0..net.len()).filter(|&i| i != liar) {
                        sum += net
                            .metric(i, "shoal_dht_dialbacks_failed_total")
                            .await
                            .unwrap_or(0.0);
                    }
                    sum > before
                }
            },
        )
        .await
        .unwrap();
        // A client keeps one member per /24 (the membership's subnet rule): the twins
        // count once.
        net.wait_seen(0, honest.len() - 1, Duration::from_secs(120))
            .await
            .unwrap();
        let found = net.sample(0, 20).await.unwrap();
        let liar_id = net.node(liar).node_id.clone();
        assert!(
            found.iter().all(|c| c.id.to_hex() != liar_id),
            "the node announcing {liar_claims}, an address it does not own, was accepted"
        );
        let has = |i: usize| found.iter().any(|c| c.id.to_hex() == net.node(i).node_id);
        for i in 1..6 {
            assert!(has(i), "honest node {i} not found");
        }
        assert!(has(0) || has(6), "neither twin of 10.N.1.0/24 found");
        // Every address the network hands out is its own: inside the test range.
        assert!(found.iter().all(|c| net.scope().check(&c.address).is_ok()));

        // Pieces land at most one per /24: node 0 and its twin share 10.N.1.0/24.
        let dir = net.import(0, "writer").await.unwrap();
        net.uplink_ok(0, &dir, &["mb", "shoal://subnet"], COMMAND)
            .await
            .unwrap();
        let file = net.scratch("per-subnet").unwrap().join("obj");
        std::fs::write(&file, test_data(256 << 10, 7)).unwrap();
        for round in 0..4 {
            let key = format!("shoal://subnet/obj{round}");
            net.uplink_ok(0, &dir, &["cp", file.to_str().unwrap(), &key], COMMAND)
                .await
                .unwrap();
            let placed = placements(&dir, "subnet", &format!("obj{round}"));
            let mut per_subnet: HashMap<[u8; 3], usize> = HashMap::new();
            for (_, addr) in &placed {
                let IpAddr::V4(v4) = addr.ip() else {
                    panic!("{addr} is not IPv4")
                };
                let [a, b, c, _] = v4.octets();
                *per_subnet.entry([a, b, c]).or_default() += 1;
            }
            assert!(
                per_subnet.values().all(|&n| n == 1),
                "two pieces of one segment in one /24: {placed:?}"
            );
            assert!(placed.len() >= 4, "{placed:?}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_network_heals_and_the_catalogs_of_both_halves_converge() {
    bounded(Duration::from_secs(900), async {
        let mut net = start(NetnsOptions {
            nodes: 10,
            seeds: 2,
            clients: 2,
            uplink_config:
                "scheme = \"2/3/4/5\"\ncatalog_scheme = \"2/3/4/5\"\npiece_timeout_secs = 5\n"
                    .into(),
            ..NetnsOptions::default()
        })
        .await;
        // Two writers of one grant, one per client namespace; both known to the network.
        let a = net.import(0, "a").await.unwrap();
        let b = net.import(1, "b").await.unwrap();
        net.uplink_ok(0, &a, &["mb", "shoal://split"], COMMAND)
            .await
            .unwrap();
        wait_until(Duration::from_secs(120), "writer b sees the bucket", || {
            let (net, b) = (&net, &b);
            async move {
                net.uplink(1, b, &["ls"], COMMAND)
                    .await
                    .is_ok_and(|r| r.success() && r.stdout.contains("split"))
            }
        })
        .await
        .unwrap();

        // Split: nodes 0-4 (seed 0) with client 0, nodes 5-9 with client 1 (node 1,
        // the other seed, is in the first half: the second half joins through
        // remembered nodes).
        let half = |range: std::ops::Range<usize>, client: usize| {
            let mut m: Vec<Member> = range.map(Member::Node).collect();
            m.push(Member::Client(client));
            m
        };
        net.split(&[half(0..5, 0), half(5..10, 1)]).unwrap();
        let work = net.scratch("split").unwrap();
        let (fa, fb) = (work.join("fa"), work.join("fb"));
        std::fs::write(&fa, test_data(20_000, 1)).unwrap();
        std::fs::write(&fb, test_data(30_000, 2)).unwrap();
        // Each half writes while it cannot reach the other (retried: a command may
        // start while its half's routing tables still name the other half).
        for (client, dir, file, key) in [(0, &a, &fa, "from-a"), (1, &b, &fb, "from-b")] {
            let target = format!("shoal://split/{key}");
            wait_until(
                Duration::from_secs(300),
                &format!("{key} written in its half"),
                || {
                    let (net, target) = (&net, &target);
                    async move {
                        let r = net
                            .uplink(
                                client,
                                dir,
                                &["cp", file.to_str().unwrap(), target],
                                COMMAND,
                            )
                            .await;
                        match r {
                            Ok(r) if r.success() => true,
                            Ok(r) => {
                                eprintln!("{key}: {}", r.stderr.trim());
                                false
                            }
                            Err(e) => {
                                eprintln!("{key}: {e:#}");
                                false
                            }
                        }
                    }
                },
            )
            .await
            .unwrap();
        }
        // Neither half sees the other's object yet.
        let ls_a = net
            .uplink_ok(0, &a, &["ls", "shoal://split/"], COMMAND)
            .await;
        if let Ok(ls) = ls_a {
            assert!(
                !ls.contains("from-b"),
                "half a saw b's write through the split: {ls}"
            );
        }

        net.heal().unwrap();
        for (client, dir) in [(0, &a), (1, &b)] {
            wait_until(
                Duration::from_secs(300),
                &format!("client {client} lists both objects after the heal"),
                || {
                    let net = &net;
                    async move {
                        net.uplink(client, dir, &["ls", "shoal://split/"], COMMAND)
                            .await
                            .is_ok_and(|r| {
                                r.success()
                                    && r.stdout.contains("from-a")
                                    && r.stdout.contains("from-b")
                            })
                    }
                },
            )
            .await
            .unwrap();
        }
        // And both read both, byte for byte.
        for (client, dir) in [(0, &a), (1, &b)] {
            for (key, file) in [("from-a", &fa), ("from-b", &fb)] {
                let back = work.join(format!("{client}-{key}"));
                net.uplink_ok(
                    client,
                    dir,
                    &[
                        "cp",
                        &format!("shoal://split/{key}"),
                        back.to_str().unwrap(),
                    ],
                    COMMAND,
                )
                .await
                .unwrap();
                assert!(std::fs::read(&back).unwrap() == std::fs::read(file).unwrap());
            }
        }
        net.teardown().unwrap();
    })
    .await;
}
