//! Golden tests of the JSON sent to nft (regenerate with UPDATE_GOLDEN=1 and review the diff).

use super::*;
use crate::golden::golden;

pub(crate) fn attachment() -> Attachment {
    Attachment {
        id: Identity::new("net1", "ctr1", "eth0"),
        mappings: vec![
            Mapping { host_port: 8080, container_port: 80, protocol: Protocol::Tcp, host_ip: None },
            Mapping {
                host_port: 5353,
                container_port: 53,
                protocol: Protocol::Udp,
                host_ip: Some("192.0.2.1".parse().unwrap()),
            },
            Mapping {
                host_port: 9443,
                container_port: 443,
                protocol: Protocol::Tcp,
                host_ip: Some("2001:db8::1".parse().unwrap()),
            },
        ],
        v4: Some("10.88.0.5/24".parse().unwrap()),
        v6: Some("fd88::5/64".parse().unwrap()),
        snat: true,
        masq_all: false,
        conditions_v4: crate::conditions::parse(&["ip saddr != 192.0.2.128/25".into()], "conditionsV4").unwrap(),
        conditions_v6: vec![],
    }
}

#[test]
fn add_batch_is_golden() {
    golden("portmap-add", &add_batch(&attachment()).to_json());
}

#[test]
fn del_batch_is_golden() {
    golden("portmap-del", &del_batch(&attachment()).to_json());
}

#[test]
fn fresh_base_is_golden() {
    golden("portmap-base", &base_table().repair(None).to_json());
}

#[test]
fn host_addresses_of_the_other_family_are_skipped() {
    let a = attachment();
    let rules = dnat_rules(&a);
    // v4: 8080 (any) and 5353 (192.0.2.1); v6: 8080 (any) and 9443 (2001:db8::1).
    assert_eq!(rules.len(), 4);
    let text = serde_json::to_string(&rules).unwrap();
    assert!(!text.contains(r#""addr":"10.88.0.5","port":443"#), "{text}");
    assert!(!text.contains(r#""addr":"fd88::5","port":53"#), "{text}");
    // 8080 in each family's any-address map, 5353 and 9443 in their host address's map.
    let keys = a.element_keys();
    assert_eq!(keys.len(), 4);
    assert_eq!(keys.iter().filter(|(map, _)| map.starts_with("hostport_v")).count(), 2);
}

#[test]
fn masquerade_entries_follow_snat_and_masq_all() {
    let mut a = attachment();
    let keys: Vec<String> = a.masq_keys().iter().map(|(m, k)| format!("{m} {k}")).collect();
    assert_eq!(keys, [r#"masq_v4 "10.88.0.5""#, r#"masq_v6 "fd88::5""#]);
    let rules: Vec<String> = a.masq_rules().iter().map(|r| serde_json::to_string(r).unwrap()).collect();
    assert_eq!(rules.len(), 3, "subnet and localhost for v4, subnet for v6: {rules:?}");
    assert!(rules[0].contains(r#""prefix":{"addr":"10.88.0.0","len":24}"#), "{}", rules[0]);
    assert!(rules[1].contains("127.0.0.1") && rules[2].contains("fd88::"), "{rules:?}");
    a.masq_all = true;
    assert_eq!(a.masq_rules(), vec![vec![json!({"masquerade": null})]]);
    a.snat = false;
    assert!(a.masq_keys().is_empty());
}
