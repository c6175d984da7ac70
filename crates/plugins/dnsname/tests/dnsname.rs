//! Kernel tests: the built `dnsname` chained after the built `bridge` (with `host-local`), run as a
//! runtime runs them, in a sandbox "host" namespace with container namespaces; the containers ask
//! the network's dnsmasq with DNS queries written here. dnsmasq runs only inside the sandbox host
//! (the plugin starts it there), is stopped by the plugin or, if a test fails, by PID when the
//! test's `Net` is dropped. The run directory is per test through the reference's own knob,
//! `XDG_RUNTIME_DIR` (`$XDG_RUNTIME_DIR/containers/cni/dnsname`).

use serde_json::{Value, json};
use std::net::{IpAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use testkit::{Invocation, Netns, Output, TempDir, ip, new_netns};

const NET: &str = "podnet";
const A: u16 = 1;
const AAAA: u16 = 28;

fn dnsname() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dnsname"))
}

/// A sandbox host with a dual-stack bridge network (10.10.0.0/24, fd10::/64) and its own IPAM
/// store and dnsname run directory.
struct Net {
    host: Netns,
    ipam: TempDir,
    run: TempDir,
}

/// One container on the network: its namespace, ID and the chain's result.
struct Ctr {
    ns: Netns,
    id: String,
    name: String,
    bridge_result: Value,
}

impl Net {
    fn new() -> Net {
        let net = Net { host: new_netns(), ipam: TempDir::new("dnsname-ipam"), run: TempDir::new("dnsname-run") };
        ip(&net.host, "link set lo up");
        net
    }

    fn dir(&self) -> PathBuf {
        self.run.path().join("containers/cni/dnsname").join(NET)
    }

    fn bridge_conf(&self) -> Value {
        json!({
            "cniVersion": "1.0.0", "name": NET, "type": "bridge", "bridge": "br-dns", "isGateway": true,
            "ipam": {"type": "host-local", "dataDir": self.ipam.path().display().to_string(),
                     "ranges": [[{"subnet": "10.10.0.0/24"}], [{"subnet": "fd10::/64"}]]}
        })
    }

    fn dns_conf(&self, aliases: &[&str], prev: &Value) -> Value {
        json!({"cniVersion": "1.0.0", "name": NET, "type": "dnsname", "domainName": "dns.podman",
               "runtimeConfig": {"aliases": {NET: aliases, "othernet": ["elsewhere"]}},
               "prevResult": prev})
    }

    fn invocation(&self, command: &str, ns: &Netns, id: &str, name: &str, conf: &Value) -> Invocation {
        Invocation::new(command, id, ns.path(), "eth0", &conf.to_string())
            .var("CNI_ARGS", Some(&format!("IgnoreUnknown=1;K8S_POD_NAME={name}")))
            .var("XDG_RUNTIME_DIR", Some(&self.run.path().display().to_string()))
    }

    fn dns(&self, command: &str, c: &Ctr, aliases: &[&str]) -> Output {
        self.invocation(command, &c.ns, &c.id, &c.name, &self.dns_conf(aliases, &c.bridge_result))
            .run(&dnsname(), &self.host)
    }

    /// dnsname's ADD with `CNI_RS_FAULT` set.
    fn dns_fault(&self, command: &str, c: &Ctr, aliases: &[&str], fault: &str) -> Output {
        self.invocation(command, &c.ns, &c.id, &c.name, &self.dns_conf(aliases, &c.bridge_result))
            .var("CNI_RS_FAULT", Some(fault))
            .run(&dnsname(), &self.host)
    }

    /// dnsname's DEL as a runtime calls it after a failed ADD: no `prevResult`.
    fn dns_del_without_result(&self, c: &Ctr, aliases: &[&str]) -> Output {
        let mut conf = self.dns_conf(aliases, &Value::Null);
        conf.as_object_mut().unwrap().remove("prevResult");
        self.invocation("DEL", &c.ns, &c.id, &c.name, &conf).run(&dnsname(), &self.host)
    }

