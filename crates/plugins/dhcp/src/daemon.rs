//! `dhcp daemon`: holds the leases of every attachment on the node and keeps them alive.
//!
//! ```text
//!  plugin ──unix socket (protocol.rs)──▶ accept loop ──▶ one thread per call (at most MAX_CALLS)
//!                                                          │ allocate / check / release
//!                                                          ▼
//!                          leases: client ID ──▶ Entry { phase, command channel }
//!                                                          │ one thread per lease, inside the
//!                                                          ▼ container's netns (NetNs::run)
//!                               acquire ─▶ bound ─▶ renew (T1) ─▶ rebind (T2) ─▶ expire: iface down
//!                                                   ▲ state file rewritten on every ACK
//! ```
//!
//! Restart story: every ACK is written to `<state dir>/<hash of the client ID>.json` (atomically:
//! temporary file and rename). At start the daemon reads them back and resumes each lease whose
//! namespace still exists and that has not expired: it renews at T1 as if it had never stopped,
//! and the next ADD, CHECK or DEL finds it. The reference keeps leases in memory only, so a
//! restart stops every renewal (containernetworking/plugins#235, #767).
//!
//! Bounds: at most [`MAX_LEASES`] leases and [`MAX_CALLS`] calls at a time (more are refused with
//! an error), requests of at most `protocol::MAX_MESSAGE` bytes read within [`IO_TIMEOUT`];
//! sockets to the DHCP server exist only during an exchange.

use crate::client::{Client, Iface, Lease, Timing, now_secs};
use crate::config::Config;
use crate::packet::{self, opt};
use crate::protocol::{self, Call, Checked, Reply};
use anyhow::Context;
use cni::{CniResult, Code, Dns, Error, IpConfig, Route};
use ipnetwork::{IpNetwork, Ipv4Network};
use netkit::{NetNs, Rtnl};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::FromRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The most leases held at once. Each costs two parked threads and a small file.
pub const MAX_LEASES: usize = 4096;
/// The most calls served at once; a runtime retries a refused one.
pub const MAX_CALLS: usize = 128;
/// How long a caller may take to send its request, and we to write the reply.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a bound lease sleeps before looking at its interface again.
const LINK_CHECK: Duration = Duration::from_secs(10);

/// The daemon's flags, as the reference's `dhcp daemon` takes them.
#[derive(Debug, Clone)]
pub struct Flags {
    pub pidfile: String,
    pub hostprefix: String,
    pub socketpath: String,
    pub statedir: String,
    pub timing: Timing,
}

/// Parses Go `flag` syntax: `-name value`, `-name=value`, `--name`, booleans alone or `=true`.
pub fn parse_flags(args: &[String]) -> Result<Flags, String> {
    let mut f = Flags {
        pidfile: String::new(),
        hostprefix: String::new(),
        socketpath: String::new(),
        statedir: String::new(),
        timing: Timing {
            timeout: Duration::from_secs(10),
            resend_max: Duration::from_secs(62),
            resend_timeout: Duration::from_secs(208),
            broadcast: false,
        },
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            return Err(format!("unexpected argument {arg:?}"));
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        if name == "broadcast" {
            f.timing.broadcast = match inline.as_deref() {
                None | Some("true" | "1" | "t" | "T" | "TRUE" | "True") => true,
                Some("false" | "0" | "f" | "F" | "FALSE" | "False") => false,
                Some(v) => return Err(format!("invalid boolean value {v:?} for -broadcast")),
            };
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => it.next().cloned().ok_or_else(|| format!("flag needs an argument: -{name}"))?,
        };
        match name {
            "pidfile" => f.pidfile = value,
            "hostprefix" => f.hostprefix = value,
            "socketpath" => f.socketpath = value,
            "statedir" => f.statedir = value,
            "timeout" => f.timing.timeout = parse_duration(&value)?,
            "resendmax" => f.timing.resend_max = parse_duration(&value)?,
            "resendtimeout" => f.timing.resend_timeout = parse_duration(&value)?,
            _ => return Err(format!("flag provided but not defined: -{name}")),
        }
    }
    if f.socketpath.is_empty() {
        f.socketpath = crate::config::DEFAULT_SOCKET_PATH.to_string();
    }
    if f.statedir.is_empty() {
        // Next to the socket: the runtime directory, on tmpfs like the netns mounts whose
        // lifetime it shares (a lease cannot outlive a reboot anyway).
        let socket = PathBuf::from(format!("{}{}", f.hostprefix, f.socketpath));
        f.statedir = socket.parent().unwrap_or(Path::new("/run/cni")).join("dhcp-leases").display().to_string();
    }
    if f.timing.timeout.is_zero() {
        return Err("-timeout must be positive".into());
    }
    Ok(f)
}

