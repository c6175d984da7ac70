//! Test support for kernel tests: throwaway network namespaces, running plugin binaries the way a
//! runtime does, and looking at the result from outside with `ip`.
//!
//! Namespaces here are anonymous: they have no name and no mount, exist only while this process
//! holds their handle, and vanish with everything in them (links, bridges, routes, nft tables)
//! when the test ends, even if it panics or is killed. Nothing here touches the machine's own
//! network namespace: plugins run with their "host" set to a sandbox namespace.

use netkit::NetNs;
use serde_json::Value;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Fails the test with a clear message unless it runs as root (kernel tests need CAP_SYS_ADMIN and
/// CAP_NET_ADMIN; CI runs as root).
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "kernel tests create network namespaces and must run as root (sudo -E cargo test)"
    );
}

/// A throwaway network namespace, held by a parked thread of this process. Its path,
/// `/proc/<pid>/task/<tid>/ns/net`, names it for as long as the value lives and never names
/// anything else afterwards (thread IDs are not reused within a test run), so "the netns is gone"
/// can be tested without races. It dereferences to a [`NetNs`] handle.
pub struct Netns {
    ns: Option<NetNs>,
    path: String,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Netns {
    /// The path to hand to a plugin as `CNI_NETNS`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Removes the namespace: its path disappears and the kernel destroys it with everything in it.
    pub fn remove(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        self.ns.take();
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
            // join() returns when the thread's function does; the kernel reaps the task (and its
            // /proc/<pid>/task/<tid> entry) a moment later. Callers test "the netns is gone" by
            // that path, so wait for it, bounded.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while Path::new(&self.path).exists() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
    }
}

impl std::ops::Deref for Netns {
    type Target = NetNs;
    fn deref(&self) -> &NetNs {
        self.ns.as_ref().expect("namespace was removed")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// A fresh network namespace with only `lo` (down).
pub fn new_netns() -> Netns {
    require_root();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let made = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(anyhow::Error::from)
            .and_then(|()| NetNs::current())
            .map(|ns| (ns, format!("/proc/{}/task/{}/ns/net", std::process::id(), nix::unistd::gettid())));
        let _ = ready_tx.send(made);
        // Parked until the Netns is dropped; a closed channel also ends the wait.
        let _ = stop_rx.recv();
    });
    let (ns, path) = ready_rx.recv().expect("namespace thread").expect("creating a network namespace");
    Netns { ns: Some(ns), path, stop: Some(stop_tx), thread: Some(thread) }
}

/// Runs `cmd` with its network namespace set to `ns`.
pub fn in_netns<'a>(cmd: &'a mut Command, ns: &NetNs) -> &'a mut Command {
    let fd = ns.as_fd().as_raw_fd();
    // SAFETY: setns(2) is async-signal-safe and the fd stays open in the child until exec.
    unsafe {
        cmd.pre_exec(move || {
            if nix::libc::setns(fd, nix::libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// Makes `cmd` start in a private mount namespace with a fresh sysfs (mounted after any
/// [`in_netns`] hook, so it shows that namespace's interfaces) and `binds` over parts of it. The
/// machine's mounts are not touched: the new namespace is private before anything is mounted.
fn with_private_sysfs(cmd: &mut Command, binds: &[(PathBuf, String)]) {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let cstr = |b: &[u8]| CString::new(b).expect("no NUL in paths");
    // Built before fork: the hook itself must not allocate.
    let binds: Vec<(CString, CString)> = binds
        .iter()
        .map(|(dir, at)| {
            (cstr(dir.as_os_str().as_bytes()), cstr(format!("/sys/{}", at.trim_start_matches('/')).as_bytes()))
        })
        .collect();
    let (root, sys, sysfs) = (cstr(b"/"), cstr(b"/sys"), cstr(b"sysfs"));
    // SAFETY: only async-signal-safe syscalls on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            use nix::libc::{CLONE_NEWNS, MS_BIND, MS_PRIVATE, MS_REC, mount, unshare};
            let check = |rc: i32| if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) };
            check(unshare(CLONE_NEWNS))?;
            check(mount(std::ptr::null(), root.as_ptr(), std::ptr::null(), MS_REC | MS_PRIVATE, std::ptr::null()))?;
            check(mount(sysfs.as_ptr(), sys.as_ptr(), sysfs.as_ptr(), 0, std::ptr::null()))?;
            for (dir, at) in &binds {
                check(mount(dir.as_ptr(), at.as_ptr(), std::ptr::null(), MS_BIND, std::ptr::null()))?;
            }
            Ok(())
        })
    };
}

