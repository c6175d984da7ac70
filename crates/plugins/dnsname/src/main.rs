//! `dnsname`: container names and aliases in DNS, one server per network, as Docker does on a
//! user-defined bridge network and Podman's CNI backend does with containers/dnsname. A drop-in
//! replacement for that plugin: the same keys (`domainName`, the `aliases` capability, the name in
//! `CNI_ARGS` `K8S_POD_NAME`), the same files under `/run/containers/cni/dnsname/<network>/`, the
//! same server (dnsmasq) started the same way, and the same result (`prevResult` with the bridge's
//! addresses as nameservers and the domain as a search domain).
//!
//! Chained after `bridge`: the bridge is `prevResult`'s first interface, the container's addresses
//! are its sandbox addresses. ADD lists them under the name and aliases and starts the network's
//! server if none runs (or reloads it with SIGHUP); DEL removes the attachment's lines and stops
//! the server with the network's last container; CHECK verifies the lines and the server and
//! restarts a server that died; GC drops the lines of attachments no longer valid. Unlike the
//! reference, DEL and GC find an attachment's lines by its identity (containerID and ifname, kept
//! in a comment dnsmasq ignores) and need no `prevResult`.

mod config;
mod hosts;
mod input;
mod server;

use anyhow::Context;
use cni::{CniResult, Code, Error, Failures, Plugin, Request, Rollback};
use config::Config;
use hosts::{Hosts, Line, Owner};
use netkit::Rtnl;
use server::NetworkDir;
use std::collections::HashSet;
use std::net::IpAddr;

struct DnsName;

/// The bridge (`prevResult`'s first interface) and the container's addresses in `prevResult`.
fn from_prev_result(req: &Request) -> anyhow::Result<(String, Vec<IpAddr>)> {
    let prev = req.config.prev_result.as_ref().ok_or_else(|| Error::config("must be called as chained plugin"))?;
    let bridge = prev.interfaces.first().map(|i| i.name.clone()).unwrap_or_default();
    cni::env::validate_ifname(&bridge)
        .map_err(|e| Error::config(format!("prevResult's first interface is not a bridge name: {}", e.msg)))?;
    Ok((bridge, container_ips(prev)?))
}

/// The container's addresses as the reference picks them: the only one, or every address on an
/// interface inside the sandbox. (The reference fails on an address of a host-side interface; we
/// skip it.)
fn container_ips(prev: &CniResult) -> anyhow::Result<Vec<IpAddr>> {
    let ips: Vec<IpAddr> = match prev.ips.as_slice() {
        [only] => vec![only.address.ip()],
        all => all
            .iter()
            .filter(|ip| {
                ip.interface.and_then(|i| prev.interfaces.get(i)).is_some_and(|iface| !iface.sandbox.is_empty())
            })
            .map(|ip| ip.address.ip())
            .collect(),
    };
    if ips.is_empty() {
        return Err(Error::config("no ip address was found in the network").into());
    }
    Ok(ips)
}

/// The bridge's global addresses: where the server listens, so the nameservers of the result.
fn bridge_addresses(bridge: &str) -> anyhow::Result<Vec<IpAddr>> {
    let mut rtnl = Rtnl::open()?;
    let link = rtnl.link_by_name(bridge)?.with_context(|| format!("bridge {bridge} not found"))?;
    let addresses = rtnl.addresses(Some(link.index), None)?;
    Ok(addresses.iter().filter(|a| a.is_global() && !a.dad_failed()).map(|a| a.net.ip()).collect())
}

fn owner(req: &Request) -> Owner {
    (req.env.container_id.clone(), req.env.ifname.clone())
}

/// Puts `addnhosts` back as it was (`None`: there was none) after a failed ADD, and the server
/// with it.
fn restore(dir: &NetworkDir, old: Option<&str>) -> anyhow::Result<()> {
    let hosts = Hosts::parse(old.unwrap_or_default());
    match old {
        Some(text) => dir.write_hosts(text)?,
        None => {
            let _ = std::fs::remove_file(dir.hosts_path());
        }
    }
    if !hosts.has_entries() {
        dir.stop()?;
        return dir.remove();
    }
    match dir.running() {
        Some(pid) => dir.reload(pid),
        None => Ok(()),
    }
}

/// After DEL or GC took lines out: with no container left the server stops and the directory
/// goes (as the reference does); otherwise the server re-reads the file. No server is started.
///
/// The server gets its SIGHUP even when nothing changed: a DEL killed between writing the file
/// and signalling left names served that the file no longer lists, and the runtime's next DEL,
/// finding nothing to remove, must still have them dropped (a signal costs nothing).
fn settle(dir: &NetworkDir, hosts: &Hosts, changed: bool, failures: &mut Failures) {
    if !hosts.has_entries() {
        if failures.check("stopping the network's dnsmasq", dir.stop()).is_some() {
            cni::trace::mark("server stopped");
            // The directory goes last: a DEL killed before finds it and does this again.
            let closed = match dir.conf_bridge() {
                Some(bridge) => failures.check("removing the INPUT rule for DNS", input::close(&bridge)),
                None => Some(()),
            };
            if closed.is_some() {
                failures.check("removing the network's directory", dir.remove());
            }
        }
        return;
    }
    if changed && failures.check("writing the network's names", dir.write_hosts(&hosts.render())).is_none() {
        return;
    }
    cni::trace::mark("names removed");
    if let Some(pid) = dir.running() {
        failures.check("reloading the network's dnsmasq", dir.reload(pid));
    }
}

