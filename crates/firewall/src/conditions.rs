//! portmap's `conditionsV4` / `conditionsV6` in nftables syntax, turned into JSON match statements.
//!
//! The reference pastes the words into an nft command line. Here they are parsed, so a value can
//! never become another command or rule: each condition is `selector [operator] value`, where the
//! selector is a packet field (`ip saddr`, `tcp dport`), a meta key (`iifname`, `meta mark`) or a
//! conntrack key (`ct state`), and the value a word, a prefix, a range or a `{ set }`. Anything else
//! is refused with the field named.

use cni::Error;
use serde_json::{Value, json};

const META_KEYS: &[&str] = &[
    "iifname", "oifname", "iif", "oif", "mark", "l4proto", "nfproto", "iiftype", "oiftype", "skuid", "skgid",
    "pkttype", "iifgroup", "oifgroup", "protocol", "length", "priority",
];
const CT_KEYS: &[&str] = &["state", "status", "mark", "direction", "zone", "expiration"];
const IP_FIELDS: &[&str] = &["saddr", "daddr", "protocol", "nexthdr", "dscp", "length", "ttl", "hoplimit"];
const PORT_PROTOS: &[&str] = &["tcp", "udp", "sctp", "th"];

/// Whether conditions are written for iptables (the reference's rule: the first word starts with
/// `-` or `!`).
pub fn is_iptables_style(conditions: &[String]) -> bool {
    conditions.first().is_some_and(|w| w.starts_with('-') || w.starts_with('!'))
}

/// Splits the conditions into words; braces and commas stand alone so `{a,b}` and `{ a, b }` read
/// alike. A comma between two words outside braces (`established,related`) stays inside the word.
fn words(conditions: &[String]) -> Vec<String> {
    let text = conditions.join(" ").replace('{', " { ").replace('}', " } ");
    let mut out = Vec::new();
    let mut depth = 0;
    for word in text.split_whitespace() {
        match word {
            "{" => depth += 1,
            "}" => depth -= 1,
            _ => {}
        }
        if depth > 0 && word != "{" {
            out.extend(word.split(',').filter(|p| !p.is_empty()).map(str::to_string));
        } else {
            out.push(word.to_string());
        }
    }
    out
}

/// One value: a prefix, a range, a number, or a word.
fn scalar(word: &str) -> Value {
    let word = word.trim_matches('"');
    if let Some((addr, len)) = word.split_once('/')
        && addr.parse::<std::net::IpAddr>().is_ok()
        && let Ok(len) = len.parse::<u8>()
    {
        return json!({"prefix": {"addr": addr, "len": len}});
    }
    if let Some((lo, hi)) = word.split_once('-')
        && let (Ok(lo), Ok(hi)) = (lo.parse::<u64>(), hi.parse::<u64>())
    {
        return json!({"range": [lo, hi]});
    }
    if let Ok(n) = word.parse::<u64>() {
        return json!(n);
    }
    if let Some(hex) = word.strip_prefix("0x")
        && let Ok(n) = u64::from_str_radix(hex, 16)
    {
        return json!(n);
    }
    json!(word)
}

fn operator(word: &str) -> Option<&'static str> {
    Some(match word {
        "==" | "eq" => "==",
        "!=" | "ne" => "!=",
        "<" | "lt" => "<",
        ">" | "gt" => ">",
        "<=" | "le" => "<=",
        ">=" | "ge" => ">=",
        _ => return None,
    })
}

