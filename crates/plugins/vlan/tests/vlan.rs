//! Kernel tests of the vlan plugin with traffic, in throwaway namespaces: a "host" whose `eth0`
//! is cabled to a switch namespace, which answers on VLAN 100 (`trunk.100`, 10.100.0.1). A
//! container's VLAN 100 interface reaches it; nothing else does.
//!
//! They need the vlan (8021q) link type, which this machine's kernel lacks: there they print
//! "skipped: kernel lacks ..." and pass, except the bad-input test, which is refused before the
//! kernel is asked for anything. The VM lane (`make test-vm`) runs them all with
//! `CNI_RS_REQUIRE_KERNEL_FEATURES=1`, where a skip is a failure.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use testkit::{Invocation, Netns, TempDir, host_local_leftovers, ip, ip_json, link_namespaces, new_netns, ping};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vlan"))
}

fn kernel_ready() -> bool {
    testkit::kernel_has(
        "the vlan (802.1Q) link type",
        &["link add p0 type veth peer name p1", "link add link p0 name p0.5 type vlan id 5"],
    )
}

struct World {
    host: Netns,
    c: Netns,
    sw: Netns,
    ipam: TempDir,
}

fn world() -> World {
    let (host, c, sw) = (new_netns(), new_netns(), new_netns());
    link_namespaces(&host, "eth0", "198.51.100.1/24", &sw, "trunk", "198.51.100.2/24");
    World { host, c, sw, ipam: TempDir::new("vlan") }
}

/// A VLAN sub-interface of `trunk` in the switch, answering at `addr`.
fn switch_vlan(w: &World, trunk: &str, id: u16, addr: &str) {
    ip(&w.sw, &format!("link add link {trunk} name {trunk}.{id} type vlan id {id}"));
    ip(&w.sw, &format!("addr add {addr} dev {trunk}.{id}"));
    ip(&w.sw, &format!("link set {trunk}.{id} up"));
}

fn conf(w: &World, extra: Value) -> String {
    conf_at(w.ipam.path(), extra)
}

