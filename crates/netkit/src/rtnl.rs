//! A route-netlink handle bound to one network namespace.

use crate::netlink::{NlError, Socket};
use crate::netns::NetNs;
use netlink_packet_route::RouteNetlinkMessage;

/// A NETLINK_ROUTE socket. Links, addresses and routes it changes are those of the namespace it
/// was opened in, whichever thread uses it later.
pub struct Rtnl {
    pub(crate) sock: Socket<RouteNetlinkMessage>,
}

impl Rtnl {
    /// Opens a handle on the calling thread's namespace. Requires CAP_NET_ADMIN to change things.
    pub fn open() -> Result<Rtnl, NlError> {
        Ok(Rtnl { sock: Socket::open(netlink_sys::constants::NETLINK_ROUTE)? })
    }

    /// Opens a handle on `ns` (the socket is created on a thread inside it).
    pub fn open_in(ns: &NetNs) -> anyhow::Result<Rtnl> {
        Ok(ns.run(Rtnl::open)??)
    }
}

/// An address family, for the calls that dump one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &std::net::IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }

    pub(crate) fn netlink(self) -> netlink_packet_route::AddressFamily {
        match self {
            Family::V4 => netlink_packet_route::AddressFamily::Inet,
            Family::V6 => netlink_packet_route::AddressFamily::Inet6,
        }
    }
}
