//! A network of real hosts for tests: every storage node in a Linux network namespace
//! of its own, with an address that exists only inside the harness.
//!
//! ```text
//!            hub namespace (shoalns-PID-I-hub)
//!   ┌────────────── bridge br0 ───────────────┐
//!   n0        n1   …   nK            c0    c1     hub ends of veth pairs
//!   │         │        │             │     │
//!  node 0   node 1   node K       client 0 client 1   one namespace each,
//!  10.N.1.2 10.N.2.2 10.N.K+1.2   10.N.200.2 …         eth0 on 10.N.0.0/16
//! ```
//!
//! - Every interface is on the /16 `10.N.0.0/16` (N from the pid and an instance
//!   counter) and on one bridge, so all reach each other on L2; node `i` is alone in
//!   its /24 `10.N.(i+1).0/24`, so the public network's "one piece per /24" lets a
//!   segment use every node. Nothing is routed anywhere else, and nothing is created
//!   or changed in the root namespace: links are made inside the hub with `ip -n`.
//! - Nodes do **not** run with `local_network`: their config declares the harness's
//!   range as a test range (`test_address_ranges`, see `shoal_proto::address`), so
//!   every other public-network rule (address checks, dial-backs, per-/24 limits,
//!   per-peer caps) holds. So do the uplink config dirs.
//! - Nodes are the real `storage-node` binary, run with `ip netns exec`; `uplink`
//!   commands and the gateway run in a client namespace. [`in_namespace`] runs a future
//!   on a thread inside a namespace (probes of node metrics, DHT samples).
//! - [`NetnsNetwork::cut`] / [`NetnsNetwork::reconnect`] pull and plug a member's
//!   cable; [`NetnsNetwork::split`] puts groups on bridges of their own (a partition)
//!   and [`NetnsNetwork::heal`] undoes every split and cut; [`NetnsNetwork::kill`]
//!   is `kill -9` and [`NetnsNetwork::restart`] starts a node again on its directory.
//! - Dropping the network (or [`NetnsNetwork::teardown`]) kills every process it
//!   started, by pid, and deletes every namespace it made (with them, the veth pairs
//!   and bridges), on a panic too; namespaces left by a harness process that was killed
//!   are removed by the next one (names carry the pid).
//!
//! It needs root and iproute2; without them [`NetnsNetwork::start`] fails with the
//! reason (a test never passes without running).

mod network;
mod plumbing;

pub use network::{
    DIFFICULTY, GRPC_PORT, HTTP_PORT, Member, NetnsNetwork, NetnsOptions, NodeSpec, NsClient,
    NsNode, UplinkRunner,
};
pub use plumbing::in_namespace;
