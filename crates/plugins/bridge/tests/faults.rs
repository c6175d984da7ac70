//! Kill injection: the chain a runtime runs for a bridge network with a published port (bridge,
//! host-local under it, portmap) is SIGKILLed at every step of ADD, as a runtime's timeout would
//! kill it. The runtime then calls DEL (without a result: the ADD failed) and later GC; after them
//! the host must hold nothing of the container (no veth, no address file, no nftables entry), and
//! the next ADD of the same container must work.
//!
//! The steps are the plugins' trace marks; debug builds kill themselves at the one named in
//! `CNI_RS_FAULT`.

use serde_json::{Value, json};
use testkit::{Invocation, Netns, Output, TempDir, ip, ip_json, new_netns, nft_ruleset};

const NETWORK: &str = "faults";

struct Host {
    ns: Netns,
    ipam: TempDir,
}

impl Host {
    fn new() -> Host {
        let h = Host { ns: new_netns(), ipam: TempDir::new("faults-ipam") };
        ip(&h.ns, "link set lo up");
        h
    }

    fn bridge_conf(&self) -> Value {
        json!({"cniVersion": "1.1.0", "name": NETWORK, "type": "bridge", "bridge": "br-faults",
               "isGateway": true, "ipMasq": true, "hairpinMode": true,
               "ipam": {"type": "host-local", "dataDir": self.ipam.path().display().to_string(),
                        "ranges": [[{"subnet": "10.44.0.0/24"}]]}})
    }

