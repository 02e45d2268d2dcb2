//! The seen-set that makes every order work once (issue 13, item 5).
//!
//! An order is fresh for [`ORDER_WINDOW_MS`] either side of the node's clock, so a
//! captured order could be replayed for that long: a download order to waste the node's
//! bandwidth, an old delete order to remove a re-upload. Every order carries a random
//! 16-byte nonce; once an order has passed its signature, address and freshness checks,
//! the node records `(owner, nonce)` until the order's timestamp leaves the window, and
//! refuses a second order with the same pair ([`ReplayError::Replayed`]). After that the
//! freshness check refuses it, so nothing needs remembering for longer.
//!
//! **Bound.** At most `capacity` entries ([`DEFAULT_CAPACITY`]: 262,144; each costs about
//! 80 bytes in the two indexes, so ~21 MiB at worst). Entries leave by time, oldest
//! expiry first, on every insert. When the set is full of entries still in their window
//! the node refuses new orders ([`ReplayError::Full`], RESOURCE_EXHAUSTED) rather than
//! forget one it might see again: refusing is safe, forgetting is not. That takes over
//! 218 accepted orders a second sustained for the whole 20-minute lifetime of an entry.
//!
//! Keys are 128 bits of `BLAKE3(owner key || nonce)`; two different orders collide with
//! probability about `n² / 2¹²⁹`, negligible at this size.
//!
//! LATER: the set lives in memory, so a node restarted within the window accepts an
//! order it saw before the restart once more. Renewals stay monotonic and uploads refuse
//! an existing piece either way; a replayed delete is the case left open.

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;

use shoal_proto::limits::ORDER_WINDOW_MS;
use shoal_proto::{Nonce, PublicKey};

/// Entries the seen-set holds at most (see the module docs).
pub const DEFAULT_CAPACITY: usize = 256 * 1024;

/// Why an order was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("order replayed: this owner's nonce was already used")]
    Replayed,
    #[error("too many orders in the last {window_s} s ({capacity}); retry shortly")]
    Full { capacity: usize, window_s: u64 },
}

#[derive(Debug, Default)]
struct Seen {
    keys: HashSet<u128>,
    /// `(forget at, key)`, so the oldest leave first.
    by_expiry: BTreeSet<(u64, u128)>,
}

/// The seen-set; shared by every request of a node.
#[derive(Debug)]
pub struct ReplayGuard {
    seen: Mutex<Seen>,
    capacity: usize,
    window_ms: u64,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY, ORDER_WINDOW_MS)
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
    pub fn new(capacity: usize, window_ms: u64) -> Self {
        Self {
            seen: Mutex::default(),
            capacity: capacity.max(1),
            window_ms,
        }
    }

    /// Records the order `(owner, nonce)` made at `timestamp_ms` (already checked to be
    /// fresh at `now_ms`); refuses it if it was recorded before.
    pub fn check(
        &self,
        owner: &PublicKey,
        nonce: &Nonce,
        timestamp_ms: u64,
        now_ms: u64,
    ) -> Result<(), ReplayError> {
        let k = key(owner, nonce);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(&(at, old)) = seen.by_expiry.first() {
            if at >= now_ms {
                break;
            }
            seen.by_expiry.pop_first();
            seen.keys.remove(&old);
        }
        if seen.keys.contains(&k) {
            return Err(ReplayError::Replayed);
        }
        if seen.keys.len() >= self.capacity {
            return Err(ReplayError::Full {
                capacity: self.capacity,
                window_s: self.window_ms / 1000,
            });
        }
        seen.keys.insert(k);
        seen.by_expiry
            .insert((timestamp_ms.saturating_add(self.window_ms), k));
        Ok(())
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys
            .len()
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

    #[test]
    fn an_order_works_once_within_its_window() {
        let g = ReplayGuard::new(16, 1000);
        let a = *Identity::from_seed([1; 32]).public_key();
        let b = *Identity::from_seed([2; 32]).public_key();
        let n = Nonce([7; 16]);
        assert_eq!(g.check(&a, &n, NOW, NOW), Ok(()));
        assert_eq!(g.check(&a, &n, NOW, NOW + 500), Err(ReplayError::Replayed));
        // The same nonce from another owner is another order.
        assert_eq!(g.check(&b, &n, NOW, NOW), Ok(()));
        assert_eq!(g.check(&a, &Nonce([8; 16]), NOW, NOW), Ok(()));
        assert_eq!(g.len(), 3);
        // Still remembered at the last instant of the window, forgotten after it (the
        // freshness check refuses the order from then on).
        assert_eq!(g.check(&a, &n, NOW, NOW + 1000), Err(ReplayError::Replayed));
        assert_eq!(g.check(&a, &Nonce([9; 16]), NOW + 1001, NOW + 1001), Ok(()));
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn memory_is_bounded_and_a_full_set_refuses_rather_than_forgets() {
        let g = ReplayGuard::new(4, 1000);
        let a = *Identity::from_seed([1; 32]).public_key();
        for i in 0..4u8 {
            assert_eq!(g.check(&a, &Nonce([i; 16]), NOW, NOW), Ok(()));
        }
        assert!(matches!(
            g.check(&a, &Nonce([9; 16]), NOW, NOW),
            Err(ReplayError::Full { capacity: 4, .. })
        ));
        assert_eq!(g.len(), 4);
        // The old entries' window ends: room again.
        assert_eq!(g.check(&a, &Nonce([9; 16]), NOW + 2000, NOW + 2000), Ok(()));
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn entries_leave_in_order_of_their_own_window_not_arrival() {
        let g = ReplayGuard::new(16, 1000);
        let a = *Identity::from_seed([1; 32]).public_key();
        // An order dated in the future (within the window) stays longer.
        g.check(&a, &Nonce([1; 16]), NOW + 900, NOW).unwrap();
        g.check(&a, &Nonce([2; 16]), NOW - 900, NOW).unwrap();
        g.check(&a, &Nonce([3; 16]), NOW, NOW + 200).unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(
            g.check(&a, &Nonce([1; 16]), NOW + 900, NOW + 1800),
            Err(ReplayError::Replayed)
        );
    }
}
