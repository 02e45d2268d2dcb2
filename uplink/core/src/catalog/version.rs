//! Versions: a writer's id and its hybrid logical clock, which order every change of the
//! catalog ([`super::model`] merges by them). A leaf: it uses nothing else in the catalog.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Bits of a [`Hlc`] reading that count events within one millisecond.
const LOGICAL_BITS: u32 = 16;

/// The random id of one writer (a config dir using the grant).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct WriterId(#[serde(with = "crate::hexser")] pub [u8; 16]);

impl WriterId {
    pub fn random() -> Self {
        Self(rand::random())
    }

    pub fn to_hex(&self) -> String {
        shoal_proto::ids::to_hex(&self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        shoal_proto::ids::from_hex::<16>(s.trim()).map(Self)
    }
}

impl fmt::Debug for WriterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WriterId({})", self.to_hex())
    }
}

impl fmt::Display for WriterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A hybrid logical clock reading: unix milliseconds in the high 48 bits, a counter in
/// the low 16. Readings of one writer strictly increase, and never fall behind a reading
/// the writer has seen from another, so a change made after seeing another one is later.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Hlc(pub u64);

impl Hlc {
    /// The next reading after `last` at wall-clock `now_ms`.
    pub fn tick(last: Hlc, now_ms: u64) -> Hlc {
        let physical = now_ms << LOGICAL_BITS;
        Hlc(physical.max(last.0.saturating_add(1)))
    }

    /// Unix milliseconds of this reading.
    pub fn millis(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }
}

/// The version of one change: later clock wins, the writer id breaks ties.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Version {
    pub hlc: Hlc,
    pub writer: WriterId,
}
