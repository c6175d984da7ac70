//! Kernel tests: the built `ptp` binary (with the built `host-local` as IPAM), run as a runtime
//! runs it, in a sandbox "host" namespace with container namespaces. Traffic goes only between
//! namespaces the test made.

use serde_json::{Value, json};
use std::path::PathBuf;
use testkit::{Invocation, Netns, Output, TempDir, ip, ip_json, iptables_nat, new_netns, nft_ruleset, ping};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ptp"))
}

struct Host {
    ns: Netns,
    ipam: TempDir,
}

impl Host {
    fn new() -> Host {
        let host = Host { ns: new_netns(), ipam: TempDir::new("ptp-ipam") };
        ip(&host.ns, "link set lo up");
        host
    }

    /// A dual-stack ptp network with default routes, the given keys on top.
    fn conf(&self, name: &str, extra: Value) -> Value {
        let mut conf = json!({
            "cniVersion": "1.0.0", "name": name, "type": "ptp",
            "ipam": {"type": "host-local", "dataDir": self.ipam.path().display().to_string(),
                     "ranges": [[{"subnet": "10.20.0.0/24"}], [{"subnet": "fd20::/64"}]],
                     "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}
        });
        for (k, v) in extra.as_object().expect("object") {
            conf[k] = v.clone();
        }
        conf
    }

    fn invoke(&self, command: &str, c: &str, cid: &str, conf: &Value) -> Invocation {
        Invocation::new(command, cid, c, "eth0", &conf.to_string())
    }

    fn run(&self, command: &str, c: &Netns, cid: &str, conf: &Value) -> Output {
        self.invoke(command, c.path(), cid, conf).run(&bin(), &self.ns)
    }

    fn add(&self, c: &Netns, cid: &str, conf: &Value) -> Value {
        self.run("ADD", c, cid, conf).ok()
    }

    fn allocated(&self, network: &str) -> usize {
        testkit::host_local_leftovers(&self.ipam.path().join(network))
            .iter()
            .filter(|l| l.starts_with("address"))
            .count()
    }

    fn host_veths(&self) -> Vec<String> {
        ip_json(&self.ns, "link show type veth")
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_string())
            .collect()
    }
}

fn with_prev(conf: &Value, result: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = result.clone();
    c
}

fn addr_of(result: &Value, i: usize) -> String {
    result["ips"][i]["address"].as_str().unwrap().split('/').next().unwrap().to_string()
}

