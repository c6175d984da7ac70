//! The DHCP client of one attachment: DISCOVER/OFFER/REQUEST/ACK, renewal, rebinding and
//! RELEASE on the container's interface. Everything here runs on a thread inside the container's
//! network namespace (the daemon enters it through `NetNs::run`), so the sockets are born there.
//!
//! Two sockets per exchange, opened for the exchange and closed after it (a lease holds no socket
//! between renewals, so a daemon with many leases holds few descriptors):
//! - a UDP socket bound to port 68 on the interface (`SO_BINDTODEVICE`) sends: to the limited
//!   broadcast address before the client has an address, to the server once it has one;
//! - an `AF_PACKET` socket bound to the interface receives. Before the address is configured the
//!   kernel drops a reply unicast to the offered address, which a server sends when the request's
//!   broadcast bit is clear (the reference's nclient4 reads raw packets for the same reason).

use crate::packet::{self, Kind, Message, opt};
use anyhow::{Context, bail};
use nix::libc;
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType, SockaddrIn, setsockopt, sockopt};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const CLIENT_PORT: u16 = 68;
const SERVER_PORT: u16 = 67;
/// RFC 2131's default when the server gives no lease time (the reference's too).
const DEFAULT_LEASE_SECS: u32 = 3600;

/// How long and how often to try, from the daemon's flags.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// `-timeout`: how long one request waits for its reply.
    pub timeout: Duration,
    /// `-resendmax`: the longest delay between two attempts.
    pub resend_max: Duration,
    /// `-resendtimeout`: when to give up retrying one acquisition or renewal.
    pub resend_timeout: Duration,
    /// `-broadcast`: set the broadcast bit, so servers broadcast their replies.
    pub broadcast: bool,
}

/// The container interface a client runs on.
#[derive(Debug, Clone)]
pub struct Iface {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
}

/// A lease as the server acknowledged it. Times are seconds since the epoch, so the lease means
/// the same after a daemon restart.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub server: Ipv4Addr,
    /// The ACK's options by code, from which the result is built.
    pub options: BTreeMap<u8, Vec<u8>>,
    pub renew_at: u64,
    pub rebind_at: u64,
    pub expire_at: u64,
}

pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Lease {
    fn from_ack(ack: &Message, server: Ipv4Addr) -> Lease {
        let lease = ack.u32_option(opt::LEASE_TIME).unwrap_or(DEFAULT_LEASE_SECS) as u64;
        let t1 = ack.u32_option(opt::RENEWAL_TIME).map_or(lease / 2, u64::from);
        let t2 = ack.u32_option(opt::REBINDING_TIME).map_or(lease * 85 / 100, u64::from);
        let now = now_secs();
        Lease {
            address: ack.yiaddr,
            server: ack.ip_option(opt::SERVER_ID).unwrap_or(server),
            options: ack.options.clone(),
            renew_at: now + t1,
            rebind_at: now + t2,
            expire_at: now + lease,
        }
    }

    /// The subnet mask (option 1) as a prefix length; the result needs it, as the reference's.
    pub fn prefix(&self) -> anyhow::Result<u8> {
        let mask = self.options.get(&opt::SUBNET_MASK).context("DHCP option Subnet Mask not found in DHCPACK")?;
        let bits = match mask.as_slice() {
            [a, b, c, d] => u32::from_be_bytes([*a, *b, *c, *d]),
            _ => bail!("DHCP option Subnet Mask is not 4 bytes long"),
        };
        if bits.leading_ones() + bits.trailing_zeros() != 32 {
            bail!("DHCP option Subnet Mask {} is not contiguous", Ipv4Addr::from(bits));
        }
        Ok(bits.leading_ones() as u8)
    }
}

/// What the caller of an exchange wants known while it waits between attempts: `wait(d)` sleeps
/// for `d` and returns false when the lease is being stopped (the attempt gives up at once).
pub type Wait<'a> = &'a mut dyn FnMut(Duration) -> bool;

/// One attachment's client: the interface, its identity and the options it sends.
pub struct Client {
    pub iface: Iface,
    pub client_id: String,
    pub options: BTreeMap<u8, Vec<u8>>,
    pub timing: Timing,
}

impl Client {
    fn message(&self, kind: Kind, xid: u32) -> Message {
        let mut m = Message::request(kind, xid, self.iface.mac);
        let mut id = vec![0u8];
        id.extend_from_slice(self.client_id.as_bytes());
        m.options.insert(opt::CLIENT_ID, id);
        if kind != Kind::Release {
            // Provided options override the client ID, as the reference's modifiers do.
            m.options.extend(self.options.iter().map(|(k, v)| (*k, v.clone())));
            m.options.insert(opt::MAX_MESSAGE_SIZE, 1500u16.to_be_bytes().to_vec());
        } else if let Some(id) = self.options.get(&opt::CLIENT_ID) {
            // The lease is the server's under the identifier it was acquired with. (The
            // reference releases with its own identifier, which the server does not know then.)
            m.options.insert(opt::CLIENT_ID, id.clone());
        }
        if self.timing.broadcast {
            m.flags = packet::FLAG_BROADCAST;
        }
        m
    }

