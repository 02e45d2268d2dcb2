//! Fuzz targets for the DHT's decoders (see `shoal_proto::fuzz`): Discovery requests
//! checked as the service checks them, then served by one long-lived protocol core, and
//! Discovery answers checked as the client checks them.

use std::cell::RefCell;

use prost::Message;
use shoal_proto::address::AddressScope;
use shoal_proto::fuzz::{Target, seeds as proto_seeds};
use shoal_proto::messages::MutableRecord;
use shoal_proto::{Identity, NodeId, RecordKey, Signed, pb};

use crate::core::node::{Node, NodeConfig, Request, WriteToken};
use crate::driver::{Peer, check_node_record, contact};

/// Requests are prefixed with one byte that picks the message kind.
const PING: u8 = 0;
const FIND_NODE: u8 = 1;
const GET_RECORD: u8 = 2;
const PUT_RECORD: u8 = 3;
const ANSWERS: u8 = 4;

/// The unix time the fuzzed node lives at (seeds' records are signed around it).
const UNIX: u64 = 1_800_000_000_000;

thread_local! {
    /// One node serves every request of a thread, so state built by earlier inputs
    /// (table entries, records) meets later ones; `.1` is its monotonic clock.
    static NODE: RefCell<(Node<Peer>, u64)> = RefCell::new((
        Node::new(Identity::from_seed([11; 32]).node_id(), NodeConfig::default(), 0, 1, [2; 32]),
        0,
    ));
}

fn sender(m: Option<pb::NodeRecord>) -> Option<Option<Peer>> {
    match m {
        None => Some(None),
        Some(m) => check_node_record("sender", m, 0, AddressScope::Local)
            .ok()
            .map(|r| Some(std::sync::Arc::new(r))),
    }
}

fn serve(sender: Option<Peer>, request: Request) {
    NODE.with(|n| {
        let (node, clock) = &mut *n.borrow_mut();
        *clock += 1;
        let _ = node.handle_request(
            *clock,
            UNIX + *clock,
            sender.as_ref().map(contact),
            &[127, 0, 0, 1],
            request,
        );
        // Timers run too, so expiry and table upkeep meet what the requests left.
        node.tick(*clock, UNIX + *clock);
        while node.poll_output().is_some() {}
    });
}

fn request(d: &[u8]) {
    let Some((&kind, body)) = d.split_first() else {
        return;
    };
    match kind % 5 {
        PING => {
            if let Some(s) = pb::PingRequest::decode(body)
                .ok()
                .and_then(|m| sender(m.sender))
            {
                serve(s, Request::Ping);
            }
        }
        FIND_NODE => {
            let Ok(m) = pb::FindNodeRequest::decode(body) else {
                return;
            };
            if let (Ok(target), Some(s)) =
                (NodeId::from_wire("target", &m.target), sender(m.sender))
            {
                serve(s, Request::FindNode { target: target.0 });
            }
        }
        GET_RECORD => {
            let Ok(m) = pb::GetRecordRequest::decode(body) else {
                return;
            };
            if let (Ok(key), Some(s)) = (NodeId::from_wire("key", &m.key), sender(m.sender)) {
                serve(
                    s,
                    Request::GetRecord {
                        key: RecordKey(key.0),
                    },
                );
            }
        }
        PUT_RECORD => {
            // The write token travels in metadata: the last 32 bytes, when there are.
            let (msg, token) = match body.len().checked_sub(32) {
                Some(at) => (&body[..at], WriteToken::try_from(&body[at..]).ok()),
                None => (body, None),
            };
            let Ok(m) = pb::PutRecordRequest::decode(msg) else {
                return;
            };
            let Some(Ok(record)) = m.record.map(Signed::<MutableRecord>::try_from) else {
                return;
            };
            if let Some(s) = sender(m.sender) {
                serve(
                    s,
                    Request::PutRecord {
                        record,
                        expected_seq: m.expected_seq,
                        token,
                    },
                );
            }
        }
        _ => answers(body),
    }
}

/// What a client checks in answers: the responder, every closer record, the record.
fn answers(d: &[u8]) {
    let check = |m: pb::NodeRecord| check_node_record("closer", m, 0, AddressScope::Local).is_ok();
    if let Ok(m) = pb::FindNodeResponse::decode(d) {
        m.responder.map(check);
        m.closer
            .into_iter()
            .take(shoal_proto::limits::MAX_CLOSER_NODES)
            .for_each(|c| {
                check(c);
            });
    }
    if let Ok(m) = pb::GetRecordResponse::decode(d) {
        m.responder.map(check);
        if let Some(r) = m.record {
            let _ = Signed::<MutableRecord>::try_from(r);
        }
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let peer = Identity::from_seed([12; 32]);
    let record = || Some(proto_seeds::signed_node_record(&peer, &["127.0.3.1:7000"]));
    let with = |kind: u8, m: Vec<u8>| {
        let mut v = vec![kind];
        v.extend(m);
        v
    };
    let mutable = proto_seeds::signed_mutable_record(b"salt", b"value");
    let mut put = pb::PutRecordRequest {
        sender: record(),
        record: Some(mutable.clone()),
        expected_seq: Some(6),
    }
    .encode_to_vec();
    put.extend([9u8; 32]);
    vec![
        with(PING, pb::PingRequest { sender: record() }.encode_to_vec()),
        with(PING, pb::PingRequest { sender: None }.encode_to_vec()),
        with(
            FIND_NODE,
            pb::FindNodeRequest {
                sender: record(),
                target: vec![5; 32],
            }
            .encode_to_vec(),
        ),
        with(
            GET_RECORD,
            pb::GetRecordRequest {
                sender: None,
                key: MutableRecord::key_for(proto_seeds::identity().public_key(), b"salt")
                    .0
                    .to_vec(),
            }
            .encode_to_vec(),
        ),
        with(PUT_RECORD, put),
        with(
            ANSWERS,
            pb::FindNodeResponse {
                responder: record(),
                closer: vec![record().unwrap_or_default(); 3],
            }
            .encode_to_vec(),
        ),
        with(
            ANSWERS,
            pb::GetRecordResponse {
                responder: record(),
                record: Some(mutable),
                closer: Vec::new(),
            }
            .encode_to_vec(),
        ),
    ]
}

/// The DHT's targets.
pub fn targets() -> Vec<Target> {
    vec![Target {
        name: "dht.messages",
        seeds,
        run: request,
    }]
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn seeds_reach_the_core() {
        // Each seed's records pass the edge checks, so mutations start inside the core.
        for s in seeds() {
            request(&s);
        }
        let stored = NODE.with(|n| n.borrow().0.store().len());
        assert_eq!(stored, 0, "no valid write token, so nothing is stored");
        let (table, dialing) = NODE.with(|n| {
            let n = n.borrow();
            (n.0.table().len(), n.0.dialing())
        });
        assert!(
            table + dialing > 0,
            "the sender record was taken up (table or dial-back)"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn discovery_messages_give_an_error_or_a_value(
            raw in proptest::collection::vec(any::<u8>(), 0..512),
            seed in any::<u64>(),
        ) {
            shoal_proto::fuzz::check_all(&targets(), &raw, seed, 16);
        }
    }
}
