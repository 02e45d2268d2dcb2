//! Kademlia DHT that replaces Storj's satellite. Not built yet: it arrives with the
//! `[dht]` issue (sans-IO core, tokio/tonic driver, record store, simulator).
