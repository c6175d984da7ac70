//! The built `host-local` binary, run as a runtime (or a main plugin) runs it. host-local touches no
//! network state, so these tests need no namespaces; each uses its own temporary dataDir.

use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use testkit::{Invocation, Output, TempDir};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_host-local"))
}

const REFERENCE: &str = "/usr/lib/cni/host-local";

struct Net {
    dir: TempDir,
    conf: Value,
}

impl Net {
    fn new(ipam: Value) -> Net {
        let dir = TempDir::new("host-local");
        let mut ipam = ipam;
        ipam["type"] = json!("host-local");
        ipam["dataDir"] = json!(dir.path().display().to_string());
        let conf = json!({"cniVersion": "1.0.0", "name": "net1", "type": "bridge", "ipam": ipam});
        Net { dir, conf }
    }

    fn v4() -> Net {
        Net::new(json!({"ranges": [[{"subnet": "10.1.0.0/24"}]]}))
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("net1")
    }

    fn with(&self, key: &str, value: Value) -> Value {
        let mut conf = self.conf.clone();
        conf[key] = value;
        conf
    }

    fn invoke(&self, command: &str, cid: &str, conf: &Value) -> Invocation {
        Invocation::new(command, cid, "/var/run/netns/unused", "eth0", &conf.to_string())
    }

    fn run(&self, command: &str, cid: &str) -> Output {
        self.invoke(command, cid, &self.conf).run_here(&bin())
    }

    fn add(&self, cid: &str) -> Value {
        self.run("ADD", cid).ok()
    }

