//! `macvlan`: gives the container a MAC address of its own on an uplink of the host (the
//! "master"), so it sits on the physical segment next to the host, with or without addresses.
//! Multus users attach pods to secondary networks this way (with `static`, `host-local` or
//! `dhcp` for IPAM).
//!
//! ADD reads top to bottom: validate (config, then the master and its MTU), create the macvlan
//! directly in the container's namespace under a temporary name and rename it there (so no name
//! in the host can clash with `CNI_IFNAME`, and no host-side link ever exists), IPAM, addresses
//! and routes, report. Every step registers its undo with a [`Rollback`], so a failed or
//! panicking ADD leaves neither the link nor an IPAM allocation.
//!
//! The result's `dns` is the config's when it says anything, else what IPAM gave (the reference
//! reports the config's always, so `static`'s `dns` never reached the runtime).
//!
//! DEL needs no master and no prevResult: the interface is found by its name in the container
//! (gone, or the namespace gone, is success; a macvlan under one of our temporary names, left by
//! an ADD killed before its rename, goes too), and the IPAM allocation is released (dhcp's
//! before the interface goes, so its RELEASE can leave from it; `cni::delegate::
//! del_interface_and_ipam`); every step is tried.
//!
//! By kernel design the container cannot reach the host through its own master (the host's
//! address lives on the lower device); every other station on the segment it can.

mod config;

use anyhow::Context;
use cni::{CniResult, Code, Command, Error, Plugin, Request, Rollback, delegate};
use config::MacvlanConf;
use netkit::iface::{self, Dad};
use netkit::macvlan::{Macvlan, Mode};
use netkit::sublink::{find_master, master_handle};
use netkit::{Link, NetNs, Rtnl, sysctl, tempname};
use std::os::fd::AsFd;

struct MacvlanPlugin;

/// The prefix of our temporary link names.
const TEMP_PREFIX: &str = "mv";

/// The master's name: as configured, or the device of the default route.
fn master_name(lower: &mut Rtnl, conf: &MacvlanConf) -> anyhow::Result<String> {
    match &conf.master {
        Some(name) => Ok(name.clone()),
        None => {
            let index = lower.default_route_link()?.ok_or_else(|| {
                Error::config("no default route interface found: set \"master\" to the uplink to use")
            })?;
            Ok(lower.link_by_index(index)?.context("the default route's interface vanished")?.name)
        }
    }
}

/// Creates the macvlan in the container under a temporary name; returns it as seen there.
fn create_link(
    lower: &mut Rtnl,
    container_rtnl: &mut Rtnl,
    container: &NetNs,
    conf: &MacvlanConf,
    master: &Link,
) -> anyhow::Result<Link> {
    for _ in 0..10 {
        let name = tempname::temporary_name(TEMP_PREFIX);
        let spec = Macvlan {
            name: &name,
            parent: master.index,
            mode: conf.mode,
            mtu: conf.mtu,
            mac: conf.mac,
            bc_queue_len: conf.bc_queue_len,
            // With linkInContainer the handle is the container's already.
            ns: (!conf.link_in_container).then(|| container.as_fd()),
        };
        match lower.create_macvlan(&spec) {
            Ok(()) => {
                return container_rtnl.link_by_name(&name)?.with_context(|| format!("new macvlan {name} not found"));
            }
            Err(e) if e.is(nix::libc::EEXIST) && container_rtnl.link_by_name(&name)?.is_some() => continue,
            Err(e) if e.is(nix::libc::EINVAL) || e.is(nix::libc::EOPNOTSUPP) => {
                return Err(Error::config(format!(
                    "failed to create macvlan on master {:?}: {e} (a macvlan needs an Ethernet master)",
                    master.name
                ))
                .into());
            }
            Err(e) if e.is(nix::libc::EBUSY) && conf.mode == Mode::Passthru => {
                anyhow::bail!("failed to create macvlan: master {:?} already has a passthru macvlan ({e})", master.name)
            }
            Err(e) => return Err(e).context("failed to create macvlan"),
        }
    }
    anyhow::bail!("failed to find a free temporary name for the macvlan")
}

