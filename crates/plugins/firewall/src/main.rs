//! `firewall`: lets a container's traffic through the host's forward path, as a chained plugin
//! after one that gave the container its addresses (Podman 4 and nerdctl put it in every network).
//!
//! ADD: validate, choose the backend (`iptables`, `firewalld`, ours `nftables`, or the reference's
//! empty value: firewalld when it is on the system bus, else iptables), remember the attachment's
//! addresses, install the rules (the reference's own chains and rules for iptables, zone sources
//! for firewalld, a table of ours for nftables) and the ingress policy, and return `prevResult`
//! unchanged. DEL removes them by the attachment's identity, with or without `prevResult`; GC
//! removes those of attachments no longer valid; STATUS says whether the backend can be used.

mod config;
mod state;

use anyhow::Context;
use cni::{CniResult, Code, Failures, Plugin, Request, Rollback};
use config::{Backend, FirewallConf};
use firewall::filter::{self, Policy, Tools, Wanted};
use firewall::firewalld::Firewalld;
use firewall::{Identity, Nft, filter_nft};
use state::{Installed, Record, Store};
use std::net::IpAddr;

struct Firewall;

/// The addresses of a result, each once, in order: the reference adds rules for every address of
/// `prevResult`, whatever its interface.
fn addresses(prev: &CniResult) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in &prev.ips {
        if !out.contains(&ip.address.ip()) {
            out.push(ip.address.ip());
        }
    }
    out
}

/// The bridge an ingress policy applies to: the first interface of `prevResult`, as the reference
/// takes it (the bridge plugin reports its bridge first).
fn ingress_bridge(conf: &FirewallConf, prev: &CniResult) -> anyhow::Result<Option<String>> {
    if conf.policy == Policy::Open {
        return Ok(None);
    }
    let name = prev.interfaces.first().map(|i| i.name.clone()).unwrap_or_default();
    if name.is_empty() {
        return Err(cni::Error::config(format!(
            "interface needs to be set for ingress policy {:?}, make sure to chain \"firewall\" plugin with \"bridge\"",
            conf.policy.name()
        ))
        .into());
    }
    Ok(Some(name))
}

/// The backend an ADD uses; `Auto` asks the system bus whether firewalld runs.
fn resolve(backend: Backend) -> Installed {
    match backend {
        Backend::Iptables => Installed::Iptables,
        Backend::Firewalld => Installed::Firewalld,
        Backend::Nftables => Installed::Nftables,
        Backend::Auto if Firewalld::is_running() => Installed::Firewalld,
        Backend::Auto => Installed::Iptables,
    }
}

/// The iptables tools of each family that has addresses (the reference's `findProtos`).
fn families(addrs: &[IpAddr]) -> anyhow::Result<Vec<(Tools, Vec<IpAddr>)>> {
    let mut out = Vec::new();
    for ipv6 in [false, true] {
        let of_family: Vec<IpAddr> = addrs.iter().copied().filter(|a| a.is_ipv6() == ipv6).collect();
        if !of_family.is_empty() {
            out.push((Tools::locate(ipv6)?, of_family));
        }
    }
    Ok(out)
}

/// The ingress policy in iptables, as the reference installs it whatever the backend but ours.
fn iptables_ingress(addrs: &[IpAddr], bridge: &str, policy: Policy, admin: &str) -> anyhow::Result<()> {
    for (tools, _) in families(addrs)? {
        tools.add(&Wanted { admin, addresses: Vec::new(), ingress: Some((bridge, policy)) })?;
    }
    Ok(())
}

/// Removes what `record` installed, keeping the rules of addresses another attachment now holds,
/// then the record itself.
fn remove(store: &Store, record: &Record) -> anyhow::Result<()> {
    remove_rules(store, record)?;
    store.remove(&record.identity())
}

/// Removes the rules of `record`'s addresses (as far as the attachment holds them) and its claims.
fn remove_rules(store: &Store, record: &Record) -> anyhow::Result<()> {
    let id = record.identity();
    let mine: Vec<IpAddr> = record.addresses.iter().copied().filter(|ip| store.may_remove(*ip, &id)).collect();
    let mut failures = Failures::new();
    match record.backend {
        Installed::Iptables => match families(&mine) {
            Ok(families) => {
                for (tools, addrs) in families {
                    failures.check(&format!("removing {} rules", tools.family()), tools.del(&addrs));
                }
            }
            Err(e) => failures.push(e),
        },
        Installed::Firewalld => match Firewalld::connect() {
            Ok(mut fw) => {
                for ip in &mine {
                    // As the reference: a source already gone (or never added) is not an error.
                    if let Err(e) = fw.remove_source(&record.zone, &filter::host(*ip)) {
                        eprintln!("firewall: removing {ip} from zone {}: {e:#}", record.zone);
                    }
                }
            }
            // firewalld is gone, and its runtime sources with it.
            Err(e) => eprintln!("firewall: firewalld not reachable, nothing to remove there: {e:#}"),
        },
        Installed::Nftables => {
            let result = Nft::locate().and_then(|nft| filter_nft::del(&nft, &id, &record.addresses));
            failures.check("removing nftables entries", result);
        }
    }
    if failures.is_empty() {
        for ip in &record.addresses {
            failures.check("releasing an address", store.release(*ip, &id));
        }
    }
    failures.finish()
}

