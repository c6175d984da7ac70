//! The portmap plugin's nftables state: published ports as verdict-map elements that jump to one
//! chain per attachment, and masquerade for the flows that need it.
//!
//! ```text
//! table inet cni_portmap
//!   map hostip_v4 { ipv4_addr . inet_proto . inet_service : verdict }  192.0.2.1 . tcp . 8080 : jump pm-<net>-<inst>
//!   map hostip_v6 { ipv6_addr . inet_proto . inet_service : verdict }
//!   map hostport_v4 { inet_proto . inet_service : verdict }            tcp . 8080 : jump pm-<net>-<inst>
//!   map hostport_v6 { inet_proto . inet_service : verdict }
//!   map masq_v4 { ipv4_addr : verdict }                                 10.88.0.5 : jump pms-<net>-<inst>
//!   map masq_v6 { ipv6_addr : verdict }
//!   chain prerouting, output (nat, dstnat)   fib daddr type local jump hostports
//!   chain hostports                          hostIP maps first, then the any-address map of the family
//!   chain key-<hash>                         jump pm-<net>-<A>; jump pm-<net>-<B>  (a port two hold)
//!   chain postrouting (nat, srcnat)          ct status dnat ip daddr vmap @masq_v4
//!   chain pm-<net>-<inst>                    [conditionsV4] ip daddr 192.0.2.1 tcp dport 8080 dnat ip to 10.88.0.5:80 ...
//!   chain pms-<net>-<inst>                   ip saddr 10.88.0.0/24 masquerade; ip saddr 127.0.0.1 masquerade
//! ```
//!
//! Looking up a port or a masquerade entry costs the same however many are published (hash maps;
//! an interval set of source prefixes would be rebuilt on every change, at a cost growing with the
//! number of containers), and an ADD or DEL touches only its own elements and chains: one small
//! transaction. The attachment is the network,
//! container ID and interface (the reference keys on the container ID alone, so a DEL on one network
//! removed the same container's mappings on another). `conditionsV4/V6` are part of each
//! attachment's rules, so they apply to that network's mappings only. A DEL that is not told the
//! mappings (runtimes drop capability arguments on DEL) reads them back from the attachment's own
//! two chains, so its cost does not grow with the ports the node publishes.
//!
//! A port (or container address) that two attachments hold at once, on one network or two, is a
//! contested key ([`base`]): the first holder gets the traffic, the next takes over when it goes,
//! as with the reference's rule order. Each family has its own any-address map, so an IPv4 holder
//! and an IPv6 holder of one port never contend.
//!
//! Masquerade: a flow DNATed to a container is masqueraded when its source is in the container's
//! subnet (the container itself, hairpin, or its neighbours on the same bridge, whose replies
//! would otherwise bypass the host) or 127.0.0.1 (the host's own localhost, which cannot leave
//! it), or any source with `masqAll`. This is the reference's iptables behaviour.

use crate::base::{self, BaseTable};
use crate::identity::{Identity, network_hash};
use crate::json::{self, Batch, concat, elements, jump, matches, meta, payload, prefix, verdict, vmap};
use crate::nft::{self, Nft};
use anyhow::Context;
use ipnetwork::IpNetwork;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::IpAddr;

pub const TABLE: &str = "cni_portmap";
const INET: &str = "inet";
const HOSTIP_V4: &str = "hostip_v4";
const HOSTIP_V6: &str = "hostip_v6";
const HOSTPORT_V4: &str = "hostport_v4";
const HOSTPORT_V6: &str = "hostport_v6";
/// Before the family split, one any-address map served both families; its elements are moved to
/// the two maps above by the first repair, and DEL and GC still look there.
const LEGACY_HOSTPORT: &str = "hostport";
const MASQ_V4: &str = "masq_v4";
const MASQ_V6: &str = "masq_v6";
const HOSTPORTS: &str = "hostports";
const BASE_COMMENT: &str = "cni_portmap base";
const MAPS: &[&str] = &[HOSTIP_V4, HOSTIP_V6, HOSTPORT_V4, HOSTPORT_V6, MASQ_V4, MASQ_V6, LEGACY_HOSTPORT];

