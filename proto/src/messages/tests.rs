//! Table tests: every conversion rejects each malformed field with a typed error, and
//! a signature never survives a change of field or of message kind.

use super::*;
use crate::identity::Identity;
use crate::ids::{NodeId, Nonce, PieceHash, PieceId, SegmentRoot};
use crate::limits::{
    MAX_ADDRESSES, MAX_BLOCK_SIZE, MAX_PIECE_SIZE, MAX_RECORD_VALUE, MAX_RENEW_PIECES,
    MAX_SALT_LEN, MAX_VERSION_LEN, MIN_BLOCK_SIZE,
};
use crate::pb;
use crate::signing::{Domain, Signable, Signed};

/// (variant, field) of an error, for table rows.
fn kind(e: &WireError) -> (&'static str, &'static str) {
    match e {
        WireError::Missing { field } => ("Missing", field),
        WireError::WrongLength { field, .. } => ("WrongLength", field),
        WireError::TooLong { field, .. } => ("TooLong", field),
        WireError::TooMany { field, .. } => ("TooMany", field),
        WireError::OutOfRange { field, .. } => ("OutOfRange", field),
        WireError::BadKey { field } => ("BadKey", field),
        WireError::Malformed { field, .. } => ("Malformed", field),
        WireError::BadSignature { .. } => ("BadSignature", "signature"),
    }
}

type Row<P> = (
    &'static str,
    Box<dyn Fn(&mut P)>,
    (&'static str, &'static str),
);

fn run_table<P, T>(valid: P, rows: Vec<Row<P>>)
where
    P: Clone + std::fmt::Debug,
    Signed<T>: TryFrom<P, Error = WireError>,
{
    assert!(
        Signed::<T>::try_from(valid.clone()).is_ok(),
        "the valid message must convert"
    );
    for (name, mutate, expected) in rows {
        let mut m = valid.clone();
        mutate(&mut m);
        match Signed::<T>::try_from(m) {
            Ok(_) => panic!("row {name:?}: accepted"),
            Err(e) => assert_eq!(kind(&e), expected, "row {name:?}: got {e}"),
        }
    }
}

/// Rows shared by every message: id, key and signature fields of the wrong shape.
fn common_rows<P: 'static>(
    id_field: &'static str,
    key_field: &'static str,
    id: fn(&mut P) -> &mut Vec<u8>,
    key: fn(&mut P) -> &mut Vec<u8>,
    sig: fn(&mut P) -> &mut Vec<u8>,
) -> Vec<Row<P>> {
    vec![
        (
            "id missing",
            Box::new(move |m| id(m).clear()),
            ("Missing", id_field),
        ),
        (
            "id short",
            Box::new(move |m| id(m).truncate(31)),
            ("WrongLength", id_field),
        ),
        (
            "id long",
            Box::new(move |m| id(m).push(0)),
            ("WrongLength", id_field),
        ),
        (
            "key missing",
            Box::new(move |m| key(m).clear()),
            ("Missing", key_field),
        ),
        (
            "key short",
            Box::new(move |m| key(m).truncate(16)),
            ("WrongLength", key_field),
        ),
        // y = 2 is not the encoding of any curve point.
        (
            "key off curve",
            Box::new(move |m| {
                let mut k = vec![0u8; 32];
                k[0] = 2;
                *key(m) = k;
            }),
            ("BadKey", key_field),
        ),
        (
            "signature missing",
            Box::new(move |m| sig(m).clear()),
            ("Missing", "signature"),
        ),
        (
            "signature short",
            Box::new(move |m| sig(m).truncate(63)),
            ("WrongLength", "signature"),
        ),
        (
            "signature flipped",
            Box::new(move |m| sig(m)[5] ^= 1),
            ("BadSignature", "signature"),
        ),
        (
            "id tampered",
            Box::new(move |m| id(m)[0] ^= 1),
            ("BadSignature", "signature"),
        ),
    ]
}

fn owner() -> Identity {
    Identity::from_seed([1; 32])
}

fn node() -> NodeId {
    Identity::from_seed([2; 32]).node_id()
}

fn piece() -> PieceId {
    PieceId::derive(&SegmentRoot([9; 32]), &node(), 4)
}

