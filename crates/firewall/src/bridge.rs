//! The bridge plugin's nftables state: masquerade, MAC spoof checks and network isolation.
//!
//! Two tables named `cni_bridge` belong to the bridge plugin alone: `inet` (masquerade, isolation)
//! and `bridge` (spoof checks). Their base chains dispatch through verdict maps to one chain per
//! attachment, named from its identity (`masq-<net>-<inst>`, `spoof-<net>-<inst>`):
//!
//! ```text
//! table inet cni_bridge
//!   map masq_v4 { ipv4_addr : verdict }   10.1.0.5 : goto masq-<net>-<inst>
//!   chain postrouting (nat, srcnat)       multicast: return; ip saddr vmap @masq_v4; ...
//!   chain masq-<net>-<inst>               ip saddr 10.1.0.5 ip daddr != 10.1.0.0/24 masquerade
//!   set isolated_bridges { ifname }       map isolation { ifname : verdict }
//!   chain forward (filter)                iifname vmap @isolation
//!   chain iso-<net>                       ct status dnat return; oifname != br oifname @isolated_bridges drop
//! table bridge cni_bridge
//!   map spoof_ports { ifname : verdict }  veth1234 : goto spoof-<net>-<inst>
//!   chain prerouting (filter, -300)       iifname vmap @spoof_ports
//!   chain spoof-<net>-<inst>              iifname veth1234 ether saddr <mac> return; drop
//! ```
//!
//! So an ADD or DEL is one small transaction whatever the number of containers, and a DEL finds
//! its entries from the identity alone: the attachment's chain names its addresses and port, so
//! nothing depends on the runtime passing `prevResult` or a network namespace. Map elements point
//! at one attachment's chain, so an element of another attachment for the same address is never
//! mistaken for ours. Two attachments can hold one address (the same subnet on two networks, each
//! on its own bridge): the address is then a contested key ([`base`]), its element points at a key
//! chain that jumps to both attachments' masquerade chains, and either DEL leaves the other's
//! masquerade in place. A spoof-check port is a host interface name, which only one live link can
//! have: an element for it that points elsewhere is stale and is replaced.
//!
//! Each ADD first tries only its own objects; the base objects are created (or repaired, after
//! someone flushed the ruleset) on the slow path, from a listing of our own tables. Re-adding an
//! existing chain costs an RCU grace period in the kernel, which the fast path never pays.

use crate::base::{self, BaseTable};
use crate::identity::{Identity, network_hash};
use crate::json::{self, Batch, commented, elements, goto, matches, meta, payload, prefix, verdict, vmap};
use crate::nft::{self, Nft};
use anyhow::Context;
use ipnetwork::IpNetwork;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::IpAddr;

pub const TABLE: &str = "cni_bridge";
const INET: &str = "inet";
const BRIDGE: &str = "bridge";
const MASQ_V4: &str = "masq_v4";
const MASQ_V6: &str = "masq_v6";
const POSTROUTING: &str = "postrouting";
const FORWARD: &str = "forward";
const ISOLATED_BRIDGES: &str = "isolated_bridges";
const ISOLATION: &str = "isolation";
const SPOOF_PORTS: &str = "spoof_ports";
const PREROUTING: &str = "prerouting";
/// Marks the rules of base chains, so the slow path can tell whether they are intact.
const BASE_COMMENT: &str = "cni_bridge base";

/// What one attachment asks of the firewall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub id: Identity,
    /// Addresses to masquerade (with their prefix): traffic from each to outside its subnet.
    pub masquerade: Vec<IpNetwork>,
    /// The host end of the veth and the only source MAC allowed through it.
    pub spoof_check: Option<(String, String)>,
    /// The bridge to isolate from other isolated networks' bridges.
    pub isolation: Option<String>,
}

fn masq_map(net: &IpNetwork) -> &'static str {
    if net.is_ipv4() { MASQ_V4 } else { MASQ_V6 }
}

