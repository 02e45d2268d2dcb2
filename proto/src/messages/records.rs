//! The DHT's signed records: a node's self-signed [`NodeRecord`] (where it can be reached)
//! and the BEP 44-style [`MutableRecord`] (the catalog's pointers).

use std::net::SocketAddr;

use super::{nonzero, signature};
use crate::error::WireError;
use crate::ids::{NodeId, PublicKey, RecordKey};
use crate::limits::{MAX_ADDRESSES, MAX_RECORD_VALUE, MAX_SALT_LEN, MAX_VERSION_LEN};
use crate::pb;
use crate::signing::{Canonical, Domain, Signable, Signed};

/// A node's self-signed advertisement of where and how it can be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub public_key: PublicKey,
    pub addresses: Vec<SocketAddr>,
    pub free_space: u64,
    pub version: String,
    pub started_at_ms: u64,
    pub timestamp_ms: u64,
}

impl NodeRecord {
    pub fn node_id(&self) -> NodeId {
        self.public_key.node_id()
    }
}

impl Signable for NodeRecord {
    const DOMAIN: Domain = Domain::NodeRecord;

    fn signer(&self) -> &PublicKey {
        &self.public_key
    }

    fn encode(&self, c: &mut Canonical) {
        c.fixed(self.public_key.as_bytes())
            .list(self.addresses.iter().map(|a| a.to_string()))
            .u64(self.free_space)
            .bytes(self.version.as_bytes())
            .u64(self.started_at_ms)
            .u64(self.timestamp_ms);
    }
}

/// Parses a record address: an `ip:port` with a real port and a unicast IP.
pub fn parse_address(field: &'static str, s: &str) -> Result<SocketAddr, WireError> {
    if s.len() > 64 {
        return Err(WireError::TooLong {
            field,
            limit: 64,
            actual: s.len(),
        });
    }
    let addr: SocketAddr = s.parse().map_err(|_| WireError::Malformed {
        field,
        reason: format!("{s:?} is not an ip:port address"),
    })?;
    // Undialable anywhere; whether it is routable is the reader's network's question
    // (`AddressScope`).
    crate::address::AddressScope::Local
        .check(&addr)
        .map_err(|e| WireError::Malformed {
            field,
            reason: e.to_string(),
        })?;
    Ok(addr)
}

impl TryFrom<pb::NodeRecord> for Signed<NodeRecord> {
    type Error = WireError;

    fn try_from(m: pb::NodeRecord) -> Result<Self, WireError> {
        if m.addresses.is_empty() {
            return Err(WireError::Missing { field: "addresses" });
        }
        if m.addresses.len() > MAX_ADDRESSES {
            return Err(WireError::TooMany {
                field: "addresses",
                limit: MAX_ADDRESSES,
                actual: m.addresses.len(),
            });
        }
        if m.version.len() > MAX_VERSION_LEN {
            return Err(WireError::TooLong {
                field: "version",
                limit: MAX_VERSION_LEN,
                actual: m.version.len(),
            });
        }
        if m.version.chars().any(|c| c.is_control()) {
            return Err(WireError::Malformed {
                field: "version",
                reason: "control characters".into(),
            });
        }
        let addresses = m
            .addresses
            .iter()
            .map(|a| parse_address("addresses", a))
            .collect::<Result<Vec<_>, _>>()?;
        let body = NodeRecord {
            public_key: PublicKey::from_bytes("public_key", &m.public_key)?,
            addresses,
            free_space: m.free_space,
            version: m.version,
            started_at_ms: m.started_at_ms,
            timestamp_ms: nonzero("timestamp_ms", m.timestamp_ms)?,
        };
        Signed::verify(body, signature(&m.signature)?)
    }
}

impl From<&Signed<NodeRecord>> for pb::NodeRecord {
    fn from(s: &Signed<NodeRecord>) -> Self {
        Self {
            public_key: s.public_key.as_bytes().to_vec(),
            addresses: s.addresses.iter().map(|a| a.to_string()).collect(),
            free_space: s.free_space,
            version: s.version.clone(),
            started_at_ms: s.started_at_ms,
            timestamp_ms: s.timestamp_ms,
            signature: s.signature().0.to_vec(),
        }
    }
}

/// A BEP 44-style mutable record, stored under `H(public key, salt)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MutableRecord {
    pub public_key: PublicKey,
    pub salt: Vec<u8>,
    pub seq: u64,
    pub value: Vec<u8>,
    pub expires_at_ms: u64,
    /// Proof of work for `public_key` ([`crate::work`]); not signed.
    pub work: u64,
}

const RECORD_KEY_CONTEXT: &str = "shoal v1 mutable record key";

impl MutableRecord {
    /// Where a record of `public_key` and `salt` is stored.
    pub fn key_for(public_key: &PublicKey, salt: &[u8]) -> RecordKey {
        let mut h = blake3::Hasher::new_derive_key(RECORD_KEY_CONTEXT);
        h.update(public_key.as_bytes());
        h.update(&(salt.len() as u32).to_be_bytes());
        h.update(salt);
        RecordKey(*h.finalize().as_bytes())
    }

    pub fn key(&self) -> RecordKey {
        Self::key_for(&self.public_key, &self.salt)
    }
}

impl Signed<MutableRecord> {
    /// The same signed record carrying the work nonce `work` (which is not signed, so
    /// the signature still holds).
    pub fn with_work(self, work: u64) -> Self {
        self.replace_unsigned(|r| r.work = work)
    }
}

impl Signable for MutableRecord {
    const DOMAIN: Domain = Domain::MutableRecord;

    fn signer(&self) -> &PublicKey {
        &self.public_key
    }

    fn encode(&self, c: &mut Canonical) {
        // The key is not signed: it is implied by the signer and the salt.
        c.bytes(&self.salt)
            .u64(self.seq)
            .bytes(&self.value)
            .u64(self.expires_at_ms);
    }
}

impl TryFrom<pb::MutableRecord> for Signed<MutableRecord> {
    type Error = WireError;

    fn try_from(m: pb::MutableRecord) -> Result<Self, WireError> {
        if m.salt.len() > MAX_SALT_LEN {
            return Err(WireError::TooLong {
                field: "salt",
                limit: MAX_SALT_LEN,
                actual: m.salt.len(),
            });
        }
        if m.value.len() > MAX_RECORD_VALUE {
            return Err(WireError::TooLong {
                field: "value",
                limit: MAX_RECORD_VALUE,
                actual: m.value.len(),
            });
        }
        let body = MutableRecord {
            public_key: PublicKey::from_bytes("public_key", &m.public_key)?,
            salt: m.salt,
            seq: m.seq,
            value: m.value,
            expires_at_ms: nonzero("expires_at_ms", m.expires_at_ms)?,
            work: m.work,
        };
        Signed::verify(body, signature(&m.signature)?)
    }
}

impl From<&Signed<MutableRecord>> for pb::MutableRecord {
    fn from(s: &Signed<MutableRecord>) -> Self {
        Self {
            public_key: s.public_key.as_bytes().to_vec(),
            salt: s.salt.clone(),
            seq: s.seq,
            value: s.value.clone(),
            expires_at_ms: s.expires_at_ms,
            signature: s.signature().0.to_vec(),
            work: s.work,
        }
    }
}
