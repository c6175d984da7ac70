//! Kernel tests: the built `bandwidth` binary chained after a veth pair made here (as bridge or
//! ptp would make it), in a sandbox "host" namespace and a container namespace. Shaping is
//! measured with TCP traffic between the two namespaces only, at rates low enough (2-4 Mbit/s)
//! that a loaded machine cannot fall below them.

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use testkit::{Invocation, Netns, Output, ip, ip_json, new_netns};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bandwidth"))
}

/// A host and a container joined by a veth: `hveth` (10.30.0.1/24, fd30::1/64) in the host,
/// `eth0` (10.30.0.2/24, fd30::2/64) in the container.
struct Pod {
    host: Netns,
    ctr: Netns,
    prev: Value,
}

impl Pod {
    fn new() -> Pod {
        let (host, ctr) = (new_netns(), new_netns());
        testkit::link_namespaces(&host, "hveth", "10.30.0.1/24", &ctr, "eth0", "10.30.0.2/24");
        ip(&host, "link set lo up");
        let mac = |ns: &Netns, name: &str| ip_json(ns, &format!("link show {name}"))[0]["address"].clone();
        let prev = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "hveth", "mac": mac(&host, "hveth")},
                           {"name": "eth0", "mac": mac(&ctr, "eth0"), "sandbox": ctr.path()}],
            "ips": [{"address": "10.30.0.2/24", "gateway": "10.30.0.1", "interface": 1}]
        });
        Pod { host, ctr, prev }
    }

    fn conf(&self, extra: Value) -> Value {
        let mut conf = json!({"cniVersion": "1.0.0", "name": "k3s", "type": "bandwidth", "prevResult": self.prev});
        for (k, v) in extra.as_object().expect("object") {
            conf[k] = v.clone();
        }
        conf
    }

    fn run_as(&self, command: &str, cid: &str, netns: &str, conf: &Value) -> Output {
        Invocation::new(command, cid, netns, "eth0", &conf.to_string()).run(&bin(), &self.host)
    }

    fn run(&self, command: &str, conf: &Value) -> Output {
        self.run_as(command, "ctr-bw", self.ctr.path(), conf)
    }

    fn qdiscs(&self, dev: &str) -> Vec<Value> {
        ip_json_tc(&self.host, &format!("qdisc show dev {dev}"))
    }

    fn ifbs(&self) -> Vec<String> {
        ip_json(&self.host, "link show type ifb")
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_string())
            .collect()
    }

    /// Whether the host veth carries anything of ours: a root tbf or htb, or an ingress qdisc.
    fn veth_shaped(&self) -> bool {
        self.qdiscs("hveth").iter().any(|q| q["kind"] == "tbf" || q["kind"] == "htb" || q["kind"] == "ingress")
    }
}

/// `tc -j ARGS` in `ns`: looking from outside, as an operator would.
fn ip_json_tc(ns: &Netns, args: &str) -> Vec<Value> {
    let out = testkit::in_netns(std::process::Command::new("tc").arg("-j").args(args.split_whitespace()), ns)
        .output()
        .expect("running tc");
    assert!(out.status.success(), "tc {args}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Value>(&out.stdout).ok().and_then(|v| v.as_array().cloned()).unwrap_or_default()
}

/// Bits per second that one TCP connection moves from `from` to a listener in `to` at `addr`,
/// counted by the receiver over `secs` seconds from the connection's start (what the sender still
/// has queued then is not counted). Bounded: the sender stops when the receiver hangs up, or
/// after `secs` + 5 seconds.
fn throughput(from: &Netns, to: &Netns, addr: SocketAddr, secs: f64) -> f64 {
    let listener = to.run(|| TcpListener::bind(addr)).unwrap().expect("binding");
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut buf = vec![0u8; 65536];
        let mut total = 0u64;
        let start = Instant::now();
        while start.elapsed().as_secs_f64() < secs {
            match conn.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => total += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
        }
        let rate = total as f64 * 8.0 / start.elapsed().as_secs_f64();
        eprintln!("measured {rate:.0} bit/s to {addr}");
        rate
    });
    let mut conn = from.run(|| TcpStream::connect_timeout(&addr, Duration::from_secs(2))).unwrap().expect("connect");
    conn.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
    let chunk = vec![7u8; 16384];
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs + 5.0 {
        match conn.write(&chunk) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                if server.is_finished() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    drop(conn);
    server.join().expect("server")
}

