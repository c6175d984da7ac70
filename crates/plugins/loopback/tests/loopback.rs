//! Kernel tests: the built `loopback` binary, run as a runtime runs it, against throwaway
//! namespaces (a sandbox "host" and a "container").

use serde_json::{Value, json};
use std::path::PathBuf;
use testkit::{Invocation, addresses, is_up, link, new_netns};

const VERSIONS: &[&str] = &["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_loopback"))
}

fn conf(version: &str) -> String {
    json!({"cniVersion": version, "name": "isolated", "type": "loopback"}).to_string()
}

struct Sandbox {
    host: testkit::Netns,
    container: testkit::Netns,
}

impl Sandbox {
    fn new() -> Sandbox {
        Sandbox { host: new_netns(), container: new_netns() }
    }

    fn netns(&self) -> String {
        self.container.path().to_string()
    }

    fn invoke(&self, command: &str, stdin: &str) -> Invocation {
        Invocation::new(command, "ctr-1", &self.netns(), "eth0", stdin)
    }

    fn lo_up(&self) -> bool {
        is_up(&link(&self.container, "lo").expect("lo exists"))
    }
}

#[test]
fn add_brings_lo_up_and_reports_it_in_every_version() {
    for version in VERSIONS {
        let sb = Sandbox::new();
        assert!(!sb.lo_up());
        let result = sb.invoke("ADD", &conf(version)).run(&bin(), &sb.host).ok();
        assert!(sb.lo_up(), "{version}: lo is not up");
        assert_eq!(result["cniVersion"], *version);
        let addrs = addresses(&sb.container, "lo");
        assert!(addrs.contains(&"127.0.0.1/8".to_string()), "{addrs:?}");
        match *version {
            "0.1.0" | "0.2.0" => {
                assert_eq!(result["ip4"]["ip"], "127.0.0.1/8", "{version}: {result}");
                assert_eq!(result["ip6"]["ip"], "::1/128", "{version}: {result}");
                assert!(result.get("interfaces").is_none());
            }
            _ => {
                assert_eq!(
                    result["interfaces"],
                    json!([{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": sb.netns()}]),
                    "{version}"
                );
                assert_eq!(result["ips"][0]["address"], "127.0.0.1/8");
                assert_eq!(result["ips"][0]["interface"], 0);
                assert_eq!(result["ips"][1]["address"], "::1/128");
                let has_version_field = result["ips"][0].get("version").is_some();
                assert_eq!(has_version_field, version.starts_with("0."), "{version}: {result}");
            }
        }
    }
}

#[test]
fn add_passes_prev_result_through_in_the_config_version() {
    let sb = Sandbox::new();
    let stdin = json!({
        "cniVersion": "1.0.0", "name": "net", "type": "loopback",
        "prevResult": {
            "cniVersion": "0.3.1",
            "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/x"}],
            "ips": [{"version": "4", "address": "10.88.0.5/16", "gateway": "10.88.0.1", "interface": 0}],
            "dns": {}
        }
    });
    let result = sb.invoke("ADD", &stdin.to_string()).run(&bin(), &sb.host).ok();
    assert!(sb.lo_up());
    assert_eq!(
        result,
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/x"}],
            "ips": [{"address": "10.88.0.5/16", "gateway": "10.88.0.1", "interface": 0}]
        })
    );
}

#[test]
fn check_passes_when_up_and_fails_clearly_when_down() {
    let sb = Sandbox::new();
    for version in ["0.4.0", "1.0.0", "1.1.0"] {
        sb.invoke("ADD", &conf(version)).run(&bin(), &sb.host).ok();
        assert_eq!(sb.invoke("CHECK", &conf(version)).run(&bin(), &sb.host).ok(), Value::Null);
    }
    testkit::ip(&sb.container, "link set lo down");
    let out = sb.invoke("CHECK", &conf("1.0.0")).run(&bin(), &sb.host);
    assert_eq!(out.err_code(), 999);
    assert!(out.json()["msg"].as_str().unwrap().contains("loopback interface is down"), "{}", out.stdout);
}

#[test]
fn check_needs_a_version_that_has_it() {
    let sb = Sandbox::new();
    sb.invoke("ADD", &conf("0.3.1")).run(&bin(), &sb.host).ok();
    assert_eq!(sb.invoke("CHECK", &conf("0.3.1")).run(&bin(), &sb.host).err_code(), 1);
}

#[test]
fn del_brings_lo_down_and_is_idempotent() {
    let sb = Sandbox::new();
    sb.invoke("ADD", &conf("1.0.0")).run(&bin(), &sb.host).ok();
    assert!(sb.lo_up());
    sb.invoke("DEL", &conf("1.0.0")).run(&bin(), &sb.host).ok();
    assert!(!sb.lo_up());
    sb.invoke("DEL", &conf("1.0.0")).run(&bin(), &sb.host).ok();
    assert!(!sb.lo_up());
}

