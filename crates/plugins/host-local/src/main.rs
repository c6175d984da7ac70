//! `host-local`: IPAM that hands out addresses from configured ranges and keeps its state in files
//! under `dataDir` (Docker's built-in IPAM, in CNI form).
//!
//! The store is the reference's, file for file, so a node can switch between the Go binary and
//! this one with its allocations intact; see [`host_local::store`] for the index that keeps every verb's cost
//! flat as the store grows, and for crash safety.

use anyhow::Context;
use cni::{CniResult, Code, Error, Plugin, Request, ResultExt};
use host_local::config::IpamConfig;
use host_local::store::{Owner, Store};
use host_local::{allocator, dns};

struct HostLocal;

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

fn main() {
    cni::skel::run(HostLocal)
}
