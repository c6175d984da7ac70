//! DHCPv4 messages (RFC 2131, options of RFC 2132, 3442): encoding the few the client sends, a
//! parser for what servers send back, and the IPv4/UDP framing the packet socket hands over.
//!
//! Std only, so the fuzz target (crates/fuzz, `dhcp_packet`) includes this file as it is. The
//! parsers are total: any byte string gives a message or an error, never a panic (it reads a
//! packet from the network). Options that appear more than once are concatenated (RFC 3396), as
//! servers split long options (121) that way.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

pub const BOOTREQUEST: u8 = 1;
pub const BOOTREPLY: u8 = 2;
const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// The fixed BOOTP header before the magic cookie.
const HEADER: usize = 236;
/// BOOTP's minimum message size; some servers drop shorter requests.
const MIN_SIZE: usize = 300;
/// The broadcast bit of `flags`: asks the server to broadcast its replies.
pub const FLAG_BROADCAST: u16 = 0x8000;

pub mod opt {
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOST_NAME: u8 = 12;
    pub const DOMAIN_NAME: u8 = 15;
    pub const STATIC_ROUTES: u8 = 33;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETER_REQUEST_LIST: u8 = 55;
    pub const MESSAGE: u8 = 56;
    pub const MAX_MESSAGE_SIZE: u8 = 57;
    pub const RENEWAL_TIME: u8 = 58;
    pub const REBINDING_TIME: u8 = 59;
    pub const VENDOR_CLASS: u8 = 60;
    pub const CLIENT_ID: u8 = 61;
    pub const USER_CLASS: u8 = 77;
    pub const CLASSLESS_ROUTES: u8 = 121;
}

/// Message types (option 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Discover = 1,
    Offer = 2,
    Request = 3,
    Decline = 4,
    Ack = 5,
    Nak = 6,
    Release = 7,
    Inform = 8,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Discover,
            2 => Kind::Offer,
            3 => Kind::Request,
            4 => Kind::Decline,
            5 => Kind::Ack,
            6 => Kind::Nak,
            7 => Kind::Release,
            8 => Kind::Inform,
            _ => return None,
        })
    }
}

/// One DHCP message: the header fields the client uses and the options by code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub op: u8,
    pub xid: u32,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub chaddr: [u8; 6],
    pub options: BTreeMap<u8, Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub &'static str);

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed DHCP message: {}", self.0)
    }
}

impl std::error::Error for ParseError {}

fn ip_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

impl Message {
    /// A request from the client with hardware address `chaddr`.
    pub fn request(kind: Kind, xid: u32, chaddr: [u8; 6]) -> Message {
        let mut options = BTreeMap::new();
        options.insert(opt::MESSAGE_TYPE, vec![kind as u8]);
        Message {
            op: BOOTREQUEST,
            xid,
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            chaddr,
            options,
        }
    }

    pub fn kind(&self) -> Option<Kind> {
        match self.options.get(&opt::MESSAGE_TYPE)?.as_slice() {
            [b] => Kind::from_u8(*b),
            _ => None,
        }
    }

    pub fn ip_option(&self, code: u8) -> Option<Ipv4Addr> {
        match self.options.get(&code)?.as_slice() {
            [a, b, c, d] => Some(Ipv4Addr::new(*a, *b, *c, *d)),
            _ => None,
        }
    }

    /// Every address of a list option (routers, DNS servers); a trailing partial address is dropped.
    pub fn ip_list(&self, code: u8) -> Vec<Ipv4Addr> {
        self.options.get(&code).map_or_else(Vec::new, |v| v.chunks_exact(4).map(|c| ip_at(c, 0)).collect())
    }

    pub fn u32_option(&self, code: u8) -> Option<u32> {
        match self.options.get(&code)?.as_slice() {
            [a, b, c, d] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
            _ => None,
        }
    }