/// Go's `time.ParseDuration` for what these flags need: `1h2m3.5s`, `500ms`, `90s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(bad()),
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > 1e9 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(total))
}

/// `dhcp daemon ARGS`; returns the exit status.
pub fn main(args: &[String]) -> i32 {
    let flags = match parse_flags(args) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("dhcp daemon: {e}");
            eprintln!(
                "usage: dhcp daemon [-pidfile PATH] [-hostprefix DIR] [-socketpath PATH] [-statedir DIR] [-broadcast] \
                 [-timeout 10s] [-resendmax 62s] [-resendtimeout 208s]"
            );
            return 2;
        }
    };
    match run(flags) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("dhcp daemon: {e:#}");
            1
        }
    }
}

fn run(flags: Flags) -> anyhow::Result<()> {
    // SIGTERM and SIGINT are taken by one thread (below); every thread started after this inherits
    // the mask, so no other thread is interrupted.
    let mut signals = nix::sys::signal::SigSet::empty();
    signals.add(nix::sys::signal::Signal::SIGTERM);
    signals.add(nix::sys::signal::Signal::SIGINT);
    signals.thread_block().context("blocking SIGTERM and SIGINT")?;

    if !flags.pidfile.is_empty() {
        if !Path::new(&flags.pidfile).is_absolute() {
            anyhow::bail!("Error writing pidfile {:?}: path not absolute", flags.pidfile);
        }
        std::fs::write(&flags.pidfile, std::process::id().to_string())
            .with_context(|| format!("Error writing pidfile {:?}", flags.pidfile))?;
    }
    let socket_path = format!("{}{}", flags.hostprefix, flags.socketpath);
    let (listener, activated) = listener(&socket_path)?;
    private_dir(Path::new(&flags.statedir))?;

    let daemon =
        Arc::new(Daemon { flags: flags.clone(), leases: Mutex::new(HashMap::new()), calls: AtomicUsize::new(0) });
    daemon.restore();

    let cleanup = (socket_path.clone(), flags.pidfile.clone(), activated);
    std::thread::spawn(move || {
        let _ = signals.wait();
        // Leases are not released: a restarted daemon picks them up from the state directory.
        if !cleanup.2 {
            let _ = std::fs::remove_file(&cleanup.0);
        }
        if !cleanup.1.is_empty() {
            let _ = std::fs::remove_file(&cleanup.1);
        }
        std::process::exit(0);
    });

    eprintln!("dhcp daemon: listening on {socket_path}");
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                eprintln!("dhcp daemon: accept: {e}");
                // EMFILE and friends: give the process a moment rather than spin.
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if daemon.calls.fetch_add(1, Ordering::SeqCst) >= MAX_CALLS {
            daemon.calls.fetch_sub(1, Ordering::SeqCst);
            let busy = Error::new(Code::TryAgainLater, format!("the DHCP daemon is serving {MAX_CALLS} calls already"));
            reply(&stream, &Reply::err(&busy));
            continue;
        }
        let d = daemon.clone();
        let spawned = std::thread::Builder::new().name("dhcp-call".into()).spawn(move || {
            d.serve(&stream);
            d.calls.fetch_sub(1, Ordering::SeqCst);
        });
        if let Err(e) = spawned {
            daemon.calls.fetch_sub(1, Ordering::SeqCst);
            eprintln!("dhcp daemon: cannot start a thread: {e}");
        }
    }
    Ok(())
}

