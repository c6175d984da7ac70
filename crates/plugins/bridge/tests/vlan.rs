//! Kernel tests of bridge VLANs with traffic: `vlan` (access ports), `vlanTrunk` (single IDs and
//! `minID`/`maxID` ranges, carried tagged to VLAN sub-interfaces in the container) and
//! `preserveDefaultVlan`, and DEL leaving the bridge's VLAN table as it found it. All of it
//! happens in a sandbox "host" namespace and container namespaces the test makes.
//!
//! They need bridge VLAN filtering (`CONFIG_BRIDGE_VLAN_FILTERING`) and the `vlan` link type
//! (8021q). A kernel without them (this machine's own) cannot run them: each test then prints
//! "skipped: kernel lacks ..." and passes, unless `CNI_RS_REQUIRE_KERNEL_FEATURES=1`, which makes
//! a missing feature a failure. The VM lane (`make test-vm`, Debian's 6.1 kernel under qemu) sets
//! it, so these tests are never silently skipped there.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use testkit::{Invocation, Netns, TempDir, in_netns, ip, new_netns, ping};

const BRIDGE: &str = "br-vlan";

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bridge"))
}

/// What of bridge VLAN filtering and VLAN links this kernel lacks, tried in a throwaway
/// namespace: `None` when it has both.
fn missing_kernel_feature() -> Option<&'static str> {
    static MISSING: OnceLock<Option<&'static str>> = OnceLock::new();
    *MISSING.get_or_init(|| {
        let probe = new_netns();
        let ok = |args: &str| {
            in_netns(Command::new("ip").args(args.split_whitespace()), &probe)
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !ok("link add br-probe type bridge vlan_filtering 1") {
            Some("bridge vlan_filtering")
        } else if !ok("link add link br-probe name br-probe.5 type vlan id 5") {
            Some("the vlan (802.1Q) link type")
        } else {
            None
        }
    })
}

/// Whether the calling test can run on this kernel. When it cannot, says so on stderr (written
/// directly: libtest hides what passing tests print with `eprintln!`) and returns false, or fails
/// the test under `CNI_RS_REQUIRE_KERNEL_FEATURES=1`.
fn kernel_ready() -> bool {
    let Some(missing) = missing_kernel_feature() else { return true };
    let test = std::thread::current().name().unwrap_or("?").to_string();
    assert!(
        std::env::var("CNI_RS_REQUIRE_KERNEL_FEATURES").as_deref() != Ok("1"),
        "kernel lacks {missing} (and CNI_RS_REQUIRE_KERNEL_FEATURES=1 forbids skipping {test})"
    );
    let _ = writeln!(std::io::stderr(), "skipped: kernel lacks {missing} ({test})");
    false
}

/// A sandbox host with an IPAM store; every network of a test shares the bridge `br-vlan`.
struct Host {
    ns: Netns,
    ipam: TempDir,
}

impl Host {
    fn new() -> Host {
        let host = Host { ns: new_netns(), ipam: TempDir::new("bridge-vlan-ipam") };
        ip(&host.ns, "link set lo up");
        host
    }

    /// A network on `br-vlan` with addresses from `subnet` (none for an L2-only network) and the
    /// given keys.
    fn conf(&self, name: &str, subnet: Option<&str>, extra: Value) -> Value {
        let ipam = match subnet {
            Some(s) => json!({"type": "host-local", "dataDir": self.ipam.path().display().to_string(), "subnet": s}),
            None => json!({}),
        };
        let mut conf = json!({"cniVersion": "1.0.0", "name": name, "type": "bridge", "bridge": BRIDGE, "ipam": ipam});
        for (k, v) in extra.as_object().expect("object") {
            conf[k] = v.clone();
        }
        conf
    }

    fn run(&self, verb: &str, c: &Netns, cid: &str, conf: &Value) -> testkit::Output {
        Invocation::new(verb, cid, c.path(), "eth0", &conf.to_string()).run(&bin(), &self.ns)
    }