    /// The wire form, padded to BOOTP's 300 bytes. Options longer than 255 bytes are split into
    /// several instances (RFC 3396). The message type goes first, as RFC 2131 recommends.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER];
        b[0] = self.op;
        b[1] = 1; // htype: Ethernet
        b[2] = 6; // hlen
        b[4..8].copy_from_slice(&self.xid.to_be_bytes());
        b[10..12].copy_from_slice(&self.flags.to_be_bytes());
        b[12..16].copy_from_slice(&self.ciaddr.octets());
        b[16..20].copy_from_slice(&self.yiaddr.octets());
        b[28..34].copy_from_slice(&self.chaddr);
        b.extend_from_slice(&MAGIC);
        let first = self.options.get_key_value(&opt::MESSAGE_TYPE);
        let rest = self.options.iter().filter(|(k, _)| **k != opt::MESSAGE_TYPE);
        for (code, value) in first.into_iter().chain(rest) {
            if value.is_empty() {
                b.extend_from_slice(&[*code, 0]);
            }
            for chunk in value.chunks(255) {
                b.push(*code);
                b.push(chunk.len() as u8);
                b.extend_from_slice(chunk);
            }
        }
        b.push(255);
        if b.len() < MIN_SIZE {
            b.resize(MIN_SIZE, 0);
        }
        b
    }

    /// Parses a message. Only the options field is read (no option overload into `file`/`sname`,
    /// which the replies this client asks for do not need).
    pub fn parse(b: &[u8]) -> Result<Message, ParseError> {
        if b.len() < HEADER + MAGIC.len() {
            return Err(ParseError("shorter than a BOOTP header"));
        }
        if b[1] != 1 || b[2] != 6 {
            return Err(ParseError("not an Ethernet hardware address"));
        }
        if b[HEADER..HEADER + 4] != MAGIC {
            return Err(ParseError("no DHCP magic cookie"));
        }
        let mut options: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
        let mut rest = &b[HEADER + 4..];
        loop {
            match rest {
                [] | [255, ..] => break,
                [0, tail @ ..] => rest = tail,
                [code, len, tail @ ..] => {
                    let len = *len as usize;
                    if tail.len() < len {
                        return Err(ParseError("option runs past the end"));
                    }
                    options.entry(*code).or_default().extend_from_slice(&tail[..len]);
                    rest = &tail[len..];
                }
                [_] => return Err(ParseError("option without a length")),
            }
        }
        let mut chaddr = [0u8; 6];
        chaddr.copy_from_slice(&b[28..34]);
        Ok(Message {
            op: b[0],
            xid: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            flags: u16::from_be_bytes([b[10], b[11]]),
            ciaddr: ip_at(b, 12),
            yiaddr: ip_at(b, 16),
            chaddr,
            options,
        })
    }
}

/// A route from option 121 or 33: destination, prefix length, router (0.0.0.0: on link).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticRoute {
    pub dst: Ipv4Addr,
    pub prefix: u8,
    pub router: Ipv4Addr,
}

/// Option 121 (RFC 3442): `width, significant octets of the destination, router`, repeated.
/// `None` when malformed, so the caller falls back to option 33 as the reference (whose parser
/// returns nothing on error) does.
pub fn classless_routes(v: &[u8]) -> Option<Vec<StaticRoute>> {
    let mut routes = Vec::new();
    let mut rest = v;
    while let [width, tail @ ..] = rest {
        if *width > 32 {
            return None;
        }
        let n = (*width as usize).div_ceil(8);
        if tail.len() < n + 4 {
            return None;
        }
        let mut dst = [0u8; 4];
        dst[..n].copy_from_slice(&tail[..n]);
        let mask = if *width == 0 { 0 } else { u32::MAX << (32 - *width as u32) };
        let dst = Ipv4Addr::from(u32::from_be_bytes(dst) & mask);
        routes.push(StaticRoute { dst, prefix: *width, router: ip_at(tail, n) });
        rest = &tail[n + 4..];
    }
    Some(routes)
}

/// Option 33 (RFC 2132): `destination, router` pairs with classful destinations (Go's
/// `DefaultMask`; class D and E, which have none, become host routes).
pub fn static_routes(v: &[u8]) -> Vec<StaticRoute> {
    v.chunks_exact(8)
        .map(|c| {
            let dst = ip_at(c, 0);
            let prefix = match dst.octets()[0] {
                0..128 => 8,
                128..192 => 16,
                192..224 => 24,
                _ => 32,
            };
            StaticRoute { dst, prefix, router: ip_at(c, 4) }
        })
        .collect()
}