#[test]
fn two_containers_reach_each_other_and_the_host_through_host_routes() {
    let h = Host::new();
    let conf = h.conf("kind", json!({"mtu": 1400}));
    let (a, b) = (new_netns(), new_netns());
    let ra = h.add(&a, "ctr-a", &conf);
    let rb = h.add(&b, "ctr-b", &conf);

    // The reference's shape: [host veth, container], every address on interface 1.
    let host_veth = ra["interfaces"][0]["name"].as_str().unwrap().to_string();
    assert!(host_veth.starts_with("veth"), "{ra}");
    assert!(ra["interfaces"][0].get("sandbox").is_none());
    assert_eq!(ra["interfaces"][1]["name"], "eth0");
    assert_eq!(ra["interfaces"][1]["sandbox"], a.path());
    assert_eq!(ra["interfaces"][1]["mac"], ip_json(&a, "link show eth0")[0]["address"]);
    assert_eq!(ra["interfaces"][0]["mac"], ip_json(&h.ns, &format!("link show {host_veth}"))[0]["address"]);
    assert_eq!(ra["ips"][0], json!({"address": "10.20.0.2/24", "gateway": "10.20.0.1", "interface": 1}));
    assert_eq!(ra["ips"][1], json!({"address": "fd20::2/64", "gateway": "fd20::1", "interface": 1}));

    // mtu on both ends.
    assert_eq!(ip_json(&a, "link show eth0")[0]["mtu"], 1400);
    assert_eq!(ip_json(&h.ns, &format!("link show {host_veth}"))[0]["mtu"], 1400);

    // Container routes: no subnet route on the link, gateway /32 scope link, subnet via gateway.
    let routes = ip(&a, "route show");
    assert!(routes.contains("default via 10.20.0.1 dev eth0"), "{routes}");
    assert!(routes.contains("10.20.0.0/24 via 10.20.0.1 dev eth0 src 10.20.0.2"), "{routes}");
    assert!(routes.contains("10.20.0.1 dev eth0 scope link src 10.20.0.2"), "{routes}");
    assert!(!routes.contains("10.20.0.0/24 dev eth0 proto kernel"), "{routes}");
    let routes6 = ip(&a, "-6 route show");
    assert!(routes6.contains("fd20::/64 via fd20::1 dev eth0"), "{routes6}");
    assert!(routes6.contains("fd20::1 dev eth0"), "{routes6}");

    // Host: the gateway /32 and /128 on the veth, /32 and /128 routes to the container.
    let addrs = testkit::addresses(&h.ns, &host_veth);
    assert!(addrs.contains(&"10.20.0.1/32".to_string()) && addrs.contains(&"fd20::1/128".to_string()), "{addrs:?}");
    assert!(ip(&h.ns, "route show").contains(&format!("10.20.0.2 dev {host_veth}")));
    assert!(ip(&h.ns, "-6 route show").contains(&format!("fd20::2 dev {host_veth}")));
    assert_eq!(testkit::ip_json(&h.ns, "-6 addr show tentative").as_array().map_or(0, |a| a.len()), 0);

    // Traffic: each other, both families, and the host at the gateway.
    for (from, to) in [(&a, addr_of(&rb, 0)), (&a, addr_of(&rb, 1)), (&b, addr_of(&ra, 0)), (&b, addr_of(&ra, 1))] {
        assert!(ping(from, &to), "no answer from {to}");
    }
    assert!(ping(&a, "10.20.0.1") && ping(&a, "fd20::1"));
    assert!(ping(&h.ns, &addr_of(&ra, 0)) && ping(&h.ns, &addr_of(&ra, 1)));
    assert_eq!(h.ns.run(|| netkit::sysctl::read("net/ipv4/ip_forward")).unwrap().unwrap(), "1");

    // CHECK passes on what ADD made, and fails once a host route is gone.
    h.run("CHECK", &a, "ctr-a", &with_prev(&conf, &ra)).ok();
    ip(&h.ns, &format!("route del 10.20.0.2/32 dev {host_veth}"));
    assert_eq!(h.run("CHECK", &a, "ctr-a", &with_prev(&conf, &ra)).err_code(), 999);

    // DEL leaves nothing, and again is fine.
    for _ in 0..2 {
        h.run("DEL", &a, "ctr-a", &with_prev(&conf, &ra)).ok();
        h.run("DEL", &b, "ctr-b", &with_prev(&conf, &rb)).ok();
    }
    assert!(h.host_veths().is_empty());
    assert!(testkit::link(&a, "eth0").is_none());
    assert_eq!(h.allocated("kind"), 0);
    assert!(!ip(&h.ns, "route show").contains("10.20.0."));
}

#[test]
fn results_in_every_version() {
    let h = Host::new();
    for (i, version) in ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"].iter().enumerate() {
        let mut conf = h.conf("versions", json!({}));
        conf["cniVersion"] = json!(version);
        let c = new_netns();
        let cid = format!("v{i}");
        let r = h.add(&c, &cid, &conf);
        if version.starts_with("0.1") || version.starts_with("0.2") {
            assert_eq!(r["ip4"]["ip"], format!("10.20.0.{}/24", i + 2), "{version}: {r}");
            assert_eq!(r["ip4"]["gateway"], "10.20.0.1");
            assert!(r.get("interfaces").is_none());
        } else {
            assert_eq!(r["cniVersion"], *version);
            assert_eq!(r["interfaces"].as_array().unwrap().len(), 2, "{version}: {r}");
            assert_eq!(r["ips"][0]["interface"], 1);
            if version.starts_with("0.") {
                assert_eq!(r["ips"][0]["version"], "4");
            }
        }
        h.run("DEL", &c, &cid, &conf).ok();
    }
    assert!(h.host_veths().is_empty());
}