    /// DISCOVER, OFFER, REQUEST, ACK; retried with the reference's backoff until
    /// `-resendtimeout`.
    pub fn acquire(&self, wait: Wait) -> anyhow::Result<Lease> {
        retry(self.timing, self.timing.resend_timeout, wait, || self.acquire_once())
    }

    fn acquire_once(&self) -> anyhow::Result<Lease> {
        let s = Sockets::open(&self.iface)?;
        let xid = random_u32();
        s.send(&self.message(Kind::Discover, xid), None)?;
        let offer = s.receive(xid, self.iface.mac, self.timing.timeout, &[Kind::Offer]).context("no DHCPOFFER")?;
        let server = offer.ip_option(opt::SERVER_ID).context("DHCPOFFER without a server identifier")?;
        if offer.yiaddr.is_unspecified() {
            bail!("DHCPOFFER without an address");
        }
        let mut req = self.message(Kind::Request, xid);
        req.options.insert(opt::REQUESTED_IP, offer.yiaddr.octets().to_vec());
        req.options.insert(opt::SERVER_ID, server.octets().to_vec());
        s.send(&req, None)?;
        let ack = s.receive(xid, self.iface.mac, self.timing.timeout, &[Kind::Ack, Kind::Nak]).context("no DHCPACK")?;
        check_ack(&ack)?;
        Ok(Lease::from_ack(&ack, server))
    }

    /// Whether `addr` is configured on the interface: only then can the client unicast to the
    /// server and be answered at `ciaddr` (the kernel would send from 0.0.0.0 otherwise, which the
    /// server's kernel drops as a martian, and the server's reply to `ciaddr` would find no ARP
    /// answer). The main plugin configures it; run alone, the dhcp plugin does not.
    fn configured(&self, addr: Ipv4Addr) -> bool {
        let Ok(mut rtnl) = netkit::Rtnl::open() else { return false };
        let addrs = rtnl.addresses(Some(self.iface.index), Some(netkit::Family::V4)).unwrap_or_default();
        addrs.iter().any(|a| a.net.ip() == std::net::IpAddr::V4(addr))
    }

    /// RENEWING (unicast to the server) or REBINDING (broadcast): a REQUEST with `ciaddr` set.
    /// Without the address on the interface, a broadcast REQUEST naming it in option 50 instead
    /// (RFC 2131's INIT-REBOOT form), whose answer reaches the packet socket.
    /// Gives up after `limit` (the caller's next phase: T2 while renewing, the expiry while
    /// rebinding) or `-resendtimeout`, whichever comes first.
    pub fn extend(&self, lease: &Lease, rebinding: bool, limit: Duration, wait: Wait) -> anyhow::Result<Lease> {
        retry(self.timing, limit, wait, || {
            let s = Sockets::open(&self.iface)?;
            let xid = random_u32();
            let mut req = self.message(Kind::Request, xid);
            let to = if self.configured(lease.address) {
                req.ciaddr = lease.address;
                (!rebinding).then_some(lease.server)
            } else {
                req.options.insert(opt::REQUESTED_IP, lease.address.octets().to_vec());
                None
            };
            s.send(&req, to)?;
            let ack = s.receive(xid, self.iface.mac, self.timing.timeout, &[Kind::Ack, Kind::Nak])?;
            check_ack(&ack)?;
            Ok(Lease::from_ack(&ack, lease.server))
        })
    }

    /// RELEASE, sent once (the server does not answer it).
    pub fn release(&self, lease: &Lease) -> anyhow::Result<()> {
        let s = Sockets::open(&self.iface)?;
        let mut rel = self.message(Kind::Release, random_u32());
        rel.ciaddr = lease.address;
        rel.flags = 0;
        rel.options.insert(opt::SERVER_ID, lease.server.octets().to_vec());
        s.send(&rel, self.configured(lease.address).then_some(lease.server))
    }
}

fn check_ack(ack: &Message) -> anyhow::Result<()> {
    if ack.kind() == Some(Kind::Nak) {
        let why = ack.options.get(&opt::MESSAGE).map(|m| String::from_utf8_lossy(m).into_owned()).unwrap_or_default();
        bail!("DHCPNAK from the server: {why}");
    }
    if ack.yiaddr.is_unspecified() {
        bail!("DHCPACK without an address");
    }
    Ok(())
}

