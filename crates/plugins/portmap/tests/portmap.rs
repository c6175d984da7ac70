//! Kernel tests: the built `portmap` binary publishing ports of containers on a bridge in a sandbox
//! host, with real traffic from an "outside" namespace, from the host itself, from the container
//! itself (hairpin) and from a neighbour on the same bridge. Every address belongs to a namespace
//! the test made.

use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use testkit::{Invocation, Netns, Output, ip, new_netns, nft_ruleset, serve_peer_address, tcp_ask, udp_ask};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_portmap"))
}

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A host with a bridge `br0` (10.10.0.1/24, fd10::1/64) and an uplink to `outside`
/// (198.51.100.1 / 2001:db8:1::1 on the host, .2 / ::2 outside).
struct Host {
    ns: Netns,
    outside: Netns,
    next: u8,
}

/// A container on the bridge, and the prevResult a bridge plugin would have returned for it.
struct Container {
    ns: Netns,
    id: String,
    prev: Value,
}

impl Host {
    fn new() -> Host {
        let ns = new_netns();
        let outside = new_netns();
        ip(&ns, "link set lo up");
        testkit::link_namespaces(&ns, "uplink", "198.51.100.1/24", &outside, "eth0", "198.51.100.2/24");
        ip(&ns, "addr add 2001:db8:1::1/64 dev uplink nodad");
        ip(&outside, "addr add 2001:db8:1::2/64 dev eth0 nodad");
        for (br, n) in [("br0", 10), ("br1", 20)] {
            ip(&ns, &format!("link add {br} type bridge"));
            testkit::set_sysctl(&ns, &format!("net/ipv6/conf/{br}/accept_dad"), "0");
            ip(&ns, &format!("addr add 10.{n}.0.1/24 dev {br}"));
            ip(&ns, &format!("addr add fd{n}::1/64 dev {br} nodad"));
            ip(&ns, &format!("link set {br} up"));
        }
        for sysctl in ["net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"] {
            ns.run(|| netkit::sysctl::write(sysctl, "1")).unwrap().unwrap();
        }
        Host { ns, outside, next: 2 }
    }

    /// Attaches `ns` to bridge `br` (10.`net`.0.0/24, fd`net`::/64) as interface `ifname` with
    /// host number `n`, as the bridge plugin would with `hairpinMode: true`. Returns the host end.
    fn attach(&self, ns: &Netns, br: &str, net: u8, ifname: &str, n: u8) -> String {
        let veth = format!("vh{net}x{n}");
        let mut rtnl = netkit::Rtnl::open_in(&self.ns).unwrap();
        rtnl.create_veth(&netkit::VethPair {
            name: &veth,
            peer_name: ifname,
            peer_ns: Some(std::os::fd::AsFd::as_fd(&**ns)),
            ..Default::default()
        })
        .unwrap();
        ip(&self.ns, &format!("link set {veth} master {br} up"));
        // Hairpin: the bridge may send a frame back out the port it came in on, which a container
        // reaching its own published port needs (the reference relies on the same flag).
        ip(&self.ns, &format!("link set {veth} type bridge_slave hairpin on"));
        testkit::set_sysctl(ns, &format!("net/ipv6/conf/{ifname}/accept_dad"), "0");
        ip(ns, &format!("addr add 10.{net}.0.{n}/24 dev {ifname}"));
        ip(ns, &format!("addr add fd{net}::{n}/64 dev {ifname} nodad"));
        ip(ns, &format!("link set {ifname} up"));
        veth
    }

    /// A container on br0 with the next addresses, serving TCP and UDP on port 80 and 53 that
    /// answer with the peer address they see.
    fn container(&mut self) -> Container {
        let n = self.next;
        self.next += 1;
        let ns = new_netns();
        ip(&ns, "link set lo up");
        let veth = self.attach(&ns, "br0", 10, "eth0", n);
        ip(&ns, "route add default via 10.10.0.1");
        ip(&ns, "-6 route add default via fd10::1");
        serve_peer_address(&ns, sock("[::]:80"));
        testkit::serve_udp_peer_address(&ns, sock("[::]:53"));
        let prev = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "br0"}, {"name": veth}, {"name": "eth0", "sandbox": ns.path()}],
            "ips": [
                {"address": format!("10.10.0.{n}/24"), "gateway": "10.10.0.1", "interface": 2},
                {"address": format!("fd10::{n}/64"), "gateway": "fd10::1", "interface": 2}
            ]
        });
        Container { ns, id: format!("ctr{n}"), prev }
    }

    fn conf(network: &str, prev: &Value, mappings: Value, extra: Value) -> Value {
        let mut conf = json!({
            "cniVersion": "1.0.0", "name": network, "type": "portmap",
            "capabilities": {"portMappings": true},
            "runtimeConfig": {"portMappings": mappings},
            "prevResult": prev
        });
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        conf
    }

    fn run(&self, command: &str, c: &Container, ifname: &str, conf: &Value) -> Output {
        Invocation::new(command, &c.id, c.ns.path(), ifname, &conf.to_string()).run(&bin(), &self.ns)
    }
}

