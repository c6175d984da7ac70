//! The on-disk store: the reference's format, plus an index that keeps every verb's cost flat.
//!
//! `<dataDir>/<network>/` holds, exactly as the reference writes them:
//! - `<ip>`: one file per allocated address, content `<containerID>\r\n<ifname>` (old versions
//!   wrote the container ID alone; those files are still read and released);
//! - `last_reserved_ip.<set index>`: the last address handed out from each range set;
//! - `lock`: the file both implementations `flock` around every change.
//!
//! The reference finds a container's addresses by reading every file in the directory. We keep an
//! index, one file per attachment, `.attachments/<containerID>:<ifname>`, listing its addresses,
//! so ADD, DEL and CHECK cost the same with 10,000 allocations as with 10. (Neither part of the
//! name can contain `:`; files from old versions that name no interface are indexed under
//! `<containerID>::legacy`.) The `<ip>` files stay the truth: an indexed address counts only when
//! its `<ip>` file names the same owner.
//!
//! The index is rebuilt from the `<ip>` files (the only O(n) path) when it may be incomplete:
//! - after a crash: `.attachments/:state` says `dirty` from the start of every change to its end,
//!   so a SIGKILL at any instruction leaves it saying so (or empty, which counts the same);
//! - after another implementation (the reference binary) allocated: it rewrites
//!   `last_reserved_ip.<n>` on every allocation, and `:state` records what those files said after
//!   our own last change. The one case this cannot see is the other binary handing out the very
//!   address we handed out last; that attachment's DEL then finds nothing to release, as if it had
//!   been released already, and GC reclaims the address.
//!
//! The reference walks subdirectories too; nothing in `.attachments` has the content of an owner
//! file or the name of an address, so it ignores the index.
//!
//! Nothing in the store is followed through a symlink or written through a hard link: the
//! network's directory must be a real directory, owned by us and writable by nobody else (and
//! `dataDir` not writable by everyone unless sticky, so nobody can swap it for a symlink); every
//! file is opened with `O_NOFOLLOW` and used only if it is a regular file (with one name, to be
//! written). A symlink (or FIFO, or hard link) planted as `lock` is refused (code 5); one in the
//! index (ours, rebuilt at will) or as `last_reserved_ip.<n>` (a hint) is removed and the file
//! written anew; an `<ip>` file that is a symlink keeps its address taken but is never read or
//! written. Files are created `0600` (as the reference's address files; its lock is `0750`),
//! directories `0755` (as the reference's) and the index `0700`; a umask can only narrow these.
//!
//! `<ip>` files are created whole: the content is written to an unnamed file (`O_TMPFILE`, or a
//! named temporary file where the file system lacks it) and `link(2)`ed into place, which fails if
//! the address is taken. A SIGKILL never leaves an empty file blocking an address. Nothing is
//! fsync'd: the store describes containers that do not outlive the machine, a kill loses nothing
//! that reached the page cache, and after a power loss GC and the rebuild clear what is left.

use crate::range::RangeSet;
use anyhow::Context;
use cni::{Attachment, Code, Error, ResultExt};
use nix::fcntl::{Flock, FlockArg};
use std::collections::{BTreeMap, HashSet};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// How long to wait for the store's lock before answering "try again later" (code 11).
const LOCK_TIMEOUT: Duration = Duration::from_secs(30);
const INDEX: &str = ".attachments";
const STATE: &str = ":state";
/// The first line of `:state` after a completed change; anything else means "rebuild".
const CLEAN: &str = "host-local-index v2 clean";
const DIRTY: &str = "host-local-index v2 dirty";
/// Index entries for files that name a container but no interface (written by old versions).
const LEGACY: &str = ":legacy";
const LAST_RESERVED: &str = "last_reserved_ip.";
/// The line of `:state` holding the network directory's stamp after our last change (see
/// [`Store::dir_stamp`]).
const DIR_STAMP: &str = "dir ";

/// Who holds an address, as its file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub container_id: String,
    /// `None` for files written by old versions, which stored the container ID alone.
    pub ifname: Option<String>,
}

