//! Hostile configs for the built `bridge` binary: an IPAM `type` that is a path, bridge names the
//! kernel or nftables would read as something else, inputs too big to handle, and the longest
//! names allowed, which must still fit every name and comment derived from them. Refusals are
//! code 7 and happen before anything is created.
//!
//! Everything happens in namespaces the test made.

use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use testkit::{Invocation, Netns, Output, TempDir, ip, ip_json, new_netns, nft_ruleset};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bridge"))
}

struct Host {
    ns: Netns,
    container: Netns,
    dir: TempDir,
}

impl Host {
    fn new() -> Host {
        let host = Host { ns: new_netns(), container: new_netns(), dir: TempDir::new("bridge-security") };
        ip(&host.ns, "link set lo up");
        host
    }

    fn conf(&self, extra: Value) -> Value {
        let mut conf = json!({
            "cniVersion": "1.0.0", "name": "net1", "type": "bridge", "bridge": "br-sec", "isGateway": true,
            "ipam": {"type": "host-local", "dataDir": self.dir.path().join("ipam").display().to_string(),
                     "ranges": [[{"subnet": "10.10.0.0/24"}]]}
        });
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        conf
    }

    fn invoke(&self, command: &str, cid: &str, conf: &Value) -> Invocation {
        Invocation::new(command, cid, self.container.path(), "eth0", &conf.to_string())
    }

    fn run(&self, command: &str, cid: &str, conf: &Value) -> Output {
        self.invoke(command, cid, conf).run(&bin(), &self.ns)
    }

    /// Every link in the host and the container but `lo`.
    fn links(&self) -> Vec<String> {
        [&self.ns, &self.container]
            .iter()
            .flat_map(|ns| {
                ip_json(ns, "link show")
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|l| l["ifname"].as_str().map(str::to_string))
                    .filter(|n| n != "lo")
            })
            .collect()
    }

    fn iptables_nat(&self) -> String {
        testkit::iptables_nat(&self.ns)
    }
}

fn assert_refused(out: &Output, want: &str) {
    assert_eq!(out.err_code(), 7, "{}", out.stdout);
    let msg = out.json()["msg"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains(want), "{msg:?} should mention {want:?}");
}

#[test]
fn ipam_types_that_are_paths_are_refused_before_anything_runs() {
    let h = Host::new();
    // CNI_PATH is dir/bin; a program one level up would leave a marker if it ever ran.
    let bin_dir = h.dir.path().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    let marker = h.dir.path().join("ran");
    let evil = h.dir.path().join("evil");
    std::fs::write(&evil, format!("#!/bin/sh\ntouch {}\n", marker.display())).unwrap();
    std::fs::set_permissions(&evil, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(bin_dir.join("sub")).unwrap();
    for t in ["../evil", evil.to_str().unwrap(), "sub/../../evil", "/bin/sh", "..", "."] {
        let conf = h.conf(json!({"ipam": {"type": t}}));
        for verb in ["ADD", "DEL", "CHECK"] {
            let out = h.invoke(verb, "c1", &conf).var("CNI_PATH", Some(bin_dir.to_str().unwrap())).run(&bin(), &h.ns);
            assert_refused(&out, "ipam.type: invalid plugin type");
        }
    }
    assert!(!marker.exists(), "a program outside CNI_PATH was executed");
    assert!(h.links().is_empty(), "a refused ADD created {:?}", h.links());
}

#[test]
fn bridge_names_the_kernel_or_nftables_would_misread_are_refused() {
    let h = Host::new();
    for (name, want) in [
        ("br%d", "name template"),
        ("../x", "contains / or :"),
        ("br0\n", "contains / or :"),
        ("0123456789abcdef", "too long"),
        ("@isolated", "may not start with @"),
        ("$br", "may not start with @"),
        ("br*", "contain *"),
        ("br\\", "contain *"),
        ("br\"", "contain *"),
    ] {
        let conf = h.conf(json!({"bridge": name, "isolation": true, "ipMasq": true}));
        assert_refused(&h.run("ADD", "c1", &conf), want);
    }
    assert!(h.links().is_empty(), "a refused ADD created {:?}", h.links());
    assert!(!nft_ruleset(&h.ns).contains("table"), "{}", nft_ruleset(&h.ns));
    assert!(!h.dir.path().join("ipam").exists(), "a refused ADD allocated an address");
}

#[test]
fn a_hundred_thousand_trunk_entries_take_bounded_time() {
    let h = Host::new();
    let trunk: Vec<Value> = (0..100_000).map(|_| json!({"minID": 1, "maxID": 4094})).collect();
    let conf = h.conf(json!({"vlanTrunk": trunk}));
    // Parsing is all this is about: a netns that does not exist ends the ADD right after it.
    let started = Instant::now();
    let out = Invocation::new("ADD", "c1", "/proc/self/task/0/ns/net", "eth0", &conf.to_string()).run(&bin(), &h.ns);
    assert_eq!(out.err_code(), 3, "{}", out.stdout);
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    assert!(h.links().is_empty());
}

#[test]
fn the_longest_names_allowed_fit_every_name_and_comment_derived_from_them() {
    let h = Host::new();
    let network = "n".repeat(cni::config::MAX_NETWORK_NAME);
    let id = "c".repeat(cni::env::MAX_CONTAINER_ID);
    for backend in ["iptables", "nftables"] {
        let mut conf = h.conf(json!({"ipMasq": true, "ipMasqBackend": backend}));
        conf["name"] = json!(network);
        let result = h.run("ADD", &id, &conf).ok();
        assert!(result["ips"][0]["address"].as_str().is_some_and(|a| a.starts_with("10.10.0.")), "{result}");
        if backend == "iptables" {
            // The reference's comment, whole: GC finds the container ID in it.
            let saved = h.iptables_nat();
            assert!(saved.contains(&format!(r#"--comment "name: \"{network}\" id: \"{id}\"""#)), "{saved}");
        } else {
            assert!(nft_ruleset(&h.ns).contains("masq-"), "{}", nft_ruleset(&h.ns));
        }
        let mut prev = conf.clone();
        prev["prevResult"] = result;
        h.run("DEL", &id, &prev).ok();
        assert!(!h.iptables_nat().contains("CNI-"), "{}", h.iptables_nat());
        assert!(!nft_ruleset(&h.ns).contains("masq-"), "{}", nft_ruleset(&h.ns));
    }

    // One byte more of either is refused before anything is created.
    ip(&h.ns, "link del br-sec");
    let mut conf = h.conf(json!({"ipMasq": true}));
    conf["name"] = json!(format!("{network}n"));
    assert_refused(&h.run("ADD", &id, &conf), "at most 100");
    conf["name"] = json!(network);
    assert_eq!(h.run("ADD", &format!("{id}c"), &conf).err_code(), 4);
    assert!(h.links().is_empty(), "{:?}", h.links());
}
