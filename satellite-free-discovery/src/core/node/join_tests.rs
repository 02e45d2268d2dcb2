use std::net::{IpAddr, SocketAddr};

use shoal_proto::NodeId;

use super::super::{Answer, Contact, Dial, Failure, JoinPlan, Missed, Node, NodeConfig};
use super::super::{BadAnswer, Outcome, Output, ReqId, Request, Response};
use crate::core::key::Subnet;

const UNIX: u64 = 1_700_000_000_000;

fn contact(tail: u8) -> Contact<u32> {
    let mut id = [0x80; 32];
    id[31] = tail;
    Contact {
        id: NodeId(id),
        subnet: Subnet::of(&IpAddr::from([10, 1, tail, 1])),
        free_space: 0,
        data: u32::from(tail),
    }
}

fn addr(tail: u8) -> SocketAddr {
    SocketAddr::from(([10, 1, tail, 1], 7000))
}

fn dial(c: &Contact<u32>, tail: u8) -> Dial {
    Dial {
        id: Some(c.id),
        addr: addr(tail),
    }
}

fn node() -> Node<u32> {
    let cfg = NodeConfig {
        membership: None,
        refresh_ms: 0,
        liveness_ms: 0,
        republish_ms: 0,
        replicate_ms: 0,
        ..NodeConfig::default()
    };
    Node::new(NodeId([1; 32]), cfg, 0, 1, [7; 32])
}

fn outputs(n: &mut Node<u32>) -> Vec<Output<u32>> {
    std::iter::from_fn(|| n.poll_output()).collect()
}

fn dials(outs: &[Output<u32>]) -> Vec<(ReqId, Dial)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Dial {
                req,
                dial,
                request: Request::Ping,
            } => Some((*req, *dial)),
            _ => None,
        })
        .collect()
}

fn done(outs: &[Output<u32>]) -> Option<Outcome<u32>> {
    outs.iter().find_map(|o| match o {
        Output::Done { outcome, .. } => Some(outcome.clone()),
        _ => None,
    })
}

fn pong(from: &Contact<u32>) -> Result<Answer<u32>, Failure> {
    Ok(Answer {
        responder: from.clone(),
        at_advertised: true,
        response: Response::Pong,
    })
}

#[test]
fn a_join_pings_every_entry_then_bootstraps_through_those_that_answered() {
    let (a, b) = (contact(1), contact(2));
    let mut n = node();
    let plan = JoinPlan {
        entries: vec![dial(&a, 1), dial(&b, 2)],
        ..JoinPlan::default()
    };
    n.join(0, UNIX, plan);
    let out = outputs(&mut n);
    let pings = dials(&out);
    assert_eq!(pings.len(), 2, "both entries at once");
    assert!(done(&out).is_none());
    n.on_response(5, UNIX, pings[0].0, pong(&a));
    // One answered, the other not yet: no lookup before every ping settled.
    assert!(
        !outputs(&mut n)
            .iter()
            .any(|o| matches!(o, Output::Send { .. }))
    );
    assert_eq!(n.table().len(), 1, "an entry that answers enters the table");
    n.on_response(6, UNIX, pings[1].0, Err(Failure::Unreachable));
    let out = outputs(&mut n);
    let finds: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Send {
                to,
                request: Request::FindNode { target },
                ..
            } => Some((*to, *target)),
            _ => None,
        })
        .collect();
    assert_eq!(
        finds,
        vec![(a.id, n.local().0)],
        "then it looks up its own id"
    );
}

#[test]
fn a_join_nobody_answers_fails_naming_every_entry_tried() {
    let (a, b, c) = (contact(1), contact(2), contact(3));
    let mut n = node();
    let plan = JoinPlan {
        entries: vec![dial(&a, 1)],
        fallback: vec![dial(&b, 2), dial(&c, 3)],
        min_answers: 1,
    };
    n.join(0, UNIX, plan);
    let first = dials(&outputs(&mut n));
    assert_eq!(first.len(), 1, "the fallback waits");
    n.on_response(1, UNIX, first[0].0, Err(Failure::Unreachable));
    let fallback = dials(&outputs(&mut n));
    assert_eq!(fallback.len(), 2, "too few answered: the fallback entries");
    // One answers as another node than the one pinned at its address.
    n.on_response(2, UNIX, fallback[0].0, pong(&a));
    // The other never answers: given up at its deadline.
    let mut now = 2;
    let mut outcome = None;
    while outcome.is_none() && now < 60_000 {
        now = n.next_timer().unwrap_or(now + 1).max(now + 1);
        n.tick(now, UNIX);
        outcome = done(&outputs(&mut n));
    }
    assert!(now <= n.config().max_timeout_ms + 2, "given up at {now}");
    match outcome {
        Some(Outcome::JoinFailed {
            entries: 1,
            fallback: 2,
            missed,
        }) => assert_eq!(
            missed,
            vec![
                Missed {
                    dial: dial(&a, 1),
                    bad: None
                },
                Missed {
                    dial: dial(&b, 2),
                    bad: Some(BadAnswer::WrongResponder {
                        asked: b.id,
                        answered: a.id
                    })
                },
                Missed {
                    dial: dial(&c, 3),
                    bad: None
                },
            ]
        ),
        other => panic!("{other:?}"),
    }
    assert!(n.table().is_empty());
}

#[test]
fn a_join_with_enough_answers_leaves_the_fallback_alone() {
    let (a, b) = (contact(1), contact(2));
    let mut n = node();
    let plan = JoinPlan {
        entries: vec![dial(&a, 1)],
        fallback: vec![dial(&b, 2)],
        min_answers: 1,
    };
    n.join(0, UNIX, plan);
    let first = dials(&outputs(&mut n));
    n.on_response(1, UNIX, first[0].0, pong(&a));
    let out = outputs(&mut n);
    assert!(dials(&out).is_empty(), "no fallback ping");
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Send { to, .. } if *to == a.id))
    );
}

#[test]
fn a_join_with_nobody_to_ping_and_an_empty_table_has_no_peers() {
    let mut n = node();
    let op = n.join(0, UNIX, JoinPlan::default());
    let out = outputs(&mut n);
    assert!(matches!(
        out.as_slice(),
        [Output::Done { op: o, outcome: Outcome::NoPeers }] if *o == op
    ));
}

#[test]
fn a_bare_address_takes_whoever_answers_there() {
    let a = contact(1);
    let mut n = node();
    let plan = JoinPlan {
        entries: vec![Dial {
            id: None,
            addr: addr(1),
        }],
        ..JoinPlan::default()
    };
    n.join(0, UNIX, plan);
    let pings = dials(&outputs(&mut n));
    n.on_response(1, UNIX, pings[0].0, pong(&a));
    assert_eq!(n.table().len(), 1);
}
