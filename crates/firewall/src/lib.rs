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
        s.declare_table("inet", bridge::TABLE, || bridge::base_tables()[0].objects.clone());
        s.declare_table("bridge", bridge::TABLE, || bridge::base_tables()[1].objects.clone());
        s.declare_table("inet", portmap::TABLE, || portmap::base_table().objects);
        s.declare_table("inet", filter_nft::TABLE, || filter_nft::base_table().objects);
        s
    })
}
pub use nft::{Nft, NftError};

/// A test's condition at a point of this crate's work (debug builds; see [`cni::fault`]).
pub(crate) fn fault_enabled(name: &str) -> bool {
    cni::fault::enabled(&format!("firewall:{name}"))
}

#[cfg(test)]
mod schema_tests {
    /// The lazy declarations name each table as the table itself does: every set and map of
    /// every base table can be encoded.
    #[test]
    fn every_set_and_map_of_the_base_tables_is_declared() {
        let mut all = Vec::from(crate::bridge::base_tables());
        all.extend([crate::portmap::base_table(), crate::filter_nft::base_table()]);
        let mut seen = 0;
        for table in &all {
            for object in &table.objects {
                for kind in ["set", "map"] {
                    let Some(body) = object.get(kind) else { continue };
                    let name = body["name"].as_str().unwrap();
                    assert!(
                        crate::schema().get(table.family, table.name, name).is_some(),
                        "{} {} {name}",
                        table.family,
                        table.name
                    );
                    seen += 1;
                }
            }
        }
        assert!(seen > 5, "{seen}");
    }
}
