//! Access: the owner's 32-byte root secret, the keys derived from it, and the access
//! grant string that carries it to another machine.
//!
//! Everything an owner can do follows from the root secret:
//! - the owner signing key (orders to nodes), `blake3::derive_key("shoal v1 uplink owner
//!   signing key", root)` fed to [`Identity::from_seed`];
//! - the content-key root, from which per-object wrapping keys are derived
//!   ([`crate::crypto`]);
//! - the catalog key, which will encrypt the catalog when it is stored in the network.
//!
//! Each derivation uses its own BLAKE3 `derive_key` context, so the keys are independent.
//!
//! A root secret comes either from the OS random generator (the default, and the
//! strongest: 256 bits no one can guess) or from a passphrase with Argon2id
//! ([`PASSPHRASE_PARAMS`]): m = 64 MiB, t = 3, p = 1, 32-byte output. The salt is the
//! user's own name, chosen at `access create` (`blake3::derive_key("shoal v2 uplink
//! passphrase salt", name)`): the same name and passphrase give the same secret on any
//! machine (that is the point of a passphrase), while one Argon2 guess tests a
//! passphrase against one user only, not against every user at once as a shared salt
//! would (every order carries the owner's public key, so a shared salt would let one
//! guess be checked against all of them). Passphrases that a strength estimate
//! ([`MIN_PASSPHRASE_SCORE`], zxcvbn) finds guessable are refused.
//!
//! # Grant format
//! `shoal1` + base64url (no padding) of
//! `root secret (32) | peer count (1) | per peer: length (1) + "host:port" UTF-8 | checksum (4)`,
//! where the checksum is the first 4 bytes of `blake3::derive_key("shoal v1 grant
//! checksum", "shoal1" | payload)`. The prefix names the format version: a future
//! `shoal2` grant is refused with [`GrantError::UnsupportedVersion`], not misread.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use shoal_proto::Identity;
use zeroize::{Zeroize, Zeroizing};

/// Prefix of every version-1 grant.
pub const GRANT_PREFIX: &str = "shoal1";
/// Most bootstrap peers a grant carries.
pub const MAX_GRANT_PEERS: usize = 32;
/// Longest bootstrap peer string (`host:port`).
pub const MAX_PEER_LEN: usize = 255;

const SIGNING_CONTEXT: &str = "shoal v1 uplink owner signing key";
const CONTENT_CONTEXT: &str = "shoal v1 uplink content key root";
const CATALOG_CONTEXT: &str = "shoal v1 uplink catalog key";
const CHECKSUM_CONTEXT: &str = "shoal v1 grant checksum";
const PASSPHRASE_SALT_CONTEXT: &str = "shoal v2 uplink passphrase salt";

/// Longest user name (the passphrase's salt), in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Lowest zxcvbn score (0–4) a passphrase must reach: 4 means the estimate puts it
/// beyond about 10^10 guesses, which at Argon2id's cost is centuries of one core per
/// user. Lower scores are passphrases a dictionary attack finds.
pub const MIN_PASSPHRASE_SCORE: u8 = 4;

/// Argon2id cost parameters for passphrases: memory in KiB, iterations, lanes.
/// 64 MiB and 3 passes (RFC 9106's second recommended option, with one lane) take a few
/// hundred milliseconds on one core and make guessing expensive.
pub const PASSPHRASE_PARAMS: (u32, u32, u32) = (64 * 1024, 3, 1);

/// Why a grant string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("not an access grant: it should start with `{GRANT_PREFIX}`")]
    NotAGrant,
    #[error(
        "access grant version `{0}` is not supported by this uplink (it reads `{GRANT_PREFIX}`)"
    )]
    UnsupportedVersion(String),
    #[error("access grant is not valid base64url: {0}")]
    Encoding(String),
    #[error("access grant is truncated ({0} bytes of payload); was it copied completely?")]
    Truncated(usize),
    #[error("access grant checksum does not match: it was mistyped or damaged")]
    Checksum,
    #[error("access grant has malformed bootstrap peers: {0}")]
    BadPeer(String),
    #[error("access grant has trailing bytes after the bootstrap peers")]
    TrailingBytes,
    #[error("bootstrap peer `{0}` is longer than {MAX_PEER_LEN} bytes: a grant cannot carry it")]
    PeerTooLong(String),
    #[error("{0} bootstrap peers: a grant carries at most {MAX_GRANT_PEERS}")]
    TooManyPeers(usize),
}

