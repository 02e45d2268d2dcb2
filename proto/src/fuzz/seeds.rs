//! Valid inputs for this crate's fuzz targets ([`super::targets`]), and the signed
//! messages other crates' targets and tests start from.

use prost::Message;

use crate::identity::Identity;
use crate::ids::{NodeId, Nonce, PieceHash, PieceId};
use crate::messages::{
    AuditOrder, DeleteOrder, DownloadOrder, ListPiecesOrder, ListedPiece, MutableRecord,
    NodeRecord, OrderHeader, Receipt, RenewOrder, RenewResult, UploadOrder, UploadTrailer,
};
use crate::pb;
use crate::signing::{Domain, Signed};

/// The identity every seed is signed with (fixed, so seeds are the same every run).
pub fn identity() -> Identity {
    Identity::from_seed([7; 32])
}

fn node() -> NodeId {
    Identity::from_seed([9; 32]).node_id()
}

const NOW: u64 = 1_800_000_000_000;

fn sign<T: crate::signing::Signable>(body: T) -> Signed<T> {
    match Signed::sign(body, &identity()) {
        Ok(s) => s,
        Err(e) => panic!("seed signed by its own signer: {e}"),
    }
}

pub fn upload_order() -> pb::UploadOrder {
    let id = identity();
    (&sign(UploadOrder {
        header: OrderHeader {
            node_id: node(),
            owner_key: *id.public_key(),
            timestamp_ms: NOW,
            nonce: Nonce([3; 16]),
        },
        piece_id: PieceId([1; 32]),
        max_size: 1 << 20,
        block_size: 64 * 1024,
        expires_at_ms: NOW + 3_600_000,
    }))
        .into()
}

pub fn trailer() -> pb::UploadTrailer {
    (&sign(UploadTrailer {
        piece_id: PieceId([1; 32]),
        owner_key: *identity().public_key(),
        size: 1 << 20,
        piece_hash: PieceHash([5; 32]),
        tag: vec![7; 100],
    }))
        .into()
}

pub fn list_pieces() -> Vec<Vec<u8>> {
    let order = sign(ListPiecesOrder {
        header: OrderHeader {
            node_id: node(),
            owner_key: *identity().public_key(),
            timestamp_ms: NOW,
            nonce: Nonce([3; 16]),
        },
        after: Some(PieceId([1; 32])),
        limit: 1000,
    });
    let listed = ListedPiece {
        piece_id: PieceId([2; 32]),
        size: 1 << 20,
        expires_at_ms: NOW + 3_600_000,
        tag: vec![7; 100],
    };
    vec![
        pb::ListPiecesRequest {
            order: Some((&order).into()),
        }
        .encode_to_vec(),
        pb::ListPiecesResponse {
            pieces: vec![(&listed).into()],
        }
        .encode_to_vec(),
    ]
}

pub fn upload_requests() -> Vec<Vec<u8>> {
    use pb::upload_request::Message as M;
    [
        M::Order(upload_order()),
        M::Chunk(vec![0xab; 100].into()),
        M::Trailer(trailer()),
    ]
    .into_iter()
    .map(|m| pb::UploadRequest { message: Some(m) }.encode_to_vec())
    .collect()
}

pub fn upload_response() -> Vec<Vec<u8>> {
    let receipt = sign(Receipt {
        piece_id: PieceId([1; 32]),
        node_key: *identity().public_key(),
        owner_key: *identity().public_key(),
        size: 1 << 20,
        piece_hash: PieceHash([5; 32]),
        expires_at_ms: NOW + 3_600_000,
        timestamp_ms: NOW,
    });
    vec![
        pb::UploadResponse {
            receipt: Some((&receipt).into()),
        }
        .encode_to_vec(),
    ]
}

fn info() -> pb::PieceInfo {
    pb::PieceInfo {
        size: 200 * 1024,
        block_size: 64 * 1024,
        block_hashes: vec![vec![4; 32]; 4],
    }
}

pub fn download() -> Vec<Vec<u8>> {
    let order = sign(DownloadOrder {
        header: OrderHeader {
            node_id: node(),
            owner_key: *identity().public_key(),
            timestamp_ms: NOW,
            nonce: Nonce([3; 16]),
        },
        piece_id: PieceId([1; 32]),
        offset: 10,
        length: 1000,
    });
    vec![
        pb::DownloadRequest {
            order: Some((&order).into()),
        }
        .encode_to_vec(),
        pb::DownloadResponse {
            info: Some(info()),
            offset: 0,
            data: vec![1; 64].into(),
        }
        .encode_to_vec(),
    ]
}