    /// A container attached by bridge only (dnsname not run yet).
    fn attach(&self, id: &str, name: &str) -> Ctr {
        let ns = new_netns();
        let bridge_result =
            self.invocation("ADD", &ns, id, name, &self.bridge_conf()).run(&testkit::plugin("bridge"), &self.host).ok();
        Ctr { ns, id: id.to_string(), name: name.to_string(), bridge_result }
    }

    /// bridge, then dnsname: the chain's ADD.
    fn add(&self, id: &str, name: &str, aliases: &[&str]) -> (Ctr, Value) {
        let c = self.attach(id, name);
        let result = self.dns("ADD", &c, aliases).ok();
        (c, result)
    }

    /// The chain's DEL: dnsname, then bridge.
    fn del(&self, c: &Ctr, aliases: &[&str]) {
        self.dns("DEL", c, aliases).ok();
        self.invocation("DEL", &c.ns, &c.id, &c.name, &self.bridge_conf())
            .run(&testkit::plugin("bridge"), &self.host)
            .ok();
    }

    /// The pids of every dnsmasq running with this network's config.
    fn servers(&self) -> Vec<i32> {
        let conf_arg = format!("--conf-file={}", self.dir().join("dnsmasq.conf").display());
        dnsmasq_processes().into_iter().filter(|(_, args)| args.contains(&conf_arg)).map(|(p, _)| p).collect()
    }

    /// The pid in the pid file.
    fn pidfile(&self) -> i32 {
        std::fs::read_to_string(self.dir().join("pidfile")).unwrap().trim().parse().unwrap()
    }

    /// The DNS rules in iptables' filter INPUT chain of the sandbox host.
    fn input_rules(&self) -> Vec<String> {
        let out = testkit::in_netns(std::process::Command::new("iptables-save").args(["-t", "filter"]), &self.host)
            .output()
            .expect("running iptables-save");
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("--dport 53")).map(str::to_string).collect()
    }

    fn hosts(&self) -> String {
        std::fs::read_to_string(self.dir().join("addnhosts")).unwrap_or_default()
    }

    /// Every live process (the plugin, a copy of it, dnsmasq) that has this test's run directory
    /// as `XDG_RUNTIME_DIR` in its environment.
    fn live_processes(&self) -> Vec<i32> {
        let marker = format!("XDG_RUNTIME_DIR={}", self.run.path().display());
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
            let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
            if !has_exited(pid) && environ.split(|b| *b == 0).any(|v| v == marker.as_bytes()) {
                out.push(pid);
            }
        }
        out
    }

    /// Kills every dnsmasq of this test's run directory (a failed test's leftovers), by PID.
    fn kill_servers(&self) {
        let root = self.run.path().display().to_string();
        for (pid, args) in dnsmasq_processes() {
            if args.iter().any(|a| a.starts_with("--conf-file=") && a.contains(&root)) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.kill_servers();
    }
}

/// Every live dnsmasq process on the machine with its arguments.
fn dnsmasq_processes() -> Vec<(i32, Vec<String>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if stat.rsplit_once(") ").is_some_and(|(_, s)| s.starts_with('Z')) {
            continue;
        }
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| Path::new(a).file_name().is_some_and(|n| n == "dnsmasq")) {
            out.push((pid, args));
        }
    }
    out
}

fn addr_of(result: &Value, i: usize) -> IpAddr {
    result["ips"][i]["address"].as_str().unwrap().split('/').next().unwrap().parse().unwrap()
}

