//! Applying nftables batches: one JSON batch in, errors out in full.
//!
//! Every change a plugin makes in one invocation goes to the kernel as one batch, which nftables
//! applies as one transaction: all of it or none of it. A batch goes straight over netlink when
//! [`crate::native`] can encode it (every batch of the plugins' own: base tables, chains, sets and
//! maps, rules, elements), else through `nft -j -f -`, whose own error text is captured and
//! carried into the CNI error; without `nft` such a batch fails saying what needed it.
//! `CNI_RS_NFT=binary` sends everything through `nft`.
//!
//! Listings come from nf_tables dumps in the JSON shape `nft -j` prints, and are read as plain JSON
//! values; only our own tables (and the reference's chains, by comment and handle) are listed.

use crate::native::{Native, NativeError, Unsupported};
use anyhow::Context;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A failed `nft` run, with what `nft` said.
#[derive(Debug)]
pub struct NftError {
    pub action: String,
    pub stderr: String,
}

impl std::fmt::Display for NftError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "nft {} failed: {}", self.action, self.stderr.trim())
    }
}

impl std::error::Error for NftError {}

impl NftError {
    /// The object named does not exist (nft: "No such file or directory").
    pub fn is_not_found(&self) -> bool {
        self.stderr.contains("No such file or directory")
    }
}

/// An nfnetlink socket for batches and listings, and the `nft` program where there is one: only
/// for what the native encoder cannot do (rules with rarer matches, from portmap's conditions),
/// or for everything when `CNI_RS_NFT=binary`.
pub struct Nft {
    /// Looked for only when needed: a batch or listing over netlink needs no program.
    binary: std::sync::OnceLock<Option<PathBuf>>,
    native: std::sync::Mutex<NativeState>,
}

enum NativeState {
    Unopened,
    Open(Native),
    Off,
}

impl Clone for Nft {
    fn clone(&self) -> Nft {
        Nft { binary: self.binary.clone(), native: std::sync::Mutex::new(NativeState::Unopened) }
    }
}

impl std::fmt::Debug for Nft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nft").field("binary", &self.binary).finish_non_exhaustive()
    }
}

const NOT_FOUND: &str = "the nft program (package nftables) was not found in PATH, /usr/sbin or /sbin";

/// Whether `CNI_RS_NFT=binary` sends everything through `nft`.
fn binary_forced() -> bool {
    std::env::var("CNI_RS_NFT").is_ok_and(|v| v == "binary")
}

impl Nft {
    /// The nf_tables interface: netlink, and `nft` from `PATH`, /usr/sbin or /sbin when it is
    /// installed (runtimes do not always pass a PATH with the sbin directories). Hosts without
    /// `nft` (Talos, Bottlerocket, minimal images) get everything the plugins do over netlink; it
    /// fails only when `CNI_RS_NFT=binary` asks for a program that is not there.
    pub fn locate() -> anyhow::Result<Nft> {
        let nft = Nft { binary: std::sync::OnceLock::new(), native: std::sync::Mutex::new(NativeState::Unopened) };
        anyhow::ensure!(!binary_forced() || nft.found().is_some(), "CNI_RS_NFT=binary: {NOT_FOUND}");
        Ok(nft)
    }

    /// The program, searched for on first use.
    fn found(&self) -> Option<&Path> {
        self.binary
            .get_or_init(|| {
                let from_path = std::env::var_os("PATH")
                    .map(|p| std::env::split_paths(&p).map(|d| d.join("nft")).collect::<Vec<_>>())
                    .unwrap_or_default();
                from_path
                    .into_iter()
                    .chain([PathBuf::from("/usr/sbin/nft"), PathBuf::from("/sbin/nft")])
                    .find(|p| p.is_file())
            })
            .as_deref()
    }

    /// The `nft` program's path (`nft` when none was found).
    pub fn binary(&self) -> &Path {
        self.found().unwrap_or(Path::new("nft"))
    }

