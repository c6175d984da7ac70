//! `bandwidth`: rate limits on a container's traffic, chained after a veth plugin (bridge, ptp).
//! k3s runs it with the `bandwidth` capability, which kubelet fills from the pod's
//! `kubernetes.io/{ingress,egress}-bandwidth` annotations.
//!
//! Both limits sit on the host end of the container's veth, as the reference puts them:
//!
//! ```text
//! ingress (towards the container)  host veth root 1: tbf
//! egress (from the container)      host veth ingress ffff: ── u32 match-all, mirred redirect ──> ifb bwp<hash>
//!                                  ifb root 1: tbf
//! ```
//!
//! With `shapedSubnets` or `unshapedSubnets` the root qdisc is an htb instead, with a shaped class
//! and an unshaped one and u32 filters on the subnets (the reference's v1.5.0 design, since
//! withdrawn there; its keys are accepted and do what they say here).
//!
//! The ifb is named `bwp` + sha512(network + containerID), 15 characters, as the reference names
//! it, so a DEL by either implementation removes what the other made. Ours carries an alias,
//! `cni-bandwidth/<network>/<containerID>/<host veth>`, which lets DEL find the veth without a
//! netns and GC find the devices of attachments that are gone. Everything goes over rtnetlink;
//! `tc` is never run.

mod config;

use anyhow::Context;
use cni::{CniResult, Failures, Interface, Plugin, Request, Rollback};
use config::Limits;
use netkit::tc::{self, Shape};
use netkit::{Link, NetNs, Rtnl};
use sha2::{Digest, Sha512};
use std::os::fd::AsFd;

struct Bandwidth;

const IFB_PREFIX: &str = "bwp";
const ALIAS_PREFIX: &str = "cni-bandwidth";

