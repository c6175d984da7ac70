//! `host-local`: IPAM that hands out addresses from configured ranges and keeps its state in files
//! under `dataDir` (Docker's built-in IPAM, in CNI form).
//!
//! The store is the reference's, file for file, so a node can switch between the Go binary and
//! this one with its allocations intact; see [`host_local::store`] for the index that keeps every verb's cost
//! flat as the store grows, and for crash safety.

fn main() {
    cni::skel::run(host_local::HostLocal)
}
