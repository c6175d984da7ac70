//! Persistent tap devices, made with the tun driver's own ioctls on `/dev/net/tun` (what
//! `ip tuntap add` does, without running it).
//!
//! The device is created in the namespace of the calling thread, so callers run this inside
//! [`crate::NetNs::run`]. It is persistent: it outlives the file descriptor that made it, until it
//! is deleted (RTM_DELLINK works for it like for any link). A VM monitor or DPDK later opens it by
//! name with its own feature flags (`IFF_VNET_HDR`, offloads); only multi-queue must match what
//! was created, as the kernel refuses a different one.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;

const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;
const IFF_MULTI_QUEUE: i16 = 0x0100;
/// Fail with EBUSY instead of attaching when a device of that name exists.
const IFF_TUN_EXCL: i16 = i16::MIN; // 0x8000 in the kernel's short
// _IOW('T', n, int)
const TUNSETIFF: u64 = 0x4004_54ca;
const TUNSETPERSIST: u64 = 0x4004_54cb;
const TUNSETOWNER: u64 = 0x4004_54cc;
const TUNSETGROUP: u64 = 0x4004_54ce;

/// A tap to create in the calling thread's namespace.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tap<'a> {
    pub name: &'a str,
    pub multi_queue: bool,
    /// The user allowed to open it (without CAP_NET_ADMIN); `None`: nobody but the capable.
    pub owner: Option<u32>,
    pub group: Option<u32>,
}

/// Creates the tap, persistent and down. EBUSY when the name is taken.
pub fn create_tap(tap: &Tap) -> std::io::Result<()> {
    if tap.name.is_empty() || tap.name.len() >= 16 {
        return Err(std::io::Error::from_raw_os_error(nix::libc::EINVAL));
    }
    let tun = OpenOptions::new().read(true).write(true).open("/dev/net/tun")?;
    // struct ifreq: the name, then a union whose first member is the short flags.
    let mut ifreq = [0u8; 40];
    ifreq[..tap.name.len()].copy_from_slice(tap.name.as_bytes());
    let mut flags = IFF_TAP | IFF_NO_PI | IFF_TUN_EXCL;
    if tap.multi_queue {
        flags |= IFF_MULTI_QUEUE;
    }
    ifreq[16..18].copy_from_slice(&flags.to_ne_bytes());
    let fd = tun.as_raw_fd();
    // SAFETY: TUNSETIFF reads and writes a struct ifreq, which `ifreq` is large enough to hold;
    // the other requests take an integer argument by value.
    unsafe {
        check(nix::libc::ioctl(fd, TUNSETIFF as _, ifreq.as_mut_ptr()))?;
        if let Some(uid) = tap.owner {
            check(nix::libc::ioctl(fd, TUNSETOWNER as _, uid as nix::libc::c_ulong))?;
        }
        if let Some(gid) = tap.group {
            check(nix::libc::ioctl(fd, TUNSETGROUP as _, gid as nix::libc::c_ulong))?;
        }
        // Last: a failure above closes the descriptor and with it the device, not yet persistent.
        check(nix::libc::ioctl(fd, TUNSETPERSIST as _, 1 as nix::libc::c_ulong))?;
    }
    Ok(())
}

fn check(rc: nix::libc::c_int) -> std::io::Result<()> {
    if rc < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}
