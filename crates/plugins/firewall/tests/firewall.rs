//! Kernel tests: the built `firewall` binary on a sandbox host whose forward path drops by
//! default (as on hosts with Docker or a strict policy), with containers on two bridges and an
//! "outside" namespace behind an uplink. Traffic shows what the rules do; `iptables-save` and
//! `nft` show what is left. Every address belongs to a namespace the test made.

use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use testkit::{Invocation, Netns, Output, TempDir, in_netns, ip, new_netns, serve_peer_address, tcp_ask};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_firewall"))
}

const REFERENCE: &str = "/usr/lib/cni/firewall";

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Runs a program in `ns` and returns its stdout; panics on failure.
fn run_in(ns: &Netns, program: &str, args: &[&str]) -> String {
    let out = in_netns(Command::new(program).args(args), ns).output().expect(program);
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn filter(ns: &Netns, ipv6: bool) -> String {
    run_in(ns, if ipv6 { "ip6tables-save" } else { "iptables-save" }, &["-t", "filter"])
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

struct Host {
    ns: Netns,
    outside: Netns,
    data: TempDir,
    next: u8,
}

struct Container {
    ns: Netns,
    id: String,
    v4: String,
    prev: Value,
}

impl Host {
    /// br0 (10.10.0.0/24, fd10::/64) and br1 (10.20.0.0/24, fd20::/64), an uplink to `outside`
    /// (198.51.100.0/24, 2001:db8:1::/64) which serves TCP on port 80, and FORWARD dropping.
    fn new() -> Host {
        let ns = new_netns();
        let outside = new_netns();
        ip(&ns, "link set lo up");
        testkit::link_namespaces(&ns, "uplink", "198.51.100.1/24", &outside, "eth0", "198.51.100.2/24");
        ip(&ns, "addr add 2001:db8:1::1/64 dev uplink nodad");
        ip(&outside, "addr add 2001:db8:1::2/64 dev eth0 nodad");
        ip(&outside, "route add default via 198.51.100.1");
        ip(&outside, "-6 route add default via 2001:db8:1::1");
        for (br, n) in [("br0", 10), ("br1", 20)] {
            ip(&ns, &format!("link add {br} type bridge"));
            testkit::set_sysctl(&ns, &format!("net/ipv6/conf/{br}/accept_dad"), "0");
            ip(&ns, &format!("addr add 10.{n}.0.1/24 dev {br}"));
            ip(&ns, &format!("addr add fd{n}::1/64 dev {br} nodad"));
            ip(&ns, &format!("link set {br} up"));
        }
        for sysctl in ["net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"] {
            testkit::set_sysctl(&ns, sysctl, "1");
        }
        serve_peer_address(&outside, sock("[::]:80"));
        Host { ns, outside, data: TempDir::new("firewall"), next: 2 }
    }

    fn forward_policy(&self, policy: &str) {
        run_in(&self.ns, "iptables", &["-P", "FORWARD", policy]);
        run_in(&self.ns, "ip6tables", &["-P", "FORWARD", policy]);
    }

    /// A container on `br` (0 or 1) serving TCP on port 80.
    fn container(&mut self, br: u8) -> Container {
        let n = self.next;
        self.next += 1;
        let net = 10 + 10 * br;
        let ns = new_netns();
        ip(&ns, "link set lo up");
        let veth = format!("vh{n}");
        let mut rtnl = netkit::Rtnl::open_in(&self.ns).unwrap();
        rtnl.create_veth(&netkit::VethPair {
            name: &veth,
            peer_name: "eth0",
            peer_ns: Some(std::os::fd::AsFd::as_fd(&*ns)),
            ..Default::default()
        })
        .unwrap();
        ip(&self.ns, &format!("link set {veth} master br{br} up"));
        testkit::set_sysctl(&ns, "net/ipv6/conf/eth0/accept_dad", "0");
        ip(&ns, &format!("addr add 10.{net}.0.{n}/24 dev eth0"));
        ip(&ns, &format!("addr add fd{net}::{n}/64 dev eth0 nodad"));
        ip(&ns, "link set eth0 up");
        ip(&ns, &format!("route add default via 10.{net}.0.1"));
        ip(&ns, &format!("-6 route add default via fd{net}::1"));
        serve_peer_address(&ns, sock("[::]:80"));
        let prev = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": format!("br{br}")}, {"name": veth}, {"name": "eth0", "sandbox": ns.path()}],
            "ips": [
                {"address": format!("10.{net}.0.{n}/24"), "gateway": format!("10.{net}.0.1"), "interface": 2},
                {"address": format!("fd{net}::{n}/64"), "gateway": format!("fd{net}::1"), "interface": 2}
            ]
        });
        Container { ns, id: format!("ctr{n}"), v4: format!("10.{net}.0.{n}"), prev }
    }

    fn conf(&self, network: &str, prev: Option<&Value>, extra: Value) -> Value {
        let mut conf = json!({"cniVersion": "1.0.0", "name": network, "type": "firewall",
                              "dataDir": self.data.path()});
        if let Some(p) = prev {
            conf["prevResult"] = p.clone();
        }
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        conf
    }

    fn run_with(&self, plugin: &Path, command: &str, c: &Container, conf: &Value) -> Output {
        Invocation::new(command, &c.id, c.ns.path(), "eth0", &conf.to_string()).run(plugin, &self.ns)
    }

    fn run(&self, command: &str, c: &Container, conf: &Value) -> Output {
        self.run_with(&bin(), command, c, conf)
    }

    fn reaches_outside(&self, c: &Container) -> bool {
        tcp_ask(&c.ns, sock("198.51.100.2:80")).is_some()
    }
}

