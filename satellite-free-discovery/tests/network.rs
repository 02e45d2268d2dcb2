//! Multi-node tests over real sockets on 127.0.N.1 (distinct /24s), port 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use satellite_free_discovery::core::rate::RateConfig;
use satellite_free_discovery::{
    Dht, DhtConfig, DhtError, DhtHandle, DhtPersistence, MemoryPersistence, Mode, RecordFields,
};
use shoal_proto::messages::{MutableRecord, NodeRecord};
use shoal_proto::pb::discovery_client::DiscoveryClient;
use shoal_proto::{Identity, NodeId, Signed, pb, tls};
use shoal_test_kit::wait_until;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::transport::server::Router;
use tonic::transport::server::TcpIncoming;

const DIFFICULTY: u32 = 4;

struct TestNode {
    handle: DhtHandle,
    addr: SocketAddr,
    identity: Arc<Identity>,
    _fields: watch::Sender<RecordFields>,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

impl TestNode {
    /// This node as a pinned bootstrap entry.
    fn pin(&self) -> (NodeId, SocketAddr) {
        (self.identity.node_id(), self.addr)
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.server.await;
        self.handle.shutdown().await;
    }
}

fn config(bootstrap: Vec<(NodeId, SocketAddr)>) -> DhtConfig {
    DhtConfig {
        difficulty: DIFFICULTY,
        bootstrap,
        // Every node of these tests is on 127.0.N.1.
        local_network: true,
        // ...and dials out from 127.0.0.1, so to a per-address budget every node is one
        // peer: the limit is off here, and tested on its own below.
        rate: RateConfig {
            per_second: 0.0,
            ..RateConfig::default()
        },
        ..DhtConfig::default()
    }
}

/// Serves `router` over node-identity TLS with `identity`'s certificate until `stop`.
fn serve(
    listener: TcpListener,
    identity: &Identity,
    router: Router,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let incoming = tls::accept(
        // As the storage node serves: no Nagle delay on small answers.
        TcpIncoming::from(listener).with_nodelay(Some(true)),
        tls::server_config(identity).unwrap(),
    );
    tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
            .await
            .unwrap();
    })
}

async fn start_node(
    ip: Ipv4Addr,
    identity: Arc<Identity>,
    bootstrap: Vec<(NodeId, SocketAddr)>,
) -> TestNode {
    start_node_with(ip, identity, config(bootstrap)).await
}

async fn start_node_with(ip: Ipv4Addr, identity: Arc<Identity>, config: DhtConfig) -> TestNode {
    start_node_on(SocketAddr::from((ip, 0)), identity, config).await
}

/// A node listening on `addr` (port 0: any; a restarted node takes its old address).
async fn start_node_on(addr: SocketAddr, identity: Arc<Identity>, config: DhtConfig) -> TestNode {
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = watch::channel(RecordFields {
        addresses: vec![addr],
        free_space: 1 << 30,
    });
    let handle = Dht::start(identity.clone(), config, Mode::Node(rx)).unwrap();
    let stop = CancellationToken::new();
    let server = serve(
        listener,
        &identity,
        Server::builder().add_service(handle.service()),
        stop.clone(),
    );
    TestNode {
        handle,
        addr,
        identity,
        _fields: tx,
        stop,
        server,
    }
}

fn identity() -> Arc<Identity> {
    Arc::new(Identity::generate(DIFFICULTY).unwrap())
}

/// `n` nodes on 127.0.{base+i}.1, all bootstrapped from the first.
async fn network(base: u8, n: u8) -> Vec<TestNode> {
    let seed = start_node(Ipv4Addr::new(127, 0, base, 1), identity(), vec![]).await;
    let seed_addr = seed.pin();
    let mut nodes = vec![seed];
    for i in 1..n {
        let node = start_node(
            Ipv4Addr::new(127, 0, base + i, 1),
            identity(),
            vec![seed_addr],
        )
        .await;
        node.handle.bootstrap().await.unwrap();
        nodes.push(node);
    }
    nodes
}

async fn stop_all(nodes: Vec<TestNode>) {
    for n in nodes {
        n.stop().await;
    }
}

