//! Kernel tests: the built `macvlan` binary (with the built `static` and `host-local` as IPAM), run
//! as a runtime runs it, in a sandbox "host" namespace whose uplink (`uplink0`, the master) is one
//! end of a veth whose other end sits in a "neighbour" namespace on the same segment. Traffic
//! goes only between namespaces the test made. Build the IPAM plugins first
//! (`cargo build -p static -p host-local`).

use serde_json::{Value, json};
use std::path::PathBuf;
use testkit::{Invocation, Netns, Output, TempDir, ip, ip_json, link_namespaces, new_netns, ping};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_macvlan"))
}

/// A host with an uplink to a neighbour: uplink0 10.50.0.1/24 in the host, nb0 10.50.0.100/24
/// in the neighbour.
struct Segment {
    host: Netns,
    neighbour: Netns,
}

impl Segment {
    fn new() -> Segment {
        let s = Segment { host: new_netns(), neighbour: new_netns() };
        ip(&s.host, "link set lo up");
        link_namespaces(&s.host, "uplink0", "10.50.0.1/24", &s.neighbour, "nb0", "10.50.0.100/24");
        s
    }

    fn run(&self, command: &str, c: &Netns, cid: &str, conf: &Value) -> Output {
        self.run_with(command, c.path(), cid, conf, "")
    }

    fn run_with(&self, command: &str, netns: &str, cid: &str, conf: &Value, args: &str) -> Output {
        Invocation::new(command, cid, netns, "net1", &conf.to_string())
            .var("CNI_ARGS", Some(args))
            .run(&bin(), &self.host)
    }

    /// Links in the host other than lo and the uplink: a macvlan must never show up here.
    fn stray_host_links(&self) -> Vec<String> {
        ip_json(&self.host, "link show")
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_string())
            .filter(|n| n != "lo" && n != "uplink0")
            .collect()
    }
}

fn static_conf(extra: Value, address: &str) -> Value {
    let mut conf = json!({
        "cniVersion": "1.0.0", "name": "mvnet", "type": "macvlan", "master": "uplink0",
        "ipam": {"type": "static", "addresses": [{"address": address, "gateway": "10.50.0.1"}],
                 "routes": [{"dst": "0.0.0.0/0"}]}
    });
    for (k, v) in extra.as_object().unwrap() {
        conf[k] = v.clone();
    }
    conf
}

fn with_prev(conf: &Value, result: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = result.clone();
    c
}

#[test]
fn two_containers_reach_each_other_and_the_neighbour() {
    let s = Segment::new();
    let (a, b) = (new_netns(), new_netns());
    let conf_a = static_conf(json!({"mtu": 1400}), "10.50.0.11/24");
    let conf_b = static_conf(json!({}), "10.50.0.12/24");
    let ra = s.run("ADD", &a, "ctr-a", &conf_a).ok();
    s.run("ADD", &b, "ctr-b", &conf_b).ok();

    // The reference's shape: one interface, in the sandbox, every address on it.
    assert_eq!(ra["interfaces"].as_array().unwrap().len(), 1, "{ra}");
    assert_eq!(ra["interfaces"][0]["name"], "net1");
    assert_eq!(ra["interfaces"][0]["sandbox"], a.path());
    let link = &ip_json(&a, "-d link show net1")[0];
    assert_eq!(ra["interfaces"][0]["mac"], link["address"]);
    assert_eq!(link["linkinfo"]["info_kind"], "macvlan");
    assert_eq!(link["linkinfo"]["info_data"]["mode"], "bridge");
    assert_eq!(link["mtu"], 1400);
    assert_eq!(ip_json(&b, "link show net1")[0]["mtu"], 1500, "the master's MTU by default");
    assert_eq!(ra["ips"], json!([{"address": "10.50.0.11/24", "gateway": "10.50.0.1", "interface": 0}]));
    assert!(ip(&a, "route show").contains("default via 10.50.0.1 dev net1"));
    assert!(s.stray_host_links().is_empty(), "{:?}", s.stray_host_links());

    // Each other (bridge mode), and the neighbour on the uplink.
    assert!(ping(&a, "10.50.0.12"));
    assert!(ping(&b, "10.50.0.11"));
    assert!(ping(&a, "10.50.0.100"));
    assert!(ping(&s.neighbour, "10.50.0.12"));

    // CHECK passes, then fails once the interface is changed behind our back.
    assert!(s.run("CHECK", &a, "ctr-a", &with_prev(&conf_a, &ra)).success());
    let mut other_mode = with_prev(&conf_a, &ra);
    other_mode["mode"] = json!("vepa");
    let out = s.run("CHECK", &a, "ctr-a", &other_mode);
    assert!(out.stdout.contains("container macvlan mode bridge does not match expected value: vepa"), "{}", out.stdout);
    ip(&a, "addr flush dev net1");
    assert!(!s.run("CHECK", &a, "ctr-a", &with_prev(&conf_a, &ra)).success());

    // DEL removes the link; again, and after the namespace is gone, still success.
    assert!(s.run("DEL", &a, "ctr-a", &conf_a).success());
    assert!(testkit::link(&a, "net1").is_none());
    assert!(s.run("DEL", &a, "ctr-a", &conf_a).success());
    let gone = b.path().to_string();
    b.remove();
    assert!(s.run_with("DEL", &gone, "ctr-b", &conf_b, "").success());
    assert!(s.run_with("DEL", "", "ctr-b", &conf_b, "").success());
}

