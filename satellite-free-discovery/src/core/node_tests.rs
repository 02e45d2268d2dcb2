use std::net::IpAddr;

use shoal_proto::Identity;

use super::*;

const UNIX: u64 = 1_700_000_000_000;

fn id(first: u8, tail: u8) -> NodeId {
    let mut x = [0u8; 32];
    x[0] = first;
    x[31] = tail;
    NodeId(x)
}

fn contact(first: u8, tail: u8) -> Contact<u32> {
    Contact {
        id: id(first, tail),
        subnet: Subnet::of(&IpAddr::from([10, first, tail, 1])),
        free_space: 0,
        data: u32::from(first) << 8 | u32::from(tail),
    }
}

fn cfg() -> NodeConfig {
    NodeConfig {
        membership: None,
        refresh_ms: 0,
        liveness_ms: 0,
        republish_ms: 0,
        replicate_ms: 0,
        ..NodeConfig::default()
    }
}

fn node(local: NodeId) -> Node<u32> {
    Node::new(local, cfg(), 0, 1, [7; 32])
}

pub(super) fn outputs(n: &mut Node<u32>) -> Vec<Output<u32>> {
    std::iter::from_fn(|| n.poll_output()).collect()
}

pub(super) fn sends(outs: &[Output<u32>]) -> Vec<(ReqId, NodeId, Request)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Send {
                req, to, request, ..
            } => Some((*req, *to, request.clone())),
            _ => None,
        })
        .collect()
}

fn record(owner: &Identity, seq: u64) -> Record {
    Signed::sign(
        MutableRecord {
            public_key: *owner.public_key(),
            salt: b"s".to_vec(),
            seq,
            value: vec![seq as u8],
            expires_at_ms: UNIX + 3_600_000,
            work: 0,
        },
        owner,
    )
    .unwrap()
}

fn answer(from: &Contact<u32>, response: Response<u32>) -> Result<Answer<u32>, Failure> {
    Ok(Answer {
        responder: from.clone(),
        at_advertised: true,
        response,
    })
}

#[test]
fn put_needs_a_fresh_token_for_the_writer_and_closeness() {
    let owner = Identity::from_seed([3; 32]);
    let r1 = record(&owner, 1);
    let key = r1.key();
    let mut n = node(NodeId(key.0));
    let put = |rec: &Record, token| Request::PutRecord {
        record: rec.clone(),
        expected_seq: None,
        token,
    };
    let token = match n
        .handle_request(0, UNIX, None, b"10.0.0.1", Request::GetRecord { key })
        .unwrap()
    {
        Response::Record { token, .. } => token.unwrap(),
        _ => panic!("not a record answer"),
    };
    assert_eq!(
        n.handle_request(0, UNIX, None, b"10.0.0.1", put(&r1, None))
            .unwrap_err(),
        RecordRefused::WriteToken
    );
    assert_eq!(
        n.handle_request(0, UNIX, None, b"10.0.0.2", put(&r1, Some(token)))
            .unwrap_err(),
        RecordRefused::WriteToken,
        "a token is bound to its requester"
    );
    let mut forged = token;
    forged[0] ^= 1;
    assert_eq!(
        n.handle_request(0, UNIX, None, b"10.0.0.1", put(&r1, Some(forged)))
            .unwrap_err(),
        RecordRefused::WriteToken
    );
    let period = n.config().token_period_ms;
    assert_eq!(
        n.handle_request(3 * period, UNIX, None, b"10.0.0.1", put(&r1, Some(token)))
            .unwrap_err(),
        RecordRefused::WriteToken,
        "tokens expire"
    );
    assert!(matches!(
        n.handle_request(period, UNIX, None, b"10.0.0.1", put(&r1, Some(token))),
        Ok(Response::Stored)
    ));
    // A replay is refused for what it is before any token is looked at.
    assert!(matches!(
        n.handle_request(0, UNIX, None, b"x", put(&record(&owner, 0), None)),
        Err(RecordRefused::NotNewer { .. })
    ));

    // A node with k live entries closer to the key than itself stores nothing.
    let mut far = node(NodeId([!key.0[0]; 32]));
    for t in 0..20u8 {
        let mut c = contact(0, t);
        c.id = NodeId(key.0);
        c.id.0[31] ^= t + 1;
        far.on_contact(0, c, true);
    }
    let token = match far
        .handle_request(0, UNIX, None, b"w", Request::GetRecord { key })
        .unwrap()
    {
        Response::Record { token, .. } => token,
        _ => None,
    };
    assert_eq!(
        far.handle_request(0, UNIX, None, b"w", put(&r1, token))
            .unwrap_err(),
        RecordRefused::NotAmongClosest { k: 20 }
    );
}

