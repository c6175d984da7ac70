//! Moving a host interface into a container and back.
//!
//! Both directions go through a temporary namespace, as the reference does: the interface is
//! renamed there, where nothing else sees it, rather than in the host (udev and NetworkManager
//! react to renames and race with a quick second one) or in the container (its name may clash
//! with the container's own interfaces until the rename). The original host name travels with the
//! interface as its alias (`IFLA_IFALIAS`), which is also where the reference keeps it, so either
//! plugin can give back an interface the other took.
//!
//! A temporary namespace must never take a device down with it: destroying a namespace destroys
//! the virtual interfaces in it and sends physical ones to the root namespace under whatever name
//! they have. So the interface in transit is held by a [`Transit`], which on any failure (and, as a
//! last resort, when dropped) sends it back where it came from with its name, alias and up state,
//! trying every step even when one fails.

use crate::config::Selector;
use crate::sysfs::Sysfs;
use anyhow::Context;
use cni::fault;
use netkit::{Link, NetNs, Rtnl};
use nix::libc::{EEXIST, EINVAL};
use std::os::fd::AsFd;

/// Finds the host interface a selector names, and the name it should get back on DEL.
///
/// An interface that came back from a container whose namespace was destroyed without a DEL sits
/// in the host under its container name, down, with the alias this plugin set. For `device` it is
/// found by that alias when the name is missing; for every selector its original name is the alias.
pub fn find_host_device(host: &mut Rtnl, sysfs: &Sysfs, selector: &Selector) -> anyhow::Result<(Link, String)> {
    let found = match selector {
        Selector::Name(name) => match host.link_by_name(name)? {
            Some(link) => Some(link),
            None => returned_device(host, name)?,
        },
        Selector::HwAddr(mac) => host.links()?.into_iter().find(|l| l.mac == *mac),
        _ => {
            let name = sysfs.interface_name(selector)?.expect("sysfs selectors name an interface");
            host.link_by_name(&name)?
        }
    };
    let link = found.with_context(|| format!("failed to find host device {}", describe(selector)))?;
    let original = match selector {
        Selector::Name(name) => name.clone(),
        _ if looks_returned(host, &link)? => link.alias.clone().unwrap_or_default(),
        _ => link.name.clone(),
    };
    Ok((link, original))
}

/// Whether a host link looks like one the kernel returned from a dead container: down, and with an
/// alias that is an interface name other than its own that no host link has.
fn looks_returned(host: &mut Rtnl, link: &Link) -> anyhow::Result<bool> {
    let Some(alias) = link.alias.as_deref().filter(|a| *a != link.name) else { return Ok(false) };
    Ok(!link.up && cni::env::validate_ifname(alias).is_ok() && host.link_by_name(alias)?.is_none())
}

/// A host link that carries `name` as its alias but another name, and is down: one that came
/// back from a container without a DEL.
fn returned_device(host: &mut Rtnl, name: &str) -> anyhow::Result<Option<Link>> {
    Ok(host.links()?.into_iter().find(|l| l.alias.as_deref() == Some(name) && l.name != name && !l.up))
}

/// Gives a returned interface (see [`find_host_device`]) its name back and clears the alias. It is
/// left down, as DEL leaves an interface. Returns whether there was one.
pub fn reclaim_returned(host: &mut Rtnl, name: &str) -> anyhow::Result<bool> {
    if host.link_by_name(name)?.is_some() {
        return Ok(false);
    }
    let Some(link) = returned_device(host, name)? else { return Ok(false) };
    host.rename(link.index, name).with_context(|| format!("renaming returned device {} back to {name}", link.name))?;
    host.set_alias(link.index, "").with_context(|| format!("clearing the alias of {name}"))?;
    Ok(true)
}

pub fn describe(selector: &Selector) -> String {
    match selector {
        Selector::Name(name) => format!("{name:?}"),
        Selector::HwAddr(mac) => format!("with hardware address {}", netkit::format_mac(mac)),
        Selector::KernelPath(path) => format!("at {}", path.display()),
        Selector::Pci(id) => format!("on PCI device {id}"),
        Selector::Auxiliary(id) => format!("on auxiliary device {id}"),
    }
}

/// How an interface must look when it goes back where it came from.
struct Home<'a> {
    ns: &'a NetNs,
    rtnl: &'a mut Rtnl,
    name: String,
    alias: String,
    up: bool,
}

/// A temporary namespace with (possibly) our interface in it. `index` is the interface's index in
/// the namespace while it is there; indexes do not change within a namespace.
struct Transit<'a> {
    ns: NetNs,
    rtnl: Rtnl,
    index: Option<u32>,
    home: Home<'a>,
}

