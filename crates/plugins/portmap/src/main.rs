//! `portmap`: publishes container ports on the host (Docker's `-p 8080:80`, `-p 127.0.0.1:8080:80`,
//! `-p 8080:80/udp`), as a chained plugin after one that gave the container its addresses.
//!
//! ADD: validate, find the container's first IPv4 and IPv6 address on `CNI_IFNAME`, publish the
//! ports in one firewall transaction, enable localhost routing to the container, flush stale UDP
//! flows of the published ports, and return `prevResult` unchanged. DEL removes the attachment's
//! entries by identity, even when the runtime no longer passes the mappings.

mod config;

use anyhow::Context;
use cni::{CniResult, Code, Failures, Plugin, Request};
use config::{Backend, PortmapConf};
use firewall::iptables_portmap::{self, Rules};
use firewall::portmap::{self, Attachment};
use firewall::{Identity, Nft, reference};
use ipnetwork::IpNetwork;
use netkit::{Family, Rtnl, conntrack, sysctl};
use std::collections::BTreeSet;

struct Portmap;

/// The container's first IPv4 and first IPv6 address on `ifname`, as the reference picks them:
/// addresses of another interface, or of one outside a sandbox, are skipped.
fn container_addresses(prev: &CniResult, ifname: &str) -> (Option<IpNetwork>, Option<IpNetwork>) {
    let mut v4 = None;
    let mut v6 = None;
    for ip in &prev.ips {
        let ours =
            ip.interface.and_then(|i| prev.interfaces.get(i)).is_none_or(|i| i.name == ifname && !i.sandbox.is_empty());
        if !ours {
            continue;
        }
        let slot = if ip.address.is_ipv4() { &mut v4 } else { &mut v6 };
        slot.get_or_insert(ip.address);
    }
    (v4, v6)
}

fn attachment(req: &Request, conf: &PortmapConf, prev: Option<&CniResult>) -> Attachment {
    let (v4, v6) = prev.map(|p| container_addresses(p, &req.env.ifname)).unwrap_or((None, None));
    Attachment {
        id: Identity::new(&req.config.name, &req.env.container_id, &req.env.ifname),
        mappings: conf.mappings.clone(),
        v4,
        v6,
        snat: conf.snat,
        masq_all: conf.masq_all,
        conditions_v4: conf.conditions_v4.nft.clone(),
        conditions_v6: conf.conditions_v6.nft.clone(),
    }
}

fn iptables_rules<'a>(req: &'a Request, conf: &'a PortmapConf, address: IpNetwork) -> Rules<'a> {
    Rules {
        network: &req.config.name,
        container_id: &req.env.container_id,
        mappings: &conf.mappings,
        address,
        snat: conf.snat,
        masq_all: conf.masq_all,
        mark_bit: conf.mark_masq_bit,
        external_set_mark_chain: conf.external_set_mark_chain.as_deref(),
        conditions: if address.is_ipv4() { &conf.conditions_v4.iptables } else { &conf.conditions_v6.iptables },
    }
}

/// Drops conntrack entries of UDP flows to `ports`, so traffic to a re-created container is not
/// blackholed by entries pointing at the old one. Failures are logged, not fatal, as in the
/// reference: the mappings themselves are in place.
fn flush_udp_flows(ports: &[u16], families: &[Family]) {
    let unique: BTreeSet<u16> = ports.iter().copied().collect();
    for port in unique {
        for family in families {
            if let Err(e) = conntrack::delete_udp_to_port(*family, port) {
                eprintln!("portmap: deleting stale UDP conntrack entries for port {port}: {e}");
            }
        }
    }
}

