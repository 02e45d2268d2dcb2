//! The seen-set that makes every order work once (issue 13, item 5; shares: issue 27).
//!
//! An order is fresh from [`ORDER_WINDOW_MS`] behind the node's clock to
//! [`ORDER_MAX_AHEAD_MS`] ahead of it, so a captured order could be replayed for that
//! long: a download order to waste the node's bandwidth, an old delete order to remove a
//! re-upload. Every order carries a random 16-byte nonce; once an order has passed its
//! signature, address, freshness, piece and owner checks, the node records
//! `(owner, nonce)` until the order's timestamp leaves the window, and refuses a second
//! order with the same pair ([`ReplayError::Replayed`]). After that the freshness check
//! refuses it, so nothing needs remembering for longer: at most
//! `ORDER_WINDOW_MS + ORDER_MAX_AHEAD_MS` (11 minutes).
//!
//! **Bound, and shares.** At most [`Caps::total`] entries (262,144; each costs about 120
//! bytes in the indexes, so ~30 MiB at worst). Entries leave by time, oldest expiry
//! first, on every insert. Refusing is safe, forgetting is not: when a share is full of
//! entries still in their window the node refuses new orders of that share rather than
//! forget one. The shares keep one party from locking out the rest:
//! - one owner key holds at most [`Caps::per_owner`] entries ([`ReplayError::OwnerFull`]):
//!   an owner that fills its share is refused alone;
//! - one peer group (the /24 or /48 the connection comes from: owner keys are free, so a
//!   stranger minting keys is bounded by where it connects from) at most
//!   [`Caps::per_group`] ([`ReplayError::GroupFull`]);
//! - only when four groups' worth of orders are live at once does the whole set refuse
//!   ([`ReplayError::Full`]).
//!
//! Keys are 128 bits of `BLAKE3(owner key || nonce)`; two different orders collide with
//! probability about `n² / 2¹²⁹`, negligible at this size.
//!
//! LATER: the set lives in memory, so a node restarted within the window accepts an
//! order it saw before the restart once more. Renewals stay monotonic and uploads refuse
//! an existing piece either way; a replayed delete is the case left open.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use shoal_proto::limits::{ORDER_MAX_AHEAD_MS, ORDER_WINDOW_MS};
use shoal_proto::subnet::Subnet;
use shoal_proto::{Nonce, PublicKey};

/// How many entries the seen-set holds, in all and per share (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub total: usize,
    /// Entries of one owner key: ~50 orders a second to this node, sustained for the
    /// whole window, from one owner.
    pub per_owner: usize,
    /// Entries of orders that came from one peer group.
    pub per_group: usize,
}

impl Default for Caps {
    fn default() -> Self {
        Self {
            total: DEFAULT_CAPACITY,
            per_owner: DEFAULT_CAPACITY / 8,
            per_group: DEFAULT_CAPACITY / 4,
        }
    }
}

/// Entries the seen-set holds at most (see the module docs).
pub const DEFAULT_CAPACITY: usize = 256 * 1024;

/// Why an order was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("order replayed: this owner's nonce was already used")]
    Replayed,
    #[error("this owner has {cap} orders in the last {window_s} s on this node; retry shortly")]
    OwnerFull { cap: usize, window_s: u64 },
    #[error("{cap} orders from your network in the last {window_s} s; retry shortly")]
    GroupFull { cap: usize, window_s: u64 },
    #[error("too many orders in the last {window_s} s ({capacity}); retry shortly")]
    Full { capacity: usize, window_s: u64 },
}

/// Who an entry counts against.
#[derive(Debug, Clone, Copy)]
struct Share {
    owner: PublicKey,
    group: Subnet,
}

#[derive(Debug, Default)]
struct Seen {
    keys: HashMap<u128, Share>,
    /// `(forget at, key)`, so the oldest leave first.
    by_expiry: BTreeSet<(u64, u128)>,
    owners: HashMap<PublicKey, usize>,
    groups: HashMap<Subnet, usize>,
}

fn release<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, k: &K) {
    if let Some(n) = counts.get_mut(k) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(k);
        }
    }
}

impl Seen {
    fn expire(&mut self, now_ms: u64) {
        while let Some(&(at, old)) = self.by_expiry.first() {
            if at >= now_ms {
                break;
            }
            self.by_expiry.pop_first();
            if let Some(share) = self.keys.remove(&old) {
                release(&mut self.owners, &share.owner);
                release(&mut self.groups, &share.group);
            }
        }
    }
}