#[test]
fn an_unknown_sender_enters_the_table_only_after_answering_a_dial_back() {
    let mut n = node(id(0, 0));
    let x = contact(0x80, 1);
    n.handle_request(0, UNIX, Some(x.clone()), b"", Request::Ping)
        .unwrap();
    let s = sends(&outputs(&mut n));
    assert_eq!(s.len(), 1);
    assert!(matches!(s[0].2, Request::Ping) && s[0].1 == x.id);
    assert!(n.table().get(&x.id).is_none());
    assert_eq!(n.dialing(), 1);
    // Asking again while the dial-back runs sends nothing more.
    n.handle_request(1, UNIX, Some(x.clone()), b"", Request::Ping)
        .unwrap();
    assert!(sends(&outputs(&mut n)).is_empty());
    n.on_response(20, UNIX, s[0].0, answer(&x, Response::Pong));
    assert!(n.table().get(&x.id).is_some());
    assert_eq!(n.dialing(), 0);

    // A sender whose dial-back fails stays out.
    let y = contact(0x40, 2);
    n.handle_request(30, UNIX, Some(y.clone()), b"", Request::Ping)
        .unwrap();
    let s = sends(&outputs(&mut n));
    n.on_response(40, UNIX, s[0].0, Err(Failure::Unreachable));
    assert!(n.table().get(&y.id).is_none());
    let outs = outputs(&mut n);
    assert!(
        outs.iter()
            .any(|o| matches!(o, Output::Note(Note::DialbackFailed)))
    );
    // An answer from another node than the one asked does not count.
    n.handle_request(50, UNIX, Some(y.clone()), b"", Request::Ping)
        .unwrap();
    let s = sends(&outputs(&mut n));
    n.on_response(60, UNIX, s[0].0, answer(&contact(0x40, 3), Response::Pong));
    assert!(n.table().get(&y.id).is_none());
    assert!(n.table().get(&id(0x40, 3)).is_none());
}

#[test]
fn a_node_named_in_an_answer_enters_the_table_only_once_it_contacts_us() {
    let mut n = node(id(0, 0));
    let a = contact(0x80, 1);
    let b = contact(0x40, 2);
    n.on_contact(0, a.clone(), true);
    assert!(n.table().get(&a.id).is_some(), "the driver vouches for a");
    let op = n.closest(0, UNIX, b.id.0);
    let s = sends(&outputs(&mut n));
    assert_eq!(s.len(), 1);
    n.on_response(
        10,
        UNIX,
        s[0].0,
        answer(
            &a,
            Response::Nodes {
                closer: vec![b.clone()],
            },
        ),
    );
    // b, named by a, is asked and answers: it is a result, but not in the table.
    let s = sends(&outputs(&mut n));
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].1, b.id);
    n.on_response(
        20,
        UNIX,
        s[0].0,
        answer(&b, Response::Nodes { closer: vec![] }),
    );
    let outs = outputs(&mut n);
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::Done { op: o, outcome: Outcome::Closest { results, .. } }
            if *o == op && results.contains(&b.data)
    )));
    assert!(n.table().get(&b.id).is_none());
    assert_eq!(n.table().get(&a.id).map(|e| e.last_seen), Some(10));
    // b contacts us: dialled back, it answers and enters.
    n.handle_request(30, UNIX, Some(b.clone()), b"", Request::Ping)
        .unwrap();
    let s = sends(&outputs(&mut n));
    assert_eq!(s.len(), 1);
    n.on_response(40, UNIX, s[0].0, answer(&b, Response::Pong));
    assert!(n.table().get(&b.id).is_some());

    // A client, which nobody contacts, learns its table from answers.
    let mut c = Node::new(
        id(0, 0),
        NodeConfig {
            client: true,
            ..cfg()
        },
        0,
        1,
        [7; 32],
    );
    c.on_contact(0, a.clone(), true);
    c.closest(0, UNIX, b.id.0);
    let s = sends(&outputs(&mut c));
    let closer = vec![b.clone()];
    c.on_response(10, UNIX, s[0].0, answer(&a, Response::Nodes { closer }));
    let s = sends(&outputs(&mut c));
    c.on_response(
        20,
        UNIX,
        s[0].0,
        answer(&b, Response::Nodes { closer: vec![] }),
    );
    assert!(c.table().get(&b.id).is_some());
}