#[test]
fn ip_masq_by_identity_survives_a_lost_netns_and_prev_result() {
    let h = Host::new();
    for backend in ["nftables", "iptables"] {
        let conf = h.conf("masq", json!({"ipMasq": true, "ipMasqBackend": backend}));
        let c = new_netns();
        let r = h.add(&c, "ctr-m", &conf);
        let rules = if backend == "nftables" { nft_ruleset(&h.ns) } else { iptables_nat(&h.ns) };
        assert!(rules.contains("10.20.0."), "{backend}: {rules}");
        assert!(rules.contains("masquerade") || rules.contains("MASQUERADE"), "{backend}: {rules}");
        h.run("CHECK", &c, "ctr-m", &with_prev(&conf, &r)).ok();

        // The netns goes first; DEL has neither it nor a prevResult (the reference leaks here).
        let path = c.path().to_string();
        c.remove();
        h.invoke("DEL", &path, "ctr-m", &conf).run(&bin(), &h.ns).ok();
        let rules = if backend == "nftables" { nft_ruleset(&h.ns) } else { iptables_nat(&h.ns) };
        assert!(!rules.contains("10.20.0."), "{backend}: left behind: {rules}");
        assert_eq!(h.allocated("masq"), 0);
    }
}

#[test]
fn gc_collects_masquerade_of_attachments_no_longer_valid() {
    let h = Host::new();
    let mut conf = h.conf("gcnet", json!({"ipMasq": true}));
    conf["cniVersion"] = json!("1.1.0");
    let (a, b) = (new_netns(), new_netns());
    let ra = h.add(&a, "keep", &conf);
    h.add(&b, "gone", &conf);
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    for _ in 0..2 {
        Invocation::new("GC", "", "", "", &gc.to_string())
            .var("CNI_CONTAINERID", None)
            .var("CNI_NETNS", None)
            .var("CNI_IFNAME", None)
            .run(&bin(), &h.ns)
            .ok();
    }
    let rules = nft_ruleset(&h.ns);
    assert!(rules.contains(&addr_of(&ra, 0)), "{rules}");
    assert!(!rules.contains("10.20.0.3"), "{rules}");
    // IPAM GC ran too: only the kept container's two addresses are still allocated.
    assert_eq!(h.allocated("gcnet"), 2);
}

#[test]
fn bad_input_is_refused_and_leaves_nothing() {
    let h = Host::new();
    let c = new_netns();
    for (extra, code) in [
        (json!({"mtu": 5}), 7),
        (json!({"ipMasqBackend": "pf"}), 7),
        (json!({"ipam": {}}), 7),
        (json!({"ipMasq": "yes"}), 6),
        (json!({"ipam": {"type": "no-such-ipam"}}), 7),
    ] {
        let conf = h.conf("bad", extra.clone());
        let out = h.run("ADD", &c, "ctr-bad", &conf);
        assert_eq!(out.err_code(), code, "{extra}: {}", out.stdout);
    }
    assert!(h.host_veths().is_empty());
    assert!(testkit::link(&c, "eth0").is_none());
    assert_eq!(h.allocated("bad"), 0);

    // A netns that does not exist: code 3 (after nothing was allocated).
    let out =
        h.invoke("ADD", "/proc/self/task/999999999/ns/net", "ctr-x", &h.conf("bad", json!({}))).run(&bin(), &h.ns);
    assert!(!out.success());
    assert_eq!(h.allocated("bad"), 0);
}

