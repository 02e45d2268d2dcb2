//! The Kademlia routing table: 256 buckets of `k` nodes over XOR distance.
//!
//! Rules that answer Storj's Sybil problem:
//! - Only nodes that have answered us are inserted (the caller calls [`RoutingTable::observe`]
//!   after a response, or after dialling a claimed address back); only entries without
//!   recent failures are handed to others ([`RoutingTable::closest`] with `only_live`).
//! - A responsive node is never evicted for a newcomer: a full bucket puts the newcomer in
//!   a replacement cache and asks the caller to check the least recently seen entry; only
//!   when that entry fails does a replacement take its place.
//! - At most `per_subnet_bucket` nodes of one IPv4 /24 (IPv6 /48) per bucket and
//!   `per_subnet_table` per table, so one network cannot fill a table.
//!
//! Time is a caller-supplied millisecond counter; the table never reads a clock.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use shoal_proto::NodeId;

use super::key::{Distance, Subnet, bucket_index, distance};

/// Routing table parameters.
#[derive(Debug, Clone)]
pub struct TableConfig {
    /// Nodes per bucket (Kademlia's k). Default 20.
    pub k: usize,
    /// Nodes of one /24 (/48) per bucket. Default 2.
    pub per_subnet_bucket: usize,
    /// Nodes of one /24 (/48) per table. Default 10.
    pub per_subnet_table: usize,
    /// Replacement-cache entries per bucket. Default 8.
    pub replacements: usize,
    /// Consecutive failures after which an entry is dropped. Default 2.
    pub max_failures: u32,
    /// A full bucket asks for a liveness check of its least recently seen entry only if
    /// that entry has not answered for this long (ms). Default 60 s.
    pub recheck_after_ms: u64,
}

impl Default for TableConfig {
    fn default() -> Self {
        Self {
            k: 20,
            per_subnet_bucket: 2,
            per_subnet_table: 10,
            replacements: 8,
            max_failures: 2,
            recheck_after_ms: 60_000,
        }
    }
}

/// One node in the table.
#[derive(Debug, Clone)]
pub struct Entry<T> {
    pub id: NodeId,
    pub subnet: Subnet,
    /// What the caller keeps with the node (the driver: its signed record).
    pub data: T,
    /// When the node last answered us (caller's milliseconds).
    pub last_seen: u64,
    /// Consecutive failed requests since it last answered.
    pub failures: u32,
}

#[derive(Debug)]
struct Bucket<T> {
    /// Least recently seen first.
    nodes: Vec<Entry<T>>,
    /// Most recently seen last.
    replacements: Vec<Entry<T>>,
    last_refresh: u64,
}

impl<T> Bucket<T> {
    fn new(now: u64) -> Self {
        Self {
            nodes: Vec::new(),
            replacements: Vec::new(),
            last_refresh: now,
        }
    }
}

/// What [`RoutingTable::observe`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Insert {
    /// New entry in its bucket.
    Added,
    /// Already present: refreshed (data, last seen, failures reset).
    Updated,
    /// Bucket full: kept in the replacement cache. If `check` is set, the caller should
    /// ping it (the least recently seen entry, silent for `recheck_after_ms`) and report
    /// the outcome; a failure makes room.
    Pending { check: Option<NodeId> },
    /// Refused: the bucket already holds `per_subnet_bucket` nodes of this subnet.
    SubnetBucketFull,
    /// Refused: the table already holds `per_subnet_table` nodes of this subnet.
    SubnetTableFull,
    /// Refused: that is our own id.
    Local,
}

/// Routing table of one node.
#[derive(Debug)]
pub struct RoutingTable<T> {
    local: NodeId,
    cfg: TableConfig,
    buckets: BTreeMap<u8, Bucket<T>>,
    len: usize,
    /// Nodes in buckets per subnet (replacements not counted), kept on every insert and
    /// removal so that the per-table limit is checked without a walk over the table.
    subnets: HashMap<Subnet, usize>,
}

impl<T: Clone> RoutingTable<T> {
    pub fn new(local: NodeId, cfg: TableConfig) -> Self {
        Self {
            local,
            cfg,
            buckets: BTreeMap::new(),
            len: 0,
            subnets: HashMap::new(),
        }
    }