impl MacvlanPlugin {
    fn add_attachment<'a>(
        &self,
        req: &'a Request,
        conf: &MacvlanConf,
        container: &'a NetNs,
        undo: &mut Rollback<'a>,
    ) -> anyhow::Result<CniResult> {
        let ifname = req.env.ifname.as_str();
        let mut lower = master_handle(container, conf.link_in_container)?;
        let master_name = master_name(&mut lower, conf)?;
        let master = find_master(&mut lower, &master_name, conf.mtu)?;
        let mut ctr = Rtnl::open_in(container)?;
        if ctr.link_by_name(ifname)?.is_some() {
            anyhow::bail!("interface {ifname:?} already exists in the container");
        }

        let link = create_link(&mut lower, &mut ctr, container, conf, &master)?;
        let index = link.index;
        undo.push(format!("macvlan {ifname}"), move || tempname::delete_created_link(container, index, "macvlan"));
        // A kill from here to the rename leaves the temporary name: DEL looks for those too.
        cni::trace::mark("temporary link created");
        ctr.rename(index, ifname).with_context(|| format!("failed to rename macvlan to {ifname:?}"))?;
        cni::trace::mark("link created");

        // Addresses from IPAM, if any; the MAC is known once the link is configured.
        let mut result = req.container_result(delegate::ipam_add(req, undo)?, String::new());
        if req.config.ipam_type.is_some() {
            cni::trace::mark("ipam done");
        }
        let configured = container.run(|| -> anyhow::Result<Link> {
            let mut rtnl = Rtnl::open()?;
            if result.ips.is_empty() {
                rtnl.set_up(index).with_context(|| format!("failed to set {ifname:?} UP"))?;
            } else {
                // Neighbours learn the new MAC at once (a reused address had another one).
                let _ = sysctl::write(&format!("net/ipv4/conf/{ifname}/arp_notify"), "1");
                let _ = sysctl::write(&format!("net/ipv6/conf/{ifname}/ndisc_notify"), "1");
                // The segment is shared with other hosts: IPv6 duplicate detection stays on.
                iface::configure_interface(&mut rtnl, ifname, &result, Dad::Enabled)?;
            }
            rtnl.link_by_index(index)?.with_context(|| format!("{ifname} vanished"))
        })??;
        result.interfaces[0].mac = configured.mac_string();
        cni::trace::mark("configured");

        // The config's dns wins over IPAM's when it says anything.
        if !req.config.dns.is_empty() {
            result.dns = req.config.dns.clone();
        }
        Ok(result)
    }
}

impl Plugin for MacvlanPlugin {
    fn name(&self) -> &'static str {
        "macvlan"
    }

    fn add(&self, req: &Request) -> anyhow::Result<CniResult> {
        let conf = MacvlanConf::parse(req)?;
        let container = NetNs::open(&req.env.netns)?;
        Rollback::all_or_nothing("macvlan", |undo| self.add_attachment(req, &conf, &container, undo))
    }

    fn del(&self, req: &Request) -> anyhow::Result<()> {
        // Nothing of the config is needed but ipam (the master may be gone, the keys changed).
        delegate::del_interface_with_ipam(req, || {
            tempname::delete_container_link(&req.env.netns, &req.env.ifname, "macvlan", Some(TEMP_PREFIX)).map(drop)
        })
    }

    fn check(&self, req: &Request) -> anyhow::Result<()> {
        let conf = MacvlanConf::parse(req)?;
        let container = NetNs::open(&req.env.netns)?;
        delegate::ipam_if_configured(req, Command::Check)?;
        let prev = req.config.prev_result.as_ref().context("required prevResult missing")?;
        let ifname = req.env.ifname.as_str();
        let listed = req.container_interface(prev)?.1;
        let mut lower = master_handle(&container, conf.link_in_container)?;
        let master_name = master_name(&mut lower, &conf)?;
        find_master(&mut lower, &master_name, None)?;

        container.run(|| -> anyhow::Result<()> {
            let mut rtnl = Rtnl::open()?;
            let link = rtnl
                .link_by_name(ifname)?
                .with_context(|| format!("container Interface name in prevResult: {ifname} not found"))?;
            let mode = rtnl.macvlan_mode(link.index)?;
            let Some(mode) = mode.filter(|_| link.is_kind("macvlan")) else {
                anyhow::bail!("error: Container interface {ifname} not of type macvlan");
            };
            anyhow::ensure!(
                mode == conf.mode,
                "container macvlan mode {} does not match expected value: {}",
                mode.as_str(),
                conf.mode.as_str()
            );
            anyhow::ensure!(
                listed.mac.is_empty() || listed.mac == link.mac_string(),
                "interface {ifname} Mac {} doesn't match container Mac: {}",
                listed.mac,
                link.mac_string()
            );
            iface::check_addresses(&mut rtnl, ifname, prev)?;
            iface::check_routes(&mut rtnl, prev)
        })?
    }

    fn status(&self, req: &Request) -> anyhow::Result<()> {
        let conf = MacvlanConf::parse(req)?;
        // A master named in the config must exist for an ADD to work (the reference leaves
        // this as a TODO); one in the container's namespace cannot be known before the ADD.
        if let Some(name) = conf.master.as_deref().filter(|_| !conf.link_in_container)
            && Rtnl::open()?.link_by_name(name)?.is_none()
        {
            return Err(Error::new(Code::NotAvailable, format!("master {name:?} does not exist")).into());
        }
        delegate::ipam_if_configured(req, Command::Status)
    }

    fn gc(&self, req: &Request) -> anyhow::Result<()> {
        // Nothing of ours outlives an interface; the spec passes GC on to the IPAM plugin.
        delegate::ipam_if_configured(req, Command::Gc)
    }
}

fn main() {
    // IPAM of this suite runs in this process when the file in CNI_PATH is ours (cni::suite).
    cni::skel::run_with(MacvlanPlugin, &[&host_local::HostLocal, &static_ipam::Static])
}
