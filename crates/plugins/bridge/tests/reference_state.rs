//! Kernel tests: our DEL and GC remove the reference plugins' firewall state of the same
//! attachment, found by identity (issue 13, switching a node live). Debian only ships the
//! reference 1.1.x (iptables, covered by conformance/scenarios/45-switch.sh with the real
//! binaries); the nftables shapes of upstream 1.6 to 1.9.1 are installed here from fixtures
//! written after upstream's source (pkg/ip/ipmasq_nftables_linux.go, pkg/link/spoofcheck.go,
//! plugins/meta/portmap/portmap_nftables.go).

use serde_json::json;
use std::ffi::OsStr;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use testkit::{Invocation, Netns, in_netns, new_netns, nft_ruleset};

fn bridge() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bridge"))
}

fn hash(text: &str, len: usize) -> String {
    firewall::identity::hash_hex(text, len)
}

/// The reference's nftables masquerade comment of an attachment.
fn masq_comment(network: &str, ifname: &str, cid: &str) -> String {
    format!("{}-{}, net: {network}, if: {ifname}, id: {cid}", hash(network, 16), hash(&format!("{ifname}:{cid}"), 16))
}

/// Upstream 1.9.1's nftables state for ctr-a and ctr-b on network "ref" and ctr-c on "other":
/// ipMasq (nftables backend), macspoofchk, and portmap (nftables backend).
fn fixture() -> String {
    let rule = |net: &str, cid: &str, ip: &str| {
        format!(
            "add rule inet cni_plugins_masquerade masq_checks ip saddr == {ip} ip daddr != 10.20.0.0/24 masquerade comment \"{}\"\n",
            masq_comment(net, "eth0", cid)
        )
    };
    let mut f = String::from(
        "add table inet cni_plugins_masquerade\n\
         add chain inet cni_plugins_masquerade masq_checks\n\
         add chain inet cni_plugins_masquerade postrouting { type nat hook postrouting priority srcnat; }\n\
         add rule inet cni_plugins_masquerade postrouting ip daddr == 224.0.0.0/4 return\n\
         add rule inet cni_plugins_masquerade postrouting ip6 daddr == ff00::/8 return\n\
         add rule inet cni_plugins_masquerade postrouting goto masq_checks\n",
    );
    f += &rule("ref", "ctr-a", "10.20.0.5");
    f += &rule("ref", "ctr-b", "10.20.0.6");
    f += &rule("other", "ctr-c", "10.20.0.7");
    f += "add table bridge nat\n\
          add chain bridge nat PREROUTING { type filter hook prerouting priority -300; }\n";
    for (cid, port, mac) in [("ctr-a", "veth-a", "02:00:00:00:00:0a"), ("ctr-b", "veth-b", "02:00:00:00:00:0b")] {
        let chain = format!("cni-br-iface-{cid}-eth0");
        f += &format!(
            "add chain bridge nat {chain}\n\
             add chain bridge nat {chain}-mac\n\
             add rule bridge nat PREROUTING iifname {port} jump {chain} comment \"macspoofchk-{cid}-eth0\"\n\
             add rule bridge nat {chain} jump {chain}-mac comment \"macspoofchk-{cid}-eth0\"\n\
             add rule bridge nat {chain}-mac ether saddr {mac} return comment \"macspoofchk-{cid}-eth0\"\n\
             add rule bridge nat {chain}-mac drop comment \"macspoofchk-{cid}-eth0\"\n"
        );
    }
    f += "add table ip cni_hostport\n\
          add chain ip cni_hostport hostports\n\
          add chain ip cni_hostport hostip_hostports\n\
          add chain ip cni_hostport hostports_all\n\
          add chain ip cni_hostport prerouting { type nat hook prerouting priority dstnat; }\n\
          add chain ip cni_hostport masquerading { type nat hook postrouting priority srcnat; }\n\
          add rule ip cni_hostport prerouting fib daddr type local jump hostports_all\n\
          add rule ip cni_hostport hostports_all jump hostip_hostports\n\
          add rule ip cni_hostport hostports_all jump hostports\n\
          add rule ip cni_hostport hostports udp dport 5353 dnat to 10.20.0.5:53 comment \"ctr-a\"\n\
          add rule ip cni_hostport hostports ip daddr 192.0.2.1 tcp dport 8080 dnat to 10.20.0.5:80 comment \"ctr-a\"\n\
          add rule ip cni_hostport hostports tcp dport 8081 dnat to 10.20.0.6:80 comment \"ctr-b\"\n\
          add rule ip cni_hostport masquerading ip saddr 10.20.0.5 ip daddr 10.20.0.5 masquerade comment \"ctr-a\"\n\
          add rule ip cni_hostport masquerading ip saddr 10.20.0.6 ip daddr 10.20.0.6 masquerade comment \"ctr-b\"\n\
          add table ip6 cni_hostport\n\
          add chain ip6 cni_hostport hostports\n\
          add rule ip6 cni_hostport hostports tcp dport 8080 dnat to [fd00::5]:80 comment \"ctr-a\"\n";
    f
}

fn load(ns: &Netns, script: &str) {
    let mut child =
        in_netns(Command::new("nft").args(["-f", "-"]), ns).stdin(Stdio::piped()).spawn().expect("running nft");
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "loading the fixture:\n{script}");
}