/// Makes `cmd` start in a private mount namespace in which every `nft` program it could find is
/// covered by `/dev/null` (see [`Invocation::hide_nft`]).
fn without_nft(cmd: &mut Command) {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut targets: Vec<PathBuf> = std::env::split_paths(&path)
        .map(|d| d.join("nft"))
        .chain([PathBuf::from("/usr/sbin/nft"), PathBuf::from("/sbin/nft"), PathBuf::from("/usr/bin/nft")])
        .filter_map(|p| p.canonicalize().ok())
        .filter(|p| p.is_file())
        .collect();
    targets.sort();
    targets.dedup();
    // Built before fork: the hook itself must not allocate.
    let targets: Vec<CString> =
        targets.iter().map(|p| CString::new(p.as_os_str().as_bytes()).expect("no NUL in paths")).collect();
    let (root, null) = (CString::new("/").expect("literal"), CString::new("/dev/null").expect("literal"));
    // SAFETY: only async-signal-safe syscalls on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            use nix::libc::{CLONE_NEWNS, MS_BIND, MS_PRIVATE, MS_REC, mount, unshare};
            let check = |rc: i32| if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) };
            check(unshare(CLONE_NEWNS))?;
            check(mount(std::ptr::null(), root.as_ptr(), std::ptr::null(), MS_REC | MS_PRIVATE, std::ptr::null()))?;
            for t in &targets {
                check(mount(null.as_ptr(), t.as_ptr(), std::ptr::null(), MS_BIND, std::ptr::null()))?;
            }
            Ok(())
        })
    };
}

/// Runs `ip ARGS` inside `ns` and returns stdout; panics on failure.
pub fn ip(ns: &NetNs, args: &str) -> String {
    let out = in_netns(Command::new("ip").args(args.split_whitespace()), ns).output().expect("running ip");
    assert!(out.status.success(), "ip {args}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `ip -j ARGS` inside `ns` and parses the JSON.
pub fn ip_json(ns: &NetNs, args: &str) -> Value {
    let text = ip(ns, &format!("-j {args}"));
    if text.trim().is_empty() {
        return Value::Array(vec![]);
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("ip -j {args}: {e}: {text}"))
}

/// The state of a link as `ip` reports it, or `None` when it does not exist.
pub fn link(ns: &NetNs, name: &str) -> Option<Value> {
    let all = ip_json(ns, "link show");
    all.as_array()?.iter().find(|l| l["ifname"] == name).cloned()
}

/// Whether a link is administratively up.
pub fn is_up(link: &Value) -> bool {
    link["flags"].as_array().is_some_and(|f| f.iter().any(|x| x == "UP"))
}

/// The addresses (`ip/prefix`) of a link inside `ns`.
pub fn addresses(ns: &NetNs, name: &str) -> Vec<String> {
    let all = ip_json(ns, &format!("addr show dev {name}"));
    let mut out = Vec::new();
    for link in all.as_array().into_iter().flatten() {
        for a in link["addr_info"].as_array().into_iter().flatten() {
            out.push(format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]));
        }
    }
    out
}

/// What a plugin printed and how it exited.
#[derive(Debug)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
}

impl Output {
    /// stdout parsed as JSON (`Null` when empty).
    pub fn json(&self) -> Value {
        if self.stdout.trim().is_empty() {
            return Value::Null;
        }
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }

