//! A network's DNS server and its directory, laid out as containers/dnsname lays them out so that
//! either plugin (and an operator) finds the other's:
//!
//! ```text
//! $XDG_RUNTIME_DIR/containers/cni/dnsname/<network>/    (/run/containers/cni/dnsname/<network>/
//!   lock          flock'ed around every change            when XDG_RUNTIME_DIR is unset; 0700)
//!   dnsmasq.conf  the server's config (bridge, domain, the paths below)
//!   addnhosts     the names (see hosts.rs); dnsmasq re-reads it on SIGHUP
//!   pidfile       written by dnsmasq
//! ```
//!
//! The server is Debian's `dnsmasq` with the reference's arguments (`dnsmasq -u root
//! --conf-file=<dir>/dnsmasq.conf`) and `--keep-in-foreground`, in a session of its own: the
//! process we spawn is the server. (The reference lets dnsmasq daemonize: fork, setsid, fork, the
//! first process waiting for the grandchild. A DEL right after an ADD killed during that
//! hand-over could miss the server: a /proc listing taken before the grandchild existed, checked
//! after its parents had exited.) It binds (`bind-dynamic`) to the bridge's addresses only,
//! answers for `addnhosts` bare and under the domain (`expand-hosts`, `local=/<domain>/`), and
//! forwards the rest to the resolvers of `/etc/resolv.conf`.
//!
//! A pid from the pid file is trusted only if `/proc/<pid>/cmdline` is dnsmasq with this
//! network's `--conf-file=`: the process may have died and its pid gone to another. Signals go
//! only to such a verified pid. Starting is the one exec, and only when no server runs: a change of
//! names is a file write and a SIGHUP.
//!
//! Every server of a network is started under the network's lock, and the spawned process holds
//! that lock from its fork until dnsmasq, already running with its own command line, closes the
//! descriptors it inherited. So a verb holding the lock sees every server of the network in /proc,
//! even one whose ADD was killed while spawning it.

use anyhow::Context;
use cni::{Code, Error};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const CONF_FILE: &str = "dnsmasq.conf";
pub const HOSTS_FILE: &str = "addnhosts";
pub const PID_FILE: &str = "pidfile";
const LOCK_FILE: &str = "lock";

/// How long a verb waits for another holding the network's lock.
const LOCK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long dnsmasq gets to start (until it has bound its sockets and let go of our pipe) and to
/// stop.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// The directory holding every network's directory: `$XDG_RUNTIME_DIR/containers/cni/dnsname`,
/// else `/run/containers/cni/dnsname` (the reference's rule, which Podman relies on rootless).
pub fn root_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(xdg) => Path::new(&xdg).join("containers/cni/dnsname"),
        None => PathBuf::from("/run/containers/cni/dnsname"),
    }
}

/// The dnsmasq binary: from `PATH` as the reference looks it up, then where Debian installs it
/// (runtimes do not always put the sbin directories on a plugin's `PATH`).
pub fn find_dnsmasq() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .filter(|d| d.is_absolute())
        .map(|d| d.join("dnsmasq"))
        .find(|p| p.metadata().is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0))
}

/// One network's directory.
pub struct NetworkDir {
    pub dir: PathBuf,
}

/// The network's lock; held until dropped.
pub struct Lock {
    file: Flock<File>,
}

impl NetworkDir {
    pub fn new(network: &str) -> NetworkDir {
        NetworkDir { dir: root_dir().join(network) }
    }

    pub fn conf_path(&self) -> PathBuf {
        self.dir.join(CONF_FILE)
    }

    pub fn hosts_path(&self) -> PathBuf {
        self.dir.join(HOSTS_FILE)
    }

    fn pid_path(&self) -> PathBuf {
        self.dir.join(PID_FILE)
    }

