//! The firewall plugin's iptables state: the reference plugin's own chains, rules and comments in
//! the `filter` table of each family, so rules an operator wrote against them keep working and a
//! DEL by either implementation removes what the other added.
//!
//! ```text
//! FORWARD                -j CNI-ISOLATION-STAGE-1   (ingressPolicy same-bridge / isolated)
//!                        -j CNI-FORWARD             "CNI firewall plugin rules"
//! CNI-FORWARD            -j CNI-ADMIN               "... admin overrides": the operator's hook,
//!                                                    created when missing, never flushed
//!                        -d <ip>/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
//!                        -s <ip>/32 -j ACCEPT       (one pair per container address)
//! CNI-ISOLATION-STAGE-1  -i br ! -o br -j CNI-ISOLATION-STAGE-2
//!                        -i br -o br -j DROP        (isolated only)
//!                        -j RETURN
//! CNI-ISOLATION-STAGE-2  -o br -j DROP
//!                        -j RETURN
//! ```
//!
//! The reference runs one `iptables` process per check and per rule; here each invocation reads
//! the table once (`iptables-save -t filter`) and applies what is missing in one
//! `iptables-restore --noflush --wait` batch per family. Chains are created with `-N`, never
//! declared with `:` (which flushes an existing chain in `--noflush` mode): if a concurrent ADD
//! created one between our read and our batch, the batch fails whole and is recomputed from a new
//! read. The per-address rules carry no identity (the reference's have no comment), so the plugin
//! remembers an attachment's addresses itself; this module only adds, removes and checks rules.

use anyhow::Context;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

pub const FORWARD_CHAIN: &str = "CNI-FORWARD";
pub const DEFAULT_ADMIN_CHAIN: &str = "CNI-ADMIN";
pub const STAGE1: &str = "CNI-ISOLATION-STAGE-1";
pub const STAGE2: &str = "CNI-ISOLATION-STAGE-2";
const FILTER_COMMENT: &str = "CNI firewall plugin rules";
const ADMIN_COMMENT: &str = "CNI firewall plugin admin overrides";
/// v1.7.0 and later mark the rules every ingress policy shares with this comment (v1.1.1 used the
/// policy's own comment for them; such rules are recognised as present too).
const SHARED_POLICY_COMMENT: &str = "CNI firewall plugin rules (ingressPolicy: same-bridge|isolated)";
/// How often a batch is recomputed after a concurrent change made it fail.
const ATTEMPTS: usize = 4;

/// Who may reach a container on a bridge (`ingressPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Anyone (the default).
    Open,
    /// Containers on the same bridge, and anything not on another isolated bridge.
    SameBridge,
    /// As same-bridge, but containers on the same bridge cannot reach each other either.
    Isolated,
}

impl Policy {
    pub fn name(self) -> &'static str {
        match self {
            Policy::Open => "open",
            Policy::SameBridge => "same-bridge",
            Policy::Isolated => "isolated",
        }
    }
}

/// The host form of an address in the reference's rules: `/32` or `/128`.
pub fn host(ip: IpAddr) -> String {
    if ip.is_ipv4() { format!("{ip}/32") } else { format!("{ip}/128") }
}

