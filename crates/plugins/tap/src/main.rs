//! `tap`: a persistent tap device in the container's namespace, for a VM monitor (KubeVirt,
//! Kata) or a DPDK application in the pod to open by name, optionally a port of a bridge that
//! already exists in that namespace, optionally with addresses from IPAM.
//!
//! ADD reads top to bottom: validate, create the tap inside the namespace with the tun driver's
//! ioctls under a temporary name (never by running `ip`, which the reference does for most
//! configs), set MTU and MAC, rename it, enslave it to `bridge`, bring it up, IPAM, report. Every
//! step registers its undo with a [`Rollback`], so a failed or panicking ADD leaves neither the
//! tap nor an IPAM allocation. DEL finds the tap by its name in the container (gone, or the
//! namespace gone, is success; a tap under one of our temporary names, left by an ADD killed before
//! its rename, goes too), then releases the IPAM allocation; every step is tried.
//!
//! The tap is created with `IFF_TAP | IFF_NO_PI` (as `ip tuntap add mode tap`), plus
//! `IFF_MULTI_QUEUE` with `multiQueue`; `owner` and `group` let that user or group open it
//! without CAP_NET_ADMIN. A tap has no carrier until something opens it, so IPv6 addresses skip
//! duplicate address detection (it could not finish, and nothing else is on the link yet).
//!
//! `selinuxContext`: the device's SELinux label is the creating task's. On a host where SELinux
//! is enabled, the creating thread (a thread of its own that ends right after) switches itself
//! to the context before creating the tap; the policy must allow that dynamic transition, or ADD
//! fails with code 7 saying so (the reference runs `ip` under the context instead). Where SELinux
//! is not enabled there is no label to give, and the key is accepted and has no effect, as with
//! the reference.

mod config;

use anyhow::Context;
use cni::{CniResult, Command, Error, Plugin, Request, Rollback, delegate};
use config::TapConf;
use netkit::iface::{self, Dad};
use netkit::tuntap::{self, Tap};
use netkit::{Link, NetNs, Rtnl, sysctl, tempname};
use std::path::Path;

struct TapPlugin;

/// The prefix of our temporary link names.
const TEMP_PREFIX: &str = "tap";

fn selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

/// Inside the container's namespace, on the calling thread: switches the thread to `context`
/// when SELinux is enabled, then creates the tap under a free temporary name. Returns its index.
fn create_tap(conf: &TapConf) -> anyhow::Result<u32> {
    if let Some(context) = conf.selinux_context.as_deref().filter(|_| selinux_enabled()) {
        std::fs::write("/proc/thread-self/attr/current", context).map_err(|e| {
            Error::config(format!(
                "selinuxContext: cannot create the tap as {context}: {e} \
                 (the policy must allow the plugin a dynamic transition to it)"
            ))
        })?;
    }
    let mut rtnl = Rtnl::open()?;
    for _ in 0..10 {
        let name = tempname::temporary_name(TEMP_PREFIX);
        let tap = Tap { name: &name, multi_queue: conf.multi_queue, owner: conf.owner, group: conf.group };
        match tuntap::create_tap(&tap) {
            Ok(()) => {
                return Ok(rtnl.link_by_name(&name)?.with_context(|| format!("new tap {name} not found"))?.index);
            }
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => continue,
            Err(e) => return Err(e).context("failed to create tap"),
        }
    }
    anyhow::bail!("failed to find a free temporary name for the tap")
}