/// One DNS query from `ns` to `server`:53: the response code and the addresses answered, or `None`
/// after a second without an answer.
fn query(ns: &Netns, server: IpAddr, name: &str, qtype: u16) -> Option<(u8, Vec<IpAddr>)> {
    ns.run(|| {
        let local = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let sock = UdpSocket::bind(local).ok()?;
        sock.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        let id = (std::process::id() as u16) ^ (Instant::now().elapsed().subsec_nanos() as u16);
        // Header: id, flags (recursion desired), one question.
        let mut msg = vec![(id >> 8) as u8, id as u8, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            msg.push(label.len() as u8);
            msg.extend_from_slice(label.as_bytes());
        }
        msg.push(0);
        msg.extend_from_slice(&qtype.to_be_bytes());
        msg.extend_from_slice(&[0, 1]);
        sock.send_to(&msg, (server, 53)).ok()?;
        let mut buf = [0u8; 1500];
        let n = sock.recv(&mut buf).ok()?;
        let buf = &buf[..n];
        if n < 12 || buf[0..2] != msg[0..2] {
            return None;
        }
        let u16_at = |p: usize| u16::from_be_bytes([buf[p], buf[p + 1]]);
        let skip_name = |mut p: usize| loop {
            match buf[p] {
                0 => return p + 1,
                l if l & 0xc0 == 0xc0 => return p + 2,
                l => p += 1 + l as usize,
            }
        };
        let mut pos = 12;
        for _ in 0..u16_at(4) {
            pos = skip_name(pos) + 4;
        }
        let mut addrs = Vec::new();
        for _ in 0..u16_at(6) {
            pos = skip_name(pos);
            let (rtype, len) = (u16_at(pos), u16_at(pos + 8) as usize);
            let data = &buf[pos + 10..pos + 10 + len];
            match (rtype, len) {
                (A, 4) => addrs.push(IpAddr::from(<[u8; 4]>::try_from(data).unwrap())),
                (AAAA, 16) => addrs.push(IpAddr::from(<[u8; 16]>::try_from(data).unwrap())),
                _ => {}
            }
            pos += 10 + len;
        }
        Some((buf[3] & 0x0f, addrs))
    })
    .expect("entering the container")
}

