//! What the plugin remembers of each attachment, so DEL and GC find its rules without
//! `prevResult`: the reference's per-address iptables rules and firewalld sources carry no
//! identity (no comment), and the reference leaks them when a runtime sends DEL without a
//! `prevResult` (libcni after a cache loss, Podman after a reboot).
//!
//! ```text
//! <dataDir>/lock                        flock held for each verb's whole read-modify-write, and
//!                                       by the programs it runs, which may outlive a killed plugin
//! <dataDir>/fw-<net>-<inst>             one record per attachment (JSON): backend, addresses, ...
//! <dataDir>/addr/<address>              the attachment that last added rules for the address
//! ```
//!
//! A record is written (atomically: temporary file, fsync, rename) before the rules go in and
//! removed after they are gone, so a SIGKILL at any instruction leaves a record naming every rule
//! that may exist. An address's rules are shared by whoever holds it (the reference adds them
//! once), so DEL removes them only when the address's claim names the attachment being deleted
//! (or nobody): a stale attachment's DEL cannot open or close a newer container's firewall.

use anyhow::Context;
use firewall::Identity;
use nix::fcntl::Flock;
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The backend that installed an attachment's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Installed {
    Iptables,
    Firewalld,
    Nftables,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub network: String,
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
    pub backend: Installed,
    #[serde(rename = "adminChain")]
    pub admin_chain: String,
    pub zone: String,
    pub addresses: Vec<IpAddr>,
}

impl Record {
    pub fn identity(&self) -> Identity {
        Identity::new(&self.network, &self.container_id, &self.ifname)
    }
}

/// The data directory, locked for the life of the value.
pub struct Store {
    dir: PathBuf,
    _lock: Flock<File>,
}

fn file_name(id: &Identity) -> String {
    id.chain("fw")
}

impl Store {
    /// Opens (creating it) and locks `dir`.
    pub fn lock(dir: &Path) -> anyhow::Result<Store> {
        fs::create_dir_all(dir.join("addr")).with_context(|| format!("creating {}", dir.display()))?;
        let lock = firewall::lock::exclusive(&dir.join("lock"), None)?;
        // The programs the plugin runs while it holds the lock (iptables-save and -restore, nft)
        // hold it too: a runtime's timeout SIGKILLs the plugin but not its `iptables-restore`,
        // which then commits its batch after the plugin is gone. Until that program exits, the
        // next verb must not read the table: a DEL would find none of the rules, drop the record
        // and claims, and the rules would arrive after it with nothing left naming them. The
        // plugin runs no program that outlives its batch, so the lock is never kept longer.
        firewall::lock::inherit_always(&lock)
            .with_context(|| format!("letting the programs we run hold {}/lock", dir.display()))?;
        Ok(Store { dir: dir.to_path_buf(), _lock: lock })
    }

    /// Opens `dir` if it exists (DEL and GC create nothing).
    pub fn lock_existing(dir: &Path) -> anyhow::Result<Option<Store>> {
        if !dir.is_dir() {
            return Ok(None);
        }
        Store::lock(dir).map(Some)
    }

