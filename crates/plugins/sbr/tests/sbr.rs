//! Kernel tests of sbr in throwaway namespaces: a container `c` with two interfaces, `eth0`
//! (10.1.0.2, the main table's default route) and `net1` (10.2.0.2 and fd00:2::2), both cabled to
//! an outside namespace `w` that holds a client address, 198.51.100.9, and checks the source of
//! what arrives on each cable strictly (`rp_filter=1`). A reply from 10.2.0.2 that leaves by
//! `eth0`, as the main table sends it, is dropped there; after sbr's ADD it leaves by `net1`.

use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Command;
use testkit::{Invocation, Netns, in_netns, ip, link_namespaces, new_netns, set_sysctl};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sbr"))
}

struct World {
    /// The test's "host": sbr runs here, as a runtime runs it on a node.
    host: Netns,
    c: Netns,
    w: Netns,
}

fn world() -> World {
    let (host, c, w) = (new_netns(), new_netns(), new_netns());
    link_namespaces(&c, "eth0", "10.1.0.2/24", &w, "wa", "10.1.0.1/24");
    link_namespaces(&c, "net1", "10.2.0.2/24", &w, "wb", "10.2.0.1/24");
    ip(&c, "-6 addr add fd00:2::2/64 dev net1 nodad");
    ip(&w, "-6 addr add fd00:2::1/64 dev wb nodad");
    ip(&c, "route add default via 10.1.0.1 dev eth0");
    ip(&w, "link set lo up");
    ip(&w, "addr add 198.51.100.9/32 dev lo");
    for path in ["net/ipv4/conf/all/rp_filter", "net/ipv4/conf/wa/rp_filter", "net/ipv4/conf/wb/rp_filter"] {
        set_sysctl(&w, path, "1");
    }
    for path in ["net/ipv4/conf/all/rp_filter", "net/ipv4/conf/net1/rp_filter", "net/ipv4/conf/eth0/rp_filter"] {
        set_sysctl(&c, path, "0");
    }
    World { host, c, w }
}

/// One echo from the client address in `w` to `dst`, answered within a second.
fn client_ping(w: &Netns, dst: &str) -> bool {
    in_netns(Command::new("ping").args(["-c1", "-W1", "-I", "198.51.100.9", dst]), w)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn prev_result(netns: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "net1", "sandbox": netns}],
        "ips": [
            {"address": "10.2.0.2/24", "gateway": "10.2.0.1", "interface": 0},
            {"address": "fd00:2::2/64", "gateway": "fd00:2::1", "interface": 0}
        ]
    })
}

fn conf(netns: &str, extra: Value) -> String {
    let mut c = json!({"cniVersion": "1.0.0", "name": "sbr-test", "type": "sbr", "prevResult": prev_result(netns)});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c.to_string()
}

fn run(w: &World, command: &str, ifname: &str, stdin: &str) -> testkit::Output {
    Invocation::new(command, "ctr-sbr", w.c.path(), ifname, stdin).run(&bin(), &w.host)
}

/// Rules and routes of every table, in a form to compare before and after.
fn policy_state(ns: &Netns) -> String {
    let mut out = String::new();
    for args in ["-4 rule show", "-6 rule show", "-4 route show table all", "-6 route show table all"] {
        out += &ip(ns, args);
    }
    out
}

#[test]
fn replies_leave_by_the_interface_of_their_source() {
    let w = world();
    assert!(client_ping(&w.w, "10.1.0.2"), "eth0's address answers through the main default route");
    assert!(!client_ping(&w.w, "10.2.0.2"), "before sbr, replies from net1's address leave by eth0 and are dropped");

    let out = run(&w, "ADD", "net1", &conf(w.c.path(), json!({}))).ok();
    assert_eq!(out["ips"], prev_result(w.c.path())["ips"], "the previous result is passed on");
    assert_eq!(out["cniVersion"], "1.0.0");

    assert!(ip(&w.c, "-4 rule show").contains("from 10.2.0.2 lookup 100"), "{}", ip(&w.c, "-4 rule show"));
    assert!(ip(&w.c, "-6 rule show").contains("from fd00:2::2 lookup 101"), "{}", ip(&w.c, "-6 rule show"));
    let t100 = ip(&w.c, "-4 route show table 100");
    assert!(t100.contains("default via 10.2.0.1 dev net1"), "{t100}");
    assert!(t100.contains("10.2.0.0/24 dev net1"), "{t100}");
    let t101 = ip(&w.c, "-6 route show table 101");
    assert!(t101.contains("default via fd00:2::1 dev net1"), "{t101}");
    assert!(t101.contains("fd00:2::/64 dev net1"), "{t101}");
    assert!(!ip(&w.c, "-4 route show table main").contains("net1"), "net1's routes left the main table");
    assert!(!ip(&w.c, "-6 route show table main").contains("net1"));
    assert!(ip(&w.c, "-4 route show table main").contains("default via 10.1.0.1 dev eth0"), "eth0 untouched");

    assert!(client_ping(&w.w, "10.2.0.2"), "replies from net1's address now leave by net1");
    assert!(client_ping(&w.w, "10.1.0.2"), "eth0's address still answers by eth0");

    assert!(run(&w, "CHECK", "net1", &conf(w.c.path(), json!({}))).success());

    run(&w, "DEL", "net1", &conf(w.c.path(), json!({}))).ok();
    assert!(!ip(&w.c, "rule show").contains("10.2.0.2"), "the rule is gone");
    assert!(!ip(&w.c, "-6 rule show").contains("fd00:2::2"));
    assert_eq!(ip(&w.c, "-4 route show table 100"), "", "and the table with it");
    assert_eq!(ip(&w.c, "-6 route show table 101"), "");
    assert!(!client_ping(&w.w, "10.2.0.2"), "back to the main table's way");
    run(&w, "DEL", "net1", &conf(w.c.path(), json!({}))).ok();
}