#[test]
fn an_unanswered_request_is_sent_again_then_fails_and_the_lookup_waits_for_it() {
    let mut n = node(id(0, 0));
    let a = contact(0x80, 1);
    n.on_contact(0, a.clone(), true);
    let op = n.closest(0, UNIX, a.id.0);
    let first = sends(&outputs(&mut n));
    assert_eq!(first.len(), 1);
    let soft = n.next_timer().unwrap();
    assert_eq!(soft, n.config().initial_timeout_ms);
    n.tick(soft, UNIX);
    let again = sends(&outputs(&mut n));
    assert_eq!(again.len(), 1, "sent again at the soft deadline");
    assert_eq!(again[0].0, first[0].0, "the same request");
    // The answer to either copy counts, and the lookup did not finish without it.
    n.on_response(
        soft + 10,
        UNIX,
        first[0].0,
        answer(&a, Response::Nodes { closer: vec![] }),
    );
    let outs = outputs(&mut n);
    let done = outs.iter().find_map(|o| match o {
        Output::Done { op: o, outcome } if *o == op => Some(outcome.clone()),
        _ => None,
    });
    match done {
        Some(Outcome::Closest { results, .. }) => assert_eq!(results, vec![a.data]),
        other => panic!("{other:?}"),
    }
    // A second answer to the same request is ignored.
    n.on_response(
        soft + 20,
        UNIX,
        first[0].0,
        answer(&a, Response::Nodes { closer: vec![] }),
    );
    assert!(outputs(&mut n).is_empty());

    // Never answered: retransmitted up to the limit, then failed at the hard timeout.
    let op = n.closest(10_000, UNIX, a.id.0);
    let mut copies = sends(&outputs(&mut n)).len();
    let mut now = 10_000;
    let mut finished = false;
    while let Some(t) = n.next_timer() {
        now = t;
        n.tick(now, UNIX);
        let outs = outputs(&mut n);
        copies += sends(&outs).len();
        if outs
            .iter()
            .any(|o| matches!(o, Output::Done { op: o, .. } if *o == op))
        {
            finished = true;
            break;
        }
    }
    assert!(finished);
    assert_eq!(copies as u32, 1 + n.config().retransmits);
    assert_eq!(now, 10_000 + n.config().hard_timeout_ms);
    assert_eq!(n.table().get(&a.id).map(|e| e.failures), Some(1));
}

/// Answers every GetRecord of `n` from `holders` (seq held per node) until it is done.
fn serve_reads(
    n: &mut Node<u32>,
    op: OpId,
    peers: &[Contact<u32>],
    held: &HashMap<NodeId, Record>,
    asked: &mut Vec<NodeId>,
) -> (Option<Outcome<u32>>, Vec<(NodeId, Request)>) {
    let mut now = 0;
    let mut done = None;
    let mut other = Vec::new();
    let mut queue: VecDeque<(ReqId, NodeId, Request)> = VecDeque::new();
    loop {
        for o in outputs(n) {
            match o {
                Output::Send {
                    req, to, request, ..
                } => queue.push_back((req, to, request)),
                Output::Done { op: o, outcome } if o == op => done = Some(outcome),
                _ => {}
            }
        }
        let Some((req, to, request)) = queue.pop_front() else {
            break;
        };
        now += 1;
        let from = peers.iter().find(|p| p.id == to).unwrap();
        match request {
            Request::GetRecord { key } => {
                asked.push(to);
                let r = Response::Record {
                    record: held.get(&to).cloned(),
                    // Everyone points at everyone: paths would meet if allowed.
                    closer: peers.to_vec(),
                    token: Some([to.0[31]; 32]),
                };
                let _ = key;
                n.on_response(now, UNIX, req, answer(from, r));
            }
            r => other.push((to, r)),
        }
    }
    (done, other)
}

