//! Hostile values that reach the firewall through portmap: host addresses, `conditionsV4/V6` in
//! both styles, `externalSetMarkChain`, and inputs too big to handle. Each is refused with code 7
//! before anything changes, or confined to the one rule it belongs to: afterwards the sandbox host's
//! ruleset (`nft list ruleset`, `iptables-save`) holds exactly what a plain ADD would have made, and
//! a sentinel table that was there before is untouched.
//!
//! Every rule lives in a namespace the test made; nothing here touches the machine's firewall.

use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use testkit::{Invocation, Netns, Output, in_netns, ip, new_netns, nft_ruleset};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_portmap"))
}

/// A sandbox host with a bridge (10.10.0.1/24, fd10::1/64), a container namespace the prevResult
/// names, and a sentinel in both firewalls that must survive every invocation.
struct Host {
    ns: Netns,
    container: Netns,
}

const SENTINEL_NFT: &str = "table inet sentinel {\n\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\t\ttcp dport 9 accept\n\t}\n}\n";

impl Host {
    fn new() -> Host {
        let ns = new_netns();
        ip(&ns, "link set lo up");
        ip(&ns, "link add br0 type bridge");
        ip(&ns, "addr add 10.10.0.1/24 dev br0");
        ip(&ns, "addr add fd10::1/64 dev br0 nodad");
        ip(&ns, "link set br0 up");
        let h = Host { ns, container: new_netns() };
        h.sh("nft", &["-f", "-"], Some(SENTINEL_NFT));
        h.sh("iptables", &["-t", "filter", "-A", "INPUT", "-p", "tcp", "--dport", "9", "-j", "ACCEPT"], None);
        h
    }

