//! `devnet up` → upload → stop → `devnet up` again on the same dir → the download is
//! identical; and the printed grant works from a fresh uplink config.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use shoal_proto::address::AddressScope;
use shoal_proto::tls::PinnedPeer;
use shoal_proto::{Identity, NodeId};
use shoal_test_kit::{bounded, build_binary, test_data};
use shoal_tests::devnet::{Devnet, DevnetParams, ensure_uplink_access};
use storage_node::ByteSize;
use uplink::catalog::Catalog;
use uplink::discovery::DhtNodes;
use uplink::grpc::GrpcPieceStore;
use uplink::{Access, PutOptions, Uplink, UplinkConfig};

/// A port free on 127.0.1.1 (the seed's address); the other nodes use other IPs.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.1.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn uplink_from_grant(grant: &str, catalog_dir: &Path) -> Uplink {
    let access = Access::from_grant(grant).unwrap();
    let bootstrap: Vec<(NodeId, SocketAddr)> = access
        .bootstrap()
        .iter()
        .map(|p| {
            let p: PinnedPeer = p.parse().unwrap();
            (p.id, p.address.parse().unwrap())
        })
        .collect();
    let identity = Arc::new(Identity::from_seed(*access.owner().seed()));
    let difficulty = access
        .difficulty()
        .expect("a devnet grant names its difficulty");
    let nodes = DhtNodes::new(identity, bootstrap, difficulty, AddressScope::Local);
    Uplink::new(
        access,
        Arc::new(GrpcPieceStore::default()),
        Arc::new(nodes),
        Catalog::open(catalog_dir, uplink::catalog::WriterId::random()).unwrap(),
        UplinkConfig::default(),
    )
    .unwrap()
}

async fn put(up: &Uplink, bucket: &str, key: &str, data: &[u8]) {
    up.put(bucket, key, data, PutOptions::default())
        .await
        .unwrap();
}

async fn get(up: &Uplink, bucket: &str, key: &str) -> Vec<u8> {
    let mut out = Vec::new();
    up.get(bucket, key, None, &mut out, None).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_resumes_with_every_piece_and_its_grant_works_elsewhere() {
    bounded(Duration::from_secs(300), async {
        let dir = tempfile::tempdir().unwrap();
        let params = DevnetParams {
            base_port: free_port(),
            difficulty: 4,
            allocate: ByteSize(256 << 20),
        };
        let net = Devnet::up(dir.path(), 12, &params).await.unwrap();
        assert!(net.wait_joined(Duration::from_secs(60)).await);
        let access = ensure_uplink_access(dir.path(), &net.seed_pinned().unwrap()).unwrap();
        let catalog = dir.path().join("uplink").join("catalog");
        let data = test_data(3 << 20, 7);
        {
            let up = uplink_from_grant(&access.grant, &catalog);
            up.create_bucket("backups").unwrap();
            put(&up, "backups", "photo.raw", &data).await;
            assert_eq!(get(&up, "backups", "photo.raw").await, data);
        }
        net.shutdown().await.unwrap();

        // Same dir again: same nodes, same addresses, every piece still there.
        let net = Devnet::up(dir.path(), 12, &params).await.unwrap();
        assert_eq!(net.nodes().len(), 12);
        let again = ensure_uplink_access(dir.path(), &net.seed_pinned().unwrap()).unwrap();
        assert_eq!(again.grant, access.grant, "the devnet keeps its grant");
        {
            let up = uplink_from_grant(&access.grant, &catalog);
            assert_eq!(get(&up, "backups", "photo.raw").await, data);
        }

        // A second terminal: only the grant, a fresh config and catalog.
        let fresh = tempfile::tempdir().unwrap();
        assert!(net.wait_joined(Duration::from_secs(60)).await);
        let up = uplink_from_grant(&access.grant, fresh.path());
        up.create_bucket("other").unwrap();
        let more = test_data(1 << 20, 8);
        put(&up, "other", "file", &more).await;
        assert_eq!(get(&up, "other", "file").await, more);
        drop(up);
        net.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn status_of_a_devnet_that_is_not_running_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let err = shoal_tests::devnet::status(dir.path()).await.unwrap_err();
    assert!(err.to_string().contains("no devnet"), "{err}");
}

/// Issue 21, "Done when": `devnet up`, objects written through the `uplink` CLI from the
/// devnet's config dir and from a second config dir of the same grant, the devnet
/// stopped and started again on the same dir (as the README tells users): every object
/// is there for both config dirs and for a fresh import, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_restart_keeps_every_catalog_for_every_config_dir_and_a_fresh_import() {
    let bin = build_binary("uplink-cli", "uplink").unwrap();
    bounded(Duration::from_secs(400), async {
        let dir = tempfile::tempdir().unwrap();
        let params = DevnetParams {
            base_port: free_port(),
            difficulty: 4,
            allocate: ByteSize(256 << 20),
        };
        let net = Devnet::up(dir.path(), 12, &params).await.unwrap();
        assert!(net.wait_joined(Duration::from_secs(60)).await);
        let access = ensure_uplink_access(dir.path(), &net.seed_pinned().unwrap()).unwrap();
        let run = |config: &Path, args: &[&str]| {
            let out = std::process::Command::new(&bin)
                .arg("--config-dir")
                .arg(config)
                .args(args)
                .env("RUST_LOG", "warn")
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "uplink {args:?}: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            stdout
        };
        let local = std::fs::read_to_string(access.config_dir.join("config.toml")).unwrap();
        let new_dir = |name: &str| {
            let d = dir.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("config.toml"), &local).unwrap();
            d
        };
        // The devnet's own config dir and a second machine of the same grant.
        let first = access.config_dir.clone();
        let second = new_dir("second");
        run(&second, &["access", "import", &access.grant]);
        let src = dir.path().join("src");
        let mut files = Vec::new();
        for i in 0..6u64 {
            let len = if i % 2 == 0 {
                1000 + i as usize
            } else {
                70_000
            };
            let path = src.join(format!("f{i}"));
            std::fs::create_dir_all(&src).unwrap();
            std::fs::write(&path, test_data(len, i)).unwrap();
            files.push(path);
        }
        run(&first, &["mb", "shoal://one"]);
        run(&second, &["mb", "shoal://two"]);
        for (i, f) in files.iter().enumerate() {
            let (config, bucket) = if i % 2 == 0 {
                (&first, "one")
            } else {
                (&second, "two")
            };
            run(
                config,
                &["cp", f.to_str().unwrap(), &format!("shoal://{bucket}/f{i}")],
            );
        }
        net.shutdown().await.unwrap();

        let net = Devnet::up(dir.path(), 12, &params).await.unwrap();
        assert!(net.wait_joined(Duration::from_secs(60)).await);
        let fresh = new_dir("fresh");
        let imported = run(&fresh, &["access", "import", &access.grant]);
        assert!(imported.contains("2 buckets, 6 objects"), "{imported}");
        for config in [&first, &second, &fresh] {
            for (i, f) in files.iter().enumerate() {
                let bucket = if i % 2 == 0 { "one" } else { "two" };
                let out = dir.path().join("out");
                run(
                    config,
                    &[
                        "cp",
                        &format!("shoal://{bucket}/f{i}"),
                        out.to_str().unwrap(),
                    ],
                );
                assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(f).unwrap());
                std::fs::remove_file(&out).unwrap();
            }
        }
        net.shutdown().await.unwrap();
    })
    .await;
}
