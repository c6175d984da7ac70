//! Rule expressions as the kernel dumps them, turned back into nft's JSON statements: the inverse
//! of [`super::expr`], for the expressions this crate's tables hold (loads, compares, masks,
//! lookups, verdicts, NAT, masquerade, counters, conntrack status, fib).
//!
//! Like nft, a protocol dependency (`meta nfproto ipv4` before `ip daddr`, `meta l4proto tcp`
//! before `tcp dport`) is left out of the statements when the field that needed it follows, and
//! names the protocol of that field. Anything else becomes one [`UNDECODED`] statement naming the
//! expression, so a rule whose matches are not understood still counts, keeps its comment and
//! handle, and never fails a listing.

use super::expr::{ADDRTYPES, CT_STATUS};
use super::msg::{self, k};
use super::value::{Kind, prefix_mask};
use serde_json::{Value, json};
use std::collections::HashMap;

/// The key of the statement that stands for an expression this decoder does not know.
pub const UNDECODED: &str = "unknown";

/// What a register holds.
#[derive(Clone)]
enum Src {
    Meta(u32),
    Payload { base: u32, offset: u32, len: u32 },
    Ct(u32),
    Fib { result: u32, flags: u32 },
    Imm(Vec<u8>),
}

#[derive(Clone)]
struct Loaded {
    src: Src,
    mask: Option<Vec<u8>>,
}

struct Decoder {
    family: u8,
    regs: HashMap<u32, Loaded>,
    /// Registers loaded since the last expression that read them, in load order (a concatenation).
    pending: Vec<u32>,
    out: Vec<Option<Value>>,
    /// The protocol established by the last `meta nfproto` / `meta l4proto` match, and the
    /// statement that established it while no field has used it yet.
    nfproto: Option<u8>,
    nfproto_dep: Option<usize>,
    l4proto: Option<u8>,
    l4proto_dep: Option<usize>,
}

/// The statements of a rule's NFTA_RULE_EXPRESSIONS in a table of `family`.
pub fn rule(family: u8, expressions: &[u8]) -> Vec<Value> {
    let mut d = Decoder {
        family,
        regs: HashMap::new(),
        pending: Vec::new(),
        out: Vec::new(),
        nfproto: None,
        nfproto_dep: None,
        l4proto: None,
        l4proto_dep: None,
    };
    for (_, elem) in msg::parse(expressions) {
        let name = msg::get_str(elem, k::NFTA_EXPR_NAME).unwrap_or_default();
        let data = msg::find(elem, k::NFTA_EXPR_DATA).unwrap_or(&[]);
        if d.expression(&name, data).is_none() {
            d.push(json!({ UNDECODED: {"expr": name} }));
        }
    }
    d.out.into_iter().flatten().collect()
}

fn meta_name(key: u32) -> Option<(&'static str, Option<Kind>)> {
    Some(match key {
        k::NFT_META_MARK => ("mark", Some(Kind::Mark)),
        k::NFT_META_IIFNAME => ("iifname", Some(Kind::IfName)),
        k::NFT_META_OIFNAME => ("oifname", Some(Kind::IfName)),
        k::NFT_META_NFPROTO => ("nfproto", Some(Kind::NfProto)),
        k::NFT_META_L4PROTO => ("l4proto", Some(Kind::Proto)),
        4 => ("iif", None),
        5 => ("oif", None),
        _ => return None,
    })
}

fn verdict(code: i32, chain: Option<String>) -> Option<Value> {
    Some(match code {
        k::NF_ACCEPT => json!({"accept": null}),
        k::NF_DROP => json!({"drop": null}),
        k::NFT_RETURN => json!({"return": null}),
        -1 => json!({"continue": null}),
        k::NFT_JUMP => json!({"jump": {"target": chain?}}),
        k::NFT_GOTO => json!({"goto": {"target": chain?}}),
        _ => return None,
    })
}