    fn sh(&self, program: &str, args: &[&str], stdin: Option<&str>) -> String {
        use std::io::Write;
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
        let mut child = in_netns(&mut cmd, &self.ns).spawn().expect("running a firewall tool");
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        drop(pipe);
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{program} {args:?} failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Both families' iptables rules and chain declarations, all tables, without counters and
    /// comments iptables-save adds.
    fn iptables(&self) -> String {
        ["iptables-save", "ip6tables-save"]
            .iter()
            .flat_map(|tool| {
                self.sh(tool, &[], None)
                    .lines()
                    .filter(|l| !l.starts_with('#'))
                    .map(|l| l.split(" [").next().unwrap_or(l).to_string())
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The firewall with nothing of ours in it.
    fn pristine(&self) -> (String, String) {
        (nft_ruleset(&self.ns), self.iptables())
    }

    fn conf(&self, mappings: Value, extra: Value) -> Value {
        let mut conf = json!({
            "cniVersion": "1.0.0", "name": "net1", "type": "portmap",
            "runtimeConfig": {"portMappings": mappings},
            "prevResult": {
                "cniVersion": "1.0.0",
                "interfaces": [{"name": "eth0", "sandbox": self.container.path()}],
                "ips": [{"address": "10.10.0.2/24", "interface": 0}, {"address": "fd10::2/64", "interface": 0}]
            }
        });
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        conf
    }

    fn run_raw(&self, command: &str, stdin: &str) -> Output {
        Invocation::new(command, "ctr1", self.container.path(), "eth0", stdin).run(&bin(), &self.ns)
    }

    fn run(&self, command: &str, conf: &Value) -> Output {
        self.run_raw(command, &conf.to_string())
    }

    /// Asserts `conf` is refused with code 7 naming `want`, and that the firewall is as before.
    fn assert_refused(&self, conf: &Value, want: &str) {
        let before = self.pristine();
        let out = self.run("ADD", conf);
        assert_eq!(out.err_code(), 7, "{conf}: {}", out.stdout);
        let msg = out.json()["msg"].as_str().unwrap_or_default().to_string();
        assert!(msg.contains(want), "{msg:?} should mention {want:?}");
        assert_eq!(self.pristine(), before, "a refused ADD changed the firewall: {conf}");
    }
}

fn one() -> Value {
    json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}])
}

#[test]
fn host_ips_that_are_not_addresses_are_refused_with_either_backend() {
    let h = Host::new();
    let long = "1".repeat(100_000);
    for backend in ["nftables", "iptables"] {
        for host_ip in [
            "1.2.3.4; flush ruleset",
            "1.2.3.4\nadd table ip evil",
            "1.2.3.4 -j ACCEPT",
            "{1.2.3.4}",
            "1.2.3.4 # x",
            "\"1.2.3.4\"",
            "1.2.3.4/32",
            "fe80::1%eth0",
            "@hostip_v4",
            long.as_str(),
        ] {
            let conf = h
                .conf(json!([{"hostPort": 8080, "containerPort": 80, "hostIP": host_ip}]), json!({"backend": backend}));
            h.assert_refused(&conf, "portMappings[0].hostIP: invalid IP address");
        }
    }
    assert!(nft_ruleset(&h.ns).starts_with(SENTINEL_NFT) && !nft_ruleset(&h.ns).contains("cni_portmap"));
}

#[test]
fn nftables_conditions_are_refused_or_confined_to_their_rule() {
    let h = Host::new();
    let refused: &[(Value, &str)] = &[
        (json!(["ip saddr 1.2.3.4; add table ip evil"]), "unsupported condition"),
        (json!(["ip", "saddr", "1.2.3.4\nadd table ip evil"]), "unsupported condition"),
        (json!(["ip saddr { 10.0.0.1 } accept"]), "unsupported condition"),
        (json!(["iifname", "{", "eth0"]), "unsupported condition"),
        (json!(["iifname", "}"]), "unsupported condition"),
        (json!(["counter"]), "unsupported condition"),
        (json!(["# ip saddr 1.2.3.4"]), "unsupported condition"),
        (json!(["jump", "hostports"]), "unsupported condition"),
        (json!(["meta", "mark", "@hostport"]), "named sets and variables"),
        (json!(["iifname", "$evil"]), "named sets and variables"),
        (json!(["iifname", "x".repeat(1 << 20)]), "longer than 15 bytes"),
        (json!(vec!["iifname eth0"; 4097]), "at most 4096"),
    ];
    for (conditions, want) in refused {
        for key in ["conditionsV4", "conditionsV6"] {
            let conf = h.conf(one(), json!({"backend": "nftables", key: conditions}));
            h.assert_refused(&conf, want);
        }
    }

    // Characters with a meaning in nft's own syntax stay inside the one value they are part of.
    let conf = h.conf(
        one(),
        json!({"conditionsV4": ["iifname", "x;y#z\"", "ip", "saddr", "{", "\"10.0.0.1\",", "10.0.0.2", "}"]}),
    );
    h.run("ADD", &conf).ok();
    let rules = nft_ruleset(&h.ns);
    assert!(rules.starts_with(SENTINEL_NFT), "{rules}");
    // (iptables-nft keeps the iptables sentinel in `ip filter`.)
    let tables: Vec<&str> = rules.lines().filter(|l| l.starts_with("table ")).collect();
    assert_eq!(tables, ["table inet sentinel {", "table ip filter {", "table inet cni_portmap {"], "{rules}");
    let dnat: Vec<&str> = rules.lines().filter(|l| l.contains(" dnat ip to ") || l.contains(" dnat ip6 to ")).collect();
    assert_eq!(dnat.len(), 2, "one DNAT rule per family: {rules}");
    assert!(dnat[0].trim_start().starts_with(r#"iifname "x;y#z" ip saddr { 10.0.0.1, 10.0.0.2 } "#), "{rules}");
    assert!(!rules.contains("evil"), "{rules}");
    h.run("DEL", &conf).ok();
    assert_eq!(nft_ruleset(&h.ns).matches("chain pm-").count(), 0);
}

#[test]
fn iptables_conditions_and_chain_names_are_refused_or_confined_to_their_rule() {
    let h = Host::new();
    let refused: &[(&str, Value, &str)] = &[
        ("conditionsV4", json!(["-s 10.0.0.0/8 -j ACCEPT"]), "-j is not a match option"),
        ("conditionsV4", json!(["-s", "10.0.0.0/8", "--jump", "ACCEPT"]), "--jump is not a match option"),
        ("conditionsV4", json!(["-s", "10.0.0.0/8\n-A INPUT -j DROP"]), "line breaks"),
        ("conditionsV4", json!(["-s", "10.0.0.0/8\r-A INPUT -j DROP"]), "line breaks"),
        ("conditionsV4", json!(["-m comment --comment \"x\" -j ACCEPT"]), "quotes"),
        ("conditionsV4", json!(["-s 1.2.3.4 -A INPUT"]), "-A is not a match option"),
        ("conditionsV4", json!(["-t filter"]), "-t is not a match option"),
        ("conditionsV4", json!(["-M /tmp/evil"]), "-M is not a match option"),
        ("conditionsV4", json!(["--modprobe=/tmp/evil"]), "--modprobe is not a match option"),
        ("conditionsV6", json!(["! -d fd00::1 -g OUTPUT"]), "-g is not a match option"),
        ("conditionsV6", json!(["-fX"]), "-X is not a match option"),
    ];
    for (key, conditions, want) in refused {
        let conf = h.conf(one(), json!({"backend": "iptables", *key: conditions}));
        h.assert_refused(&conf, want);
    }
    for chain in ["KUBE-MARK-MASQ\n-A INPUT -j DROP", "X -j ACCEPT", "X;Y", "-X", "\"X\"", "X\\n"] {
        let conf = h.conf(one(), json!({"externalSetMarkChain": chain}));
        h.assert_refused(&conf, "externalSetMarkChain");
    }

    // Characters with a meaning elsewhere stay inside the one argument they are part of.
    let conf =
        h.conf(one(), json!({"backend": "iptables", "conditionsV4": ["-m", "comment", "--comment", "x;y#z{}COMMIT"]}));
    h.run("ADD", &conf).ok();
    let saved = h.iptables();
    let with_comment: Vec<&str> = saved.lines().filter(|l| l.contains("x;y#z{}COMMIT")).collect();
    assert_eq!(with_comment.len(), 1, "{saved}");
    assert!(with_comment[0].starts_with("-A CNI-HOSTPORT-DNAT ") && with_comment[0].contains(" -j CNI-DN-"), "{saved}");
    let input: Vec<&str> = saved.lines().filter(|l| l.starts_with("-A INPUT")).collect();
    assert_eq!(input, ["-A INPUT -p tcp -m tcp --dport 9 -j ACCEPT"], "{saved}");
    assert!(nft_ruleset(&h.ns).contains("table inet sentinel"));
    h.run("DEL", &conf).ok();
    assert!(!h.iptables().contains("CNI-DN-"), "{}", h.iptables());
}

#[test]
fn too_many_mappings_or_conditions_are_refused_at_once() {
    let h = Host::new();
    // 100,000 mappings are 3.7 MB: under the stdin cap, so the count must be what refuses them.
    // (Past 65,535 they repeat; the count is checked first.)
    let many: Vec<Value> = (0..100_000u32).map(|i| json!({"hostPort": i % 65535 + 1, "containerPort": 1})).collect();
    let conf = h.conf(Value::Array(many.clone()), json!({}));
    assert!(conf.to_string().len() < cni::skel::MAX_STDIN);
    for backend in ["nftables", "iptables"] {
        let mut conf = conf.clone();
        conf["backend"] = json!(backend);
        let started = Instant::now();
        h.assert_refused(&conf, "portMappings: 100000 mappings; at most 16384");
        assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    }
    h.assert_refused(&h.conf(Value::Array(many[..16385].to_vec()), json!({})), "at most 16384");
    // Duplicates are found in one pass, not by comparing every pair.
    let mut dup = many[..16384].to_vec();
    dup[16383] = dup[0].clone();
    let started = Instant::now();
    h.assert_refused(&h.conf(Value::Array(dup), json!({})), "portMappings[16383]: host port 1/tcp is published twice");
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());

    // Conditions are repeated in every mapping's rule: their product is bounded.
    let words = vec!["iifname eth0"; 64];
    h.assert_refused(
        &h.conf(Value::Array(many[..16384].to_vec()), json!({"conditionsV4": words})),
        "conditionsV4: 128 words, repeated in the rule of each of 16384 port mappings",
    );
    let set = format!(
        "ip saddr {{ {} }}",
        (0..4094).map(|i| format!("10.0.{}.{}", i / 256, i % 256)).collect::<Vec<_>>().join(",")
    );
    h.assert_refused(&h.conf(Value::Array(many[..1000].to_vec()), json!({"conditionsV6": [set]})), "exceed 1048576");

    // Many mappings that are allowed are published, in one transaction.
    let started = Instant::now();
    let conf = h.conf(Value::Array(many[..2000].to_vec()), json!({}));
    h.run("ADD", &conf).ok();
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
    assert_eq!(nft_ruleset(&h.ns).matches(" dnat ip to ").count(), 2000);
    h.run("DEL", &conf).ok();
}

#[test]
fn oversized_stdin_is_refused_before_anything_changes() {
    let h = Host::new();
    let before = h.pristine();
    let conf = h.conf(one(), json!({})).to_string();
    let over = format!("{conf}{}", " ".repeat(cni::skel::MAX_STDIN + 1 - conf.len()));
    let out = h.run_raw("ADD", &over);
    assert_eq!(out.err_code(), 6);
    assert!(out.json()["msg"].as_str().unwrap().contains("exceeds"), "{}", out.stdout);
    assert_eq!(h.pristine(), before);
}
