//! Kill injection: bandwidth, chained after a veth pair made here, is SIGKILLed at every step of
//! ADD. The runtime then calls DEL without a result (the ADD failed); after it the host holds no
//! ifb and no qdisc of the container, and the next ADD works. A kill during DEL is finished by the
//! next DEL.

use serde_json::{Value, json};
use testkit::{Invocation, Netns, Output, ip, ip_json, new_netns};

struct Pod {
    host: Netns,
    ctr: Netns,
    prev: Value,
}

impl Pod {
    fn new() -> Pod {
        let (host, ctr) = (new_netns(), new_netns());
        testkit::link_namespaces(&host, "hveth", "10.31.0.1/24", &ctr, "eth0", "10.31.0.2/24");
        let prev = json!({"cniVersion": "1.1.0",
            "interfaces": [{"name": "hveth"}, {"name": "eth0", "sandbox": ctr.path()}],
            "ips": [{"address": "10.31.0.2/24", "interface": 1}]});
        Pod { host, ctr, prev }
    }

    fn conf(&self, with_prev: bool) -> Value {
        let mut c = json!({"cniVersion": "1.1.0", "name": "bw-faults", "type": "bandwidth",
            "runtimeConfig": {"bandwidth": {"ingressRate": 8_000_000, "ingressBurst": 80_000,
                                            "egressRate": 8_000_000, "egressBurst": 80_000}}});
        if with_prev {
            c["prevResult"] = self.prev.clone();
        }
        c
    }

    fn run(&self, verb: &str, conf: &Value, fault: Option<&str>) -> Output {
        Invocation::new(verb, "ctr-faults", self.ctr.path(), "eth0", &conf.to_string())
            .var("CNI_RS_FAULT", fault)
            .run(&testkit::plugin("bandwidth"), &self.host)
    }

    fn leftovers(&self) -> Vec<String> {
        let mut left: Vec<String> = ip_json(&self.host, "link show type ifb")
            .as_array()
            .unwrap()
            .iter()
            .map(|l| format!("ifb {}", l["ifname"]))
            .collect();
        let out =
            testkit::in_netns(std::process::Command::new("tc").args(["qdisc", "show", "dev", "hveth"]), &self.host)
                .output()
                .expect("tc");
        let qdiscs = String::from_utf8_lossy(&out.stdout).into_owned();
        if qdiscs.contains("tbf") || qdiscs.contains("ingress") {
            left.push(format!("qdiscs: {qdiscs}"));
        }
        left
    }
}

#[test]
fn a_kill_at_any_step_of_add_is_cleaned_up_by_del() {
    let pod = Pod::new();
    ip(&pod.host, "link set lo up");
    let mut left_by_kills = 0;
    for step in ["main", "ingress shaped", "ifb created", "ifb named", "redirected", "egress shaped", "exit"] {
        let fault = format!("bandwidth:{step}=kill");
        let out = pod.run("ADD", &pod.conf(true), Some(&fault));
        assert!(!out.success(), "{step}: not killed");
        if !pod.leftovers().is_empty() {
            left_by_kills += 1;
        }
        pod.run("DEL", &pod.conf(false), None).ok();
        assert_eq!(pod.leftovers(), Vec::<String>::new(), "after DEL, killed at {step}");
        let r = pod.run("ADD", &pod.conf(true), None).ok();
        assert_eq!(r["interfaces"].as_array().unwrap().len(), 3, "{step}: {r}");
        pod.run("DEL", &pod.conf(true), None).ok();
        assert_eq!(pod.leftovers(), Vec::<String>::new(), "after the second DEL, killed at {step}");
    }
    assert!(left_by_kills >= 5, "only {left_by_kills} kills left anything behind");
}

#[test]
fn a_kill_during_del_is_finished_by_the_next_del() {
    let pod = Pod::new();
    for step in ["main", "qdiscs removed", "ifb removed"] {
        pod.run("ADD", &pod.conf(true), None).ok();
        let out = pod.run("DEL", &pod.conf(true), Some(&format!("bandwidth:{step}=kill")));
        assert!(!out.success(), "{step}: not killed");
        pod.run("DEL", &pod.conf(true), None).ok();
        assert_eq!(pod.leftovers(), Vec::<String>::new(), "killed at {step}");
    }
}
