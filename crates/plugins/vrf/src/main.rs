//! `vrf`: puts the container's interface into a VRF (an L3 routing domain of its own) inside the
//! container, chained after the plugin that made the interface. Multus users give pods several
//! networks with overlapping routes this way.
//!
//! ADD reads top to bottom: find the VRF `vrfname` in the container or create it (with `table`,
//! or the first table ID no other VRF uses) and set it up; enslave `CNI_IFNAME`; then repair what
//! enslaving costs: the kernel cycles the interface, which drops its IPv6 global addresses and
//! its routes through gateways, so those addresses are added back (and waited for until their
//! routes show in the VRF's table) and the routes are re-added into the VRF's table. Every step
//! registers its undo with a [`Rollback`]: a failed ADD puts the interface back out of the VRF
//! with its addresses and routes, and removes a VRF it created.
//!
//! DEL frees the interface and deletes the VRF once no interface is left in it; a missing
//! namespace, VRF or interface is success (the reference fails when the interface is gone, and
//! when the VRF vanishes between its look-up and its deletion).

mod config;

use anyhow::Context;
use cni::{CniResult, Code, Failures, Plugin, Request, ResultExt, Rollback, fault};
use config::VrfConf;
use ipnetwork::IpNetwork;
use netkit::policy::TableRoute;
use netkit::route::MAIN_TABLE;
use netkit::sublink::{SubKind, SubLink};
use netkit::{Address, Family, Link, NetNs, Rtnl};
use std::collections::BTreeSet;
use std::time::Duration;

struct Vrf;

/// The VRF called `name` and its table; `None` when there is no link of that name, an error when
/// there is one that is not a VRF.
fn find_vrf(rtnl: &mut Rtnl, name: &str) -> anyhow::Result<Option<(Link, u32)>> {
    let Some(link) = rtnl.link_by_name(name)? else { return Ok(None) };
    match rtnl.sublink_kind(link.index)? {
        Some(SubKind::Vrf { table }) => Ok(Some((link, table))),
        _ => Err(cni::Error::config(format!("Netlink {name} is not a VRF")).into()),
    }
}

/// The first table ID from 1 that no VRF of the namespace is bound to, as the reference.
fn free_vrf_table(rtnl: &mut Rtnl) -> anyhow::Result<u32> {
    let mut taken = BTreeSet::new();
    for link in rtnl.links()? {
        if let Some(SubKind::Vrf { table }) = rtnl.sublink_kind(link.index)? {
            taken.insert(table);
        }
    }
    (1..u32::MAX).find(|t| !taken.contains(t)).context("findFreeRoutingTableID: Failed to find an available routing id")
}

/// The link's IPv6 addresses of global scope.
fn global_v6(rtnl: &mut Rtnl, index: u32) -> anyhow::Result<Vec<Address>> {
    Ok(rtnl.addresses(Some(index), Some(Family::V6))?.into_iter().filter(Address::is_global).collect())
}

/// Waits, 10 ms doubling up to 1.28 s as the reference, until the address's own route shows in
/// `table`: until then the VRF cannot use it.
fn wait_for_local_route(rtnl: &mut Rtnl, address: &Address, table: u32) -> anyhow::Result<()> {
    let host = IpNetwork::new(address.net.ip(), 128)?;
    for attempt in 0..=8 {
        if rtnl.table_routes()?.iter().any(|r| r.table == table && r.dst == host && r.oif == Some(address.index)) {
            return Ok(());
        }
        if attempt < 8 {
            std::thread::sleep(Duration::from_millis(10 << attempt));
        }
    }
    anyhow::bail!("failed getting local/host addresses in table {table} with dst {host}")
}

