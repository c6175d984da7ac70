//! host-local's config (`IpamConfig::parse` and `store_location`) from a fuzzed stdin and
//! `CNI_ARGS`, then the range code an ADD runs on what was accepted: membership and the
//! round-robin walk from every interesting last address.
//!
//! The input is the config, then optionally a NUL and `CNI_ARGS` (default `IgnoreUnknown=1`).
//! Must hold: no panic; an accepted config has an absolute dataDir, at least one range set, sets
//! of one family that do not overlap, and every walked address is allocatable in its set.

#![no_main]

use cni_fuzz::{add_request, split_at_nul};
use host_local::config::IpamConfig;
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;

fuzz_target!(|data: &[u8]| {
    let (stdin, rest) = split_at_nul(data);
    let cni_args = rest.map_or_else(|| "IgnoreUnknown=1".to_string(), |r| String::from_utf8_lossy(r).into_owned());
    let Some(req) = add_request(stdin, &cni_args) else { return };

    if let Ok((network, data_dir)) = IpamConfig::store_location(&req) {
        assert_eq!(network, req.config.name);
        assert!(data_dir.is_absolute());
    }
    let Ok(conf) = IpamConfig::parse(&req) else { return };
    assert!(conf.data_dir.is_absolute());
    assert!(!conf.sets.is_empty());
    for (i, set) in conf.sets.iter().enumerate() {
        assert!(!set.0.is_empty());
        for r in &set.0 {
            assert_eq!(r.is_ipv4(), set.is_ipv4());
            assert!(r.subnet.contains(r.start) && r.subnet.contains(r.end) && r.subnet.contains(r.gateway));
            assert!(set.contains(r.start) && set.contains(r.end));
        }
        for other in &conf.sets[i + 1..] {
            assert!(!set.overlaps(other));
        }
        let _ = set.to_string();

        let mut lasts: Vec<Option<IpAddr>> = vec![None];
        lasts.extend(set.0.iter().flat_map(|r| [r.start, r.end, r.gateway, r.subnet.network()]).map(Some));
        lasts.extend(conf.requested.iter().copied().map(Some));
        for last in lasts {
            for (ip, range) in set.walk(last).take(4) {
                assert!(range.is_allocatable(ip), "walked to {ip}, not allocatable in {range}");
                assert_eq!(set.range_for(ip), Some(range));
            }
        }
    }
    for ip in &conf.requested {
        assert!(conf.sets.iter().filter(|s| s.contains(*ip)).count() <= 1, "{ip} is in two range sets");
    }
});
