//! The reference plugins' firewall state of one attachment, found by identity and removed, so a
//! node can switch from the reference plugins to ours live: a container the reference added and
//! ours deletes (or collects) leaves nothing behind.
//!
//! What the reference leaves, by release and backend (names from upstream's source):
//!
//! ```text
//! bridge ipMasq, iptables   nat  CNI-<sha512(net+cid)[:24]>, POSTROUTING -s IP -j CNI-... (comment name: "net" id: "cid")
//! bridge ipMasq, nftables   inet cni_plugins_masquerade, chain masq_checks, rules commented <hash(net)>-<hash(if:cid)>, ...
//! bridge macspoofchk        bridge nat, chains cni-br-iface-<cid>-<if>(-mac), PREROUTING jump to the first
//! portmap, iptables         nat  CNI-DN-<sha512(net+cid)[:21]>, CNI-HOSTPORT-DNAT jump; old releases CNI-SN-<hash>
//! portmap, nftables         ip / ip6 cni_hostport, chains hostports, hostip_hostports, masquerading: rules commented <cid>
//! ```
//!
//! iptables state lives in `iptables-nft`'s nf_tables tables (`ip nat`, `ip6 nat`) or in the legacy
//! x_tables. A DEL on a node without any of it must cost next to nothing, so presence is probed
//! first without running a program: one nfnetlink GET per chain or table name (it answers
//! ENOENT when there is none), and for legacy x_tables `/proc/net/ip_tables_names`, which lists
//! a table only once something used it in this namespace. `iptables-save`, `iptables-restore`
//! and `nft` run only for state that is there; the iptables lock (see [`crate::lock`]) is taken
//! only then too (the iptables backends' own DEL and GC take it before the probes).

use crate::identity::{Identity, iptables_chain};
use crate::iptables::{Iptables, Variant};
use crate::lock::IptablesLock;
use crate::native::msg::k;
use crate::nft::{self, Getter, Nft};
use anyhow::Context;
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// Whether legacy x_tables has instantiated its `nat` table in this namespace.
fn legacy_nat(ipv6: bool) -> bool {
    let names = if ipv6 { "ip6_tables_names" } else { "ip_tables_names" };
    std::fs::read_to_string(format!("/proc/thread-self/net/{names}")).is_ok_and(|t| t.lines().any(|l| l == "nat"))
}

/// What of the reference's state may be present, as found by the probes.
struct Present {
    /// (ipv6, variant) pairs whose nat table holds (or, for legacy, may hold) one of the chains.
    xtables: Vec<(bool, Variant)>,
    /// nftables tables of the reference's nftables backends that exist: (family, table).
    nft_tables: Vec<(&'static str, &'static str)>,
    /// `bridge nat` chains of the reference's spoof check that exist.
    spoof_chains: Vec<String>,
}

/// Probes for the given iptables chains (in both families and both variants), nftables tables and
/// `bridge nat` chains. `chains` empty means "any state in the nat table" (for GC, which cannot
/// name the chains of containers it does not know). On `nft`'s socket when there is one.
fn probe(nft: Option<&Nft>, chains: &[String], tables: &[(&'static str, &'static str)], spoof: &[String]) -> Present {
    let mut present = Present { xtables: Vec::new(), nft_tables: Vec::new(), spoof_chains: Vec::new() };
    let mut p = match Getter::open(nft) {
        Ok(p) => Some(p),
        Err(e) => {
            // No nf_tables in this kernel: only legacy x_tables state can exist.
            eprintln!("firewall: probing for the reference plugins' nf_tables state: {e}");
            None
        }
    };
    for ipv6 in [false, true] {
        let family = if ipv6 { k::NFPROTO_IPV6 } else { k::NFPROTO_IPV4 };
        if let Some(p) = p.as_mut() {
            let here = if chains.is_empty() {
                p.table(family, "nat").unwrap_or(true)
            } else {
                chains.iter().any(|c| p.chain(family, "nat", c).unwrap_or(true))
            };
            if here {
                present.xtables.push((ipv6, Variant::Nft));
            }
        }
        if legacy_nat(ipv6) {
            present.xtables.push((ipv6, Variant::Legacy));
        }
    }
    if let Some(p) = p.as_mut() {
        for &(family, table) in tables {
            let fam = match family {
                "inet" => k::NFPROTO_INET,
                "ip" => k::NFPROTO_IPV4,
                _ => k::NFPROTO_IPV6,
            };
            if p.table(fam, table).unwrap_or(true) {
                present.nft_tables.push((family, table));
            }
        }
        for chain in spoof {
            if p.chain(k::NFPROTO_BRIDGE, "nat", chain).unwrap_or(true) {
                present.spoof_chains.push(chain.clone());
            }
        }
    }
    present
}

