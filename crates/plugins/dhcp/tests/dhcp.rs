//! Kernel tests: the built `dhcp` daemon gets leases from a real DHCP server (Debian's dnsmasq)
//! for container interfaces, driven by the built `dhcp` plugin as a runtime runs it.
//!
//! Layout, all in throwaway namespaces: a "server" namespace with bridge `br0` (10.77.0.1/24) and
//! dnsmasq on it; one namespace per container, its `eth0` a veth whose peer is a port of `br0`;
//! a sandbox "host" namespace where the daemon runs (it enters the containers' namespaces by path).
//! dnsmasq and the daemon are started by the test and stopped by PID when their guard drops;
//! every wait is bounded.

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::{Invocation, Netns, Output, TempDir, in_netns, ip, new_netns};

const NET: &str = "dnet";

fn dhcp() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dhcp"))
}

/// Polls `f` every 50 ms for at most `limit`.
fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// A child process stopped (SIGTERM, then SIGKILL after 5 s) and reaped when dropped.
struct Proc(Option<Child>);

impl Proc {
    fn pid(&self) -> i32 {
        self.0.as_ref().map_or(0, |c| c.id() as i32)
    }

    fn stop(&mut self) {
        let Some(mut child) = self.0.take() else { return };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        if !wait_for(Duration::from_secs(5), || child.try_wait().ok().flatten().is_some()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The server side: namespace, bridge, dnsmasq and its lease file.
struct Server {
    ns: Netns,
    dir: TempDir,
    _dnsmasq: Proc,
}

impl Server {
    /// dnsmasq handing out 10.77.0.50-150 for `lease` with T1 `t1` seconds.
    fn start(lease: &str, t1: Option<u32>) -> Server {
        Server::start_with(lease, t1, &[])
    }

    /// [`Server::start`] with more dnsmasq arguments.
    fn start_with(lease: &str, t1: Option<u32>, extra: &[&str]) -> Server {
        let ns = new_netns();
        ip(&ns, "link set lo up");
        ip(&ns, "link add br0 type bridge");
        ip(&ns, "addr add 10.77.0.1/24 dev br0");
        ip(&ns, "link set br0 up");
        let dir = TempDir::new("dhcp-server");
        let mut cmd = Command::new("dnsmasq");
        cmd.args(["--keep-in-foreground", "--conf-file=/dev/null", "--port=0", "--interface=br0", "--bind-interfaces"])
            .arg("--user=root")
            .arg("--pid-file=")
            .arg(format!("--dhcp-range=10.77.0.50,10.77.0.150,255.255.255.0,{lease}"))
            .arg(format!("--dhcp-leasefile={}", dir.path().join("leases").display()))
            .arg(format!("--log-facility={}", dir.path().join("log").display()))
            .args(["--log-dhcp", "--dhcp-authoritative", "--dhcp-option=option:router,10.77.0.1"])
            .args(["--dhcp-option=option:dns-server,10.77.0.53", "--dhcp-option=option:domain-name,dhcp.test"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(t1) = t1 {
            cmd.arg(format!("--dhcp-option=option:T1,{t1}")).arg(format!("--dhcp-option=option:T2,{}", t1 * 2));
        }
        in_netns(&mut cmd, &ns);
        let dnsmasq = Proc(Some(cmd.spawn().expect("starting dnsmasq")));
        let s = Server { ns, dir, _dnsmasq: dnsmasq };
        assert!(
            wait_for(Duration::from_secs(10), || s.log().contains("DHCP, IP range")),
            "dnsmasq did not start: {}",
            s.log()
        );
        s
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// The lease file's lines: `expiry mac address hostname client-id`.
    fn leases(&self) -> Vec<Vec<String>> {
        let text = std::fs::read_to_string(self.dir.path().join("leases")).unwrap_or_default();
        text.lines().map(|l| l.split_whitespace().map(String::from).collect()).collect()
    }

    fn lease_of(&self, addr: &str) -> Option<Vec<String>> {
        self.leases().into_iter().find(|l| l.get(2).map(String::as_str) == Some(addr))
    }

    /// A container namespace with `eth0` plugged into `br0` (down, no address).
    fn container(&self, port: &str) -> Netns {
        let ctr = new_netns();
        let mut rtnl = netkit::Rtnl::open_in(&self.ns).expect("netlink in the server namespace");
        rtnl.create_veth(&netkit::VethPair {
            name: port,
            peer_name: "eth0",
            peer_ns: Some(ctr.as_fd()),
            ..Default::default()
        })
        .expect("creating the container's veth");
        ip(&self.ns, &format!("link set {port} master br0 up"));
        ctr
    }
}

/// `dhcp daemon` in a sandbox host namespace, with its socket and state in a temp dir.
struct Daemon {
    host: Netns,
    dir: TempDir,
    proc: Proc,
    flags: Vec<String>,
}

impl Daemon {
    fn start(flags: &[&str]) -> Daemon {
        let host = new_netns();
        ip(&host, "link set lo up");
        let dir = TempDir::new("dhcp-daemon");
        let mut d = Daemon { host, dir, proc: Proc(None), flags: flags.iter().map(|s| s.to_string()).collect() };
        d.restart();
        d
    }

    fn socket(&self) -> String {
        self.dir.path().join("run/dhcp.sock").display().to_string()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Stops the daemon (if running) and starts it again.
    fn restart(&mut self) {
        self.proc.stop();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let mut cmd = Command::new(dhcp());
        cmd.args(["daemon", "-socketpath", &self.socket(), "-pidfile"])
            .arg(self.dir.path().join("dhcp.pid"))
            .args(&self.flags)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        in_netns(&mut cmd, &self.host);
        self.proc = Proc(Some(cmd.spawn().expect("starting dhcp daemon")));
        let sock = self.socket();
        assert!(
            wait_for(Duration::from_secs(10), || UnixStream::connect(&sock).is_ok()),
            "daemon did not listen: {}",
            self.log()
        );
    }

    fn conf(&self, extra: Value) -> Value {
        let mut ipam = json!({"type": "dhcp", "daemonSocketPath": self.socket()});
        for (k, v) in extra.as_object().into_iter().flatten() {
            ipam[k] = v.clone();
        }
        json!({"cniVersion": "1.0.0", "name": NET, "type": "macvlan", "ipam": ipam})
    }

    fn run(&self, command: &str, id: &str, ctr: &Netns, conf: &Value) -> Output {
        Invocation::new(command, id, ctr.path(), "eth0", &conf.to_string())
            .var("CNI_ARGS", Some(&format!("IgnoreUnknown=1;K8S_POD_NAME=pod-{id}")))
            .run(&dhcp(), &self.host)
    }

    /// Sends raw bytes to the socket and returns the reply line as JSON.
    fn raw(&self, bytes: &[u8]) -> Value {
        let mut s = UnixStream::connect(self.socket()).expect("connecting to the daemon");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("reply is not JSON ({e}): {out:?}"))
    }

    fn state_files(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("run/dhcp-leases")).map_or(0, |d| d.count())
    }
}

fn address_of(result: &Value) -> String {
    result["ips"][0]["address"].as_str().expect("an address").to_string()
}

fn bare(cidr: &str) -> String {
    cidr.split('/').next().unwrap().to_string()
}

#[test]
fn add_gets_a_lease_and_del_releases_it() {
    let server = Server::start("10m", None);
    let daemon = Daemon::start(&["-timeout", "5s", "-resendtimeout", "30s"]);
    // DNS servers and domain come only when asked for (the default request is router and mask).
    let provide = json!({"provide": [{"option": "host-name", "fromArg": "K8S_POD_NAME"}],
                         "request": [{"option": "6"}, {"option": "15"}]});

    // Three containers at once: three different leases.
    let ctrs: Vec<Netns> = (0..3).map(|i| server.container(&format!("vs{i}"))).collect();
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = ctrs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (d, conf) = (&daemon, daemon.conf(provide.clone()));
                s.spawn(move || d.run("ADD", &format!("c{i}"), c, &conf).ok())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut seen = Vec::new();
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["cniVersion"], "1.0.0");
        let addr = address_of(r);
        assert!(addr.starts_with("10.77.0.") && addr.ends_with("/24"), "{r}");
        assert_eq!(r["ips"][0]["gateway"], "10.77.0.1");
        assert_eq!(r["routes"], json!([{"dst": "0.0.0.0/0", "gw": "10.77.0.1"}]));
        assert_eq!(r["dns"], json!({"nameservers": ["10.77.0.53"], "domain": "dhcp.test"}));
        let lease = server.lease_of(&bare(&addr)).unwrap_or_else(|| panic!("{addr} not in {:?}", server.leases()));
        assert_eq!(lease[3], format!("pod-c{i}"), "host-name from CNI_ARGS: {lease:?}");
        // The client ID is the reference's: type 0, then containerID/network/ifname.
        let cid: Vec<String> =
            std::iter::once(0u8).chain(format!("c{i}/{NET}/eth0").bytes()).map(|b| format!("{b:02x}")).collect();
        assert_eq!(lease[4], cid.join(":"));
        assert!(!seen.contains(&addr));
        seen.push(addr.clone());
        // The daemon brought the interface up to ask.
        assert!(testkit::is_up(&testkit::link(&ctrs[i], "eth0").unwrap()));
        ip(&ctrs[i], &format!("addr add {addr} dev eth0"));
    }
    assert_eq!(daemon.state_files(), 3);

    // ADD again (a runtime retrying) and CHECK give the same lease.
    let again = daemon.run("ADD", "c0", &ctrs[0], &daemon.conf(provide.clone())).ok();
    assert_eq!(address_of(&again), seen[0]);
    // ... in every result version.
    for (version, path) in [("0.4.0", "/ips/0/address"), ("0.3.1", "/ips/0/address"), ("0.2.0", "/ip4/ip")] {
        let mut conf = daemon.conf(provide.clone());
        conf["cniVersion"] = json!(version);
        let r = daemon.run("ADD", "c0", &ctrs[0], &conf).ok();
        assert_eq!(r["cniVersion"], version);
        assert_eq!(r.pointer(path).and_then(Value::as_str), Some(seen[0].as_str()), "{r}");
    }
    let mut check_conf = daemon.conf(json!({}));
    check_conf["prevResult"] = results[0].clone();
    daemon.run("CHECK", "c0", &ctrs[0], &check_conf).ok();
    check_conf["prevResult"]["ips"][0]["address"] = json!("10.77.0.250/24");
    assert_eq!(daemon.run("CHECK", "c0", &ctrs[0], &check_conf).err_code(), 999);

    // DEL releases: the server forgets the lease. A second DEL succeeds.
    for (i, c) in ctrs.iter().enumerate() {
        daemon.run("DEL", &format!("c{i}"), c, &daemon.conf(json!({}))).ok();
        let a = bare(&seen[i]);
        assert!(
            wait_for(Duration::from_secs(5), || server.lease_of(&a).is_none()),
            "{a} still leased: {}",
            server.log()
        );
        daemon.run("DEL", &format!("c{i}"), c, &daemon.conf(json!({}))).ok();
    }
    assert_eq!(daemon.state_files(), 0);
    // CHECK of a released attachment fails.
    assert_eq!(daemon.run("CHECK", "c0", &ctrs[0], &check_conf).err_code(), 999);
    drop(server);
}

#[test]
fn daemon_restart_keeps_the_lease_and_renews_it() {
    let server = Server::start("2m", Some(4));
    let mut daemon = Daemon::start(&["-timeout", "5s", "-resendtimeout", "30s"]);
    let ctr = server.container("vs0");
    let r = daemon.run("ADD", "r1", &ctr, &daemon.conf(json!({}))).ok();
    let addr = address_of(&r);
    ip(&ctr, &format!("addr add {addr} dev eth0"));
    let expiry = |s: &Server| s.lease_of(&bare(&addr)).map_or(0, |l| l[0].parse::<u64>().unwrap());
    let first = expiry(&server);
    assert!(first > 0);

    // SIGTERM and start again: the lease is read back and renewed at T1 (4 s) without any call.
    let old_pid = daemon.proc.pid();
    daemon.restart();
    assert_ne!(daemon.proc.pid(), old_pid);
    assert!(
        wait_for(Duration::from_secs(20), || expiry(&server) > first),
        "no renewal after the restart\ndaemon: {}\nserver: {}",
        daemon.log(),
        server.log()
    );
    let again = daemon.run("ADD", "r1", &ctr, &daemon.conf(json!({}))).ok();
    assert_eq!(address_of(&again), addr);

    // Killed outright (no SIGTERM), the same.
    let pid = nix::unistd::Pid::from_raw(daemon.proc.pid());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let second = expiry(&server);
    daemon.restart();
    assert!(
        wait_for(Duration::from_secs(20), || expiry(&server) > second),
        "no renewal after SIGKILL: {}",
        daemon.log()
    );

    daemon.run("DEL", "r1", &ctr, &daemon.conf(json!({}))).ok();
    assert!(wait_for(Duration::from_secs(5), || server.lease_of(&bare(&addr)).is_none()));

    // A lease whose namespace is gone is dropped at start, not renewed.
    let ctr2 = server.container("vs1");
    let r2 = daemon.run("ADD", "r2", &ctr2, &daemon.conf(json!({}))).ok();
    assert_eq!(daemon.state_files(), 1, "{r2}");
    daemon.proc.stop();
    ctr2.remove();
    daemon.restart();
    assert!(wait_for(Duration::from_secs(5), || daemon.state_files() == 0));
}

#[test]
fn malformed_requests_get_errors_and_the_daemon_survives() {
    let daemon = Daemon::start(&["-timeout", "1s", "-resendtimeout", "2s"]);
    let code = |v: &Value| v["error"]["code"].as_u64().unwrap_or_else(|| panic!("no error: {v}"));
    assert_eq!(code(&daemon.raw(b"this is not json\n")), 6);
    assert_eq!(code(&daemon.raw(b"{\"method\":\"explode\"}\n")), 6);
    assert_eq!(code(&daemon.raw(b"[1,2,3]\n")), 6);
    assert_eq!(code(&daemon.raw(b"")), 6);
    assert_eq!(code(&daemon.raw(&vec![b'{'; 3 << 20])), 6);
    let bad_id = json!({"method": "allocate", "containerID": "", "netns": "/x", "ifName": "eth0", "config": {}});
    assert_eq!(code(&daemon.raw(format!("{bad_id}\n").as_bytes())), 3);
    let bad_opt = json!({"method": "allocate", "containerID": "c", "netns": "/x", "ifName": "eth0",
                         "config": {"name": NET, "ipam": {"provide": [{"option": "nope", "value": "x"}]}}});
    assert_eq!(code(&daemon.raw(format!("{bad_opt}\n").as_bytes())), 7);
    let no_ns = json!({"method": "allocate", "containerID": "c", "netns": "/proc/self/no-such-ns", "ifName": "eth0",
                       "config": {"name": NET}});
    assert_eq!(code(&daemon.raw(format!("{no_ns}\n").as_bytes())), 3);
    // A client trickling a byte at a time is cut off after 10 s in all, with an error.
    let trickle = std::thread::spawn({
        let sock = daemon.socket();
        move || {
            let mut s = UnixStream::connect(sock).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            let started = Instant::now();
            let mut reply = Vec::new();
            while started.elapsed() < Duration::from_secs(30) {
                if s.write_all(b" ").is_err() {
                    break;
                }
                let mut buf = [0u8; 256];
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => reply.extend_from_slice(&buf[..n]),
                    Err(_) => {}
                }
            }
            (started.elapsed(), String::from_utf8_lossy(&reply).into_owned())
        }
    });
    // A client that connects and says nothing is cut off; others are served meanwhile.
    let _silent = UnixStream::connect(daemon.socket()).unwrap();
    let status = json!({"method": "status"});
    assert_eq!(daemon.raw(format!("{status}\n").as_bytes()), json!({"result": null}));
    let ctr = new_netns();
    let mut conf = daemon.conf(json!({}));
    conf["cniVersion"] = json!("1.1.0");
    Invocation::new("STATUS", "", "", "", &conf.to_string()).run(&dhcp(), &daemon.host).ok();
    let (took, reply) = trickle.join().unwrap();
    assert!(took < Duration::from_secs(15) && reply.contains("took too long"), "{took:?} {reply}");
    // No server: ADD fails within the configured time, keeps no state.
    ip(&ctr, "link add eth0 type veth peer name eth1");
    let started = Instant::now();
    let out = daemon.run("ADD", "lonely", &ctr, &daemon.conf(json!({})));
    assert_eq!(out.err_code(), 999, "{}", out.stdout);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(daemon.state_files(), 0);
    // An interface that does not exist.
    assert_eq!(
        Invocation::new("ADD", "x", ctr.path(), "nope0", &daemon.conf(json!({})).to_string())
            .run(&dhcp(), &daemon.host)
            .err_code(),
        999
    );
}

#[test]
fn bad_config_and_missing_daemon_are_spec_errors() {
    let host = new_netns();
    let ctr = new_netns();
    let dir = TempDir::new("dhcp-nodaemon");
    let sock = dir.path().join("none.sock").display().to_string();
    let conf = |ipam: Value| {
        let mut c = json!({"cniVersion": "1.1.0", "name": NET, "type": "macvlan",
                           "ipam": {"type": "dhcp", "daemonSocketPath": sock}});
        for (k, v) in ipam.as_object().into_iter().flatten() {
            c["ipam"][k] = v.clone();
        }
        c.to_string()
    };
    let run = |cmd: &str, c: &str| Invocation::new(cmd, "c1", ctr.path(), "eth0", c).run(&dhcp(), &host);
    assert_eq!(run("ADD", &conf(json!({"provide": [{"option": "bogus", "value": "1"}]}))).err_code(), 7);
    assert_eq!(run("ADD", &conf(json!({"request": [{"option": "300"}]}))).err_code(), 7);
    assert_eq!(run("ADD", &conf(json!({"priority": "high"}))).err_code(), 6);
    assert_eq!(run("ADD", "{not json").err_code(), 6);
    let out = run("ADD", &conf(json!({})));
    assert_eq!(out.err_code(), 11, "{}", out.stdout);
    assert_eq!(run("STATUS", &conf(json!({}))).err_code(), 50);
    assert!(!Path::new(&sock).exists());
}

#[test]
fn socket_activation_takes_the_passed_socket() {
    // systemd-socket-activate listens, then execs the daemon on the first connection with
    // LISTEN_FDS=1 (as cni-dhcp.socket does): the daemon serves on fd 3 and binds nothing itself.
    let host = new_netns();
    let dir = TempDir::new("dhcp-activation");
    let passed = dir.path().join("passed.sock");
    let own = dir.path().join("own/dhcp.sock");
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.arg("-l")
        .arg(&passed)
        .arg(dhcp())
        .args(["daemon", "-socketpath"])
        .arg(&own)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    in_netns(&mut cmd, &host);
    let _activator = Proc(Some(cmd.spawn().expect("starting systemd-socket-activate")));
    assert!(wait_for(Duration::from_secs(10), || passed.exists()));
    // A raw call first, bounded: a daemon that ignored the passed socket would never answer.
    let mut s = UnixStream::connect(&passed).expect("connecting to the passed socket");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"{\"method\":\"status\"}\n").unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert_eq!(reply.trim(), r#"{"result":null}"#);
    let conf = json!({"cniVersion": "1.1.0", "name": NET, "type": "macvlan",
                      "ipam": {"type": "dhcp", "daemonSocketPath": passed.display().to_string()}});
    Invocation::new("STATUS", "", "", "", &conf.to_string()).run(&dhcp(), &host).ok();
    assert!(!own.exists(), "the daemon bound its own socket too");
}

#[test]
fn a_lease_whose_address_is_not_configured_is_renewed_and_released_by_broadcast() {
    // The dhcp plugin alone configures nothing: the client cannot unicast from the address, so it
    // renews with a broadcast REQUEST naming the address and releases by broadcast.
    let server = Server::start("2m", Some(3));
    let daemon = Daemon::start(&["-timeout", "5s", "-resendtimeout", "30s"]);
    let ctr = server.container("vs0");
    let addr = bare(&address_of(&daemon.run("ADD", "u1", &ctr, &daemon.conf(json!({}))).ok()));
    assert!(testkit::addresses(&ctr, "eth0").iter().all(|a| !a.starts_with(&addr)));
    let expiry = || server.lease_of(&addr).map_or(0, |l| l[0].parse::<u64>().unwrap());
    let first = expiry();
    assert!(wait_for(Duration::from_secs(20), || expiry() > first), "not renewed: {}", daemon.log());
    daemon.run("DEL", "u1", &ctr, &daemon.conf(json!({}))).ok();
    assert!(wait_for(Duration::from_secs(5), || server.lease_of(&addr).is_none()), "not released: {}", server.log());
}

#[test]
fn gc_releases_the_leases_of_attachments_no_longer_listed() {
    let server = Server::start("10m", None);
    let daemon = Daemon::start(&["-timeout", "5s", "-resendtimeout", "30s"]);
    let (keep, drop) = (server.container("vs0"), server.container("vs1"));
    let a_keep = bare(&address_of(&daemon.run("ADD", "keep", &keep, &daemon.conf(json!({}))).ok()));
    let a_drop = bare(&address_of(&daemon.run("ADD", "gone", &drop, &daemon.conf(json!({}))).ok()));
    let mut conf = daemon.conf(json!({}));
    conf["cniVersion"] = json!("1.1.0");
    // Another network's GC touches nothing of this one.
    let mut other = conf.clone();
    other["name"] = json!("othernet");
    other["cni.dev/valid-attachments"] = json!([]);
    Invocation::new("GC", "", "", "", &other.to_string()).run(&dhcp(), &daemon.host).ok();
    assert_eq!(daemon.state_files(), 2);
    conf["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    Invocation::new("GC", "", "", "", &conf.to_string()).run(&dhcp(), &daemon.host).ok();
    assert!(wait_for(Duration::from_secs(5), || server.lease_of(&a_drop).is_none()), "{}", daemon.log());
    assert!(server.lease_of(&a_keep).is_some());
    assert_eq!(daemon.state_files(), 1);
    // GC again: nothing more to do.
    Invocation::new("GC", "", "", "", &conf.to_string()).run(&dhcp(), &daemon.host).ok();
    assert!(server.lease_of(&a_keep).is_some());
}

#[test]
fn a_netns_removed_without_del_ends_its_lease() {
    // The lease's thread sits in the namespace and would keep it (and its interface) alive; once
    // the path is gone the daemon releases the lease and lets go.
    let server = Server::start("10m", None);
    let daemon = Daemon::start(&["-timeout", "5s", "-resendtimeout", "30s"]);
    let ctr = server.container("vs0");
    let addr = bare(&address_of(&daemon.run("ADD", "n1", &ctr, &daemon.conf(json!({}))).ok()));
    ctr.remove();
    assert!(wait_for(Duration::from_secs(25), || server.lease_of(&addr).is_none()), "{}", daemon.log());
    assert!(wait_for(Duration::from_secs(5), || daemon.state_files() == 0));
    assert!(wait_for(Duration::from_secs(5), || testkit::link(&server.ns, "vs0").is_none()), "the namespace lives on");
}

#[test]
fn an_add_that_fails_or_dies_after_the_lease_leaves_nothing_behind() {
    let server = Server::start("10m", None);
    let daemon = Daemon::start(&["-timeout", "5s", "-resendtimeout", "30s"]);
    let ctr = server.container("vs0");
    ip(&ctr, "link set eth0 up");
    let conf = daemon.conf(json!({})).to_string();
    let run = |command: &str, fault: Option<&str>| {
        Invocation::new(command, "f1", ctr.path(), "eth0", &conf).var("CNI_RS_FAULT", fault).run(&dhcp(), &daemon.host)
    };
    // A failure (or a panic) after the daemon acquired the lease: the ADD releases it itself.
    for action in ["fail", "panic"] {
        let out = run("ADD", Some(&format!("dhcp:allocated={action}")));
        out.err_code();
        assert!(wait_for(Duration::from_secs(5), || server.leases().is_empty()), "{action}: {:?}", server.leases());
        assert_eq!(daemon.state_files(), 0);
    }
    // Killed there: the runtime's DEL releases it.
    let out = run("ADD", Some("dhcp:allocated=kill"));
    assert!(!out.success() && out.stdout.is_empty());
    assert_eq!(server.leases().len(), 1);
    run("DEL", None).ok();
    assert!(wait_for(Duration::from_secs(5), || server.leases().is_empty()), "{:?}", server.leases());
    assert_eq!(daemon.state_files(), 0);
}

#[test]
fn classless_routes_and_the_broadcast_flag() {
    // Option 121 from the server: its routes replace option 33 and the default route via the
    // router (RFC 3442), an on-link one with scope link; `-broadcast` asks for broadcast replies.
    let server = Server::start_with(
        "10m",
        None,
        &[
            "--dhcp-option=option:classless-static-route,10.99.0.0/16,10.77.0.2,10.98.0.0/24,0.0.0.0,0.0.0.0/0,10.77.0.1",
            "--dhcp-option=option:static-route,172.16.0.1,10.77.0.3",
        ],
    );
    let daemon = Daemon::start(&["-timeout", "5s", "-resendtimeout", "30s", "-broadcast"]);
    let ctr = server.container("vs0");
    let mut conf = daemon.conf(json!({"request": [{"option": "121"}, {"option": "33"}], "priority": 50}));
    conf["cniVersion"] = json!("1.1.0");
    let r = daemon.run("ADD", "cr", &ctr, &conf).ok();
    assert_eq!(
        r["routes"],
        json!([
            {"dst": "10.99.0.0/16", "gw": "10.77.0.2", "priority": 50},
            {"dst": "10.98.0.0/24", "gw": "0.0.0.0", "priority": 50, "scope": 253},
            {"dst": "0.0.0.0/0", "gw": "10.77.0.1", "priority": 50}
        ]),
        "{r}"
    );
    assert!(server.log().contains("broadcast response"), "{}", server.log());
    // Without option 121 in the request: option 33's classful route and the default route.
    let ctr2 = server.container("vs1");
    let r2 = daemon.run("ADD", "cr2", &ctr2, &daemon.conf(json!({"request": [{"option": "33"}]}))).ok();
    assert_eq!(
        r2["routes"],
        json!([{"dst": "172.16.0.1/16", "gw": "10.77.0.3"}, {"dst": "0.0.0.0/0", "gw": "10.77.0.1"}]),
        "{r2}"
    );
}

#[test]
fn hostprefix_prefixes_the_socket_and_netns_paths() {
    // A daemon in a container sees the host's root under -hostprefix: the netns paths the runtime
    // passes and its own socket path are taken under it.
    let server = Server::start("10m", None);
    let ctr = server.container("vs0");
    let host = new_netns();
    let root = TempDir::new("dhcp-hostroot");
    std::os::unix::fs::symlink(ctr.path(), root.path().join("ctr-ns")).unwrap();
    let mut cmd = Command::new(dhcp());
    cmd.args(["daemon", "-timeout", "5s", "-socketpath", "/run/cni/dhcp.sock", "-hostprefix"])
        .arg(root.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    in_netns(&mut cmd, &host);
    let _daemon = Proc(Some(cmd.spawn().expect("starting dhcp daemon")));
    let sock = root.path().join("run/cni/dhcp.sock");
    assert!(wait_for(Duration::from_secs(10), || UnixStream::connect(&sock).is_ok()));
    let conf = json!({"cniVersion": "1.0.0", "name": NET, "type": "macvlan",
                      "ipam": {"type": "dhcp", "daemonSocketPath": sock.display().to_string()}});
    let r = Invocation::new("ADD", "hp", "/ctr-ns", "eth0", &conf.to_string()).run(&dhcp(), &host).ok();
    let addr = bare(&address_of(&r));
    assert!(server.lease_of(&addr).is_some());
    assert!(root.path().join("run/cni/dhcp-leases").read_dir().unwrap().count() == 1);
    Invocation::new("DEL", "hp", "/ctr-ns", "eth0", &conf.to_string()).run(&dhcp(), &host).ok();
    assert!(wait_for(Duration::from_secs(5), || server.lease_of(&addr).is_none()));
}

#[test]
fn renewal_gives_way_to_rebinding_at_t2() {
    // The server's namespace drops DHCP unicast to it: renewals (T1 = 2 s) go unanswered, and
    // at T2 (4 s) the client rebinds by broadcast, which gets through.
    let server = Server::start("2m", Some(2));
    let daemon = Daemon::start(&["-timeout", "1s", "-resendtimeout", "30s"]);
    let ctr = server.container("vs0");
    let addr = address_of(&daemon.run("ADD", "rb", &ctr, &daemon.conf(json!({}))).ok());
    ip(&ctr, &format!("addr add {addr} dev eth0"));
    let mut nft = Command::new("nft");
    nft.arg(
        "add table ip t; add chain ip t in { type filter hook input priority 0; }; \
         add rule ip t in ip daddr 10.77.0.1 udp dport 67 drop",
    );
    in_netns(&mut nft, &server.ns);
    let nft = nft.status().expect("running nft");
    assert!(nft.success());
    let expiry = || server.lease_of(&bare(&addr)).map_or(0, |l| l[0].parse::<u64>().unwrap());
    let first = expiry();
    assert!(wait_for(Duration::from_secs(20), || daemon.log().contains("lease rebound")), "{}", daemon.log());
    assert!(wait_for(Duration::from_secs(5), || expiry() > first));
    assert!(daemon.log().contains("no DHCPACK") || daemon.log().contains("timed out"), "{}", daemon.log());
}

#[test]
fn a_provided_client_identifier_is_used_from_discover_to_release() {
    let server = Server::start("10m", None);
    let daemon = Daemon::start(&["-timeout", "5s", "-resendtimeout", "30s"]);
    let ctr = server.container("vs0");
    let conf = daemon.conf(json!({"provide": [{"option": "dhcp-client-identifier", "value": "my-id"}]}));
    let addr = bare(&address_of(&daemon.run("ADD", "ci", &ctr, &conf).ok()));
    let lease = server.lease_of(&addr).expect("leased");
    assert_eq!(lease[4], "6d:79:2d:69:64", "{lease:?}");
    daemon.run("DEL", "ci", &ctr, &conf).ok();
    assert!(wait_for(Duration::from_secs(5), || server.lease_of(&addr).is_none()), "{}", server.log());
}
