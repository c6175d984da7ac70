//! macvlan links: create one on a lower device (directly in another namespace if asked), and
//! read back its mode.
//!
//! A macvlan is an extra MAC address on its lower device (the "master"): frames for that MAC
//! reach the macvlan, whichever namespace it lives in. The kernel only accepts Ethernet lowers
//! (not `lo`, not Wi-Fi: EINVAL), and one `passthru` macvlan per lower, which takes over the
//! lower's MAC.

use crate::netlink::NlError;
use crate::rtnl::{Family, Rtnl};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{InfoData, InfoKind, InfoMacVlan, LinkAttribute, LinkInfo, LinkMessage, MacVlanMode};
use std::os::fd::{AsRawFd, BorrowedFd};

/// The macvlan modes, by the names configs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bridge,
    Private,
    Vepa,
    Passthru,
    /// Receives only from the source MACs listed on the link (none at creation).
    Source,
}

impl Mode {
    /// `""` is `bridge`, the reference's default.
    pub fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "" | "bridge" => Mode::Bridge,
            "private" => Mode::Private,
            "vepa" => Mode::Vepa,
            "passthru" => Mode::Passthru,
            "source" => Mode::Source,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Bridge => "bridge",
            Mode::Private => "private",
            Mode::Vepa => "vepa",
            Mode::Passthru => "passthru",
            Mode::Source => "source",
        }
    }

    fn netlink(self) -> MacVlanMode {
        match self {
            Mode::Bridge => MacVlanMode::Bridge,
            Mode::Private => MacVlanMode::Private,
            Mode::Vepa => MacVlanMode::Vepa,
            Mode::Passthru => MacVlanMode::Passthrough,
            Mode::Source => MacVlanMode::Source,
        }
    }

    fn from_netlink(m: MacVlanMode) -> Option<Mode> {
        Some(match m {
            MacVlanMode::Bridge => Mode::Bridge,
            MacVlanMode::Private => Mode::Private,
            MacVlanMode::Vepa => Mode::Vepa,
            MacVlanMode::Passthrough => Mode::Passthru,
            MacVlanMode::Source => Mode::Source,
            _ => return None,
        })
    }
}

/// A macvlan to create: `name` on lower device `parent` (an index in the handle's namespace),
/// born in `ns` when given, else in the handle's namespace.
#[derive(Debug, Clone, Copy)]
pub struct Macvlan<'a> {
    pub name: &'a str,
    pub parent: u32,
    pub mode: Mode,
    pub mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
    pub bc_queue_len: Option<u32>,
    pub ns: Option<BorrowedFd<'a>>,
}

impl Rtnl {
    /// Creates the macvlan, down. EEXIST when the name is taken where it is born, EINVAL for a
    /// lower that is not Ethernet.
    pub fn create_macvlan(&mut self, m: &Macvlan) -> Result<(), NlError> {
        let mut msg = LinkMessage::default();
        let attrs = &mut msg.attributes;
        attrs.push(LinkAttribute::IfName(m.name.to_string()));
        attrs.push(LinkAttribute::Link(m.parent));
        if let Some(mtu) = m.mtu {
            attrs.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = m.mac {
            attrs.push(LinkAttribute::Address(mac.to_vec()));
        }
        if let Some(ns) = m.ns {
            attrs.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
        }
        let mut data = vec![InfoMacVlan::Mode(m.mode.netlink())];
        if let Some(len) = m.bc_queue_len {
            data.push(InfoMacVlan::BcQueueLen(len));
        }
        attrs.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::MacVlan),
            LinkInfo::Data(InfoData::MacVlan(data)),
        ]));
        self.sock.execute(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// The mode of macvlan `index`; `None` when there is no such link or it is no macvlan.
    pub fn macvlan_mode(&mut self, index: u32) -> Result<Option<Mode>, NlError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        let replies = match self.sock.query(RouteNetlinkMessage::GetLink(msg)) {
            Err(e) if e.is(nix::libc::ENODEV) => return Ok(None),
            other => other?,
        };
        for reply in replies {
            let RouteNetlinkMessage::NewLink(link) = reply else { continue };
            for attr in link.attributes {
                let LinkAttribute::LinkInfo(infos) = attr else { continue };
                for info in infos {
                    if let LinkInfo::Data(InfoData::MacVlan(data)) = info {
                        return Ok(data.into_iter().find_map(|d| match d {
                            InfoMacVlan::Mode(m) => Mode::from_netlink(m),
                            _ => None,
                        }));
                    }
                }
            }
        }
        Ok(None)
    }

    /// The device of the first default route, IPv4 routes first (the reference's "default route
    /// interface", which uplink plugins take as their master when none is configured).
    pub fn default_route_link(&mut self) -> Result<Option<u32>, NlError> {
        for family in [Family::V4, Family::V6] {
            let found = self.routes(family)?.into_iter().find(|r| {
                r.dst.prefix() == 0 && r.oif.is_some() && r.table.is_none_or(|t| t == crate::route::MAIN_TABLE)
            });
            if let Some(route) = found {
                return Ok(route.oif);
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_round_trip() {
        for m in [Mode::Bridge, Mode::Private, Mode::Vepa, Mode::Passthru, Mode::Source] {
            assert_eq!(Mode::parse(m.as_str()), Some(m));
            assert_eq!(Mode::from_netlink(m.netlink()), Some(m));
        }
        assert_eq!(Mode::parse(""), Some(Mode::Bridge));
        assert_eq!(Mode::parse("Bridge"), None);
        assert_eq!(Mode::parse("l2"), None);
    }
}