fn ratio(measured: f64, rate: f64) -> f64 {
    measured / rate
}

#[test]
fn both_directions_are_shaped_to_the_configured_rate_and_del_removes_everything() {
    let pod = Pod::new();
    // 4 Mbit/s into the container, 2 Mbit/s out; bursts of 64 KB.
    let conf = pod.conf(
        json!({"ingressRate": 4_000_000, "ingressBurst": 524_288, "egressRate": 2_000_000, "egressBurst": 524_288}),
    );
    let result = pod.run("ADD", &conf).ok();

    // The result: prevResult's interfaces and the ifb.
    let ifb = result["interfaces"][2]["name"].as_str().unwrap().to_string();
    assert!(ifb.starts_with("bwp") && ifb.len() == 15, "{result}");
    assert_eq!(result["interfaces"][2]["mac"], ip_json(&pod.host, &format!("link show {ifb}"))[0]["address"]);
    assert_eq!(result["ips"], pod.prev["ips"]);
    assert_eq!(pod.ifbs(), vec![ifb.clone()]);
    let link = &ip_json(&pod.host, &format!("link show {ifb}"))[0];
    assert_eq!(link["mtu"], ip_json(&pod.host, "link show hveth")[0]["mtu"]);
    assert!(testkit::is_up(link));

    // tbf on the veth and the ifb, an ingress qdisc with a redirect on the veth.
    let veth = pod.qdiscs("hveth");
    let tbf = veth.iter().find(|q| q["kind"] == "tbf").expect("tbf on the veth");
    assert_eq!(tbf["handle"], "1:");
    assert_eq!(tbf["options"]["rate"], 500_000, "{tbf}");
    assert!(veth.iter().any(|q| q["kind"] == "ingress"), "{veth:?}");
    let filters = ip_json_tc(&pod.host, "filter show dev hveth ingress");
    assert!(filters.iter().any(|f| f["options"]["actions"][0]["to_dev"] == ifb), "{filters:?}");
    let on_ifb = pod.qdiscs(&ifb);
    assert!(on_ifb.iter().any(|q| q["kind"] == "tbf" && q["options"]["rate"] == 250_000), "{on_ifb:?}");

    // Measured: into the container at about 4 Mbit/s, out of it at about 2.
    let into = throughput(&pod.host, &pod.ctr, "10.30.0.2:5201".parse().unwrap(), 3.0);
    let out = throughput(&pod.ctr, &pod.host, "10.30.0.1:5202".parse().unwrap(), 3.0);
    let (ri, ro) = (ratio(into, 4e6), ratio(out, 2e6));
    assert!((0.5..1.3).contains(&ri), "into the container: {into} bit/s ({ri:.2}x)");
    assert!((0.5..1.3).contains(&ro), "out of the container: {out} bit/s ({ro:.2}x)");

    // CHECK passes, and fails once the ifb's limit is gone.
    let mut check = conf.clone();
    check["prevResult"] = result.clone();
    pod.run("CHECK", &check).ok();
    ip(&pod.host, &format!("link set {ifb} down"));
    testkit::in_netns(std::process::Command::new("tc").args(["qdisc", "del", "dev", &ifb, "root"]), &pod.host)
        .status()
        .unwrap();
    assert!(!pod.run("CHECK", &check).success());

    // DEL: the ifb and the veth's qdiscs go; twice is fine.
    for _ in 0..2 {
        pod.run("DEL", &check).ok();
    }
    assert!(pod.ifbs().is_empty());
    assert!(!pod.veth_shaped(), "{:?}", pod.qdiscs("hveth"));
    let unshaped = throughput(&pod.host, &pod.ctr, "10.30.0.2:5203".parse().unwrap(), 1.0);
    assert!(unshaped > 20e6, "after DEL traffic is still limited: {unshaped}");
}

