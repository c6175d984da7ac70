//! `ptp`: a veth pair per container and no bridge. The container routes everything through its
//! gateway address, which the host end of its veth answers for; the host reaches the container
//! through a /32 (/128) route on that veth. kind's nodes run it (with host-local and portmap).
//!
//! ADD reads top to bottom: validate, IPAM, forwarding, veth, container side, host side,
//! masquerade, report. Every step registers its undo with a [`Rollback`], so a failed or
//! panicking ADD leaves nothing, the IPAM allocation included. DEL removes the masquerade by the
//! attachment's identity first (the reference leaks it when the netns or the link is gone), then
//! the interface, then the allocation; whatever is already gone is success, and every step is
//! tried.
//!
//! The container side, as the reference sets it: the IPAM address with its prefix, the kernel's
//! prefix route replaced by `gw/32 dev eth0 scope link src IP` and `subnet via gw src IP`, so every
//! packet, even to a neighbour in the same subnet, goes through the host. IPv6 addresses skip
//! duplicate address detection (no other node shares this link), so nothing waits for it.

mod config;

use anyhow::Context;
use cni::{CniResult, Command, Failures, Interface, Plugin, Request, Rollback, delegate};
use config::{MasqBackend, PtpConf};
use firewall::bridge::{Attachment, Known};
use firewall::{Identity, Nft, iptables};
use ipnetwork::IpNetwork;
use netkit::iface::{self, Dad};
use netkit::{Family, NetNs, RouteSpec, Rtnl, VethPair, sysctl, tempname};
use std::net::IpAddr;
use std::os::fd::AsFd;

struct Ptp;

fn identity(req: &Request) -> Identity {
    Identity::new(&req.config.name, &req.env.container_id, &req.env.ifname)
}

