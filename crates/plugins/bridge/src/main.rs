//! `bridge`: a Linux bridge on the host and a veth pair per container, with the gateway address,
//! masquerade, hairpin and the reference plugin's other options (Docker's `docker0` and
//! user-defined bridge networks, in CNI form).
//!
//! ADD reads top to bottom: validate, bridge, veth, IPAM, container side, gateway, firewall,
//! report. Every step from the veth pair on registers its undo with a [`Rollback`], which takes
//! them back in reverse order, the IPAM allocation included, when the ADD fails or panics. DEL
//! removes the firewall entries first (found by the attachment's identity, so no netns or
//! prevResult is needed, and whatever the config's flags say now), then the interface, then the
//! allocation; whatever is already gone is success, and every step is tried.

mod config;
mod host;

use anyhow::Context;
use cni::{CniResult, Command, Failures, Interface, Plugin, Request, Rollback, delegate};
use config::{BridgeConf, MasqBackend};
use firewall::bridge::{Attachment, Known};
use firewall::{Identity, Nft, iptables};
use ipnetwork::IpNetwork;
use netkit::iface::{self, Dad};
use netkit::{Family, NetNs, Rtnl, sysctl, tempname};
use std::net::IpAddr;

struct Bridge;

/// The gateway of each address (the subnet's first address when IPAM gave none and the bridge is
/// the gateway), and default routes through them for `isDefaultGateway`, as the reference's
/// `calcGateways`.
fn calc_gateways(result: &mut CniResult, conf: &BridgeConf) -> Vec<IpNetwork> {
    let mut gateways = Vec::new();
    let mut has_default = [false, false];
    for ip in &mut result.ips {
        ip.interface = Some(2);
        if ip.gateway.is_none() && conf.is_gateway {
            ip.gateway = first_address(&ip.address);
        }
        let v6 = usize::from(ip.address.is_ipv6());
        let default: IpNetwork = if v6 == 1 { "::/0" } else { "0.0.0.0/0" }.parse().expect("literal");
        if conf.is_default_gateway && !has_default[v6] {
            has_default[v6] = result.routes.iter().any(|r| r.gw.is_some() && r.dst == default);
            if !has_default[v6] {
                result.routes.push(cni::Route::new(default, ip.gateway));
                has_default[v6] = true;
            }
        }
        if conf.is_gateway
            && let Some(gw) = ip.gateway
            && let Ok(net) = IpNetwork::new(gw, ip.address.prefix())
        {
            gateways.push(net);
        }
    }
    gateways
}

fn first_address(net: &IpNetwork) -> Option<IpAddr> {
    match net {
        IpNetwork::V4(n) => Some(IpAddr::V4((u32::from(n.network()) + 1).into())),
        IpNetwork::V6(n) => Some(IpAddr::V6((u128::from(n.network()) + 1).into())),
    }
}

fn identity(req: &Request) -> Identity {
    Identity::new(&req.config.name, &req.env.container_id, &req.env.ifname)
}

fn install_firewall(a: &Attachment, backend: MasqBackend) -> anyhow::Result<()> {
    let mut nft_part = a.clone();
    if backend == MasqBackend::Iptables {
        iptables::masq_add(&a.id.network, &a.id.container_id, &a.masquerade)?;
        nft_part.masquerade.clear();
    }
    if !nft_part.masquerade.is_empty() || nft_part.spoof_check.is_some() || nft_part.isolation.is_some() {
        firewall::bridge::add(&Nft::locate()?, &nft_part)?;
    }
    Ok(())
}

/// Removes whatever masquerade and spoof-check entries the attachment has, whichever backend and
/// flags installed them, and whichever implementation: ours in nftables (through `nft`, opened
/// here when `None`), and the reference's, which includes our iptables backend's.
fn remove_firewall(nft: Option<&Nft>, id: &Identity, known: &Known) -> anyhow::Result<()> {
    let mut failures = Failures::new();
    let located;
    let nft = match nft {
        Some(nft) => nft,
        None => {
            located = Nft::locate()?;
            &located
        }
    };
    // The iptables backend's chains are the reference's own, so removing the reference's state of
    // this attachment (in whichever backend it used, found without running a program when there
    // is none) removes ours too. Its probes go over `nft`'s socket, kept open until DEL returns:
    // any nfnetlink socket closed after a deletion (portmap's, just before) waits out an RCU
    // grace period, which the veth's removal waits out anyway.
    failures.check("removing the reference plugin's entries", firewall::reference::bridge_del(Some(nft), id));
    failures.check("removing nftables entries", remove_nft_entries(nft, id, known));
    failures.finish()
}

