//! Membership sampler: the node list uplinks choose storage nodes from.
//!
//! Choosing "the nodes closest to a random id" is biased (nodes behind large gaps in the
//! id space are picked far more often) and lets an attacker who places ids win
//! placements. Instead the driver crawls the DHT at a bounded rate, recording every node
//! it learns of here; [`Membership::next_to_crawl`] hands out the member contacted least
//! recently, so over time every member is asked and its liveness is known. A sample picks
//! subnets uniformly at random, then one random live member within each chosen /24
//! (/48), among members with enough free space: a subnet full of Sybils weighs no more
//! than one honest node.

use std::collections::HashMap;

use rand::Rng;
use rand::RngExt;
use rand::seq::SliceRandom;
use shoal_proto::NodeId;

use super::key::Subnet;
use super::lookup::PeerData;

/// Sampler bounds.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// Members remembered at most. Default 100,000.
    pub max_members: usize,
    /// A member that has not answered for this long is dropped (ms). Default 2 hours.
    pub ttl_ms: u64,
    /// Consecutive failed contacts after which a member is dropped. Default 3.
    pub max_failures: u32,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            max_members: 100_000,
            ttl_ms: 2 * 3600 * 1000,
            max_failures: 3,
        }
    }
}

/// One known node.
#[derive(Debug, Clone)]
pub struct Member<T> {
    pub id: NodeId,
    pub subnet: Subnet,
    pub free_space: u64,
    pub data: T,
    /// When the node last answered us (caller ms); `None` if only heard of.
    pub last_seen: Option<u64>,
    pub learned_at: u64,
    pub last_contacted: Option<u64>,
    pub failures: u32,
}

/// The crawled membership list.
#[derive(Debug)]
pub struct Membership<T> {
    cfg: MembershipConfig,
    members: HashMap<NodeId, Member<T>>,
}

impl<T: PeerData> Membership<T> {
    pub fn new(cfg: MembershipConfig) -> Self {
        Self {
            cfg,
            members: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn get(&self, id: &NodeId) -> Option<&Member<T>> {
        self.members.get(id)
    }

    /// Learned of a node (from someone's answer). Newer data replaces older.
    pub fn observe(&mut self, id: NodeId, subnet: Subnet, free_space: u64, data: T, now: u64) {
        match self.members.get_mut(&id) {
            Some(m) => {
                if data.newer_than(&m.data) {
                    m.data = data;
                    m.subnet = subnet;
                    m.free_space = free_space;
                }
            }
            None => {
                if self.members.len() >= self.cfg.max_members {
                    return;
                }
                self.members.insert(
                    id,
                    Member {
                        id,
                        subnet,
                        free_space,
                        data,
                        last_seen: None,
                        learned_at: now,
                        last_contacted: None,
                        failures: 0,
                    },
                );
            }
        }
    }

    /// The node answered us directly.
    pub fn on_answer(&mut self, id: NodeId, subnet: Subnet, free_space: u64, data: T, now: u64) {
        self.observe(id, subnet, free_space, data, now);
        if let Some(m) = self.members.get_mut(&id) {
            m.last_seen = Some(now);
            m.failures = 0;
        }
    }

    /// A contact failed; the member is dropped after `max_failures` in a row.
    pub fn on_failure(&mut self, id: &NodeId) {
        if let Some(m) = self.members.get_mut(id) {
            m.failures += 1;
            if m.failures >= self.cfg.max_failures {
                self.members.remove(id);
            }
        }
    }

    /// The member to contact next (least recently contacted, never-contacted first);
    /// marks it contacted at `now`.
    pub fn next_to_crawl(&mut self, now: u64) -> Option<(NodeId, T)> {
        let m = self
            .members
            .values_mut()
            .min_by_key(|m| (m.last_contacted.map_or(0, |t| t + 1), m.learned_at))?;
        m.last_contacted = Some(now);
        Some((m.id, m.data.clone()))
    }

    /// Drops members not heard from within the ttl.
    pub fn expire(&mut self, now: u64) {
        let ttl = self.cfg.ttl_ms;
        self.members
            .retain(|_, m| m.last_seen.unwrap_or(m.learned_at).saturating_add(ttl) > now);
    }

    /// Up to `n` members, at most one per subnet, each of which answered within
    /// `max_age_ms` and advertises at least `min_free_space`; subnets are chosen uniformly
    /// at random, then one member uniformly within each.
    pub fn sample<R: Rng + ?Sized>(
        &self,
        n: usize,
        min_free_space: u64,
        max_age_ms: u64,
        now: u64,
        rng: &mut R,
    ) -> Vec<&Member<T>> {
        sample(
            self.members.values(),
            n,
            min_free_space,
            max_age_ms,
            now,
            rng,
        )
    }

    /// Every member, for listing.
    pub fn iter(&self) -> impl Iterator<Item = &Member<T>> {
        self.members.values()
    }
}

/// [`Membership::sample`] over a copy of the members (the driver's getters read one).
pub fn sample<'a, T, R: Rng + ?Sized>(
    members: impl IntoIterator<Item = &'a Member<T>>,
    n: usize,
    min_free_space: u64,
    max_age_ms: u64,
    now: u64,
    rng: &mut R,
) -> Vec<&'a Member<T>> {
    let mut by_subnet: HashMap<Subnet, Vec<&Member<T>>> = HashMap::new();
    for m in members {
        let fresh = m
            .last_seen
            .is_some_and(|t| t.saturating_add(max_age_ms) >= now);
        if fresh && m.free_space >= min_free_space {
            by_subnet.entry(m.subnet).or_default().push(m);
        }
    }
    let mut groups: Vec<Vec<&Member<T>>> = by_subnet.into_values().collect();
    // Deterministic order before shuffling, so a seeded rng gives a repeatable sample.
    groups.iter_mut().for_each(|g| g.sort_by_key(|m| m.id));
    groups.sort_by_key(|g| g[0].id);
    groups.shuffle(rng);
    groups
        .into_iter()
        .take(n)
        .map(|g| g[rng.random_range(0..g.len())])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;
    use std::collections::HashSet;
    use std::net::IpAddr;

