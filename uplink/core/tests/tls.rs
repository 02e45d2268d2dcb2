//! The uplink's piece client talks only to the node it placed a piece on: a node that
//! cannot prove the pinned node id's key gets no order, and the error names both ids.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use shoal_proto::time::unix_ms;
use shoal_proto::{Identity, PieceId};
use shoal_test_kit::bounded;
use uplink::grpc::GrpcPieceStore;
use uplink::orders::Orders;
use uplink::store::{NodeAddress, PieceError, PieceStore};
use uplink::testing::fake_net::FakeNetwork;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_answering_for_another_id_gets_no_order() {
    bounded(Duration::from_secs(60), async {
        let net = FakeNetwork::start(2).await.unwrap();
        let nodes = net.store.candidates();
        let (real, other) = (&nodes[0], &nodes[1]);
        let owner = Identity::random();
        let store = GrpcPieceStore::default();
        let order = |node| {
            Orders::new(&owner)
                .delete(node, PieceId([1; 32]), unix_ms())
                .unwrap()
        };
        // `other`'s id pinned at `real`'s address: refused at the TLS handshake.
        let impostor = NodeAddress {
            id: other.id,
            address: real.address,
        };
        let err = store.delete(impostor, order(other.id)).await.unwrap_err();
        let PieceError::Unreachable { reason, .. } = &err else {
            panic!("expected unreachable, got {err}");
        };
        assert!(reason.contains(&other.id.to_hex()), "{reason}");
        assert!(reason.contains(&real.id.to_hex()), "{reason}");
        // The right pin reaches the node (which answers that it has no such piece).
        let genuine = NodeAddress {
            id: real.id,
            address: real.address,
        };
        let answer = store.delete(genuine, order(real.id)).await;
        assert!(
            !matches!(answer, Err(PieceError::Unreachable { .. })),
            "{answer:?}"
        );
    })
    .await;
}
