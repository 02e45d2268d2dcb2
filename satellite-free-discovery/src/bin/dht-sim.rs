//! `dht-sim`: drives the DHT core over an in-memory network with virtual time.
fn main() {}
