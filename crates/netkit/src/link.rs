//! Links: look them up, create veth pairs and bridges, and change their settings.
//!
//! Every call acts in the namespace of the [`Rtnl`] handle it is made on and needs CAP_NET_ADMIN
//! to change anything. Changes go through RTM_NEWLINK without NLM_F_CREATE, which the kernel
//! treats as "modify": it is the one request that also carries bridge-port settings.

use crate::netlink::NlError;
use crate::rtnl::Rtnl;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    InfoBridge, InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute, LinkFlags,
    LinkInfo, LinkMessage, State,
};
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use std::os::fd::{AsRawFd, BorrowedFd};

/// What we read back about a link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND`: `veth`, `bridge`, `macvlan`... `None` for physical devices and `lo`.
    pub kind: Option<String>,
    pub mac: Vec<u8>,
    pub mtu: u32,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// Operationally up (IF_OPER_UP).
    pub oper_up: bool,
    pub promisc: bool,
    /// The bridge (or other controller) this link is a port of.
    pub master: Option<u32>,
    /// `IFLA_LINK`: for a veth, the peer's index (in the peer's namespace).
    pub peer_index: Option<u32>,
    /// `IFLA_LINK_NETNSID`: set when the peer lives in another namespace.
    pub link_netnsid: Option<i32>,
    pub alias: Option<String>,
    /// Bridge-port flags, when the link is a bridge port.
    pub hairpin: Option<bool>,
    pub isolated: Option<bool>,
    /// For a bridge: whether VLAN filtering is on.
    pub vlan_filtering: Option<bool>,
}

