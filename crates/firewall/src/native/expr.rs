//! Rule statements (nft's JSON) compiled to nf_tables expressions, the way libnftables compiles
//! them: a load into register 1 and a compare per match, the protocol dependencies nft inserts
//! (`meta nfproto` before an IP header field in an `inet` table, `meta l4proto` before a port),
//! byte-aligned prefixes as shorter loads and others through a mask.

use super::Unsupported;
use super::msg::{Attrs, k};
use super::value::{Kind, prefix_mask};
use serde_json::Value;

/// What a rule has established about the packet so far, so a dependency is emitted once.
#[derive(Default)]
struct Context {
    nfproto: Option<u8>,
    l4proto: Option<u8>,
}

/// Where a field comes from.
#[derive(Clone, Copy)]
enum Source {
    Payload { base: u32, offset: u32 },
    Meta(u32),
}

/// A field a match reads, with what it needs established first.
#[derive(Clone, Copy)]
struct Field {
    source: Source,
    kind: Kind,
    needs_nfproto: Option<u8>,
    needs_l4proto: Option<u8>,
}

/// One rule under construction.
pub struct Rule {
    family: u8,
    exprs: Attrs,
    ctx: Context,
}

fn unsupported<T>(what: impl std::fmt::Display) -> Result<T, Unsupported> {
    Err(Unsupported(what.to_string()))
}

impl Rule {
    pub fn compile(family: u8, statements: &[Value]) -> Result<Vec<u8>, Unsupported> {
        let mut rule = Rule { family, exprs: Attrs::default(), ctx: Context::default() };
        rule.exprs.begin(k::NFTA_RULE_EXPRESSIONS);
        for s in statements {
            rule.statement(s)?;
        }
        rule.exprs.end();
        Ok(rule.exprs.into_bytes())
    }

    fn expr(&mut self, name: &str, data: impl FnOnce(&mut Attrs)) {
        self.exprs.begin(k::NFTA_LIST_ELEM).str(k::NFTA_EXPR_NAME, name).begin(k::NFTA_EXPR_DATA);
        data(&mut self.exprs);
        self.exprs.end().end();
    }

    fn meta_load(&mut self, key: u32) {
        self.meta_load_to(key, k::NFT_REG_1);
    }

    fn meta_load_to(&mut self, key: u32, reg: u32) {
        self.expr("meta", |a| {
            a.be32(k::NFTA_META_DREG, reg).be32(k::NFTA_META_KEY, key);
        });
    }

    fn payload_load(&mut self, base: u32, offset: u32, len: usize, reg: u32) {
        self.expr("payload", |a| {
            a.be32(k::NFTA_PAYLOAD_DREG, reg)
                .be32(k::NFTA_PAYLOAD_BASE, base)
                .be32(k::NFTA_PAYLOAD_OFFSET, offset)
                .be32(k::NFTA_PAYLOAD_LEN, len as u32);
        });
    }

    fn cmp(&mut self, op: u32, data: &[u8]) {
        self.expr("cmp", |a| {
            a.be32(k::NFTA_CMP_SREG, k::NFT_REG_1).be32(k::NFTA_CMP_OP, op).value(k::NFTA_CMP_DATA, data);
        });
    }

    fn immediate_verdict(&mut self, code: i32, chain: Option<&str>) {
        self.expr("immediate", |a| {
            a.be32(k::NFTA_IMMEDIATE_DREG, k::NFT_REG_VERDICT).verdict(k::NFTA_IMMEDIATE_DATA, code, chain);
        });
    }

    fn immediate_value(&mut self, reg: u32, data: &[u8]) {
        self.expr("immediate", |a| {
            a.be32(k::NFTA_IMMEDIATE_DREG, reg).value(k::NFTA_IMMEDIATE_DATA, data);
        });
    }

