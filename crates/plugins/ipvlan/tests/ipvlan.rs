//! Kernel tests of the ipvlan plugin with traffic, in throwaway namespaces: a "host" whose `eth0`
//! (10.50.0.2) is cabled to a neighbour namespace (10.50.0.1). Containers on ipvlans of `eth0`
//! reach the neighbour and each other, in `l2` mode on the neighbour's subnet and in `l3` mode
//! from a subnet of their own, routed by the host.
//!
//! They need the ipvlan link type, which this machine's kernel lacks: there they print "skipped:
//! kernel lacks ..." and pass, except the bad-input test, which is refused before the kernel is
//! asked for anything. The VM lane (`make test-vm`) runs them with
//! `CNI_RS_REQUIRE_KERNEL_FEATURES=1`, where a skip is a failure.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use testkit::{Invocation, Netns, TempDir, host_local_leftovers, ip, ip_json, link_namespaces, new_netns, ping};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ipvlan"))
}

fn kernel_ready() -> bool {
    testkit::kernel_has(
        "the ipvlan link type",
        &["link add p0 type veth peer name p1", "link add link p0 name p0.i type ipvlan mode l2"],
    )
}

struct World {
    host: Netns,
    c: Netns,
    c2: Netns,
    nb: Netns,
    ipam: TempDir,
}

fn world() -> World {
    let (host, c, c2, nb) = (new_netns(), new_netns(), new_netns(), new_netns());
    link_namespaces(&host, "eth0", "10.50.0.2/24", &nb, "peer", "10.50.0.1/24");
    ip(&host, "route add default via 10.50.0.1");
    World { host, c, c2, nb, ipam: TempDir::new("ipvlan") }
}

