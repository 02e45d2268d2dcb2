//! The uplink client library and CLI. Not built yet: it arrives with the `[uplink]` issue.
