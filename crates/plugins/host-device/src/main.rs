//! `host-device`: gives a container an existing host interface (a NIC, an SR-IOV VF, a macvlan)
//! instead of a veth into a bridge, and gives it back on DEL.
//!
//! ADD reads top to bottom: validate, find the interface, move it into the container under
//! `CNI_IFNAME` (remembering its host name), IPAM, addresses and routes, report. A failure (or a
//! panic) undoes the steps before it, so the interface is back in the host with its name and the
//! allocation is released. DEL returns the interface under its original name and releases the
//! allocation; a missing namespace or interface is success, and the allocation is released all
//! the same.

mod config;
mod device;
mod sysfs;

use anyhow::Context;
use cni::{CniResult, Code, Command, Failures, Interface, Plugin, Request, Rollback, delegate, fault};
use config::{HostDeviceConf, Selector};
use device::MovedOut;
use netkit::iface::{self, Dad};
use netkit::{NetNs, Rtnl};
use sysfs::Sysfs;

struct HostDevice;

/// Whether the configured PCI device (if any) is bound to a userspace (DPDK) driver. As in the
/// reference this is decided by `pciBusID` / a PCI `deviceID` even when another selector wins.
fn userspace_bound(conf: &HostDeviceConf, sysfs: &Sysfs) -> bool {
    sysfs.pci_of_conf(conf).is_some_and(|id| sysfs.userspace_driver(&Selector::Pci(id)).is_some())
}

