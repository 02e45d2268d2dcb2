use std::collections::{BTreeSet, HashMap, HashSet};

use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

use super::*;

/// A made-up network: every node knows a random subset of the others; some never answer.
struct Net {
    ids: Vec<NodeId>,
    views: HashMap<NodeId, Vec<NodeId>>,
    dead: HashSet<NodeId>,
}

fn net(n: usize, view: usize, dead_frac: f64, rng: &mut SmallRng) -> Net {
    let ids: Vec<NodeId> = (0..n).map(|_| NodeId(rng.random())).collect();
    let mut views = HashMap::new();
    for id in &ids {
        let mut v = ids.clone();
        v.shuffle(rng);
        v.truncate(view);
        views.insert(*id, v);
    }
    let dead = ids
        .iter()
        .filter(|_| rng.random_bool(dead_frac))
        .copied()
        .collect();
    Net { ids, views, dead }
}

/// What the node answers to a FIND_NODE: the k closest of its view.
fn answer(net: &Net, id: &NodeId, target: &[u8; 32], k: usize) -> Vec<(NodeId, ())> {
    let mut v = net.views[id].clone();
    v.sort_by_key(|x| distance(target, x));
    v.truncate(k);
    v.into_iter().map(|x| (x, ())).collect()
}

struct Outcome {
    answered: Vec<NodeId>,
    results: Vec<NodeId>,
    steps: usize,
}

/// Drives a lookup against `net`, answering open requests in random order, sometimes
/// letting time pass so requests time out (and may then answer late).
fn drive(net: &Net, cfg: LookupConfig, seeds: usize, rng: &mut SmallRng) -> Outcome {
    let target: [u8; 32] = rng.random();
    let timeout = 100;
    let seed_ids: Vec<(NodeId, ())> = net.ids.iter().take(seeds).map(|i| (*i, ())).collect();
    let mut l = Lookup::new(target, None, seed_ids, cfg, timeout);
    let mut now = 0u64;
    let mut open: Vec<(NodeId, u64)> = Vec::new(); // (id, sent at)
    let mut queried = HashSet::new();
    let mut answered = Vec::new();
    let mut steps = 0;
    loop {
        steps += 1;
        assert!(steps < 100_000, "lookup did not terminate");
        match l.poll(now) {
            Step::Query { id, .. } => {
                assert!(queried.insert(id), "queried {id:?} twice");
                open.push((id, now));
            }
            Step::Wait { until } => {
                assert!(!open.is_empty() || until.is_none());
                assert!(until.is_none_or(|u| u > now), "deadline in the past");
                if open.is_empty() {
                    continue;
                }
                // Either time passes to the next deadline, or one open request completes.
                if rng.random_bool(0.1)
                    && let Some(u) = until
                {
                    now = u;
                    continue;
                }
                let i = rng.random_range(0..open.len());
                let (id, _) = open.swap_remove(i);
                if net.dead.contains(&id) {
                    l.on_failure(&id);
                } else {
                    now += rng.random_range(1..50);
                    if l.on_success(&id, answer(net, &id, &target, cfg.k)) {
                        answered.push(id);
                    }
                }
            }
            Step::Done => break,
        }
        // In flight never exceeds alpha: count requests still open and not past deadline.
        assert!(l.in_flight() <= cfg.alpha);
        let live_open = open.iter().filter(|(_, at)| at + timeout > now).count();
        assert!(live_open <= cfg.alpha.max(l.in_flight()) + open.len());
        assert!(l.in_flight() <= open.len());
    }
    let results = l.results().iter().map(|p| p.id).collect();
    Outcome {
        answered: {
            answered.sort_by_key(|x| distance(&target, x));
            answered.truncate(cfg.k);
            answered
        },
        results,
        steps,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn lookup_properties(
        seed in any::<u64>(),
        n in 1usize..300,
        view in 1usize..40,
        dead in 0.0f64..0.5,
        k in 1usize..25,
        alpha in 1usize..6,
        seeds in 1usize..30,
        per_source in 0usize..8,
    ) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let net = net(n, view, dead, &mut rng);
        let cfg = LookupConfig { k, alpha, max_candidates: 200, per_source };
        let out = drive(&net, cfg, seeds, &mut rng);
        // Returns the k closest among those that answered, nearest first.
        prop_assert_eq!(out.results, out.answered);
        prop_assert!(out.steps > 0);
    }
}

#[test]
fn full_view_network_finds_the_true_closest() {
    let mut rng = SmallRng::seed_from_u64(7);
    for _ in 0..20 {
        let net = net(500, 500, 0.0, &mut rng);
        let cfg = LookupConfig::default();
        let target: [u8; 32] = rng.random();
        let mut l = Lookup::new(target, None, [(net.ids[0], ())], cfg, 100);
        let mut now = 0;
        loop {
            match l.poll(now) {
                Step::Query { id, .. } => {
                    now += 1;
                    l.on_success(&id, answer(&net, &id, &target, 20));
                }
                Step::Wait { .. } => unreachable!("answers are immediate"),
                Step::Done => break,
            }
        }
        let mut truth = net.ids.clone();
        truth.sort_by_key(|x| distance(&target, x));
        truth.truncate(20);
        let got: Vec<NodeId> = l.results().iter().map(|p| p.id).collect();
        assert_eq!(got, truth);
        assert!(l.hops() <= 2, "hops {}", l.hops());
    }
}

