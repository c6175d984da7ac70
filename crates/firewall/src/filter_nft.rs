//! The firewall plugin's own nftables backend (`"backend": "nftables"`): the reference's rules,
//! in a table the plugin owns, reached through verdict maps so an ADD or DEL is one small netlink
//! transaction whatever the number of containers, with no program run.
//!
//! ```text
//! table inet cni_firewall
//!   map addr_v4 { ipv4_addr : verdict }    10.1.0.5 : jump fw-<net>-<inst>
//!   map addr_v6 { ipv6_addr : verdict }
//!   chain fw-<net>-<inst>                  accept                    (one per attachment)
//!   set isolated_bridges { ifname }        bridges with ingressPolicy same-bridge or isolated
//!   set no_icc { ifname }                  bridges with ingressPolicy isolated
//!   map isolation { ifname : verdict }     br0 : jump iso-br0
//!   chain iso-br0                          oifname != "br0" oifname @isolated_bridges drop
//!   chain admin                            the operator's hook: created when missing, never flushed
//!   chain forward (filter, forward, 0)     iifname vmap @isolation
//!                                          iifname @no_icc oifname @no_icc drop
//!                                          jump admin
//!                                          ip saddr vmap @addr_v4;  ip6 saddr vmap @addr_v6
//!                                          ct state established,related ip daddr vmap @addr_v4 (and v6)
//! ```
//!
//! The order is the reference's: the isolation stages first, then the admin chain, then the
//! per-address accepts. A drop here is final; an accept ends only this table's forward chain (as
//! the reference's accept ends only iptables' FORWARD): a drop policy in another table still
//! applies, which is how nftables works and what an operator with such a policy expects.
//!
//! Two isolated bridges cannot reach each other: `no_icc` only ever holds isolated bridges, which
//! are all in `isolated_bridges`, so `iifname @no_icc oifname @no_icc drop` adds exactly "not
//! within the same bridge either" to what the per-bridge chains do.
//!
//! Map elements point at one attachment's chain, so a DEL removes an address's element only when
//! it is its own ([`base::remove_if_ours`]), and a DEL without addresses removes its chain and,
//! when elements still point at it, finds them in a listing.

use crate::base::{self, BaseTable};
use crate::filter::Policy;
use crate::identity::{Identity, network_hash};
use crate::json::{self, Batch, elements, jump, matches, meta, payload, verdict, vmap};
use crate::nft::{self, Nft};
use anyhow::Context;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::IpAddr;

pub const TABLE: &str = "cni_firewall";
pub const ADMIN_CHAIN: &str = "admin";
const INET: &str = "inet";
const ADDR_V4: &str = "addr_v4";
const ADDR_V6: &str = "addr_v6";
const ISOLATED_BRIDGES: &str = "isolated_bridges";
const NO_ICC: &str = "no_icc";
const ISOLATION: &str = "isolation";
const FORWARD: &str = "forward";
const BASE_COMMENT: &str = "cni_firewall base";

fn addr_map(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() { ADDR_V4 } else { ADDR_V6 }
}

fn chain_of(id: &Identity) -> String {
    id.chain("fw")
}

fn isolation_chain(bridge: &str) -> String {
    format!("iso-{bridge}")
}

fn established() -> Value {
    matches("in", json::ct("state"), json!(["established", "related"]))
}

/// The table's fixed objects.
pub fn base_table() -> BaseTable {
    BaseTable {
        family: INET,
        name: TABLE,
        marker: BASE_COMMENT,
        objects: vec![
            json::table(INET, TABLE),
            json::verdict_map(INET, TABLE, ADDR_V4, "ipv4_addr"),
            json::verdict_map(INET, TABLE, ADDR_V6, "ipv6_addr"),
            json::set(INET, TABLE, ISOLATED_BRIDGES, "ifname"),
            json::set(INET, TABLE, NO_ICC, "ifname"),
            json::verdict_map(INET, TABLE, ISOLATION, "ifname"),
            json::chain(INET, TABLE, ADMIN_CHAIN),
            json::base_chain(INET, TABLE, FORWARD, "filter", "forward", 0),
        ],
        chains: vec![(
            FORWARD.to_string(),
            vec![
                vec![vmap(meta("iifname"), ISOLATION)],
                vec![
                    matches("==", meta("iifname"), json::set_ref(NO_ICC)),
                    matches("==", meta("oifname"), json::set_ref(NO_ICC)),
                    verdict("drop"),
                ],
                vec![jump(ADMIN_CHAIN)],
                vec![vmap(payload("ip", "saddr"), ADDR_V4)],
                vec![vmap(payload("ip6", "saddr"), ADDR_V6)],
                vec![established(), vmap(payload("ip", "daddr"), ADDR_V4)],
                vec![established(), vmap(payload("ip6", "daddr"), ADDR_V6)],
            ],
        )],
    }
}