impl HostDevice {
    fn attach<'a>(
        &self,
        req: &'a Request,
        conf: &HostDeviceConf,
        container: &'a NetNs,
        undo: &mut Rollback<'a>,
    ) -> anyhow::Result<CniResult> {
        let ifname = req.env.ifname.as_str();
        let sysfs = Sysfs::system();
        let selector = sysfs.selector(conf)?;
        let userspace = userspace_bound(conf, &sysfs);
        let mut interface =
            Interface { name: ifname.to_string(), sandbox: req.env.netns.clone(), ..Interface::default() };
        if matches!(selector, Selector::Pci(_)) || userspace {
            interface.pci_id = sysfs.pci_of_conf(conf).unwrap_or_default();
        }

        // A DPDK-bound device has no kernel interface: it is reported, not moved.
        if !userspace {
            // Checked first: moving the device out and back would cost it its host addresses.
            if Rtnl::open_in(container)?.link_by_name(ifname)?.is_some() {
                anyhow::bail!("interface {ifname:?} already exists in the container");
            }
            let mut host = Rtnl::open()?;
            let (host_dev, host_name) = device::find_host_device(&mut host, &sysfs, &selector)?;
            if interface.pci_id.is_empty() {
                interface.pci_id = sysfs.pci_address_of(&host_dev.name).unwrap_or_default();
            }
            let moved = device::move_in(&mut host, &host_dev, &host_name, container, ifname)?;
            let alias = host_dev.alias.clone().unwrap_or_default();
            let was_up = host_dev.up;
            undo.push(format!("moving {ifname} back to the host as {host_name}"), move || {
                device::move_out(&NetNs::current()?, container, &req.env.ifname, None)?;
                let mut host = Rtnl::open()?;
                if let Some(link) = host.link_by_name(&host_name)? {
                    if !alias.is_empty() {
                        host.set_alias(link.index, &alias)?;
                    }
                    if was_up {
                        host.set_up(link.index)?;
                    }
                }
                Ok(())
            });
            interface.mac = moved.mac_string();
        }

        // Addresses from IPAM, on the moved interface (index 0 of our part of the result).
        let mut ours = CniResult { interfaces: vec![interface], ..CniResult::default() };
        if req.config.ipam_type.is_some() {
            // Before the call: an allocation whose result cannot be read must be released too.
            undo.push("the IPAM allocation", move || delegate::ipam(req, Command::Del).map(|_| ()));
            let allocated = delegate::ipam(req, Command::Add)?.context("IPAM returned no result")?;
            fault::point("host-device:ipam-added")?;
            anyhow::ensure!(!allocated.ips.is_empty(), "IPAM plugin returned missing IP config");
            ours.ips = allocated.ips.into_iter().map(|ip| cni::IpConfig { interface: Some(0), ..ip }).collect();
            ours.routes = allocated.routes;
            ours.dns = allocated.dns;
            if !userspace {
                // The interface may sit on a real segment with other hosts: DAD stays on.
                container.run(|| iface::configure_interface(&mut Rtnl::open()?, ifname, &ours, Dad::Enabled))??;
                fault::point("host-device:configured")?;
            }
        }
        if !req.config.dns.is_empty() {
            ours.dns = req.config.dns.clone();
        }
        Ok(chain(req.config.prev_result.clone(), ours))
    }

    /// Whether an interface named by `selector`, not in the host, is in a container: in one of
    /// the namespaces runtimes pin under /run/netns, carrying our alias (or the MAC) there.
    fn attached_somewhere(selector: &Selector) -> bool {
        let Ok(entries) = std::fs::read_dir("/run/netns") else { return false };
        entries.filter_map(Result::ok).any(|entry| {
            let Ok(ns) = NetNs::open(entry.path()) else { return false };
            let Ok(mut rtnl) = Rtnl::open_in(&ns) else { return false };
            rtnl.links().is_ok_and(|links| {
                links.iter().any(|l| match selector {
                    Selector::Name(name) => l.alias.as_deref() == Some(name.as_str()),
                    Selector::HwAddr(mac) => l.mac == *mac,
                    _ => false,
                })
            })
        })
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
        let mut undo = Rollback::new("host-device");
        let result = self.attach(req, &conf, &container, &mut undo)?;
        undo.commit();
        Ok(result)
    }

    fn del(&self, req: &Request) -> anyhow::Result<()> {
        let conf = HostDeviceConf::parse_for_teardown(req)?;
        let mut failures = Failures::new();

        if !userspace_bound(&conf, &Sysfs::system()) {
            // The MAC the previous result reported for our interface, to tell it apart from a
            // container's own interface of that name.
            let expected_mac = req.config.prev_result.as_ref().and_then(|p| {
                p.interfaces
                    .iter()
                    .find(|i| i.name == req.env.ifname && i.sandbox == req.env.netns && !i.mac.is_empty())
                    .map(|i| i.mac.clone())
            });
            let returned = match NetNs::open_if_exists(&req.env.netns) {
                Ok(Some(container)) => NetNs::current()
                    .and_then(|host| device::move_out(&host, &container, &req.env.ifname, expected_mac.as_deref())),
                Ok(None) => Ok(MovedOut::Absent),
                // Not a namespace we can use: say so, but still release the address below.
                Err(e) => Err(anyhow::Error::new(e)),
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
        if req.config.ipam_type.is_some() {
            failures.check("releasing the IPAM allocation", delegate::ipam(req, Command::Del).map(|_| ()));
        }
        failures.finish()
    }

    fn check(&self, req: &Request) -> anyhow::Result<()> {
        let conf = HostDeviceConf::parse(req)?;
        let userspace = userspace_bound(&conf, &Sysfs::system());
        let container = NetNs::open(&req.env.netns)?;
        if req.config.ipam_type.is_some() {
            delegate::ipam(req, Command::Check)?;
        }
        let prev = req.config.prev_result.as_ref().context("required prevResult missing")?;
        if userspace {
            return Ok(());
        }
        let ifname = req.env.ifname.as_str();
        let index = req.container_interface(prev)?.0;
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

    /// Code 50 when the configured device does not exist: not in the host, not in a container,
    /// not on the machine's buses. A device in use by a container exists; reporting it missing
    /// would make runtimes mark the node's network not ready after the first pod.
    fn status(&self, req: &Request) -> anyhow::Result<()> {
        let conf = HostDeviceConf::parse(req)?;
        let unavailable = |msg: String| anyhow::Error::new(cni::Error::new(Code::NotAvailable, msg));
        let sysfs = Sysfs::system();
        let selector = sysfs.selector(&conf).map_err(|e| unavailable(e.msg))?;
        if !userspace_bound(&conf, &sysfs) {
            let in_host = device::find_host_device(&mut Rtnl::open()?, &sysfs, &selector);
            if let Err(e) = in_host {
                let exists =
                    sysfs.device_exists(&selector).unwrap_or_else(|| HostDevice::attached_somewhere(&selector));
                if !exists {
                    return Err(unavailable(format!("{e:#}")));
                }
            }
        }
        if req.config.ipam_type.is_some() {
            delegate::ipam(req, Command::Status)?;
        }
        Ok(())
    }

    fn gc(&self, req: &Request) -> anyhow::Result<()> {
        let conf = HostDeviceConf::parse_for_teardown(req)?;
        let mut failures = Failures::new();
        if let Some(name) = &conf.device {
            let reclaimed = Rtnl::open().map_err(Into::into).and_then(|mut h| device::reclaim_returned(&mut h, name));
            failures.check("reclaiming a returned device", reclaimed);
        }
        // The spec requires GC to be passed on to the delegated IPAM plugin.
        if req.config.ipam_type.is_some() {
            failures.check("IPAM GC", delegate::ipam(req, Command::Gc).map(|_| ()));
        }
        failures.finish()
    }
}

fn main() {
    // IPAM of this suite runs in this process when the file in CNI_PATH is ours (cni::suite).
    cni::skel::run_with(HostDevice, &[&host_local::HostLocal, &static_ipam::Static])
}
