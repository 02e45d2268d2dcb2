use std::net::IpAddr;

use shoal_proto::{Identity, NodeId, RecordKey};

use super::super::tests::{done_of as done, outputs, record_at, sends};
use super::super::{Answer, Contact, Failure, Node, NodeConfig, Note};
use super::super::{OpId, Outcome, Output, Record, Request, Response};
use crate::core::key::Subnet;

const UNIX: u64 = 1_700_000_000_000;

fn record(owner: &Identity, salt: &[u8], seq: u64) -> Record {
    record_at(owner, salt, seq, UNIX + 3_600_000)
}

/// `n` nodes near `key`.
fn near(key: &RecordKey, n: u8) -> Vec<Contact<u32>> {
    (1..=n)
        .map(|t| {
            let mut id = key.0;
            id[31] ^= t;
            Contact {
                id: NodeId(id),
                subnet: Subnet::of(&IpAddr::from([10, 2, t, 1])),
                free_space: 0,
                data: u32::from(t),
            }
        })
        .collect()
}

fn client(key: &RecordKey, direct_reads: bool) -> Node<u32> {
    let cfg = NodeConfig {
        client: true,
        k: 4,
        membership: None,
        refresh_ms: 0,
        liveness_ms: 0,
        republish_ms: 0,
        replicate_ms: 0,
        direct_reads,
        ..NodeConfig::default()
    };
    Node::new(NodeId([!key.0[0]; 32]), cfg, 0, 1, [7; 32])
}

fn holding(from: &Contact<u32>, record: Option<Record>) -> Result<Answer<u32>, Failure> {
    Ok(Answer {
        responder: from.clone(),
        at_advertised: true,
        response: Response::Record {
            record,
            closer: Vec::new(),
            token: Some([from.data as u8; 32]),
        },
    })
}

fn seeded(key: &RecordKey, peers: &[Contact<u32>], direct_reads: bool) -> Node<u32> {
    let mut n = client(key, direct_reads);
    n.seed_closest(*key, peers.iter().map(|c| (c.id, c.data)).collect(), 0);
    n
}

#[test]
fn a_client_reads_a_key_in_one_round_from_the_closest_an_earlier_run_found() {
    let owner = Identity::from_seed([21; 32]);
    let (old, new) = (record(&owner, b"k", 1), record(&owner, b"k", 2));
    let key = old.key();
    let peers = near(&key, 4);
    // No table at all: a client that has not joined.
    let mut n = seeded(&key, &peers, true);
    let op = n.get_record(10, UNIX, key);
    let outs = outputs(&mut n);
    assert!(
        outs.iter()
            .any(|o| matches!(o, Output::Note(Note::DirectGet)))
    );
    let s = sends(&outs);
    let asked: Vec<NodeId> = s.iter().map(|x| x.1).collect();
    assert_eq!(asked.len(), 4);
    assert!(peers.iter().all(|p| asked.contains(&p.id)), "{asked:?}");
    assert!(
        s.iter()
            .all(|x| matches!(x.2, Request::GetRecord { key: k } if k == key))
    );
    // Three answer: one holds the newer record, one the older, one a record of another
    // key (which does not count); the fourth does not answer.
    let other = record(&owner, b"other", 9);
    for (req, to, _) in &s {
        let from = peers.iter().find(|p| p.id == *to).unwrap();
        let result = match from.data {
            1 => holding(from, Some(new.clone())),
            2 => holding(from, Some(old.clone())),
            3 => holding(from, Some(other.clone())),
            _ => Err(Failure::Unreachable),
        };
        n.on_response(20, UNIX, *req, result);
    }
    let outs = outputs(&mut n);
    match done(&outs, op) {
        Some(Outcome::Record(Some(r))) => assert_eq!(r.seq, 2),
        other => panic!("{other:?}"),
    }
    // Read repair: the two that answered without the newest get it, with their token;
    // the one that did not answer is left alone.
    let repairs: Vec<(NodeId, Option<[u8; 32]>)> = sends(&outs)
        .into_iter()
        .filter_map(|(_, to, r)| match r {
            Request::PutRecord { record, token, .. } if record.seq == 2 => Some((to, token)),
            _ => None,
        })
        .collect();
    assert_eq!(repairs.len(), 2, "{repairs:?}");
    assert!(repairs.contains(&(peers[1].id, Some([2; 32]))));
    assert!(repairs.contains(&(peers[2].id, Some([3; 32]))));
    // The write that follows goes straight to the three that answered, with their
    // tokens.
    n.put_record(30, UNIX, record(&owner, b"k", 3), Some(2));
    let s = sends(&outputs(&mut n));
    let put_to: Vec<NodeId> = s.iter().map(|x| x.1).collect();
    assert_eq!(put_to.len(), 3, "{s:?}");
    assert!(!put_to.contains(&peers[3].id));
    assert!(
        s.iter()
            .all(|x| matches!(x.2, Request::PutRecord { token: Some(_), .. }))
    );
}

