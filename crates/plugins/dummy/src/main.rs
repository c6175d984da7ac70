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
use cni::{CniResult, Command, Error, Failures, Interface, Plugin, Request, Rollback, delegate};
use netkit::iface::{self, Dad};
use netkit::{NetNs, Rtnl};

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
        undo.push(format!("dummy {ifname}"), move || {
            let mut ctr = Rtnl::open_in(container)?;
            if ctr.link_by_index(index)?.is_some_and(|l| l.is_kind("dummy")) {
                ctr.delete_link(index)?;
            }
            Ok(())
        });
        cni::trace::mark("link created");

        let allocated = delegate::ipam(req, Command::Add)?;
        undo.push("the IPAM allocation", move || delegate::ipam(req, Command::Del).map(|_| ()));
        let ipam = allocated.context("IPAM returned no result")?;
        anyhow::ensure!(!ipam.ips.is_empty(), "IPAM plugin returned missing IP config");
        let mut result = CniResult {
            interfaces: vec![Interface {
                name: ifname.to_string(),
                mac: link.mac_string(),
                sandbox: req.env.netns.clone(),
                ..Interface::default()
            }],
            ips: ipam.ips,
            routes: ipam.routes,
            dns: ipam.dns,
        };
        for ip in &mut result.ips {
            ip.interface = Some(0);
        }
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
        let mut undo = Rollback::new("dummy");
        let result = self.add_attachment(req, &container, &mut undo)?;
        undo.commit();
        Ok(result)
    }

    fn del(&self, req: &Request) -> anyhow::Result<()> {
        // Nothing of the config is needed but ipam (the master may be gone, the keys changed).
        let mut failures = Failures::new();
        delegate::del_interface_and_ipam(req, &mut failures, || {
            netkit::tempname::delete_container_link(&req.env.netns, &req.env.ifname, "dummy", None)
        });
        failures.finish()
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
        if req.config.ipam_type.is_some() {
            delegate::ipam(req, Command::Gc)?;
        }
        Ok(())
    }
}

fn main() {
    cni::skel::run(Dummy)
}