/// The reference's backoff (RFC 2131 §4.1): four fast retries 2 s ± 1 s apart, then 4 s ± 1 s
/// doubling up to `resend_max`, until `resend_timeout` (or `limit`) has passed.
fn retry<T>(
    timing: Timing,
    limit: Duration,
    wait: Wait,
    mut attempt: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timing.resend_timeout.min(limit);
    let mut base = Duration::from_secs(4);
    let mut fast = 4;
    loop {
        let err = match attempt() {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let delay = if fast > 0 {
            fast -= 1;
            jitter(Duration::from_secs(2))
        } else {
            let d = jitter(base);
            if base < timing.resend_max {
                base = (base * 2).min(timing.resend_max);
            }
            d
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(err.context("no more tries"));
        }
        eprintln!("dhcp: {err:#}; retrying in {:.1}s", delay.min(left).as_secs_f64());
        if !wait(delay.min(left)) {
            return Err(err.context("stopped"));
        }
    }
}

/// `base` ± 1 s.
fn jitter(base: Duration) -> Duration {
    let r = (random_u32() % 2000) as i64 - 1000;
    let ms = base.as_millis() as i64 + r;
    Duration::from_millis(ms.max(100) as u64)
}

pub fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: getrandom writes at most `b.len()` bytes into the buffer it is given.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 4 {
        // Never expected on Linux ≥ 3.17; a fixed xid still works, only less well against spoofing.
        return std::process::id().wrapping_mul(2_654_435_761) ^ now_secs() as u32;
    }
    u32::from_ne_bytes(b)
}

struct Sockets {
    udp: OwnedFd,
    packet: OwnedFd,
}

impl Sockets {
    fn open(iface: &Iface) -> anyhow::Result<Sockets> {
        let udp = socket::socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)
            .context("opening a UDP socket")?;
        setsockopt(&udp, sockopt::ReuseAddr, &true)?;
        setsockopt(&udp, sockopt::Broadcast, &true)?;
        setsockopt(&udp, sockopt::BindToDevice, &std::ffi::OsString::from(&iface.name))
            .with_context(|| format!("binding a UDP socket to {}", iface.name))?;
        socket::bind(udp.as_raw_fd(), &SockaddrIn::new(0, 0, 0, 0, CLIENT_PORT))
            .with_context(|| format!("binding UDP port {CLIENT_PORT} on {}", iface.name))?;
        let proto = (libc::ETH_P_IP as u16).to_be();
        // SAFETY: plain socket(2); the descriptor is owned at once.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, proto as i32) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("opening an AF_PACKET socket");
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let packet = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = iface.index as i32;
        // SAFETY: sll is a valid sockaddr_ll and its size is passed.
        let rc = unsafe {
            libc::bind(
                packet.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("binding an AF_PACKET socket");
        }
        Ok(Sockets { udp, packet })
    }

    /// Sends to `to` (the server) or, without one, to 255.255.255.255. A unicast the kernel
    /// refuses goes out as a broadcast instead.
    fn send(&self, m: &Message, to: Option<Ipv4Addr>) -> anyhow::Result<()> {
        let bytes = m.encode();
        let bcast = SockaddrIn::new(255, 255, 255, 255, SERVER_PORT);
        if let Some(server) = to {
            let [a, b, c, d] = server.octets();
            if socket::sendto(
                self.udp.as_raw_fd(),
                &bytes,
                &SockaddrIn::new(a, b, c, d, SERVER_PORT),
                MsgFlags::empty(),
            )
            .is_ok()
            {
                return Ok(());
            }
        }
        socket::sendto(self.udp.as_raw_fd(), &bytes, &bcast, MsgFlags::empty()).context("sending a DHCP message")?;
        Ok(())
    }

    /// Waits up to `timeout` for a reply of one of `kinds` to transaction `xid`.
    fn receive(&self, xid: u32, mac: [u8; 6], timeout: Duration, kinds: &[Kind]) -> anyhow::Result<Message> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("timed out after {:?} waiting for the server's {:?}", timeout, kinds[0]);
            }
            let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
            let mut fds = [nix::poll::PollFd::new(self.packet.as_fd(), nix::poll::PollFlags::POLLIN)];
            match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => {}
                Err(e) => return Err(e).context("waiting for a DHCP reply"),
            }
            let n = match socket::recv(self.packet.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e).context("reading a DHCP reply"),
            };
            let Some(payload) = packet::udp_payload(&buf[..n], CLIENT_PORT) else { continue };
            let Ok(m) = Message::parse(payload) else { continue };
            if m.op == packet::BOOTREPLY
                && m.xid == xid
                && m.chaddr == mac
                && m.kind().is_some_and(|k| kinds.contains(&k))
            {
                return Ok(m);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_times_default_as_the_reference() {
        let mut ack = Message::request(Kind::Ack, 1, [0; 6]);
        ack.yiaddr = Ipv4Addr::new(10, 0, 0, 5);
        ack.options.insert(opt::SUBNET_MASK, vec![255, 255, 255, 0]);
        let l = Lease::from_ack(&ack, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(l.expire_at - l.renew_at, 1800);
        assert_eq!(l.rebind_at - l.renew_at, 3060 - 1800);
        assert_eq!(l.prefix().unwrap(), 24);
        ack.options.insert(opt::SUBNET_MASK, vec![255, 0, 255, 0]);
        assert!(Lease::from_ack(&ack, Ipv4Addr::UNSPECIFIED).prefix().is_err());
    }
}
