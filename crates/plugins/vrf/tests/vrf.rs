//! Kernel tests of the vrf plugin with traffic, in throwaway namespaces: a container `c` whose
//! `eth0` (10.60.0.2, fd00:60::2) is cabled to a neighbour (10.60.0.1, fd00:60::1) that also
//! answers at 192.0.2.1 and fd00:99::1, reached through routes via the neighbour. After ADD
//! everything of `eth0` (addresses, connected and gateway routes) lives in the VRF's table and
//! traffic bound to the VRF gets through.
//!
//! They need the vrf link type, which this machine's kernel lacks: there they print "skipped:
//! kernel lacks ..." and pass, except the bad-input test, which is refused before the kernel is
//! asked for a VRF. The VM lane (`make test-vm`) runs them with
//! `CNI_RS_REQUIRE_KERNEL_FEATURES=1`, where a skip is a failure.

use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Command;
use testkit::{Invocation, Netns, in_netns, ip, ip_json, link_namespaces, new_netns};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrf"))
}

fn kernel_ready() -> bool {
    testkit::kernel_has("the vrf link type", &["link add vrf-probe type vrf table 10"])
}

struct World {
    host: Netns,
    c: Netns,
    nb: Netns,
}

fn world() -> World {
    let (host, c, nb) = (new_netns(), new_netns(), new_netns());
    link_namespaces(&c, "eth0", "10.60.0.2/24", &nb, "peer", "10.60.0.1/24");
    ip(&c, "-6 addr add fd00:60::2/64 dev eth0 nodad");
    ip(&nb, "-6 addr add fd00:60::1/64 dev peer nodad");
    ip(&nb, "addr add 192.0.2.1/32 dev lo");
    ip(&nb, "-6 addr add fd00:99::1/128 dev lo");
    ip(&c, "route add 192.0.2.0/24 via 10.60.0.1");
    ip(&c, "-6 route add fd00:99::/64 via fd00:60::1");
    World { host, c, nb }
}

fn prev(w: &World, ifname: &str, v4: &str) -> Value {
    json!({"cniVersion": "1.0.0", "interfaces": [{"name": ifname, "sandbox": w.c.path()}],
           "ips": [{"address": v4, "interface": 0}]})
}

fn conf(w: &World, extra: Value) -> String {
    let mut c = json!({"cniVersion": "1.0.0", "name": "vrf-test", "type": "vrf", "vrfname": "blue",
                       "prevResult": prev(w, "eth0", "10.60.0.2/24")});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c.to_string()
}

fn run(w: &World, command: &str, ifname: &str, stdin: &str) -> testkit::Output {
    Invocation::new(command, "ctr-vrf", w.c.path(), ifname, stdin).run(&bin(), &w.host)
}