#[test]
fn timed_out_request_frees_a_slot_and_may_answer_late() {
    let a = NodeId([1; 32]);
    let b = NodeId([2; 32]);
    let cfg = LookupConfig {
        k: 2,
        alpha: 1,
        max_candidates: 10,
        per_source: 0,
    };
    let mut l = Lookup::new([0; 32], None, [(a, ()), (b, ())], cfg, 100);
    assert_eq!(l.poll(0), Step::Query { id: a, data: () });
    assert_eq!(l.poll(50), Step::Wait { until: Some(100) });
    // Deadline passes: b is asked although a never answered.
    assert_eq!(l.poll(100), Step::Query { id: b, data: () });
    assert_eq!(l.in_flight(), 1);
    assert!(l.on_success(&a, []));
    assert!(l.on_success(&b, []));
    assert!(!l.on_success(&b, []), "a second answer is ignored");
    assert_eq!(l.poll(120), Step::Done);
    assert_eq!(l.results().len(), 2);
}

#[test]
fn candidates_are_bounded_and_local_never_queried() {
    let local = NodeId([9; 32]);
    let cfg = LookupConfig {
        k: 3,
        alpha: 1,
        max_candidates: 10,
        per_source: 0,
    };
    let first = NodeId([1; 32]);
    let mut l = Lookup::new([0; 32], Some(local), [(first, ()), (local, ())], cfg, 100);
    assert_eq!(
        l.poll(0),
        Step::Query {
            id: first,
            data: ()
        }
    );
    let flood: Vec<(NodeId, ())> = (0..1000u16)
        .map(|i| {
            let mut x = [0xffu8; 32];
            x[..2].copy_from_slice(&i.to_be_bytes());
            (NodeId(x), ())
        })
        .collect();
    l.on_success(&first, flood);
    assert!(l.peers().count() <= 10);
    let ids: BTreeSet<NodeId> = l.peers().map(|p| p.id).collect();
    assert!(!ids.contains(&local));
}

#[test]
fn rtt_estimator_adapts_within_bounds() {
    let mut r = RttEstimator::new(1000, 50, 5000);
    assert_eq!(r.timeout(), 1000);
    for _ in 0..50 {
        r.observe(10);
    }
    assert_eq!(r.timeout(), 50, "clamped to the minimum");
    for _ in 0..50 {
        r.observe(400);
    }
    let t = r.timeout();
    assert!((400..1000).contains(&t), "{t}");
    for _ in 0..50 {
        r.observe(100_000);
    }
    assert_eq!(r.timeout(), 5000, "clamped to the maximum");
}

/// Runs a lookup whose every request is answered at once from `answers`.
fn run_fixed(
    target: [u8; 32],
    seeds: &[NodeId],
    answers: &HashMap<NodeId, Vec<NodeId>>,
    per_source: usize,
) -> Lookup<()> {
    let cfg = LookupConfig {
        per_source,
        ..LookupConfig::default()
    };
    let mut l = Lookup::new(target, None, seeds.iter().map(|s| (*s, ())), cfg, 100);
    let mut now = 0;
    loop {
        match l.poll(now) {
            Step::Query { id, .. } => {
                now += 1;
                let closer = answers.get(&id).cloned().unwrap_or_default();
                l.on_success(&id, closer.into_iter().map(|c| (c, ())));
            }
            Step::Wait { .. } => unreachable!("answers are immediate"),
            Step::Done => return l,
        }
    }
}

#[test]
fn nodes_that_name_only_each_other_cannot_end_the_lookup() {
    let node = |b0: u8, b1: u8| {
        let mut x = [0u8; 32];
        x[0] = b0;
        x[1] = b1;
        x[31] = 1;
        NodeId(x)
    };
    let target = [0u8; 32];
    // The target and the honest chain leading to it: h0 knows h1, h1 knows the target.
    let t = node(0, 0);
    let (h0, h1) = (node(0x40, 0), node(0x01, 0));
    // Twenty liars, all closer to the target than h1, each naming the others.
    let liars: Vec<NodeId> = (0..20).map(|i| node(0, 0x10 + i)).collect();
    let l0 = node(0x20, 0);
    let mut answers = HashMap::new();
    answers.insert(h0, vec![h1]);
    answers.insert(h1, vec![t]);
    answers.insert(t, vec![h1]);
    answers.insert(l0, liars.clone());
    for l in &liars {
        answers.insert(*l, liars.clone());
    }
    let seeds = [h0, l0];
    // Unbounded: the liars are the 20 closest that answered, and the lookup stops there.
    let plain = run_fixed(target, &seeds, &answers, 0);
    assert!(plain.results().iter().all(|p| p.id != t));
    assert!(plain.results().iter().all(|p| liars.contains(&p.id)));
    // Bounded: the branch h0 opened is followed to the target.
    let bounded = run_fixed(target, &seeds, &answers, 10);
    assert_eq!(bounded.results().first().map(|p| p.id), Some(t));
    assert_eq!(bounded.results().len(), 20);
}

#[test]
fn bounded_sources_still_find_the_true_closest_of_an_honest_network() {
    let mut rng = SmallRng::seed_from_u64(11);
    for _ in 0..20 {
        let net = net(500, 500, 0.0, &mut rng);
        let target: [u8; 32] = rng.random();
        let answers: HashMap<NodeId, Vec<NodeId>> = net
            .ids
            .iter()
            .map(|id| {
                (
                    *id,
                    answer(&net, id, &target, 20)
                        .into_iter()
                        .map(|a| a.0)
                        .collect(),
                )
            })
            .collect();
        let l = run_fixed(target, &net.ids[..1], &answers, 10);
        let mut truth = net.ids.clone();
        truth.sort_by_key(|x| distance(&target, x));
        truth.truncate(20);
        let got: Vec<NodeId> = l.results().iter().map(|p| p.id).collect();
        assert_eq!(got, truth);
    }
}