impl<'a> Transit<'a> {
    fn new(home: Home<'a>) -> anyhow::Result<Transit<'a>> {
        let ns = NetNs::new_anonymous().context("creating a temporary network namespace")?;
        let mut rtnl = Rtnl::open_in(&ns).context("opening netlink in the temporary namespace")?;
        if fault::enabled("host-device:transit-decoys") {
            // What kernels with tunnel modules loaded put in every new namespace (tunl0, sit0...):
            // links that are not ours, with lower indexes than ours.
            rtnl.create_veth(&netkit::VethPair { name: "decoy0", peer_name: "decoy1", ..Default::default() })?;
        }
        Ok(Transit { ns, rtnl, index: None, home })
    }

    /// Records that the interface arrived here, finding it by the name it had when it left.
    fn arrived(&mut self, name: &str) -> anyhow::Result<u32> {
        let link = self
            .rtnl
            .link_by_name(name)?
            .with_context(|| format!("{name} is not in the temporary namespace after the move"))?;
        self.index = Some(link.index);
        Ok(link.index)
    }

    /// Sends the interface home as it was. Every step is tried even if one before failed; the
    /// move itself falls back to a spare name if the home name has been taken meanwhile (the alias
    /// still holds the original, so it can be recovered). Returns what went wrong, if anything.
    fn give_back(&mut self) -> anyhow::Result<()> {
        let Some(index) = self.index else { return Ok(()) };
        let mut problems = Vec::new();
        let home = &mut self.home;
        if let Err(e) = self.rtnl.set_alias(index, &home.alias) {
            problems.push(format!("restoring the alias: {e}"));
        }
        let named = match self.rtnl.rename(index, &home.name) {
            Ok(()) => true,
            Err(e) => {
                problems.push(format!("renaming back to {}: {e}", home.name));
                false
            }
        };
        let mut moved = named && self.rtnl.move_to_netns(index, home.ns.as_fd()).is_ok();
        let mut name = home.name.clone();
        if !moved {
            // The name is taken at home (or could not be set): go home under a spare one.
            name = format!("hdev{index}");
            // The alias keeps the real name, so GC or the next ADD can give it back.
            let _ = self.rtnl.set_alias(index, if home.alias.is_empty() { &home.name } else { &home.alias });
            moved = self.rtnl.rename(index, &name).is_ok() && self.rtnl.move_to_netns(index, home.ns.as_fd()).is_ok();
            if moved {
                problems.push(format!("{} was taken, so the interface went back as {name}", home.name));
            } else {
                problems.push("moving it out of the temporary namespace failed".to_string());
            }
        }
        if moved {
            self.index = None;
            if home.up
                && let Err(e) = home.rtnl.link_by_name(&name).map(|l| l.map(|l| home.rtnl.set_up(l.index)))
            {
                problems.push(format!("setting {name} up again: {e}"));
            }
        }
        if problems.is_empty() { Ok(()) } else { anyhow::bail!("{}", problems.join("; ")) }
    }
}

impl Drop for Transit<'_> {
    fn drop(&mut self) {
        if self.index.is_some()
            && let Err(e) = self.give_back()
        {
            eprintln!("host-device: an interface was left in a temporary namespace: {e:#}");
        }
    }
}

/// A move between namespaces with its failure explained: `telling` when the kernel answered
/// `errno` (the one failure with a known cause), `plain` otherwise.
fn explain_move(
    moved: Result<(), netkit::NlError>,
    errno: i32,
    telling: impl FnOnce() -> String,
    plain: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    moved.map_err(|e| {
        let why = if e.errno() == Some(errno) { telling() } else { plain() };
        anyhow::Error::from(e).context(why)
    })
}

/// Adds to `err` what went wrong while undoing.
fn with_undo(err: anyhow::Error, undo: anyhow::Result<()>) -> anyhow::Error {
    match undo {
        Ok(()) => err,
        Err(u) => err.context(format!("and undoing it failed ({u:#})")),
    }
}

