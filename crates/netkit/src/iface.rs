//! Configuring a container interface from a CNI result (the reference's `ipam.ConfigureIface`) and
//! checking it later (`ValidateExpectedInterfaceIPs` / `ValidateExpectedRoute`).
//!
//! Everything here acts in the namespace of the calling thread and of the handle given, so it is
//! called from inside [`crate::NetNs::run`] with a handle opened there.

use crate::addr::Address;
use crate::route::RouteSpec;
use crate::rtnl::{Family, Rtnl};
use crate::sysctl;
use anyhow::Context;
use cni::CniResult;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long to wait for IPv6 duplicate address detection, as the reference.
const DAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether addresses go through IPv6 duplicate address detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dad {
    /// Full DAD, and wait until it settles (`enabledad: true`).
    Enabled,
    /// Addresses are added with IFA_F_NODAD: on a segment where the plugin hands out every
    /// address, detection only costs time (about a second per pod).
    Skipped,
}

/// Adds the result's addresses that belong to `ifname`, brings it up, and adds the routes. A route
/// without a gateway goes via the first gateway of its family, as the reference does; `mtu` and
/// `advmss` of routes are applied (the reference ignores them).
pub fn configure_interface(rtnl: &mut Rtnl, ifname: &str, result: &CniResult, dad: Dad) -> anyhow::Result<()> {
    let link = rtnl.link_by_name(ifname)?.with_context(|| format!("interface {ifname} not found"))?;
    let mut gateways: [Option<IpAddr>; 2] = [None, None];
    let mut ipv6_ready = false;
    for ip in &result.ips {
        let Some(index) = ip.interface else { continue };
        if result.interfaces.get(index).is_none_or(|i| i.name != ifname) {
            anyhow::bail!("failed to add IP addr {} to {ifname}: invalid interface index {index}", ip.address);
        }
        if ip.address.is_ipv6() && !ipv6_ready {
            enable_ipv6(ifname)?;
            ipv6_ready = true;
        }
        rtnl.add_address(link.index, ip.address, dad == Dad::Skipped)
            .with_context(|| format!("adding {} to {ifname}", ip.address))?;
        if let Some(gw) = ip.gateway {
            let slot = &mut gateways[usize::from(gw.is_ipv6())];
            slot.get_or_insert(gw);
        }
    }
    rtnl.set_up(link.index).with_context(|| format!("setting {ifname} up"))?;
    if dad == Dad::Enabled && gateways[1].is_some() {
        wait_for_dad(rtnl, link.index, ifname)?;
    }
    for route in &result.routes {
        let gw = route.gw.or(gateways[usize::from(route.dst.is_ipv6())]);
        let spec = RouteSpec {
            dst: route.dst,
            gw,
            oif: Some(link.index),
            table: route.table,
            scope: route.scope,
            priority: (route.priority != 0).then_some(route.priority),
            mtu: (route.mtu != 0).then_some(route.mtu),
            advmss: (route.advmss != 0).then_some(route.advmss),
            src: None,
        };
        match rtnl.add_route(&spec) {
            // The same route is already there (another address of the family added it).
            Err(e) if e.is(nix::libc::EEXIST) => {}
            other => other.with_context(|| {
                let via = gw.map(|g| format!(" via {g}")).unwrap_or_default();
                format!("adding route {}{via} dev {ifname}", route.dst)
            })?,
        }
    }
    Ok(())
}

/// `disable_ipv6=0` on `lo` and the interface, `keep_addr_on_down=1` on the interface. A missing
/// sysctl (IPv6 compiled out or disabled at boot) is left for the address add to report.
fn enable_ipv6(ifname: &str) -> anyhow::Result<()> {
    for dev in ["lo", ifname] {
        let path = format!("net/ipv6/conf/{dev}/disable_ipv6");
        if sysctl::read(&path).is_ok_and(|v| v != "0") {
            sysctl::write(&path, "0")?;
        }
    }
    let keep = format!("net/ipv6/conf/{ifname}/keep_addr_on_down");
    if sysctl::read(&keep).is_ok() {
        sysctl::write(&keep, "1")?;
    }
    Ok(())
}

/// Waits until no IPv6 address of the link is tentative. An address that failed detection is an
/// error; one still tentative at the timeout is an error only if the link is operationally up
/// (without carrier, detection cannot finish, as the reference reasons).
fn wait_for_dad(rtnl: &mut Rtnl, index: u32, ifname: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let addrs: Vec<Address> = rtnl.addresses(Some(index), Some(Family::V6))?;
        if let Some(dup) = addrs.iter().find(|a| a.dad_failed()) {
            anyhow::bail!("duplicate address detection failed for {} on {ifname}", dup.net);
        }
        if !addrs.iter().any(Address::is_tentative) {
            return Ok(());
        }
        if started.elapsed() > DAD_TIMEOUT {
            let up = rtnl.link_by_index(index)?.is_some_and(|l| l.oper_up);
            anyhow::ensure!(!up, "addresses on {ifname} still tentative after {}s", DAD_TIMEOUT.as_secs());
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every address of the result is on `ifname` (CHECK).
pub fn check_addresses(rtnl: &mut Rtnl, ifname: &str, result: &CniResult) -> anyhow::Result<()> {
    let link = rtnl.link_by_name(ifname)?.with_context(|| format!("cannot find container link {ifname}"))?;
    let present = rtnl.addresses(Some(link.index), None)?;
    for ip in &result.ips {
        anyhow::ensure!(
            present.iter().any(|a| a.net == ip.address),
            "failed to match addr {} on interface {ifname}",
            ip.address
        );
    }
    Ok(())
}

/// Every route of the result is in the routing table, through its gateway when it names one.
pub fn check_routes(rtnl: &mut Rtnl, result: &CniResult) -> anyhow::Result<()> {
    for route in &result.routes {
        let family = Family::of(&route.dst.ip());
        let found = rtnl.routes(family)?.iter().any(|r| {
            r.dst.network() == route.dst.network()
                && r.dst.prefix() == route.dst.prefix()
                && (route.gw.is_none() || r.gw == route.gw)
        });
        anyhow::ensure!(found, "expected route {} not found in routing table", route.dst);
    }
    Ok(())
}