    pub fn success(&self) -> bool {
        self.exit_code == 0
    }

    /// Asserts success and returns the JSON.
    pub fn ok(&self) -> Value {
        assert!(self.success(), "plugin failed ({}): {}\nstderr: {}", self.exit_code, self.stdout, self.stderr);
        self.json()
    }

    /// Asserts failure with the spec's error JSON and returns its code.
    pub fn err_code(&self) -> u64 {
        assert!(!self.success(), "plugin succeeded but should have failed: {}", self.stdout);
        let v = self.json();
        assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "error without msg: {v}");
        v["code"].as_u64().unwrap_or_else(|| panic!("error without code: {v}"))
    }
}

/// One plugin invocation: the environment a runtime sets and the config on stdin.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub env: Vec<(String, String)>,
    pub stdin: String,
    /// Directories bound over paths of a private sysfs, when the plugin gets one.
    sysfs: Option<Vec<(PathBuf, String)>>,
    /// Whether the `nft` program is hidden from the plugin (see [`Invocation::hide_nft`]).
    hide_nft: bool,
}

impl Invocation {
    /// A typical invocation: `CNI_COMMAND`, container ID, netns and ifname, `CNI_PATH` set to
    /// `cni_path`.
    pub fn new(command: &str, container_id: &str, netns: &str, ifname: &str, stdin: &str) -> Invocation {
        let mut inv = Invocation { env: Vec::new(), stdin: stdin.to_string(), sysfs: None, hide_nft: false };
        for (k, v) in [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", container_id),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", ifname),
            ("CNI_PATH", &plugin_dir().display().to_string()),
        ] {
            inv.env.push((k.to_string(), v.to_string()));
        }
        inv
    }

    /// Sets (or, with `None`, removes) a variable.
    pub fn var(mut self, key: &str, value: Option<&str>) -> Invocation {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.to_string(), v.to_string()));
        }
        self
    }

    /// Gives the plugin a private mount namespace with a sysfs of its own network namespace (so
    /// `/sys/class/net` and device `net/` directories list the sandbox host's interfaces, not the
    /// machine's), and binds each `(directory, path under /sys)` over it: a fake PCI bus, say.
    pub fn private_sysfs(mut self, binds: &[(&Path, &str)]) -> Invocation {
        self.sysfs = Some(binds.iter().map(|(dir, at)| (dir.to_path_buf(), at.to_string())).collect());
        self
    }

    /// Runs the plugin (and whatever it starts) as on a host without the `nft` program (Talos,
    /// Bottlerocket): in a private mount namespace where `/dev/null` is bound over every `nft` in
    /// `PATH`, /usr/sbin and /sbin, so it is neither found as a file nor runnable. The machine's
    /// mounts are not touched.
    pub fn hide_nft(mut self) -> Invocation {
        self.hide_nft = true;
        self
    }

    /// Runs `plugin` with this invocation, its network namespace set to `host`.
    pub fn run(&self, plugin: &Path, host: &NetNs) -> Output {
        self.execute(plugin, Some(host))
    }

    /// Runs `plugin` in the test's own namespace: only for plugins that touch no network state
    /// (host-local).
    pub fn run_here(&self, plugin: &Path) -> Output {
        self.execute(plugin, None)
    }

    /// Starts `plugin` without waiting for it, for tests that run many at once or kill it.
    pub fn spawn(&self, plugin: &Path, host: Option<&NetNs>) -> std::process::Child {
        self.spawn_under(&[], plugin, host)
    }

    /// [`Invocation::spawn`], with `plugin` run by `wrapper` (its program and arguments, as
    /// `strace -f -o FILE`): the wrapper gets the invocation's environment, namespace and stdin.
    pub fn spawn_under(
        &self,
        wrapper: &[&std::ffi::OsStr],
        plugin: &Path,
        host: Option<&NetNs>,
    ) -> std::process::Child {
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(plugin);
                cmd
            }
            None => Command::new(plugin),
        };
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(ns) = host {
            in_netns(&mut cmd, ns);
        }
        if let Some(binds) = &self.sysfs {
            with_private_sysfs(&mut cmd, binds);
        }
        if self.hide_nft {
            without_nft(&mut cmd);
        }
        let mut child = cmd.spawn().expect("spawning plugin");
        let mut stdin = child.stdin.take().expect("piped stdin");
        let data = self.stdin.clone();
        std::thread::spawn(move || {
            let _ = stdin.write_all(data.as_bytes());
        });
        child
    }

    fn execute(&self, plugin: &Path, host: Option<&NetNs>) -> Output {
        let out = self.spawn(plugin, host).wait_with_output().expect("waiting for plugin");
        Output {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            exit_code: out.status.code().unwrap_or(-1),
        }
    }
}