    pub fn local(&self) -> &NodeId {
        &self.local
    }

    pub fn config(&self) -> &TableConfig {
        &self.cfg
    }

    /// Number of nodes in buckets (replacements not counted).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, id: &NodeId) -> Option<&Entry<T>> {
        let b = bucket_index(&self.local, id)?;
        self.buckets
            .get(&(b as u8))?
            .nodes
            .iter()
            .find(|e| e.id == *id)
    }

    /// The entry of `id` in its bucket or in the replacement cache: a node that answered
    /// us recently, whether or not there was room for it.
    pub fn get_any(&self, id: &NodeId) -> Option<&Entry<T>> {
        let b = bucket_index(&self.local, id)?;
        let bucket = self.buckets.get(&(b as u8))?;
        bucket
            .nodes
            .iter()
            .chain(bucket.replacements.iter())
            .find(|e| e.id == *id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Entry<T>> {
        self.buckets.values().flat_map(|b| b.nodes.iter())
    }

    fn subnet_count_table(&self, subnet: Subnet) -> usize {
        self.subnets.get(&subnet).copied().unwrap_or(0)
    }

    /// Counts a node of `subnet` that entered a bucket.
    fn count_in(subnets: &mut HashMap<Subnet, usize>, subnet: Subnet) {
        *subnets.entry(subnet).or_insert(0) += 1;
    }

    /// Uncounts a node of `subnet` that left a bucket.
    fn count_out(subnets: &mut HashMap<Subnet, usize>, subnet: Subnet) {
        if let Some(n) = subnets.get_mut(&subnet) {
            *n -= 1;
            if *n == 0 {
                subnets.remove(&subnet);
            }
        }
    }

    /// Records that `id` answered us at an address in `subnet`, carrying `data`.
    pub fn observe(&mut self, id: NodeId, subnet: Subnet, data: T, now: u64) -> Insert {
        let Some(b) = bucket_index(&self.local, &id) else {
            return Insert::Local;
        };
        let b = b as u8;
        // Present already: refresh in place, unless it moved to another subnet, in which
        // case it is re-admitted under the limits like a newcomer.
        if let Some(bucket) = self.buckets.get_mut(&b)
            && let Some(pos) = bucket.nodes.iter().position(|e| e.id == id)
        {
            if bucket.nodes[pos].subnet == subnet {
                let mut e = bucket.nodes.remove(pos);
                e.data = data;
                e.last_seen = now;
                e.failures = 0;
                bucket.nodes.push(e);
                return Insert::Updated;
            }
            let old = bucket.nodes.remove(pos);
            self.len -= 1;
            Self::count_out(&mut self.subnets, old.subnet);
        }
        let table_count = self.subnet_count_table(subnet);
        let cfg = self.cfg.clone();
        let bucket = self.buckets.entry(b).or_insert_with(|| Bucket::new(now));
        let bucket_count = bucket.nodes.iter().filter(|e| e.subnet == subnet).count();
        if bucket_count >= cfg.per_subnet_bucket {
            return Insert::SubnetBucketFull;
        }
        if table_count >= cfg.per_subnet_table {
            return Insert::SubnetTableFull;
        }
        let entry = Entry {
            id,
            subnet,
            data,
            last_seen: now,
            failures: 0,
        };
        if bucket.nodes.len() < cfg.k {
            bucket.replacements.retain(|e| e.id != id);
            bucket.nodes.push(entry);
            self.len += 1;
            Self::count_in(&mut self.subnets, subnet);
            return Insert::Added;
        }
        bucket.replacements.retain(|e| e.id != id);
        if cfg.replacements > 0 {
            if bucket.replacements.len() >= cfg.replacements {
                bucket.replacements.remove(0);
            }
            bucket.replacements.push(entry);
        }
        let check = bucket
            .nodes
            .first()
            .filter(|e| e.last_seen.saturating_add(cfg.recheck_after_ms) <= now)
            .map(|e| e.id);
        Insert::Pending { check }
    }

    /// What [`RoutingTable::observe`] would do with a newcomer, without changing
    /// anything: `None` if it would be added (or could be, after a liveness check), else
    /// the refusal. Lets a caller skip dialling back a node it would not insert.
    pub fn precheck(&self, id: &NodeId, subnet: Subnet, now: u64) -> Option<Insert> {
        let Some(b) = bucket_index(&self.local, id) else {
            return Some(Insert::Local);
        };
        let Some(bucket) = self.buckets.get(&(b as u8)) else {
            return (self.subnet_count_table(subnet) >= self.cfg.per_subnet_table)
                .then_some(Insert::SubnetTableFull);
        };
        if bucket.nodes.iter().any(|e| e.id == *id) {
            return None;
        }
        if bucket.nodes.iter().filter(|e| e.subnet == subnet).count() >= self.cfg.per_subnet_bucket
        {
            return Some(Insert::SubnetBucketFull);
        }
        if self.subnet_count_table(subnet) >= self.cfg.per_subnet_table {
            return Some(Insert::SubnetTableFull);
        }
        let full = bucket.nodes.len() >= self.cfg.k;
        let lrs_fresh = bucket
            .nodes
            .first()
            .is_some_and(|e| e.last_seen.saturating_add(self.cfg.recheck_after_ms) > now);
        (full && lrs_fresh).then_some(Insert::Pending { check: None })
    }

    /// Records that a request to `id` failed. Returns true if the entry was dropped: after
    /// `max_failures` in a row, and only when a cached replacement is there to take its
    /// place. Without one the entry stays, flagged (not handed to others, see
    /// [`RoutingTable::closest`]), as in Kademlia (§4.1): a node whose own link went down,
    /// or that was starved of CPU while its requests timed out, must not void its whole
    /// table and be left with nobody to ask when it comes back. It leaves when it answers
    /// no liveness check while a newcomer waits for its place.
    pub fn on_failure(&mut self, id: &NodeId) -> bool {
        let Some(b) = bucket_index(&self.local, id) else {
            return false;
        };
        let max = self.cfg.max_failures;
        let Some(bucket) = self.buckets.get_mut(&(b as u8)) else {
            return false;
        };
        let Some(pos) = bucket.nodes.iter().position(|e| e.id == *id) else {
            bucket.replacements.retain(|e| e.id != *id);
            return false;
        };
        bucket.nodes[pos].failures += 1;
        if bucket.nodes[pos].failures < max || bucket.replacements.is_empty() {
            return false;
        }
        self.remove(id);
        true
    }

    /// Whether a replacement waits in the bucket `id` falls in.
    pub fn replacement_waiting(&self, id: &NodeId) -> bool {
        bucket_index(&self.local, id)
            .and_then(|b| self.buckets.get(&(b as u8)))
            .is_some_and(|b| !b.replacements.is_empty())
    }

    /// Drops `id` and promotes the most recent replacement that fits the subnet limits.
    pub fn remove(&mut self, id: &NodeId) -> Option<Entry<T>> {
        let b = bucket_index(&self.local, id)? as u8;
        let bucket = self.buckets.get_mut(&b)?;
        let pos = bucket.nodes.iter().position(|e| e.id == *id)?;
        let removed = bucket.nodes.remove(pos);
        self.len -= 1;
        Self::count_out(&mut self.subnets, removed.subnet);
        while let Some(candidate) = self.buckets.get_mut(&b).and_then(|b| b.replacements.pop()) {
            let table_count = self.subnet_count_table(candidate.subnet);
            let Some(bucket) = self.buckets.get_mut(&b) else {
                break;
            };
            let bucket_count = bucket
                .nodes
                .iter()
                .filter(|e| e.subnet == candidate.subnet)
                .count();
            if bucket_count < self.cfg.per_subnet_bucket && table_count < self.cfg.per_subnet_table
            {
                Self::count_in(&mut self.subnets, candidate.subnet);
                bucket.nodes.push(candidate);
                self.len += 1;
                break;
            }
        }
        Some(removed)
    }

    /// The `n` entries closest to `target`, nearest first. With `only_live`, entries that
    /// failed since they last answered are left out (they are not handed to others).
    ///
    /// Only the buckets that can hold them are read: the buckets fall into tiers such
    /// that every entry of one tier is nearer to `target` than every entry of the next,
    /// and tiers are read until `n` entries were gathered. With `b` the bucket of
    /// `target` (the highest bit where it differs from our id), an entry of bucket `b`
    /// shares that bit with `target` (distance below 2^b); an entry of a lower bucket
    /// agrees with our id there (distance in [2^b, 2^(b+1))); an entry of a bucket
    /// `i > b` differs from `target` first at bit `i`. For our own id, bucket `i` is
    /// the tier at distance [2^i, 2^(i+1)).
    pub fn closest<'a>(
        &'a self,
        target: &[u8; 32],
        n: usize,
        only_live: bool,
    ) -> Vec<&'a Entry<T>> {
        let mut all: Vec<(Distance, &'a Entry<T>)> = Vec::new();
        if n == 0 {
            return Vec::new();
        }
        let take = |bucket: &'a Bucket<T>, all: &mut Vec<(Distance, &'a Entry<T>)>| {
            all.extend(
                bucket
                    .nodes
                    .iter()
                    .filter(|e| !only_live || e.failures == 0)
                    .map(|e| (distance(target, &e.id), e)),
            );
        };
        match bucket_index(&self.local, &NodeId(*target)) {
            Some(b) => {
                let b = b as u8;
                if let Some(bucket) = self.buckets.get(&b) {
                    take(bucket, &mut all);
                }
                if all.len() < n {
                    for bucket in self.buckets.range(..b).map(|(_, v)| v) {
                        take(bucket, &mut all);
                    }
                }
                for bucket in self
                    .buckets
                    .range((Bound::Excluded(b), Bound::Unbounded))
                    .map(|(_, v)| v)
                {
                    if all.len() >= n {
                        break;
                    }
                    take(bucket, &mut all);
                }
            }
            None => {
                for bucket in self.buckets.values() {
                    if all.len() >= n {
                        break;
                    }
                    take(bucket, &mut all);
                }
            }
        }
        if all.len() > n {
            all.select_nth_unstable_by(n - 1, |a, b| a.0.cmp(&b.0));
            all.truncate(n);
        }
        all.sort_unstable_by_key(|a| a.0);
        all.into_iter().map(|(_, e)| e).collect()
    }

    /// Buckets worth refreshing: every bucket from the farthest down to one below the
    /// nearest non-empty one, not looked up within `interval`.
    pub fn refresh_due(&self, now: u64, interval: u64) -> Vec<usize> {
        let Some(&lowest) = self
            .buckets
            .iter()
            .find(|(_, b)| !b.nodes.is_empty())
            .map(|(i, _)| i)
        else {
            return Vec::new();
        };
        (usize::from(lowest.saturating_sub(1))..256)
            .filter(|i| match self.buckets.get(&(*i as u8)) {
                Some(b) => b.last_refresh.saturating_add(interval) <= now,
                None => true,
            })
            .collect()
    }

    /// Notes that a lookup covered the bucket of `target`.
    pub fn mark_refreshed(&mut self, target: &[u8; 32], now: u64) {
        if let Some(b) = bucket_index(&self.local, &NodeId(*target)) {
            self.buckets
                .entry(b as u8)
                .or_insert_with(|| Bucket::new(now))
                .last_refresh = now;
        }
    }

    /// Entries that have not answered for `max_age`: candidates for a liveness check.
    pub fn stale(&self, now: u64, max_age: u64) -> Vec<NodeId> {
        self.iter()
            .filter(|e| e.last_seen.saturating_add(max_age) <= now)
            .map(|e| e.id)
            .collect()
    }

    /// Number of non-empty buckets.
    pub fn bucket_count(&self) -> usize {
        self.buckets
            .values()
            .filter(|b| !b.nodes.is_empty())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn id(b: u8, tail: u8) -> NodeId {
        let mut x = [0u8; 32];
        x[0] = b;
        x[31] = tail;
        NodeId(x)
    }

    fn subnet(n: u32) -> Subnet {
        let ip: IpAddr = format!("10.{}.{}.1", n / 256, n % 256).parse().unwrap();
        Subnet::of(&ip)
    }

    fn table() -> RoutingTable<()> {
        RoutingTable::new(NodeId([0; 32]), TableConfig::default())
    }

    #[test]
    fn a_table_whose_every_entry_failed_keeps_them_flagged_until_a_replacement_comes() {
        let mut t = table();
        for i in 0..3u8 {
            t.observe(id(0x80, i), subnet(u32::from(i)), (), 1);
        }
        // Every request fails (our own link is down): nothing is dropped, since nothing
        // could take their place, but none is handed to others.
        for _ in 0..5 {
            for i in 0..3u8 {
                assert!(!t.on_failure(&id(0x80, i)));
            }
        }
        assert_eq!(t.len(), 3);
        assert!(t.closest(&id(0x80, 0).0, 20, true).is_empty());
        assert_eq!(t.closest(&id(0x80, 0).0, 20, false).len(), 3);
        // One answers again: live again.
        assert_eq!(t.observe(id(0x80, 1), subnet(1), (), 2), Insert::Updated);
        assert_eq!(t.closest(&id(0x80, 0).0, 20, true).len(), 1);
        // A full bucket of stale entries: a newcomer waits, the check of the oldest
        // fails, and the newcomer takes its place.
        for i in 3..20u8 {
            t.observe(id(0x80, i), subnet(u32::from(i)), (), 3);
        }
        let newcomer = id(0x80, 100);
        assert_eq!(
            t.observe(newcomer, subnet(100), (), 70_000),
            Insert::Pending {
                check: Some(id(0x80, 0))
            }
        );
        assert!(t.replacement_waiting(&id(0x80, 0)));
        assert!(t.on_failure(&id(0x80, 0)));
        assert!(t.get(&newcomer).is_some());
        assert!(t.get(&id(0x80, 0)).is_none());
    }

    #[test]
    fn full_bucket_keeps_responsive_nodes_and_caches_newcomers() {
        let mut t = table();
        // Bucket 255: first bit set.
        for i in 0..20u8 {
            assert_eq!(
                t.observe(id(0x80, i), subnet(u32::from(i)), (), 1),
                Insert::Added
            );
        }
        let newcomer = id(0x80, 100);
        assert_eq!(
            t.observe(newcomer, subnet(100), (), 2),
            Insert::Pending { check: None },
            "the oldest answered recently: no check"
        );
        assert_eq!(
            t.observe(newcomer, subnet(100), (), 60_001),
            Insert::Pending {
                check: Some(id(0x80, 0))
            }
        );
        assert!(t.get(&newcomer).is_none());
        assert!(
            t.get_any(&newcomer).is_some(),
            "kept in the replacement cache"
        );
        // The oldest answers the check: nobody is evicted.
        assert_eq!(
            t.observe(id(0x80, 0), subnet(0), (), 60_002),
            Insert::Updated
        );
        assert!(t.get(&newcomer).is_none());
        assert_eq!(t.len(), 20);
        // The next-oldest fails twice: the replacement takes its place.
        assert!(!t.on_failure(&id(0x80, 1)));
        // Not handed to others while it has failures.
        assert!(
            t.closest(&id(0x80, 1).0, 20, true)
                .iter()
                .all(|e| e.id != id(0x80, 1))
        );
        assert!(t.on_failure(&id(0x80, 1)));
        assert!(t.get(&newcomer).is_some());
        assert_eq!(t.len(), 20);
    }

    #[test]
    fn subnet_limits_per_bucket_and_table() {
        let mut t = table();
        let s = subnet(7);
        assert_eq!(t.observe(id(0x80, 1), s, (), 1), Insert::Added);
        assert_eq!(t.observe(id(0x80, 2), s, (), 1), Insert::Added);
        assert_eq!(
            t.precheck(&id(0x80, 3), s, 1),
            Some(Insert::SubnetBucketFull)
        );
        assert_eq!(t.observe(id(0x80, 3), s, (), 1), Insert::SubnetBucketFull);
        assert_eq!(t.precheck(&id(0x80, 3), subnet(8), 1), None);
        // Other buckets accept until the table holds 10 of the subnet.
        let mut added = 2;
        for b in 0..8u8 {
            for tail in 0..3u8 {
                let first = 0x40 >> b;
                if t.observe(id(first, tail), s, (), 1) == Insert::Added {
                    added += 1;
                }
            }
        }
        assert_eq!(added, 10);
        assert_eq!(
            t.precheck(&id(0x01, 9), s, 1),
            Some(Insert::SubnetTableFull)
        );
        assert_eq!(t.observe(id(0x01, 9), s, (), 1), Insert::SubnetTableFull);
        assert_eq!(t.iter().filter(|e| e.subnet == s).count(), 10);
        assert_eq!(t.observe(NodeId([0; 32]), s, (), 1), Insert::Local);
    }

    #[test]
    fn closest_is_sorted_and_bounded() {
        let mut t = table();
        for i in 0..200u32 {
            let mut x: [u8; 32] = [0; 32];
            x[..4].copy_from_slice(&(i.wrapping_mul(2_654_435_761)).to_be_bytes());
            t.observe(NodeId(x), subnet(i), (), 1);
        }
        let target = [0x33; 32];
        let c = t.closest(&target, 20, true);
        assert_eq!(c.len(), 20);
        for w in c.windows(2) {
            assert!(distance(&target, &w[0].id) < distance(&target, &w[1].id));
        }
        let best = t.iter().map(|e| distance(&target, &e.id)).min().unwrap();
        assert_eq!(distance(&target, &c[0].id), best);
    }

    #[test]
    fn refresh_and_staleness() {
        let mut t = table();
        t.observe(id(0x80, 1), subnet(1), (), 0);
        assert!(t.refresh_due(10, 100).contains(&254));
        assert!(!t.refresh_due(10, 100).contains(&255));
        assert!(t.refresh_due(100, 100).contains(&255));
        t.mark_refreshed(&id(0x80, 9).0, 100);
        assert!(!t.refresh_due(150, 100).contains(&255));
        assert_eq!(t.stale(50, 50), vec![id(0x80, 1)]);
        assert!(t.stale(49, 50).is_empty());
    }
}