#[test]
fn iptables_rules_let_a_container_out_and_its_replies_in() {
    let mut h = Host::new();
    h.forward_policy("DROP");
    let a = h.container(0);
    let conf = h.conf("net1", Some(&a.prev), json!({"backend": "iptables"}));
    assert!(!h.reaches_outside(&a), "the sandbox's FORWARD policy must drop before ADD");

    assert_eq!(h.run("ADD", &a, &conf).ok(), a.prev, "firewall returns prevResult unchanged");
    assert_eq!(tcp_ask(&a.ns, sock("198.51.100.2:80")).as_deref(), Some(a.v4.as_str()));
    assert!(tcp_ask(&a.ns, sock("[2001:db8:1::2]:80")).is_some(), "IPv6");
    // Only replies come in: a new connection from outside is still dropped, as with the reference.
    assert_eq!(tcp_ask(&h.outside, sock(&format!("{}:80", a.v4))), None);
    assert_eq!(h.run("CHECK", &a, &conf).ok(), Value::Null);

    let saved = filter(&h.ns, false);
    for rule in [
        "-A FORWARD -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD",
        "-A CNI-FORWARD -m comment --comment \"CNI firewall plugin admin overrides\" -j CNI-ADMIN",
        "-A CNI-FORWARD -d 10.10.0.2/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-A CNI-FORWARD -s 10.10.0.2/32 -j ACCEPT",
    ] {
        assert!(saved.contains(rule), "{rule} missing in\n{saved}");
    }
    assert!(filter(&h.ns, true).contains("-A CNI-FORWARD -s fd10::2/128 -j ACCEPT"));

    // DEL without prevResult (a runtime that lost its cache) still removes the rules.
    h.run("DEL", &a, &h.conf("net1", None, json!({"backend": "iptables"}))).ok();
    assert!(!h.reaches_outside(&a));
    for ipv6 in [false, true] {
        let saved = filter(&h.ns, ipv6);
        assert!(!saved.contains("10.10.0.2") && !saved.contains("fd10::2"), "{saved}");
        assert!(saved.contains(":CNI-ADMIN"), "the admin chain stays");
    }
    assert!(h.run("CHECK", &a, &conf).err_code() > 0);
    h.run("DEL", &a, &conf).ok();
}

#[test]
fn the_admin_chain_is_the_operators_and_survives_every_verb() {
    let mut h = Host::new();
    h.forward_policy("DROP");
    let a = h.container(0);
    let b = h.container(0);
    let conf_a = h.conf("net1", Some(&a.prev), json!({"backend": "iptables", "iptablesAdminChainName": "OPS"}));
    let conf_b = h.conf("net1", Some(&b.prev), json!({"backend": "iptables", "iptablesAdminChainName": "OPS"}));
    h.run("ADD", &a, &conf_a).ok();
    // The operator blocks container a from the outside world's port 80.
    run_in(&h.ns, "iptables", &["-A", "OPS", "-s", &a.v4, "-p", "tcp", "--dport", "80", "-j", "DROP"]);
    assert!(!h.reaches_outside(&a), "the admin chain comes before the accepts");
    h.run("ADD", &b, &conf_b).ok();
    assert!(h.reaches_outside(&b));
    h.run("DEL", &b, &conf_b).ok();
    h.run("ADD", &b, &conf_b).ok();
    assert!(!h.reaches_outside(&a), "another ADD or DEL flushed the admin chain");
    let saved = filter(&h.ns, false);
    assert_eq!(saved.matches("-j OPS").count(), 1, "{saved}");
    assert_eq!(saved.matches("-j CNI-FORWARD").count(), 1, "{saved}");
}