    /// ADD, returning the result.
    fn add(&self, c: &Netns, cid: &str, conf: &Value) -> Value {
        self.run("ADD", c, cid, conf).ok()
    }

    /// DEL with the ADD's result as prevResult, as a runtime sends it.
    fn del(&self, c: &Netns, cid: &str, conf: &Value, result: &Value) {
        let mut conf = conf.clone();
        conf["prevResult"] = result.clone();
        self.run("DEL", c, cid, &conf).ok();
    }

    /// `bridge -j vlan show` in the host: for each port (and the bridge itself), its VLANs as
    /// `"<id>"` (tagged), `"<id> untagged"` or `"<id> pvid untagged"`, ranges expanded.
    fn vlan_table(&self) -> BTreeMap<String, Vec<String>> {
        let out = in_netns(Command::new("bridge").args(["-j", "vlan", "show"]), &self.ns).output().expect("bridge");
        assert!(out.status.success(), "bridge vlan show: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        let all: Value = if text.trim().is_empty() { json!([]) } else { serde_json::from_str(&text).expect("JSON") };
        let mut table = BTreeMap::new();
        for port in all.as_array().expect("array") {
            let mut vlans = Vec::new();
            for v in port["vlans"].as_array().into_iter().flatten() {
                let flags = v["flags"].as_array().cloned().unwrap_or_default();
                let has = |f: &str| flags.iter().any(|x| x == f);
                let tag = match (has("PVID"), has("Egress Untagged")) {
                    (true, true) => " pvid untagged",
                    (true, false) => " pvid",
                    (false, true) => " untagged",
                    (false, false) => "",
                };
                let first = v["vlan"].as_u64().expect("vlan id");
                for id in first..=v["vlanEnd"].as_u64().unwrap_or(first) {
                    vlans.push(format!("{id}{tag}"));
                }
            }
            table.insert(port["ifname"].as_str().expect("ifname").to_string(), vlans);
        }
        table
    }

    /// The VLANs of the host end of an attachment.
    fn port_vlans(&self, result: &Value) -> Vec<String> {
        let port = result["interfaces"][1]["name"].as_str().expect("host veth in the result");
        self.vlan_table().remove(port).unwrap_or_default()
    }
}

fn addr_of(result: &Value) -> String {
    result["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string()
}

/// A sub-interface of the container's eth0 for VLAN `id`, with `addr` (prefix included).
fn vlan_subinterface(c: &Netns, id: u16, addr: &str) {
    ip(c, &format!("link add link eth0 name eth0.{id} type vlan id {id}"));
    ip(c, &format!("addr add {addr} dev eth0.{id}"));
    ip(c, &format!("link set eth0.{id} up"));
}

#[test]
fn access_ports_reach_their_own_vlan_only() {
    if !kernel_ready() {
        return;
    }
    let h = Host::new();
    // One subnet for all: only the VLANs keep the containers apart.
    let on = |vlan: u16| h.conf("net1", Some("10.10.0.0/24"), json!({"vlan": vlan}));
    let (a, b, c) = (new_netns(), new_netns(), new_netns());
    let ra = h.add(&a, "a", &on(100));
    let rb = h.add(&b, "b", &on(100));
    let rc = h.add(&c, "c", &on(200));
    let details = testkit::ip_json(&h.ns, &format!("-d link show {BRIDGE}"));
    assert_eq!(details[0]["linkinfo"]["info_data"]["vlan_filtering"], 1, "{details}");
    // The access VLAN is the port's PVID, untagged; the default VLAN 1 is gone.
    assert_eq!(h.port_vlans(&ra), ["100 pvid untagged"]);
    assert_eq!(h.port_vlans(&rc), ["200 pvid untagged"]);

    let (ia, ib, ic) = (addr_of(&ra), addr_of(&rb), addr_of(&rc));
    assert!(ping(&a, &ib), "VLAN 100: a cannot reach b");
    assert!(ping(&b, &ia), "VLAN 100: b cannot reach a");
    assert!(!ping(&c, &ia), "VLAN 200 reached a on VLAN 100");
    assert!(!ping(&c, &ib), "VLAN 200 reached b on VLAN 100");
    assert!(!ping(&a, &ic), "VLAN 100 reached c on VLAN 200");
}

#[test]
fn trunk_port_carries_its_vlans_tagged_and_no_others() {
    if !kernel_ready() {
        return;
    }
    let h = Host::new();
    let access = |name: &str, subnet: &str, vlan: u16| h.conf(name, Some(subnet), json!({"vlan": vlan}));
    let (a, c, d, t) = (new_netns(), new_netns(), new_netns(), new_netns());
    let ra = h.add(&a, "a", &access("v100", "10.100.0.0/24", 100));
    let rc = h.add(&c, "c", &access("v200", "10.200.0.0/24", 200));
    let rd = h.add(&d, "d", &access("v300", "10.30.0.0/24", 300));
    // A range (100-102) and a single ID (200); 300 is not in the trunk.
    let trunk = h.conf("trunk", None, json!({"vlanTrunk": [{"minID": 100, "maxID": 102}, {"id": 200}]}));
    let rt = h.add(&t, "t", &trunk);
    // Trunk VLANs tagged; without an access VLAN, VLAN 1 is the native (untagged) one.
    assert_eq!(h.port_vlans(&rt), ["1 pvid untagged", "100", "101", "102", "200"]);

    vlan_subinterface(&t, 100, "10.100.0.250/24");
    vlan_subinterface(&t, 200, "10.200.0.250/24");
    vlan_subinterface(&t, 300, "10.30.0.250/24");
    assert!(ping(&t, &addr_of(&ra)), "VLAN 100 (from the minID/maxID range) not carried tagged");
    assert!(ping(&t, &addr_of(&rc)), "VLAN 200 (a single trunk ID) not carried tagged");
    assert!(ping(&a, "10.100.0.250") && ping(&c, "10.200.0.250"), "access ports cannot reach the trunk");
    assert!(!ping(&t, &addr_of(&rd)), "VLAN 300 is not in the trunk but got through");
}

#[test]
fn access_vlan_gateways_answer_on_their_own_vlan() {
    if !kernel_ready() {
        return;
    }
    let h = Host::new();
    let gw = |name: &str, subnet: &str, vlan: u16| h.conf(name, Some(subnet), json!({"vlan": vlan, "isGateway": true}));
    let (a, c) = (new_netns(), new_netns());
    let ra = h.add(&a, "a", &gw("v100", "10.100.0.0/24", 100));
    h.add(&c, "c", &gw("v200", "10.200.0.0/24", 200));
    // The gateway of each VLAN is an interface <bridge>.<vlan> in the host behind an access port.
    assert!(testkit::addresses(&h.ns, "br-vlan.100").contains(&"10.100.0.1/24".to_string()));
    assert!(testkit::addresses(&h.ns, "br-vlan.200").contains(&"10.200.0.1/24".to_string()));
    assert!(ping(&a, "10.100.0.1"), "VLAN 100's gateway does not answer");
    assert!(ping(&c, "10.200.0.1"), "VLAN 200's gateway does not answer");
    assert_eq!(ra["ips"][0]["gateway"], "10.100.0.1");
    // Each gateway's port is an access port of its VLAN, like the containers'.
    let table = h.vlan_table();
    let mut ports: Vec<String> = table.iter().filter(|(port, _)| *port != BRIDGE).map(|(_, v)| v.join(",")).collect();
    ports.sort();
    assert_eq!(
        ports,
        ["100 pvid untagged", "100 pvid untagged", "200 pvid untagged", "200 pvid untagged"],
        "{table:?}"
    );
}

#[test]
fn preserve_default_vlan_keeps_the_port_in_vlan_1() {
    if !kernel_ready() {
        return;
    }
    let h = Host::new();
    let net = |extra: Value| h.conf("net1", Some("10.10.0.0/24"), extra);
    let (kept, dropped, native) = (new_netns(), new_netns(), new_netns());
    let rk = h.add(&kept, "kept", &net(json!({"vlan": 100, "preserveDefaultVlan": true})));
    let rd = h.add(&dropped, "dropped", &net(json!({"vlan": 100, "preserveDefaultVlan": false})));
    // A port without VLAN keys on the filtering bridge: the kernel's default, VLAN 1 native.
    let rn = h.add(&native, "native", &net(json!({})));
    assert_eq!(h.port_vlans(&rk), ["1 untagged", "100 pvid untagged"]);
    assert_eq!(h.port_vlans(&rd), ["100 pvid untagged"]);
    assert_eq!(h.port_vlans(&rn), ["1 pvid untagged"]);

    // VLAN 1's broadcasts (the native container's ARP requests) reach the port that kept VLAN 1,
    // and only that one: its neighbour table learns the asker. (The answer goes out on the PVID,
    // VLAN 100, so the ping itself fails either way.)
    let asker = addr_of(&rn);
    for target in [&rk, &rd] {
        ping(&native, &addr_of(target));
    }
    let learnt = |c: &Netns| ip(c, "neigh show dev eth0").contains(&asker);
    assert!(learnt(&kept), "VLAN 1 does not reach a port with preserveDefaultVlan");
    assert!(!learnt(&dropped), "VLAN 1 reaches a port without preserveDefaultVlan");
    // Both still talk on their access VLAN.
    assert!(ping(&kept, &addr_of(&rd)) && ping(&dropped, &addr_of(&rk)));
}

/// Upstream's default since v1.8.0 (commit 48a4ae5a, "complete VLAN isolation"); Debian's 1.1.1
/// still keeps VLAN 1. We follow v1.9.1.
#[test]
fn preserve_default_vlan_defaults_to_false_as_in_the_reference() {
    if !kernel_ready() {
        return;
    }
    let h = Host::new();
    let c = new_netns();
    let r = h.add(&c, "ctr", &h.conf("net1", Some("10.10.0.0/24"), json!({"vlan": 100})));
    assert_eq!(h.port_vlans(&r), ["100 pvid untagged"]);
}

#[test]
fn del_leaves_the_vlan_table_as_it_was() {
    if !kernel_ready() {
        return;
    }
    let h = Host::new();
    let access = h.conf("net1", Some("10.10.0.0/24"), json!({"vlan": 100}));
    let trunk = h.conf("trunk", None, json!({"vlanTrunk": [{"minID": 100, "maxID": 110}, {"id": 300}]}));
    let (a, t) = (new_netns(), new_netns());
    h.add(&a, "a", &access);
    h.add(&t, "t", &trunk);
    let before = h.vlan_table();
    assert_eq!(before.len(), 3, "the bridge and two ports: {before:?}");

    // More attachments on those VLANs and new ones, then their DELs.
    let (b, u, p) = (new_netns(), new_netns(), new_netns());
    let on_400 = h.conf("net1", Some("10.10.0.0/24"), json!({"vlan": 400, "preserveDefaultVlan": true}));
    let trunk2 = h.conf("trunk2", None, json!({"vlanTrunk": [{"minID": 105, "maxID": 120}, {"id": 999}]}));
    let rb = h.add(&b, "b", &access);
    let ru = h.add(&u, "u", &trunk2);
    let rp = h.add(&p, "p", &on_400);
    assert_eq!(h.vlan_table().len(), 6);
    h.del(&b, "b", &access, &rb);
    h.del(&u, "u", &trunk2, &ru);
    h.del(&p, "p", &on_400, &rp);
    assert_eq!(h.vlan_table(), before, "DEL changed the VLAN table");
    // A second DEL, and a DEL after the container is gone, change nothing either.
    h.del(&b, "b", &access, &rb);
    u.remove();
    Invocation::new("DEL", "u", "", "eth0", &trunk2.to_string()).run(&bin(), &h.ns).ok();
    assert_eq!(h.vlan_table(), before);
}