/// A transport protocol a port can be published for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One published port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
    /// A specific host address; `None` for any (an empty, `0.0.0.0` or `::` hostIP).
    pub host_ip: Option<IpAddr>,
}

impl Mapping {
    /// Whether this mapping applies to the container address of this family (a host address of the
    /// other family is skipped, as in the reference).
    fn applies_to(&self, v4: bool) -> bool {
        self.host_ip.is_none_or(|h| h.is_ipv4() == v4)
    }

    /// The key of this mapping's element for a container address of one family, and the map it
    /// goes in.
    fn key(&self, v4: bool) -> (&'static str, Value) {
        match self.host_ip {
            Some(ip) => (
                if ip.is_ipv4() { HOSTIP_V4 } else { HOSTIP_V6 },
                concat(vec![json!(ip.to_string()), json!(self.protocol.as_str()), json!(self.host_port)]),
            ),
            None => (
                if v4 { HOSTPORT_V4 } else { HOSTPORT_V6 },
                concat(vec![json!(self.protocol.as_str()), json!(self.host_port)]),
            ),
        }
    }
}

/// What one attachment publishes.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    pub id: Identity,
    pub mappings: Vec<Mapping>,
    /// The container's first IPv4 and IPv6 address on the interface, with their prefixes.
    pub v4: Option<IpNetwork>,
    pub v6: Option<IpNetwork>,
    pub snat: bool,
    pub masq_all: bool,
    /// Parsed `conditionsV4` / `conditionsV6` (see [`crate::conditions`]).
    pub conditions_v4: Vec<Value>,
    pub conditions_v6: Vec<Value>,
}

impl Attachment {
    fn chain(&self) -> String {
        self.id.chain("pm")
    }

    fn addresses(&self) -> impl Iterator<Item = &IpNetwork> {
        self.v4.iter().chain(self.v6.iter())
    }

    /// Each mapping element: (map, key); one per mapping and address family it applies to.
    fn element_keys(&self) -> Vec<(&'static str, Value)> {
        let mut keys: Vec<(&'static str, Value)> = Vec::new();
        // Seen keys by their text: a list scan here would make ADD quadratic in the mappings.
        let mut seen = std::collections::HashSet::new();
        for m in &self.mappings {
            for (v4, present) in [(true, self.v4.is_some()), (false, self.v6.is_some())] {
                let key = m.key(v4);
                if present && m.applies_to(v4) && seen.insert(format!("{} {}", key.0, key.1)) {
                    keys.push(key);
                }
            }
        }
        keys
    }

    /// The attachment's masquerade chain.
    fn masq_chain(&self) -> String {
        self.id.chain("pms")
    }

    /// The masquerade map elements: (map, container address); none without `snat`.
    fn masq_keys(&self) -> Vec<(&'static str, Value)> {
        if !self.snat {
            return Vec::new();
        }
        self.addresses()
            .map(|net| (if net.is_ipv4() { MASQ_V4 } else { MASQ_V6 }, json!(net.ip().to_string())))
            .collect()
    }

    /// Every key the attachment holds, with the chain it leads to.
    fn claims<'a>(&self, chains: &'a (String, String, String)) -> Vec<base::Claim<'a>> {
        let (dnat, masq, comment) = chains;
        let ports = self.element_keys().into_iter().map(|(map, key)| (map, key, dnat));
        let masq = self.masq_keys().into_iter().map(|(map, key)| (map, key, masq));
        ports.chain(masq).map(|(map, key, chain)| base::Claim { map, key, chain, verb: "jump", comment }).collect()
    }

    /// The attachment's chain names and comment, which its claims borrow.
    fn names(&self) -> (String, String, String) {
        (self.chain(), self.masq_chain(), self.id.comment())
    }

    /// The masquerade chain's rules: sources in the container's subnet (hairpin and neighbours)
    /// and the host's 127.0.0.1, or every source with `masqAll`.
    fn masq_rules(&self) -> Vec<Vec<Value>> {
        if self.masq_all {
            return vec![vec![verdict("masquerade")]];
        }
        let mut rules = Vec::new();
        for net in self.addresses() {
            let proto = json::ip_proto(net);
            rules.push(vec![matches("==", payload(proto, "saddr"), prefix(*net)), verdict("masquerade")]);
            if net.is_ipv4() {
                rules.push(vec![matches("==", payload("ip", "saddr"), json!("127.0.0.1")), verdict("masquerade")]);
            }
        }
        rules
    }
}