impl Plugin for DnsName {
    fn name(&self) -> &'static str {
        "dnsname"
    }

    fn add(&self, req: &Request) -> anyhow::Result<CniResult> {
        let conf = Config::parse(req)?;
        let (bridge, ips) = from_prev_result(req)?;
        let nameservers = bridge_addresses(&bridge)?;
        if server::find_dnsmasq().is_none() {
            return Err(server::not_installed(Code::Internal));
        }
        let owner = owner(req);
        let dir = NetworkDir::new(&req.config.name);
        let lock = dir.lock(true)?.context("the network's directory vanished")?;
        cni::trace::mark("locked");
        let old = dir.read_hosts()?;
        let mut rollback = Rollback::new("dnsname");
        // Undoes every step below: the names, and the directory and server if they are new.
        rollback.push("the network's names", || restore(&dir, old.as_deref()));
        let conf_changed = dir.write_conf(&bridge, &conf.domain)?;
        cni::trace::mark("conf written");
        // As the reference, with the config file: open the bridge's port 53 in iptables' INPUT.
        if conf_changed && input::open(&bridge).context("opening udp port 53 on the bridge in iptables' INPUT")? {
            let bridge = bridge.clone();
            rollback.push("the INPUT rule for DNS", move || input::close(&bridge));
        }
        cni::trace::mark("input opened");
        let mut hosts = Hosts::parse(old.as_deref().unwrap_or_default());
        // A repeated ADD replaces the attachment's lines.
        hosts.retain(|l| !l.belongs_to(&owner, Some(&conf.name)));
        hosts.add(&ips, &conf.name, &conf.aliases, &conf.domain, &owner);
        dir.write_hosts(&hosts.render())?;
        cni::trace::mark("names written");

        match dir.running() {
            Some(pid) if !conf_changed => dir.reload(pid)?,
            Some(_) => {
                // A new bridge or domain: dnsmasq reads its config only when it starts.
                dir.stop()?;
                dir.start(&lock)?;
            }
            None => {
                dir.start(&lock)?;
            }
        }
        cni::trace::mark("server ready");
        rollback.commit();

        let mut result = req.config.prev_result.clone().expect("checked above");
        let mut servers: Vec<String> = nameservers.iter().map(IpAddr::to_string).collect();
        servers.append(&mut result.dns.nameservers);
        result.dns.nameservers = servers;
        result.dns.search.push(conf.domain);
        Ok(result)
    }

    fn del(&self, req: &Request) -> anyhow::Result<()> {
        let dir = NetworkDir::new(&req.config.name);
        let Some(_lock) = dir.lock(false)? else { return Ok(()) };
        let owner = owner(req);
        let name = config::name_for_cleanup(req);
        let mut hosts = Hosts::parse(dir.read_hosts()?.as_deref().unwrap_or_default());
        let changed = hosts.retain(|l| !l.belongs_to(&owner, name.as_deref()));
        let mut failures = Failures::new();
        settle(&dir, &hosts, changed, &mut failures);
        failures.finish()
    }

    fn check(&self, req: &Request) -> anyhow::Result<()> {
        let conf = Config::parse(req)?;
        let (bridge, ips) = from_prev_result(req)?;
        let dir = NetworkDir::new(&req.config.name);
        let lock = dir.lock(false)?.with_context(|| format!("{} does not exist", dir.dir.display()))?;
        if !dir.conf_matches(&bridge, &conf.domain) {
            anyhow::bail!(
                "{} is missing or not for bridge {bridge} and domain {}",
                dir.conf_path().display(),
                conf.domain
            );
        }
        let hosts =
            Hosts::parse(&dir.read_hosts()?.with_context(|| format!("{} is missing", dir.hosts_path().display()))?);
        let owner = owner(req);
        for ip in ips {
            let listed = hosts.names_of(&owner, Some(&conf.name), ip);
            for name in std::iter::once(&conf.name).chain(&conf.aliases) {
                if !listed.iter().any(|l| l.eq_ignore_ascii_case(name)) {
                    anyhow::bail!("{} does not list {name} for {ip}", dir.hosts_path().display());
                }
            }
        }
        if dir.running().is_none() {
            // A server that died is started again: the names are all there.
            eprintln!("dnsname: dnsmasq of network {} was not running; starting it", req.config.name);
            dir.start(&lock).context("restarting the network's dnsmasq")?;
        }
        Ok(())
    }

    fn gc(&self, req: &Request) -> anyhow::Result<()> {
        let Some(valid) = &req.config.valid_attachments else { return Ok(()) };
        let valid: HashSet<Owner> = valid.iter().map(|a| (a.container_id.clone(), a.ifname.clone())).collect();
        let dir = NetworkDir::new(&req.config.name);
        let Some(_lock) = dir.lock(false)? else { return Ok(()) };
        let mut hosts = Hosts::parse(dir.read_hosts()?.as_deref().unwrap_or_default());
        // The reference's lines name no attachment: they stay until a DEL by name.
        let changed = hosts.retain(|l| match l {
            Line::Entry { owner: Some(o), .. } => valid.contains(o),
            _ => true,
        });
        let mut failures = Failures::new();
        settle(&dir, &hosts, changed, &mut failures);
        failures.finish()
    }

    fn status(&self, _req: &Request) -> anyhow::Result<()> {
        match server::find_dnsmasq() {
            Some(_) => Ok(()),
            None => Err(server::not_installed(Code::NotAvailable)),
        }
    }
}

fn main() {
    cni::skel::run(DnsName)
}