    /// The field a `left` of a match reads.
    fn field(&self, left: &Value) -> Result<Field, Unsupported> {
        if let Some(p) = left.get("payload") {
            let (protocol, name) = (p["protocol"].as_str().unwrap_or(""), p["field"].as_str().unwrap_or(""));
            let nh = k::NFT_PAYLOAD_NETWORK_HEADER;
            let th = k::NFT_PAYLOAD_TRANSPORT_HEADER;
            let (base, offset, kind, nfproto, l4proto) = match (protocol, name) {
                ("ip", "saddr") => (nh, 12, Kind::Ipv4, Some(k::NFPROTO_IPV4), None),
                ("ip", "daddr") => (nh, 16, Kind::Ipv4, Some(k::NFPROTO_IPV4), None),
                ("ip6", "saddr") => (nh, 8, Kind::Ipv6, Some(k::NFPROTO_IPV6), None),
                ("ip6", "daddr") => (nh, 24, Kind::Ipv6, Some(k::NFPROTO_IPV6), None),
                ("tcp" | "udp" | "sctp", "sport" | "dport") => {
                    let proto = Kind::Proto.encode(&Value::from(protocol))?[0];
                    (th, if name == "sport" { 0 } else { 2 }, Kind::Service, None, Some(proto))
                }
                // The raw transport header: nft adds no dependency (the rule says which protocols).
                ("th", "sport" | "dport") => (th, if name == "sport" { 0 } else { 2 }, Kind::Service, None, None),
                ("ether", "saddr") => (k::NFT_PAYLOAD_LL_HEADER, 6, Kind::Ether, None, None),
                ("ether", "daddr") => (k::NFT_PAYLOAD_LL_HEADER, 0, Kind::Ether, None, None),
                _ => return unsupported(format!("payload {protocol} {name}")),
            };
            // Which tables can read which headers without more dependencies than emitted here.
            let fits = match kind {
                Kind::Ether => matches!(self.family, k::NFPROTO_BRIDGE | k::NFPROTO_NETDEV),
                Kind::Ipv4 => matches!(self.family, k::NFPROTO_INET | k::NFPROTO_IPV4),
                Kind::Ipv6 => matches!(self.family, k::NFPROTO_INET | k::NFPROTO_IPV6),
                _ => matches!(self.family, k::NFPROTO_INET | k::NFPROTO_IPV4 | k::NFPROTO_IPV6),
            };
            if !fits {
                return unsupported(format!("{protocol} {name} in family {}", self.family));
            }
            let needs_nfproto = nfproto.filter(|_| self.family == k::NFPROTO_INET);
            return Ok(Field { source: Source::Payload { base, offset }, kind, needs_nfproto, needs_l4proto: l4proto });
        }
        if let Some(m) = left.get("meta") {
            let (key, kind) = match m["key"].as_str().unwrap_or("") {
                "iifname" => (k::NFT_META_IIFNAME, Kind::IfName),
                "oifname" => (k::NFT_META_OIFNAME, Kind::IfName),
                "nfproto" => (k::NFT_META_NFPROTO, Kind::NfProto),
                "l4proto" => (k::NFT_META_L4PROTO, Kind::Proto),
                "mark" => (k::NFT_META_MARK, Kind::Mark),
                other => return unsupported(format!("meta {other}")),
            };
            return Ok(Field { source: Source::Meta(key), kind, needs_nfproto: None, needs_l4proto: None });
        }
        unsupported(format!("match on {left}"))
    }

    /// Emits the dependencies a field needs, as nft does.
    fn depend(&mut self, field: &Field) {
        if let Some(p) = field.needs_nfproto
            && self.ctx.nfproto != Some(p)
        {
            self.meta_load(k::NFT_META_NFPROTO);
            self.cmp(k::NFT_CMP_EQ, &[p]);
            self.ctx.nfproto = Some(p);
        }
        if let Some(p) = field.needs_l4proto
            && self.ctx.l4proto != Some(p)
        {
            self.meta_load(k::NFT_META_L4PROTO);
            self.cmp(k::NFT_CMP_EQ, &[p]);
            self.ctx.l4proto = Some(p);
        }
    }

    fn load(&mut self, field: &Field, len: usize) {
        self.load_to(field, len, k::NFT_REG_1);
    }

    fn load_to(&mut self, field: &Field, len: usize, reg: u32) {
        match field.source {
            Source::Payload { base, offset } => self.payload_load(base, offset, len, reg),
            Source::Meta(key) => self.meta_load_to(key, reg),
        }
    }

    /// Loads a key into register 1: one field, or the fields of a concatenation side by side in
    /// 32-bit registers (nft's layout), after the dependencies of all of them.
    fn load_key(&mut self, key: &Value) -> Result<(), Unsupported> {
        let Some(parts) = key.get("concat") else {
            let field = self.field(key)?;
            self.depend(&field);
            self.load(&field, field.kind.width());
            return Ok(());
        };
        let fields: Vec<Field> = parts
            .as_array()
            .filter(|p| p.len() > 1)
            .ok_or_else(|| Unsupported(format!("concat {key}")))?
            .iter()
            .map(|p| self.field(p))
            .collect::<Result<_, _>>()?;
        for f in &fields {
            self.depend(f);
        }
        let mut units = 0;
        for f in &fields {
            self.load_to(f, f.kind.width(), register(units));
            units += f.kind.width().div_ceil(4) as u32;
        }
        Ok(())
    }

