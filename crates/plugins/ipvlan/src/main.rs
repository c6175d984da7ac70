//! `ipvlan`: the container's interface is an ipvlan of a host interface (`master`): it shares the
//! master's MAC, and the kernel switches by IP address (`l2`, the default: the slaves see the
//! master's broadcast domain; `l3` and `l3s`: routed through the master's namespace, no ARP).
//! Multus users run it where the uplink allows one MAC per port.
//!
//! ADD reads top to bottom: validate, decide the master (configured; else prevResult's single
//! interface when chained; else the device of the default route), find it, create the ipvlan
//! straight into the container under a temporary name and rename it there, addresses (IPAM, or
//! prevResult's when `ipam` is empty), ARP/ND notifications, configuration, report. Every step
//! registers its undo with a [`Rollback`]; the reference leaves the link behind when IPAM fails.
//!
//! `l3` and `l3s` need addresses (no ARP means nothing works without them): without IPAM or
//! prevResult addresses they are refused before anything is created. In `l2` mode the
//! interface may be L2 only. DEL never resolves the master (the reference resolves the default
//! route and fails on a host without one): it removes the interface and releases the
//! allocation, each tried whatever the other did.

mod config;

use anyhow::Context;
use cni::{CniResult, Command, Plugin, Request, Rollback, delegate, fault};
use config::{IpvlanConf, mode_name};
use netkit::iface::{self, Dad};
use netkit::sublink::{IpvlanMode, SubKind, SubLink, find_master, master_handle};
use netkit::{Family, NetNs, Rtnl, sysctl, tempname};
use std::os::fd::AsFd;

struct Ipvlan;

/// The prefix of the name the link has between its creation in the container and its rename.
const TEMP_PREFIX: &str = "ipv";

/// The device of the first default route in the main table of `rtnl`'s namespace.
fn default_route_interface(rtnl: &mut Rtnl) -> anyhow::Result<String> {
    for family in [Family::V4, Family::V6] {
        for route in rtnl.routes(family)? {
            if route.dst.prefix() == 0
                && route.table == Some(netkit::route::MAIN_TABLE)
                && let Some(link) = route.oif.map(|i| rtnl.link_by_index(i)).transpose()?.flatten()
            {
                return Ok(link.name);
            }
        }
    }
    Err(cni::Error::config("no default route interface found: set \"master\"").into())
}

/// The master's name: configured, else prevResult's single named interface, else the default
/// route's device (in the container with `linkInContainer`).
fn master_name(req: &Request, conf: &IpvlanConf, at_master: &mut Rtnl) -> anyhow::Result<String> {
    if !conf.master.is_empty() {
        return Ok(conf.master.clone());
    }
    match &req.config.prev_result {
        Some(prev) => match prev.interfaces.as_slice() {
            [only] if !only.name.is_empty() => Ok(only.name.clone()),
            _ => Err(cni::Error::config("chained master failure. PrevResult lacks a single named interface").into()),
        },
        None => default_route_interface(at_master),
    }
}