fn conf_at(ipam: &Path, extra: Value) -> String {
    let mut c = json!({
        "cniVersion": "1.0.0", "name": "vlan-test", "type": "vlan", "master": "eth0", "vlanId": 100,
        "dns": {"nameservers": ["10.100.0.53"]},
        "ipam": {"type": "host-local", "dataDir": ipam,
                 "ranges": [[{"subnet": "10.100.0.0/24", "rangeStart": "10.100.0.10"}]],
                 "routes": [{"dst": "0.0.0.0/0"}]}
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c.to_string()
}

fn run(w: &World, command: &str, stdin: &str) -> testkit::Output {
    Invocation::new(command, "ctr-vlan", w.c.path(), "net1", stdin).run(&bin(), &w.host)
}

fn store(w: &World) -> PathBuf {
    w.ipam.path().join("vlan-test")
}

/// Link names in `ns`, sorted.
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

/// `ip -d` details of a link: its kind and VLAN ID.
fn vlan_of(ns: &Netns, name: &str) -> (String, u64, u64) {
    let l = &ip_json(ns, &format!("-d link show {name}"))[0];
    let info = &l["linkinfo"];
    (
        info["info_kind"].as_str().unwrap_or("").to_string(),
        info["info_data"]["id"].as_u64().unwrap_or(u64::MAX),
        l["mtu"].as_u64().unwrap(),
    )
}

fn assert_clean(w: &World, host_links: &[String], store: &Path) {
    assert_eq!(links(&w.c), ["lo"], "nothing left in the container");
    assert_eq!(links(&w.host), host_links, "nothing left in the host");
    assert_eq!(host_local_leftovers(store), Vec::<String>::new(), "the allocation is released");
}

#[test]
fn a_vlan_interface_reaches_its_vlan_and_goes_on_del() {
    if !kernel_ready() {
        return;
    }
    let w = world();
    switch_vlan(&w, "trunk", 100, "10.100.0.1/24");
    switch_vlan(&w, "trunk", 200, "10.100.0.2/24");
    // The switch answers ARP only on the VLAN that holds the address asked for.
    testkit::set_sysctl(&w.sw, "net/ipv4/conf/all/arp_ignore", "1");
    let host_links = links(&w.host);

    let r = run(&w, "ADD", &conf(&w, json!({}))).ok();
    assert_eq!(r["interfaces"][0]["name"], "net1");
    assert_eq!(r["interfaces"][0]["sandbox"], w.c.path());
    assert_eq!(r["ips"][0], json!({"address": "10.100.0.10/24", "gateway": "10.100.0.1", "interface": 0}));
    assert_eq!(r["dns"], json!({"nameservers": ["10.100.0.53"]}));
    assert_eq!(vlan_of(&w.c, "net1"), ("vlan".to_string(), 100, 1500), "a VLAN 100 link with the master's MTU");
    let mac = ip_json(&w.c, "link show net1")[0]["address"].clone();
    assert_eq!(r["interfaces"][0]["mac"], mac);
    assert_eq!(links(&w.host), host_links, "nothing new in the host, no temporary name left");
    assert!(ip(&w.c, "route show").contains("default via 10.100.0.1 dev net1"));

    assert!(ping(&w.c, "10.100.0.1"), "VLAN 100 is reached, tagged");
    assert!(!ping(&w.c, "10.100.0.2"), "VLAN 200 is not");

    let mut checked = serde_json::from_str::<Value>(&conf(&w, json!({}))).unwrap();
    checked["prevResult"] = r.clone();
    assert!(run(&w, "CHECK", &checked.to_string()).success());
    checked["vlanId"] = json!(200);
    assert!(!run(&w, "CHECK", &checked.to_string()).success(), "CHECK sees the wrong VLAN ID");

    run(&w, "DEL", &conf(&w, json!({}))).ok();
    assert_clean(&w, &host_links, &store(&w));
    run(&w, "DEL", &conf(&w, json!({}))).ok();
}

#[test]
fn mtu_and_a_master_in_the_container() {
    if !kernel_ready() {
        return;
    }
    let w = world();
    link_namespaces(&w.c, "uplink", "198.51.101.1/24", &w.sw, "trunk2", "198.51.101.2/24");
    switch_vlan(&w, "trunk2", 7, "10.100.0.1/24");
    let c = conf(&w, json!({"master": "uplink", "linkInContainer": true, "vlanId": 7, "mtu": 1400}));
    let r = run(&w, "ADD", &c).ok();
    assert_eq!(vlan_of(&w.c, "net1"), ("vlan".to_string(), 7, 1400));
    assert!(ping(&w.c, "10.100.0.1"));
    let mut checked = serde_json::from_str::<Value>(&c).unwrap();
    checked["prevResult"] = r;
    assert!(run(&w, "CHECK", &checked.to_string()).success());
    run(&w, "DEL", &c).ok();
    assert!(testkit::link(&w.c, "net1").is_none());
    assert_eq!(host_local_leftovers(&store(&w)), Vec::<String>::new());
}

#[test]
fn bad_config_is_refused_before_anything_changes() {
    // None of these needs the vlan link type: they are refused first, on any kernel.
    let w = world();
    let host_links = links(&w.host);
    for (extra, want) in [
        (json!({"vlanId": 4095}), "invalid VLAN ID 4095"),
        (json!({"master": ""}), "\"master\" field is required"),
        (json!({"master": "nope0"}), "failed to lookup master \"nope0\""),
        (json!({"master": "nope0", "linkInContainer": true}), "failed to lookup master"),
        (json!({"mtu": 9000}), "invalid MTU 9000"),
    ] {
        let out = run(&w, "ADD", &conf(&w, extra.clone()));
        assert_eq!(out.err_code(), 7, "{extra}: {}", out.stdout);
        assert!(out.json()["msg"].as_str().unwrap().contains(want), "{extra}: {}", out.stdout);
        assert_clean(&w, &host_links, &store(&w));
    }
    let mut no_master = serde_json::from_str::<Value>(&conf(&w, json!({}))).unwrap();
    no_master.as_object_mut().unwrap().remove("master");
    assert_eq!(run(&w, "ADD", &no_master.to_string()).err_code(), 7);
    assert_clean(&w, &host_links, &store(&w));
}

#[test]
fn a_failed_add_leaves_nothing() {
    if !kernel_ready() {
        return;
    }
    let w = world();
    let host_links = links(&w.host);
    // IPAM refuses: the link goes (the reference leaves it).
    let bad_ipam = conf(&w, json!({"ipam": {"type": "host-local", "ranges": [[{"subnet": "bogus"}]]}}));
    run(&w, "ADD", &bad_ipam).err_code();
    assert_clean(&w, &host_links, &store(&w));
    // A later step fails or panics: the allocation is released too.
    for fault in ["vlan:ipam-added=fail", "vlan:ipam-added=panic", "vlan:link-created=panic"] {
        let out = Invocation::new("ADD", "ctr-vlan", w.c.path(), "net1", &conf(&w, json!({})))
            .var("CNI_RS_FAULT", Some(fault))
            .run(&bin(), &w.host);
        out.err_code();
        assert_clean(&w, &host_links, &store(&w));
    }
    // Killed before the rename: the link is in the container under its temporary name, and the
    // runtime's DEL finds it by that.
    let out = Invocation::new("ADD", "ctr-vlan", w.c.path(), "net1", &conf(&w, json!({})))
        .var("CNI_RS_FAULT", Some("vlan:before-rename=kill"))
        .run(&bin(), &w.host);
    assert!(!out.success());
    assert_eq!(links(&w.c).len(), 2, "the kill left the link under its temporary name");
    run(&w, "DEL", &conf(&w, json!({}))).ok();
    assert_clean(&w, &host_links, &store(&w));
    // Killed half way (a runtime's timeout): the runtime's DEL removes the link and the allocation.
    let out = Invocation::new("ADD", "ctr-vlan", w.c.path(), "net1", &conf(&w, json!({})))
        .var("CNI_RS_FAULT", Some("vlan:ipam-added=kill"))
        .run(&bin(), &w.host);
    assert!(!out.success());
    assert!(testkit::link(&w.c, "net1").is_some(), "the kill left the link");
    run(&w, "DEL", &conf(&w, json!({}))).ok();
    assert_clean(&w, &host_links, &store(&w));
    // The name is taken in the container.
    ip(&w.c, "link add net1 type veth peer name other");
    assert!(run(&w, "ADD", &conf(&w, json!({}))).json()["msg"].as_str().unwrap().contains("already exists"));
    assert_eq!(host_local_leftovers(&store(&w)), Vec::<String>::new());
    assert_eq!(links(&w.host), host_links);
}

#[test]
fn del_succeeds_when_the_master_or_the_netns_is_gone() {
    if !kernel_ready() {
        return;
    }
    let w = world();
    run(&w, "ADD", &conf(&w, json!({}))).ok();
    // The master goes (the reference's DEL fails from then on, and the address leaks).
    ip(&w.host, "link del eth0");
    run(&w, "DEL", &conf(&w, json!({}))).ok();
    assert!(testkit::link(&w.c, "net1").is_none());
    assert_eq!(host_local_leftovers(&store(&w)), Vec::<String>::new());

    let w = world();
    run(&w, "ADD", &conf(&w, json!({}))).ok();
    let World { host, c, sw: _sw, ipam } = w;
    let path = c.path().to_string();
    c.remove();
    let out = Invocation::new("DEL", "ctr-vlan", &path, "net1", &conf_at(ipam.path(), json!({}))).run(&bin(), &host);
    out.ok();
    assert_eq!(host_local_leftovers(&ipam.path().join("vlan-test")), Vec::<String>::new());
}
