//! Kernel tests: the built `bridge` binary (with the built `host-local` as IPAM), run as a runtime
//! runs it, in a sandbox "host" namespace with container namespaces. Traffic goes only between
//! namespaces the test made.

use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use testkit::{Invocation, Netns, Output, TempDir, ip, ip_json, link, new_netns, nft_ruleset, ping, tcp_ask};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bridge"))
}

/// A sandbox host with an IPAM store, and an "outside" namespace reachable from the host at
/// 198.51.100.2 (the host is 198.51.100.1 there).
struct Host {
    ns: Netns,
    ipam: TempDir,
}

impl Host {
    fn new() -> Host {
        let host = Host { ns: new_netns(), ipam: TempDir::new("bridge-ipam") };
        ip(&host.ns, "link set lo up");
        host
    }

    fn with_outside(&self) -> Netns {
        let outside = new_netns();
        testkit::link_namespaces(&self.ns, "uplink", "198.51.100.1/24", &outside, "eth0", "198.51.100.2/24");
        outside
    }

    /// A bridge network config: the given keys over a dual-stack default.
    fn conf(&self, name: &str, extra: Value) -> Value {
        let mut conf = json!({
            "cniVersion": "1.0.0", "name": name, "type": "bridge", "bridge": "br-test",
            "isGateway": true,
            "ipam": {"type": "host-local", "dataDir": self.ipam.path().display().to_string(),
                     "ranges": [[{"subnet": "10.10.0.0/24"}], [{"subnet": "fd10::/64"}]]}
        });
        for (k, v) in extra.as_object().expect("object") {
            conf[k] = v.clone();
        }
        conf
    }

    fn invoke(&self, command: &str, c: &Netns, cid: &str, conf: &Value) -> Invocation {
        Invocation::new(command, cid, c.path(), "eth0", &conf.to_string())
    }

    fn run(&self, command: &str, c: &Netns, cid: &str, conf: &Value) -> Output {
        self.invoke(command, c, cid, conf).run(&bin(), &self.ns)
    }

    fn add(&self, c: &Netns, cid: &str, conf: &Value) -> Value {
        self.run("ADD", c, cid, conf).ok()
    }

    /// The conf with the ADD's result as prevResult, as a runtime sends DEL and CHECK.
    fn with_prev(conf: &Value, result: &Value) -> Value {
        let mut c = conf.clone();
        c["prevResult"] = result.clone();
        c
    }

    fn allocated(&self, network: &str) -> usize {
        std::fs::read_dir(self.ipam.path().join(network))
            .map(|d| {
                d.filter(|e| {
                    e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().parse::<std::net::IpAddr>().is_ok())
                })
                .count()
            })
            .unwrap_or(0)
    }

    fn host_veths(&self) -> Vec<String> {
        ip_json(&self.ns, "link show type veth")
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_string())
            .filter(|n| n != "uplink")
            .collect()
    }
}

fn addr_of(result: &Value, i: usize) -> String {
    result["ips"][i]["address"].as_str().unwrap().split('/').next().unwrap().to_string()
}

