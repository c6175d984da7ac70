//! Moving a host interface into a container and back.
//!
//! Both directions go through a temporary namespace, as the reference does: the interface is
//! renamed there, where nothing else sees it, rather than in the host (udev and NetworkManager
//! react to renames and race with a quick second one) or in the container (its name may clash
//! with the container's own interfaces until the rename). The original host name travels with the
//! interface as its alias (`IFLA_IFALIAS`), which is also where the reference keeps it, so either
//! plugin can give back an interface the other took.
//!
//! Every step has an inverse; when a step fails, the ones before it are undone in reverse, so a
//! failure leaves the interface where it started, with its name, alias and up state.

use crate::config::Selector;
use crate::sysfs::Sysfs;
use anyhow::Context;
use netkit::{Link, NetNs, Rtnl};
use nix::libc::{EEXIST, EINVAL};
use std::os::fd::AsFd;

/// Finds the host interface a selector names, and the name it should get back on DEL.
///
/// An interface named by `device` that is missing may have come back from a container whose
/// namespace was destroyed without a DEL: the kernel returns a physical interface to the root
/// namespace under its container name, with the alias this plugin set. It is recognised by that
/// alias and taken again under its original name.
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
        _ => link.name.clone(),
    };
    Ok((link, original))
}

/// A host link that carries `name` as its alias but another name: one that came back from a
/// container without a DEL.
fn returned_device(host: &mut Rtnl, name: &str) -> anyhow::Result<Option<Link>> {
    Ok(host.links()?.into_iter().find(|l| l.alias.as_deref() == Some(name) && l.name != name))
}

