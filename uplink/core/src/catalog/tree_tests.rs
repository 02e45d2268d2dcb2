//! Tests of [`super`]: the tree of chunks.
#![allow(clippy::unwrap_used)]
use std::collections::{BTreeMap, HashMap, HashSet};

use super::*;
use crate::catalog::model::{EntryKey, Hlc, State, Value, Version, WriterId};
use proptest::prelude::*;

const SMALL: Params = Params {
    leaf_min: 256,
    leaf_target: 1024,
    leaf_max: 4096,
    node_min: 2,
    node_target: 4,
    node_max: 16,
};

fn key() -> TreeKey {
    TreeKey::new(&[9; 32])
}

fn entry(i: u64, hlc: u64) -> Change {
    Change {
        key: EntryKey::Object {
            bucket: "b".into(),
            key: format!("dir/{i:08}"),
        },
        version: Version {
            hlc: Hlc(hlc),
            writer: WriterId([1; 16]),
        },
        value: Value::Tombstone,
    }
}

fn entries(n: u64) -> Vec<Change> {
    (0..n).map(|i| entry(i, i + 1)).collect()
}

/// A built tree: its root and every chunk made, by id (`R` = nothing: chunks are
/// found by id).
struct Built {
    root: (u8, Child<()>),
    chunks: HashMap<ChunkId, Chunk<()>>,
    /// Closed chunks in the order they were closed.
    order: Vec<ChunkId>,
}

fn build(params: Params, changes: impl IntoIterator<Item = Change>) -> Built {
    let mut b = Builder::new(key(), params);
    let mut chunks = HashMap::new();
    let mut order = Vec::new();
    let mut drain = |b: &mut Builder<()>| {
        while let Some(s) = b.take() {
            order.push(s.id);
            chunks.insert(s.id, s.chunk);
            b.attach(()).unwrap();
        }
    };
    for c in changes {
        b.push(c).unwrap();
        drain(&mut b);
    }
    b.finish();
    drain(&mut b);
    Built {
        root: b.root().unwrap(),
        chunks,
        order,
    }
}

