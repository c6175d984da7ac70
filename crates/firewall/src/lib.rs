//! Firewall state for the plugins: attachment identities, nftables batches applied through `nft`
//! (one transaction per invocation), the bridge plugin's masquerade, spoof-check and isolation
//! entries, and an iptables-restore backend compatible with the reference plugins' chain names.
//!
//! Only this crate runs `nft` or `iptables-restore`. Every table it touches is owned by one
//! plugin; other owners' rules are never listed or parsed.

pub mod base;
pub mod bridge;
pub mod conditions;
pub mod dbus;
pub mod filter;
pub mod filter_nft;
pub mod firewalld;
#[cfg(test)]
mod golden;
pub mod identity;
pub mod iptables;
pub mod iptables_portmap;
pub mod json;
pub mod lock;
pub mod native;
pub mod nft;
pub mod portmap;
pub mod reference;

pub use identity::Identity;

/// The sets and maps of every table this crate owns, so their elements can be sent natively.
pub(crate) fn schema() -> &'static native::Schema {
    static SCHEMA: std::sync::OnceLock<native::Schema> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| {
        let mut s = native::Schema::default();
        for table in bridge::base_tables().iter().chain([portmap::base_table(), filter_nft::base_table()].iter()) {
            s.declare(&table.objects);
        }
        s
    })
}
pub use nft::{Nft, NftError};

/// A test's condition at a point of this crate's work (debug builds; see [`cni::fault`]).
pub(crate) fn fault_enabled(name: &str) -> bool {
    cni::fault::enabled(&format!("firewall:{name}"))
}