/// Once the probes found iptables state, takes the iptables lock (see [`crate::lock`]) and probes
/// again under it: a killed verb's orphaned `iptables-restore` may still be adding to what was
/// found (the other family's chain). Without the lock the iptables state is left alone and the
/// failure reported: the tools would only wait for it again. Nothing found, nothing taken: a
/// node without iptables state pays nothing.
fn lock_if_found(
    present: &mut Present,
    again: impl Fn() -> Present,
    failures: &mut cni::Failures,
) -> Option<IptablesLock> {
    if present.xtables.is_empty() {
        return None;
    }
    // Already held (the iptables backend's DEL took it before probing): the probes were under it.
    let fresh = !IptablesLock::is_held();
    match failures.check("waiting for iptables", IptablesLock::acquire()) {
        Some(lock) => {
            if fresh {
                *present = again();
            }
            Some(lock)
        }
        None => {
            present.xtables.clear();
            None
        }
    }
}

/// Deletes, by handle, the rules of `family table chain` that `doomed` picks by their comment.
fn remove_commented_rules(
    nft: &Nft,
    family: &str,
    table: &str,
    chains: &[&str],
    doomed: &dyn Fn(&str) -> bool,
) -> anyhow::Result<()> {
    let mut batch = Vec::new();
    for chain in chains {
        let Some(listing) = nft.list(&["chain", family, table, chain])? else { continue };
        for rule in nft::rules_of(&listing, chain) {
            if rule["comment"].as_str().is_some_and(doomed) {
                batch.push(json!({"delete": {"rule": {
                    "family": family, "table": table, "chain": chain, "handle": rule["handle"].clone()
                }}}));
            }
        }
    }
    if batch.is_empty() {
        return Ok(());
    }
    nft.apply(&json!({ "nftables": batch })).with_context(|| format!("removing rules from {family} {table}"))
}

fn nft_for(what: &str) -> anyhow::Result<Nft> {
    Nft::locate().with_context(|| format!("the reference plugins' {what} is present"))
}

/// The reference's spoof-check chain of an attachment (`uniqueID` = containerID-ifname).
fn spoof_chain(id: &Identity) -> String {
    format!("cni-br-iface-{}-{}", id.container_id, id.ifname)
}

const MASQ_TABLE: (&str, &str) = ("inet", "cni_plugins_masquerade");
const HOSTPORT_TABLES: [(&str, &str); 2] = [("ip", "cni_hostport"), ("ip6", "cni_hostport")];