#[test]
fn two_containers_reach_each_other_and_the_gateway_over_v4_and_v6() {
    let h = Host::new();
    let conf = h.conf("net1", json!({"isDefaultGateway": true}));
    let (a, b) = (new_netns(), new_netns());
    let ra = h.add(&a, "ctr-a", &conf);
    let rb = h.add(&b, "ctr-b", &conf);

    // The result has the reference's shape.
    assert_eq!(ra["interfaces"][0]["name"], "br-test");
    assert!(ra["interfaces"][1]["name"].as_str().unwrap().starts_with("veth"));
    assert_eq!(ra["interfaces"][2]["name"], "eth0");
    assert_eq!(ra["interfaces"][2]["sandbox"], a.path());
    assert_eq!(ra["ips"][0], json!({"address": "10.10.0.2/24", "gateway": "10.10.0.1", "interface": 2}));
    assert_eq!(ra["ips"][1]["address"], "fd10::2/64");
    assert_eq!(ra["routes"], json!([{"dst": "0.0.0.0/0", "gw": "10.10.0.1"}, {"dst": "::/0", "gw": "fd10::1"}]));
    let mac = ip_json(&a, "link show eth0")[0]["address"].clone();
    assert_eq!(ra["interfaces"][2]["mac"], mac);

    for (from, to) in [(&a, addr_of(&rb, 0)), (&a, addr_of(&rb, 1)), (&b, addr_of(&ra, 0)), (&b, addr_of(&ra, 1))] {
        assert!(ping(from, &to), "no answer from {to}");
    }
    for gw in ["10.10.0.1", "fd10::1"] {
        assert!(ping(&a, gw), "gateway {gw} unreachable");
    }
    // isDefaultGateway: the default routes go through the bridge.
    assert!(ip(&a, "route show default").contains("default via 10.10.0.1 dev eth0"));
    assert!(ip(&a, "-6 route show default").contains("default via fd10::1 dev eth0"));
    // The gateway is on the bridge and forwarding is on in the host.
    assert!(testkit::addresses(&h.ns, "br-test").contains(&"10.10.0.1/24".to_string()));
    assert_eq!(h.ns.run(|| netkit::sysctl::read("net/ipv4/ip_forward")).unwrap().unwrap(), "1");
    assert_eq!(h.ns.run(|| netkit::sysctl::read("net/ipv6/conf/all/forwarding")).unwrap().unwrap(), "1");
}

#[test]
fn results_in_every_version() {
    let h = Host::new();
    for (i, version) in ["0.2.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"].iter().enumerate() {
        let c = new_netns();
        let r = h.add(&c, &format!("c{i}"), &h.conf("net1", json!({"cniVersion": version})));
        assert_eq!(r["cniVersion"], *version);
        if *version == "0.2.0" {
            assert!(r["ip4"]["ip"].as_str().unwrap().starts_with("10.10.0."), "{r}");
        } else {
            assert_eq!(r["interfaces"].as_array().unwrap().len(), 3, "{r}");
            assert_eq!(r["ips"][0]["interface"], 2);
        }
    }
}

#[test]
fn masquerade_gives_outside_traffic_the_hosts_address() {
    let h = Host::new();
    let outside = h.with_outside();
    let server: SocketAddr = "198.51.100.2:7000".parse().unwrap();
    testkit::serve_peer_address(&outside, server);
    let c = new_netns();
    let masq = h.add(&c, "ctr", &h.conf("net1", json!({"isDefaultGateway": true, "ipMasq": true})));
    assert_eq!(tcp_ask(&c, server).as_deref(), Some("198.51.100.1"), "not masqueraded");

    // Without ipMasq the container's own address arrives (and the reply has no route back).
    let plain = new_netns();
    let conf2 = h.conf(
        "net2",
        json!({"bridge": "br-plain", "isDefaultGateway": true,
        "ipam": {"type": "host-local", "dataDir": h.ipam.path().display().to_string(), "subnet": "10.20.0.0/24"}}),
    );
    h.add(&plain, "ctr2", &conf2);
    ip(&outside, "route add 10.20.0.0/24 via 198.51.100.1");
    assert_eq!(tcp_ask(&plain, server).as_deref(), Some("10.20.0.2"));

    // DEL removes the masquerade: traffic then leaves with the container's address.
    h.run("DEL", &c, "ctr", &Host::with_prev(&h.conf("net1", json!({"ipMasq": true})), &masq)).ok();
    assert!(!nft_ruleset(&h.ns).contains("10.10.0.2"), "{}", nft_ruleset(&h.ns));
}