impl Link {
    fn from_message(msg: LinkMessage) -> Link {
        let mut link = Link {
            index: msg.header.index,
            up: msg.header.flags.contains(LinkFlags::Up),
            promisc: msg.header.flags.contains(LinkFlags::Promisc),
            ..Link::default()
        };
        for attr in msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n,
                LinkAttribute::Address(a) => link.mac = a,
                LinkAttribute::Mtu(m) => link.mtu = m,
                LinkAttribute::OperState(s) => link.oper_up = s == State::Up,
                LinkAttribute::Controller(m) if m != 0 => link.master = Some(m),
                LinkAttribute::Link(l) => link.peer_index = Some(l),
                LinkAttribute::LinkNetNsId(id) => link.link_netnsid = Some(id),
                LinkAttribute::IfAlias(a) => link.alias = Some(a),
                LinkAttribute::LinkInfo(infos) => link.read_info(infos),
                _ => {}
            }
        }
        link
    }

    fn read_info(&mut self, infos: Vec<LinkInfo>) {
        for info in infos {
            match info {
                LinkInfo::Kind(kind) => self.kind = Some(kind.to_string()),
                LinkInfo::Data(InfoData::Bridge(opts)) => {
                    for opt in opts {
                        if let InfoBridge::VlanFiltering(on) = opt {
                            self.vlan_filtering = Some(on);
                        }
                    }
                }
                LinkInfo::PortData(InfoPortData::BridgePort(opts)) => {
                    for opt in opts {
                        match opt {
                            InfoBridgePort::HairpinMode(on) => self.hairpin = Some(on),
                            InfoBridgePort::Isolated(on) => self.isolated = Some(on),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// The MAC as `aa:bb:cc:dd:ee:ff`, the form CNI results use.
    pub fn mac_string(&self) -> String {
        format_mac(&self.mac)
    }

    pub fn is_kind(&self, kind: &str) -> bool {
        self.kind.as_deref() == Some(kind)
    }
}

/// Formats a hardware address as lowercase colon-separated hex.
pub fn format_mac(mac: &[u8]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// A veth pair to create. `name` is created in the handle's namespace, `peer_name` in `peer_ns`
/// (the same namespace when `None`). Creating the peer directly where it belongs, with its final
/// name, means no name on the host can ever clash with the container's interface name.
#[derive(Debug, Clone, Copy, Default)]
pub struct VethPair<'a> {
    pub name: &'a str,
    pub peer_name: &'a str,
    pub peer_ns: Option<BorrowedFd<'a>>,
    pub mtu: Option<u32>,
    pub peer_mac: Option<[u8; 6]>,
}

fn link_message(index: u32) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg
}

impl Rtnl {
    /// Every link in the namespace.
    pub fn links(&mut self) -> Result<Vec<Link>, NlError> {
        let replies = self.sock.dump(|| RouteNetlinkMessage::GetLink(LinkMessage::default()))?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(l)),
                _ => None,
            })
            .collect())
    }

    /// The link called `name`, or `None`.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>, NlError> {
        let mut msg = link_message(0);
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.get_link(msg)
    }

    /// The link with `index`, or `None`.
    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>, NlError> {
        self.get_link(link_message(index))
    }

    /// The id this handle's namespace has for `ns` (what a veth's `link_netnsid` says when its
    /// peer is there), or `None` when it has none. RTM_GETNSID never assigns one.
    pub fn nsid_of(&mut self, ns: BorrowedFd) -> Result<Option<i32>, NlError> {
        let mut msg = NsidMessage::default();
        msg.attributes.push(NsidAttribute::Fd(ns.as_raw_fd() as u32));
        let replies = self.sock.query(RouteNetlinkMessage::GetNsId(msg))?;
        let id = replies.into_iter().find_map(|m| match m {
            RouteNetlinkMessage::NewNsId(m) => m.attributes.into_iter().find_map(|a| match a {
                NsidAttribute::Id(id) => Some(id),
                _ => None,
            }),
            _ => None,
        });
        // NETNSA_NSID_NOT_ASSIGNED is -1.
        Ok(id.filter(|id| *id >= 0))
    }

    fn get_link(&mut self, msg: LinkMessage) -> Result<Option<Link>, NlError> {
        match self.sock.query(RouteNetlinkMessage::GetLink(msg)) {
            Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(l)),
                _ => None,
            })),
            Err(e) if e.is(nix::libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates a veth pair (fails with EEXIST if either name is taken where it would go).
    pub fn create_veth(&mut self, pair: &VethPair) -> Result<(), NlError> {
        let mut peer = link_message(0);
        peer.attributes.push(LinkAttribute::IfName(pair.peer_name.to_string()));
        if let Some(ns) = pair.peer_ns {
            peer.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
        }
        if let Some(mtu) = pair.mtu {
            peer.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = pair.peer_mac {
            peer.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        let mut msg = link_message(0);
        msg.attributes.push(LinkAttribute::IfName(pair.name.to_string()));
        if let Some(mtu) = pair.mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        self.sock.execute(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Creates a bridge, down. Fails with EEXIST if the name is taken, and with EOPNOTSUPP when
    /// `vlan_filtering` is asked of a kernel built without CONFIG_BRIDGE_VLAN_FILTERING.
    pub fn create_bridge(&mut self, name: &str, mtu: Option<u32>, vlan_filtering: bool) -> Result<(), NlError> {
        let mut msg = link_message(0);
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        if let Some(mtu) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        let mut info = vec![LinkInfo::Kind(InfoKind::Bridge)];
        if vlan_filtering {
            info.push(LinkInfo::Data(InfoData::Bridge(vec![InfoBridge::VlanFiltering(true)])));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(info));
        self.sock.execute(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
    }

    fn modify(&mut self, msg: LinkMessage) -> Result<(), NlError> {
        self.sock.execute(RouteNetlinkMessage::NewLink(msg), 0)
    }

    fn set_flag(&mut self, index: u32, flag: LinkFlags, on: bool) -> Result<(), NlError> {
        let mut msg = link_message(index);
        msg.header.change_mask = flag;
        if on {
            msg.header.flags = flag;
        }
        self.modify(msg)
    }

    pub fn set_up(&mut self, index: u32) -> Result<(), NlError> {
        self.set_flag(index, LinkFlags::Up, true)
    }

    pub fn set_down(&mut self, index: u32) -> Result<(), NlError> {
        self.set_flag(index, LinkFlags::Up, false)
    }

    pub fn set_promisc(&mut self, index: u32, on: bool) -> Result<(), NlError> {
        self.set_flag(index, LinkFlags::Promisc, on)
    }

    fn set_attribute(&mut self, index: u32, attr: LinkAttribute) -> Result<(), NlError> {
        let mut msg = link_message(index);
        msg.attributes.push(attr);
        self.modify(msg)
    }

    /// Makes the link a port of `master` (0 detaches it).
    pub fn set_master(&mut self, index: u32, master: u32) -> Result<(), NlError> {
        self.set_attribute(index, LinkAttribute::Controller(master))
    }

    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<(), NlError> {
        self.set_attribute(index, LinkAttribute::Mtu(mtu))
    }

    pub fn set_mac(&mut self, index: u32, mac: &[u8]) -> Result<(), NlError> {
        self.set_attribute(index, LinkAttribute::Address(mac.to_vec()))
    }

    /// Renames a link; the kernel refuses while it is up (EBUSY).
    pub fn rename(&mut self, index: u32, name: &str) -> Result<(), NlError> {
        self.set_attribute(index, LinkAttribute::IfName(name.to_string()))
    }

    pub fn set_alias(&mut self, index: u32, alias: &str) -> Result<(), NlError> {
        self.set_attribute(index, LinkAttribute::IfAlias(alias.to_string()))
    }

    /// Moves the link into the namespace `ns`; its index may change there.
    pub fn move_to_netns(&mut self, index: u32, ns: BorrowedFd) -> Result<(), NlError> {
        self.set_attribute(index, LinkAttribute::NetNsFd(ns.as_raw_fd()))
    }

    /// Sets bridge-port flags (hairpin, isolated...) on a link that is a bridge port.
    pub fn set_bridge_port(&mut self, index: u32, settings: Vec<InfoBridgePort>) -> Result<(), NlError> {
        self.set_attribute(
            index,
            LinkAttribute::LinkInfo(vec![
                LinkInfo::PortKind(InfoPortKind::Bridge),
                LinkInfo::PortData(InfoPortData::BridgePort(settings)),
            ]),
        )
    }

    /// Deletes the link (for a veth, both ends go).
    pub fn delete_link(&mut self, index: u32) -> Result<(), NlError> {
        self.sock.execute(RouteNetlinkMessage::DelLink(link_message(index)), 0)
    }

    /// Deletes the link as [`Rtnl::delete_link`] does, but returns once the kernel has removed it
    /// from the namespace, without waiting for it to free the device.
    ///
    /// The kernel removes a device under the RTNL lock (unlisted, then every subsystem's
    /// teardown: routes, addresses, neighbours, qdiscs, bridge port), releases the lock, and only
    /// then waits in `rcu_barrier()` for a full RCU grace period before freeing it: 18 to 23 ms
    /// of the 20 that `ip link del` takes here, and most of a plugin's DEL. Here a forked child
    /// sends the request on a socket of its own and sits through that wait; this process polls
    /// until the link is gone, then takes the RTNL lock itself (a change-nothing RTM_SETLINK on
    /// `lo`), which it gets only once the teardown is complete: everything another request could
    /// see is done when this returns. If the child reports a failure while the link is still
    /// there, that is the error; a link already gone is success. The child only makes async-signal-safe system calls on a message
    /// built before the fork; it is not waited for once the link is gone (it is reaped as an
    /// orphan), so this is for a process about to exit, such as a plugin's DEL. Without fork,
    /// the plain deletion runs.
    pub fn delete_link_detached(&mut self, index: u32) -> Result<(), NlError> {
        use nix::libc;
        // RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK: nlmsghdr then ifinfomsg with the index.
        let mut msg = [0u8; 32];
        msg[0..4].copy_from_slice(&32u32.to_ne_bytes());
        msg[4..6].copy_from_slice(&(libc::RTM_DELLINK).to_ne_bytes());
        msg[6..8].copy_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
        msg[8..12].copy_from_slice(&1u32.to_ne_bytes());
        msg[20..24].copy_from_slice(&(index as i32).to_ne_bytes());
        // SAFETY: a plain socket(2) call; the descriptor is owned below.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        if fd < 0 {
            return self.delete_link(index);
        }
        // The child's socket is born in the calling thread's namespace; it must be this handle's
        // (a handle opened with `open_in` may be used from elsewhere), or the index means
        // another link.
        let same_namespace = match (netns_cookie(fd), netns_cookie(self.sock.raw_fd())) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        };
        if !same_namespace {
            // SAFETY: our own descriptor, closed once.
            unsafe { libc::close(fd) };
            return self.delete_link(index);
        }
        // SAFETY: the child runs only async-signal-safe system calls on memory prepared above.
        let child = match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => unsafe {
                if fd > 0 {
                    libc::syscall(libc::SYS_close_range, 0u32, (fd - 1) as u32, 0u32);
                }
                libc::syscall(libc::SYS_close_range, (fd + 1) as u32, u32::MAX, 0u32);
                let status = if libc::send(fd, msg.as_ptr().cast(), msg.len(), 0) != msg.len() as isize {
                    1
                } else {
                    let mut ack = [0u8; 512];
                    let n = libc::recv(fd, ack.as_mut_ptr().cast(), ack.len(), 0);
                    if n < 20 { 1 } else { (-i32::from_ne_bytes([ack[16], ack[17], ack[18], ack[19]])).clamp(0, 255) }
                };
                libc::_exit(status)
            },
            Ok(nix::unistd::ForkResult::Parent { child }) => child,
            Err(_) => {
                // SAFETY: our own descriptor, closed once.
                unsafe { libc::close(fd) };
                return self.delete_link(index);
            }
        };
        // SAFETY: our copy of the descriptor, closed once; the child keeps its own.
        unsafe { libc::close(fd) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if self.link_by_index(index)?.is_none() {
                // The RTNL lock, once the teardown that unlisted the link has released it.
                return self.sock.execute(RouteNetlinkMessage::SetLink(link_message(1)), 0);
            }
            let waited = nix::sys::wait::waitpid(child, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
            if let Ok(nix::sys::wait::WaitStatus::Exited(_, code)) = waited {
                if self.link_by_index(index)?.is_none() {
                    continue;
                }
                let errno = if code == 0 { libc::EIO } else { code };
                return Err(NlError::Kernel { errno, ext_ack: None });
            }
            if std::time::Instant::now() > deadline {
                // Bounded: give up polling and wait for the child's own answer.
                let _ = nix::sys::wait::waitpid(child, None);
                return match self.link_by_index(index)? {
                    None => Ok(()),
                    Some(_) => Err(NlError::Kernel { errno: libc::ETIMEDOUT, ext_ack: None }),
                };
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }
}

/// The network namespace cookie of a socket (SO_NETNS_COOKIE, Linux 5.14; 71 in asm-generic,
/// which x86 and arm64 use). `None` where the kernel does not know it.
fn netns_cookie(fd: std::os::fd::RawFd) -> Option<u64> {
    const SO_NETNS_COOKIE: nix::libc::c_int = 71;
    let mut cookie = 0u64;
    let mut len = std::mem::size_of::<u64>() as nix::libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into the u64 it is given.
    let r = unsafe {
        nix::libc::getsockopt(fd, nix::libc::SOL_SOCKET, SO_NETNS_COOKIE, (&mut cookie as *mut u64).cast(), &mut len)
    };
    (r == 0).then_some(cookie)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_format() {
        assert_eq!(format_mac(&[0x0a, 0x58, 0xff, 0, 1, 2]), "0a:58:ff:00:01:02");
    }
}