#[test]
fn each_attachment_gets_its_own_tables_even_at_once() {
    let w = world();
    link_namespaces(&w.c, "net2", "10.3.0.2/24", &w.w, "wc", "10.3.0.1/24");
    let prev2 = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "net2", "sandbox": w.c.path()}],
                       "ips": [{"address": "10.3.0.2/24", "gateway": "10.3.0.1", "interface": 0}]});
    let conf2 = json!({"cniVersion": "1.0.0", "name": "sbr-test", "type": "sbr", "prevResult": prev2}).to_string();
    let a = Invocation::new("ADD", "ctr-sbr", w.c.path(), "net1", &conf(w.c.path(), json!({})))
        .spawn(&bin(), Some(&w.host));
    let b = Invocation::new("ADD", "ctr-sbr2", w.c.path(), "net2", &conf2).spawn(&bin(), Some(&w.host));
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    }
    let rules = ip(&w.c, "-4 rule show");
    let table_of = |src: &str| -> String {
        let line = rules.lines().find(|l| l.contains(&format!("from {src} "))).unwrap_or_else(|| panic!("{rules}"));
        line.rsplit(' ').next().unwrap().to_string()
    };
    let (t1, t2) = (table_of("10.2.0.2"), table_of("10.3.0.2"));
    assert_ne!(t1, t2, "{rules}");
    assert!(ip(&w.c, &format!("-4 route show table {t2}")).contains("default via 10.3.0.1 dev net2"));
    assert!(client_ping(&w.w, "10.2.0.2") && client_ping(&w.w, "10.3.0.2"));

    // One DEL leaves the other attachment's rule and table alone.
    Invocation::new("DEL", "ctr-sbr2", w.c.path(), "net2", &conf2).run(&bin(), &w.host).ok();
    assert!(!ip(&w.c, "-4 rule show").contains("10.3.0.2"));
    assert!(ip(&w.c, "-4 rule show").contains("from 10.2.0.2"));
    assert!(ip(&w.c, &format!("-4 route show table {t1}")).contains("default via 10.2.0.1"));
    assert!(client_ping(&w.w, "10.2.0.2"));
}

#[test]
fn a_configured_table_gets_rules_only() {
    let w = world();
    let before = ip(&w.c, "-4 route show table all");
    let c = conf(w.c.path(), json!({"table": 500}));
    run(&w, "ADD", "net1", &c).ok();
    assert!(ip(&w.c, "-4 rule show").contains("from 10.2.0.2 lookup 500"));
    assert!(ip(&w.c, "-6 rule show").contains("from fd00:2::2 lookup 500"));
    assert_eq!(ip(&w.c, "-4 route show table all"), before, "no route moved");
    // The operator fills the table; DEL leaves it to them.
    ip(&w.c, "route add default via 10.2.0.1 dev net1 table 500");
    assert!(client_ping(&w.w, "10.2.0.2"));
    assert!(run(&w, "CHECK", "net1", &c).success());
    run(&w, "DEL", "net1", &c).ok();
    assert!(!ip(&w.c, "rule show").contains("lookup 500"));
    assert!(!ip(&w.c, "-6 rule show").contains("lookup 500"));
    assert!(ip(&w.c, "route show table 500").contains("default via 10.2.0.1"), "the operator's table stays");
    let fails = run(&w, "CHECK", "net1", &c);
    assert!(!fails.success(), "CHECK sees the rules gone");
}