#[test]
fn the_same_subnet_on_two_networks_keeps_each_containers_masquerade() {
    let h = Host::new();
    let outside = h.with_outside();
    let server: SocketAddr = "198.51.100.2:7000".parse().unwrap();
    testkit::serve_peer_address(&outside, server);
    // Two runtimes' default networks on one subnet (Podman's and containerd's are both
    // 10.88.0.0/16), each on its own bridge: each network's one address is 10.79.0.2.
    let net = |name: &str, br: &str| {
        h.conf(
            name,
            json!({"bridge": br, "isDefaultGateway": true, "ipMasq": true,
                   "ipam": {"type": "host-local", "dataDir": h.ipam.path().display().to_string(),
                            "ranges": [[{"subnet": "10.79.0.0/24", "rangeStart": "10.79.0.2", "rangeEnd": "10.79.0.2"}]]}}),
        )
    };
    let (a, b) = (net("net-a", "br-a"), net("net-b", "br-b"));
    let (p1, q1) = (new_netns(), new_netns());
    let rp = h.add(&p1, "p1", &a);
    let rq = h.add(&q1, "q1", &b);
    assert_eq!((addr_of(&rp, 0), addr_of(&rq, 0)), ("10.79.0.2".to_string(), "10.79.0.2".to_string()));
    // Replies to 10.79.0.2 route to br-a (its route came first), so p1 is the one that can talk.
    assert_eq!(tcp_ask(&p1, server).as_deref(), Some("198.51.100.1"), "p1 not masqueraded");
    for (c, cid, conf, r) in [(&p1, "p1", &a, &rp), (&q1, "q1", &b, &rq)] {
        assert_eq!(h.run("CHECK", c, cid, &Host::with_prev(conf, r)).ok(), Value::Null, "CHECK of {cid}");
    }
    // q1 goes, once with its prevResult and once (a second container) by identity alone.
    h.run("DEL", &q1, "q1", &Host::with_prev(&b, &rq)).ok();
    assert_eq!(tcp_ask(&p1, server).as_deref(), Some("198.51.100.1"), "q1's DEL took p1's masquerade");
    let q2 = new_netns();
    let rq2 = h.add(&q2, "q2", &b);
    assert_eq!(addr_of(&rq2, 0), "10.79.0.2");
    h.run("DEL", &q2, "q2", &b).ok();
    assert_eq!(tcp_ask(&p1, server).as_deref(), Some("198.51.100.1"), "q2's DEL took p1's masquerade");
    assert_eq!(h.run("CHECK", &p1, "p1", &Host::with_prev(&a, &rp)).ok(), Value::Null);
    h.run("DEL", &p1, "p1", &Host::with_prev(&a, &rp)).ok();
    let rules = nft_ruleset(&h.ns);
    assert!(!rules.contains("10.79.0.2") && !rules.contains("key-") && !rules.contains("masq-"), "{rules}");
}

#[test]
fn iptables_backend_uses_the_reference_chain_names() {
    let h = Host::new();
    let outside = h.with_outside();
    let server: SocketAddr = "198.51.100.2:7001".parse().unwrap();
    testkit::serve_peer_address(&outside, server);
    let conf = h.conf("net1", json!({"isDefaultGateway": true, "ipMasq": true, "ipMasqBackend": "iptables"}));
    let c = new_netns();
    let r = h.add(&c, "ctr", &conf);
    assert_eq!(tcp_ask(&c, server).as_deref(), Some("198.51.100.1"));
    let saved = testkit::iptables_nat(&h.ns);
    let chain = firewall::identity::iptables_chain("", "net1", "ctr");
    assert!(
        saved.contains(&format!(
            "-A POSTROUTING -s 10.10.0.2/32 -m comment --comment \"name: \\\"net1\\\" id: \\\"ctr\\\"\" -j {chain}"
        )),
        "{saved}"
    );
    assert_eq!(h.run("CHECK", &c, "ctr", &Host::with_prev(&conf, &r)).ok(), Value::Null);
    h.run("DEL", &c, "ctr", &Host::with_prev(&conf, &r)).ok();
    let saved = testkit::iptables_nat(&h.ns);
    assert!(!saved.contains(&chain), "{saved}");
}

