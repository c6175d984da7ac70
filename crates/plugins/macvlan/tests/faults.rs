//! Kill injection: macvlan (with host-local under it) is SIGKILLed at every step of ADD, as a
//! runtime's timeout would kill it. The runtime then calls DEL (without a result: the ADD
//! failed); after it the container holds no macvlan (not even one under a temporary name), the
//! host none, the store no address, and the next ADD of the same container works. A kill during
//! DEL is finished by the next DEL.
//!
//! The steps are the plugins' trace marks; debug builds kill themselves at the one named in
//! `CNI_RS_FAULT`. Build host-local first (`cargo build -p host-local`).

use serde_json::{Value, json};
use testkit::{Invocation, Netns, Output, TempDir, ip, ip_json, link_namespaces, new_netns};

struct Host {
    ns: Netns,
    _neighbour: Netns,
    ipam: TempDir,
}

impl Host {
    fn new() -> Host {
        let h = Host { ns: new_netns(), _neighbour: new_netns(), ipam: TempDir::new("macvlan-faults-ipam") };
        ip(&h.ns, "link set lo up");
        link_namespaces(&h.ns, "uplink0", "10.55.0.1/24", &h._neighbour, "nb0", "10.55.0.100/24");
        h
    }

    fn conf(&self, prev: Option<&Value>) -> Value {
        let mut c = json!({"cniVersion": "1.1.0", "name": "mv-faults", "type": "macvlan", "master": "uplink0",
               "ipam": {"type": "host-local", "dataDir": self.ipam.path().display().to_string(),
                        "ranges": [[{"subnet": "10.55.0.0/24", "rangeStart": "10.55.0.10"}]]}});
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        c
    }

    fn run(&self, verb: &str, c: &Netns, conf: &Value, fault: Option<&str>) -> Output {
        Invocation::new(verb, "ctr-faults", c.path(), "eth0", &conf.to_string())
            .var("CNI_RS_FAULT", fault)
            .run(&testkit::plugin("macvlan"), &self.ns)
    }

    fn leftovers(&self, c: &Netns) -> Vec<String> {
        let mut left: Vec<String> = ip_json(c, "link show")
            .as_array()
            .unwrap()
            .iter()
            .map(|l| format!("container link {}", l["ifname"]))
            .filter(|l| l != "container link \"lo\"")
            .collect();
        left.extend(
            ip_json(&self.ns, "link show")
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["ifname"].as_str().unwrap().to_string())
                .filter(|n| n != "lo" && n != "uplink0")
                .map(|n| format!("host link {n}")),
        );
        left.extend(testkit::host_local_leftovers(&self.ipam.path().join("mv-faults")));
        left
    }
}

const STEPS: &[&str] = &[
    "macvlan:main",
    "macvlan:temporary link created",
    "macvlan:link created",
    "macvlan:delegate host-local start",
    "host-local:main",
    "host-local:allocated",
    "host-local:exit",
    "macvlan:delegate host-local done",
    "macvlan:ipam done",
    "macvlan:configured",
    "macvlan:exit",
];

#[test]
fn a_kill_at_any_step_of_add_is_cleaned_up_by_del() {
    let h = Host::new();
    let c = new_netns();
    let mut left_by_kills = 0;
    for step in STEPS {
        let out = h.run("ADD", &c, &h.conf(None), Some(&format!("{step}=kill")));
        assert!(!out.success(), "{step}: not killed");
        if !h.leftovers(&c).is_empty() {
            left_by_kills += 1;
        }
        // The runtime saw a failed ADD: DEL without a result.
        h.run("DEL", &c, &h.conf(None), None).ok();
        assert_eq!(h.leftovers(&c), Vec::<String>::new(), "after DEL, killed at {step}");
        // The container can be started again.
        let r = h.run("ADD", &c, &h.conf(None), None).ok();
        assert!(r["ips"][0]["address"].as_str().unwrap().starts_with("10.55.0."), "{step}: {r}");
        h.run("DEL", &c, &h.conf(Some(&r)), None).ok();
        assert_eq!(h.leftovers(&c), Vec::<String>::new(), "after the second DEL, killed at {step}");
    }
    // The kills did leave work behind for DEL, so the checks above mean something.
    assert!(left_by_kills >= 7, "only {left_by_kills} kills left anything behind");
}

#[test]
fn a_kill_during_del_is_finished_by_the_next_del() {
    let h = Host::new();
    let c = new_netns();
    for step in ["macvlan:main", "macvlan:delegate host-local start", "host-local:main"] {
        let r = h.run("ADD", &c, &h.conf(None), None).ok();
        let out = h.run("DEL", &c, &h.conf(Some(&r)), Some(&format!("{step}=kill")));
        assert!(!out.success(), "{step}: not killed");
        h.run("DEL", &c, &h.conf(Some(&r)), None).ok();
        assert_eq!(h.leftovers(&c), Vec::<String>::new(), "killed at {step}");
    }
}
