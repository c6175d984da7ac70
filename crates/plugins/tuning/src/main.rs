//! `tuning`: changes sysctls and link settings of the container's interface after the plugins
//! before it in the chain made it, and puts the link settings back on DEL. A drop-in for the
//! reference plugin (v1.9.1): the same keys, overrides, result and saved-settings files.
//!
//! ADD reads top to bottom: check every value (the config's, then the kernel's view of them:
//! does each sysctl exist, does the link take this MAC and MTU), then inside the container save
//! the originals in `<dataDir>/<containerID>_<ifname>.json`, write the sysctls, and change the
//! link: MAC, promiscuous mode, MTU, all-multicast mode, transmit queue length, in the reference's
//! order (which writes the file after the sysctls; ours comes first, so a kill at any point
//! leaves what DEL needs). A failure (or a panic) undoes every step before it. The result is `prevResult`, with the
//! new MAC in the entry of the tuned interface.
//!
//! DEL puts back what the file says and removes it; a missing file, namespace or interface is
//! success (nothing is left to put back, and the file goes). Unlike the reference, DEL also puts
//! back the per-interface sysctls ADD wrote, and reports what it could not put back.

mod config;
mod saved;

use anyhow::Context;
use cni::{CniResult, Failures, Plugin, Request, Rollback};
use config::TuningConf;
use netkit::{LinkSettings, NetNs, Rtnl, sysctl};
use nix::libc;
use saved::Saved;
use std::path::Path;

struct Tuning;

/// A kernel refusal of a configured value is that value's fault: code 7, naming the key.
fn refused<T>(key: &str, value: impl std::fmt::Display, r: anyhow::Result<T>) -> anyhow::Result<T> {
    r.map_err(|e| match netkit::errno_of(&e) {
        Some(libc::EINVAL | libc::ERANGE | libc::EADDRNOTAVAIL) => {
            anyhow::Error::new(cni::Error::config(format!("{key}: the kernel refused {value}: {e:#}")))
        }
        _ => e.context(format!("setting {key} to {value}")),
    })
}

/// Checks, without changing anything, that the container can take every value: the sysctl
/// files exist, the link exists and accepts the MAC and the MTU.
fn check_against_kernel(req: &Request, conf: &TuningConf, rtnl: &mut Rtnl) -> anyhow::Result<Option<LinkSettings>> {
    for s in &conf.sysctls {
        let file = Path::new("/proc/sys").join(&s.path);
        if !file.is_file() {
            return Err(cni::Error::config(format!(
                "sysctl {:?}: {} does not exist in the container",
                s.key,
                file.display()
            ))
            .into());
        }
    }
    if !conf.changes_link() {
        return Ok(None);
    }
    let ifname = &req.env.ifname;
    let link = rtnl.link_settings(ifname)?.with_context(|| format!("failed to get {ifname:?}: no such interface"))?;
    if let Some(mac) = &conf.mac {
        let text = mac.text();
        if mac.bytes.len() != link.mac.len() {
            return Err(cni::Error::config(format!(
                "{}: {text} has {} bytes; {ifname} has {}-byte addresses",
                mac.source,
                mac.bytes.len(),
                link.mac.len()
            ))
            .into());
        }
        if mac.bytes.len() == 6 && (mac.bytes[0] & 1 == 1 || mac.bytes.iter().all(|b| *b == 0)) {
            return Err(cni::Error::config(format!("{}: {text} is not a unicast address", mac.source)).into());
        }
    }
    if let Some(mtu) = conf.mtu
        && !link.accepts_mtu(mtu)
    {
        return Err(cni::Error::config(format!(
            "mtu: {ifname} takes an MTU from {} to {}, not {mtu}",
            link.min_mtu.unwrap_or(0),
            link.max_mtu.filter(|m| *m != 0).map_or("any".to_string(), |m| m.to_string())
        ))
        .into());
    }
    Ok(Some(link))
}

