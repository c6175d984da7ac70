//! `host-device`: gives a container an existing host interface (a NIC, an SR-IOV VF, a macvlan)
//! instead of a veth into a bridge, and gives it back on DEL.
//!
//! ADD reads top to bottom: validate, find the interface, move it into the container under
//! `CNI_IFNAME` (remembering its host name), IPAM, addresses and routes, report. A failure undoes
//! the steps before it, so the interface is back in the host with its name and the allocation is
//! released. DEL returns the interface under its original name and releases the allocation; a
//! missing namespace or interface is success, and the allocation is released all the same.

mod config;
mod device;
mod sysfs;

use anyhow::Context;
use cni::{CniResult, Code, Command, Interface, Plugin, Request, delegate};
use config::{HostDeviceConf, Selector};
use device::MovedOut;
use netkit::iface::{self, Dad};
use netkit::{NetNs, Rtnl};
use sysfs::Sysfs;

struct HostDevice;

/// What a failed ADD must take back, newest last.
enum Undo {
    /// The interface is in the container as `CNI_IFNAME`; it was up in the host if `was_up`.
    Device {
        host_name: String,
        was_up: bool,
    },
    Ipam,
}

fn undo(req: &Request, container: &NetNs, done: Vec<Undo>) {
    for step in done.into_iter().rev() {
        let outcome = match step {
            Undo::Device { host_name, was_up } => (|| -> anyhow::Result<()> {
                device::move_out(&NetNs::current()?, container, &req.env.ifname)?;
                let mut host = Rtnl::open()?;
                if was_up && let Some(link) = host.link_by_name(&host_name)? {
                    host.set_up(link.index)?;
                }
                Ok(())
            })(),
            Undo::Ipam => delegate::ipam(req, Command::Del).map(|_| ()),
        };
        if let Err(e) = outcome {
            eprintln!("host-device: undoing a failed ADD: {e:#}");
        }
    }
}

/// The selector and whether it names a PCI device bound to a userspace (DPDK) driver.
fn select(conf: &HostDeviceConf, sysfs: &Sysfs) -> Result<(Selector, bool), cni::Error> {
    let selector = sysfs.selector(conf)?;
    let userspace = sysfs.userspace_driver(&selector).is_some();
    Ok((selector, userspace))
}

impl HostDevice {
    fn attach(
        &self,
        req: &Request,
        conf: &HostDeviceConf,
        container: &NetNs,
        done: &mut Vec<Undo>,
    ) -> anyhow::Result<CniResult> {
        let ifname = req.env.ifname.as_str();
        let sysfs = Sysfs::system();
        let (selector, userspace) = select(conf, &sysfs)?;
        let mut interface =
            Interface { name: ifname.to_string(), sandbox: req.env.netns.clone(), ..Interface::default() };
        if let Selector::Pci(id) = &selector {
            interface.pci_id = id.clone();
        }

        // A DPDK-bound device has no kernel interface: it is reported, not moved.
        if !userspace {
            let mut host = Rtnl::open()?;
            let (host_dev, host_name) = device::find_host_device(&mut host, &sysfs, &selector)?;
            if interface.pci_id.is_empty() {
                interface.pci_id = sysfs.pci_address_of(&host_dev.name).unwrap_or_default();
            }
            let moved = device::move_in(&mut host, &host_dev, &host_name, container, ifname)?;
            done.push(Undo::Device { host_name, was_up: host_dev.up });
            interface.mac = moved.mac_string();
        }

        // Addresses from IPAM, on the moved interface (index 0 of our part of the result).
        let mut ours = CniResult { interfaces: vec![interface], ..CniResult::default() };
        if req.config.ipam_type.is_some() {
            let allocated = delegate::ipam(req, Command::Add)?.context("IPAM returned no result")?;
            done.push(Undo::Ipam);
            anyhow::ensure!(!allocated.ips.is_empty(), "IPAM plugin returned missing IP config");
            ours.ips = allocated.ips.into_iter().map(|ip| cni::IpConfig { interface: Some(0), ..ip }).collect();
            ours.routes = allocated.routes;
            ours.dns = allocated.dns;
            if !userspace {
                // The interface may sit on a real segment with other hosts: DAD stays on.
                container.run(|| iface::configure_interface(&mut Rtnl::open()?, ifname, &ours, Dad::Enabled))??;
            }
        }
        if !req.config.dns.is_empty() {
            ours.dns = req.config.dns.clone();
        }
        Ok(chain(req.config.prev_result.clone(), ours))
    }
}

/// Appends our interface, addresses and routes to the previous plugin's result, if there is one
/// (the reference drops it; the spec says a plugin passes it on).
fn chain(prev: Option<CniResult>, ours: CniResult) -> CniResult {
    let Some(mut result) = prev else { return ours };
    let offset = result.interfaces.len();
    result.interfaces.extend(ours.interfaces);
    result
        .ips
        .extend(ours.ips.into_iter().map(|ip| cni::IpConfig { interface: ip.interface.map(|i| i + offset), ..ip }));
    result.routes.extend(ours.routes);
    if !ours.dns.is_empty() {
        result.dns = ours.dns;
    }
    result
}