#[test]
fn mtu_promisc_hairpin_and_mac() {
    let h = Host::new();
    let c = new_netns();
    let conf = h.conf("net1", json!({"mtu": 1400, "hairpinMode": true, "runtimeConfig": {"mac": "0a:58:0a:0a:00:99"}}));
    let r = h.add(&c, "ctr", &conf);
    assert_eq!(link(&h.ns, "br-test").unwrap()["mtu"], 1400);
    let veth = r["interfaces"][1]["name"].as_str().unwrap();
    assert_eq!(link(&h.ns, veth).unwrap()["mtu"], 1400);
    assert_eq!(link(&c, "eth0").unwrap()["mtu"], 1400);
    assert_eq!(link(&c, "eth0").unwrap()["address"], "0a:58:0a:0a:00:99");
    assert_eq!(r["interfaces"][2]["mac"], "0a:58:0a:0a:00:99");
    let port = ip_json(&h.ns, &format!("-d link show {veth}"));
    assert_eq!(port[0]["linkinfo"]["info_slave_data"]["hairpin"], true);

    let h2 = Host::new();
    h2.add(&new_netns(), "ctr", &h2.conf("net1", json!({"promiscMode": true})));
    let br = link(&h2.ns, "br-test").unwrap();
    assert!(br["flags"].as_array().unwrap().iter().any(|f| f == "PROMISC"), "{br}");
    // CNI_ARGS MAC works too.
    let c3 = new_netns();
    h2.invoke("ADD", &c3, "ctr3", &h2.conf("net1", json!({"promiscMode": true})))
        .var("CNI_ARGS", Some("IgnoreUnknown=1;MAC=0a:58:00:00:00:33"))
        .run(&bin(), &h2.ns)
        .ok();
    assert_eq!(link(&c3, "eth0").unwrap()["address"], "0a:58:00:00:00:33");
}

#[test]
fn port_isolation_blocks_port_to_port_traffic_only() {
    let h = Host::new();
    let conf = h.conf("net1", json!({"portIsolation": true}));
    let (a, b) = (new_netns(), new_netns());
    h.add(&a, "a", &conf);
    let rb = h.add(&b, "b", &conf);
    assert!(ping(&a, "10.10.0.1"), "the gateway must stay reachable");
    assert!(!ping(&a, &addr_of(&rb, 0)), "isolated ports must not reach each other");
}

#[test]
fn mac_spoof_check_drops_forged_source_macs() {
    let h = Host::new();
    let c = new_netns();
    let conf = h.conf("net1", json!({"macspoofchk": true}));
    let r = h.add(&c, "ctr", &conf);
    assert!(ping(&c, "10.10.0.1"));
    ip(&c, "link set eth0 address 0a:58:de:ad:be:ef");
    ip(&c, "neigh flush dev eth0");
    assert!(!ping(&c, "10.10.0.1"), "a forged source MAC got through");
    // DEL without netns or prevResult still removes the spoof check.
    c.remove();
    Invocation::new("DEL", "ctr", "", "eth0", &conf.to_string()).run(&bin(), &h.ns).ok();
    let rules = nft_ruleset(&h.ns);
    assert!(!rules.contains(r["interfaces"][1]["name"].as_str().unwrap()), "{rules}");
    assert!(!rules.contains("spoof-"), "{rules}");
}

#[test]
fn force_address_replaces_a_conflicting_bridge_address() {
    let h = Host::new();
    ip(&h.ns, "link add br-test type bridge");
    ip(&h.ns, "addr add 10.99.0.1/24 dev br-test");
    let c = new_netns();
    let out = h.run("ADD", &c, "ctr", &h.conf("net1", json!({})));
    out.err_code();
    assert!(out.stdout.contains("already has an IP address different from"), "{}", out.stdout);
    assert_eq!(h.allocated("net1"), 0, "the failed ADD kept its addresses");
    assert!(h.host_veths().is_empty(), "the failed ADD left {:?}", h.host_veths());
    assert!(link(&c, "eth0").is_none());

    h.add(&c, "ctr", &h.conf("net1", json!({"forceAddress": true})));
    let addrs = testkit::addresses(&h.ns, "br-test");
    assert!(addrs.contains(&"10.10.0.1/24".to_string()) && !addrs.contains(&"10.99.0.1/24".to_string()), "{addrs:?}");
}