/// Lets the host reach the container from 127.0.0.1 (DNAT from localhost needs `route_localnet` on
/// the interface that routes to the container; masquerade then gives the packet a real source).
fn enable_localnet_routing(container: IpNetwork) -> anyhow::Result<()> {
    let mut host = Rtnl::open()?;
    let Some(route) = host.route_get(container.ip())? else { return Ok(()) };
    let Some(oif) = route.oif else { return Ok(()) };
    let Some(link) = host.link_by_index(oif)? else { return Ok(()) };
    sysctl::write(&format!("net/ipv4/conf/{}/route_localnet", link.name), "1")
}

fn publish(req: &Request, conf: &PortmapConf, a: &Attachment) -> anyhow::Result<()> {
    match conf.backend {
        Backend::Nftables => {
            portmap::add(&Nft::locate()?, a)?;
            cni::trace::mark("nftables published");
        }
        Backend::Iptables => {
            // Both families under one hold (see firewall::lock): a verb waiting for it sees both.
            let _held = firewall::lock::IptablesLock::acquire()?;
            for address in a.v4.iter().chain(a.v6.iter()) {
                iptables_portmap::add(&iptables_rules(req, conf, *address))?;
            }
        }
    }
    if conf.snat
        && let Some(v4) = a.v4
    {
        enable_localnet_routing(v4).context("enabling route_localnet toward the container")?;
    }
    Ok(())
}

/// Removes the attachment's published ports, whichever backend published them (the config may
/// have changed since ADD): the reference's state of the attachment, which is also what the
/// iptables backend writes, then our nftables entries. Returns the nftables interface, to be
/// closed last (see [`finish`]), and the UDP host ports that were published.
fn unpublish(conf: &PortmapConf, a: &Attachment) -> (Option<Nft>, anyhow::Result<Vec<u16>>) {
    let mut failures = Failures::new();
    let mut udp = Vec::new();
    let nft = match (Nft::locate(), conf.backend) {
        (Ok(nft), _) => Some(nft),
        (Err(e), Backend::Nftables) => {
            failures.push(e.context("removing published ports"));
            None
        }
        (Err(_), Backend::Iptables) => None,
    };
    // The iptables backend: an `iptables-restore` of a killed ADD may still be about to commit
    // this attachment's chain, which the probes below would not see yet; its lock tells when it is
    // done (see firewall::lock). Not on the nftables backend's path: its DEL must not pay for it.
    let iptables = firewall::lock::IptablesLock::acquire_if(conf.backend == Backend::Iptables);
    match iptables {
        Ok(_held) => {
            // Found without running a program when there is none; its probes on our socket (one
            // closed after our deletion would wait out an RCU grace period).
            let reference = reference::portmap_del(nft.as_ref(), &a.id);
            udp.extend(failures.check("removing the reference plugin's port mappings", reference).unwrap_or_default());
        }
        Err(e) => failures.push(e.context("removing the reference plugin's port mappings")),
    }
    if let Some(nft) = &nft {
        udp.extend(failures.check("removing published ports", portmap::del(nft, a)).unwrap_or_default());
        cni::trace::mark("nftables unpublished");
    }
    (nft, failures.finish().map(|()| udp))
}

/// After a deletion: flushes the UDP flows of `udp` (a conntrack socket's release waits out the
/// deletion's RCU grace period, as it should: nothing may reach the old address afterwards),
/// then closes the nftables socket without waiting for it where nothing waited yet.
fn finish(nft: Option<Nft>, udp: &[u16]) {
    flush_udp_flows(udp, &[Family::V4, Family::V6]);
    if let Some(nft) = nft {
        nft.close_without_waiting();
        cni::trace::mark("nftables socket closed");
    }
}