pub fn delete_audit() -> Vec<Vec<u8>> {
    let delete = sign(DeleteOrder {
        header: OrderHeader {
            node_id: node(),
            owner_key: *identity().public_key(),
            timestamp_ms: NOW,
            nonce: Nonce([3; 16]),
        },
        piece_id: PieceId([1; 32]),
    });
    let audit = sign(AuditOrder {
        header: OrderHeader {
            node_id: node(),
            owner_key: *identity().public_key(),
            timestamp_ms: NOW,
            nonce: Nonce([3; 16]),
        },
        piece_id: PieceId([1; 32]),
        block_index: 2,
    });
    vec![
        pb::DeleteRequest {
            order: Some((&delete).into()),
        }
        .encode_to_vec(),
        pb::AuditRequest {
            order: Some((&audit).into()),
        }
        .encode_to_vec(),
        pb::AuditResponse {
            info: Some(info()),
            block: vec![2; 64],
        }
        .encode_to_vec(),
    ]
}

pub fn renew() -> Vec<Vec<u8>> {
    let order = sign(RenewOrder {
        header: OrderHeader {
            node_id: node(),
            owner_key: *identity().public_key(),
            timestamp_ms: NOW,
            nonce: Nonce([3; 16]),
        },
        piece_ids: vec![PieceId([1; 32]), PieceId([2; 32])],
        expires_at_ms: NOW + 3_600_000,
    });
    let results = [
        RenewResult {
            piece_id: PieceId([1; 32]),
            status: crate::messages::RenewStatus::Renewed {
                expires_at_ms: NOW + 3_600_000,
            },
        },
        RenewResult {
            piece_id: PieceId([2; 32]),
            status: crate::messages::RenewStatus::NotFound,
        },
    ];
    vec![
        pb::RenewRequest {
            order: Some((&order).into()),
        }
        .encode_to_vec(),
        pb::RenewResponse {
            results: results.iter().map(Into::into).collect(),
        }
        .encode_to_vec(),
    ]
}

/// A signed node record at these addresses.
pub fn signed_node_record(identity: &Identity, addresses: &[&str]) -> pb::NodeRecord {
    let rec = Signed::sign(
        NodeRecord {
            public_key: *identity.public_key(),
            addresses: addresses.iter().filter_map(|a| a.parse().ok()).collect(),
            free_space: 1 << 30,
            version: "0.1.0".into(),
            started_at_ms: NOW - 1000,
            timestamp_ms: NOW,
        },
        identity,
    );
    match rec {
        Ok(r) => (&r).into(),
        Err(e) => panic!("seed signed by its own signer: {e}"),
    }
}

pub fn node_record() -> Vec<Vec<u8>> {
    vec![
        signed_node_record(&identity(), &["127.0.0.1:7777"]).encode_to_vec(),
        signed_node_record(&identity(), &["203.0.113.7:7777", "[2001:db8::1]:7777"])
            .encode_to_vec(),
    ]
}

/// A signed mutable record.
pub fn signed_mutable_record(salt: &[u8], value: &[u8]) -> pb::MutableRecord {
    (&sign(MutableRecord {
        public_key: *identity().public_key(),
        salt: salt.to_vec(),
        seq: 7,
        value: value.to_vec(),
        expires_at_ms: NOW + 3_600_000,
        work: 0,
    }))
        .into()
}

pub fn mutable_record() -> Vec<Vec<u8>> {
    vec![
        signed_mutable_record(b"salt", b"value").encode_to_vec(),
        signed_mutable_record(&[], &[0x55; 4096]).encode_to_vec(),
    ]
}

pub fn signed_raw() -> Vec<Vec<u8>> {
    let id = identity();
    let body = b"a body signed raw";
    let sig = crate::signing::sign_raw(&id, Domain::NodeRecord, body);
    let mut v = id.public_key().as_bytes().to_vec();
    v.extend_from_slice(sig.as_bytes());
    v.push(0);
    v.extend_from_slice(body);
    vec![v]
}

pub fn pinned_peer() -> Vec<Vec<u8>> {
    let id = node().to_hex();
    vec![
        format!("{id}@127.0.0.1:7777").into_bytes(),
        format!("{id}@[::1]:7777").into_bytes(),
        format!("{id}@node.example.org:7777").into_bytes(),
        b"203.0.113.9:80".to_vec(),
    ]
}
