//! `sbr`: source-based routing for a container interface, chained after the plugin that made it
//! (bridge, ptp, macvlan, ipvlan...). Each address of the interface gets a routing table of its
//! own (the first free ID from 100) and a rule `from ADDR lookup TABLE`, so replies leave by the
//! interface their address belongs to, whatever the main table's default route says. The
//! interface's routes move out of the main table into those tables; a default route through the
//! address's gateway is added to each. With `table`, only the rules are added, pointing to that
//! table, and nothing moves.
//!
//! As the reference, ADD and DEL hold an exclusive `flock` on the netns path for their whole
//! run, so two sbr invocations on one container never pick the same table (the reference takes
//! the same lock, so the two exclude each other too). Unlike it, the path is opened without
//! `O_CREAT`: a DEL after the namespace is gone succeeds without creating a file there.
//!
//! Beyond the reference: a failed ADD undoes its rules and routes and puts back what it took
//! from the main table; DEL also removes the routes of the tables it unhooks ("rule and table"),
//! and finds the rules by prevResult's addresses when the interface is already gone; CHECK looks
//! for the rules (the reference's CHECK does nothing).

mod config;

use anyhow::Context;
use cni::{CniResult, Code, Failures, IpConfig, Plugin, Request, ResultExt, Rollback};
use config::SbrConf;
use ipnetwork::IpNetwork;
use netkit::policy::{Rule, TableRoute};
use netkit::route::MAIN_TABLE;
use netkit::{NetNs, RouteSpec, Rtnl};
use std::collections::BTreeSet;
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

/// The first table sbr hands out, as the reference.
const FIRST_TABLE: u32 = 100;

struct Sbr;

/// The address alone: `/32` or `/128`.
fn host_net(ip: IpAddr) -> IpNetwork {
    IpNetwork::new(ip, if ip.is_ipv4() { 32 } else { 128 }).expect("full-length prefix")
}

/// The lock the reference takes: an exclusive flock on the netns path, held until the returned
/// file is dropped. `None` when the path does not exist (and nothing is created there).
fn lock_netns(path: &str) -> anyhow::Result<Option<File>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("opening {path} to lock it")),
    };
    loop {
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { nix::libc::flock(file.as_raw_fd(), nix::libc::LOCK_EX) } == 0 {
            return Ok(Some(file));
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err).with_context(|| format!("locking {path}"));
        }
    }
}

/// The addresses of prevResult that belong to `ifname`: those whose interface index names it,
/// and those without an interface (the reference assumes they do).
fn addresses_of<'r>(prev: &'r CniResult, ifname: &str) -> Vec<&'r IpConfig> {
    prev.ips
        .iter()
        .filter(|ip| match ip.interface {
            Some(i) => prev.interfaces.get(i).is_none_or(|iface| iface.name == ifname),
            None => true,
        })
        .collect()
}

/// The first table from `from` that no rule points to and no route is in.
fn next_free_table(used: &BTreeSet<u32>, from: u32) -> u32 {
    (from..).find(|t| !used.contains(t)).expect("a free table ID")
}

/// `from IP lookup TABLE`, undone by deleting exactly that rule.
fn add_rule<'a>(rtnl: &mut Rtnl, ns: &'a NetNs, ip: IpAddr, table: u32, undo: &mut Rollback<'a>) -> anyhow::Result<()> {
    let src = host_net(ip);
    rtnl.add_source_rule(src, table).with_context(|| format!("Failed to add rule from {src} table {table}"))?;
    undo.push(format!("rule from {src} table {table}"), move || {
        let mut rtnl = Rtnl::open_in(ns)?;
        for rule in rtnl.rules()? {
            if rule.src == Some(src) && rule.table == table {
                rtnl.del_rule(&rule)?;
            }
        }
        Ok(())
    });
    Ok(())
}