impl Plugin for Portmap {
    fn name(&self) -> &'static str {
        "portmap"
    }

    fn add(&self, req: &Request) -> anyhow::Result<CniResult> {
        let conf = PortmapConf::parse(req)?;
        let prev = req
            .config
            .prev_result
            .as_ref()
            .ok_or_else(|| cni::Error::config("must be called as chained plugin (prevResult is missing)"))?;
        if conf.mappings.is_empty() {
            return Ok(prev.clone());
        }
        let a = attachment(req, &conf, Some(prev));
        if a.v4.is_none() && a.v6.is_none() {
            return Ok(prev.clone());
        }
        if let Err(e) = publish(req, &conf, &a) {
            // Take back whatever part went in.
            if let (_, Err(undo)) = unpublish(&conf, &a) {
                eprintln!("portmap: undoing a failed ADD: {undo:#}");
            }
            return Err(e);
        }
        let families: Vec<Family> = [(a.v4.is_some(), Family::V4), (a.v6.is_some(), Family::V6)]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, f)| *f)
            .collect();
        let udp: Vec<u16> =
            conf.mappings.iter().filter(|m| m.protocol == portmap::Protocol::Udp).map(|m| m.host_port).collect();
        flush_udp_flows(&udp, &families);
        Ok(prev.clone())
    }

    fn del(&self, req: &Request) -> anyhow::Result<()> {
        let conf = PortmapConf::parse(req)?;
        let a = attachment(req, &conf, req.config.prev_result.as_ref());
        let (nft, udp) = unpublish(&conf, &a);
        let udp = udp?;
        finish(nft, &udp);
        Ok(())
    }

    fn check(&self, req: &Request) -> anyhow::Result<()> {
        let conf = PortmapConf::parse(req)?;
        let prev = req.config.prev_result.as_ref().context("required prevResult missing")?;
        let a = attachment(req, &conf, Some(prev));
        if conf.mappings.is_empty() {
            return Ok(());
        }
        match conf.backend {
            Backend::Nftables => portmap::check(&Nft::locate()?, &a),
            Backend::Iptables => {
                for address in a.v4.iter().chain(a.v6.iter()) {
                    iptables_portmap::check(&iptables_rules(req, &conf, *address))?;
                }
                Ok(())
            }
        }
    }

    fn gc(&self, req: &Request) -> anyhow::Result<()> {
        let Some(valid) = &req.config.valid_attachments else { return Ok(()) };
        let ids: Vec<Identity> =
            valid.iter().map(|a| Identity::new(&req.config.name, &a.container_id, &a.ifname)).collect();
        let mut udp = Vec::new();
        let mut failures = Failures::new();
        // Both backends: entries of either kind may have been left by this plugin or the reference.
        if let Ok(nft) = Nft::locate() {
            udp.extend(
                failures
                    .check("collecting port mappings", portmap::gc(&nft, &req.config.name, &ids))
                    .unwrap_or_default(),
            );
        }
        // As DEL (see unpublish): a killed ADD's orphaned iptables program finishes first.
        let iptables = firewall::lock::IptablesLock::acquire_if(
            PortmapConf::parse(req).is_ok_and(|conf| conf.backend == Backend::Iptables),
        );
        match iptables {
            Ok(_held) => {
                let reference = reference::portmap_gc(&req.config.name, &ids);
                udp.extend(
                    failures.check("collecting the reference plugin's port mappings", reference).unwrap_or_default(),
                );
            }
            Err(e) => failures.push(e.context("collecting the reference plugin's port mappings")),
        }
        flush_udp_flows(&udp, &[Family::V4, Family::V6]);
        failures.finish()
    }

    fn status(&self, req: &Request) -> anyhow::Result<()> {
        let conf = PortmapConf::parse(req)?;
        let usable = match conf.backend {
            Backend::Nftables => Nft::locate().and_then(|nft| nft.list(&["tables"]).map(|_| ())),
            Backend::Iptables => firewall::iptables::Iptables::locate(false).and_then(|t| t.save_nat().map(|_| ())),
        };
        usable.map_err(|e| {
            anyhow::Error::new(cni::Error::new(
                Code::NotAvailable,
                format!("the {:?} backend cannot be used: {e:#}", conf.backend),
            ))
        })
    }
}

fn main() {
    cni::skel::run(Portmap)
}