    /// Applies `batch` (an nftables JSON document) as one transaction.
    pub fn apply(&self, batch: &Value) -> anyhow::Result<()> {
        let json = serde_json::to_vec(batch).context("encoding the nftables batch")?;
        // No value of ours may hold a NUL: netlink names would be cut at it, and nft 1.0.6 reading
        // JSON from a pipe exits 0 without applying anything. Such a batch is a bug to report.
        anyhow::ensure!(
            !json.windows(6).any(|w| w == br"\u0000"),
            "refusing an nftables batch with a NUL character in a value"
        );
        let why = match self.with_native(|native| native.apply(batch, crate::schema())) {
            Ok(()) => return Ok(()),
            Err(e @ NativeError::Kernel { .. }) => {
                return Err(NftError { action: "apply".to_string(), stderr: e.to_string() }.into());
            }
            Err(e) => e,
        };
        self.need_binary(&why)?;
        self.run(&["-j", "-f", "-"], Some(&json), "apply").map(|_| ())
    }

    /// Runs `f` with the open socket; `Unsupported` when nft is forced or netlink is unusable.
    fn with_native<T>(&self, f: impl FnOnce(&mut Native) -> Result<T, NativeError>) -> Result<T, NativeError> {
        let unusable = |what: &str| NativeError::Unsupported(Unsupported(what.to_string()));
        let Ok(mut state) = self.native.lock() else { return Err(unusable("a poisoned lock")) };
        if matches!(*state, NativeState::Unopened) {
            *state = match (!binary_forced()).then(Native::open) {
                Some(Ok(native)) => NativeState::Open(native),
                Some(Err(_)) => NativeState::Off,
                None => NativeState::Off,
            };
        }
        let NativeState::Open(native) = &mut *state else {
            return Err(unusable(if binary_forced() { "CNI_RS_NFT=binary" } else { "no nfnetlink socket" }));
        };
        match f(native) {
            Err(NativeError::Io(e)) => {
                // A broken socket is not reused; the program (if any) takes over.
                *state = NativeState::Off;
                Err(NativeError::Io(e))
            }
            other => other,
        }
    }

    /// Closes the nfnetlink socket without this process, or the next plugin, waiting for what the
    /// kernel does then.
    ///
    /// A transaction that deleted anything leaves destruction work that waits out an RCU grace
    /// period (13 ms on two busy CPUs, HZ=250). Releasing an nfnetlink socket (and a process's
    /// exit releases it all the same) flushes that work *holding the namespace's nf_tables commit
    /// mutex*, which every transaction and every network device's removal in the namespace take:
    /// so portmap's DEL made the runtime wait for it, and whatever came next (bridge's
    /// transaction, the veth's removal) waited behind it. Here a forked child, holding nothing
    /// but a copy of the socket, waits for a grace period without any lock (`membarrier`'s global
    /// barrier is `synchronize_rcu`), by then the work is done, then releases the socket and
    /// exits; this process returns at once. The child only makes async-signal-safe system calls,
    /// so forking a process with other threads is sound. If fork fails the socket is closed
    /// here, and without the barrier (nohz_full kernels) the child just closes it: the wait is
    /// paid as before. Any nfnetlink socket this process closes afterwards waits all the same,
    /// so this comes last, in a process about to exit: the child is not waited for, it is reaped
    /// as an orphan (by init, or by a runtime that made itself subreaper, as CRI-O and
    /// containerd with `subreaper = true` do, each with a reaper).
    pub fn close_without_waiting(self) {
        let fd = match self.native.lock().as_deref() {
            Ok(NativeState::Open(native)) => native.raw_fd(),
            _ => return,
        };
        // SAFETY: the child runs only async-signal-safe system calls on integers and exits.
        if let Ok(nix::unistd::ForkResult::Child) = unsafe { nix::unistd::fork() } {
            // SAFETY: closing descriptors of this (child) process and exiting without unwinding.
            unsafe {
                if fd > 0 {
                    nix::libc::syscall(nix::libc::SYS_close_range, 0u32, (fd - 1) as u32, 0u32);
                }
                nix::libc::syscall(nix::libc::SYS_close_range, (fd + 1) as u32, u32::MAX, 0u32);
                const MEMBARRIER_CMD_GLOBAL: nix::libc::c_int = 1;
                nix::libc::syscall(nix::libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0u32, 0);
                nix::libc::close(fd);
                nix::libc::_exit(0);
            }
        }
        // The parent's copy goes with `self`; the child's keeps the socket alive until it exits.
    }