impl Vrf {
    fn enslave<'a>(
        &self,
        req: &'a Request,
        conf: &'a VrfConf,
        ns: &'a NetNs,
        undo: &mut Rollback<'a>,
    ) -> anyhow::Result<()> {
        let ifname = req.env.ifname.as_str();
        let mut rtnl = Rtnl::open_in(ns)?;
        let link = rtnl.link_by_name(ifname)?.with_context(|| format!("could not get link by name {ifname}"))?;
        if let Some(master) = link.master {
            let name = rtnl.link_by_index(master)?.map(|m| m.name).unwrap_or_else(|| master.to_string());
            return Err(cni::Error::config(format!("interface {ifname} has already a master set: {name}")).into());
        }

        // The VRF: reused when it exists with the table asked for, else made.
        let (vrf, table) = match find_vrf(&mut rtnl, &conf.vrf_name)? {
            Some((_, table)) if conf.table.is_some_and(|t| t != table) => {
                return Err(cni::Error::config(format!(
                    "VRF {} already exist with different routing table {table}",
                    conf.vrf_name
                ))
                .into());
            }
            Some(found) => found,
            None => {
                let table = match conf.table {
                    Some(t) => t,
                    None => free_vrf_table(&mut rtnl)?,
                };
                let spec = SubLink {
                    name: &conf.vrf_name,
                    kind: SubKind::Vrf { table },
                    master: None,
                    netns: None,
                    mtu: None,
                };
                match rtnl.create_sublink(&spec) {
                    Ok(()) => {
                        let vrf = rtnl.link_by_name(&conf.vrf_name)?.context("the new VRF vanished")?;
                        let index = vrf.index;
                        // Only while no interface is in it: another ADD may have joined it since.
                        undo.push(format!("VRF {}", conf.vrf_name), move || {
                            let mut rtnl = Rtnl::open_in(ns)?;
                            if rtnl.links()?.iter().any(|l| l.master == Some(index)) {
                                return Ok(());
                            }
                            match rtnl.delete_link(index) {
                                Err(e) if e.is(nix::libc::ENODEV) => Ok(()),
                                other => Ok(other?),
                            }
                        });
                        rtnl.set_up(index)
                            .with_context(|| format!("could not set link up for VRF {}", conf.vrf_name))?;
                        (vrf, table)
                    }
                    // Another ADD into the same VRF made it a moment ago (the reference fails
                    // here): join it as if it had been there.
                    Err(e) if e.is(nix::libc::EEXIST) => match find_vrf(&mut rtnl, &conf.vrf_name)? {
                        Some((_, found)) if conf.table.is_some_and(|t| t != found) => {
                            return Err(cni::Error::config(format!(
                                "VRF {} already exist with different routing table {found}",
                                conf.vrf_name
                            ))
                            .into());
                        }
                        Some(found) => found,
                        None => anyhow::bail!("could not add VRF {}: {e}", conf.vrf_name),
                    },
                    Err(e) if e.is(nix::libc::EOPNOTSUPP) => {
                        anyhow::bail!("could not add VRF {}: the kernel has no vrf link type", conf.vrf_name)
                    }
                    Err(e) => return Err(anyhow::Error::new(e).context(format!("could not add VRF {}", conf.vrf_name))),
                }
            }
        };

        // What enslaving drops, noted before: IPv6 global addresses and routes through the
        // interface beyond the connected ones (the kernel moves those to the VRF's table itself).
        let addresses_before = global_v6(&mut rtnl, link.index)?;
        let routes: Vec<TableRoute> = rtnl
            .table_routes()?
            .into_iter()
            .filter(|r| r.oif == Some(link.index) && r.table == MAIN_TABLE && r.scope == 0)
            .collect();
        rtnl.set_master(link.index, vrf.index)
            .with_context(|| format!("could not set vrf {} as master of {ifname}", conf.vrf_name))?;
        let index = link.index;
        let (restore_addresses, restore_routes) = (addresses_before.clone(), routes.clone());
        undo.push(format!("{ifname} in VRF {}", conf.vrf_name), move || {
            let mut rtnl = Rtnl::open_in(ns)?;
            rtnl.set_master(index, 0)?;
            let present = global_v6(&mut rtnl, index)?;
            for a in restore_addresses.iter().filter(|a| !present.iter().any(|p| p.net == a.net)) {
                rtnl.add_address(index, a.net, true)?;
            }
            for r in &restore_routes {
                match rtnl.restore_route(r) {
                    Err(e) if e.is(nix::libc::EEXIST) => {}
                    other => other?,
                }
            }
            Ok(())
        });
        fault::point("vrf:enslaved")?;

        let present = global_v6(&mut rtnl, link.index)?;
        for address in addresses_before.iter().filter(|a| !present.iter().any(|p| p.net == a.net)) {
            rtnl.add_address(link.index, address.net, address.is_nodad()).with_context(|| {
                format!("could not restore address {} to {ifname} @ {}", address.net, conf.vrf_name)
            })?;
            wait_for_local_route(&mut rtnl, address, table)?;
        }
        for route in &routes {
            rtnl.copy_route_to_table(route, table)
                .with_context(|| format!("could not add route {} to table {table}", route.dst))?;
        }
        fault::point("vrf:routes-moved")?;
        Ok(())
    }
}