/// Removes what the reference's bridge plugin installed for this attachment: ipMasq in either
/// backend and the MAC spoof check. Nothing there is success. Probes on `nft`'s socket when
/// given (see [`Getter`]).
pub fn bridge_del(nft: Option<&Nft>, id: &Identity) -> anyhow::Result<()> {
    let chain = iptables_chain("", &id.network, &id.container_id);
    let spoof = spoof_chain(id);
    let look = || probe(nft, std::slice::from_ref(&chain), &[MASQ_TABLE], std::slice::from_ref(&spoof));
    let mut present = look();
    let mut failures = cni::Failures::new();
    let _lock = lock_if_found(&mut present, look, &mut failures);
    for (ipv6, variant) in present.xtables {
        let removed = Iptables::variant(ipv6, variant)
            .map_or(Ok(()), |tools| crate::iptables::masq_del_with(&tools, &id.network, &id.container_id));
        failures.check("removing the reference's iptables masquerade", removed);
    }
    if !present.nft_tables.is_empty() {
        let prefix = format!("{}-{}", id.network_hash(), id.instance_hash());
        let removed = nft_for("nftables masquerade").and_then(|nft| {
            remove_commented_rules(&nft, MASQ_TABLE.0, MASQ_TABLE.1, &["masq_checks"], &|c| c.starts_with(&prefix))
        });
        failures.check("removing the reference's nftables masquerade", removed);
    }
    if !present.spoof_chains.is_empty() {
        let removed = nft_for("MAC spoof check").and_then(|nft| remove_spoof_check(&nft, &spoof));
        failures.check("removing the reference's MAC spoof check", removed);
    }
    failures.finish()
}

/// The reference's `SpoofChecker.Teardown`: the PREROUTING jump to the interface chain, then both
/// chains.
fn remove_spoof_check(nft: &Nft, chain: &str) -> anyhow::Result<()> {
    let mut batch = Vec::new();
    if let Some(listing) = nft.list(&["chain", "bridge", "nat", "PREROUTING"])? {
        for rule in nft::rules_of(&listing, "PREROUTING") {
            let jumps = rule["expr"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| e.get("jump").and_then(|j| j["target"].as_str()) == Some(chain));
            if jumps {
                batch.push(json!({"delete": {"rule": {
                    "family": "bridge", "table": "nat", "chain": "PREROUTING", "handle": rule["handle"].clone()
                }}}));
            }
        }
    }
    let mac = format!("{chain}-mac");
    let mut present = Vec::new();
    for c in [chain, mac.as_str()] {
        if nft.list(&["chain", "bridge", "nat", c])?.is_some() {
            present.push(c);
        }
    }
    // All flushes first: the interface chain's rule jumps to the -mac chain.
    for c in &present {
        batch.push(json!({"flush": {"chain": {"family": "bridge", "table": "nat", "name": c}}}));
    }
    for c in &present {
        batch.push(json!({"delete": {"chain": {"family": "bridge", "table": "nat", "name": c}}}));
    }
    if batch.is_empty() {
        return Ok(());
    }
    nft.apply(&json!({ "nftables": batch }))
}

/// Removes the reference bridge plugin's masquerade of `network`'s containers that are not in
/// `valid` (GC). Its spoof-check chains name no network, so GC of one network cannot tell whose
/// they are; DEL removes them.
pub fn bridge_gc(network: &str, valid: &[Identity]) -> anyhow::Result<()> {
    let look = || probe(None, &[], &[MASQ_TABLE], &[]);
    let mut present = look();
    let mut failures = cni::Failures::new();
    let _lock = lock_if_found(&mut present, look, &mut failures);
    let containers: BTreeSet<String> = valid.iter().map(|v| v.container_id.clone()).collect();
    for (ipv6, variant) in present.xtables {
        let removed = Iptables::variant(ipv6, variant)
            .map_or(Ok(()), |tools| crate::iptables::masq_gc_with(&tools, network, &containers));
        failures.check("collecting the reference's iptables masquerade", removed);
    }
    if !present.nft_tables.is_empty() {
        let net = format!("{}-", crate::identity::network_hash(network));
        let keep: BTreeSet<String> =
            valid.iter().map(|v| format!("{}-{}", v.network_hash(), v.instance_hash())).collect();
        let doomed = |c: &str| c.starts_with(&net) && !keep.iter().any(|k| c.starts_with(k.as_str()));
        let removed = nft_for("nftables masquerade")
            .and_then(|nft| remove_commented_rules(&nft, MASQ_TABLE.0, MASQ_TABLE.1, &["masq_checks"], &doomed));
        failures.check("collecting the reference's nftables masquerade", removed);
    }
    failures.finish()
}

