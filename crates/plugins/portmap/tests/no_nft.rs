//! A host without the `nft` program (Talos, Bottlerocket, minimal images): the built `bridge`
//! (with `host-local`) and `portmap` run through ADD, CHECK, STATUS, GC and DEL with `nft` hidden
//! from them (a private mount namespace binds /dev/null over every `nft` in PATH, /usr/sbin and
//! /sbin), on a fresh sandbox host where they must create their base tables themselves. Published
//! ports must work from outside, and nothing may be left afterwards.

use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use testkit::{Invocation, Netns, Output, TempDir, ip, new_netns, nft_ruleset, serve_peer_address, tcp_ask, udp_ask};

const NETWORK: &str = "nonft";

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct Host {
    ns: Netns,
    outside: Netns,
    ipam: TempDir,
}

impl Host {
    fn new() -> Host {
        let h = Host { ns: new_netns(), outside: new_netns(), ipam: TempDir::new("no-nft-ipam") };
        ip(&h.ns, "link set lo up");
        testkit::link_namespaces(&h.ns, "uplink", "198.51.100.1/24", &h.outside, "eth0", "198.51.100.2/24");
        h.ns.run(|| netkit::sysctl::write("net/ipv4/ip_forward", "1")).unwrap().unwrap();
        h
    }

    fn bridge_conf(&self, prev: Option<&Value>) -> Value {
        let mut c = json!({"cniVersion": "1.1.0", "name": NETWORK, "type": "bridge", "bridge": "br-nonft",
               "isGateway": true, "isDefaultGateway": true, "ipMasq": true, "hairpinMode": true,
               "macspoofchk": true,
               "ipam": {"type": "host-local", "dataDir": self.ipam.path().display().to_string(),
                        "ranges": [[{"subnet": "10.46.0.0/24"}]]}});
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        c
    }

    fn portmap_conf(prev: Option<&Value>, host_port: u16) -> Value {
        let mut c = json!({"cniVersion": "1.1.0", "name": NETWORK, "type": "portmap",
                           "runtimeConfig": {"portMappings": [
                               {"hostPort": host_port, "containerPort": 80, "protocol": "tcp"},
                               {"hostPort": host_port + 1, "containerPort": 53, "protocol": "udp"}]}});
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        c
    }

    fn run(&self, plugin: &str, verb: &str, id: &str, c: &Netns, conf: &Value) -> Output {
        Invocation::new(verb, id, c.path(), "eth0", &conf.to_string())
            .hide_nft()
            .run(&testkit::plugin(plugin), &self.ns)
    }

    /// ADD through bridge and portmap; returns portmap's result (the chain's final result).
    fn add(&self, id: &str, c: &Netns, host_port: u16) -> Value {
        let prev = self.run("bridge", "ADD", id, c, &self.bridge_conf(None)).ok();
        self.run("portmap", "ADD", id, c, &Host::portmap_conf(Some(&prev), host_port)).ok()
    }

    fn check(&self, id: &str, c: &Netns, host_port: u16, result: &Value) {
        self.run("portmap", "CHECK", id, c, &Host::portmap_conf(Some(result), host_port)).ok();
        self.run("bridge", "CHECK", id, c, &self.bridge_conf(Some(result))).ok();
    }

    fn del(&self, id: &str, c: &Netns, host_port: u16, result: &Value) {
        self.run("portmap", "DEL", id, c, &Host::portmap_conf(Some(result), host_port)).ok();
        self.run("bridge", "DEL", id, c, &self.bridge_conf(Some(result))).ok();
    }

    /// GC and STATUS take no container.
    fn verb(&self, plugin: &str, verb: &str, conf: Value) -> Output {
        Invocation::new(verb, "", "", "", &conf.to_string())
            .var("CNI_CONTAINERID", None)
            .var("CNI_NETNS", None)
            .var("CNI_IFNAME", None)
            .hide_nft()
            .run(&testkit::plugin(plugin), &self.ns)
    }
}

/// A container serving TCP on 80 and UDP on 53 (answers: the peer address it sees).
fn container() -> Netns {
    let ns = new_netns();
    ip(&ns, "link set lo up");
    serve_peer_address(&ns, sock("0.0.0.0:80"));
    testkit::serve_udp_peer_address(&ns, sock("0.0.0.0:53"));
    ns
}