/// The masquerade and the spoof-check entries go in one transaction, built for the chains of
/// this attachment that exist (asked first: no element of ours can exist without its chain, which
/// a map element pointing at it keeps from being deleted). Anything else (an address prevResult
/// did not name, no prevResult, a probe or transaction that fails) takes the listing path.
fn remove_nft_entries(nft: &Nft, id: &Identity, known: &Known) -> anyhow::Result<()> {
    let listing = || firewall::bridge::del(nft, id, &Known::default(), true, true);
    let Ok((masq, spoof)) = firewall::bridge::chains_present(Some(nft), id) else { return listing() };
    if (masq && known.addresses.is_empty()) || (spoof && known.spoof_port.is_none()) {
        return listing();
    }
    if !masq && !spoof {
        return Ok(());
    }
    match nft.apply(&firewall::bridge::del_batch(id, known, masq, spoof).to_json()) {
        Ok(()) => Ok(()),
        Err(_) => listing(),
    }
}

impl Bridge {
    fn add_attachment<'a>(
        &self,
        req: &'a Request,
        conf: &BridgeConf,
        container: &NetNs,
        host: &mut Rtnl,
        undo: &mut Rollback<'a>,
    ) -> anyhow::Result<CniResult> {
        let ifname = req.env.ifname.as_str();

        // The bridge and the veth pair; the container end is born in the container (a name taken
        // there fails the creation, before anything of this attachment exists).
        let bridge = host::ensure_bridge(host, conf)?;
        cni::trace::mark("bridge ready");
        let host_veth = host::create_veth(host, container, ifname, conf.mtu, conf.mac)?;
        let name = host_veth.clone();
        undo.push(format!("host veth {host_veth}"), move || {
            let mut host = Rtnl::open()?;
            if let Some(link) = host.link_by_name(&name)? {
                host.delete_link(link.index)?;
            }
            Ok(())
        });
        cni::trace::mark("veth created");
        let port = host.link_by_name(&host_veth)?.context("host veth vanished after creation")?;
        host::setup_port(host, conf, &port, &bridge)?;
        cni::trace::mark("port set");

        let mut result = CniResult {
            interfaces: vec![
                Interface { name: bridge.name.clone(), mac: bridge.mac_string(), ..Interface::default() },
                Interface { name: host_veth.clone(), mac: port.mac_string(), ..Interface::default() },
                Interface { name: ifname.to_string(), sandbox: req.env.netns.clone(), ..Interface::default() },
            ],
            ..CniResult::default()
        };

        // Addresses from IPAM, configured in the container (in one visit, which also reads the
        // container end's MAC for the result).
        let configure = req.config.ipam_type.is_some();
        let mut gateways = Vec::new();
        if configure {
            let allocated = delegate::ipam_add(req, undo)?;
            result.ips = allocated.ips;
            result.routes = allocated.routes;
            result.dns = allocated.dns;
            gateways = calc_gateways(&mut result, conf);
        }
        let container_link = container.run(|| -> anyhow::Result<netkit::Link> {
            let mut inside = Rtnl::open()?;
            let link = inside.link_by_name(ifname)?.context("container veth vanished after creation")?;
            if configure {
                if conf.enable_dad {
                    let _ = sysctl::write(&format!("net/ipv6/conf/{ifname}/enhanced_dad"), "1");
                    let _ = sysctl::write(&format!("net/ipv6/conf/{ifname}/accept_dad"), "1");
                } else {
                    let _ = sysctl::write(&format!("net/ipv6/conf/{ifname}/accept_dad"), "0");
                }
                let _ = sysctl::write(&format!("net/ipv4/conf/{ifname}/arp_notify"), "1");
                let dad = if conf.enable_dad { Dad::Enabled } else { Dad::Skipped };
                iface::configure_interface(&mut inside, ifname, &result, dad)?;
            } else if !conf.disable_container_interface {
                inside.set_up(link.index).with_context(|| format!("setting {ifname} up"))?;
            }
            Ok(link)
        })??;
        result.interfaces[2].mac = container_link.mac_string();
        cni::trace::mark("container configured");

        // The bridge (or the VLAN's gateway interface) is the containers' gateway.
        if !gateways.is_empty() {
            let gateway_link = if conf.vlan != 0 {
                let link = host::ensure_vlan_gateway(host, conf, &bridge)?;
                result.interfaces.push(Interface {
                    name: link.name.clone(),
                    mac: link.mac_string(),
                    ..Interface::default()
                });
                link
            } else {
                bridge.clone()
            };
            for gw in &gateways {
                host::ensure_gateway_address(host, &gateway_link, *gw, conf.force_address, conf.enable_dad)?;
            }
            for family in [Family::V4, Family::V6] {
                if gateways.iter().any(|g| Family::of(&g.ip()) == family) {
                    host::enable_forwarding(family)?;
                }
            }
        }

        // Masquerade, spoof check and isolation: one firewall transaction.
        let attachment = Attachment {
            id: identity(req),
            masquerade: if conf.ip_masq { result.ips.iter().map(|ip| ip.address).collect() } else { Vec::new() },
            spoof_check: conf.mac_spoof_check.then(|| (host_veth.clone(), container_link.mac_string())),
            isolation: conf.isolation.then(|| conf.bridge.clone()),
        };
        cni::trace::mark("gateway set");
        // Registered first: a transaction that failed left nothing, but the iptables backend's
        // chain may be half made.
        let id = attachment.id.clone();
        let known = Known {
            addresses: attachment.masquerade.iter().map(|n| n.ip()).collect(),
            spoof_port: attachment.spoof_check.as_ref().map(|(port, _)| port.clone()),
        };
        undo.push("firewall entries", move || remove_firewall(None, &id, &known));
        install_firewall(&attachment, conf.masq_backend).context("setting up the firewall")?;
        cni::trace::mark("firewall installed");

        if !conf.disable_container_interface {
            let port = host::wait_port_up(host, &host_veth)?;
            cni::trace::mark("port up");
            result.interfaces[1].mac = port.mac_string();
        }
        // The bridge's MAC can change when its first port arrives or its address is set.
        if let Some(bridge) = host.link_by_index(bridge.index)? {
            result.interfaces[0].mac = bridge.mac_string();
        }
        if !req.config.dns.is_empty() {
            result.dns = req.config.dns.clone();
        }
        Ok(result)
    }
}

