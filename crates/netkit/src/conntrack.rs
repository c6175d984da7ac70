//! Conntrack entries: dropping stale UDP flows for a published port, so a re-created container
//! receives traffic at once instead of after the old entries time out (plugins#123).

use crate::netlink::{NlError, Socket};
use crate::rtnl::Family;
use netlink_packet_netfilter::conntrack::{ConntrackAttribute, ConntrackMessage, ProtoTuple, Protocol, Tuple};
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};

fn family(f: Family) -> NetfilterProtoFamily {
    match f {
        Family::V4 => NetfilterProtoFamily::IPv4,
        Family::V6 => NetfilterProtoFamily::IPv6,
    }
}

fn message(f: Family, inner: ConntrackMessage) -> NetfilterMessage {
    NetfilterMessage::new(NetfilterHeader::new(family(f), 0, 0), inner)
}

/// The original-direction tuple of an entry, if it is UDP to `port`.
fn udp_to_port(attrs: &[ConntrackAttribute], port: u16) -> Option<Vec<Tuple>> {
    attrs.iter().find_map(|a| match a {
        ConntrackAttribute::CtaTupleOrig(tuple) => {
            let proto = tuple.iter().find_map(|t| match t {
                Tuple::Proto(p) => Some(p),
                _ => None,
            })?;
            let udp = proto.iter().any(|p| matches!(p, ProtoTuple::Protocol(Protocol::Udp)));
            let dport = proto.iter().any(|p| matches!(p, ProtoTuple::DestinationPort(d) if *d == port));
            (udp && dport).then(|| tuple.clone())
        }
        _ => None,
    })
}

/// Deletes every UDP conntrack entry of `family` whose original destination port is `port`, in the
/// calling thread's namespace. Returns how many went. Requires CAP_NET_ADMIN.
pub fn delete_udp_to_port(f: Family, port: u16) -> Result<usize, NlError> {
    let mut sock: Socket<NetfilterMessage> = Socket::open(netlink_sys::constants::NETLINK_NETFILTER)?;
    let entries = sock.dump(|| message(f, ConntrackMessage::Get(Vec::new())))?;
    let mut deleted = 0;
    for entry in entries {
        let NetfilterMessageInner::Conntrack(ConntrackMessage::New(attrs)) = entry.inner else { continue };
        let Some(tuple) = udp_to_port(&attrs, port) else { continue };
        match sock.execute(message(f, ConntrackMessage::Delete(vec![ConntrackAttribute::CtaTupleOrig(tuple)])), 0) {
            Ok(()) => deleted += 1,
            // It timed out or was deleted by someone else meanwhile.
            Err(e) if e.is(nix::libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}