impl Owner {
    pub fn new(container_id: &str, ifname: &str) -> Owner {
        Owner { container_id: container_id.to_string(), ifname: Some(ifname.to_string()) }
    }

    /// Reads a file's content as the reference compares it (trimmed). `None` when it names nobody:
    /// also when it names an interface no runtime can pass (no `CNI_IFNAME` holds `/` or `:`), which
    /// could not be indexed under `<containerID>:<ifname>`.
    pub fn parse(content: &str) -> Option<Owner> {
        let content = content.trim();
        let (id, ifname) = match content.split_once("\r\n") {
            Some((id, ifname)) => (id.trim(), Some(ifname.trim().to_string())),
            None => (content, None),
        };
        if !cni::env::is_valid_name(id) || ifname.as_deref().is_some_and(|i| cni::env::validate_ifname(i).is_err()) {
            return None;
        }
        Some(Owner { container_id: id.to_string(), ifname })
    }

    fn content(&self) -> String {
        match &self.ifname {
            Some(ifname) => format!("{}\r\n{}", self.container_id, ifname),
            None => self.container_id.clone(),
        }
    }

    /// Whether this owner is one of the valid attachments (an old-style owner matches any
    /// interface of its container).
    pub fn is_in(&self, valid: &[Attachment]) -> bool {
        valid.iter().any(|a| a.container_id == self.container_id && self.ifname.as_ref().is_none_or(|i| *i == a.ifname))
    }
}

/// A locked, open store for one network. Changes made through it are committed with
/// [`Store::commit`]; dropping it without committing (a crash, a panic) leaves the index marked
/// for a rebuild.
pub struct Store {
    dir: PathBuf,
    index: PathBuf,
    sets: usize,
    _lock: Flock<File>,
}

fn validate_component(what: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() || value == "." || value == ".." || value.contains('/') || value.contains('\0') {
        return Err(Error::config(format!("{what} {value:?} cannot name a directory under dataDir")));
    }
    Ok(())
}

fn mkdir(path: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o755).create(path)
}

/// A state path that is not what the store put there (code 5, an I/O failure in the spec's terms).
fn refused(path: &Path, what: &str) -> anyhow::Error {
    Error::new(Code::Io, format!("{} is {what}: refusing to use it", path.display())).into()
}

/// Checks the network's directory: a real directory (not a symlink to one elsewhere), ours, and
/// not writable by others, who could plant files in it. Its parent, `dataDir`, may be shared
/// (`/tmp`) only with the sticky bit, or anyone could swap our directory for a symlink.
fn check_store_dir(data_dir: &Path, dir: &Path) -> anyhow::Result<()> {
    let meta = fs::symlink_metadata(dir).with_context(|| format!("reading {}", dir.display())).code(Code::Io)?;
    if meta.file_type().is_symlink() {
        return Err(refused(dir, "a symlink"));
    }
    if !meta.is_dir() {
        return Err(refused(dir, "not a directory"));
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(refused(dir, &format!("owned by uid {}, not by us", meta.uid())));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(refused(dir, &format!("writable by others (mode {:o})", meta.mode() & 0o7777)));
    }
    let parent = fs::metadata(data_dir).with_context(|| format!("reading {}", data_dir.display())).code(Code::Io)?;
    if parent.mode() & 0o002 != 0 && parent.mode() & 0o1000 == 0 {
        return Err(refused(data_dir, "writable by everyone without the sticky bit"));
    }
    Ok(())
}

/// Opens a state file without following a symlink planted in its place (`O_NOFOLLOW`) or
/// blocking on a FIFO (`O_NONBLOCK`), and only if it is a regular file; to be written, also only
/// if it has no other name (a hard link to a file elsewhere would be written through).
fn open_state_file(path: &Path, options: &mut OpenOptions, writing: bool) -> anyhow::Result<File> {
    let file = options.custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK).open(path).map_err(|e| {
        match fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => refused(path, "a symlink"),
            // A FIFO without a reader (ENXIO), a socket (ENXIO), a directory (EISDIR).
            Ok(m) if !m.is_file() => refused(path, "not a regular file"),
            _ => anyhow::Error::new(e).context(format!("opening {}", path.display())),
        }
    })?;
    let meta = file.metadata().with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_file() {
        return Err(refused(path, "not a regular file"));
    }
    if writing && meta.nlink() > 1 {
        return Err(refused(path, "a hard link"));
    }
    Ok(file)
}