fn web() -> Value {
    json!([
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 8081, "containerPort": 80, "protocol": "tcp", "hostIP": "198.51.100.1"},
        {"hostPort": 5353, "containerPort": 53, "protocol": "udp"}
    ])
}

#[test]
fn published_ports_are_reachable_from_everywhere_they_should_be() {
    let mut h = Host::new();
    let a = h.container();
    let b = h.container();
    let conf = Host::conf("net1", &a.prev, web(), json!({}));
    let out = h.run("ADD", &a, "eth0", &conf).ok();
    assert_eq!(out, a.prev, "portmap must return prevResult unchanged");

    // From outside: the container sees the real client address.
    assert_eq!(tcp_ask(&h.outside, sock("198.51.100.1:8080")).as_deref(), Some("198.51.100.2"));
    assert_eq!(tcp_ask(&h.outside, sock("[2001:db8:1::1]:8080")).as_deref(), Some("2001:db8:1::2"), "IPv6");
    assert_eq!(udp_ask(&h.outside, sock("0.0.0.0:0"), sock("198.51.100.1:5353")).as_deref(), Some("198.51.100.2"));
    // A specific host address: only that one.
    assert_eq!(tcp_ask(&h.outside, sock("198.51.100.1:8081")).as_deref(), Some("198.51.100.2"));
    ip(&h.ns, "addr add 198.51.100.3/24 dev uplink");
    assert_eq!(tcp_ask(&h.outside, sock("198.51.100.3:8080")).as_deref(), Some("198.51.100.2"), "any address");
    assert_eq!(tcp_ask(&h.outside, sock("198.51.100.3:8081")), None, "8081 is published on 198.51.100.1 only");

    // From the host itself, to localhost: route_localnet and masquerade.
    assert_eq!(tcp_ask(&h.ns, sock("127.0.0.1:8080")).as_deref(), Some("10.10.0.1"));
    // Hairpin: the container reaches its own published port through the host's address.
    assert_eq!(tcp_ask(&a.ns, sock("198.51.100.1:8080")).as_deref(), Some("10.10.0.1"));
    // A neighbour on the same bridge reaches it too (its replies must come back through the host).
    assert_eq!(tcp_ask(&b.ns, sock("198.51.100.1:8080")).as_deref(), Some("10.10.0.1"));
    assert_eq!(tcp_ask(&b.ns, sock("[2001:db8:1::1]:8080")).as_deref(), Some("fd10::1"), "IPv6 neighbour");

    assert_eq!(h.run("CHECK", &a, "eth0", &conf).ok(), Value::Null);
    h.run("DEL", &a, "eth0", &conf).ok();
    assert_eq!(tcp_ask(&h.outside, sock("198.51.100.1:8080")), None);
    let rules = nft_ruleset(&h.ns);
    assert!(!rules.contains("dnat ip to") && !rules.contains("chain pm-") && !rules.contains("chain pms-"), "{rules}");
    assert!(!rules.contains("10.10.0.2") && !rules.contains("masquerade comment"), "{rules}");
    assert!(h.run("CHECK", &a, "eth0", &conf).err_code() > 0);
    // Idempotent.
    h.run("DEL", &a, "eth0", &conf).ok();
}

#[test]
fn del_without_mappings_or_prev_result_removes_everything() {
    let mut h = Host::new();
    let a = h.container();
    let conf = Host::conf("net1", &a.prev, web(), json!({}));
    h.run("ADD", &a, "eth0", &conf).ok();
    let mut bare = json!({"cniVersion": "1.0.0", "name": "net1", "type": "portmap"});
    h.run("DEL", &a, "eth0", &bare).ok();
    assert_eq!(tcp_ask(&h.outside, sock("198.51.100.1:8080")), None);
    let rules = nft_ruleset(&h.ns);
    assert!(!rules.contains("pm-") && !rules.contains("pms-") && !rules.contains("10.10.0.2"), "{rules}");
    bare["prevResult"] = a.prev.clone();
    h.run("DEL", &a, "eth0", &bare).ok();
}