#[test]
fn every_mode_and_the_mac_sources() {
    let s = Segment::new();
    for mode in ["bridge", "private", "vepa", "passthru", "source"] {
        let c = new_netns();
        let conf = json!({"cniVersion": "1.1.0", "name": "l2", "type": "macvlan", "master": "uplink0", "mode": mode});
        let r = s.run("ADD", &c, "ctr", &conf).ok();
        let link = &ip_json(&c, "-d link show net1")[0];
        assert_eq!(link["linkinfo"]["info_data"]["mode"], mode, "{link}");
        assert!(testkit::is_up(link));
        // L2 only: no addresses in the result.
        assert!(r.get("ips").is_none(), "{r}");
        assert!(s.run("CHECK", &c, "ctr", &with_prev(&conf, &r)).success(), "{mode}");
        assert!(s.run("DEL", &c, "ctr", &conf).success());
    }

    // config mac < CNI_ARGS MAC < runtimeConfig.mac.
    let c = new_netns();
    let mut conf = json!({"cniVersion": "1.0.0", "name": "l2", "type": "macvlan", "master": "uplink0", "mac": "0a:00:00:00:00:01"});
    let r = s.run_with("ADD", c.path(), "ctr", &conf, "MAC=0a:00:00:00:00:02").ok();
    assert_eq!(r["interfaces"][0]["mac"], "0a:00:00:00:00:02");
    assert_eq!(ip_json(&c, "link show net1")[0]["address"], "0a:00:00:00:00:02");
    assert!(s.run("DEL", &c, "ctr", &conf).success());
    conf["runtimeConfig"] = json!({"mac": "0a:00:00:00:00:03"});
    let r = s.run_with("ADD", c.path(), "ctr", &conf, "MAC=0a:00:00:00:00:02").ok();
    assert_eq!(r["interfaces"][0]["mac"], "0a:00:00:00:00:03");
    assert!(s.run("DEL", &c, "ctr", &conf).success());
}