    /// Whether batches and listings go over netlink (the socket is opened now if need be).
    fn netlink_usable(&self) -> bool {
        self.with_native(|_| Ok(())).is_ok()
    }

    /// Fails with what needed the program when there is none.
    fn need_binary(&self, why: &NativeError) -> anyhow::Result<()> {
        if self.found().is_some() {
            return Ok(());
        }
        let what = match why {
            NativeError::Unsupported(u) => u.0.clone(),
            other => other.to_string(),
        };
        anyhow::bail!("the nft program is needed for {what}, and {NOT_FOUND}")
    }

    /// `nft -j list <what...>` (over netlink for `tables`, `table FAMILY NAME` and
    /// `chain FAMILY TABLE NAME`), or `None` when the object does not exist.
    pub fn list(&self, what: &[&str]) -> anyhow::Result<Option<Value>> {
        let why = match self.with_native(|native| native.list(what)) {
            Ok(listing) => return Ok(listing),
            Err(e @ NativeError::Kernel { .. }) => {
                return Err(NftError { action: format!("list {}", what.join(" ")), stderr: e.to_string() }.into());
            }
            Err(e) => e,
        };
        self.need_binary(&why)?;
        let mut args = vec!["-j", "list"];
        args.extend_from_slice(what);
        match self.run(&args, None, &format!("list {}", what.join(" "))) {
            Ok(out) => Ok(Some(serde_json::from_slice(&out).context("parsing nft's JSON listing")?)),
            Err(e) if e.downcast_ref::<NftError>().is_some_and(NftError::is_not_found) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn run(&self, args: &[&str], stdin: Option<&[u8]>, action: &str) -> anyhow::Result<Vec<u8>> {
        let mut child = Command::new(self.binary())
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", self.binary().display()))?;
        if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A batch is a few kilobytes, well within a pipe's buffer; nft reads it all before
            // writing anything, so writing first cannot deadlock.
            pipe.write_all(data).context("writing the batch to nft")?;
        }
        let out = child.wait_with_output().context("waiting for nft")?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            let stderr = if stderr.trim().is_empty() { format!("exit status {}", out.status) } else { stderr };
            return Err(NftError { action: action.to_string(), stderr }.into());
        }
        Ok(out.stdout)
    }
}

/// A socket for existence probes (one GET each): the plugin's [`Nft`] when netlink is its
/// transport, else one of its own. Sharing matters on DEL: every nfnetlink socket closed after a
/// deletion in the namespace (another plugin's, a moment ago) waits out an RCU grace period, so a
/// plugin asks everything on the one socket it keeps open to the end.
pub(crate) enum Getter<'a> {
    Shared(&'a Nft),
    Own(Native),
}

impl Getter<'_> {
    pub(crate) fn open(nft: Option<&Nft>) -> std::io::Result<Getter<'_>> {
        match nft {
            Some(nft) if nft.netlink_usable() => Ok(Getter::Shared(nft)),
            _ => Native::open().map(Getter::Own),
        }
    }

    fn ask(&mut self, f: impl FnOnce(&mut Native) -> Result<bool, NativeError>) -> std::io::Result<bool> {
        let answer = match self {
            Getter::Shared(nft) => nft.with_native(f),
            Getter::Own(native) => f(native),
        };
        answer.map_err(|e| match e {
            NativeError::Io(e) => e,
            NativeError::Kernel { errno, .. } => std::io::Error::from_raw_os_error(errno),
            other => std::io::Error::other(other.to_string()),
        })
    }

    pub(crate) fn table(&mut self, family: u8, table: &str) -> std::io::Result<bool> {
        self.ask(|n| n.has_table(family, table))
    }

    pub(crate) fn chain(&mut self, family: u8, table: &str, chain: &str) -> std::io::Result<bool> {
        self.ask(|n| n.has_chain(family, table, chain))
    }
}

/// The objects of a listing, as (kind, object) pairs: `("chain", {...})`, `("rule", {...})`.
pub fn objects(listing: &Value) -> impl Iterator<Item = (&str, &Value)> {
    listing["nftables"].as_array().into_iter().flatten().filter_map(|o| {
        let (kind, body) = o.as_object()?.iter().next()?;
        Some((kind.as_str(), body))
    })
}

