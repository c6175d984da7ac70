//! The iptables backend: changes go in as one `iptables-restore --noflush --wait` batch per address
//! family and invocation (the reference runs one `iptables` process per rule), with the reference
//! plugins' chain names and comments, so a DEL by either implementation removes what the other
//! added.
//!
//! Deletions are computed from `iptables-save -t nat`: the exact saved form of each rule is
//! deleted, whatever order of options or address form (`10.1.0.5` or `10.1.0.5/32`) it was added
//! with.
//!
//! Every program here runs under the node's iptables lock ([`IptablesLock`]) and holds it itself,
//! and every read-modify-write holds it from the save to the restore: a verb never reads a table
//! that a killed verb's orphaned `iptables-restore` is still about to change.

use crate::identity::{iptables_chain, iptables_comment};
use crate::lock::IptablesLock;
use anyhow::Context;
use ipnetwork::IpNetwork;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// One address family's iptables tools.
#[derive(Debug, Clone)]
pub struct Iptables {
    restore: PathBuf,
    save: PathBuf,
}

/// A program by name, as the reference finds `iptables`: in PATH, /usr/sbin or /sbin.
pub(crate) fn locate(name: &str) -> Option<PathBuf> {
    let from_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect::<Vec<_>>())
        .unwrap_or_default();
    from_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin").join(name), PathBuf::from("/sbin").join(name)])
        .find(|p| p.is_file())
}

/// Which x_tables implementation: `iptables-nft` (rules in nf_tables tables) or the legacy one.
/// A node may have state in both (Docker or kube-proxy on one, the plugins on the other).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Nft,
    Legacy,
}

impl Iptables {
    /// The tools of one variant (`iptables-nft-save`, `iptables-legacy-restore`, ...), if installed.
    pub fn variant(ipv6: bool, variant: Variant) -> Option<Iptables> {
        let prefix = if ipv6 { "ip6tables" } else { "iptables" };
        let kind = match variant {
            Variant::Nft => "nft",
            Variant::Legacy => "legacy",
        };
        Some(Iptables {
            restore: locate(&format!("{prefix}-{kind}-restore"))?,
            save: locate(&format!("{prefix}-{kind}-save"))?,
        })
    }

    /// The tools for IPv4 (`ipv6 == false`) or IPv6.
    pub fn locate(ipv6: bool) -> anyhow::Result<Iptables> {
        let prefix = if ipv6 { "ip6tables" } else { "iptables" };
        let find = |suffix: &str| {
            let name = format!("{prefix}-{suffix}");
            locate(&name)
                .with_context(|| format!("{name} (package iptables) was not found in PATH, /usr/sbin or /sbin"))
        };
        Ok(Iptables { restore: find("restore")?, save: find("save")? })
    }