/// ADD's changes, made on a thread inside the container's namespace (sysctls under
/// `/proc/sys/net` are those of the namespace of the thread that opens them).
fn tune(req: &Request, conf: &TuningConf) -> anyhow::Result<()> {
    let ifname = req.env.ifname.as_str();
    let mut rtnl = Rtnl::open()?;
    let link = check_against_kernel(req, conf, &mut rtnl)?;

    // The originals first, on disk before the first change: a plugin killed at any later point
    // leaves a file from which DEL puts back what was changed. Some sysctls are write-only;
    // theirs is not known.
    let originals: Vec<Option<String>> = conf.sysctls.iter().map(|s| sysctl::read(&s.path).ok()).collect();
    let mut saved = Saved::default();
    for (s, old) in conf.sysctls.iter().zip(&originals) {
        if let (true, Some(old)) = (s.per_interface, old) {
            saved.sysctl.insert(s.path.clone(), old.clone().into());
        }
    }
    if let Some(link) = &link {
        if conf.mac.is_some() {
            saved.mac = link.mac_text();
        }
        if conf.promisc {
            saved.promisc = Some(link.promisc);
        }
        if conf.mtu.is_some() {
            saved.mtu = link.mtu;
        }
        if conf.allmulti.is_some() {
            saved.allmulti = Some(link.allmulti);
        }
        if conf.txqlen.is_some() {
            saved.txqlen = Some(link.txqlen);
        }
    }

    let mut undo = Rollback::new("tuning");
    // Written whenever the link changes, as the reference does, so its DEL finds the file too.
    if !saved.is_empty() || link.is_some() {
        let file = saved::file_path(&conf.data_dir, &req.env.container_id, ifname);
        let before = saved::read(&file)?;
        let merged = match before.as_deref().map(Saved::from_bytes) {
            Some(Ok(earlier)) => saved.keep_earlier(earlier),
            _ => saved,
        };
        saved::write(&file, &merged.to_bytes())?;
        undo.push("the saved settings", move || match before {
            Some(bytes) => saved::write(&file, &bytes),
            None => saved::remove(&file),
        });
    }

    for (s, old) in conf.sysctls.iter().zip(originals) {
        refused(&format!("sysctl {:?}", s.key), format!("{:?}", s.value), sysctl::write(&s.path, &s.value))?;
        if let Some(old) = old {
            let path = s.path.clone();
            undo.push(format!("sysctl {}", s.key), move || sysctl::write(&path, &old));
        }
    }
    cni::fault::point("tuning:sysctls-written")?;

    let Some(link) = link else {
        undo.commit();
        return Ok(());
    };
    let index = link.index;
    if let Some(mac) = &conf.mac {
        refused(mac.source, mac.text(), rtnl.set_mac(index, &mac.bytes).map_err(Into::into))?;
        let old = link.mac.clone();
        undo.push("the MAC address", move || Ok(Rtnl::open()?.set_mac(index, &old)?));
    }
    if conf.promisc {
        refused("promisc", true, rtnl.set_promisc(index, true).map_err(Into::into))?;
        let old = link.promisc;
        undo.push("promiscuous mode", move || Ok(Rtnl::open()?.set_promisc(index, old)?));
    }
    if let Some(mtu) = conf.mtu {
        refused("mtu", mtu, rtnl.set_mtu(index, mtu).map_err(Into::into))?;
        let old = link.mtu;
        undo.push("the MTU", move || Ok(Rtnl::open()?.set_mtu(index, old)?));
    }
    if let Some(on) = conf.allmulti {
        refused("allmulti", on, rtnl.set_allmulti(index, on).map_err(Into::into))?;
        let old = link.allmulti;
        undo.push("all-multicast mode", move || Ok(Rtnl::open()?.set_allmulti(index, old)?));
    }
    if let Some(qlen) = conf.txqlen {
        refused("txQLen", qlen, rtnl.set_txqlen(index, qlen).map_err(Into::into))?;
        let old = link.txqlen;
        undo.push("the transmit queue length", move || Ok(Rtnl::open()?.set_txqlen(index, old)?));
    }
    cni::fault::point("tuning:applied")?;
    undo.commit();
    Ok(())
}

/// CHECK inside the container: every configured value is what the kernel reports.
fn verify(req: &Request, conf: &TuningConf) -> anyhow::Result<()> {
    let ifname = req.env.ifname.as_str();
    for s in &conf.sysctls {
        let current = sysctl::read(&s.path)?;
        // Multi-value sysctls (tcp_rmem) read back with tabs where the config has spaces.
        anyhow::ensure!(
            current.split_whitespace().eq(s.value.split_whitespace()),
            "Error: Tuning configured value of /proc/sys/{} is {}, current value is {current}",
            s.path,
            s.value
        );
    }
    let link = Rtnl::open()?.link_settings(ifname)?.with_context(|| format!("Cannot find container link {ifname}"))?;
    if let Some(mac) = &conf.mac {
        anyhow::ensure!(
            mac.bytes == link.mac,
            "Error: Tuning configured Ethernet of {ifname} is {}, current value is {}",
            mac.text(),
            link.mac_text()
        );
    }
    // Both ways, as the reference: promisc false means the link must not be promiscuous.
    anyhow::ensure!(
        conf.promisc == link.promisc,
        "Error: Tuning link {ifname} configured promisc is {}, current value is {}",
        conf.promisc,
        link.promisc
    );
    if let Some(mtu) = conf.mtu {
        anyhow::ensure!(
            mtu == link.mtu,
            "Error: Tuning configured MTU of {ifname} is {mtu}, current value is {}",
            link.mtu
        );
    }
    if let Some(on) = conf.allmulti {
        anyhow::ensure!(
            on == link.allmulti,
            "Error: Tuning configured all-multicast mode of {ifname} is {on}, current value is {}",
            link.allmulti
        );
    }
    if let Some(qlen) = conf.txqlen {
        anyhow::ensure!(
            qlen == link.txqlen,
            "Error: Tuning configured Transmit Queue Length of {ifname} is {qlen}, current value is {}",
            link.txqlen
        );
    }
    Ok(())
}

