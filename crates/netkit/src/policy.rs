//! Policy routing: `ip rule` entries and whole routing tables, for sbr (a table per container
//! address) and vrf (routes moved into the VRF's table). Calls act in the handle's namespace.
//!
//! Routes are moved as the kernel reported them ([`TableRoute`] keeps the whole message), so
//! protocol, scope, type, preferred source and metrics survive the move; only the table changes
//! and the route flags are cleared (the kernel refuses a copy of a route flagged `linkdown`,
//! `EINVAL`, as the reference learnt in PR #472).

use crate::netlink::NlError;
use crate::rtnl::{Family, Rtnl};
use ipnetwork::IpNetwork;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::route::{RouteAttribute, RouteFlags, RouteMessage};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// A policy-routing rule as the kernel reports it. The message is kept whole, so deleting it
/// names exactly this rule (same priority, selectors and action).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub family: Family,
    pub priority: Option<u32>,
    /// `from` selector; `None` means all sources.
    pub src: Option<IpNetwork>,
    pub table: u32,
    msg: RuleMessage,
}

fn rule_family(msg: &RuleMessage) -> Option<Family> {
    match msg.header.family {
        netlink_packet_route::AddressFamily::Inet => Some(Family::V4),
        netlink_packet_route::AddressFamily::Inet6 => Some(Family::V6),
        _ => None,
    }
}

impl Rule {
    fn from_message(msg: RuleMessage) -> Option<Rule> {
        let family = rule_family(&msg)?;
        let mut rule = Rule { family, priority: None, src: None, table: u32::from(msg.header.table), msg: msg.clone() };
        for attr in &msg.attributes {
            match attr {
                RuleAttribute::Priority(p) => rule.priority = Some(*p),
                RuleAttribute::Table(t) => rule.table = *t,
                RuleAttribute::Source(ip) => rule.src = IpNetwork::new(*ip, msg.header.src_len).ok(),
                _ => {}
            }
        }
        Some(rule)
    }
}

/// A route of some table, kept as the kernel's message so it can be moved or deleted exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRoute {
    pub dst: IpNetwork,
    pub gw: Option<IpAddr>,
    /// Preferred source (`src`).
    pub src: Option<IpAddr>,
    pub oif: Option<u32>,
    pub table: u32,
    /// `RT_SCOPE_*`: 0 universe (through a gateway or to anywhere), 253 link, 254 host.
    pub scope: u8,
    msg: RouteMessage,
}

impl TableRoute {
    fn from_message(msg: RouteMessage) -> Option<TableRoute> {
        let any: IpAddr = match msg.header.address_family {
            netlink_packet_route::AddressFamily::Inet => IpAddr::from([0u8; 4]),
            netlink_packet_route::AddressFamily::Inet6 => IpAddr::from([0u8; 16]),
            _ => return None,
        };
        let mut dst = any;
        let mut route = TableRoute {
            dst: IpNetwork::new(any, 0).ok()?,
            gw: None,
            src: None,
            oif: None,
            table: u32::from(msg.header.table),
            scope: u8::from(msg.header.scope),
            msg: msg.clone(),
        };
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Destination(a) => dst = ip_of(a)?,
                RouteAttribute::Gateway(a) => route.gw = ip_of(a),
                RouteAttribute::PrefSource(a) => route.src = ip_of(a),
                RouteAttribute::Oif(i) => route.oif = Some(*i),
                RouteAttribute::Table(t) => route.table = *t,
                _ => {}
            }
        }
        route.dst = IpNetwork::new(dst, msg.header.destination_prefix_length).ok()?;
        Some(route)
    }

    /// The same route in `table`, flags cleared.
    fn in_table(&self, table: u32) -> RouteMessage {
        let mut msg = self.msg.clone();
        msg.header.table = u8::try_from(table).unwrap_or(0); // RT_TABLE_UNSPEC: RTA_TABLE says which
        msg.header.flags = RouteFlags::empty();
        msg.attributes.retain(|a| !matches!(a, RouteAttribute::Table(_) | RouteAttribute::CacheInfo(_)));
        msg.attributes.push(RouteAttribute::Table(table));
        msg
    }
}