/// An ADD for an attachment that already has a record (a runtime retrying, or a config changed
/// in between): what the earlier ADD installed but this one will not is removed first, so no
/// rule outlives the record that names it.
fn forget_earlier(store: &Store, earlier: &Record, now: &Record) {
    let stale = if earlier.backend == now.backend && earlier.backend != Installed::Nftables {
        Record {
            addresses: earlier.addresses.iter().copied().filter(|ip| !now.addresses.contains(ip)).collect(),
            ..earlier.clone()
        }
    } else {
        // Another backend, or our nftables chain (re-made whole by the ADD): all of it.
        earlier.clone()
    };
    if !stale.addresses.is_empty()
        && let Err(e) = remove_rules(store, &stale)
    {
        eprintln!("firewall: removing what an earlier ADD of this attachment installed: {e:#}");
    }
}

impl Plugin for Firewall {
    fn name(&self) -> &'static str {
        "firewall"
    }

    fn add(&self, req: &Request) -> anyhow::Result<CniResult> {
        let conf = FirewallConf::parse(req)?;
        let prev = req
            .config
            .prev_result
            .as_ref()
            .ok_or_else(|| cni::Error::config("missing prevResult from earlier plugin"))?;
        let bridge = ingress_bridge(&conf, prev)?;
        let addrs = addresses(prev);
        let backend = resolve(conf.backend);
        let id = Identity::new(&req.config.name, &req.env.container_id, &req.env.ifname);
        let record = Record {
            network: id.network.clone(),
            container_id: id.container_id.clone(),
            ifname: id.ifname.clone(),
            backend,
            admin_chain: conf.admin_chain.clone(),
            zone: conf.zone.clone(),
            addresses: addrs.clone(),
        };

        let nft = if backend == Installed::Nftables { Some(Nft::locate()?) } else { None };
        let store = Store::lock(&conf.data_dir)?;
        if let Some(earlier) = store.load(&id)? {
            forget_earlier(&store, &earlier, &record);
        }
        // Addresses another live attachment holds keep their rules if this ADD fails.
        let vacant: Vec<IpAddr> = addrs.iter().copied().filter(|ip| store.may_remove(*ip, &id)).collect();
        let mut rollback = Rollback::new("firewall");
        store.save(&record)?;
        rollback.push("the attachment's record", || store.remove(&id));
        for ip in &addrs {
            store.claim(*ip, &id)?;
        }
        rollback.push("address claims", || {
            addrs.iter().try_for_each(|ip| if vacant.contains(ip) { store.release(*ip, &id) } else { Ok(()) })
        });

        match backend {
            Installed::Iptables => {
                for (tools, family) in families(&addrs)? {
                    let undo: Vec<IpAddr> = family.iter().copied().filter(|ip| vacant.contains(ip)).collect();
                    let ingress = bridge.as_deref().map(|b| (b, conf.policy));
                    tools.add(&Wanted { admin: &conf.admin_chain, addresses: family, ingress })?;
                    let family = tools.family();
                    rollback.push(format!("{family} rules"), move || tools.del(&undo));
                    cni::fault::point(&format!("firewall:added-{family}"))?;
                }
            }
            Installed::Firewalld => {
                let mut fw = Firewalld::connect().context("connecting to firewalld")?;
                let zone = conf.zone.clone();
                let undo = vacant.clone();
                // Registered first: a failure at the second address takes back the first.
                rollback.push("firewalld sources", move || {
                    let mut fw = Firewalld::connect()?;
                    let mut failures = Failures::new();
                    for ip in &undo {
                        failures.check("removing a source", fw.remove_source(&zone, &filter::host(*ip)));
                    }
                    failures.finish()
                });
                for ip in &addrs {
                    fw.add_source(&conf.zone, &filter::host(*ip))?;
                }
                cni::fault::point("firewall:added-firewalld")?;
                if let Some(b) = &bridge {
                    iptables_ingress(&addrs, b, conf.policy, &conf.admin_chain)?;
                }
            }
            Installed::Nftables => {
                let nft = nft.as_ref().context("nft")?;
                let ingress = bridge.as_deref().map(|b| (b, conf.policy));
                filter_nft::add(nft, &id, &addrs, ingress)?;
                rollback.push("nftables entries", || filter_nft::del(nft, &id, &addrs));
                cni::fault::point("firewall:added-nftables")?;
            }
        }
        rollback.commit();
        Ok(prev.clone())
    }

    fn del(&self, req: &Request) -> anyhow::Result<()> {
        let conf = FirewallConf::parse_for_cleanup(req)?;
        let id = Identity::new(&req.config.name, &req.env.container_id, &req.env.ifname);
        let from_prev = req.config.prev_result.as_ref().map(addresses).unwrap_or_default();
        let Some(store) = Store::lock_existing(&conf.data_dir)? else {
            return del_without_record(&conf, &id, &from_prev);
        };
        match store.load(&id)? {
            Some(mut record) => {
                // prevResult may name addresses the record lacks (a record from an older ADD).
                for ip in from_prev {
                    if !record.addresses.contains(&ip) {
                        record.addresses.push(ip);
                    }
                }
                remove(&store, &record)
            }
            None => {
                // Addresses an attachment of ours holds now keep their rules.
                let vacant: Vec<IpAddr> = from_prev.into_iter().filter(|ip| store.may_remove(*ip, &id)).collect();
                del_without_record(&conf, &id, &vacant)
            }
        }
    }

    fn check(&self, req: &Request) -> anyhow::Result<()> {
        let conf = FirewallConf::parse(req)?;
        let prev = req.config.prev_result.as_ref().context("missing prevResult from earlier plugin")?;
        let addrs = addresses(prev);
        let id = Identity::new(&req.config.name, &req.env.container_id, &req.env.ifname);
        match resolve(conf.backend) {
            Installed::Iptables => {
                for (tools, family) in families(&addrs)? {
                    tools.check(&Wanted { admin: &conf.admin_chain, addresses: family, ingress: None })?;
                }
                Ok(())
            }
            Installed::Firewalld => {
                let mut fw = Firewalld::connect()?;
                for ip in &addrs {
                    let host = filter::host(*ip);
                    anyhow::ensure!(
                        fw.query_source(&conf.zone, &host)?,
                        "failed to find the address {host} in {} zone",
                        conf.zone
                    );
                }
                Ok(())
            }
            Installed::Nftables => filter_nft::check(&Nft::locate()?, &id, &addrs),
        }
    }

    fn gc(&self, req: &Request) -> anyhow::Result<()> {
        let conf = FirewallConf::parse_for_cleanup(req)?;
        let Some(valid) = &req.config.valid_attachments else { return Ok(()) };
        let keep: Vec<Identity> =
            valid.iter().map(|a| Identity::new(&req.config.name, &a.container_id, &a.ifname)).collect();
        let mut failures = Failures::new();
        if let Some(store) = Store::lock_existing(&conf.data_dir)? {
            for record in store.of_network(&req.config.name)? {
                if !keep.contains(&record.identity()) {
                    failures.check(&format!("collecting {}", record.identity().comment()), remove(&store, &record));
                }
            }
        }
        // Entries of our own table are found by their identity, records or not.
        if let Ok(nft) = Nft::locate() {
            failures.check("collecting nftables entries", filter_nft::gc(&nft, &req.config.name, &keep));
        }
        failures.finish()
    }

    fn status(&self, req: &Request) -> anyhow::Result<()> {
        let conf = FirewallConf::parse(req)?;
        let backend = resolve(conf.backend);
        let usable = match backend {
            Installed::Iptables => {
                [false, true].into_iter().try_for_each(|ipv6| Tools::locate(ipv6).and_then(|t| t.save()).map(|_| ()))
            }
            Installed::Firewalld => Firewalld::connect().and_then(|mut fw| fw.ping()),
            Installed::Nftables => Nft::locate().and_then(|nft| nft.list(&["tables"]).map(|_| ())),
        };
        usable.map_err(|e| {
            anyhow::Error::new(cni::Error::new(
                Code::NotAvailable,
                format!("the {backend:?} firewall backend cannot be used: {e:#}"),
            ))
        })
    }
}

/// DEL of an attachment this plugin has no record of (the reference added it, or the record is
/// gone): the reference's DEL, from `prevResult`'s addresses with the configured backend, plus
/// our nftables entries found by identity.
fn del_without_record(conf: &FirewallConf, id: &Identity, addrs: &[IpAddr]) -> anyhow::Result<()> {
    let mut failures = Failures::new();
    if !addrs.is_empty() {
        match resolve(conf.backend) {
            Installed::Iptables => {
                for (tools, family) in failures.check("finding iptables", families(addrs)).unwrap_or_default() {
                    failures.check(&format!("removing {} rules", tools.family()), tools.del(&family));
                }
            }
            Installed::Firewalld => {
                if let Ok(mut fw) = Firewalld::connect() {
                    for ip in addrs {
                        let _ = fw.remove_source(&conf.zone, &filter::host(*ip));
                    }
                }
            }
            Installed::Nftables => {}
        }
    }
    if let Ok(nft) = Nft::locate() {
        failures.check("removing nftables entries", filter_nft::del(&nft, id, addrs));
    }
    failures.finish()
}

fn main() {
    cni::skel::run(Firewall)
}