/// The directory holding the workspace's built binaries (`target/debug` or `target/release`),
/// used as `CNI_PATH` so plugins find each other and never a system-wide copy.
pub fn plugin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // Test binaries live in target/<profile>/deps/.
    exe.parent().and_then(Path::parent).map(Path::to_path_buf).expect("target directory")
}

/// The path of a built plugin binary in [`plugin_dir`].
pub fn plugin(name: &str) -> PathBuf {
    let path = plugin_dir().join(name);
    assert!(path.is_file(), "{} is not built (cargo build --workspace)", path.display());
    path
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("cni-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Connects two namespaces with a veth pair: `a_name` with `a_addr` in `a`, `b_name` with `b_addr`
/// in `b` (addresses with prefix, e.g. `198.51.100.1/24`), both up.
pub fn link_namespaces(a: &NetNs, a_name: &str, a_addr: &str, b: &NetNs, b_name: &str, b_addr: &str) {
    let mut rtnl = netkit::Rtnl::open_in(a).expect("netlink in a");
    rtnl.create_veth(&netkit::VethPair {
        name: a_name,
        peer_name: b_name,
        peer_ns: Some(b.as_fd()),
        ..Default::default()
    })
    .expect("creating veth between namespaces");
    // Fresh links would hold IPv6 addresses (link-local included) tentative for a second of
    // duplicate address detection, racing the first packets of a test.
    set_sysctl(a, &format!("net/ipv6/conf/{a_name}/accept_dad"), "0");
    set_sysctl(b, &format!("net/ipv6/conf/{b_name}/accept_dad"), "0");
    ip(a, &format!("addr add {a_addr} dev {a_name}"));
    ip(a, &format!("link set {a_name} up"));
    ip(b, &format!("addr add {b_addr} dev {b_name}"));
    ip(b, &format!("link set {b_name} up"));
    ip(b, "link set lo up");
}

/// Writes a sysctl inside `ns` (path with slashes, under /proc/sys).
pub fn set_sysctl(ns: &NetNs, path: &str, value: &str) {
    ns.run(|| netkit::sysctl::write(path, value)).expect("entering ns").unwrap_or_else(|e| panic!("{path}: {e:#}"));
}

/// Whether one ICMP echo from `ns` to `addr` is answered within a second.
pub fn ping(ns: &NetNs, addr: &str) -> bool {
    in_netns(Command::new("ping").args(["-c1", "-W1", "-n", addr]), ns)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A TCP server in `ns` that answers every connection with the peer address it sees, then closes.
/// Bound to `[::]:port` it serves both families (IPv4 peers are reported as IPv4). It stops when
/// the test process ends.
pub fn serve_peer_address(ns: &NetNs, addr: std::net::SocketAddr) {
    let listener = ns.run(|| std::net::TcpListener::bind(addr)).expect("entering ns").expect("binding");
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            if let Ok(peer) = conn.peer_addr() {
                let _ = conn.write_all(peer.ip().to_canonical().to_string().as_bytes());
            }
        }
    });
}