    fn portmap_conf(prev: Option<&Value>) -> Value {
        let mut c = json!({"cniVersion": "1.1.0", "name": NETWORK, "type": "portmap",
                           "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}});
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        c
    }

    fn run(&self, plugin: &str, verb: &str, c: &Netns, conf: &Value, fault: Option<&str>) -> Output {
        Invocation::new(verb, "ctr-faults", c.path(), "eth0", &conf.to_string())
            .var("CNI_RS_FAULT", fault)
            .run(&testkit::plugin(plugin), &self.ns)
    }

    /// ADD through the chain, stopping at the first failure as a runtime does.
    fn add(&self, c: &Netns, fault: Option<&str>) -> Result<Value, String> {
        let out = self.run("bridge", "ADD", c, &self.bridge_conf(), fault);
        if !out.success() {
            return Err(format!("bridge: {} {}", out.exit_code, out.stdout));
        }
        let prev = out.json();
        let out = self.run("portmap", "ADD", c, &Host::portmap_conf(Some(&prev)), fault);
        if !out.success() {
            return Err(format!("portmap: {} {}", out.exit_code, out.stdout));
        }
        Ok(out.json())
    }

    /// DEL through the chain in reverse; `prev` is the ADD's result if it succeeded.
    fn del(&self, c: &Netns, prev: Option<&Value>) {
        self.run("portmap", "DEL", c, &Host::portmap_conf(prev), None).ok();
        let mut conf = self.bridge_conf();
        if let Some(p) = prev {
            conf["prevResult"] = p.clone();
        }
        self.run("bridge", "DEL", c, &conf, None).ok();
    }

    /// GC for the network with no valid attachment left.
    fn gc(&self) {
        for (plugin, mut conf) in [("portmap", Host::portmap_conf(None)), ("bridge", self.bridge_conf())] {
            conf["cni.dev/valid-attachments"] = json!([]);
            Invocation::new("GC", "", "", "", &conf.to_string())
                .var("CNI_CONTAINERID", None)
                .var("CNI_NETNS", None)
                .var("CNI_IFNAME", None)
                .run(&testkit::plugin(plugin), &self.ns)
                .ok();
        }
    }

    /// What of the container is left in the host, or an empty list.
    fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        for l in ip_json(&self.ns, "link show type veth").as_array().unwrap() {
            left.push(format!("veth {}", l["ifname"]));
        }
        left.extend(testkit::host_local_leftovers(&self.ipam.path().join(NETWORK)));
        let rules = nft_ruleset(&self.ns);
        for marker in ["chain masq-", "chain pm-", "chain pms-", "10.44.0."] {
            if rules.contains(marker) {
                left.push(format!("nftables {marker:?}"));
            }
        }
        left
    }
}

const STEPS: &[&str] = &[
    "bridge:main",
    "bridge:bridge ready",
    "bridge:veth created",
    "bridge:port set",
    "bridge:delegate host-local start",
    "host-local:main",
    "host-local:locked",
    "host-local:allocated",
    "host-local:committed",
    "host-local:exit",
    "bridge:delegate host-local done",
    "bridge:container configured",
    "bridge:gateway set",
    "bridge:firewall installed",
    "bridge:port up",
    "bridge:exit",
    "portmap:main",
    "portmap:nftables published",
    "portmap:exit",
];

#[test]
fn a_kill_at_any_step_of_add_is_cleaned_up_by_del_and_gc() {
    let h = Host::new();
    let c = new_netns();
    // A clean run first, so the bridge and the tables exist as on a busy host.
    let r = h.add(&c, None).expect("a clean ADD");
    h.del(&c, Some(&r));
    assert_eq!(h.leftovers(), Vec::<String>::new());

    let mut left_by_kills = 0;
    for step in STEPS {
        let fault = format!("{step}=kill");
        let err = h.add(&c, Some(&fault)).expect_err(step);
        if !h.leftovers().is_empty() {
            left_by_kills += 1;
        }
        // The killed plugin exits by a signal; bridge reports a killed host-local as its own error.
        let by_signal = err.contains(" -1 ");
        assert!(by_signal || (step.starts_with("host-local") && err.contains("SIGKILL")), "{step}: {err}");
        // The runtime saw a failed ADD: DEL without a result, then GC.
        h.del(&c, None);
        assert_eq!(h.leftovers(), Vec::<String>::new(), "after DEL, killed at {step}");
        h.gc();
        assert_eq!(h.leftovers(), Vec::<String>::new(), "after GC, killed at {step}");
        // The container can be started again.
        let r = h.add(&c, None).unwrap_or_else(|e| panic!("ADD after a kill at {step}: {e}"));
        assert!(r["ips"][0]["address"].as_str().unwrap().starts_with("10.44.0."), "{step}: {r}");
        h.del(&c, Some(&r));
        assert_eq!(h.leftovers(), Vec::<String>::new(), "after the second DEL, killed at {step}");
    }
    // The kills did leave work behind for DEL (from the veth on), so the checks above mean something.
    assert!(left_by_kills >= 12, "only {left_by_kills} kills left anything behind");
}

#[test]
fn a_kill_during_del_is_finished_by_the_next_del() {
    let h = Host::new();
    let c = new_netns();
    for step in ["portmap:main", "portmap:nftables unpublished", "bridge:firewall removed", "bridge:interface removed"]
    {
        let r = h.add(&c, None).expect("ADD");
        let fault = format!("{step}=kill");
        let out = if step.starts_with("portmap") {
            h.run("portmap", "DEL", &c, &Host::portmap_conf(Some(&r)), Some(&fault))
        } else {
            h.run("portmap", "DEL", &c, &Host::portmap_conf(Some(&r)), None).ok();
            let mut conf = h.bridge_conf();
            conf["prevResult"] = r.clone();
            h.run("bridge", "DEL", &c, &conf, Some(&fault))
        };
        assert!(!out.success(), "{step}: not killed");
        // The runtime retries the whole DEL.
        h.del(&c, Some(&r));
        assert_eq!(h.leftovers(), Vec::<String>::new(), "killed at {step}");
    }
}

/// The chain ADD for another container ID (tests that need two).
fn add_as(h: &Host, c: &Netns, cid: &str) -> Value {
    let run = |plugin: &str, conf: &Value| {
        Invocation::new("ADD", cid, c.path(), "eth0", &conf.to_string()).run(&testkit::plugin(plugin), &h.ns)
    };
    let prev = run("bridge", &h.bridge_conf()).ok();
    let mut pm = Host::portmap_conf(Some(&prev));
    pm["runtimeConfig"]["portMappings"][0]["hostPort"] = json!(9000 + u16::from(cid.as_bytes()[cid.len() - 1]));
    run("portmap", &pm).ok()
}

fn del_as(h: &Host, c: &Netns, cid: &str, prev: Option<&Value>) {
    let run = |plugin: &str, conf: &Value| {
        Invocation::new("DEL", cid, c.path(), "eth0", &conf.to_string()).run(&testkit::plugin(plugin), &h.ns).ok()
    };
    run("portmap", &json!({"cniVersion": "1.1.0", "name": NETWORK, "type": "portmap", "prevResult": prev}));
    let mut conf = h.bridge_conf();
    if let Some(p) = prev {
        conf["prevResult"] = p.clone();
    }
    run("bridge", &conf);
}

fn gc_keeping(h: &Host, keep: &[&str]) {
    let valid: Vec<Value> = keep.iter().map(|cid| json!({"containerID": cid, "ifname": "eth0"})).collect();
    for (plugin, mut conf) in [("portmap", Host::portmap_conf(None)), ("bridge", h.bridge_conf())] {
        conf["cni.dev/valid-attachments"] = json!(valid);
        Invocation::new("GC", "", "", "", &conf.to_string())
            .var("CNI_CONTAINERID", None)
            .var("CNI_NETNS", None)
            .var("CNI_IFNAME", None)
            .run(&testkit::plugin(plugin), &h.ns)
            .ok();
    }
}

#[test]
fn a_bridge_deleted_behind_our_back_is_recreated_and_old_containers_still_go_cleanly() {
    let h = Host::new();
    let (c1, c2) = (new_netns(), new_netns());
    let r1 = add_as(&h, &c1, "ctr-1");
    ip(&h.ns, "link del br-faults");
    del_as(&h, &c1, "ctr-1", Some(&r1));
    assert_eq!(h.leftovers(), Vec::<String>::new());
    let r2 = add_as(&h, &c2, "ctr-2");
    assert!(testkit::link(&h.ns, "br-faults").is_some(), "recreated");
    assert!(testkit::ping(&c2, "10.44.0.1"), "the new container reaches its gateway");
    del_as(&h, &c2, "ctr-2", Some(&r2));
    assert_eq!(h.leftovers(), Vec::<String>::new());
}

#[test]
fn a_ruleset_flushed_by_someone_else_is_repaired_and_nothing_is_stuck() {
    let h = Host::new();
    let (c1, c2) = (new_netns(), new_netns());
    let r1 = add_as(&h, &c1, "ctr-1");
    let status = testkit::in_netns(std::process::Command::new("nft").args(["flush", "ruleset"]), &h.ns).status();
    assert!(status.unwrap().success());
    // A new container gets its entries (and the base chains back).
    let r2 = add_as(&h, &c2, "ctr-2");
    let ip2 = r2["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string();
    assert!(nft_ruleset(&h.ns).contains(&ip2), "{}", nft_ruleset(&h.ns));
    // The old one's DEL finds nothing to remove, and succeeds.
    del_as(&h, &c1, "ctr-1", Some(&r1));
    // GC keeps the live container and repairs what it needs.
    gc_keeping(&h, &["ctr-2"]);
    assert!(nft_ruleset(&h.ns).contains(&ip2));
    del_as(&h, &c2, "ctr-2", Some(&r2));
    assert_eq!(h.leftovers(), Vec::<String>::new());
}

#[test]
fn address_files_truncated_or_deleted_are_recovered_by_del_and_gc() {
    let h = Host::new();
    let (c1, c2, c3) = (new_netns(), new_netns(), new_netns());
    let r1 = add_as(&h, &c1, "ctr-1");
    let r2 = add_as(&h, &c2, "ctr-2");
    let store = h.ipam.path().join(NETWORK);
    let ip1 = r1["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string();
    let ip2 = r2["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string();
    // Someone truncates one address file and removes the index altogether.
    std::fs::write(store.join(&ip1), "").unwrap();
    std::fs::remove_dir_all(store.join(".attachments")).unwrap();
    del_as(&h, &c1, "ctr-1", Some(&r1));
    gc_keeping(&h, &["ctr-2"]);
    assert!(!store.join(&ip1).exists(), "the truncated file's address is released by GC");
    assert!(store.join(&ip2).exists(), "the live container keeps its address");
    // A new container gets an address that is not the live one's.
    let r3 = add_as(&h, &c3, "ctr-3");
    let ip3 = r3["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string();
    assert_ne!(ip3, ip2);
    del_as(&h, &c2, "ctr-2", Some(&r2));
    del_as(&h, &c3, "ctr-3", Some(&r3));
    assert_eq!(h.leftovers(), Vec::<String>::new());
}