#[test]
fn a_direct_read_too_few_answer_is_a_lookup_from_those_that_did_or_no_peers() {
    let owner = Identity::from_seed([22; 32]);
    let key = record(&owner, b"k", 1).key();
    let peers = near(&key, 4);
    // `answering` of the four answer (holding nothing), the others do not.
    let settle = |n: &mut Node<u32>, op: OpId, answering: usize| {
        let s = sends(&outputs(n));
        assert_eq!(s.len(), 4);
        for (i, (req, to, _)) in s.iter().enumerate() {
            let from = peers.iter().find(|p| p.id == *to).unwrap();
            let result = if i < answering {
                holding(from, None)
            } else {
                Err(Failure::Unreachable)
            };
            n.on_response(20, UNIX, *req, result);
        }
        let outs = outputs(n);
        (done(&outs, op), outs)
    };
    // Nobody answers a client that has not joined: no peers (its owner joins and reads
    // again), not "no record".
    let mut n = seeded(&key, &peers, true);
    let op = n.get_record(10, UNIX, key);
    let (outcome, outs) = settle(&mut n, op, 0);
    assert!(matches!(outcome, Some(Outcome::NoPeers)), "{outcome:?}");
    assert!(
        outs.iter()
            .any(|o| matches!(o, Output::Note(Note::DirectGetFallback)))
    );

    // Two of four is too few to stand: a lookup, from those that answered (a client
    // learns its table from answers).
    let mut n = seeded(&key, &peers, true);
    let op = n.get_record(10, UNIX, key);
    let (outcome, outs) = settle(&mut n, op, 2);
    assert!(outcome.is_none(), "{outcome:?}");
    assert!(
        outs.iter()
            .any(|o| matches!(o, Output::Note(Note::LookupStarted { record: true })))
    );
    let s = sends(&outs);
    assert!(
        !s.is_empty() && s.iter().all(|x| matches!(x.2, Request::GetRecord { .. })),
        "a lookup: {s:?}"
    );
}

#[test]
fn only_a_client_with_direct_reads_reads_directly_and_only_within_the_ttl() {
    let owner = Identity::from_seed([23; 32]);
    let key = record(&owner, b"k", 1).key();
    let peers = near(&key, 4);

    // Known and exported with their age, nearest first.
    let n = seeded(&key, &peers, true);
    let known = n.known_closest(500, u64::MAX);
    assert_eq!(known.len(), 1);
    assert_eq!((known[0].0, known[0].1), (key, 500));
    let ids: Vec<NodeId> = known[0].2.iter().map(|p| p.0).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable_by_key(|id| crate::core::key::distance(&key.0, id));
    assert_eq!(ids, sorted);
    assert!(n.known_closest(500, 400).is_empty());

    // Past the TTL the seeds are not read directly; with no table that is no peers at
    // once, nothing sent.
    let mut n = seeded(&key, &peers, true);
    let later = n.config().known_closest_ms;
    let op = n.get_record(later, UNIX, key);
    let outs = outputs(&mut n);
    assert!(
        matches!(done(&outs, op), Some(Outcome::NoPeers)),
        "{outs:?}"
    );
    assert!(sends(&outs).is_empty());

    // Direct reads off: the seeds only start a lookup.
    let mut n = seeded(&key, &peers, false);
    n.get_record(10, UNIX, key);
    let outs = outputs(&mut n);
    assert!(
        !outs
            .iter()
            .any(|o| matches!(o, Output::Note(Note::DirectGet)))
    );
    assert!(
        outs.iter()
            .any(|o| matches!(o, Output::Note(Note::LookupStarted { record: true })))
    );
}