/// A verdict in NFTA_DATA_VERDICT form (immediates and map elements).
pub fn verdict_data(data: &[u8]) -> Option<Value> {
    let v = msg::find(data, k::NFTA_DATA_VERDICT)?;
    verdict(msg::get_be32(v, k::NFTA_VERDICT_CODE)? as i32, msg::get_str(v, k::NFTA_VERDICT_CHAIN))
}

impl Decoder {
    fn push(&mut self, statement: Value) -> usize {
        self.out.push(Some(statement));
        self.out.len() - 1
    }

    fn reg(&self, attrs: &[u8], kind: u16) -> Option<(u32, Loaded)> {
        let r = msg::get_be32(attrs, kind)?;
        Some((r, self.regs.get(&r)?.clone()))
    }

    fn load(&mut self, reg: u32, src: Src) {
        self.regs.insert(reg, Loaded { src, mask: None });
        self.pending.push(reg);
    }

    fn expression(&mut self, name: &str, a: &[u8]) -> Option<()> {
        match name {
            "meta" => {
                let dreg = msg::get_be32(a, k::NFTA_META_DREG)?;
                self.load(dreg, Src::Meta(msg::get_be32(a, k::NFTA_META_KEY)?));
            }
            "payload" => {
                let dreg = msg::get_be32(a, k::NFTA_PAYLOAD_DREG)?;
                let src = Src::Payload {
                    base: msg::get_be32(a, k::NFTA_PAYLOAD_BASE)?,
                    offset: msg::get_be32(a, k::NFTA_PAYLOAD_OFFSET)?,
                    len: msg::get_be32(a, k::NFTA_PAYLOAD_LEN)?,
                };
                self.load(dreg, src);
            }
            "ct" => {
                let dreg = msg::get_be32(a, k::NFTA_CT_DREG)?;
                self.load(dreg, Src::Ct(msg::get_be32(a, k::NFTA_CT_KEY)?));
            }
            "fib" => {
                let dreg = msg::get_be32(a, k::NFTA_FIB_DREG)?;
                let src = Src::Fib {
                    result: msg::get_be32(a, k::NFTA_FIB_RESULT)?,
                    flags: msg::get_be32(a, k::NFTA_FIB_FLAGS)?,
                };
                self.load(dreg, src);
            }
            "bitwise" => {
                let (_, mut loaded) = self.reg(a, k::NFTA_BITWISE_SREG)?;
                let dreg = msg::get_be32(a, k::NFTA_BITWISE_DREG)?;
                let xor = msg::find(msg::find(a, k::NFTA_BITWISE_XOR)?, k::NFTA_DATA_VALUE)?;
                if xor.iter().any(|b| *b != 0) || loaded.mask.is_some() {
                    return None;
                }
                loaded.mask = Some(msg::find(msg::find(a, k::NFTA_BITWISE_MASK)?, k::NFTA_DATA_VALUE)?.to_vec());
                self.regs.insert(dreg, loaded);
            }
            "immediate" => {
                let dreg = msg::get_be32(a, k::NFTA_IMMEDIATE_DREG)?;
                let data = msg::find(a, k::NFTA_IMMEDIATE_DATA)?;
                if dreg == k::NFT_REG_VERDICT {
                    let v = verdict_data(data)?;
                    self.push(v);
                } else {
                    let value = msg::find(data, k::NFTA_DATA_VALUE)?.to_vec();
                    self.regs.insert(dreg, Loaded { src: Src::Imm(value), mask: None });
                }
            }
            "cmp" => {
                let (_, loaded) = self.reg(a, k::NFTA_CMP_SREG)?;
                let op = match msg::get_be32(a, k::NFTA_CMP_OP)? {
                    k::NFT_CMP_EQ => "==",
                    k::NFT_CMP_NEQ => "!=",
                    k::NFT_CMP_LT => "<",
                    k::NFT_CMP_LTE => "<=",
                    k::NFT_CMP_GT => ">",
                    k::NFT_CMP_GTE => ">=",
                    _ => return None,
                };
                let data = msg::find(msg::find(a, k::NFTA_CMP_DATA)?, k::NFTA_DATA_VALUE)?;
                self.pending.clear();
                self.compare(&loaded, op, data)?;
            }
            "lookup" => {
                let sreg = msg::get_be32(a, k::NFTA_LOOKUP_SREG)?;
                let set = msg::get_str(a, k::NFTA_LOOKUP_SET)?;
                let start = self.pending.iter().position(|r| *r == sreg)?;
                let keys: Vec<Loaded> =
                    self.pending[start..].iter().map(|r| self.regs.get(r).cloned()).collect::<Option<_>>()?;
                self.pending.clear();
                let mut lefts = Vec::new();
                for loaded in &keys {
                    if loaded.mask.is_some() {
                        return None;
                    }
                    lefts.push(self.left(&loaded.src)?.0);
                }
                let key = if lefts.len() == 1 { lefts.remove(0) } else { json!({ "concat": lefts }) };
                let statement = match msg::get_be32(a, k::NFTA_LOOKUP_DREG) {
                    Some(k::NFT_REG_VERDICT) => json!({"vmap": {"key": key, "data": format!("@{set}")}}),
                    Some(_) => return None,
                    None => {
                        let inv = msg::get_be32(a, k::NFTA_LOOKUP_FLAGS).unwrap_or(0) & k::NFT_LOOKUP_F_INV != 0;
                        json!({"match": {"op": if inv { "!=" } else { "==" }, "left": key, "right": format!("@{set}")}})
                    }
                };
                self.push(statement);
            }
            "nat" => {
                let kind = match msg::get_be32(a, k::NFTA_NAT_TYPE)? {
                    k::NFT_NAT_SNAT => "snat",
                    k::NFT_NAT_DNAT => "dnat",
                    _ => return None,
                };
                let (fam, addr_kind) = match msg::get_be32(a, k::NFTA_NAT_FAMILY)? as u8 {
                    k::NFPROTO_IPV4 => ("ip", Kind::Ipv4),
                    k::NFPROTO_IPV6 => ("ip6", Kind::Ipv6),
                    _ => return None,
                };
                let mut body = serde_json::Map::new();
                if matches!(self.family, k::NFPROTO_INET | k::NFPROTO_BRIDGE) {
                    body.insert("family".into(), json!(fam));
                }
                if let Some((_, Loaded { src: Src::Imm(addr), .. })) = self.reg(a, k::NFTA_NAT_REG_ADDR_MIN) {
                    body.insert("addr".into(), addr_kind.decode(&addr)?);
                }
                if let Some((_, Loaded { src: Src::Imm(port), .. })) = self.reg(a, k::NFTA_NAT_REG_PROTO_MIN) {
                    body.insert("port".into(), Kind::Service.decode(&port)?);
                }
                self.push(json!({ kind: body }));
            }
            "masq" => {
                self.push(json!({"masquerade": null}));
            }
            "counter" => {
                let packets = msg::get_be64(a, k::NFTA_COUNTER_PACKETS).unwrap_or(0);
                let bytes = msg::get_be64(a, k::NFTA_COUNTER_BYTES).unwrap_or(0);
                self.push(json!({"counter": {"packets": packets, "bytes": bytes}}));
            }
            _ => return None,
        }
        Some(())
    }