/// The listening socket: the one systemd passed (`LISTEN_FDS`, fd 3), else a new one at `path`.
/// Returns whether it was passed (then systemd owns the file).
fn listener(path: &str) -> anyhow::Result<(UnixListener, bool)> {
    let for_us = std::env::var("LISTEN_PID").ok().and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
    let fds = std::env::var("LISTEN_FDS").ok().and_then(|n| n.parse::<i32>().ok()).unwrap_or(0);
    // SAFETY: removing variables before any other thread exists (sd_listen_fds(3) does the same, so
    // children do not take the fds for theirs).
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    if for_us && fds > 0 {
        if fds > 1 {
            anyhow::bail!("Too many ({fds}) FDs passed through socket activation");
        }
        // SAFETY: systemd passes the listening socket as fd 3 and nothing else in this process
        // owns it.
        let l = unsafe { UnixListener::from_raw_fd(3) };
        nix::fcntl::fcntl(&l, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))
            .context("setting FD_CLOEXEC on the passed socket")?;
        return Ok((l, true));
    }
    let p = Path::new(path);
    if let Some(dir) = p.parent() {
        private_dir(dir)?;
    }
    // A socket file left by a daemon that was killed: remove it if nobody answers on it.
    if p.exists() && UnixStream::connect(p).is_err() {
        let _ = std::fs::remove_file(p);
    }
    let l = UnixListener::bind(p).with_context(|| format!("Error getting listener: listening on {path}"))?;
    Ok((l, false))
}

/// A stream read within one deadline for the whole request, so a caller trickling a byte at a
/// time cannot hold a call slot for longer than [`IO_TIMEOUT`].
struct Deadline<'a> {
    stream: &'a UnixStream,
    end: Instant,
}

impl std::io::Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let too_long =
            || std::io::Error::new(std::io::ErrorKind::TimedOut, format!("the request took too long ({IO_TIMEOUT:?})"));
        let left = self.end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(too_long());
        }
        self.stream.set_read_timeout(Some(left))?;
        match (&mut &*self.stream).read(buf) {
            // SO_RCVTIMEO running out shows as EAGAIN.
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                Err(too_long())
            }
            other => other,
        }
    }
}

/// Creates `dir` (and its parents) readable by root only, as the reference creates the socket's
/// directory: the state files name every container with a lease.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

fn reply(mut stream: &UnixStream, r: &Reply) {
    let mut out = serde_json::to_vec(r).unwrap_or_else(|_| br#"{"error":{"code":999,"msg":"encoding"}}"#.to_vec());
    out.push(b'\n');
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let _ = stream.write_all(&out);
}

/// A lease's life as callers see it.
#[derive(Debug, Clone)]
enum Phase {
    Acquiring,
    Bound(Lease),
    /// Acquisition failed, or the lease ended (interface gone, expired, released).
    Over(String),
}

enum Cmd {
    Check,
    Stop,
}

struct Entry {
    phase: Mutex<Phase>,
    changed: Condvar,
    commands: Mutex<Sender<Cmd>>,
    priority: u32,
    /// The attachment: (network, containerID, ifname).
    attachment: (String, String, String),
}

impl Entry {
    fn set(&self, p: Phase) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = p;
        self.changed.notify_all();
    }

    /// The phase once it is no longer `Acquiring`, waiting at most `limit`.
    fn settled(&self, limit: Duration) -> Phase {
        let guard = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, limit, |p| matches!(p, Phase::Acquiring))
            .unwrap_or_else(|e| e.into_inner());
        guard.clone()
    }

    fn send(&self, c: Cmd) {
        let _ = self.commands.lock().unwrap_or_else(|e| e.into_inner()).send(c);
    }
}

/// What the state file of one lease holds: enough to resume it with no caller.
#[derive(Serialize, Deserialize)]
struct Saved {
    #[serde(rename = "clientID")]
    client_id: String,
    /// The attachment's identity, for GC.
    network: String,
    #[serde(rename = "containerID")]
    container_id: String,
    netns: String,
    #[serde(rename = "ifName")]
    ifname: String,
    options: std::collections::BTreeMap<u8, Vec<u8>>,
    priority: u32,
    lease: Lease,
}

struct Daemon {
    flags: Flags,
    leases: Mutex<HashMap<String, Arc<Entry>>>,
    calls: AtomicUsize,
}

impl Daemon {
    fn serve(self: &Arc<Self>, stream: &UnixStream) {
        let r = match protocol::read_line(Deadline { stream, end: Instant::now() + IO_TIMEOUT }) {
            Err(e) => Reply::err(&Error::decode(format!("reading the request: {e}"))),
            Ok(line) => match protocol::decode(&line) {
                Err(e) => Reply::err(&e),
                Ok(call) => match self.dispatch(&call) {
                    Ok(v) => Reply::ok(v),
                    Err(e) => {
                        eprintln!("dhcp daemon: {:?} {}/{}: {}", call.method, call.container_id, call.ifname, e.msg);
                        Reply::err(&e)
                    }
                },
            },
        };
        reply(stream, &r);
    }