fn ip_key(ip: IpAddr) -> Value {
    json!(ip.to_string())
}

fn isolation_chain(network: &str) -> String {
    format!("iso-{}", network_hash(network))
}

/// Both tables' fixed objects.
pub(crate) fn base_tables() -> [BaseTable; 2] {
    [inet_base(), bridge_base()]
}

/// The inet table's fixed objects: masquerade maps, isolation set and map, base chains.
fn inet_base() -> BaseTable {
    BaseTable {
        family: INET,
        name: TABLE,
        marker: BASE_COMMENT,
        objects: vec![
            json::table(INET, TABLE),
            json::verdict_map(INET, TABLE, MASQ_V4, "ipv4_addr"),
            json::verdict_map(INET, TABLE, MASQ_V6, "ipv6_addr"),
            json::set(INET, TABLE, ISOLATED_BRIDGES, "ifname"),
            json::verdict_map(INET, TABLE, ISOLATION, "ifname"),
            json::base_chain(INET, TABLE, POSTROUTING, "nat", "postrouting", 100),
            json::base_chain(INET, TABLE, FORWARD, "filter", "forward", -10),
        ],
        chains: vec![
            (
                POSTROUTING.to_string(),
                vec![
                    vec![
                        matches("==", payload("ip", "daddr"), prefix("224.0.0.0/4".parse().expect("literal"))),
                        verdict("return"),
                    ],
                    vec![
                        matches("==", payload("ip6", "daddr"), prefix("ff00::/8".parse().expect("literal"))),
                        verdict("return"),
                    ],
                    vec![vmap(payload("ip", "saddr"), MASQ_V4)],
                    vec![vmap(payload("ip6", "saddr"), MASQ_V6)],
                ],
            ),
            (FORWARD.to_string(), vec![vec![vmap(meta("iifname"), ISOLATION)]]),
        ],
    }
}

/// The bridge table's fixed objects: the spoof-check map and base chain.
fn bridge_base() -> BaseTable {
    BaseTable {
        family: BRIDGE,
        name: TABLE,
        marker: BASE_COMMENT,
        objects: vec![
            json::table(BRIDGE, TABLE),
            json::verdict_map(BRIDGE, TABLE, SPOOF_PORTS, "ifname"),
            json::base_chain(BRIDGE, TABLE, PREROUTING, "filter", "prerouting", -300),
        ],
        chains: vec![(PREROUTING.to_string(), vec![vec![vmap(meta("iifname"), SPOOF_PORTS)]])],
    }
}

/// The per-network isolation chain's rules: traffic to another isolated network's bridge is
/// dropped, unless it was DNATed (a published port is reachable from anywhere).
fn isolation_rules(bridge: &str) -> Vec<Vec<Value>> {
    vec![
        vec![matches("in", json::ct("status"), json!("dnat")), verdict("return")],
        vec![
            matches("!=", meta("oifname"), json!(bridge)),
            matches("==", meta("oifname"), json::set_ref(ISOLATED_BRIDGES)),
            verdict("drop"),
        ],
    ]
}

/// The transaction an ADD needs once the base objects exist and no other attachment holds one of
/// its addresses.
pub fn add_batch(a: &Attachment) -> Batch {
    entries(a, None)
}