#[cfg(test)]
mod properties {
    //! Properties of the table under any sequence of observations, failures and removals.
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::net::IpAddr;

    #[derive(Debug, Clone)]
    enum Op {
        /// Node `n` answered at `subnet`, `dt` ms after the previous operation.
        Observe {
            n: u8,
            subnet: u8,
            dt: u16,
        },
        Fail {
            n: u8,
        },
        Remove {
            n: u8,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (any::<u8>(), 0u8..12, 0u16..40_000).prop_map(|(n, subnet, dt)| Op::Observe { n, subnet, dt }),
            2 => any::<u8>().prop_map(|n| Op::Fail { n }),
            1 => any::<u8>().prop_map(|n| Op::Remove { n }),
        ]
    }

    /// Node ids crowded into few buckets (first byte 0x80..0x83 or 0x40, 0x20) so that
    /// buckets fill and replacement caches are exercised.
    fn node(n: u8) -> NodeId {
        let mut x = [0u8; 32];
        x[0] = [0x80, 0x81, 0x82, 0x83, 0x40, 0x20][usize::from(n % 6)];
        x[1] = n;
        NodeId(x)
    }

    fn subnet(s: u8) -> Subnet {
        Subnet::of(&IpAddr::from([10, 0, s, 1]))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn limits_hold_and_responsive_nodes_are_never_evicted(
            ops in proptest::collection::vec(op(), 1..400),
            k in 2usize..8,
            per_bucket in 1usize..4,
            per_table in 1usize..12,
        ) {
            let cfg = TableConfig {
                k,
                per_subnet_bucket: per_bucket,
                per_subnet_table: per_table,
                replacements: 3,
                max_failures: 2,
                recheck_after_ms: 60_000,
            };
            let mut t: RoutingTable<u8> = RoutingTable::new(NodeId([0; 32]), cfg);
            let mut now = 0u64;
            // Consecutive failures of each node since it last answered.
            let mut failures: HashMap<NodeId, u32> = HashMap::new();
            for op in ops {
                let before: Vec<NodeId> = t.iter().map(|e| e.id).collect();
                let mut may_leave: Option<NodeId> = None;
                match op {
                    Op::Observe { n, subnet: s, dt } => {
                        now += u64::from(dt);
                        let id = node(n);
                        let moved = t.get(&id).is_some_and(|e| e.subnet != subnet(s));
                        if moved {
                            // Re-admitted under the limits like a newcomer: may drop out.
                            may_leave = Some(id);
                        }
                        t.observe(id, subnet(s), n, now);
                        failures.insert(id, 0);
                        // Whatever happened to the newcomer, a node in a bucket stays.
                    }
                    Op::Fail { n } => {
                        let id = node(n);
                        let in_bucket = t.get(&id).is_some();
                        let replacement = t.replacement_waiting(&id);
                        let dropped = t.on_failure(&id);
                        if in_bucket {
                            let f = failures.entry(id).or_insert(0);
                            *f += 1;
                            prop_assert_eq!(
                                dropped,
                                *f >= 2 && replacement,
                                "dropped only after 2 failures, for a replacement"
                            );
                            if dropped {
                                may_leave = Some(id);
                                failures.remove(&id);
                            }
                        } else {
                            prop_assert!(!dropped);
                        }
                    }
                    Op::Remove { n } => {
                        may_leave = Some(node(n));
                        t.remove(&node(n));
                    }
                }
                // A node in a bucket leaves only by its own failures, removal or a move.
                for id in before {
                    if Some(id) != may_leave {
                        prop_assert!(t.get(&id).is_some(), "{id} evicted");
                    }
                }
                // Bounds: k per bucket, subnet limits per bucket and per table.
                let mut per_b: HashMap<usize, usize> = HashMap::new();
                let mut per_bs: HashMap<(usize, Subnet), usize> = HashMap::new();
                let mut per_ts: HashMap<Subnet, usize> = HashMap::new();
                for e in t.iter() {
                    let b = crate::core::key::bucket_index(t.local(), &e.id).unwrap_or(0);
                    *per_b.entry(b).or_default() += 1;
                    *per_bs.entry((b, e.subnet)).or_default() += 1;
                    *per_ts.entry(e.subnet).or_default() += 1;
                }
                prop_assert!(per_b.values().all(|n| *n <= k), "bucket over k: {per_b:?}");
                prop_assert!(per_bs.values().all(|n| *n <= per_bucket), "subnet over its bucket limit");
                prop_assert!(per_ts.values().all(|n| *n <= per_table), "subnet over its table limit");
                prop_assert_eq!(t.len(), t.iter().count());
                for (s, n) in &per_ts {
                    prop_assert_eq!(t.subnet_count_table(*s), *n, "kept subnet count");
                }
                prop_assert_eq!(t.subnets.len(), per_ts.len(), "no stale subnet counts");
                // Live entries only are handed out, nearest first.
                let target = [0x81; 32];
                let c = t.closest(&target, k, true);
                // The same as sorting every entry, for targets in every tier.
                for target in [[0x81; 32], [0x00; 32], [0x40; 32], [0x83; 32], [0x20; 32]] {
                    for only_live in [true, false] {
                        for n in [0, 1, k, 3 * k] {
                            let mut brute: Vec<&Entry<u8>> = t.iter().filter(|e| !only_live || e.failures == 0).collect();
                            brute.sort_by_key(|e| distance(&target, &e.id));
                            brute.truncate(n);
                            let got: Vec<NodeId> = t.closest(&target, n, only_live).iter().map(|e| e.id).collect();
                            let want: Vec<NodeId> = brute.iter().map(|e| e.id).collect();
                            prop_assert_eq!(got, want);
                        }
                    }
                }
                prop_assert!(c.iter().all(|e| e.failures == 0));
                prop_assert!(c.windows(2).all(|w| distance(&target, &w[0].id) < distance(&target, &w[1].id)));
            }
        }
    }
}