#[test]
fn bridge_networks_side_by_side_with_and_without_isolation() {
    for isolated in [false, true] {
        let h = Host::new();
        let outside = h.with_outside();
        let server: SocketAddr = "198.51.100.2:7002".parse().unwrap();
        testkit::serve_peer_address(&outside, server);
        let dir = h.ipam.path().display().to_string();
        let net = |name: &str, br: &str, subnet: &str| {
            json!({"cniVersion": "1.0.0", "name": name, "type": "bridge", "bridge": br, "isDefaultGateway": true,
                   "ipMasq": true, "isolation": isolated, "ipam": {"type": "host-local", "dataDir": dir, "subnet": subnet}})
        };
        let (a, b) = (new_netns(), new_netns());
        let ra = h.add(&a, "a", &net("net-a", "br-a", "10.31.0.0/24"));
        let rb = h.add(&b, "b", &net("net-b", "br-b", "10.32.0.0/24"));
        assert_eq!(ping(&a, &addr_of(&rb, 0)), !isolated, "isolation={isolated}: a -> b");
        assert_eq!(ping(&b, &addr_of(&ra, 0)), !isolated, "isolation={isolated}: b -> a");
        assert_eq!(tcp_ask(&a, server).as_deref(), Some("198.51.100.1"), "isolation={isolated}: a -> outside");
        assert!(ping(&a, "10.31.0.1"));
    }
}

#[test]
fn twenty_concurrent_adds_on_a_new_bridge_all_succeed() {
    let h = Host::new();
    let conf = h.conf("net1", json!({"ipMasq": true, "macspoofchk": true}));
    let containers: Vec<Netns> = (0..20).map(|_| new_netns()).collect();
    let children: Vec<_> = containers
        .iter()
        .enumerate()
        .map(|(i, c)| h.invoke("ADD", c, &format!("ctr{i}"), &conf).spawn(&bin(), Some(&h.ns)))
        .collect();
    let mut addresses = std::collections::BTreeSet::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(addresses.insert(addr_of(&r, 0)));
    }
    assert_eq!(h.host_veths().len(), 20);
    let rules = nft_ruleset(&h.ns);
    assert_eq!(rules.matches("masquerade comment").count(), 40, "{rules}");
    assert_eq!(rules.matches("ip saddr vmap @masq_v4").count(), 1, "base rules duplicated: {rules}");
    assert!(ping(&containers[0], "10.10.0.1"));
}

#[test]
fn del_without_netns_leaves_no_rule_behind() {
    let h = Host::new();
    let conf = h.conf("net1", json!({"ipMasq": true, "macspoofchk": true}));
    for with_prev in [true, false] {
        let c = new_netns();
        let r = h.add(&c, "ctr", &conf);
        let path = c.path().to_string();
        c.remove();
        let del_conf = if with_prev { Host::with_prev(&conf, &r) } else { conf.clone() };
        for netns in [path.as_str(), ""] {
            Invocation::new("DEL", "ctr", netns, "eth0", &del_conf.to_string()).run(&bin(), &h.ns).ok();
        }
        let rules = nft_ruleset(&h.ns);
        assert!(!rules.contains("masq-") && !rules.contains("spoof-") && !rules.contains("10.10.0."), "{rules}");
        assert_eq!(h.allocated("net1"), 0);
    }
}

#[test]
fn del_is_idempotent() {
    let h = Host::new();
    let conf = h.conf("net1", json!({"ipMasq": true}));
    let c = new_netns();
    let r = h.add(&c, "ctr", &conf);
    for _ in 0..3 {
        h.run("DEL", &c, "ctr", &Host::with_prev(&conf, &r)).ok();
    }
    assert!(link(&c, "eth0").is_none());
    assert!(h.host_veths().is_empty());
    assert_eq!(h.allocated("net1"), 0);
}