fn conf(plugin: &str, network: &str) -> String {
    let mut c = json!({"cniVersion": "1.1.0", "name": network, "type": plugin});
    if plugin == "bridge" {
        // What the reference needed for that state; ours must remove it whatever the config says now.
        c["bridge"] = json!("br-ref");
    }
    c.to_string()
}

/// A DEL as runtimes send it after a reboot or for a container whose netns is gone: no netns, no
/// prevResult, no capability arguments.
fn del(host: &Netns, plugin: &std::path::Path, name: &str, network: &str, cid: &str) {
    let out = Invocation::new("DEL", cid, "", "eth0", &conf(name, network)).run(plugin, host);
    assert!(out.success(), "{name} DEL of {cid}: {}", out.stderr);
}

#[test]
fn bridge_del_removes_the_references_nftables_masquerade_and_spoof_check_of_its_attachment_only() {
    let host = new_netns();
    load(&host, &fixture());
    del(&host, &bridge(), "bridge", "ref", "ctr-a");
    let rules = nft_ruleset(&host);
    assert!(!rules.contains(&masq_comment("ref", "eth0", "ctr-a")), "{rules}");
    assert!(!rules.contains("cni-br-iface-ctr-a-eth0"), "{rules}");
    // The others' entries stay.
    assert!(rules.contains(&masq_comment("ref", "eth0", "ctr-b")), "{rules}");
    assert!(rules.contains(&masq_comment("other", "eth0", "ctr-c")), "{rules}");
    assert!(rules.contains("jump cni-br-iface-ctr-b-eth0"), "{rules}");
    assert!(rules.contains("chain cni-br-iface-ctr-b-eth0-mac"), "{rules}");
    // Idempotent: a second DEL finds nothing and succeeds.
    del(&host, &bridge(), "bridge", "ref", "ctr-a");
}

#[test]
fn bridge_gc_removes_the_references_masquerade_of_stale_attachments_of_its_network() {
    let host = new_netns();
    load(&host, &fixture());
    let mut c: serde_json::Value = serde_json::from_str(&conf("bridge", "ref")).unwrap();
    c["cni.dev/valid-attachments"] = json!([{"containerID": "ctr-b", "ifname": "eth0"}]);
    let out = Invocation::new("GC", "", "", "", &c.to_string())
        .var("CNI_CONTAINERID", None)
        .var("CNI_NETNS", None)
        .var("CNI_IFNAME", None)
        .run(&bridge(), &host);
    assert!(out.success(), "GC: {}", out.stderr);
    let rules = nft_ruleset(&host);
    assert!(!rules.contains(&masq_comment("ref", "eth0", "ctr-a")), "{rules}");
    assert!(rules.contains(&masq_comment("ref", "eth0", "ctr-b")), "{rules}");
    assert!(rules.contains(&masq_comment("other", "eth0", "ctr-c")), "another network's entry went: {rules}");
}

#[test]
fn portmap_del_removes_the_references_nftables_mappings_of_its_container_only() {
    let host = new_netns();
    load(&host, &fixture());
    del(&host, &testkit::plugin("portmap"), "portmap", "ref", "ctr-a");
    let rules = nft_ruleset(&host);
    assert!(!rules.contains("comment \"ctr-a\""), "{rules}");
    assert!(rules.contains("dnat to 10.20.0.6:80 comment \"ctr-b\""), "{rules}");
    assert!(rules.contains("ip saddr 10.20.0.6 ip daddr 10.20.0.6 masquerade comment \"ctr-b\""), "{rules}");
    del(&host, &testkit::plugin("portmap"), "portmap", "ref", "ctr-a");
}

/// On a node that has none of the reference's state, DEL finds that out without running
/// `iptables-save` (the probes are netlink requests), even with the iptables backends.
#[test]
fn del_runs_no_iptables_program_when_the_reference_left_nothing() {
    let host = new_netns();
    for (name, extra) in
        [("bridge", json!({"ipMasq": true, "ipMasqBackend": "iptables"})), ("portmap", json!({"backend": "iptables"}))]
    {
        let mut c: serde_json::Value = serde_json::from_str(&conf(name, "ref")).unwrap();
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        let plugin = if name == "bridge" { bridge() } else { testkit::plugin("portmap") };
        let trace = tempfile_path(name);
        let inv = Invocation::new("DEL", "ctr-z", "", "eth0", &c.to_string());
        let wrapper: Vec<&OsStr> = ["strace", "-f", "-qq", "-e", "trace=execve", "-o"]
            .iter()
            .map(OsStr::new)
            .chain([trace.as_os_str()])
            .collect();
        let out = inv.spawn_under(&wrapper, &plugin, Some(&host)).wait_with_output().unwrap();
        assert!(out.status.success(), "{name} DEL: {}", String::from_utf8_lossy(&out.stderr));
        let execs = std::fs::read_to_string(&trace).unwrap();
        let _ = std::fs::remove_file(&trace);
        assert!(execs.contains("execve("), "strace recorded nothing: {execs}");
        let programs: Vec<&str> = execs.lines().filter(|l| l.contains("execve(") && l.contains("tables")).collect();
        assert!(programs.is_empty(), "{name} DEL ran {programs:?}");
    }
}

fn tempfile_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("reference-state-{tag}-{}.strace", std::process::id()))
}
