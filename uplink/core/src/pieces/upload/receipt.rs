//! The receipt rule: what makes a node's receipt proof that it stored our piece (also
//! used by repair for regenerated pieces).

use shoal_proto::messages::{Receipt, UploadOrder};
use shoal_proto::{PieceHash, Signed};

use crate::store::{NodeCandidate, PieceError};

/// A receipt counts only if the node we chose signed it for exactly what we sent.
pub(in crate::pieces) fn verify_receipt(
    receipt: &Signed<Receipt>,
    order: &UploadOrder,
    node: &NodeCandidate,
    sent: Option<(u64, PieceHash)>,
) -> Result<(), PieceError> {
    let bad = |reason: &str| PieceError::Protocol {
        node: node.id,
        reason: format!("receipt rejected: {reason}"),
    };
    let Some((size, hash)) = sent else {
        return Err(bad("the node answered before the upload was complete"));
    };
    if receipt.node_id() != node.id || node.public_key.is_some_and(|k| k != receipt.node_key) {
        return Err(bad("signed by another node"));
    }
    if receipt.piece_id != order.piece_id || receipt.owner_key != order.header.owner_key {
        return Err(bad("for another piece or owner"));
    }
    if receipt.size != size || receipt.piece_hash != hash {
        return Err(PieceError::Corrupt {
            node: node.id,
            reason: "receipt is for other data than was sent".into(),
        });
    }
    if receipt.expires_at_ms < order.expires_at_ms {
        return Err(bad("lease shorter than ordered"));
    }
    Ok(())
}