/// Reads a small state file (see [`open_state_file`]).
fn read_nofollow(path: &Path) -> anyhow::Result<String> {
    let mut file = open_state_file(path, OpenOptions::new().read(true), false)?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut file, &mut text).with_context(|| format!("reading {}", path.display()))?;
    Ok(text)
}

/// Overwrites a small file in place (see [`open_state_file`]). Not atomic: only for files whose
/// torn state reads as "unknown" and is recovered from (`last_reserved_ip.<n>` as absent, `:state`
/// as dirty).
fn write_in_place(path: &Path, content: &str) -> anyhow::Result<()> {
    let mut file =
        open_state_file(path, OpenOptions::new().write(true).create(true).truncate(false).mode(0o600), true)?;
    file.set_len(0).with_context(|| format!("truncating {}", path.display()))?;
    file.write_all(content.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

/// Writes a file that only records a hint (the index, rebuilt at will; `last_reserved_ip.<n>`,
/// where the round robin resumes), first removing whatever else was planted under its name
/// (`unlink` removes a link, never what it points to): nothing there is worth failing for.
fn write_replacing(path: &Path, content: &str) -> anyhow::Result<()> {
    if fs::symlink_metadata(path).is_ok_and(|m| !m.is_file() || m.nlink() > 1) {
        remove_if_exists(path)?;
    }
    write_in_place(path, content)
}

/// Creates `dir/name` holding `content`, atomically and exclusively: `Ok(false)` if it exists.
fn create_whole(dir: &Path, name: &str, content: &str) -> anyhow::Result<bool> {
    let target = dir.join(name);
    let linked = match OpenOptions::new().write(true).mode(0o600).custom_flags(nix::libc::O_TMPFILE).open(dir) {
        Ok(mut file) => {
            file.write_all(content.as_bytes()).with_context(|| format!("writing {}", target.display()))?;
            // linkat through /proc/self/fd gives the unnamed file its name without needing
            // CAP_DAC_READ_SEARCH (which AT_EMPTY_PATH would).
            let source = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file));
            nix::unistd::linkat(
                nix::fcntl::AT_FDCWD,
                source.as_str(),
                nix::fcntl::AT_FDCWD,
                &target,
                nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
            )
            .map_err(std::io::Error::from)
        }
        // File systems without O_TMPFILE: a named temporary file, linked, then removed.
        Err(_) => {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let temp = dir.join(format!(".tmp-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
            write_in_place(&temp, content)?;
            let linked = fs::hard_link(&temp, &target);
            remove_if_exists(&temp)?;
            linked
        }
    };
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e).with_context(|| format!("creating {}", target.display())),
    }
}

fn remove_if_exists(path: &Path) -> anyhow::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e).with_context(|| format!("removing {}", path.display())),
        _ => Ok(()),
    }
}

impl Store {
    /// Opens (creating it) the store of `network` under `data_dir`, takes its lock, and makes sure
    /// the index is complete. `sets` is the number of range sets in the config.
    pub fn open(data_dir: &Path, network: &str, sets: usize) -> anyhow::Result<Store> {
        validate_component("network name", network)?;
        let dir = data_dir.join(network);
        mkdir(&dir).with_context(|| format!("creating {}", dir.display())).code(Code::Io)?;
        check_store_dir(data_dir, &dir)?;
        let lock = lock(&dir.join("lock"))?;
        let mut store = Store { index: dir.join(INDEX), dir, sets, _lock: lock };
        // An index that is not a real directory is not ours: rebuilt (the symlink itself removed).
        let index_is_dir = fs::symlink_metadata(&store.index).is_ok_and(|m| m.is_dir());
        let recorded = if index_is_dir { store.read_state() } else { None };
        // Keep tracking sets recorded before, even when this config (or a DEL, which reads no
        // ranges) names fewer.
        if let Some(last) = recorded.as_ref().and_then(|r| r.keys().next_back()) {
            store.sets = store.sets.max(last + 1);
        }
        if recorded.is_none_or(|r| store.current_state() != r) {
            store.rebuild()?;
        } else if store.read_dir_stamp() != Some(store.dir_stamp()) {
            // Someone else created or removed a file in the directory since our last change (an
            // old host-local writing a container-ID-only lease, an operator restoring a backup).
            store.rebuild()?;
        }
        Ok(store)
    }

