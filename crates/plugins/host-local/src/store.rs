//! The on-disk store: the reference's format, plus an index that keeps every verb's cost flat.
//!
//! `<dataDir>/<network>/` holds, exactly as the reference writes them:
//! - `<ip>`: one file per allocated address, content `<containerID>\r\n<ifname>` (old versions
//!   wrote the container ID alone; those files are still read and released);
//! - `last_reserved_ip.<set index>`: the last address handed out from each range set;
//! - `lock`: the file both implementations `flock` around every change.
//!
//! The reference finds a container's addresses by reading every file in the directory. We keep an
//! index, `.attachments/<containerID>/<ifname>/<ip>`, so ADD, DEL and CHECK cost the same with
//! 10,000 allocations as with 10. The `<ip>` files stay the truth: an index entry counts only when
//! the `<ip>` file it names says the same owner.
//!
//! The index is rebuilt from the `<ip>` files (the only O(n) path) when it may be incomplete:
//! - after a crash: every change is bracketed by `.attachments/:dirty`, created before and removed
//!   after, so a SIGKILL at any instruction leaves the marker behind;
//! - after another implementation (the reference binary) allocated: it rewrites
//!   `last_reserved_ip.<n>` on every allocation, and `.attachments/:state` records what those files
//!   said after our own last change. (The one case this misses: the other binary handing out the
//!   very address we handed out last. DEL still works then; only its cost is not flat, because the
//!   lookup falls back to the legacy scan path, see [`Store::release`].)
//!
//! The reference walks subdirectories too. Index entries carry the same content as `<ip>` files,
//! so a reference DEL removes them along with the address, and a reference CHECK finds the same
//! owner; nothing else in the index can match an owner.
//!
//! `<ip>` files are created whole: the content is written to a temporary file, flushed, and
//! `link(2)`ed into place, which fails if the address is taken. There is no moment where an empty
//! file blocks an address.

use crate::range::RangeSet;
use anyhow::Context;
use cni::{Attachment, Code, Error, ResultExt};
use nix::fcntl::{Flock, FlockArg};
use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// How long to wait for the store's lock before answering "try again later" (code 11).
const LOCK_TIMEOUT: Duration = Duration::from_secs(30);
const INDEX: &str = ".attachments";
const DIRTY: &str = ":dirty";
const STATE: &str = ":state";
/// Index entries for files that name a container but no interface (written by old versions).
const LEGACY: &str = ":legacy";
const LAST_RESERVED: &str = "last_reserved_ip.";

/// Who holds an address, as its file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub container_id: String,
    /// `None` for files written by old versions, which stored the container ID alone.
    pub ifname: Option<String>,
}

impl Owner {
    pub fn new(container_id: &str, ifname: &str) -> Owner {
        Owner {
            container_id: container_id.to_string(),
            ifname: Some(ifname.to_string()),
        }
    }

    /// Reads a file's content as the reference compares it (trimmed). `None` when it names nobody.
    pub fn parse(content: &str) -> Option<Owner> {
        let content = content.trim();
        let (id, ifname) = match content.split_once("\r\n") {
            Some((id, ifname)) => (id.trim(), Some(ifname.trim().to_string())),
            None => (content, None),
        };
        if !cni::env::is_valid_name(id) || ifname.as_deref() == Some("") {
            return None;
        }
        Some(Owner {
            container_id: id.to_string(),
            ifname,
        })
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
        valid.iter().any(|a| {
            a.container_id == self.container_id
                && self.ifname.as_ref().is_none_or(|i| *i == a.ifname)
        })
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
    if value.is_empty()
        || value == "."
        || value == ".."
        || value.contains('/')
        || value.contains('\0')
    {
        return Err(Error::config(format!(
            "{what} {value:?} cannot name a directory under dataDir"
        )));
    }
    Ok(())
}

fn mkdir(path: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o755).create(path)
}

/// Reads a small file without following a symlink planted in its place.
fn read_nofollow(path: &Path) -> std::io::Result<String> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut file, &mut text)?;
    Ok(text)
}

/// Writes `content` to a new temporary file next to `dir`'s index and returns its path.
fn write_temp(index: &Path, content: &str, sync: bool) -> anyhow::Result<PathBuf> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let path = index.join(format!(
        ":tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(content.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    if sync {
        file.sync_data()
            .with_context(|| format!("flushing {}", path.display()))?;
    }
    Ok(path)
}

/// Replaces `path` with `content` atomically (temporary file, then rename).
fn replace_file(index: &Path, path: &Path, content: &str) -> anyhow::Result<()> {
    let temp = write_temp(index, content, false)?;
    fs::rename(&temp, path).with_context(|| format!("replacing {}", path.display()))
}

fn remove_if_exists(path: &Path) -> anyhow::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