impl Sbr {
    /// The reference's `doRoutes`: a table per address, its rule, its default route, the
    /// interface's routes moved out of the main table.
    fn route_by_source<'a>(
        &self,
        rtnl: &mut Rtnl,
        ns: &'a NetNs,
        ifname: &str,
        ips: &[&IpConfig],
        undo: &mut Rollback<'a>,
    ) -> anyhow::Result<()> {
        let mut used = rtnl.tables_in_use().context("Failed to list all rules and routes")?;
        let link = rtnl
            .link_by_name(ifname)?
            .with_context(|| format!("Cannot find network interface {ifname}"))
            .code(Code::InvalidConfig)?;
        // The interface's routes in the main table, as they were before anything moved.
        let routes: Vec<TableRoute> = rtnl
            .table_routes()
            .context("Unable to list routes")?
            .into_iter()
            .filter(|r| r.oif == Some(link.index) && r.table == MAIN_TABLE)
            .collect();

        let mut table = next_free_table(&used, FIRST_TABLE);
        for ip in ips {
            used.insert(table);
            add_rule(rtnl, ns, ip.address.ip(), table, undo)?;

            // The previous plugin may have given the container no default route through this
            // interface; replies need one in the address's table.
            if let Some(gw) = ip.gateway {
                let any = IpNetwork::new(if gw.is_ipv4() { [0u8; 4].into() } else { [0u8; 16].into() }, 0)?;
                let mut default = RouteSpec::new(any, Some(gw), Some(link.index));
                default.table = Some(table);
                rtnl.add_route(&default).with_context(|| format!("Failed to add default route to {gw}"))?;
                undo.push(format!("default route via {gw} in table {table}"), move || {
                    Ok(Rtnl::open_in(ns)?.del_route(&default)?)
                });
            }

            // The interface's routes that serve this address: its source or gateway is in the
            // address's subnet, or it has neither (a plain on-link route).
            let subnet = ip.address;
            for route in &routes {
                let serves = route.src.is_some_and(|s| subnet.contains(s))
                    || route.gw.is_some_and(|g| subnet.contains(g))
                    || (route.src.is_none() && route.gw.is_none());
                if !serves {
                    continue;
                }
                // Replace: the default route just added may be among them.
                rtnl.copy_route_to_table(route, table)
                    .with_context(|| format!("Failed to readd route {} to table {table}", route.dst))?;
                let copied = route.clone();
                undo.push(format!("route {} in table {table}", route.dst), move || {
                    match Rtnl::open_in(ns)?.del_route_copy(&copied, table) {
                        Err(e) if e.is(nix::libc::ESRCH) => Ok(()),
                        other => Ok(other?),
                    }
                });
            }
            table = next_free_table(&used, table + 1);
        }

        cni::fault::point("sbr:tables-filled")?;
        // Only now out of the main table: the gateways above had to be reachable through them,
        // and two addresses of one subnet both need the subnet's route.
        for route in routes {
            rtnl.del_table_route(&route).with_context(|| format!("Failed to delete route {}", route.dst))?;
            undo.push(format!("route {} taken from the main table", route.dst), move || {
                match Rtnl::open_in(ns)?.restore_route(&route) {
                    Err(e) if e.is(nix::libc::EEXIST) => Ok(()),
                    other => Ok(other?),
                }
            });
        }
        Ok(())
    }
}