/// A TCP server in `ns` that answers every connection with `text`, so a test can tell which of
/// several servers a connection reached. It stops when the test process ends.
pub fn serve_text(ns: &NetNs, addr: std::net::SocketAddr, text: &str) {
    let listener = ns.run(|| std::net::TcpListener::bind(addr)).expect("entering ns").expect("binding");
    let text = text.to_string();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = conn.write_all(text.as_bytes());
        }
    });
}

/// Connects from `ns` to `addr` and returns what the server sent, or `None` if it could not
/// connect within a second.
pub fn tcp_ask(ns: &NetNs, addr: std::net::SocketAddr) -> Option<String> {
    ns.run(|| {
        let mut conn = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(1)).ok()?;
        conn.set_read_timeout(Some(std::time::Duration::from_secs(2))).ok()?;
        let mut reply = String::new();
        std::io::Read::read_to_string(&mut conn, &mut reply).ok()?;
        Some(reply)
    })
    .expect("entering ns")
}

/// `nft list ruleset` inside `ns`.
pub fn nft_ruleset(ns: &NetNs) -> String {
    let out = in_netns(Command::new("nft").args(["list", "ruleset"]), ns).output().expect("running nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `iptables-save -t nat` in `ns`: the IPv4 NAT rules the iptables backends made.
pub fn iptables_nat(ns: &NetNs) -> String {
    let out = in_netns(Command::new("iptables-save").args(["-t", "nat"]), ns).output().expect("running iptables-save");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A UDP server in `ns` that answers every datagram with the sender's address.
pub fn serve_udp_peer_address(ns: &NetNs, addr: std::net::SocketAddr) {
    let socket = ns.run(|| std::net::UdpSocket::bind(addr)).expect("entering ns").expect("binding");
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((_, peer)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(peer.ip().to_canonical().to_string().as_bytes(), peer);
        }
    });
}

/// Sends one datagram from `ns` (from `local`, e.g. `0.0.0.0:40000`) to `addr` and returns the
/// answer, or `None` after a second of silence.
pub fn udp_ask(ns: &NetNs, local: std::net::SocketAddr, addr: std::net::SocketAddr) -> Option<String> {
    ns.run(|| {
        let socket = std::net::UdpSocket::bind(local).ok()?;
        socket.set_read_timeout(Some(std::time::Duration::from_secs(1))).ok()?;
        socket.send_to(b"hi", addr).ok()?;
        let mut buf = [0u8; 64];
        let (n, _) = socket.recv_from(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .expect("entering ns")
}

/// What of any attachment a host-local store directory (`<dataDir>/<network>`) still holds:
/// address files and index entries (the index's own `:state` file is not one). Empty when clean.
pub fn host_local_leftovers(store: &Path) -> Vec<String> {
    let names = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    let mut left: Vec<String> = names(store)
        .into_iter()
        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
        .map(|n| format!("address file {n}"))
        .collect();
    left.extend(
        names(&store.join(".attachments"))
            .into_iter()
            .filter(|n| !n.starts_with(':'))
            .map(|n| format!("index entry {n}")),
    );
    left
}

/// The request the dispatcher would build for `conf` (stdin) and `cni_args` (`CNI_ARGS`), with a
/// placeholder attachment (container `c`, netns `/n`, ifname `eth0`): for tests of a plugin's
/// config parsing. Panics on a config the protocol crate refuses.
pub fn request(command: cni::Command, conf: &Value, cni_args: &str) -> cni::Request {
    let stdin = conf.to_string();
    cni::Request {
        env: cni::Env {
            command,
            container_id: "c".into(),
            netns: "/n".into(),
            ifname: "eth0".into(),
            args: cni_args.into(),
            cni_path: vec![],
        },
        args: cni::CniArgs::parse(cni_args).unwrap(),
        config: cni::NetConf::parse(stdin.as_bytes()).unwrap(),
        stdin: stdin.into_bytes(),
    }
}

/// Whether this kernel can run the calling test, which needs `what` (a link type, say): the
/// `ip` commands of `probe` are tried in a throwaway namespace, once per `what` and process. When
/// one fails, says "skipped: kernel lacks ..." on stderr (written directly: libtest hides what
/// passing tests print) and returns false, so the test returns early and passes; under
/// `CNI_RS_REQUIRE_KERNEL_FEATURES=1` (the VM lane, whose kernel has everything) it fails the
/// test instead, so nothing is skipped silently there.
pub fn kernel_has(what: &'static str, probe: &[&str]) -> bool {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static SEEN: OnceLock<Mutex<HashMap<&'static str, bool>>> = OnceLock::new();
    let mut seen = SEEN.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    let has = *seen.entry(what).or_insert_with(|| {
        let ns = new_netns();
        probe.iter().all(|args| {
            in_netns(Command::new("ip").args(args.split_whitespace()), &ns).output().is_ok_and(|o| o.status.success())
        })
    });
    drop(seen);
    if has {
        return true;
    }
    let test = std::thread::current().name().unwrap_or("?").to_string();
    assert!(
        std::env::var("CNI_RS_REQUIRE_KERNEL_FEATURES").as_deref() != Ok("1"),
        "kernel lacks {what} (and CNI_RS_REQUIRE_KERNEL_FEATURES=1 forbids skipping {test})"
    );
    let _ = writeln!(std::io::stderr(), "skipped: kernel lacks {what} ({test})");
    false
}

/// `iptables-restore` and `ip6tables-restore` made slow: wrappers that wait `delay` (seconds, as
/// `sleep` takes them) before running the system's own, touching `<name>.started` first and
/// `<name>.done` after. A plugin run with [`SlowRestore::path`] as PATH can be SIGKILLed while
/// its program still runs: the program is orphaned, as a runtime's timeout leaves it, and
/// commits its batch later.
pub struct SlowRestore {
    tools: TempDir,
    path: String,
    deadline: std::time::Instant,
}

impl SlowRestore {
    pub fn new(delay: &str) -> SlowRestore {
        let tools = TempDir::new("slow-restore");
        let system_path = std::env::var("PATH").unwrap_or_default();
        for name in ["iptables-restore", "ip6tables-restore"] {
            // The system's tool, found where the plugin would find it without the wrapper.
            let real = system_path
                .split(':')
                .chain(["/usr/sbin", "/sbin"])
                .map(|dir| Path::new(dir).join(name))
                .find(|p| p.is_file())
                .unwrap_or_else(|| panic!("{name} not found"));
            let script = format!(
                "#!/bin/sh\nbatch=$(cat)\ntouch {dir}/{name}.started\nsleep {delay}\n\
                 printf '%s\\n' \"$batch\" | {real} \"$@\"\nstatus=$?\ntouch {dir}/{name}.done\nexit $status\n",
                dir = tools.path().display(),
                real = real.display()
            );
            let path = tools.path().join(name);
            std::fs::write(&path, script).expect("writing the wrapper");
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        }
        let path = format!("{}:{system_path}", tools.path().display());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        SlowRestore { tools, path, deadline }
    }

    /// The PATH that puts the wrappers first.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// SIGKILLs `plugin` once it has started `iptables-restore` (which goes on, orphaned).
    pub fn kill_once_started(&self, mut plugin: std::process::Child) {
        self.wait_for("iptables-restore.started", "the plugin never ran iptables-restore");
        plugin.kill().expect("killing the plugin");
        plugin.wait().expect("reaping the plugin");
    }

    /// Waits until the orphaned `iptables-restore` has committed its batch.
    pub fn wait_done(&self) {
        self.wait_for("iptables-restore.done", "the orphaned iptables-restore never finished");
    }

    fn wait_for(&self, marker: &str, what: &str) {
        let path = self.tools.path().join(marker);
        while !path.exists() {
            assert!(std::time::Instant::now() < self.deadline, "{what}");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