/// Quotes a comment as iptables-save prints it (the reference's comments need no escapes).
fn quoted(comment: &str) -> String {
    format!("\"{}\"", comment.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The saved forms (`-A ...` without the `-A`) of the two rules of one address.
pub fn address_rules(ip: IpAddr) -> [String; 2] {
    let h = host(ip);
    [
        format!("{FORWARD_CHAIN} -d {h} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
        format!("{FORWARD_CHAIN} -s {h} -j ACCEPT"),
    ]
}

fn forward_jump() -> String {
    format!("FORWARD -m comment --comment {} -j {FORWARD_CHAIN}", quoted(FILTER_COMMENT))
}

fn admin_jump(admin: &str) -> String {
    format!("{FORWARD_CHAIN} -m comment --comment {} -j {admin}", quoted(ADMIN_COMMENT))
}

fn policy_comment(policy: Policy) -> String {
    quoted(&format!("CNI firewall plugin rules (ingressPolicy: {})", policy.name()))
}

/// A saved filter table: its chains and rules (each rule in saved form, without `-A `).
#[derive(Debug, Default)]
pub struct Saved {
    chains: Vec<String>,
    rules: Vec<String>,
}

impl Saved {
    pub fn parse(text: &str) -> Saved {
        let mut saved = Saved::default();
        let mut in_filter = false;
        for line in text.lines() {
            if let Some(table) = line.strip_prefix('*') {
                in_filter = table == "filter";
            } else if !in_filter {
            } else if let Some(decl) = line.strip_prefix(':') {
                saved.chains.extend(decl.split_whitespace().next().map(str::to_string));
            } else if let Some(rule) = line.strip_prefix("-A ") {
                saved.rules.push(rule.to_string());
            }
        }
        saved
    }

    pub fn has_chain(&self, chain: &str) -> bool {
        self.chains.iter().any(|c| c == chain)
    }

    pub fn has_rule(&self, rule: &str) -> bool {
        self.rules.iter().any(|r| r == rule)
    }

    /// Rules of `chain` that jump to `target`, whatever their comment.
    fn jumps(&self, chain: &str, target: &str) -> bool {
        self.rules.iter().any(|r| r.split_whitespace().next() == Some(chain) && r.ends_with(&format!(" -j {target}")))
    }

    /// Whether `chain` has a rule that is `spec` with any comment (or none) before the `-j`.
    fn has_with_any_comment(&self, chain: &str, spec: &str, target: &str) -> bool {
        let head = if spec.is_empty() { format!("{chain} ") } else { format!("{chain} {spec} ") };
        self.rules.iter().any(|r| {
            r.strip_prefix(&head).is_some_and(|rest| {
                rest == format!("-j {target}")
                    || (rest.starts_with("-m comment --comment ") && rest.ends_with(&format!(" -j {target}")))
            })
        })
    }
}

/// What one attachment needs in one family's filter table.
#[derive(Debug, Clone)]
pub struct Wanted<'a> {
    pub admin: &'a str,
    /// The attachment's addresses of this family (maybe none: then only the ingress policy).
    pub addresses: Vec<IpAddr>,
    /// The bridge and its policy, when the policy is not open.
    pub ingress: Option<(&'a str, Policy)>,
}

/// The restore batch that adds what `want` needs and `saved` lacks, in the order the reference's
/// checks-then-inserts would leave the table; empty when nothing is missing.
pub fn add_batch(saved: &Saved, want: &Wanted) -> String {
    let mut body = String::new();
    let new_chain = |name: &str, body: &mut String| {
        if !saved.has_chain(name) {
            body.push_str(&format!("-N {name}\n"));
        }
    };
    if !want.addresses.is_empty() {
        new_chain(FORWARD_CHAIN, &mut body);
        new_chain(want.admin, &mut body);
        if !saved.has_rule(&forward_jump()) {
            body.push_str(&insert_first(&forward_jump()));
        }
        if !saved.has_rule(&admin_jump(want.admin)) {
            body.push_str(&insert_first(&admin_jump(want.admin)));
        }
        for ip in &want.addresses {
            for rule in address_rules(*ip) {
                if !saved.has_rule(&rule) {
                    body.push_str(&format!("-A {rule}\n"));
                }
            }
        }
    }
    if let Some((bridge, policy)) = want.ingress
        && policy != Policy::Open
    {
        new_chain(STAGE1, &mut body);
        new_chain(STAGE2, &mut body);
        let shared = quoted(SHARED_POLICY_COMMENT);
        let own = policy_comment(policy);
        if !saved.jumps("FORWARD", STAGE1) {
            body.push_str(&insert_first(&format!("FORWARD -m comment --comment {shared} -j {STAGE1}")));
        }
        // Inserted first, so before the RETURN: the reference's InsertUnique with prepend.
        let bridge_rule = format!("-i {bridge} ! -o {bridge}");
        if !saved.has_with_any_comment(STAGE1, &bridge_rule, STAGE2) {
            body.push_str(&insert_first(&format!("{STAGE1} {bridge_rule} -m comment --comment {own} -j {STAGE2}")));
        }
        let same = format!("-i {bridge} -o {bridge}");
        if policy == Policy::Isolated && !saved.has_with_any_comment(STAGE1, &same, "DROP") {
            body.push_str(&insert_first(&format!("{STAGE1} {same} -m comment --comment {own} -j DROP")));
        }
        if !saved.has_with_any_comment(STAGE1, "", "RETURN") {
            body.push_str(&format!("-A {STAGE1} -m comment --comment {shared} -j RETURN\n"));
        }
        let out = format!("-o {bridge}");
        if !saved.has_with_any_comment(STAGE2, &out, "DROP") {
            body.push_str(&insert_first(&format!("{STAGE2} {out} -m comment --comment {shared} -j DROP")));
        }
        if !saved.has_with_any_comment(STAGE2, "", "RETURN") {
            body.push_str(&format!("-A {STAGE2} -m comment --comment {shared} -j RETURN\n"));
        }
    }
    if body.is_empty() { body } else { format!("*filter\n{body}COMMIT\n") }
}

/// `-I <chain> 1 <rest>` for a rule in saved form.
fn insert_first(rule: &str) -> String {
    let (chain, rest) = rule.split_once(' ').unwrap_or((rule, ""));
    format!("-I {chain} 1 {rest}\n")
}

/// The restore batch that removes every copy of the rules of `addresses` from CNI-FORWARD (the
/// chains, jumps and ingress rules stay, as with the reference); empty when none is there.
pub fn del_batch(saved: &Saved, addresses: &[IpAddr]) -> String {
    let mut body = String::new();
    for ip in addresses {
        for rule in address_rules(*ip) {
            for _ in saved.rules.iter().filter(|r| **r == rule) {
                body.push_str(&format!("-D {rule}\n"));
            }
        }
    }
    if body.is_empty() { body } else { format!("*filter\n{body}COMMIT\n") }
}

/// What CHECK finds missing for `want`, as the reference words it; `None` when all is there.
pub fn missing(saved: &Saved, want: &Wanted) -> Option<String> {
    if want.addresses.is_empty() {
        return None;
    }
    for chain in [FORWARD_CHAIN, want.admin] {
        if !saved.has_chain(chain) {
            return Some(format!("chain {chain} does not exist"));
        }
    }
    if !saved.has_rule(&forward_jump()) {
        return Some(format!("expected FORWARD rule [{}] not found", forward_jump()));
    }
    if !saved.has_rule(&admin_jump(want.admin)) {
        return Some(format!("expected {FORWARD_CHAIN} rule [{}] not found", admin_jump(want.admin)));
    }
    want.addresses
        .iter()
        .flat_map(|ip| address_rules(*ip))
        .find(|rule| !saved.has_rule(rule))
        .map(|rule| format!("expected rule [{rule}] not found"))
}

/// One family's `iptables-save` and `iptables-restore`, as the reference finds `iptables`: by the
/// plain names (the system's alternative: nft or legacy), in PATH, /usr/sbin or /sbin.
#[derive(Debug, Clone)]
pub struct Tools {
    pub ipv6: bool,
    save: PathBuf,
    restore: PathBuf,
}

impl Tools {
    pub fn locate(ipv6: bool) -> anyhow::Result<Tools> {
        let prefix = if ipv6 { "ip6tables" } else { "iptables" };
        let find = |suffix: &str| {
            let name = format!("{prefix}-{suffix}");
            crate::iptables::locate(&name)
                .with_context(|| format!("{name} (package iptables) was not found in PATH, /usr/sbin or /sbin"))
        };
        Ok(Tools { ipv6, save: find("save")?, restore: find("restore")? })
    }

    pub fn family(&self) -> &'static str {
        if self.ipv6 { "IPv6" } else { "IPv4" }
    }

    /// The filter table as it is now.
    pub fn save(&self) -> anyhow::Result<Saved> {
        let out = Command::new(&self.save)
            .args(["-t", "filter"])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", self.save.display()))?;
        anyhow::ensure!(
            out.status.success(),
            "{} failed: {}",
            self.save.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(Saved::parse(&String::from_utf8_lossy(&out.stdout)))
    }

    /// Applies a batch, changing nothing it does not name.
    pub fn restore(&self, batch: &str) -> anyhow::Result<()> {
        let mut child = Command::new(&self.restore)
            .args(["--noflush", "--wait"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", self.restore.display()))?;
        child.stdin.take().context("stdin")?.write_all(batch.as_bytes())?;
        let out = child.wait_with_output()?;
        anyhow::ensure!(
            out.status.success(),
            "{} failed: {}\ninput:\n{batch}",
            self.restore.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }

    /// Reads the table, applies `plan`'s batch, and reads again if a concurrent change made it
    /// fail (a chain created or a rule deleted in between), a bounded number of times.
    fn converge(&self, plan: &dyn Fn(&Saved) -> String) -> anyhow::Result<()> {
        let mut last = None;
        for _ in 0..ATTEMPTS {
            let batch = plan(&self.save()?);
            if batch.is_empty() {
                return Ok(());
            }
            match self.restore(&batch) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// Adds what `want` needs (one batch).
    pub fn add(&self, want: &Wanted) -> anyhow::Result<()> {
        self.converge(&|saved| add_batch(saved, want))
    }

    /// Removes the rules of `addresses` (one batch); rules already gone are success.
    pub fn del(&self, addresses: &[IpAddr]) -> anyhow::Result<()> {
        self.converge(&|saved| del_batch(saved, addresses))
    }

    /// Fails with the reference's words if anything `want` needs is missing.
    pub fn check(&self, want: &Wanted) -> anyhow::Result<()> {
        match missing(&self.save()?, want) {
            None => Ok(()),
            Some(what) => anyhow::bail!("{what} ({})", self.family()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table as the reference (v1.1.1, iptables-nft) leaves it after one ADD with
    /// `ingressPolicy: same-bridge`, captured from a run in a throwaway namespace.
    const REFERENCE: &str = r#"# Generated by iptables-save v1.8.9 (nf_tables)
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:CNI-ADMIN - [0:0]
:CNI-FORWARD - [0:0]
:CNI-ISOLATION-STAGE-1 - [0:0]
:CNI-ISOLATION-STAGE-2 - [0:0]
-A FORWARD -m comment --comment "CNI firewall plugin rules (ingressPolicy: same-bridge)" -j CNI-ISOLATION-STAGE-1
-A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD
-A CNI-FORWARD -m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN
-A CNI-FORWARD -d 10.1.0.5/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A CNI-FORWARD -s 10.1.0.5/32 -j ACCEPT
-A CNI-ISOLATION-STAGE-1 -i br0 ! -o br0 -m comment --comment "CNI firewall plugin rules (ingressPolicy: same-bridge)" -j CNI-ISOLATION-STAGE-2
-A CNI-ISOLATION-STAGE-1 -m comment --comment "CNI firewall plugin rules (ingressPolicy: same-bridge)" -j RETURN
-A CNI-ISOLATION-STAGE-2 -o br0 -m comment --comment "CNI firewall plugin rules (ingressPolicy: same-bridge)" -j DROP
-A CNI-ISOLATION-STAGE-2 -m comment --comment "CNI firewall plugin rules (ingressPolicy: same-bridge)" -j RETURN
COMMIT
"#;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_fresh_table_gets_the_reference_layout_in_one_batch() {
        let want = Wanted {
            admin: DEFAULT_ADMIN_CHAIN,
            addresses: vec![ip("10.1.0.5")],
            ingress: Some(("br0", Policy::Isolated)),
        };
        assert_eq!(
            add_batch(&Saved::default(), &want),
            "*filter\n-N CNI-FORWARD\n-N CNI-ADMIN\n\
             -I FORWARD 1 -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD\n\
             -I CNI-FORWARD 1 -m comment --comment \"CNI firewall plugin admin overrides\" -j CNI-ADMIN\n\
             -A CNI-FORWARD -d 10.1.0.5/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
             -A CNI-FORWARD -s 10.1.0.5/32 -j ACCEPT\n\
             -N CNI-ISOLATION-STAGE-1\n-N CNI-ISOLATION-STAGE-2\n\
             -I FORWARD 1 -m comment --comment \"CNI firewall plugin rules (ingressPolicy: same-bridge|isolated)\" -j CNI-ISOLATION-STAGE-1\n\
             -I CNI-ISOLATION-STAGE-1 1 -i br0 ! -o br0 -m comment --comment \"CNI firewall plugin rules (ingressPolicy: isolated)\" -j CNI-ISOLATION-STAGE-2\n\
             -I CNI-ISOLATION-STAGE-1 1 -i br0 -o br0 -m comment --comment \"CNI firewall plugin rules (ingressPolicy: isolated)\" -j DROP\n\
             -A CNI-ISOLATION-STAGE-1 -m comment --comment \"CNI firewall plugin rules (ingressPolicy: same-bridge|isolated)\" -j RETURN\n\
             -I CNI-ISOLATION-STAGE-2 1 -o br0 -m comment --comment \"CNI firewall plugin rules (ingressPolicy: same-bridge|isolated)\" -j DROP\n\
             -A CNI-ISOLATION-STAGE-2 -m comment --comment \"CNI firewall plugin rules (ingressPolicy: same-bridge|isolated)\" -j RETURN\n\
             COMMIT\n"
        );
    }

    #[test]
    fn what_the_reference_added_is_not_added_again() {
        let saved = Saved::parse(REFERENCE);
        let want = Wanted {
            admin: DEFAULT_ADMIN_CHAIN,
            addresses: vec![ip("10.1.0.5")],
            ingress: Some(("br0", Policy::SameBridge)),
        };
        assert_eq!(add_batch(&saved, &want), "");
        assert_eq!(missing(&saved, &want), None);
        let another = Wanted { addresses: vec![ip("10.1.0.6")], ingress: Some(("br1", Policy::SameBridge)), ..want };
        let batch = add_batch(&saved, &another);
        assert!(!batch.contains("-N "), "{batch}");
        assert!(batch.contains("-A CNI-FORWARD -s 10.1.0.6/32 -j ACCEPT\n"), "{batch}");
        assert!(batch.contains("-I CNI-ISOLATION-STAGE-1 1 -i br1 ! -o br1 "), "{batch}");
        assert!(!batch.contains("-j RETURN"), "{batch}");
        assert!(missing(&saved, &another).unwrap().contains("10.1.0.6/32"));
    }

    #[test]
    fn deletion_removes_every_copy_and_nothing_else() {
        let doubled = REFERENCE.replace(
            "-A CNI-FORWARD -s 10.1.0.5/32 -j ACCEPT\n",
            "-A CNI-FORWARD -s 10.1.0.5/32 -j ACCEPT\n-A CNI-FORWARD -s 10.1.0.5/32 -j ACCEPT\n",
        );
        assert_eq!(
            del_batch(&Saved::parse(&doubled), &[ip("10.1.0.5"), ip("10.1.0.9")]),
            "*filter\n-D CNI-FORWARD -d 10.1.0.5/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
             -D CNI-FORWARD -s 10.1.0.5/32 -j ACCEPT\n-D CNI-FORWARD -s 10.1.0.5/32 -j ACCEPT\nCOMMIT\n"
        );
        assert_eq!(del_batch(&Saved::parse(REFERENCE), &[ip("10.1.0.9")]), "");
        assert_eq!(address_rules(ip("fd10::5"))[1], "CNI-FORWARD -s fd10::5/128 -j ACCEPT");
    }
}