/// One echo bound to `dev` (the VRF) from `ns`.
fn ping_via(ns: &Netns, dev: &str, addr: &str) -> bool {
    in_netns(Command::new("ping").args(["-c1", "-W1", "-n", "-I", dev, addr]), ns)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn vrf_table(ns: &Netns, name: &str) -> Option<u64> {
    let l = ip_json(ns, &format!("-d link show {name}"));
    l[0]["linkinfo"]["info_data"]["table"].as_u64()
}

fn master_of(ns: &Netns, name: &str) -> Option<String> {
    ip_json(ns, &format!("link show {name}"))[0]["master"].as_str().map(str::to_string)
}

/// The container's routes, addresses and links, to compare before and after.
fn state(ns: &Netns) -> String {
    let mut out = String::new();
    for args in ["-4 route show table all", "-6 route show table all", "-br addr show", "-br link show"] {
        out += &ip(ns, args);
    }
    out
}

#[test]
fn the_interface_and_its_routes_move_into_the_vrf() {
    if !kernel_ready() {
        return;
    }
    let w = world();
    let out = run(&w, "ADD", "eth0", &conf(&w, json!({}))).ok();
    assert_eq!(out["ips"][0]["address"], "10.60.0.2/24", "the previous result is passed on");
    assert_eq!(vrf_table(&w.c, "blue"), Some(1), "the first table no VRF uses");
    assert!(testkit::is_up(&testkit::link(&w.c, "blue").unwrap()));
    assert_eq!(master_of(&w.c, "eth0").as_deref(), Some("blue"));
    let t4 = ip(&w.c, "-4 route show vrf blue");
    assert!(t4.contains("10.60.0.0/24 dev eth0"), "{t4}");
    assert!(t4.contains("192.0.2.0/24 via 10.60.0.1 dev eth0"), "the gateway route moved along: {t4}");
    let t6 = ip(&w.c, "-6 route show vrf blue");
    assert!(t6.contains("fd00:99::/64 via fd00:60::1 dev eth0"), "{t6}");
    assert!(testkit::addresses(&w.c, "eth0").contains(&"fd00:60::2/64".to_string()), "the IPv6 address is back");
    assert!(!ip(&w.c, "-4 route show table main").contains("eth0"));

    assert!(ping_via(&w.c, "blue", "10.60.0.1"));
    assert!(ping_via(&w.c, "blue", "192.0.2.1"), "through the moved gateway route");
    assert!(ping_via(&w.c, "blue", "fd00:99::1"));

    assert!(run(&w, "CHECK", "eth0", &conf(&w, json!({}))).success());
    run(&w, "DEL", "eth0", &conf(&w, json!({}))).ok();
    assert!(testkit::link(&w.c, "blue").is_none(), "the VRF went with its last interface");
    assert_eq!(master_of(&w.c, "eth0"), None);
    run(&w, "DEL", "eth0", &conf(&w, json!({}))).ok();
    assert!(!run(&w, "CHECK", "eth0", &conf(&w, json!({}))).success());
}

#[test]
fn a_second_interface_joins_the_existing_vrf() {
    if !kernel_ready() {
        return;
    }
    let w = world();
    link_namespaces(&w.c, "eth1", "10.61.0.2/24", &w.nb, "peer1", "10.61.0.1/24");
    let c0 = conf(&w, json!({"table": 1001}));
    let mut c1: Value = serde_json::from_str(&conf(&w, json!({"table": 1001}))).unwrap();
    c1["prevResult"] = prev(&w, "eth1", "10.61.0.2/24");
    let c1 = c1.to_string();
    run(&w, "ADD", "eth0", &c0).ok();
    run(&w, "ADD", "eth1", &c1).ok();
    assert_eq!(vrf_table(&w.c, "blue"), Some(1001));
    assert_eq!(master_of(&w.c, "eth1").as_deref(), Some("blue"));
    assert!(ping_via(&w.c, "blue", "10.61.0.1"));

    // Another table for the same VRF is refused, and nothing changes.
    link_namespaces(&w.c, "eth2", "10.62.0.2/24", &w.nb, "peer2", "10.62.0.1/24");
    let before = state(&w.c);
    let out = run(&w, "ADD", "eth2", &conf(&w, json!({"table": 1002})).replace("\"eth0\"", "\"eth2\""));
    assert_eq!(out.err_code(), 7);
    assert!(out.json()["msg"].as_str().unwrap().contains("already exist with different routing table 1001"));
    assert_eq!(state(&w.c), before);

    run(&w, "DEL", "eth0", &c0).ok();
    assert!(testkit::link(&w.c, "blue").is_some(), "eth1 still holds the VRF");
    assert!(ping_via(&w.c, "blue", "10.61.0.1"));
    run(&w, "DEL", "eth1", &c1).ok();
    assert!(testkit::link(&w.c, "blue").is_none());
}

#[test]
fn concurrent_adds_share_one_vrf_and_concurrent_dels_remove_it() {
    if !kernel_ready() {
        return;
    }
    let w = world();
    let names = ["eth1", "eth2", "eth3", "eth4"];
    let mut confs = Vec::new();
    for (i, name) in names.iter().enumerate() {
        link_namespaces(&w.c, name, &format!("10.7{i}.0.2/24"), &w.nb, &format!("p{i}"), &format!("10.7{i}.0.1/24"));
        let mut c: Value = serde_json::from_str(&conf(&w, json!({}))).unwrap();
        c["prevResult"] = prev(&w, name, &format!("10.7{i}.0.2/24"));
        confs.push(c.to_string());
    }
    for command in ["ADD", "DEL"] {
        let children: Vec<_> = names
            .iter()
            .zip(&confs)
            .map(|(name, c)| Invocation::new(command, name, w.c.path(), name, c).spawn(&bin(), Some(&w.host)))
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{command}: {}", String::from_utf8_lossy(&out.stdout));
        }
        if command == "ADD" {
            assert_eq!(ip(&w.c, "-d link show type vrf").matches("vrf table").count(), 1, "one VRF");
            for name in names {
                assert_eq!(master_of(&w.c, name).as_deref(), Some("blue"), "{name}");
            }
            assert!(ping_via(&w.c, "blue", "10.73.0.1"));
        }
    }
    assert!(testkit::link(&w.c, "blue").is_none(), "the last DEL removed the VRF");
}