    /// Marks the store as being changed; call before the first change of an operation.
    pub fn begin(&self) -> anyhow::Result<()> {
        write_replacing(&self.index.join(STATE), &format!("{DIRTY}\n"))
    }

    /// Records the state the next operation checks against, which also marks the change complete.
    pub fn commit(self) -> anyhow::Result<()> {
        self.write_state()
    }

    fn ip_path(&self, ip: IpAddr) -> PathBuf {
        self.dir.join(ip.to_string())
    }

    fn entry_path(&self, owner: &Owner) -> PathBuf {
        let ifname = owner.ifname.as_deref().unwrap_or(LEGACY);
        self.index.join(format!("{}:{ifname}", owner.container_id))
    }

    /// Whether an address is taken (by anyone).
    pub fn is_taken(&self, ip: IpAddr) -> bool {
        fs::symlink_metadata(self.ip_path(ip)).is_ok()
    }

    /// Who holds `ip`, by its file.
    pub fn owner_of(&self, ip: IpAddr) -> Option<Owner> {
        read_nofollow(&self.ip_path(ip)).ok().and_then(|c| Owner::parse(&c))
    }

    /// Reserves `ip` for `owner`: `Ok(false)` when it is taken. [`Store::record`] indexes it.
    pub fn reserve(&self, ip: IpAddr, owner: &Owner) -> anyhow::Result<bool> {
        if self.is_taken(ip) {
            return Ok(false);
        }
        create_whole(&self.dir, &ip.to_string(), &owner.content()).with_context(|| format!("reserving {ip}"))
    }

    /// Indexes the addresses `owner` now holds.
    pub fn record(&self, owner: &Owner, ips: &[IpAddr]) -> anyhow::Result<()> {
        let list: String = ips.iter().map(|ip| format!("{ip}\n")).collect();
        write_replacing(&self.entry_path(owner), &list)
    }

    /// Addresses held by `owner` according to the index, each confirmed by its `<ip>` file.
    pub fn addresses_of(&self, owner: &Owner) -> Vec<IpAddr> {
        let Ok(list) = read_nofollow(&self.entry_path(owner)) else { return Vec::new() };
        list.lines()
            .filter_map(|line| line.parse::<IpAddr>().ok())
            .filter(|ip| self.owner_of(*ip).as_ref() == Some(owner))
            .collect()
    }

    /// Releases every address of (container, ifname). As the reference, when nothing names that
    /// exact pair, releases addresses written by old versions under the container ID alone.
    pub fn release(&self, container_id: &str, ifname: &str) -> anyhow::Result<Vec<IpAddr>> {
        let exact = Owner::new(container_id, ifname);
        let mut released = self.release_owner(&exact)?;
        if released.is_empty() {
            let legacy = Owner { container_id: container_id.to_string(), ifname: None };
            released = self.release_owner(&legacy)?;
        }
        Ok(released)
    }

    fn release_owner(&self, owner: &Owner) -> anyhow::Result<Vec<IpAddr>> {
        let ips = self.addresses_of(owner);
        for ip in &ips {
            remove_if_exists(&self.ip_path(*ip))?;
        }
        remove_if_exists(&self.entry_path(owner))?;
        Ok(ips)
    }

    /// Releases one address, if `owner` holds it (undoing part of a failed ADD).
    pub fn release_ip(&self, ip: IpAddr, owner: &Owner) -> anyhow::Result<()> {
        if self.owner_of(ip).as_ref() == Some(owner) {
            remove_if_exists(&self.ip_path(ip))?;
        }
        Ok(())
    }

