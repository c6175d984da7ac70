//! Values from configs that reach nftables and iptables-restore, against the real tools in
//! throwaway namespaces: whatever they hold, they are refused when parsed or stay inside the one
//! value or argument they belong to. No extra table, chain or rule appears, and a batch the tool
//! refuses changes nothing at all.

use firewall::iptables::Iptables;
use firewall::iptables_portmap::{self, Rules, split_conditions};
use firewall::portmap::{self, Attachment, Mapping, Protocol};
use firewall::{Identity, Nft, conditions};
use serde_json::Value;
use testkit::{Netns, new_netns, nft_ruleset};

fn mapping() -> Vec<Mapping> {
    vec![Mapping { host_port: 8080, container_port: 80, protocol: Protocol::Tcp, host_ip: None }]
}

fn attachment(conditions_v4: Vec<Value>) -> Attachment {
    Attachment {
        id: Identity::new("net1", "c1", "eth0"),
        mappings: mapping(),
        v4: Some("10.10.0.2/24".parse().unwrap()),
        v6: None,
        snat: true,
        masq_all: false,
        conditions_v4,
        conditions_v6: Vec::new(),
    }
}

/// Table and chain declarations and the number of rules in a ruleset listing.
fn shape(ruleset: &str) -> (Vec<String>, usize) {
    let decls = ruleset
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("table ") || l.starts_with("chain ") || l.starts_with("map "))
        .map(str::to_string)
        .collect();
    let rules = ruleset.lines().filter(|l| l.contains(" comment \"")).count();
    (decls, rules)
}

/// Values with a meaning in nft's syntax, the shell's, JSON's or iptables-restore's.
const NASTY: &[&str] = &[
    "x;y", "x#y", "x\"y", "x'y", "x\ny", "x\ry", "x{y", "x}y", "x y", "x\\y", "x,y", "$x", "@x", "x*", "*", "-j",
    "x\u{0}y", "ä", "\"\"", "x/y", "\t", "accept", "flush", "ruleset", "}", "{", "#", ";",
];

#[test]
fn nft_condition_values_are_refused_or_stay_one_value() {
    let ns: Netns = new_netns();
    ns.run(|| {
        let nft = Nft::locate().unwrap();
        // The shape a plain ADD makes, for comparison.
        portmap::add(&nft, &attachment(Vec::new())).unwrap();
        let plain = shape(&nft_ruleset(&ns));
        portmap::del(&nft, &attachment(Vec::new())).unwrap();
        let mut applied = Vec::new();
        for value in NASTY {
            for selector in [&["iifname"][..], &["ip", "saddr"], &["meta", "mark"], &["ct", "state"]] {
                let mut words: Vec<String> = selector.iter().map(|w| w.to_string()).collect();
                words.push(value.to_string());
                let Ok(parsed) = conditions::parse(&words, "conditionsV4") else { continue };
                let a = attachment(parsed);
                // nft may still refuse the value (not an address, say): then nothing changes.
                let before = nft_ruleset(&ns);
                if portmap::add(&nft, &a).is_err() {
                    assert_eq!(shape(&nft_ruleset(&ns)), shape(&before), "{words:?}: a refused batch left something");
                    continue;
                }
                assert_eq!(shape(&nft_ruleset(&ns)), plain, "{words:?}: not confined to its rule");
                portmap::del(&nft, &a).unwrap();
                applied.push(words);
            }
        }
        // Interface names take almost anything: most of the values above were really applied.
        assert!(applied.len() >= 15, "{applied:?}");
    })
    .unwrap();
}

#[test]
fn iptables_condition_words_are_refused_or_stay_one_argument() {
    let ns: Netns = new_netns();
    ns.run(|| {
        let tools = Iptables::locate(false).unwrap();
        let rules = |words: &[String]| -> usize {
            let r = Rules {
                network: "net1",
                container_id: "c1",
                mappings: &mapping(),
                address: "10.10.0.2/24".parse().unwrap(),
                snat: true,
                masq_all: false,
                mark_bit: 13,
                external_set_mark_chain: None,
                conditions: words,
            };
            iptables_portmap::add(&r)
                .map(|()| tools.save_nat().unwrap().lines().filter(|l| l.starts_with("-A ")).count())
                .unwrap_or(0)
        };
        let plain = rules(&[]);
        iptables_portmap::del("net1", "c1").unwrap();
        let mut applied = Vec::new();
        for value in NASTY {
            let words = vec!["-m".to_string(), "comment".to_string(), "--comment".to_string(), value.to_string()];
            let Ok(words) = split_conditions(&words, "conditionsV4") else { continue };
            // Whitespace separates arguments (as the reference joins them); nothing else does.
            if !value.contains(char::is_whitespace) {
                assert_eq!(words.len(), 4, "{value:?} was split into more than one argument");
            }
            let before = nat_rules(&tools);
            let added = rules(&words);
            if added == 0 {
                assert_eq!(nat_rules(&tools), before, "{value:?}: a refused batch left something");
                continue;
            }
            assert_eq!(added, plain, "{value:?}: not confined to its rule");
            let saved = tools.save_nat().unwrap();
            let with_value = saved.lines().filter(|l| l.starts_with("-A ") && l.contains(value)).count();
            assert_eq!(with_value, 1, "{value:?}: {saved}");
            iptables_portmap::del("net1", "c1").unwrap();
            applied.push(value);
        }
        assert!(applied.len() >= 15, "{applied:?}");
    })
    .unwrap();
}

#[test]
fn a_batch_iptables_refuses_changes_nothing() {
    // Words that split_conditions refuses, passed straight to the batch: iptables-restore refuses
    // the whole batch, so even a missed check could not leave half an ADD behind.
    let ns: Netns = new_netns();
    ns.run(|| {
        let tools = Iptables::locate(false).unwrap();
        let before = nat_rules(&tools);
        for bad in [&["-j", "ACCEPT"][..], &["-A", "OUTPUT"], &["-t", "filter"], &["-N", "X"], &["-g", "OUTPUT"]] {
            let words: Vec<String> = bad.iter().map(|w| w.to_string()).collect();
            assert!(split_conditions(&words, "conditionsV4").is_err(), "{bad:?}");
            let r = Rules {
                network: "net1",
                container_id: "c1",
                mappings: &mapping(),
                address: "10.10.0.2/24".parse().unwrap(),
                snat: true,
                masq_all: false,
                mark_bit: 13,
                external_set_mark_chain: None,
                conditions: &words,
            };
            assert!(iptables_portmap::add(&r).is_err(), "{bad:?} was accepted by iptables-restore");
            assert_eq!(nat_rules(&tools), before, "{bad:?}");
        }
    })
    .unwrap();
}

/// The nat table as iptables-save prints it, without its comment lines: they carry the time of
/// day, so two saves a second apart differ although the rules do not.
fn nat_rules(tools: &Iptables) -> String {
    tools.save_nat().unwrap().lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n")
}
