//! This crate's fuzz targets: every protobuf conversion of the piece and discovery
//! protocols, raw signatures, pinned peers and addresses, each started from [`super::seeds`].

use super::{Target, decode, round_trip, seeds, text};
use crate::ids::{NodeId, PublicKey};
use crate::messages::{
    AuditOrder, DeleteOrder, DownloadOrder, ListPiecesOrder, ListedPiece, MutableRecord,
    NodeRecord, Receipt, RenewOrder, RenewResult, UploadOrder, UploadTrailer,
};
use crate::piece_hash::PieceInfo;
use crate::signing::{Domain, Signed};
use crate::{pb, tls};

/// The targets of this crate's decoders: every protobuf conversion of the piece and
/// discovery protocols, raw signatures, pinned peers and addresses.
pub fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "proto.upload_request",
            seeds: seeds::upload_requests,
            run: |d| match decode::<pb::UploadRequest>(d).and_then(|m| m.message) {
                Some(pb::upload_request::Message::Order(o)) => {
                    round_trip::<_, Signed<UploadOrder>>(o)
                }
                Some(pb::upload_request::Message::Trailer(t)) => {
                    round_trip::<_, Signed<UploadTrailer>>(t)
                }
                Some(pb::upload_request::Message::Chunk(_)) | None => {}
            },
        },
        Target {
            name: "proto.upload_response",
            seeds: seeds::upload_response,
            run: |d| {
                if let Some(r) = decode::<pb::UploadResponse>(d).and_then(|m| m.receipt) {
                    round_trip::<_, Signed<Receipt>>(r);
                }
            },
        },
        Target {
            name: "proto.download",
            seeds: seeds::download,
            run: |d| {
                if let Some(o) = decode::<pb::DownloadRequest>(d).and_then(|m| m.order) {
                    round_trip::<_, Signed<DownloadOrder>>(o);
                }
                if let Some(i) = decode::<pb::DownloadResponse>(d).and_then(|m| m.info) {
                    round_trip::<_, PieceInfo>(i);
                }
            },
        },
        Target {
            name: "proto.delete_audit",
            seeds: seeds::delete_audit,
            run: |d| {
                if let Some(o) = decode::<pb::DeleteRequest>(d).and_then(|m| m.order) {
                    round_trip::<_, Signed<DeleteOrder>>(o);
                }
                if let Some(o) = decode::<pb::AuditRequest>(d).and_then(|m| m.order) {
                    round_trip::<_, Signed<AuditOrder>>(o);
                }
                if let Some(i) = decode::<pb::AuditResponse>(d).and_then(|m| m.info) {
                    round_trip::<_, PieceInfo>(i);
                }
            },
        },
        Target {
            name: "proto.renew",
            seeds: seeds::renew,
            run: |d| {
                if let Some(o) = decode::<pb::RenewRequest>(d).and_then(|m| m.order) {
                    round_trip::<_, Signed<RenewOrder>>(o);
                }
                if let Some(r) = decode::<pb::RenewResponse>(d) {
                    for result in r.results {
                        round_trip::<_, RenewResult>(result);
                    }
                }
            },
        },
        Target {
            name: "proto.list_pieces",
            seeds: seeds::list_pieces,
            run: |d| {
                if let Some(o) = decode::<pb::ListPiecesRequest>(d).and_then(|m| m.order) {
                    round_trip::<_, Signed<ListPiecesOrder>>(o);
                }
                if let Some(r) = decode::<pb::ListPiecesResponse>(d) {
                    for p in r.pieces {
                        round_trip::<_, ListedPiece>(p);
                    }
                }
            },
        },
        Target {
            name: "proto.node_record",
            seeds: seeds::node_record,
            run: |d| {
                if let Some(r) = decode::<pb::NodeRecord>(d) {
                    round_trip::<_, Signed<NodeRecord>>(r);
                }
            },
        },
        Target {
            name: "proto.mutable_record",
            seeds: seeds::mutable_record,
            run: |d| {
                if let Some(r) = decode::<pb::MutableRecord>(d) {
                    round_trip::<_, Signed<MutableRecord>>(r);
                }
            },
        },
        Target {
            name: "proto.signed_raw",
            seeds: seeds::signed_raw,
            run: |d| {
                // key (32) | signature (64) | domain selector (1) | body
                if d.len() < 97 {
                    return;
                }
                let Ok(key) = PublicKey::from_bytes("key", &d[..32]) else {
                    return;
                };
                let Ok(sig) = crate::ids::Signature::from_wire("signature", &d[32..96]) else {
                    return;
                };
                let domain = DOMAINS[usize::from(d[96]) % DOMAINS.len()];
                let _ = crate::signing::verify_raw(&key, domain, &d[97..], &sig);
            },
        },
        Target {
            name: "proto.pinned_peer",
            seeds: seeds::pinned_peer,
            run: |d| {
                let t = text(d);
                if let Ok(p) = t.parse::<tls::PinnedPeer>() {
                    let again = p.to_string().parse::<tls::PinnedPeer>();
                    assert!(again.is_ok(), "{p} does not parse back");
                }
                let _ = crate::messages::parse_address("address", &t);
                let _ = NodeId::from_hex(&t);
            },
        },
    ]
}

const DOMAINS: [Domain; 3] = [
    Domain::NodeRecord,
    Domain::MutableRecord,
    Domain::UploadOrder,
];