#[test]
fn del_without_mappings_reads_only_the_attachments_own_chains() {
    // Runtimes send DEL without portMappings for every pod; its cost must not grow with the ports
    // the node publishes, so it reads the attachment's two chains by name and never lists the table.
    let mut h = Host::new();
    let others: Vec<Container> = (0..3).map(|_| h.container()).collect();
    for (i, c) in others.iter().enumerate() {
        let m = json!([{"hostPort": 9000 + i, "containerPort": 80}, {"hostPort": 9100 + i, "containerPort": 53, "protocol": "udp"}]);
        h.run("ADD", c, "eth0", &Host::conf("net1", &c.prev, m, json!({}))).ok();
    }
    let a = h.container();
    h.run("ADD", &a, "eth0", &Host::conf("net1", &a.prev, web(), json!({}))).ok();
    let bare = json!({"cniVersion": "1.0.0", "name": "net1", "type": "portmap"});
    // One that published ports, and one that never did.
    let never = h.container();
    for who in [&a, &never] {
        let out = Invocation::new("DEL", &who.id, who.ns.path(), "eth0", &bare.to_string())
            .var("CNI_RS_TRACE", Some("1"))
            .run(&bin(), &h.ns);
        assert!(out.success(), "{}", out.stderr);
        assert!(out.stderr.contains("portmap chains read"), "{}", out.stderr);
        assert!(!out.stderr.contains("portmap table listed"), "DEL listed the whole table: {}", out.stderr);
    }
    assert_eq!(tcp_ask(&h.outside, sock("198.51.100.1:8080")), None);
    assert!(tcp_ask(&h.outside, sock("198.51.100.1:9000")).is_some(), "another container's port went");
    assert!(!nft_ruleset(&h.ns).contains(&a.id), "{}", nft_ruleset(&h.ns));
}

#[test]
fn del_with_mappings_but_no_prev_result_reads_the_chains_back() {
    // Below 0.4.0 libcni passes no prevResult on DEL, but the mappings still come as runtimeConfig
    // (kind's chain is 0.3.1): the container's addresses come from the attachment's own chains, in
    // one transaction, without a listing of the table (a failed transaction first costs an RCU
    // grace period).
    let mut h = Host::new();
    let other = h.container();
    let m = json!([{"hostPort": 9000, "containerPort": 80}]);
    h.run("ADD", &other, "eth0", &Host::conf("net1", &other.prev, m, json!({}))).ok();
    let a = h.container();
    let mut conf = Host::conf("net1", &a.prev, web(), json!({}));
    h.run("ADD", &a, "eth0", &conf).ok();
    conf.as_object_mut().unwrap().remove("prevResult");
    conf["cniVersion"] = json!("0.3.1");
    let out = Invocation::new("DEL", &a.id, a.ns.path(), "eth0", &conf.to_string())
        .var("CNI_RS_TRACE", Some("1"))
        .run(&bin(), &h.ns);
    assert!(out.success(), "{}", out.stderr);
    assert!(out.stderr.contains("portmap chains read"), "{}", out.stderr);
    assert!(!out.stderr.contains("portmap table listed"), "DEL fell back to a listing: {}", out.stderr);
    assert_eq!(tcp_ask(&h.outside, sock("198.51.100.1:8080")), None);
    let rules = nft_ruleset(&h.ns);
    assert!(!rules.contains(&a.id) && !rules.contains("10.10.0.3"), "{rules}");
    assert!(tcp_ask(&h.outside, sock("198.51.100.1:9000")).is_some(), "another container's port went");
    // Idempotent.
    h.run("DEL", &a, "eth0", &conf).ok();
}

/// Processes running the program at `path`.
fn running(path: &std::path::Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == path))
        .collect()
}

