//! What a signature is for: [`Domain`], one tag per signed message kind, prepended to
//! every signed byte string (see [`crate::signing`]). Imports nothing of this crate, so
//! the errors can name a domain without depending on signing.

use std::fmt;

/// What a signature is for. Each kind has its own tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Domain {
    UploadOrder,
    UploadTrailer,
    Receipt,
    DownloadOrder,
    DeleteOrder,
    AuditOrder,
    RenewOrder,
    NodeRecord,
    MutableRecord,
    ListPiecesOrder,
}

impl Domain {
    pub const ALL: [Domain; 10] = [
        Domain::UploadOrder,
        Domain::UploadTrailer,
        Domain::Receipt,
        Domain::DownloadOrder,
        Domain::DeleteOrder,
        Domain::AuditOrder,
        Domain::RenewOrder,
        Domain::NodeRecord,
        Domain::MutableRecord,
        Domain::ListPiecesOrder,
    ];

    /// The domain-separation tag prepended to every signed byte string of this kind.
    pub fn tag(self) -> &'static str {
        match self {
            Domain::UploadOrder => "shoal/v1/upload-order",
            Domain::UploadTrailer => "shoal/v1/upload-trailer",
            Domain::Receipt => "shoal/v1/receipt",
            Domain::DownloadOrder => "shoal/v1/download-order",
            Domain::DeleteOrder => "shoal/v1/delete-order",
            Domain::AuditOrder => "shoal/v1/audit-order",
            Domain::RenewOrder => "shoal/v1/renew-order",
            Domain::NodeRecord => "shoal/v1/node-record",
            Domain::MutableRecord => "shoal/v1/mutable-record",
            Domain::ListPiecesOrder => "shoal/v1/list-pieces-order",
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tag())
    }
}
