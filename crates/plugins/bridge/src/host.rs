//! The host side of a bridge attachment: the bridge itself, the host end of the veth pair and its
//! port settings, gateway addresses, forwarding. Every function acts in the namespace of the
//! handle it is given (the host's) and needs CAP_NET_ADMIN.

use crate::config::BridgeConf;
use anyhow::Context;
use ipnetwork::IpNetwork;
use netkit::bridge_vlan::vlan_unsupported;
use netkit::{Family, Link, NetNs, NlError, Rtnl, VethPair, sysctl};
use netlink_packet_route::link::InfoBridgePort;
use std::os::fd::AsFd;
use std::time::Duration;

fn vlan_error(bridge: &str, err: NlError) -> anyhow::Error {
    if vlan_unsupported(&err) {
        anyhow::anyhow!(
            "bridge {bridge}: this kernel has no bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING), \
             which the vlan and vlanTrunk options need"
        )
    } else {
        anyhow::Error::new(err).context(format!("configuring VLANs on {bridge}"))
    }
}

/// Creates the bridge if it is missing (another ADD may create it at the same moment, which is
/// fine), sets VLAN filtering, promiscuous mode and `accept_ra=0`, and brings it up. A link of that
/// name that is not a bridge is an error.
pub fn ensure_bridge(rtnl: &mut Rtnl, conf: &BridgeConf) -> anyhow::Result<Link> {
    let name = conf.bridge.as_str();
    let bridge = match rtnl.link_by_name(name)? {
        Some(bridge) => bridge,
        None => {
            match rtnl.create_bridge(name, conf.mtu, conf.uses_vlans()) {
                Ok(()) => {}
                Err(e) if e.is(nix::libc::EEXIST) => {}
                Err(e) if vlan_unsupported(&e) => return Err(vlan_error(name, e)),
                Err(e) => return Err(e).with_context(|| format!("creating bridge {name}")),
            }
            rtnl.link_by_name(name)?.with_context(|| format!("bridge {name} vanished while being set up"))?
        }
    };
    if !bridge.is_kind("bridge") {
        anyhow::bail!("{name:?} already exists but is not a bridge");
    }
    let mut changed = false;
    if conf.uses_vlans() && bridge.vlan_filtering != Some(true) {
        rtnl.set_vlan_filtering(bridge.index, true).map_err(|e| vlan_error(name, e))?;
        changed = true;
    }
    if conf.promisc_mode && !bridge.promisc {
        rtnl.set_promisc(bridge.index, true).with_context(|| format!("setting promiscuous mode on {name}"))?;
        changed = true;
    }
    // We own the routes of this interface; router advertisements must not add their own.
    let _ = sysctl::write(&format!("net/ipv6/conf/{name}/accept_ra"), "0");
    if !bridge.up {
        // Without a usable link-local address the host sends no neighbour solicitation on the
        // bridge (the kernel's NS takes its source from it), so IPv6 traffic forwarded to a
        // container (a published port) stalls until the link-local's DAD ends, a second or two
        // after the first port joins. The gateway addresses are added without DAD already.
        let _ = sysctl::write(&format!("net/ipv6/conf/{name}/accept_dad"), "0");
        rtnl.set_up(bridge.index).with_context(|| format!("setting {name} up"))?;
        changed = true;
    }
    // Read again only when something changed: the usual ADD finds the bridge as it needs it.
    if !changed {
        return Ok(bridge);
    }
    Ok(rtnl.link_by_index(bridge.index)?.unwrap_or(bridge))
}