/// `veth` and 8 random hex digits, as the reference names host ends (NetworkManager ignores
/// `veth*`).
fn random_veth_name() -> String {
    let mut bytes = [0u8; 4];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer it is given.
    let n = unsafe { nix::libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        bytes = (nanos.subsec_nanos() ^ std::process::id()).to_ne_bytes();
    }
    format!("veth{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Creates the pair with the container end, `ifname`, born in `container`, and the host end under
/// a fresh random name. Returns the host end's name.
fn create_veth(host: &mut Rtnl, container: &NetNs, ifname: &str, mtu: Option<u32>) -> anyhow::Result<String> {
    for _ in 0..10 {
        let name = random_veth_name();
        let pair = VethPair { name: &name, peer_name: ifname, peer_ns: Some(container.as_fd()), mtu, peer_mac: None };
        match host.create_veth(&pair) {
            Ok(()) => return Ok(name),
            // EEXIST names either end; only a clash of our random host name is worth a retry.
            Err(e) if e.is(nix::libc::EEXIST) && host.link_by_name(&name)?.is_some() => continue,
            Err(e) if e.is(nix::libc::EEXIST) => {
                anyhow::bail!("container veth name {ifname:?} already exists in the container")
            }
            Err(e) => return Err(e).with_context(|| format!("creating veth pair {name}/{ifname}")),
        }
    }
    anyhow::bail!("failed to find a unique veth name")
}

/// The address as a host route: `/32` or `/128`.
fn host_net(ip: IpAddr) -> IpNetwork {
    IpNetwork::new(ip, if ip.is_ipv4() { 32 } else { 128 }).expect("full-length prefix")
}

fn tolerate_exists(r: Result<(), netkit::NlError>) -> Result<(), netkit::NlError> {
    match r {
        Err(e) if e.is(nix::libc::EEXIST) => Ok(()),
        other => other,
    }
}

/// Inside the container: the addresses, the IPAM routes, and the kernel's prefix routes replaced
/// by routes through the gateway (the reference's `setupContainerVeth`).
fn configure_container(ifname: &str, result: &CniResult) -> anyhow::Result<()> {
    // The link-local address must not sit tentative either (IPv6 compiled out is fine).
    let _ = sysctl::write(&format!("net/ipv6/conf/{ifname}/accept_dad"), "0");
    let mut rtnl = Rtnl::open()?;
    iface::configure_interface(&mut rtnl, ifname, result, Dad::Skipped)?;
    let link = rtnl.link_by_name(ifname)?.with_context(|| format!("{ifname} vanished"))?;
    for ip in &result.ips {
        let gw = ip.gateway.context("every address needs a gateway")?;
        let subnet = IpNetwork::new(ip.address.network(), ip.address.prefix()).expect("same prefix");
        match rtnl.del_prefix_route(link.index, subnet) {
            // Two addresses of one subnet share the route; the first deletion took it.
            Err(e) if e.is(nix::libc::ESRCH) => {}
            other => other.with_context(|| format!("deleting the prefix route {subnet} of {ifname}"))?,
        }
        let mut to_gateway = RouteSpec::new(host_net(gw), None, Some(link.index));
        to_gateway.src = Some(ip.address.ip());
        tolerate_exists(rtnl.add_route(&to_gateway)).with_context(|| format!("adding route {gw} dev {ifname}"))?;
        let mut via_gateway = RouteSpec::new(subnet, Some(gw), Some(link.index));
        via_gateway.src = Some(ip.address.ip());
        tolerate_exists(rtnl.add_route(&via_gateway))
            .with_context(|| format!("adding route {subnet} via {gw} dev {ifname}"))?;
    }
    Ok(())
}

/// On the host end: up, the gateway of every address (as /32 or /128, so no subnet route
/// competes with other containers'), and a host route to each container address.
fn configure_host(host: &mut Rtnl, host_veth: &str, result: &CniResult) -> anyhow::Result<netkit::Link> {
    let link = host.link_by_name(host_veth)?.with_context(|| format!("host veth {host_veth} vanished"))?;
    // The gateway's IPv6 address must not wait for duplicate address detection either.
    let _ = sysctl::write(&format!("net/ipv6/conf/{host_veth}/accept_dad"), "0");
    host.set_up(link.index).with_context(|| format!("setting {host_veth} up"))?;
    for ip in &result.ips {
        let gw = ip.gateway.context("every address needs a gateway")?;
        tolerate_exists(host.add_address(link.index, host_net(gw), true))
            .with_context(|| format!("failed to add IP addr {} to veth {host_veth}", host_net(gw)))?;
        let route = RouteSpec::new(host_net(ip.address.ip()), None, Some(link.index));
        tolerate_exists(host.add_route(&route)).context("failed to add route on host")?;
    }
    Ok(host.link_by_index(link.index)?.unwrap_or(link))
}

fn install_masquerade(a: &Attachment, backend: MasqBackend) -> anyhow::Result<()> {
    match backend.resolve() {
        MasqBackend::Iptables => iptables::masq_add(&a.id.network, &a.id.container_id, &a.masquerade),
        _ => firewall::bridge::add(&Nft::locate()?, a),
    }
}

/// Removes the attachment's masquerade, whichever backend made it and whether ours or the
/// reference's (whose chains our iptables backend shares): found by identity, so neither a netns
/// nor a prevResult is needed. `nft` is `None` on a node without the nft program, where ADD could
/// not have made any (kind's node images may lack it): a DEL there must not fail for it.
fn remove_masquerade(nft: Option<&Nft>, id: &Identity, addresses: Vec<IpAddr>) -> anyhow::Result<()> {
    let mut failures = Failures::new();
    // Every probe on the one socket, kept open until DEL returns: any nfnetlink socket closed after
    // a deletion (portmap's, a moment ago) waits out an RCU grace period.
    failures.check("removing the reference plugin's entries", firewall::reference::bridge_del(nft, id));
    // Nothing of ours without the attachment's masquerade chain: a GET first, since a transaction
    // that fails for want of it waits out an RCU grace period (kind's nodes run ptp without
    // ipMasq; a node where the bridge plugin made the table would pay that on every DEL).
    let ours_possible = firewall::bridge::chains_present(nft, id).map(|(masq, _)| masq).unwrap_or(true);
    let removed = nft.filter(|_| ours_possible).map_or(Ok(()), |nft| {
        let known = Known { addresses, spoof_port: None };
        if !known.addresses.is_empty()
            && nft.apply(&firewall::bridge::del_batch(id, &known, true, false).to_json()).is_ok()
        {
            return Ok(());
        }
        firewall::bridge::del(nft, id, &Known::default(), true, false)
    });
    failures.check("removing nftables entries", removed);
    failures.finish()
}

impl Ptp {
    fn add_attachment<'a>(
        &self,
        req: &'a Request,
        conf: &PtpConf,
        container: &NetNs,
        undo: &mut Rollback<'a>,
    ) -> anyhow::Result<CniResult> {
        let ifname = req.env.ifname.as_str();
        if Rtnl::open_in(container)?.link_by_name(ifname)?.is_some() {
            anyhow::bail!("interface {ifname:?} already exists in the container");
        }

        // Addresses from IPAM; each must come with the gateway the routes go through.
        // (ADD's config requires ipam, so this is never the empty result of an L2-only attachment.)
        let mut result = delegate::ipam_add(req, undo)?;
        if let Some(ip) = result.ips.iter().find(|ip| ip.gateway.is_none()) {
            return Err(cni::Error::config(format!(
                "IPAM gave {} no gateway: ptp routes the container through it (host-local gives the subnet's first address unless told otherwise)",
                ip.address
            ))
            .into());
        }
        for family in [Family::V4, Family::V6] {
            if result.ips.iter().any(|ip| Family::of(&ip.address.ip()) == family) {
                match family {
                    Family::V4 => sysctl::write("net/ipv4/ip_forward", "1"),
                    Family::V6 => sysctl::write("net/ipv6/conf/all/forwarding", "1"),
                }
                .context("Could not enable IP forwarding")?;
            }
        }
        cni::trace::mark("ipam done");

        // The veth pair; the container end is born in the container.
        let mut host = Rtnl::open()?;
        let host_veth = create_veth(&mut host, container, ifname, conf.mtu)?;
        let name = host_veth.clone();
        undo.push(format!("host veth {host_veth}"), move || {
            let mut host = Rtnl::open()?;
            if let Some(link) = host.link_by_name(&name)? {
                host.delete_link(link.index)?;
            }
            Ok(())
        });
        cni::trace::mark("veth created");

        for ip in &mut result.ips {
            ip.interface = Some(1);
        }
        result.interfaces = vec![
            Interface { name: host_veth.clone(), ..Interface::default() },
            Interface { name: ifname.to_string(), sandbox: req.env.netns.clone(), ..Interface::default() },
        ];
        let container_link = container.run(|| -> anyhow::Result<netkit::Link> {
            configure_container(ifname, &result)?;
            Rtnl::open()?.link_by_name(ifname)?.with_context(|| format!("{ifname} vanished"))
        })??;
        result.interfaces[1].mac = container_link.mac_string();
        cni::trace::mark("container configured");

        let host_link = configure_host(&mut host, &host_veth, &result)?;
        result.interfaces[0].mac = host_link.mac_string();
        cni::trace::mark("host configured");

        if conf.ip_masq {
            let attachment = Attachment {
                id: identity(req),
                masquerade: result.ips.iter().map(|ip| ip.address).collect(),
                spoof_check: None,
                isolation: None,
            };
            // Registered first: the iptables backend's chain may be half made when it fails.
            let id = attachment.id.clone();
            let addresses: Vec<IpAddr> = result.ips.iter().map(|ip| ip.address.ip()).collect();
            undo.push("masquerade", move || remove_masquerade(Nft::locate().ok().as_ref(), &id, addresses));
            install_masquerade(&attachment, conf.masq_backend).context("setting up masquerade")?;
            cni::trace::mark("masquerade installed");
        }

        // The config's dns wins over IPAM's when it says anything.
        if !req.config.dns.is_empty() {
            result.dns = req.config.dns.clone();
        }
        Ok(result)
    }
}

impl Plugin for Ptp {
    fn name(&self) -> &'static str {
        "ptp"
    }

    fn add(&self, req: &Request) -> anyhow::Result<CniResult> {
        let conf = PtpConf::parse(req, true)?;
        let container = NetNs::open(&req.env.netns)?;
        let mut undo = Rollback::new("ptp");
        let result = self.add_attachment(req, &conf, &container, &mut undo)?;
        undo.commit();
        Ok(result)
    }

    fn del(&self, req: &Request) -> anyhow::Result<()> {
        let conf = PtpConf::parse(req, false)?;
        let prev = req.config.prev_result.as_ref();
        let mut failures = Failures::new();

        // Masquerade first and by identity, whatever ipMasq says now and whether or not the
        // netns, the link or a prevResult is left. The nftables socket stays open until DEL
        // returns, and is then released without waiting: closing it within an RCU grace period
        // of a deletion (ours, or portmap's a moment ago) waits out the rest of it.
        let addresses = prev.map(|p| p.ips.iter().map(|ip| ip.address.ip()).collect()).unwrap_or_default();
        let nft = Nft::locate().ok();
        // The iptables backend (asked for, or what no ipMasqBackend gives a node without `nft`):
        // an `iptables-restore` of a killed ADD may still be about to commit the masquerade
        // chain, which remove_masquerade's probes would not see yet; its lock tells when it is
        // done (see firewall::lock). Not on the nftables path: its DEL must not pay for it.
        let iptables_backend = match conf.masq_backend {
            MasqBackend::Iptables => true,
            MasqBackend::Auto => nft.is_none(),
            MasqBackend::Nftables => false,
        };
        let iptables = firewall::lock::IptablesLock::acquire_if(iptables_backend);
        let removed = iptables.and_then(|_held| remove_masquerade(nft.as_ref(), &identity(req), addresses));
        failures.check("removing masquerade", removed);
        cni::trace::mark("masquerade removed");

        // Deleting the container end removes the pair, and with it the host routes and gateway
        // addresses. Without the namespace, a host end that is still there goes instead.
        delegate::del_interface_and_ipam(req, &mut failures, || {
            // Returns once the pair is gone from both namespaces, routes and addresses with it,
            // without waiting for the kernel to free it (netkit's delete_link_detached).
            let removed = tempname::delete_container_link(&req.env.netns, &req.env.ifname, "veth", None).and_then(
                |in_container| match (in_container, prev) {
                    (false, Some(prev)) => delete_stale_host_veth(prev),
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
        let conf = PtpConf::parse(req, true)?;
        let container = NetNs::open(&req.env.netns)?;
        delegate::ipam(req, Command::Check)?;
        let prev = req.config.prev_result.as_ref().context("ptp: Required prevResult missing")?;
        let ifname = req.env.ifname.as_str();
        let listed = req.container_interface(prev)?.1;

        let container_link = container.run(|| -> anyhow::Result<netkit::Link> {
            let mut rtnl = Rtnl::open()?;
            let link = rtnl
                .link_by_name(ifname)?
                .with_context(|| format!("ptp: Container Interface name in prevResult: {ifname} not found"))?;
            anyhow::ensure!(link.is_kind("veth"), "Error: Container interface {ifname} not of type veth/p2p");
            anyhow::ensure!(
                listed.mac.is_empty() || listed.mac == link.mac_string(),
                "ptp: Interface {ifname} Mac {} doesn't match container Mac: {}",
                listed.mac,
                link.mac_string()
            );
            iface::check_addresses(&mut rtnl, ifname, prev)?;
            iface::check_routes(&mut rtnl, prev)?;
            // ptp's own routes (beyond the reference): the gateway on the link, the subnet via it.
            for ip in &prev.ips {
                let Some(gw) = ip.gateway else { continue };
                let subnet = IpNetwork::new(ip.address.network(), ip.address.prefix()).expect("same prefix");
                let routes = rtnl.routes(Family::of(&gw))?;
                // In any table: sbr, chained after ptp, moves them into a table of their own.
                let on_link = |r: &RouteSpec| r.oif == Some(link.index);
                anyhow::ensure!(
                    routes.iter().any(|r| on_link(r) && r.dst == host_net(gw) && r.gw.is_none()),
                    "route to gateway {gw} dev {ifname} not found"
                );
                anyhow::ensure!(
                    routes.iter().any(|r| on_link(r) && r.dst == subnet && r.gw == Some(gw)),
                    "route {subnet} via {gw} dev {ifname} not found"
                );
            }
            Ok(link)
        })??;

        // The host end (beyond the reference): the container interface's own peer, holding every
        // gateway and routing every container address.
        let mut host = Rtnl::open()?;
        let peer = container_link.peer_index.filter(|_| container_link.link_netnsid.is_some());
        let host_veth = match peer {
            Some(index) => host.link_by_index(index)?,
            None => None,
        }
        .with_context(|| format!("the host end of container interface {ifname} was not found"))?;
        let present = host.addresses(Some(host_veth.index), None)?;
        for ip in &prev.ips {
            if let Some(gw) = ip.gateway {
                anyhow::ensure!(
                    present.iter().any(|a| a.net == host_net(gw)),
                    "gateway {gw} is not on host veth {}",
                    host_veth.name
                );
            }
            let dst = host_net(ip.address.ip());
            let routed = host
                .routes(Family::of(&dst.ip()))?
                .iter()
                .any(|r| r.dst == dst && r.oif == Some(host_veth.index) && r.gw.is_none());
            anyhow::ensure!(routed, "no host route to {dst} via {}", host_veth.name);
        }

        if conf.ip_masq {
            let addresses: Vec<IpNetwork> = prev.ips.iter().map(|ip| ip.address).collect();
            match conf.masq_backend.resolve() {
                MasqBackend::Iptables => {
                    iptables::masq_check(&req.config.name, &req.env.container_id, &addresses)?;
                }
                _ => {
                    let a = Attachment { id: identity(req), masquerade: addresses, spoof_check: None, isolation: None };
                    firewall::bridge::check(&Nft::locate()?, &a)?;
                }
            }
        }
        Ok(())
    }

    fn status(&self, req: &Request) -> anyhow::Result<()> {
        let conf = PtpConf::parse(req, true)?;
        let unavailable = |msg: String| anyhow::Error::new(cni::Error::new(cni::Code::NotAvailable, msg));
        if conf.ip_masq {
            let ready = match conf.masq_backend.resolve() {
                MasqBackend::Iptables => iptables::Iptables::locate(false).map(|_| ()),
                _ => Nft::locate().map(|_| ()),
            };
            if let Err(e) = ready {
                return Err(unavailable(format!("{e:#}")));
            }
        }
        delegate::ipam(req, Command::Status)?;
        Ok(())
    }

    fn gc(&self, req: &Request) -> anyhow::Result<()> {
        let mut failures = Failures::new();
        if let Some(valid) = &req.config.valid_attachments {
            firewall::bridge::gc_attachments(&req.config.name, valid, &mut failures);
        }
        // The spec requires GC to be passed on to the delegated IPAM plugin.
        if req.config.ipam_type.is_some() {
            failures.check("IPAM GC", delegate::ipam(req, Command::Gc).map(|_| ()));
        }
        failures.finish()
    }
}

/// Deletes the host end named in prevResult when the container end could not be reached (the
/// namespace outlived its path, or is being dismantled: the kernel removes the pair a moment
/// later, and a DEL that returns before then must not leave it to chance). Only a veth with the
/// MAC prevResult gave it, or, without one, whose peer is in another namespace.
fn delete_stale_host_veth(prev: &CniResult) -> anyhow::Result<()> {
    let mut host = Rtnl::open()?;
    for listed in prev.interfaces.iter().filter(|i| i.sandbox.is_empty() && !i.name.is_empty()) {
        let Some(link) = host.link_by_name(&listed.name)? else { continue };
        let ours = if listed.mac.is_empty() { link.link_netnsid.is_some() } else { listed.mac == link.mac_string() };
        if link.is_kind("veth") && ours {
            match host.delete_link(link.index) {
                // The kernel's own teardown got there first.
                Err(e) if e.is(nix::libc::ENODEV) => {}
                other => other.with_context(|| format!("deleting stale host veth {}", listed.name))?,
            }
        }
    }
    Ok(())
}

fn main() {
    // IPAM of this suite runs in this process when the file in CNI_PATH is ours (cni::suite).
    cni::skel::run_with(Ptp, &[&host_local::HostLocal, &static_ipam::Static])
}
