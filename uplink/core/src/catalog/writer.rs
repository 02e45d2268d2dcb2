//! This replica's writer id: kept in the database, and moved to a new one when the
//! catalog sync finds another copy of this config dir writing under it.

use super::*;

impl Catalog {
    fn remember_writer(&self, w: WriterId) {
        match self.writer.write() {
            Ok(mut held) => *held = w,
            Err(poisoned) => *poisoned.into_inner() = w,
        }
    }

    /// This replica's writer id as the database holds it now (another process using
    /// this catalog dir may have moved it to a new id), remembered for
    /// [`Catalog::writer`].
    pub fn current_writer(&self) -> Result<WriterId, CatalogError> {
        let w = self
            .db
            .read("current_writer", |tx| sync_get::<WriterId>(tx, WRITER))?
            .unwrap_or_else(|| self.writer());
        self.remember_writer(w);
        Ok(w)
    }

    /// Moves this replica to a new, random writer id, in one transaction with `then`,
    /// unless it moved from `old` already (another process using this catalog dir did
    /// it): every entry and tombstone written under `old` is queued again, so that the
    /// next publish (under the new id) carries whatever the network lost of `old`'s log.
    /// Returns the id in use afterwards.
    ///
    /// The catalog sync calls it when the network holds a log under this replica's id
    /// that this replica did not write (a cloned or restored config dir).
    pub fn rotate_writer(
        &self,
        old: WriterId,
        then: impl FnOnce(&SyncTx<'_, '_>, WriterId) -> Result<(), CatalogError>,
    ) -> Result<WriterId, CatalogError> {
        let mine = self.written_by(old)?;
        let w = self.db.write("rotate_writer", |tx| {
            let held = sync_get::<WriterId>(tx, WRITER)?.unwrap_or(old);
            if held != old {
                return Ok(held);
            }
            let new = WriterId::random();
            sync_set(tx, WRITER, &new)?;
            requeue_in(tx, &mine)?;
            then(&SyncTx { tx }, new)?;
            Ok(new)
        })?;
        self.remember_writer(w);
        Ok(w)
    }

    /// Queues again every entry and tombstone whose version writer `w` made, as held
    /// now: after a replica moved off `w` and merged `w`'s log as written by another
    /// copy, its next publish carries both copies' changes, so a reader that merged only
    /// one copy's delta of a sequence number both used gets the other's too. Returns
    /// how many were queued.
    pub fn requeue_writer(&self, w: WriterId) -> Result<usize, CatalogError> {
        let changes = self.written_by(w)?;
        self.db
            .write("requeue_writer", |tx| requeue_in(tx, &changes))
    }

    fn written_by(&self, w: WriterId) -> Result<Vec<Change>, CatalogError> {
        Ok(self
            .all_changes()?
            .into_iter()
            .filter(|c| c.version.writer == w)
            .collect())
    }
}