/// Why a passphrase could not be turned into a root secret.
#[derive(Debug, thiserror::Error)]
pub enum PassphraseError {
    #[error("the passphrase is empty")]
    Empty,
    #[error(
        "a passphrase needs a name (your own, e.g. an e-mail address), the same every time: it keeps one guess from testing every user at once"
    )]
    NoName,
    #[error("the name is longer than {MAX_NAME_LEN} bytes")]
    NameTooLong,
    #[error(
        "the passphrase is too weak: its strength estimate is {score} of 4 (about 10^{guesses_log10:.0} guesses), 4 is needed{hint}; a random access (`uplink access create` without --passphrase-stdin) is the strongest choice"
    )]
    Weak {
        score: u8,
        guesses_log10: f64,
        /// The estimator's advice, `: ...` or empty.
        hint: String,
    },
    #[error("argon2id failed: {0}")]
    Argon2(String),
}

/// Checks a new passphrase's strength (zxcvbn, with the name and "shoal" as words an
/// attacker would try first); refuses one below [`MIN_PASSPHRASE_SCORE`].
pub fn check_passphrase_strength(passphrase: &str, name: &str) -> Result<(), PassphraseError> {
    if passphrase.is_empty() {
        return Err(PassphraseError::Empty);
    }
    let estimate = zxcvbn::zxcvbn(passphrase, &[name, "shoal", "uplink"]);
    let score = u8::from(estimate.score());
    if score >= MIN_PASSPHRASE_SCORE {
        return Ok(());
    }
    let hint = estimate
        .feedback()
        .map(|f| {
            let mut parts: Vec<String> = Vec::new();
            if let Some(w) = f.warning() {
                parts.push(w.to_string());
            }
            parts.extend(f.suggestions().iter().map(|s| s.to_string()));
            parts
        })
        .filter(|p| !p.is_empty())
        .map_or(String::new(), |p| format!(" ({})", p.join(" ")));
    Err(PassphraseError::Weak {
        score,
        guesses_log10: estimate.guesses_log10(),
        hint,
    })
}

/// The salt of `name`: trimmed and lower-cased first, so `Alice@Example.org ` and
/// `alice@example.org` are one user.
fn passphrase_salt(name: &str) -> Result<[u8; 32], PassphraseError> {
    let name = name.trim().to_lowercase();
    if name.is_empty() {
        return Err(PassphraseError::NoName);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(PassphraseError::NameTooLong);
    }
    Ok(blake3::derive_key(PASSPHRASE_SALT_CONTEXT, name.as_bytes()))
}

/// The owner's root secret. Zeroed when dropped; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct RootSecret([u8; 32]);

impl Drop for RootSecret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for RootSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RootSecret(..)")
    }
}

impl RootSecret {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A fresh secret from the OS random generator.
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// The secret of `name`'s passphrase (Argon2id, [`PASSPHRASE_PARAMS`], salted with the
    /// name). Does not judge the passphrase's strength: [`check_passphrase_strength`] does,
    /// where a new one is chosen.
    pub fn from_passphrase(passphrase: &[u8], name: &str) -> Result<Self, PassphraseError> {
        if passphrase.is_empty() {
            return Err(PassphraseError::Empty);
        }
        let salt = passphrase_salt(name)?;
        let (m, t, p) = PASSPHRASE_PARAMS;
        let params = argon2::Params::new(m, t, p, Some(32))
            .map_err(|e| PassphraseError::Argon2(e.to_string()))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = [0u8; 32];
        argon
            .hash_password_into(passphrase, &salt, &mut out)
            .map_err(|e| PassphraseError::Argon2(e.to_string()))?;
        Ok(Self(out))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Everything derived from one root secret, plus the bootstrap peers of its grant.
pub struct Access {
    root: RootSecret,
    owner: Identity,
    content_root: Zeroizing<[u8; 32]>,
    catalog_key: Zeroizing<[u8; 32]>,
    bootstrap: Vec<String>,
    /// The network's proof-of-work difficulty, when the grant names it (so an uplink
    /// set up from the grant alone checks node ids against the right bar).
    difficulty: Option<u32>,
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access")
            .field("owner", &self.owner.public_key())
            .field("bootstrap", &self.bootstrap)
            .finish_non_exhaustive()
    }
}

impl Access {
    pub fn new(root: RootSecret, bootstrap: Vec<String>) -> Self {
        let owner = Identity::from_seed(blake3::derive_key(SIGNING_CONTEXT, root.as_bytes()));
        let content_root = Zeroizing::new(blake3::derive_key(CONTENT_CONTEXT, root.as_bytes()));
        let catalog_key = Zeroizing::new(blake3::derive_key(CATALOG_CONTEXT, root.as_bytes()));
        Self {
            root,
            owner,
            content_root,
            catalog_key,
            bootstrap,
            difficulty: None,
        }
    }

