//! What every plugin-owned nftables table shares: fixed base objects that are created once and
//! repaired when someone removed or edited them, and per-attachment chains reached through verdict
//! maps, removed together with the map elements that point at them.

use crate::json::{self, Batch, elements};
use crate::nft;
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// A table's fixed objects: the table, its maps and sets, and its base chains with their rules.
/// Base rules carry `marker` as their comment, so a listing shows whether they are intact.
pub struct BaseTable {
    pub family: &'static str,
    pub name: &'static str,
    pub marker: &'static str,
    /// `{"table": ...}`, `{"map": ...}`, `{"set": ...}`, `{"chain": ...}` objects.
    pub objects: Vec<Value>,
    /// The rules of each chain that has fixed rules (each rule a list of statements).
    pub chains: Vec<(String, Vec<Vec<Value>>)>,
}

impl BaseTable {
    fn rules_intact(&self, listing: Option<&Value>, chain: &str, expected: usize) -> bool {
        let current: Vec<&Value> = listing.map(|l| nft::rules_of(l, chain).collect()).unwrap_or_default();
        current.len() == expected && current.iter().all(|r| r["comment"] == self.marker)
    }

    /// The commands that bring the table to its fixed shape, given a listing of it (`None`: it does
    /// not exist). Missing objects are added; a chain whose rules are not the expected ones is
    /// rewritten as add chain, flush chain, add rules in one transaction, so concurrent repairs
    /// (many ADDs on a fresh host) are serialized by the kernel and leave one copy of the rules.
    pub fn repair(&self, listing: Option<&Value>) -> Batch {
        let mut b = Batch::new();
        let existing: BTreeSet<(String, String)> = listing
            .map(|l| {
                nft::objects(l)
                    .filter_map(|(kind, o)| Some((kind.to_string(), o["name"].as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let rewrite: Vec<&(String, Vec<Vec<Value>>)> =
            self.chains.iter().filter(|(chain, rules)| !self.rules_intact(listing, chain, rules.len())).collect();
        for object in &self.objects {
            let (kind, body) = object.as_object().and_then(|o| o.iter().next()).expect("one object");
            let name = body["name"].as_str().unwrap_or_default();
            let rewritten = kind == "chain" && rewrite.iter().any(|(c, _)| *c == name);
            if rewritten || !existing.contains(&(kind.clone(), name.to_string())) {
                b.add(object.clone());
            }
            if rewritten {
                b.flush(json::chain(self.family, self.name, name));
            }
        }
        for (chain, rules) in rewrite {
            for expr in rules {
                b.add(json::rule(self.family, self.name, chain, expr.clone(), Some(self.marker)));
            }
        }
        b
    }

    /// Fails unless `chain`'s fixed rules are all there (for CHECK).
    pub fn check_intact(&self, listing: &Value, chain: &str) -> anyhow::Result<()> {
        let expected = self.chains.iter().find(|(c, _)| *c == chain).map_or(0, |(_, r)| r.len());
        anyhow::ensure!(
            self.rules_intact(Some(listing), chain, expected),
            "base chain {chain} of table {} {} is missing rules (GC repairs it)",
            self.family,
            self.name
        );
        Ok(())
    }
}

/// Deletions of the elements of `maps` whose key is one of `keys` but which point at another
/// chain than `ours`: a stale entry of another attachment that ours replaces.
pub fn stale_elements(listing: &Value, family: &str, table: &str, maps: &[&str], keys: &[Value], ours: &str) -> Batch {
    let mut b = Batch::new();
    for map in maps {
        for (key, target) in nft::verdict_map_elements(listing, map) {
            if keys.contains(&key) && target.as_deref() != Some(ours) {
                b.delete(elements(family, table, map, vec![key]));
            }
        }
    }
    b
}

/// Deletions of the chains selected by `doomed` and of the elements of `maps` that point at them.
pub fn remove_chains(
    listing: &Value,
    family: &str,
    table: &str,
    maps: &[&str],
    doomed: &dyn Fn(&str) -> bool,
) -> Batch {
    let mut b = Batch::new();
    for map in maps {
        for (key, target) in nft::verdict_map_elements(listing, map) {
            if target.as_deref().is_some_and(doomed) {
                b.delete(elements(family, table, map, vec![key]));
            }
        }
    }
    for chain in nft::chain_names(listing).into_iter().filter(|c| doomed(c)) {
        b.flush(json::chain(family, table, &chain));
        b.delete(json::chain(family, table, &chain));
    }
    b
}

/// The element `key` added to `map` with our `verdict` (as installed) and deleted again: in one
/// transaction this removes the element if it is ours, does nothing if it is gone, and fails
/// (EEXIST) if it belongs to another chain, which is then left alone.
pub fn remove_if_ours(b: &mut Batch, family: &str, table: &str, map: &str, key: Value, verdict: Value) {
    b.add(elements(family, table, map, vec![json!([key.clone(), verdict])]));
    b.delete(elements(family, table, map, vec![key]));
}

/// Whether a failed apply means something in the batch was already gone (ENOENT): a concurrent
/// DEL or GC removed it between our listing and our transaction.
pub fn already_gone(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<crate::nft::NftError>().is_some_and(crate::nft::NftError::is_not_found))
}

/// How often a GC lists again after a concurrent change made its transaction fail.
const RELIST_ATTEMPTS: usize = 3;

/// Garbage collection of one table that a concurrent DEL cannot break: `plan` turns a fresh
/// listing into the repair and removal batch and the chains it removes; when the transaction
/// fails because something in it is already gone, the table is listed again (a bounded number
/// of times). If it still fails, each doomed chain goes in a transaction of its own, so one
/// attachment whose removal fails cannot keep the others: the result lists what was left.
pub fn collect(
    nft: &crate::Nft,
    family: &str,
    table: &str,
    maps: &[&str],
    repair: &dyn Fn(&Value) -> Batch,
    doomed: &dyn Fn(&str) -> bool,
) -> anyhow::Result<()> {
    for _ in 0..RELIST_ATTEMPTS {
        let Some(listing) = nft.list(&["table", family, table])? else { return Ok(()) };
        let mut batch = repair(&listing);
        batch.extend(remove_chains(&listing, family, table, maps, doomed));
        if crate::fault_enabled("gc-race") {
            // The test of this function: a DEL removes one of the doomed chains right now.
            if let Some(chain) = nft::chain_names(&listing).into_iter().find(|c| doomed(c)) {
                let one = remove_chains(&listing, family, table, maps, &|c| c == chain);
                nft.apply(&one.to_json())?;
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        match nft.apply(&batch.to_json()) {
            Ok(()) => return Ok(()),
            Err(e) if already_gone(&e) => {}
            Err(_) => break,
        }
    }
    // One transaction per attachment chain; "already gone" is success.
    let Some(listing) = nft.list(&["table", family, table])? else { return Ok(()) };
    let mut left = Vec::new();
    let repaired = repair(&listing);
    if !repaired.is_empty()
        && let Err(e) = nft.apply(&repaired.to_json())
    {
        left.push(format!("repairing base chains: {e:#}"));
    }
    for chain in nft::chain_names(&listing).into_iter().filter(|c| doomed(c)) {
        let one = remove_chains(&listing, family, table, maps, &|c| c == chain);
        match nft.apply(&one.to_json()) {
            Ok(()) => {}
            Err(e) if already_gone(&e) => {}
            Err(e) => left.push(format!("{chain}: {e:#}")),
        }
    }
    anyhow::ensure!(left.is_empty(), "left in table {family} {table}: {}", left.join("; "));
    Ok(())
}