/// The reference's `getIfbDeviceName`: `bwp` and the first 12 hex digits of
/// sha512(network + containerID).
fn ifb_name(network: &str, container_id: &str) -> String {
    let digest = Sha512::digest(format!("{network}{container_id}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{IFB_PREFIX}{}", &hex[..15 - IFB_PREFIX.len()])
}

fn alias(network: &str, container_id: &str, host_veth: &str) -> String {
    format!("{ALIAS_PREFIX}/{network}/{container_id}/{host_veth}")
}

/// (network, containerID, host veth) from an alias of ours.
fn parse_alias(alias: &str) -> Option<(&str, &str, &str)> {
    let mut parts = alias.strip_prefix(ALIAS_PREFIX)?.strip_prefix('/')?.splitn(3, '/');
    Some((parts.next()?, parts.next()?, parts.next()?))
}

/// bandwidth speaks 0.3.0 and later, as the reference (`VersionsStartingFrom("0.3.0")`).
fn check_version(req: &Request) -> Result<(), cni::Error> {
    if cni::version::at_least(&req.config.cni_version, "0.3.0") {
        return Ok(());
    }
    Err(cni::Error::new(cni::Code::IncompatibleVersion, "incompatible CNI versions").with_details(format!(
        "config is {:?}, plugin supports [\"0.3.0\" \"0.3.1\" \"0.4.0\" \"1.0.0\" \"1.1.0\"]",
        req.config.cni_version
    )))
}

/// The host end of the container's veth: the peer of `CNI_IFNAME` in the container (its index in
/// our namespace, which IFLA_LINK_NETNSID says it is in), if it has one.
fn veth_peer(req: &Request, container: &NetNs, host: &mut Rtnl) -> anyhow::Result<Option<Link>> {
    let ifname = req.env.ifname.clone();
    let inside = container.run(|| -> anyhow::Result<Option<Link>> { Ok(Rtnl::open()?.link_by_name(&ifname)?) })??;
    match inside.filter(|l| l.is_kind("veth") && l.link_netnsid.is_some()).and_then(|l| l.peer_index) {
        Some(peer) => Ok(host.link_by_index(peer)?),
        None => Ok(None),
    }
}

/// The one host interface of prevResult that is a veth whose peer is in the container, found from
/// the host alone (a visit to the container is a thread, which on a busy node waits for a CPU).
/// `None` when that is not one link (or the host has no id for the container's namespace, which
/// it has once a veth joins the two): the caller then asks the container itself.
fn listed_veth_into(prev: &CniResult, container: &NetNs, host: &mut Rtnl) -> anyhow::Result<Option<Link>> {
    let Some(nsid) = host.nsid_of(container.as_fd())? else { return Ok(None) };
    let mut found = None;
    for listed in prev.interfaces.iter().filter(|i| i.sandbox.is_empty()) {
        if let Some(link) = host.link_by_name(&listed.name)?
            && link.is_kind("veth")
            && link.link_netnsid == Some(nsid)
        {
            if found.is_some() {
                return Ok(None);
            }
            found = Some(link);
        }
    }
    Ok(found)
}

/// The host end of the container's veth: prevResult's one listed veth into the container when
/// prevResult names the container's interface `CNI_IFNAME` (bridge's and ptp's results list its
/// host end), else the container's own answer ([`veth_peer`]).
fn host_veth(
    req: &Request,
    prev: Option<&CniResult>,
    container: &NetNs,
    host: &mut Rtnl,
) -> anyhow::Result<Option<Link>> {
    if let Some(prev) = prev
        && req.container_interface(prev).is_ok()
        && let Some(link) = listed_veth_into(prev, container, host)?
    {
        return Ok(Some(link));
    }
    veth_peer(req, container, host)
}

/// The host end of the container's veth, which prevResult must list as a host interface (the
/// reference's `getHostInterface`).
fn host_interface(req: &Request, prev: &CniResult, container: &NetNs, host: &mut Rtnl) -> anyhow::Result<Link> {
    anyhow::ensure!(!prev.interfaces.is_empty(), "no interfaces provided");
    let link = host_veth(req, Some(prev), container, host)?
        .with_context(|| format!("container interface {} has no veth peer in the host namespace", req.env.ifname))?;
    anyhow::ensure!(
        prev.interfaces.iter().any(|i| i.sandbox.is_empty() && i.name == link.name),
        "no veth peer of container interface found in host ns"
    );
    Ok(link)
}

/// The shape of one direction: a plain tbf, or an htb when subnets are named. `exclude` says
/// whether the named subnets are the unshaped ones.
fn shape(rate: u64, burst: u64, limits: &Limits) -> Shape {
    let tbf = tc::Tbf::from_bits(rate, burst);
    if !limits.unshaped_subnets.is_empty() {
        Shape::Htb { tbf, subnets: limits.unshaped_subnets.clone(), exclude: true }
    } else if !limits.shaped_subnets.is_empty() {
        Shape::Htb { tbf, subnets: limits.shaped_subnets.clone(), exclude: false }
    } else {
        Shape::Tbf(tbf)
    }
}

/// Removes the root qdisc `1:` (our tbf or htb) and the ingress qdisc from the host veth; what is
/// not there is fine.
fn unshape_host_veth(host: &mut Rtnl, index: u32) -> anyhow::Result<()> {
    for q in host.qdiscs(index)? {
        let ours = (q.is_root() && q.handle == tc::ROOT_HANDLE && (q.kind == "tbf" || q.kind == "htb"))
            || (q.is_ingress() && q.kind == "ingress");
        if ours {
            match host.del_qdisc(index, q.parent) {
                Err(e) if e.is(nix::libc::ENOENT) || e.is(nix::libc::ENODEV) || e.is(nix::libc::EINVAL) => {}
                other => other.with_context(|| format!("deleting the {} qdisc", q.kind))?,
            }
        }
    }
    Ok(())
}

/// Deletes our ifb device (and, when `unshape`, the host veth's qdiscs its alias names). A device
/// that is gone is success.
fn remove_ifb(host: &mut Rtnl, name: &str, unshape: bool) -> anyhow::Result<()> {
    let Some(ifb) = host.link_by_name(name)? else { return Ok(()) };
    if !ifb.is_kind("ifb") {
        return Ok(());
    }
    let mut failures = Failures::new();
    if unshape
        && let Some((_, _, veth)) = ifb.alias.as_deref().and_then(parse_alias)
        && let Some(link) = host.link_by_name(veth)?
        && redirects_to(host, link.index, ifb.index)
    {
        failures.check("removing the host veth's qdiscs", unshape_host_veth(host, link.index));
    }
    // Returns once the ifb is gone (its qdiscs and the veth's redirect to it with it), without
    // waiting for the kernel to free it: netkit's delete_link_detached.
    match host.delete_link_detached(ifb.index) {
        Err(e) if e.is(nix::libc::ENODEV) => {}
        other => {
            failures.check("deleting the ifb device", other.with_context(|| format!("deleting {name}")));
        }
    }
    failures.finish()
}

/// Whether link `index` redirects its ingress to `target` (it is the veth the ifb shapes).
fn redirects_to(host: &mut Rtnl, index: u32, target: u32) -> bool {
    host.filters(index, tc::INGRESS_HANDLE).is_ok_and(|fs| fs.iter().any(|f| f.redirects_to.contains(&target)))
}

impl Plugin for Bandwidth {
    fn name(&self) -> &'static str {
        "bandwidth"
    }

    fn add(&self, req: &Request) -> anyhow::Result<CniResult> {
        check_version(req)?;
        let limits = Limits::parse(req)?;
        let prev = req.config.prev_result.as_ref();
        let limits = match limits {
            Some(l) if !l.is_zero() => l,
            // Nothing to limit: pass the previous result on.
            _ => return Ok(prev.cloned().unwrap_or_default()),
        };
        let prev = prev.ok_or_else(|| cni::Error::config("must be called as chained plugin"))?;
        let mut result = prev.clone();
        let container = NetNs::open(&req.env.netns)?;
        let mut host = Rtnl::open()?;
        let veth = host_interface(req, prev, &container, &mut host)?;
        let mut undo = Rollback::new("bandwidth");

        // Towards the container: the root qdisc of the host veth.
        if limits.shapes_ingress() {
            let shape = shape(limits.ingress_rate, limits.ingress_burst, &limits);
            // Traffic towards the container leaves the host veth with a remote source, which is
            // what subnet filters look at in this direction.
            host.add_shape(veth.index, &shape, tc::Match::Source)
                .with_context(|| format!("create qdisc on {}", veth.name))?;
            // Registered only now: a root qdisc that was there already (EEXIST) is not ours.
            let index = veth.index;
            undo.push("the host veth's root qdisc", move || {
                let mut host = Rtnl::open()?;
                match host.del_qdisc(index, tc::TcHandle::ROOT) {
                    Err(e) if e.is(nix::libc::ENOENT) || e.is(nix::libc::EINVAL) => Ok(()),
                    other => other.context("deleting the root qdisc"),
                }
            });
            cni::trace::mark("ingress shaped");
        }

        // From the container: redirected to an ifb, shaped at its root.
        if limits.shapes_egress() {
            let name = ifb_name(&req.config.name, &req.env.container_id);
            host.create_ifb(&name, veth.mtu).with_context(|| format!("adding link {name}"))?;
            let undo_name = name.clone();
            undo.push(format!("ifb {name}"), move || remove_ifb(&mut Rtnl::open()?, &undo_name, false));
            cni::trace::mark("ifb created");
            let ifb = host.link_by_name(&name)?.with_context(|| format!("{name} vanished after creation"))?;
            let text = alias(&req.config.name, &req.env.container_id, &veth.name);
            // An alias is at most 255 bytes; without one, DEL still finds the device by name.
            if text.len() < 256 {
                host.set_alias(ifb.index, &text).context("naming the ifb's attachment")?;
            }
            cni::trace::mark("ifb named");

            host.add_ingress_qdisc(veth.index).context("create ingress qdisc")?;
            let index = veth.index;
            undo.push("the host veth's ingress qdisc", move || {
                let mut host = Rtnl::open()?;
                match host.del_qdisc(index, tc::TcHandle::INGRESS) {
                    Err(e) if e.is(nix::libc::ENOENT) || e.is(nix::libc::EINVAL) => Ok(()),
                    other => other.context("deleting the ingress qdisc"),
                }
            });
            host.add_redirect_filter(veth.index, ifb.index).context("add filter")?;
            cni::trace::mark("redirected");
            let shape = shape(limits.egress_rate, limits.egress_burst, &limits);
            host.add_shape(ifb.index, &shape, tc::Match::Destination).context("create ifb qdisc")?;
            result.interfaces.push(Interface { name, mac: ifb.mac_string(), ..Interface::default() });
            cni::trace::mark("egress shaped");
        }
        undo.commit();
        Ok(result)
    }

    fn del(&self, req: &Request) -> anyhow::Result<()> {
        check_version(req)?;
        Limits::parse(req)?;
        let mut failures = Failures::new();
        let mut host = Rtnl::open()?;
        // The veth's qdiscs, when the container end can still be reached (found from the host
        // when prevResult lists it; no prevResult needed: an ADD killed half way has none); the
        // veth usually goes next (the main plugin's DEL), but a chain without it would keep the
        // limits.
        if let Ok(Some(container)) = NetNs::open_if_exists(&req.env.netns)
            && let Ok(Some(veth)) = host_veth(req, req.config.prev_result.as_ref(), &container, &mut host)
        {
            failures.check("removing the host veth's qdiscs", unshape_host_veth(&mut host, veth.index));
            cni::trace::mark("qdiscs removed");
        }
        // The ifb by name, netns or not (and through its alias the veth's qdiscs).
        let name = ifb_name(&req.config.name, &req.env.container_id);
        failures.check("removing the ifb device", remove_ifb(&mut host, &name, true));
        cni::trace::mark("ifb removed");
        failures.finish()
    }

    fn check(&self, req: &Request) -> anyhow::Result<()> {
        check_version(req)?;
        let limits = Limits::parse(req)?;
        let prev =
            req.config.prev_result.as_ref().ok_or_else(|| cni::Error::config("must be called as a chained plugin"))?;
        let container = NetNs::open(&req.env.netns)?;
        let mut host = Rtnl::open()?;
        let veth = host_interface(req, prev, &container, &mut host)?;
        let Some(limits) = limits.filter(|l| !l.is_zero()) else { return Ok(()) };

        if limits.shapes_ingress() {
            let want = shape(limits.ingress_rate, limits.ingress_burst, &limits);
            host.check_shape(veth.index, &want).with_context(|| format!("ingress limit on {}", veth.name))?;
        }
        if limits.shapes_egress() {
            let name = ifb_name(&req.config.name, &req.env.container_id);
            let ifb = host.link_by_name(&name)?.with_context(|| format!("get ifb device: {name} not found"))?;
            anyhow::ensure!(
                redirects_to(&mut host, veth.index, ifb.index),
                "{} does not redirect its ingress to {name}",
                veth.name
            );
            let want = shape(limits.egress_rate, limits.egress_burst, &limits);
            host.check_shape(ifb.index, &want).with_context(|| format!("egress limit on {name}"))?;
        }
        Ok(())
    }

    fn status(&self, req: &Request) -> anyhow::Result<()> {
        check_version(req)?;
        Limits::parse(req)?;
        Ok(())
    }

    /// Removes the ifb devices (and the veth qdiscs they name) of this network's attachments that
    /// are no longer valid. Devices without our alias (the reference's) cannot be told apart by
    /// network and are left alone.
    fn gc(&self, req: &Request) -> anyhow::Result<()> {
        check_version(req)?;
        let Some(valid) = &req.config.valid_attachments else { return Ok(()) };
        let mut host = Rtnl::open()?;
        let mut failures = Failures::new();
        for link in host.links()? {
            if !link.is_kind("ifb") || !link.name.starts_with(IFB_PREFIX) {
                continue;
            }
            let Some((network, container_id, _)) = link.alias.as_deref().and_then(parse_alias) else { continue };
            if network != req.config.name || valid.iter().any(|a| a.container_id == container_id) {
                continue;
            }
            failures.check(&format!("collecting {}", link.name), remove_ifb(&mut host, &link.name, true));
        }
        failures.finish()
    }
}

fn main() {
    cni::skel::run(Bandwidth)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifb_names_are_the_reference_ones() {
        // `printf net1ctr1 | sha512sum` starts with 85373d34c684.
        let name = ifb_name("net1", "ctr1");
        assert_eq!(name, "bwp85373d34c684");
        assert_ne!(name, ifb_name("net2", "ctr1"));
    }

    #[test]
    fn aliases_round_trip() {
        assert_eq!(
            parse_alias(&alias("k8s-pod-network", "abc123", "veth1234")),
            Some(("k8s-pod-network", "abc123", "veth1234"))
        );
        assert_eq!(parse_alias("something else"), None);
        assert_eq!(parse_alias("cni-bandwidth/n"), None);
    }
}
