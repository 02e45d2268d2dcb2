//! Multi-node harness and integration tests. The harness arrives with the first
//! networked component (`[storage-node]`, `[dht]`).