/// An attachment's chains and elements; with a listing of the inet table, its masquerade
/// addresses are claimed behind whoever holds them already (see [`base::Claim::take`]).
fn entries(a: &Attachment, inet: Option<&Value>) -> Batch {
    let mut b = Batch::new();
    let comment = a.id.comment();
    if !a.masquerade.is_empty() {
        let chain = a.id.chain("masq");
        b.add(json::chain(INET, TABLE, &chain));
        b.flush(json::chain(INET, TABLE, &chain));
        for net in &a.masquerade {
            let proto = json::ip_proto(net);
            let expr = vec![
                matches("==", payload(proto, "saddr"), json!(net.ip().to_string())),
                matches("!=", payload(proto, "daddr"), prefix(*net)),
                verdict("masquerade"),
            ];
            b.add(json::rule(INET, TABLE, &chain, expr, Some(&comment)));
        }
        for claim in masq_claims(a, &chain, &comment) {
            match inet {
                None => b.add(elements(INET, TABLE, claim.map, vec![claim.element()])),
                Some(listing) => b.extend(claim.take(INET, TABLE, listing).unwrap_or_default()),
            }
        }
    }
    if let Some((port, mac)) = &a.spoof_check {
        let chain = a.id.chain("spoof");
        b.add(json::chain(BRIDGE, TABLE, &chain));
        b.flush(json::chain(BRIDGE, TABLE, &chain));
        let allow = vec![
            matches("==", meta("iifname"), json!(port)),
            matches("==", payload("ether", "saddr"), json!(mac)),
            verdict("return"),
        ];
        b.add(json::rule(BRIDGE, TABLE, &chain, allow, Some(&comment)));
        b.add(json::rule(BRIDGE, TABLE, &chain, vec![verdict("drop")], Some(&comment)));
        b.add(elements(BRIDGE, TABLE, SPOOF_PORTS, vec![json!([commented(json!(port), &comment), goto(&chain)])]));
    }
    if let Some(bridge) = &a.isolation {
        b.add(elements(INET, TABLE, ISOLATED_BRIDGES, vec![json!(bridge)]));
        let elem = json!([json!(bridge), goto(&isolation_chain(&a.id.network))]);
        b.add(elements(INET, TABLE, ISOLATION, vec![elem]));
    }
    b
}

/// The masquerade addresses an attachment holds.
fn masq_claims<'a>(a: &Attachment, chain: &'a str, comment: &'a str) -> Vec<base::Claim<'a>> {
    a.masquerade
        .iter()
        .map(|net| base::Claim { map: masq_map(net), key: ip_key(net.ip()), chain, verb: "goto", comment })
        .collect()
}

/// How often the slow path is planned again from fresh listings after a concurrent ADD or DEL
/// changed our tables under it.
const ATTEMPTS: usize = 3;

/// Installs an attachment's entries: the fast path first, then, if the base objects are missing
/// or damaged, a stale spoof-check element is in the way or another attachment holds one of our
/// addresses, the repair and the entries planned from listings of our tables, in one transaction.
pub fn add(nft: &Nft, a: &Attachment) -> anyhow::Result<()> {
    let fast = add_batch(a);
    if fast.is_empty() {
        return Ok(());
    }
    if nft.apply(&fast.to_json()).is_ok() {
        return Ok(());
    }
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let inet = nft.list(&["table", INET, TABLE])?;
        let bridge = nft.list(&["table", BRIDGE, TABLE])?;
        let mut batch = repair_batch(a, inet.as_ref(), bridge.as_ref());
        batch.extend(entries(a, inet.as_ref()));
        match nft.apply(&batch.to_json()) {
            Ok(()) => return Ok(()),
            Err(e) if base::raced(&e) => last = Some(e),
            Err(e) => return Err(e.context("installing masquerade/spoof-check/isolation entries")),
        }
    }
    Err(last.expect("at least one attempt").context("installing masquerade/spoof-check/isolation entries"))
}

/// What must be created or fixed before `a`'s entries can go in, given listings of our tables: the
/// base objects, and a stale element of our spoof-check port.
pub fn repair_batch(a: &Attachment, inet: Option<&Value>, bridge: Option<&Value>) -> Batch {
    let mut b = Batch::new();
    if !a.masquerade.is_empty() || a.isolation.is_some() {
        b.extend(inet_base().repair(inet));
        if let Some(bridge_name) = &a.isolation {
            let chain = isolation_chain(&a.id.network);
            let per_network = BaseTable {
                family: INET,
                name: TABLE,
                marker: BASE_COMMENT,
                objects: vec![json::chain(INET, TABLE, &chain)],
                chains: vec![(chain, isolation_rules(bridge_name))],
            };
            b.extend(per_network.repair(inet));
        }
    }
    if let Some((port, _)) = &a.spoof_check {
        b.extend(bridge_base().repair(bridge));
        if let Some(listing) = bridge {
            b.extend(base::stale_elements(
                listing,
                BRIDGE,
                TABLE,
                &[SPOOF_PORTS],
                &[json!(port)],
                &a.id.chain("spoof"),
            ));
        }
    }
    b
}