#[test]
fn a_failure_half_way_undoes_everything() {
    let h = Host::new();
    let conf = h.conf("undo", json!({}));
    let c = new_netns();
    // The container's eth0 exists already with another kind: refused before anything is made.
    ip(&c, "link add eth0 type veth peer name other");
    assert_eq!(h.run("ADD", &c, "ctr-u", &conf).exit_code, 1);
    assert!(h.host_veths().is_empty());
    assert_eq!(h.allocated("undo"), 0);
    ip(&c, "link del eth0");

    // A failure late in ADD, after the container side is configured: the host end cannot take
    // the IPv6 gateway address because new links on the host start with IPv6 disabled.
    testkit::set_sysctl(&h.ns, "net/ipv6/conf/default/disable_ipv6", "1");
    let out = h.run("ADD", &c, "ctr-u", &conf);
    testkit::set_sysctl(&h.ns, "net/ipv6/conf/default/disable_ipv6", "0");
    assert!(!out.success(), "{}", out.stdout);
    assert!(h.host_veths().is_empty(), "{:?}", h.host_veths());
    assert!(testkit::link(&c, "eth0").is_none());
    assert_eq!(h.allocated("undo"), 0);
}

#[test]
fn status_passes_through_ipam() {
    let h = Host::new();
    let mut conf = h.conf("st", json!({}));
    conf["cniVersion"] = json!("1.1.0");
    Invocation::new("STATUS", "", "", "", &conf.to_string())
        .var("CNI_CONTAINERID", None)
        .var("CNI_NETNS", None)
        .var("CNI_IFNAME", None)
        .run(&bin(), &h.ns)
        .ok();
}

#[test]
fn many_adds_and_dels_at_once() {
    let h = Host::new();
    let conf = h.conf("busy", json!({"ipMasq": true}));
    let pods: Vec<Netns> = (0..12).map(|_| new_netns()).collect();
    let spawn = |command: &str, i: usize, conf: &Value| {
        h.invoke(command, pods[i].path(), &format!("ctr-{i}"), conf).spawn(&bin(), Some(&h.ns))
    };
    let children: Vec<_> = (0..pods.len()).map(|i| spawn("ADD", i, &conf)).collect();
    let results: Vec<Value> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
            serde_json::from_slice(&out.stdout).unwrap()
        })
        .collect();
    let mut addresses: Vec<String> = results.iter().map(|r| addr_of(r, 0)).collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), pods.len(), "every container has its own address");
    assert_eq!(h.host_veths().len(), pods.len());
    // Every container reaches the first one, and the first reaches the last.
    for (i, pod) in pods.iter().enumerate().skip(1) {
        assert!(ping(pod, &addr_of(&results[0], 0)), "container {i}");
    }
    assert!(ping(&pods[0], &addr_of(&results[pods.len() - 1], 1)));

    let children: Vec<_> = (0..pods.len()).map(|i| spawn("DEL", i, &with_prev(&conf, &results[i]))).collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    }
    assert!(h.host_veths().is_empty());
    assert_eq!(h.allocated("busy"), 0);
    assert!(!nft_ruleset(&h.ns).contains("10.20.0."));
    assert!(!ip(&h.ns, "route show").contains("10.20.0."));
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
    let conf = h.conf("masq", json!({"ipMasq": true, "ipMasqBackend": "iptables"}));
    let c = new_netns();
    let add = h.invoke("ADD", c.path(), "ctr-k", &conf).var("PATH", Some(slow.path())).spawn(&bin(), Some(&h.ns));
    slow.kill_once_started(add);

    // The runtime's DEL after the failed ADD, without prevResult, with the system's tools.
    assert_eq!(h.run("DEL", &c, "ctr-k", &conf).ok(), Value::Null);
    slow.wait_done();
    let saved = iptables_nat(&h.ns);
    let chain = firewall::identity::iptables_chain("", "masq", "ctr-k");
    assert!(
        !saved.contains(&chain) && !saved.contains("10.20.0."),
        "the killed ADD's masquerade outlived its DEL:\n{saved}"
    );
    assert_eq!(h.allocated("masq"), 0);
}
