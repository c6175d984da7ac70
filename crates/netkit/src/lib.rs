//! Kernel plumbing for the plugins: network namespaces, a synchronous route-netlink handle with
//! link, address and route operations named after what they do in the kernel, and sysctls.
//!
//! Only this crate calls `setns`. Every operation acts in the namespace its [`Rtnl`] handle was
//! opened in; container-side work opens its handle with [`Rtnl::open_in`].

pub mod addr;
pub mod bridge_vlan;
pub mod conntrack;
pub mod dummy;
pub mod iface;
pub mod link;
pub mod link_settings;
pub mod macvlan;
pub mod netlink;
pub mod netns;
pub mod policy;
pub mod route;
pub mod rtnl;
pub mod sublink;
pub mod sysctl;
pub mod tc;
pub mod tempname;
pub mod tuntap;

pub use addr::Address;
// MAC text is the protocol's (`cni::linkconf`); the plugins that build links from it find it here too.
pub use cni::linkconf::parse_mac;
pub use link::{Link, VethPair, format_mac};
pub use link_settings::{LinkSettings, parse_hwaddr};
pub use netlink::NlError;
pub use netns::NetNs;
pub use route::RouteSpec;
pub use rtnl::{Family, Rtnl};

/// The errno of the first netlink or I/O failure in an error chain, if any: for the places that
/// treat "already there" or "already gone" as success.
pub fn errno_of(err: &anyhow::Error) -> Option<i32> {
    err.chain().find_map(|cause| {
        cause
            .downcast_ref::<NlError>()
            .and_then(NlError::errno)
            .or_else(|| cause.downcast_ref::<std::io::Error>().and_then(std::io::Error::raw_os_error))
    })
}