#[test]
fn a_failed_add_leaves_nothing() {
    let w = world();
    let before = policy_state(&w.c);
    // The second address's gateway is on no link: its default route fails after the first
    // address's rule, table and routes are in place.
    let mut prev = prev_result(w.c.path());
    prev["ips"][1] = json!({"address": "fd00:2::2/64", "gateway": "fd00:9::1", "interface": 0});
    let c = json!({"cniVersion": "1.0.0", "name": "sbr-test", "type": "sbr", "prevResult": prev}).to_string();
    let out = run(&w, "ADD", "net1", &c);
    out.err_code();
    assert!(out.json()["msg"].as_str().unwrap().contains("fd00:9::1"), "{}", out.stdout);
    assert_eq!(policy_state(&w.c), before, "rules and routes as they were");

    // No such interface in the container.
    let out = run(&w, "ADD", "net9", &conf(w.c.path(), json!({})).replace("\"net1\"", "\"net9\""));
    assert_eq!(out.err_code(), 7);
    assert!(out.json()["msg"].as_str().unwrap().contains("net9"));
    assert_eq!(policy_state(&w.c), before);

    // Not chained, or chained after a plugin that gave no address.
    let bare = json!({"cniVersion": "1.0.0", "name": "sbr-test", "type": "sbr"}).to_string();
    assert_eq!(run(&w, "ADD", "net1", &bare).err_code(), 7);
    let empty = json!({"cniVersion": "1.0.0", "name": "sbr-test", "type": "sbr",
                       "prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": "net1"}]}})
    .to_string();
    assert_eq!(run(&w, "ADD", "net1", &empty).err_code(), 7);
    // Addresses, but all of another interface.
    let other = json!({"cniVersion": "1.0.0", "name": "sbr-test", "type": "sbr",
                       "prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}],
                                      "ips": [{"address": "10.1.0.2/24", "interface": 0}]}})
    .to_string();
    assert_eq!(run(&w, "ADD", "net1", &other).err_code(), 7);
    assert_eq!(run(&w, "ADD", "net1", &conf(w.c.path(), json!({"table": -1}))).err_code(), 7);
    assert_eq!(policy_state(&w.c), before);
}

#[test]
fn del_without_the_netns_or_the_interface_succeeds() {
    let w = world();
    // A netns path that is gone: success, and no file is made there (the reference's lock
    // creates one).
    let dir = testkit::TempDir::new("sbr");
    let gone = dir.path().join("netns-gone");
    let c = conf(gone.to_str().unwrap(), json!({}));
    let out = Invocation::new("DEL", "ctr-sbr", gone.to_str().unwrap(), "net1", &c).run(&bin(), &w.host);
    out.ok();
    assert!(!gone.exists(), "DEL created {}", gone.display());

    // The interface went first (a DEL retried after the main plugin's): the rules go by
    // prevResult's addresses.
    run(&w, "ADD", "net1", &conf(w.c.path(), json!({}))).ok();
    ip(&w.c, "link del net1");
    run(&w, "DEL", "net1", &conf(w.c.path(), json!({}))).ok();
    assert!(!ip(&w.c, "-4 rule show").contains("10.2.0.2"), "{}", ip(&w.c, "-4 rule show"));
    assert!(!ip(&w.c, "-6 rule show").contains("fd00:2::2"));
    // And without a prevResult either.
    let bare = json!({"cniVersion": "1.0.0", "name": "sbr-test", "type": "sbr"}).to_string();
    run(&w, "DEL", "net1", &bare).ok();
}

#[test]
fn a_failed_or_killed_add_is_undone_or_cleaned_by_del() {
    let w = world();
    let before = policy_state(&w.c);
    let c = conf(w.c.path(), json!({}));
    for fault in ["sbr:tables-filled=fail", "sbr:tables-filled=panic"] {
        let out = Invocation::new("ADD", "ctr-sbr", w.c.path(), "net1", &c)
            .var("CNI_RS_FAULT", Some(fault))
            .run(&bin(), &w.host);
        out.err_code();
        assert_eq!(policy_state(&w.c), before, "{fault}");
    }
    // Killed half way (a runtime's timeout): the runtime's DEL removes the rules and tables.
    let out = Invocation::new("ADD", "ctr-sbr", w.c.path(), "net1", &c)
        .var("CNI_RS_FAULT", Some("sbr:tables-filled=kill"))
        .run(&bin(), &w.host);
    assert!(!out.success());
    assert!(ip(&w.c, "-4 rule show").contains("10.2.0.2"), "the kill left the rule");
    run(&w, "DEL", "net1", &c).ok();
    assert!(!ip(&w.c, "-4 rule show").contains("10.2.0.2") && !ip(&w.c, "-6 rule show").contains("fd00:2::2"));
    assert_eq!(ip(&w.c, "-4 route show table 100"), "");
    assert_eq!(ip(&w.c, "-6 route show table 101"), "");
    // And a new ADD works as the first did.
    run(&w, "ADD", "net1", &c).ok();
    assert!(client_ping(&w.w, "10.2.0.2"));
}