    fn dispatch(self: &Arc<Self>, call: &Call) -> Result<Option<serde_json::Value>, Error> {
        match call.check()? {
            Checked::Status => Ok(None),
            Checked::Gc(conf) => self.gc(&conf.network, &call.config).map(|()| None),
            Checked::Allocate(conf, id) => self.allocate(call, &conf, &id).map(Some),
            Checked::Check(id) => self.check(&id).map(Some),
            Checked::Release(id) => {
                self.release(&id);
                Ok(None)
            }
        }
    }

    /// GC: releases every lease of `network` whose attachment is not in the config's
    /// `cni.dev/valid-attachments` (a runtime lists every attachment still in use).
    fn gc(&self, network: &str, config: &serde_json::Value) -> Result<(), Error> {
        let Some(valid) = config.get("cni.dev/valid-attachments").or_else(|| config.get("cni.dev/attachments")) else {
            return Ok(());
        };
        let valid: Vec<cni::Attachment> = cni::json::from_value(valid)?;
        let stale: Vec<String> = self
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, e)| {
                let (net, cid, ifname) = &e.attachment;
                net == network && !valid.iter().any(|a| &a.container_id == cid && &a.ifname == ifname)
            })
            .map(|(id, _)| id.clone())
            .collect();
        // Every stale lease is told to stop first, so their RELEASEs go out in parallel.
        let stopped: Vec<(String, Arc<Entry>)> = stale
            .into_iter()
            .filter_map(|id| {
                eprintln!("dhcp daemon: {id}: not a valid attachment any more (GC), releasing");
                self.stop_entry(&id).map(|e| (id, e))
            })
            .collect();
        for (id, entry) in stopped {
            self.await_over(&entry);
            let _ = std::fs::remove_file(self.state_file(&id));
        }
        Ok(())
    }

    /// The longest an acquisition can take: every retry plus the last attempt's two waits.
    fn acquire_limit(&self) -> Duration {
        let t = self.flags.timing;
        t.resend_timeout + t.timeout * 2 + t.resend_max + Duration::from_secs(5)
    }

    fn allocate(self: &Arc<Self>, call: &Call, conf: &Config, id: &str) -> Result<serde_json::Value, Error> {
        if !Path::new(&call.netns).is_absolute() {
            return Err(Error::env(format!("netns path {:?} is not absolute", call.netns)));
        }
        let existing = self.leases.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned();
        if let Some(entry) = existing {
            match entry.settled(self.acquire_limit()) {
                Phase::Bound(lease) => {
                    // As the reference: wake the lease's thread so it looks at its interface.
                    entry.send(Cmd::Check);
                    return to_result(&lease, conf.priority);
                }
                Phase::Acquiring => return Err(Error::new(Code::TryAgainLater, "the lease is still being acquired")),
                Phase::Over(_) => self.forget(id, &entry),
            }
        }
        let entry = {
            let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = leases.get(id) {
                e.clone()
            } else {
                if leases.len() >= MAX_LEASES {
                    // Leases that ended without a DEL (their interface went away) make room first.
                    leases.retain(|_, e| !matches!(*e.phase.lock().unwrap_or_else(|p| p.into_inner()), Phase::Over(_)));
                }
                if leases.len() >= MAX_LEASES {
                    return Err(Error::new(Code::TryAgainLater, format!("the DHCP daemon holds {MAX_LEASES} leases")));
                }
                let saved = Saved {
                    client_id: id.to_string(),
                    network: conf.network.clone(),
                    container_id: call.container_id.clone(),
                    netns: call.netns.clone(),
                    ifname: call.ifname.clone(),
                    options: conf.options.clone(),
                    priority: conf.priority,
                    lease: placeholder(),
                };
                let e = self.start(saved, None).map_err(|e| Error::new(Code::Internal, format!("{e:#}")))?;
                leases.insert(id.to_string(), e.clone());
                e
            }
        };
        match entry.settled(self.acquire_limit()) {
            Phase::Bound(lease) => to_result(&lease, conf.priority),
            Phase::Acquiring => Err(Error::new(Code::TryAgainLater, "the lease is still being acquired")),
            Phase::Over(why) => {
                self.forget(id, &entry);
                let code = if why.contains("does not exist") { Code::UnknownContainer } else { Code::Internal };
                Err(Error::new(code, why))
            }
        }
    }

    fn check(&self, id: &str) -> Result<serde_json::Value, Error> {
        let entry = self.leases.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned();
        let Some(entry) = entry else {
            return Err(Error::new(Code::Internal, format!("no DHCP lease for {id}")));
        };
        match entry.settled(self.acquire_limit()) {
            Phase::Bound(lease) => {
                entry.send(Cmd::Check);
                to_result(&lease, entry.priority)
            }
            Phase::Acquiring => Err(Error::new(Code::TryAgainLater, "the lease is still being acquired")),
            Phase::Over(why) => Err(Error::new(Code::Internal, format!("the DHCP lease for {id} is over: {why}"))),
        }
    }

    /// Stops the lease (its thread sends RELEASE) and forgets it. Unknown leases are released
    /// already: success.
    fn release(&self, id: &str) {
        let entry = self.stop_entry(id);
        if let Some(entry) = entry {
            self.await_over(&entry);
        }
        let _ = std::fs::remove_file(self.state_file(id));
    }

    /// Takes the lease out of the table and tells its thread to release it.
    fn stop_entry(&self, id: &str) -> Option<Arc<Entry>> {
        let entry = self.leases.lock().unwrap_or_else(|e| e.into_inner()).remove(id)?;
        entry.send(Cmd::Stop);
        Some(entry)
    }

    /// Waits for a stopped lease's thread to be done: at most one exchange's waits and the
    /// RELEASE.
    fn await_over(&self, entry: &Entry) {
        let t = self.flags.timing;
        let guard = entry.phase.lock().unwrap_or_else(|e| e.into_inner());
        let _ = entry
            .changed
            .wait_timeout_while(guard, t.timeout * 2 + Duration::from_secs(5), |p| !matches!(p, Phase::Over(_)));
    }

    /// Removes `entry` from the table if it is still the one there.
    fn forget(&self, id: &str, entry: &Arc<Entry>) {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        if leases.get(id).is_some_and(|e| Arc::ptr_eq(e, entry)) {
            leases.remove(id);
        }
    }

    fn state_file(&self, id: &str) -> PathBuf {
        let digest = Sha256::digest(id.as_bytes());
        let name: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        Path::new(&self.flags.statedir).join(format!("{name}.json"))
    }

    /// Resumes the leases of the state directory that can still be renewed.
    fn restore(self: &Arc<Self>) {
        let Ok(dir) = std::fs::read_dir(&self.flags.statedir) else { return };
        for f in dir.flatten() {
            let path = f.path();
            if path.extension().is_none_or(|e| e != "json") {
                let _ = std::fs::remove_file(&path); // a temporary file of a write that was cut short
                continue;
            }
            let saved: Option<Saved> =
                std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).filter(|s: &Saved| {
                    s.lease.expire_at > now_secs()
                        && Path::new(&format!("{}{}", self.flags.hostprefix, s.netns)).exists()
                        && path == self.state_file(&s.client_id)
                });
            let Some(saved) = saved else {
                eprintln!("dhcp daemon: dropping {}: expired, unreadable or its netns is gone", path.display());
                let _ = std::fs::remove_file(&path);
                continue;
            };
            let id = saved.client_id.clone();
            let lease = saved.lease.clone();
            let address = lease.address;
            match self.start(saved, Some(lease)) {
                Ok(e) => {
                    eprintln!("dhcp daemon: {id}: resumed the lease of {address}");
                    self.leases.lock().unwrap_or_else(|e| e.into_inner()).insert(id, e);
                }
                Err(e) => eprintln!("dhcp daemon: {id}: cannot resume: {e:#}"),
            }
        }
    }

    /// Starts the thread of one lease: it acquires one (or resumes `bound`), then maintains it.
    fn start(self: &Arc<Self>, saved: Saved, bound: Option<Lease>) -> anyhow::Result<Arc<Entry>> {
        let (tx, rx) = mpsc::channel();
        let entry = Arc::new(Entry {
            phase: Mutex::new(bound.clone().map_or(Phase::Acquiring, Phase::Bound)),
            changed: Condvar::new(),
            commands: Mutex::new(tx),
            priority: saved.priority,
            attachment: (saved.network.clone(), saved.container_id.clone(), saved.ifname.clone()),
        });
        let (e, d) = (entry.clone(), self.clone());
        std::thread::Builder::new()
            .name("dhcp-lease".into())
            .stack_size(256 << 10)
            .spawn(move || {
                let why = match d.lease_thread(&e, saved, bound, rx) {
                    Ok(why) => why,
                    Err(err) => format!("{err:#}"),
                };
                e.set(Phase::Over(why));
            })
            .context("starting a lease thread")?;
        Ok(entry)
    }

    /// Runs in the lease's own thread; returns why the lease ended.
    fn lease_thread(
        &self,
        entry: &Entry,
        mut saved: Saved,
        bound: Option<Lease>,
        rx: mpsc::Receiver<Cmd>,
    ) -> anyhow::Result<String> {
        let path = format!("{}{}", self.flags.hostprefix, saved.netns);
        let ns = NetNs::open(&path).map_err(|e| anyhow::anyhow!("{}", e.msg))?;
        let state_file = self.state_file(&saved.client_id);
        ns.run(move || -> anyhow::Result<String> {
            let iface = find_iface(&saved.ifname, true)?;
            let client = Client {
                iface,
                client_id: saved.client_id.clone(),
                options: saved.options.clone(),
                timing: self.flags.timing,
            };
            let stopped = std::cell::Cell::new(false);
            let mut wait = |d: Duration| match rx.recv_timeout(d) {
                Ok(Cmd::Stop) | Err(RecvTimeoutError::Disconnected) => {
                    stopped.set(true);
                    false
                }
                Ok(Cmd::Check) | Err(RecvTimeoutError::Timeout) => true,
            };
            let mut lease = match bound {
                Some(l) => l,
                None => {
                    eprintln!("dhcp daemon: {}: acquiring lease", saved.client_id);
                    let l = client.acquire(&mut wait)?;
                    l.prefix()?;
                    eprintln!("dhcp daemon: {}: lease acquired: {}", saved.client_id, l.address);
                    l
                }
            };
            loop {
                saved.lease = lease.clone();
                save(&state_file, &saved);
                entry.set(Phase::Bound(lease.clone()));
                // Bound: sleep until T1, looking at the interface now and then.
                loop {
                    if stopped.get() {
                        return Ok(self.stop(&client, &lease, &state_file));
                    }
                    if !Path::new(&path).exists() {
                        // The runtime removed the namespace without a DEL. This thread keeps it
                        // alive, so its interface (a macvlan, say) would live on with the lease.
                        let why = self.stop(&client, &lease, &state_file);
                        return Ok(format!("the netns {} is gone; {why}", saved.netns));
                    }
                    if !link_exists(&saved.ifname) {
                        let _ = std::fs::remove_file(&state_file);
                        return Ok(format!("interface {} no longer exists", saved.ifname));
                    }
                    let now = now_secs();
                    if now >= lease.renew_at {
                        break;
                    }
                    let _ = wait(Duration::from_secs(lease.renew_at - now).min(LINK_CHECK));
                }
                let now = now_secs();
                if now >= lease.expire_at {
                    eprintln!("dhcp daemon: {}: lease expired, bringing interface DOWN", saved.client_id);
                    if let Ok(mut rtnl) = Rtnl::open() {
                        let _ = rtnl.set_down(client.iface.index);
                    }
                    let _ = std::fs::remove_file(&state_file);
                    return Ok("the lease expired".into());
                }
                let rebinding = now >= lease.rebind_at;
                // Renewing gives way to rebinding at T2, rebinding to expiry.
                let until = if rebinding { lease.expire_at } else { lease.rebind_at };
                let limit = Duration::from_secs(until.saturating_sub(now).max(1));
                match client.extend(&lease, rebinding, limit, &mut wait) {
                    Ok(l) => {
                        eprintln!(
                            "dhcp daemon: {}: lease {}, expiration in {}s",
                            saved.client_id,
                            if rebinding { "rebound" } else { "renewed" },
                            l.expire_at.saturating_sub(now_secs())
                        );
                        lease = l;
                    }
                    Err(e) => {
                        eprintln!("dhcp daemon: {}: {e:#}", saved.client_id);
                        // Try again a little later, within T2 or the expiry.
                        let _ = wait(Duration::from_secs(5));
                        lease.renew_at = now_secs();
                        entry.set(Phase::Bound(lease.clone()));
                    }
                }
            }
        })?
    }

    /// DEL: RELEASE to the server, state file removed.
    fn stop(&self, client: &Client, lease: &Lease, state_file: &Path) -> String {
        let _ = std::fs::remove_file(state_file);
        match client.release(lease) {
            Ok(()) => "released".into(),
            Err(e) => {
                eprintln!("dhcp daemon: {}: failed to release DHCP lease: {e:#}", client.client_id);
                format!("released without DHCPRELEASE: {e:#}")
            }
        }
    }
}

