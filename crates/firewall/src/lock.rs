//! Locks that the programs a plugin runs hold too.
//!
//! A runtime's timeout SIGKILLs the plugin, not the `iptables-restore` it started: that program
//! commits its batch after the plugin is gone. The next verb must not read the table before it
//! has: a DEL would find none of the rules, succeed, and the rules would arrive after it with
//! nothing left to remove them (until a GC, if any). So the lock a verb holds around its iptables
//! work is inherited by the programs it runs (its close-on-exec flag is cleared for them), and
//! the next verb waits for it until the last of them exits, orphan or not.
//!
//! ```text
//! /run/cni/iptables.lock   the iptables backends of bridge, ptp and portmap (and the reference
//!                          state's removal, which serves them), node-wide: held around every
//!                          iptables-save and -restore and by those programs, never on the
//!                          nftables paths ($XDG_RUNTIME_DIR/cni/ when set: rootless runtimes)
//! ```

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, Flock, FlockArg, fcntl};
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Takes `path`'s exclusive flock, creating the file (not its directory) if needed. With a
/// `timeout`, gives up after it with a "try again later" error rather than hanging a runtime's
/// verb behind a program that does not end; without, waits as long as it takes.
pub fn exclusive(path: &Path, timeout: Option<Duration>) -> anyhow::Result<Flock<File>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let Some(timeout) = timeout else {
        return Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .with_context(|| format!("locking {}", path.display()));
    };
    // flock(2) has no timeout: poll, from 1 ms up to 50 ms apart (an orphaned program usually
    // ends within a few hundred milliseconds; a concurrent verb's batch within tens).
    let deadline = Instant::now() + timeout;
    let mut file = file;
    let mut pause = Duration::from_millis(1);
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((back, Errno::EWOULDBLOCK | Errno::EINTR)) if Instant::now() < deadline => {
                file = back;
                std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(anyhow::Error::new(cni::Error::new(
                    cni::Code::TryAgainLater,
                    format!(
                        "{} is still held after {timeout:?} (by another plugin's verb, or an iptables program \
                         of a verb that was killed)",
                        path.display()
                    ),
                )));
            }
            Err((_, e)) => return Err(e).with_context(|| format!("locking {}", path.display())),
        }
    }
}

/// Lets every program this process runs from now on hold `lock` too (clears its close-on-exec
/// flag), for as long as the lock is held.
pub fn inherit_always(lock: &Flock<File>) -> anyhow::Result<()> {
    fcntl(&**lock, FcntlArg::F_SETFD(FdFlag::empty())).context("letting the programs we run hold our lock")?;
    Ok(())
}

/// The directory of the iptables backends' lock: `$XDG_RUNTIME_DIR/cni` when that is set (a
/// rootless runtime, whose plugins cannot write /run; dnsname follows the same rule), else
/// `/run/cni`: a tmpfs on every node (nothing left over after a reboot), writable in the tests'
/// sandboxes. Created if missing (not its parent), on the iptables paths only.
fn iptables_lock_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("cni"),
        None => PathBuf::from("/run/cni"),
    }
}

/// Whether `e` says the lock cannot be made at all (a read-only /run, a runtime directory that
/// is not there).
fn unwritable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|e| {
            use std::io::ErrorKind::{NotFound, PermissionDenied, ReadOnlyFilesystem};
            matches!(e.kind(), NotFound | PermissionDenied | ReadOnlyFilesystem)
        })
    })
}

/// How long a verb waits for the iptables lock. An orphaned `iptables-restore` ends once it has
/// committed (it waits for the xtables lock with `--wait`, as every iptables user should);
/// concurrent verbs each hold it for one save and one restore per family.
const IPTABLES_WAIT: Duration = Duration::from_secs(30);

/// The iptables lock while some part of this process holds it (`None`: where it cannot be made),
/// and how many parts do.
struct Held {
    lock: Option<Flock<File>>,
    holders: usize,
}