/// The payload of an unfragmented IPv4 UDP datagram to `port`; `None` for anything else.
pub fn udp_payload(p: &[u8], port: u16) -> Option<&[u8]> {
    let first = *p.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = (first & 0x0f) as usize * 4;
    if ihl < 20 || p.len() < ihl + 8 || p[9] != 17 {
        return None;
    }
    if u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0 {
        return None; // a fragment
    }
    let total = (u16::from_be_bytes([p[2], p[3]]) as usize).clamp(ihl + 8, p.len());
    let udp = &p[ihl..total];
    if u16::from_be_bytes([udp[2], udp[3]]) != port {
        return None;
    }
    let len = (u16::from_be_bytes([udp[4], udp[5]]) as usize).clamp(8, udp.len());
    Some(&udp[8..len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_parse_round_trips() {
        let mut m = Message::request(Kind::Request, 0xdead_beef, [2, 0, 0, 0, 0, 1]);
        m.flags = FLAG_BROADCAST;
        m.options.insert(opt::CLIENT_ID, vec![7u8; 300]);
        m.options.insert(opt::PARAMETER_REQUEST_LIST, vec![1, 3]);
        let b = m.encode();
        assert_eq!(b[HEADER + 4], opt::MESSAGE_TYPE, "message type first");
        assert!(b.len() >= MIN_SIZE);
        let back = Message::parse(&b).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.kind(), Some(Kind::Request));
    }

    #[test]
    fn truncated_and_garbage_input_is_an_error_not_a_panic() {
        let good = Message::request(Kind::Discover, 1, [0; 6]).encode();
        for n in 0..good.len() {
            let _ = Message::parse(&good[..n]);
        }
        let mut bad = good.clone();
        bad[HEADER + 4] = 61;
        bad[HEADER + 5] = 250;
        bad.truncate(HEADER + 10);
        assert_eq!(Message::parse(&bad), Err(ParseError("option runs past the end")));
        assert!(Message::parse(&[0u8; 10]).is_err());
    }

    #[test]
    fn classless_routes_follow_rfc_3442() {
        // 10.0.0.0/8 via 10.0.0.1, 0/0 via 10.0.0.254, 192.168.1.128/25 on link.
        let v = [8, 10, 10, 0, 0, 1, 0, 10, 0, 0, 254, 25, 192, 168, 1, 128, 0, 0, 0, 0];
        let r = classless_routes(&v).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(
            r[0],
            StaticRoute { dst: Ipv4Addr::new(10, 0, 0, 0), prefix: 8, router: Ipv4Addr::new(10, 0, 0, 1) }
        );
        assert_eq!(r[1].prefix, 0);
        assert_eq!(r[2].dst, Ipv4Addr::new(192, 168, 1, 128));
        assert!(r[2].router.is_unspecified());
        assert_eq!(classless_routes(&[33, 1, 2, 3, 4, 5, 6, 7, 8]), None);
        assert_eq!(classless_routes(&[24, 10, 0]), None);
    }

    #[test]
    fn static_routes_are_classful() {
        let v = [10, 1, 0, 0, 1, 1, 1, 1, 172, 16, 0, 0, 2, 2, 2, 2, 192, 168, 3, 0, 3, 3, 3, 3, 9];
        let r = static_routes(&v);
        assert_eq!(r.iter().map(|r| r.prefix).collect::<Vec<_>>(), vec![8, 16, 24]);
    }

    #[test]
    fn udp_payload_takes_only_whole_datagrams_to_the_port() {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        p.extend_from_slice(&[0, 67, 0, 68, 0, 11, 0, 0, b'a', b'b', b'c']);
        let total = p.len() as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        assert_eq!(udp_payload(&p, 68), Some(&b"abc"[..]));
        assert_eq!(udp_payload(&p, 67), None);
        let mut frag = p.clone();
        frag[6] = 0x20; // more fragments
        assert_eq!(udp_payload(&frag, 68), None);
        for n in 0..p.len() {
            let _ = udp_payload(&p[..n], 68);
        }
    }

    /// The fuzz target's property on pseudo-random option fields behind a valid header.
    #[test]
    fn parsed_messages_encode_back_to_themselves() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let header = Message::request(Kind::Offer, 7, [1; 6]).encode();
        for _ in 0..5000 {
            let mut b = header[..HEADER + 4].to_vec();
            let n = (next() % 600) as usize;
            b.extend((0..n).map(|_| (next() % 256) as u8));
            if let Ok(m) = Message::parse(&b) {
                assert_eq!(Message::parse(&m.encode()).unwrap(), m);
            }
            let _ = classless_routes(&b[HEADER..]);
        }
    }
}
