//! host-local's parts, as a library so the fuzz targets and tests can reach the store reader and
//! the config parser directly, and delegating plugins can run it in their own process; `main.rs`
//! runs the plugin.

pub mod allocator;
pub mod config;
pub mod dns;
pub mod range;
pub mod store;

use anyhow::Context;
use cni::{CniResult, Code, Error, Plugin, Request, ResultExt};
use config::IpamConfig;
use store::{Owner, Store};

/// The plugin: `main.rs` runs it, and plugins that delegate to host-local carry it to run it in
/// their own process when the `host-local` in `CNI_PATH` is this suite's ([`cni::suite`]).
pub struct HostLocal;

impl Plugin for HostLocal {
    fn name(&self) -> &'static str {
        "host-local"
    }

    fn add(&self, req: &Request) -> anyhow::Result<CniResult> {
        req.args.check_known(&["IP"])?;
        let conf = IpamConfig::parse(req)?;
        let dns = match &conf.resolv_conf {
            Some(path) => dns::parse_resolv_conf(path)?,
            None => cni::Dns::default(),
        };
        let store = Store::open(&conf.data_dir, &conf.network, conf.sets.len())?;
        store.begin()?;
        cni::trace::mark("locked");
        let owner = Owner::new(&req.env.container_id, &req.env.ifname);
        // A failed allocation has already given back what it took, so the store is consistent
        // either way and is committed either way.
        let allocated = allocator::allocate(&store, &conf.sets, &conf.requested, &owner);
        cni::trace::mark("allocated");
        store.commit()?;
        cni::trace::mark("committed");
        let ips = allocated.with_context(|| format!("allocating for {}/{}", req.env.container_id, req.env.ifname))?;
        Ok(CniResult { interfaces: Vec::new(), ips, routes: conf.routes, dns })
    }

    fn del(&self, req: &Request) -> anyhow::Result<()> {
        // Only the store's location matters: a DEL must work even if the ranges became invalid.
        let (network, data_dir) = IpamConfig::store_location(req)?;
        if !data_dir.join(&network).is_dir() {
            return Ok(());
        }
        let store = Store::open(&data_dir, &network, 0)?;
        store.begin()?;
        let released = store.release(&req.env.container_id, &req.env.ifname);
        store.commit()?;
        released.map(|_| ())
    }

    fn check(&self, req: &Request) -> anyhow::Result<()> {
        let (network, data_dir) = IpamConfig::store_location(req)?;
        let store = Store::open(&data_dir, &network, 0)?;
        let exact = Owner::new(&req.env.container_id, &req.env.ifname);
        let legacy = Owner { container_id: req.env.container_id.clone(), ifname: None };
        if store.addresses_of(&exact).is_empty() && store.addresses_of(&legacy).is_empty() {
            anyhow::bail!(
                "host-local: failed to find address added by container {} on {}",
                req.env.container_id,
                req.env.ifname
            );
        }
        Ok(())
    }

    fn gc(&self, req: &Request) -> anyhow::Result<()> {
        let Some(valid) = &req.config.valid_attachments else {
            // Without a list nothing is known to be valid or invalid; releasing everything would
            // cut every container off. (An explicit empty list does mean "release all".)
            eprintln!("host-local: GC without cni.dev/valid-attachments: nothing released");
            return Ok(());
        };
        let (network, data_dir) = IpamConfig::store_location(req)?;
        if !data_dir.join(&network).is_dir() {
            return Ok(());
        }
        let store = Store::open(&data_dir, &network, 0)?;
        store.begin()?;
        let collected = store.gc(valid);
        store.commit()?;
        let released = collected?;
        if !released.is_empty() {
            eprintln!("host-local: GC released {} address(es) of network {network}", released.len());
        }
        Ok(())
    }

    fn status(&self, req: &Request) -> anyhow::Result<()> {
        let conf = IpamConfig::parse(req)?;
        let store = Store::open(&conf.data_dir, &conf.network, conf.sets.len())
            .with_context(|| format!("dataDir {} is not usable", conf.data_dir.display()))
            .code(Code::NotAvailable)?;
        for (index, set) in conf.sets.iter().enumerate() {
            if !store.has_free_address(index, set) {
                return Err(Error::new(
                    Code::NotAvailable,
                    format!("no IP addresses available in range set {index} ({set})"),
                )
                .into());
            }
        }
        Ok(())
    }
}