impl Plugin for HostDevice {
    fn name(&self) -> &'static str {
        "host-device"
    }

    fn add(&self, req: &Request) -> anyhow::Result<CniResult> {
        let conf = HostDeviceConf::parse(req)?;
        let container = NetNs::open(&req.env.netns)?;
        let mut done = Vec::new();
        let result = self.attach(req, &conf, &container, &mut done);
        if result.is_err() {
            undo(req, &container, done);
        }
        result
    }

    fn del(&self, req: &Request) -> anyhow::Result<()> {
        let conf = HostDeviceConf::parse(req)?;
        // A device that vanished from sysfs since ADD must not block DEL: it is then not DPDK-bound.
        let userspace = select(&conf, &Sysfs::system()).is_ok_and(|(_, userspace)| userspace);
        let mut failures: Vec<anyhow::Error> = Vec::new();

        if !userspace {
            let returned = match NetNs::open_if_exists(&req.env.netns)? {
                Some(container) => device::move_out(&NetNs::current()?, &container, &req.env.ifname),
                None => Ok(MovedOut::Absent),
            };
            match returned {
                Ok(MovedOut::Returned(_)) => {}
                // The namespace went without a DEL: a physical interface came back to the host
                // under its container name. It gets its own name back.
                Ok(MovedOut::Absent) => {
                    if let Some(name) = &conf.device
                        && let Err(e) =
                            Rtnl::open().map_err(Into::into).and_then(|mut h| device::reclaim_returned(&mut h, name))
                    {
                        failures.push(e);
                    }
                }
                Err(e) => failures.push(e),
            }
        }

        // Released in every case, unlike the reference, which skips it without a netns.
        if req.config.ipam_type.is_some()
            && let Err(e) = delegate::ipam(req, Command::Del)
        {
            failures.push(e);
        }
        match failures.into_iter().next() {
            Some(first) => Err(first),
            None => Ok(()),
        }
    }

    fn check(&self, req: &Request) -> anyhow::Result<()> {
        let conf = HostDeviceConf::parse(req)?;
        let (_, userspace) = select(&conf, &Sysfs::system())?;
        let container = NetNs::open(&req.env.netns)?;
        if req.config.ipam_type.is_some() {
            delegate::ipam(req, Command::Check)?;
        }
        let prev = req.config.prev_result.as_ref().context("required prevResult missing")?;
        if userspace {
            return Ok(());
        }
        let ifname = req.env.ifname.as_str();
        let index = prev
            .interfaces
            .iter()
            .position(|i| i.name == ifname && i.sandbox == req.env.netns)
            .with_context(|| format!("sandbox in prevResult doesn't match configured netns: {}", req.env.netns))?;
        let listed = &prev.interfaces[index];
        // Only our interface's addresses are ours to check; routes are the container's.
        let ours = CniResult {
            ips: prev.ips.iter().filter(|ip| ip.interface.is_none_or(|i| i == index)).cloned().collect(),
            ..prev.clone()
        };
        container.run(|| -> anyhow::Result<()> {
            let mut rtnl = Rtnl::open()?;
            let link = rtnl
                .link_by_name(ifname)?
                .with_context(|| format!("container interface name in prevResult: {ifname} not found"))?;
            anyhow::ensure!(
                listed.mac.is_empty() || listed.mac == link.mac_string(),
                "interface {ifname} MAC {} doesn't match container MAC {}",
                listed.mac,
                link.mac_string()
            );
            anyhow::ensure!(
                link.alias.as_deref().is_some_and(|a| !a.is_empty()),
                "interface {ifname} has lost the alias holding its host name, so DEL cannot return it"
            );
            iface::check_addresses(&mut rtnl, ifname, &ours)?;
            iface::check_routes(&mut rtnl, &ours)
        })??;
        Ok(())
    }

    fn status(&self, req: &Request) -> anyhow::Result<()> {
        let conf = HostDeviceConf::parse(req)?;
        let unavailable = |msg: String| anyhow::Error::new(cni::Error::new(Code::NotAvailable, msg));
        let sysfs = Sysfs::system();
        let (selector, userspace) = select(&conf, &sysfs).map_err(|e| unavailable(e.msg))?;
        // An interface already given to a container is not in the host either: this network can
        // take no more containers until it is given back.
        if !userspace && let Err(e) = device::find_host_device(&mut Rtnl::open()?, &sysfs, &selector) {
            return Err(unavailable(format!("{e:#}")));
        }
        if req.config.ipam_type.is_some() {
            delegate::ipam(req, Command::Status)?;
        }
        Ok(())
    }

    fn gc(&self, req: &Request) -> anyhow::Result<()> {
        let conf = HostDeviceConf::parse(req)?;
        let mut failures = Vec::new();
        if let Some(name) = &conf.device
            && let Err(e) = device::reclaim_returned(&mut Rtnl::open()?, name)
        {
            failures.push(e);
        }
        // The spec requires GC to be passed on to the delegated IPAM plugin.
        if req.config.ipam_type.is_some()
            && let Err(e) = delegate::ipam(req, Command::Gc)
        {
            failures.push(e);
        }
        match failures.into_iter().next() {
            Some(first) => Err(first),
            None => Ok(()),
        }
    }
}

fn main() {
    cni::skel::run(HostDevice)
}