fn conf_at(ipam: &Path, extra: Value) -> String {
    let mut c = json!({
        "cniVersion": "1.0.0", "name": "ipvlan-test", "type": "ipvlan", "master": "eth0",
        "ipam": {"type": "host-local", "dataDir": ipam,
                 "ranges": [[{"subnet": "10.50.0.0/24", "rangeStart": "10.50.0.10"}]],
                 "routes": [{"dst": "0.0.0.0/0"}]}
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c.to_string()
}

fn conf(w: &World, extra: Value) -> String {
    conf_at(w.ipam.path(), extra)
}

fn run_in(w: &World, ns: &Netns, id: &str, command: &str, stdin: &str) -> testkit::Output {
    Invocation::new(command, id, ns.path(), "net1", stdin).run(&bin(), &w.host)
}

fn run(w: &World, command: &str, stdin: &str) -> testkit::Output {
    run_in(w, &w.c, "ctr-ipvlan", command, stdin)
}

fn store(w: &World) -> PathBuf {
    w.ipam.path().join("ipvlan-test")
}

fn links(ns: &Netns) -> Vec<String> {
    let mut names: Vec<String> = ip_json(ns, "link show")
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// Kind and mode of a link, as `ip -d` reports them.
fn ipvlan_mode(ns: &Netns, name: &str) -> (String, String) {
    let l = &ip_json(ns, &format!("-d link show {name}"))[0];
    let info = &l["linkinfo"];
    (info["info_kind"].as_str().unwrap_or("").to_string(), info["info_data"]["mode"].as_str().unwrap_or("").to_string())
}

fn assert_clean(w: &World, host_links: &[String]) {
    assert_eq!(links(&w.c), ["lo"], "nothing left in the container");
    assert_eq!(links(&w.host), host_links, "nothing left in the host");
    assert_eq!(host_local_leftovers(&store(w)), Vec::<String>::new(), "the allocation is released");
}

#[test]
fn l2_containers_reach_the_neighbour_and_each_other() {
    if !kernel_ready() {
        return;
    }
    let w = world();
    let host_links = links(&w.host);
    let r = run(&w, "ADD", &conf(&w, json!({"dns": {"nameservers": ["10.50.0.53"]}}))).ok();
    assert_eq!(r["interfaces"][0]["name"], "net1");
    assert_eq!(r["interfaces"][0]["sandbox"], w.c.path());
    assert_eq!(r["ips"][0], json!({"address": "10.50.0.10/24", "gateway": "10.50.0.1", "interface": 0}));
    assert_eq!(r["dns"], json!({"nameservers": ["10.50.0.53"]}));
    assert_eq!(ipvlan_mode(&w.c, "net1"), ("ipvlan".into(), "l2".into()));
    let master_mac = ip_json(&w.host, "link show eth0")[0]["address"].clone();
    assert_eq!(r["interfaces"][0]["mac"], master_mac, "an ipvlan shares its master's MAC");
    assert_eq!(links(&w.host), host_links, "no temporary name left in the host");
    run_in(&w, &w.c2, "ctr-ipvlan2", "ADD", &conf(&w, json!({}))).ok();

    assert!(ping(&w.c, "10.50.0.1"), "the neighbour");
    assert!(ping(&w.c, "10.50.0.11"), "the other container");
    assert!(ping(&w.nb, "10.50.0.10"), "from the neighbour");

    let mut checked = serde_json::from_str::<Value>(&conf(&w, json!({}))).unwrap();
    checked["prevResult"] = r.clone();
    assert!(run(&w, "CHECK", &checked.to_string()).success());
    checked["mode"] = json!("l3");
    assert!(!run(&w, "CHECK", &checked.to_string()).success(), "CHECK sees the wrong mode");

    run(&w, "DEL", &conf(&w, json!({}))).ok();
    assert_eq!(links(&w.c), ["lo"]);
    assert!(!w.ipam.path().join("ipvlan-test/10.50.0.10").exists());
    run(&w, "DEL", &conf(&w, json!({}))).ok();
    assert!(ping(&w.c2, "10.50.0.1"), "the other container is untouched");
}

#[test]
fn l3_container_on_its_own_subnet_is_routed_by_the_host() {
    if !kernel_ready() {
        return;
    }
    let w = world();
    // The neighbour reaches the containers' subnet through the host.
    ip(&w.nb, "route add 10.51.0.0/24 via 10.50.0.2");
    let c = conf(
        &w,
        json!({"mode": "l3", "mtu": 1400, "ipam": {"type": "host-local", "dataDir": w.ipam.path(),
               "ranges": [[{"subnet": "10.51.0.0/24", "rangeStart": "10.51.0.10"}]], "routes": [{"dst": "0.0.0.0/0"}]}}),
    );
    let r = run(&w, "ADD", &c).ok();
    assert_eq!(ipvlan_mode(&w.c, "net1"), ("ipvlan".into(), "l3".into()));
    assert_eq!(ip_json(&w.c, "link show net1")[0]["mtu"], 1400);
    assert!(ping(&w.c, "10.50.0.1"), "the neighbour, routed by the host");
    let mut checked = serde_json::from_str::<Value>(&c).unwrap();
    checked["prevResult"] = r;
    assert!(run(&w, "CHECK", &checked.to_string()).success());
    run(&w, "DEL", &c).ok();
    assert_eq!(links(&w.c), ["lo"]);
}

#[test]
fn empty_ipam_reuses_the_previous_results_addresses() {
    if !kernel_ready() {
        return;
    }
    let w = world();
    // The master defaults to prevResult's single interface.
    let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}],
                      "ips": [{"address": "10.50.0.77/24", "gateway": "10.50.0.1", "interface": 0}],
                      "routes": [{"dst": "0.0.0.0/0"}]});
    let c = json!({"cniVersion": "1.0.0", "name": "ipvlan-test", "type": "ipvlan", "ipam": {},
                   "prevResult": prev})
    .to_string();
    let r = run(&w, "ADD", &c).ok();
    assert_eq!(r["ips"][0]["address"], "10.50.0.77/24");
    assert_eq!(r["interfaces"], json!([{"name": "net1", "mac": r["interfaces"][0]["mac"], "sandbox": w.c.path()}]));
    assert!(testkit::addresses(&w.c, "net1").contains(&"10.50.0.77/24".to_string()));
    assert!(ping(&w.c, "10.50.0.1"));
    run(&w, "DEL", &c).ok();
    assert_eq!(links(&w.c), ["lo"]);
}