    /// The `left` of a match reading `src`, with the kind of its values; drops the dependency the
    /// field needed (as nft prints it).
    fn left(&mut self, src: &Src) -> Option<(Value, Option<Kind>)> {
        Some(match src {
            Src::Meta(key) => {
                let (name, kind) = meta_name(*key)?;
                (json!({"meta": {"key": name}}), kind)
            }
            Src::Ct(k::NFT_CT_STATUS) => (json!({"ct": {"key": "status"}}), None),
            Src::Fib { result: k::NFT_FIB_RESULT_ADDRTYPE, flags } => {
                let names: Vec<&str> = [
                    (k::NFTA_FIB_F_SADDR, "saddr"),
                    (k::NFTA_FIB_F_DADDR, "daddr"),
                    (k::NFTA_FIB_F_IIF, "iif"),
                    (k::NFTA_FIB_F_OIF, "oif"),
                ]
                .iter()
                .filter(|(bit, _)| flags & bit != 0)
                .map(|(_, n)| *n)
                .collect();
                (json!({"fib": {"result": "type", "flags": names}}), None)
            }
            Src::Payload { base, offset, len } => self.payload(*base, *offset, *len)?,
            _ => return None,
        })
    }

    fn payload(&mut self, base: u32, offset: u32, len: u32) -> Option<(Value, Option<Kind>)> {
        let field = |protocol: &str, name: &str| json!({"payload": {"protocol": protocol, "field": name}});
        match base {
            k::NFT_PAYLOAD_NETWORK_HEADER => {
                let v4 = match (self.family, self.nfproto) {
                    (k::NFPROTO_IPV4, _) | (_, Some(k::NFPROTO_IPV4)) => true,
                    (k::NFPROTO_IPV6, _) | (_, Some(k::NFPROTO_IPV6)) => false,
                    _ => return None,
                };
                let (name, kind) = match (v4, offset) {
                    (true, 12) if len <= 4 => ("saddr", Kind::Ipv4),
                    (true, 16) if len <= 4 => ("daddr", Kind::Ipv4),
                    (false, 8) if len <= 16 => ("saddr", Kind::Ipv6),
                    (false, 24) if len <= 16 => ("daddr", Kind::Ipv6),
                    _ => return None,
                };
                if let Some(dep) = self.nfproto_dep.take() {
                    self.out[dep] = None;
                }
                Some((field(if v4 { "ip" } else { "ip6" }, name), Some(kind)))
            }
            k::NFT_PAYLOAD_TRANSPORT_HEADER if len == 2 => {
                let name = match offset {
                    0 => "sport",
                    2 => "dport",
                    _ => return None,
                };
                let protocol = match self.l4proto {
                    Some(6) => "tcp",
                    Some(17) => "udp",
                    Some(132) => "sctp",
                    _ => "th",
                };
                if protocol != "th"
                    && let Some(dep) = self.l4proto_dep.take()
                {
                    self.out[dep] = None;
                }
                Some((field(protocol, name), Some(Kind::Service)))
            }
            k::NFT_PAYLOAD_LL_HEADER if len == 6 && matches!(offset, 0 | 6) => {
                Some((field("ether", if offset == 0 { "daddr" } else { "saddr" }), Some(Kind::Ether)))
            }
            _ => None,
        }
    }

