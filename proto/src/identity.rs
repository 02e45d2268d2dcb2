//! Identities: an ed25519 key pair whose node id carries proof of work.
//!
//! Proof of work is the number of trailing zero bits of the node id itself
//! (`NodeId = H(public key)`, see [`NodeId::difficulty`]). Generating an identity of
//! difficulty `d` therefore takes on average `2^d` key generations; verifying one is a
//! single hash. No nonce travels with the key: the id alone proves the work.
//!
//! Key files hold the 32-byte secret seed behind a magic and a checksum, are written
//! atomically with mode 0600 and refuse to load if others can read them.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::ops::ControlFlow;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use zeroize::Zeroizing;

use crate::error::IdentityError;
use crate::ids::{NodeId, PublicKey};

/// Proof-of-work difficulty that networks use unless configured otherwise. One attempt
/// costs 13.2 µs on one core of the reference machine (BENCHMARKS.md), so 2^19 attempts
/// take 6.9 s on average; the number of attempts is geometric, so 99% of generations end
/// within 32 s and 99.9% within 48 s, under a minute on one core.
pub const DEFAULT_DIFFICULTY: u32 = 19;

pub use crate::limits::MAX_DIFFICULTY;

const KEY_FILE_MAGIC: &[u8; 8] = b"SHOALID1";
const KEY_FILE_LEN: usize = 8 + 32 + 8;
const SEED_CONTEXT: &str = "shoal v1 identity seed";

/// A participant's key pair and the node id derived from it.
pub struct Identity {
    signing: SigningKey,
    public: PublicKey,
    node_id: NodeId,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("Identity")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// What generation reports while it searches.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Keys tried so far, over all threads.
    pub attempts: u64,
    pub elapsed: Duration,
    /// Expected number of attempts for this difficulty (2^difficulty).
    pub expected: u64,
}

impl Identity {
    /// The identity of a 32-byte secret seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(&seed);
        let public = PublicKey::from_verifying_key(signing.verifying_key());
        let node_id = public.node_id();
        Self {
            signing,
            public,
            node_id,
        }
    }

    /// A fresh identity with no proof-of-work requirement (uplink owner keys).
    pub fn random() -> Self {
        Self::from_seed(rand::random())
    }

    /// Generates an identity of at least `difficulty` bits on one thread.
    pub fn generate(difficulty: u32) -> Result<Self, IdentityError> {
        Self::generate_with(difficulty, 1, |_| ControlFlow::Continue(()))
    }

    /// Generates an identity of at least `difficulty` bits on `threads` threads, calling
    /// `progress` about ten times a second from the calling thread; returning
    /// `ControlFlow::Break` from it cancels the search.
    pub fn generate_with(
        difficulty: u32,
        threads: usize,
        mut progress: impl FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<Self, IdentityError> {
        if difficulty > MAX_DIFFICULTY {
            return Err(IdentityError::DifficultyTooHigh(difficulty));
        }
        let threads = threads.max(1);
        let attempts = AtomicU64::new(0);
        let stop = AtomicBool::new(false);
        let found: Mutex<Option<[u8; 32]>> = Mutex::new(None);
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let started = Instant::now();
        let expected = 1u64 << difficulty;

        let outcome = std::thread::scope(|scope| {
            for _ in 0..threads {
                let done_tx = done_tx.clone();
                let (attempts, stop, found) = (&attempts, &stop, &found);
                scope.spawn(move || {
                    // Seeds are H(random base, counter): unpredictable, and cheaper than
                    // asking the OS for 32 fresh bytes per attempt.
                    let base: [u8; 32] = rand::random();
                    let mut counter: u64 = 0;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..256 {
                            counter += 1;
                            let mut h = blake3::Hasher::new_derive_key(SEED_CONTEXT);
                            h.update(&base);
                            h.update(&counter.to_le_bytes());
                            let seed = *h.finalize().as_bytes();
                            let key = SigningKey::from_bytes(&seed);
                            let id = NodeId::from_public_key(&PublicKey::from_verifying_key(
                                key.verifying_key(),
                            ));
                            if id.difficulty() >= difficulty {
                                if let Ok(mut slot) = found.lock() {
                                    slot.get_or_insert(seed);
                                }
                                stop.store(true, Ordering::Relaxed);
                                let _ = done_tx.send(());
                                break;
                            }
                        }
                        attempts.fetch_add(256, Ordering::Relaxed);
                    }
                });
            }
            drop(done_tx);
            loop {
                match done_rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        let p = Progress {
                            attempts: attempts.load(Ordering::Relaxed),
                            elapsed: started.elapsed(),
                            expected,
                        };
                        if progress(&p).is_break() {
                            stop.store(true, Ordering::Relaxed);
                            return Err(IdentityError::Cancelled);
                        }
                    }
                }
            }
        });
        outcome?;
        let seed = found
            .into_inner()
            .ok()
            .flatten()
            .ok_or(IdentityError::Cancelled)?;
        Ok(Self::from_seed(seed))
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Proof-of-work bits of this identity's node id.
    pub fn difficulty(&self) -> u32 {
        self.node_id.difficulty()
    }

    /// The secret seed. Handle with care: whoever holds it is this identity.
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// Writes the key file at `path` (mode 0600, atomically). Refuses to replace an
    /// existing file unless `overwrite`.
    pub fn save(&self, path: &Path, overwrite: bool) -> Result<(), IdentityError> {
        let io_err = |source| IdentityError::Io {
            path: path.to_path_buf(),
            source,
        };
        if !overwrite && path.exists() {
            return Err(IdentityError::AlreadyExists {
                path: path.to_path_buf(),
            });
        }
        let mut contents = Zeroizing::new(Vec::with_capacity(KEY_FILE_LEN));
        contents.extend_from_slice(KEY_FILE_MAGIC);
        contents.extend_from_slice(self.seed().as_slice());
        let sum = checksum(&contents);
        contents.extend_from_slice(&sum);

        let tmp = tmp_path(path);
        let _ = fs::remove_file(&tmp);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err)?;
        file.write_all(&contents).map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
        drop(file);
        fs::rename(&tmp, path).map_err(io_err)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err)?;
        }
        Ok(())
    }

    /// Loads a key file written by [`Identity::save`].
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let p = || path.to_path_buf();
        let meta = fs::metadata(path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => IdentityError::Missing { path: p() },
            _ => IdentityError::Io { path: p(), source },
        })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::InsecurePermissions { path: p(), mode });
        }
        if meta.len() != KEY_FILE_LEN as u64 {
            return Err(IdentityError::WrongLength {
                path: p(),
                expected: KEY_FILE_LEN,
                actual: usize::try_from(meta.len()).unwrap_or(usize::MAX),
            });
        }
        let contents = Zeroizing::new(
            fs::read(path).map_err(|source| IdentityError::Io { path: p(), source })?,
        );
        if contents.len() != KEY_FILE_LEN {
            return Err(IdentityError::WrongLength {
                path: p(),
                expected: KEY_FILE_LEN,
                actual: contents.len(),
            });
        }
        if &contents[..8] != KEY_FILE_MAGIC {
            return Err(IdentityError::Corrupt {
                path: p(),
                reason: "it does not start with the Shoal identity magic",
            });
        }
        if checksum(&contents[..40]) != contents[40..] {
            return Err(IdentityError::Corrupt {
                path: p(),
                reason: "checksum mismatch (the file was damaged or edited)",
            });
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&contents[8..40]);
        Ok(Self::from_seed(*seed))
    }
}

