//! Kernel parameters under `/proc/sys`.
//!
//! Paths use slashes (`net/ipv6/conf/eth0.100/accept_ra`), never dots: interface names may contain
//! dots. `/proc/sys/net` shows the namespace of the thread that opens the file, so container-side
//! values are written from inside [`crate::NetNs::run`].

use anyhow::Context;
use std::path::PathBuf;

fn full_path(path: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(path)
}

/// Reads a value, without the trailing newline.
pub fn read(path: &str) -> anyhow::Result<String> {
    let full = full_path(path);
    let value = std::fs::read_to_string(&full).with_context(|| format!("reading {}", full.display()))?;
    Ok(value.trim_end().to_string())
}

/// Writes `value` unless it is already set, which saves a write and works on a read-only `/proc/sys`
/// where nothing needs to change.
pub fn write(path: &str, value: &str) -> anyhow::Result<()> {
    if read(path).is_ok_and(|current| current == value) {
        return Ok(());
    }
    let full = full_path(path);
    std::fs::write(&full, value).with_context(|| format!("writing {value} to {}", full.display()))
}