const NOW: u64 = 1_800_000_000_000;

fn upload_order() -> pb::UploadOrder {
    let o = owner();
    let body = UploadOrder {
        header: OrderHeader {
            node_id: node(),
            owner_key: *o.public_key(),
            timestamp_ms: NOW,
            nonce: Nonce([5; 16]),
        },
        piece_id: piece(),
        max_size: 1 << 20,
        block_size: 64 * 1024,
        expires_at_ms: NOW + 86_400_000,
    };
    (&Signed::sign(body, &o).unwrap()).into()
}

#[test]
fn upload_order_table() {
    let mut rows = common_rows::<pb::UploadOrder>(
        "piece_id",
        "owner_key",
        |m| &mut m.piece_id,
        |m| &mut m.owner_key,
        |m| &mut m.signature,
    );
    rows.extend::<Vec<Row<pb::UploadOrder>>>(vec![
        (
            "node id short",
            Box::new(|m| m.node_id.truncate(5)),
            ("WrongLength", "node_id"),
        ),
        (
            "block size 0",
            Box::new(|m| m.block_size = 0),
            ("OutOfRange", "block_size"),
        ),
        (
            "block size small",
            Box::new(|m| m.block_size = MIN_BLOCK_SIZE - 1),
            ("OutOfRange", "block_size"),
        ),
        (
            "block size big",
            Box::new(|m| m.block_size = MAX_BLOCK_SIZE + 1),
            ("OutOfRange", "block_size"),
        ),
        (
            "oversize piece",
            Box::new(|m| m.max_size = MAX_PIECE_SIZE + 1),
            ("OutOfRange", "max_size"),
        ),
        (
            "no timestamp",
            Box::new(|m| m.timestamp_ms = 0),
            ("Missing", "timestamp_ms"),
        ),
        (
            "no expiry",
            Box::new(|m| m.expires_at_ms = 0),
            ("Missing", "expires_at_ms"),
        ),
        (
            "expiry before order",
            Box::new(|m| m.expires_at_ms = m.timestamp_ms),
            ("OutOfRange", "expires_at_ms"),
        ),
        (
            "max size changed",
            Box::new(|m| m.max_size += 1),
            ("BadSignature", "signature"),
        ),
    ]);
    run_table::<_, UploadOrder>(upload_order(), rows);
}

fn trailer() -> pb::UploadTrailer {
    let o = owner();
    let body = UploadTrailer {
        piece_id: piece(),
        owner_key: *o.public_key(),
        size: 1000,
        piece_hash: PieceHash([5; 32]),
        tag: Vec::new(),
    };
    (&Signed::sign(body, &o).unwrap()).into()
}

#[test]
fn upload_trailer_table() {
    let mut rows = common_rows::<pb::UploadTrailer>(
        "piece_id",
        "owner_key",
        |m| &mut m.piece_id,
        |m| &mut m.owner_key,
        |m| &mut m.signature,
    );
    rows.extend::<Vec<Row<pb::UploadTrailer>>>(vec![
        (
            "hash short",
            Box::new(|m| m.piece_hash.truncate(8)),
            ("WrongLength", "piece_hash"),
        ),
        (
            "hash missing",
            Box::new(|m| m.piece_hash.clear()),
            ("Missing", "piece_hash"),
        ),
        (
            "oversize",
            Box::new(|m| m.size = MAX_PIECE_SIZE + 1),
            ("OutOfRange", "size"),
        ),
        (
            "size changed",
            Box::new(|m| m.size -= 1),
            ("BadSignature", "signature"),
        ),
        (
            "tag added after signing",
            Box::new(|m| m.tag = vec![1; 8]),
            ("BadSignature", "signature"),
        ),
        (
            "tag over the limit",
            Box::new(|m| m.tag = vec![1; crate::limits::MAX_PIECE_TAG + 1]),
            ("TooLong", "tag"),
        ),
    ]);
    run_table::<_, UploadTrailer>(trailer(), rows);
}