/// DEL inside the container: puts back every saved value; each is tried even if another fails.
fn restore(ifname: &str, saved: &Saved) -> anyhow::Result<()> {
    let mut rtnl = Rtnl::open()?;
    // The interface went with its plugin's DEL or its namespace: nothing to put back.
    let Some(link) = rtnl.link_settings(ifname)? else { return Ok(()) };
    let index = link.index;
    let mut failures = Failures::new();
    if saved.mtu != 0 {
        failures.check("failed to restore MTU", rtnl.set_mtu(index, saved.mtu).map_err(Into::into));
    }
    if !saved.mac.is_empty() {
        let set = netkit::parse_hwaddr(&saved.mac)
            .with_context(|| format!("invalid saved MAC address {:?}", saved.mac))
            .and_then(|mac| Ok(rtnl.set_mac(index, &mac)?));
        failures.check("failed to restore MAC address", set);
    }
    if let Some(on) = saved.promisc {
        failures.check("failed to restore promiscuous mode", rtnl.set_promisc(index, on).map_err(Into::into));
    }
    if let Some(on) = saved.allmulti {
        failures.check("failed to restore all-multicast mode", rtnl.set_allmulti(index, on).map_err(Into::into));
    }
    if let Some(qlen) = saved.txqlen {
        failures.check("failed to restore transmit queue length", rtnl.set_txqlen(index, qlen).map_err(Into::into));
    }
    for (path, old) in &saved.sysctl {
        let put_back = || -> anyhow::Result<()> {
            // The file is ours, but a path is checked before it is written all the same.
            let checked = config::sysctl_path(path, ifname)?;
            anyhow::ensure!(checked == *path, "saved sysctl path {path:?} is not in canonical form");
            let old = old.as_str().with_context(|| format!("saved value of {path} is not a string"))?;
            sysctl::write(path, old)
        };
        failures.check(&format!("failed to restore sysctl {path}"), put_back());
    }
    failures.finish()
}

impl Plugin for Tuning {
    fn name(&self) -> &'static str {
        "tuning"
    }

    fn add(&self, req: &Request) -> anyhow::Result<CniResult> {
        let conf = TuningConf::parse(req, Some(Path::new(config::ALLOWLIST)))?;
        let mut result =
            req.config.prev_result.clone().ok_or_else(|| cni::Error::config("Required prevResult missing"))?;
        let ns = NetNs::open(&req.env.netns)?;
        if conf.sysctls.is_empty() && !conf.changes_link() {
            // Podman's and nerdctl's bare {"type": "tuning"}: nothing to change.
            return Ok(result);
        }
        ns.run(|| tune(req, &conf))??;
        if let Some(mac) = &conf.mac {
            for i in result.interfaces.iter_mut().filter(|i| i.name == req.env.ifname) {
                i.mac = mac.text();
            }
        }
        Ok(result)
    }

    fn del(&self, req: &Request) -> anyhow::Result<()> {
        let data_dir = TuningConf::data_dir_for_teardown(req);
        let file = saved::file_path(&data_dir, &req.env.container_id, &req.env.ifname);
        let Some(bytes) = saved::read(&file)? else { return Ok(()) };
        let saved = match Saved::from_bytes(&bytes) {
            Ok(saved) => saved,
            Err(e) => {
                eprintln!("tuning: removing {}, which cannot be read: {}", file.display(), e.msg);
                return saved::remove(&file);
            }
        };
        let Some(ns) = NetNs::open_if_exists(&req.env.netns)? else {
            // The namespace is gone, and the interface with it (or back in the host, reset).
            return saved::remove(&file);
        };
        // On failure the file stays, so that a retried DEL can put back the rest.
        ns.run(|| restore(&req.env.ifname, &saved))??;
        saved::remove(&file)
    }

    fn check(&self, req: &Request) -> anyhow::Result<()> {
        let conf = TuningConf::parse(req, None)?;
        req.config.prev_result.as_ref().ok_or_else(|| cni::Error::config("Required prevResult missing"))?;
        let ns = NetNs::open(&req.env.netns)?;
        ns.run(|| verify(req, &conf))?
    }
}

fn main() {
    cni::skel::run(Tuning)
}
