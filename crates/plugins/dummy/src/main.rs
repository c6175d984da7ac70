//! `dummy`: a dummy link in the container's namespace holding the addresses IPAM gives it: an
//! address that is always up and never carries traffic off the pod (VM and DPDK workloads use it
//! to hold an address their own data path serves).
//!
//! ADD reads top to bottom: validate (IPAM is required), create the link directly in the
//! container's namespace under its final name (nothing ever exists in the host, so no host name
//! can clash), IPAM, addresses and routes, report. Every step registers its undo with a
//! [`Rollback`], so a failed or panicking ADD leaves neither the link nor an IPAM allocation.
//! DEL finds the link by its name in the container (gone, or the namespace gone, is success),
//! then releases the IPAM allocation; every step is tried.
//!
//! The result's `dns` is the config's when it says anything, else IPAM's (the reference reports
//! none at all).

use anyhow::Context;
use cni::{CniResult, Command, Error, Plugin, Request, Rollback, delegate};
use netkit::iface::{self, Dad};
use netkit::{NetNs, Rtnl, tempname};

struct Dummy;

fn require_ipam(req: &Request) -> Result<(), Error> {
    if req.config.ipam_type.is_none() {
        return Err(Error::config("dummy interface requires an IPAM configuration"));
    }
    Ok(())
}

impl Dummy {
    fn add_attachment<'a>(
        &self,
        req: &'a Request,
        container: &'a NetNs,
        undo: &mut Rollback<'a>,
    ) -> anyhow::Result<CniResult> {
        let ifname = req.env.ifname.as_str();
        let mut ctr = Rtnl::open_in(container)?;
        match ctr.create_dummy(ifname) {
            Ok(()) => {}
            Err(e) if e.is(nix::libc::EEXIST) => anyhow::bail!("interface {ifname:?} already exists in the container"),
            Err(e) if e.is(nix::libc::EOPNOTSUPP) => {
                return Err(Error::new(
                    cni::Code::NotAvailable,
                    format!("failed to create dummy: the kernel has no dummy link type ({e})"),
                )
                .into());
            }
            Err(e) => return Err(e).context("failed to create dummy"),
        }
        let link = ctr.link_by_name(ifname)?.with_context(|| format!("new dummy {ifname} not found"))?;
        let index = link.index;
        undo.push(format!("dummy {ifname}"), move || tempname::delete_created_link(container, index, "dummy"));
        cni::trace::mark("link created");

        // IPAM is required (checked before ADD began).
        let mut result = req.container_result(delegate::ipam_add(req, undo)?, link.mac_string());
        cni::trace::mark("ipam done");
        // No other station shares a dummy link: duplicate detection has nobody to ask.
        container.run(|| iface::configure_interface(&mut Rtnl::open()?, ifname, &result, Dad::Skipped))??;
        cni::trace::mark("configured");
        if !req.config.dns.is_empty() {
            result.dns = req.config.dns.clone();
        }
        Ok(result)
    }
}

impl Plugin for Dummy {
    fn name(&self) -> &'static str {
        "dummy"
    }

    fn add(&self, req: &Request) -> anyhow::Result<CniResult> {
        require_ipam(req)?;
        let container = NetNs::open(&req.env.netns)?;
        Rollback::all_or_nothing("dummy", |undo| self.add_attachment(req, &container, undo))
    }

    fn del(&self, req: &Request) -> anyhow::Result<()> {
        // Nothing of the config is needed but ipam (the keys may have changed).
        delegate::del_interface_with_ipam(req, || {
            tempname::delete_container_link(&req.env.netns, &req.env.ifname, "dummy", None).map(drop)
        })
    }

    fn check(&self, req: &Request) -> anyhow::Result<()> {
        require_ipam(req)?;
        let container = NetNs::open(&req.env.netns)?;
        delegate::ipam(req, Command::Check)?;
        let prev = req.config.prev_result.as_ref().context("Required prevResult missing")?;
        let ifname = req.env.ifname.as_str();
        let listed = req.container_interface(prev)?.1;
        container.run(|| -> anyhow::Result<()> {
            let mut rtnl = Rtnl::open()?;
            let link = rtnl
                .link_by_name(ifname)?
                .with_context(|| format!("Container Interface name in prevResult: {ifname} not found"))?;
            anyhow::ensure!(link.is_kind("dummy"), "Error: Container interface {ifname} not of type dummy");
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
        require_ipam(req)?;
        delegate::ipam(req, Command::Status)?;
        Ok(())
    }

    fn gc(&self, req: &Request) -> anyhow::Result<()> {
        // Nothing of ours outlives an interface; the spec passes GC on to the IPAM plugin.
        delegate::ipam_if_configured(req, Command::Gc)
    }
}

fn main() {
    // IPAM of this suite runs in this process when the file in CNI_PATH is ours (cni::suite).
    cni::skel::run_with(Dummy, &[&host_local::HostLocal, &static_ipam::Static])
}
