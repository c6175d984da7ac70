//! Routes: add, replace, delete, list. Calls act in the handle's namespace.

use crate::netlink::NlError;
use crate::rtnl::{Family, Rtnl};
use ipnetwork::IpNetwork;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteProtocol, RouteScope, RouteType,
};
use std::net::IpAddr;

/// The main routing table.
pub const MAIN_TABLE: u32 = 254;

/// A route as we install or read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub dst: IpNetwork,
    pub gw: Option<IpAddr>,
    /// Output interface index.
    pub oif: Option<u32>,
    /// Table (main when `None`).
    pub table: Option<u32>,
    /// Scope; link scope for a route without gateway, universe otherwise, when `None`.
    pub scope: Option<u8>,
    /// Metric (RTA_PRIORITY).
    pub priority: Option<u32>,
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    pub src: Option<IpAddr>,
}

impl RouteSpec {
    pub fn new(dst: IpNetwork, gw: Option<IpAddr>, oif: Option<u32>) -> RouteSpec {
        RouteSpec { dst, gw, oif, table: None, scope: None, priority: None, mtu: None, advmss: None, src: None }
    }

    fn message(&self) -> RouteMessage {
        let family = Family::of(&self.dst.ip());
        let table = self.table.unwrap_or(MAIN_TABLE);
        let scope = self.scope.map(RouteScope::from).unwrap_or(match self.gw {
            Some(_) => RouteScope::Universe,
            None => RouteScope::Link,
        });
        let mut msg = RouteMessage::default();
        msg.header = RouteHeader {
            address_family: family.netlink(),
            destination_prefix_length: self.dst.prefix(),
            table: u8::try_from(table).unwrap_or(0),
            protocol: RouteProtocol::Boot,
            scope,
            kind: RouteType::Unicast,
            ..RouteHeader::default()
        };
        let attrs = &mut msg.attributes;
        attrs.push(RouteAttribute::Table(table));
        if self.dst.prefix() > 0 {
            attrs.push(RouteAttribute::Destination(RouteAddress::from(self.dst.network())));
        }
        if let Some(gw) = self.gw {
            attrs.push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        if let Some(oif) = self.oif {
            attrs.push(RouteAttribute::Oif(oif));
        }
        if let Some(p) = self.priority {
            attrs.push(RouteAttribute::Priority(p));
        }
        if let Some(src) = self.src {
            attrs.push(RouteAttribute::PrefSource(RouteAddress::from(src)));
        }
        let mut metrics = Vec::new();
        if let Some(mtu) = self.mtu {
            metrics.push(RouteMetric::Mtu(mtu));
        }
        if let Some(advmss) = self.advmss {
            metrics.push(RouteMetric::Advmss(advmss));
        }
        if !metrics.is_empty() {
            attrs.push(RouteAttribute::Metrics(metrics));
        }
        msg
    }

    fn from_message(msg: RouteMessage) -> Option<RouteSpec> {
        let family = msg.header.address_family;
        let mut dst_ip: Option<IpAddr> = None;
        let mut spec = RouteSpec::new(IpNetwork::new(unspecified(family)?, 0).ok()?, None, None);
        spec.table = Some(u32::from(msg.header.table));
        spec.scope = Some(u8::from(msg.header.scope));
        for attr in msg.attributes {
            match attr {
                RouteAttribute::Destination(a) => dst_ip = ip_of(a),
                RouteAttribute::Gateway(a) => spec.gw = ip_of(a),
                RouteAttribute::Oif(i) => spec.oif = Some(i),
                RouteAttribute::Table(t) => spec.table = Some(t),
                RouteAttribute::Priority(p) => spec.priority = Some(p),
                RouteAttribute::PrefSource(a) => spec.src = ip_of(a),
                RouteAttribute::Metrics(ms) => {
                    for m in ms {
                        match m {
                            RouteMetric::Mtu(v) => spec.mtu = Some(v),
                            RouteMetric::Advmss(v) => spec.advmss = Some(v),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(ip) = dst_ip {
            spec.dst = IpNetwork::new(ip, msg.header.destination_prefix_length).ok()?;
        }
        Some(spec)
    }
}

fn unspecified(family: netlink_packet_route::AddressFamily) -> Option<IpAddr> {
    match family {
        netlink_packet_route::AddressFamily::Inet => Some(IpAddr::from([0u8; 4])),
        netlink_packet_route::AddressFamily::Inet6 => Some(IpAddr::from([0u8; 16])),
        _ => None,
    }
}

fn ip_of(addr: RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(a) => Some(IpAddr::V4(a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(a)),
        _ => None,
    }
}

impl Rtnl {
    /// Adds a route; fails with EEXIST if the same route is there.
    pub fn add_route(&mut self, route: &RouteSpec) -> Result<(), NlError> {
        self.sock.execute(RouteNetlinkMessage::NewRoute(route.message()), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Adds the route or replaces the one with the same destination, table and metric.
    pub fn replace_route(&mut self, route: &RouteSpec) -> Result<(), NlError> {
        self.sock.execute(RouteNetlinkMessage::NewRoute(route.message()), NLM_F_CREATE | NLM_F_REPLACE)
    }

    pub fn del_route(&mut self, route: &RouteSpec) -> Result<(), NlError> {
        self.sock.execute(RouteNetlinkMessage::DelRoute(route.message()), 0)
    }

    /// The route the kernel would use to reach `dst` (`ip route get`), or `None` if unreachable.
    pub fn route_get(&mut self, dst: IpAddr) -> Result<Option<RouteSpec>, NlError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = Family::of(&dst).netlink();
        msg.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
        msg.attributes.push(RouteAttribute::Destination(RouteAddress::from(dst)));
        match self.sock.query(RouteNetlinkMessage::GetRoute(msg)) {
            Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => RouteSpec::from_message(r),
                _ => None,
            })),
            Err(e) if e.is(nix::libc::ENETUNREACH) || e.is(nix::libc::EHOSTUNREACH) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Unicast routes of one family, in every table.
    pub fn routes(&mut self, family: Family) -> Result<Vec<RouteSpec>, NlError> {
        let replies = self.sock.dump(|| {
            let mut msg = RouteMessage::default();
            msg.header.address_family = family.netlink();
            RouteNetlinkMessage::GetRoute(msg)
        })?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) if r.header.kind == RouteType::Unicast => RouteSpec::from_message(r),
                _ => None,
            })
            .collect())
    }
}

impl Rtnl {
    /// Deletes the route the kernel made for an address's prefix (`net` on link `index`), whatever
    /// its protocol and scope: ptp replaces it with routes through the gateway.
    pub fn del_prefix_route(&mut self, index: u32, net: IpNetwork) -> Result<(), NlError> {
        let mut msg = RouteSpec::new(net, None, Some(index)).message();
        msg.header.protocol = RouteProtocol::Unspec;
        msg.header.scope = RouteScope::NoWhere;
        self.sock.execute(RouteNetlinkMessage::DelRoute(msg), 0)
    }
}
