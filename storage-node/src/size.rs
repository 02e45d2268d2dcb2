//! Byte sizes as operators write them: `500GB`, `2TiB`, `10MB`, `1.5 TB`, `4096`.
//!
//! Decimal units (`KB`, `MB`, `GB`, `TB`, `PB`) are powers of 1000, binary units (`KiB`,
//! `MiB`, `GiB`, `TiB`, `PiB`) powers of 1024, as disk vendors and `df -H`/`df -h` use them.
//! A bare number is bytes.

use std::fmt;
use std::str::FromStr;

/// A number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

/// Why a size did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size {input:?}: {reason} (examples: 500GB, 2TiB, 10MB, 4096)")]
pub struct SizeError {
    input: String,
    reason: &'static str,
}

const UNITS: [(&str, u64); 11] = [
    ("b", 1),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
    ("pb", 1_000_000_000_000_000),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
    ("pib", 1 << 50),
];

impl FromStr for ByteSize {
    type Err = SizeError;

    fn from_str(input: &str) -> Result<Self, SizeError> {
        let err = |reason| SizeError {
            input: input.to_owned(),
            reason,
        };
        let s = input.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let unit = unit.trim().to_ascii_lowercase();
        let multiplier = if unit.is_empty() {
            1
        } else {
            UNITS
                .iter()
                .find(|(name, _)| *name == unit)
                .map(|(_, m)| *m)
                .ok_or_else(|| err("unknown unit"))?
        };
        let (whole, frac) = match number.split_once('.') {
            Some((w, f)) => (w, f),
            None => (number, ""),
        };
        if whole.is_empty() && frac.is_empty() {
            return Err(err("no number"));
        }
        if frac.len() > 18 || frac.contains('.') {
            return Err(err("malformed number"));
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| err("malformed number"))?
        };
        let mut bytes = whole
            .checked_mul(u128::from(multiplier))
            .ok_or_else(|| err("too large"))?;
        if !frac.is_empty() {
            let digits: u128 = frac.parse().map_err(|_| err("malformed number"))?;
            let scale = 10u128.pow(frac.len() as u32);
            bytes += digits * u128::from(multiplier) / scale;
        }
        u64::try_from(bytes)
            .map(ByteSize)
            .map_err(|_| err("too large"))
    }
}

impl fmt::Display for ByteSize {
    /// The shortest exact spelling (`500GB`, `2TiB`), so a size survives a round trip
    /// through `config.toml` unchanged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut best = (self.0, "B");
        for (name, m) in UNITS.iter().skip(1) {
            if self.0 != 0 && self.0.is_multiple_of(*m) && self.0 / m < best.0 {
                best = (self.0 / m, name);
            }
        }
        let unit = match best.1 {
            "kib" => "KiB",
            "mib" => "MiB",
            "gib" => "GiB",
            "tib" => "TiB",
            "pib" => "PiB",
            other => return write!(f, "{}{}", best.0, other.to_ascii_uppercase()),
        };
        write!(f, "{}{unit}", best.0)
    }
}

impl ByteSize {
    /// Human reading with two decimals in binary units, for the dashboard and `info`.
    pub fn human(self) -> String {
        const NAMES: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
        let mut value = self.0 as f64;
        let mut i = 0;
        while value >= 1024.0 && i + 1 < NAMES.len() {
            value /= 1024.0;
            i += 1;
        }
        if i == 0 {
            format!("{} B", self.0)
        } else {
            format!("{value:.2} {}", NAMES[i])
        }
    }
}

impl serde::Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_what_operators_write() {
        let cases = [
            ("500GB", 500_000_000_000),
            ("2TiB", 2 << 40),
            ("10MB", 10_000_000),
            ("10mb", 10_000_000),
            ("1.5 TB", 1_500_000_000_000),
            ("0.5KiB", 512),
            ("4096", 4096),
            ("4096B", 4096),
            (" 3 GiB ", 3 << 30),
        ];
        for (text, bytes) in cases {
            assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(bytes)), "{text}");
        }
    }

    #[test]
    fn rejects_nonsense() {
        for text in ["", "GB", "12XB", "1.2.3GB", "-5GB", "99999999999PB", "1e9"] {
            assert!(text.parse::<ByteSize>().is_err(), "{text}");
        }
    }

    #[test]
    fn displays_shortest_exact_form() {
        assert_eq!(ByteSize(500_000_000_000).to_string(), "500GB");
        assert_eq!(ByteSize(2 << 40).to_string(), "2TiB");
        assert_eq!(ByteSize(1000).to_string(), "1KB");
        assert_eq!(ByteSize(1001).to_string(), "1001B");
        assert_eq!(ByteSize(0).to_string(), "0B");
        assert_eq!(ByteSize(3 << 20).human(), "3.00 MiB");
    }

    proptest! {
        #[test]
        fn display_round_trips(n: u64) {
            prop_assert_eq!(ByteSize(n).to_string().parse::<ByteSize>(), Ok(ByteSize(n)));
        }
    }
}