#[test]
fn runtime_config_is_used_unless_the_config_has_its_own_limits() {
    let pod = Pod::new();
    let rt = json!({"bandwidth": {"ingressRate": 8_000_000, "ingressBurst": 800_000}});
    pod.run("ADD", &pod.conf(json!({"runtimeConfig": rt}))).ok();
    let tbf = pod.qdiscs("hveth").into_iter().find(|q| q["kind"] == "tbf").expect("tbf");
    assert_eq!(tbf["options"]["rate"], 1_000_000);
    assert!(pod.ifbs().is_empty(), "ingress only: no ifb");
    pod.run("DEL", &pod.conf(json!({}))).ok();
    assert!(!pod.veth_shaped());

    // A top-level entry wins over the capability.
    pod.run("ADD", &pod.conf(json!({"egressRate": 16_000_000, "egressBurst": 800_000, "runtimeConfig": rt}))).ok();
    assert!(!pod.qdiscs("hveth").iter().any(|q| q["kind"] == "tbf"));
    assert_eq!(pod.ifbs().len(), 1);
    pod.run("DEL", &pod.conf(json!({}))).ok();
    assert!(pod.ifbs().is_empty() && !pod.veth_shaped());
}

#[test]
fn no_limits_pass_the_previous_result_through() {
    let pod = Pod::new();
    for extra in [json!({}), json!({"ingressRate": 0, "ingressBurst": 0}), json!({"runtimeConfig": {"bandwidth": {}}})]
    {
        let out = pod.run("ADD", &pod.conf(extra.clone())).ok();
        assert_eq!(out["interfaces"], pod.prev["interfaces"], "{extra}");
        assert_eq!(out["ips"], pod.prev["ips"], "{extra}");
    }
    assert!(pod.ifbs().is_empty() && !pod.veth_shaped());
}

#[test]
fn bad_input_is_refused_and_leaves_nothing() {
    let pod = Pod::new();
    for (extra, code, want) in [
        (json!({"ingressRate": 1000}), 7, "if rate is set, burst must also be set"),
        (json!({"egressBurst": 1000}), 7, "if burst is set, rate must also be set"),
        (json!({"egressRate": 1000, "egressBurst": 40_000_000_000u64}), 7, "burst cannot be more than 4GB"),
        (json!({"ingressRate": -5}), 6, ""),
        (json!({"shapedSubnets": ["10.0.0.0/8"], "unshapedSubnets": ["10.1.0.0/16"]}), 7, "cannot be both"),
        (json!({"prevResult": null, "ingressRate": 8000, "ingressBurst": 8000}), 7, "must be called as chained plugin"),
        (json!({"cniVersion": "0.2.0", "ingressRate": 8000, "ingressBurst": 8000}), 1, "incompatible CNI versions"),
    ] {
        let out = pod.run("ADD", &pod.conf(extra.clone()));
        assert_eq!(out.err_code(), code, "{extra}: {}", out.stdout);
        assert!(out.json()["msg"].as_str().unwrap().contains(want), "{extra}: {}", out.stdout);
    }
    // The container interface is not a veth's: nothing is made.
    let other = new_netns();
    let out = pod.run_as("ADD", "ctr-x", other.path(), &pod.conf(json!({"egressRate": 8000, "egressBurst": 80000})));
    assert!(!out.success());
    assert!(pod.ifbs().is_empty() && !pod.veth_shaped());
}

#[test]
fn a_failure_half_way_undoes_the_ingress_limit() {
    let pod = Pod::new();
    // The ifb's name is taken by a link that is not ours: egress fails after ingress was shaped.
    let conf = pod.conf(
        json!({"ingressRate": 8_000_000, "ingressBurst": 80_000, "egressRate": 8_000_000, "egressBurst": 80_000}),
    );
    let first = pod.run("ADD", &conf).ok();
    let name = first["interfaces"][2]["name"].as_str().unwrap().to_string();
    pod.run("DEL", &conf).ok();
    ip(&pod.host, &format!("link add {name} type veth peer name squatter"));
    let out = pod.run("ADD", &conf);
    assert!(!out.success(), "{}", out.stdout);
    assert!(!pod.veth_shaped(), "{:?}", pod.qdiscs("hveth"));
    assert!(testkit::link(&pod.host, &name).is_some(), "the squatter is not ours to delete");
    // DEL does not touch a link of that name that is not an ifb.
    pod.run("DEL", &conf).ok();
    assert!(testkit::link(&pod.host, &name).is_some());
}

