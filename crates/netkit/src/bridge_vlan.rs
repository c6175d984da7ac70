//! Bridge VLAN filtering: turn it on for a bridge, and set the VLANs of a bridge port.
//!
//! These need a kernel built with CONFIG_BRIDGE_VLAN_FILTERING; without it the kernel answers
//! EOPNOTSUPP, which [`vlan_unsupported`] recognises so callers can say what is missing.

use crate::netlink::NlError;
use crate::rtnl::Rtnl;
use netlink_packet_route::link::{
    AfSpecBridge, BridgeFlag, BridgeVlanInfo, BridgeVlanInfoFlags, InfoBridge, InfoData, InfoKind, LinkAttribute,
    LinkExtentMask, LinkInfo, LinkMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

/// Whether a failure means the kernel has no bridge VLAN filtering.
pub fn vlan_unsupported(err: &NlError) -> bool {
    err.is(nix::libc::EOPNOTSUPP)
}

/// RTM_NEWLINK that switches VLAN filtering on or off for the bridge `index`.
pub fn vlan_filtering_message(index: u32, on: bool) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Bridge),
        LinkInfo::Data(InfoData::Bridge(vec![InfoBridge::VlanFiltering(on)])),
    ]));
    msg
}

/// The AF_BRIDGE message that adds (RTM_SETLINK) or removes (RTM_DELLINK) VLAN `vid` on the
/// bridge port `index`, as `bridge vlan add dev PORT vid VID [pvid] [untagged] master` does.
pub fn port_vlan_message(index: u32, vid: u16, pvid: bool, untagged: bool) -> LinkMessage {
    let mut flags = BridgeVlanInfoFlags::empty();
    if pvid {
        flags |= BridgeVlanInfoFlags::Pvid;
    }
    if untagged {
        flags |= BridgeVlanInfoFlags::Untagged;
    }
    let mut msg = LinkMessage::default();
    msg.header.interface_family = AddressFamily::Bridge;
    msg.header.index = index;
    msg.attributes.push(LinkAttribute::AfSpecBridge(vec![
        AfSpecBridge::Flags(BridgeFlag::Controller),
        AfSpecBridge::VlanInfo(BridgeVlanInfo { flags, vid }),
    ]));
    msg
}

impl Rtnl {
    /// Turns VLAN filtering on or off for an existing bridge.
    pub fn set_vlan_filtering(&mut self, index: u32, on: bool) -> Result<(), NlError> {
        self.sock.execute(RouteNetlinkMessage::NewLink(vlan_filtering_message(index, on)), 0)
    }

    /// Adds VLAN `vid` to a bridge port; `pvid` makes it the port's native VLAN for untagged
    /// ingress, `untagged` strips the tag on egress.
    pub fn add_port_vlan(&mut self, index: u32, vid: u16, pvid: bool, untagged: bool) -> Result<(), NlError> {
        self.sock.execute(RouteNetlinkMessage::SetLink(port_vlan_message(index, vid, pvid, untagged)), 0)
    }

    pub fn del_port_vlan(&mut self, index: u32, vid: u16) -> Result<(), NlError> {
        self.sock.execute(RouteNetlinkMessage::DelLink(port_vlan_message(index, vid, false, false)), 0)
    }

    /// The VLANs configured on a bridge port.
    pub fn port_vlans(&mut self, index: u32) -> Result<Vec<u16>, NlError> {
        let replies = self.sock.dump(|| {
            let mut msg = LinkMessage::default();
            msg.header.interface_family = AddressFamily::Bridge;
            msg.attributes.push(LinkAttribute::ExtMask(vec![LinkExtentMask::Brvlan]));
            RouteNetlinkMessage::GetLink(msg)
        })?;
        let mut vids = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewLink(link) = reply else { continue };
            if link.header.index != index {
                continue;
            }
            for attr in link.attributes {
                if let LinkAttribute::AfSpecBridge(specs) = attr {
                    vids.extend(specs.into_iter().filter_map(|s| match s {
                        AfSpecBridge::VlanInfo(info) => Some(info.vid),
                        _ => None,
                    }));
                }
            }
        }
        Ok(vids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::Emitable;

    fn bytes(msg: &LinkMessage) -> Vec<u8> {
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.emit(&mut buf);
        buf
    }

    #[test]
    fn port_vlan_request_matches_the_kernel_abi() {
        let got = bytes(&port_vlan_message(7, 100, true, true));
        let mut want = vec![
            7, 0, 0, 0, // ifi_family AF_BRIDGE, pad, ifi_type 0
            7, 0, 0, 0, // ifi_index 7
            0, 0, 0, 0, // ifi_flags
            0, 0, 0, 0, // ifi_change
        ];
        // IFLA_AF_SPEC (26), nested: IFLA_BRIDGE_FLAGS (0) = BRIDGE_FLAGS_MASTER,
        // IFLA_BRIDGE_VLAN_INFO (2) = { flags PVID|UNTAGGED (6), vid 100 }.
        want.extend_from_slice(&[20, 0, 26, 0]);
        want.extend_from_slice(&[6, 0, 0, 0, 1, 0, 0, 0]);
        want.extend_from_slice(&[8, 0, 2, 0, 6, 0, 100, 0]);
        assert_eq!(got, want);
        // A trunk VLAN: neither PVID nor untagged.
        let trunk = bytes(&port_vlan_message(7, 4094, false, false));
        assert_eq!(&trunk[trunk.len() - 4..], &[0, 0, 0xfe, 0x0f]);
    }

    #[test]
    fn vlan_filtering_request_sets_ifla_br_vlan_filtering() {
        let got = bytes(&vlan_filtering_message(3, true));
        // IFLA_LINKINFO (18) { IFLA_INFO_KIND (1) "bridge", IFLA_INFO_DATA (2) { IFLA_BR_VLAN_FILTERING (7) = 1 } }
        let tail = &got[16..];
        assert_eq!(&tail[0..4], &[28, 0, 18, 0]);
        assert_eq!(&tail[4..15], &[11, 0, 1, 0, b'b', b'r', b'i', b'd', b'g', b'e', 0]);
        assert_eq!(&tail[16..28], &[12, 0, 2, 0, 5, 0, 7, 0, 1, 0, 0, 0]);
    }
}