/// Gives a returned interface (see [`find_host_device`]) its name back and clears the alias. It is
/// left down, as DEL leaves an interface. Returns whether there was one.
pub fn reclaim_returned(host: &mut Rtnl, name: &str) -> anyhow::Result<bool> {
    if host.link_by_name(name)?.is_some() {
        return Ok(false);
    }
    let Some(link) = returned_device(host, name)? else { return Ok(false) };
    if link.up {
        // Someone configured it under its new name; renaming it now would pull it from under them.
        return Ok(false);
    }
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

/// The one link in a temporary namespace besides `lo`: the interface being moved, whatever its
/// name and index are at that moment.
fn only_link(temp: &mut Rtnl) -> anyhow::Result<Link> {
    temp.links()?.into_iter().find(|l| l.name != "lo").context("the interface vanished from the temporary namespace")
}

/// How far a move got, for undoing it.
#[derive(Clone, Copy, PartialEq, PartialOrd)]
enum Reached {
    Nowhere,
    Temp,
    Renamed,
    Aliased,
    Container,
}

/// Moves the host interface `device` into `container` as `ifname`, with `original` as its alias,
/// and brings it up there. Returns the interface as the container sees it.
pub fn move_in(
    host: &mut Rtnl,
    device: &Link,
    original: &str,
    container: &NetNs,
    ifname: &str,
) -> anyhow::Result<Link> {
    let temp_ns = NetNs::new_anonymous().context("creating a temporary network namespace")?;
    let mut temp = Rtnl::open_in(&temp_ns)?;
    let mut inside = Rtnl::open_in(container)?;
    let host_ns = NetNs::current()?;

    let mut reached = Reached::Nowhere;
    let outcome = (|| -> anyhow::Result<Link> {
        host.move_to_netns(device.index, temp_ns.as_fd()).map_err(|e| {
            let netns_local = e.errno() == Some(EINVAL);
            let e = anyhow::Error::from(e);
            if netns_local {
                e.context(format!("{} cannot leave its network namespace (the kernel pins it)", device.name))
            } else {
                e.context(format!("failed to move {} to a temporary namespace", device.name))
            }
        })?;
        reached = Reached::Temp;
        let link = only_link(&mut temp)?;
        temp.rename(link.index, ifname)
            .with_context(|| format!("failed to rename host device {} to {ifname}", device.name))?;
        reached = Reached::Renamed;
        temp.set_alias(link.index, original).with_context(|| format!("failed to set alias to {original}"))?;
        reached = Reached::Aliased;
        temp.move_to_netns(link.index, container.as_fd()).map_err(|e| {
            let exists = e.errno() == Some(EEXIST);
            let e = anyhow::Error::from(e);
            if exists {
                e.context(format!("interface {ifname:?} already exists in the container"))
            } else {
                e.context(format!("failed to move {ifname} (host: {}) into the container", device.name))
            }
        })?;
        reached = Reached::Container;
        let link = inside.link_by_name(ifname)?.with_context(|| format!("failed to find {ifname} in the container"))?;
        inside.set_up(link.index).with_context(|| format!("failed to set {ifname} up"))?;
        Ok(inside.link_by_index(link.index)?.unwrap_or(link))
    })();

    if outcome.is_err() {
        let undone = undo_move_in(host, &mut temp, &mut inside, &temp_ns, &host_ns, device, ifname, reached);
        if let Err(e) = undone {
            eprintln!("host-device: could not give {} back to the host: {e:#}", device.name);
        }
    }
    outcome
}

#[allow(clippy::too_many_arguments)]
fn undo_move_in(
    host: &mut Rtnl,
    temp: &mut Rtnl,
    inside: &mut Rtnl,
    temp_ns: &NetNs,
    host_ns: &NetNs,
    device: &Link,
    ifname: &str,
    reached: Reached,
) -> anyhow::Result<()> {
    if reached == Reached::Nowhere {
        return Ok(());
    }
    if reached == Reached::Container
        && let Some(link) = inside.link_by_name(ifname)?
    {
        inside.move_to_netns(link.index, temp_ns.as_fd())?;
    }
    let link = only_link(temp)?;
    if reached >= Reached::Aliased {
        temp.set_alias(link.index, device.alias.as_deref().unwrap_or(""))?;
    }
    if reached >= Reached::Renamed {
        temp.rename(link.index, &device.name)?;
    }
    temp.move_to_netns(link.index, host_ns.as_fd())?;
    // Leaving a namespace takes a link down; it goes back as it was.
    if device.up
        && let Some(link) = host.link_by_name(&device.name)?
    {
        host.set_up(link.index)?;
    }
    Ok(())
}

/// What [`move_out`] found in the container.
#[derive(Debug, PartialEq, Eq)]
pub enum MovedOut {
    /// The interface went back to the host under this name.
    Returned(String),
    /// There was no such interface in the container (a repeated DEL).
    Absent,
}

/// Moves the container's `ifname` back to the host under the name its alias holds, and clears the
/// alias. The interface is left down: what it was before ADD is not recorded anywhere.
pub fn move_out(host_ns: &NetNs, container: &NetNs, ifname: &str) -> anyhow::Result<MovedOut> {
    let mut inside = Rtnl::open_in(container)?;
    let Some(link) = inside.link_by_name(ifname)? else { return Ok(MovedOut::Absent) };
    let original = link.alias.clone().filter(|a| !a.is_empty()).with_context(|| {
        format!("failed to find original ifname for {ifname:?} (alias is not set): it was not moved in by host-device")
    })?;
    anyhow::ensure!(
        cni::env::validate_ifname(&original).is_ok(),
        "the alias {original:?} of {ifname} is not an interface name, so it cannot be the original name"
    );

    let temp_ns = NetNs::new_anonymous().context("creating a temporary network namespace")?;
    let mut temp = Rtnl::open_in(&temp_ns)?;
    inside.move_to_netns(link.index, temp_ns.as_fd()).with_context(|| format!("failed to move {ifname} out"))?;

    let mut renamed = false;
    let outcome = (|| -> anyhow::Result<()> {
        let moved = only_link(&mut temp)?;
        temp.rename(moved.index, &original)
            .with_context(|| format!("failed to rename device {ifname} to {original}"))?;
        renamed = true;
        temp.set_alias(moved.index, "").with_context(|| format!("failed to unset alias of {original}"))?;
        temp.move_to_netns(moved.index, host_ns.as_fd()).map_err(|e| {
            let exists = e.errno() == Some(EEXIST);
            let e = anyhow::Error::from(e);
            if exists {
                e.context(format!("cannot return {ifname} to the host: a link named {original} already exists there"))
            } else {
                e.context(format!("failed to move {original} to the host"))
            }
        })?;
        Ok(())
    })();

    if let Err(e) = outcome {
        // Back into the container as it was, so a retried DEL finds it where it expects.
        let undone = (|| -> anyhow::Result<()> {
            let moved = only_link(&mut temp)?;
            temp.set_alias(moved.index, &original)?;
            if renamed {
                temp.rename(moved.index, ifname)?;
            }
            temp.move_to_netns(moved.index, container.as_fd())?;
            if link.up
                && let Some(back) = inside.link_by_name(ifname)?
            {
                inside.set_up(back.index)?;
            }
            Ok(())
        })();
        if let Err(u) = undone {
            eprintln!("host-device: could not put {ifname} back into the container: {u:#}");
        }
        return Err(e);
    }
    Ok(MovedOut::Returned(original))
}
