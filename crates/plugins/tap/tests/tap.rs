//! Kernel tests: the built `tap` binary (with the built `static` as IPAM), run as a runtime runs
//! it, in a sandbox "host" namespace with container namespaces. Build static first
//! (`cargo build -p static`).

use serde_json::{Value, json};
use std::path::PathBuf;
use testkit::{Invocation, Netns, Output, ip, ip_json, new_netns};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tap"))
}

fn run(host: &Netns, command: &str, netns: &str, conf: &Value, args: &str) -> Output {
    Invocation::new(command, "ctr-tap", netns, "tap0", &conf.to_string()).var("CNI_ARGS", Some(args)).run(&bin(), host)
}

fn conf(extra: Value) -> Value {
    let mut c = json!({"cniVersion": "1.1.0", "name": "taps", "type": "tap"});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn with_prev(conf: &Value, result: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = result.clone();
    c
}

fn only_lo(ns: &Netns) -> bool {
    ip_json(ns, "link show").as_array().unwrap().len() == 1
}

#[test]
fn a_persistent_tap_with_every_key() {
    let host = new_netns();
    let c = new_netns();
    let conf = conf(json!({"multiQueue": true, "mtu": 9000, "mac": "0a:58:00:00:00:07", "owner": 4242, "group": 4243,
        "selinuxContext": "system_u:system_r:container_t:s0",
        "ipam": {"type": "static", "addresses": [{"address": "10.90.0.5/24", "gateway": "10.90.0.1"}, {"address": "fd90::5/64"}],
                 "routes": [{"dst": "0.0.0.0/0"}]},
        "dns": {"nameservers": ["10.90.0.53"]}}));
    let r = run(&host, "ADD", c.path(), &conf, "").ok();
    assert_eq!(r["interfaces"], json!([{"name": "tap0", "mac": "0a:58:00:00:00:07", "sandbox": c.path()}]));
    assert_eq!(r["ips"][0], json!({"address": "10.90.0.5/24", "gateway": "10.90.0.1", "interface": 0}));
    assert_eq!(r["dns"], json!({"nameservers": ["10.90.0.53"]}));

    let link = &ip_json(&c, "-d link show tap0")[0];
    let info = &link["linkinfo"]["info_data"];
    assert_eq!(link["linkinfo"]["info_kind"], "tun", "{link}");
    assert_eq!(info["type"], "tap", "{link}");
    assert_eq!(info["pi"], false, "{link}");
    assert_eq!(info["multi_queue"], true, "{link}");
    assert_eq!(info["persist"], true, "{link}");
    assert_eq!(info["user"], 4242, "{link}");
    assert_eq!(info["group"], 4243, "{link}");
    assert_eq!(link["mtu"], 9000);
    assert_eq!(link["address"], "0a:58:00:00:00:07");
    assert!(link["flags"].as_array().unwrap().contains(&json!("UP")), "{link}");
    let addrs = testkit::addresses(&c, "tap0");
    assert!(addrs.contains(&"10.90.0.5/24".to_string()) && addrs.contains(&"fd90::5/64".to_string()), "{addrs:?}");
    assert!(ip(&c, "route show").contains("default via 10.90.0.1 dev tap0"));
    // Created in the container only.
    assert!(ip_json(&host, "link show").as_array().unwrap().len() == 1);

    assert!(run(&host, "CHECK", c.path(), &with_prev(&conf, &r), "").success());
    ip(&c, "link set tap0 address 0a:58:00:00:00:08");
    let out = run(&host, "CHECK", c.path(), &with_prev(&conf, &r), "");
    assert!(out.stdout.contains("doesn't match container Mac"), "{}", out.stdout);

    assert!(run(&host, "DEL", c.path(), &conf, "").success());
    assert!(only_lo(&c));
    assert!(run(&host, "DEL", c.path(), &conf, "").success());
    let gone = c.path().to_string();
    c.remove();
    assert!(run(&host, "DEL", &gone, &conf, "").success());
}

#[test]
fn a_port_of_a_bridge_in_the_container_and_l2_only() {
    let host = new_netns();
    let c = new_netns();
    ip(&c, "link add br0 type bridge");
    let conf = conf(json!({"bridge": "br0"}));
    let r = run(&host, "ADD", c.path(), &conf, "MAC=0a:58:00:00:00:09").ok();
    assert!(r.get("ips").is_none(), "{r}");
    assert_eq!(r["interfaces"][0]["mac"], "0a:58:00:00:00:09");
    let link = &ip_json(&c, "-d link show tap0")[0];
    assert_eq!(link["master"], "br0", "{link}");
    assert_eq!(link["linkinfo"]["info_data"]["multi_queue"], false, "{link}");
    assert!(link["linkinfo"]["info_data"].get("user").is_none(), "no owner: {link}");
    assert!(run(&host, "CHECK", c.path(), &with_prev(&conf, &r), "").success());
    ip(&c, "link set tap0 nomaster");
    assert!(!run(&host, "CHECK", c.path(), &with_prev(&conf, &r), "").success());
    assert!(run(&host, "DEL", c.path(), &conf, "").success());
    assert!(testkit::link(&c, "tap0").is_none());
}

#[test]
fn bad_input_is_the_spec_error_and_leaves_nothing() {
    let host = new_netns();
    let c = new_netns();
    for (extra, code, msg) in [
        (json!({"bridge": "nosuch0"}), 7, "failed to get bridge nosuch0"),
        (json!({"bridge": "lo"}), 7, "lo is not a bridge"),
        (json!({"mtu": 10}), 7, "invalid MTU 10"),
        (json!({"mac": "ff:ff:ff:ff:ff:ff"}), 7, "invalid args ff:ff:ff:ff:ff:ff for MAC addr"),
        (json!({"owner": "root"}), 6, "owner"),
    ] {
        let out = run(&host, "ADD", c.path(), &conf(extra.clone()), "");
        assert_eq!(out.exit_code, 1, "{extra}");
        assert_eq!(out.err_code(), code, "{extra}: {}", out.stdout);
        assert!(out.json()["msg"].as_str().unwrap().contains(msg), "{extra}: {}", out.stdout);
        assert!(only_lo(&c), "{extra}");
    }
    // IPAM failing after the tap exists: the tap goes too.
    let bad_ipam =
        conf(json!({"ipam": {"type": "static", "addresses": [{"address": "10.90.0.5/24", "gateway": "10.91.0.1"}],
                                       "routes": [{"dst": "0.0.0.0/0"}]}}));
    let out = run(&host, "ADD", c.path(), &bad_ipam, "");
    assert_eq!(out.exit_code, 1, "{}", out.stdout);
    assert!(only_lo(&c));
    // An interface name already taken.
    ip(&c, "link add tap0 type bridge");
    let out = run(&host, "ADD", c.path(), &conf(json!({})), "");
    assert!(out.stdout.contains("already exists"), "{}", out.stdout);
    assert!(testkit::link(&c, "tap0").is_some());
}

/// Kill injection: SIGKILL at every step of ADD (debug builds die at the trace mark named in
/// `CNI_RS_FAULT`), then DEL without a result, as a runtime does after a failed ADD: nothing is
/// left, not even a tap under a temporary name, and the next ADD works.
#[test]
fn a_kill_at_any_step_of_add_is_cleaned_up_by_del() {
    let host = new_netns();
    let c = new_netns();
    let conf = conf(json!({"mtu": 1400, "ipam": {"type": "static", "addresses": [{"address": "10.90.1.5/24"}]}}));
    let mut left_by_kills = 0;
    for step in ["tap:main", "tap:temporary tap created", "tap:tap created", "static:main", "tap:ipam done", "tap:exit"]
    {
        let out = Invocation::new("ADD", "ctr-tap", c.path(), "tap0", &conf.to_string())
            .var("CNI_RS_FAULT", Some(&format!("{step}=kill")))
            .run(&bin(), &host);
        assert!(!out.success(), "{step}: not killed");
        if !only_lo(&c) {
            left_by_kills += 1;
        }
        assert!(run(&host, "DEL", c.path(), &conf, "").success());
        assert!(only_lo(&c), "after DEL, killed at {step}: {}", ip(&c, "link show"));
        run(&host, "ADD", c.path(), &conf, "").ok();
        assert!(run(&host, "DEL", c.path(), &conf, "").success());
        assert!(only_lo(&c));
    }
    assert!(left_by_kills >= 4, "only {left_by_kills} kills left anything behind");
}
