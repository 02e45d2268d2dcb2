//! The node's [`DhtPersistence`]: the DHT records it holds for the network and the
//! nodes it has verified, kept in its metadata database (tables `dht_records` and
//! `known_peers`), so that a restart forgets no record and joins through any node it
//! knew, not only through its configured bootstrap entries.
//!
//! The DHT calls these from blocking threads only (see [`DhtPersistence`]).

use std::sync::Arc;

use satellite_free_discovery::{DhtPersistence, PersistError};

use crate::store::PieceStore;

/// The DHT's store in the node's metadata database.
#[derive(Debug, Clone)]
pub struct NodeDhtStore {
    store: Arc<PieceStore>,
}

impl NodeDhtStore {
    pub fn new(store: Arc<PieceStore>) -> Self {
        Self { store }
    }
}

impl DhtPersistence for NodeDhtStore {
    fn load_records(&self, now_ms: u64, limit: usize) -> Result<Vec<Vec<u8>>, PersistError> {
        let records = self
            .store
            .meta()
            .dht_records(now_ms, limit)
            .map_err(PersistError::new)?;
        Ok(records.into_iter().map(|(record, _)| record).collect())
    }

    fn save_record(
        &self,
        key: &[u8; 32],
        record: &[u8],
        expires_at_ms: u64,
    ) -> Result<(), PersistError> {
        self.store
            .meta()
            .put_dht_record(key, record, expires_at_ms)
            .map(drop)
            .map_err(PersistError::new)
    }

    fn remove_record(&self, key: &[u8; 32]) -> Result<(), PersistError> {
        self.store
            .meta()
            .remove_dht_record(key)
            .map(drop)
            .map_err(PersistError::new)
    }

    fn remove_expired_records(&self, now_ms: u64) -> Result<(), PersistError> {
        self.store
            .meta()
            .remove_expired_dht_records(now_ms)
            .map(drop)
            .map_err(PersistError::new)
    }

    fn load_peers(&self, limit: usize) -> Result<Vec<(Vec<u8>, u64)>, PersistError> {
        self.store
            .meta()
            .known_peers(limit)
            .map_err(PersistError::new)
    }

    fn save_peers(&self, peers: &[([u8; 32], Vec<u8>, u64)]) -> Result<(), PersistError> {
        self.store
            .meta()
            .put_known_peers(peers)
            .map(drop)
            .map_err(PersistError::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The node's store keeps what the DHT gives it across a reopen of the directory.
    #[test]
    fn records_and_peers_survive_a_reopen_and_expired_records_go() {
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            let (store, _) = PieceStore::open(dir.path(), 1 << 30).unwrap();
            NodeDhtStore::new(store)
        };
        let s = open();
        s.save_record(&[1; 32], b"one", 1_000).unwrap();
        s.save_record(&[2; 32], b"two", 5_000).unwrap();
        s.save_record(&[2; 32], b"two, newer", 6_000).unwrap();
        s.save_record(&[3; 32], b"three", 7_000).unwrap();
        s.remove_record(&[3; 32]).unwrap();
        s.save_peers(&[
            ([9; 32], b"old".to_vec(), 10),
            ([8; 32], b"new".to_vec(), 20),
        ])
        .unwrap();
        s.save_peers(&[([9; 32], b"old, seen again".to_vec(), 30)])
            .unwrap();
        s.store.flush().unwrap();
        drop(s);

        let s = open();
        assert_eq!(
            s.load_records(2_000, 10).unwrap(),
            vec![b"two, newer".to_vec()]
        );
        assert_eq!(s.load_records(500, 10).unwrap().len(), 2);
        assert_eq!(s.load_records(500, 1).unwrap().len(), 1, "bounded");
        s.remove_expired_records(2_000).unwrap();
        assert_eq!(s.load_records(0, 10).unwrap().len(), 1);
        assert_eq!(
            s.load_peers(10).unwrap(),
            vec![(b"old, seen again".to_vec(), 30), (b"new".to_vec(), 20)]
        );
        assert_eq!(s.load_peers(1).unwrap().len(), 1);
    }
}