#[test]
fn same_bridge_and_isolated_policies_block_other_bridges() {
    let mut h = Host::new();
    let a = h.container(0);
    let a2 = h.container(0);
    let b = h.container(1);
    let extra = |policy: &str| json!({"backend": "iptables", "ingressPolicy": policy});
    h.run("ADD", &a, &h.conf("net0", Some(&a.prev), extra("same-bridge"))).ok();
    h.run("ADD", &a2, &h.conf("net0", Some(&a2.prev), extra("same-bridge"))).ok();
    // br1 is open: its containers still reach br0's (the reference only isolates isolated bridges
    // from each other).
    assert!(tcp_ask(&b.ns, sock(&format!("{}:80", a.v4))).is_some());
    h.run("ADD", &b, &h.conf("net1", Some(&b.prev), extra("isolated"))).ok();
    assert_eq!(tcp_ask(&b.ns, sock(&format!("{}:80", a.v4))), None, "br1 -> br0");
    assert_eq!(tcp_ask(&a.ns, sock(&format!("{}:80", b.v4))), None, "br0 -> br1");
    // The outside world is not another bridge.
    assert!(tcp_ask(&h.outside, sock(&format!("{}:80", a.v4))).is_some());
    assert!(h.reaches_outside(&a) && h.reaches_outside(&b));
    let saved = filter(&h.ns, false);
    assert!(saved.contains("-A CNI-ISOLATION-STAGE-1 -i br1 -o br1 -m comment --comment \"CNI firewall plugin rules (ingressPolicy: isolated)\" -j DROP"), "{saved}");
    assert_eq!(saved.matches("-j CNI-ISOLATION-STAGE-1").count(), 1, "{saved}");
    assert_eq!(saved.matches("-j RETURN").count(), 2, "{saved}");
    // Like the reference, DEL leaves a bridge's isolation: other containers may still use it.
    h.run("DEL", &a, &h.conf("net0", None, extra("same-bridge"))).ok();
    assert_eq!(tcp_ask(&b.ns, sock(&format!("{}:80", a2.v4))), None);
}

#[test]
fn a_bad_policy_or_a_missing_bridge_changes_nothing() {
    let mut h = Host::new();
    let a = h.container(0);
    let bad = h.conf("net1", Some(&a.prev), json!({"backend": "iptables", "ingressPolicy": "closed"}));
    assert_eq!(h.run("ADD", &a, &bad).err_code(), 7);
    let mut prev = a.prev.clone();
    prev["interfaces"] = json!([]);
    let no_bridge = h.conf("net1", Some(&prev), json!({"backend": "iptables", "ingressPolicy": "same-bridge"}));
    assert_eq!(h.run("ADD", &a, &no_bridge).err_code(), 7);
    let no_prev = h.conf("net1", None, json!({"backend": "iptables"}));
    assert_eq!(h.run("ADD", &a, &no_prev).err_code(), 7);
    let mut old = h.conf("net1", Some(&a.prev), json!({"backend": "iptables"}));
    old["cniVersion"] = json!("0.3.1");
    let out = h.run("ADD", &a, &old);
    assert_eq!(out.err_code(), 1, "{}", out.stdout);
    assert!(!filter(&h.ns, false).contains("CNI-"), "{}", filter(&h.ns, false));
    assert_eq!(std::fs::read_dir(h.data.path().join("addr")).map(|d| d.count()).unwrap_or(0), 0);
    // DEL cleans up whatever the rest of its config says.
    h.run("ADD", &a, &h.conf("net1", Some(&a.prev), json!({"backend": "iptables"}))).ok();
    h.run("DEL", &a, &bad).ok();
    assert!(!filter(&h.ns, false).contains("10.10.0.2"), "{}", filter(&h.ns, false));
}