    /// The same access, carrying the network's proof-of-work difficulty in its grant.
    pub fn with_difficulty(mut self, difficulty: u32) -> Self {
        self.difficulty = Some(difficulty.min(shoal_proto::identity::MAX_DIFFICULTY));
        self
    }

    /// The network's proof-of-work difficulty named by the grant, if any.
    pub fn difficulty(&self) -> Option<u32> {
        self.difficulty
    }

    /// The owner's signing identity: signs every order sent to nodes.
    pub fn owner(&self) -> &Identity {
        &self.owner
    }

    /// Root of every per-object wrapping key.
    pub fn content_root(&self) -> &[u8; 32] {
        &self.content_root
    }

    /// Key for the catalog once it is stored in the network (a later issue).
    pub fn catalog_key(&self) -> &[u8; 32] {
        &self.catalog_key
    }

    pub fn bootstrap(&self) -> &[String] {
        &self.bootstrap
    }

    pub fn root(&self) -> &RootSecret {
        &self.root
    }

    /// The grant string that carries this access to another machine.
    ///
    /// Refuses (rather than cuts) a bootstrap list the format cannot carry: more than
    /// [`MAX_GRANT_PEERS`] peers or one longer than [`MAX_PEER_LEN`] bytes.
    pub fn to_grant(&self) -> Result<String, GrantError> {
        let count = u8::try_from(self.bootstrap.len())
            .ok()
            .filter(|&n| usize::from(n) <= MAX_GRANT_PEERS)
            .ok_or(GrantError::TooManyPeers(self.bootstrap.len()))?;
        let mut payload = Zeroizing::new(Vec::with_capacity(64));
        payload.extend_from_slice(self.root.as_bytes());
        payload.push(count);
        for p in &self.bootstrap {
            let len = u8::try_from(p.len())
                .ok()
                .filter(|&n| usize::from(n) <= MAX_PEER_LEN)
                .ok_or_else(|| GrantError::PeerTooLong(p.clone()))?;
            payload.push(len);
            payload.extend_from_slice(p.as_bytes());
        }
        // Optional trailing byte: the network's difficulty (grants without it stay valid).
        if let Some(d) = self.difficulty {
            payload.push(u8::try_from(d).unwrap_or(u8::MAX));
        }
        let sum = checksum(&payload);
        payload.extend_from_slice(&sum);
        Ok(format!(
            "{GRANT_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(&payload[..])
        ))
    }

