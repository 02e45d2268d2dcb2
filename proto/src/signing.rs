//! Domain-separated signatures over one canonical encoding.
//!
//! Protobuf has no canonical byte form, so signatures never cover protobuf bytes. Each
//! signed message kind instead writes its fields, in a fixed order, with [`Canonical`]:
//! fixed-size fields raw, integers big-endian, variable fields length-prefixed. The signed
//! bytes are `tag || 0x00 || body`, where `tag` names the message kind ([`Domain`]); tags
//! contain no NUL, so no two kinds share a signed byte string and a signature made for
//! one purpose never verifies for another.

use std::fmt;
use std::ops::Deref;

use ed25519_dalek::Signer;

pub use crate::domain::Domain;
use crate::error::{IdentityError, WireError};
use crate::identity::Identity;
use crate::ids::{PublicKey, Signature};

/// Builder of the canonical byte encoding that signatures cover.
#[derive(Debug)]
pub struct Canonical(Vec<u8>);

impl Canonical {
    /// Starts the signed byte string of `domain`.
    pub fn new(domain: Domain) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(domain.tag().as_bytes());
        buf.push(0);
        Self(buf)
    }

    /// A field whose length the schema fixes (ids, keys, hashes).
    pub fn fixed(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A variable-length field, prefixed with its length.
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        // Every variable field is bounded far below 4 GiB by `limits`.
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.u32(len);
        self.0.extend_from_slice(bytes);
        self
    }

    /// A list of variable-length items, prefixed with its count.
    pub fn list<I, B>(&mut self, items: I) -> &mut Self
    where
        I: ExactSizeIterator<Item = B>,
        B: AsRef<[u8]>,
    {
        self.u32(u32::try_from(items.len()).unwrap_or(u32::MAX));
        for item in items {
            self.bytes(item.as_ref());
        }
        self
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// Signs `body` (already canonical) for `domain`.
pub fn sign_raw(identity: &Identity, domain: Domain, body: &[u8]) -> Signature {
    let mut c = Canonical::new(domain);
    c.fixed(body);
    Signature(identity.signing_key().sign(&c.into_bytes()).to_bytes())
}

/// Verifies a signature made by [`sign_raw`].
pub fn verify_raw(
    key: &PublicKey,
    domain: Domain,
    body: &[u8],
    signature: &Signature,
) -> Result<(), WireError> {
    let mut c = Canonical::new(domain);
    c.fixed(body);
    let sig = ed25519_dalek::Signature::from_bytes(signature.as_bytes());
    key.verifying_key()
        .verify_strict(&c.into_bytes(), &sig)
        .map_err(|_| WireError::BadSignature { domain })
}

/// A message kind that is signed by a key named inside it.
pub trait Signable {
    const DOMAIN: Domain;

    /// The key that must have signed this message.
    fn signer(&self) -> &PublicKey;

    /// Writes every field, in schema order, into `out`.
    fn encode(&self, out: &mut Canonical);

    /// The exact bytes the signature covers.
    fn signed_bytes(&self) -> Vec<u8> {
        let mut c = Canonical::new(Self::DOMAIN);
        self.encode(&mut c);
        c.into_bytes()
    }
}

/// A message whose signature has been checked (or was made here). A `Signed<T>` can only
/// be obtained by signing or by verifying, so holding one proves the signature is good.
#[derive(Clone, PartialEq, Eq)]
pub struct Signed<T> {
    body: T,
    signature: Signature,
}

impl<T: Signable> Signed<T> {
    /// Signs `body` with `identity`, which must be the signer the body names.
    pub fn sign(body: T, identity: &Identity) -> Result<Self, IdentityError> {
        if body.signer() != identity.public_key() {
            return Err(IdentityError::WrongSigner { domain: T::DOMAIN });
        }
        let sig = identity.signing_key().sign(&body.signed_bytes());
        Ok(Self {
            body,
            signature: Signature(sig.to_bytes()),
        })
    }

    /// Checks `signature` over `body` against the signer the body names.
    pub fn verify(body: T, signature: Signature) -> Result<Self, WireError> {
        let sig = ed25519_dalek::Signature::from_bytes(signature.as_bytes());
        // Strict verification: rejects small-order keys and non-canonical signatures, so
        // a signature cannot be malleated into a second valid one.
        body.signer()
            .verifying_key()
            .verify_strict(&body.signed_bytes(), &sig)
            .map_err(|_| WireError::BadSignature { domain: T::DOMAIN })?;
        Ok(Self { body, signature })
    }

    pub fn body(&self) -> &T {
        &self.body
    }

    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    pub fn into_body(self) -> T {
        self.body
    }

    /// Changes fields of the body that the signature does not cover (the signed bytes
    /// must come out the same: checked, and a change to them is refused by leaving the
    /// body as it was).
    pub(crate) fn replace_unsigned(self, f: impl FnOnce(&mut T)) -> Self
    where
        T: Clone,
    {
        let before = self.body.signed_bytes();
        let mut body = self.body.clone();
        f(&mut body);
        if body.signed_bytes() != before {
            return self;
        }
        Self {
            body,
            signature: self.signature,
        }
    }
}

impl<T> Deref for Signed<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.body
    }
}

impl<T: fmt::Debug> fmt::Debug for Signed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signed")
            .field("body", &self.body)
            .field("signature", &self.signature)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_distinct_and_nul_free() {
        let mut tags: Vec<_> = Domain::ALL.iter().map(|d| d.tag()).collect();
        assert!(tags.iter().all(|t| !t.as_bytes().contains(&0)));
        tags.sort();
        tags.dedup();
        assert_eq!(tags.len(), Domain::ALL.len());
    }

    #[test]
    fn a_signature_for_one_domain_fails_for_every_other() {
        let id = Identity::from_seed([3; 32]);
        let body = b"the same canonical body bytes";
        for signed_for in Domain::ALL {
            let sig = sign_raw(&id, signed_for, body);
            for checked_as in Domain::ALL {
                let result = verify_raw(id.public_key(), checked_as, body, &sig);
                if signed_for == checked_as {
                    assert_eq!(result, Ok(()), "{signed_for} must verify as itself");
                } else {
                    assert_eq!(
                        result,
                        Err(WireError::BadSignature { domain: checked_as }),
                        "{signed_for} signature verified as {checked_as}"
                    );
                }
            }
        }
    }

    #[test]
    fn canonical_encoding_is_unambiguous_for_adjacent_variable_fields() {
        // ("ab", "c") and ("a", "bc") must not encode alike.
        let mut x = Canonical::new(Domain::NodeRecord);
        x.bytes(b"ab").bytes(b"c");
        let mut y = Canonical::new(Domain::NodeRecord);
        y.bytes(b"a").bytes(b"bc");
        assert_ne!(x.into_bytes(), y.into_bytes());
    }
}
