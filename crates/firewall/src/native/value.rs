//! Values as the kernel compares them: the bytes of addresses, ports, interface names and
//! protocol numbers, and the set and map key layouts this crate declares.

use super::Unsupported;
use serde_json::Value;
use std::net::{Ipv4Addr, Ipv6Addr};

/// What a register or a key field holds, and so how a JSON value becomes bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ipv4,
    Ipv6,
    /// An interface name, NUL-padded to IFNAMSIZ.
    IfName,
    /// A port, big-endian.
    Service,
    /// An IP protocol number (`tcp`, `udp`, 6...).
    Proto,
    /// An nfproto (`ipv4`, `ipv6`).
    NfProto,
    Ether,
    /// A packet mark, in host byte order.
    Mark,
}

impl Kind {
    pub fn width(self) -> usize {
        match self {
            Kind::Ipv4 | Kind::Mark => 4,
            Kind::Ipv6 | Kind::IfName => 16,
            Kind::Service => 2,
            Kind::Proto | Kind::NfProto => 1,
            Kind::Ether => 6,
        }
    }

    /// The kind of an nft type name in a set declaration.
    pub fn of_type(name: &str) -> Option<Kind> {
        Some(match name {
            "ipv4_addr" => Kind::Ipv4,
            "ipv6_addr" => Kind::Ipv6,
            "ifname" => Kind::IfName,
            "inet_service" => Kind::Service,
            "inet_proto" => Kind::Proto,
            "nf_proto" => Kind::NfProto,
            "ether_addr" => Kind::Ether,
            "mark" => Kind::Mark,
            _ => return None,
        })
    }

    /// nft's number for this data type (its `enum datatypes`), as the kernel stores it in a set's
    /// key type (concatenations: six bits per field).
    pub fn datatype(self) -> u32 {
        match self {
            Kind::NfProto => 2,
            Kind::Ipv4 => 7,
            Kind::Ipv6 => 8,
            Kind::Ether => 9,
            Kind::Proto => 12,
            Kind::Service => 13,
            Kind::Mark => 19,
            Kind::IfName => 41,
        }
    }

    pub fn of_datatype(id: u32) -> Option<Kind> {
        [Kind::NfProto, Kind::Ipv4, Kind::Ipv6, Kind::Ether, Kind::Proto, Kind::Service, Kind::Mark, Kind::IfName]
            .into_iter()
            .find(|k| k.datatype() == id)
    }