static HELD: Mutex<Option<Held>> = Mutex::new(None);

/// The node's iptables lock, held for the life of the value. Re-entrant within the process (a
/// DEL that takes it before probing keeps it through the removal that takes it again), released
/// when the last guard goes. Plugins do their iptables work on one thread at a time; two threads
/// holding guards at once are not serialized against each other.
#[must_use = "the lock is released when the guard is dropped"]
pub struct IptablesLock(());

impl IptablesLock {
    /// Takes the lock, waiting for whoever holds it (another verb, or the programs of a killed
    /// one) for at most 30 s.
    pub fn acquire() -> anyhow::Result<IptablesLock> {
        let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
        match held.as_mut() {
            Some(h) => h.holders += 1,
            None => {
                let dir = iptables_lock_dir();
                // Only our directory: its parent (/run, a user's runtime directory) is the system's.
                let lock = std::fs::create_dir(&dir)
                    .or_else(|e| if e.kind() == std::io::ErrorKind::AlreadyExists { Ok(()) } else { Err(e) })
                    .with_context(|| format!("creating {}", dir.display()))
                    .and_then(|()| exclusive(&dir.join("iptables.lock"), Some(IPTABLES_WAIT)));
                let lock = match lock {
                    Ok(lock) => Some(lock),
                    // The lock only narrows a window that exists without it: where it cannot be
                    // made, the iptables backends still work, as they did before it.
                    Err(e) if unwritable(&e) => {
                        eprintln!("firewall: iptables work goes on without its lock: {e:#}");
                        None
                    }
                    Err(e) => return Err(e),
                };
                *held = Some(Held { lock, holders: 1 });
            }
        }
        Ok(IptablesLock(()))
    }

    /// [`IptablesLock::acquire`] when `needed` (a verb on an iptables backend), else nothing: the
    /// nftables paths never wait for it.
    pub fn acquire_if(needed: bool) -> anyhow::Result<Option<IptablesLock>> {
        needed.then(IptablesLock::acquire).transpose()
    }

    /// Whether some part of this process holds the lock now.
    pub fn is_held() -> bool {
        HELD.lock().unwrap_or_else(PoisonError::into_inner).is_some()
    }
}

impl Drop for IptablesLock {
    fn drop(&mut self) {
        let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = held.as_mut() {
            h.holders -= 1;
            if h.holders == 0 {
                *held = None; // closing the file releases the flock
            }
        }
    }
}

/// The iptables lock's descriptor while held.
fn iptables_lock_fd() -> Option<RawFd> {
    HELD.lock().unwrap_or_else(PoisonError::into_inner).as_ref().and_then(|h| h.lock.as_ref()).map(|l| l.as_raw_fd())
}

/// Makes the program `command` runs hold the iptables lock too (see the module's doc), when this
/// process holds it; only that program: the descriptor stays close-on-exec for every other.
pub(crate) fn hold_iptables_lock_in(command: &mut Command) {
    let Some(fd) = iptables_lock_fd() else { return };
    // SAFETY: runs in the child between fork and exec, where only async-signal-safe calls are
    // allowed: fcntl(2) is one, and nothing here allocates or takes a lock. The descriptor stays
    // open in the parent (the caller holds a guard) until the child has been spawned.
    unsafe {
        command.pre_exec(move || {
            fcntl(BorrowedFd::borrow_raw(fd), FcntlArg::F_SETFD(FdFlag::empty()))
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_times_out_with_try_again_later() {
        let dir = std::env::temp_dir().join(format!("fw-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lock");
        let held = exclusive(&path, None).unwrap();
        let started = Instant::now();
        let e = exclusive(&path, Some(Duration::from_millis(100))).unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert_eq!(cni::Error::from_anyhow(&e).code, cni::Code::TryAgainLater, "{e:#}");
        drop(held);
        exclusive(&path, Some(Duration::from_millis(100))).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