impl Plugin for Sbr {
    fn name(&self) -> &'static str {
        "sbr"
    }

    fn add(&self, req: &Request) -> anyhow::Result<CniResult> {
        let conf = SbrConf::parse(req)?;
        let prev = req
            .config
            .prev_result
            .as_ref()
            .ok_or_else(|| cni::Error::config("This plugin must be called as chained plugin"))?;
        let ifname = req.env.ifname.as_str();
        if prev.ips.is_empty() {
            return Err(cni::Error::config(format!("No IP addresses supplied on interface: {ifname}")).into());
        }
        let ips = addresses_of(prev, ifname);
        // Beyond the reference, which would then only take the interface's routes out of the
        // main table: with no address of this interface there is nothing to route by.
        if ips.is_empty() {
            return Err(cni::Error::config(format!("No IP addresses supplied on interface: {ifname}")).into());
        }
        let ns = NetNs::open(&req.env.netns)?;
        let _lock = lock_netns(&req.env.netns)?;
        let mut rtnl = Rtnl::open_in(&ns)?;
        let mut undo = Rollback::new("sbr");
        match conf.table {
            Some(table) => {
                for ip in &ips {
                    add_rule(&mut rtnl, &ns, ip.address.ip(), table, &mut undo)?;
                }
            }
            None => self.route_by_source(&mut rtnl, &ns, ifname, &ips, &mut undo)?,
        }
        undo.commit();
        // A meta plugin passes the previous result on.
        Ok(prev.clone())
    }

    fn del(&self, req: &Request) -> anyhow::Result<()> {
        let conf = SbrConf::parse(req)?;
        // The rules and tables live in the namespace: gone with it.
        let Some(ns) = NetNs::open_if_exists(&req.env.netns)? else { return Ok(()) };
        let Some(_lock) = lock_netns(&req.env.netns)? else { return Ok(()) };
        let mut rtnl = Rtnl::open_in(&ns)?;
        let ifname = req.env.ifname.as_str();

        // The rules to remove: those from an address of the interface (the reference's rule),
        // or, once the interface is gone, from prevResult's addresses for it (the reference
        // leaves those rules behind).
        let link = rtnl.link_by_name(ifname)?;
        let sources: Vec<IpAddr> = match &link {
            Some(link) => rtnl.addresses(Some(link.index), None)?.iter().map(|a| a.net.ip()).collect(),
            None => req
                .config
                .prev_result
                .as_ref()
                .map(|prev| addresses_of(prev, ifname).iter().map(|ip| ip.address.ip()).collect())
                .unwrap_or_default(),
        };
        let rules: Vec<Rule> = rtnl
            .rules()
            .context("Failed to list all rules to tidy")?
            .into_iter()
            .filter(|r| conf.table.is_none_or(|t| r.table == t))
            .filter(|r| r.src.is_some_and(|s| sources.contains(&s.ip())))
            .collect();

        let mut failures = Failures::new();
        let mut tables = BTreeSet::new();
        for rule in &rules {
            match rtnl.del_rule(rule) {
                Ok(()) => {
                    tables.insert(rule.table);
                }
                Err(e) if e.is(nix::libc::ENOENT) => {}
                Err(e) => failures.push(anyhow::Error::new(e).context(format!("Failed to delete rule {rule:?}"))),
            }
        }

        // The tables sbr made for the interface go with their rules; a configured table is the
        // operator's and stays.
        if let (None, Some(link)) = (conf.table, &link) {
            let reserved = [0, 253, MAIN_TABLE, 255];
            let stale = rtnl.table_routes().context("listing routes to tidy");
            for route in failures.check("listing routes", stale).unwrap_or_default() {
                if tables.contains(&route.table) && !reserved.contains(&route.table) && route.oif == Some(link.index) {
                    match rtnl.del_table_route(&route) {
                        Err(e) if e.is(nix::libc::ESRCH) => {}
                        other => {
                            failures.check(
                                &format!("deleting route {} of table {}", route.dst, route.table),
                                other.map_err(Into::into),
                            );
                        }
                    }
                }
            }
        }
        failures.finish()
    }

    fn check(&self, req: &Request) -> anyhow::Result<()> {
        let conf = SbrConf::parse(req)?;
        let prev = req.config.prev_result.as_ref().context("sbr: Required prevResult missing")?;
        let ns = NetNs::open(&req.env.netns)?;
        let mut rtnl = Rtnl::open_in(&ns)?;
        let rules = rtnl.rules()?;
        for ip in addresses_of(prev, &req.env.ifname) {
            let src = host_net(ip.address.ip());
            let found = rules.iter().any(|r| r.src == Some(src) && conf.table.is_none_or(|t| r.table == t));
            anyhow::ensure!(found, "no rule routes traffic from {} by its source", src.ip());
        }
        Ok(())
    }
}

fn main() {
    cni::skel::run(Sbr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(json: serde_json::Value) -> CniResult {
        CniResult::from_json(&json, "1.0.0").unwrap()
    }

    #[test]
    fn addresses_of_the_interface_and_those_without_one() {
        let prev = result(serde_json::json!({"cniVersion": "1.0.0",
            "interfaces": [{"name": "veth1"}, {"name": "net1", "sandbox": "/n"}],
            "ips": [{"address": "10.0.0.2/24", "interface": 1}, {"address": "10.9.0.2/24", "interface": 0},
                    {"address": "fd00::2/64"}, {"address": "10.8.0.2/24", "interface": 7}]}));
        let found: Vec<String> = addresses_of(&prev, "net1").iter().map(|ip| ip.address.to_string()).collect();
        // An index beyond the list names no interface: the reference counts it as a match.
        assert_eq!(found, ["10.0.0.2/24", "fd00::2/64", "10.8.0.2/24"]);
        assert_eq!(addresses_of(&prev, "veth1").len(), 3);
    }

    #[test]
    fn tables_skip_every_one_in_use() {
        let used: BTreeSet<u32> = [100, 101, 103, 254, 255].into();
        assert_eq!(next_free_table(&used, FIRST_TABLE), 102);
        assert_eq!(next_free_table(&used, 103), 104);
        assert_eq!(next_free_table(&BTreeSet::new(), FIRST_TABLE), 100);
    }
}