/// Waits for `cond` with a deadline, polling (no fixed sleep decides the outcome).
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    wait_until(Duration::from_secs(30), what, || std::future::ready(cond()))
        .await
        .unwrap();
}

/// Looks `who` up from `from` until it is found at `addr` (deadline 30 s).
async fn found_at(from: &DhtHandle, who: shoal_proto::NodeId, addr: SocketAddr) {
    wait_until(
        Duration::from_secs(30),
        &format!("{who} found at {addr}"),
        || async {
            let found = from.find_node(who).await.unwrap();
            found.is_some_and(|f| f.addresses[0] == addr)
        },
    )
    .await
    .unwrap();
}

async fn raw_client(node: &TestNode) -> DiscoveryClient<tonic::transport::Channel> {
    DiscoveryClient::new(
        tls::Connector::channel(node.identity.node_id(), node.addr, |e| e).unwrap(),
    )
}

fn record(owner: &Identity, seq: u64, value: &[u8]) -> Signed<MutableRecord> {
    Signed::sign(
        MutableRecord {
            public_key: *owner.public_key(),
            salt: b"catalog".to_vec(),
            seq,
            value: value.to_vec(),
            expires_at_ms: shoal_proto::time::unix_ms() + 3_600_000,
            work: shoal_proto::work::find_publisher_work(owner.public_key(), DIFFICULTY),
        },
        owner,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_nodes_bootstrap_from_one_seed_and_find_each_other() {
    tokio::time::timeout(Duration::from_secs(240), async {
        let nodes = network(1, 30).await;
        let targets: Vec<_> = nodes
            .iter()
            .map(|n| (n.identity.node_id(), n.addr))
            .collect();
        let lookups = nodes.iter().map(|n| {
            let targets = targets.clone();
            async move {
                for (id, addr) in targets {
                    found_at(&n.handle, id, addr).await;
                }
            }
        });
        futures::future::join_all(lookups).await;
        for n in &nodes {
            assert!(
                n.handle.table().len() >= 20,
                "table of {} too small",
                n.addr
            );
        }
        stop_all(nodes).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_put_by_one_are_read_by_another_and_bad_ones_are_refused() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let nodes = network(50, 8).await;
        let owner = Identity::random();
        let key = MutableRecord::key_for(owner.public_key(), b"catalog");
        // Peers enter tables only once their dial-back returns: wait (bounded) until a
        // lookup from the writer reaches the other 7 nodes, however loaded the machine.
        wait_until(
            Duration::from_secs(30),
            "lookups to reach the other 7 nodes",
            || async { nodes[1].handle.closest(key.0).await.unwrap().len() >= 7 },
        )
        .await
        .unwrap();
        let report = nodes[1]
            .handle
            .put_record(record(&owner, 1, b"v1"), None)
            .await
            .unwrap();
        assert!(report.stored >= 7, "{report:?}");
        let got = nodes[5].handle.get_record(key).await.unwrap().unwrap();
        assert_eq!((got.seq, got.value.as_slice()), (1, &b"v1"[..]));

        // Compare-and-swap: right expected seq succeeds, a stale one fails.
        nodes[2]
            .handle
            .put_record(record(&owner, 2, b"v2"), Some(1))
            .await
            .unwrap();
        let err = nodes[3]
            .handle
            .put_record(record(&owner, 3, b"v3"), Some(1))
            .await
            .unwrap_err();
        assert!(matches!(err, DhtError::CasMismatch), "{err}");

        let mut client = raw_client(&nodes[4]).await;
        // Replayed (older seq): refused.
        let replay = pb::MutableRecord::from(&record(&owner, 1, b"v1"));
        let status = client
            .put_record(pb::PutRecordRequest {
                sender: None,
                record: Some(replay),
                expected_seq: None,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status}");
        // Forged: value changed after signing, or signature by another key.
        let mut forged = pb::MutableRecord::from(&record(&owner, 9, b"v9"));
        forged.value = b"evil".to_vec();
        let status = client
            .put_record(pb::PutRecordRequest {
                sender: None,
                record: Some(forged),
                expected_seq: None,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
        let mallory = Identity::random();
        let mut stolen = pb::MutableRecord::from(&record(&mallory, 9, b"v9"));
        stolen.public_key = owner.public_key().as_bytes().to_vec();
        let status = client
            .put_record(pb::PutRecordRequest {
                sender: None,
                record: Some(stolen),
                expected_seq: None,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
        // Oversize value (validly signed): refused.
        let big = pb::MutableRecord::from(&record(&owner, 10, &vec![7u8; 4097]));
        let status = client
            .put_record(pb::PutRecordRequest {
                sender: None,
                record: Some(big),
                expected_seq: None,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
        // A newer record whose publisher key carries no proof of work (issue 27: keys
        // are not free): refused before the store sees it.
        let unpaid = (0..)
            .find(|n| {
                shoal_proto::work::check_publisher_work(owner.public_key(), *n, DIFFICULTY).is_err()
            })
            .unwrap();
        let status = client
            .put_record(pb::PutRecordRequest {
                sender: None,
                record: Some(pb::MutableRecord::from(
                    &record(&owner, 11, b"v11").with_work(unpaid),
                )),
                expected_seq: None,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}");

        // Nothing of that changed what the network returns.
        let got = nodes[7].handle.get_record(key).await.unwrap().unwrap();
        assert_eq!((got.seq, got.value.as_slice()), (2, &b"v2"[..]));
        stop_all(nodes).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_subnet_never_exceeds_the_limits() {
    tokio::time::timeout(Duration::from_secs(180), async {
        let target = start_node(Ipv4Addr::new(127, 0, 100, 1), identity(), vec![]).await;
        let mut flood = Vec::new();
        for _ in 0..30 {
            let n = start_node(
                Ipv4Addr::new(127, 0, 200, 1),
                identity(),
                vec![target.pin()],
            )
            .await;
            n.handle.bootstrap().await.unwrap();
            flood.push(n);
        }
        let mut honest = Vec::new();
        for i in 0..3 {
            let n = start_node(
                Ipv4Addr::new(127, 0, 101 + i, 1),
                identity(),
                vec![target.pin()],
            )
            .await;
            n.handle.bootstrap().await.unwrap();
            honest.push(n);
        }
        // Every flood node asks again, so each is dialled back at least once.
        for n in &flood {
            n.handle.bootstrap().await.unwrap();
        }
        wait_for("dial-backs to settle", || {
            target.handle.pending_dialbacks() == 0
        })
        .await;
        let table = target.handle.table();
        let flooded: Vec<_> = table
            .iter()
            .filter(|e| e.record.addresses[0].ip() == Ipv4Addr::new(127, 0, 200, 1))
            .collect();
        assert!(!flooded.is_empty());
        assert!(flooded.len() <= 10, "{} nodes of one /24", flooded.len());
        let mut per_bucket = std::collections::HashMap::new();
        for e in &flooded {
            let b = satellite_free_discovery::core::key::bucket_index(
                &target.identity.node_id(),
                &e.record.node_id(),
            );
            *per_bucket.entry(b).or_insert(0) += 1;
        }
        assert!(per_bucket.values().all(|n| *n <= 2), "{per_bucket:?}");
        for h in &honest {
            let id = h.identity.node_id();
            assert!(
                table.iter().any(|e| e.record.node_id() == id),
                "honest node kept out"
            );
        }
        assert!(
            target
                .handle
                .metrics()
                .peers_refused
                .with_label_values(&["subnet_bucket"])
                .get()
                + target
                    .handle
                    .metrics()
                    .peers_refused
                    .with_label_values(&["subnet_table"])
                    .get()
                > 0
        );
        stop_all(flood).await;
        stop_all(honest).await;
        target.stop().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_claimed_address_low_work_and_bad_signature_are_kept_out() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let target = start_node(Ipv4Addr::new(127, 0, 110, 1), identity(), vec![]).await;
        let mut client = raw_client(&target).await;
        // A port that nobody listens on.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.77.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let liar = identity();
        let sender = |who: &Identity, addr: SocketAddr| {
            pb::NodeRecord::from(
                &Signed::sign(
                    NodeRecord {
                        public_key: *who.public_key(),
                        addresses: vec![addr],
                        free_space: 1,
                        version: "test".into(),
                        started_at_ms: 1,
                        timestamp_ms: shoal_proto::time::unix_ms(),
                    },
                    who,
                )
                .unwrap(),
            )
        };
        client
            .ping(pb::PingRequest {
                sender: Some(sender(&liar, closed)),
            })
            .await
            .unwrap();
        wait_for("the dial-back to fail", || {
            target.handle.metrics().dialbacks_failed.get() >= 1
        })
        .await;
        wait_for("dial-backs to settle", || {
            target.handle.pending_dialbacks() == 0
        })
        .await;
        assert!(
            target.handle.table().is_empty(),
            "unreachable node entered the table"
        );

        // Below the network's proof of work: refused outright.
        let weak = loop {
            let i = Identity::random();
            if i.difficulty() < DIFFICULTY {
                break i;
            }
        };
        let status = client
            .ping(pb::PingRequest {
                sender: Some(sender(&weak, target.addr)),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}");
        // Bad signature.
        let mut bad = sender(&liar, closed);
        bad.free_space = 1 << 50;
        let status = client
            .ping(pb::PingRequest { sender: Some(bad) })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
        assert!(target.handle.table().is_empty());
        target.stop().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_restarted_on_a_new_port_is_found_at_its_new_address() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let mut nodes = network(120, 8).await;
        let moving = identity();
        let first = start_node(
            Ipv4Addr::new(127, 0, 140, 1),
            moving.clone(),
            vec![nodes[0].pin()],
        )
        .await;
        first.handle.bootstrap().await.unwrap();
        let old = first.addr;
        // Peers add a newcomer once their dial-back returns: wait for that, bounded.
        found_at(&nodes[5].handle, moving.node_id(), old).await;
        first.stop().await;

        let second = start_node(
            Ipv4Addr::new(127, 0, 140, 1),
            moving.clone(),
            vec![nodes[0].pin()],
        )
        .await;
        assert_ne!(second.addr, old);
        second.handle.bootstrap().await.unwrap();
        for n in &nodes {
            found_at(&n.handle, moving.node_id(), second.addr).await;
        }
        nodes.push(second);
        stop_all(nodes).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uplink_client_looks_up_reads_writes_and_samples_without_entering_tables() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let nodes = network(150, 8).await;
        let uplink_id = Arc::new(Identity::random());
        let client = Dht::start(
            uplink_id.clone(),
            config(vec![nodes[3].pin()]),
            Mode::Client,
        )
        .unwrap();
        client.bootstrap().await.unwrap();
        let found = client
            .find_node(nodes[6].identity.node_id())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.addresses[0], nodes[6].addr);

        let owner = Identity::random();
        client
            .put_record(record(&owner, 1, b"from uplink"), None)
            .await
            .unwrap();
        let key = MutableRecord::key_for(owner.public_key(), b"catalog");
        let got = nodes[0].handle.get_record(key).await.unwrap().unwrap();
        assert_eq!(got.value, b"from uplink");
        assert_eq!(client.get_record(key).await.unwrap().unwrap().seq, 1);
        // The next write of the key goes straight to the closest that read found, with
        // their tokens (no lookup), and every one of them takes it.
        let direct = |r: &str| client.metrics().direct_puts.with_label_values(&[r]).get();
        assert_eq!((direct("direct"), direct("fallback")), (0, 0));
        let report = client
            .put_record(record(&owner, 2, b"again"), Some(1))
            .await
            .unwrap();
        assert_eq!((direct("direct"), direct("fallback")), (1, 0));
        assert!(report.stored >= 6, "{report:?}");
        let got = nodes[0].handle.get_record(key).await.unwrap().unwrap();
        assert_eq!(got.value, b"again");

        client.crawl(30).await;
        let members = client.members();
        assert!(members.len() >= 8, "{} members", members.len());
        let sample = client.sample(5, 1 << 20, Duration::from_secs(3600));
        assert_eq!(sample.len(), 5);
        let subnets: std::collections::HashSet<_> =
            sample.iter().map(|m| m.record.addresses[0].ip()).collect();
        assert_eq!(subnets.len(), 5);
        assert!(sample.iter().all(|m| m.last_seen_unix_ms.is_some()));
        assert!(
            client
                .sample(5, 1 << 40, Duration::from_secs(3600))
                .is_empty(),
            "free-space filter"
        );

        for n in &nodes {
            assert!(
                n.handle
                    .table()
                    .iter()
                    .all(|e| e.record.node_id() != uplink_id.node_id())
            );
        }
        let registry = prometheus::Registry::new();
        nodes[0].handle.register_metrics(&registry).unwrap();
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        assert!(
            names.iter().any(|n| n == "shoal_dht_table_size"),
            "{names:?}"
        );
        assert!(nodes[0].handle.metrics().table_size.get() >= 7);
        client.shutdown().await;
        stop_all(nodes).await;
    })
    .await
    .expect("test timed out");
}

/// A node that answers FindNode with more records than the protocol allows.
struct Oversharing {
    me: pb::NodeRecord,
    junk: Vec<pb::NodeRecord>,
}

#[tonic::async_trait]
impl pb::discovery_server::Discovery for Oversharing {
    async fn ping(
        &self,
        _: tonic::Request<pb::PingRequest>,
    ) -> Result<tonic::Response<pb::PingResponse>, tonic::Status> {
        Ok(tonic::Response::new(pb::PingResponse {
            responder: Some(self.me.clone()),
        }))
    }
    async fn find_node(
        &self,
        _: tonic::Request<pb::FindNodeRequest>,
    ) -> Result<tonic::Response<pb::FindNodeResponse>, tonic::Status> {
        Ok(tonic::Response::new(pb::FindNodeResponse {
            responder: Some(self.me.clone()),
            closer: self.junk.clone(),
        }))
    }
    async fn get_record(
        &self,
        _: tonic::Request<pb::GetRecordRequest>,
    ) -> Result<tonic::Response<pb::GetRecordResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("no"))
    }
    async fn put_record(
        &self,
        _: tonic::Request<pb::PutRecordRequest>,
    ) -> Result<tonic::Response<pb::PutRecordResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("no"))
    }
}

fn signed_record(who: &Identity, addr: SocketAddr) -> pb::NodeRecord {
    pb::NodeRecord::from(
        &Signed::sign(
            NodeRecord {
                public_key: *who.public_key(),
                addresses: vec![addr],
                free_space: 1 << 30,
                version: "test".into(),
                started_at_ms: 1,
                timestamp_ms: shoal_proto::time::unix_ms(),
            },
            who,
        )
        .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_with_too_many_nodes_is_refused_whole() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let listener = TcpListener::bind("127.0.160.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let evil = identity();
        let junk_ids: Vec<Arc<Identity>> = (0..21).map(|_| identity()).collect();
        let junk = junk_ids
            .iter()
            .enumerate()
            .map(|(i, id)| signed_record(id, SocketAddr::from(([127, 0, 161, 1], 1000 + i as u16))))
            .collect();
        let svc = Oversharing {
            me: signed_record(&evil, addr),
            junk,
        };
        let stop = CancellationToken::new();
        let server = serve(
            listener,
            &evil,
            Server::builder().add_service(pb::discovery_server::DiscoveryServer::new(svc)),
            stop.clone(),
        );
        let client = Dht::start(
            Arc::new(Identity::random()),
            config(vec![(evil.node_id(), addr)]),
            Mode::Client,
        )
        .unwrap();
        client.bootstrap().await.unwrap();
        assert!(client.metrics().requests_failed.get() >= 1);
        let members = client.members();
        for j in &junk_ids {
            assert!(
                members.iter().all(|m| m.record.node_id() != j.node_id()),
                "junk record accepted"
            );
        }
        assert!(
            client
                .table()
                .iter()
                .all(|e| e.record.node_id() == evil.node_id())
        );
        client.shutdown().await;
        stop.cancel();
        server.await.unwrap();
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_entry_pinned_to_another_node_is_refused() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let seed = start_node(Ipv4Addr::new(127, 0, 170, 1), identity(), vec![]).await;
        let impostor = identity().node_id();
        let client = Dht::start(
            Arc::new(Identity::random()),
            config(vec![(impostor, seed.addr)]),
            Mode::Client,
        )
        .unwrap();
        let err = client.bootstrap().await.unwrap_err();
        assert!(matches!(err, DhtError::BootstrapFailed { .. }), "{err}");
        // The error names the pinned id and the one the node proved.
        let text = err.to_string();
        assert!(text.contains(&impostor.to_hex()), "{text}");
        assert!(text.contains(&seed.identity.node_id().to_hex()), "{text}");
        assert!(client.table().is_empty());
        client.shutdown().await;
        // The same address pinned to the right id joins.
        let client = Dht::start(
            Arc::new(Identity::random()),
            config(vec![seed.pin()]),
            Mode::Client,
        )
        .unwrap();
        assert_eq!(client.bootstrap().await.unwrap(), 1);
        client.shutdown().await;
        seed.stop().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_past_its_request_budget_gets_resource_exhausted() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let tight = DhtConfig {
            rate: RateConfig {
                per_second: 0.01,
                burst: 3.0,
                max_peers: 100,
            },
            ..config(vec![])
        };
        let node = start_node_with(Ipv4Addr::new(127, 0, 171, 1), identity(), tight).await;
        let mut client = raw_client(&node).await;
        for _ in 0..3 {
            client.ping(pb::PingRequest { sender: None }).await.unwrap();
        }
        let refused = client
            .ping(pb::PingRequest { sender: None })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");
        let refused = client
            .find_node(pb::FindNodeRequest {
                sender: None,
                target: vec![7; 32],
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");
        node.stop().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_needs_the_write_token_of_a_recent_read_and_a_failed_swap_says_aborted() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let node = start_node(Ipv4Addr::new(127, 0, 170, 1), identity(), vec![]).await;
        let mut client = raw_client(&node).await;
        let owner = Identity::random();
        let key = MutableRecord::key_for(owner.public_key(), b"catalog");
        let put = |rec: &Signed<MutableRecord>, expected_seq, token: Option<&[u8]>| {
            let mut req = tonic::Request::new(pb::PutRecordRequest {
                sender: None,
                record: Some(pb::MutableRecord::from(rec)),
                expected_seq,
            });
            if let Some(t) = token {
                req.metadata_mut().insert_bin(
                    "shoal-write-token-bin",
                    tonic::metadata::MetadataValue::from_bytes(t),
                );
            }
            req
        };
        // No token: refused, nothing stored.
        let status = client
            .put_record(put(&record(&owner, 1, b"v1"), None, None))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}");
        // A forged token: refused.
        let status = client
            .put_record(put(&record(&owner, 1, b"v1"), None, Some(&[7u8; 32])))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}");
        // The token of a read: accepted.
        let read = client
            .get_record(pb::GetRecordRequest {
                sender: None,
                key: key.0.to_vec(),
            })
            .await
            .unwrap();
        assert!(read.get_ref().record.is_none());
        let token = read
            .metadata()
            .get_bin("shoal-write-token-bin")
            .expect("a GetRecord answer carries a write token")
            .to_bytes()
            .unwrap();
        client
            .put_record(put(&record(&owner, 1, b"v1"), None, Some(&token)))
            .await
            .unwrap();
        // Compare-and-swap against the wrong seq: ABORTED, told apart by its code.
        let status = client
            .put_record(put(&record(&owner, 3, b"v3"), Some(2), Some(&token)))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Aborted, "{status}");
        let got = node.handle.get_record(key).await;
        // The node's own read: its table is empty, so nobody else to ask.
        assert!(matches!(got, Err(DhtError::NoPeers)), "{got:?}");
        node.stop().await;
    })
    .await
    .expect("test timed out");
}

/// `config(bootstrap)` that keeps the node's records and known peers in `store`.
fn persistent(bootstrap: Vec<(NodeId, SocketAddr)>, store: &Arc<MemoryPersistence>) -> DhtConfig {
    DhtConfig {
        persistence: Some(store.clone() as Arc<dyn DhtPersistence>),
        ..config(bootstrap)
    }
}

fn catalog_key(owner: &Identity) -> shoal_proto::RecordKey {
    MutableRecord::key_for(owner.public_key(), b"catalog")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_survive_a_stop_and_start_of_every_node() {
    tokio::time::timeout(Duration::from_secs(180), async {
        let n = 8u8;
        let stores: Vec<Arc<MemoryPersistence>> =
            (0..n).map(|_| MemoryPersistence::new()).collect();
        let ids: Vec<Arc<Identity>> = (0..n).map(|_| identity()).collect();
        let ip = |i: u8| Ipv4Addr::new(127, 0, 210 + i, 1);
        let mut nodes = vec![
            start_node_on(
                (ip(0), 0).into(),
                ids[0].clone(),
                persistent(vec![], &stores[0]),
            )
            .await,
        ];
        let seed = nodes[0].pin();
        for i in 1..n {
            let node = start_node_on(
                (ip(i), 0).into(),
                ids[usize::from(i)].clone(),
                persistent(vec![seed], &stores[usize::from(i)]),
            )
            .await;
            node.handle.bootstrap().await.unwrap();
            nodes.push(node);
        }
        let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();

        let writer = Dht::start(
            Arc::new(Identity::random()),
            config(vec![seed]),
            Mode::Client,
        )
        .unwrap();
        writer.bootstrap().await.unwrap();
        let owners: Vec<Identity> = (0..5).map(|_| Identity::random()).collect();
        for (i, o) in owners.iter().enumerate() {
            let report = writer
                .put_record(record(o, i as u64 + 1, b"head"), None)
                .await
                .unwrap();
            assert!(report.stored >= 3, "{report:?}");
        }
        writer.shutdown().await;
        stop_all(nodes).await;
        // Each record is on the disk of the nodes that held it.
        for o in &owners {
            let on_disk = stores
                .iter()
                .filter(|s| s.records().contains_key(&catalog_key(o).0))
                .count();
            assert!(on_disk >= 3, "{on_disk} copies on disk");
        }

        // Every node starts again on its address, with its identity and its disk.
        let mut nodes = Vec::new();
        for i in 0..usize::from(n) {
            let bootstrap = if i == 0 { vec![] } else { vec![seed] };
            nodes.push(
                start_node_on(addrs[i], ids[i].clone(), persistent(bootstrap, &stores[i])).await,
            );
        }
        for node in &nodes[1..] {
            node.handle.bootstrap().await.unwrap();
        }
        for node in &nodes {
            let restored = node
                .handle
                .metrics()
                .records_restored
                .with_label_values(&["restored"])
                .get();
            assert!(restored > 0, "a node restored no record");
        }
        // A reader that never saw the records finds every one.
        let reader = Dht::start(
            Arc::new(Identity::random()),
            config(vec![nodes[4].pin()]),
            Mode::Client,
        )
        .unwrap();
        reader.bootstrap().await.unwrap();
        for (i, o) in owners.iter().enumerate() {
            let got = reader.get_record(catalog_key(o)).await.unwrap();
            assert_eq!(got.map(|r| r.seq), Some(i as u64 + 1));
        }
        reader.shutdown().await;
        stop_all(nodes).await;

        // Without a store, the same restart forgets them: the test above is not vacuous.
        let bare = start_node_on(addrs[0], ids[0].clone(), config(vec![])).await;
        bare.handle.bootstrap().await.unwrap_err();
        assert_eq!(bare.handle.metrics().records_held.get(), 0);
        bare.stop().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_while_its_bootstrap_is_down_joins_through_nodes_it_knew() {
    tokio::time::timeout(Duration::from_secs(180), async {
        let mut nodes = network(220, 6).await;
        let store = MemoryPersistence::new();
        let me = identity();
        let seed = nodes[0].pin();
        let first = start_node_on(
            (Ipv4Addr::new(127, 0, 230, 1), 0).into(),
            me.clone(),
            persistent(vec![seed], &store),
        )
        .await;
        first.handle.bootstrap().await.unwrap();
        wait_for("known peers", || first.handle.known_peers(64).len() >= 5).await;
        let known = first.handle.known_peers(64);
        assert!(
            known
                .windows(2)
                .all(|w| w[0].last_seen_unix_ms >= w[1].last_seen_unix_ms),
            "newest first"
        );
        let addr = first.addr;
        first.stop().await;
        assert!(
            store.peer_count() >= 5,
            "{} peers saved",
            store.peer_count()
        );

        // Its only configured bootstrap goes away.
        nodes.remove(0).stop().await;
        let second = start_node_on(addr, me.clone(), persistent(vec![seed], &store)).await;
        let table = second.handle.bootstrap().await.unwrap();
        assert!(table >= 3, "table of {table}");
        found_at(&second.handle, nodes[2].identity.node_id(), nodes[2].addr).await;
        found_at(&nodes[3].handle, me.node_id(), addr).await;
        second.stop().await;
        stop_all(nodes).await;

        // Nobody answers: the error names the configured entry and the remembered nodes.
        let third = start_node_on(addr, me.clone(), persistent(vec![seed], &store)).await;
        let err = third.handle.bootstrap().await.unwrap_err();
        match &err {
            DhtError::BootstrapFailed {
                configured: 1,
                remembered,
                ..
            } => assert!(*remembered >= 4, "{err}"),
            other => panic!("{other}"),
        }
        let text = err.to_string();
        assert!(text.contains(&seed.1.to_string()), "{text}");
        third.stop().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_store_makes_the_node_hold_no_bad_record_and_trust_no_bad_peer() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let store = MemoryPersistence::new();
        let good = record(&Identity::random(), 1, b"good");
        let bytes = pb::MutableRecord::from(&good).encode_to_vec();
        store
            .save_record(&good.key().0, &bytes, good.expires_at_ms)
            .unwrap();
        // A record whose value was changed on disk: its signature no longer holds.
        let honest = record(&Identity::random(), 1, b"honest");
        let mut forged = pb::MutableRecord::from(&honest);
        forged.value = b"forged".to_vec();
        store
            .save_record(
                &honest.key().0,
                &forged.encode_to_vec(),
                honest.expires_at_ms,
            )
            .unwrap();
        store
            .save_record(&[7; 32], b"not a record", u64::MAX)
            .unwrap();
        // A peer record as it was signed, and one whose address was changed.
        let (real, fake) = (identity(), identity());
        let now = shoal_proto::time::unix_ms();
        let mut moved = signed_record(&fake, "127.0.241.1:9".parse().unwrap());
        moved.addresses = vec!["127.0.242.1:9".into()];
        store
            .save_peers(&[
                (
                    real.node_id().0,
                    signed_record(&real, "127.0.241.1:7".parse().unwrap()).encode_to_vec(),
                    now,
                ),
                (fake.node_id().0, moved.encode_to_vec(), now + 1),
                ([5; 32], b"garbage".to_vec(), now + 2),
            ])
            .unwrap();

        let node = start_node_on(
            (Ipv4Addr::new(127, 0, 240, 1), 0).into(),
            identity(),
            persistent(vec![], &store),
        )
        .await;
        // Nothing configured and no remembered peer answers (none runs).
        node.handle.bootstrap().await.unwrap_err();
        let restored = |what: &str| {
            node.handle
                .metrics()
                .records_restored
                .with_label_values(&[what])
                .get()
        };
        assert_eq!((restored("restored"), restored("invalid")), (1, 2));
        let known: Vec<NodeId> = node
            .handle
            .known_peers(64)
            .iter()
            .map(|k| k.record.node_id())
            .collect();
        assert_eq!(known, vec![real.node_id()]);

        // The node serves the good record and not the forged one.
        let mut client = raw_client(&node).await;
        for (key, want) in [(good.key(), Some(b"good".to_vec())), (honest.key(), None)] {
            let res = client
                .get_record(pb::GetRecordRequest {
                    sender: None,
                    key: key.0.to_vec(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(res.record.map(|r| r.value), want);
        }
        node.stop().await;
    })
    .await
    .expect("test timed out");
}