    fn statement(&mut self, s: &Value) -> Result<(), Unsupported> {
        let Some((name, body)) = s.as_object().and_then(|o| (o.len() == 1).then(|| o.iter().next()).flatten()) else {
            return unsupported(format!("statement {s}"));
        };
        match name.as_str() {
            "match" => return self.matches(body),
            "dnat" | "snat" => return self.nat(name == "dnat", body),
            "vmap" => return self.vmap(body),
            "accept" => self.immediate_verdict(k::NF_ACCEPT, None),
            "drop" => self.immediate_verdict(k::NF_DROP, None),
            "return" => self.immediate_verdict(k::NFT_RETURN, None),
            "jump" | "goto" => {
                let target = body["target"].as_str().ok_or_else(|| Unsupported(format!("{name} {body}")))?;
                let code = if name == "jump" { k::NFT_JUMP } else { k::NFT_GOTO };
                self.immediate_verdict(code, Some(target));
            }
            "masquerade" if body.is_null() => self.expr("masq", |_| {}),
            "counter" if body.is_null() => self.expr("counter", |a| {
                a.be64(k::NFTA_COUNTER_BYTES, 0).be64(k::NFTA_COUNTER_PACKETS, 0);
            }),
            _ => return unsupported(format!("statement {name}")),
        }
        Ok(())
    }

    fn matches(&mut self, m: &Value) -> Result<(), Unsupported> {
        let (left, op, right) = (&m["left"], m["op"].as_str().unwrap_or(""), &m["right"]);
        if left.get("ct").is_some() {
            return self.ct_match(&left["ct"], op, right);
        }
        if left.get("fib").is_some() {
            return self.fib_match(&left["fib"], op, right);
        }
        if left.get("concat").is_some() {
            let set = right.as_str().and_then(|r| r.strip_prefix('@'));
            let (Some(set), "==" | "!=") = (set, op) else { return unsupported(format!("concat match {m}")) };
            self.load_key(left)?;
            let set = set.to_string();
            self.expr("lookup", |a| {
                a.str(k::NFTA_LOOKUP_SET, &set).be32(k::NFTA_LOOKUP_SREG, k::NFT_REG_1);
                if op == "!=" {
                    a.be32(k::NFTA_LOOKUP_FLAGS, k::NFT_LOOKUP_F_INV);
                }
            });
            return Ok(());
        }
        let field = self.field(&m["left"])?;
        let op = match m["op"].as_str().unwrap_or("") {
            "==" => k::NFT_CMP_EQ,
            "!=" => k::NFT_CMP_NEQ,
            "<" => k::NFT_CMP_LT,
            "<=" => k::NFT_CMP_LTE,
            ">" => k::NFT_CMP_GT,
            ">=" => k::NFT_CMP_GTE,
            other => return unsupported(format!("operator {other}")),
        };
        let right = &m["right"];
        // Ordering only means what it says on big-endian values compared bytewise.
        if !matches!(op, k::NFT_CMP_EQ | k::NFT_CMP_NEQ) && field.kind != Kind::Service {
            return unsupported(format!("ordering on {:?}", field.kind));
        }
        self.depend(&field);
        if let Some(set) = right.as_str().and_then(|r| r.strip_prefix('@')) {
            if !matches!(op, k::NFT_CMP_EQ | k::NFT_CMP_NEQ) {
                return unsupported("set lookup with ordering");
            }
            self.load(&field, field.kind.width());
            let set = set.to_string();
            self.expr("lookup", |a| {
                a.str(k::NFTA_LOOKUP_SET, &set).be32(k::NFTA_LOOKUP_SREG, k::NFT_REG_1);
                if op == k::NFT_CMP_NEQ {
                    a.be32(k::NFTA_LOOKUP_FLAGS, k::NFT_LOOKUP_F_INV);
                }
            });
        } else if right.get("prefix").is_some() {
            if !matches!(op, k::NFT_CMP_EQ | k::NFT_CMP_NEQ) || !matches!(field.kind, Kind::Ipv4 | Kind::Ipv6) {
                return unsupported(format!("prefix on {:?}", field.kind));
            }
            let bits = right["prefix"]["len"].as_u64().unwrap_or(0) as u32;
            let (network, _) = field.kind.prefix_bounds(right)?;
            if bits == 0 {
                return unsupported("a /0 prefix");
            }
            if bits.is_multiple_of(8) {
                // nft loads only the prefix's bytes.
                let len = (bits / 8) as usize;
                self.load(&field, len);
                self.cmp(op, &network[..len]);
            } else {
                let len = field.kind.width();
                self.load(&field, len);
                let mask = prefix_mask(len, bits);
                self.expr("bitwise", |a| {
                    a.be32(k::NFTA_BITWISE_SREG, k::NFT_REG_1)
                        .be32(k::NFTA_BITWISE_DREG, k::NFT_REG_1)
                        .be32(k::NFTA_BITWISE_LEN, len as u32)
                        .value(k::NFTA_BITWISE_MASK, &mask)
                        .value(k::NFTA_BITWISE_XOR, &vec![0; len]);
                });
                self.cmp(op, &network);
            }
        } else if right.is_string() || right.is_number() {
            let data = field.kind.encode(right)?;
            self.load(&field, field.kind.width());
            self.cmp(op, &data);
            // An explicit protocol match establishes it for later fields, as in nft.
            if op == k::NFT_CMP_EQ {
                match field.source {
                    Source::Meta(k::NFT_META_NFPROTO) => self.ctx.nfproto = Some(data[0]),
                    Source::Meta(k::NFT_META_L4PROTO) => self.ctx.l4proto = Some(data[0]),
                    _ => {}
                }
            }
        } else {
            return unsupported(format!("match value {right}"));
        }
        Ok(())
    }