/// What an attachment's DEL knows from `prevResult`, when it has one.
#[derive(Debug, Clone, Default)]
pub struct Known {
    pub addresses: Vec<IpAddr>,
    pub spoof_port: Option<String>,
}

/// The one-transaction DEL when the addresses and port are known (see [`base::remove_if_ours`]);
/// it fails, and the listing path runs, when an address is shared with another attachment.
pub fn del_batch(id: &Identity, known: &Known, masquerade: bool, spoof_check: bool) -> Batch {
    let mut b = Batch::new();
    if masquerade {
        let chain = id.chain("masq");
        for ip in &known.addresses {
            let map = if ip.is_ipv4() { MASQ_V4 } else { MASQ_V6 };
            base::remove_if_ours(&mut b, INET, TABLE, map, ip_key(*ip), goto(&chain));
        }
        b.flush(json::chain(INET, TABLE, &chain));
        b.delete(json::chain(INET, TABLE, &chain));
    }
    if let (true, Some(port)) = (spoof_check, &known.spoof_port) {
        let chain = id.chain("spoof");
        base::remove_if_ours(&mut b, BRIDGE, TABLE, SPOOF_PORTS, json!(port), goto(&chain));
        b.flush(json::chain(BRIDGE, TABLE, &chain));
        b.delete(json::chain(BRIDGE, TABLE, &chain));
    }
    b
}

/// Which of the attachment's chains exist: (masquerade, spoof check). Asked over nfnetlink with a
/// GET each and no program, before anything is deleted: a transaction that fails because a chain
/// is absent waits out an RCU grace period, and so does the first request after a deletion, so a
/// DEL that tried one kind after the other paid about 14 ms for nothing. On `nft`'s socket when
/// given (see [`crate::nft::Getter`]).
pub fn chains_present(nft: Option<&Nft>, id: &Identity) -> anyhow::Result<(bool, bool)> {
    use crate::native::msg::k;
    let mut getter = crate::nft::Getter::open(nft)?;
    let mut has = |family, chain: String| {
        getter.chain(family, TABLE, &chain).map_err(|e| anyhow::anyhow!("probing chain {chain}: {e}"))
    };
    Ok((has(k::NFPROTO_INET, id.chain("masq"))?, has(k::NFPROTO_BRIDGE, id.chain("spoof"))?))
}

/// Removes an attachment's entries. Tries the one-transaction DEL when `known` covers what was
/// installed; otherwise, or when anything in it is already gone, deletes exactly what a listing
/// of our tables shows for this identity. Entries that are already gone are success.
pub fn del(nft: &Nft, id: &Identity, known: &Known, masquerade: bool, spoof_check: bool) -> anyhow::Result<()> {
    let fast_possible = (!masquerade || !known.addresses.is_empty()) && (!spoof_check || known.spoof_port.is_some());
    if fast_possible && (masquerade || spoof_check) {
        let fast = del_batch(id, known, masquerade, spoof_check);
        if nft.apply(&fast.to_json()).is_ok() {
            return Ok(());
        }
    }
    let wanted: BTreeSet<String> = [id.chain("masq"), id.chain("spoof")].into();
    remove_chains(nft, &|chain| wanted.contains(chain)).context("removing masquerade/spoof-check entries")
}