/// A lease value for a state not yet written (replaced before the first save).
fn placeholder() -> Lease {
    Lease {
        address: Ipv4Addr::UNSPECIFIED,
        server: Ipv4Addr::UNSPECIFIED,
        options: Default::default(),
        renew_at: 0,
        rebind_at: 0,
        expire_at: 0,
    }
}

/// The interface `name` in the current namespace; with `up`, set up if it is down (as the
/// reference does before its first DISCOVER).
fn find_iface(name: &str, up: bool) -> anyhow::Result<Iface> {
    let mut rtnl = Rtnl::open()?;
    let link = rtnl.link_by_name(name)?.with_context(|| format!("error looking up {name:?}: link not found"))?;
    if up && !link.up {
        rtnl.set_up(link.index).with_context(|| format!("setting {name} up"))?;
    }
    let mac = link.mac.as_slice().try_into().with_context(|| format!("{name} has no Ethernet address"))?;
    Ok(Iface { name: name.to_string(), index: link.index, mac })
}

/// Whether the interface exists; a netlink failure counts as yes (the next look decides).
fn link_exists(name: &str) -> bool {
    Rtnl::open().and_then(|mut r| r.link_by_name(name)).map_or(true, |l| l.is_some())
}

/// Writes the state file atomically: a reader (a restarted daemon) sees the old or the new one.
fn save(path: &Path, saved: &Saved) {
    let tmp = path.with_extension("tmp");
    let res = serde_json::to_vec(saved)
        .map_err(std::io::Error::other)
        .and_then(|b| std::fs::write(&tmp, b))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = res {
        eprintln!("dhcp daemon: {}: cannot save the lease to {}: {e}", saved.client_id, path.display());
    }
}