    /// `ct status <flag>` (op `in`, or `==` as nft also reads it): the status bit masked out and
    /// compared with zero.
    fn ct_match(&mut self, ct: &Value, op: &str, right: &Value) -> Result<(), Unsupported> {
        if ct.as_object().is_none_or(|o| o.len() != 1) || ct["key"] != "status" || !matches!(op, "in" | "==") {
            return unsupported(format!("ct {ct} {op}"));
        }
        let bit = right.as_str().and_then(ct_status_bit).ok_or_else(|| Unsupported(format!("ct status {right}")))?;
        self.expr("ct", |a| {
            a.be32(k::NFTA_CT_DREG, k::NFT_REG_1).be32(k::NFTA_CT_KEY, k::NFT_CT_STATUS);
        });
        let mask = (1u32 << bit).to_ne_bytes();
        self.expr("bitwise", |a| {
            a.be32(k::NFTA_BITWISE_SREG, k::NFT_REG_1)
                .be32(k::NFTA_BITWISE_DREG, k::NFT_REG_1)
                .be32(k::NFTA_BITWISE_LEN, 4)
                .value(k::NFTA_BITWISE_MASK, &mask)
                .value(k::NFTA_BITWISE_XOR, &[0; 4]);
        });
        self.cmp(k::NFT_CMP_NEQ, &[0; 4]);
        Ok(())
    }

    /// `fib <flags> type == <address type>`.
    fn fib_match(&mut self, fib: &Value, op: &str, right: &Value) -> Result<(), Unsupported> {
        let flags = fib["flags"].as_array().ok_or_else(|| Unsupported(format!("fib {fib}")))?;
        let mut bits = 0;
        for f in flags {
            bits |= match f.as_str() {
                Some("saddr") => k::NFTA_FIB_F_SADDR,
                Some("daddr") => k::NFTA_FIB_F_DADDR,
                Some("iif") => k::NFTA_FIB_F_IIF,
                Some("oif") => k::NFTA_FIB_F_OIF,
                _ => return unsupported(format!("fib flag {f}")),
            };
        }
        let cmp_op = match op {
            "==" => k::NFT_CMP_EQ,
            "!=" => k::NFT_CMP_NEQ,
            _ => return unsupported(format!("fib {op}")),
        };
        if fib["result"] != "type" || fib.as_object().is_some_and(|o| o.len() != 2) {
            return unsupported(format!("fib {fib}"));
        }
        let rtn = right.as_str().and_then(addrtype).ok_or_else(|| Unsupported(format!("fib type {right}")))?;
        self.expr("fib", |a| {
            a.be32(k::NFTA_FIB_DREG, k::NFT_REG_1)
                .be32(k::NFTA_FIB_RESULT, k::NFT_FIB_RESULT_ADDRTYPE)
                .be32(k::NFTA_FIB_FLAGS, bits);
        });
        self.cmp(cmp_op, &rtn.to_ne_bytes());
        Ok(())
    }