#[test]
fn default_master_and_link_in_container() {
    let s = Segment::new();
    ip(&s.host, "route add default via 10.50.0.100 dev uplink0");
    let c = new_netns();
    let conf = json!({"cniVersion": "1.0.0", "name": "l2", "type": "macvlan"});
    s.run("ADD", &c, "ctr", &conf).ok();
    assert!(ip_json(&c, "-d link show net1")[0]["link_netnsid"].is_number(), "the master is in the host");
    assert!(s.run("DEL", &c, "ctr", &conf).success());

    // linkInContainer: the master lives in the container's namespace (a veth end moved there
    // stands in for an SR-IOV VF given to the pod; a macvlan would not do: the kernel puts a
    // macvlan of a macvlan on the lower's own lower).
    let c = new_netns();
    ip(&s.host, &format!("link add vf0 type veth peer name inner0 netns {}", c.path()));
    let conf =
        json!({"cniVersion": "1.0.0", "name": "l2", "type": "macvlan", "master": "inner0", "linkInContainer": true});
    // Without linkInContainer the host has no such master.
    let out =
        s.run("ADD", &c, "ctr", &json!({"cniVersion": "1.0.0", "name": "l2", "type": "macvlan", "master": "inner0"}));
    assert_eq!(out.err_code(), 7, "{}", out.stdout);
    let r = s.run("ADD", &c, "ctr", &conf).ok();
    let link = &ip_json(&c, "-d link show net1")[0];
    assert_eq!(link["link"], "inner0", "{link}");
    assert!(link.get("link_netnsid").is_none(), "{link}");
    assert!(s.run("CHECK", &c, "ctr", &with_prev(&conf, &r)).success());
    assert!(s.run("DEL", &c, "ctr", &conf).success());
    assert!(testkit::link(&c, "inner0").is_some());
}

#[test]
fn bad_input_is_the_spec_error_and_leaves_nothing() {
    let s = Segment::new();
    let c = new_netns();
    let base = static_conf(json!({}), "10.50.0.21/24");
    let cases = [
        (json!({"mode": "l3"}), 7, "unknown macvlan mode"),
        (json!({"master": "nosuch0"}), 7, "failed to lookup master \"nosuch0\""),
        (json!({"master": "lo"}), 7, "a macvlan needs an Ethernet master"),
        (json!({"mtu": 9000}), 7, "invalid MTU 9000, must be [0, master MTU(1500)]"),
        (json!({"mac": "nonsense"}), 7, "invalid args nonsense for MAC addr"),
    ];
    for (extra, code, msg) in cases {
        let mut conf = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        let out = s.run("ADD", &c, "ctr", &conf);
        assert_eq!(out.exit_code, 1, "{extra}");
        assert_eq!(out.err_code(), code, "{extra}: {}", out.stdout);
        assert!(out.json()["msg"].as_str().unwrap().contains(msg), "{extra}: {}", out.stdout);
        assert!(testkit::link(&c, "net1").is_none() && ip_json(&c, "link show").as_array().unwrap().len() == 1);
    }
    // No master and no default route.
    let out = s.run("ADD", &c, "ctr", &json!({"cniVersion": "1.0.0", "name": "l2", "type": "macvlan"}));
    assert!(out.stdout.contains("no default route interface found"), "{}", out.stdout);

    // A gateway outside the address's subnet: IPAM succeeds, the route fails; the link goes.
    let mut conf = static_conf(json!({}), "10.50.0.21/24");
    conf["ipam"]["addresses"][0]["gateway"] = json!("10.99.0.1");
    let out = s.run("ADD", &c, "ctr", &conf);
    assert_eq!(out.exit_code, 1, "{}", out.stdout);
    assert_eq!(ip_json(&c, "link show").as_array().unwrap().len(), 1, "only lo is left");
    assert!(s.stray_host_links().is_empty());

    // IPAM failing (host-local out of addresses) undoes the link too.
    let store = TempDir::new("macvlan-ipam");
    let conf = json!({"cniVersion": "1.0.0", "name": "full", "type": "macvlan", "master": "uplink0",
        "ipam": {"type": "host-local", "dataDir": store.path().display().to_string(),
                 "ranges": [[{"subnet": "10.60.0.0/30"}]]}});
    let first = new_netns();
    s.run("ADD", &first, "ctr-1", &conf).ok();
    let out = s.run("ADD", &c, "ctr-2", &conf);
    assert_eq!(out.exit_code, 1, "{}", out.stdout);
    assert_eq!(ip_json(&c, "link show").as_array().unwrap().len(), 1, "only lo is left");
    assert!(s.run("DEL", &first, "ctr-1", &conf).success());
    assert!(testkit::host_local_leftovers(&store.path().join("full")).iter().all(|l| !l.starts_with("address")));

    // An interface name already taken in the container: refused, the existing one untouched.
    ip(&c, "link add net1 type veth peer name other1");
    let out = s.run("ADD", &c, "ctr", &base);
    assert!(out.stdout.contains("already exists"), "{}", out.stdout);
    assert_eq!(testkit::link(&c, "net1").unwrap()["link_type"], "ether");
    assert!(s.stray_host_links().is_empty());
}

