//! `loopback`: brings `lo` up in the container's network namespace.
//!
//! Alone in a conflist it is an isolated network (Docker's `--network=none`). Behaviour and result
//! shape follow the reference plugin: `CNI_IFNAME` is ignored, ADD reports `lo` with its loopback
//! addresses (or passes `prevResult` through), DEL brings `lo` down and succeeds when the namespace
//! is already gone.

use anyhow::Context;
use cni::{CniResult, Interface, IpConfig, Plugin, Request};
use netkit::{Address, Family, NetNs, Rtnl};

struct Loopback;

/// Brings `lo` up (or down) inside `ns` and returns its addresses.
fn set_loopback(ns: &NetNs, up: bool) -> anyhow::Result<Vec<Address>> {
    ns.run(|| -> anyhow::Result<Vec<Address>> {
        let mut rtnl = Rtnl::open()?;
        let lo = rtnl.link_by_name("lo")?.context("the namespace has no lo interface")?;
        if up {
            rtnl.set_up(lo.index).context("setting lo up")?;
        } else {
            rtnl.set_down(lo.index).context("setting lo down")?;
        }
        Ok(rtnl.addresses(Some(lo.index), None)?)
    })?
}

impl Plugin for Loopback {
    fn name(&self) -> &'static str {
        "loopback"
    }

    fn add(&self, req: &Request) -> anyhow::Result<CniResult> {
        let ns = NetNs::open(&req.env.netns)?;
        let addresses = set_loopback(&ns, true)?;
        if let Some(bad) = addresses.iter().find(|a| !a.net.ip().is_loopback()) {
            anyhow::bail!("loopback interface found with non-loopback address {}", bad.net.ip());
        }
        if let Some(prev) = &req.config.prev_result {
            // Chained after another plugin: report what it reported.
            return Ok(prev.clone());
        }
        let first = |family: Family| addresses.iter().find(|a| Family::of(&a.net.ip()) == family);
        let ips = [first(Family::V4), first(Family::V6)]
            .into_iter()
            .flatten()
            .map(|a| IpConfig { address: a.net, gateway: None, interface: Some(0) })
            .collect();
        Ok(CniResult {
            interfaces: vec![Interface {
                name: "lo".to_string(),
                mac: "00:00:00:00:00:00".to_string(),
                sandbox: req.env.netns.clone(),
                ..Interface::default()
            }],
            ips,
            ..CniResult::default()
        })
    }

    fn del(&self, req: &Request) -> anyhow::Result<()> {
        // A namespace that is gone took its lo with it: nothing to do.
        if let Some(ns) = NetNs::open_if_exists(&req.env.netns)? {
            set_loopback(&ns, false)?;
        }
        Ok(())
    }

    fn check(&self, req: &Request) -> anyhow::Result<()> {
        let ns = NetNs::open(&req.env.netns)?;
        let lo = ns.run(|| -> anyhow::Result<_> { Ok(Rtnl::open()?.link_by_name("lo")?) })??;
        match lo {
            Some(lo) if lo.up => Ok(()),
            Some(_) => anyhow::bail!("loopback interface is down"),
            None => anyhow::bail!("the namespace has no lo interface"),
        }
    }
}

fn main() {
    cni::skel::run(Loopback)
}