#[test]
fn a_failed_add_leaves_the_container_as_it_was() {
    if !kernel_ready() {
        return;
    }
    let w = world();
    let before = state(&w.c);
    for fault in ["vrf:enslaved=fail", "vrf:routes-moved=panic"] {
        let out = Invocation::new("ADD", "ctr-vrf", w.c.path(), "eth0", &conf(&w, json!({})))
            .var("CNI_RS_FAULT", Some(fault))
            .run(&bin(), &w.host);
        out.err_code();
        assert_eq!(state(&w.c), before, "{fault}");
    }
    assert!(ping_via(&w.c, "eth0", "192.0.2.1"), "the gateway route is back in main");
    // Killed half way (a runtime's timeout): the runtime's DEL frees the interface and removes
    // the VRF.
    let out = Invocation::new("ADD", "ctr-vrf", w.c.path(), "eth0", &conf(&w, json!({})))
        .var("CNI_RS_FAULT", Some("vrf:enslaved=kill"))
        .run(&bin(), &w.host);
    assert!(!out.success());
    assert_eq!(master_of(&w.c, "eth0").as_deref(), Some("blue"), "the kill left eth0 in the VRF");
    run(&w, "DEL", "eth0", &conf(&w, json!({}))).ok();
    assert_eq!(master_of(&w.c, "eth0"), None);
    assert!(testkit::link(&w.c, "blue").is_none());
}

#[test]
fn del_succeeds_without_the_interface_or_the_netns() {
    if !kernel_ready() {
        return;
    }
    let w = world();
    run(&w, "ADD", "eth0", &conf(&w, json!({}))).ok();
    ip(&w.c, "link del eth0");
    run(&w, "DEL", "eth0", &conf(&w, json!({}))).ok();
    assert!(testkit::link(&w.c, "blue").is_none(), "the VRF has no interface left");

    let w = world();
    run(&w, "ADD", "eth0", &conf(&w, json!({}))).ok();
    let c = conf(&w, json!({}));
    let World { host, c: container, .. } = w;
    let path = container.path().to_string();
    container.remove();
    Invocation::new("DEL", "ctr-vrf", &path, "eth0", &c).run(&bin(), &host).ok();
}

#[test]
fn bad_config_is_refused_before_anything_changes() {
    // None of these gets as far as creating a VRF: they are refused on any kernel.
    let w = world();
    let before = state(&w.c);
    for (extra, code, want) in [
        (json!({"vrfname": ""}), 7, "valid vrf name"),
        (json!({"vrfname": "lo"}), 7, "Netlink lo is not a VRF"),
        (json!({"prevResult": null}), 7, "missing prevResult"),
        (json!({"cniVersion": "0.2.0", "prevResult": null}), 1, "incompatible CNI versions"),
    ] {
        let out = run(&w, "ADD", "eth0", &conf(&w, extra.clone()));
        assert_eq!(out.err_code(), code, "{extra}: {}", out.stdout);
        assert!(out.json()["msg"].as_str().unwrap().contains(want), "{extra}: {}", out.stdout);
        assert_eq!(state(&w.c), before);
    }
    // An interface that is already enslaved elsewhere.
    ip(&w.c, "link add br0 type bridge");
    ip(&w.c, "link set eth0 master br0");
    let before = state(&w.c);
    let out = run(&w, "ADD", "eth0", &conf(&w, json!({})));
    assert_eq!(out.err_code(), 7);
    assert!(out.json()["msg"].as_str().unwrap().contains("has already a master set: br0"), "{}", out.stdout);
    assert_eq!(state(&w.c), before);
    // DEL of a config ADD refuses succeeds (the chain's DEL goes on), and of a name that is not a
    // VRF leaves it alone.
    run(&w, "DEL", "eth0", &conf(&w, json!({"vrfname": ""}))).ok();
    run(&w, "DEL", "eth0", &conf(&w, json!({"vrfname": "br0"}))).ok();
    assert!(testkit::link(&w.c, "br0").is_some());
}
