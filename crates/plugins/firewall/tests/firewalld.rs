//! Kernel tests of the firewalld backend against the real daemon (Debian's firewalld package),
//! run by the test on a private D-Bus system bus (its own dbus-daemon, socket in a temporary
//! directory) inside a throwaway network namespace, in a private mount namespace with a tmpfs on
//! /run and its own (empty) configuration directory: the machine's firewall, bus and files are
//! never touched. Both processes are stopped by PID when the test ends.
//!
//! Skipped, saying so, when firewalld or dbus-daemon is not installed, unless
//! CNI_RS_REQUIRE_KERNEL_FEATURES=1.

use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::{Invocation, Netns, Output, TempDir, in_netns, ip, new_netns, serve_peer_address, tcp_ask};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_firewall"))
}

const REFERENCE: &str = "/usr/lib/cni/firewall";

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn available() -> bool {
    let there = Path::new("/usr/sbin/firewalld").exists() && Path::new("/usr/bin/dbus-daemon").exists();
    if !there {
        assert!(
            std::env::var("CNI_RS_REQUIRE_KERNEL_FEATURES").as_deref() != Ok("1"),
            "firewalld and dbus-daemon are required (scripts/deps.sh installs them)"
        );
        eprintln!("skipped: firewalld or dbus-daemon is not installed (scripts/deps.sh)");
    }
    there
}

/// A private system bus and a firewalld on it, inside `ns`.
struct Daemons {
    dir: TempDir,
    bus: Child,
    firewalld: Option<Child>,
}

impl Daemons {
    fn start(ns: &Netns) -> Daemons {
        let dir = TempDir::new("firewalld");
        let socket = dir.path().join("bus");
        let conf = dir.path().join("bus.conf");
        std::fs::write(
            &conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .unwrap();
        let bus = in_netns(
            Command::new("dbus-daemon")
                .arg(format!("--config-file={}", conf.display()))
                .args(["--nofork", "--nopidfile"]),
            ns,
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting dbus-daemon");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut d = Daemons { dir, bus, firewalld: None };
        d.start_firewalld(ns);
        d
    }

    fn address(&self) -> String {
        format!("unix:path={}", self.dir.path().join("bus").display())
    }

    fn start_firewalld(&mut self, ns: &Netns) {
        let etc = self.dir.path().join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        // unshare execs sh, which execs firewalld: one PID to stop.
        let script = format!(
            "mount -t tmpfs cni-test-firewalld /run && exec firewalld --nofork --nopid --system-config {} --log-target console",
            etc.display()
        );
        let child =
            in_netns(Command::new("unshare").args(["--mount", "--propagation", "private", "sh", "-c", &script]), ns)
                .env("DBUS_SYSTEM_BUS_ADDRESS", self.address())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting firewalld");
        self.firewalld = Some(child);
        // Until it owns its name on the bus (a couple of seconds; python under TCG is slower).
        let deadline = Instant::now() + Duration::from_secs(120);
        while !self.owns_name() {
            assert!(Instant::now() < deadline, "firewalld did not come up within 120 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop_firewalld(&mut self) {
        if let Some(mut child) = self.firewalld.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn dbus_send(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("dbus-send")
            .env("DBUS_SYSTEM_BUS_ADDRESS", self.address())
            // firewalld's first change rewrites its ruleset: a minute on an emulated CPU.
            .args(["--system", "--print-reply", "--reply-timeout=120000"])
            .args(args)
            .output()
            .ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn owns_name(&self) -> bool {
        self.dbus_send(&[
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.GetNameOwner",
            "string:org.fedoraproject.FirewallD1",
        ])
        .is_some()
    }

    /// The sources firewalld holds for `zone`.
    fn sources(&self, zone: &str) -> Vec<String> {
        let out = self
            .dbus_send(&[
                "--dest=org.fedoraproject.FirewallD1",
                "/org/fedoraproject/FirewallD1",
                "org.fedoraproject.FirewallD1.zone.getSources",
                &format!("string:{zone}"),
            ])
            .expect("getSources");
        out.lines().filter_map(|l| l.trim().strip_prefix("string \"")?.strip_suffix('"').map(str::to_string)).collect()
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        self.stop_firewalld();
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.bus.id() as i32), nix::sys::signal::SIGTERM);
        let _ = self.bus.wait();
    }
}

struct Host {
    ns: Netns,
    _outside: Netns,
    container: Netns,
    data: TempDir,
    daemons: Daemons,
    prev: Value,
}

impl Host {
    fn new() -> Host {
        let ns = new_netns();
        let outside = new_netns();
        ip(&ns, "link set lo up");
        testkit::link_namespaces(&ns, "uplink", "198.51.100.1/24", &outside, "eth0", "198.51.100.2/24");
        ip(&outside, "route add default via 198.51.100.1");
        ip(&ns, "link add br0 type bridge");
        ip(&ns, "addr add 10.10.0.1/24 dev br0");
        ip(&ns, "link set br0 up");
        testkit::set_sysctl(&ns, "net/ipv4/ip_forward", "1");
        serve_peer_address(&outside, sock("[::]:80"));
        let container = new_netns();
        ip(&container, "link set lo up");
        let mut rtnl = netkit::Rtnl::open_in(&ns).unwrap();
        rtnl.create_veth(&netkit::VethPair {
            name: "vh2",
            peer_name: "eth0",
            peer_ns: Some(std::os::fd::AsFd::as_fd(&*container)),
            ..Default::default()
        })
        .unwrap();
        ip(&ns, "link set vh2 master br0 up");
        ip(&container, "addr add 10.10.0.2/24 dev eth0");
        ip(&container, "link set eth0 up");
        ip(&container, "route add default via 10.10.0.1");
        let daemons = Daemons::start(&ns);
        let prev = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "br0"}, {"name": "vh2"}, {"name": "eth0", "sandbox": container.path()}],
            "ips": [{"address": "10.10.0.2/24", "gateway": "10.10.0.1", "interface": 2},
                    {"address": "fd10::2/64", "interface": 2}]
        });
        Host { ns, _outside: outside, container, data: TempDir::new("firewalld-data"), daemons, prev }
    }