#[test]
fn status_needs_the_master() {
    let s = Segment::new();
    let conf = json!({"cniVersion": "1.1.0", "name": "l2", "type": "macvlan", "master": "uplink0"});
    assert!(s.run_with("STATUS", "", "", &conf, "").success());
    let mut missing = conf.clone();
    missing["master"] = json!("nosuch0");
    assert_eq!(s.run_with("STATUS", "", "", &missing, "").err_code(), 50);
}

#[test]
fn concurrent_adds_and_dels_on_one_master() {
    let s = Segment::new();
    let store = TempDir::new("macvlan-many");
    let conf = json!({"cniVersion": "1.0.0", "name": "many", "type": "macvlan", "master": "uplink0",
        "ipam": {"type": "host-local", "dataDir": store.path().display().to_string(),
                 "ranges": [[{"subnet": "10.50.0.0/24", "rangeStart": "10.50.0.30", "rangeEnd": "10.50.0.60"}]]}});
    let containers: Vec<Netns> = (0..8).map(|_| new_netns()).collect();
    let spawn = |verb: &str| -> Vec<std::process::Child> {
        containers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                Invocation::new(verb, &format!("ctr-{i}"), c.path(), "net1", &conf.to_string())
                    .spawn(&bin(), Some(&s.host))
            })
            .collect()
    };
    let outputs: Vec<_> = spawn("ADD").into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    let mut addresses = Vec::new();
    for out in &outputs {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        addresses.push(r["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string());
    }
    let mut distinct = addresses.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 8, "{addresses:?}");
    // Every container reaches the neighbour and the next container.
    for (i, c) in containers.iter().enumerate() {
        assert!(ping(c, "10.50.0.100"), "container {i}");
        assert!(ping(c, &addresses[(i + 1) % 8]), "container {i} to {}", addresses[(i + 1) % 8]);
    }
    for child in spawn("DEL") {
        assert!(child.wait_with_output().unwrap().status.success());
    }
    for c in &containers {
        assert!(testkit::link(c, "net1").is_none());
    }
    assert!(testkit::host_local_leftovers(&store.path().join("many")).iter().all(|l| !l.starts_with("address")));
    assert!(s.stray_host_links().is_empty());
}

#[test]
fn gc_is_passed_on_to_ipam() {
    let s = Segment::new();
    let store = TempDir::new("macvlan-gc");
    let mut conf = json!({"cniVersion": "1.1.0", "name": "gcnet", "type": "macvlan", "master": "uplink0",
        "ipam": {"type": "host-local", "dataDir": store.path().display().to_string(),
                 "ranges": [[{"subnet": "10.50.0.0/24", "rangeStart": "10.50.0.70"}]]}});
    let (a, b) = (new_netns(), new_netns());
    s.run("ADD", &a, "ctr-a", &conf).ok();
    s.run("ADD", &b, "ctr-b", &conf).ok();
    let allocated = || {
        testkit::host_local_leftovers(&store.path().join("gcnet")).iter().filter(|l| l.starts_with("address")).count()
    };
    assert_eq!(allocated(), 2);
    conf["cni.dev/valid-attachments"] = json!([{"containerID": "ctr-a", "ifname": "net1"}]);
    let gc = Invocation::new("GC", "", "", "", &conf.to_string())
        .var("CNI_CONTAINERID", None)
        .var("CNI_NETNS", None)
        .var("CNI_IFNAME", None)
        .run(&bin(), &s.host);
    assert!(gc.success(), "{}", gc.stdout);
    assert_eq!(allocated(), 1, "ctr-b's address is released, ctr-a's kept");
}