/// Checks that a peer's node id carries at least `required` bits of work.
pub fn verify_work(node_id: &NodeId, required: u32) -> Result<(), IdentityError> {
    let actual = node_id.difficulty();
    if actual < required {
        return Err(IdentityError::InsufficientWork {
            node_id: node_id.to_hex(),
            actual,
            required,
        });
    }
    Ok(())
}

fn checksum(bytes: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&blake3::hash(bytes).as_bytes()[..8]);
    out
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_identity_meets_difficulty() {
        for d in [0, 1, 4, 8] {
            let id = Identity::generate(d).unwrap();
            assert!(id.difficulty() >= d);
            verify_work(&id.node_id(), d).unwrap();
        }
    }

    #[test]
    fn parallel_generation_reports_progress_and_can_cancel() {
        let id = Identity::generate_with(6, 2, |_| ControlFlow::Continue(())).unwrap();
        assert!(id.difficulty() >= 6);
        // Difficulty 32 never finishes in a test: cancel at the first report.
        let mut reports = 0;
        let err = Identity::generate_with(32, 2, |p| {
            reports += 1;
            assert_eq!(p.expected, 1 << 32);
            ControlFlow::Break(())
        })
        .unwrap_err();
        assert!(matches!(err, IdentityError::Cancelled));
        assert_eq!(reports, 1);
    }

    #[test]
    fn too_high_difficulty_is_refused() {
        assert!(matches!(
            Identity::generate(MAX_DIFFICULTY + 1),
            Err(IdentityError::DifficultyTooHigh(_))
        ));
    }

    #[test]
    fn id_below_required_difficulty_is_rejected() {
        let id = Identity::generate(4).unwrap();
        let have = id.difficulty();
        let err = verify_work(&id.node_id(), have + 1).unwrap_err();
        assert!(matches!(
            err,
            IdentityError::InsufficientWork { actual, required, .. } if actual == have && required == have + 1
        ));
        // A tampered id (one bit flipped at the tail) loses its work.
        let mut tampered = id.node_id();
        tampered.0[31] ^= 1;
        assert!(verify_work(&tampered, 1).is_err());
    }

    #[test]
    fn key_file_round_trip_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        let id = Identity::generate(3).unwrap();
        id.save(&path, false).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = Identity::load(&path).unwrap();
        assert_eq!(back.node_id(), id.node_id());
        assert_eq!(back.public_key(), id.public_key());
        // Refuses to overwrite unless asked to.
        assert!(matches!(
            Identity::random().save(&path, false),
            Err(IdentityError::AlreadyExists { .. })
        ));
        Identity::random().save(&path, true).unwrap();
        assert_ne!(Identity::load(&path).unwrap().node_id(), id.node_id());
    }

    #[test]
    fn bad_key_files_are_rejected_with_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        assert!(matches!(
            Identity::load(&path),
            Err(IdentityError::Missing { .. })
        ));

        Identity::random().save(&path, false).unwrap();
        let good = fs::read(&path).unwrap();
        let write = |bytes: &[u8]| {
            fs::write(&path, bytes).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        };

        write(&good[..40]);
        assert!(matches!(
            Identity::load(&path),
            Err(IdentityError::WrongLength { actual: 40, .. })
        ));

        let mut tampered = good.clone();
        tampered[20] ^= 0x01; // a flipped bit in the seed
        write(&tampered);
        assert!(matches!(
            Identity::load(&path),
            Err(IdentityError::Corrupt { .. })
        ));

        let mut wrong_magic = good.clone();
        wrong_magic[0] = b'X';
        write(&wrong_magic);
        assert!(matches!(
            Identity::load(&path),
            Err(IdentityError::Corrupt { .. })
        ));

        write(&good);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = Identity::load(&path).unwrap_err();
        assert!(matches!(
            err,
            IdentityError::InsecurePermissions { mode: 0o644, .. }
        ));
        assert!(err.to_string().contains("chmod 600"));
    }
}