    pub fn last_reserved(&self, set: usize) -> Option<IpAddr> {
        read_nofollow(&self.dir.join(format!("{LAST_RESERVED}{set}"))).ok()?.trim().parse().ok()
    }

    /// Records the last address handed out from `set`. Written in place, as the reference does:
    /// a torn write reads as "no last address", which only restarts the round robin. A link
    /// planted in its place is replaced, never written through.
    pub fn set_last_reserved(&self, set: usize, ip: IpAddr) -> anyhow::Result<()> {
        write_replacing(&self.dir.join(format!("{LAST_RESERVED}{set}")), &ip.to_string())
    }

    /// Every `<ip>` file and who it names: the full scan, for GC and rebuilds only. A file is an
    /// `<ip>` file only under the spelling both implementations write (`fd00::5`, not `FD00::5`):
    /// [`Store::ip_path`] must find it again, or releasing it would remove another file.
    pub fn scan(&self) -> anyhow::Result<Vec<(IpAddr, Option<Owner>)>> {
        let entries = fs::read_dir(&self.dir).with_context(|| format!("listing {}", self.dir.display()))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", self.dir.display()))?;
            let name = entry.file_name();
            let Some(ip) = name.to_str().and_then(|n| n.parse::<IpAddr>().ok().filter(|ip| ip.to_string() == n)) else {
                continue;
            };
            out.push((ip, read_nofollow(&entry.path()).ok().and_then(|c| Owner::parse(&c))));
        }
        Ok(out)
    }

    /// Releases every address whose owner is not in `valid` (and files that name no owner at
    /// all), then rebuilds the index. Returns what was released.
    pub fn gc(&self, valid: &[Attachment]) -> anyhow::Result<Vec<IpAddr>> {
        // Sets, so a list of 100,000 attachments costs no more per file than a list of ten.
        let exact: HashSet<(&str, &str)> = valid.iter().map(|a| (a.container_id.as_str(), a.ifname.as_str())).collect();
        let containers: HashSet<&str> = valid.iter().map(|a| a.container_id.as_str()).collect();
        let keep = |o: &Owner| match &o.ifname {
            Some(ifname) => exact.contains(&(o.container_id.as_str(), ifname.as_str())),
            None => containers.contains(o.container_id.as_str()),
        };
        let mut released = Vec::new();
        for (ip, owner) in self.scan()? {
            if !owner.as_ref().is_some_and(keep) {
                remove_if_exists(&self.ip_path(ip))?;
                released.push(ip);
            }
        }
        self.rebuild()?;
        Ok(released)
    }

    /// Whether `set` still has an address to hand out.
    pub fn has_free_address(&self, set_index: usize, set: &RangeSet) -> bool {
        set.walk(self.last_reserved(set_index)).any(|(ip, _)| !self.is_taken(ip))
    }

    /// What `:state` recorded after the last completed change; `None` when it is missing, torn,
    /// marked dirty, or not what [`Store::write_state`] writes (sets `0..n` and no others: a file
    /// naming set 18446744073709551615 would have every open track that many sets).
    fn read_state(&self) -> Option<BTreeMap<usize, String>> {
        let text = read_nofollow(&self.index.join(STATE)).ok()?;
        let mut lines = text.lines();
        if lines.next()? != CLEAN {
            return None;
        }
        let state: BTreeMap<usize, String> = lines
            .filter(|line| !line.starts_with(DIR_STAMP))
            .map(|line| {
                let (n, ip) = line.split_once(' ')?;
                Some((n.parse().ok()?, ip.to_string()))
            })
            .collect::<Option<_>>()?;
        state.keys().enumerate().all(|(i, n)| i == *n).then_some(state)
    }

    /// What the `last_reserved_ip.<n>` files say now, for every set tracked.
    fn current_state(&self) -> BTreeMap<usize, String> {
        (0..self.sets)
            .map(|n| (n, self.last_reserved(n).map_or_else(|| "-".to_string(), |ip| ip.to_string())))
            .collect()
    }

    fn write_state(&self) -> anyhow::Result<()> {
        let state = self.current_state();
        let entries: String = state.iter().map(|(n, ip)| format!("{n} {ip}\n")).collect();
        // The state file lives in the index, so writing it leaves the directory's stamp alone.
        write_replacing(&self.index.join(STATE), &format!("{CLEAN}\n{entries}{DIR_STAMP}{}\n", self.dir_stamp()))
    }

    /// The network directory's change time and inode, which every file created, renamed or
    /// removed in it moves on. A change by a writer that does not know the index (whatever it
    /// writes) is seen by this one `stat`, without reading the directory.
    fn dir_stamp(&self) -> String {
        match fs::symlink_metadata(&self.dir) {
            Ok(m) => format!("{} {} {} {}", m.ino(), m.ctime(), m.ctime_nsec(), m.nlink()),
            Err(_) => String::new(),
        }
    }

    fn read_dir_stamp(&self) -> Option<String> {
        let text = read_nofollow(&self.index.join(STATE)).ok()?;
        text.lines().find_map(|l| l.strip_prefix(DIR_STAMP)).map(str::to_string)
    }

    /// Rebuilds the index from the `<ip>` files. Empty files are crash leftovers of writers that
    /// create before they write (we hold the lock, so nobody is writing one now): they are removed
    /// rather than blocking their address forever.
    fn rebuild(&self) -> anyhow::Result<()> {
        // Neither call follows a symlink: one planted as the index goes, not what it points to.
        let cleared = match fs::symlink_metadata(&self.index) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&self.index),
            Ok(_) => fs::remove_file(&self.index),
            Err(e) => Err(e),
        };
        match cleared {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("clearing {}", self.index.display()));
            }
            _ => {}
        }
        DirBuilder::new()
            .mode(0o700)
            .create(&self.index)
            .with_context(|| format!("creating {}", self.index.display()))?;
        self.begin()?;
        let mut owners: BTreeMap<PathBuf, (Owner, Vec<IpAddr>)> = BTreeMap::new();
        for (ip, owner) in self.scan()? {
            match owner {
                Some(owner) => owners.entry(self.entry_path(&owner)).or_insert((owner, Vec::new())).1.push(ip),
                None => {
                    let path = self.ip_path(ip);
                    if fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.len() == 0) {
                        remove_if_exists(&path)?;
                    }
                }
            }
        }
        for (owner, ips) in owners.values() {
            self.record(owner, ips)?;
        }
        // Named temporary files of a writer killed mid-create.
        for entry in fs::read_dir(&self.dir)?.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                remove_if_exists(&entry.path())?;
            }
        }
        self.write_state()
    }
}