/// A bridge's isolation chain: traffic from it to another isolated bridge is dropped.
fn isolation_table(bridge: &str) -> BaseTable {
    let chain = isolation_chain(bridge);
    BaseTable {
        family: INET,
        name: TABLE,
        marker: BASE_COMMENT,
        objects: vec![json::chain(INET, TABLE, &chain)],
        chains: vec![(
            chain,
            vec![vec![
                matches("!=", meta("oifname"), json!(bridge)),
                matches("==", meta("oifname"), json::set_ref(ISOLATED_BRIDGES)),
                verdict("drop"),
            ]],
        )],
    }
}

/// The transaction an ADD needs once the fixed objects (and the bridge's chain) exist.
pub fn add_batch(id: &Identity, addresses: &[IpAddr], ingress: Option<(&str, Policy)>) -> Batch {
    let mut b = Batch::new();
    let comment = id.comment();
    if !addresses.is_empty() {
        let chain = chain_of(id);
        b.add(json::chain(INET, TABLE, &chain));
        b.flush(json::chain(INET, TABLE, &chain));
        b.add(json::rule(INET, TABLE, &chain, vec![verdict("accept")], Some(&comment)));
        for ip in addresses {
            let elem = json!([json::commented(json!(ip.to_string()), &comment), jump(&chain)]);
            b.add(elements(INET, TABLE, addr_map(ip), vec![elem]));
        }
    }
    if let Some((bridge, policy)) = ingress
        && policy != Policy::Open
    {
        b.add(elements(INET, TABLE, ISOLATED_BRIDGES, vec![json!(bridge)]));
        b.add(elements(INET, TABLE, ISOLATION, vec![json!([json!(bridge), jump(&isolation_chain(bridge))])]));
        if policy == Policy::Isolated {
            b.add(elements(INET, TABLE, NO_ICC, vec![json!(bridge)]));
        }
    }
    b
}

/// What must be created or repaired before an ADD's entries can go in, from a listing of the
/// table (`None`: it does not exist), including stale elements of other attachments for the same
/// addresses, which ours replace.
pub fn repair_batch(id: &Identity, addresses: &[IpAddr], bridge: Option<&str>, listing: Option<&Value>) -> Batch {
    let mut b = base_table().repair(listing);
    if let Some(bridge) = bridge {
        b.extend(isolation_table(bridge).repair(listing));
    }
    if let Some(listing) = listing {
        let keys: Vec<Value> = addresses.iter().map(|ip| json!(ip.to_string())).collect();
        b.extend(base::stale_elements(listing, INET, TABLE, &[ADDR_V4, ADDR_V6], &keys, &chain_of(id)));
    }
    b
}

/// Installs an attachment's entries: the fast path first; if the table is missing or damaged or
/// a stale element is in the way, a repair from a listing, in the same transaction.
pub fn add(nft: &Nft, id: &Identity, addresses: &[IpAddr], ingress: Option<(&str, Policy)>) -> anyhow::Result<()> {
    let fast = add_batch(id, addresses, ingress);
    if fast.is_empty() || nft.apply(&fast.to_json()).is_ok() {
        return Ok(());
    }
    let listing = nft.list(&["table", INET, TABLE])?;
    let bridge = ingress.filter(|(_, p)| *p != Policy::Open).map(|(b, _)| b);
    let mut batch = repair_batch(id, addresses, bridge, listing.as_ref());
    batch.extend(fast);
    nft.apply(&batch.to_json()).context("installing the firewall plugin's nftables entries")
}

/// The one-transaction DEL when the addresses are known.
pub fn del_batch(id: &Identity, addresses: &[IpAddr]) -> Batch {
    let chain = chain_of(id);
    let mut b = Batch::new();
    for ip in addresses {
        base::remove_if_ours(&mut b, INET, TABLE, addr_map(ip), json!(ip.to_string()), jump(&chain));
    }
    b.flush(json::chain(INET, TABLE, &chain));
    b.delete(json::chain(INET, TABLE, &chain));
    b
}