#[test]
fn a_read_takes_disjoint_paths_returns_the_highest_seq_and_repairs_stale_holders() {
    let owner = Identity::from_seed([5; 32]);
    let key = record(&owner, 1).key();
    let mut n = node(NodeId([!key.0[0]; 32]));
    let peers: Vec<Contact<u32>> = (1..=9u8).map(|t| contact(0x80 | t, t)).collect();
    for p in &peers {
        n.on_contact(0, p.clone(), true);
    }
    let mut held = HashMap::new();
    held.insert(peers[0].id, record(&owner, 3));
    held.insert(peers[4].id, record(&owner, 7));
    held.insert(peers[8].id, record(&owner, 5));
    let op = n.get_record(0, UNIX, key);
    let mut asked = Vec::new();
    let (done, other) = serve_reads(&mut n, op, &peers, &held, &mut asked);
    match done {
        Some(Outcome::Record(Some(r))) => assert_eq!(r.seq, 7),
        other => panic!("{other:?}"),
    }
    let unique: HashSet<_> = asked.iter().collect();
    assert_eq!(unique.len(), asked.len(), "a node served two paths");
    assert_eq!(asked.len(), 9);
    // Read repair: every stale node got seq 7, with its own token.
    let repaired: Vec<_> = other
        .iter()
        .filter_map(|(to, r)| match r {
            Request::PutRecord { record, token, .. } => {
                assert_eq!(record.seq, 7);
                assert_eq!(*token, Some([to.0[31]; 32]));
                Some(*to)
            }
            _ => None,
        })
        .collect();
    assert_eq!(repaired.len(), 8);
    assert!(!repaired.contains(&peers[4].id));
}

#[test]
fn a_write_puts_to_the_closest_with_their_tokens_and_reports_a_failed_swap() {
    let owner = Identity::from_seed([6; 32]);
    let r = record(&owner, 2);
    let key = r.key();
    // A client: it keeps no copy itself.
    let mut n = Node::new(
        NodeId([!key.0[0]; 32]),
        NodeConfig {
            client: true,
            ..cfg()
        },
        0,
        1,
        [0; 32],
    );
    let peers: Vec<Contact<u32>> = (1..=4u8).map(|t| contact(0x80 | t, t)).collect();
    for p in &peers {
        n.on_contact(0, p.clone(), true);
    }
    let op = n.put_record(0, UNIX, r.clone(), Some(1));
    let mut asked = Vec::new();
    let (done, puts) = serve_reads(&mut n, op, &peers, &HashMap::new(), &mut asked);
    assert!(done.is_none());
    assert_eq!(puts.len(), 4);
    for (to, p) in &puts {
        match p {
            Request::PutRecord {
                token,
                expected_seq,
                ..
            } => {
                assert_eq!(*token, Some([to.0[31]; 32]));
                assert_eq!(*expected_seq, Some(1));
            }
            _ => panic!("not a put"),
        }
    }
    // Every node refuses: two held another seq.
    let pending: Vec<ReqId> = n.pending.keys().copied().collect();
    for (i, req) in pending.into_iter().enumerate() {
        n.on_response(
            100,
            UNIX,
            req,
            Err(Failure::Refused {
                compare_and_swap: i < 2,
                reason: "no".into(),
            }),
        );
    }
    let outs = outputs(&mut n);
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::Done {
            outcome: Outcome::Put(Err(PutError::CompareAndSwap)),
            ..
        }
    )));
    // A refusal is an answer: no table entry counts a failure.
    assert!(n.table().iter().all(|e| e.failures == 0));
    assert!(n.owned.is_empty(), "a failed write is not republished");
}

#[test]
fn an_empty_table_reports_no_peers() {
    let mut n = node(id(1, 1));
    let op = n.get_record(0, UNIX, RecordKey([9; 32]));
    let outs = outputs(&mut n);
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::Done { op: o, outcome: Outcome::NoPeers } if *o == op
    )));
}

#[test]
fn membership_counts_a_node_live_only_when_it_answered_at_its_advertised_address() {
    let mut n = Node::new(
        id(0, 0),
        NodeConfig {
            membership: Some(MembershipConfig::default()),
            ..cfg()
        },
        0,
        1,
        [7; 32],
    );
    let elsewhere = contact(0x80, 1);
    n.on_contact(10, elsewhere.clone(), false);
    let m = n.members().unwrap().get(&elsewhere.id).unwrap();
    assert_eq!(m.last_seen, None, "learned of, not live");
    assert!(n.table().get(&elsewhere.id).is_none());
    n.on_contact(20, elsewhere.clone(), true);
    let m = n.members().unwrap().get(&elsewhere.id).unwrap();
    assert_eq!(m.last_seen, Some(20));
    assert!(n.table().get(&elsewhere.id).is_some());
}

