//! Kernel tests: the built `dummy` binary (with the built `static` and `host-local` as IPAM), run as
//! a runtime runs it, in a sandbox "host" namespace with container namespaces. Build the IPAM
//! plugins first (`cargo build -p static -p host-local`).
//!
//! They need the `dummy` link type (CONFIG_DUMMY), which this machine's kernel lacks: each test
//! that needs it then prints "skipped: kernel lacks ..." and passes, unless
//! `CNI_RS_REQUIRE_KERNEL_FEATURES=1`, which makes a missing feature a failure. The VM lane
//! (`make test-vm`, Debian's 6.1 kernel under qemu) sets it, so they never skip silently there.

use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use testkit::{Invocation, Netns, Output, TempDir, in_netns, ip, ip_json, new_netns};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dummy"))
}

fn kernel_has_dummy() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        let probe = new_netns();
        in_netns(Command::new("ip").args(["link", "add", "probe0", "type", "dummy"]), &probe)
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Whether the calling test can run on this kernel; says "skipped:" on stderr when not, or fails
/// the test under `CNI_RS_REQUIRE_KERNEL_FEATURES=1`.
fn kernel_ready() -> bool {
    if kernel_has_dummy() {
        return true;
    }
    let test = std::thread::current().name().unwrap_or("?").to_string();
    assert!(
        std::env::var("CNI_RS_REQUIRE_KERNEL_FEATURES").as_deref() != Ok("1"),
        "kernel lacks the dummy link type (and CNI_RS_REQUIRE_KERNEL_FEATURES=1 forbids skipping {test})"
    );
    let _ = writeln!(std::io::stderr(), "skipped: kernel lacks the dummy link type ({test})");
    false
}

fn run(host: &Netns, command: &str, netns: &str, conf: &Value) -> Output {
    Invocation::new(command, "ctr-dummy", netns, "dummy0", &conf.to_string()).run(&bin(), host)
}

fn static_conf() -> Value {
    json!({"cniVersion": "1.1.0", "name": "dummies", "type": "dummy",
           "ipam": {"type": "static", "addresses": [{"address": "10.95.0.5/24", "gateway": "10.95.0.1"},
                                                    {"address": "fd95::5/64"}],
                    "routes": [{"dst": "192.168.0.0/16"}]}})
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
fn a_dummy_holding_the_ipam_addresses() {
    if !kernel_ready() {
        return;
    }
    let host = new_netns();
    let c = new_netns();
    let conf = static_conf();
    let r = run(&host, "ADD", c.path(), &conf).ok();
    let link = &ip_json(&c, "-d link show dummy0")[0];
    assert_eq!(link["linkinfo"]["info_kind"], "dummy", "{link}");
    assert_eq!(r["interfaces"], json!([{"name": "dummy0", "mac": link["address"], "sandbox": c.path()}]));
    assert_eq!(r["ips"][0], json!({"address": "10.95.0.5/24", "gateway": "10.95.0.1", "interface": 0}));
    let addrs = testkit::addresses(&c, "dummy0");
    assert!(addrs.contains(&"10.95.0.5/24".to_string()) && addrs.contains(&"fd95::5/64".to_string()), "{addrs:?}");
    assert!(ip(&c, "route show").contains("192.168.0.0/16 via 10.95.0.1 dev dummy0"));
    assert!(only_lo(&host), "nothing in the host");

    assert!(run(&host, "CHECK", c.path(), &with_prev(&conf, &r)).success());
    ip(&c, "route del 192.168.0.0/16");
    assert!(!run(&host, "CHECK", c.path(), &with_prev(&conf, &r)).success());

    assert!(run(&host, "DEL", c.path(), &conf).success());
    assert!(only_lo(&c));
    assert!(run(&host, "DEL", c.path(), &conf).success());
    let gone = c.path().to_string();
    c.remove();
    assert!(run(&host, "DEL", &gone, &conf).success());
}

#[test]
fn bad_input_and_failures_leave_nothing() {
    // Refused before the kernel is asked: runs on any kernel.
    let host = new_netns();
    let c = new_netns();
    let out = run(&host, "ADD", c.path(), &json!({"cniVersion": "1.0.0", "name": "d", "type": "dummy"}));
    assert_eq!(out.err_code(), 7, "{}", out.stdout);
    assert_eq!(out.json()["msg"], "dummy interface requires an IPAM configuration");
    assert!(only_lo(&c));
    if !kernel_ready() {
        return;
    }
    // IPAM fails (host-local out of addresses): the link goes too.
    let store = TempDir::new("dummy-ipam");
    let conf = json!({"cniVersion": "1.0.0", "name": "full", "type": "dummy",
        "ipam": {"type": "host-local", "dataDir": store.path().display().to_string(), "ranges": [[{"subnet": "10.96.0.0/30"}]]}});
    let first = new_netns();
    run(&host, "ADD", first.path(), &conf).ok();
    let out = run(&host, "ADD", c.path(), &conf);
    assert_eq!(out.exit_code, 1, "{}", out.stdout);
    assert!(only_lo(&c));
    // A gateway the kernel cannot route through: the address and the link go, and the
    // allocation with them.
    let mut bad_gw = conf.clone();
    bad_gw["ipam"]["routes"] = json!([{"dst": "0.0.0.0/0", "gw": "10.97.0.1"}]);
    assert_eq!(run(&host, "DEL", first.path(), &conf).exit_code, 0);
    let out = run(&host, "ADD", c.path(), &bad_gw);
    assert_eq!(out.exit_code, 1, "{}", out.stdout);
    assert!(only_lo(&c));
    assert!(testkit::host_local_leftovers(&store.path().join("full")).iter().all(|l| !l.starts_with("address")));
    // An interface name already taken.
    ip(&c, "link add dummy0 type dummy");
    let out = run(&host, "ADD", c.path(), &static_conf());
    assert!(out.stdout.contains("already exists"), "{}", out.stdout);
}

/// Kill injection: SIGKILL at the steps of ADD after which something exists (the link; the
/// link and the IPAM result; the configured link), then DEL without a result, as a runtime does
/// after a failed ADD: nothing is left, and the next ADD works. (Few steps: this runs in the VM
/// lane, under emulation.)
#[test]
fn a_kill_during_add_is_cleaned_up_by_del() {
    if !kernel_ready() {
        return;
    }
    let host = new_netns();
    let c = new_netns();
    let conf = static_conf();
    for step in ["dummy:link created", "dummy:delegate static done", "dummy:configured"] {
        let out = Invocation::new("ADD", "ctr-dummy", c.path(), "dummy0", &conf.to_string())
            .var("CNI_RS_FAULT", Some(&format!("{step}=kill")))
            .run(&bin(), &host);
        assert!(!out.success(), "{step}: not killed");
        assert!(!only_lo(&c), "{step}: the kill left nothing for DEL to do");
        assert!(run(&host, "DEL", c.path(), &conf).success());
        assert!(only_lo(&c), "after DEL, killed at {step}");
    }
    run(&host, "ADD", c.path(), &conf).ok();
    assert!(run(&host, "DEL", c.path(), &conf).success());
    assert!(only_lo(&c));
}