    /// nft's name for this data type.
    pub fn type_name(self) -> &'static str {
        match self {
            Kind::Ipv4 => "ipv4_addr",
            Kind::Ipv6 => "ipv6_addr",
            Kind::IfName => "ifname",
            Kind::Service => "inet_service",
            Kind::Proto => "inet_proto",
            Kind::NfProto => "nf_proto",
            Kind::Ether => "ether_addr",
            Kind::Mark => "mark",
        }
    }

    /// The byte order nft records in a single-field set's user data (1 host, 2 big endian), for
    /// the kinds whose value nft 1.0.6 was seen to write; others are not declared natively.
    fn key_byteorder(self) -> Option<u32> {
        match self {
            Kind::Ipv4 | Kind::Ipv6 => Some(2),
            Kind::IfName => Some(1),
            _ => None,
        }
    }

    /// `bytes` (as the kernel holds a value of this kind) as nft's JSON prints it.
    pub fn decode(self, bytes: &[u8]) -> Option<Value> {
        Some(match self {
            Kind::Ipv4 => Value::from(Ipv4Addr::from(<[u8; 4]>::try_from(bytes.get(..4)?).ok()?).to_string()),
            Kind::Ipv6 => Value::from(Ipv6Addr::from(<[u8; 16]>::try_from(bytes.get(..16)?).ok()?).to_string()),
            Kind::IfName => {
                let name = bytes.split(|b| *b == 0).next().unwrap_or(bytes);
                Value::from(String::from_utf8_lossy(name).into_owned())
            }
            Kind::Service => Value::from(u16::from_be_bytes(bytes.get(..2)?.try_into().ok()?)),
            Kind::Proto => match *bytes.first()? {
                6 => Value::from("tcp"),
                17 => Value::from("udp"),
                132 => Value::from("sctp"),
                1 => Value::from("icmp"),
                58 => Value::from("ipv6-icmp"),
                n => Value::from(n),
            },
            Kind::NfProto => match *bytes.first()? {
                2 => Value::from("ipv4"),
                10 => Value::from("ipv6"),
                n => Value::from(n),
            },
            Kind::Ether => {
                Value::from(bytes.get(..6)?.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"))
            }
            Kind::Mark => Value::from(u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?)),
        })
    }

    /// `value` (a JSON scalar as nft reads it) as bytes of this kind.
    pub fn encode(self, value: &Value) -> Result<Vec<u8>, Unsupported> {
        let bad = || Unsupported(format!("{value} as {self:?}"));
        Ok(match self {
            Kind::Ipv4 => value.as_str().and_then(|s| s.parse::<Ipv4Addr>().ok()).ok_or_else(bad)?.octets().to_vec(),
            Kind::Ipv6 => value.as_str().and_then(|s| s.parse::<Ipv6Addr>().ok()).ok_or_else(bad)?.octets().to_vec(),
            Kind::IfName => {
                let name = value.as_str().ok_or_else(bad)?;
                // A wildcard (`veth*`) is a prefix match, which this encoder does not produce.
                if name.is_empty() || name.len() >= 16 || name.contains('*') || name.contains('\\') {
                    return Err(bad());
                }
                let mut out = name.as_bytes().to_vec();
                out.resize(16, 0);
                out
            }
            Kind::Service => {
                let port = value.as_u64().and_then(|p| u16::try_from(p).ok()).ok_or_else(bad)?;
                port.to_be_bytes().to_vec()
            }
            Kind::Proto => vec![match value {
                Value::String(s) => match s.as_str() {
                    "tcp" => 6,
                    "udp" => 17,
                    "sctp" => 132,
                    "icmp" => 1,
                    "icmpv6" | "ipv6-icmp" => 58,
                    _ => return Err(bad()),
                },
                _ => value.as_u64().and_then(|n| u8::try_from(n).ok()).ok_or_else(bad)?,
            }],
            Kind::NfProto => vec![match value.as_str() {
                Some("ipv4") => 2,
                Some("ipv6") => 10,
                _ => return Err(bad()),
            }],
            Kind::Ether => {
                let text = value.as_str().ok_or_else(bad)?;
                let bytes: Option<Vec<u8>> = text.split(':').map(|h| u8::from_str_radix(h, 16).ok()).collect();
                bytes.filter(|b| b.len() == 6).ok_or_else(bad)?
            }
            Kind::Mark => {
                let mark = value.as_u64().and_then(|m| u32::try_from(m).ok()).ok_or_else(bad)?;
                mark.to_ne_bytes().to_vec()
            }
        })
    }

    /// The first and last address of `{"prefix": {"addr", "len"}}` (for address kinds).
    pub fn prefix_bounds(self, value: &Value) -> Result<(Vec<u8>, Vec<u8>), Unsupported> {
        let p = &value["prefix"];
        let bad = || Unsupported(format!("prefix {value}"));
        let len = p["len"].as_u64().ok_or_else(bad)? as u32;
        let first = self.encode(&p["addr"])?;
        let bits = (first.len() * 8) as u32;
        if !matches!(self, Kind::Ipv4 | Kind::Ipv6) || len > bits {
            return Err(bad());
        }
        let mask = prefix_mask(first.len(), len);
        let start: Vec<u8> = first.iter().zip(&mask).map(|(b, m)| b & m).collect();
        let end: Vec<u8> = start.iter().zip(&mask).map(|(b, m)| b | !m).collect();
        Ok((start, end))
    }
}

/// A mask of `len` bytes with the first `bits` bits set.
pub fn prefix_mask(len: usize, bits: u32) -> Vec<u8> {
    (0..len)
        .map(|i| {
            let before = (i * 8) as u32;
            match bits.saturating_sub(before) {
                0 => 0,
                n if n >= 8 => 0xff,
                n => 0xffu8 << (8 - n),
            }
        })
        .collect()
}

/// A set or map as this crate declares it: the kinds of its key fields, whether keys are
/// intervals, and whether it maps to verdicts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetSpec {
    pub fields: Vec<Kind>,
    pub interval: bool,
    pub verdicts: bool,
}