pub(super) fn record_at(owner: &Identity, salt: &[u8], seq: u64, expires_at_ms: u64) -> Record {
    Signed::sign(
        MutableRecord {
            public_key: *owner.public_key(),
            salt: salt.to_vec(),
            seq,
            value: vec![seq as u8],
            expires_at_ms,
            work: 0,
        },
        owner,
    )
    .unwrap()
}

fn store_changes(outs: &[Output<u32>]) -> Vec<StoreChange> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Store(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn restored_records_follow_the_store_rules_and_are_served_again() {
    let owner = Identity::from_seed([8; 32]);
    let other = Identity::from_seed([9; 32]);
    let mut n = Node::new(
        id(1, 1),
        NodeConfig {
            persist: true,
            store: StoreConfig {
                max_records: 3,
                max_per_owner: 2,
                ..StoreConfig::default()
            },
            ..cfg()
        },
        0,
        1,
        [7; 32],
    );
    let live = UNIX + 3_600_000;
    let restored = n.restore_records(
        UNIX,
        vec![
            record_at(&owner, b"a", 1, live),
            // The same key twice: the higher seq wins, whatever the order.
            record_at(&owner, b"a", 3, live),
            record_at(&owner, b"a", 2, live),
            // Expired while the node was down.
            record_at(&owner, b"b", 1, UNIX - 1),
            record_at(&owner, b"c", 1, live - 1_000),
            // Over the publisher's bound (2).
            record_at(&owner, b"d", 1, live),
            record_at(&other, b"a", 1, live),
            // Over the store's bound (3): it evicts a record of the publisher holding
            // most, the soonest to expire (issue 27), here `owner`'s "c".
            record_at(&Identity::from_seed([10; 32]), b"a", 1, live),
        ],
    );
    assert_eq!(
        restored,
        Restored {
            restored: 5,
            expired: 1,
            refused: 2,
        }
    );
    assert_eq!(n.store().len(), 3);
    let c = MutableRecord::key_for(owner.public_key(), b"c");
    assert!(n.store().get(&c, UNIX).is_none());
    let key = MutableRecord::key_for(owner.public_key(), b"a");
    assert_eq!(n.store().get(&key, UNIX).map(|r| r.seq), Some(3));
    // Served again as before the restart.
    match n
        .handle_request(0, UNIX, None, b"w", Request::GetRecord { key })
        .unwrap()
    {
        Response::Record { record, .. } => assert_eq!(record.map(|r| r.seq), Some(3)),
        other => panic!("{other:?}"),
    }
    // Records read from the disk are not written back to it.
    assert!(store_changes(&outputs(&mut n)).is_empty());

    // A client holds nothing, restored or not.
    let mut c: Node<u32> = Node::new(
        id(1, 2),
        NodeConfig {
            client: true,
            ..cfg()
        },
        0,
        1,
        [7; 32],
    );
    let r = c.restore_records(UNIX, vec![record_at(&owner, b"a", 1, live)]);
    assert_eq!(r, Restored::default());
    assert!(c.store().is_empty());
}

#[test]
fn every_change_of_the_record_store_is_reported_for_the_disk_only_when_asked() {
    let owner = Identity::from_seed([11; 32]);
    let r1 = record_at(&owner, b"s", 1, UNIX + 1_000);
    let key = r1.key();
    for persist in [false, true] {
        let mut n = Node::new(
            NodeId(key.0),
            NodeConfig {
                persist,
                liveness_ms: 60_000,
                ..cfg()
            },
            0,
            1,
            [7; 32],
        );
        let token = match n
            .handle_request(0, UNIX, None, b"w", Request::GetRecord { key })
            .unwrap()
        {
            Response::Record { token, .. } => token,
            _ => None,
        };
        let put = |r: &Record| Request::PutRecord {
            record: r.clone(),
            expected_seq: None,
            token,
        };
        n.handle_request(0, UNIX, None, b"w", put(&r1)).unwrap();
        let r2 = record_at(&owner, b"s", 2, UNIX + 2_000);
        n.handle_request(0, UNIX, None, b"w", put(&r2)).unwrap();
        // A refused put changes nothing.
        assert!(n.handle_request(0, UNIX, None, b"w", put(&r1)).is_err());
        // The liveness round expires held records.
        let t = n.next_timer().unwrap();
        n.tick(t, UNIX + 2_000);
        assert!(n.store().is_empty());
        let changes = store_changes(&outputs(&mut n));
        if persist {
            assert_eq!(
                changes,
                vec![
                    StoreChange::Put(r1.clone()),
                    StoreChange::Put(r2),
                    StoreChange::Removed(key),
                ]
            );
        } else {
            assert!(changes.is_empty());
        }
    }
}

#[test]
fn a_put_that_fails_on_one_of_the_k_closest_goes_to_the_next_closest() {
    let owner = Identity::from_seed([12; 32]);
    let r = record(&owner, 1);
    let key = r.key();
    let mut n = Node::new(
        NodeId([!key.0[0]; 32]),
        NodeConfig {
            client: true,
            k: 2,
            // One request at a time: the lookup asks only the two nearest.
            alpha: 1,
            record_paths: 1,
            ..cfg()
        },
        0,
        1,
        [0; 32],
    );
    // Four nodes at increasing distance from the key.
    let peers: Vec<Contact<u32>> = (1..=4u8)
        .map(|t| {
            let mut c = contact(0x80 | t, t);
            c.id = NodeId(key.0);
            c.id.0[0] ^= 1 << t;
            c
        })
        .collect();
    for p in &peers {
        n.on_contact(0, p.clone(), true);
    }
    let op = n.put_record(0, UNIX, r.clone(), None);
    let mut asked = Vec::new();
    let (done, puts) = serve_reads(&mut n, op, &peers, &HashMap::new(), &mut asked);
    assert!(done.is_none());
    let targets: Vec<NodeId> = puts.iter().map(|p| p.0).collect();
    assert_eq!(targets, vec![peers[0].id, peers[1].id], "the k closest");
    let req_to = |n: &Node<u32>, id: NodeId| {
        n.pending
            .iter()
            .find(|(_, p)| {
                matches!(p.dest, Dest::Node { id: to, .. } if to == id)
                    && matches!(p.request, Request::PutRecord { .. })
            })
            .map(|(r, _)| *r)
            .unwrap()
    };
    // The nearest does not answer: the put goes to the third, the next nearest the
    // lookup learned of. It was not asked, so it is asked for its token first.
    let first = req_to(&n, peers[0].id);
    n.on_response(100, UNIX, first, Err(Failure::Unreachable));
    let s = sends(&outputs(&mut n));
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].1, peers[2].id);
    assert!(matches!(s[0].2, Request::GetRecord { key: k } if k == key));
    let token = [peers[2].id.0[31]; 32];
    n.on_response(
        105,
        UNIX,
        s[0].0,
        answer(
            &peers[2],
            Response::Record {
                record: None,
                closer: vec![],
                token: Some(token),
            },
        ),
    );
    let s = sends(&outputs(&mut n));
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].1, peers[2].id);
    match &s[0].2 {
        Request::PutRecord { token: t, .. } => assert_eq!(*t, Some(token)),
        other => panic!("{other:?}"),
    }
    let second = req_to(&n, peers[1].id);
    n.on_response(110, UNIX, second, answer(&peers[1], Response::Stored));
    let third = req_to(&n, peers[2].id);
    n.on_response(120, UNIX, third, answer(&peers[2], Response::Stored));
    let outs = outputs(&mut n);
    let report = outs.iter().find_map(|o| match o {
        Output::Done {
            op: o,
            outcome: Outcome::Put(Ok(report)),
        } if *o == op => Some(report.clone()),
        _ => None,
    });
    assert_eq!(
        report,
        Some(PutReport {
            stored: 2,
            refused: vec![],
            failed: 1,
        })
    );
    assert!(sends(&outs).is_empty(), "enough stored: no more puts");
}