/// Asks until the answer is `want` (dnsmasq re-reads its file a moment after SIGHUP, and binds an
/// IPv6 address once duplicate address detection is done), for at most 10 s.
fn answers(ns: &Netns, server: IpAddr, name: &str, qtype: u16, want: &[IpAddr]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = query(ns, server, name, qtype);
        if got.as_ref().is_some_and(|(rcode, addrs)| *rcode == 0 && addrs == want) {
            return true;
        }
        if Instant::now() > deadline {
            eprintln!("{name} type {qtype} from {server}: {got:?}, want {want:?}");
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asks until the server says NXDOMAIN for `name`, for at most 10 s.
fn nxdomain(ns: &Netns, server: IpAddr, name: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = query(ns, server, name, A);
        if got.as_ref().is_some_and(|(rcode, addrs)| *rcode == 3 && addrs.is_empty()) {
            return true;
        }
        if Instant::now() > deadline {
            eprintln!("{name}: {got:?}, want NXDOMAIN");
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `pid` is gone or a zombie: only then are its sockets closed (its command line is
/// empty a moment earlier, while it still exits).
fn has_exited(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_or(true, |stat| stat.rsplit_once(") ").is_some_and(|(_, s)| s.starts_with(['Z', 'X'])))
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const GW4: &str = "10.10.0.1";
const GW6: &str = "fd10::1";

#[test]
fn containers_resolve_each_other_by_name_and_alias_until_deleted() {
    let net = Net::new();
    let (web, rweb) = net.add("ctr-web", "web", &["www", "api"]);
    let (client, _) = net.add("ctr-client", "client", &[]);
    let (gw4, gw6): (IpAddr, IpAddr) = (GW4.parse().unwrap(), GW6.parse().unwrap());

    // The result is the bridge's with the server's addresses and the domain added.
    assert_eq!(rweb["interfaces"], web.bridge_result["interfaces"]);
    assert_eq!(rweb["ips"], web.bridge_result["ips"]);
    assert_eq!(rweb["dns"], json!({"nameservers": [GW4, GW6], "search": ["dns.podman"]}));

    // The reference's files, and one server whose pid is in the pid file.
    let mut files: Vec<String> =
        std::fs::read_dir(net.dir()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    files.sort();
    assert_eq!(files, ["addnhosts", "dnsmasq.conf", "lock", "pidfile"]);
    assert_eq!(net.servers(), [net.pidfile()]);
    let conf = std::fs::read_to_string(net.dir().join("dnsmasq.conf")).unwrap();
    assert!(conf.contains("\ninterface=br-dns\n") && conf.contains("\nlocal=/dns.podman/\n"), "{conf}");
    assert!(!net.hosts().contains("elsewhere"), "another network's alias: {}", net.hosts());
    // The reference's rule, once, in its form.
    assert_eq!(net.input_rules(), ["-A INPUT -i br-dns -p udp -m udp --dport 53 -j ACCEPT"]);

    let (v4, v6) = (addr_of(&rweb, 0), addr_of(&rweb, 1));
    for name in ["web", "www", "api", "web.dns.podman", "www.dns.podman", "api.dns.podman"] {
        assert!(answers(&client.ns, gw4, name, A, &[v4]), "A {name}");
        assert!(answers(&client.ns, gw4, name, AAAA, &[v6]), "AAAA {name}");
    }
    // Over IPv6 too: the server listens on every address of the bridge.
    assert!(answers(&client.ns, gw6, "web.dns.podman", A, &[v4]));
    assert!(answers(&client.ns, gw6, "www", AAAA, &[v6]));
    // And the other way round.
    let rclient = &client.bridge_result;
    assert!(answers(&web.ns, gw4, "client.dns.podman", A, &[addr_of(rclient, 0)]));
    // Unknown names under the domain are not forwarded.
    assert!(nxdomain(&client.ns, gw4, "nobody.dns.podman"));

    assert!(net.dns("CHECK", &web, &["www", "api"]).success());
    // CHECK notices a missing alias.
    assert_ne!(net.dns("CHECK", &web, &["www", "api", "extra"]).exit_code, 0);

    // Changing names is a file write and a SIGHUP: the same server keeps running.
    let pid = net.pidfile();
    net.del(&web, &["www", "api"]);
    for name in ["web.dns.podman", "www.dns.podman", "api.dns.podman"] {
        assert!(nxdomain(&client.ns, gw4, name), "{name} after DEL");
    }
    // The bare name is no longer answered (dnsmasq forwards it upstream, out of this sandbox).
    let bare = query(&client.ns, gw4, "web", A);
    assert!(bare.as_ref().is_none_or(|(_, addrs)| addrs.is_empty()), "bare name after DEL: {bare:?}");
    assert!(answers(&client.ns, gw4, "client.dns.podman", A, &[addr_of(rclient, 0)]));
    assert_eq!(net.servers(), [pid]);
    // A second DEL is fine.
    assert!(net.dns("DEL", &web, &["www", "api"]).success());

    // A server that died is restarted by CHECK.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_until("the server is dead", || has_exited(pid));
    assert!(net.dns("CHECK", &client, &[]).success());
    let restarted = net.servers();
    assert_eq!(restarted.len(), 1);
    assert_ne!(restarted[0], pid);
    assert!(answers(&client.ns, gw4, "client", A, &[addr_of(rclient, 0)]));

    // The last DEL stops the server and removes the directory and the INPUT rule.
    net.del(&client, &[]);
    assert!(net.servers().is_empty(), "dnsmasq still runs after the last DEL");
    assert!(!net.dir().exists());
    assert_eq!(net.input_rules(), Vec::<String>::new());
    assert!(net.dns("DEL", &client, &[]).success());
}

#[test]
fn a_dead_server_is_restarted_by_the_next_add() {
    let net = Net::new();
    let (a, _) = net.add("ctr-a", "alpha", &[]);
    let pid = net.pidfile();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_until("the server is dead", || has_exited(pid));
    let (b, rb) = net.add("ctr-b", "serene_beta", &[]);
    assert_eq!(net.servers().len(), 1);
    let gw4: IpAddr = GW4.parse().unwrap();
    assert!(answers(&b.ns, gw4, "alpha", A, &[addr_of(&a.bridge_result, 0)]));
    assert!(answers(&a.ns, gw4, "serene_beta", A, &[addr_of(&rb, 0)]));
    net.del(&a, &[]);
    net.del(&b, &[]);
    assert!(net.servers().is_empty());
}

#[test]
fn bad_names_are_code_7_and_nothing_is_written() {
    let net = Net::new();
    let bad = [("bad name", vec![]), ("good", vec!["bad alias"]), ("good", vec!["x\n10.0.0.9 evil"])];
    for (i, (name, aliases)) in bad.into_iter().enumerate() {
        let c = net.attach(&format!("ctr-{i}"), name);
        let out = net.dns("ADD", &c, &aliases);
        assert_eq!(out.err_code(), 7, "{name} {aliases:?}: {}", out.stdout);
        assert!(!net.dir().exists(), "{name} {aliases:?} left {}", net.dir().display());
        assert!(net.servers().is_empty());
    }
    // No name at all: Podman always passes one; without it there is nothing to publish.
    let c = net.attach("ctr-noname", "x");
    let out = net
        .invocation("ADD", &c.ns, "ctr-noname", "x", &net.dns_conf(&[], &c.bridge_result))
        .var("CNI_ARGS", Some("IgnoreUnknown=1"))
        .run(&dnsname(), &net.host);
    assert_eq!(out.err_code(), 7);
    // Not chained: code 7 too.
    let mut conf = net.dns_conf(&[], &c.bridge_result);
    conf.as_object_mut().unwrap().remove("prevResult");
    let out = net.invocation("ADD", &c.ns, "ctr-noname", "x", &conf).run(&dnsname(), &net.host);
    assert_eq!(out.err_code(), 7);
    assert!(!net.dir().exists());
}

#[test]
fn fifty_concurrent_adds_start_one_server_and_the_dels_leave_nothing() {
    let net = Net::new();
    let ctrs: Vec<Ctr> = (0..50).map(|i| net.attach(&format!("ctr-{i}"), &format!("c{i}"))).collect();
    let aliases = |i: usize| vec![format!("alias{i}")];
    let spawn = |command: &str| -> Vec<std::process::Child> {
        ctrs.iter()
            .enumerate()
            .map(|(i, c)| {
                let a = aliases(i);
                let a: Vec<&str> = a.iter().map(String::as_str).collect();
                net.invocation(command, &c.ns, &c.id, &c.name, &net.dns_conf(&a, &c.bridge_result))
                    .spawn(&dnsname(), Some(&net.host))
            })
            .collect()
    };
    for (i, child) in spawn("ADD").into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "ADD {i}: {}", String::from_utf8_lossy(&out.stdout));
    }
    assert_eq!(net.servers(), [net.pidfile()], "exactly one dnsmasq");
    let gw4: IpAddr = GW4.parse().unwrap();
    for (i, c) in ctrs.iter().enumerate() {
        let want = [addr_of(&c.bridge_result, 0)];
        let asker = &ctrs[(i + 1) % ctrs.len()].ns;
        assert!(answers(asker, gw4, &format!("c{i}.dns.podman"), A, &want), "c{i}");
        assert!(answers(asker, gw4, &format!("alias{i}"), A, &want), "alias{i}");
    }
    assert_eq!(net.hosts().lines().count(), 100, "a line per container and family:\n{}", net.hosts());

    for (i, child) in spawn("DEL").into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "DEL {i}: {}", String::from_utf8_lossy(&out.stdout));
    }
    assert!(net.servers().is_empty(), "dnsmasq still runs after every DEL");
    assert!(!net.dir().exists(), "{} is left", net.dir().display());
}

#[test]
fn gc_drops_the_names_of_attachments_no_longer_valid() {
    let net = Net::new();
    let (a, _) = net.add("ctr-a", "alpha", &["one"]);
    let (b, rb) = net.add("ctr-b", "beta", &[]);
    let gc = |valid: Value| {
        let conf = json!({"cniVersion": "1.1.0", "name": NET, "type": "dnsname", "domainName": "dns.podman",
                          "cni.dev/valid-attachments": valid});
        Invocation::new("GC", "", "", "", &conf.to_string())
            .var("CNI_CONTAINERID", None)
            .var("CNI_NETNS", None)
            .var("CNI_IFNAME", None)
            .var("XDG_RUNTIME_DIR", Some(&net.run.path().display().to_string()))
            .run(&dnsname(), &net.host)
    };
    let gw4: IpAddr = GW4.parse().unwrap();
    let pid = net.pidfile();
    gc(json!([{"containerID": "ctr-b", "ifname": "eth0"}])).ok();
    assert!(nxdomain(&b.ns, gw4, "alpha.dns.podman"));
    assert!(nxdomain(&b.ns, gw4, "one.dns.podman"));
    assert!(answers(&a.ns, gw4, "beta.dns.podman", A, &[addr_of(&rb, 0)]));
    assert_eq!(net.servers(), [pid]);
    // GC is idempotent.
    gc(json!([{"containerID": "ctr-b", "ifname": "eth0"}])).ok();
    assert_eq!(net.servers(), [pid]);
    // Nothing valid: the server stops and the directory goes.
    gc(json!([])).ok();
    assert!(net.servers().is_empty());
    assert!(!net.dir().exists());
    net.del(&a, &["one"]);
    net.del(&b, &[]);
}

/// ADD's steps, in order (its trace marks): a kill at any of them, as from a runtime's timeout.
const ADD_STEPS: [&str; 6] = [
    "dnsname:locked",
    "dnsname:conf written",
    "dnsname:input opened",
    "dnsname:names written",
    "dnsname:dnsmasq spawned",
    "dnsname:server ready",
];

#[test]
fn a_kill_at_any_step_of_add_on_a_new_network_is_cleaned_up_by_del() {
    let gw4: IpAddr = GW4.parse().unwrap();
    for step in ADD_STEPS {
        let net = Net::new();
        let c = net.attach("ctr-k", "killed");
        let out = net.dns_fault("ADD", &c, &["ka"], &format!("{step}=kill"));
        assert_eq!(out.exit_code, -1, "{step}: killed by SIGKILL: {}", out.stdout);
        assert!(net.dir().exists(), "{step}: the kill left nothing for DEL to clean");
        // The runtime's DEL after the failed ADD, with no prevResult.
        assert!(net.dns_del_without_result(&c, &["ka"]).success(), "{step}: DEL");
        assert!(net.servers().is_empty(), "{step}: dnsmasq still runs after DEL");
        assert!(!net.dir().exists(), "{step}: {} is left", net.dir().display());
        assert_eq!(net.input_rules(), Vec::<String>::new(), "{step}");
        // The next ADD works as on a fresh network.
        let (d, _) = net.add("ctr-d", "again", &[]);
        assert_eq!(net.servers(), [net.pidfile()], "{step}");
        assert!(answers(&d.ns, gw4, "again.dns.podman", A, &[addr_of(&d.bridge_result, 0)]), "{step}");
        assert_eq!(net.input_rules().len(), 1, "{step}");
        net.del(&d, &[]);
        assert!(net.servers().is_empty() && !net.dir().exists(), "{step}");
        assert_eq!(net.input_rules(), Vec::<String>::new(), "{step}");
    }
}

#[test]
fn a_kill_at_any_step_of_add_leaves_the_other_containers_served() {
    let gw4: IpAddr = GW4.parse().unwrap();
    let net = Net::new();
    let (first, rfirst) = net.add("ctr-first", "first", &["one"]);
    let pid = net.pidfile();
    let before = net.hosts();
    for step in ADD_STEPS {
        let c = net.attach(&format!("ctr-{}", step.len()), "killed");
        let out = net.dns_fault("ADD", &c, &["ka"], &format!("{step}=kill"));
        if step == "dnsname:dnsmasq spawned" {
            // A server runs: nothing is spawned, and the ADD goes through.
            assert!(out.success(), "{step}: {}", out.stdout);
            assert_eq!(net.servers(), [pid], "{step}: a second server");
        } else {
            assert_eq!(out.exit_code, -1, "{step}: killed by SIGKILL: {}", out.stdout);
        }
        assert!(net.dns_del_without_result(&c, &["ka"]).success(), "{step}: DEL");
        assert_eq!(net.servers(), [pid], "{step}: the server was restarted or stopped");
        assert_eq!(net.hosts(), before, "{step}");
        assert_eq!(net.input_rules().len(), 1, "{step}: the running network's rule");
        assert!(nxdomain(&first.ns, gw4, "killed.dns.podman"), "{step}");
        assert!(nxdomain(&first.ns, gw4, "ka.dns.podman"), "{step}");
        assert!(answers(&c.ns, gw4, "one", A, &[addr_of(&rfirst, 0)]), "{step}");
        net.invocation("DEL", &c.ns, &c.id, &c.name, &net.bridge_conf())
            .run(&testkit::plugin("bridge"), &net.host)
            .ok();
    }
    net.del(&first, &["one"]);
    assert!(net.servers().is_empty() && !net.dir().exists());
}

#[test]
fn a_kill_during_del_is_finished_by_the_next_del() {
    let gw4: IpAddr = GW4.parse().unwrap();
    let net = Net::new();
    let (a, _) = net.add("ctr-a", "alpha", &["al"]);
    let (b, rb) = net.add("ctr-b", "beta", &[]);
    let pid = net.pidfile();
    assert!(answers(&b.ns, gw4, "al", A, &[addr_of(&a.bridge_result, 0)]));
    // Killed after writing the file, before the SIGHUP: the server still answers for alpha
    // until the next DEL, which finds nothing to remove but signals anyway.
    let out = net.dns_fault("DEL", &a, &["al"], "dnsname:names removed=kill");
    assert_eq!(out.exit_code, -1, "killed by SIGKILL: {}", out.stdout);
    assert!(!net.hosts().contains("alpha"));
    assert!(net.dns_del_without_result(&a, &["al"]).success());
    assert!(nxdomain(&b.ns, gw4, "alpha.dns.podman"));
    assert!(nxdomain(&b.ns, gw4, "al.dns.podman"));
    assert!(answers(&a.ns, gw4, "beta", A, &[addr_of(&rb, 0)]));
    assert_eq!(net.servers(), [pid]);
    // The last DEL killed after stopping the server, before removing the directory.
    let out = net.dns_fault("DEL", &b, &[], "dnsname:server stopped=kill");
    assert_eq!(out.exit_code, -1, "killed by SIGKILL: {}", out.stdout);
    assert!(net.servers().is_empty());
    assert!(net.dir().exists());
    assert_eq!(net.input_rules().len(), 1);
    assert!(net.dns_del_without_result(&b, &[]).success());
    assert!(!net.dir().exists());
    assert_eq!(net.input_rules(), Vec::<String>::new());
    net.del(&a, &["al"]);
    net.del(&b, &[]);
}

#[test]
fn an_add_stops_a_server_that_wrote_no_pid_file_before_starting_its_own() {
    // What an ADD killed right after starting dnsmasq leaves for a moment: a server of the
    // network that holds port 53 on the bridge but is in no pid file yet. Made here for good:
    // the network's first server is replaced by one that writes no pid file.
    let gw4: IpAddr = GW4.parse().unwrap();
    let net = Net::new();
    let (a, _) = net.add("ctr-a", "alpha", &[]);
    let first = net.pidfile();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first), nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_until("the server is dead", || has_exited(first));
    std::fs::remove_file(net.dir().join("pidfile")).unwrap();
    let conf_arg = format!("--conf-file={}", net.dir().join("dnsmasq.conf").display());
    let status = testkit::in_netns(std::process::Command::new("dnsmasq").args(["-u", "root", &conf_arg]), &net.host)
        .status()
        .unwrap();
    assert!(status.success());
    wait_until("the stray server runs", || net.servers().len() == 1);
    let stray = net.servers()[0];
    // (it wrote the conf's pid file when it started: gone, as if it had not got that far)
    std::fs::remove_file(net.dir().join("pidfile")).unwrap();
    let (b, rb) = net.add("ctr-b", "beta", &[]);
    assert_eq!(net.servers(), [net.pidfile()], "exactly one dnsmasq");
    assert_ne!(net.pidfile(), stray);
    assert!(answers(&a.ns, gw4, "beta", A, &[addr_of(&rb, 0)]));
    assert!(answers(&b.ns, gw4, "alpha", A, &[addr_of(&a.bridge_result, 0)]));
    net.del(&a, &[]);
    net.del(&b, &[]);
    assert!(net.servers().is_empty() && !net.dir().exists());
    assert_eq!(net.input_rules(), Vec::<String>::new());
}

#[test]
fn an_add_killed_before_its_child_becomes_dnsmasq_is_cleaned_up_by_del() {
    // The plugin dies while the process it spawns is still a copy of it (forked, not yet exec'd:
    // /proc shows the plugin's command line, not dnsmasq's), as a runtime's timeout can kill it.
    // The child goes on, a second later (the fault's pause), to exec dnsmasq. The runtime's DEL
    // must not be done before that child is dnsmasq and stopped: a DEL that missed it would
    // return while it still waits, and the next ADD would race its server for the port.
    let gw4: IpAddr = GW4.parse().unwrap();
    let net = Net::new();
    let c = net.attach("ctr-k", "killed");
    let out = net.dns_fault("ADD", &c, &["ka"], "dnsname:killed before exec=on");
    assert_eq!(out.exit_code, -1, "killed by SIGKILL: {}", out.stdout);
    assert!(net.dns_del_without_result(&c, &["ka"]).success(), "DEL");
    assert_eq!(net.live_processes(), Vec::<i32>::new(), "a process of the killed ADD outlived the DEL");
    assert!(net.servers().is_empty());
    assert!(!net.dir().exists(), "{} is left", net.dir().display());
    let (d, _) = net.add("ctr-d", "again", &[]);
    assert_eq!(net.servers(), [net.pidfile()]);
    assert!(answers(&d.ns, gw4, "again.dns.podman", A, &[addr_of(&d.bridge_result, 0)]));
    net.del(&d, &[]);
    assert!(net.servers().is_empty() && !net.dir().exists());
}

#[test]
fn a_server_that_cannot_start_is_reported_and_nothing_is_left() {
    let gw4: IpAddr = GW4.parse().unwrap();
    let net = Net::new();
    let c = net.attach("ctr-a", "alpha");
    // Port 53 on the bridge's address is taken: dnsmasq cannot bind and says why.
    let taken = net.host.run(|| UdpSocket::bind((gw4, 53)).expect("binding the bridge's port 53")).unwrap();
    let out = net.dns("ADD", &c, &[]);
    assert_eq!(out.err_code(), 999, "{}", out.stdout);
    let msg = out.json()["msg"].as_str().unwrap().to_string();
    assert!(msg.contains("dnsmasq failed") && msg.contains("in use"), "{msg}");
    assert!(net.servers().is_empty());
    assert!(!net.dir().exists(), "{} is left", net.dir().display());
    assert_eq!(net.input_rules(), Vec::<String>::new());
    // Once the port is free, the same ADD works.
    drop(taken);
    let r = net.dns("ADD", &c, &[]).ok();
    assert_eq!(net.servers(), [net.pidfile()]);
    assert!(answers(&c.ns, gw4, "alpha", A, &[addr_of(&r, 0)]));
    net.del(&c, &[]);
    assert!(net.servers().is_empty() && !net.dir().exists());
}