#[test]
fn an_untagged_trailer_signs_the_bytes_it_signed_before_tags_existed() {
    let body = UploadTrailer {
        piece_id: piece(),
        owner_key: *owner().public_key(),
        size: 1000,
        piece_hash: PieceHash([5; 32]),
        tag: Vec::new(),
    };
    // The encoding as it was: fixed fields only.
    let mut before = crate::signing::Canonical::new(Domain::UploadTrailer);
    before
        .fixed(body.piece_id.as_bytes())
        .fixed(body.owner_key.as_bytes())
        .u64(body.size)
        .fixed(body.piece_hash.as_bytes());
    let mut now = crate::signing::Canonical::new(Domain::UploadTrailer);
    body.encode(&mut now);
    assert_eq!(now.into_bytes(), before.into_bytes());
    // A tagged trailer signs more, and its signature does not hold without the tag.
    let tagged = Signed::sign(
        UploadTrailer {
            tag: vec![9; 128],
            ..body.clone()
        },
        &owner(),
    )
    .unwrap();
    let m: pb::UploadTrailer = (&tagged).into();
    assert_eq!(
        Signed::<UploadTrailer>::try_from(m.clone()).unwrap().tag,
        vec![9; 128]
    );
    let stripped = pb::UploadTrailer {
        tag: Vec::new(),
        ..m
    };
    assert!(matches!(
        Signed::<UploadTrailer>::try_from(stripped),
        Err(WireError::BadSignature { .. })
    ));
}

fn list_order() -> pb::ListPiecesOrder {
    let body = ListPiecesOrder {
        header: OrderHeader {
            node_id: node(),
            owner_key: *owner().public_key(),
            timestamp_ms: NOW,
            nonce: Nonce([4; 16]),
        },
        after: Some(piece()),
        limit: 100,
    };
    (&Signed::sign(body, &owner()).unwrap()).into()
}

#[test]
fn list_pieces_order_table() {
    let mut rows = common_rows::<pb::ListPiecesOrder>(
        "node_id",
        "owner_key",
        |m| &mut m.node_id,
        |m| &mut m.owner_key,
        |m| &mut m.signature,
    );
    rows.extend::<Vec<Row<pb::ListPiecesOrder>>>(vec![
        ("limit 0", Box::new(|m| m.limit = 0), ("Missing", "limit")),
        (
            "limit over the page size",
            Box::new(|m| m.limit = crate::limits::MAX_LIST_PIECES + 1),
            ("OutOfRange", "limit"),
        ),
        (
            "after short",
            Box::new(|m| m.after.truncate(31)),
            ("WrongLength", "after"),
        ),
        (
            "after dropped",
            Box::new(|m| m.after.clear()),
            ("BadSignature", "signature"),
        ),
        (
            "limit changed",
            Box::new(|m| m.limit -= 1),
            ("BadSignature", "signature"),
        ),
        (
            "timestamp missing",
            Box::new(|m| m.timestamp_ms = 0),
            ("Missing", "timestamp_ms"),
        ),
        (
            "nonce short",
            Box::new(|m| m.nonce.truncate(3)),
            ("WrongLength", "nonce"),
        ),
    ]);
    run_table::<_, ListPiecesOrder>(list_order(), rows);
}

#[test]
fn a_listing_must_be_ascending_after_the_cursor_and_within_the_limit() {
    let order = ListPiecesOrder {
        header: OrderHeader {
            node_id: node(),
            owner_key: *owner().public_key(),
            timestamp_ms: NOW,
            nonce: Nonce([4; 16]),
        },
        after: Some(PieceId([1; 32])),
        limit: 100,
    };
    let listed = |id: u8| pb::ListedPiece {
        piece_id: vec![id; 32],
        size: 10,
        expires_at_ms: NOW,
        tag: vec![1; 4],
    };
    let ok = pb::ListPiecesResponse {
        pieces: vec![listed(2), listed(3)],
    };
    assert_eq!(check_listing(&order, ok).unwrap().len(), 2);
    for (name, pieces) in [
        ("at the cursor", vec![listed(1)]),
        ("descending", vec![listed(3), listed(2)]),
        ("repeated", vec![listed(2), listed(2)]),
    ] {
        assert!(
            check_listing(&order, pb::ListPiecesResponse { pieces }).is_err(),
            "{name}"
        );
    }
    let too_many = pb::ListPiecesResponse {
        pieces: (2..=102).map(listed).collect(),
    };
    assert!(matches!(
        check_listing(&order, too_many),
        Err(WireError::TooMany { .. })
    ));
    let big_tag = pb::ListPiecesResponse {
        pieces: vec![pb::ListedPiece {
            tag: vec![0; crate::limits::MAX_PIECE_TAG + 1],
            ..listed(2)
        }],
    };
    assert!(matches!(
        check_listing(&order, big_tag),
        Err(WireError::TooLong { field: "tag", .. })
    ));
}