fn ip_of(addr: &netlink_packet_route::route::RouteAddress) -> Option<IpAddr> {
    match addr {
        netlink_packet_route::route::RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        netlink_packet_route::route::RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

impl Rtnl {
    /// Every rule of both families.
    pub fn rules(&mut self) -> Result<Vec<Rule>, NlError> {
        let mut out = Vec::new();
        for family in [Family::V4, Family::V6] {
            let replies = self.sock.dump(|| {
                let mut msg = RuleMessage::default();
                msg.header.family = family.netlink();
                RouteNetlinkMessage::GetRule(msg)
            })?;
            out.extend(replies.into_iter().filter_map(|m| match m {
                RouteNetlinkMessage::NewRule(r) => Rule::from_message(r),
                _ => None,
            }));
        }
        Ok(out)
    }

    /// `ip rule add from SRC lookup TABLE`, without a priority: the kernel gives it the one just
    /// before the last rule it holds before `main` (32765, then 32764...), as the reference's
    /// `netlink.RuleAdd` of a rule without priority does.
    pub fn add_source_rule(&mut self, src: IpNetwork, table: u32) -> Result<(), NlError> {
        let mut msg = RuleMessage::default();
        msg.header.family = Family::of(&src.ip()).netlink();
        msg.header.src_len = src.prefix();
        msg.header.action = RuleAction::ToTable;
        msg.header.table = u8::try_from(table).unwrap_or(0);
        msg.attributes.push(RuleAttribute::Table(table));
        msg.attributes.push(RuleAttribute::Source(src.ip()));
        self.sock.execute(RouteNetlinkMessage::NewRule(msg), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Deletes exactly `rule` (ENOENT when it is gone).
    pub fn del_rule(&mut self, rule: &Rule) -> Result<(), NlError> {
        self.sock.execute(RouteNetlinkMessage::DelRule(rule.msg.clone()), 0)
    }

    /// Every route of both families in every table, of any type (local, broadcast... included).
    pub fn table_routes(&mut self) -> Result<Vec<TableRoute>, NlError> {
        let mut out = Vec::new();
        for family in [Family::V4, Family::V6] {
            let replies = self.sock.dump(|| {
                let mut msg = RouteMessage::default();
                msg.header.address_family = family.netlink();
                RouteNetlinkMessage::GetRoute(msg)
            })?;
            out.extend(replies.into_iter().filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => TableRoute::from_message(r),
                _ => None,
            }));
        }
        Ok(out)
    }

    /// Table IDs that hold a route or that a rule points to.
    pub fn tables_in_use(&mut self) -> Result<BTreeSet<u32>, NlError> {
        let mut used: BTreeSet<u32> = self.rules()?.iter().map(|r| r.table).collect();
        used.extend(self.table_routes()?.iter().map(|r| r.table));
        Ok(used)
    }

    /// Adds `route` to `table` (replacing a route there with the same key), flags cleared.
    pub fn copy_route_to_table(&mut self, route: &TableRoute, table: u32) -> Result<(), NlError> {
        self.sock.execute(RouteNetlinkMessage::NewRoute(route.in_table(table)), NLM_F_CREATE | NLM_F_REPLACE)
    }

    /// Deletes the copy of `route` that [`Rtnl::copy_route_to_table`] made in `table`.
    pub fn del_route_copy(&mut self, route: &TableRoute, table: u32) -> Result<(), NlError> {
        self.sock.execute(RouteNetlinkMessage::DelRoute(route.in_table(table)), 0)
    }

    /// Adds `route` back, as it was (EEXIST when it is there).
    pub fn restore_route(&mut self, route: &TableRoute) -> Result<(), NlError> {
        self.sock.execute(RouteNetlinkMessage::NewRoute(route.in_table(route.table)), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Deletes `route` from its table (ESRCH when it is gone).
    pub fn del_table_route(&mut self, route: &TableRoute) -> Result<(), NlError> {
        self.sock.execute(RouteNetlinkMessage::DelRoute(route.msg.clone()), 0)
    }
}