pub(crate) fn base_table() -> BaseTable {
    let fib_local = matches("==", json!({"fib": {"result": "type", "flags": ["daddr"]}}), json!("local"));
    let l4 = || vec![meta("l4proto"), payload("th", "dport")];
    let dnat_status = || matches("in", json::ct("status"), json!("dnat"));
    BaseTable {
        family: INET,
        name: TABLE,
        marker: BASE_COMMENT,
        objects: vec![
            json::table(INET, TABLE),
            json::typed_verdict_map(INET, TABLE, HOSTIP_V4, json!(["ipv4_addr", "inet_proto", "inet_service"])),
            json::typed_verdict_map(INET, TABLE, HOSTIP_V6, json!(["ipv6_addr", "inet_proto", "inet_service"])),
            json::typed_verdict_map(INET, TABLE, HOSTPORT_V4, json!(["inet_proto", "inet_service"])),
            json::typed_verdict_map(INET, TABLE, HOSTPORT_V6, json!(["inet_proto", "inet_service"])),
            json::verdict_map(INET, TABLE, MASQ_V4, "ipv4_addr"),
            json::verdict_map(INET, TABLE, MASQ_V6, "ipv6_addr"),
            json::chain(INET, TABLE, HOSTPORTS),
            json::base_chain(INET, TABLE, "prerouting", "nat", "prerouting", -100),
            json::base_chain(INET, TABLE, "output", "nat", "output", -100),
            json::base_chain(INET, TABLE, "postrouting", "nat", "postrouting", 100),
        ],
        chains: vec![
            (
                HOSTPORTS.into(),
                vec![
                    vec![vmap(concat([vec![payload("ip", "daddr")], l4()].concat()), HOSTIP_V4)],
                    vec![vmap(concat([vec![payload("ip6", "daddr")], l4()].concat()), HOSTIP_V6)],
                    vec![matches("==", meta("nfproto"), json!("ipv4")), vmap(concat(l4()), HOSTPORT_V4)],
                    vec![matches("==", meta("nfproto"), json!("ipv6")), vmap(concat(l4()), HOSTPORT_V6)],
                ],
            ),
            ("prerouting".into(), vec![vec![fib_local.clone(), jump(HOSTPORTS)]]),
            ("output".into(), vec![vec![fib_local, jump(HOSTPORTS)]]),
            (
                "postrouting".into(),
                vec![
                    vec![dnat_status(), vmap(payload("ip", "daddr"), MASQ_V4)],
                    vec![dnat_status(), vmap(payload("ip6", "daddr"), MASQ_V6)],
                ],
            ),
        ],
    }
}

/// The DNAT rules of the attachment's chain.
fn dnat_rules(a: &Attachment) -> Vec<Vec<Value>> {
    let mut rules = Vec::new();
    for net in a.addresses() {
        let (v4, proto, family) = if net.is_ipv4() { (true, "ip", "ipv4") } else { (false, "ip6", "ipv6") };
        for m in a.mappings.iter().filter(|m| m.applies_to(v4)) {
            let mut expr = if v4 { a.conditions_v4.clone() } else { a.conditions_v6.clone() };
            expr.push(matches("==", meta("nfproto"), json!(family)));
            if let Some(host) = m.host_ip {
                expr.push(matches("==", payload(proto, "daddr"), json!(host.to_string())));
            }
            expr.push(matches("==", payload(m.protocol.as_str(), "dport"), json!(m.host_port)));
            expr.push(json!({"dnat": {"family": proto, "addr": net.ip().to_string(), "port": m.container_port}}));
            rules.push(expr);
        }
    }
    rules
}

