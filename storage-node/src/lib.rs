//! The storage node. Not built yet: it arrives with the `[storage-node]` issue.
