//! The bridge firewall against the real `nft`, each test in its own throwaway namespace.

use firewall::bridge::{self, Attachment, Known};
use firewall::{Identity, Nft};
use testkit::new_netns;

fn nft() -> Nft {
    Nft::locate().expect("nft is installed (scripts/deps.sh)")
}

/// Runs `f` inside a fresh namespace, so every `nft` it starts acts there.
fn in_fresh_ns<T: Send>(f: impl FnOnce(&Nft) -> T + Send) -> T {
    let ns = new_netns();
    ns.run(|| f(&nft())).unwrap()
}

fn list(nft: &Nft, family: &str) -> String {
    let out = std::process::Command::new(nft.binary()).args(["list", "table", family, "cni_bridge"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn attachment(cid: &str, ip4: &str, ip6: &str, veth: &str) -> Attachment {
    Attachment {
        id: Identity::new("net1", cid, "eth0"),
        masquerade: vec![format!("{ip4}/24").parse().unwrap(), format!("{ip6}/64").parse().unwrap()],
        spoof_check: Some((veth.into(), "0a:58:0a:01:00:05".into())),
        isolation: Some("br-net1".into()),
    }
}

fn known(a: &Attachment) -> Known {
    Known {
        addresses: a.masquerade.iter().map(|n| n.ip()).collect(),
        spoof_port: a.spoof_check.as_ref().map(|(p, _)| p.clone()),
    }
}

#[test]
fn add_then_del_leaves_only_the_base_objects() {
    in_fresh_ns(|nft| {
        let a = attachment("c1", "10.1.0.5", "fd00:1::5", "veth00000001");
        bridge::add(nft, &a).unwrap();
        let inet = list(nft, "inet");
        assert!(inet.contains("10.1.0.5 comment"), "{inet}");
        assert!(inet.contains(&format!("goto {}", a.id.chain("masq"))), "{inet}");
        assert!(inet.contains("ip saddr 10.1.0.5 ip daddr != 10.1.0.0/24 masquerade"), "{inet}");
        assert!(inet.contains("ip6 saddr fd00:1::5 ip6 daddr != fd00:1::/64 masquerade"), "{inet}");
        assert!(inet.contains(r#"ct status dnat return"#), "{inet}");
        let br = list(nft, "bridge");
        assert!(br.contains(r#"iifname "veth00000001" ether saddr 0a:58:0a:01:00:05 return"#), "{br}");
        bridge::check(nft, &a).unwrap();

        bridge::del(nft, &a.id, &known(&a), true, true).unwrap();
        let inet = list(nft, "inet");
        assert!(!inet.contains("10.1.0.5") && !inet.contains("masq-"), "{inet}");
        assert!(!list(nft, "bridge").contains("spoof-"));
        assert!(bridge::check(nft, &a).is_err());
        // Idempotent: a second DEL, and a DEL that knows nothing, both succeed.
        bridge::del(nft, &a.id, &known(&a), true, true).unwrap();
        bridge::del(nft, &a.id, &Known::default(), true, true).unwrap();
    });
}

#[test]
fn del_without_prev_result_finds_entries_by_identity() {
    in_fresh_ns(|nft| {
        let a = attachment("c1", "10.1.0.5", "fd00:1::5", "veth00000001");
        let b = attachment("c2", "10.1.0.6", "fd00:1::6", "veth00000002");
        bridge::add(nft, &a).unwrap();
        bridge::add(nft, &b).unwrap();
        bridge::del(nft, &a.id, &Known::default(), true, true).unwrap();
        let inet = list(nft, "inet");
        assert!(!inet.contains("10.1.0.5") && inet.contains("10.1.0.6"), "{inet}");
        let br = list(nft, "bridge");
        assert!(!br.contains("veth00000001") && br.contains("veth00000002"), "{br}");
        bridge::check(nft, &b).unwrap();
    });
}

#[test]
fn a_stale_element_of_another_attachment_is_replaced_on_add_and_kept_on_its_del() {
    in_fresh_ns(|nft| {
        let old = attachment("old", "10.1.0.5", "fd00:1::5", "veth00000001");
        bridge::add(nft, &old).unwrap();
        // The same address handed to a new container while the old entry leaked.
        let new = attachment("new", "10.1.0.5", "fd00:1::5", "veth00000002");
        bridge::add(nft, &new).unwrap();
        bridge::check(nft, &new).unwrap();
        // The old attachment's late DEL must not take the new one's masquerade away.
        bridge::del(nft, &old.id, &known(&old), true, true).unwrap();
        bridge::check(nft, &new).unwrap();
        assert!(!list(nft, "inet").contains(&old.id.chain("masq")));
    });
}

#[test]
fn a_flushed_ruleset_is_repaired_by_the_next_add() {
    in_fresh_ns(|nft| {
        let a = attachment("c1", "10.1.0.5", "fd00:1::5", "veth00000001");
        bridge::add(nft, &a).unwrap();
        let status = std::process::Command::new(nft.binary()).args(["flush", "ruleset"]).status().unwrap();
        assert!(status.success());
        let b = attachment("c2", "10.1.0.6", "fd00:1::6", "veth00000002");
        bridge::add(nft, &b).unwrap();
        bridge::check(nft, &b).unwrap();
        let inet = list(nft, "inet");
        assert_eq!(inet.matches("ip saddr vmap @masq_v4").count(), 1, "{inet}");
        // Someone deleted the base rules but kept the table: CHECK says so, GC puts them back once.
        let status = std::process::Command::new(nft.binary())
            .args(["flush", "chain", "inet", "cni_bridge", "postrouting"])
            .status()
            .unwrap();
        assert!(status.success());
        let err = bridge::check(nft, &b).unwrap_err();
        assert!(format!("{err:#}").contains("base chain postrouting"), "{err:#}");
        bridge::gc(nft, "net1", std::slice::from_ref(&b.id)).unwrap();
        bridge::gc(nft, "net1", std::slice::from_ref(&b.id)).unwrap();
        bridge::check(nft, &b).unwrap();
        let inet = list(nft, "inet");
        assert_eq!(inet.matches("ip saddr vmap @masq_v4").count(), 1, "{inet}");
    });
}

#[test]
fn gc_removes_what_is_not_valid_on_that_network_only() {
    in_fresh_ns(|nft| {
        let a = attachment("keep", "10.1.0.5", "fd00:1::5", "veth00000001");
        let b = attachment("drop", "10.1.0.6", "fd00:1::6", "veth00000002");
        let mut other = attachment("drop", "10.2.0.6", "fd00:2::6", "veth00000003");
        other.id = Identity::new("net2", "drop", "eth0");
        other.isolation = None;
        for x in [&a, &b, &other] {
            bridge::add(nft, x).unwrap();
        }
        bridge::gc(nft, "net1", std::slice::from_ref(&a.id)).unwrap();
        bridge::check(nft, &a).unwrap();
        bridge::check(nft, &other).unwrap();
        assert!(bridge::check(nft, &b).is_err());
        let inet = list(nft, "inet");
        assert!(!inet.contains("10.1.0.6"), "{inet}");
    });
}

#[test]
fn nft_errors_reach_the_caller_in_full() {
    in_fresh_ns(|nft| {
        let bad =
            serde_json::json!({"nftables": [{"add": {"chain": {"family": "inet", "table": "nope", "name": "x"}}}]});
        let err = nft.apply(&bad).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("No such file or directory"), "{text}");
    });
}