/// Names of the chains in a listing.
pub fn chain_names(listing: &Value) -> Vec<String> {
    objects(listing)
        .filter(|(kind, _)| *kind == "chain")
        .filter_map(|(_, c)| c["name"].as_str().map(str::to_string))
        .collect()
}

/// The rules of one chain in a listing.
pub fn rules_of<'a>(listing: &'a Value, chain: &'a str) -> impl Iterator<Item = &'a Value> {
    objects(listing).filter(move |(kind, r)| *kind == "rule" && r["chain"] == chain).map(|(_, r)| r)
}

/// The elements of a map in a listing, as (key, goto/jump target) pairs; the key is the element's
/// value as nft prints it (a string for addresses and interface names).
pub fn verdict_map_elements(listing: &Value, map: &str) -> Vec<(Value, Option<String>)> {
    let Some((_, body)) = objects(listing).find(|(kind, m)| *kind == "map" && m["name"] == map) else {
        return Vec::new();
    };
    body["elem"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|pair| {
            let pair = pair.as_array()?;
            let key = pair.first()?;
            // An element with a comment is {"elem": {"val": KEY, "comment": ...}}.
            let key = key.get("elem").and_then(|e| e.get("val")).unwrap_or(key).clone();
            let verdict = pair.get(1)?;
            let target = ["goto", "jump"]
                .iter()
                .find_map(|v| verdict.get(*v).and_then(|t| t["target"].as_str()))
                .map(str::to_string);
            Some((key, target))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn listing() -> Value {
        json!({"nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "inet", "name": "cni_bridge"}},
            {"map": {"family": "inet", "name": "masq_v4", "table": "cni_bridge", "type": "ipv4_addr", "map": "verdict",
                     "elem": [[{"elem": {"val": "10.1.0.5", "comment": "x"}}, {"goto": {"target": "masq-a-b"}}],
                              ["10.1.0.6", {"jump": {"target": "masq-c-d"}}]]}},
            {"chain": {"family": "inet", "table": "cni_bridge", "name": "masq-a-b"}},
            {"rule": {"family": "inet", "table": "cni_bridge", "chain": "masq-a-b", "expr": []}},
            {"rule": {"family": "inet", "table": "cni_bridge", "chain": "other", "expr": []}}
        ]})
    }

    #[test]
    fn reads_listings() {
        let l = listing();
        assert_eq!(chain_names(&l), ["masq-a-b"]);
        assert_eq!(rules_of(&l, "masq-a-b").count(), 1);
        assert_eq!(
            verdict_map_elements(&l, "masq_v4"),
            vec![(json!("10.1.0.5"), Some("masq-a-b".to_string())), (json!("10.1.0.6"), Some("masq-c-d".to_string()))]
        );
        assert!(verdict_map_elements(&l, "nope").is_empty());
    }

    #[test]
    fn a_batch_with_a_nul_is_refused_before_anything_runs() {
        let nft = Nft {
            binary: Some(PathBuf::from("/nonexistent/nft")).into(),
            native: std::sync::Mutex::new(NativeState::Off),
        };
        let batch = json!({"nftables": [{"add": {"table": {"family": "inet", "name": "a\u{0}b"}}}]});
        let err = nft.apply(&batch).unwrap_err().to_string();
        assert!(err.contains("NUL"), "{err}");
    }

    #[test]
    fn without_the_program_the_error_names_what_needed_it() {
        let nft = Nft { binary: std::sync::OnceLock::from(None), native: std::sync::Mutex::new(NativeState::Off) };
        let batch = json!({"nftables": [{"add": {"table": {"family": "inet", "name": "t"}}}]});
        let err = nft.apply(&batch).unwrap_err().to_string();
        assert!(err.contains("the nft program is needed for no nfnetlink socket"), "{err}");
        let err = nft.list(&["ruleset"]).unwrap_err().to_string();
        assert!(err.contains("needed for") && err.contains("not found"), "{err}");
    }

    #[test]
    fn errors_carry_nfts_words() {
        let e = NftError {
            action: "apply".into(),
            stderr: "Error: Could not process rule: No such file or directory\n".into(),
        };
        assert!(e.is_not_found());
        assert_eq!(e.to_string(), "nft apply failed: Error: Could not process rule: No such file or directory");
    }
}