/// The seen-set; shared by every request of a node.
#[derive(Debug)]
pub struct ReplayGuard {
    seen: Mutex<Seen>,
    caps: Caps,
    window_ms: u64,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        Self::new(Caps::default(), ORDER_WINDOW_MS)
    }
}

fn key(owner: &PublicKey, nonce: &Nonce) -> u128 {
    let mut h = blake3::Hasher::new_derive_key("shoal v1 order replay key");
    h.update(owner.as_bytes());
    h.update(nonce.as_bytes());
    let mut k = [0u8; 16];
    k.copy_from_slice(&h.finalize().as_bytes()[..16]);
    u128::from_be_bytes(k)
}

impl ReplayGuard {
    pub fn new(caps: Caps, window_ms: u64) -> Self {
        Self {
            seen: Mutex::default(),
            caps: Caps {
                total: caps.total.max(1),
                per_owner: caps.per_owner.max(1),
                per_group: caps.per_group.max(1),
            },
            window_ms,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the order `(owner, nonce)` made at `timestamp_ms` (already checked to be
    /// fresh at `now_ms`) and that came from peer group `group`; refuses it if it was
    /// recorded before, or if its owner's, its group's or the whole set's share is full.
    pub fn check(
        &self,
        owner: &PublicKey,
        nonce: &Nonce,
        group: Subnet,
        timestamp_ms: u64,
        now_ms: u64,
    ) -> Result<(), ReplayError> {
        let k = key(owner, nonce);
        let window_s = self.window_ms / 1000;
        let mut seen = self.lock();
        seen.expire(now_ms);
        if seen.keys.contains_key(&k) {
            return Err(ReplayError::Replayed);
        }
        if seen.owners.get(owner).copied().unwrap_or(0) >= self.caps.per_owner {
            return Err(ReplayError::OwnerFull {
                cap: self.caps.per_owner,
                window_s,
            });
        }
        if seen.groups.get(&group).copied().unwrap_or(0) >= self.caps.per_group {
            return Err(ReplayError::GroupFull {
                cap: self.caps.per_group,
                window_s,
            });
        }
        if seen.keys.len() >= self.caps.total {
            return Err(ReplayError::Full {
                capacity: self.caps.total,
                window_s,
            });
        }
        // An order dated ahead is fresh only `ORDER_MAX_AHEAD_MS` ahead; clamp anyway so
        // no entry outlives the window by more than that.
        let at = timestamp_ms.min(now_ms.saturating_add(ORDER_MAX_AHEAD_MS));
        seen.keys.insert(
            k,
            Share {
                owner: *owner,
                group,
            },
        );
        *seen.owners.entry(*owner).or_default() += 1;
        *seen.groups.entry(group).or_default() += 1;
        seen.by_expiry
            .insert((at.saturating_add(self.window_ms), k));
        Ok(())
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.lock().keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::Identity;

    const NOW: u64 = 1_800_000_000_000;

    fn group(last: u8) -> Subnet {
        Subnet::of(&std::net::IpAddr::from([10, 0, last, 1]))
    }

    fn caps(total: usize) -> Caps {
        Caps {
            total,
            per_owner: total,
            per_group: total,
        }
    }

    fn key_of(seed: u8) -> PublicKey {
        *Identity::from_seed([seed; 32]).public_key()
    }

    #[test]
    fn an_order_works_once_within_its_window() {
        let g = ReplayGuard::new(caps(16), 1000);
        let (a, b, net) = (key_of(1), key_of(2), group(1));
        let n = Nonce([7; 16]);
        assert_eq!(g.check(&a, &n, net, NOW, NOW), Ok(()));
        assert_eq!(
            g.check(&a, &n, net, NOW, NOW + 500),
            Err(ReplayError::Replayed)
        );
        // The same nonce from another owner is another order.
        assert_eq!(g.check(&b, &n, net, NOW, NOW), Ok(()));
        assert_eq!(g.check(&a, &Nonce([8; 16]), net, NOW, NOW), Ok(()));
        assert_eq!(g.len(), 3);
        // Still remembered at the last instant of the window, forgotten after it (the
        // freshness check refuses the order from then on).
        assert_eq!(
            g.check(&a, &n, net, NOW, NOW + 1000),
            Err(ReplayError::Replayed)
        );
        assert_eq!(
            g.check(&a, &Nonce([9; 16]), net, NOW + 1001, NOW + 1001),
            Ok(())
        );
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn memory_is_bounded_and_a_full_set_refuses_rather_than_forgets() {
        let g = ReplayGuard::new(caps(4), 1000);
        let (a, net) = (key_of(1), group(1));
        for i in 0..4u8 {
            assert_eq!(g.check(&a, &Nonce([i; 16]), net, NOW, NOW), Ok(()));
        }
        assert!(matches!(
            g.check(&a, &Nonce([9; 16]), net, NOW, NOW),
            Err(ReplayError::OwnerFull { cap: 4, .. })
        ));
        assert!(matches!(
            g.check(&key_of(2), &Nonce([9; 16]), group(2), NOW, NOW),
            Err(ReplayError::Full { capacity: 4, .. })
        ));
        assert_eq!(g.len(), 4);
        // The old entries' window ends: room again.
        assert_eq!(
            g.check(&a, &Nonce([9; 16]), net, NOW + 2000, NOW + 2000),
            Ok(())
        );
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn entries_leave_in_order_of_their_own_window_not_arrival() {
        let g = ReplayGuard::new(caps(16), 1000);
        let (a, net) = (key_of(1), group(1));
        // An order dated in the future (within the window) stays longer.
        g.check(&a, &Nonce([1; 16]), net, NOW + 900, NOW).unwrap();
        g.check(&a, &Nonce([2; 16]), net, NOW - 900, NOW).unwrap();
        g.check(&a, &Nonce([3; 16]), net, NOW, NOW + 200).unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(
            g.check(&a, &Nonce([1; 16]), net, NOW + 900, NOW + 1800),
            Err(ReplayError::Replayed)
        );
    }

    /// Issue 27: one owner, or one network minting owner keys, that fills its share is
    /// refused alone; everyone else's orders still go through.
    #[test]
    fn a_full_share_refuses_its_owner_or_its_network_alone() {
        let g = ReplayGuard::new(
            Caps {
                total: 100,
                per_owner: 3,
                per_group: 10,
            },
            1000,
        );
        let flooder = key_of(1);
        for i in 0..3u8 {
            g.check(&flooder, &Nonce([i; 16]), group(1), NOW, NOW)
                .unwrap();
        }
        assert!(matches!(
            g.check(&flooder, &Nonce([50; 16]), group(9), NOW, NOW),
            Err(ReplayError::OwnerFull { cap: 3, .. })
        ));
        // Another owner from the same network is not refused for the flooder's share.
        g.check(&key_of(2), &Nonce([0; 16]), group(1), NOW, NOW)
            .unwrap();
        // Throwaway keys from one network: each is new, the network's share is not.
        for seed in 3..9u8 {
            g.check(&key_of(seed), &Nonce([0; 16]), group(1), NOW, NOW)
                .unwrap();
        }
        assert!(matches!(
            g.check(&key_of(20), &Nonce([0; 16]), group(1), NOW, NOW),
            Err(ReplayError::GroupFull { cap: 10, .. })
        ));
        // Another network is served.
        g.check(&key_of(21), &Nonce([0; 16]), group(2), NOW, NOW)
            .unwrap();
        // Shares free up as entries leave.
        g.check(&flooder, &Nonce([60; 16]), group(1), NOW + 1001, NOW + 1001)
            .unwrap();
        assert_eq!(g.len(), 1);
    }

    /// An order dated ahead of the clock holds its entry at most `ORDER_MAX_AHEAD_MS`
    /// past the window, whatever its timestamp says.
    #[test]
    fn an_entry_lives_at_most_the_window_plus_the_allowed_skew() {
        let g = ReplayGuard::new(caps(16), 1000);
        let a = key_of(1);
        g.check(
            &a,
            &Nonce([1; 16]),
            group(1),
            NOW + 10 * ORDER_MAX_AHEAD_MS,
            NOW,
        )
        .unwrap();
        g.check(
            &a,
            &Nonce([2; 16]),
            group(1),
            NOW,
            NOW + ORDER_MAX_AHEAD_MS + 1001,
        )
        .unwrap();
        assert_eq!(g.len(), 1);
    }
}
