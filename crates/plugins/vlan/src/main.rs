//! `vlan`: the container's interface is an 802.1Q VLAN of a host interface (`master`), so the
//! container sits on that VLAN of the physical network. Multus users attach pods to tagged
//! networks with it.
//!
//! ADD reads top to bottom: validate, find the master (in the host, or in the container with
//! `linkInContainer`), create the VLAN straight into the container under a temporary name and
//! rename it there (so no name in the host can clash), IPAM, addresses and routes, report. Every
//! step registers its undo with a [`Rollback`]: unlike the reference, a failed IPAM or
//! configuration leaves no link behind, and a failed configuration releases the allocation.
//!
//! DEL never looks at the master (the reference's DEL fails once the master is gone, which leaks
//! the allocation): it removes the container's interface and releases the allocation, each tried
//! whatever the other did, and a missing namespace or interface is success. Without `ipam` the
//! interface is L2 only (the reference requires IPAM and leaks the link when it is missing).

mod config;

use anyhow::Context;
use cni::{CniResult, Command, Plugin, Request, Rollback, delegate, fault};
use config::VlanConf;
use netkit::iface::{self, Dad};
use netkit::sublink::{SubKind, SubLink, find_master, master_handle};
use netkit::{NetNs, Rtnl, tempname};
use std::os::fd::AsFd;

struct Vlan;

/// The prefix of the name the link has between its creation in the container and its rename.
const TEMP_PREFIX: &str = "vl";

impl Vlan {
    fn add_attachment<'a>(
        &self,
        req: &'a Request,
        conf: &VlanConf,
        container: &'a NetNs,
        undo: &mut Rollback<'a>,
    ) -> anyhow::Result<CniResult> {
        let ifname = req.env.ifname.as_str();
        let mut inside = Rtnl::open_in(container)?;
        if inside.link_by_name(ifname)?.is_some() {
            anyhow::bail!("interface {ifname:?} already exists in the container");
        }

        // The master, where the config says it is. The VLAN is created by a handle in the
        // master's namespace (the kernel finds IFLA_LINK there) and born in the container.
        let mut at_master = master_handle(container, conf.link_in_container)?;
        let master = find_master(&mut at_master, &conf.master, conf.mtu)?;
        let temporary = tempname::temporary_name(TEMP_PREFIX);
        let vlan = SubLink {
            name: &temporary,
            kind: SubKind::Vlan { id: conf.vlan_id },
            master: Some(master.index),
            netns: (!conf.link_in_container).then(|| container.as_fd()),
            mtu: conf.mtu,
        };
        at_master.create_sublink(&vlan).map_err(|e| match e.errno() {
            Some(nix::libc::EOPNOTSUPP) => {
                anyhow::anyhow!("failed to create vlan: the kernel has no vlan (8021q) link type")
            }
            _ => anyhow::Error::new(e).context("failed to create vlan"),
        })?;
        let link = inside.link_by_name(&temporary)?.context("the new vlan link vanished")?;
        let index = link.index;
        undo.push(format!("vlan link {ifname}"), move || tempname::delete_created_link(container, index, "vlan"));
        fault::point("vlan:before-rename")?;
        inside.rename(index, ifname).with_context(|| format!("failed to rename vlan to {ifname:?}"))?;
        fault::point("vlan:link-created")?;

        // Addresses from IPAM, all on the VLAN.
        let addresses = delegate::ipam_add(req, undo).context("failed to execute IPAM delegate")?;
        fault::point("vlan:ipam-added")?;
        let mut result = req.container_result(addresses, link.mac_string());
        // On a shared segment, duplicate address detection means something: it runs, as in
        // the reference.
        container.run(|| iface::configure_interface(&mut Rtnl::open()?, ifname, &result, Dad::Enabled))??;
        // The reference reports the config's dns, whatever IPAM said.
        result.dns = req.config.dns.clone();
        Ok(result)
    }
}

impl Plugin for Vlan {
    fn name(&self) -> &'static str {
        "vlan"
    }

    fn add(&self, req: &Request) -> anyhow::Result<CniResult> {
        let conf = VlanConf::parse(req)?;
        let container = NetNs::open(&req.env.netns)?;
        Rollback::all_or_nothing("vlan", |undo| self.add_attachment(req, &conf, &container, undo))
    }

    fn del(&self, req: &Request) -> anyhow::Result<()> {
        // Nothing of the config is needed but ipam (the master may be gone, the keys changed).
        delegate::del_interface_with_ipam(req, || {
            tempname::delete_container_link(&req.env.netns, &req.env.ifname, "vlan", Some(TEMP_PREFIX)).map(drop)
        })
    }

    fn check(&self, req: &Request) -> anyhow::Result<()> {
        let conf = VlanConf::parse(req)?;
        let container = NetNs::open(&req.env.netns)?;
        delegate::ipam_if_configured(req, Command::Check)?;
        let prev = req.config.prev_result.as_ref().context("vlan: Required prevResult missing")?;
        let ifname = req.env.ifname.as_str();
        let listed = req.container_interface(prev)?.1;
        let mut at_master = master_handle(&container, conf.link_in_container)?;
        at_master.link_by_name(&conf.master)?.with_context(|| format!("failed to lookup master {:?}", conf.master))?;

        container.run(|| -> anyhow::Result<()> {
            let mut rtnl = Rtnl::open()?;
            let link = rtnl
                .link_by_name(ifname)?
                .with_context(|| format!("vlan: Container Interface name in prevResult: {ifname} not found"))?;
            let Some(SubKind::Vlan { id }) = rtnl.sublink_kind(link.index)? else {
                anyhow::bail!("Error: Container interface {ifname} not of type vlan");
            };
            anyhow::ensure!(
                listed.mac.is_empty() || listed.mac == link.mac_string(),
                "vlan: Interface {ifname} Mac {} doesn't match container Mac: {}",
                listed.mac,
                link.mac_string()
            );
            anyhow::ensure!(id == conf.vlan_id, "vlan: {ifname} has VLAN ID {id}, configured {}", conf.vlan_id);
            if let Some(mtu) = conf.mtu {
                anyhow::ensure!(
                    mtu == link.mtu,
                    "vlan: configured MTU of {ifname} is {mtu}, current value is {}",
                    link.mtu
                );
            }
            iface::check_addresses(&mut rtnl, ifname, prev)?;
            iface::check_routes(&mut rtnl, prev)
        })?
    }

    fn status(&self, req: &Request) -> anyhow::Result<()> {
        delegate::ipam_if_configured(req, Command::Status)
    }
}

fn main() {
    // IPAM of this suite runs in this process when the file in CNI_PATH is ours (cni::suite).
    cni::skel::run_with(Vlan, &[&host_local::HostLocal, &static_ipam::Static])
}
