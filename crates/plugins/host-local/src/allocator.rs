//! Allocation: one address per range set for an attachment, requested addresses first, all or
//! nothing.

use crate::range::RangeSet;
use crate::store::{Owner, Store};
use cni::{Error, IpConfig};
use std::net::IpAddr;

/// host-local's own error codes (the spec leaves 100 and up to plugins).
pub mod codes {
    use cni::Code;
    /// A requested address is held by someone else.
    pub const ADDRESS_TAKEN: Code = Code::Plugin(100);
    /// A range set has no free address.
    pub const EXHAUSTED: Code = Code::Plugin(101);
    /// The attachment already holds an address in a range set.
    pub const DUPLICATE: Code = Code::Plugin(102);
}

/// Reserves one address in each set for `owner` and returns them in set order. On any failure
/// every address reserved so far is released.
pub fn allocate(
    store: &Store,
    sets: &[RangeSet],
    requested: &[IpAddr],
    owner: &Owner,
) -> anyhow::Result<Vec<IpConfig>> {
    let mut taken: Vec<IpConfig> = Vec::new();
    let result = allocate_each(store, sets, requested, owner, &mut taken);
    let ips: Vec<IpAddr> = taken.iter().map(|c| c.address.ip()).collect();
    let result = result.and_then(|()| store.record(owner, &ips));
    if result.is_err() {
        // Best effort: the error worth reporting is the one that stopped the allocation; a
        // release that fails too leaves a reservation GC reclaims (its owner never ran).
        for ip in ips {
            let _ = store.release_ip(ip, owner);
        }
    }
    result.map(|()| taken)
}

fn allocate_each(
    store: &Store,
    sets: &[RangeSet],
    requested: &[IpAddr],
    owner: &Owner,
    taken: &mut Vec<IpConfig>,
) -> anyhow::Result<()> {
    let held = store.addresses_of(owner);
    let mut wanted: Vec<IpAddr> = requested.to_vec();
    for (index, set) in sets.iter().enumerate() {
        // Each requested address goes to the first set that contains it, one per set.
        let pick = wanted.iter().position(|ip| set.contains(*ip)).map(|i| wanted.remove(i));
        let ip = match pick {
            Some(ip) => reserve_requested(store, set, ip, owner)?,
            None => {
                if let Some(dup) = held.iter().find(|ip| set.contains(**ip)) {
                    return Err(Error::new(
                        codes::DUPLICATE,
                        format!(
                            "{dup} has been allocated to {}/{}, duplicate allocation is not allowed",
                            owner.container_id,
                            owner.ifname.as_deref().unwrap_or("")
                        ),
                    )
                    .into());
                }
                reserve_next(store, index, set, owner)?
            }
        };
        let range = set.range_for(ip).expect("reserved inside the set");
        // Taken before anything else can fail, so that a failure below releases this one too.
        taken.push(IpConfig {
            address: ipnetwork::IpNetwork::new(ip, range.subnet.prefix()).expect("prefix of a valid subnet"),
            gateway: Some(range.gateway),
            interface: None,
        });
        store.set_last_reserved(index, ip)?;
    }
    if !wanted.is_empty() {
        let list: Vec<String> = wanted.iter().map(ToString::to_string).collect();
        return Err(Error::config(format!(
            "failed to allocate all requested IPs: {} is not in any range set (or two were asked of one set)",
            list.join(" ")
        ))
        .into());
    }
    Ok(())
}

fn reserve_requested(store: &Store, set: &RangeSet, ip: IpAddr, owner: &Owner) -> anyhow::Result<IpAddr> {
    let range = set.range_for(ip).expect("chosen because the set contains it");
    if ip == range.gateway {
        return Err(Error::config(format!("requested ip {ip} is subnet's gateway")).into());
    }
    if !range.is_allocatable(ip) {
        return Err(Error::config(format!(
            "requested ip {ip} is the network or broadcast address of {}",
            range.subnet
        ))
        .into());
    }
    if !store.reserve(ip, owner)? {
        return Err(Error::new(
            codes::ADDRESS_TAKEN,
            format!("requested IP address {ip} is not available in range set {set}"),
        )
        .into());
    }
    Ok(ip)
}

fn reserve_next(store: &Store, index: usize, set: &RangeSet, owner: &Owner) -> anyhow::Result<IpAddr> {
    for (ip, _) in set.walk(store.last_reserved(index)) {
        if store.reserve(ip, owner)? {
            return Ok(ip);
        }
    }
    Err(Error::new(codes::EXHAUSTED, format!("no IP addresses available in range set: {set}")).into())
}