    /// The addresses files in the store say are allocated.
    fn allocated(&self) -> BTreeSet<String> {
        std::fs::read_dir(self.store())
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn addresses(result: &Value) -> Vec<String> {
    result["ips"].as_array().unwrap().iter().map(|ip| ip["address"].as_str().unwrap().to_string()).collect()
}

#[test]
fn dual_stack_result_with_routes_and_dns() {
    let dir = TempDir::new("resolv");
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 10.1.0.53\nsearch svc.local\noptions ndots:3\n").unwrap();
    let net = Net::new(json!({
        "ranges": [[{"subnet": "10.1.0.0/24", "gateway": "10.1.0.254"}], [{"subnet": "fd00:1::/64"}]],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd00:1::1"}],
        "resolvConf": resolv.display().to_string()
    }));
    let result = net.add("c1");
    assert_eq!(
        result,
        json!({
            "cniVersion": "1.0.0",
            "ips": [
                {"address": "10.1.0.1/24", "gateway": "10.1.0.254"},
                {"address": "fd00:1::2/64", "gateway": "fd00:1::1"}
            ],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd00:1::1"}],
            "dns": {"nameservers": ["10.1.0.53"], "search": ["svc.local"], "options": ["ndots:3"]}
        })
    );
    assert_eq!(std::fs::read_to_string(net.store().join("10.1.0.1")).unwrap(), "c1\r\neth0");
    assert_eq!(std::fs::read_to_string(net.store().join("fd00:1::2")).unwrap(), "c1\r\neth0");
}

#[test]
fn results_in_old_versions() {
    let net = Net::new(json!({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00:1::/64"}]]}));
    let r = net.invoke("ADD", "c1", &net.with("cniVersion", json!("0.3.1"))).run_here(&bin()).ok();
    assert_eq!(r["ips"][0], json!({"version": "4", "address": "10.1.0.2/24", "gateway": "10.1.0.1"}));
    let r = net.invoke("ADD", "c2", &net.with("cniVersion", json!("0.2.0"))).run_here(&bin()).ok();
    assert_eq!(r["ip4"], json!({"ip": "10.1.0.3/24", "gateway": "10.1.0.1"}));
    assert_eq!(r["ip6"]["ip"], "fd00:1::3/64");
}

#[test]
fn legacy_single_range_form() {
    let net = Net::new(
        json!({"subnet": "10.5.0.0/16", "rangeStart": "10.5.3.10", "rangeEnd": "10.5.3.11", "gateway": "10.5.0.1"}),
    );
    assert_eq!(addresses(&net.add("c1")), ["10.5.3.10/16"]);
    assert_eq!(addresses(&net.add("c2")), ["10.5.3.11/16"]);
    assert_eq!(net.run("ADD", "c3").err_code(), 101);
}

#[test]
fn round_robin_does_not_hand_back_a_released_address_at_once() {
    let net = Net::v4();
    assert_eq!(addresses(&net.add("c1")), ["10.1.0.2/24"]);
    net.run("DEL", "c1").ok();
    assert_eq!(addresses(&net.add("c2")), ["10.1.0.3/24"]);
    assert_eq!(addresses(&net.add("c1")), ["10.1.0.4/24"]);
}

#[test]
fn a_second_add_for_the_same_attachment_fails_and_changes_nothing() {
    let net = Net::v4();
    net.add("c1");
    let out = net.run("ADD", "c1");
    assert_eq!(out.err_code(), 102, "{}", out.stdout);
    assert_eq!(net.allocated(), BTreeSet::from(["10.1.0.2".to_string()]));
    // Another interface of the same container is a different attachment.
    let other = net.invoke("ADD", "c1", &net.conf).var("CNI_IFNAME", Some("net1")).run_here(&bin()).ok();
    assert_eq!(addresses(&other), ["10.1.0.3/24"]);
}

#[test]
fn requested_addresses_from_args_capability_and_cni_args() {
    let net = Net::new(json!({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00:1::/64"}]]}));
    let by_env = net.invoke("ADD", "c1", &net.conf).var("CNI_ARGS", Some("IgnoreUnknown=1;IP=10.1.0.50,fd00:1::50"));
    assert_eq!(addresses(&by_env.run_here(&bin()).ok()), ["10.1.0.50/24", "fd00:1::50/64"]);
    let by_args = net.with("args", json!({"cni": {"ips": ["10.1.0.60"]}}));
    assert_eq!(addresses(&net.invoke("ADD", "c2", &by_args).run_here(&bin()).ok())[0], "10.1.0.60/24");
    let by_cap = net.with("runtimeConfig", json!({"ips": ["fd00:1::70/64"]}));
    assert_eq!(addresses(&net.invoke("ADD", "c3", &by_cap).run_here(&bin()).ok())[1], "fd00:1::70/64");
}

#[test]
fn bad_requests_fail_with_codes_and_release_what_was_taken() {
    let net = Net::new(json!({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00:1::/64"}]]}));
    net.add("holder"); // takes 10.1.0.2 and fd00:1::2
    let cases = [
        ("IP=10.1.0.1", 7, "gateway"),
        ("IP=10.1.0.2", 100, "not available"),
        ("IP=10.9.9.9", 7, "10.9.9.9"),
        ("IP=10.1.0.7,10.1.0.8", 7, "10.1.0.8"),
        ("IP=fd00:1::2", 100, "not available"),
        ("IP=banana", 7, "invalid IP"),
    ];
    for (args, code, text) in cases {
        let out = net.invoke("ADD", "c1", &net.conf).var("CNI_ARGS", Some(args)).run_here(&bin());
        assert_eq!(out.err_code(), code, "{args}: {}", out.stdout);
        assert!(out.stdout.contains(text), "{args}: {}", out.stdout);
        assert_eq!(net.allocated().len(), 2, "{args}: something was left allocated: {:?}", net.allocated());
    }
    // Unknown CNI_ARGS keys need IgnoreUnknown, as with the reference.
    let out = net.invoke("ADD", "c1", &net.conf).var("CNI_ARGS", Some("K8S_POD_NAME=x")).run_here(&bin());
    assert_eq!(out.err_code(), 4);
}

#[test]
fn exhaustion_is_code_101_and_leaves_nothing() {
    let net = Net::new(json!({"ranges": [[{"subnet": "10.1.0.0/30"}], [{"subnet": "fd00:1::/64"}]]}));
    assert_eq!(addresses(&net.add("c1")), ["10.1.0.2/30", "fd00:1::2/64"]);
    let out = net.run("ADD", "c2");
    assert_eq!(out.err_code(), 101);
    assert!(out.stdout.contains("no IP addresses available"), "{}", out.stdout);
    assert_eq!(net.allocated().len(), 2);
}

#[test]
fn fifty_parallel_adds_get_fifty_distinct_addresses() {
    let net = Net::v4();
    let children: Vec<_> =
        (0..50).map(|i| net.invoke("ADD", &format!("ctr-{i}"), &net.conf).spawn(&bin(), None)).collect();
    let mut seen = BTreeSet::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        let result: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(seen.insert(addresses(&result)[0].clone()), "address handed out twice");
    }
    assert_eq!(seen.len(), 50);
    assert_eq!(net.allocated().len(), 50);
    // Every one of them can be released again by its attachment.
    let children: Vec<_> =
        (0..50).map(|i| net.invoke("DEL", &format!("ctr-{i}"), &net.conf).spawn(&bin(), None)).collect();
    for child in children {
        assert!(child.wait_with_output().unwrap().status.success());
    }
    assert!(net.allocated().is_empty());
}

#[test]
fn del_is_idempotent_and_needs_no_netns() {
    let net = Net::v4();
    net.add("c1");
    for _ in 0..2 {
        net.invoke("DEL", "c1", &net.conf).var("CNI_NETNS", None).run_here(&bin()).ok();
    }
    assert!(net.allocated().is_empty());
    // A store that was never created, and a config whose ranges became invalid.
    let fresh = Net::v4();
    fresh.run("DEL", "nobody").ok();
    assert!(!fresh.store().exists(), "DEL should not create the store");
    let mut broken = net.conf.clone();
    broken["ipam"]["ranges"] = json!([[{"subnet": "10.1.0.0/33"}]]);
    net.invoke("DEL", "c1", &broken).run_here(&bin()).ok();
}

#[test]
fn check_confirms_the_allocation() {
    let net = Net::v4();
    net.add("c1");
    assert_eq!(net.run("CHECK", "c1").ok(), Value::Null);
    net.run("DEL", "c1").ok();
    let out = net.run("CHECK", "c1");
    out.err_code();
    assert!(out.stdout.contains("failed to find address"), "{}", out.stdout);
}

fn gc(net: &Net, attachments: Option<(&str, Value)>) -> Output {
    let mut conf = net.with("cniVersion", json!("1.1.0"));
    if let Some((key, list)) = attachments {
        conf[key] = list;
    }
    Invocation::new("GC", "", "", "", &conf.to_string())
        .var("CNI_CONTAINERID", None)
        .var("CNI_NETNS", None)
        .var("CNI_IFNAME", None)
        .run_here(&bin())
}

#[test]
fn gc_releases_what_is_not_valid() {
    let net = Net::v4();
    for c in ["a", "b", "c"] {
        net.add(c);
    }
    gc(&net, None).ok();
    assert_eq!(net.allocated().len(), 3, "GC without a list must release nothing");
    gc(
        &net,
        Some((
            "cni.dev/valid-attachments",
            json!([{"containerID": "a", "ifname": "eth0"}, {"containerID": "b", "ifname": "net9"}]),
        )),
    )
    .ok();
    assert_eq!(net.allocated(), BTreeSet::from(["10.1.0.2".to_string()]));
    // DEL and CHECK of the survivor still work through the rebuilt index.
    assert_eq!(net.run("CHECK", "a").ok(), Value::Null);
    gc(&net, Some(("cni.dev/attachments", json!([])))).ok();
    assert!(net.allocated().is_empty());
}

#[test]
fn status_reports_exhaustion_and_an_unwritable_data_dir() {
    let net = Net::new(json!({"ranges": [[{"subnet": "10.1.0.0/30"}]]}));
    let status = |conf: &Value| {
        Invocation::new("STATUS", "", "", "", &conf.to_string())
            .var("CNI_CONTAINERID", None)
            .var("CNI_NETNS", None)
            .var("CNI_IFNAME", None)
    };
    let conf = net.with("cniVersion", json!("1.1.0"));
    status(&conf).run_here(&bin()).ok();
    net.add("c1");
    let out = status(&conf).run_here(&bin());
    assert_eq!(out.err_code(), 50, "{}", out.stdout);

    // A read-only dataDir: a private mount namespace with a read-only tmpfs over it.
    testkit::require_root();
    let ro = TempDir::new("ro");
    let mut conf = conf.clone();
    conf["ipam"]["dataDir"] = json!(ro.path().join("d").display().to_string());
    let child = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs -o ro tmpfs {} && echo '{}' | CNI_COMMAND=STATUS {}",
            ro.path().display(),
            conf,
            bin().display()
        ))
        .output()
        .unwrap();
    let json: Value = serde_json::from_slice(&child.stdout).unwrap_or_else(|_| {
        panic!("{} / {}", String::from_utf8_lossy(&child.stdout), String::from_utf8_lossy(&child.stderr))
    });
    assert_eq!(json["code"], 50, "{json}");
    assert!(!child.status.success());
}

#[test]
fn path_traversal_is_refused_before_anything_is_written() {
    let net = Net::v4();
    let cases = [
        (net.with("name", json!("../escape")), "c1", "eth0", 7),
        (net.conf.clone(), "../../etc", "eth0", 4),
        (net.conf.clone(), "c1", "../x", 4),
        (
            net.with("ipam", json!({"type": "host-local", "subnet": "10.1.0.0/24", "dataDir": "relative/dir"})),
            "c1",
            "eth0",
            7,
        ),
    ];
    for (conf, cid, ifname, code) in cases {
        let out = Invocation::new("ADD", cid, "/n", ifname, &conf.to_string()).run_here(&bin());
        assert_eq!(out.err_code(), code, "{cid} {ifname} {conf}");
    }
    assert!(!net.dir.path().parent().unwrap().join("escape").exists());
    assert!(!Path::new("relative").exists());
    assert!(net.allocated().is_empty());
}

#[test]
fn sigkill_at_any_point_leaves_a_readable_consistent_store() {
    let net = Net::new(json!({"ranges": [[{"subnet": "10.7.0.0/16"}], [{"subnet": "fd00:7::/64"}]]}));
    for i in 0..60 {
        let mut child = net.invoke("ADD", &format!("k{i}"), &net.conf).spawn(&bin(), None);
        // Kill at a different moment each time, from before exec to after exit.
        std::thread::sleep(std::time::Duration::from_micros(50 * (i % 30)));
        let _ = child.kill();
        let _ = child.wait();
    }
    // Every address file names its owner in full (never empty or half-written)...
    for name in net.allocated() {
        let content = std::fs::read_to_string(net.store().join(&name)).unwrap();
        assert!(content.starts_with('k') && content.contains("\r\neth0"), "{name}: {content:?}");
    }
    // ...the store still works, and DEL of every container leaves nothing behind.
    net.add("after");
    for i in 0..60 {
        net.run("DEL", &format!("k{i}")).ok();
    }
    net.run("DEL", "after").ok();
    assert!(net.allocated().is_empty(), "{:?}", net.allocated());
}

#[test]
fn store_written_by_the_reference_format_is_read_and_released() {
    let net = Net::v4();
    let store = net.store();
    std::fs::create_dir_all(&store).unwrap();
    // Exactly what the reference leaves: CRLF owner files, an id-only file from an old version,
    // last_reserved_ip.0 and the lock file.
    std::fs::write(store.join("10.1.0.2"), "ref-a\r\neth0").unwrap();
    std::fs::write(store.join("10.1.0.3"), "ref-old").unwrap();
    std::fs::write(store.join("last_reserved_ip.0"), "10.1.0.3").unwrap();
    std::fs::write(store.join("lock"), "").unwrap();
    assert_eq!(net.run("CHECK", "ref-a").ok(), Value::Null);
    assert_eq!(addresses(&net.add("new")), ["10.1.0.4/24"], "round robin continues after the reference's last");
    net.run("DEL", "ref-a").ok();
    net.run("DEL", "ref-old").ok();
    assert_eq!(net.allocated(), BTreeSet::from(["10.1.0.4".to_string()]));
}

fn reference() -> PathBuf {
    let path = PathBuf::from(REFERENCE);
    assert!(path.is_file(), "the Go reference host-local is not installed (scripts/deps.sh installs it)");
    path
}

#[test]
fn switching_binaries_keeps_allocations_both_ways() {
    let net = Net::new(json!({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00:1::/64"}]]}));
    // The reference allocates; we see it, continue after it, and release it.
    let theirs = net.invoke("ADD", "ref-1", &net.conf).run_here(&reference()).ok();
    assert_eq!(addresses(&theirs), ["10.1.0.2/24", "fd00:1::2/64"]);
    assert_eq!(net.run("CHECK", "ref-1").ok(), Value::Null);
    assert_eq!(addresses(&net.add("ours-1")), ["10.1.0.3/24", "fd00:1::3/64"]);
    assert_eq!(net.run("ADD", "ref-1").err_code(), 102, "the reference's allocation must count as a duplicate");
    net.run("DEL", "ref-1").ok();
    assert_eq!(net.allocated(), BTreeSet::from(["10.1.0.3".to_string(), "fd00:1::3".to_string()]));

    // We allocate; the reference sees it, continues after it, and releases it.
    net.invoke("CHECK", "ours-1", &net.conf).run_here(&reference()).ok();
    let theirs = net.invoke("ADD", "ref-2", &net.conf).run_here(&reference()).ok();
    assert_eq!(addresses(&theirs), ["10.1.0.4/24", "fd00:1::4/64"]);
    net.invoke("DEL", "ours-1", &net.conf).run_here(&reference()).ok();
    assert_eq!(net.allocated(), BTreeSet::from(["10.1.0.4".to_string(), "fd00:1::4".to_string()]));
    // And we release what the reference allocated after our index was written.
    net.run("DEL", "ref-2").ok();
    assert!(net.allocated().is_empty());
}

#[test]
fn old_format_leases_in_a_store_we_already_use_are_released_by_del_and_seen_by_gc() {
    let net = Net::v4();
    net.add("current");
    // host-local before v0.7 wrote the container ID alone; here it appears after our last change.
    std::fs::write(net.store().join("10.1.0.77"), "old-ctr").unwrap();
    std::fs::write(net.store().join("10.1.0.78"), "old-ctr-2").unwrap();
    let check = net.run("CHECK", "old-ctr");
    assert!(check.success(), "CHECK finds the old lease: {}", check.stdout);
    assert!(net.run("DEL", "old-ctr").success());
    assert!(!net.allocated().contains("10.1.0.77"), "{:?}", net.allocated());
    // GC with only "current" valid releases the other old lease, and keeps "current".
    assert!(
        gc(&net, Some(("cni.dev/valid-attachments", json!([{"containerID": "current", "ifname": "eth0"}])))).success()
    );
    assert_eq!(net.allocated().len(), 1, "{:?}", net.allocated());
}

#[test]
fn unsupported_versions_are_code_1_for_every_verb() {
    let net = Net::v4();
    for version in ["2.0.0", "0.4.1", "1.0", "v1.0.0"] {
        for verb in ["ADD", "DEL", "CHECK", "STATUS", "GC"] {
            let out = net.invoke(verb, "c", &net.with("cniVersion", json!(version))).run_here(&bin());
            assert_eq!(out.err_code(), 1, "{version} {verb}: {}", out.stdout);
        }
    }
}
