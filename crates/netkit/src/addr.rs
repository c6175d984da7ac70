//! Interface addresses: list, add, delete. Calls act in the handle's namespace.

use crate::netlink::NlError;
use crate::rtnl::{Family, Rtnl};
use ipnetwork::IpNetwork;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope};
use std::net::IpAddr;

/// An address on a link, with its prefix (`10.1.0.5/24`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub index: u32,
    pub net: IpNetwork,
    pub scope: u8,
    pub flags: AddressFlags,
}

impl Address {
    /// IPv6 duplicate address detection has not finished yet.
    pub fn is_tentative(&self) -> bool {
        self.flags.contains(AddressFlags::Tentative)
    }

    /// IPv6 duplicate address detection found a duplicate; the address is unusable.
    pub fn dad_failed(&self) -> bool {
        self.flags.contains(AddressFlags::Dadfailed)
    }

    /// Added without duplicate address detection (IFA_F_NODAD).
    pub fn is_nodad(&self) -> bool {
        self.flags.contains(AddressFlags::Nodad)
    }

    /// Global scope: not link-local, not host (loopback) scope.
    pub fn is_global(&self) -> bool {
        self.scope == u8::from(AddressScope::Universe)
    }
}

fn address_message(index: u32, net: IpNetwork) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = Family::of(&net.ip()).netlink();
    msg.header.prefix_len = net.prefix();
    msg.header.index = index;
    msg.attributes.push(AddressAttribute::Address(net.ip()));
    if let IpNetwork::V4(v4) = net {
        // For IPv4 the kernel keys the address on IFA_LOCAL; IFA_ADDRESS is the peer.
        msg.attributes.push(AddressAttribute::Local(net.ip()));
        if v4.prefix() < 31 {
            msg.attributes.push(AddressAttribute::Broadcast(v4.broadcast()));
        }
    }
    msg
}

impl Rtnl {
    /// Addresses of link `index` (all links when `None`), of one family or both.
    pub fn addresses(&mut self, index: Option<u32>, family: Option<Family>) -> Result<Vec<Address>, NlError> {
        let replies = self.sock.dump(|| {
            let mut msg = AddressMessage::default();
            if let Some(f) = family {
                msg.header.family = f.netlink();
            }
            if let Some(i) = index {
                msg.header.index = i;
            }
            RouteNetlinkMessage::GetAddress(msg)
        })?;
        let mut out = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewAddress(msg) = reply else {
                continue;
            };
            if index.is_some_and(|i| i != msg.header.index) {
                continue;
            }
            let mut ip: Option<IpAddr> = None;
            let mut flags = AddressFlags::from_bits_retain(u32::from(msg.header.flags.bits()));
            for attr in &msg.attributes {
                match attr {
                    // IFA_LOCAL is the interface's own address on point-to-point links; prefer it.
                    AddressAttribute::Local(a) => ip = Some(*a),
                    AddressAttribute::Address(a) if ip.is_none() => ip = Some(*a),
                    AddressAttribute::Flags(f) => flags = *f,
                    _ => {}
                }
            }
            let Some(ip) = ip else { continue };
            if family.is_some_and(|f| f != Family::of(&ip)) {
                continue;
            }
            let Ok(net) = IpNetwork::new(ip, msg.header.prefix_len) else {
                continue;
            };
            out.push(Address { index: msg.header.index, net, scope: u8::from(msg.header.scope), flags });
        }
        Ok(out)
    }

    /// Adds `net` to link `index`. `nodad` skips IPv6 duplicate address detection (IFA_F_NODAD),
    /// which is safe where we hand out every address on the segment ourselves. Fails with EEXIST
    /// if the address is already there.
    pub fn add_address(&mut self, index: u32, net: IpNetwork, nodad: bool) -> Result<(), NlError> {
        let mut msg = address_message(index, net);
        if nodad && net.is_ipv6() {
            msg.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        self.sock.execute(RouteNetlinkMessage::NewAddress(msg), NLM_F_CREATE | NLM_F_EXCL)
    }

    pub fn del_address(&mut self, index: u32, net: IpNetwork) -> Result<(), NlError> {
        self.sock.execute(RouteNetlinkMessage::DelAddress(address_message(index, net)), 0)
    }
}