/// Reads a tree back, checking every chunk as a reader does.
fn read(t: &Built) -> Vec<Change> {
    fn walk(t: &Built, id: &ChunkId, level: u8, n: u64, out: &mut Vec<Change>) {
        let c = &t.chunks[id];
        verify(&key(), id, level, n, c).unwrap();
        match c {
            Chunk::Leaf(changes) => out.extend(changes.iter().cloned()),
            Chunk::Node { children, .. } => {
                for ch in children {
                    walk(t, &ch.id, level - 1, ch.entries, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    let (level, root) = &t.root;
    walk(t, &root.id, *level, root.entries, &mut out);
    out
}

fn encoded(c: &Change) -> usize {
    encode_entry(c).unwrap().len()
}

#[test]
fn a_tree_reads_back_as_the_entries_it_was_built_from() {
    for n in [0u64, 1, 2, 7, 100, 5_000] {
        let t = build(SMALL, entries(n));
        assert_eq!(read(&t), entries(n), "n = {n}");
        assert_eq!(t.root.1.entries, n);
    }
    // 5,000 entries make several levels.
    let t = build(SMALL, entries(5_000));
    assert!(t.root.0 >= 2, "root level {}", t.root.0);
    assert!(t.chunks.len() > 50);
}

#[test]
fn an_empty_catalog_is_one_empty_leaf() {
    let t = build(SMALL, []);
    assert_eq!(t.root.0, 0);
    assert_eq!(t.chunks.len(), 1);
    assert_eq!(t.chunks[&t.root.1.id], Chunk::Leaf(vec![]));
}

#[test]
fn the_same_entries_make_the_same_chunks_whatever_the_history() {
    // Two replicas reach the same state through different changes and orders.
    let mut a = State::default();
    let mut b = State::default();
    let all: Vec<Change> = (0..3_000).map(|i| entry(i % 1_000, i + 1)).collect();
    for c in &all {
        a.apply(c);
    }
    for c in all.iter().rev() {
        b.apply(c);
    }
    let sorted = |s: &State| -> Vec<Change> {
        s.0.iter()
            .map(|(k, (v, val))| Change {
                key: k.clone(),
                version: *v,
                value: val.clone(),
            })
            .collect()
    };
    let (ta, tb) = (build(SMALL, sorted(&a)), build(SMALL, sorted(&b)));
    assert_eq!(ta.root, tb.root);
    let ids = |t: &Built| t.chunks.keys().copied().collect::<HashSet<_>>();
    assert_eq!(ids(&ta), ids(&tb));
    // Another key gives other ids (nodes learn nothing from ids across accesses).
    let mut other = Builder::<()>::new(TreeKey::new(&[8; 32]), SMALL);
    for c in sorted(&a) {
        other.push(c).unwrap();
        while other.take().is_some() {
            other.attach(()).unwrap();
        }
    }
    other.finish();
    while other.take().is_some() {
        other.attach(()).unwrap();
    }
    assert_ne!(other.root().unwrap().1.id, ta.root.1.id);
}

#[test]
fn one_change_makes_only_a_logarithmic_number_of_new_chunks() {
    let n = 20_000u64;
    let base = build(SMALL, entries(n));
    let old: HashSet<ChunkId> = base.chunks.keys().copied().collect();
    let depth = u64::from(base.root.0) + 1;
    for (i, what) in [(0u64, "first"), (n / 2, "middle"), (n - 1, "last")] {
        // Changed, inserted after, deleted.
        let changed: Vec<Change> = entries(n)
            .into_iter()
            .map(|c| {
                if c == entry(i, i + 1) {
                    entry(i, 1_000_000)
                } else {
                    c
                }
            })
            .collect();
        let mut inserted = entries(n);
        let mut extra = entry(i, 7);
        if let EntryKey::Object { key, .. } = &mut extra.key {
            key.push('x');
        }
        inserted.insert(i as usize + 1, extra);
        let mut deleted = entries(n);
        deleted.remove(i as usize);
        for (how, list) in [
            ("changed", changed),
            ("inserted", inserted),
            ("deleted", deleted),
        ] {
            let t = build(SMALL, list.clone());
            assert_eq!(read(&t), list);
            let new = t.chunks.keys().filter(|id| !old.contains(id)).count() as u64;
            assert!(
                new <= 3 * depth,
                "{what} entry {how}: {new} new chunks of {} (depth {depth})",
                t.chunks.len()
            );
            assert!(new >= 1);
        }
    }
}

#[test]
fn chunk_sizes_stay_within_their_bounds() {
    let t = build(SMALL, entries(20_000));
    let last_leaf = t
        .order
        .iter()
        .rev()
        .find(|id| matches!(t.chunks[*id], Chunk::Leaf(_)))
        .copied();
    let mut children_per_level: BTreeMap<u8, Vec<usize>> = BTreeMap::new();
    for (id, c) in &t.chunks {
        match c {
            Chunk::Leaf(changes) => {
                let bytes: usize = changes.iter().map(encoded).sum();
                let biggest = changes.iter().map(encoded).max().unwrap_or(0);
                assert!(bytes < SMALL.leaf_max + biggest, "{bytes}");
                if Some(*id) != last_leaf {
                    assert!(bytes >= SMALL.leaf_min, "{bytes}");
                }
            }
            Chunk::Node { level, children } => {
                assert!(children.len() <= SMALL.node_max);
                children_per_level
                    .entry(*level)
                    .or_default()
                    .push(children.len());
            }
        }
    }
    // At most one chunk per level (the last) is under the minimum.
    for (level, sizes) in children_per_level {
        let small = sizes.iter().filter(|n| **n < SMALL.node_min).count();
        assert!(small <= 1, "level {level}: {sizes:?}");
    }
}

#[test]
fn a_degenerate_stream_cannot_make_huge_or_tiny_chunks() {
    // No content boundary ever (target beyond reach): leaves close at the maximum.
    let never = Params {
        leaf_target: usize::MAX,
        node_target: usize::MAX / 2,
        ..SMALL
    };
    let t = build(never, entries(5_000));
    for c in t.chunks.values() {
        match c {
            Chunk::Leaf(changes) => {
                let bytes: usize = changes.iter().map(encoded).sum();
                assert!(bytes < never.leaf_max + 100, "{bytes}");
            }
            Chunk::Node { children, .. } => assert!(children.len() <= never.node_max),
        }
    }
    assert_eq!(read(&t), entries(5_000));
    // A boundary after every entry (target 1 byte): leaves still reach the minimum.
    let always = Params {
        leaf_target: 1,
        node_target: 1,
        ..SMALL
    };
    let t = build(always, entries(2_000));
    let leaves: Vec<usize> = t
        .chunks
        .values()
        .filter_map(|c| match c {
            Chunk::Leaf(changes) => Some(changes.iter().map(encoded).sum()),
            _ => None,
        })
        .collect();
    assert!(
        leaves.iter().filter(|b| **b < always.leaf_min).count() <= 1,
        "{leaves:?}"
    );
    // Entries larger than the maximum: one leaf each.
    let big: Vec<Change> = (0..10u64)
        .map(|i| {
            let mut c = entry(i, i + 1);
            if let EntryKey::Object { key, .. } = &mut c.key {
                key.push_str(&"x".repeat(5_000));
            }
            c
        })
        .collect();
    let t = build(SMALL, big.clone());
    assert_eq!(
        t.chunks
            .values()
            .filter(|c| matches!(c, Chunk::Leaf(_)))
            .count(),
        10
    );
    assert_eq!(read(&t), big);
}

#[test]
fn a_chunk_that_is_not_what_its_reference_says_is_refused() {
    let t = build(SMALL, entries(3_000));
    let (level, root) = t.root.clone();
    let Chunk::Node { children, .. } = &t.chunks[&root.id] else {
        panic!("a node")
    };
    let leafish = &children[0];
    // A leaf whose content changed.
    let leaf_id = t
        .chunks
        .iter()
        .find_map(|(id, c)| matches!(c, Chunk::Leaf(_)).then_some(*id))
        .unwrap();
    let Chunk::Leaf(mut changes) = t.chunks[&leaf_id].clone() else {
        unreachable!()
    };
    let n = changes.len() as u64;
    changes[0].version.hlc = Hlc(999_999);
    assert!(matches!(
        verify(&key(), &leaf_id, 0, n, &Chunk::<()>::Leaf(changes)),
        Err(TreeError::WrongId { expected, .. }) if expected == leaf_id
    ));
    // Another authentic chunk in its place.
    assert!(matches!(
        verify(
            &key(),
            &leafish.id,
            level - 1,
            leafish.entries,
            &t.chunks[&leaf_id]
        ),
        Err(TreeError::WrongLevel { .. } | TreeError::WrongId { .. })
    ));
    // The right chunk, a wrong count or level in the reference.
    let root_chunk = &t.chunks[&root.id];
    assert!(matches!(
        verify(&key(), &root.id, level, root.entries + 1, root_chunk),
        Err(TreeError::WrongCount { .. })
    ));
    assert!(matches!(
        verify(&key(), &root.id, level + 1, root.entries, root_chunk),
        Err(TreeError::WrongLevel { .. })
    ));
    assert!(matches!(
        verify(&key(), &root.id, MAX_DEPTH + 1, root.entries, root_chunk),
        Err(TreeError::TooDeep { .. })
    ));
    // Counts over the bounds, and an interior chunk without children.
    let wide: Chunk<()> = Chunk::Node {
        level: 1,
        children: (0..=MAX_CHILDREN)
            .map(|_| Child {
                id: leaf_id,
                entries: 1,
                at: (),
            })
            .collect(),
    };
    let id = chunk_id(&key(), &wide).unwrap();
    assert!(matches!(
        verify(&key(), &id, 1, wide.entries(), &wide),
        Err(TreeError::TooMany {
            what: "children",
            ..
        })
    ));
    let many: Chunk<()> = Chunk::Leaf(entries(MAX_LEAF_ENTRIES as u64 + 1));
    assert!(matches!(
        verify(&key(), &leaf_id, 0, 0, &many),
        Err(TreeError::TooMany {
            what: "entries",
            ..
        })
    ));
    let empty: Chunk<()> = Chunk::Node {
        level: 1,
        children: vec![],
    };
    let id = chunk_id(&key(), &empty).unwrap();
    assert!(matches!(
        verify(&key(), &id, 1, 0, &empty),
        Err(TreeError::Empty { .. })
    ));
    // Saturating counts: a hostile reference cannot overflow the sum.
    let huge: Chunk<()> = Chunk::Node {
        level: 1,
        children: vec![
            Child {
                id: leaf_id,
                entries: u64::MAX,
                at: (),
            };
            2
        ],
    };
    assert_eq!(huge.entries(), u64::MAX);
}

#[test]
fn the_builder_refuses_to_be_used_out_of_order() {
    let mut b = Builder::<()>::new(key(), SMALL);
    assert!(matches!(b.attach(()), Err(TreeError::Misuse(_))));
    let mut i = 0;
    let taken = loop {
        b.push(entry(i, 1)).unwrap();
        i += 1;
        if let Some(s) = b.take() {
            break s;
        }
    };
    // A chunk is taken: no push until it is attached.
    assert!(matches!(b.push(entry(i, 1)), Err(TreeError::Misuse(_))));
    b.attach(()).unwrap();
    b.push(entry(i, 1)).unwrap();
    assert!(taken.entries > 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn any_sorted_stream_round_trips_and_is_deterministic(
        keys in proptest::collection::btree_set(0u64..100_000, 0..1500),
        big in proptest::collection::vec(0usize..300, 0..50),
    ) {
        let list: Vec<Change> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let mut c = entry(*k, *k + 1);
                if let (Some(extra), EntryKey::Object { key, .. }) = (big.get(i), &mut c.key) {
                    key.push_str(&"y".repeat(*extra));
                }
                c
            })
            .collect();
        let t = build(SMALL, list.clone());
        prop_assert_eq!(read(&t), list.clone());
        let again = build(SMALL, list);
        prop_assert_eq!(t.root, again.root);
    }
}
