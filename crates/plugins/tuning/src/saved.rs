//! The original settings of a tuned interface, kept between ADD and DEL in
//! `<dataDir>/<containerID>_<ifname>.json`, in the reference's format so either plugin's DEL
//! restores what the other's ADD changed.
//!
//! The reference writes the link's values before the change for the keys it will change (`mac`,
//! `promisc`, `mtu`, `allmulti`, `txQLen`), with Go's `json.MarshalIndent(v, "", " ")`. We add
//! `savedSysctl` (the per-interface sysctls we wrote, with their old values): the reference's
//! decoder ignores keys it does not know, and a file without it restores no sysctl.

use anyhow::Context;
use cni::{Code, ResultExt};
use serde::{Deserialize, Serialize};
use serde_json::Map;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promisc: Option<bool>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mtu: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allmulti: Option<bool>,
    #[serde(rename = "txQLen", default, skip_serializing_if = "Option::is_none")]
    pub txqlen: Option<u32>,
    /// Path below `/proc/sys` -> the value before ADD wrote it.
    #[serde(rename = "savedSysctl", default, skip_serializing_if = "Map::is_empty")]
    pub sysctl: Map<String, serde_json::Value>,
}

impl Saved {
    pub fn is_empty(&self) -> bool {
        *self == Saved::default()
    }

    /// Keeps what `earlier` already saved: after a repeated ADD, the originals are still the
    /// values from before the first one, not the values the first one set.
    pub fn keep_earlier(mut self, earlier: Saved) -> Saved {
        if !earlier.mac.is_empty() {
            self.mac = earlier.mac;
        }
        self.promisc = earlier.promisc.or(self.promisc);
        if earlier.mtu != 0 {
            self.mtu = earlier.mtu;
        }
        self.allmulti = earlier.allmulti.or(self.allmulti);
        self.txqlen = earlier.txqlen.or(self.txqlen);
        for (k, v) in earlier.sysctl {
            self.sysctl.insert(k, v);
        }
        self
    }

    /// The bytes the reference would write: one-space indentation, no final newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut ser =
            serde_json::Serializer::with_formatter(&mut out, serde_json::ser::PrettyFormatter::with_indent(b" "));
        // Plain strings, numbers and booleans: serialization cannot fail.
        let _ = self.serialize(&mut ser);
        out
    }

    /// Reads a saved file, with Go's field matching (the reference's decoder is case-insensitive
    /// and ignores unknown keys).
    pub fn from_bytes(bytes: &[u8]) -> Result<Saved, cni::Error> {
        cni::json::from_slice(bytes)
    }
}

/// Where the settings of one attachment are kept.
pub fn file_path(data_dir: &Path, container_id: &str, ifname: &str) -> PathBuf {
    data_dir.join(format!("{container_id}_{ifname}.json"))
}

/// The file's content, or `None` when there is none.
pub fn read(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())).code(Code::Io),
    }
}

/// Writes `bytes` to `path` whole or not at all (a temporary file renamed over it), mode 0600,
/// creating the directory (0700) if needed.
pub fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("the saved-settings file has no directory")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
        .code(Code::Io)?;
    let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(|| format!("saving the original settings in {}", path.display())).code(Code::Io)
}

/// Removes the file; one already gone is fine (a concurrent DEL removed it).
pub fn remove(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display())).code(Code::Io)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_as_the_reference_writes_it() {
        let s = Saved { mac: "0a:58:0a:01:00:05".into(), mtu: 1500, promisc: Some(false), ..Saved::default() };
        assert_eq!(
            String::from_utf8(s.to_bytes()).unwrap(),
            "{\n \"mac\": \"0a:58:0a:01:00:05\",\n \"promisc\": false,\n \"mtu\": 1500\n}"
        );
        assert_eq!(Saved::default().to_bytes(), b"{}");
        let t = Saved { txqlen: Some(0), allmulti: Some(true), ..Saved::default() };
        assert_eq!(String::from_utf8(t.to_bytes()).unwrap(), "{\n \"allmulti\": true,\n \"txQLen\": 0\n}");
    }

    #[test]
    fn reads_the_reference_and_ours() {
        let s = Saved::from_bytes(b"{\n \"MAC\": \"aa:bb:cc:dd:ee:ff\",\n \"Mtu\": 9000, \"future\": 1\n}").unwrap();
        assert_eq!((s.mac.as_str(), s.mtu, s.promisc), ("aa:bb:cc:dd:ee:ff", 9000, None));
        let mut ours = Saved { txqlen: Some(1000), ..Saved::default() };
        ours.sysctl.insert("net/ipv4/conf/eth0/rp_filter".into(), "2".into());
        assert_eq!(Saved::from_bytes(&ours.to_bytes()).unwrap(), ours);
    }

    #[test]
    fn a_repeated_add_keeps_the_first_originals() {
        let first = Saved { mtu: 1500, promisc: Some(false), ..Saved::default() };
        let second = Saved { mtu: 1400, allmulti: Some(true), ..Saved::default() };
        let merged = second.keep_earlier(first);
        assert_eq!((merged.mtu, merged.promisc, merged.allmulti), (1500, Some(false), Some(true)));
    }
}