/// `veth` and 8 random hex digits, as the reference names host ends (NetworkManager ignores
/// `veth*`).
fn random_veth_name() -> String {
    let mut bytes = [0u8; 4];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer it is given.
    let n = unsafe { nix::libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        // No entropy at all is practically impossible; fall back to the clock.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        bytes = (nanos.subsec_nanos() ^ std::process::id()).to_ne_bytes();
    }
    format!("veth{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Creates the veth pair with its container end, `ifname`, directly in `container` (and the given
/// MAC), and its host end under a fresh random name in the host. Returns the host end's name.
pub fn create_veth(
    host: &mut Rtnl,
    container: &NetNs,
    ifname: &str,
    mtu: Option<u32>,
    mac: Option<[u8; 6]>,
) -> anyhow::Result<String> {
    for _ in 0..10 {
        let name = random_veth_name();
        let pair = VethPair { name: &name, peer_name: ifname, peer_ns: Some(container.as_fd()), mtu, peer_mac: mac };
        match host.create_veth(&pair) {
            Ok(()) => return Ok(name),
            // EEXIST names either end. Only a clash of our random host name is worth a retry.
            Err(e) if e.is(nix::libc::EEXIST) && host.link_by_name(&name)?.is_some() => continue,
            Err(e) if e.is(nix::libc::EEXIST) => {
                anyhow::bail!("container veth name {ifname:?} already exists in the container")
            }
            Err(e) if e.is(nix::libc::EADDRNOTAVAIL) => {
                return Err(e).context("creating the veth pair: the container MAC address is not usable");
            }
            Err(e) => return Err(e).with_context(|| format!("creating veth pair {name}/{ifname}")),
        }
    }
    anyhow::bail!("failed to find a unique veth name")
}

/// Attaches the host end to the bridge with the configured port flags and VLANs, and brings it up.
pub fn setup_port(host: &mut Rtnl, conf: &BridgeConf, port: &Link, bridge: &Link) -> anyhow::Result<()> {
    let name = port.name.as_str();
    host.set_master(port.index, bridge.index)
        .with_context(|| format!("connecting {name} to bridge {}", bridge.name))?;
    host.set_bridge_port(
        port.index,
        vec![InfoBridgePort::HairpinMode(conf.hairpin_mode), InfoBridgePort::Isolated(conf.port_isolation)],
    )
    .with_context(|| format!("setting hairpin/isolation on {name}"))?;
    if conf.uses_vlans() {
        setup_port_vlans(host, conf.vlan, &conf.vlan_trunk, conf.preserve_default_vlan, port, &bridge.name)?;
    }
    let _ = sysctl::write(&format!("net/ipv6/conf/{name}/accept_ra"), "0");
    host.set_up(port.index).with_context(|| format!("setting {name} up"))?;
    Ok(())
}

/// The port's VLANs as the reference sets them: the default VLAN removed unless preserved, the
/// access VLAN as PVID and untagged, trunk VLANs tagged, and VLAN 1 native on a trunk without one.
fn setup_port_vlans(
    host: &mut Rtnl,
    vlan: u16,
    trunk: &[u16],
    preserve_default: bool,
    port: &Link,
    bridge: &str,
) -> anyhow::Result<()> {
    if !preserve_default {
        for vid in host.port_vlans(port.index).map_err(|e| vlan_error(bridge, e))? {
            host.del_port_vlan(port.index, vid).map_err(|e| vlan_error(bridge, e))?;
        }
    }
    if vlan != 0 {
        host.add_port_vlan(port.index, vlan, true, true).map_err(|e| vlan_error(bridge, e))?;
    }
    for vid in trunk {
        host.add_port_vlan(port.index, *vid, false, false).map_err(|e| vlan_error(bridge, e))?;
    }
    if vlan == 0 && !trunk.is_empty() {
        host.add_port_vlan(port.index, 1, true, true).map_err(|e| vlan_error(bridge, e))?;
    }
    Ok(())
}

/// The L3 gateway for a VLAN on the bridge: a veth pair whose end `<bridge>.<vlan>` stays in the
/// host and carries the gateway address, and whose other end is an access port of that VLAN.
pub fn ensure_vlan_gateway(host: &mut Rtnl, conf: &BridgeConf, bridge: &Link) -> anyhow::Result<Link> {
    let name = format!("{}.{}", bridge.name, conf.vlan);
    cni::env::validate_ifname(&name).map_err(|e| anyhow::anyhow!("VLAN gateway interface {name}: {}", e.msg))?;
    if let Some(existing) = host.link_by_name(&name)? {
        return Ok(existing);
    }
    let port_name = random_veth_name();
    let pair = VethPair { name: &port_name, peer_name: &name, peer_ns: None, mtu: conf.mtu, peer_mac: None };
    host.create_veth(&pair).with_context(|| format!("creating VLAN gateway {name}"))?;
    let port = host.link_by_name(&port_name)?.context("VLAN gateway port vanished")?;
    host.set_master(port.index, bridge.index)?;
    setup_port_vlans(host, conf.vlan, &[], conf.preserve_default_vlan, &port, &bridge.name)?;
    host.set_up(port.index)?;
    let gateway = host.link_by_name(&name)?.context("VLAN gateway interface vanished")?;
    host.set_up(gateway.index)?;
    Ok(gateway)
}

/// Puts the gateway address `gw` (with the subnet's prefix) on `link`, as the reference's
/// `ensureAddr`: an address already there is fine; another IPv4 address, or an IPv6 address of an
/// overlapping prefix, is an error unless `force` replaces it. Concurrent ADDs adding the same
/// address are fine (EEXIST). IPv6 skips duplicate address detection unless `dad`: the plugin
/// owns this segment's addresses, and a tentative gateway would cut containers off for a second.
pub fn ensure_gateway_address(
    host: &mut Rtnl,
    link: &Link,
    gw: IpNetwork,
    force: bool,
    dad: bool,
) -> anyhow::Result<()> {
    let family = Family::of(&gw.ip());
    for existing in host.addresses(Some(link.index), Some(family))? {
        if existing.net == gw {
            return Ok(());
        }
        let conflicts = gw.is_ipv4() || existing.net.contains(gw.ip()) || gw.contains(existing.net.ip());
        if !conflicts || !existing.is_global() {
            continue;
        }
        if !force {
            anyhow::bail!("{:?} already has an IP address different from {gw} ({})", link.name, existing.net);
        }
        host.del_address(link.index, existing.net)
            .with_context(|| format!("removing {} from {}", existing.net, link.name))?;
    }
    match host.add_address(link.index, gw, !dad) {
        Err(e) if !e.is(nix::libc::EEXIST) => {
            return Err(e).with_context(|| format!("could not add IP address {gw} to {:?}", link.name));
        }
        _ => {}
    }
    // Pin the bridge's MAC to its current value: otherwise it follows the lowest port MAC and
    // changes as containers come and go, which breaks neighbours' caches.
    if let Some(current) = host.link_by_index(link.index)? {
        host.set_mac(link.index, &current.mac).with_context(|| format!("pinning the MAC of {}", link.name))?;
    }
    Ok(())
}

/// Turns on forwarding for a family (the reference writes only when it is off).
pub fn enable_forwarding(family: Family) -> anyhow::Result<()> {
    match family {
        Family::V4 => sysctl::write("net/ipv4/ip_forward", "1"),
        Family::V6 => sysctl::write("net/ipv6/conf/all/forwarding", "1"),
    }
}

/// Waits until the host end is operationally up (it is as soon as both ends are up and the bridge
/// port forwards, which with STP off is at once); a port that never gets there is in error.
pub fn wait_port_up(host: &mut Rtnl, port: &str) -> anyhow::Result<Link> {
    let mut link = None;
    // Usually up at once or within a millisecond or two (the kernel's link watcher runs the
    // state change); the long tail is the reference's own budget.
    for pause_ms in [0, 1, 1, 2, 5, 10, 30, 50, 100, 300, 500, 1000, 1000] {
        std::thread::sleep(Duration::from_millis(pause_ms));
        let current = host.link_by_name(port)?.with_context(|| format!("host veth {port} vanished"))?;
        if current.oper_up {
            return Ok(current);
        }
        link = Some(current);
    }
    anyhow::bail!("bridge port {port} in error state (not operationally up: {:?})", link.map(|l| l.oper_up))
}