fn receipt() -> pb::Receipt {
    let n = Identity::from_seed([2; 32]);
    let body = Receipt {
        piece_id: piece(),
        node_key: *n.public_key(),
        owner_key: *owner().public_key(),
        size: 1000,
        piece_hash: PieceHash([5; 32]),
        expires_at_ms: NOW + 1,
        timestamp_ms: NOW,
    };
    (&Signed::sign(body, &n).unwrap()).into()
}

#[test]
fn receipt_table() {
    let mut rows = common_rows::<pb::Receipt>(
        "piece_id",
        "node_key",
        |m| &mut m.piece_id,
        |m| &mut m.node_key,
        |m| &mut m.signature,
    );
    rows.extend::<Vec<Row<pb::Receipt>>>(vec![
        (
            "owner short",
            Box::new(|m| m.owner_key.truncate(3)),
            ("WrongLength", "owner_key"),
        ),
        (
            "hash long",
            Box::new(|m| m.piece_hash.push(1)),
            ("WrongLength", "piece_hash"),
        ),
        (
            "oversize",
            Box::new(|m| m.size = u64::MAX),
            ("OutOfRange", "size"),
        ),
        (
            "no timestamp",
            Box::new(|m| m.timestamp_ms = 0),
            ("Missing", "timestamp_ms"),
        ),
        // A receipt signed by the owner instead of the node names the wrong signer.
        (
            "signed by someone else",
            Box::new(|m| m.node_key = owner().public_key().as_bytes().to_vec()),
            ("BadSignature", "signature"),
        ),
    ]);
    run_table::<_, Receipt>(receipt(), rows);
}

fn download_order() -> pb::DownloadOrder {
    let o = owner();
    let body = DownloadOrder {
        header: OrderHeader {
            node_id: node(),
            owner_key: *o.public_key(),
            timestamp_ms: NOW,
            nonce: Nonce([5; 16]),
        },
        piece_id: piece(),
        offset: 10,
        length: 100,
    };
    (&Signed::sign(body, &o).unwrap()).into()
}

#[test]
fn download_order_table() {
    let mut rows = common_rows::<pb::DownloadOrder>(
        "piece_id",
        "owner_key",
        |m| &mut m.piece_id,
        |m| &mut m.owner_key,
        |m| &mut m.signature,
    );
    rows.extend::<Vec<Row<pb::DownloadOrder>>>(vec![
        (
            "node id missing",
            Box::new(|m| m.node_id.clear()),
            ("Missing", "node_id"),
        ),
        (
            "offset huge",
            Box::new(|m| m.offset = u64::MAX),
            ("OutOfRange", "offset"),
        ),
        (
            "length huge",
            Box::new(|m| m.length = MAX_PIECE_SIZE + 1),
            ("OutOfRange", "length"),
        ),
        (
            "no timestamp",
            Box::new(|m| m.timestamp_ms = 0),
            ("Missing", "timestamp_ms"),
        ),
        (
            "range changed",
            Box::new(|m| m.offset = 0),
            ("BadSignature", "signature"),
        ),
    ]);
    run_table::<_, DownloadOrder>(download_order(), rows);
}

fn delete_order() -> pb::DeleteOrder {
    let o = owner();
    let body = DeleteOrder {
        header: OrderHeader {
            node_id: node(),
            owner_key: *o.public_key(),
            timestamp_ms: NOW,
            nonce: Nonce([5; 16]),
        },
        piece_id: piece(),
    };
    (&Signed::sign(body, &o).unwrap()).into()
}

