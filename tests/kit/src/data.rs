//! Deterministic test data: Marsaglia's xorshift64 (shifts 13, 7, 17), the one generator
//! every test's bytes come from.

/// The xorshift64 generator. Its state is never zero (a zero state stays zero).
#[derive(Debug, Clone)]
pub struct Xorshift {
    state: u64,
}

impl Xorshift {
    /// A generator starting at `state | 1`.
    pub fn new(state: u64) -> Self {
        Self { state: state | 1 }
    }

    /// The next 64-bit value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }

    /// `len` bytes, each the low byte of one step.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// `len` bytes from the generator started at `state | 1`.
pub fn xorshift_bytes(len: usize, state: u64) -> Vec<u8> {
    Xorshift::new(state).bytes(len)
}

/// `len` bytes for `seed`, the seed spread over the word first (so that small seeds give
/// unrelated data): the generator started at `seed × 0x9E3779B97F4A7C15 | 1`.
pub fn test_data(len: usize, seed: u64) -> Vec<u8> {
    xorshift_bytes(len, seed.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_xorshift64_and_deterministic() {
        let mut g = Xorshift::new(1);
        // x = 1: 1 ^ 1<<13 = 0x2001; ^ >>7 = 0x2001 ^ 0x40 = 0x2041; ^ <<17.
        assert_eq!(g.next_u64(), 0x2041 ^ (0x2041 << 17));
        assert_eq!(xorshift_bytes(64, 5), xorshift_bytes(64, 5));
        assert_eq!(xorshift_bytes(64, 4), xorshift_bytes(64, 5), "state | 1");
        assert_ne!(test_data(64, 1), test_data(64, 2));
    }
}
