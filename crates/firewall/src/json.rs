//! Building nftables JSON (libnftables-json(5)) for `nft -j -f -`.
//!
//! Built with serde_json rather than the `nftables` crate's types: those (0.6.3) cannot declare a
//! verdict map, which the per-attachment dispatch here relies on. Each function returns one JSON
//! object exactly as nft reads it, so golden tests compare what is sent to the kernel.

use ipnetwork::IpNetwork;
use serde_json::{Value, json};

/// One transaction's commands.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch(Vec<Value>);

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    fn push(&mut self, verb: &str, object: Value) {
        self.0.push(json!({ verb: object }));
    }

    /// Adds an object; adding one that exists is not an error (except a map element with other data).
    pub fn add(&mut self, object: Value) {
        self.push("add", object);
    }

    pub fn delete(&mut self, object: Value) {
        self.push("delete", object);
    }

    pub fn flush(&mut self, object: Value) {
        self.push("flush", object);
    }

    pub fn extend(&mut self, other: Batch) {
        self.0.extend(other.0);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn to_json(&self) -> Value {
        json!({ "nftables": self.0 })
    }
}

pub fn table(family: &str, name: &str) -> Value {
    json!({"table": {"family": family, "name": name}})
}

pub fn chain(family: &str, table: &str, name: &str) -> Value {
    json!({"chain": {"family": family, "table": table, "name": name}})
}

/// A chain attached to a netfilter hook.
pub fn base_chain(family: &str, table: &str, name: &str, kind: &str, hook: &str, prio: i32) -> Value {
    json!({"chain": {"family": family, "table": table, "name": name,
                     "type": kind, "hook": hook, "prio": prio, "policy": "accept"}})
}

/// A map from `key_type` to verdicts.
pub fn verdict_map(family: &str, table: &str, name: &str, key_type: &str) -> Value {
    json!({"map": {"family": family, "table": table, "name": name, "type": key_type, "map": "verdict"}})
}

/// A map to verdicts whose key type is given as JSON (an array for concatenations).
pub fn typed_verdict_map(family: &str, table: &str, name: &str, key_type: Value) -> Value {
    json!({"map": {"family": family, "table": table, "name": name, "type": key_type, "map": "verdict"}})
}

/// A set with interval keys (prefixes, ranges), of a type given as JSON.
pub fn interval_set(family: &str, table: &str, name: &str, key_type: Value) -> Value {
    json!({"set": {"family": family, "table": table, "name": name, "type": key_type, "flags": ["interval"]}})
}

pub fn set(family: &str, table: &str, name: &str, key_type: &str) -> Value {
    json!({"set": {"family": family, "table": table, "name": name, "type": key_type}})
}

pub fn rule(family: &str, table: &str, chain: &str, expr: Vec<Value>, comment: Option<&str>) -> Value {
    let mut rule = json!({"family": family, "table": table, "chain": chain, "expr": expr});
    if let Some(c) = comment {
        rule["comment"] = json!(c);
    }
    json!({ "rule": rule })
}

/// Elements of a set or map (`name`); each element is a key, or a `[key, data]` pair for maps.
pub fn elements(family: &str, table: &str, name: &str, elem: Vec<Value>) -> Value {
    json!({"element": {"family": family, "table": table, "name": name, "elem": elem}})
}

/// A key with a comment, for sets and maps.
pub fn commented(key: Value, comment: &str) -> Value {
    json!({"elem": {"val": key, "comment": comment}})
}

pub fn payload(protocol: &str, field: &str) -> Value {
    json!({"payload": {"protocol": protocol, "field": field}})
}

pub fn meta(key: &str) -> Value {
    json!({"meta": {"key": key}})
}

pub fn ct(key: &str) -> Value {
    json!({"ct": {"key": key}})
}

pub fn prefix(net: IpNetwork) -> Value {
    json!({"prefix": {"addr": net.network().to_string(), "len": net.prefix()}})
}

pub fn concat(parts: Vec<Value>) -> Value {
    json!({ "concat": parts })
}

/// `left <op> right`; `op` is `==`, `!=`, `in`...
pub fn matches(op: &str, left: Value, right: Value) -> Value {
    json!({"match": {"op": op, "left": left, "right": right}})
}

/// `key vmap @map`.
pub fn vmap(key: Value, map: &str) -> Value {
    json!({"vmap": {"key": key, "data": format!("@{map}")}})
}

/// `@name`: a reference to a named set or map.
pub fn set_ref(name: &str) -> Value {
    json!(format!("@{name}"))
}

pub fn goto(target: &str) -> Value {
    json!({"goto": {"target": target}})
}

pub fn jump(target: &str) -> Value {
    json!({"jump": {"target": target}})
}

/// A terminal verdict or statement without arguments: `accept`, `drop`, `return`, `masquerade`.
pub fn verdict(name: &str) -> Value {
    json!({ name: null })
}

/// The family keyword of an address's header: `ip` or `ip6`.
pub fn ip_proto(net: &IpNetwork) -> &'static str {
    if net.is_ipv4() { "ip" } else { "ip6" }
}