#[test]
fn either_implementation_deletes_what_the_other_added() {
    let mut h = Host::new();
    h.forward_policy("DROP");
    let a = h.container(0);
    // The reference plugin on this machine (1.1.1) knows same-bridge but not isolated.
    let conf = h.conf("net1", Some(&a.prev), json!({"backend": "iptables", "ingressPolicy": "same-bridge"}));
    h.run("ADD", &a, &conf).ok();
    h.run_with(Path::new(REFERENCE), "CHECK", &a, &conf).ok();
    h.run_with(Path::new(REFERENCE), "DEL", &a, &conf).ok();
    assert!(!filter(&h.ns, false).contains("10.10.0.2"), "{}", filter(&h.ns, false));
    assert!(!h.reaches_outside(&a));

    h.run_with(Path::new(REFERENCE), "ADD", &a, &conf).ok();
    assert!(h.reaches_outside(&a));
    // Ours on top of the reference's state: nothing added twice, CHECK agrees.
    h.run("ADD", &a, &conf).ok();
    h.run("CHECK", &a, &conf).ok();
    let saved = filter(&h.ns, false);
    assert_eq!(saved.matches("-s 10.10.0.2/32 -j ACCEPT").count(), 1, "{saved}");
    assert_eq!(saved.matches("-j CNI-FORWARD").count(), 1, "{saved}");
    h.run("DEL", &a, &conf).ok();
    assert!(!filter(&h.ns, false).contains("10.10.0.2"));
    assert!(!filter(&h.ns, true).contains("fd10::2"));
    assert!(!h.reaches_outside(&a));
}

#[test]
fn legacy_iptables_is_used_when_it_is_the_systems_choice() {
    let mut h = Host::new();
    let probe = in_netns(Command::new("iptables-legacy-save").args(["-t", "filter"]), &h.ns).output().unwrap();
    if !probe.status.success() {
        // The VM lane's guest cannot load ip_tables (its module tree has what the lane needs).
        eprintln!("skipped: legacy x_tables unusable here: {}", String::from_utf8_lossy(&probe.stderr).trim());
        return;
    }
    let a = h.container(0);
    // A PATH whose iptables tools are the legacy ones, as update-alternatives would set them.
    let tools = TempDir::new("legacy-tools");
    for (name, target) in [
        ("iptables-save", "iptables-legacy-save"),
        ("iptables-restore", "iptables-legacy-restore"),
        ("ip6tables-save", "ip6tables-legacy-save"),
        ("ip6tables-restore", "ip6tables-legacy-restore"),
    ] {
        std::os::unix::fs::symlink(format!("/usr/sbin/{target}"), tools.path().join(name)).unwrap();
    }
    let path = format!("{}:{}", tools.path().display(), std::env::var("PATH").unwrap_or_default());
    let conf = h.conf("net1", Some(&a.prev), json!({"backend": "iptables"}));
    let inv = |cmd: &str, conf: &Value| {
        Invocation::new(cmd, &a.id, a.ns.path(), "eth0", &conf.to_string()).var("PATH", Some(&path)).run(&bin(), &h.ns)
    };
    inv("ADD", &conf).ok();
    let legacy = run_in(&h.ns, "iptables-legacy-save", &["-t", "filter"]);
    assert!(legacy.contains("-A CNI-FORWARD -s 10.10.0.2/32 -j ACCEPT"), "{legacy}");
    assert!(!filter(&h.ns, false).contains("CNI-FORWARD"), "nothing in iptables-nft");
    inv("CHECK", &conf).ok();
    inv("DEL", &h.conf("net1", None, json!({"backend": "iptables"}))).ok();
    let legacy = run_in(&h.ns, "iptables-legacy-save", &["-t", "filter"]);
    assert!(!legacy.contains("10.10.0.2"), "{legacy}");
}

#[test]
fn gc_removes_attachments_that_are_no_longer_valid() {
    let mut h = Host::new();
    h.forward_policy("DROP");
    let a = h.container(0);
    let b = h.container(0);
    for c in [&a, &b] {
        h.run("ADD", c, &h.conf("net1", Some(&c.prev), json!({"backend": "iptables"}))).ok();
    }
    let mut gc = h.conf("net1", None, json!({"backend": "iptables"}));
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": b.id, "ifname": "eth0"}]);
    Invocation::new("GC", "", "", "", &gc.to_string())
        .var("CNI_CONTAINERID", None)
        .var("CNI_NETNS", None)
        .var("CNI_IFNAME", None)
        .run(&bin(), &h.ns)
        .ok();
    assert!(!h.reaches_outside(&a));
    assert!(h.reaches_outside(&b));
    let saved = filter(&h.ns, false);
    assert!(!saved.contains("10.10.0.2/32") && saved.contains("10.10.0.3/32"), "{saved}");
}