/// Moves the host interface `device` into `container` as `ifname`, with `original` as its alias,
/// and brings it up there. Returns the interface as the container sees it. On failure the
/// interface is back in the host as it was.
pub fn move_in(
    host: &mut Rtnl,
    device: &Link,
    original: &str,
    container: &NetNs,
    ifname: &str,
) -> anyhow::Result<Link> {
    let host_ns = NetNs::current()?;
    let mut inside = Rtnl::open_in(container).context("opening netlink in the container")?;
    let home = Home {
        ns: &host_ns,
        rtnl: host,
        name: device.name.clone(),
        alias: device.alias.clone().unwrap_or_default(),
        up: device.up,
    };
    let mut transit = Transit::new(home)?;

    let moved = transit.home.rtnl.move_to_netns(device.index, transit.ns.as_fd());
    explain_move(
        moved,
        EINVAL,
        || format!("{} cannot leave its network namespace (the kernel pins it)", device.name),
        || format!("failed to move {} to a temporary namespace", device.name),
    )?;
    let moved = (|| -> anyhow::Result<Link> {
        let index = transit.arrived(&device.name)?;
        fault::point("host-device:in-transit")?;
        transit
            .rtnl
            .rename(index, ifname)
            .with_context(|| format!("failed to rename host device {} to {ifname}", device.name))?;
        fault::point("host-device:renamed")?;
        transit.rtnl.set_alias(index, original).with_context(|| format!("failed to set alias to {original}"))?;
        fault::point("host-device:aliased")?;
        let moved = transit.rtnl.move_to_netns(index, container.as_fd());
        explain_move(
            moved,
            EEXIST,
            || format!("interface {ifname:?} already exists in the container"),
            || format!("failed to move {ifname} (host: {}) into the container", device.name),
        )?;
        transit.index = None;
        let in_container = (|| -> anyhow::Result<Link> {
            let link =
                inside.link_by_name(ifname)?.with_context(|| format!("failed to find {ifname} in the container"))?;
            fault::point("host-device:in-container")?;
            inside.set_up(link.index).with_context(|| format!("failed to set {ifname} up"))?;
            fault::point("host-device:up")?;
            Ok(inside.link_by_index(link.index)?.unwrap_or(link))
        })();
        if in_container.is_err()
            && let Some(link) = inside.link_by_name(ifname).ok().flatten()
            && inside.move_to_netns(link.index, transit.ns.as_fd()).is_ok()
        {
            transit.arrived(ifname)?;
        }
        in_container
    })();
    moved.map_err(|e| {
        let undone = transit.give_back();
        with_undo(e, undone)
    })
}

/// What [`move_out`] found in the container.
#[derive(Debug, PartialEq, Eq)]
pub enum MovedOut {
    /// The interface went back to the host under this name.
    Returned(String),
    /// There was no interface of ours by that name in the container (a repeated DEL, or an ADD that
    /// failed because the container had its own).
    Absent,
}

/// Moves the container's `ifname` back to the host under the name its alias holds, and clears the
/// alias. The interface is left down: what it was before ADD is not recorded anywhere. On failure
/// it is back in the container as it was, for a retry.
///
/// An interface without an alias was not moved in by this plugin, unless the previous result
/// lists it with its MAC (`expected_mac`): then it is ours but its host name is lost, an error.
pub fn move_out(
    host_ns: &NetNs,
    container: &NetNs,
    ifname: &str,
    expected_mac: Option<&str>,
) -> anyhow::Result<MovedOut> {
    let mut inside = Rtnl::open_in(container).context("opening netlink in the container")?;
    let link = inside.link_by_name(ifname).with_context(|| format!("looking for {ifname} in the container"))?;
    let Some(link) = link else { return Ok(MovedOut::Absent) };
    let Some(original) = link.alias.clone().filter(|a| !a.is_empty()) else {
        if expected_mac.is_some_and(|m| m.eq_ignore_ascii_case(&link.mac_string())) {
            anyhow::bail!("failed to find original ifname for {ifname:?} (alias is not set)");
        }
        eprintln!("host-device: {ifname} in the container has no alias; it is not one this plugin moved in");
        return Ok(MovedOut::Absent);
    };
    anyhow::ensure!(
        cni::env::validate_ifname(&original).is_ok(),
        "the alias {original:?} of {ifname} is not an interface name, so it cannot be the original name"
    );

    let home =
        Home { ns: container, rtnl: &mut inside, name: ifname.to_string(), alias: original.clone(), up: link.up };
    let mut transit = Transit::new(home)?;
    transit
        .home
        .rtnl
        .move_to_netns(link.index, transit.ns.as_fd())
        .with_context(|| format!("failed to move {ifname} out of the container"))?;
    let returned = (|| -> anyhow::Result<()> {
        let index = transit.arrived(ifname)?;
        fault::point("host-device:out-in-transit")?;
        transit
            .rtnl
            .rename(index, &original)
            .with_context(|| format!("failed to rename device {ifname} to {original}"))?;
        fault::point("host-device:out-renamed")?;
        transit.rtnl.set_alias(index, "").with_context(|| format!("failed to unset alias of {original}"))?;
        fault::point("host-device:out-unaliased")?;
        let moved = transit.rtnl.move_to_netns(index, host_ns.as_fd());
        explain_move(
            moved,
            EEXIST,
            || format!("cannot return {ifname} to the host: a link named {original} already exists there"),
            || format!("failed to move {original} to the host"),
        )?;
        transit.index = None;
        Ok(())
    })();
    returned.map_err(|e| {
        let undone = transit.give_back();
        with_undo(e, undone)
    })?;
    Ok(MovedOut::Returned(original))
}