#[test]
fn a_read_of_a_key_read_recently_asks_the_closest_found_then_first() {
    let owner = Identity::from_seed([13; 32]);
    let key = record(&owner, 1).key();
    let mut n = node(NodeId([!key.0[0]; 32]));
    // The table knows one far node; it names two near the key.
    let far = contact(0x80, 1);
    let mut near: Vec<Contact<u32>> = (1..=2u8)
        .map(|t| {
            let mut c = contact(0x40 | t, t);
            c.id = NodeId(key.0);
            c.id.0[31] ^= t;
            c
        })
        .collect();
    n.on_contact(0, far.clone(), true);
    let mut all = vec![far.clone()];
    all.append(&mut near);
    let op = n.get_record(0, UNIX, key);
    let (done, _) = serve_reads(&mut n, op, &all, &HashMap::new(), &mut Vec::new());
    assert!(matches!(done, Some(Outcome::Record(None))));
    assert!(
        n.table().get(&all[1].id).is_none(),
        "not admitted by answering"
    );

    // Read again soon: the first requests go to the near nodes as well.
    n.get_record(1_000, UNIX, key);
    let first: HashSet<NodeId> = sends(&outputs(&mut n)).iter().map(|s| s.1).collect();
    assert!(
        first.contains(&all[1].id) && first.contains(&all[2].id),
        "{first:?}"
    );

    // Once the cache entry is older than `closest_cache_ms`, only the table is used.
    let later = 2_000 + n.config().closest_cache_ms;
    n.tick(later, UNIX);
    outputs(&mut n);
    n.get_record(later, UNIX, key);
    let first: Vec<NodeId> = sends(&outputs(&mut n)).iter().map(|s| s.1).collect();
    assert_eq!(first, vec![far.id]);

    // Without a cache, the same second read starts from the table alone.
    let mut n = Node::new(
        NodeId([!key.0[0]; 32]),
        NodeConfig {
            closest_cache: 0,
            ..cfg()
        },
        0,
        1,
        [7; 32],
    );
    n.on_contact(0, far.clone(), true);
    let op = n.get_record(0, UNIX, key);
    serve_reads(&mut n, op, &all, &HashMap::new(), &mut Vec::new());
    n.get_record(1_000, UNIX, key);
    let first: Vec<NodeId> = sends(&outputs(&mut n)).iter().map(|s| s.1).collect();
    assert_eq!(first, vec![far.id]);
}