    /// Takes the network's lock, creating the directory first when `create` (ADD); without it
    /// (DEL, GC, CHECK) a network with no directory has nothing to do and gets `None`.
    ///
    /// The last DEL removes the directory, lock file included, while a waiting verb may already
    /// hold the removed file open: having the lock, a verb checks that the file is still the one
    /// at the path, and starts over otherwise.
    pub fn lock(&self, create: bool) -> anyhow::Result<Option<Lock>> {
        let deadline = Instant::now() + LOCK_TIMEOUT;
        let path = self.dir.join(LOCK_FILE);
        loop {
            if create {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&self.dir)
                    .with_context(|| format!("creating {}", self.dir.display()))?;
            }
            let file = match OpenOptions::new()
                .read(true)
                .write(true)
                .create(create)
                .truncate(false)
                .mode(0o600)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&path)
            {
                Ok(f) => f,
                Err(e) if !create && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
            };
            let lock = flock(file, &path, deadline)?;
            let held = lock.metadata().with_context(|| format!("reading {}", path.display()))?;
            match fs::symlink_metadata(&path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => return Ok(Some(Lock { file: lock })),
                Err(e) if !create && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                _ if Instant::now() < deadline => continue,
                _ => return Err(timed_out(&path)),
            }
        }
    }

    /// Writes `dnsmasq.conf` unless it already says the same; returns whether it changed (a
    /// running server then needs a restart: SIGHUP does not re-read it).
    pub fn write_conf(&self, bridge: &str, domain: &str) -> anyhow::Result<bool> {
        let text = self.conf_text(bridge, domain);
        let path = self.conf_path();
        if fs::read_to_string(&path).is_ok_and(|old| old == text) {
            return Ok(false);
        }
        write_atomically(&path, &text)?;
        Ok(true)
    }

    /// Whether `dnsmasq.conf` is there and says what ADD would write.
    pub fn conf_matches(&self, bridge: &str, domain: &str) -> bool {
        fs::read_to_string(self.conf_path()).is_ok_and(|text| text == self.conf_text(bridge, domain))
    }

    /// The reference's template, byte for byte, so that either plugin leaves the other's file as
    /// it is.
    fn conf_text(&self, bridge: &str, domain: &str) -> String {
        format!(
            "## WARNING: THIS IS AN AUTOGENERATED FILE\n\
             ## AND SHOULD NOT BE EDITED MANUALLY AS IT\n\
             ## LIKELY TO AUTOMATICALLY BE REPLACED.\n\
             strict-order\n\
             local=/{domain}/\n\
             domain={domain}\n\
             expand-hosts\n\
             pid-file={pid}\n\
             except-interface=lo\n\
             bind-dynamic\n\
             no-hosts\n\
             interface={bridge}\n\
             addn-hosts={hosts}\n",
            pid = self.pid_path().display(),
            hosts = self.hosts_path().display(),
        )
    }

    /// The bridge `dnsmasq.conf` names (`interface=`), if the file is there.
    pub fn conf_bridge(&self) -> Option<String> {
        let text = fs::read_to_string(self.conf_path()).ok()?;
        let bridge = text.lines().find_map(|l| l.strip_prefix("interface="))?;
        // It goes into an iptables rule: only an interface name, whoever edited the file.
        cni::env::validate_ifname(bridge).ok().map(|()| bridge.to_string())
    }

    /// `addnhosts` as text; empty when there is none.
    pub fn read_hosts(&self) -> anyhow::Result<Option<String>> {
        match fs::read_to_string(self.hosts_path()) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", self.hosts_path().display())),
        }
    }

    pub fn write_hosts(&self, text: &str) -> anyhow::Result<()> {
        write_atomically(&self.hosts_path(), text)
    }

    /// The pid of this network's running server, if one runs.
    pub fn running(&self) -> Option<Pid> {
        let text = fs::read_to_string(self.pid_path()).ok()?;
        let pid = text.trim().parse::<i32>().ok().filter(|p| *p > 0)?;
        self.is_our_server(pid).then(|| Pid::from_raw(pid))
    }

    /// Whether `pid` is alive (not a zombie) and is dnsmasq run with this network's config.
    fn is_our_server(&self, pid: i32) -> bool {
        if has_exited(pid) {
            return false;
        }
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else { return false };
        let mut args = cmdline.split(|b| *b == 0).filter(|a| !a.is_empty());
        let conf_arg = format!("--conf-file={}", self.conf_path().display());
        let is_dnsmasq = args.next().is_some_and(|a| a.rsplit(|b| *b == b'/').next() == Some(b"dnsmasq"));
        is_dnsmasq && args.any(|a| a == conf_arg.as_bytes())
    }

    /// Makes dnsmasq re-read `addnhosts`.
    pub fn reload(&self, pid: Pid) -> anyhow::Result<()> {
        kill(pid, Signal::SIGHUP).with_context(|| format!("sending SIGHUP to dnsmasq (pid {pid})"))
    }

    /// Starts the network's server and returns its pid once it serves; `lock` is the network's.
    pub fn start(&self, lock: &Lock) -> anyhow::Result<Pid> {
        let binary = find_dnsmasq().ok_or_else(|| not_installed(Code::Internal))?;
        // A server still starting for an ADD that was killed (no pid file yet) would hold the
        // port: stopped first. Then a pid file left by a dead server would otherwise be read as
        // the new one's.
        self.stop()?;
        let _ = fs::remove_file(self.pid_path());
        let lock_fd = lock.file.as_raw_fd();
        let die_before_exec = cni::fault::enabled("dnsname:killed before exec");
        let mut command = Command::new(&binary);
        command
            .arg("-u")
            .arg("root")
            .arg(format!("--conf-file={}", self.conf_path().display()))
            .arg("--keep-in-foreground")
            // Never the runtime's pipes: our stdout is the CNI result, and a server holding it
            // open would keep the runtime waiting for its end.
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .current_dir("/");
        // SAFETY: between fork and exec the closure makes only async-signal-safe calls (setsid,
        // fcntl, kill, getppid, nanosleep) and touches no memory but its copied integers.
        unsafe {
            command.pre_exec(move || {
                // Out of the runtime's session and process group: its signals to them are not
                // for the server, which outlives this plugin.
                if nix::libc::setsid() == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                // The lock (its open file, shared with us) passes into dnsmasq, which closes it
                // with every inherited descriptor right at its start: until then this process
                // may not yet show dnsmasq's command line, and if we are killed, the network's
                // next verb waits for the lock and then finds the server by that line.
                if nix::libc::fcntl(lock_fd, nix::libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                if die_before_exec {
                    // Test fault: the plugin killed while the child is still a copy of it.
                    nix::libc::kill(nix::libc::getppid(), nix::libc::SIGKILL);
                    let pause = nix::libc::timespec { tv_sec: 1, tv_nsec: 0 };
                    nix::libc::nanosleep(&pause, std::ptr::null_mut());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().with_context(|| format!("starting {}", binary.display()))?;
        cni::trace::mark("dnsmasq spawned");
        let pid = child.id() as i32;
        // dnsmasq reports a failure (a bad config, an address in use) on stderr and in its exit
        // status. Once it has bound its sockets and written its pid file it points its stdio at
        // /dev/null: our pipe's end then means it started, unless it means that it exits.
        let mut stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            let _ = tx.send(text);
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let mut said: Option<String> = None;
        loop {
            if let Some(status) = child.try_wait().context("waiting for dnsmasq")? {
                let said = said.or_else(|| rx.recv_timeout(Duration::from_millis(500)).ok()).unwrap_or_default();
                anyhow::bail!("dnsmasq failed ({status}): {}", said.trim());
            }
            if said.is_none() {
                said = rx.try_recv().ok();
            }
            // After the pipe's end, checked in this order: an exiting process has lost its
            // command line before it closes its files, so only a live server is `running`.
            if said.is_some()
                && let Some(running) = self.running().filter(|p| p.as_raw() == pid)
            {
                return Ok(running);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!(
                    "dnsmasq did not finish starting within {}s (or {} does not name it)",
                    START_TIMEOUT.as_secs(),
                    self.pid_path().display()
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Stops the network's server, if one runs: SIGTERM, then SIGKILL if it lingers.
    ///
    /// Not only the pid file's: every process run with this network's config, found in /proc. An
    /// ADD killed right after starting dnsmasq leaves a server that has not written its pid file
    /// yet; the runtime's DEL must stop that one too. Holding the network's lock, we see it (see
    /// the module's doc), and a server, being the process we spawned, never hands over to another:
    /// one scan that finds nothing is final. (A server the reference or an operator started in
    /// the background is found too, once it has daemonized.) A process, once seen, is waited for
    /// until it has exited, not only until its command line is gone: an exiting process loses it
    /// before it closes its sockets, and a new server could not bind while they are open. Only
    /// the last DEL of a network pays for the scan.
    pub fn stop(&self) -> anyhow::Result<()> {
        let mut seen: Vec<i32> = Vec::new();
        for (signal, wait) in [(Signal::SIGTERM, STOP_TIMEOUT), (Signal::SIGKILL, STOP_TIMEOUT)] {
            let deadline = Instant::now() + wait;
            loop {
                // Exited ones out first, then the scan: a process that forked (a TCP child of
                // the server) and exited between a scan and this check would otherwise leave
                // its child unseen.
                seen.retain(|pid| !has_exited(*pid));
                for pid in self.running().map(Pid::as_raw).into_iter().chain(self.scan()) {
                    if !seen.contains(&pid) && !has_exited(pid) {
                        seen.push(pid);
                    }
                }
                if seen.is_empty() {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    break;
                }
                for pid in &seen {
                    match kill(Pid::from_raw(*pid), signal) {
                        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                        Err(e) => return Err(e).with_context(|| format!("sending {signal} to dnsmasq (pid {pid})")),
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        anyhow::bail!("dnsmasq (pids {seen:?}) still running after SIGKILL")
    }

    /// The live processes run with this network's config.
    fn scan(&self) -> Vec<i32> {
        let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| self.is_our_server(*pid))
            .collect()
    }

    /// Removes the directory with everything in it (the lock holder calls this last).
    pub fn remove(&self) -> anyhow::Result<()> {
        match fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", self.dir.display()))
            }
            _ => Ok(()),
        }
    }
}

/// Whether `pid` is gone or a zombie (its files, sockets included, closed).
fn has_exited(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return true };
    // The state follows the command name in parentheses, which may itself hold ") ".
    let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
    matches!(state, None | Some('Z' | 'X' | 'x'))
}

/// Takes `flock` on `file`, waiting until `deadline`: a blocking flock on a helper thread wakes us
/// the moment the lock is free; if it takes too long the process exits with the thread waiting.
fn flock(file: File, path: &Path, deadline: Instant) -> anyhow::Result<Flock<File>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(Flock::lock(file, FlockArg::LockExclusive));
    });
    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(Ok(lock)) => Ok(lock),
        Ok(Err((_, errno))) => Err(anyhow::Error::new(errno)).with_context(|| format!("locking {}", path.display())),
        Err(_) => Err(timed_out(path)),
    }
}

fn timed_out(path: &Path) -> anyhow::Error {
    Error::new(
        Code::TryAgainLater,
        format!("timed out after {}s waiting for the lock on {}", LOCK_TIMEOUT.as_secs(), path.display()),
    )
    .into()
}

/// dnsmasq is not installed: code 50 for STATUS, whatever `code` says elsewhere.
pub fn not_installed(code: Code) -> anyhow::Error {
    Error::new(code, "unable to locate dnsmasq in PATH (Debian: apt-get install dnsmasq-base)").into()
}

/// Replaces `path` by a file with `text`: a reader (dnsmasq on SIGHUP, a concurrent plugin) sees
/// the old file or the new one, never half of one, even if we are killed mid-write.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().expect("a file in a directory");
    let tmp = dir.join(format!(".{}.tmp", path.file_name().expect("a file name").to_string_lossy()));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    // No fsync: the directory is on /run (tmpfs), which a power loss empties anyway.
    file.write_all(text.as_bytes()).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}