/// Removes the attachment chains selected by `doomed` (and the map elements that point at them)
/// from both tables, in one transaction.
fn remove_chains(nft: &Nft, doomed: &dyn Fn(&str) -> bool) -> anyhow::Result<()> {
    for (family, maps) in [(INET, &[MASQ_V4, MASQ_V6][..]), (BRIDGE, &[SPOOF_PORTS][..])] {
        base::collect(nft, family, TABLE, maps, &|_| Batch::new(), doomed)?;
    }
    Ok(())
}

/// GC of the masquerade and spoof-check entries of `network` whose attachment is not in `valid`,
/// ours (when nftables can be used) and the reference's iptables ones: what bridge's and ptp's GC
/// share. Each failure goes into `failures`.
pub fn gc_attachments(network: &str, valid: &[cni::Attachment], failures: &mut cni::Failures) {
    let ids: Vec<Identity> = valid.iter().map(|a| Identity::new(network, &a.container_id, &a.ifname)).collect();
    if let Ok(nft) = Nft::locate() {
        failures.check("collecting nftables entries", gc(&nft, network, &ids));
    }
    // Masquerade rules the iptables backend (ours or the reference's) left behind.
    failures.check("collecting the reference plugin's entries", crate::reference::bridge_gc(network, &ids));
}

/// Removes every attachment chain of `network` whose attachment is not in `valid`, and repairs
/// the base chains of whichever of our tables exist if someone removed or edited them (GC). A
/// table that vanished entirely is recreated by the next ADD.
pub fn gc(nft: &Nft, network: &str, valid: &[Identity]) -> anyhow::Result<()> {
    let keep: BTreeSet<String> = valid.iter().flat_map(|id| [id.chain("masq"), id.chain("spoof")]).collect();
    let net = network_hash(network);
    let prefixes = [format!("masq-{net}-"), format!("spoof-{net}-")];
    let doomed = |chain: &str| prefixes.iter().any(|p| chain.starts_with(p.as_str())) && !keep.contains(chain);
    let mut left = Vec::new();
    for (base, maps) in [(inet_base(), &[MASQ_V4, MASQ_V6][..]), (bridge_base(), &[SPOOF_PORTS][..])] {
        if let Err(e) = base::collect(nft, base.family, TABLE, maps, &|l| base.repair(Some(l)), &doomed) {
            left.push(format!("{e:#}"));
        }
    }
    anyhow::ensure!(left.is_empty(), "collecting stale firewall entries of network {network}: {}", left.join("; "));
    Ok(())
}

/// Whether `map` in `listing` has `key` pointing at `chain`.
fn points_at(listing: &Value, map: &str, key: &Value, chain: &str) -> bool {
    nft::verdict_map_elements(listing, map).into_iter().any(|(k, target)| &k == key && target.as_deref() == Some(chain))
}

/// Confirms an attachment's entries are in place (CHECK).
pub fn check(nft: &Nft, a: &Attachment) -> anyhow::Result<()> {
    if !a.masquerade.is_empty() {
        let listing = nft.list(&["table", INET, TABLE])?.context("table inet cni_bridge is missing")?;
        inet_base().check_intact(&listing, POSTROUTING)?;
        let (chain, comment) = (a.id.chain("masq"), a.id.comment());
        for claim in masq_claims(a, &chain, &comment) {
            anyhow::ensure!(claim.held(&listing), "masquerade entry for {} is missing", claim.key);
        }
        anyhow::ensure!(
            nft::rules_of(&listing, &chain).count() == a.masquerade.len(),
            "masquerade chain {chain} does not hold one rule per address"
        );
    }
    if let Some((port, _)) = &a.spoof_check {
        let listing = nft.list(&["table", BRIDGE, TABLE])?.context("table bridge cni_bridge is missing")?;
        bridge_base().check_intact(&listing, PREROUTING)?;
        anyhow::ensure!(
            points_at(&listing, SPOOF_PORTS, &json!(port), &a.id.chain("spoof")),
            "spoof-check entry for {port} is missing"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