#[test]
fn delete_order_table() {
    let mut rows = common_rows::<pb::DeleteOrder>(
        "piece_id",
        "owner_key",
        |m| &mut m.piece_id,
        |m| &mut m.owner_key,
        |m| &mut m.signature,
    );
    rows.extend::<Vec<Row<pb::DeleteOrder>>>(vec![
        (
            "node id long",
            Box::new(|m| m.node_id.push(0)),
            ("WrongLength", "node_id"),
        ),
        (
            "no timestamp",
            Box::new(|m| m.timestamp_ms = 0),
            ("Missing", "timestamp_ms"),
        ),
        (
            "timestamp changed",
            Box::new(|m| m.timestamp_ms += 1),
            ("BadSignature", "signature"),
        ),
    ]);
    run_table::<_, DeleteOrder>(delete_order(), rows);
}

fn audit_order() -> pb::AuditOrder {
    let o = owner();
    let body = AuditOrder {
        header: OrderHeader {
            node_id: node(),
            owner_key: *o.public_key(),
            timestamp_ms: NOW,
            nonce: Nonce([5; 16]),
        },
        piece_id: piece(),
        block_index: 3,
    };
    (&Signed::sign(body, &o).unwrap()).into()
}

#[test]
fn audit_order_table() {
    let mut rows = common_rows::<pb::AuditOrder>(
        "piece_id",
        "owner_key",
        |m| &mut m.piece_id,
        |m| &mut m.owner_key,
        |m| &mut m.signature,
    );
    rows.extend::<Vec<Row<pb::AuditOrder>>>(vec![
        (
            "block index huge",
            Box::new(|m| m.block_index = u32::MAX),
            ("OutOfRange", "block_index"),
        ),
        (
            "no timestamp",
            Box::new(|m| m.timestamp_ms = 0),
            ("Missing", "timestamp_ms"),
        ),
        (
            "block changed",
            Box::new(|m| m.block_index = 4),
            ("BadSignature", "signature"),
        ),
    ]);
    run_table::<_, AuditOrder>(audit_order(), rows);
}

fn renew_order() -> pb::RenewOrder {
    let o = owner();
    let body = RenewOrder {
        header: OrderHeader {
            node_id: node(),
            owner_key: *o.public_key(),
            timestamp_ms: NOW,
            nonce: Nonce([5; 16]),
        },
        piece_ids: vec![piece(), PieceId([3; 32])],
        expires_at_ms: NOW + 5,
    };
    (&Signed::sign(body, &o).unwrap()).into()
}

#[test]
fn renew_order_table() {
    let rows: Vec<Row<pb::RenewOrder>> = vec![
        (
            "no pieces",
            Box::new(|m| m.piece_ids.clear()),
            ("Missing", "piece_ids"),
        ),
        (
            "too many pieces",
            Box::new(|m| {
                m.piece_ids = (0..=MAX_RENEW_PIECES as u32)
                    .map(|i| [i.to_be_bytes().to_vec(), vec![0; 28]].concat())
                    .collect()
            }),
            ("TooMany", "piece_ids"),
        ),
        (
            "piece twice",
            Box::new(|m| m.piece_ids[1] = m.piece_ids[0].clone()),
            ("Malformed", "piece_ids"),
        ),
        (
            "piece id short",
            Box::new(|m| m.piece_ids[1].truncate(31)),
            ("WrongLength", "piece_ids"),
        ),
        (
            "piece dropped",
            Box::new(|m| {
                m.piece_ids.pop();
            }),
            ("BadSignature", "signature"),
        ),
        (
            "owner key bad",
            Box::new(|m| m.owner_key.truncate(3)),
            ("WrongLength", "owner_key"),
        ),
        (
            "no nonce",
            Box::new(|m| m.nonce.clear()),
            ("Missing", "nonce"),
        ),
        (
            "nonce changed",
            Box::new(|m| m.nonce[0] ^= 1),
            ("BadSignature", "signature"),
        ),
        (
            "no expiry",
            Box::new(|m| m.expires_at_ms = 0),
            ("Missing", "expires_at_ms"),
        ),
        (
            "expiry changed",
            Box::new(|m| m.expires_at_ms += 1),
            ("BadSignature", "signature"),
        ),
    ];
    run_table::<_, RenewOrder>(renew_order(), rows);
}