    fn conf(&self, prev: bool, extra: Value) -> Value {
        let mut conf = json!({"cniVersion": "1.0.0", "name": "net1", "type": "firewall", "dataDir": self.data.path()});
        if prev {
            conf["prevResult"] = self.prev.clone();
        }
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        conf
    }

    fn run_with(&self, plugin: &Path, command: &str, conf: &Value) -> Output {
        Invocation::new(command, "ctr2", self.container.path(), "eth0", &conf.to_string())
            .var("DBUS_SYSTEM_BUS_ADDRESS", Some(&self.daemons.address()))
            .run(plugin, &self.ns)
    }

    fn run(&self, command: &str, conf: &Value) -> Output {
        self.run_with(&bin(), command, conf)
    }
}

const BOTH: [&str; 2] = ["10.10.0.2/32", "fd10::2/128"];

#[test]
fn addresses_become_sources_of_the_zone_and_leave_it() {
    if !available() {
        return;
    }
    let h = Host::new();
    // The uplink in another zone than the default one (public, which forwards within itself):
    // firewalld rejects forwarding between them, so the container is cut off until it is trusted.
    h.daemons
        .dbus_send(&[
            "--dest=org.fedoraproject.FirewallD1",
            "/org/fedoraproject/FirewallD1",
            "org.fedoraproject.FirewallD1.zone.addInterface",
            "string:dmz",
            "string:uplink",
        ])
        .expect("putting the uplink in zone dmz");
    assert_eq!(tcp_ask(&h.container, sock("198.51.100.2:80")), None);
    let conf = h.conf(true, json!({"backend": "firewalld"}));
    assert_eq!(h.run("ADD", &conf).ok(), h.prev);
    assert_eq!(h.daemons.sources("trusted"), BOTH);
    assert_eq!(tcp_ask(&h.container, sock("198.51.100.2:80")).as_deref(), Some("10.10.0.2"));
    h.run("CHECK", &conf).ok();
    // An ADD again (a runtime retrying) finds the sources already bound: success.
    h.run("ADD", &conf).ok();
    // DEL without prevResult: the record names the sources.
    h.run("DEL", &h.conf(false, json!({"backend": "firewalld"}))).ok();
    assert!(h.daemons.sources("trusted").is_empty());
    assert_eq!(tcp_ask(&h.container, sock("198.51.100.2:80")), None);
    assert!(h.run("CHECK", &conf).err_code() > 0);
    h.run("DEL", &conf).ok();

    // Another zone, and the reference's empty backend, which means firewalld when it runs.
    let public = h.conf(true, json!({"backend": "", "firewalldZone": "public"}));
    h.run("ADD", &public).ok();
    assert_eq!(h.daemons.sources("public"), BOTH);
    let saved = String::from_utf8_lossy(
        &in_netns(Command::new("iptables-save").args(["-t", "filter"]), &h.ns).output().unwrap().stdout,
    )
    .into_owned();
    assert!(!saved.contains("CNI-FORWARD"), "firewalld chosen, not iptables:\n{saved}");
    h.run("DEL", &public).ok();
    assert!(h.daemons.sources("public").is_empty());
}

#[test]
fn either_implementation_deletes_what_the_other_added() {
    if !available() {
        return;
    }
    let h = Host::new();
    let conf = h.conf(true, json!({"backend": "firewalld"}));
    h.run("ADD", &conf).ok();
    h.run_with(Path::new(REFERENCE), "CHECK", &conf).ok();
    h.run_with(Path::new(REFERENCE), "DEL", &conf).ok();
    assert!(h.daemons.sources("trusted").is_empty());
    h.run_with(Path::new(REFERENCE), "ADD", &conf).ok();
    assert_eq!(h.daemons.sources("trusted"), BOTH);
    h.run("CHECK", &conf).ok();
    h.run("DEL", &conf).ok();
    assert!(h.daemons.sources("trusted").is_empty());
}

#[test]
fn ingress_policy_uses_iptables_and_a_gone_firewalld_is_no_error_for_del() {
    if !available() {
        return;
    }
    let mut h = Host::new();
    let conf = h.conf(true, json!({"backend": "firewalld", "ingressPolicy": "same-bridge"}));
    h.run("ADD", &conf).ok();
    let saved = String::from_utf8_lossy(
        &in_netns(Command::new("iptables-save").args(["-t", "filter"]), &h.ns).output().unwrap().stdout,
    )
    .into_owned();
    assert!(saved.contains("-A CNI-ISOLATION-STAGE-2 -o br0"), "{saved}");
    let mut status = h.conf(false, json!({"backend": "firewalld"}));
    status["cniVersion"] = json!("1.1.0");
    h.run("STATUS", &status).ok();
    h.daemons.stop_firewalld();
    assert_eq!(h.run("STATUS", &status).err_code(), 50);
    // firewalld took its runtime sources with it: DEL succeeds and forgets the attachment.
    h.run("DEL", &h.conf(false, json!({"backend": "firewalld"}))).ok();
    assert_eq!(
        std::fs::read_dir(h.data.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("fw-"))
            .count(),
        0
    );
    // ADD with firewalld configured but not running fails and leaves nothing.
    let out = h.run("ADD", &conf);
    assert!(out.err_code() > 0, "{}", out.stdout);
    assert!(std::fs::read_dir(h.data.path().join("addr")).unwrap().next().is_none());
}
