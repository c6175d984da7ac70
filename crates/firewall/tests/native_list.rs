//! Native listings against `nft -j list`: tables built by the plugins' own batches (base objects
//! and several attachments: published ports with and without a host address, UDP, masquerade,
//! spoof checks, isolation) are listed both ways in one throwaway namespace, and must agree on
//! everything the listing's readers use. Two normalisations: `metainfo` (nft's version) is left
//! out, and set elements are sorted, because a hash set has no order: the kernel walks its buckets
//! in an order that changes from one dump to the next, so even two `nft` listings can differ.

use firewall::bridge;
use firewall::identity::Identity;
use firewall::native::Native;
use firewall::portmap::{self, Mapping, Protocol};
use serde_json::{Value, json};
use std::process::Command;
use testkit::{Netns, in_netns, new_netns};

fn nft_apply(ns: &Netns, batch: &Value) {
    let path =
        std::env::temp_dir().join(format!("native-list-{}-{:?}.json", std::process::id(), std::thread::current().id()));
    std::fs::write(&path, batch.to_string()).unwrap();
    let out = in_netns(Command::new("nft").args(["-j", "-f"]).arg(&path), ns).output().unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "nft: {}", String::from_utf8_lossy(&out.stderr));
}

/// `nft -j list <what>`, or `None` when nft says the object does not exist.
fn nft_list(ns: &Netns, what: &[&str]) -> Option<Value> {
    let out = in_netns(Command::new("nft").args(["-j", "list"]).args(what), ns).output().unwrap();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("No such file or directory"), "{err}");
        return None;
    }
    Some(without_metainfo(serde_json::from_slice(&out.stdout).unwrap()))
}

fn native_list(ns: &Netns, what: &[&str]) -> Option<Value> {
    let what: Vec<String> = what.iter().map(|s| s.to_string()).collect();
    ns.run(move || {
        let what: Vec<&str> = what.iter().map(String::as_str).collect();
        Native::open().unwrap().list(&what).unwrap()
    })
    .unwrap()
    .map(without_metainfo)
}

/// Asserts equal listings, naming the first object that differs.
fn same(native: &Value, by_nft: &Value, what: &str) {
    let (a, b) = (native["nftables"].as_array().unwrap(), by_nft["nftables"].as_array().unwrap());
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x, y, "{what}: first difference\nnative: {x}\nnft:    {y}");
    }
    assert_eq!(a.len(), b.len(), "{what}: object counts differ");
}

fn without_metainfo(mut listing: Value) -> Value {
    let objects = listing["nftables"].as_array_mut().unwrap();
    objects.retain(|o| o.get("metainfo").is_none());
    for o in objects.iter_mut() {
        for kind in ["set", "map"] {
            if let Some(elem) = o.get_mut(kind).and_then(|s| s.get_mut("elem")).and_then(Value::as_array_mut) {
                elem.sort_by_key(|e| e.to_string());
            }
        }
    }
    listing
}

fn portmap_attachment(container: &str, n: u8, mappings: Vec<Mapping>, masq_all: bool) -> portmap::Attachment {
    portmap::Attachment {
        id: Identity::new("net1", container, "eth0"),
        mappings,
        v4: Some(format!("10.88.0.{n}/24").parse().unwrap()),
        v6: Some(format!("fd88::{n}/64").parse().unwrap()),
        snat: true,
        masq_all,
        conditions_v4: vec![],
        conditions_v6: vec![],
    }
}

fn mapping(host_port: u16, container_port: u16, protocol: Protocol, host_ip: Option<&str>) -> Mapping {
    Mapping { host_port, container_port, protocol, host_ip: host_ip.map(|h| h.parse().unwrap()) }
}

/// The plugins' tables with base objects and several attachments, made by `nft`.
fn populated() -> Netns {
    let ns = new_netns();
    // portmap's base objects as its repair path sends them (pinned by the golden test).
    let golden = format!("{}/tests/golden/portmap-base.json", env!("CARGO_MANIFEST_DIR"));
    nft_apply(&ns, &serde_json::from_str(&std::fs::read_to_string(golden).unwrap()).unwrap());
    let mut batch = firewall::json::Batch::new();
    batch.extend(bridge::repair_batch(&bridge_attachment("ctr1", 5), None, None));
    let attachments = [
        portmap_attachment("ctr1", 5, vec![mapping(8080, 80, Protocol::Tcp, None)], false),
        portmap_attachment(
            "ctr2",
            6,
            vec![
                mapping(5353, 53, Protocol::Udp, Some("192.0.2.1")),
                mapping(9443, 443, Protocol::Tcp, Some("2001:db8::1")),
                mapping(8081, 81, Protocol::Sctp, None),
            ],
            false,
        ),
        portmap_attachment("ctr3", 7, vec![mapping(7000, 7000, Protocol::Udp, None)], true),
    ];
    for a in &attachments {
        batch.extend(portmap::add_batch(a));
    }
    for (c, n) in [("ctr1", 5), ("ctr2", 6)] {
        batch.extend(bridge::add_batch(&bridge_attachment(c, n)));
    }
    nft_apply(&ns, &batch.to_json());
    ns
}

fn bridge_attachment(container: &str, n: u8) -> bridge::Attachment {
    bridge::Attachment {
        id: Identity::new("net1", container, "eth0"),
        masquerade: vec![format!("10.1.0.{n}/24").parse().unwrap(), format!("fd00:1::{n}/64").parse().unwrap()],
        spoof_check: Some((format!("veth{n}"), format!("0a:58:0a:01:00:0{n}"))),
        isolation: Some("br-net1".into()),
    }
}