#[test]
fn every_order_needs_a_nonce_and_signs_it() {
    fn check<P: Clone, T>(valid: P, nonce: fn(&mut P) -> &mut Vec<u8>)
    where
        Signed<T>: TryFrom<P, Error = WireError>,
    {
        let mut m = valid.clone();
        nonce(&mut m).clear();
        assert!(matches!(
            Signed::<T>::try_from(m),
            Err(WireError::Missing { field: "nonce" })
        ));
        let mut m = valid.clone();
        nonce(&mut m).push(0);
        assert!(matches!(
            Signed::<T>::try_from(m),
            Err(WireError::WrongLength { field: "nonce", .. })
        ));
        let mut m = valid;
        nonce(&mut m)[3] ^= 1;
        assert!(matches!(
            Signed::<T>::try_from(m),
            Err(WireError::BadSignature { .. })
        ));
    }
    check::<_, UploadOrder>(upload_order(), |m| &mut m.nonce);
    check::<_, DownloadOrder>(download_order(), |m| &mut m.nonce);
    check::<_, DeleteOrder>(delete_order(), |m| &mut m.nonce);
    check::<_, AuditOrder>(audit_order(), |m| &mut m.nonce);
    check::<_, RenewOrder>(renew_order(), |m| &mut m.nonce);
}

#[test]
fn renew_results_round_trip_and_refuse_unknown_statuses() {
    for status in [
        RenewStatus::Renewed { expires_at_ms: 9 },
        RenewStatus::NotFound,
        RenewStatus::NotOwner,
        RenewStatus::Busy,
    ] {
        let r = RenewResult {
            piece_id: piece(),
            status,
        };
        assert_eq!(RenewResult::try_from(pb::RenewResult::from(&r)), Ok(r));
    }
    let mut bad = pb::RenewResult::from(&RenewResult {
        piece_id: piece(),
        status: RenewStatus::Busy,
    });
    bad.status = 42;
    assert!(matches!(
        RenewResult::try_from(bad),
        Err(WireError::Malformed {
            field: "status",
            ..
        })
    ));
}

fn node_record() -> pb::NodeRecord {
    let n = Identity::from_seed([2; 32]);
    let body = NodeRecord {
        public_key: *n.public_key(),
        addresses: vec!["127.0.3.1:7777".parse().unwrap()],
        free_space: 1 << 40,
        version: "0.1.0".into(),
        started_at_ms: NOW - 1000,
        timestamp_ms: NOW,
    };
    (&Signed::sign(body, &n).unwrap()).into()
}

#[test]
fn node_record_table() {
    let mut rows = common_rows::<pb::NodeRecord>(
        "public_key",
        "public_key",
        |m| &mut m.public_key,
        |m| &mut m.public_key,
        |m| &mut m.signature,
    );
    // For node records the id is the key: "id" rows above hit the key field; the
    // off-curve and tampered rows still apply.
    rows.retain(|(name, _, _)| !name.starts_with("id "));
    rows.extend::<Vec<Row<pb::NodeRecord>>>(vec![
        (
            "no address",
            Box::new(|m| m.addresses.clear()),
            ("Missing", "addresses"),
        ),
        (
            "too many addresses",
            Box::new(|m| m.addresses = vec!["127.0.0.1:1".into(); MAX_ADDRESSES + 1]),
            ("TooMany", "addresses"),
        ),
        (
            "not an address",
            Box::new(|m| m.addresses[0] = "example:80".into()),
            ("Malformed", "addresses"),
        ),
        (
            "port zero",
            Box::new(|m| m.addresses[0] = "127.0.0.1:0".into()),
            ("Malformed", "addresses"),
        ),
        (
            "unspecified ip",
            Box::new(|m| m.addresses[0] = "0.0.0.0:80".into()),
            ("Malformed", "addresses"),
        ),
        (
            "address too long",
            Box::new(|m| m.addresses[0] = "1".repeat(65)),
            ("TooLong", "addresses"),
        ),
        (
            "version too long",
            Box::new(|m| m.version = "v".repeat(MAX_VERSION_LEN + 1)),
            ("TooLong", "version"),
        ),
        (
            "version control chars",
            Box::new(|m| m.version = "1\n2".into()),
            ("Malformed", "version"),
        ),
        (
            "no timestamp",
            Box::new(|m| m.timestamp_ms = 0),
            ("Missing", "timestamp_ms"),
        ),
        (
            "address changed",
            Box::new(|m| m.addresses[0] = "127.0.3.1:7778".into()),
            ("BadSignature", "signature"),
        ),
        (
            "free space changed",
            Box::new(|m| m.free_space += 1),
            ("BadSignature", "signature"),
        ),
    ]);
    run_table::<_, NodeRecord>(node_record(), rows);
}