/// Removes an attachment's entries. With the addresses known, one transaction; a table or chain
/// that is gone is success (found without running a program); only when elements the caller did
/// not name still point at the chain is the table listed.
pub fn del(nft: &Nft, id: &Identity, addresses: &[IpAddr]) -> anyhow::Result<()> {
    if !addresses.is_empty() && nft.apply(&del_batch(id, addresses).to_json()).is_ok() {
        return Ok(());
    }
    match nft.apply(&del_batch(id, &[]).to_json()) {
        Ok(()) => return Ok(()),
        Err(e) if base::already_gone(&e) => return Ok(()),
        // The chain is still referenced (EBUSY): elements we were not told about point at it.
        Err(_) => {}
    }
    let chain = chain_of(id);
    base::collect(nft, INET, TABLE, &[ADDR_V4, ADDR_V6], &|_| Batch::new(), &|c| c == chain)
        .context("removing the firewall plugin's nftables entries")
}

/// Removes the entries of every attachment of `network` not in `valid`, and repairs the fixed
/// objects if someone edited them (GC).
pub fn gc(nft: &Nft, network: &str, valid: &[Identity]) -> anyhow::Result<()> {
    let keep: BTreeSet<String> = valid.iter().map(chain_of).collect();
    let prefix = format!("fw-{}-", network_hash(network));
    let base = base_table();
    base::collect(nft, INET, TABLE, &[ADDR_V4, ADDR_V6], &|l| base.repair(Some(l)), &|c| {
        c.starts_with(&prefix) && !keep.contains(c)
    })
}

/// Confirms an attachment's entries are in place (CHECK).
pub fn check(nft: &Nft, id: &Identity, addresses: &[IpAddr]) -> anyhow::Result<()> {
    if addresses.is_empty() {
        return Ok(());
    }
    let listing = nft.list(&["table", INET, TABLE])?.context("table inet cni_firewall is missing")?;
    base_table().check_intact(&listing, FORWARD)?;
    anyhow::ensure!(
        nft::chain_names(&listing).iter().any(|c| c == ADMIN_CHAIN),
        "the admin chain of table inet {TABLE} is missing"
    );
    let chain = chain_of(id);
    for ip in addresses {
        let key = json!(ip.to_string());
        let ours = nft::verdict_map_elements(&listing, addr_map(ip))
            .into_iter()
            .any(|(k, target)| k == key && target.as_deref() == Some(chain.as_str()));
        anyhow::ensure!(ours, "the entry for {ip} is missing from table inet {TABLE}");
    }
    anyhow::ensure!(nft::rules_of(&listing, &chain).count() == 1, "chain {chain} does not hold its accept rule");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips() -> Vec<IpAddr> {
        vec!["10.1.0.5".parse().unwrap(), "fd10::5".parse().unwrap()]
    }

    #[test]
    fn an_add_touches_only_its_own_chain_and_elements() {
        let id = Identity::new("net", "c1", "eth0");
        let batch = add_batch(&id, &ips(), Some(("br0", Policy::Isolated))).to_json();
        let text = batch.to_string();
        let chain = id.chain("fw");
        assert!(text.contains(&format!("\"jump\":{{\"target\":\"{chain}\"}}")), "{text}");
        assert!(text.contains("\"iso-br0\""), "{text}");
        assert!(text.contains(&format!("\"name\":\"{NO_ICC}\"")), "{text}");
        let open = add_batch(&id, &ips(), Some(("br0", Policy::SameBridge))).to_json().to_string();
        assert!(!open.contains(NO_ICC), "{open}");
    }

    #[test]
    fn the_admin_chain_is_never_flushed() {
        let id = Identity::new("net", "c1", "eth0");
        let batches = [
            add_batch(&id, &ips(), Some(("br0", Policy::Isolated))),
            del_batch(&id, &ips()),
            repair_batch(&id, &ips(), Some("br0"), None),
        ];
        for b in batches {
            for command in b.to_json()["nftables"].as_array().unwrap() {
                if let Some(flush) = command.get("flush").or(command.get("delete")) {
                    assert_ne!(flush["chain"]["name"], ADMIN_CHAIN, "{command}");
                }
            }
        }
    }
}