#[test]
fn del_succeeds_without_netns_or_after_it_is_gone() {
    let sb = Sandbox::new();
    let gone_path = sb.netns();
    let Sandbox { host, container } = sb;
    container.remove();
    assert!(!std::path::Path::new(&gone_path).exists());
    for netns in [gone_path.as_str(), ""] {
        let inv = Invocation::new("DEL", "ctr-1", netns, "eth0", &conf("1.0.0"));
        assert_eq!(inv.run(&bin(), &host).ok(), Value::Null, "netns {netns:?}");
    }
    let inv = Invocation::new("DEL", "ctr-1", "", "eth0", &conf("1.0.0")).var("CNI_NETNS", None);
    inv.run(&bin(), &host).ok();
}

#[test]
fn status_and_gc_succeed() {
    let sb = Sandbox::new();
    for verb in ["STATUS", "GC"] {
        let inv = Invocation::new(verb, "", "", "", &conf("1.1.0"))
            .var("CNI_CONTAINERID", None)
            .var("CNI_NETNS", None)
            .var("CNI_IFNAME", None);
        assert_eq!(inv.run(&bin(), &sb.host).ok(), Value::Null, "{verb}");
    }
}

#[test]
fn version_lists_all_versions() {
    let sb = Sandbox::new();
    let v = Invocation::new("VERSION", "", "", "", "").run(&bin(), &sb.host).ok();
    assert_eq!(v["supportedVersions"], json!(VERSIONS));
}

#[test]
fn missing_cni_version_is_read_as_0_1_0_like_libcni() {
    // libcni treats a config without cniVersion as 0.1.0, and the reference plugins accept it; a
    // config that works with them must work with us.
    let sb = Sandbox::new();
    let result = sb.invoke("ADD", r#"{"name":"isolated","type":"loopback"}"#).run(&bin(), &sb.host).ok();
    assert_eq!(result["cniVersion"], "0.1.0");
    assert_eq!(result["ip4"]["ip"], "127.0.0.1/8");
}

#[test]
fn bad_input_gets_error_json_and_changes_nothing() {
    let sb = Sandbox::new();
    // Without CNI_COMMAND the plugin was run by hand (or by nerdctl reading its version): the
    // reference's about line on stderr, nothing on stdout, success.
    let about = sb.invoke("ADD", &conf("1.0.0")).var("CNI_COMMAND", None).run(&bin(), &sb.host);
    assert_eq!((about.exit_code, about.stdout.as_str()), (0, ""), "{about:?}");
    let version = env!("CARGO_PKG_VERSION");
    assert!(about.stderr.contains(&format!("CNI loopback plugin v{version}\n")), "{}", about.stderr);
    assert!(about.stderr.contains("CNI protocol versions supported: 0.1.0, 0.2.0"), "{}", about.stderr);
    let regular_file = std::env::temp_dir().join(format!("not-a-netns-{}", std::process::id()));
    std::fs::write(&regular_file, b"").unwrap();
    let regular = regular_file.display().to_string();
    let good = conf("1.0.0");
    let cases: Vec<(&str, Invocation, u64)> = vec![
        ("empty stdin", sb.invoke("ADD", ""), 6),
        ("invalid JSON", sb.invoke("ADD", "{\"cniVersion\":"), 6),
        ("JSON that is not an object", sb.invoke("ADD", "[\"loopback\"]"), 6),
        ("missing name", sb.invoke("ADD", r#"{"cniVersion":"1.0.0","type":"loopback"}"#), 7),
        ("missing type", sb.invoke("ADD", r#"{"cniVersion":"1.0.0","name":"n"}"#), 7),
        ("unsupported cniVersion", sb.invoke("ADD", &conf("9.0.0")), 1),
        ("cniVersion of the wrong type", sb.invoke("ADD", r#"{"cniVersion":1,"name":"n","type":"loopback"}"#), 6),
        ("unknown CNI_COMMAND", sb.invoke("FROB", &good), 4),
        ("missing CNI_NETNS", sb.invoke("ADD", &good).var("CNI_NETNS", None), 4),
        ("CNI_NETNS is a regular file", sb.invoke("ADD", &good).var("CNI_NETNS", Some(&regular)), 8),
        ("CNI_NETNS does not exist", sb.invoke("ADD", &good).var("CNI_NETNS", Some("/proc/0/ns/net")), 3),
        ("bad ifname", sb.invoke("ADD", &good).var("CNI_IFNAME", Some("eth/0")), 4),
        ("ifname too long", sb.invoke("ADD", &good).var("CNI_IFNAME", Some("a23456789012345x")), 4),
        ("bad container ID", sb.invoke("ADD", &good).var("CNI_CONTAINERID", Some("../../x")), 4),
        ("malformed CNI_ARGS", sb.invoke("ADD", &good).var("CNI_ARGS", Some("IgnoreUnknown=1;K8S_POD_NAME")), 4),
        (
            "prevResult of the wrong shape",
            sb.invoke(
                "ADD",
                r#"{"cniVersion":"1.0.0","name":"n","type":"loopback","prevResult":{"ips":[{"address":7}]}}"#,
            ),
            6,
        ),
    ];
    for (what, inv, code) in cases {
        let out = inv.run(&bin(), &sb.host);
        assert_eq!(out.err_code(), code, "{what}: {}", out.stdout);
        assert!(out.json()["cniVersion"].is_string(), "{what}: {}", out.stdout);
        assert!(!sb.lo_up(), "{what}: the failed ADD changed the container");
    }
    std::fs::remove_file(&regular_file).unwrap();
}