    fn subnet(a: u8, b: u8) -> Subnet {
        Subnet::of(&IpAddr::from([10, a, b, 1]))
    }

    #[test]
    fn one_per_subnet_filtered_by_space_and_liveness() {
        let mut m: Membership<()> = Membership::new(MembershipConfig::default());
        let mut rng = SmallRng::seed_from_u64(1);
        // 50 Sybils in one /24, 10 honest nodes in their own /24s, 5 full, 5 never seen.
        for i in 0..50u8 {
            m.on_answer(NodeId([i; 32]), subnet(1, 1), 1 << 40, (), 100);
        }
        for i in 0..10u8 {
            m.on_answer(NodeId([100 + i; 32]), subnet(2, i), 1 << 40, (), 100);
        }
        for i in 0..5u8 {
            m.on_answer(NodeId([200 + i; 32]), subnet(3, i), 10, (), 100);
            m.observe(NodeId([220 + i; 32]), subnet(4, i), 1 << 40, (), 100);
        }
        let mut sybil_picks = 0;
        for _ in 0..200 {
            let s = m.sample(100, 1 << 30, 1000, 200, &mut rng);
            assert_eq!(s.len(), 11);
            let subnets: HashSet<_> = s.iter().map(|x| x.subnet).collect();
            assert_eq!(subnets.len(), s.len());
            sybil_picks += s.iter().filter(|x| x.subnet == subnet(1, 1)).count();
            let s = m.sample(3, 1 << 30, 1000, 200, &mut rng);
            assert_eq!(s.len(), 3);
            assert!(
                s.iter()
                    .all(|x| x.free_space >= 1 << 30 && x.last_seen.is_some())
            );
        }
        assert_eq!(sybil_picks, 200);
        // Too old: nothing.
        assert!(m.sample(10, 0, 50, 200, &mut rng).is_empty());
    }

    #[test]
    fn sample_is_uniform_over_subnets() {
        let mut m: Membership<()> = Membership::new(MembershipConfig::default());
        for i in 0..20u8 {
            m.on_answer(NodeId([i; 32]), subnet(5, i), 1, (), 0);
        }
        let mut rng = SmallRng::seed_from_u64(2);
        let mut counts = [0u32; 20];
        for _ in 0..20_000 {
            for x in m.sample(1, 0, 10, 0, &mut rng) {
                counts[usize::from(x.id.0[0])] += 1;
            }
        }
        // Expected 1000 each; 5 sigma is about 160.
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    }

    #[test]
    fn crawl_order_failures_expiry_and_bound() {
        let mut m: Membership<()> = Membership::new(MembershipConfig {
            max_members: 3,
            ttl_ms: 100,
            max_failures: 2,
        });
        m.observe(NodeId([1; 32]), subnet(0, 1), 0, (), 0);
        m.observe(NodeId([2; 32]), subnet(0, 2), 0, (), 1);
        m.observe(NodeId([3; 32]), subnet(0, 3), 0, (), 2);
        m.observe(NodeId([4; 32]), subnet(0, 4), 0, (), 3);
        assert_eq!(m.len(), 3, "bounded");
        let a = m.next_to_crawl(10).unwrap().0;
        let b = m.next_to_crawl(11).unwrap().0;
        let c = m.next_to_crawl(12).unwrap().0;
        let set: HashSet<_> = [a, b, c].into();
        assert_eq!(set.len(), 3, "each member crawled before any twice");
        assert_eq!(m.next_to_crawl(13).unwrap().0, a);
        m.on_failure(&b);
        m.on_failure(&b);
        assert!(m.get(&b).is_none());
        m.on_answer(a, subnet(0, 1), 0, (), 50);
        m.expire(120);
        assert!(m.get(&a).is_some());
        assert!(m.get(&c).is_none());
    }
}