impl TapPlugin {
    fn add_attachment<'a>(
        &self,
        req: &'a Request,
        conf: &TapConf,
        container: &'a NetNs,
        undo: &mut Rollback<'a>,
    ) -> anyhow::Result<CniResult> {
        let ifname = req.env.ifname.as_str();
        let mut ctr = Rtnl::open_in(container)?;
        if ctr.link_by_name(ifname)?.is_some() {
            anyhow::bail!("interface {ifname:?} already exists in the container");
        }
        let bridge = match &conf.bridge {
            Some(name) => {
                let link = ctr
                    .link_by_name(name)?
                    .ok_or_else(|| Error::config(format!("failed to get bridge {name}: Link not found")))?;
                if !link.is_kind("bridge") {
                    return Err(Error::config(format!("{name} is not a bridge")).into());
                }
                Some(link)
            }
            None => None,
        };

        let index = container.run(|| create_tap(conf))??;
        undo.push(format!("tap {ifname}"), move || tempname::delete_created_link(container, index, "tun"));
        // A kill from here to the rename leaves the temporary name: DEL looks for those too.
        cni::trace::mark("temporary tap created");
        if let Some(mtu) = conf.mtu {
            ctr.set_mtu(index, mtu).with_context(|| format!("setting the tap's MTU to {mtu}"))?;
        }
        if let Some(mac) = conf.mac {
            ctr.set_mac(index, &mac).context("setting the tap's MAC")?;
        }
        ctr.rename(index, ifname).with_context(|| format!("failed to rename tap to {ifname:?}"))?;
        if let Some(bridge) = &bridge {
            ctr.set_master(index, bridge.index)
                .with_context(|| format!("failed to set tap {ifname} as a port of bridge {}", bridge.name))?;
        }
        ctr.set_up(index).context("failed to set tap interface up")?;
        cni::trace::mark("tap created");

        // Addresses from IPAM, if any; the MAC is read back below.
        let mut result = req.container_result(delegate::ipam_add(req, undo)?, String::new());
        if req.config.ipam_type.is_some() {
            container.run(|| -> anyhow::Result<()> {
                let _ = sysctl::write(&format!("net/ipv4/conf/{ifname}/arp_notify"), "1");
                iface::configure_interface(&mut Rtnl::open()?, ifname, &result, Dad::Skipped)
            })??;
            cni::trace::mark("ipam done");
        }
        let link: Link = ctr.link_by_index(index)?.with_context(|| format!("{ifname} vanished"))?;
        result.interfaces[0].mac = link.mac_string();

        // The config's dns wins over IPAM's when it says anything.
        if !req.config.dns.is_empty() {
            result.dns = req.config.dns.clone();
        }
        Ok(result)
    }
}

impl Plugin for TapPlugin {
    fn name(&self) -> &'static str {
        "tap"
    }

    fn add(&self, req: &Request) -> anyhow::Result<CniResult> {
        let conf = TapConf::parse(req)?;
        let container = NetNs::open(&req.env.netns)?;
        Rollback::all_or_nothing("tap", |undo| self.add_attachment(req, &conf, &container, undo))
    }

    fn del(&self, req: &Request) -> anyhow::Result<()> {
        // Nothing of the config is needed but ipam (the keys may have changed).
        delegate::del_interface_with_ipam(req, || {
            tempname::delete_container_link(&req.env.netns, &req.env.ifname, "tun", Some(TEMP_PREFIX)).map(drop)
        })
    }

    fn check(&self, req: &Request) -> anyhow::Result<()> {
        let conf = TapConf::parse(req)?;
        let container = NetNs::open(&req.env.netns)?;
        delegate::ipam_if_configured(req, Command::Check)?;
        let prev = req.config.prev_result.as_ref().context("Required prevResult missing")?;
        let ifname = req.env.ifname.as_str();
        let listed = req.container_interface(prev)?.1;
        container.run(|| -> anyhow::Result<()> {
            let mut rtnl = Rtnl::open()?;
            let link = rtnl.link_by_name(ifname)?.with_context(|| format!("tap {ifname} not found"))?;
            // Beyond the reference: the type, the MAC and the bridge are checked too.
            anyhow::ensure!(link.is_kind("tun"), "interface {ifname} is not a tap device");
            anyhow::ensure!(
                listed.mac.is_empty() || listed.mac == link.mac_string(),
                "interface {ifname} Mac {} doesn't match container Mac: {}",
                listed.mac,
                link.mac_string()
            );
            if let Some(bridge) = &conf.bridge {
                let master = link.master.and_then(|m| rtnl.link_by_index(m).ok().flatten());
                anyhow::ensure!(
                    master.is_some_and(|m| &m.name == bridge),
                    "tap {ifname} is not a port of bridge {bridge}"
                );
            }
            iface::check_addresses(&mut rtnl, ifname, prev)?;
            iface::check_routes(&mut rtnl, prev)
        })?
    }

    fn status(&self, req: &Request) -> anyhow::Result<()> {
        TapConf::parse(req)?;
        delegate::ipam_if_configured(req, Command::Status)
    }

    fn gc(&self, req: &Request) -> anyhow::Result<()> {
        // Nothing of ours outlives an interface; the spec passes GC on to the IPAM plugin.
        delegate::ipam_if_configured(req, Command::Gc)
    }
}

fn main() {
    // IPAM of this suite runs in this process when the file in CNI_PATH is ours (cni::suite).
    cni::skel::run_with(TapPlugin, &[&host_local::HostLocal, &static_ipam::Static])
}