    /// Reads a grant string made by [`Access::to_grant`].
    pub fn from_grant(grant: &str) -> Result<Self, GrantError> {
        let grant = grant.trim();
        let Some(body) = grant.strip_prefix(GRANT_PREFIX) else {
            // Name a future version rather than calling it garbage.
            if let Some(rest) = grant.strip_prefix("shoal") {
                let version: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
                if !version.is_empty() {
                    return Err(GrantError::UnsupportedVersion(format!("shoal{version}")));
                }
            }
            return Err(GrantError::NotAGrant);
        };
        let payload = Zeroizing::new(URL_SAFE_NO_PAD.decode(body).map_err(|e| match e {
            // A length no encoder produces: the grant was cut short.
            base64::DecodeError::InvalidLength(_) => GrantError::Truncated(body.len() * 3 / 4),
            e => GrantError::Encoding(e.to_string()),
        })?);
        // root + peer count + checksum at least.
        if payload.len() < 32 + 1 + 4 {
            return Err(GrantError::Truncated(payload.len()));
        }
        let (data, sum) = payload.split_at(payload.len() - 4);
        if checksum(data) != sum {
            return Err(GrantError::Checksum);
        }
        let mut root = [0u8; 32];
        root.copy_from_slice(&data[..32]);
        let count = usize::from(data[32]);
        if count > MAX_GRANT_PEERS {
            return Err(GrantError::BadPeer(format!(
                "{count} peers, at most {MAX_GRANT_PEERS}"
            )));
        }
        let mut rest = &data[33..];
        let mut bootstrap = Vec::with_capacity(count);
        for i in 0..count {
            let Some((&len, tail)) = rest.split_first() else {
                return Err(GrantError::BadPeer(format!("peer {i} is missing")));
            };
            let len = usize::from(len);
            if tail.len() < len {
                return Err(GrantError::BadPeer(format!("peer {i} is cut short")));
            }
            let peer = std::str::from_utf8(&tail[..len])
                .map_err(|_| GrantError::BadPeer(format!("peer {i} is not UTF-8")))?;
            bootstrap.push(peer.to_string());
            rest = &tail[len..];
        }
        let difficulty = match rest {
            [] => None,
            [d] if u32::from(*d) <= shoal_proto::identity::MAX_DIFFICULTY => Some(u32::from(*d)),
            _ => return Err(GrantError::TrailingBytes),
        };
        let mut access = Self::new(RootSecret::from_bytes(root), bootstrap);
        access.difficulty = difficulty;
        root.zeroize();
        Ok(access)
    }
}

pub(crate) fn checksum(payload: &[u8]) -> [u8; 4] {
    let mut h = blake3::Hasher::new_derive_key(CHECKSUM_CONTEXT);
    h.update(GRANT_PREFIX.as_bytes());
    h.update(payload);
    let mut out = [0u8; 4];
    out.copy_from_slice(&h.finalize().as_bytes()[..4]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> Access {
        Access::new(
            RootSecret::from_bytes([7; 32]),
            vec!["127.0.1.1:7777".into(), "[::1]:9000".into()],
        )
    }

    #[test]
    fn grants_refuse_peers_they_cannot_carry() {
        let root = || RootSecret::from_bytes([7; 32]);
        // 255 bytes fit exactly and read back intact, multi-byte characters included.
        let longest = format!("{}a:1", "é".repeat(126));
        assert_eq!(longest.len(), MAX_PEER_LEN);
        let grant = Access::new(root(), vec![longest.clone()])
            .to_grant()
            .unwrap();
        assert_eq!(Access::from_grant(&grant).unwrap().bootstrap(), [longest]);
        // One byte more is refused, not cut (a cut could split a character).
        let long = format!("ab:1{}", "é".repeat(126));
        assert!(!long.is_char_boundary(MAX_PEER_LEN));
        assert_eq!(
            Access::new(root(), vec![long.clone()]).to_grant(),
            Err(GrantError::PeerTooLong(long))
        );
        let many: Vec<String> = (0..=MAX_GRANT_PEERS)
            .map(|i| format!("127.0.0.1:{i}"))
            .collect();
        assert_eq!(
            Access::new(root(), many).to_grant(),
            Err(GrantError::TooManyPeers(MAX_GRANT_PEERS + 1))
        );
        let most: Vec<String> = (0..MAX_GRANT_PEERS)
            .map(|i| format!("127.0.0.1:{i}"))
            .collect();
        let grant = Access::new(root(), most.clone()).to_grant().unwrap();
        assert_eq!(Access::from_grant(&grant).unwrap().bootstrap(), most);
    }

    #[test]
    fn grant_round_trips() {
        let a = access();
        let grant = a.to_grant().unwrap();
        assert!(grant.starts_with("shoal1"));
        let b = Access::from_grant(&grant).unwrap();
        assert_eq!(b.root(), a.root());
        assert_eq!(b.bootstrap(), a.bootstrap());
        assert_eq!(b.owner().public_key(), a.owner().public_key());
        // Surrounding whitespace from copy and paste is fine.
        assert!(Access::from_grant(&format!("  {grant}\n")).is_ok());
        assert_eq!(b.difficulty(), None);
    }

    #[test]
    fn grant_carries_the_network_difficulty() {
        let grant = access().with_difficulty(8).to_grant().unwrap();
        let back = Access::from_grant(&grant).unwrap();
        assert_eq!(back.difficulty(), Some(8));
        assert_eq!(back.bootstrap(), access().bootstrap());
        // Cut off a character: truncated or checksum error, never a silent misread.
        assert!(Access::from_grant(&grant[..grant.len() - 1]).is_err());
    }

    #[test]
    fn derived_keys_are_independent_and_deterministic() {
        let a = access();
        let keys = [
            *a.content_root(),
            *a.catalog_key(),
            *a.owner().seed(),
            *a.root().as_bytes(),
        ];
        for i in 0..keys.len() {
            for j in i + 1..keys.len() {
                assert_ne!(keys[i], keys[j]);
            }
        }
        let b = Access::new(RootSecret::from_bytes([7; 32]), vec![]);
        assert_eq!(a.content_root(), b.content_root());
        let c = Access::new(RootSecret::from_bytes([8; 32]), vec![]);
        assert_ne!(a.content_root(), c.content_root());
        assert_ne!(a.owner().public_key(), c.owner().public_key());
    }

    #[test]
    fn passphrase_is_deterministic_and_sensitive_to_passphrase_and_name() {
        let a = RootSecret::from_passphrase(b"correct horse", "alice@example.org").unwrap();
        let b = RootSecret::from_passphrase(b"correct horse", " Alice@Example.org").unwrap();
        let c = RootSecret::from_passphrase(b"correct horsf", "alice@example.org").unwrap();
        // The same passphrase for another user is another secret: one guess tests one user.
        let d = RootSecret::from_passphrase(b"correct horse", "bob@example.org").unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert!(matches!(
            RootSecret::from_passphrase(b"", "alice"),
            Err(PassphraseError::Empty)
        ));
        assert!(matches!(
            RootSecret::from_passphrase(b"correct horse", "  "),
            Err(PassphraseError::NoName)
        ));
        assert!(matches!(
            RootSecret::from_passphrase(b"correct horse", &"x".repeat(MAX_NAME_LEN + 1)),
            Err(PassphraseError::NameTooLong)
        ));
    }

    #[test]
    fn weak_passphrases_are_refused_with_the_estimate() {
        for weak in [
            "password",
            "correct horse",
            "alice2024",
            "qwertyuiop",
            "shoalshoal1",
        ] {
            let err = check_passphrase_strength(weak, "alice").unwrap_err();
            assert!(
                matches!(err, PassphraseError::Weak { score, .. } if score < 4),
                "{weak}"
            );
            assert!(err.to_string().contains("random access"), "{err}");
        }
        // The user's own name does not make a passphrase strong.
        assert!(check_passphrase_strength("alice@example.org", "alice@example.org").is_err());
        assert!(matches!(
            check_passphrase_strength("", "alice"),
            Err(PassphraseError::Empty)
        ));
        for strong in [
            "correct horse battery staple",
            "plinth-oxbow-tundra-marzipan-7",
            "Vq8#mZ2!pL5@wR9k",
        ] {
            check_passphrase_strength(strong, "alice").unwrap();
        }
    }

    #[test]
    fn bad_grants_give_typed_errors() {
        let grant = access().to_grant().unwrap();
        assert_eq!(
            Access::from_grant("hello").unwrap_err(),
            GrantError::NotAGrant
        );
        assert_eq!(
            Access::from_grant(&grant.replacen("shoal1", "shoal2", 1)).unwrap_err(),
            GrantError::UnsupportedVersion("shoal2".into())
        );
        assert!(matches!(
            Access::from_grant(&format!("{grant}!")).unwrap_err(),
            GrantError::Encoding(_)
        ));
        // Truncated anywhere: either too short, or the checksum no longer matches.
        for cut in [7, 20, 40, grant.len() - 1] {
            let err = Access::from_grant(&grant[..cut]).unwrap_err();
            assert!(
                matches!(
                    err,
                    GrantError::Truncated(_) | GrantError::Checksum | GrantError::Encoding(_)
                ),
                "cut {cut}: {err:?}"
            );
        }
        assert!(matches!(
            Access::from_grant(&grant[..12]).unwrap_err(),
            GrantError::Truncated(_)
        ));
        // One changed character is caught by the checksum.
        let mut chars: Vec<char> = grant.chars().collect();
        let i = 20;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let typo: String = chars.into_iter().collect();
        assert_eq!(Access::from_grant(&typo).unwrap_err(), GrantError::Checksum);
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let a = access();
        let text = format!("{a:?} {:?}", a.root());
        assert!(!text.contains("7, 7, 7"));
        assert!(!text.contains(&shoal_proto::ids::to_hex(a.root().as_bytes())));
    }
}