#[test]
fn failures_undo_everything_done_so_far() {
    let h = Host::new();
    let c = new_netns();
    let conf = h.conf("net1", json!({"ipMasq": true, "macspoofchk": true}));

    // IPAM fails: an exhausted range (one address, already taken).
    let tiny = h.conf("tiny", json!({"ipam": {"type": "host-local", "dataDir": h.ipam.path().display().to_string(), "subnet": "10.40.0.0/30"}}));
    let first = new_netns();
    h.add(&first, "first", &tiny);
    assert_eq!(h.run("ADD", &c, "second", &tiny).err_code(), 101);
    assert!(link(&c, "eth0").is_none(), "container interface left behind");
    assert_eq!(h.host_veths().len(), 1, "host veth left behind: {:?}", h.host_veths());

    // IPAM plugin missing, and a path in the IPAM type: nothing is created.
    for bad in ["no-such-ipam", "../host-local"] {
        let mut broken = conf.clone();
        broken["ipam"]["type"] = json!(bad);
        assert_eq!(h.run("ADD", &c, "ctr", &broken).err_code(), 7, "{bad}");
        assert!(link(&c, "eth0").is_none());
    }

    // The container's interface name is taken: nothing is created.
    ip(&c, "link add eth0 type veth peer name eth1");
    let out = h.run("ADD", &c, "ctr", &conf);
    out.err_code();
    assert!(out.stdout.contains("already exists in the container"), "{}", out.stdout);
    assert_eq!(h.allocated("net1"), 0);
    ip(&c, "link del eth0");

    // A failure after IPAM and the firewall: the gateway address conflicts.
    ip(&h.ns, "addr add 10.10.0.200/24 dev br-test");
    h.run("ADD", &c, "ctr", &conf).err_code();
    assert_eq!(h.allocated("net1"), 0, "IPAM allocation not released");
    assert!(link(&c, "eth0").is_none());
    assert_eq!(h.host_veths().len(), 1);
    let rules = nft_ruleset(&h.ns);
    assert!(!rules.contains("masq-") && !rules.contains("spoof-"), "{rules}");
}

#[test]
fn vlan_fails_clearly_on_kernels_without_vlan_filtering() {
    // Only such a kernel can show it (tests/vlan.rs covers the others): probe in a throwaway netns.
    let probe = new_netns();
    let add = ["link", "add", "br-probe", "type", "bridge", "vlan_filtering", "1"];
    let filtering = testkit::in_netns(std::process::Command::new("ip").args(add), &probe)
        .output()
        .is_ok_and(|o| o.status.success());
    if filtering {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"skipped: kernel has bridge vlan_filtering (vlan_fails_clearly_on_kernels_without_vlan_filtering)\n",
        );
        return;
    }
    let h = Host::new();
    let c = new_netns();
    for extra in [json!({"vlan": 100}), json!({"vlanTrunk": [{"id": 5}]})] {
        let out = h.run("ADD", &c, "ctr", &h.conf("net1", extra.clone()));
        out.err_code();
        assert!(out.stdout.contains("CONFIG_BRIDGE_VLAN_FILTERING"), "{extra}: {}", out.stdout);
        assert!(link(&c, "eth0").is_none());
        assert_eq!(h.allocated("net1"), 0);
    }
}

#[test]
fn l2_only_networks_add_check_and_del() {
    let h = Host::new();
    let c = new_netns();
    let conf = json!({"cniVersion": "1.0.0", "name": "l2", "type": "bridge", "bridge": "br-l2", "ipam": {}});
    let r = h.add(&c, "ctr", &conf);
    assert!(r.get("ips").is_none(), "{r}");
    assert!(testkit::is_up(&link(&c, "eth0").unwrap()));
    assert_eq!(h.run("CHECK", &c, "ctr", &Host::with_prev(&conf, &r)).ok(), Value::Null);
    h.run("DEL", &c, "ctr", &Host::with_prev(&conf, &r)).ok();
    assert!(link(&c, "eth0").is_none());

    let mut down = conf.clone();
    down["disableContainerInterface"] = json!(true);
    h.add(&c, "ctr", &down);
    assert!(!testkit::is_up(&link(&c, "eth0").unwrap()));
}

#[test]
fn check_finds_missing_pieces() {
    let h = Host::new();
    let c = new_netns();
    let conf = h.conf("net1", json!({"ipMasq": true, "isDefaultGateway": true}));
    let r = h.add(&c, "ctr", &conf);
    let with_prev = Host::with_prev(&conf, &r);
    assert_eq!(h.run("CHECK", &c, "ctr", &with_prev).ok(), Value::Null);
    assert_eq!(h.run("CHECK", &c, "ctr", &conf).err_code(), 999, "prevResult is required");
    ip(&c, "addr del 10.10.0.2/24 dev eth0");
    let out = h.run("CHECK", &c, "ctr", &with_prev);
    out.err_code();
    assert!(out.stdout.contains("10.10.0.2/24"), "{}", out.stdout);
}