/// Parses conditions into match statements. `field` names the config key in errors.
pub fn parse(conditions: &[String], field: &str) -> Result<Vec<Value>, Error> {
    let words = words(conditions);
    let unsupported = |at: &str| {
        Error::config(format!(
            "{field}: unsupported condition at {at:?} (expected `selector [op] value`, e.g. `ip saddr 10.0.0.0/8`)"
        ))
    };
    // nft reads a string value starting with `@` as a reference to a named set and one starting
    // with `$` as a variable: conditions compare with literal values only, printable ones.
    if let Some(w) = words.iter().find(|w| w.trim_matches('"').starts_with(['@', '$'])) {
        return Err(Error::config(format!("{field}: {w:?}: named sets and variables are not supported")));
    }
    if let Some(w) = words.iter().find(|w| w.chars().any(char::is_control)) {
        return Err(Error::config(format!("{field}: {w:?} contains a control character")));
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = words[i].as_str();
        let next = words.get(i + 1).map(String::as_str).unwrap_or("");
        let (left, flags) = match w {
            "ip" | "ip6" if IP_FIELDS.contains(&next) => {
                i += 2;
                (json!({"payload": {"protocol": w, "field": next}}), false)
            }
            p if PORT_PROTOS.contains(&p) && (next == "sport" || next == "dport") => {
                i += 2;
                (json!({"payload": {"protocol": p, "field": next}}), false)
            }
            "meta" if META_KEYS.contains(&next) => {
                i += 2;
                (json!({"meta": {"key": next}}), false)
            }
            "ct" if CT_KEYS.contains(&next) => {
                i += 2;
                (json!({"ct": {"key": next}}), next == "state" || next == "status")
            }
            key if META_KEYS.contains(&key) => {
                i += 1;
                (json!({"meta": {"key": key}}), false)
            }
            _ => return Err(unsupported(w)),
        };
        let mut op = if flags { "in" } else { "==" };
        if let Some(explicit) = words.get(i).and_then(|w| operator(w)) {
            op = explicit;
            i += 1;
        }
        let right = match words.get(i).map(String::as_str) {
            None | Some("}") | Some(",") => return Err(unsupported(w)),
            Some("{") => {
                let close = words[i..].iter().position(|w| w == "}").ok_or_else(|| unsupported("{"))?;
                let items: Vec<Value> = words[i + 1..i + close].iter().map(|w| scalar(w)).collect();
                if items.is_empty() {
                    return Err(unsupported("{ }"));
                }
                i += close + 1;
                json!({ "set": items })
            }
            Some(word) if flags && word.contains(',') => {
                i += 1;
                Value::Array(word.split(',').filter(|p| !p.is_empty()).map(scalar).collect())
            }
            Some(word) => {
                i += 1;
                scalar(word)
            }
        };
        // Interface names are at most 15 bytes (IFNAMSIZ); nft would refuse a longer one only when
        // the rule is applied.
        if matches!(left["meta"]["key"].as_str(), Some("iifname" | "oifname")) {
            let names = right.get("set").unwrap_or(&right);
            let names = names.as_array().map_or_else(|| vec![names], |a| a.iter().collect());
            if let Some(long) = names.iter().filter_map(|n| n.as_str()).find(|n| n.len() > 15) {
                return Err(Error::config(format!("{field}: interface name {long:?} is longer than 15 bytes")));
            }
        }
        out.push(json!({"match": {"op": op, "left": left, "right": right}}));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(words: &[&str]) -> Result<Vec<Value>, Error> {
        parse(&words.iter().map(|w| w.to_string()).collect::<Vec<_>>(), "conditionsV4")
    }

    #[test]
    fn reads_common_conditions() {
        assert_eq!(
            p(&["ip", "saddr", "10.0.0.0/8"]).unwrap(),
            vec![json!({"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                                  "right": {"prefix": {"addr": "10.0.0.0", "len": 8}}}})]
        );
        // One string holding several words, as the reference also accepts.
        let two = p(&["ip daddr != 192.168.1.1", "iifname eth0"]).unwrap();
        assert_eq!(two[0]["match"]["op"], "!=");
        assert_eq!(two[1], json!({"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "eth0"}}));
        let set = p(&["ip", "saddr", "{10.0.0.1,", "10.0.0.2 }"]).unwrap();
        assert_eq!(set[0]["match"]["right"], json!({"set": ["10.0.0.1", "10.0.0.2"]}));
        let ct = p(&["ct", "state", "established,related"]).unwrap();
        assert_eq!(
            ct[0]["match"],
            json!({"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]})
        );
        let range = p(&["tcp", "sport", "1024-65535", "meta", "mark", "0x10"]).unwrap();
        assert_eq!(range[0]["match"]["right"], json!({"range": [1024, 65535]}));
        assert_eq!(range[1]["match"]["right"], json!(16));
    }

    #[test]
    fn refuses_what_it_cannot_read_and_anything_like_another_command() {
        for bad in [
            &["accept"][..],
            &["ip", "saddr"],
            &["ip", "saddr", "1.2.3.4;", "flush", "ruleset"],
            &["counter"],
            &["ip", "saddr", "{", "}"],
            &["ip", "nonsense", "1"],
            &["ip", "saddr", "@hostip_v4"],
            &["iifname", "\"$x\""],
            &["ip saddr 1.2.3.4; add rule inet cni_portmap hostports accept"],
            &["iifname", "eth0\nadd", "rule"],
            &["ip saddr { 10.0.0.1 } } accept"],
            &["iifname", "0123456789abcdef"],
            &["iifname", "x\u{0}y"],
            &["oifname", "{", "eth0,", "0123456789abcdef", "}"],
        ] {
            let e = p(bad).unwrap_err();
            assert_eq!(e.code, cni::Code::InvalidConfig, "{bad:?}");
            assert!(e.msg.starts_with("conditionsV4: "), "{}", e.msg);
        }
        // A value is only ever a JSON string: nft sees `1.2.3.4;` as one (invalid) address, never as
        // a separator, so nothing can be injected.
        let v = p(&["ip", "saddr", "1.2.3.4;flush"]).unwrap();
        assert_eq!(v[0]["match"]["right"], "1.2.3.4;flush");
    }

    #[test]
    fn tells_iptables_style_apart() {
        assert!(is_iptables_style(&["-s".into(), "1.2.3.4".into()]));
        assert!(is_iptables_style(&["!".into(), "-d".into(), "1.2.3.4".into()]));
        assert!(!is_iptables_style(&["ip".into(), "saddr".into()]));
        assert!(!is_iptables_style(&[]));
    }
}