/// Takes the `flock` the reference takes too, waiting at most [`LOCK_TIMEOUT`].
fn lock(path: &Path) -> anyhow::Result<Flock<File>> {
    // 0600: a lock file others can open is a lock others can hold forever.
    let file = open_state_file(
        path,
        OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600),
        false,
    )?;
    // Usually nobody holds it: take it at once, without a thread.
    let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => return Ok(lock),
        Err((file, nix::errno::Errno::EWOULDBLOCK)) => file,
        Err((_, errno)) => {
            return Err(anyhow::Error::new(errno)).with_context(|| format!("locking {}", path.display()));
        }
    };
    // A blocking flock on a helper thread wakes us the moment the lock is free, which polling would
    // not; if it takes too long we give up and the process exits with the thread still waiting.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(Flock::lock(file, FlockArg::LockExclusive));
    });
    match rx.recv_timeout(LOCK_TIMEOUT) {
        Ok(Ok(lock)) => Ok(lock),
        Ok(Err((_, errno))) => Err(anyhow::Error::new(errno)).with_context(|| format!("locking {}", path.display())),
        Err(_) => Err(Error::new(
            Code::TryAgainLater,
            format!("timed out after {}s waiting for the lock on {}", LOCK_TIMEOUT.as_secs(), path.display()),
        )
        .into()),
    }
}

#[cfg(test)]
mod tests;
