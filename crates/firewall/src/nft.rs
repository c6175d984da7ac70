//! Applying nftables batches: one JSON batch in, errors out in full.
//!
//! Every change a plugin makes in one invocation goes to the kernel as one batch, which nftables
//! applies as one transaction: all of it or none of it. A batch goes straight over netlink when
//! [`crate::native`] can encode it (the ADD and DEL fast paths), else through `nft -j -f -`, whose
//! own error text is captured and carried into the CNI error. `CNI_RS_NFT=binary` sends everything
//! through `nft`.
//!
//! Listings are read as plain JSON values, and only our own tables are ever listed: a typed
//! round-trip of rules written by others breaks whenever `nft` learns new syntax.

use crate::native::{Native, NativeError};
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

/// The `nft` program, and an nfnetlink socket for the batches that need no program.
pub struct Nft {
    binary: PathBuf,
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

impl Nft {
    /// Finds `nft` in `PATH`, or in /usr/sbin or /sbin (runtimes do not always pass a PATH with
    /// the sbin directories).
    pub fn locate() -> anyhow::Result<Nft> {
        let from_path = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join("nft")).collect::<Vec<_>>())
            .unwrap_or_default();
        from_path
            .into_iter()
            .chain([PathBuf::from("/usr/sbin/nft"), PathBuf::from("/sbin/nft")])
            .find(|p| p.is_file())
            .map(|binary| Nft { binary, native: std::sync::Mutex::new(NativeState::Unopened) })
            .context("the nft program (package nftables) was not found in PATH, /usr/sbin or /sbin")
    }

    pub fn binary(&self) -> &Path {
        &self.binary
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
        if let Some(done) = self.apply_native(batch) {
            return done;
        }
        self.run(&["-j", "-f", "-"], Some(&json), "apply").map(|_| ())
    }

    /// The batch sent over netlink, or `None` when it has to go through `nft`.
    fn apply_native(&self, batch: &Value) -> Option<anyhow::Result<()>> {
        let mut state = self.native.lock().ok()?;
        if matches!(*state, NativeState::Unopened) {
            let wanted = std::env::var("CNI_RS_NFT").map_or(true, |v| v != "binary");
            *state = match wanted.then(Native::open) {
                Some(Ok(native)) => NativeState::Open(native),
                _ => NativeState::Off,
            };
        }
        let NativeState::Open(native) = &mut *state else { return None };
        match native.apply(batch, crate::schema()) {
            Ok(()) => Some(Ok(())),
            Err(NativeError::Unsupported(_)) => None,
            Err(NativeError::Io(_)) => {
                *state = NativeState::Off;
                None
            }
            Err(e @ NativeError::Kernel { .. }) => {
                Some(Err(NftError { action: "apply".to_string(), stderr: e.to_string() }.into()))
            }
        }
    }

    /// `nft -j list <what...>`, or `None` when the object does not exist.
    pub fn list(&self, what: &[&str]) -> anyhow::Result<Option<Value>> {
        let mut args = vec!["-j", "list"];
        args.extend_from_slice(what);
        match self.run(&args, None, &format!("list {}", what.join(" "))) {
            Ok(out) => Ok(Some(serde_json::from_slice(&out).context("parsing nft's JSON listing")?)),
            Err(e) if e.downcast_ref::<NftError>().is_some_and(NftError::is_not_found) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn run(&self, args: &[&str], stdin: Option<&[u8]>, action: &str) -> anyhow::Result<Vec<u8>> {
        let mut child = Command::new(&self.binary)
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", self.binary.display()))?;
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
        let nft = Nft { binary: PathBuf::from("/nonexistent/nft"), native: std::sync::Mutex::new(NativeState::Off) };
        let batch = json!({"nftables": [{"add": {"table": {"family": "inet", "name": "a\u{0}b"}}}]});
        let err = nft.apply(&batch).unwrap_err().to_string();
        assert!(err.contains("NUL"), "{err}");
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