    fn nat(&mut self, dnat: bool, body: &Value) -> Result<(), Unsupported> {
        let addr = body["addr"].as_str().ok_or_else(|| Unsupported(format!("nat {body}")))?;
        let (kind, family) = match body["family"].as_str() {
            Some("ip") => (Kind::Ipv4, k::NFPROTO_IPV4),
            Some("ip6") => (Kind::Ipv6, k::NFPROTO_IPV6),
            None if addr.contains(':') => (Kind::Ipv6, k::NFPROTO_IPV6),
            None => (Kind::Ipv4, k::NFPROTO_IPV4),
            Some(other) => return unsupported(format!("nat family {other}")),
        };
        if body.as_object().is_some_and(|o| o.keys().any(|key| !matches!(key.as_str(), "addr" | "family" | "port"))) {
            return unsupported(format!("nat options {body}"));
        }
        let address = kind.encode(&Value::from(addr))?;
        self.immediate_value(k::NFT_REG_1, &address);
        let port = match body.get("port") {
            Some(p) => Some(Kind::Service.encode(p)?),
            None => None,
        };
        if let Some(p) = &port {
            self.immediate_value(k::NFT_REG_2, p);
        }
        self.expr("nat", |a| {
            a.be32(k::NFTA_NAT_TYPE, if dnat { k::NFT_NAT_DNAT } else { k::NFT_NAT_SNAT })
                .be32(k::NFTA_NAT_FAMILY, u32::from(family))
                .be32(k::NFTA_NAT_REG_ADDR_MIN, k::NFT_REG_1);
            if port.is_some() {
                a.be32(k::NFTA_NAT_REG_PROTO_MIN, k::NFT_REG_2)
                    .be32(k::NFTA_NAT_FLAGS, k::NF_NAT_RANGE_PROTO_SPECIFIED);
            }
        });
        Ok(())
    }

    fn vmap(&mut self, body: &Value) -> Result<(), Unsupported> {
        let map = body["data"]
            .as_str()
            .and_then(|d| d.strip_prefix('@'))
            .ok_or_else(|| Unsupported(format!("vmap {body}")))?;
        self.load_key(&body["key"])?;
        let map = map.to_string();
        self.expr("lookup", |a| {
            a.str(k::NFTA_LOOKUP_SET, &map)
                .be32(k::NFTA_LOOKUP_SREG, k::NFT_REG_1)
                .be32(k::NFTA_LOOKUP_DREG, k::NFT_REG_VERDICT);
        });
        Ok(())
    }
}

/// nft's register number for a value starting `units` 32-bit words into the register file: a
/// 128-bit register's number where it starts one (for compatibility), else a 32-bit one.
pub fn register(units: u32) -> u32 {
    if units.is_multiple_of(4) { k::NFT_REG_1 + units / 4 } else { k::NFT_REG32_00 + units }
}

/// The conntrack status flags nft names, by bit.
pub const CT_STATUS: &[(&str, u32)] =
    &[("expected", 0), ("seen-reply", 1), ("assured", 2), ("confirmed", 3), ("snat", 4), ("dnat", 5), ("dying", 9)];

fn ct_status_bit(name: &str) -> Option<u32> {
    CT_STATUS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

/// Route types (`RTN_*`) by nft's name, as `fib ... type` compares them.
pub const ADDRTYPES: &[(&str, u32)] = &[
    ("unspec", 0),
    ("unicast", 1),
    ("local", 2),
    ("broadcast", 3),
    ("anycast", 4),
    ("multicast", 5),
    ("blackhole", 6),
    ("unreachable", 7),
    ("prohibit", 8),
];

fn addrtype(name: &str) -> Option<u32> {
    ADDRTYPES.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_constructs_are_reported_not_guessed() {
        let cases = [
            json!({"match": {"left": {"ct": {"key": "state"}}, "op": "in", "right": "established"}}),
            json!({"match": {"left": {"ct": {"key": "status"}}, "op": "in", "right": "bogus"}}),
            json!({"match": {"left": {"payload": {"protocol": "ip", "field": "saddr"}}, "op": "==", "right": {"set": ["10.0.0.1"]}}}),
            json!({"match": {"left": {"meta": {"key": "iifname"}}, "op": "==", "right": "veth*"}}),
            json!({"match": {"left": {"meta": {"key": "mark"}}, "op": "<", "right": 3}}),
            json!({"log": {"prefix": "x"}}),
            json!({"masquerade": {"port": 80}}),
        ];
        for statement in cases {
            assert!(Rule::compile(k::NFPROTO_INET, std::slice::from_ref(&statement)).is_err(), "{statement}");
        }
        let ether = json!({"match": {"left": {"payload": {"protocol": "ether", "field": "saddr"}}, "op": "==", "right": "0a:00:00:00:00:01"}});
        assert!(Rule::compile(k::NFPROTO_INET, std::slice::from_ref(&ether)).is_err());
        assert!(Rule::compile(k::NFPROTO_BRIDGE, &[ether]).is_ok());
    }
}