impl Plugin for Vrf {
    fn name(&self) -> &'static str {
        "vrf"
    }

    fn add(&self, req: &Request) -> anyhow::Result<CniResult> {
        let conf = VrfConf::parse(req)?;
        let prev = req
            .config
            .prev_result
            .as_ref()
            .ok_or_else(|| cni::Error::config("missing prevResult from earlier plugin"))?;
        let ns = NetNs::open(&req.env.netns)?;
        let mut undo = Rollback::new("vrf");
        self.enslave(req, &conf, &ns, &mut undo).context("cmdAdd failed")?;
        undo.commit();
        Ok(prev.clone())
    }

    fn del(&self, req: &Request) -> anyhow::Result<()> {
        // A config ADD refuses (no vrfname, an old version) made nothing: nothing to remove, and
        // failing here would stop the runtime's DEL of the rest of the chain (the reference's
        // does).
        let Ok(conf) = VrfConf::parse(req) else { return Ok(()) };
        let Some(ns) = NetNs::open_if_exists(&req.env.netns)? else { return Ok(()) };
        let mut rtnl = Rtnl::open_in(&ns)?;
        // A link of that name that is not a VRF is not ours to touch.
        let Ok(Some((vrf, _))) = find_vrf(&mut rtnl, &conf.vrf_name) else { return Ok(()) };
        let mut failures = Failures::new();
        if let Some(link) = rtnl.link_by_name(&req.env.ifname)?
            && link.master == Some(vrf.index)
        {
            match rtnl.set_master(link.index, 0) {
                Err(e) if e.is(nix::libc::ENODEV) => {}
                other => {
                    failures.check(
                        &format!("resetMaster: could not reset master of {}", req.env.ifname),
                        other.map_err(Into::into),
                    );
                }
            }
        }
        let members = rtnl.links()?.into_iter().filter(|l| l.master == Some(vrf.index)).count();
        if members == 0 {
            match rtnl.delete_link(vrf.index) {
                // Another DEL of the last two interfaces got there first.
                Err(e) if e.is(nix::libc::ENODEV) => {}
                other => {
                    failures.check(&format!("deleting VRF {}", conf.vrf_name), other.map_err(Into::into));
                }
            }
        }
        failures.finish()
    }

    fn check(&self, req: &Request) -> anyhow::Result<()> {
        let conf = VrfConf::parse(req)?;
        req.config.prev_result.as_ref().ok_or_else(|| cni::Error::config("missing prevResult from earlier plugin"))?;
        let ns = NetNs::open(&req.env.netns)?;
        let mut rtnl = Rtnl::open_in(&ns)?;
        let (vrf, _) = find_vrf(&mut rtnl, &conf.vrf_name)?
            .with_context(|| format!("VRF {} not found", conf.vrf_name))
            .code(Code::Internal)?;
        let enslaved = rtnl.link_by_name(&req.env.ifname)?.is_some_and(|l| l.master == Some(vrf.index));
        anyhow::ensure!(enslaved, "failed to find {} associated to vrf {}", req.env.ifname, conf.vrf_name);
        Ok(())
    }
}

fn main() {
    cni::skel::run(Vrf)
}