fn mutable_record() -> pb::MutableRecord {
    let o = owner();
    let body = MutableRecord {
        public_key: *o.public_key(),
        salt: b"catalog".to_vec(),
        seq: 7,
        value: vec![1; 100],
        expires_at_ms: NOW + 1,
        work: 0,
    };
    (&Signed::sign(body, &o).unwrap()).into()
}

#[test]
fn mutable_record_table() {
    let mut rows = common_rows::<pb::MutableRecord>(
        "public_key",
        "public_key",
        |m| &mut m.public_key,
        |m| &mut m.public_key,
        |m| &mut m.signature,
    );
    rows.retain(|(name, _, _)| !name.starts_with("id "));
    rows.extend::<Vec<Row<pb::MutableRecord>>>(vec![
        (
            "salt too long",
            Box::new(|m| m.salt = vec![0; MAX_SALT_LEN + 1]),
            ("TooLong", "salt"),
        ),
        (
            "value too big",
            Box::new(|m| m.value = vec![0; MAX_RECORD_VALUE + 1]),
            ("TooLong", "value"),
        ),
        (
            "no expiry",
            Box::new(|m| m.expires_at_ms = 0),
            ("Missing", "expires_at_ms"),
        ),
        (
            "seq replayed lower",
            Box::new(|m| m.seq = 6),
            ("BadSignature", "signature"),
        ),
        (
            "value changed",
            Box::new(|m| m.value[0] = 2),
            ("BadSignature", "signature"),
        ),
        (
            "salt changed",
            Box::new(|m| m.salt = b"other".to_vec()),
            ("BadSignature", "signature"),
        ),
        (
            "expiry extended",
            Box::new(|m| m.expires_at_ms += 1),
            ("BadSignature", "signature"),
        ),
    ]);
    run_table::<_, MutableRecord>(mutable_record(), rows);
}

#[test]
fn round_trips_preserve_every_field() {
    let o = Signed::<UploadOrder>::try_from(upload_order()).unwrap();
    assert_eq!(pb::UploadOrder::from(&o), upload_order());
    let r = Signed::<NodeRecord>::try_from(node_record()).unwrap();
    assert_eq!(pb::NodeRecord::from(&r), node_record());
    let m = Signed::<MutableRecord>::try_from(mutable_record()).unwrap();
    assert_eq!(pb::MutableRecord::from(&m), mutable_record());
    assert_eq!(
        m.key(),
        MutableRecord::key_for(owner().public_key(), b"catalog")
    );
    // The work nonce travels, and is outside the signature: setting it keeps the
    // record valid, and changing it on the wire does not break the signature either.
    let paid = m.with_work(12345);
    assert_eq!(paid.work, 12345);
    let wire = pb::MutableRecord::from(&paid);
    assert_eq!(wire.work, 12345);
    let back = Signed::<MutableRecord>::try_from(wire).unwrap();
    assert_eq!(back.work, 12345);
}

#[test]
fn a_signature_moved_to_another_message_kind_fails() {
    // A download order and a delete order over the same piece, node and owner: the
    // download signature must not authorise the delete.
    let download = download_order();
    let mut delete = delete_order();
    delete.timestamp_ms = download.timestamp_ms;
    delete.signature = download.signature.clone();
    assert!(matches!(
        Signed::<DeleteOrder>::try_from(delete),
        Err(WireError::BadSignature {
            domain: Domain::DeleteOrder
        })
    ));
    // An upload order's signature does not make an audit order.
    let mut audit = audit_order();
    audit.signature = upload_order().signature;
    assert!(Signed::<AuditOrder>::try_from(audit).is_err());
}