#[test]
fn bad_config_is_refused_before_anything_changes() {
    // None of these needs the ipvlan link type: they are refused first, on any kernel.
    let w = world();
    let host_links = links(&w.host);
    for (extra, want) in [
        (json!({"mode": "l4"}), "unknown ipvlan mode: \"l4\""),
        (json!({"master": "nope0"}), "failed to lookup master \"nope0\""),
        (json!({"master": "nope0", "linkInContainer": true}), "failed to lookup master"),
        (json!({"mtu": 9000}), "invalid MTU 9000"),
        (json!({"mode": "l3", "ipam": {}}), "ipvlan mode l3 needs addresses"),
        (json!({"mode": "l3s", "ipam": {}}), "ipvlan mode l3s needs addresses"),
    ] {
        let out = run(&w, "ADD", &conf(&w, extra.clone()));
        assert_eq!(out.err_code(), 7, "{extra}: {}", out.stdout);
        assert!(out.json()["msg"].as_str().unwrap().contains(want), "{extra}: {}", out.stdout);
        assert_clean(&w, &host_links);
    }
    // No master, no prevResult, no default route in the host.
    ip(&w.host, "route del default");
    let mut no_master = serde_json::from_str::<Value>(&conf(&w, json!({}))).unwrap();
    no_master.as_object_mut().unwrap().remove("master");
    let out = run(&w, "ADD", &no_master.to_string());
    assert_eq!(out.err_code(), 7);
    assert!(out.json()["msg"].as_str().unwrap().contains("no default route interface found"));
    // Chained after a plugin with several interfaces: which one is ambiguous.
    no_master["prevResult"] = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "a"}, {"name": "b"}], "ips": []});
    assert_eq!(run(&w, "ADD", &no_master.to_string()).err_code(), 7);
    assert_clean(&w, &host_links);
}

#[test]
fn a_failed_add_leaves_nothing() {
    if !kernel_ready() {
        return;
    }
    let w = world();
    let host_links = links(&w.host);
    // IPAM refuses: the link goes (the reference leaves it).
    run(&w, "ADD", &conf(&w, json!({"ipam": {"type": "host-local", "ranges": [[{"subnet": "bogus"}]]}}))).err_code();
    assert_clean(&w, &host_links);
    for fault in ["ipvlan:ipam-added=fail", "ipvlan:ipam-added=panic", "ipvlan:link-created=panic"] {
        let out = Invocation::new("ADD", "ctr-ipvlan", w.c.path(), "net1", &conf(&w, json!({})))
            .var("CNI_RS_FAULT", Some(fault))
            .run(&bin(), &w.host);
        out.err_code();
        assert_clean(&w, &host_links);
    }
    // Killed before the rename: the link is in the container under its temporary name, and the
    // runtime's DEL finds it by that.
    let out = Invocation::new("ADD", "ctr-ipvlan", w.c.path(), "net1", &conf(&w, json!({})))
        .var("CNI_RS_FAULT", Some("ipvlan:before-rename=kill"))
        .run(&bin(), &w.host);
    assert!(!out.success());
    assert_eq!(links(&w.c).len(), 2, "the kill left the link under its temporary name");
    run(&w, "DEL", &conf(&w, json!({}))).ok();
    assert_clean(&w, &host_links);
    // Killed half way (a runtime's timeout): the runtime's DEL removes the link and the allocation.
    let out = Invocation::new("ADD", "ctr-ipvlan", w.c.path(), "net1", &conf(&w, json!({})))
        .var("CNI_RS_FAULT", Some("ipvlan:ipam-added=kill"))
        .run(&bin(), &w.host);
    assert!(!out.success());
    assert!(testkit::link(&w.c, "net1").is_some(), "the kill left the link");
    run(&w, "DEL", &conf(&w, json!({}))).ok();
    assert_clean(&w, &host_links);
}

#[test]
fn del_succeeds_when_the_master_the_default_route_or_the_netns_is_gone() {
    if !kernel_ready() {
        return;
    }
    let w = world();
    let mut no_master = serde_json::from_str::<Value>(&conf(&w, json!({}))).unwrap();
    no_master.as_object_mut().unwrap().remove("master");
    run(&w, "ADD", &no_master.to_string()).ok();
    assert_eq!(ipvlan_mode(&w.c, "net1").0, "ipvlan", "the master defaults to the default route's device");
    // The reference's DEL resolves the default route again, and fails without one.
    ip(&w.host, "link del eth0");
    run(&w, "DEL", &no_master.to_string()).ok();
    assert_eq!(links(&w.c), ["lo"]);
    assert_eq!(host_local_leftovers(&store(&w)), Vec::<String>::new());

    let w = world();
    run(&w, "ADD", &conf(&w, json!({}))).ok();
    let World { host, c, ipam, .. } = w;
    let path = c.path().to_string();
    c.remove();
    Invocation::new("DEL", "ctr-ipvlan", &path, "net1", &conf_at(ipam.path(), json!({}))).run(&bin(), &host).ok();
    assert_eq!(host_local_leftovers(&ipam.path().join("ipvlan-test")), Vec::<String>::new());
}