#[test]
fn concurrent_adds_on_a_fresh_host_make_one_set_of_chains() {
    let mut h = Host::new();
    let containers: Vec<Container> = (0..6).map(|_| h.container(0)).collect();
    let children: Vec<_> = containers
        .iter()
        .map(|c| {
            let conf = h.conf("net1", Some(&c.prev), json!({"backend": "iptables", "ingressPolicy": "same-bridge"}));
            Invocation::new("ADD", &c.id, c.ns.path(), "eth0", &conf.to_string()).spawn(&bin(), Some(&h.ns))
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    }
    let saved = filter(&h.ns, false);
    assert_eq!(saved.matches("-j CNI-FORWARD").count(), 1, "{saved}");
    assert_eq!(saved.matches("-j CNI-ADMIN").count(), 1, "{saved}");
    assert_eq!(saved.matches("-j CNI-ISOLATION-STAGE-1").count(), 1, "{saved}");
    assert_eq!(saved.matches(" -j ACCEPT").count(), 12, "{saved}");
}

#[test]
fn status_reports_an_unusable_backend() {
    let h = Host::new();
    let mut conf = h.conf("net1", None, json!({"backend": "firewalld"}));
    conf["cniVersion"] = json!("1.1.0");
    let status = |conf: &Value| {
        Invocation::new("STATUS", "", "", "", &conf.to_string())
            .var("DBUS_SYSTEM_BUS_ADDRESS", Some("unix:path=/nonexistent/bus"))
            .run(&bin(), &h.ns)
    };
    assert_eq!(status(&conf).err_code(), 50);
    conf["backend"] = json!("iptables");
    status(&conf).ok();
    // No firewalld on the bus: the empty backend means iptables, as with the reference.
    conf["backend"] = json!("");
    status(&conf).ok();
}

#[test]
fn about_and_version_say_what_nerdctl_parses() {
    let out = Command::new(bin()).env_clear().output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().next().unwrap_or_default();
    let version = first.strip_prefix("CNI firewall plugin v").expect(first);
    let parts: Vec<u32> = version.split('.').map(|p| p.parse().unwrap()).collect();
    assert!(parts >= vec![1, 1, 0], "nerdctl needs >= 1.1.0, got {version}");
}

fn nft_table(ns: &Netns) -> String {
    let out = in_netns(Command::new("nft").args(["list", "table", "inet", "cni_firewall"]), ns).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn nftables_backend_admin_chain_and_identity() {
    let mut h = Host::new();
    let a = h.container(0);
    let b = h.container(0);
    let nft = |c: &Container| h.conf("net1", Some(&c.prev), json!({"backend": "nftables"}));
    assert_eq!(h.run("ADD", &a, &nft(&a)).ok(), a.prev);
    h.run("CHECK", &a, &nft(&a)).ok();
    let table = nft_table(&h.ns);
    assert!(table.contains("chain admin {"), "{table}");
    assert!(table.contains("10.10.0.2") && table.contains("fd10::2"), "{table}");
    // The operator's rule in the admin chain comes before the accepts, and is a final drop.
    run_in(
        &h.ns,
        "nft",
        &["add", "rule", "inet", "cni_firewall", "admin", "ip", "saddr", &a.v4, "tcp", "dport", "80", "drop"],
    );
    assert!(!h.reaches_outside(&a));
    h.run("ADD", &b, &nft(&b)).ok();
    h.run("DEL", &b, &h.conf("net1", None, json!({"backend": "nftables"}))).ok();
    assert!(!h.reaches_outside(&a), "an ADD or DEL flushed the admin chain");
    assert!(h.reaches_outside(&b));
    let table = nft_table(&h.ns);
    assert!(!table.contains("10.10.0.3"), "{table}");
    // DEL without prevResult or record: found by identity in the table.
    std::fs::remove_dir_all(h.data.path()).unwrap();
    h.run("DEL", &a, &h.conf("net1", None, json!({"backend": "nftables"}))).ok();
    let table = nft_table(&h.ns);
    assert!(!table.contains("jump fw-") && !table.contains("fd10::2") && !table.contains("chain fw-"), "{table}");
    assert!(table.contains("tcp dport 80 drop"), "the admin chain keeps the operator's rule:\n{table}");
    assert!(h.run("CHECK", &a, &nft(&a)).err_code() > 0);
    h.run("DEL", &a, &nft(&a)).ok();
}

#[test]
fn nftables_backend_isolates_bridges() {
    let mut h = Host::new();
    let a = h.container(0);
    let a2 = h.container(0);
    let b = h.container(1);
    let conf = |c: &Container, net: &str, policy: &str| {
        h.conf(net, Some(&c.prev), json!({"backend": "nftables", "ingressPolicy": policy}))
    };
    h.run("ADD", &a, &conf(&a, "net0", "same-bridge")).ok();
    h.run("ADD", &a2, &conf(&a2, "net0", "same-bridge")).ok();
    assert!(tcp_ask(&b.ns, sock(&format!("{}:80", a.v4))).is_some(), "br1 is not isolated yet");
    h.run("ADD", &b, &conf(&b, "net1", "isolated")).ok();
    assert_eq!(tcp_ask(&b.ns, sock(&format!("{}:80", a.v4))), None, "br1 -> br0");
    assert_eq!(tcp_ask(&a.ns, sock(&format!("{}:80", b.v4))), None, "br0 -> br1");
    assert!(tcp_ask(&h.outside, sock(&format!("{}:80", a.v4))).is_some(), "outside -> br0");
    assert!(h.reaches_outside(&a) && h.reaches_outside(&b));
    // Routed traffic within the same bridge (through the host's address): same-bridge allows it.
    assert!(testkit::ping(&a.ns, "10.10.0.1"));
    assert!(iptables_untouched(&h), "the nftables backend must not write iptables rules");
}

fn iptables_untouched(h: &Host) -> bool {
    !filter(&h.ns, false).contains("CNI-") && !filter(&h.ns, true).contains("CNI-")
}

#[test]
fn nftables_add_and_del_run_no_program() {
    let mut h = Host::new();
    let a = h.container(0);
    let b = h.container(0);
    let conf =
        |c: &Container| h.conf("net1", Some(&c.prev), json!({"backend": "nftables", "ingressPolicy": "same-bridge"}));
    // The first ADD creates the table (through nft); later ones must not need it.
    h.run("ADD", &a, &conf(&a)).ok();
    let tools = TempDir::new("broken-nft");
    let fake = tools.path().join("nft");
    std::fs::write(&fake, "#!/bin/sh\necho 'nft must not run' >&2\nexit 1\n").unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(&mut std::fs::metadata(&fake).unwrap().permissions(), 0o755);
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", tools.path().display(), std::env::var("PATH").unwrap_or_default());
    let run = |cmd: &str, c: &Container, conf: &Value| {
        Invocation::new(cmd, &c.id, c.ns.path(), "eth0", &conf.to_string()).var("PATH", Some(&path)).run(&bin(), &h.ns)
    };
    run("ADD", &b, &conf(&b)).ok();
    assert!(nft_table(&h.ns).contains("10.10.0.3"));
    run("DEL", &b, &h.conf("net1", None, json!({"backend": "nftables"}))).ok();
    assert!(!nft_table(&h.ns).contains("10.10.0.3"), "{}", nft_table(&h.ns));
    // DEL of an attachment that has nothing here is found gone without nft too.
    run("DEL", &b, &h.conf("net1", None, json!({"backend": "nftables"}))).ok();
}

#[test]
fn nftables_gc_collects_by_identity() {
    let mut h = Host::new();
    let a = h.container(0);
    let b = h.container(0);
    for c in [&a, &b] {
        h.run("ADD", c, &h.conf("net1", Some(&c.prev), json!({"backend": "nftables"}))).ok();
    }
    // Records lost: GC still finds the chains by the network's hash.
    std::fs::remove_dir_all(h.data.path()).unwrap();
    let mut gc = h.conf("net1", None, json!({"backend": "nftables"}));
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": b.id, "ifname": "eth0"}]);
    Invocation::new("GC", "", "", "", &gc.to_string())
        .var("CNI_CONTAINERID", None)
        .var("CNI_NETNS", None)
        .var("CNI_IFNAME", None)
        .run(&bin(), &h.ns)
        .ok();
    let table = nft_table(&h.ns);
    assert!(!table.contains("10.10.0.2") && table.contains("10.10.0.3"), "{table}");
    // Someone flushed the base chain: GC repairs it.
    run_in(&h.ns, "nft", &["flush", "chain", "inet", "cni_firewall", "forward"]);
    assert!(h.run("CHECK", &b, &h.conf("net1", Some(&b.prev), json!({"backend": "nftables"}))).err_code() > 0);
    Invocation::new("GC", "", "", "", &gc.to_string())
        .var("CNI_CONTAINERID", None)
        .var("CNI_NETNS", None)
        .var("CNI_IFNAME", None)
        .run(&bin(), &h.ns)
        .ok();
    h.run("CHECK", &b, &h.conf("net1", Some(&b.prev), json!({"backend": "nftables"}))).ok();
}

/// `dns: {}` is printed by Go for an empty DNS struct; whether ours prints it is the protocol
/// crate's choice for every plugin, so it is left out of the comparison.
fn without_empty_dns(mut v: Value) -> Value {
    if v.get("dns").is_some_and(|d| d.as_object().is_some_and(|o| o.is_empty())) {
        v.as_object_mut().unwrap().remove("dns");
    }
    v
}

#[test]
fn results_match_the_reference_at_every_version_it_supports() {
    let mut h = Host::new();
    let a = h.container(0);
    for version in ["0.4.0", "1.0.0", "1.1.0"] {
        let mut prev = a.prev.clone();
        prev["cniVersion"] = json!(version);
        let mut conf = h.conf("net1", Some(&prev), json!({"backend": "iptables"}));
        conf["cniVersion"] = json!(version);
        let ours = without_empty_dns(h.run("ADD", &a, &conf).ok());
        assert_eq!(ours["cniVersion"], version);
        let addresses =
            |r: &Value| r["ips"].as_array().unwrap().iter().map(|i| i["address"].clone()).collect::<Vec<_>>();
        assert_eq!(addresses(&ours), addresses(&prev), "{version}");
        if version != "1.1.0" {
            // Debian's reference is 1.1.1, which speaks up to 1.0.0.
            let reference = without_empty_dns(h.run_with(Path::new(REFERENCE), "ADD", &a, &conf).ok());
            assert_eq!(ours, reference, "{version}");
        }
        h.run("DEL", &a, &conf).ok();
    }
    for version in ["0.1.0", "0.2.0", "0.3.0", "0.3.1"] {
        let mut conf = h.conf("net1", Some(&a.prev), json!({"backend": "iptables"}));
        conf["cniVersion"] = json!(version);
        conf["prevResult"] = json!({"cniVersion": version, "ips": [{"version": "4", "address": "10.10.0.2/24"}]});
        for plugin in [bin(), PathBuf::from(REFERENCE)] {
            for command in ["ADD", "DEL"] {
                let out = h.run_with(&plugin, command, &a, &conf);
                assert_eq!(out.err_code(), 1, "{} {command} at {version}: {}", plugin.display(), out.stdout);
            }
        }
    }
}

#[test]
fn concurrent_adds_and_dels_with_nftables_leave_one_table_and_nothing_behind() {
    let mut h = Host::new();
    let containers: Vec<Container> = (0..6).map(|_| h.container(0)).collect();
    let spawn_all = |command: &str, with_prev: bool| {
        let children: Vec<_> = containers
            .iter()
            .map(|c| {
                let conf = h.conf(
                    "net1",
                    with_prev.then_some(&c.prev),
                    json!({"backend": "nftables", "ingressPolicy": "same-bridge"}),
                );
                Invocation::new(command, &c.id, c.ns.path(), "eth0", &conf.to_string()).spawn(&bin(), Some(&h.ns))
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{command}: {}", String::from_utf8_lossy(&out.stdout));
        }
    };
    spawn_all("ADD", true);
    let table = nft_table(&h.ns);
    assert_eq!(table.matches("chain fw-").count(), 6, "{table}");
    assert_eq!(table.matches("jump admin").count(), 1, "{table}");
    spawn_all("DEL", false);
    let table = nft_table(&h.ns);
    assert!(!table.contains("chain fw-") && !table.contains("10.10.0."), "{table}");
}

#[test]
fn a_second_add_of_an_attachment_replaces_what_the_first_installed() {
    let mut h = Host::new();
    let a = h.container(0);
    let mut moved = a.prev.clone();
    moved["ips"] = json!([{"address": "10.10.0.99/24", "interface": 2}]);
    for backend in ["iptables", "nftables"] {
        h.run("ADD", &a, &h.conf("net1", Some(&a.prev), json!({"backend": backend}))).ok();
        h.run("ADD", &a, &h.conf("net1", Some(&moved), json!({"backend": backend}))).ok();
        let state = format!("{}\n{}", filter(&h.ns, false), nft_table(&h.ns));
        assert!(!state.contains("10.10.0.2") && state.contains("10.10.0.99"), "{backend}:\n{state}");
    }
    // The backend changed between the ADDs: the nftables entries went, the iptables ones came.
    h.run("ADD", &a, &h.conf("net1", Some(&moved), json!({"backend": "iptables"}))).ok();
    assert!(!nft_table(&h.ns).contains("10.10.0.99"));
    assert!(filter(&h.ns, false).contains("-A CNI-FORWARD -s 10.10.0.99/32 -j ACCEPT"));
    h.run("DEL", &a, &h.conf("net1", None, json!({}))).ok();
    assert!(!filter(&h.ns, false).contains("10.10.0.99"));
}

#[test]
fn a_failed_panicking_or_killed_add_leaves_nothing_a_del_cannot_find() {
    let mut h = Host::new();
    let a = h.container(0);
    let conf = h.conf("net1", Some(&a.prev), json!({"backend": "iptables"}));
    let nft_conf = h.conf("net1", Some(&a.prev), json!({"backend": "nftables"}));
    let with_fault = |fault: &str, conf: &Value| {
        Invocation::new("ADD", &a.id, a.ns.path(), "eth0", &conf.to_string())
            .var("CNI_RS_FAULT", Some(fault))
            .run(&bin(), &h.ns)
    };
    let clean = |h: &Host| {
        let state = format!("{}\n{}\n{}", filter(&h.ns, false), filter(&h.ns, true), nft_table(&h.ns));
        let records = std::fs::read_dir(h.data.path())
            .map(|d| d.filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("fw-")).count())
            .unwrap_or(0);
        !state.contains("10.10.0.2") && !state.contains("fd10::2") && !state.contains("chain fw-") && records == 0
    };
    for (fault, conf) in [
        ("firewall:added-IPv6=fail", &conf),
        ("firewall:added-IPv6=panic", &conf),
        ("firewall:added-nftables=fail", &nft_conf),
        ("firewall:added-nftables=panic", &nft_conf),
    ] {
        let out = with_fault(fault, conf);
        assert!(out.err_code() > 0, "{fault}: {}", out.stdout);
        assert!(clean(&h), "{fault} left state behind");
    }
    // Killed half way (the runtime's timeout): the record names what is there, and a DEL without
    // prevResult removes it.
    for (fault, conf) in [("firewall:added-IPv4=kill", &conf), ("firewall:added-nftables=kill", &nft_conf)] {
        let out = with_fault(fault, conf);
        assert_eq!(out.exit_code, -1, "{fault}: killed");
        assert!(!clean(&h), "{fault}: nothing was added before the kill");
        h.run("DEL", &a, &h.conf("net1", None, json!({}))).ok();
        assert!(clean(&h), "{fault}: DEL left state behind");
    }
}

#[test]
fn a_stale_del_does_not_cut_off_the_container_that_now_holds_the_address() {
    let mut h = Host::new();
    h.forward_policy("DROP");
    let a = h.container(0);
    let conf = h.conf("net1", Some(&a.prev), json!({"backend": "iptables"}));
    let as_id = |command: &str, id: &str, conf: &Value| {
        Invocation::new(command, id, a.ns.path(), "eth0", &conf.to_string()).run(&bin(), &h.ns)
    };
    // An old container had the address; its DEL never came. A new one got the address since.
    as_id("ADD", "old", &conf).ok();
    as_id("ADD", "new", &conf).ok();
    as_id("DEL", "old", &conf).ok();
    assert!(h.reaches_outside(&a), "the old attachment's DEL removed the new one's rules");
    // Its record lost too (the reference added it): prevResult alone still cannot take them.
    as_id("ADD", "older", &conf).ok();
    as_id("ADD", "new", &conf).ok();
    for entry in std::fs::read_dir(h.data.path()).unwrap() {
        let path = entry.unwrap().path();
        if std::fs::read_to_string(&path).is_ok_and(|t| t.contains("\"older\"")) {
            std::fs::remove_file(path).unwrap();
        }
    }
    as_id("DEL", "older", &conf).ok();
    assert!(h.reaches_outside(&a));
    as_id("DEL", "new", &h.conf("net1", None, json!({}))).ok();
    assert!(!h.reaches_outside(&a));
    assert!(!filter(&h.ns, false).contains("10.10.0.2"));
}

/// A runtime's timeout SIGKILLs the plugin, not the `iptables-restore` it started: that one
/// commits its batch after the plugin is gone. The DEL that follows must not read the table
/// before the batch is in (it would find nothing, drop the record, and the late rules would stay
/// with no record naming them: the soak's leftover CNI-FORWARD accept). Here `iptables-restore`
/// is slow on purpose (a wrapper that waits a second before running the real one).
#[test]
fn a_del_after_a_killed_add_removes_the_rules_its_orphaned_iptables_restore_adds_later() {
    let mut h = Host::new();
    let a = h.container(0);
    let slow = testkit::SlowRestore::new("1");
    let conf = h.conf("net1", Some(&a.prev), json!({"backend": "iptables"}));
    let add = Invocation::new("ADD", &a.id, a.ns.path(), "eth0", &conf.to_string())
        .var("PATH", Some(slow.path()))
        .spawn(&bin(), Some(&h.ns));
    slow.kill_once_started(add);

    // The runtime's DEL after the failed ADD, without prevResult, with the system's tools.
    h.run("DEL", &a, &h.conf("net1", None, json!({"backend": "iptables"}))).ok();
    slow.wait_done();
    let saved = filter(&h.ns, false);
    assert!(!saved.contains("10.10.0.2"), "the killed ADD's rules outlived its DEL:\n{saved}");
    let records = std::fs::read_dir(h.data.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("fw-"))
        .count();
    assert_eq!(records, 0);
}
