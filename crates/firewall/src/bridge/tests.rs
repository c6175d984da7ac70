//! Golden tests of the JSON sent to nft. Regenerate after an intended change with
//! `UPDATE_GOLDEN=1 cargo test -p firewall`, and review the diff.

use super::*;
use crate::golden::golden;

fn attachment() -> Attachment {
    Attachment {
        id: Identity::new("net1", "ctr1", "eth0"),
        masquerade: vec!["10.1.0.5/24".parse().unwrap(), "fd00:1::5/64".parse().unwrap()],
        spoof_check: Some(("veth12345678".into(), "0a:58:0a:01:00:05".into())),
        isolation: Some("br-net1".into()),
    }
}

#[test]
fn add_batch_is_golden() {
    golden("bridge-add", &add_batch(&attachment()).to_json());
}

#[test]
fn fresh_host_repair_creates_every_base_object() {
    golden("bridge-repair-fresh", &repair_batch(&attachment(), None, None).to_json());
}

#[test]
fn del_batch_is_golden() {
    let known = Known {
        addresses: vec!["10.1.0.5".parse().unwrap(), "fd00:1::5".parse().unwrap()],
        spoof_port: Some("veth12345678".into()),
    };
    golden("bridge-del", &del_batch(&Identity::new("net1", "ctr1", "eth0"), &known, true, true).to_json());
}

#[test]
fn only_asked_for_parts_are_generated() {
    let mut a = attachment();
    a.spoof_check = None;
    a.isolation = None;
    let text = add_batch(&a).to_json().to_string();
    assert!(text.contains("masq_v4") && !text.contains("spoof") && !text.contains("isolat"));
    a.masquerade.clear();
    assert!(add_batch(&a).is_empty());
    assert!(repair_batch(&a, None, None).is_empty());
}

#[test]
fn repair_of_intact_tables_adds_nothing_and_a_held_address_is_shared() {
    let a = attachment();
    // Listings as nft prints them after the fresh repair and our ADD.
    let masq = a.id.chain("masq");
    let base_rule = |family: &str, chain: &str| json!({"rule": {"family": family, "table": TABLE, "chain": chain, "comment": BASE_COMMENT, "expr": []}});
    let mut inet = vec![
        json!({"table": {"family": "inet", "name": TABLE}}),
        json!({"map": {"family": "inet", "table": TABLE, "name": MASQ_V4, "type": "ipv4_addr", "map": "verdict",
                       "elem": [["10.1.0.5", {"goto": {"target": "masq-someone-else"}}]]}}),
        json!({"map": {"family": "inet", "table": TABLE, "name": MASQ_V6, "type": "ipv6_addr", "map": "verdict"}}),
        json!({"set": {"family": "inet", "table": TABLE, "name": ISOLATED_BRIDGES, "type": "ifname"}}),
        json!({"map": {"family": "inet", "table": TABLE, "name": ISOLATION, "type": "ifname", "map": "verdict"}}),
        json!({"chain": {"family": "inet", "table": TABLE, "name": POSTROUTING}}),
        json!({"chain": {"family": "inet", "table": TABLE, "name": FORWARD}}),
        json!({"chain": {"family": "inet", "table": TABLE, "name": isolation_chain("net1")}}),
        json!({"chain": {"family": "inet", "table": TABLE, "name": masq}}),
        base_rule("inet", FORWARD),
        base_rule("inet", &isolation_chain("net1")),
        base_rule("inet", &isolation_chain("net1")),
    ];
    for _ in 0..4 {
        inet.push(base_rule("inet", POSTROUTING));
    }
    let bridge = vec![
        json!({"table": {"family": "bridge", "name": TABLE}}),
        json!({"map": {"family": "bridge", "table": TABLE, "name": SPOOF_PORTS, "type": "ifname", "map": "verdict"}}),
        json!({"chain": {"family": "bridge", "table": TABLE, "name": PREROUTING}}),
        base_rule("bridge", PREROUTING),
    ];
    let inet = json!({"nftables": inet});
    let bridge = json!({"nftables": bridge});
    let repair = repair_batch(&a, Some(&inet), Some(&bridge)).to_json();
    assert_eq!(repair, json!({"nftables": []}));
    // The address another attachment holds becomes a key chain jumping to both, the other first.
    let planned = entries(&a, Some(&inet)).to_json().to_string();
    let key_chain = base::key_chain(MASQ_V4, &json!("10.1.0.5"));
    assert!(planned.contains(r#"{"jump":{"target":"masq-someone-else"}}"#), "{planned}");
    let (other, ours) =
        (planned.find("masq-someone-else").unwrap(), planned.rfind(&format!(r#""target":"{masq}""#)).unwrap());
    assert!(other < ours, "{planned}");
    assert!(planned.contains(&format!(r#"{{"goto":{{"target":"{key_chain}"}}}}"#)), "{planned}");
    assert!(!planned.contains(r#""delete":{"chain""#), "{planned}");

    // A flushed base chain is rewritten.
    let mut damaged = inet.clone();
    damaged["nftables"].as_array_mut().unwrap().retain(|o| o["rule"]["chain"] != POSTROUTING);
    let repair = repair_batch(&a, Some(&damaged), Some(&bridge)).to_json();
    let flushed = repair["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["flush"]["chain"]["family"] == "inet" && c["flush"]["chain"]["name"] == POSTROUTING);
    assert!(flushed, "{repair}");
    assert_eq!(repair.to_string().matches(BASE_COMMENT).count(), 4);
}