#[test]
fn del_returns_before_the_sockets_release_and_leaves_no_process() {
    // DEL's last act is a deletion; a forked child releases the nfnetlink socket after an RCU grace
    // period (Nft::close_without_waiting). It must end on its own, and the mappings be gone when
    // DEL returns. A copy of the binary tells its processes from other tests'.
    let mut h = Host::new();
    let a = h.container();
    let dir = testkit::TempDir::new("portmap-del");
    let copy = dir.path().join("portmap");
    std::fs::copy(bin(), &copy).unwrap();
    let conf = Host::conf("net1", &a.prev, json!([{"hostPort": 8080, "containerPort": 80}]), json!({}));
    let run = |verb: &str| {
        let out = Invocation::new(verb, &a.id, a.ns.path(), "eth0", &conf.to_string())
            .var("CNI_RS_TRACE", Some("1"))
            .run(&copy, &h.ns);
        assert!(out.success(), "{}", out.stderr);
        out
    };
    run("ADD");
    assert!(tcp_ask(&h.outside, sock("198.51.100.1:8080")).is_some());
    let out = run("DEL");
    assert!(out.stderr.contains("nftables socket closed"), "{}", out.stderr);
    assert_eq!(tcp_ask(&h.outside, sock("198.51.100.1:8080")), None);
    assert!(!nft_ruleset(&h.ns).contains(&a.id), "{}", nft_ruleset(&h.ns));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !running(&copy).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(running(&copy), Vec::<u32>::new(), "a process of DEL is still running 5 s later");
}

#[test]
fn two_networks_on_one_container_are_separate() {
    let mut h = Host::new();
    let a = h.container();
    let net1 = Host::conf("net1", &a.prev, json!([{"hostPort": 8080, "containerPort": 80}]), json!({}));
    // The same container on a second network, br1, through a second interface.
    let veth = h.attach(&a.ns, "br1", 20, "net1", 2);
    let prev2 = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "br1"}, {"name": veth}, {"name": "net1", "sandbox": a.ns.path()}],
        "ips": [{"address": "10.20.0.2/24", "interface": 2}, {"address": "fd20::2/64", "interface": 2}]
    });
    let net2 = Host::conf("net2", &prev2, json!([{"hostPort": 9090, "containerPort": 80}]), json!({}));
    h.run("ADD", &a, "eth0", &net1).ok();
    h.run("ADD", &a, "net1", &net2).ok();
    assert!(tcp_ask(&h.outside, sock("198.51.100.1:8080")).is_some());
    assert!(tcp_ask(&h.outside, sock("198.51.100.1:9090")).is_some());
    h.run("DEL", &a, "eth0", &net1).ok();
    assert!(tcp_ask(&h.outside, sock("198.51.100.1:8080")).is_none());
    assert!(tcp_ask(&h.outside, sock("198.51.100.1:9090")).is_some(), "DEL on net1 removed net2's mapping");
    assert_eq!(h.run("CHECK", &a, "net1", &net2).ok(), Value::Null);
}

#[test]
fn conditions_apply_to_their_own_network_only() {
    let mut h = Host::new();
    let a = h.container();
    let b = h.container();
    // net1 only answers clients from 192.0.2.0/24 (not the outside namespace); net2 answers all.
    let net1 = Host::conf(
        "net1",
        &a.prev,
        json!([{"hostPort": 8080, "containerPort": 80}]),
        json!({"conditionsV4": ["ip saddr 192.0.2.0/24"]}),
    );
    let net2 = Host::conf("net2", &b.prev, json!([{"hostPort": 9090, "containerPort": 80}]), json!({}));
    h.run("ADD", &a, "eth0", &net1).ok();
    h.run("ADD", &b, "eth0", &net2).ok();
    assert_eq!(tcp_ask(&h.outside, sock("198.51.100.1:8080")), None, "net1's condition was ignored");
    assert!(tcp_ask(&h.outside, sock("198.51.100.1:9090")).is_some(), "net1's condition leaked onto net2");
}

