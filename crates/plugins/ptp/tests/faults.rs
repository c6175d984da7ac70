//! Kill injection: ptp (with host-local under it and masquerade on) is SIGKILLed at every step of
//! ADD, as a runtime's timeout would kill it. The runtime then calls DEL (without a result: the
//! ADD failed) and later GC; after them the host holds nothing of the container (no veth, no host
//! route, no address file, no masquerade), and the next ADD of the same container works. A kill
//! during DEL is finished by the next DEL.
//!
//! The steps are the plugins' trace marks; debug builds kill themselves at the one named in
//! `CNI_RS_FAULT`.

use serde_json::{Value, json};
use testkit::{Invocation, Netns, Output, TempDir, ip, ip_json, new_netns, nft_ruleset};

const NETWORK: &str = "ptp-faults";

struct Host {
    ns: Netns,
    ipam: TempDir,
}

impl Host {
    fn new() -> Host {
        let h = Host { ns: new_netns(), ipam: TempDir::new("ptp-faults-ipam") };
        ip(&h.ns, "link set lo up");
        h
    }

    fn conf(&self, prev: Option<&Value>) -> Value {
        let mut c = json!({"cniVersion": "1.1.0", "name": NETWORK, "type": "ptp", "ipMasq": true,
               "ipam": {"type": "host-local", "dataDir": self.ipam.path().display().to_string(),
                        "ranges": [[{"subnet": "10.45.0.0/24"}], [{"subnet": "fd45::/64"}]]}});
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        c
    }

    fn run(&self, verb: &str, c: &Netns, conf: &Value, fault: Option<&str>) -> Output {
        Invocation::new(verb, "ctr-faults", c.path(), "eth0", &conf.to_string())
            .var("CNI_RS_FAULT", fault)
            .run(&testkit::plugin("ptp"), &self.ns)
    }

    fn gc(&self) {
        let mut conf = self.conf(None);
        conf["cni.dev/valid-attachments"] = json!([]);
        Invocation::new("GC", "", "", "", &conf.to_string())
            .var("CNI_CONTAINERID", None)
            .var("CNI_NETNS", None)
            .var("CNI_IFNAME", None)
            .run(&testkit::plugin("ptp"), &self.ns)
            .ok();
    }

    /// What of the container is left in the host, or an empty list.
    fn leftovers(&self, c: &Netns) -> Vec<String> {
        let mut left = Vec::new();
        for l in ip_json(&self.ns, "link show type veth").as_array().unwrap() {
            left.push(format!("veth {}", l["ifname"]));
        }
        if testkit::link(c, "eth0").is_some() {
            left.push("eth0 in the container".into());
        }
        left.extend(testkit::host_local_leftovers(&self.ipam.path().join(NETWORK)));
        for (what, text) in [("route", ip(&self.ns, "route show")), ("nftables", nft_ruleset(&self.ns))] {
            if text.contains("10.45.0.") || text.contains("chain masq-") {
                left.push(format!("{what}: {text}"));
            }
        }
        left
    }
}

const STEPS: &[&str] = &[
    "ptp:main",
    "ptp:delegate host-local start",
    "host-local:main",
    "host-local:allocated",
    "host-local:exit",
    "ptp:delegate host-local done",
    "ptp:ipam done",
    "ptp:veth created",
    "ptp:container configured",
    "ptp:host configured",
    "ptp:masquerade installed",
    "ptp:exit",
];

#[test]
fn a_kill_at_any_step_of_add_is_cleaned_up_by_del_and_gc() {
    let h = Host::new();
    let c = new_netns();
    let mut left_by_kills = 0;
    for step in STEPS {
        let fault = format!("{step}=kill");
        let out = h.run("ADD", &c, &h.conf(None), Some(&fault));
        assert!(!out.success(), "{step}: not killed");
        if !h.leftovers(&c).is_empty() {
            left_by_kills += 1;
        }
        // The runtime saw a failed ADD: DEL without a result, then GC.
        h.run("DEL", &c, &h.conf(None), None).ok();
        assert_eq!(h.leftovers(&c), Vec::<String>::new(), "after DEL, killed at {step}");
        h.gc();
        assert_eq!(h.leftovers(&c), Vec::<String>::new(), "after GC, killed at {step}");
        // The container can be started again.
        let r = h.run("ADD", &c, &h.conf(None), None).ok();
        assert!(r["ips"][0]["address"].as_str().unwrap().starts_with("10.45.0."), "{step}: {r}");
        h.run("DEL", &c, &h.conf(Some(&r)), None).ok();
        assert_eq!(h.leftovers(&c), Vec::<String>::new(), "after the second DEL, killed at {step}");
    }
    // The kills did leave work behind for DEL, so the checks above mean something.
    assert!(left_by_kills >= 6, "only {left_by_kills} kills left anything behind");
}

#[test]
fn a_kill_during_del_is_finished_by_the_next_del() {
    let h = Host::new();
    let c = new_netns();
    for step in ["ptp:main", "ptp:masquerade removed", "ptp:interface removed", "ptp:delegate host-local start"] {
        let r = h.run("ADD", &c, &h.conf(None), None).ok();
        let out = h.run("DEL", &c, &h.conf(Some(&r)), Some(&format!("{step}=kill")));
        assert!(!out.success(), "{step}: not killed");
        h.run("DEL", &c, &h.conf(Some(&r)), None).ok();
        assert_eq!(h.leftovers(&c), Vec::<String>::new(), "killed at {step}");
    }
}