/// The attachment's own chains with their rules (re-added whole, so a retried ADD converges).
fn own_chains(a: &Attachment, names: &(String, String, String)) -> Batch {
    let mut b = Batch::new();
    let (chain, masq_chain, comment) = names;
    b.add(json::chain(INET, TABLE, chain));
    b.flush(json::chain(INET, TABLE, chain));
    for expr in dnat_rules(a) {
        b.add(json::rule(INET, TABLE, chain, expr, Some(comment)));
    }
    if !a.masq_keys().is_empty() {
        b.add(json::chain(INET, TABLE, masq_chain));
        b.flush(json::chain(INET, TABLE, masq_chain));
        for expr in a.masq_rules() {
            b.add(json::rule(INET, TABLE, masq_chain, expr, Some(comment)));
        }
    }
    b
}

/// The transaction an ADD needs once the base objects exist and no other attachment holds one of
/// its keys.
pub fn add_batch(a: &Attachment) -> Batch {
    let names = a.names();
    let mut b = own_chains(a, &names);
    for claim in a.claims(&names) {
        b.add(elements(INET, TABLE, claim.map, vec![claim.element()]));
    }
    b
}

/// How often a transaction computed from a listing is tried again after a concurrent ADD or DEL
/// changed what it was computed from.
const ATTEMPTS: usize = 3;

/// Publishes an attachment's ports: the fast path first; then, if the base objects are missing or
/// damaged, or another attachment holds one of our keys, the same entries planned from a listing:
/// the repair, and a place behind the keys' holders (see [`base::Claim::take`]).
pub fn add(nft: &Nft, a: &Attachment) -> anyhow::Result<()> {
    if a.mappings.is_empty() {
        return Ok(());
    }
    let fast = add_batch(a);
    if nft.apply(&fast.to_json()).is_ok() {
        return Ok(());
    }
    let names = a.names();
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let listing = nft.list(&["table", INET, TABLE])?;
        let mut batch = base_table().repair(listing.as_ref());
        batch.extend(migrate_legacy_hostport(listing.as_ref()));
        match &listing {
            None => batch.extend(add_batch(a)),
            Some(listing) => {
                batch.extend(own_chains(a, &names));
                for claim in a.claims(&names) {
                    batch.extend(claim.take(INET, TABLE, listing).unwrap_or_default());
                }
            }
        }
        match nft.apply(&batch.to_json()) {
            Ok(()) => return Ok(()),
            Err(e) if base::raced(&e) => last = Some(e),
            Err(e) => return Err(e.context("publishing ports")),
        }
    }
    Err(last.expect("at least one attempt").context("publishing ports (the table kept changing)"))
}

/// The elements of the any-address map of before the family split, moved to both families' maps
/// (the chains they point at match one family themselves), and the old map removed. Runs once, in
/// the repair that creates the new maps.
fn migrate_legacy_hostport(listing: Option<&Value>) -> Batch {
    let mut b = Batch::new();
    let Some(listing) = listing else { return b };
    if !nft::objects(listing).any(|(kind, m)| kind == "map" && m["name"] == LEGACY_HOSTPORT) {
        return b;
    }
    for (key, target) in nft::verdict_map_elements(listing, LEGACY_HOSTPORT) {
        let Some(target) = target else { continue };
        for map in [HOSTPORT_V4, HOSTPORT_V6] {
            if nft::verdict_map_elements(listing, map).iter().all(|(k, _)| k != &key) {
                b.add(elements(INET, TABLE, map, vec![json!([key.clone(), jump(&target)])]));
            }
        }
    }
    b.delete(json!({"map": {"family": INET, "table": TABLE, "name": LEGACY_HOSTPORT}}));
    b
}