/// Removes what the reference's portmap plugin installed for this attachment, in either backend;
/// returns the UDP host ports it published (for conntrack). Its nftables rules are commented
/// with the container ID alone, so they go for every network of that container, as the
/// reference's own DEL does. Probes on `nft`'s socket when given (see [`Getter`]).
pub fn portmap_del(nft: Option<&Nft>, id: &Identity) -> anyhow::Result<Vec<u16>> {
    let dnat = crate::iptables_portmap::dnat_chain(&id.network, &id.container_id);
    let snat = crate::iptables_portmap::old_snat_chain(&id.network, &id.container_id);
    let chains = [dnat, snat];
    let look = || probe(nft, &chains, &HOSTPORT_TABLES, &[]);
    let mut present = look();
    let mut failures = cni::Failures::new();
    let _lock = lock_if_found(&mut present, look, &mut failures);
    let mut udp = Vec::new();
    for (ipv6, variant) in present.xtables {
        let removed = Iptables::variant(ipv6, variant)
            .map_or(Ok(Vec::new()), |tools| crate::iptables_portmap::del_with(&tools, &id.network, &id.container_id));
        if let Some(ports) = failures.check("removing the reference's iptables port mappings", removed) {
            udp.extend(ports);
        }
    }
    if !present.nft_tables.is_empty() {
        let removed = nft_for("nftables port mappings").and_then(|nft| {
            let mut ports = Vec::new();
            for (family, table) in &present.nft_tables {
                ports.extend(hostport_udp_ports(&nft, family, table, &id.container_id)?);
                remove_commented_rules(
                    &nft,
                    family,
                    table,
                    &["hostports", "hostip_hostports", "masquerading"],
                    &|c| c == id.container_id,
                )?;
            }
            Ok(ports)
        });
        if let Some(ports) = failures.check("removing the reference's nftables port mappings", removed) {
            udp.extend(ports);
        }
    }
    failures.finish().map(|()| udp)
}

/// The UDP ports of a container's rules in the reference's `hostports` chain.
fn hostport_udp_ports(nft: &Nft, family: &str, table: &str, container_id: &str) -> anyhow::Result<Vec<u16>> {
    let Some(listing) = nft.list(&["chain", family, table, "hostports"])? else { return Ok(Vec::new()) };
    Ok(nft::rules_of(&listing, "hostports")
        .filter(|r| r["comment"] == container_id)
        .flat_map(|r| r["expr"].as_array().cloned().unwrap_or_default())
        .filter_map(|e: Value| {
            let m = e.get("match")?;
            let left = m["left"].get("payload")?;
            (left["protocol"] == "udp" && left["field"] == "dport").then(|| m["right"].as_u64())?
        })
        .filter_map(|p| u16::try_from(p).ok())
        .collect())
}

/// Removes the reference portmap plugin's iptables mappings of `network`'s containers that are
/// not in `valid` (GC). Its nftables rules name no network, so GC cannot tell whose they are.
pub fn portmap_gc(network: &str, valid: &[Identity]) -> anyhow::Result<Vec<u16>> {
    let look = || probe(None, &[], &[], &[]);
    let mut present = look();
    let containers: BTreeSet<String> = valid.iter().map(|v| v.container_id.clone()).collect();
    let mut failures = cni::Failures::new();
    let _lock = lock_if_found(&mut present, look, &mut failures);
    let mut udp = Vec::new();
    for (ipv6, variant) in present.xtables {
        let removed = Iptables::variant(ipv6, variant)
            .map_or(Ok(Vec::new()), |tools| crate::iptables_portmap::gc_with(&tools, network, &containers));
        if let Some(ports) = failures.check("collecting the reference's iptables port mappings", removed) {
            udp.extend(ports);
        }
    }
    failures.finish().map(|()| udp)
}
