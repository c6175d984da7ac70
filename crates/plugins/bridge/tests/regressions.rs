//! Kernel tests for defects found when the suite was tried as a new user would (issue 12): CHECK
//! of the second container, panics in ADD, DEL with a bad prevResult, and DEL after ipMasq or
//! macspoofchk were switched off. Each failed before its fix.

use serde_json::{Value, json};
use std::path::PathBuf;
use testkit::{Invocation, Netns, Output, TempDir, ip, ip_json, link, new_netns, nft_ruleset};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bridge"))
}

struct Host {
    ns: Netns,
    ipam: TempDir,
}

impl Host {
    fn new() -> Host {
        let h = Host { ns: new_netns(), ipam: TempDir::new("bridge-regressions") };
        ip(&h.ns, "link set lo up");
        h
    }

    fn conf(&self, extra: Value) -> Value {
        let mut conf = json!({
            "cniVersion": "1.0.0", "name": "reg", "type": "bridge", "bridge": "br-reg", "isGateway": true,
            "ipam": {"type": "host-local", "dataDir": self.ipam.path().display().to_string(),
                     "ranges": [[{"subnet": "10.12.0.0/24"}]]}
        });
        for (k, v) in extra.as_object().expect("object") {
            conf[k] = v.clone();
        }
        conf
    }

    fn run(&self, command: &str, c: &Netns, cid: &str, conf: &Value, fault: Option<&str>) -> Output {
        Invocation::new(command, cid, c.path(), "eth0", &conf.to_string())
            .var("CNI_RS_FAULT", fault)
            .run(&bin(), &self.ns)
    }

    /// What of any container is left on the host.
    fn leftovers(&self) -> Vec<String> {
        let mut left: Vec<String> = ip_json(&self.ns, "link show type veth")
            .as_array()
            .unwrap()
            .iter()
            .map(|l| format!("veth {}", l["ifname"]))
            .collect();
        left.extend(testkit::host_local_leftovers(&self.ipam.path().join("reg")));
        let rules = nft_ruleset(&self.ns);
        for marker in ["chain masq-", "chain spoof-", "10.12.0."] {
            if rules.contains(marker) {
                left.push(format!("nftables {marker:?}"));
            }
        }
        left
    }
}

fn with_prev(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}

#[test]
fn check_passes_for_every_container_on_a_bridge() {
    let h = Host::new();
    let conf = h.conf(json!({"ipMasq": true, "macspoofchk": true}));
    let containers: Vec<(Netns, Value)> = (0..3)
        .map(|i| {
            let c = new_netns();
            let r = h.run("ADD", &c, &format!("ctr{i}"), &conf, None).ok();
            (c, r)
        })
        .collect();
    // Fresh namespaces number their interfaces alike: every container's eth0 has one index.
    let index = |c: &Netns| link(c, "eth0").unwrap()["ifindex"].clone();
    assert_eq!(index(&containers[0].0), index(&containers[1].0), "the case this test is about");
    for (i, (c, r)) in containers.iter().enumerate() {
        let out = h.run("CHECK", c, &format!("ctr{i}"), &with_prev(&conf, r), None);
        assert!(out.success(), "CHECK of container {i}: {}", out.stdout);
    }
    // A container whose peer is not on the bridge any more fails CHECK.
    let host_veth = containers[1].1["interfaces"][1]["name"].as_str().unwrap().to_string();
    ip(&h.ns, &format!("link set {host_veth} nomaster"));
    let out = h.run("CHECK", &containers[1].0, "ctr1", &with_prev(&conf, &containers[1].1), None);
    assert!(out.stdout.contains("is not a port of bridge br-reg"), "{}", out.stdout);
}

#[test]
fn a_panic_at_any_step_of_add_is_undone() {
    let h = Host::new();
    let conf = h.conf(json!({"ipMasq": true, "macspoofchk": true}));
    let c = new_netns();
    // A clean ADD and DEL first, so the bridge and tables exist as on a busy host.
    let r = h.run("ADD", &c, "ctr", &conf, None).ok();
    h.run("DEL", &c, "ctr", &with_prev(&conf, &r), None).ok();
    assert_eq!(h.leftovers(), Vec::<String>::new());

    let steps = ["veth created", "port set", "container configured", "gateway set", "firewall installed", "port up"];
    for step in steps {
        let fault = format!("bridge:{step}=panic");
        let out = h.run("ADD", &c, "ctr", &conf, Some(&fault));
        assert_eq!(out.err_code(), 999, "{step}: {}", out.stdout);
        assert!(out.stdout.contains("injected panic"), "{step}: {}", out.stdout);
        // No DEL: the ADD itself must have taken everything back.
        assert_eq!(h.leftovers(), Vec::<String>::new(), "after a panic at {step}");
        assert!(link(&c, "eth0").is_none(), "{step}: container interface left");
    }
}

#[test]
fn del_with_an_unparsable_prev_result_cleans_up_by_identity() {
    let h = Host::new();
    let conf = h.conf(json!({"ipMasq": true, "macspoofchk": true}));
    let c = new_netns();
    h.run("ADD", &c, "ctr", &conf, None).ok();
    let garbage = json!({"cniVersion": "1.0.0", "interfaces": "garbage", "ips": [{"address": "not-an-ip"}]});
    let out = h.run("DEL", &c, "ctr", &with_prev(&conf, &garbage), None);
    assert!(out.success(), "{}", out.stdout);
    assert_eq!(h.leftovers(), Vec::<String>::new());
    assert!(link(&c, "eth0").is_none());
}

#[test]
fn del_removes_what_add_installed_whatever_the_flags_say_now() {
    let h = Host::new();
    let on = h.conf(json!({"ipMasq": true, "macspoofchk": true}));
    let off = h.conf(json!({"ipMasq": false, "macspoofchk": false}));
    for with_result in [true, false] {
        let c = new_netns();
        let r = h.run("ADD", &c, "ctr", &on, None).ok();
        let rules = nft_ruleset(&h.ns);
        assert!(rules.contains("chain masq-") && rules.contains("chain spoof-"), "{rules}");
        let del = if with_result { with_prev(&off, &r) } else { off.clone() };
        assert!(h.run("DEL", &c, "ctr", &del, None).success());
        assert_eq!(h.leftovers(), Vec::<String>::new(), "prevResult given: {with_result}");
    }
}

#[test]
fn del_tries_every_step_when_one_fails() {
    let h = Host::new();
    let conf = h.conf(json!({"ipMasq": true}));
    let c = new_netns();
    h.run("ADD", &c, "ctr", &conf, None).ok();
    // The IPAM plugin has gone from CNI_PATH: its release fails, the rest still goes.
    let mut broken = conf.clone();
    broken["ipam"]["type"] = json!("no-such-ipam");
    let out = h.run("DEL", &c, "ctr", &broken, None);
    assert!(!out.success(), "a DEL that could not release the address must say so");
    assert!(out.stdout.contains("releasing the IPAM allocation"), "{}", out.stdout);
    assert!(link(&c, "eth0").is_none(), "interface left");
    assert!(!nft_ruleset(&h.ns).contains("chain masq-"), "firewall entries left");
}
