//! The proof of work that lets this uplink's key publish DHT records
//! ([`shoal_proto::work`]): found once per key and difficulty, off the runtime, and
//! kept in the catalog store so that later commands pay nothing.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use shoal_proto::ids::PublicKey;
use shoal_proto::work::{check_publisher_work, find_publisher_work};

use crate::catalog::Catalog;

/// Name of the value in the catalog's sync state.
const KEY: &str = "publisher_work";
/// Most keys kept (one grant has one owner key; a config dir rarely sees more).
const MAX_KEPT: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Kept {
    #[serde(with = "crate::hexser")]
    key: [u8; 32],
    nonce: u64,
}

/// Work nonces for publisher keys at the network's difficulty.
#[derive(Debug)]
pub struct PublisherWork {
    difficulty: u32,
    found: Mutex<HashMap<[u8; 32], u64>>,
    store: Option<Catalog>,
}

impl PublisherWork {
    /// Work at `difficulty` bits, kept in memory only until [`PublisherWork::kept_in`].
    pub fn new(difficulty: u32) -> Self {
        Self {
            difficulty,
            found: Mutex::new(HashMap::new()),
            store: None,
        }
    }

    /// Keeps the nonces found in `catalog`'s sync state (and reads those kept there).
    pub fn kept_in(mut self, catalog: Catalog) -> Self {
        self.store = Some(catalog);
        self
    }

    /// A nonce proving the network's difficulty for `key`: remembered, read from the
    /// store, or searched for (`2^difficulty` hashes on average, on a blocking thread).
    pub async fn nonce_for(&self, key: &PublicKey) -> u64 {
        let k = *key.as_bytes();
        if let Some(n) = self.found.lock().ok().and_then(|f| f.get(&k).copied()) {
            return n;
        }
        let (difficulty, store, key) = (self.difficulty, self.store.clone(), *key);
        let search = move || {
            let kept = store.as_ref().map(load).unwrap_or_default();
            if let Some(n) = kept
                .iter()
                .find(|p| p.key == k)
                .map(|p| p.nonce)
                .filter(|n| check_publisher_work(&key, *n, difficulty).is_ok())
            {
                return n;
            }
            let nonce = find_publisher_work(&key, difficulty);
            if let Some(c) = &store {
                let mut kept: Vec<Kept> = kept.into_iter().filter(|p| p.key != k).collect();
                kept.insert(0, Kept { key: k, nonce });
                kept.truncate(MAX_KEPT);
                // Only a cache: losing it costs one more search.
                if let Err(e) = c.set_sync_value(KEY, &kept) {
                    tracing::debug!(error = %e, "cannot keep the publisher work found");
                }
            }
            nonce
        };
        let nonce = match tokio::task::spawn_blocking(search).await {
            Ok(n) => n,
            // The search panicked or was cancelled at shutdown: the record goes out
            // without work and is refused, which the put reports.
            Err(_) => return 0,
        };
        if let Ok(mut f) = self.found.lock() {
            f.insert(k, nonce);
        }
        nonce
    }
}

fn load(catalog: &Catalog) -> Vec<Kept> {
    match catalog.sync_value::<Vec<Kept>>(KEY) {
        Ok(Some(v)) => v,
        Ok(None) => Vec::new(),
        Err(e) => {
            tracing::debug!(error = %e, "publisher work unreadable; searching again");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::Identity;

    #[tokio::test]
    async fn work_found_once_is_kept_in_the_catalog_and_checked_when_read() {
        let catalog = Catalog::temporary().unwrap();
        let id = Identity::from_seed([5; 32]);
        let key = id.public_key();
        let w = PublisherWork::new(10).kept_in(catalog.clone());
        let nonce = w.nonce_for(key).await;
        assert!(check_publisher_work(key, nonce, 10).is_ok());
        assert_eq!(
            load(&catalog),
            vec![Kept {
                key: *key.as_bytes(),
                nonce
            }]
        );

        // A later process reads it back.
        let again = PublisherWork::new(10).kept_in(catalog.clone());
        assert_eq!(again.nonce_for(key).await, nonce);

        // A kept nonce that does not prove the difficulty asked for is searched again.
        let bad = (0..)
            .find(|n| check_publisher_work(key, *n, 14).is_err())
            .unwrap();
        catalog
            .set_sync_value(
                KEY,
                &vec![Kept {
                    key: *key.as_bytes(),
                    nonce: bad,
                }],
            )
            .unwrap();
        let harder = PublisherWork::new(14).kept_in(catalog.clone());
        let n = harder.nonce_for(key).await;
        assert!(check_publisher_work(key, n, 14).is_ok());
    }
}