#[test]
fn del_without_netns_removes_the_ifb_even_one_the_reference_made() {
    let pod = Pod::new();
    let conf = pod.conf(json!({"egressRate": 8_000_000, "egressBurst": 80_000}));
    let r = pod.run("ADD", &conf).ok();
    let name = r["interfaces"][2]["name"].as_str().unwrap().to_string();
    // DEL with no netns and no prevResult: the ifb goes by name, the veth's qdiscs through its alias.
    let mut bare = conf.clone();
    bare.as_object_mut().unwrap().remove("prevResult");
    pod.run_as("DEL", "ctr-bw", "", &bare).ok();
    assert!(pod.ifbs().is_empty());
    assert!(!pod.veth_shaped(), "{:?}", pod.qdiscs("hveth"));

    // An ifb as the reference leaves it (same name, no alias).
    ip(&pod.host, &format!("link add {name} type ifb"));
    pod.run_as("DEL", "ctr-bw", "", &bare).ok();
    assert!(pod.ifbs().is_empty());
}

#[test]
fn gc_removes_the_devices_of_attachments_no_longer_valid() {
    let pod = Pod::new();
    let mut conf = pod.conf(json!({"egressRate": 8_000_000, "egressBurst": 80_000}));
    conf["cniVersion"] = json!("1.1.0");
    conf["prevResult"]["cniVersion"] = json!("1.1.0");
    pod.run_as("ADD", "gone", pod.ctr.path(), &conf).ok();
    // Another network's device and a reference-made one are not this GC's to collect.
    ip(&pod.host, "link add bwp111111111111 type ifb");
    ip(&pod.host, "link set bwp111111111111 alias cni-bandwidth/other-net/gone/hveth");
    ip(&pod.host, "link add bwp000000000000 type ifb");

    let mut gc = json!({"cniVersion": "1.1.0", "name": "k3s", "type": "bandwidth",
                        "cni.dev/valid-attachments": [{"containerID": "kept", "ifname": "eth0"}]});
    for _ in 0..2 {
        Invocation::new("GC", "", "", "", &gc.to_string())
            .var("CNI_CONTAINERID", None)
            .var("CNI_NETNS", None)
            .var("CNI_IFNAME", None)
            .run(&bin(), &pod.host)
            .ok();
    }
    let mut left = pod.ifbs();
    left.sort();
    assert_eq!(left, vec!["bwp000000000000".to_string(), "bwp111111111111".to_string()]);
    assert!(!pod.veth_shaped(), "{:?}", pod.qdiscs("hveth"));

    // A valid attachment keeps its device.
    pod.run_as("ADD", "kept", pod.ctr.path(), &conf).ok();
    gc["name"] = json!("k3s");
    Invocation::new("GC", "", "", "", &gc.to_string())
        .var("CNI_CONTAINERID", None)
        .var("CNI_NETNS", None)
        .var("CNI_IFNAME", None)
        .run(&bin(), &pod.host)
        .ok();
    assert_eq!(pod.ifbs().len(), 3);
}

#[test]
fn unshaped_subnets_are_not_limited() {
    let pod = Pod::new();
    // A second host address in a subnet the config spares.
    ip(&pod.host, "addr add 10.99.0.1/32 dev hveth");
    ip(&pod.ctr, "route add 10.99.0.1/32 dev eth0");
    let conf = pod.conf(json!({"egressRate": 2_000_000, "egressBurst": 524_288, "unshapedSubnets": ["10.99.0.0/16"]}));
    let r = pod.run("ADD", &conf).ok();
    let ifb = r["interfaces"][2]["name"].as_str().unwrap().to_string();
    assert!(pod.qdiscs(&ifb).iter().any(|q| q["kind"] == "htb"));
    let mut check = conf.clone();
    check["prevResult"] = r.clone();
    pod.run("CHECK", &check).ok();

    let shaped = throughput(&pod.ctr, &pod.host, "10.30.0.1:5211".parse().unwrap(), 3.0);
    let spared = throughput(&pod.ctr, &pod.host, "10.99.0.1:5212".parse().unwrap(), 1.0);
    let rs = ratio(shaped, 2e6);
    assert!((0.5..1.3).contains(&rs), "shaped: {shaped} bit/s ({rs:.2}x)");
    assert!(spared > 20e6, "the unshaped subnet was limited: {spared} bit/s");
    pod.run("DEL", &check).ok();
    assert!(pod.ifbs().is_empty() && !pod.veth_shaped());
}

