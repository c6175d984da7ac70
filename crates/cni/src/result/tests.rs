//! Golden tests: the model printed in every version must equal the files in `tests/golden`, which
//! were checked against libcni's own converters (the route extras `mtu`..`scope` in 0.4.0 follow
//! libcni >= 1.2, where 0.4.0 and 1.x share one route type).

use super::*;
use serde_json::json;

fn golden(version: &str) -> Value {
    let path = format!("{}/tests/golden/result-{version}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNetwork {
    parse_cidr(s).unwrap()
}

fn full() -> CniResult {
    CniResult {
        interfaces: vec![
            Interface { name: "cni0".into(), mac: "aa:bb:cc:dd:ee:01".into(), ..Default::default() },
            Interface { name: "veth1a2b3c4d".into(), mac: "aa:bb:cc:dd:ee:02".into(), mtu: 1400, ..Default::default() },
            Interface {
                name: "eth0".into(),
                mac: "aa:bb:cc:dd:ee:03".into(),
                mtu: 1400,
                sandbox: "/run/netns/c1".into(),
                socket_path: "/run/vhost/c1.sock".into(),
                pci_id: "0000:00:04.0".into(),
            },
        ],
        ips: vec![
            IpConfig { address: net("10.1.0.5/24"), gateway: Some(ip("10.1.0.1")), interface: Some(2) },
            IpConfig { address: net("fd00:1::5/64"), gateway: Some(ip("fd00:1::1")), interface: Some(2) },
            IpConfig { address: net("10.2.0.7/16"), gateway: None, interface: Some(2) },
        ],
        routes: vec![
            Route::new(net("0.0.0.0/0"), Some(ip("10.1.0.1"))),
            Route::new(net("::/0"), Some(ip("fd00:1::1"))),
            Route {
                dst: net("192.168.0.0/16"),
                gw: None,
                mtu: 1300,
                advmss: 1260,
                priority: 10,
                table: Some(100),
                scope: Some(0),
            },
        ],
        dns: Dns {
            nameservers: vec!["10.1.0.1".into()],
            domain: "example.com".into(),
            search: vec!["svc.example.com".into()],
            options: vec!["ndots:2".into()],
        },
    }
}

/// What survives a trip through 0.3.x/0.4.0: interfaces lose mtu, socketPath and pciID.
fn through_v04() -> CniResult {
    let mut r = full();
    for i in &mut r.interfaces {
        *i = Interface { name: i.name.clone(), mac: i.mac.clone(), sandbox: i.sandbox.clone(), ..Default::default() };
    }
    r
}

/// What survives a trip through 0.1.0/0.2.0: the first address per family, no interface index,
/// routes reduced to dst and gw and grouped by family.
fn through_v02() -> CniResult {
    let full = full();
    CniResult {
        interfaces: vec![],
        ips: vec![
            IpConfig { interface: None, ..full.ips[0].clone() },
            IpConfig { interface: None, ..full.ips[1].clone() },
        ],
        routes: vec![
            Route::new(net("0.0.0.0/0"), Some(ip("10.1.0.1"))),
            Route::new(net("192.168.0.0/16"), None),
            Route::new(net("::/0"), Some(ip("fd00:1::1"))),
        ],
        dns: full.dns,
    }
}

#[test]
fn prints_every_version_like_libcni() {
    for v in crate::version::SUPPORTED {
        assert_eq!(full().to_json(v).unwrap(), golden(v), "version {v}");
    }
}

#[test]
fn reads_every_version() {
    for v in ["1.1.0", "1.0.0"] {
        assert_eq!(CniResult::from_json(&golden(v), "1.1.0").unwrap(), full(), "version {v}");
    }
    for v in ["0.4.0", "0.3.1", "0.3.0"] {
        assert_eq!(CniResult::from_json(&golden(v), "1.1.0").unwrap(), through_v04(), "version {v}");
    }
    for v in ["0.2.0", "0.1.0"] {
        assert_eq!(CniResult::from_json(&golden(v), "1.1.0").unwrap(), through_v02(), "version {v}");
    }
}

#[test]
fn converts_up_from_old_versions() {
    let up = CniResult::from_json(&golden("0.2.0"), "0.2.0").unwrap().to_json("1.1.0").unwrap();
    assert_eq!(
        up,
        json!({
            "cniVersion": "1.1.0",
            "ips": [
                {"address": "10.1.0.5/24", "gateway": "10.1.0.1"},
                {"address": "fd00:1::5/64", "gateway": "fd00:1::1"}
            ],
            "routes": [
                {"dst": "0.0.0.0/0", "gw": "10.1.0.1"},
                {"dst": "192.168.0.0/16"},
                {"dst": "::/0", "gw": "fd00:1::1"}
            ],
            "dns": golden("0.2.0")["dns"].clone()
        })
    );
}

#[test]
fn empty_dns_is_left_out_only_in_1x() {
    let r = CniResult {
        ips: vec![IpConfig { address: net("10.0.0.2/8"), gateway: None, interface: None }],
        ..Default::default()
    };
    assert_eq!(r.to_json("1.0.0").unwrap(), json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/8"}]}));
    assert_eq!(
        r.to_json("0.4.0").unwrap(),
        json!({"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.0.0.2/8"}], "dns": {}})
    );
    assert_eq!(r.to_json("0.2.0").unwrap(), json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.2/8"}, "dns": {}}));
}

#[test]
fn old_versions_need_an_address() {
    let l2_only =
        CniResult { interfaces: vec![Interface { name: "eth0".into(), ..Default::default() }], ..Default::default() };
    for v in ["0.1.0", "0.2.0"] {
        let e = l2_only.to_json(v).unwrap_err();
        assert_eq!(e.code, crate::Code::IncompatibleVersion);
    }
    assert!(l2_only.to_json("0.3.0").is_ok());
}

#[test]
fn missing_version_takes_the_default_and_nulls_are_zero_values() {
    let v =
        json!({"interfaces": null, "ips": [{"address": "10.0.0.2/24", "gateway": "", "interface": 0}], "dns": null});
    let r = CniResult::from_json(&v, "1.0.0").unwrap();
    assert_eq!(r.ips[0].gateway, None);
    assert!(r.interfaces.is_empty());
    // The same shape read as 0.2.0 has no `ip4`, so it has no address.
    assert!(CniResult::from_json(&v, "0.2.0").unwrap().ips.is_empty());
}

#[test]
fn wrong_shapes_are_decode_errors() {
    for bad in [
        json!("a string"),
        json!({"cniVersion": "1.0.0", "ips": "10.0.0.2/24"}),
        json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2"}]}),
        json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/33"}]}),
        json!({"cniVersion": "1.0.0", "routes": [{"dst": "0.0.0.0/0", "gw": "nope"}]}),
        json!({"cniVersion": "0.4.0", "interfaces": [{"name": 5}]}),
        json!({"cniVersion": "9.9.9"}),
    ] {
        let e = CniResult::from_json(&bad, "1.0.0").unwrap_err();
        assert_eq!(e.code, crate::Code::Decode, "{bad}");
    }
}

#[test]
fn cidr_parsing_keeps_host_bits_and_needs_a_prefix() {
    assert_eq!(parse_cidr("10.1.2.3/24").unwrap().to_string(), "10.1.2.3/24");
    assert_eq!(parse_cidr("fd00::1/64").unwrap().to_string(), "fd00::1/64");
    for bad in ["10.1.2.3", "10.1.2.3/", "10.1.2.3/+8", "10.1.2.3/33", "fd00::1/129", "x/8", "/8"] {
        assert!(parse_cidr(bad).is_err(), "{bad}");
    }
}
