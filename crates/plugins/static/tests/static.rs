//! The built `static` binary, run as a runtime (or an interface plugin delegating to it) runs it:
//! result shapes at every version, CHECK against a prevResult, errors as the spec's JSON. static
//! touches no network state, so it runs in the test's own namespace.

use serde_json::{Value, json};
use std::path::PathBuf;
use testkit::{Invocation, Output};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_static"))
}

fn run(command: &str, conf: &Value, args: &str) -> Output {
    Invocation::new(command, "ctr-static", "/var/run/netns/none", "net1", &conf.to_string())
        .var("CNI_ARGS", Some(args))
        .run_here(&bin())
}

fn conf(version: &str) -> Value {
    json!({"cniVersion": version, "name": "static-net", "type": "macvlan",
           "ipam": {"type": "static",
                    "addresses": [{"address": "10.10.0.1/24", "gateway": "10.10.0.254"},
                                  {"address": "3ffe:ffff:0:01ff::1/64", "gateway": "3ffe:ffff:0::1"}],
                    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.10.5.1"}],
                    "dns": {"nameservers": ["8.8.8.8"], "domain": "example.com", "search": ["example.com"]}}})
}

#[test]
fn add_prints_the_configured_addresses_at_every_version() {
    let r = run("ADD", &conf("1.1.0"), "").ok();
    assert_eq!(
        r,
        json!({"cniVersion": "1.1.0",
               "ips": [{"address": "10.10.0.1/24", "gateway": "10.10.0.254"},
                       {"address": "3ffe:ffff:0:1ff::1/64", "gateway": "3ffe:ffff::1"}],
               "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.10.5.1"}],
               "dns": {"nameservers": ["8.8.8.8"], "domain": "example.com", "search": ["example.com"]}})
    );
    for v in ["1.0.0", "0.4.0", "0.3.1", "0.3.0"] {
        let r = run("ADD", &conf(v), "").ok();
        assert_eq!(r["cniVersion"], v);
        assert_eq!(r["ips"].as_array().unwrap().len(), 2, "{v}: {r}");
        if v.starts_with("0.3") {
            assert_eq!(r["ips"][0]["version"], "4", "{v}: {r}");
            assert_eq!(r["ips"][1]["version"], "6", "{v}: {r}");
        }
        assert!(r["ips"][0].get("interface").is_none(), "{v}: {r}");
    }
    for v in ["0.2.0", "0.1.0"] {
        let r = run("ADD", &conf(v), "").ok();
        assert_eq!(r["ip4"]["ip"], "10.10.0.1/24", "{v}: {r}");
        assert_eq!(r["ip4"]["gateway"], "10.10.0.254", "{v}: {r}");
        assert_eq!(r["ip6"]["ip"], "3ffe:ffff:0:1ff::1/64", "{v}: {r}");
    }
}

#[test]
fn runtime_addresses_override_the_config() {
    let mut c = conf("1.0.0");
    let r = run("ADD", &c, "IgnoreUnknown=1;IP=10.10.0.7/24;GATEWAY=10.10.0.1").ok();
    let ips: Vec<&Value> = r["ips"].as_array().unwrap().iter().collect();
    assert_eq!(ips.len(), 3, "{r}");
    assert_eq!(*ips[0], json!({"address": "10.10.0.1/24", "gateway": "10.10.0.254"}), "the config's own gateway");
    assert_eq!(*ips[2], json!({"address": "10.10.0.7/24", "gateway": "10.10.0.1"}));
    c["runtimeConfig"] = json!({"ips": ["10.30.0.9/16"]});
    assert_eq!(run("ADD", &c, "").ok()["ips"], json!([{"address": "10.30.0.9/16"}]));
}

#[test]
fn check_compares_with_prev_result() {
    let c = conf("1.0.0");
    let r = run("ADD", &c, "").ok();
    let mut with_prev = c.clone();
    with_prev["prevResult"] = r.clone();
    assert!(run("CHECK", &with_prev, "").success());

    let mut wrong_gw = r.clone();
    wrong_gw["ips"][0]["gateway"] = json!("10.10.0.253");
    with_prev["prevResult"] = wrong_gw;
    let out = run("CHECK", &with_prev, "");
    assert!(out.json()["msg"].as_str().unwrap().contains("static: Failed to match addr 10.10.0.1 on interface net1"));

    let mut missing = r;
    missing["ips"].as_array_mut().unwrap().remove(1);
    with_prev["prevResult"] = missing;
    assert!(!run("CHECK", &with_prev, "").success());

    let out = run("CHECK", &c, "");
    assert!(out.json()["msg"].as_str().unwrap().contains("Required prevResult missing"));
}

#[test]
fn bad_input_is_the_spec_error_json() {
    let mut c = conf("1.0.0");
    c["ipam"]["addresses"][0]["address"] = json!("10.10.0.1");
    let out = run("ADD", &c, "");
    assert_eq!(out.exit_code, 1);
    assert_eq!(out.err_code(), 7);
    assert_eq!(out.json()["msg"], "the 'address' field is expected to be in CIDR notation, got: '10.10.0.1'");
    assert_eq!(run("ADD", &conf("1.0.0"), "FOO=bar").err_code(), 4);
    // 0.2.0 cannot say two addresses of a family.
    let mut c = conf("0.2.0");
    c["ipam"]["addresses"][1]["address"] = json!("10.10.1.1/24");
    assert_eq!(run("ADD", &c, "").err_code(), 1);
    // DEL has nothing to undo, whatever the config says.
    assert!(run("DEL", &json!({"cniVersion": "1.0.0", "name": "n", "type": "static"}), "").success());
}