impl Ipvlan {
    fn add_attachment<'a>(
        &self,
        req: &'a Request,
        conf: &IpvlanConf,
        container: &'a NetNs,
        undo: &mut Rollback<'a>,
    ) -> anyhow::Result<CniResult> {
        let ifname = req.env.ifname.as_str();
        // Addresses from IPAM, or, with `ipam` empty, those of the previous plugin.
        let reused = req.config.prev_result.as_ref().filter(|p| req.config.ipam_type.is_none() && !p.ips.is_empty());
        if conf.mode != IpvlanMode::L2 && req.config.ipam_type.is_none() && reused.is_none() {
            return Err(cni::Error::config(format!(
                "ipvlan mode {} needs addresses: configure ipam, or chain it after a plugin whose result has IPs",
                mode_name(conf.mode)
            ))
            .into());
        }
        let mut inside = Rtnl::open_in(container)?;
        if inside.link_by_name(ifname)?.is_some() {
            anyhow::bail!("interface {ifname:?} already exists in the container");
        }

        let mut at_master = master_handle(container, conf.link_in_container)?;
        let master_name = master_name(req, conf, &mut at_master)?;
        let master = find_master(&mut at_master, &master_name, conf.mtu)?;
        let temporary = tempname::temporary_name(TEMP_PREFIX);
        let link = SubLink {
            name: &temporary,
            kind: SubKind::Ipvlan { mode: conf.mode },
            master: Some(master.index),
            netns: (!conf.link_in_container).then(|| container.as_fd()),
            mtu: conf.mtu,
        };
        at_master.create_sublink(&link).map_err(|e| match e.errno() {
            Some(nix::libc::EOPNOTSUPP) => {
                anyhow::anyhow!("failed to create ipvlan: the kernel has no ipvlan link type")
            }
            _ => anyhow::Error::new(e).context("failed to create ipvlan"),
        })?;
        let created = inside.link_by_name(&temporary)?.context("the new ipvlan link vanished")?;
        let index = created.index;
        undo.push(format!("ipvlan link {ifname}"), move || tempname::delete_created_link(container, index, "ipvlan"));
        fault::point("ipvlan:before-rename")?;
        inside.rename(index, ifname).with_context(|| format!("failed to rename ipvlan to {ifname:?}"))?;
        fault::point("ipvlan:link-created")?;

        let addresses = match reused {
            Some(prev) => prev.clone(),
            None => delegate::ipam_add(req, undo)?,
        };
        fault::point("ipvlan:ipam-added")?;
        let mut result = req.container_result(addresses, created.mac_string());
        container.run(|| -> anyhow::Result<()> {
            // The neighbours learn the new address at once (the MAC is the master's, shared).
            let _ = sysctl::write(&format!("net/ipv4/conf/{ifname}/arp_notify"), "1");
            let _ = sysctl::write(&format!("net/ipv6/conf/{ifname}/ndisc_notify"), "1");
            iface::configure_interface(&mut Rtnl::open()?, ifname, &result, Dad::Enabled)
        })??;
        // The reference reports the config's dns, whatever IPAM said.
        result.dns = req.config.dns.clone();
        Ok(result)
    }
}

impl Plugin for Ipvlan {
    fn name(&self) -> &'static str {
        "ipvlan"
    }

    fn add(&self, req: &Request) -> anyhow::Result<CniResult> {
        let conf = IpvlanConf::parse(req)?;
        let container = NetNs::open(&req.env.netns)?;
        Rollback::all_or_nothing("ipvlan", |undo| self.add_attachment(req, &conf, &container, undo))
    }

    fn del(&self, req: &Request) -> anyhow::Result<()> {
        // Nothing of the config is needed but ipam (the master may be gone, the keys changed).
        delegate::del_interface_with_ipam(req, || {
            tempname::delete_container_link(&req.env.netns, &req.env.ifname, "ipvlan", Some(TEMP_PREFIX)).map(drop)
        })
    }

    fn check(&self, req: &Request) -> anyhow::Result<()> {
        let conf = IpvlanConf::parse(req)?;
        let container = NetNs::open(&req.env.netns)?;
        delegate::ipam_if_configured(req, Command::Check)?;
        let prev = req.config.prev_result.as_ref().context("Required prevResult missing")?;
        let ifname = req.env.ifname.as_str();
        let listed = req.container_interface(prev)?.1;
        if !conf.master.is_empty() {
            let mut at_master = master_handle(&container, conf.link_in_container)?;
            at_master
                .link_by_name(&conf.master)?
                .with_context(|| format!("failed to lookup master {:?}", conf.master))?;
        }
        container.run(|| -> anyhow::Result<()> {
            let mut rtnl = Rtnl::open()?;
            let link = rtnl
                .link_by_name(ifname)?
                .with_context(|| format!("Container Interface name in prevResult: {ifname} not found"))?;
            let Some(SubKind::Ipvlan { mode }) = rtnl.sublink_kind(link.index)? else {
                anyhow::bail!("Error: Container interface {ifname} not of type ipvlan");
            };
            anyhow::ensure!(
                mode == conf.mode,
                "Container IPVlan mode {} does not match expected value: {}",
                mode_name(mode),
                mode_name(conf.mode)
            );
            anyhow::ensure!(
                listed.mac.is_empty() || listed.mac == link.mac_string(),
                "Interface {ifname} Mac {} doesn't match container Mac: {}",
                listed.mac,
                link.mac_string()
            );
            iface::check_addresses(&mut rtnl, ifname, prev)?;
            iface::check_routes(&mut rtnl, prev)
        })?
    }

    fn status(&self, req: &Request) -> anyhow::Result<()> {
        IpvlanConf::parse(req)?;
        delegate::ipam_if_configured(req, Command::Status)
    }
}

fn main() {
    // IPAM of this suite runs in this process when the file in CNI_PATH is ours (cni::suite).
    cni::skel::run_with(Ipvlan, &[&host_local::HostLocal, &static_ipam::Static])
}
