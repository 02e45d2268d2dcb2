//! Proof of work for the keys that publish DHT records.
//!
//! A node id carries its own work ([`crate::identity`]): generating one costs `2^d`
//! key generations. A record's publisher key is not a node id (a catalog's records are
//! signed by the grant's owner key, fixed by the grant), so its work is a nonce beside
//! the key: `H(key, nonce)` must end in at least `d` zero bits, `d` being the network's
//! difficulty. Finding one costs `2^d` hashes on average, once per key (the uplink
//! keeps it); checking one is a single hash. Without it a stranger could mint keys for
//! free and fill nodes' record stores (64 records per key) — with it, every key costs
//! work, on top of the store's per-publisher and per-source caps.
//!
//! The nonce is not signed: it says nothing the signature vouches for, only that the
//! key was paid for, and any nonce that passes is as good as another.

use crate::error::IdentityError;
use crate::ids::{NodeId, PublicKey};

const CONTEXT: &str = "shoal v1 publisher work";

/// The bits of work `nonce` proves for `key` (trailing zero bits of `H(key, nonce)`).
pub fn publisher_work_bits(key: &PublicKey, nonce: u64) -> u32 {
    let mut h = blake3::Hasher::new_derive_key(CONTEXT);
    h.update(key.as_bytes());
    h.update(&nonce.to_le_bytes());
    NodeId(*h.finalize().as_bytes()).difficulty()
}

/// Checks that `nonce` proves at least `required` bits of work for `key`.
pub fn check_publisher_work(
    key: &PublicKey,
    nonce: u64,
    required: u32,
) -> Result<(), IdentityError> {
    let actual = publisher_work_bits(key, nonce);
    if actual < required {
        return Err(IdentityError::InsufficientPublisherWork { actual, required });
    }
    Ok(())
}

/// The first nonce (counting from 0) proving `required` bits for `key`. Costs `2^required`
/// hashes on average: call it off the async runtime. `required` is capped at
/// [`crate::limits::MAX_DIFFICULTY`], so the search ends.
pub fn find_publisher_work(key: &PublicKey, required: u32) -> u64 {
    let required = required.min(crate::limits::MAX_DIFFICULTY);
    (0u64..)
        .find(|n| publisher_work_bits(key, *n) >= required)
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn the_nonce_found_proves_the_work_and_others_mostly_do_not() {
        let id = Identity::from_seed([7; 32]);
        let key = id.public_key();
        let nonce = find_publisher_work(key, 12);
        assert!(publisher_work_bits(key, nonce) >= 12);
        assert!(check_publisher_work(key, nonce, 12).is_ok());
        // Every nonce before it failed (that is what "first" means), so each is refused.
        let refused = (0..nonce)
            .filter(|n| check_publisher_work(key, *n, 12).is_err())
            .count() as u64;
        assert_eq!(refused, nonce);
        if nonce > 0 {
            let bits = publisher_work_bits(key, 0);
            assert!(matches!(
                check_publisher_work(key, 0, 12),
                Err(IdentityError::InsufficientPublisherWork { actual, required: 12 }) if actual == bits
            ));
        }
    }

    #[test]
    fn work_is_bound_to_the_key() {
        let a = Identity::from_seed([1; 32]);
        let b = Identity::from_seed([2; 32]);
        let nonce = find_publisher_work(a.public_key(), 16);
        // Another key with the same nonce would pass by chance once in 2^16.
        assert!(check_publisher_work(b.public_key(), nonce, 16).is_err());
        assert!(check_publisher_work(a.public_key(), nonce, 16).is_ok());
    }

    #[test]
    fn zero_difficulty_needs_no_work() {
        let id = Identity::from_seed([3; 32]);
        assert_eq!(find_publisher_work(id.public_key(), 0), 0);
        assert!(check_publisher_work(id.public_key(), 12345, 0).is_ok());
    }
}