#[test]
fn dad_is_skipped_unless_enabled() {
    let h = Host::new();
    let flags = |c: &Netns| {
        let addrs = ip_json(c, "-6 addr show dev eth0 scope global");
        addrs[0]["addr_info"][0].clone()
    };
    let fast = new_netns();
    h.add(&fast, "fast", &h.conf("net1", json!({})));
    assert_eq!(flags(&fast)["nodad"], true, "{}", flags(&fast));
    let full = new_netns();
    h.add(&full, "full", &h.conf("net1", json!({"enabledad": true})));
    let f = flags(&full);
    assert!(f.get("nodad").is_none() && f.get("tentative").is_none(), "{f}");
    assert_eq!(full.run(|| netkit::sysctl::read("net/ipv6/conf/eth0/accept_dad")).unwrap().unwrap(), "1");
}

#[test]
fn gc_removes_entries_of_attachments_no_longer_valid() {
    let h = Host::new();
    let conf = h.conf("net1", json!({"ipMasq": true}));
    let (a, b) = (new_netns(), new_netns());
    h.add(&a, "keep", &conf);
    h.add(&b, "gone", &conf);
    let mut gc = conf.clone();
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    Invocation::new("GC", "", "", "", &gc.to_string())
        .var("CNI_CONTAINERID", None)
        .var("CNI_NETNS", None)
        .var("CNI_IFNAME", None)
        .run(&bin(), &h.ns)
        .ok();
    let rules = nft_ruleset(&h.ns);
    assert!(rules.contains("10.10.0.2") && !rules.contains("10.10.0.3"), "{rules}");
    assert_eq!(h.allocated("net1"), 2, "GC reached IPAM: only keep's two addresses remain");
}

#[test]
fn status_reports_an_unusable_bridge_and_passes_on_to_ipam() {
    let h = Host::new();
    let status = |conf: &Value| {
        let mut conf = conf.clone();
        conf["cniVersion"] = json!("1.1.0");
        Invocation::new("STATUS", "", "", "", &conf.to_string())
            .var("CNI_CONTAINERID", None)
            .var("CNI_NETNS", None)
            .var("CNI_IFNAME", None)
            .run(&bin(), &h.ns)
    };
    let conf = h.conf("net1", json!({}));
    assert_eq!(status(&conf).ok(), Value::Null);
    ip(&h.ns, "link add br-test type veth peer name br-peer");
    assert_eq!(status(&conf).err_code(), 50);
    let tiny = h.conf("tiny", json!({"bridge": "br-ok", "ipam": {"type": "host-local", "dataDir": h.ipam.path().display().to_string(), "subnet": "10.41.0.0/30"}}));
    assert_eq!(status(&tiny).ok(), Value::Null);
    h.add(&new_netns(), "only", &tiny);
    assert_eq!(status(&tiny).err_code(), 50, "an exhausted IPAM must show through");
}

/// A runtime's timeout SIGKILLs the plugin, not the `iptables-restore` it started: that one
/// commits the masquerade chain and its POSTROUTING jump after the plugin is gone. The DEL that
/// follows must not look for them before they are in (it would find nothing, succeed, and the
/// late rules would stay until a GC). Here `iptables-restore` is slow on purpose: a wrapper that
/// waits a second.
#[test]
fn a_del_after_a_killed_add_removes_the_masquerade_its_orphaned_iptables_restore_adds_later() {
    let h = Host::new();
    let slow = testkit::SlowRestore::new("1");
    let conf = h.conf("net1", json!({"isDefaultGateway": true, "ipMasq": true, "ipMasqBackend": "iptables"}));
    let c = new_netns();
    let add = h.invoke("ADD", &c, "ctr", &conf).var("PATH", Some(slow.path())).spawn(&bin(), Some(&h.ns));
    slow.kill_once_started(add);

    // The runtime's DEL after the failed ADD, without prevResult, with the system's tools.
    assert_eq!(h.run("DEL", &c, "ctr", &conf).ok(), Value::Null);
    slow.wait_done();
    let saved = testkit::iptables_nat(&h.ns);
    let chain = firewall::identity::iptables_chain("", "net1", "ctr");
    assert!(
        !saved.contains(&chain) && !saved.contains("10.10.0."),
        "the killed ADD's masquerade outlived its DEL:\n{saved}"
    );
    assert_eq!(h.allocated("net1"), 0);
}