impl Store {
    /// Opens (creating it) the store of `network` under `data_dir`, takes its lock, and makes sure
    /// the index is complete. `sets` is the number of range sets in the config.
    pub fn open(data_dir: &Path, network: &str, sets: usize) -> anyhow::Result<Store> {
        validate_component("network name", network)?;
        let dir = data_dir.join(network);
        mkdir(&dir)
            .with_context(|| format!("creating {}", dir.display()))
            .code(Code::Io)?;
        let meta =
            fs::symlink_metadata(&dir).with_context(|| format!("reading {}", dir.display()))?;
        if !meta.is_dir() {
            return Err(Error::config(format!(
                "{} is not a directory (a symlink?)",
                dir.display()
            ))
            .into());
        }
        let lock = lock(&dir.join("lock"))?;
        let store = Store {
            index: dir.join(INDEX),
            dir,
            sets,
            _lock: lock,
        };
        if store.needs_rebuild()? {
            store.rebuild()?;
        }
        Ok(store)
    }

    /// Marks the store as being changed; call before the first change of an operation.
    pub fn begin(&self) -> anyhow::Result<()> {
        let marker = self.index.join(DIRTY);
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&marker)
            .with_context(|| format!("creating {}", marker.display()))?;
        Ok(())
    }

    /// Records the state the next operation checks against and clears the change marker.
    pub fn commit(self) -> anyhow::Result<()> {
        self.write_state()?;
        remove_if_exists(&self.index.join(DIRTY))
    }

    fn ip_path(&self, ip: IpAddr) -> PathBuf {
        self.dir.join(ip.to_string())
    }

    fn entry_dir(&self, owner: &Owner) -> PathBuf {
        self.index
            .join(&owner.container_id)
            .join(owner.ifname.as_deref().unwrap_or(LEGACY))
    }

    /// Whether an address is taken (by anyone).
    pub fn is_taken(&self, ip: IpAddr) -> bool {
        fs::symlink_metadata(self.ip_path(ip)).is_ok()
    }

    /// Who holds `ip`, by its file.
    pub fn owner_of(&self, ip: IpAddr) -> Option<Owner> {
        read_nofollow(&self.ip_path(ip))
            .ok()
            .and_then(|c| Owner::parse(&c))
    }

    /// Reserves `ip` for `owner`: `Ok(false)` when it is taken.
    pub fn reserve(&self, ip: IpAddr, owner: &Owner) -> anyhow::Result<bool> {
        if self.is_taken(ip) {
            return Ok(false);
        }
        let content = owner.content();
        let temp = write_temp(&self.index, &content, true)?;
        let linked = fs::hard_link(&temp, self.ip_path(ip));
        remove_if_exists(&temp)?;
        match linked {
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
            other => other.with_context(|| format!("reserving {ip}"))?,
        }
        self.add_entry(ip, owner)?;
        Ok(true)
    }

    fn add_entry(&self, ip: IpAddr, owner: &Owner) -> anyhow::Result<()> {
        let dir = self.entry_dir(owner);
        mkdir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(ip.to_string());
        fs::write(&path, owner.content()).with_context(|| format!("writing {}", path.display()))
    }

    /// Addresses held by `owner` according to the index, each confirmed by its `<ip>` file.
    pub fn addresses_of(&self, owner: &Owner) -> Vec<IpAddr> {
        let Ok(entries) = fs::read_dir(self.entry_dir(owner)) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<IpAddr>().ok())
            .filter(|ip| self.owner_of(*ip).as_ref() == Some(owner))
            .collect()
    }

    /// Releases every address of (container, ifname). As the reference, when nothing names that
    /// exact pair, releases addresses written by old versions under the container ID alone.
    pub fn release(&self, container_id: &str, ifname: &str) -> anyhow::Result<Vec<IpAddr>> {
        let exact = Owner::new(container_id, ifname);
        let mut released = self.release_owner(&exact)?;
        if released.is_empty() {
            let legacy = Owner {
                container_id: container_id.to_string(),
                ifname: None,
            };
            released = self.release_owner(&legacy)?;
        }
        Ok(released)
    }

    fn release_owner(&self, owner: &Owner) -> anyhow::Result<Vec<IpAddr>> {
        let ips = self.addresses_of(owner);
        for ip in &ips {
            remove_if_exists(&self.ip_path(*ip))?;
        }
        let dir = self.entry_dir(owner);
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
            // The container's directory goes once its last interface is gone.
            let _ = fs::remove_dir(self.index.join(&owner.container_id));
        }
        Ok(ips)
    }

    /// Releases one address, if `owner` holds it (undoing part of a failed ADD).
    pub fn release_ip(&self, ip: IpAddr, owner: &Owner) -> anyhow::Result<()> {
        if self.owner_of(ip).as_ref() == Some(owner) {
            remove_if_exists(&self.ip_path(ip))?;
        }
        remove_if_exists(&self.entry_dir(owner).join(ip.to_string()))
    }

    pub fn last_reserved(&self, set: usize) -> Option<IpAddr> {
        read_nofollow(&self.dir.join(format!("{LAST_RESERVED}{set}")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn set_last_reserved(&self, set: usize, ip: IpAddr) -> anyhow::Result<()> {
        replace_file(
            &self.index,
            &self.dir.join(format!("{LAST_RESERVED}{set}")),
            &ip.to_string(),
        )
    }

    /// Every `<ip>` file and who it names: the full scan, for GC and rebuilds only.
    pub fn scan(&self) -> anyhow::Result<Vec<(IpAddr, Option<Owner>)>> {
        let entries =
            fs::read_dir(&self.dir).with_context(|| format!("listing {}", self.dir.display()))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", self.dir.display()))?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<IpAddr>().ok())
            else {
                continue;
            };
            out.push((
                ip,
                read_nofollow(&entry.path())
                    .ok()
                    .and_then(|c| Owner::parse(&c)),
            ));
        }
        Ok(out)
    }

    /// Releases every address whose owner is not in `valid` (and files that name no owner at
    /// all), then rebuilds the index. Returns what was released.
    pub fn gc(&self, valid: &[Attachment]) -> anyhow::Result<Vec<IpAddr>> {
        let mut released = Vec::new();
        for (ip, owner) in self.scan()? {
            if !owner.is_some_and(|o| o.is_in(valid)) {
                remove_if_exists(&self.ip_path(ip))?;
                released.push(ip);
            }
        }
        self.rebuild()?;
        Ok(released)
    }

    /// Whether `set` still has an address to hand out.
    pub fn has_free_address(&self, set_index: usize, set: &RangeSet) -> bool {
        set.walk(self.last_reserved(set_index))
            .any(|(ip, _)| !self.is_taken(ip))
    }

    fn read_state(&self) -> Option<BTreeMap<usize, String>> {
        let text = read_nofollow(&self.index.join(STATE)).ok()?;
        text.lines()
            .map(|line| {
                let (n, ip) = line.split_once(' ')?;
                Some((n.parse().ok()?, ip.to_string()))
            })
            .collect()
    }

    /// What the `last_reserved_ip.<n>` files say now, for every set of the config and every set
    /// recorded before.
    fn current_state(&self, recorded: &BTreeMap<usize, String>) -> BTreeMap<usize, String> {
        let upto = self
            .sets
            .max(recorded.keys().next_back().map_or(0, |n| n + 1));
        (0..upto)
            .map(|n| {
                (
                    n,
                    self.last_reserved(n)
                        .map_or_else(|| "-".to_string(), |ip| ip.to_string()),
                )
            })
            .collect()
    }

    fn write_state(&self) -> anyhow::Result<()> {
        let state = self.current_state(&self.read_state().unwrap_or_default());
        let text: String = state.iter().map(|(n, ip)| format!("{n} {ip}\n")).collect();
        replace_file(&self.index, &self.index.join(STATE), &text)
    }

    fn needs_rebuild(&self) -> anyhow::Result<bool> {
        if self.index.join(DIRTY).exists() {
            return Ok(true);
        }
        let Some(recorded) = self.read_state() else {
            return Ok(true);
        };
        Ok(self.current_state(&recorded) != recorded)
    }

    /// Rebuilds the index from the `<ip>` files. Empty files are crash leftovers of writers that
    /// create before they write (we hold the lock, so nobody is writing one now): they are removed
    /// rather than blocking their address forever.
    fn rebuild(&self) -> anyhow::Result<()> {
        match fs::remove_dir_all(&self.index) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("clearing {}", self.index.display()));
            }
            _ => {}
        }
        mkdir(&self.index).with_context(|| format!("creating {}", self.index.display()))?;
        self.begin()?;
        for (ip, owner) in self.scan()? {
            match owner {
                Some(owner) => self.add_entry(ip, &owner)?,
                None => {
                    let path = self.ip_path(ip);
                    if fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.len() == 0) {
                        remove_if_exists(&path)?;
                    }
                }
            }
        }
        self.write_state()?;
        remove_if_exists(&self.index.join(DIRTY))
    }
}

/// Takes the `flock` the reference takes too, waiting at most [`LOCK_TIMEOUT`].
fn lock(path: &Path) -> anyhow::Result<Flock<File>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    // A blocking flock on a helper thread wakes us the moment the lock is free, which polling would
    // not; if it takes too long we give up and the process exits with the thread still waiting.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(Flock::lock(file, FlockArg::LockExclusive));
    });
    match rx.recv_timeout(LOCK_TIMEOUT) {
        Ok(Ok(lock)) => Ok(lock),
        Ok(Err((_, errno))) => {
            Err(anyhow::Error::new(errno)).with_context(|| format!("locking {}", path.display()))
        }
        Err(_) => Err(Error::new(
            Code::TryAgainLater,
            format!(
                "timed out after {}s waiting for the lock on {}",
                LOCK_TIMEOUT.as_secs(),
                path.display()
            ),
        )
        .into()),
    }
}

#[cfg(test)]
mod tests;