    fn compare(&mut self, loaded: &Loaded, op: &str, data: &[u8]) -> Option<()> {
        // `ct status <flag>`: the flag's bit masked out and compared with zero.
        if let (Src::Ct(k::NFT_CT_STATUS), Some(mask)) = (&loaded.src, &loaded.mask) {
            let bits = u32::from_ne_bytes(mask.get(..4)?.try_into().ok()?);
            let name = CT_STATUS.iter().find(|(_, b)| 1 << b == bits)?.0;
            if op != "!=" || data.iter().any(|b| *b != 0) {
                return None;
            }
            let (left, _) = self.left(&loaded.src)?;
            self.push(json!({"match": {"op": "in", "left": left, "right": name}}));
            return Some(());
        }
        let (left, kind) = self.left(&loaded.src)?;
        let right = match (&loaded.src, kind) {
            (Src::Fib { .. }, _) => {
                let t = u32::from_ne_bytes(data.get(..4)?.try_into().ok()?);
                json!(ADDRTYPES.iter().find(|(_, v)| *v == t)?.0)
            }
            (Src::Payload { len, .. }, Some(kind @ (Kind::Ipv4 | Kind::Ipv6))) => {
                let width = kind.width();
                let bits = match &loaded.mask {
                    Some(mask) => {
                        let ones: u32 = mask.iter().map(|b| b.count_ones()).sum();
                        (prefix_mask(width, ones) == *mask).then_some(ones)?
                    }
                    None if (*len as usize) < width => len * 8,
                    None => 8 * width as u32,
                };
                let mut addr = data.to_vec();
                addr.resize(width, 0);
                let addr = kind.decode(&addr)?;
                if bits as usize == width * 8 { addr } else { json!({"prefix": {"addr": addr, "len": bits}}) }
            }
            (_, Some(kind)) if loaded.mask.is_none() => kind.decode(data)?,
            _ => return None,
        };
        let index = self.push(json!({"match": {"op": op, "left": left, "right": right}}));
        if op == "==" {
            match loaded.src {
                Src::Meta(k::NFT_META_NFPROTO) => {
                    self.nfproto = data.first().copied();
                    self.nfproto_dep = Some(index);
                }
                Src::Meta(k::NFT_META_L4PROTO) => {
                    self.l4proto = data.first().copied();
                    self.l4proto_dep = Some(index);
                }
                _ => {}
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::expr::Rule;

    fn round_trip(family: u8, statements: Value) -> Vec<Value> {
        let bytes = Rule::compile(family, statements.as_array().unwrap()).unwrap();
        let exprs = msg::find(&bytes, k::NFTA_RULE_EXPRESSIONS).unwrap();
        rule(family, exprs)
    }

    #[test]
    fn our_statements_read_back_as_nft_prints_them() {
        let m = |l: Value, op: &str, r: Value| json!({"match": {"op": op, "left": l, "right": r}});
        let p = |proto: &str, f: &str| json!({"payload": {"protocol": proto, "field": f}});
        let rules = [
            json!([m(p("ip", "saddr"), "==", json!("10.1.0.5")),
                   m(p("ip", "daddr"), "!=", json!({"prefix": {"addr": "10.1.0.0", "len": 24}})),
                   {"masquerade": null}]),
            json!([m(p("ip6", "daddr"), "==", json!({"prefix": {"addr": "ff00::", "len": 8}})), {"return": null}]),
            json!([m(json!({"ct": {"key": "status"}}), "in", json!("dnat")),
                   {"vmap": {"key": p("ip", "daddr"), "data": "@masq_v4"}}]),
            json!([m(json!({"fib": {"result": "type", "flags": ["daddr"]}}), "==", json!("local")),
                   {"jump": {"target": "hostports"}}]),
            json!([{"vmap": {"key": {"concat": [p("ip6", "daddr"), {"meta": {"key": "l4proto"}}, p("th", "dport")]},
                             "data": "@hostip_v6"}}]),
            json!([m(json!({"meta": {"key": "nfproto"}}), "==", json!("ipv4")),
                   m(p("udp", "dport"), "==", json!(5353)),
                   {"dnat": {"family": "ip", "addr": "10.88.0.5", "port": 53}}]),
            json!([m(json!({"meta": {"key": "oifname"}}), "!=", json!("br0")),
                   m(json!({"meta": {"key": "oifname"}}), "==", json!("@isolated")), {"drop": null}]),
        ];
        for r in rules {
            assert_eq!(Value::from(round_trip(k::NFPROTO_INET, r.clone())), r);
        }
        let spoof = json!([m(p("ether", "saddr"), "==", json!("0a:58:0a:01:00:05")), {"return": null}]);
        assert_eq!(Value::from(round_trip(k::NFPROTO_BRIDGE, spoof.clone())), spoof);
    }

    #[test]
    fn unknown_expressions_become_markers() {
        let mut a = msg::Attrs::default();
        a.begin(k::NFTA_LIST_ELEM).str(k::NFTA_EXPR_NAME, "log").begin(k::NFTA_EXPR_DATA).end().end();
        a.begin(k::NFTA_LIST_ELEM).str(k::NFTA_EXPR_NAME, "cmp").begin(k::NFTA_EXPR_DATA).end().end();
        let out = rule(k::NFPROTO_INET, &a.into_bytes());
        assert_eq!(out, [json!({UNDECODED: {"expr": "log"}}), json!({UNDECODED: {"expr": "cmp"}})]);
    }
}
