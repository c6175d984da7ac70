//! Network namespaces: open one by path, check that it is one, and run code inside it.
//!
//! A network namespace belongs to a thread, not to the process (`setns(2)` with `CLONE_NEWNET`
//! changes only the caller), and a socket stays in the namespace it was created in for its whole
//! life. So the one way into a namespace here is [`NetNs::run`]: it starts a thread, moves that
//! thread into the namespace, runs the closure, and lets the thread end. Nothing ever has to switch
//! back, so nothing can be left behind in the wrong namespace by an early return or a panic.
//! Sockets opened inside the closure keep working from any thread afterwards.

use anyhow::Context;
use cni::{Code, Error};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::stat::fstat;
use nix::sys::statfs::{NSFS_MAGIC, PROC_SUPER_MAGIC, fstatfs};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

// NS_GET_NSTYPE from <linux/nsfs.h>: _IO(0xb7, 0x3). Tells which kind of namespace an nsfs file is.
nix::ioctl_none!(ns_get_nstype, 0xb7, 0x3);

/// An open handle on a network namespace. The namespace lives at least as long as the handle.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Opens `CNI_NETNS`. Fails with code 3 when the path does not exist (the container is gone),
    /// and code 8 when it is not a network namespace or is the plugin's own namespace.
    pub fn open(path: impl AsRef<Path>) -> Result<NetNs, Error> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::new(Code::UnknownContainer, format!("network namespace {} does not exist", path.display()))
            }
            _ => Error::new(Code::InvalidNetNs, format!("cannot open network namespace {}: {e}", path.display())),
        })?;
        let ns = NetNs { file, path: path.to_path_buf() };
        ns.check_is_netns()?;
        let own = NetNs::current()
            .map_err(|e| Error::new(Code::Internal, format!("cannot open the plugin's own namespace: {e:#}")))?;
        if ns.same_as(&own) {
            return Err(Error::new(
                Code::InvalidNetNs,
                format!("{} is the plugin's own network namespace, not a container's", path.display()),
            ));
        }
        Ok(ns)
    }

    /// Like [`NetNs::open`], but an empty or vanished path is `None`: what DEL needs, since a
    /// runtime may call it after the namespace is gone, and that is success.
    pub fn open_if_exists(path: &str) -> Result<Option<NetNs>, Error> {
        if path.is_empty() {
            return Ok(None);
        }
        match NetNs::open(path) {
            Ok(ns) => Ok(Some(ns)),
            Err(e) if e.code == Code::UnknownContainer => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The calling thread's namespace.
    pub fn current() -> anyhow::Result<NetNs> {
        let path = PathBuf::from("/proc/thread-self/ns/net");
        let file = File::open(&path).context("opening /proc/thread-self/ns/net")?;
        Ok(NetNs { file, path })
    }

    /// A new, empty network namespace with only `lo` (down). It has no name and no mount; it lives
    /// as long as the returned handle. Requires CAP_SYS_ADMIN.
    pub fn new_anonymous() -> anyhow::Result<NetNs> {
        std::thread::scope(|s| {
            s.spawn(|| -> anyhow::Result<NetNs> {
                unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
                NetNs::current()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Runs `f` on a new thread inside this namespace and returns its value. Netlink sockets,
    /// `/proc/sys/net` files and child processes that `f` creates belong to this namespace.
    /// Requires CAP_SYS_ADMIN.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        std::thread::scope(|s| {
            s.spawn(|| -> anyhow::Result<T> {
                setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("entering network namespace {}", self.path.display()))?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether both handles refer to the same namespace (same nsfs inode).
    pub fn same_as(&self, other: &NetNs) -> bool {
        match (fstat(self.file.as_fd()), fstat(other.file.as_fd())) {
            (Ok(a), Ok(b)) => a.st_dev == b.st_dev && a.st_ino == b.st_ino,
            _ => false,
        }
    }

    fn check_is_netns(&self) -> Result<(), Error> {
        let not_netns = |why: String| {
            Error::new(Code::InvalidNetNs, format!("{} is not a network namespace: {why}", self.path.display()))
        };
        let fs = fstatfs(self.file.as_fd()).map_err(|e| not_netns(e.to_string()))?;
        if fs.filesystem_type() != NSFS_MAGIC && fs.filesystem_type() != PROC_SUPER_MAGIC {
            return Err(not_netns("it is not on nsfs".to_string()));
        }
        // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd's namespace type.
        let kind = unsafe { ns_get_nstype(self.file.as_raw_fd()) }.map_err(|e| not_netns(e.to_string()))?;
        if kind != CloneFlags::CLONE_NEWNET.bits() {
            return Err(not_netns("it is another kind of namespace".to_string()));
        }
        Ok(())
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}
