//! What every plugin-owned nftables table shares: fixed base objects that are created once and
//! repaired when someone removed or edited them, and per-attachment chains reached through verdict
//! maps, removed together with the map elements that point at them.
//!
//! ## Keys several attachments hold
//!
//! A map key is something attachments can share: a container address (the same subnet on two
//! networks), a host port (two containers publishing it). Each attachment owns its chain; a key
//! held by one attachment is an element pointing at that chain. When a second attachment claims a
//! key, the element is turned into a *key chain* that jumps to every holder's chain, in the order
//! they claimed it:
//!
//! ```text
//!   map hostport_v4   tcp . 8080 : jump key-<hash of map and key>
//!   chain key-<hash>  jump pm-<net>-<A>   (comment: A's identity)
//!                     jump pm-<net>-<B>   (comment: B's identity)
//! ```
//!
//! A holder's chain either ends the lookup (a DNAT, a masquerade) or returns, and the next holder
//! is tried: for a port the first holder wins (as with the reference's rule order), for a
//! masquerade entry every holder's rule applies. A DEL removes only its own jump (by handle); the
//! next holder takes over at once, and the last one removes the element and the key chain. So no
//! ADD fails because a stale or foreign element holds the key, and no DEL touches another
//! attachment's entries. The key chain is named from the key alone, so concurrent claims meet in
//! the same chain; every change is one transaction that re-asserts the element it found, so a
//! concurrent change makes it fail (and it is retried from a fresh listing), never half-apply.

use crate::identity::hash_hex;
use crate::json::{self, Batch, commented, elements, jump};
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

/// Deletions of the chains selected by `doomed`, of the map elements that point at them, and of
/// their jumps in key chains; a key chain left with no other holder goes with its elements.
pub fn remove_chains(
    listing: &Value,
    family: &str,
    table: &str,
    maps: &[&str],
    doomed: &dyn Fn(&str) -> bool,
) -> Batch {
    let mut b = Batch::new();
    // Key chains whose every jump goes (or that hold none: a leftover of two last holders leaving
    // at once) are removed whole.
    let mut emptied = BTreeSet::new();
    for chain in nft::chain_names(listing).into_iter().filter(|c| is_key_chain(c)) {
        let rules: Vec<&Value> = nft::rules_of(listing, &chain).collect();
        let (going, staying): (Vec<&Value>, Vec<&Value>) =
            rules.into_iter().partition(|r| jump_target(r).is_some_and(doomed));
        for rule in going {
            b.delete(rule_by_handle(family, table, &chain, rule));
        }
        if staying.is_empty() {
            emptied.insert(chain);
        }
    }
    let gone = |target: &str| doomed(target) || emptied.contains(target);
    for map in maps {
        for (key, target) in nft::verdict_map_elements(listing, map) {
            if target.as_deref().is_some_and(gone) {
                b.delete(elements(family, table, map, vec![key]));
            }
        }
    }
    // Not flushed: a holder that joined since the listing keeps the chain (the delete then fails).
    for chain in &emptied {
        b.delete(json::chain(family, table, chain));
    }
    for chain in nft::chain_names(listing).into_iter().filter(|c| doomed(c)) {
        b.flush(json::chain(family, table, &chain));
        b.delete(json::chain(family, table, &chain));
    }
    b
}

const KEY_CHAIN_PREFIX: &str = "key-";

/// The chain that holds `map`'s `key` while several attachments claim it.
pub fn key_chain(map: &str, key: &Value) -> String {
    format!("{KEY_CHAIN_PREFIX}{}", hash_hex(&format!("{map} {key}"), 16))
}

pub fn is_key_chain(name: &str) -> bool {
    name.starts_with(KEY_CHAIN_PREFIX)
}

/// The chain a rule jumps to, if it is a holder's jump in a key chain.
fn jump_target(rule: &Value) -> Option<&str> {
    rule["expr"].as_array()?.iter().find_map(|e| e.get("jump")?["target"].as_str())
}

fn rule_by_handle(family: &str, table: &str, chain: &str, rule: &Value) -> Value {
    json!({"rule": {"family": family, "table": table, "chain": chain, "handle": rule["handle"].clone()}})
}

/// One attachment's hold on one map key.
pub struct Claim<'a> {
    pub map: &'a str,
    pub key: Value,
    /// The attachment's chain, and how the map's elements reach chains (`jump` or `goto`).
    pub chain: &'a str,
    pub verb: &'a str,
    /// The attachment's identity comment.
    pub comment: &'a str,
}

