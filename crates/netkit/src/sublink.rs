//! Links stacked on another link or standing for a routing domain: 802.1Q VLANs and ipvlan
//! (children of a master) and VRF devices, created where they belong and read back for CHECK.
//!
//! A child can be created straight into another namespace (`IFLA_NET_NS_FD`) while its master
//! stays where the request's socket is: the kernel resolves `IFLA_LINK` in the socket's
//! namespace. That is how the vlan and ipvlan plugins create the container's interface without
//! it ever showing in the host under a name that could clash.

use crate::netlink::NlError;
use crate::rtnl::Rtnl;
use crate::{Link, NetNs};
use cni::Error;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    InfoData, InfoIpVlan, InfoKind, InfoVlan, InfoVrf, IpVlanMode, LinkAttribute, LinkInfo, LinkMessage,
};
use std::os::fd::{AsRawFd, BorrowedFd};

/// ipvlan's modes (`IPVLAN_MODE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpvlanMode {
    L2,
    L3,
    L3s,
}

/// What kind of link, with the settings that make it one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubKind {
    /// An 802.1Q VLAN of its master, with this ID.
    Vlan {
        id: u16,
    },
    Ipvlan {
        mode: IpvlanMode,
    },
    /// A VRF device bound to this routing table.
    Vrf {
        table: u32,
    },
}

/// The handle a child link (vlan, ipvlan, macvlan) is created through: in the master's
/// namespace, the host's, or the container's with `linkInContainer`.
pub fn master_handle(container: &NetNs, link_in_container: bool) -> anyhow::Result<Rtnl> {
    if link_in_container { Rtnl::open_in(container) } else { Ok(Rtnl::open()?) }
}

/// The master named `name`, seen through `at_master` (a [`master_handle`]), for a child link of
/// `mtu` (`None`: the master's): the kernel gives a child at most its master's MTU. Either
/// failure is the config's (code 7), worded as the reference's.
pub fn find_master(at_master: &mut Rtnl, name: &str, mtu: Option<u32>) -> anyhow::Result<Link> {
    let master = at_master
        .link_by_name(name)?
        .ok_or_else(|| Error::config(format!("failed to lookup master {name:?}: Link not found")))?;
    if let Some(mtu) = mtu
        && mtu > master.mtu
    {
        return Err(Error::config(format!("invalid MTU {mtu}, must be [0, master MTU({})]", master.mtu)).into());
    }
    Ok(master)
}

/// A link to create.
#[derive(Debug, Clone, Copy)]
pub struct SubLink<'a> {
    pub name: &'a str,
    pub kind: SubKind,
    /// The master's index in the handle's namespace (VLAN and ipvlan).
    pub master: Option<u32>,
    /// Where the link is born (the handle's namespace when `None`).
    pub netns: Option<BorrowedFd<'a>>,
    pub mtu: Option<u32>,
}

impl SubKind {
    fn info(self) -> Vec<LinkInfo> {
        match self {
            SubKind::Vlan { id } => {
                vec![LinkInfo::Kind(InfoKind::Vlan), LinkInfo::Data(InfoData::Vlan(vec![InfoVlan::Id(id)]))]
            }
            SubKind::Ipvlan { mode } => {
                let mode = match mode {
                    IpvlanMode::L2 => IpVlanMode::L2,
                    IpvlanMode::L3 => IpVlanMode::L3,
                    IpvlanMode::L3s => IpVlanMode::L3S,
                };
                vec![LinkInfo::Kind(InfoKind::IpVlan), LinkInfo::Data(InfoData::IpVlan(vec![InfoIpVlan::Mode(mode)]))]
            }
            SubKind::Vrf { table } => {
                vec![LinkInfo::Kind(InfoKind::Vrf), LinkInfo::Data(InfoData::Vrf(vec![InfoVrf::TableId(table)]))]
            }
        }
    }

    fn from_info(infos: &[LinkInfo]) -> Option<SubKind> {
        infos.iter().find_map(|info| match info {
            LinkInfo::Data(InfoData::Vlan(opts)) => {
                opts.iter().find_map(|o| if let InfoVlan::Id(id) = o { Some(SubKind::Vlan { id: *id }) } else { None })
            }
            LinkInfo::Data(InfoData::IpVlan(opts)) => opts.iter().find_map(|o| match o {
                InfoIpVlan::Mode(IpVlanMode::L2) => Some(SubKind::Ipvlan { mode: IpvlanMode::L2 }),
                InfoIpVlan::Mode(IpVlanMode::L3) => Some(SubKind::Ipvlan { mode: IpvlanMode::L3 }),
                InfoIpVlan::Mode(IpVlanMode::L3S) => Some(SubKind::Ipvlan { mode: IpvlanMode::L3s }),
                _ => None,
            }),
            LinkInfo::Data(InfoData::Vrf(opts)) => opts
                .iter()
                .find_map(|o| if let InfoVrf::TableId(t) = o { Some(SubKind::Vrf { table: *t }) } else { None }),
            _ => None,
        })
    }
}

impl Rtnl {
    /// Creates the link (EEXIST when the name is taken where it goes; EOPNOTSUPP when the kernel
    /// lacks the link type).
    pub fn create_sublink(&mut self, link: &SubLink) -> Result<(), NlError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(link.name.to_string()));
        if let Some(master) = link.master {
            msg.attributes.push(LinkAttribute::Link(master));
        }
        if let Some(ns) = link.netns {
            msg.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
        }
        if let Some(mtu) = link.mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(link.kind.info()));
        self.sock.execute(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// The VLAN ID, ipvlan mode or VRF table of the link `index`; `None` when it is none of them
    /// (or gone).
    pub fn sublink_kind(&mut self, index: u32) -> Result<Option<SubKind>, NlError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        let replies = match self.sock.query(RouteNetlinkMessage::GetLink(msg)) {
            Ok(replies) => replies,
            Err(e) if e.is(nix::libc::ENODEV) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(replies.into_iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => l.attributes.iter().find_map(|a| match a {
                LinkAttribute::LinkInfo(infos) => SubKind::from_info(infos),
                _ => None,
            }),
            _ => None,
        }))
    }
}