impl SetSpec {
    /// Reads a `{"set": ...}` or `{"map": ...}` declaration.
    pub fn from_declaration(body: &Value, is_map: bool) -> Option<SetSpec> {
        let fields = match &body["type"] {
            Value::String(t) => vec![Kind::of_type(t)?],
            Value::Array(ts) => ts.iter().map(|t| t.as_str().and_then(Kind::of_type)).collect::<Option<Vec<_>>>()?,
            _ => return None,
        };
        let interval = body["flags"].as_array().is_some_and(|f| f.iter().any(|x| x == "interval"));
        let verdicts = is_map && body["map"] == "verdict";
        if is_map && !verdicts {
            return None;
        }
        Some(SetSpec { fields, interval, verdicts })
    }

    /// The key type as the kernel stores it: one data type, or six bits per concatenated field.
    pub fn key_type(&self) -> u32 {
        self.fields.iter().fold(0, |acc, f| (acc << 6) | f.datatype())
    }

    /// The key length: one field's width, or each field padded to a 32-bit register.
    pub fn key_len(&self) -> u32 {
        if self.fields.len() == 1 {
            return self.fields[0].width() as u32;
        }
        self.fields.iter().map(|f| f.width().div_ceil(4) as u32 * 4).sum()
    }

    /// The fields of a kernel key type, or `None` for a type this crate does not know.
    pub fn fields_of(key_type: u32) -> Option<Vec<Kind>> {
        let mut fields = Vec::new();
        let mut t = key_type;
        while t != 0 {
            fields.insert(0, Kind::of_datatype(t & 0x3f)?);
            t >>= 6;
        }
        (!fields.is_empty()).then_some(fields)
    }

    /// The user data nft 1.0.6 stores with such a set (libnftnl TLVs): the key's byte order (0
    /// for a concatenation), for maps the data's, for concatenations the key's expression type
    /// (EXPR_CONCAT, 13, with empty type data), for maps "data is no interval". `nft list` reads
    /// these back to print keys; the comparison test pins them to what nft writes.
    pub fn udata(&self) -> Result<Vec<u8>, Unsupported> {
        let concat = self.fields.len() > 1;
        let key_order = if concat {
            0
        } else {
            self.fields[0]
                .key_byteorder()
                .ok_or_else(|| Unsupported(format!("a set of {}", self.fields[0].type_name())))?
        };
        let mut out = Vec::new();
        let u32_tlv = |out: &mut Vec<u8>, kind: u8, v: u32| {
            out.extend_from_slice(&[kind, 4]);
            out.extend_from_slice(&v.to_ne_bytes());
        };
        u32_tlv(&mut out, 0, key_order);
        if self.verdicts {
            u32_tlv(&mut out, 1, 0);
        }
        if concat {
            out.extend_from_slice(&[3, 8, 0, 4]);
            out.extend_from_slice(&13u32.to_ne_bytes());
            out.extend_from_slice(&[1, 0]);
        }
        if self.verdicts {
            u32_tlv(&mut out, 6, 0);
        }
        Ok(out)
    }

