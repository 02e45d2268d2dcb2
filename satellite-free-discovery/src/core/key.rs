//! Distances in the 256-bit key space and the subnets that placement limits count.

use shoal_proto::NodeId;

/// XOR distance between two 256-bit keys, compared as a big-endian integer.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Distance(pub [u8; 32]);

impl Distance {
    pub fn between(a: &[u8; 32], b: &[u8; 32]) -> Self {
        let mut d = [0u8; 32];
        for (i, out) in d.iter_mut().enumerate() {
            *out = a[i] ^ b[i];
        }
        Self(d)
    }

    /// Number of leading zero bits (256 for a zero distance).
    pub fn leading_zeros(&self) -> u32 {
        let mut n = 0;
        for b in self.0 {
            if b == 0 {
                n += 8;
            } else {
                return n + b.leading_zeros();
            }
        }
        n
    }
}

/// The distance of `id` from a target key.
pub fn distance(target: &[u8; 32], id: &NodeId) -> Distance {
    Distance::between(target, id.as_bytes())
}

/// Bucket of `other` in the table of `local`: the index of the highest differing bit
/// (255 for the far half of the key space, 0 for the nearest neighbour). `None` for `local`
/// itself.
pub fn bucket_index(local: &NodeId, other: &NodeId) -> Option<usize> {
    let lz = Distance::between(local.as_bytes(), other.as_bytes()).leading_zeros();
    if lz >= 256 {
        None
    } else {
        Some(255 - lz as usize)
    }
}

/// A random key whose bucket in the table of `local` is `bucket`, built from `random`
/// (the caller supplies the randomness: the core reads no entropy source).
pub fn key_in_bucket(local: &NodeId, bucket: usize, random: [u8; 32]) -> [u8; 32] {
    let bucket = bucket.min(255);
    // Keep the `255 - bucket` leading bits of `local`, flip the next one, randomise the rest.
    let prefix = 255 - bucket;
    let mut out = random;
    for bit in 0..=prefix {
        let (byte, mask) = (bit / 8, 0x80u8 >> (bit % 8));
        let local_bit = local.0[byte] & mask;
        let want = if bit == prefix {
            local_bit ^ mask
        } else {
            local_bit
        };
        out[byte] = (out[byte] & !mask) | want;
    }
    out
}

/// The network a placement limit counts: one rule, in `shoal_proto`, shared with the
/// uplink's placement.
pub use shoal_proto::subnet::Subnet;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_of_key_in_bucket() {
        let local = NodeId([0x5a; 32]);
        for b in [0usize, 1, 7, 8, 100, 254, 255] {
            let k = key_in_bucket(&local, b, [0xff; 32]);
            assert_eq!(bucket_index(&local, &NodeId(k)), Some(b));
            let k = key_in_bucket(&local, b, [0; 32]);
            assert_eq!(bucket_index(&local, &NodeId(k)), Some(b));
        }
        assert_eq!(bucket_index(&local, &local), None);
    }
    // The subnet rule is tested where it lives: `shoal_proto::subnet`.
}