    fn write_atomically(&self, path: &Path, data: &[u8]) -> anyhow::Result<()> {
        let tmp = path.with_extension("tmp");
        let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path).with_context(|| format!("renaming {} into place", tmp.display()))?;
        Ok(())
    }

    pub fn save(&self, record: &Record) -> anyhow::Result<()> {
        let data = serde_json::to_vec_pretty(record)?;
        self.write_atomically(&self.dir.join(file_name(&record.identity())), &data)
    }

    pub fn load(&self, id: &Identity) -> anyhow::Result<Option<Record>> {
        read_record(&self.dir.join(file_name(id)))
    }

    pub fn remove(&self, id: &Identity) -> anyhow::Result<()> {
        remove_if_exists(&self.dir.join(file_name(id)))
    }

    /// Every record of `network`.
    pub fn of_network(&self, network: &str) -> anyhow::Result<Vec<Record>> {
        let prefix = format!("fw-{}-", firewall::identity::network_hash(network));
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).with_context(|| format!("listing {}", self.dir.display()))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with(&prefix) || name.ends_with(".tmp") {
                continue;
            }
            match read_record(&entry.path()) {
                Ok(Some(r)) if r.network == network => out.push(r),
                Ok(_) => {}
                Err(e) => eprintln!("firewall: skipping unreadable record {name}: {e:#}"),
            }
        }
        Ok(out)
    }

    fn claim_path(&self, ip: IpAddr) -> PathBuf {
        // ':' is fine in file names; the form is the canonical text of the address.
        self.dir.join("addr").join(ip.to_string())
    }

    /// Records `id` as the holder of `ip`'s rules.
    pub fn claim(&self, ip: IpAddr, id: &Identity) -> anyhow::Result<()> {
        self.write_atomically(&self.claim_path(ip), file_name(id).as_bytes())
    }

    /// Whether `id` may remove `ip`'s rules: it holds the claim, or nobody does.
    pub fn may_remove(&self, ip: IpAddr, id: &Identity) -> bool {
        match fs::read_to_string(self.claim_path(ip)) {
            Ok(holder) => holder == file_name(id),
            Err(_) => true,
        }
    }

    /// Drops `id`'s claim on `ip` (another holder's claim stays).
    pub fn release(&self, ip: IpAddr, id: &Identity) -> anyhow::Result<()> {
        if fs::read_to_string(self.claim_path(ip)).is_ok_and(|holder| holder == file_name(id)) {
            remove_if_exists(&self.claim_path(ip))?;
        }
        Ok(())
    }
}

fn read_record(path: &Path) -> anyhow::Result<Option<Record>> {
    match fs::read(path) {
        Ok(data) => Ok(Some(serde_json::from_slice(&data).with_context(|| format!("parsing {}", path.display()))?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
    }
}

fn remove_if_exists(path: &Path) -> anyhow::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("removing {}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(container: &str, ip: &str) -> Record {
        Record {
            network: "net".into(),
            container_id: container.into(),
            ifname: "eth0".into(),
            backend: Installed::Iptables,
            admin_chain: "CNI-ADMIN".into(),
            zone: "trusted".into(),
            addresses: vec![ip.parse().unwrap()],
        }
    }

    #[test]
    fn records_round_trip_and_are_found_by_network() {
        let tmp = testkit::TempDir::new("fw-state");
        let store = Store::lock(tmp.path()).unwrap();
        let a = record("a", "10.1.0.5");
        store.save(&a).unwrap();
        store.save(&Record { network: "other".into(), ..record("b", "10.2.0.5") }).unwrap();
        assert_eq!(store.load(&a.identity()).unwrap(), Some(a.clone()));
        assert_eq!(store.of_network("net").unwrap(), vec![a.clone()]);
        store.remove(&a.identity()).unwrap();
        store.remove(&a.identity()).unwrap();
        assert_eq!(store.load(&a.identity()).unwrap(), None);
    }

    #[test]
    fn an_address_is_removed_only_by_its_holder() {
        let tmp = testkit::TempDir::new("fw-claims");
        let store = Store::lock(tmp.path()).unwrap();
        let ip: IpAddr = "10.1.0.5".parse().unwrap();
        let (old, new) = (record("old", "10.1.0.5").identity(), record("new", "10.1.0.5").identity());
        assert!(store.may_remove(ip, &old));
        store.claim(ip, &old).unwrap();
        store.claim(ip, &new).unwrap();
        assert!(!store.may_remove(ip, &old));
        store.release(ip, &old).unwrap();
        assert!(store.may_remove(ip, &new));
        store.release(ip, &new).unwrap();
        assert!(store.may_remove(ip, &old));
    }
}