    /// The key (and for interval sets the closing key) of an element given as nft's JSON.
    pub fn key(&self, key: &Value) -> Result<(Vec<u8>, Option<Vec<u8>>), Unsupported> {
        let parts: Vec<&Value> = match (&key["concat"], self.fields.len()) {
            (Value::Array(parts), n) if parts.len() == n && n > 1 => parts.iter().collect(),
            (Value::Null, 1) => vec![key],
            _ => return Err(Unsupported(format!("key {key} for {:?}", self.fields))),
        };
        if self.fields.len() == 1 {
            if self.interval {
                // A single-field interval set stores ranges as start and end elements; not needed here.
                return Err(Unsupported("single-field interval set".into()));
            }
            return Ok((self.fields[0].encode(parts[0])?, None));
        }
        // Concatenations: every field padded to 32-bit registers.
        let (mut start, mut end) = (Vec::new(), Vec::new());
        for (kind, part) in self.fields.iter().zip(parts) {
            let (lo, hi) = if part.get("prefix").is_some() {
                if !self.interval {
                    return Err(Unsupported(format!("prefix {part} in a set without intervals")));
                }
                kind.prefix_bounds(part)?
            } else {
                let v = kind.encode(part)?;
                (v.clone(), v)
            };
            for (out, bytes) in [(&mut start, lo), (&mut end, hi)] {
                let padded = bytes.len().div_ceil(4) * 4;
                out.extend_from_slice(&bytes);
                out.resize(out.len() + padded - bytes.len(), 0);
            }
        }
        Ok((start, self.interval.then_some(end)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scalars_become_kernel_bytes() {
        assert_eq!(Kind::Ipv4.encode(&json!("10.1.0.5")).unwrap(), [10, 1, 0, 5]);
        assert_eq!(Kind::Service.encode(&json!(8080)).unwrap(), [0x1f, 0x90]);
        assert_eq!(Kind::Proto.encode(&json!("udp")).unwrap(), [17]);
        assert_eq!(Kind::NfProto.encode(&json!("ipv6")).unwrap(), [10]);
        assert_eq!(Kind::Ether.encode(&json!("0a:58:0a:01:00:05")).unwrap(), [0x0a, 0x58, 0x0a, 1, 0, 5]);
        let name = Kind::IfName.encode(&json!("veth1")).unwrap();
        assert_eq!((&name[..5], name.len()), (&b"veth1"[..], 16));
        for (kind, bad) in [(Kind::IfName, json!("veth*")), (Kind::Service, json!(70000)), (Kind::Ipv4, json!("::1"))] {
            assert!(kind.encode(&bad).is_err(), "{kind:?} {bad}");
        }
    }

    #[test]
    fn masks_and_prefix_bounds() {
        assert_eq!(prefix_mask(4, 25), [0xff, 0xff, 0xff, 0x80]);
        assert_eq!(prefix_mask(4, 0), [0, 0, 0, 0]);
        let (lo, hi) = Kind::Ipv4.prefix_bounds(&json!({"prefix": {"addr": "10.88.0.7", "len": 24}})).unwrap();
        assert_eq!((lo, hi), (vec![10, 88, 0, 0], vec![10, 88, 0, 255]));
    }

    #[test]
    fn concatenated_keys_are_padded_per_field() {
        let spec = SetSpec { fields: vec![Kind::Ipv4, Kind::Proto, Kind::Service], interval: false, verdicts: true };
        let (key, end) = spec.key(&json!({"concat": ["192.0.2.1", "udp", 5353]})).unwrap();
        assert_eq!(key, [192, 0, 2, 1, 17, 0, 0, 0, 0x14, 0xe9, 0, 0]);
        assert_eq!(end, None);
        let snat = SetSpec { fields: vec![Kind::Ipv4, Kind::Ipv4], interval: true, verdicts: false };
        let (key, end) =
            snat.key(&json!({"concat": [{"prefix": {"addr": "10.88.0.0", "len": 24}}, "10.88.0.5"]})).unwrap();
        assert_eq!(key, [10, 88, 0, 0, 10, 88, 0, 5]);
        assert_eq!(end.unwrap(), [10, 88, 0, 255, 10, 88, 0, 5]);
        assert!(spec.key(&json!({"concat": ["192.0.2.1", "udp"]})).is_err());
    }

    #[test]
    fn key_types_round_trip() {
        let spec = SetSpec { fields: vec![Kind::Ipv4, Kind::Proto, Kind::Service], interval: false, verdicts: true };
        assert_eq!((spec.key_type(), spec.key_len()), (0x730d, 12));
        assert_eq!(SetSpec::fields_of(0x730d).unwrap(), spec.fields);
        assert_eq!(SetSpec::fields_of(41).unwrap(), [Kind::IfName]);
        assert!(SetSpec::fields_of(0x3e).is_none());
        for kind in [Kind::Ipv4, Kind::Ipv6, Kind::Service, Kind::Proto, Kind::Ether, Kind::IfName] {
            let v = match kind {
                Kind::Ipv4 => json!("10.0.0.1"),
                Kind::Ipv6 => json!("fd00::1"),
                Kind::Service => json!(8080),
                Kind::Proto => json!("udp"),
                Kind::Ether => json!("0a:58:0a:01:00:05"),
                _ => json!("veth1"),
            };
            assert_eq!(kind.decode(&kind.encode(&v).unwrap()).unwrap(), v);
        }
    }

    #[test]
    fn declarations_are_read() {
        let decl =
            json!({"family": "inet", "name": "hostport", "type": ["inet_proto", "inet_service"], "map": "verdict"});
        let spec = SetSpec::from_declaration(&decl, true).unwrap();
        assert_eq!((spec.fields, spec.interval, spec.verdicts), (vec![Kind::Proto, Kind::Service], false, true));
        let set = json!({"type": ["ipv4_addr", "ipv4_addr"], "flags": ["interval"]});
        assert!(SetSpec::from_declaration(&set, false).unwrap().interval);
        assert!(SetSpec::from_declaration(&json!({"type": "ct_state"}), false).is_none());
    }
}