#[test]
fn stale_udp_flows_are_flushed_so_a_recreated_container_gets_traffic() {
    let mut h = Host::new();
    let old = h.container();
    let mappings = json!([{"hostPort": 5353, "containerPort": 53, "protocol": "udp"}]);
    h.run("ADD", &old, "eth0", &Host::conf("net1", &old.prev, mappings.clone(), json!({}))).ok();
    let client = sock("0.0.0.0:40053");
    assert!(udp_ask(&h.outside, client, sock("198.51.100.1:5353")).is_some());
    // The container goes away without DEL; a new one takes the port. The old flow's conntrack
    // entry would send the same client to the old address.
    drop(old);
    let new = h.container();
    h.run("ADD", &new, "eth0", &Host::conf("net1", &new.prev, mappings.clone(), json!({}))).ok();
    assert!(
        udp_ask(&h.outside, client, sock("198.51.100.1:5353")).is_some(),
        "stale conntrack entry kept traffic from the new container"
    );
    // DEL flushes too.
    h.run("DEL", &new, "eth0", &Host::conf("net1", &new.prev, mappings, json!({}))).ok();
    let entries = String::from_utf8(
        testkit::in_netns(std::process::Command::new("conntrack").args(["-L", "-p", "udp", "--dport", "5353"]), &h.ns)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(entries.trim().is_empty(), "conntrack entries left after DEL: {entries}");
}

#[test]
fn no_mappings_means_no_change() {
    let mut h = Host::new();
    let a = h.container();
    let conf = Host::conf("net1", &a.prev, json!([]), json!({}));
    assert_eq!(h.run("ADD", &a, "eth0", &conf).ok(), a.prev);
    assert!(!nft_ruleset(&h.ns).contains("cni_portmap"));
    let mut no_prev = conf.clone();
    no_prev.as_object_mut().unwrap().remove("prevResult");
    let out = h.run("ADD", &a, "eth0", &no_prev);
    assert_eq!(out.err_code(), 7);
    assert!(out.stdout.contains("chained plugin"), "{}", out.stdout);
}

#[test]
fn bad_mappings_change_nothing() {
    let mut h = Host::new();
    let a = h.container();
    for m in [
        json!([{"hostPort": 8080, "containerPort": 0}]),
        json!([{"hostPort": 8080, "containerPort": 80, "protocol": "gre"}]),
    ] {
        assert_eq!(h.run("ADD", &a, "eth0", &Host::conf("net1", &a.prev, m, json!({}))).err_code(), 7);
    }
    assert!(!nft_ruleset(&h.ns).contains("cni_portmap"));
}

/// Who answers on the host's published port 8080, from outside, over `family`'s address.
fn holder_of_8080(h: &Host, v6: bool) -> Option<String> {
    tcp_ask(&h.outside, sock(if v6 { "[2001:db8:1::1]:8080" } else { "198.51.100.1:8080" }))
}

/// A container that answers on port 81 with its own ID, and 8080 published to it.
fn named(h: &mut Host) -> (Container, Value) {
    let c = h.container();
    testkit::serve_text(&c.ns, sock("[::]:81"), &c.id);
    (c, json!([{"hostPort": 8080, "containerPort": 81, "protocol": "tcp"}]))
}

#[test]
fn a_contested_port_stays_with_its_first_holder_and_passes_to_the_next() {
    let mut h = Host::new();
    let (a, m) = named(&mut h);
    let (b, _) = named(&mut h);
    let conf = |c: &Container| Host::conf("net1", &c.prev, m.clone(), json!({}));
    let bare = json!({"cniVersion": "1.0.0", "name": "net1", "type": "portmap"});
    h.run("ADD", &a, "eth0", &conf(&a)).ok();
    let second = h.run("ADD", &b, "eth0", &conf(&b));
    assert!(second.success(), "{}", second.stderr);
    assert!(second.stderr.contains("held by"), "the contest is not logged: {}", second.stderr);
    assert_eq!(holder_of_8080(&h, false).as_deref(), Some(a.id.as_str()), "the first holder lost the port");
    assert_eq!(holder_of_8080(&h, true).as_deref(), Some(a.id.as_str()));
    for c in [&a, &b] {
        assert_eq!(h.run("CHECK", c, "eth0", &conf(c)).ok(), Value::Null);
    }

    // The second holder's DEL leaves the first alone; a third joins behind the first.
    h.run("DEL", &b, "eth0", &conf(&b)).ok();
    assert_eq!(holder_of_8080(&h, false).as_deref(), Some(a.id.as_str()), "B's DEL took A's port");
    h.run("ADD", &b, "eth0", &conf(&b)).ok();
    // The first holder goes (DEL without mappings, as runtimes send it): the next takes over.
    h.run("DEL", &a, "eth0", &bare).ok();
    assert_eq!(holder_of_8080(&h, false).as_deref(), Some(b.id.as_str()), "the port did not pass on");
    assert_eq!(holder_of_8080(&h, true).as_deref(), Some(b.id.as_str()));
    assert_eq!(h.run("CHECK", &b, "eth0", &conf(&b)).ok(), Value::Null);
    h.run("DEL", &b, "eth0", &conf(&b)).ok();
    assert_eq!(holder_of_8080(&h, false), None);
    let rules = nft_ruleset(&h.ns);
    assert!(!rules.contains("key-") && !rules.contains("pm-") && !rules.contains("8080"), "{rules}");
}

#[test]
fn concurrent_adds_and_dels_of_one_port_leave_it_with_a_holder_then_nothing() {
    let mut h = Host::new();
    let containers: Vec<(Container, Value)> = (0..6).map(|_| named(&mut h)).collect();
    let conf = |c: &Container, m: &Value| Host::conf("net1", &c.prev, m.clone(), json!({}));
    let spawn_all = |command: &str, which: &[&(Container, Value)]| {
        let children: Vec<_> = which
            .iter()
            .map(|(c, m)| {
                Invocation::new(command, &c.id, c.ns.path(), "eth0", &conf(c, m).to_string()).spawn(&bin(), Some(&h.ns))
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{command}: {}", String::from_utf8_lossy(&out.stderr));
        }
    };
    let all: Vec<&(Container, Value)> = containers.iter().collect();
    spawn_all("ADD", &all);
    let holder = holder_of_8080(&h, false).expect("nobody answers on the contested port");
    assert!(containers.iter().any(|(c, _)| c.id == holder), "{holder}");
    // Half go at once, the holder among them: one of the rest answers.
    let (going, staying): (Vec<_>, Vec<_>) =
        all.iter().copied().partition(|(c, _)| c.id == holder || c.id.ends_with(['3', '5']));
    spawn_all("DEL", &going);
    let next = holder_of_8080(&h, false).expect("the port went with its holder");
    assert!(staying.iter().any(|(c, _)| c.id == next), "{next} was deleted");
    spawn_all("DEL", &staying);
    let rules = nft_ruleset(&h.ns);
    assert!(!rules.contains("key-") && !rules.contains("pm-"), "{rules}");
}

#[test]
fn ipv4_and_ipv6_holders_of_one_port_both_answer() {
    let mut h = Host::new();
    let (a, m) = named(&mut h);
    let (b, _) = named(&mut h);
    // a has only its IPv4 address in prevResult, b only its IPv6 one, on two networks.
    let only = |c: &Container, v6: bool| {
        let mut prev = c.prev.clone();
        let ips =
            prev["ips"].as_array().unwrap().iter().filter(|ip| ip["address"].as_str().unwrap().contains(':') == v6);
        prev["ips"] = Value::Array(ips.cloned().collect());
        prev
    };
    let conf_a = Host::conf("net-v4", &only(&a, false), m.clone(), json!({}));
    let conf_b = Host::conf("net-v6", &only(&b, true), m.clone(), json!({}));
    h.run("ADD", &a, "eth0", &conf_a).ok();
    h.run("ADD", &b, "eth0", &conf_b).ok();
    assert_eq!(holder_of_8080(&h, false).as_deref(), Some(a.id.as_str()));
    assert_eq!(holder_of_8080(&h, true).as_deref(), Some(b.id.as_str()));
    h.run("DEL", &b, "eth0", &conf_b).ok();
    assert_eq!(holder_of_8080(&h, false).as_deref(), Some(a.id.as_str()), "the IPv6 holder's DEL took IPv4's port");
    h.run("ADD", &b, "eth0", &conf_b).ok();
    h.run("DEL", &a, "eth0", &conf_a).ok();
    assert_eq!(holder_of_8080(&h, true).as_deref(), Some(b.id.as_str()), "the IPv4 holder's DEL took IPv6's port");
}

#[test]
fn one_address_on_two_networks_publishes_on_both_and_keeps_masquerade() {
    let mut h = Host::new();
    let a = h.container();
    // The same container address on two networks (two runtimes' default networks share a subnet).
    let m1 = json!([{"hostPort": 8080, "containerPort": 80}]);
    let m2 = json!([{"hostPort": 8082, "containerPort": 80}]);
    let conf1 = Host::conf("net1", &a.prev, m1, json!({}));
    let mut prev2 = a.prev.clone();
    prev2["interfaces"][2]["name"] = json!("eth1");
    let conf2 = Host::conf("net2", &prev2, m2, json!({}));
    h.run("ADD", &a, "eth0", &conf1).ok();
    let second = h.run("ADD", &a, "eth1", &conf2);
    assert!(second.success(), "the second network's ADD failed: {}", second.stderr);
    // Masqueraded from the host's own 127.0.0.1 (it cannot leave the host otherwise).
    let local = |port: u16| tcp_ask(&h.ns, sock(&format!("127.0.0.1:{port}")));
    assert!(local(8080).is_some() && local(8082).is_some());
    h.run("DEL", &a, "eth1", &conf2).ok();
    assert!(local(8080).is_some(), "net2's DEL took net1's masquerade");
    assert_eq!(h.run("CHECK", &a, "eth0", &conf1).ok(), Value::Null);
}

#[test]
fn a_stale_entry_never_makes_add_fail() {
    let mut h = Host::new();
    let (a, m) = named(&mut h);
    let (b, _) = named(&mut h);
    let conf = |c: &Container| Host::conf("net1", &c.prev, m.clone(), json!({}));
    h.run("ADD", &a, "eth0", &conf(&a)).ok();
    // a's container goes without a DEL (a crashed runtime): its entries stay until GC.
    drop(a);
    let added = h.run("ADD", &b, "eth0", &conf(&b));
    assert!(added.success(), "{}", added.stderr);
    let mut gc = json!({"cniVersion": "1.1.0", "name": "net1", "type": "portmap",
                        "cni.dev/valid-attachments": [{"containerID": b.id, "ifname": "eth0"}]});
    h.run("GC", &b, "eth0", &gc).ok();
    assert_eq!(holder_of_8080(&h, false).as_deref(), Some(b.id.as_str()), "GC did not hand the port on");
    gc["cni.dev/valid-attachments"] = json!([]);
    h.run("GC", &b, "eth0", &gc).ok();
    let rules = nft_ruleset(&h.ns);
    assert!(!rules.contains("key-") && !rules.contains("pm-"), "{rules}");
}

#[test]
fn masq_all_masquerades_every_source() {
    let mut h = Host::new();
    let a = h.container();
    h.run("ADD", &a, "eth0", &Host::conf("net1", &a.prev, web(), json!({"masqAll": true}))).ok();
    assert_eq!(tcp_ask(&h.outside, sock("198.51.100.1:8080")).as_deref(), Some("10.10.0.1"));
}

#[test]
fn gc_removes_mappings_of_attachments_no_longer_valid() {
    let mut h = Host::new();
    let a = h.container();
    let b = h.container();
    h.run("ADD", &a, "eth0", &Host::conf("net1", &a.prev, json!([{"hostPort": 8080, "containerPort": 80}]), json!({})))
        .ok();
    h.run("ADD", &b, "eth0", &Host::conf("net1", &b.prev, json!([{"hostPort": 9090, "containerPort": 80}]), json!({})))
        .ok();
    let gc = json!({"cniVersion": "1.1.0", "name": "net1", "type": "portmap",
                    "cni.dev/valid-attachments": [{"containerID": a.id, "ifname": "eth0"}]});
    Invocation::new("GC", "", "", "", &gc.to_string())
        .var("CNI_CONTAINERID", None)
        .var("CNI_NETNS", None)
        .var("CNI_IFNAME", None)
        .run(&bin(), &h.ns)
        .ok();
    assert!(tcp_ask(&h.outside, sock("198.51.100.1:8080")).is_some());
    assert!(tcp_ask(&h.outside, sock("198.51.100.1:9090")).is_none());
    // Only a's chains are left: its DNAT chain and its masquerade chain.
    let rules = nft_ruleset(&h.ns);
    assert_eq!((rules.matches("chain pm-").count(), rules.matches("chain pms-").count()), (1, 1), "{rules}");
    let b_ip = b.prev["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string();
    assert!(!rules.contains(&format!("{b_ip} :")), "b's masquerade entry is gone: {rules}");
}

#[test]
fn status_reports_a_usable_backend() {
    let h = Host::new();
    let conf = json!({"cniVersion": "1.1.0", "name": "net1", "type": "portmap"});
    let out = Invocation::new("STATUS", "", "", "", &conf.to_string())
        .var("CNI_CONTAINERID", None)
        .var("CNI_NETNS", None)
        .var("CNI_IFNAME", None)
        .run(&bin(), &h.ns);
    assert_eq!(out.ok(), Value::Null);
}

#[test]
fn iptables_backend_publishes_with_the_reference_layout() {
    let mut h = Host::new();
    let a = h.container();
    let conf = Host::conf("net1", &a.prev, web(), json!({"backend": "iptables"}));
    h.run("ADD", &a, "eth0", &conf).ok();
    assert_eq!(tcp_ask(&h.outside, sock("198.51.100.1:8080")).as_deref(), Some("198.51.100.2"));
    assert_eq!(tcp_ask(&h.ns, sock("127.0.0.1:8080")).as_deref(), Some("10.10.0.1"));
    assert_eq!(tcp_ask(&a.ns, sock("198.51.100.1:8080")).as_deref(), Some("10.10.0.1"), "hairpin");
    assert_eq!(tcp_ask(&h.outside, sock("[2001:db8:1::1]:8080")).as_deref(), Some("2001:db8:1::2"));
    let saved = testkit::iptables_nat(&h.ns);
    let chain = firewall::iptables_portmap::dnat_chain("net1", &a.id);
    assert!(
        saved.contains(&format!(":{chain}"))
            && saved.contains("-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT"),
        "{saved}"
    );
    assert_eq!(h.run("CHECK", &a, "eth0", &conf).ok(), Value::Null);
    h.run("DEL", &a, "eth0", &json!({"cniVersion": "1.0.0", "name": "net1", "type": "portmap", "backend": "iptables"}))
        .ok();
    let saved = testkit::iptables_nat(&h.ns);
    assert!(!saved.contains(&chain), "{saved}");
    assert_eq!(tcp_ask(&h.outside, sock("198.51.100.1:8080")), None);
}

/// A DEL that removes an attachment's chain between GC's listing and its transaction (staged by
/// `firewall:gc-race`) must not fail the GC: "already gone" is success, and the rest still goes.
#[test]
fn gc_is_not_broken_by_a_concurrent_del() {
    let mut h = Host::new();
    let a = h.container();
    let b = h.container();
    let c = h.container();
    for (x, port) in [(&a, 8080), (&b, 9090), (&c, 9191)] {
        h.run(
            "ADD",
            x,
            "eth0",
            &Host::conf("net1", &x.prev, json!([{"hostPort": port, "containerPort": 80}]), json!({})),
        )
        .ok();
    }
    let gc = json!({"cniVersion": "1.1.0", "name": "net1", "type": "portmap",
                    "cni.dev/valid-attachments": [{"containerID": a.id, "ifname": "eth0"}]});
    let out = Invocation::new("GC", "", "", "", &gc.to_string())
        .var("CNI_CONTAINERID", None)
        .var("CNI_NETNS", None)
        .var("CNI_IFNAME", None)
        .var("CNI_RS_FAULT", Some("firewall:gc-race=on"))
        .run(&bin(), &h.ns);
    assert!(out.success(), "{}", out.stdout);
    assert!(tcp_ask(&h.outside, sock("198.51.100.1:8080")).is_some());
    for port in [9090, 9191] {
        assert!(tcp_ask(&h.outside, sock(&format!("198.51.100.1:{port}"))).is_none(), "{port}");
    }
    let rules = nft_ruleset(&h.ns);
    assert_eq!((rules.matches("chain pm-").count(), rules.matches("chain pms-").count()), (1, 1), "{rules}");
}

/// `hostIP: "::ffff:198.51.100.1"` is the IPv4 address: the port answers there (it refused
/// connections when it was published as an IPv6 address no packet carries).
#[test]
fn an_ipv4_mapped_host_ip_is_published_as_ipv4() {
    let mut h = Host::new();
    let a = h.container();
    let mappings = json!([{"hostPort": 8082, "containerPort": 80, "protocol": "tcp", "hostIP": "::ffff:198.51.100.1"}]);
    h.run("ADD", &a, "eth0", &Host::conf("net1", &a.prev, mappings, json!({}))).ok();
    assert!(tcp_ask(&h.outside, sock("198.51.100.1:8082")).is_some());
}

/// A runtime's timeout SIGKILLs the plugin, not the `iptables-restore` it started: that one
/// commits the attachment's chain after the plugin is gone. The DEL that follows must not look
/// for the chain before it is in (it would find nothing, succeed, and the late chain would stay
/// until a GC). Here `iptables-restore` is slow on purpose: a wrapper that waits a second.
#[test]
fn a_del_after_a_killed_add_removes_the_chain_its_orphaned_iptables_restore_adds_later() {
    let mut h = Host::new();
    let a = h.container();
    let slow = testkit::SlowRestore::new("1");
    let conf = Host::conf("net1", &a.prev, web(), json!({"backend": "iptables"}));
    let add = Invocation::new("ADD", &a.id, a.ns.path(), "eth0", &conf.to_string())
        .var("PATH", Some(slow.path()))
        .spawn(&bin(), Some(&h.ns));
    slow.kill_once_started(add);

    // The runtime's DEL after the failed ADD, without prevResult, with the system's tools.
    let del = json!({"cniVersion": "1.0.0", "name": "net1", "type": "portmap", "backend": "iptables"});
    assert_eq!(h.run("DEL", &a, "eth0", &del).ok(), Value::Null);
    slow.wait_done();
    let saved = testkit::iptables_nat(&h.ns);
    let chain = firewall::iptables_portmap::dnat_chain("net1", &a.id);
    assert!(!saved.contains(&chain), "the killed ADD's chain outlived its DEL:\n{saved}");
    assert!(!saved.contains("10.10.0."), "{saved}");
    assert_eq!(tcp_ask(&h.outside, sock("198.51.100.1:8080")), None);
}