#[test]
fn results_in_every_version_from_0_3_0_and_older_ones_refused() {
    for version in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let pod = Pod::new();
        let mut conf = pod.conf(json!({"egressRate": 8_000_000, "egressBurst": 80_000}));
        conf["cniVersion"] = json!(version);
        conf["prevResult"]["cniVersion"] = json!(version);
        let r = pod.run("ADD", &conf).ok();
        assert_eq!(r["cniVersion"], version);
        assert_eq!(r["interfaces"].as_array().unwrap().len(), 3, "{version}: {r}");
        if version.starts_with("0.") {
            assert_eq!(r["ips"][0]["version"], "4", "{version}: {r}");
        }
        pod.run("DEL", &conf).ok();
        assert!(pod.ifbs().is_empty());
    }
    let pod = Pod::new();
    for version in ["0.1.0", "0.2.0"] {
        let mut conf = pod.conf(json!({}));
        conf["cniVersion"] = json!(version);
        conf.as_object_mut().unwrap().remove("prevResult");
        for command in ["ADD", "DEL"] {
            assert_eq!(pod.run(command, &conf).err_code(), 1, "{version} {command}");
        }
    }
}

#[test]
fn a_refused_second_add_leaves_the_first_ones_limits() {
    let pod = Pod::new();
    let conf = pod.conf(
        json!({"ingressRate": 8_000_000, "ingressBurst": 80_000, "egressRate": 8_000_000, "egressBurst": 80_000}),
    );
    pod.run("ADD", &conf).ok();
    // The same attachment again: the qdiscs and the ifb exist, so it fails, and its undo must not
    // take what the first ADD made.
    assert!(!pod.run("ADD", &conf).success());
    assert!(pod.qdiscs("hveth").iter().any(|q| q["kind"] == "tbf"));
    assert!(pod.qdiscs("hveth").iter().any(|q| q["kind"] == "ingress"));
    assert_eq!(pod.ifbs().len(), 1);
    let egress_only = pod.conf(json!({"egressRate": 8_000_000, "egressBurst": 80_000}));
    let other =
        Invocation::new("ADD", "ctr-other", pod.ctr.path(), "eth0", &egress_only.to_string()).run(&bin(), &pod.host);
    assert!(!other.success(), "the veth's ingress qdisc is taken");
    assert!(pod.qdiscs("hveth").iter().any(|q| q["kind"] == "ingress"));
    assert_eq!(pod.ifbs().len(), 1, "the failed ADD's own ifb is gone");
    pod.run("DEL", &conf).ok();
    assert!(pod.ifbs().is_empty() && !pod.veth_shaped());
}

#[test]
fn a_second_network_of_the_same_pod_shapes_its_own_veth() {
    // Multus: the pod has eth0 (hveth) and net1 (hveth2), both veths into the host.
    let pod = Pod::new();
    testkit::link_namespaces(&pod.host, "hveth2", "10.31.0.1/24", &pod.ctr, "net1", "10.31.0.2/24");
    let mac = |ns: &Netns, name: &str| ip_json(ns, &format!("link show {name}"))[0]["address"].clone();
    let limits = json!({"ingressRate": 8_000_000, "ingressBurst": 80_000});
    let mut conf = pod.conf(limits.clone());
    conf["prevResult"] = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "hveth2", "mac": mac(&pod.host, "hveth2")},
                       {"name": "net1", "mac": mac(&pod.ctr, "net1"), "sandbox": pod.ctr.path()}],
        "ips": [{"address": "10.31.0.2/24", "gateway": "10.31.0.1", "interface": 1}]
    });
    let net1 = Invocation::new("ADD", "ctr-bw", pod.ctr.path(), "net1", &conf.to_string()).run(&bin(), &pod.host);
    net1.ok();
    let shaped = |dev: &str| pod.qdiscs(dev).iter().any(|q| q["kind"] == "tbf");
    assert!(shaped("hveth2") && !shaped("hveth"), "{:?} {:?}", pod.qdiscs("hveth2"), pod.qdiscs("hveth"));
    // eth0's own chain shapes eth0's veth.
    let eth0 = pod.conf(limits);
    pod.run_as("ADD", "ctr-bw2", pod.ctr.path(), &eth0).ok();
    assert!(shaped("hveth"));
    // A prevResult that lists both host ends is resolved from the container's side: net1's peer.
    let mut both = conf.clone();
    both["prevResult"]["interfaces"] = json!([{"name": "hveth", "mac": mac(&pod.host, "hveth")},
        {"name": "hveth2", "mac": mac(&pod.host, "hveth2")},
        {"name": "net1", "mac": mac(&pod.ctr, "net1"), "sandbox": pod.ctr.path()}]);
    let del = Invocation::new("DEL", "ctr-bw", pod.ctr.path(), "net1", &conf.to_string()).run(&bin(), &pod.host);
    del.ok();
    assert!(!shaped("hveth2") && shaped("hveth"), "net1's DEL left eth0's limit");
    Invocation::new("ADD", "ctr-bw", pod.ctr.path(), "net1", &both.to_string()).run(&bin(), &pod.host).ok();
    assert!(shaped("hveth2"));
}

