//! The iptables masquerade backend against real iptables-restore, in throwaway namespaces.

use firewall::iptables::{self, Iptables};
use std::collections::BTreeSet;
use testkit::new_netns;

fn saved(ipv6: bool) -> String {
    Iptables::locate(ipv6).unwrap().save_nat().unwrap()
}

#[test]
fn add_del_and_gc_in_both_families() {
    let ns = new_netns();
    ns.run(|| {
        let addrs = ["10.1.0.5/24".parse().unwrap(), "fd00:1::5/64".parse().unwrap()];
        iptables::masq_add("net1", "c1", &addrs).unwrap();
        iptables::masq_add("net1", "c2", &["10.1.0.6/24".parse().unwrap()]).unwrap();
        let v4 = saved(false);
        assert!(
            v4.contains(r#"-A POSTROUTING -s 10.1.0.5/32 -m comment --comment "name: \"net1\" id: \"c1\"" -j CNI-"#),
            "{v4}"
        );
        assert!(v4.contains("! -d 224.0.0.0/4"), "{v4}");
        assert!(saved(true).contains("-s fd00:1::5/128"), "{}", saved(true));

        iptables::masq_del("net1", "c1").unwrap();
        iptables::masq_del("net1", "c1").unwrap();
        assert!(!saved(false).contains("10.1.0.5") && saved(false).contains("10.1.0.6"));
        assert!(!saved(true).contains("fd00:1::5"));

        iptables::masq_gc("net1", &BTreeSet::new()).unwrap();
        assert!(!saved(false).contains("CNI-"), "{}", saved(false));
    })
    .unwrap();
}
