//! Firewall state for the plugins: attachment identities, nftables batches applied through `nft`
//! (one transaction per invocation), the bridge plugin's masquerade, spoof-check and isolation
//! entries, and an iptables-restore backend compatible with the reference plugins' chain names.
//!
//! Only this crate runs `nft` or `iptables-restore`. Every table it touches is owned by one
//! plugin; other owners' rules are never listed or parsed.

pub mod base;
pub mod bridge;
pub mod conditions;
pub mod identity;
pub mod iptables;
pub mod iptables_portmap;
pub mod json;
pub mod nft;
pub mod portmap;

pub use identity::Identity;
pub use nft::{Nft, NftError};