#[test]
fn an_answer_counts_only_from_the_node_asked_and_within_the_closer_bound() {
    let asked = contact(0x80, 1);
    let nodes = |n: u8| Response::Nodes {
        closer: (0..n).map(|i| contact(0x40, i)).collect(),
    };
    let ok = |c: &Contact<u32>, r| answer(c, r).unwrap().check(&asked.id);
    assert_eq!(ok(&asked, nodes(MAX_CLOSER_NODES as u8)), Ok(()));
    assert_eq!(
        ok(&asked, nodes(MAX_CLOSER_NODES as u8 + 1)),
        Err(BadAnswer::TooManyCloser {
            count: MAX_CLOSER_NODES + 1
        })
    );
    let other = contact(0x81, 2);
    assert_eq!(
        ok(&other, Response::Pong),
        Err(BadAnswer::WrongResponder {
            asked: asked.id,
            answered: other.id
        })
    );
}

/// The `Done` outcome of `op` among `outs`.
pub(super) fn done_of(outs: &[Output<u32>], op: OpId) -> Option<Outcome<u32>> {
    outs.iter().find_map(|o| match o {
        Output::Done { op: o, outcome } if *o == op => Some(outcome.clone()),
        _ => None,
    })
}

#[test]
fn a_put_of_a_key_found_lately_goes_straight_to_its_closest_and_falls_back_when_too_few_store() {
    let owner = Identity::from_seed([14; 32]);
    let key = record(&owner, 1).key();
    let mut n = Node::new(
        NodeId([!key.0[0]; 32]),
        NodeConfig {
            client: true,
            k: 4,
            record_paths: 1,
            ..cfg()
        },
        0,
        1,
        [0; 32],
    );
    let peers: Vec<Contact<u32>> = (1..=4u8)
        .map(|t| {
            let mut c = contact(0x80 | t, t);
            c.id = NodeId(key.0);
            c.id.0[0] ^= 1 << t;
            c
        })
        .collect();
    for p in &peers {
        n.on_contact(0, p.clone(), true);
    }
    // A read finds the four closest and their tokens.
    let op = n.get_record(0, UNIX, key);
    let (done, _) = serve_reads(&mut n, op, &peers, &HashMap::new(), &mut Vec::new());
    assert!(matches!(done, Some(Outcome::Record(None))));

    // The write that follows asks nobody for a token: it puts to the four at once, each
    // with the token it gave.
    let op = n.put_record(1_000, UNIX, record(&owner, 2), None);
    let s = sends(&outputs(&mut n));
    assert_eq!(s.len(), 4, "{s:?}");
    for (_, to, r) in &s {
        match r {
            Request::PutRecord { token, .. } => assert_eq!(*token, Some([to.0[31]; 32])),
            other => panic!("{other:?}"),
        }
    }
    // Three of four store it: enough, done without a lookup.
    for (i, (req, to, _)) in s.iter().enumerate() {
        let from = peers.iter().find(|p| p.id == *to).unwrap();
        let result = if i == 0 {
            Err(Failure::Unreachable)
        } else {
            answer(from, Response::Stored)
        };
        n.on_response(1_010, UNIX, *req, result);
    }
    let outs = outputs(&mut n);
    match done_of(&outs, op) {
        Some(Outcome::Put(Ok(r))) => assert_eq!((r.stored, r.failed), (3, 1)),
        other => panic!("{other:?}"),
    }
    assert!(sends(&outs).is_empty(), "no lookup");

    // Only two of four store the next one (stale tokens, say): too few, so the write
    // falls back to a lookup, then puts to the closest it found.
    let op = n.put_record(2_000, UNIX, record(&owner, 3), None);
    let s = sends(&outputs(&mut n));
    assert_eq!(s.len(), 4);
    for (i, (req, to, _)) in s.iter().enumerate() {
        let from = peers.iter().find(|p| p.id == *to).unwrap();
        let result = if i < 2 {
            Err(Failure::Refused {
                compare_and_swap: false,
                reason: "bad token".into(),
            })
        } else {
            answer(from, Response::Stored)
        };
        n.on_response(2_010, UNIX, *req, result);
    }
    let outs = outputs(&mut n);
    assert!(done_of(&outs, op).is_none(), "not done after two of four");
    let s = sends(&outs);
    assert!(
        !s.is_empty() && s.iter().all(|x| matches!(x.2, Request::GetRecord { .. })),
        "a lookup: {s:?}"
    );

    // Once the cache entry is stale, a write looks the key up first.
    let later = 3_000 + n.config().closest_cache_ms;
    n.tick(later, UNIX);
    outputs(&mut n);
    n.put_record(later, UNIX, record(&owner, 4), None);
    let s = sends(&outputs(&mut n));
    assert!(s.iter().all(|x| matches!(x.2, Request::GetRecord { .. })));
}