#[test]
fn the_hiding_works() {
    let h = Host::new();
    let script = "for p in $(echo $PATH | tr : ' ') /usr/sbin /sbin; do test -f $p/nft && echo found $p/nft; done; \
                  nft --version && echo ran nft; exit 0";
    let out = Invocation::new("ADD", "x", h.ns.path(), "eth0", script).hide_nft().run(Path::new("/bin/sh"), &h.ns);
    assert!(out.success(), "{out:?}");
    assert!(!out.stdout.contains("found") && !out.stdout.contains("ran nft"), "{}", out.stdout);
}

#[test]
fn bridge_and_portmap_work_without_the_nft_program() {
    let h = Host::new();
    for (plugin, conf) in [("bridge", h.bridge_conf(None)), ("portmap", Host::portmap_conf(None, 8080))] {
        assert_eq!(h.verb(plugin, "STATUS", conf).ok(), Value::Null, "{plugin} STATUS");
    }
    let (a, b) = (container(), container());
    let ra = h.add("ctr-a", &a, 8080);
    let rb = h.add("ctr-b", &b, 9090);
    h.check("ctr-a", &a, 8080, &ra);
    h.check("ctr-b", &b, 9090, &rb);
    let addr_of = |r: &Value| r["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string();
    // The published ports reach each container with the client's address intact.
    assert_eq!(tcp_ask(&h.outside, sock("198.51.100.1:8080")).as_deref(), Some("198.51.100.2"));
    assert_eq!(tcp_ask(&h.outside, sock("198.51.100.1:9090")).as_deref(), Some("198.51.100.2"));
    assert_eq!(udp_ask(&h.outside, sock("0.0.0.0:0"), sock("198.51.100.1:8081")).as_deref(), Some("198.51.100.2"));
    // Masquerade: a container reaching outside is seen as the host.
    assert_ne!(addr_of(&ra), "198.51.100.1");
    serve_peer_address(&h.outside, sock("198.51.100.2:7000"));
    assert_eq!(tcp_ask(&a, sock("198.51.100.2:7000")).as_deref(), Some("198.51.100.1"));
    let tables = nft_ruleset(&h.ns);
    for table in ["table inet cni_portmap", "table inet cni_bridge", "table bridge cni_bridge"] {
        assert!(tables.contains(table), "{table} was created natively: {tables}");
    }

    // GC keeps a and removes b.
    let valid = json!([{"containerID": "ctr-a", "ifname": "eth0"}]);
    for (plugin, mut conf) in [("portmap", Host::portmap_conf(None, 8080)), ("bridge", h.bridge_conf(None))] {
        conf["cni.dev/valid-attachments"] = valid.clone();
        h.verb(plugin, "GC", conf).ok();
    }
    assert!(tcp_ask(&h.outside, sock("198.51.100.1:9090")).is_none(), "b's port is gone after GC");
    assert_eq!(tcp_ask(&h.outside, sock("198.51.100.1:8080")).as_deref(), Some("198.51.100.2"), "a's port stays");
    h.check("ctr-a", &a, 8080, &ra);
    let rules = nft_ruleset(&h.ns);
    assert!(!rules.contains(&addr_of(&rb)), "b's entries are gone: {rules}");

    // DEL of both (b's again: idempotent), then nothing of them is left.
    h.del("ctr-a", &a, 8080, &ra);
    h.del("ctr-b", &b, 9090, &rb);
    assert!(tcp_ask(&h.outside, sock("198.51.100.1:8080")).is_none());
    let rules = nft_ruleset(&h.ns);
    for leftover in ["chain pm-", "chain pms-", "chain masq-", "chain spoof-", "id: ctr-", ": jump", ": goto"] {
        assert!(!rules.contains(leftover), "{leftover:?} left: {rules}");
    }
    assert_eq!(testkit::host_local_leftovers(&h.ipam.path().join(NETWORK)), Vec::<String>::new());
    let links = ip(&h.ns, "-o link show");
    assert!(!links.contains("veth"), "{links}");
}