#[test]
fn signing_with_the_wrong_key_is_refused() {
    let body = DeleteOrder {
        header: OrderHeader {
            node_id: node(),
            owner_key: *owner().public_key(),
            timestamp_ms: NOW,
            nonce: Nonce([5; 16]),
        },
        piece_id: piece(),
    };
    assert!(Signed::sign(body, &Identity::from_seed([8; 32])).is_err());
}

#[test]
fn record_keys_depend_on_key_and_salt() {
    let a = Identity::from_seed([1; 32]);
    let b = Identity::from_seed([2; 32]);
    let k = MutableRecord::key_for(a.public_key(), b"x");
    assert_ne!(k, MutableRecord::key_for(b.public_key(), b"x"));
    assert_ne!(k, MutableRecord::key_for(a.public_key(), b"y"));
    assert_ne!(k, MutableRecord::key_for(a.public_key(), b""));
}

/// The order envelope signs each order's fields in the layout each order wrote by hand
/// before [`OrderHeader`] existed, so signatures made then verify now.
#[test]
fn every_order_signs_the_bytes_it_signed_before_the_envelope() {
    use crate::signing::Canonical;
    fn old(domain: Domain, f: impl FnOnce(&mut Canonical)) -> Vec<u8> {
        let mut c = Canonical::new(domain);
        f(&mut c);
        c.into_bytes()
    }
    let (p, n, k) = (piece(), node(), *owner().public_key());
    let h = OrderHeader {
        node_id: n,
        owner_key: k,
        timestamp_ms: NOW,
        nonce: Nonce([5; 16]),
    };
    let tail = |c: &mut Canonical| {
        c.u64(NOW).fixed(&[5; 16]);
    };
    let upload = UploadOrder {
        header: h.clone(),
        piece_id: p,
        max_size: 7,
        block_size: 4096,
        expires_at_ms: NOW + 9,
    };
    assert_eq!(
        upload.signed_bytes(),
        old(Domain::UploadOrder, |c| {
            c.fixed(p.as_bytes())
                .fixed(n.as_bytes())
                .fixed(k.as_bytes())
                .u64(7)
                .u32(4096)
                .u64(NOW + 9);
            tail(c);
        })
    );
    let download = DownloadOrder {
        header: h.clone(),
        piece_id: p,
        offset: 3,
        length: 4,
    };
    assert_eq!(
        download.signed_bytes(),
        old(Domain::DownloadOrder, |c| {
            c.fixed(p.as_bytes())
                .fixed(n.as_bytes())
                .fixed(k.as_bytes())
                .u64(3)
                .u64(4);
            tail(c);
        })
    );
    let delete = DeleteOrder {
        header: h.clone(),
        piece_id: p,
    };
    assert_eq!(
        delete.signed_bytes(),
        old(Domain::DeleteOrder, |c| {
            c.fixed(p.as_bytes())
                .fixed(n.as_bytes())
                .fixed(k.as_bytes());
            tail(c);
        })
    );
    let audit = AuditOrder {
        header: h.clone(),
        piece_id: p,
        block_index: 2,
    };
    assert_eq!(
        audit.signed_bytes(),
        old(Domain::AuditOrder, |c| {
            c.fixed(p.as_bytes())
                .fixed(n.as_bytes())
                .fixed(k.as_bytes())
                .u32(2);
            tail(c);
        })
    );
    let renew = RenewOrder {
        header: h.clone(),
        piece_ids: vec![p, PieceId([3; 32])],
        expires_at_ms: NOW + 5,
    };
    assert_eq!(
        renew.signed_bytes(),
        old(Domain::RenewOrder, |c| {
            c.list([p.as_bytes(), PieceId([3; 32]).as_bytes()].into_iter())
                .fixed(n.as_bytes())
                .fixed(k.as_bytes())
                .u64(NOW + 5);
            tail(c);
        })
    );
    let list = ListPiecesOrder {
        header: h,
        after: Some(p),
        limit: 9,
    };
    assert_eq!(
        list.signed_bytes(),
        old(Domain::ListPiecesOrder, |c| {
            c.fixed(n.as_bytes())
                .fixed(k.as_bytes())
                .bytes(p.as_bytes())
                .u32(9);
            tail(c);
        })
    );
}