#[test]
fn tables_list_as_nft_lists_them() {
    let ns = populated();
    for (family, table) in [("inet", "cni_portmap"), ("inet", "cni_bridge"), ("bridge", "cni_bridge")] {
        let what = ["table", family, table];
        let (by_nft, native) = (nft_list(&ns, &what).unwrap(), native_list(&ns, &what).unwrap());
        same(&native, &by_nft, &format!("{family} {table}"));
    }
    for what in [
        &["chain", "inet", "cni_portmap", "prerouting"][..],
        &["chain", "bridge", "cni_bridge", "prerouting"],
        &["tables"],
    ] {
        assert_eq!(native_list(&ns, what), nft_list(&ns, what), "{what:?}");
    }
    // What the readers get out of it.
    let listing = native_list(&ns, &["table", "inet", "cni_portmap"]).unwrap();
    let chain = Identity::new("net1", "ctr2", "eth0").chain("pm");
    assert_eq!(portmap::udp_ports_in(&listing, &chain), [5353]);
    let elements = firewall::nft::verdict_map_elements(&listing, "hostip_v4");
    assert_eq!(elements, [(json!({"concat": ["192.0.2.1", "udp", 5353]}), Some(chain))]);
}

#[test]
fn missing_tables_and_chains_list_as_none() {
    let ns = new_netns();
    for what in [&["table", "inet", "cni_portmap"][..], &["chain", "inet", "cni_portmap", "prerouting"]] {
        assert_eq!(native_list(&ns, what), None, "{what:?}");
        assert_eq!(nft_list(&ns, what), None, "{what:?}");
    }
    nft_apply(&ns, &json!({"nftables": [{"add": {"table": {"family": "inet", "name": "cni_portmap"}}}]}));
    assert_eq!(native_list(&ns, &["chain", "inet", "cni_portmap", "nope"]), None);
    assert_eq!(native_list(&ns, &["tables"]), nft_list(&ns, &["tables"]));
}

/// A listing takes several dumps; another process changing the ruleset in between interrupts
/// them (NLM_F_DUMP_INTR) and the listing is taken again. Under steady churn (a node where many
/// attachments come and go at once) that must still end in a listing, not in EINTR: the soak's
/// eight workers made portmap's ADD and DEL fail when three attempts were all a listing had.
#[test]
fn a_listing_survives_a_ruleset_that_changes_all_the_time() {
    assert_listings_survive_churn(&populated(), 30);
}

/// The same with a table whose listing takes longer than the pause between two writers'
/// transactions (100 attachments' chains, rules and elements): no listing fits between two
/// changes of the ruleset's generation, which counts changes to any table. Taking the listing
/// again until the generation holds still ended in EINTR after 5 s of trying (5 of 10 listings
/// failed); two identical listings in a row are now taken as consistent.
#[test]
fn a_long_listing_survives_changes_to_other_tables() {
    let ns = populated();
    let mut batch = firewall::json::Batch::new();
    for n in 0..100u16 {
        let mut a = portmap_attachment(&format!("big{n}"), 9, vec![mapping(20000 + n, 80, Protocol::Tcp, None)], false);
        let ip = format!("10.89.{}.{}", n / 200, n % 200 + 2);
        a.v4 = Some(format!("{ip}/16").parse().unwrap());
        a.v6 = Some(format!("fd89::{:x}/64", n + 2).parse().unwrap());
        batch.extend(portmap::add_batch(&a));
    }
    nft_apply(&ns, &batch.to_json());
    assert_listings_survive_churn(&ns, 10);
}

/// Two writers add and delete a chain of their own tables, about every 2 ms each, while
/// `listings` listings of inet cni_portmap are taken; every one must succeed.
fn assert_listings_survive_churn(ns: &Netns, listings: usize) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let done = AtomicBool::new(false);
    let schema = firewall::native::Schema::default();
    let churn = |name: &str| {
        json!({"nftables": [
            {"add": {"table": {"family": "inet", "name": name}}},
            {"add": {"chain": {"family": "inet", "table": name, "name": "c"}}},
            {"delete": {"chain": {"family": "inet", "table": name, "name": "c"}}},
        ]})
    };
    std::thread::scope(|s| {
        for w in 0..2 {
            let (done, schema) = (&done, &schema);
            let batch = churn(&format!("churn{w}"));
            s.spawn(move || {
                ns.run(|| {
                    let mut native = Native::open().unwrap();
                    let mut rounds = 0;
                    while !done.load(Ordering::Relaxed) && rounds < 20_000 {
                        native.apply(&batch, schema).unwrap();
                        rounds += 1;
                        // About a thousand transactions a second from the two writers: far more
                        // than a node's runtimes make, without starving the lister of a core.
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                })
                .unwrap()
            });
        }
        let listed = ns.run(move || {
            let mut native = Native::open().unwrap();
            (0..listings)
                .map(|_| native.list(&["table", "inet", "cni_portmap"]).map(|l| l.is_some()))
                .collect::<Vec<_>>()
        });
        done.store(true, Ordering::Relaxed);
        let listed = listed.unwrap();
        let failed: Vec<_> = listed.iter().filter_map(|l| l.as_ref().err().map(|e| e.to_string())).collect();
        assert!(failed.is_empty(), "{} of {listings} listings failed, first: {}", failed.len(), failed[0]);
        assert!(listed.iter().all(|l| matches!(l, Ok(true))));
    });
}
