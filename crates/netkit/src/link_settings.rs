//! The per-link settings a container's interface can be tuned by after it exists: hardware
//! address, MTU (with the bounds the driver accepts), promiscuous and all-multicast mode, and the
//! transmit queue length. [`crate::Link`] describes what plugins create; this is what the tuning
//! plugin reads, changes, and puts back.
//!
//! Promiscuous and all-multicast mode are read from the link's flags, which report what was
//! *asked for* (the kernel's `gflags`), not the reference counters (`IFLA_PROMISCUITY`,
//! `IFLA_ALLMULTI`) that a bridge or a running tcpdump raise too: the flag is the part a plugin
//! sets and must put back.

use crate::netlink::NlError;
use crate::rtnl::Rtnl;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};

/// A link's tunable settings, as the kernel reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkSettings {
    pub index: u32,
    pub name: String,
    pub mac: Vec<u8>,
    pub mtu: u32,
    /// `IFLA_MIN_MTU` / `IFLA_MAX_MTU` (kernel 4.19+); `None` when not reported. A maximum of 0
    /// means the driver sets none.
    pub min_mtu: Option<u32>,
    pub max_mtu: Option<u32>,
    /// IFF_PROMISC as requested by user space.
    pub promisc: bool,
    /// IFF_ALLMULTI as requested by user space.
    pub allmulti: bool,
    /// `IFLA_TXQLEN`.
    pub txqlen: u32,
}

impl LinkSettings {
    fn from_message(msg: LinkMessage) -> LinkSettings {
        let mut s = LinkSettings {
            index: msg.header.index,
            promisc: msg.header.flags.contains(LinkFlags::Promisc),
            allmulti: msg.header.flags.contains(LinkFlags::Allmulti),
            ..LinkSettings::default()
        };
        for attr in msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => s.name = n,
                LinkAttribute::Address(a) => s.mac = a,
                LinkAttribute::Mtu(m) => s.mtu = m,
                LinkAttribute::MinMtu(m) => s.min_mtu = Some(m),
                LinkAttribute::MaxMtu(m) => s.max_mtu = Some(m),
                LinkAttribute::TxQueueLen(q) => s.txqlen = q,
                _ => {}
            }
        }
        s
    }

    /// The MAC as `aa:bb:cc:dd:ee:ff`.
    pub fn mac_text(&self) -> String {
        crate::format_mac(&self.mac)
    }

    /// Whether the driver accepts `mtu` (the kernel's `dev_validate_mtu`), as far as the
    /// reported bounds tell.
    pub fn accepts_mtu(&self, mtu: u32) -> bool {
        self.min_mtu.is_none_or(|min| mtu >= min) && self.max_mtu.is_none_or(|max| max == 0 || mtu <= max)
    }
}

fn message(index: u32) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg
}

impl Rtnl {
    /// The settings of the link called `name`, or `None` when there is none.
    pub fn link_settings(&mut self, name: &str) -> Result<Option<LinkSettings>, NlError> {
        let mut msg = message(0);
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.sock.query(RouteNetlinkMessage::GetLink(msg)) {
            Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(LinkSettings::from_message(l)),
                _ => None,
            })),
            Err(e) if e.is(nix::libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Turns all-multicast mode on or off (IFF_ALLMULTI through the change mask, as `ip link set
    /// allmulticast` does).
    pub fn set_allmulti(&mut self, index: u32, on: bool) -> Result<(), NlError> {
        let mut msg = message(index);
        msg.header.change_mask = LinkFlags::Allmulti;
        if on {
            msg.header.flags = LinkFlags::Allmulti;
        }
        self.sock.execute(RouteNetlinkMessage::NewLink(msg), 0)
    }

    /// Sets the transmit queue length (`IFLA_TXQLEN`).
    pub fn set_txqlen(&mut self, index: u32, qlen: u32) -> Result<(), NlError> {
        let mut msg = message(index);
        msg.attributes.push(LinkAttribute::TxQueueLen(qlen));
        self.sock.execute(RouteNetlinkMessage::NewLink(msg), 0)
    }
}

/// Parses a hardware address as Go's `net.ParseMAC` does (what the reference plugins accept):
/// 6, 8 or 20 bytes written as two hex digits each, separated by `:` or `-`, or as groups of four
/// hex digits separated by `.`.
pub fn parse_hwaddr(text: &str) -> Option<Vec<u8>> {
    let hex = |h: &str| -> Option<u8> {
        (h.len() == 2 && h.bytes().all(|b| b.is_ascii_hexdigit())).then(|| u8::from_str_radix(h, 16).ok())?
    };
    let bytes: Option<Vec<u8>> = if text.contains('.') {
        text.split('.')
            .map(|g| (g.len() == 4 && g.is_ascii()).then_some(g))
            .collect::<Option<Vec<&str>>>()?
            .iter()
            .flat_map(|g| [&g[..2], &g[2..]])
            .map(hex)
            .collect()
    } else {
        let sep = if text.contains('-') { '-' } else { ':' };
        text.split(sep).map(hex).collect()
    };
    bytes.filter(|b| matches!(b.len(), 6 | 8 | 20))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardware_addresses_parse_as_go_does() {
        assert_eq!(parse_hwaddr("0A:58:0a:01:00:05"), Some(vec![0x0a, 0x58, 0x0a, 0x01, 0x00, 0x05]));
        assert_eq!(parse_hwaddr("0a-58-0a-01-00-05"), Some(vec![0x0a, 0x58, 0x0a, 0x01, 0x00, 0x05]));
        assert_eq!(parse_hwaddr("0a58.0a01.0005"), Some(vec![0x0a, 0x58, 0x0a, 0x01, 0x00, 0x05]));
        assert_eq!(parse_hwaddr("02:00:5e:10:00:00:00:01").map(|b| b.len()), Some(8));
        for bad in
            ["", "0a:58:0a:01:00", "0a:58:0a:01:00:5", "zz:58:0a:01:00:05", "0a:58-0a:01:00:05", "0a5.80a01.0005"]
        {
            assert_eq!(parse_hwaddr(bad), None, "{bad}");
        }
    }

    #[test]
    fn mtu_bounds() {
        let s = LinkSettings { min_mtu: Some(68), max_mtu: Some(65535), ..LinkSettings::default() };
        assert!(s.accepts_mtu(68) && s.accepts_mtu(9000) && !s.accepts_mtu(67) && !s.accepts_mtu(65536));
        let unbounded = LinkSettings { min_mtu: Some(68), max_mtu: Some(0), ..LinkSettings::default() };
        assert!(unbounded.accepts_mtu(1 << 20));
        assert!(LinkSettings::default().accepts_mtu(1));
    }
}