impl Claim<'_> {
    fn verdict(&self, target: &str) -> Value {
        json!({ self.verb: {"target": target} })
    }

    /// The element as the fast path adds it: the key straight to the attachment's chain.
    pub fn element(&self) -> Value {
        json!([commented(self.key.clone(), self.comment), self.verdict(self.chain)])
    }

    /// Who holds the key now, from a listing: its element's target and, for a key chain, the
    /// holders' chains in order.
    pub fn holders(&self, listing: &Value) -> Holders {
        let Some(target) = element_target(listing, self.map, &self.key) else { return Holders::None };
        if !is_key_chain(&target) {
            return Holders::One(target);
        }
        let chains = nft::rules_of(listing, &target).filter_map(jump_target).map(str::to_string).collect();
        Holders::Shared { key_chain: target, chains }
    }

    /// What makes this attachment a holder of the key, given a listing of the table; `None` when
    /// it is one already. Logs when another attachment holds the key first.
    pub fn take(&self, family: &str, table: &str, listing: &Value) -> Option<Batch> {
        let mut b = Batch::new();
        let key_chain = key_chain(self.map, &self.key);
        let holder = |b: &mut Batch, chain: &str, comment: &str| {
            b.add(json::rule(family, table, &key_chain, vec![jump(chain)], Some(comment)));
        };
        match self.holders(listing) {
            Holders::None => b.add(elements(family, table, self.map, vec![self.element()])),
            Holders::One(chain) if chain == self.chain => return None,
            Holders::Shared { chains, .. } if chains.iter().any(|c| c == self.chain) => return None,
            Holders::Shared { key_chain: existing, chains } => {
                eprintln!(
                    "{table}: {} {} is also held by {}; {} comes after them",
                    self.map,
                    self.key,
                    chains.join(", "),
                    self.chain
                );
                // The element must still point at the key chain when the rule goes in.
                b.add(elements(family, table, self.map, vec![json!([self.key.clone(), self.verdict(&existing)])]));
                holder(&mut b, self.chain, self.comment);
            }
            Holders::One(other) => {
                eprintln!("{table}: {} {} is held by {other}; {} comes after it", self.map, self.key, self.chain);
                let other_comment = element_comment(listing, self.map, &self.key).unwrap_or_default();
                b.add(json::chain(family, table, &key_chain));
                holder(&mut b, &other, &other_comment);
                holder(&mut b, self.chain, self.comment);
                // Re-adding the element as found fails (EEXIST) if it changed since the listing.
                b.add(elements(family, table, self.map, vec![json!([self.key.clone(), self.verdict(&other)])]));
                b.delete(elements(family, table, self.map, vec![self.key.clone()]));
                let shared = json!([commented(self.key.clone(), "shared key"), self.verdict(&key_chain)]);
                b.add(elements(family, table, self.map, vec![shared]));
            }
        }
        Some(b)
    }

    /// Whether the attachment holds the key (for CHECK).
    pub fn held(&self, listing: &Value) -> bool {
        match self.holders(listing) {
            Holders::One(chain) => chain == self.chain,
            Holders::Shared { chains, .. } => chains.iter().any(|c| c == self.chain),
            Holders::None => false,
        }
    }
}

/// Who holds a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Holders {
    None,
    One(String),
    Shared { key_chain: String, chains: Vec<String> },
}

fn element_target(listing: &Value, map: &str, key: &Value) -> Option<String> {
    nft::verdict_map_elements(listing, map).into_iter().find(|(k, _)| k == key).and_then(|(_, t)| t)
}

fn element_comment(listing: &Value, map: &str, key: &Value) -> Option<String> {
    let (_, body) = nft::objects(listing).find(|(kind, m)| *kind == "map" && m["name"] == map)?;
    body["elem"].as_array()?.iter().find_map(|pair| {
        let elem = pair.as_array()?.first()?.get("elem")?;
        (&elem["val"] == key).then(|| elem["comment"].as_str().map(str::to_string))?
    })
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

/// Whether a failed transaction planned from a listing may have met a concurrent change: something
/// it asserted is gone (ENOENT), was taken (EEXIST) or gained a holder (EBUSY). A fresh listing can
/// then succeed.
pub fn raced(e: &anyhow::Error) -> bool {
    let text = format!("{e:#}");
    already_gone(e) || text.contains("File exists") || text.contains("resource busy")
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
            Ok(()) => return sweep_key_chains(nft, family, table, maps, &listing),
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
    sweep_key_chains(nft, family, table, maps, &listing)
}

/// After jumps left key chains: removes the key chains that no holder is left in. Two last
/// holders leaving at once each see the other in their listing and leave the chain; whichever
/// commits last finds it empty here. "Already gone" (the other one swept it) and a holder that
/// joined since (the chain is busy again) are both fine.
fn sweep_key_chains(nft: &crate::Nft, family: &str, table: &str, maps: &[&str], before: &Value) -> anyhow::Result<()> {
    if !nft::chain_names(before).iter().any(|c| is_key_chain(c)) {
        return Ok(());
    }
    let Some(listing) = nft.list(&["table", family, table])? else { return Ok(()) };
    let sweep = remove_chains(&listing, family, table, maps, &|_| false);
    if sweep.is_empty() {
        return Ok(());
    }
    match nft.apply(&sweep.to_json()) {
        Err(e) if !raced(&e) => Err(e.context("removing key chains no holder is left in")),
        _ => Ok(()),
    }
}