#[test]
fn a_direct_put_refused_by_compare_and_swap_fails_as_such_without_a_lookup() {
    let owner = Identity::from_seed([15; 32]);
    let key = record(&owner, 1).key();
    let mut n = Node::new(
        NodeId([!key.0[0]; 32]),
        NodeConfig {
            client: true,
            k: 2,
            record_paths: 1,
            ..cfg()
        },
        0,
        1,
        [0; 32],
    );
    let peers: Vec<Contact<u32>> = (1..=2u8)
        .map(|t| {
            let mut c = contact(0x80 | t, t);
            c.id = NodeId(key.0);
            c.id.0[0] ^= 1 << t;
            c
        })
        .collect();
    for p in &peers {
        n.on_contact(0, p.clone(), true);
    }
    let op = n.get_record(0, UNIX, key);
    serve_reads(&mut n, op, &peers, &HashMap::new(), &mut Vec::new());
    let op = n.put_record(1_000, UNIX, record(&owner, 5), Some(3));
    let s = sends(&outputs(&mut n));
    assert_eq!(s.len(), 2);
    for (req, _, _) in &s {
        n.on_response(
            1_010,
            UNIX,
            *req,
            Err(Failure::Refused {
                compare_and_swap: true,
                reason: "seq".into(),
            }),
        );
    }
    let outs = outputs(&mut n);
    assert!(matches!(
        done_of(&outs, op),
        Some(Outcome::Put(Err(PutError::CompareAndSwap)))
    ));
    assert!(sends(&outs).is_empty());
}

#[test]
fn the_direct_put_quorum_is_three_quarters_and_at_least_one() {
    assert_eq!(direct_quorum(1), 1);
    assert_eq!(direct_quorum(2), 2);
    assert_eq!(direct_quorum(4), 3);
    assert_eq!(direct_quorum(20), 15);
}