impl Plugin for Bridge {
    fn name(&self) -> &'static str {
        "bridge"
    }

    fn add(&self, req: &Request) -> anyhow::Result<CniResult> {
        req.args.check_known(&["MAC", "IP"])?;
        let conf = BridgeConf::parse(req)?;
        let container = NetNs::open(&req.env.netns)?;
        let mut host = Rtnl::open()?;
        let mut undo = Rollback::new("bridge");
        let result = self.add_attachment(req, &conf, &container, &mut host, &mut undo)?;
        undo.commit();
        Ok(result)
    }

    fn del(&self, req: &Request) -> anyhow::Result<()> {
        let conf = BridgeConf::parse(req)?;
        let prev = req.config.prev_result.as_ref();
        let host_veth = prev.and_then(|p| p.interfaces.get(1)).map(|i| i.name.clone());
        let mut failures = Failures::new();

        // Firewall entries first, by identity: they must go even without a netns or prevResult,
        // and whatever ipMasq or macspoofchk say now (they may have been switched off since ADD).
        // The nftables socket stays open until DEL returns, and is then released without waiting:
        // closing it within an RCU grace period of a deletion (ours, or portmap's a moment ago)
        // waits out the rest of it.
        let known = Known {
            addresses: prev.map(|p| p.ips.iter().map(|ip| ip.address.ip()).collect()).unwrap_or_default(),
            spoof_port: host_veth.clone().filter(|p| !p.is_empty()),
        };
        let nft = Nft::locate().ok();
        // The iptables backend: an `iptables-restore` of a killed ADD may still be about to commit
        // the masquerade chain, which remove_firewall's probes would not see yet; its lock tells
        // when it is done (see firewall::lock). Not on the nftables path: its DEL must not pay.
        let iptables = firewall::lock::IptablesLock::acquire_if(conf.masq_backend == MasqBackend::Iptables);
        let removed = iptables.and_then(|_held| remove_firewall(nft.as_ref(), &identity(req), &known));
        failures.check("removing firewall entries", removed);
        cni::trace::mark("firewall removed");

        // The interface: deleting the container end removes the pair. Without the namespace, a
        // host end that is still there (the namespace outlived its path) goes instead. Returns
        // once the pair is gone from both namespaces (off the bridge, its neighbours and routes
        // with it), without waiting for the kernel to free it (netkit's delete_link_detached).
        // IPAM after the interface, as the reference (an address is never handed out while the
        // old interface holds it), but dhcp before it (its RELEASE leaves from that interface).
        delegate::del_interface_and_ipam(req, &mut failures, || {
            let removed = tempname::delete_container_link(&req.env.netns, &req.env.ifname, "veth", None).and_then(
                |in_container| match (in_container, host_veth.as_deref()) {
                    (false, Some(name)) => delete_stale_host_veth(name, &conf.bridge),
                    _ => Ok(()),
                },
            );
            cni::trace::mark("interface removed");
            removed
        });

        if let Some(nft) = nft {
            nft.close_without_waiting();
        }
        failures.finish()
    }

    fn check(&self, req: &Request) -> anyhow::Result<()> {
        let conf = BridgeConf::parse(req)?;
        let container = NetNs::open(&req.env.netns)?;
        // An L2-only network has no IPAM to ask (the reference asks anyway and fails).
        if req.config.ipam_type.is_some() {
            delegate::ipam(req, Command::Check)?;
        }
        let prev = req.config.prev_result.as_ref().context("required prevResult missing")?;
        let ifname = req.env.ifname.as_str();

        let mut host = Rtnl::open()?;
        let bridge = host
            .link_by_name(&conf.bridge)?
            .with_context(|| format!("CNI created bridge {} in host namespace was not found", conf.bridge))?;
        anyhow::ensure!(bridge.is_kind("bridge"), "interface {} does not have link type of bridge", conf.bridge);
        if let Some(listed) = prev.interfaces.iter().find(|i| i.name == conf.bridge)
            && !listed.mac.is_empty()
        {
            anyhow::ensure!(listed.mac == bridge.mac_string(), "bridge interface {} MAC doesn't match", conf.bridge);
        }
        anyhow::ensure!(
            bridge.promisc == conf.promisc_mode,
            "bridge interface {} configured promisc mode {} doesn't match current state {}",
            conf.bridge,
            conf.promisc_mode,
            bridge.promisc
        );

        let listed = req.container_interface(prev)?.1;
        let container_link = container.run(|| -> anyhow::Result<netkit::Link> {
            let mut rtnl = Rtnl::open()?;
            let link = rtnl
                .link_by_name(ifname)?
                .with_context(|| format!("CNI created interface in container {ifname} not found"))?;
            anyhow::ensure!(link.is_kind("veth"), "container interface {ifname} not of type veth");
            anyhow::ensure!(
                listed.mac.is_empty() || listed.mac == link.mac_string(),
                "interface {ifname} MAC {} doesn't match container MAC {}",
                listed.mac,
                link.mac_string()
            );
            iface::check_addresses(&mut rtnl, ifname, prev)?;
            iface::check_routes(&mut rtnl, prev)?;
            Ok(link)
        })??;

        // The host end: the container interface's own peer (IFLA_LINK is an index in the peer's
        // namespace, which IFLA_LINK_NETNSID says is another one), a veth on the bridge that
        // points back. Indexes are per namespace, so two containers' eth0 often share one: the
        // search must start from the container side.
        let missing = || format!("CNI veth created for bridge {} was not found", conf.bridge);
        let peer = container_link.peer_index.filter(|_| container_link.link_netnsid.is_some()).with_context(missing)?;
        let host_veth = host.link_by_index(peer)?.with_context(missing)?;
        anyhow::ensure!(
            host_veth.is_kind("veth") && host_veth.master == Some(bridge.index),
            "the peer of container interface {ifname} ({}) is not a port of bridge {}",
            host_veth.name,
            conf.bridge
        );
        anyhow::ensure!(
            host_veth.peer_index == Some(container_link.index) && host_veth.link_netnsid.is_some(),
            "container interface {ifname} has another peer"
        );

        // The firewall entries ADD installed.
        let addresses: Vec<IpNetwork> =
            if conf.ip_masq { prev.ips.iter().map(|ip| ip.address).collect() } else { Vec::new() };
        let nft_part = Attachment {
            id: identity(req),
            masquerade: if conf.masq_backend == MasqBackend::Nftables { addresses.clone() } else { Vec::new() },
            spoof_check: conf.mac_spoof_check.then(|| (host_veth.name.clone(), container_link.mac_string())),
            isolation: None,
        };
        if !nft_part.masquerade.is_empty() || nft_part.spoof_check.is_some() {
            firewall::bridge::check(&Nft::locate()?, &nft_part)?;
        }
        if conf.masq_backend == MasqBackend::Iptables && !addresses.is_empty() {
            iptables::masq_check(&req.config.name, &req.env.container_id, &addresses)?;
        }
        Ok(())
    }

    fn status(&self, req: &Request) -> anyhow::Result<()> {
        let conf = BridgeConf::parse(req)?;
        let unavailable = |msg: String| anyhow::Error::new(cni::Error::new(cni::Code::NotAvailable, msg));
        if let Some(link) = Rtnl::open()?.link_by_name(&conf.bridge)?
            && !link.is_kind("bridge")
        {
            return Err(unavailable(format!("{:?} exists but is not a bridge", conf.bridge)));
        }
        let needs_nft =
            (conf.ip_masq && conf.masq_backend == MasqBackend::Nftables) || conf.mac_spoof_check || conf.isolation;
        if needs_nft && let Err(e) = Nft::locate() {
            return Err(unavailable(format!("{e:#}")));
        }
        if conf.ip_masq
            && conf.masq_backend == MasqBackend::Iptables
            && let Err(e) = iptables::Iptables::locate(false)
        {
            return Err(unavailable(format!("{e:#}")));
        }
        if req.config.ipam_type.is_some() {
            delegate::ipam(req, Command::Status)?;
        }
        Ok(())
    }

    fn gc(&self, req: &Request) -> anyhow::Result<()> {
        let mut failures = Failures::new();
        if let Some(valid) = &req.config.valid_attachments {
            // On the iptables backend, wait for the programs of a killed verb first (as DEL).
            let iptables = firewall::lock::IptablesLock::acquire_if(
                BridgeConf::parse(req).is_ok_and(|conf| conf.masq_backend == MasqBackend::Iptables),
            );
            match iptables {
                Ok(_held) => firewall::bridge::gc_attachments(&req.config.name, valid, &mut failures),
                Err(e) => failures.push(e.context("waiting for the iptables lock")),
            }
        }
        // The spec requires GC to be passed on to the delegated IPAM plugin.
        if req.config.ipam_type.is_some() {
            failures.check("IPAM GC", delegate::ipam(req, Command::Gc).map(|_| ()));
        }
        failures.finish()
    }
}

/// Deletes the host end of a veth whose container end could not be reached, if it is still there
/// and still a port of our bridge.
fn delete_stale_host_veth(name: &str, bridge: &str) -> anyhow::Result<()> {
    let mut host = Rtnl::open()?;
    let Some(link) = host.link_by_name(name)? else { return Ok(()) };
    let Some(br) = host.link_by_name(bridge)? else { return Ok(()) };
    if link.is_kind("veth") && link.master == Some(br.index) {
        host.delete_link(link.index).with_context(|| format!("deleting stale host veth {name}"))?;
    }
    Ok(())
}

fn main() {
    // IPAM of this suite runs in this process when the file in CNI_PATH is ours (cni::suite).
    cni::skel::run_with(Bridge, &[&host_local::HostLocal, &static_ipam::Static])
}
