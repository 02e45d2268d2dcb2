//! Multi-node tests over real sockets on 127.0.N.1 (distinct /24s), port 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use satellite_free_discovery::core::rate::RateConfig;
use satellite_free_discovery::{Dht, DhtConfig, DhtError, DhtHandle, Mode, RecordFields};
use shoal_proto::messages::{MutableRecord, NodeRecord};
use shoal_proto::pb::discovery_client::DiscoveryClient;
use shoal_proto::{Identity, NodeId, Signed, pb, tls};
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
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Looks `who` up from `from` until it is found at `addr` (deadline 30 s).
async fn found_at(from: &DhtHandle, who: shoal_proto::NodeId, addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let found = from.find_node(who).await.unwrap();
        if found.as_ref().is_some_and(|f| f.addresses[0] == addr) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{who} not found at {addr}: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let reached = nodes[1].handle.closest(key.0).await.unwrap().len();
            if reached >= 7 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "lookups reach only {reached} nodes"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
