//! The native nf_tables encoder against `nft` itself: each batch the plugins send on ADD and DEL
//! is applied by `nft` in one throwaway namespace and natively in another, and the kernel's view of
//! both tables, expression by expression (`nft --debug=netlink list`), must be the same.

use firewall::native::{Native, NativeError, Schema};
use serde_json::{Value, json};
use std::process::Command;
use testkit::{Netns, in_netns, new_netns};

fn golden(name: &str) -> Value {
    let path = format!("{}/tests/golden/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn nft(ns: &Netns, args: &[&str], stdin: Option<&Value>) -> String {
    let mut cmd = Command::new("nft");
    cmd.args(args);
    in_netns(&mut cmd, ns);
    let out = match stdin {
        Some(batch) => {
            let path = std::env::temp_dir().join(format!("native-test-{}-{}.json", std::process::id(), rand_suffix()));
            std::fs::write(&path, batch.to_string()).unwrap();
            let out = cmd.arg(&path).output().unwrap();
            let _ = std::fs::remove_file(&path);
            out
        }
        None => cmd.output().unwrap(),
    };
    assert!(out.status.success(), "nft {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The kernel's expressions for a table, with rule handles and positions left out.
fn kernel_view(ns: &Netns, family: &str, table: &str) -> String {
    nft(ns, &["--debug=netlink", "list", "table", family, table], None)
        .lines()
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            if words.len() >= 3 && words[0] == family && words[1] == table && !words[2].starts_with('@') {
                format!("{family} {table} {}", words[2])
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn schema() -> Schema {
    let mut s = Schema::default();
    for base in ["bridge-repair-fresh", "portmap-base"] {
        let batch = golden(base);
        let objects: Vec<Value> =
            batch["nftables"].as_array().unwrap().iter().filter_map(|c| c.get("add").cloned()).collect();
        s.declare(&objects);
    }
    s
}

fn native(ns: &Netns, batch: &Value) -> Result<(), NativeError> {
    let batch = batch.clone();
    ns.run(move || Native::open().unwrap().apply(&batch, &schema())).unwrap()
}

/// Two namespaces with the base tables, by `nft`.
fn pair() -> (Netns, Netns) {
    let (a, b) = (new_netns(), new_netns());
    for ns in [&a, &b] {
        for base in ["bridge-repair-fresh", "portmap-base"] {
            nft(ns, &["-j", "-f"], Some(&golden(base)));
        }
    }
    (a, b)
}

fn same_tables(a: &Netns, b: &Netns) {
    for (family, table) in [("inet", "cni_bridge"), ("bridge", "cni_bridge"), ("inet", "cni_portmap")] {
        let (by_nft, by_native) = (kernel_view(a, family, table), kernel_view(b, family, table));
        assert_eq!(by_nft, by_native, "{family} {table} differs\n--- nft ---\n{by_nft}\n--- native ---\n{by_native}");
        // What nft makes of both (set types and flags, base chain hooks, comments), handles aside:
        // 6.18 gives the same commands in the same order the same handles, 6.1 does not (it numbers
        // tables from one counter for all namespaces, and nft's batches use up object handles the
        // native ones do not). Nothing of ours predicts a handle: each is read from a listing.
        let listing = |ns: &Netns| {
            let mut l: Value = serde_json::from_str(&nft(ns, &["-j", "list", "table", family, table], None)).unwrap();
            for o in l["nftables"].as_array_mut().unwrap() {
                for body in o.as_object_mut().unwrap().values_mut() {
                    if let Some(body) = body.as_object_mut() {
                        body.remove("handle");
                    }
                }
            }
            l
        };
        let (by_nft, by_native) = (listing(a), listing(b));
        assert_eq!(by_nft, by_native, "{family} {table} lists differently");
    }
}

#[test]
fn base_tables_install_what_nft_installs() {
    let (a, b) = (new_netns(), new_netns());
    for base in ["bridge-repair-fresh", "portmap-base"] {
        nft(&a, &["-j", "-f"], Some(&golden(base)));
        native(&b, &golden(base)).unwrap_or_else(|e| panic!("{base}: {e}"));
    }
    same_tables(&a, &b);
    // And the attachments' batches on top of them, both ways.
    for batch in ["bridge-add", "portmap-add"] {
        nft(&a, &["-j", "-f"], Some(&golden(batch)));
        native(&b, &golden(batch)).unwrap_or_else(|e| panic!("{batch}: {e}"));
    }
    same_tables(&a, &b);
    let text = nft(&b, &["list", "table", "inet", "cni_portmap"], None);
    assert!(text.contains("type ipv4_addr . inet_proto . inet_service : verdict"), "{text}");
    assert!(text.contains("type nat hook prerouting priority dstnat; policy accept;"), "{text}");
}

#[test]
fn sets_of_every_declared_shape_agree_with_nft() {
    let (a, b) = (new_netns(), new_netns());
    let t = json!({"add": {"table": {"family": "inet", "name": "cni_bridge"}}});
    let decl = |kind: &str, name: &str, ty: Value, extra: Value| {
        let mut body = json!({"family": "inet", "table": "cni_bridge", "name": name, "type": ty});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        json!({"add": { kind: body }})
    };
    let batch = json!({"nftables": [
        t,
        decl("set", "s4", json!("ipv4_addr"), json!({})),
        decl("set", "s6", json!("ipv6_addr"), json!({})),
        decl("set", "names", json!("ifname"), json!({})),
        decl("map", "m4", json!("ipv4_addr"), json!({"map": "verdict"})),
        decl("map", "mc", json!(["ipv6_addr", "inet_proto", "inet_service"]), json!({"map": "verdict"})),
        decl("set", "ranges", json!(["ipv4_addr", "ipv4_addr"]), json!({"flags": ["interval"]})),
        {"add": {"chain": {"family": "inet", "table": "cni_bridge", "name": "in", "type": "filter", "hook": "input",
                           "prio": 0, "policy": "drop"}}},
        {"add": {"chain": {"family": "inet", "table": "cni_bridge", "name": "out", "type": "route", "hook": "output",
                           "prio": -150}}},
    ]});
    nft(&a, &["-j", "-f"], Some(&batch));
    native(&b, &batch).unwrap();
    let (by_nft, by_native) = (
        nft(&a, &["-j", "list", "table", "inet", "cni_bridge"], None),
        nft(&b, &["-j", "list", "table", "inet", "cni_bridge"], None),
    );
    assert_eq!(by_nft, by_native);
    assert_eq!(kernel_view(&a, "inet", "cni_bridge"), kernel_view(&b, "inet", "cni_bridge"));
}

#[test]
fn add_batches_install_what_nft_installs() {
    let (a, b) = pair();
    for batch in ["bridge-add", "portmap-add"] {
        nft(&a, &["-j", "-f"], Some(&golden(batch)));
        native(&b, &golden(batch)).unwrap_or_else(|e| panic!("{batch}: {e}"));
    }
    same_tables(&a, &b);
    let view = kernel_view(&b, "inet", "cni_portmap");
    assert!(view.contains("nat dnat ip addr_min reg 1 addr_max reg 1 proto_min reg 2"), "{view}");
}

#[test]
fn del_batches_remove_what_nft_removes() {
    let (a, b) = pair();
    for batch in ["bridge-add", "portmap-add"] {
        nft(&a, &["-j", "-f"], Some(&golden(batch)));
        nft(&b, &["-j", "-f"], Some(&golden(batch)));
    }
    for batch in ["bridge-del", "portmap-del"] {
        nft(&a, &["-j", "-f"], Some(&golden(batch)));
        native(&b, &golden(batch)).unwrap_or_else(|e| panic!("{batch}: {e}"));
    }
    same_tables(&a, &b);
    assert!(!kernel_view(&b, "inet", "cni_portmap").contains("pm-"), "the attachment's chain is gone");
}

#[test]
fn rules_with_every_supported_match_agree_with_nft() {
    let (a, b) = pair();
    let m = |left: Value, op: &str, right: Value| json!({"match": {"left": left, "op": op, "right": right}});
    let p = |protocol: &str, field: &str| json!({"payload": {"protocol": protocol, "field": field}});
    let meta = |key: &str| json!({"meta": {"key": key}});
    let rules = vec![
        vec![m(p("ip", "saddr"), "==", json!({"prefix": {"addr": "10.0.0.0", "len": 8}})), json!({"accept": null})],
        vec![m(p("ip6", "daddr"), "!=", json!({"prefix": {"addr": "fd00::", "len": 60}})), json!({"drop": null})],
        vec![m(p("udp", "sport"), ">=", json!(1024)), m(p("udp", "dport"), "<", json!(2000)), json!({"return": null})],
        vec![m(meta("iifname"), "!=", json!("eth0")), m(meta("oifname"), "==", json!("br0")), json!({"counter": null})],
        vec![
            m(meta("mark"), "==", json!(42)),
            m(meta("l4proto"), "==", json!("tcp")),
            m(p("tcp", "dport"), "==", json!(22)),
        ],
        vec![m(p("ip", "daddr"), "==", json!("@isolated")), json!({"masquerade": null})],
        vec![m(p("ip", "daddr"), "!=", json!("@isolated")), json!({"dnat": {"addr": "10.0.0.9"}})],
        vec![json!({"vmap": {"key": p("ip", "saddr"), "data": "@masq_v4"}})],
        vec![
            m(meta("l4proto"), "==", json!("tcp")),
            json!({"snat": {"family": "ip6", "addr": "fd00::1", "port": 8443}}),
        ],
    ];
    let mut batch = vec![
        json!({"add": {"set": {"family": "inet", "table": "cni_bridge", "name": "isolated", "type": "ipv4_addr"}}}),
        json!({"add": {"chain": {"family": "inet", "table": "cni_bridge", "name": "probe"}}}),
    ];
    for expr in rules {
        batch.push(json!({"add": {"rule": {"family": "inet", "table": "cni_bridge", "chain": "probe", "expr": expr,
                                            "comment": "probe"}}}));
    }
    // The set declaration needs nft; the rules then go both ways.
    nft(&a, &["-j", "-f"], Some(&json!({"nftables": batch[..1]})));
    nft(&b, &["-j", "-f"], Some(&json!({"nftables": batch[..1]})));
    nft(&a, &["-j", "-f"], Some(&json!({"nftables": batch[1..]})));
    native(&b, &json!({"nftables": batch[1..]})).unwrap();
    same_tables(&a, &b);
}

#[test]
fn refusals_name_the_command_and_roll_back() {
    let (_, b) = pair();
    let batch = json!({"nftables": [
        {"add": {"chain": {"family": "inet", "table": "cni_portmap", "name": "pm-new"}}},
        {"flush": {"chain": {"family": "inet", "table": "cni_portmap", "name": "pm-missing"}}}
    ]});
    let err = native(&b, &batch).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("flush chain inet cni_portmap pm-missing") && text.contains("No such file or directory"),
        "{text}"
    );
    assert!(!kernel_view(&b, "inet", "cni_portmap").contains("pm-new"), "the whole transaction was rolled back");
    // A batch the encoder does not know is refused before anything is sent.
    let set = json!({"nftables": [{"add": {"set": {"family": "inet", "table": "cni_portmap", "name": "x", "type": "mark"}}}]});
    assert!(matches!(native(&b, &set), Err(NativeError::Unsupported(_))));
}

#[test]
fn a_chain_that_holds_rules_nobody_planned_for_is_not_deleted() {
    // A key chain's last holder deletes its jump and the chain in one transaction; a holder that
    // joined since the listing must make that fail, not vanish with the chain.
    let (_, b) = pair();
    let chain = |name: &str| json!({"chain": {"family": "inet", "table": "cni_portmap", "name": name}});
    let rule =
        json!({"rule": {"family": "inet", "table": "cni_portmap", "chain": "key-x", "expr": [{"accept": null}]}});
    native(&b, &json!({"nftables": [{"add": chain("key-x")}, {"add": rule}]})).unwrap();
    let err = native(&b, &json!({"nftables": [{"delete": chain("key-x")}]})).unwrap_err();
    assert!(err.to_string().contains("busy"), "{err}");
    assert!(kernel_view(&b, "inet", "cni_portmap").contains("key-x"));
    // Flushed first, in the same transaction, it goes.
    native(&b, &json!({"nftables": [{"flush": chain("key-x")}, {"delete": chain("key-x")}]})).unwrap();
    assert!(!kernel_view(&b, "inet", "cni_portmap").contains("key-x"));
}

#[test]
fn a_rule_is_deleted_by_its_handle_and_a_gone_one_is_enoent() {
    let (a, b) = pair();
    let add = json!({"nftables": [
        {"add": {"chain": {"family": "inet", "table": "cni_portmap", "name": "key-y"}}},
        {"add": {"rule": {"family": "inet", "table": "cni_portmap", "chain": "key-y", "expr": [{"accept": null}]}}},
        {"add": {"rule": {"family": "inet", "table": "cni_portmap", "chain": "key-y", "expr": [{"drop": null}]}}}
    ]});
    for ns in [&a, &b] {
        native(ns, &add).unwrap();
    }
    let listing: Value =
        serde_json::from_str(&nft(&a, &["-j", "list", "chain", "inet", "cni_portmap", "key-y"], None)).unwrap();
    let handle = listing["nftables"].as_array().unwrap().iter().find_map(|o| {
        let r = o.get("rule")?;
        r["expr"][0].get("accept").map(|_| r["handle"].clone())
    });
    let del = json!({"nftables": [{"delete": {"rule": {"family": "inet", "table": "cni_portmap", "chain": "key-y", "handle": handle.unwrap()}}}]});
    nft(&a, &["-j", "-f"], Some(&del));
    native(&b, &del).unwrap();
    // Same handles in both (the same commands in the same order): the same rule went.
    same_tables(&a, &b);
    let again = native(&b, &del).unwrap_err();
    assert!(again.to_string().contains("No such file"), "{again}");
}