/// The one-transaction DEL when the mappings are known and no key is shared: it fails (and the
/// listing path runs) when one is.
pub fn del_batch(a: &Attachment) -> Batch {
    let mut b = Batch::new();
    let names = a.names();
    let (chain, masq_chain, _) = &names;
    for claim in a.claims(&names) {
        base::remove_if_ours(&mut b, INET, TABLE, claim.map, claim.key.clone(), jump(claim.chain));
    }
    b.flush(json::chain(INET, TABLE, chain));
    b.delete(json::chain(INET, TABLE, chain));
    if !a.masq_keys().is_empty() {
        b.flush(json::chain(INET, TABLE, masq_chain));
        b.delete(json::chain(INET, TABLE, masq_chain));
    }
    b
}

/// What a listing says an attachment chain published: its UDP host ports (for conntrack).
pub fn udp_ports_in(listing: &Value, chain: &str) -> Vec<u16> {
    nft::rules_of(listing, chain)
        .flat_map(|r| r["expr"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| {
            let m = e.get("match")?;
            let left = m["left"].get("payload")?;
            (left["protocol"] == "udp" && left["field"] == "dport").then(|| m["right"].as_u64())?
        })
        .filter_map(|p| u16::try_from(p).ok())
        .collect()
}

/// The attachment as its own chains show it (the mappings and addresses of its DNAT rules,
/// masquerade if it has a masquerade chain), for a DEL that was not told the mappings. Each DNAT
/// rule ends `[meta nfproto F] [<ip|ip6> daddr HOST] <proto> dport P dnat to ADDR:PORT`; the
/// conditions before that are not needed to find the keys.
fn read_back(a: &Attachment, dnat: &Value, masq: bool) -> Attachment {
    let mut found = Attachment { mappings: Vec::new(), v4: None, v6: None, snat: masq, ..a.clone() };
    for rule in nft::rules_of(dnat, &a.chain()) {
        let Some(expr) = rule["expr"].as_array() else { continue };
        let mut it = expr.iter().rev();
        let Some(nat) = it.next().and_then(|e| e.get("dnat")) else { continue };
        let (Some(addr), Some(container_port)) = (
            nat["addr"].as_str().and_then(|s| s.parse::<std::net::IpAddr>().ok()),
            nat["port"].as_u64().and_then(|p| u16::try_from(p).ok()),
        ) else {
            continue;
        };
        let Some(port) = it.next().and_then(|e| e.get("match")) else { continue };
        let protocol = match port["left"]["payload"]["protocol"].as_str() {
            Some("tcp") => Protocol::Tcp,
            Some("udp") => Protocol::Udp,
            Some("sctp") => Protocol::Sctp,
            _ => continue,
        };
        let Some(host_port) = port["right"].as_u64().and_then(|p| u16::try_from(p).ok()) else { continue };
        let host_ip = it
            .next()
            .and_then(|e| e.get("match"))
            .and_then(|m| (m["left"]["payload"]["field"] == "daddr").then(|| m["right"].as_str()?.parse().ok())?);
        let m = Mapping { host_port, container_port, protocol, host_ip };
        if !found.mappings.contains(&m) {
            found.mappings.push(m);
        }
        let slot = if addr.is_ipv4() { &mut found.v4 } else { &mut found.v6 };
        slot.get_or_insert(IpNetwork::from(addr));
    }
    found
}

/// Removes an attachment's ports and masquerade entries. With the mappings and the container's
/// addresses known, one transaction; without either, read back from the attachment's own two
/// chains first (never a listing of the whole table); when a key is shared or part is already
/// gone, exactly what a listing shows for the identity. Returns the UDP host ports that were
/// published (for conntrack cleanup).
///
/// The addresses are unknown on every DEL of a config older than 0.4.0 (kind's is 0.3.1): libcni
/// passes no prevResult there, while the mappings still come as runtimeConfig. A transaction
/// planned without them would delete the chain but not the map elements jumping to it, fail
/// (EBUSY), and make the process wait out an RCU grace period (about 14 ms) before the listing.
pub fn del(nft: &Nft, a: &Attachment) -> anyhow::Result<Vec<u16>> {
    let (chain, masq_chain) = (a.chain(), a.masq_chain());
    let mut ports = udp_ports(a);
    let known = if a.mappings.is_empty() || a.addresses().next().is_none() {
        let dnat = nft.list(&["chain", INET, TABLE, &chain])?;
        let masq = nft.list(&["chain", INET, TABLE, &masq_chain])?.is_some();
        cni::trace::mark("portmap chains read");
        let Some(dnat) = dnat else {
            if !masq {
                return Ok(ports);
            }
            return collect_own(nft, &chain, &masq_chain).map(|()| ports);
        };
        ports.extend(udp_ports_in(&dnat, &chain));
        read_back(a, &dnat, masq)
    } else {
        a.clone()
    };
    if !known.mappings.is_empty() && nft.apply(&del_batch(&known).to_json()).is_ok() {
        return Ok(ports);
    }
    if let Some(listing) = nft.list(&["table", INET, TABLE])? {
        ports.extend(udp_ports_in(&listing, &chain));
    }
    collect_own(nft, &chain, &masq_chain).map(|()| ports)
}

/// The listing path of DEL: the attachment's chains, their elements and their holds on shared keys.
fn collect_own(nft: &Nft, chain: &str, masq_chain: &str) -> anyhow::Result<()> {
    cni::trace::mark("portmap table listed");
    base::collect(nft, INET, TABLE, MAPS, &|_| Batch::new(), &|c| c == chain || c == masq_chain)
        .context("removing published ports")
}

fn udp_ports(a: &Attachment) -> Vec<u16> {
    a.mappings.iter().filter(|m| m.protocol == Protocol::Udp).map(|m| m.host_port).collect()
}

/// Removes every attachment of `network` that is not in `valid` (and its holds on shared keys),
/// and repairs the base objects if someone removed or edited them (GC). Returns the UDP ports of
/// what was removed.
pub fn gc(nft: &Nft, network: &str, valid: &[Identity]) -> anyhow::Result<Vec<u16>> {
    let Some(listing) = nft.list(&["table", INET, TABLE])? else { return Ok(Vec::new()) };
    let keep: BTreeSet<String> = valid.iter().flat_map(|id| [id.chain("pm"), id.chain("pms")]).collect();
    let (dnat_prefix, masq_prefix) =
        (format!("pm-{}-", network_hash(network)), format!("pms-{}-", network_hash(network)));
    let doomed =
        |c: &str| (c.starts_with(dnat_prefix.as_str()) || c.starts_with(masq_prefix.as_str())) && !keep.contains(c);
    let ports: Vec<u16> =
        nft::chain_names(&listing).iter().filter(|c| doomed(c)).flat_map(|c| udp_ports_in(&listing, c)).collect();
    let repair = |l: &Value| {
        let mut b = base_table().repair(Some(l));
        b.extend(migrate_legacy_hostport(Some(l)));
        b
    };
    base::collect(nft, INET, TABLE, MAPS, &repair, &doomed)
        .with_context(|| format!("collecting stale port mappings of network {network}"))?;
    Ok(ports)
}

/// Confirms the attachment's mappings are in place (CHECK): its rules, and its hold on each key
/// (first or behind another holder).
pub fn check(nft: &Nft, a: &Attachment) -> anyhow::Result<()> {
    if a.mappings.is_empty() {
        return Ok(());
    }
    let listing = nft.list(&["table", INET, TABLE])?.context("table inet cni_portmap is missing")?;
    let base = base_table();
    for chain in ["prerouting", "output", HOSTPORTS, "postrouting"] {
        base.check_intact(&listing, chain)?;
    }
    let chain = a.chain();
    let rules = nft::rules_of(&listing, &chain).count();
    anyhow::ensure!(rules == dnat_rules(a).len(), "chain {chain} holds {rules} of its {} rules", dnat_rules(a).len());
    let names = a.names();
    for claim in a.claims(&names) {
        anyhow::ensure!(claim.held(&listing), "{} entry {} of {} is missing", claim.map, claim.key, claim.chain);
    }
    let masq_chain = a.masq_chain();
    if !a.masq_keys().is_empty() {
        let rules = nft::rules_of(&listing, &masq_chain).count();
        anyhow::ensure!(
            rules == a.masq_rules().len(),
            "chain {masq_chain} holds {rules} of its {} rules",
            a.masq_rules().len()
        );
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