#[test]
fn many_adds_and_dels_at_once_on_one_host() {
    let host = new_netns();
    let n = 10;
    let ctrs: Vec<Netns> = (0..n).map(|_| new_netns()).collect();
    let mut confs = Vec::new();
    for (i, ctr) in ctrs.iter().enumerate() {
        let hv = format!("hv{i}");
        testkit::link_namespaces(&host, &hv, &format!("10.40.{i}.1/24"), ctr, "eth0", &format!("10.40.{i}.2/24"));
        confs.push(json!({"cniVersion": "1.0.0", "name": "busy", "type": "bandwidth",
            "ingressRate": 8_000_000, "ingressBurst": 80_000, "egressRate": 8_000_000, "egressBurst": 80_000,
            "prevResult": {"cniVersion": "1.0.0",
                "interfaces": [{"name": hv}, {"name": "eth0", "sandbox": ctr.path()}],
                "ips": [{"address": format!("10.40.{i}.2/24"), "interface": 1}]}}));
    }
    let spawn = |command: &str, i: usize| {
        Invocation::new(command, &format!("ctr-{i}"), ctrs[i].path(), "eth0", &confs[i].to_string())
            .spawn(&bin(), Some(&host))
    };
    let children: Vec<_> = (0..n).map(|i| spawn("ADD", i)).collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    }
    let ifbs = ip_json(&host, "link show type ifb").as_array().unwrap().len();
    assert_eq!(ifbs, n, "one ifb per container");
    for i in 0..n {
        let qdiscs = ip_json_tc(&host, &format!("qdisc show dev hv{i}"));
        assert!(qdiscs.iter().any(|q| q["kind"] == "tbf") && qdiscs.iter().any(|q| q["kind"] == "ingress"), "hv{i}");
    }
    let children: Vec<_> = (0..n).map(|i| spawn("DEL", i)).collect();
    for c in children {
        assert!(c.wait_with_output().unwrap().status.success());
    }
    assert!(ip_json(&host, "link show type ifb").as_array().unwrap().is_empty());
    for i in 0..n {
        let qdiscs = ip_json_tc(&host, &format!("qdisc show dev hv{i}"));
        assert!(!qdiscs.iter().any(|q| q["kind"] == "tbf" || q["kind"] == "ingress"), "hv{i}: {qdiscs:?}");
    }
}

#[test]
fn shaped_subnets_limit_only_traffic_to_them_over_ipv6() {
    let pod = Pod::new();
    ip(&pod.host, "-6 addr add fd30::1/64 dev hveth nodad");
    ip(&pod.host, "-6 addr add fd98::1/128 dev hveth nodad");
    ip(&pod.ctr, "-6 addr add fd30::2/64 dev eth0 nodad");
    ip(&pod.ctr, "-6 route add fd98::1/128 dev eth0");
    let conf = pod.conf(json!({"egressRate": 2_000_000, "egressBurst": 524_288, "shapedSubnets": ["fd98::/64"]}));
    let r = pod.run("ADD", &conf).ok();
    let ifb = r["interfaces"][2]["name"].as_str().unwrap().to_string();
    assert!(pod.qdiscs(&ifb).iter().any(|q| q["kind"] == "htb"));

    let shaped = throughput(&pod.ctr, &pod.host, "[fd98::1]:5221".parse().unwrap(), 3.0);
    let free = throughput(&pod.ctr, &pod.host, "[fd30::1]:5222".parse().unwrap(), 1.0);
    let rs = ratio(shaped, 2e6);
    assert!((0.5..1.3).contains(&rs), "to the shaped subnet: {shaped} bit/s ({rs:.2}x)");
    assert!(free > 20e6, "traffic outside the shaped subnet was limited: {free} bit/s");
    pod.run("DEL", &conf).ok();
    assert!(pod.ifbs().is_empty() && !pod.veth_shaped());
}
