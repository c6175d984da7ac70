//! `static`: IPAM that hands out exactly the addresses it is told, with the config's routes and
//! DNS. Multus users give each pod its addresses through the `ips` annotation
//! (`runtimeConfig.ips`); others write them into the config or pass `CNI_ARGS IP=`.
//!
//! Nothing is allocated, so nothing is stored: DEL and GC have nothing to do. ADD prints the
//! addresses without an interface index (the interface plugin assigns it), in whatever version
//! the config asks for. CHECK compares the addresses with the `prevResult` the interface plugin
//! passed on; unlike the reference, an address missing from it is a failure too.

pub mod config;

use cni::{CniResult, IpConfig, Plugin, Request};
use config::StaticConf;

/// The plugin: `main.rs` runs it, and plugins that delegate to static carry it to run it in
/// their own process when the `static` in `CNI_PATH` is this suite's ([`cni::suite`]).
pub struct Static;

impl Plugin for Static {
    fn name(&self) -> &'static str {
        "static"
    }

    fn add(&self, req: &Request) -> anyhow::Result<CniResult> {
        let conf = StaticConf::parse(req)?;
        let ips = conf
            .addresses
            .iter()
            .map(|a| IpConfig { address: a.address, gateway: a.gateway, interface: None })
            .collect();
        Ok(CniResult { interfaces: Vec::new(), ips, routes: conf.routes, dns: conf.dns })
    }

    fn del(&self, _req: &Request) -> anyhow::Result<()> {
        // Nothing was allocated.
        Ok(())
    }

    fn check(&self, req: &Request) -> anyhow::Result<()> {
        let conf = StaticConf::parse(req)?;
        let prev = req.config.prev_result.as_ref().ok_or_else(|| anyhow::anyhow!("Required prevResult missing"))?;
        for a in &conf.addresses {
            let found = prev.ips.iter().find(|ip| ip.address.ip() == a.address.ip());
            let matches = found.is_some_and(|ip| a.gateway.is_none() || ip.gateway == a.gateway);
            if !matches {
                anyhow::bail!("static: Failed to match addr {} on interface {}", a.address.ip(), req.env.ifname);
            }
        }
        Ok(())
    }
}