    /// Applies a restore-format batch without touching anything it does not name.
    pub fn restore(&self, batch: &str) -> anyhow::Result<()> {
        let _lock = IptablesLock::acquire()?;
        let mut command = Command::new(&self.restore);
        crate::lock::hold_iptables_lock_in(&mut command);
        let mut child = command
            .args(["--noflush", "--wait"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", self.restore.display()))?;
        child.stdin.take().context("stdin")?.write_all(batch.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            anyhow::bail!(
                "{} failed: {}\ninput:\n{batch}",
                self.restore.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Removes `chains` and every jump to them from the nat table in one restore batch (none when
    /// there is nothing to remove); returns the table as it was saved, for what callers read from
    /// the removed chains.
    pub fn remove_chains(&self, chains: &BTreeSet<String>) -> anyhow::Result<String> {
        let _lock = IptablesLock::acquire()?;
        let saved = self.save_nat()?;
        let batch = remove_chains_batch(&saved, chains);
        if !batch.is_empty() {
            self.restore(&batch)?;
        }
        Ok(saved)
    }

    /// The nat table as `iptables-save` prints it.
    pub fn save_nat(&self) -> anyhow::Result<String> {
        self.save_table("nat")
    }

    /// One table as `iptables-save` prints it.
    pub fn save_table(&self, table: &str) -> anyhow::Result<String> {
        let _lock = IptablesLock::acquire()?;
        let mut command = Command::new(&self.save);
        crate::lock::hold_iptables_lock_in(&mut command);
        let out = command.args(["-t", table]).output().with_context(|| format!("running {}", self.save.display()))?;
        if !out.status.success() {
            anyhow::bail!("{} failed: {}", self.save.display(), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Quotes a comment for restore input, as iptables-save does.
fn quoted(comment: &str) -> String {
    format!("\"{}\"", comment.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The restore batch that masquerades `addresses` (one family) of a container, exactly as the
/// reference's `SetupIPMasq` lays it out: a chain `CNI-<hash(network+containerID)>` that accepts the
/// container's own subnets and masquerades everything else but multicast, jumped to from
/// POSTROUTING for each source address.
pub fn masq_add_batch(network: &str, container_id: &str, addresses: &[IpNetwork]) -> String {
    let chain = iptables_chain("", network, container_id);
    let comment = quoted(&iptables_comment(network, container_id));
    let multicast = if addresses.first().is_some_and(IpNetwork::is_ipv6) { "ff00::/8" } else { "224.0.0.0/4" };
    let mut out = format!("*nat\n:{chain} - [0:0]\n");
    let subnets: BTreeSet<String> = addresses.iter().map(|a| format!("{}/{}", a.network(), a.prefix())).collect();
    for subnet in subnets {
        out.push_str(&format!("-A {chain} -d {subnet} -j ACCEPT -m comment --comment {comment}\n"));
    }
    out.push_str(&format!("-A {chain} ! -d {multicast} -j MASQUERADE -m comment --comment {comment}\n"));
    for a in addresses {
        out.push_str(&format!("-A POSTROUTING -s {} -j {chain} -m comment --comment {comment}\n", a.ip()));
    }
    out.push_str("COMMIT\n");
    out
}

/// The restore batch that removes, from a saved nat table, every jump to `chains` (from any chain)
/// and the chains themselves. Empty when there is nothing to remove.
pub fn remove_chains_batch(saved: &str, chains: &BTreeSet<String>) -> String {
    let mut body = String::new();
    for line in saved.lines() {
        let Some(rule) = line.strip_prefix("-A ") else { continue };
        let parent = rule.split_whitespace().next().unwrap_or("");
        if chains.contains(parent) {
            continue; // the chain's own rules go with -F
        }
        if jump_target(rule).is_some_and(|t| chains.contains(t)) {
            body.push_str(&format!("-D {rule}\n"));
        }
    }
    for name in chains.iter().filter(|c| has_chain(saved, c)) {
        body.push_str(&format!("-F {name}\n-X {name}\n"));
    }
    if body.is_empty() { body } else { format!("*nat\n{body}COMMIT\n") }
}

/// The target of a saved rule's `-j`.
fn jump_target(rule: &str) -> Option<&str> {
    rule.rsplit_once(" -j ").and_then(|(_, t)| t.split_whitespace().next())
}

/// Whether a saved table declares `chain`.
pub fn has_chain(saved: &str, chain: &str) -> bool {
    saved.lines().any(|l| l.strip_prefix(':').and_then(|d| d.split_whitespace().next()) == Some(chain))
}

/// Chains in a saved nat table that POSTROUTING jumps to under the reference's comment for
/// `network`, with the container ID each belongs to.
pub fn masq_chains_of_network(saved: &str, network: &str) -> Vec<(String, String)> {
    let prefix = format!("name: \\\"{}\\\" id: \\\"", network.replace('"', "\\\\\\\""));
    saved
        .lines()
        .filter_map(|line| line.strip_prefix("-A POSTROUTING "))
        .filter_map(|rule| {
            let after = &rule[rule.find(&prefix)? + prefix.len()..];
            let container_id = after.split("\\\"").next()?.to_string();
            let chain = rule.rsplit_once(" -j ")?.1.split_whitespace().next()?.to_string();
            chain.starts_with("CNI-").then_some((chain, container_id))
        })
        .collect()
}

/// Masquerades a container's addresses (both families as needed).
pub fn masq_add(network: &str, container_id: &str, addresses: &[IpNetwork]) -> anyhow::Result<()> {
    let _lock = IptablesLock::acquire()?;
    for ipv6 in [false, true] {
        let family: Vec<IpNetwork> = addresses.iter().filter(|a| a.is_ipv6() == ipv6).copied().collect();
        if !family.is_empty() {
            Iptables::locate(ipv6)?.restore(&masq_add_batch(network, container_id, &family))?;
        }
    }
    Ok(())
}

/// Removes a container's masquerade rules in both families, whether this plugin or the reference
/// added them; nothing to remove is success.
pub fn masq_del(network: &str, container_id: &str) -> anyhow::Result<()> {
    let _lock = IptablesLock::acquire()?;
    for ipv6 in [false, true] {
        masq_del_with(&Iptables::locate(ipv6)?, network, container_id)?;
    }
    Ok(())
}

/// [`masq_del`] in one family, with the given tools.
pub fn masq_del_with(tools: &Iptables, network: &str, container_id: &str) -> anyhow::Result<()> {
    tools.remove_chains(&BTreeSet::from([iptables_chain("", network, container_id)])).map(|_| ())
}

/// Confirms each address jumps to the container's masquerade chain (CHECK).
pub fn masq_check(network: &str, container_id: &str, addresses: &[IpNetwork]) -> anyhow::Result<()> {
    let chain = iptables_chain("", network, container_id);
    for ipv6 in [false, true] {
        let family: Vec<&IpNetwork> = addresses.iter().filter(|a| a.is_ipv6() == ipv6).collect();
        if family.is_empty() {
            continue;
        }
        let saved = Iptables::locate(ipv6)?.save_nat()?;
        for a in family {
            let host = if ipv6 { 128 } else { 32 };
            let rule = format!("-A POSTROUTING -s {}/{host} ", a.ip());
            let found = saved.lines().any(|l| l.starts_with(&rule) && l.ends_with(&format!("-j {chain}")));
            anyhow::ensure!(found, "masquerade rule for {} (chain {chain}) is missing", a.ip());
        }
    }
    Ok(())
}

/// Removes masquerade rules of `network` whose container is not in `valid_containers` (GC). The
/// reference's iptables rules name the container but not the interface.
pub fn masq_gc(network: &str, valid_containers: &BTreeSet<String>) -> anyhow::Result<()> {
    let _lock = IptablesLock::acquire()?;
    for ipv6 in [false, true] {
        masq_gc_with(&Iptables::locate(ipv6)?, network, valid_containers)?;
    }
    Ok(())
}

/// [`masq_gc`] in one family, with the given tools.
pub fn masq_gc_with(tools: &Iptables, network: &str, valid_containers: &BTreeSet<String>) -> anyhow::Result<()> {
    let _lock = IptablesLock::acquire()?;
    let saved = tools.save_nat()?;
    let stale: BTreeSet<String> = masq_chains_of_network(&saved, network)
        .into_iter()
        .filter(|(_, id)| !valid_containers.contains(id))
        .map(|(chain, _)| chain)
        .collect();
    let batch = remove_chains_batch(&saved, &stale);
    if !batch.is_empty() {
        tools.restore(&batch)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVED: &str = r#"# Generated by iptables-save v1.8.9 (nf_tables)
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:CNI-92adfceda637913f01f1299d - [0:0]
:CNI-aaaaaaaaaaaaaaaaaaaaaaaa - [0:0]
-A POSTROUTING -s 10.1.0.5/32 -m comment --comment "name: \"test\" id: \"abcd\"" -j CNI-92adfceda637913f01f1299d
-A POSTROUTING -s 10.1.0.6/32 -m comment --comment "name: \"test\" id: \"other\"" -j CNI-aaaaaaaaaaaaaaaaaaaaaaaa
-A POSTROUTING -s 10.9.0.0/16 -j MASQUERADE
-A CNI-92adfceda637913f01f1299d -d 10.1.0.0/24 -m comment --comment "name: \"test\" id: \"abcd\"" -j ACCEPT
COMMIT
"#;

    #[test]
    fn add_batch_has_the_reference_layout() {
        let batch = masq_add_batch("test", "abcd", &["10.1.0.5/24".parse().unwrap(), "10.2.0.5/16".parse().unwrap()]);
        assert_eq!(
            batch,
            "*nat\n:CNI-92adfceda637913f01f1299d - [0:0]\n\
             -A CNI-92adfceda637913f01f1299d -d 10.1.0.0/24 -j ACCEPT -m comment --comment \"name: \\\"test\\\" id: \\\"abcd\\\"\"\n\
             -A CNI-92adfceda637913f01f1299d -d 10.2.0.0/16 -j ACCEPT -m comment --comment \"name: \\\"test\\\" id: \\\"abcd\\\"\"\n\
             -A CNI-92adfceda637913f01f1299d ! -d 224.0.0.0/4 -j MASQUERADE -m comment --comment \"name: \\\"test\\\" id: \\\"abcd\\\"\"\n\
             -A POSTROUTING -s 10.1.0.5 -j CNI-92adfceda637913f01f1299d -m comment --comment \"name: \\\"test\\\" id: \\\"abcd\\\"\"\n\
             -A POSTROUTING -s 10.2.0.5 -j CNI-92adfceda637913f01f1299d -m comment --comment \"name: \\\"test\\\" id: \\\"abcd\\\"\"\n\
             COMMIT\n"
        );
        assert!(masq_add_batch("t", "c", &["fd00::5/64".parse().unwrap()]).contains("! -d ff00::/8"));
    }

    #[test]
    fn removal_uses_the_saved_form() {
        let chains = BTreeSet::from(["CNI-92adfceda637913f01f1299d".to_string()]);
        assert_eq!(
            remove_chains_batch(SAVED, &chains),
            "*nat\n-D POSTROUTING -s 10.1.0.5/32 -m comment --comment \"name: \\\"test\\\" id: \\\"abcd\\\"\" -j CNI-92adfceda637913f01f1299d\n\
             -F CNI-92adfceda637913f01f1299d\n-X CNI-92adfceda637913f01f1299d\nCOMMIT\n"
        );
        assert_eq!(remove_chains_batch(SAVED, &BTreeSet::from(["CNI-nope".to_string()])), "");
    }

    #[test]
    fn chains_of_a_network_are_found_by_comment() {
        let found = masq_chains_of_network(SAVED, "test");
        assert_eq!(
            found,
            vec![
                ("CNI-92adfceda637913f01f1299d".to_string(), "abcd".to_string()),
                ("CNI-aaaaaaaaaaaaaaaaaaaaaaaa".to_string(), "other".to_string())
            ]
        );
        assert!(masq_chains_of_network(SAVED, "tes").is_empty());
    }
}