/// The CNI result of a lease, as the reference builds it: the address with the subnet mask's
/// prefix and the first router as gateway; routes from option 121 when present (then option 33
/// and the router are ignored, RFC 3442), else option 33's plus a default route via the router.
/// Unlike the reference it also reports the DNS servers and domain the server gave.
pub fn to_result(lease: &Lease, priority: u32) -> Result<serde_json::Value, Error> {
    let internal = |e: anyhow::Error| Error::new(Code::Internal, format!("{e:#}"));
    let prefix = lease.prefix().map_err(internal)?;
    let ack =
        packet::Message { options: lease.options.clone(), ..packet::Message::request(packet::Kind::Ack, 0, [0; 6]) };
    let gateway = ack.ip_list(opt::ROUTER).first().copied();
    let net = |ip: Ipv4Addr, p: u8| IpNetwork::V4(Ipv4Network::new(ip, p).expect("prefix checked to be at most 32"));
    let mut routes = Vec::new();
    match lease.options.get(&opt::CLASSLESS_ROUTES).and_then(|v| packet::classless_routes(v)).filter(|r| !r.is_empty())
    {
        Some(classless) => {
            for r in classless {
                let mut route = Route::new(net(r.dst, r.prefix), Some(IpAddr::V4(r.router)));
                if r.router.is_unspecified() {
                    route.scope = Some(253); // RT_SCOPE_LINK: on-link, no gateway
                }
                routes.push(route);
            }
        }
        None => {
            if let Some(v) = lease.options.get(&opt::STATIC_ROUTES) {
                routes.extend(
                    packet::static_routes(v)
                        .into_iter()
                        .map(|r| Route::new(net(r.dst, r.prefix), Some(IpAddr::V4(r.router)))),
                );
            }
            if let Some(gw) = gateway {
                routes.push(Route::new(net(Ipv4Addr::UNSPECIFIED, 0), Some(IpAddr::V4(gw))));
            }
        }
    }
    for r in &mut routes {
        r.priority = priority;
    }
    let dns = Dns {
        nameservers: ack.ip_list(opt::DNS).iter().map(ToString::to_string).collect(),
        domain: lease
            .options
            .get(&opt::DOMAIN_NAME)
            .map(|d| String::from_utf8_lossy(d).trim_end_matches('\0').to_string())
            .unwrap_or_default(),
        ..Dns::default()
    };
    let result = CniResult {
        ips: vec![IpConfig { address: net(lease.address, prefix), gateway: gateway.map(IpAddr::V4), interface: None }],
        routes,
        dns,
        ..CniResult::default()
    };
    result.to_json(cni::version::CURRENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(options: &[(u8, &[u8])]) -> Lease {
        Lease {
            address: Ipv4Addr::new(10, 9, 0, 7),
            server: Ipv4Addr::new(10, 9, 0, 1),
            options: options.iter().map(|(k, v)| (*k, v.to_vec())).collect(),
            renew_at: 0,
            rebind_at: 0,
            expire_at: 0,
        }
    }

    #[test]
    fn result_with_router_and_static_routes() {
        let l = lease(&[
            (opt::SUBNET_MASK, &[255, 255, 255, 0]),
            (opt::ROUTER, &[10, 9, 0, 1]),
            (opt::STATIC_ROUTES, &[172, 16, 0, 0, 10, 9, 0, 2]),
            (opt::DNS, &[10, 9, 0, 53]),
        ]);
        let r = to_result(&l, 5).unwrap();
        assert_eq!(r["ips"][0]["address"], "10.9.0.7/24");
        assert_eq!(r["ips"][0]["gateway"], "10.9.0.1");
        assert_eq!(r["routes"][0]["dst"], "172.16.0.0/16");
        assert_eq!(r["routes"][1]["dst"], "0.0.0.0/0");
        assert_eq!(r["routes"][1]["gw"], "10.9.0.1");
        assert_eq!(r["routes"][1]["priority"], 5);
        assert_eq!(r["dns"]["nameservers"][0], "10.9.0.53");
    }

    #[test]
    fn classless_routes_win_over_router_and_option_33() {
        let l = lease(&[
            (opt::SUBNET_MASK, &[255, 255, 0, 0]),
            (opt::ROUTER, &[10, 9, 0, 1]),
            (opt::STATIC_ROUTES, &[172, 16, 0, 0, 10, 9, 0, 2]),
            (opt::CLASSLESS_ROUTES, &[0, 10, 9, 0, 254, 24, 192, 168, 5, 0, 0, 0, 0]),
        ]);
        let r = to_result(&l, 0).unwrap();
        let routes = r["routes"].as_array().unwrap();
        assert_eq!(routes.len(), 2, "{r}");
        assert_eq!(routes[0]["gw"], "10.9.0.254");
        assert_eq!(routes[1]["dst"], "192.168.5.0/24");
        assert!(routes[0].get("priority").is_none());
    }

    #[test]
    fn no_subnet_mask_is_an_error() {
        assert!(to_result(&lease(&[(opt::ROUTER, &[10, 9, 0, 1])]), 0).is_err());
    }

    #[test]
    fn flags_as_go_parses_them() {
        let args: Vec<String> = ["-timeout", "1.5s", "--resendmax=2m", "-broadcast", "-socketpath", "/tmp/d/x.sock"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let f = parse_flags(&args).unwrap();
        assert_eq!(f.timing.timeout, Duration::from_millis(1500));
        assert_eq!(f.timing.resend_max, Duration::from_secs(120));
        assert!(f.timing.broadcast);
        assert_eq!(f.statedir, "/tmp/d/dhcp-leases");
        assert!(parse_flags(&["-nope".to_string()]).is_err());
        assert!(parse_flags(&["-timeout".to_string()]).is_err());
        assert_eq!(parse_duration("1h2m3s").unwrap(), Duration::from_secs(3723));
        assert!(parse_duration("10").is_err() && parse_duration("").is_err() && parse_duration("5x").is_err());
    }
}
