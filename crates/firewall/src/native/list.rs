//! Listings of one table, one chain, or the table names, read from nf_tables dumps in the shape
//! `nft -j list` prints them (the objects and expressions this crate's tables hold), so the
//! listing's readers in [`crate::nft`] work the same with or without the `nft` program.
//!
//! A listing takes several dumps (table, sets, their elements, chains, rules); the ruleset's
//! generation is read before and after, and the listing is taken again when another process
//! changed the ruleset in between, as nft does. The generation counts changes to *any* table of
//! the namespace, so on a node where other tables change all the time (a thousand transactions a
//! second in the test) a whole listing rarely fits between two of them: a listing is then also
//! accepted when it equals the one taken just before it (handles included), since a torn listing
//! would have to be torn the same way twice (set elements compared in a sorted order). A dump the
//! kernel flags interrupted is asked again on its own a few times; one that stays interrupted
//! (its chunks straddled a change to some table) is kept and the listing judged the same way.

use super::decode;
use super::msg::{self, Attrs, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, k, message, nft_type};
use super::value::{Kind, SetSpec};
use super::{Native, NativeError, Unsupported};
use serde_json::{Value, json};

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_DUMP_INTR: u16 = 0x10;
const ENOENT: i32 = 2;
const EINTR: i32 = 4;
const NFT_SET_ANONYMOUS: u32 = 0x1;
/// How long a listing is taken again after concurrent changes. A node where many attachments
/// come and go at once (the soak's eight workers) changes the ruleset between a listing's dumps
/// often; nft retries without bound, this gives up after a few seconds of trying.
const RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(5);
/// How many times one dump is asked again when the kernel flags it interrupted, before its
/// messages are kept and the listing is judged by comparison with the next one.
const DUMP_TRIES: u32 = 3;

/// One message of an answer: its family (from nfgenmsg) and attributes.
type Reply = (u8, Vec<u8>);

fn family_name(family: u8) -> Option<&'static str> {
    Some(match family {
        k::NFPROTO_INET => "inet",
        k::NFPROTO_IPV4 => "ip",
        k::NFPROTO_IPV6 => "ip6",
        k::NFPROTO_BRIDGE => "bridge",
        k::NFPROTO_ARP => "arp",
        k::NFPROTO_NETDEV => "netdev",
        _ => return None,
    })
}

fn hook_name(num: u32) -> &'static str {
    ["prerouting", "input", "forward", "output", "postrouting"].get(num as usize).copied().unwrap_or("ingress")
}

impl Native {
    /// One GET request (a dump, or one object with an acknowledgement): the answer's messages, or
    /// the errno the kernel refused it with. A dump flagged interrupted is asked again a few
    /// times; if it stays interrupted its messages are kept and the listing marked torn.
    fn get(&mut self, kind: u16, dump: bool, family: u8, attrs: Attrs) -> Result<Result<Vec<Reply>, i32>, NativeError> {
        for attempt in 1.. {
            match self.get_once(kind, dump, family, attrs.clone())? {
                Ok((_, true)) if attempt < DUMP_TRIES => continue,
                Ok((replies, interrupted)) => {
                    self.torn |= interrupted;
                    return Ok(Ok(replies));
                }
                Err(errno) => return Ok(Err(errno)),
            }
        }
        unreachable!("the loop returns")
    }

    /// One GET: the messages and whether the kernel flagged the dump interrupted.
    fn get_once(
        &mut self,
        kind: u16,
        dump: bool,
        family: u8,
        attrs: Attrs,
    ) -> Result<Result<(Vec<Reply>, bool), i32>, NativeError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { NLM_F_ACK };
        let request = message(nft_type(kind), flags, seq, family, 0, attrs.into_bytes());
        self.sock.send(&request, 0).map_err(NativeError::Io)?;
        let mut out = Vec::new();
        let mut interrupted = false;
        loop {
            let (data, _) = self.sock.recv_from_full().map_err(NativeError::Io)?;
            let mut off = 0;
            while off + 16 <= data.len() {
                let len = u32::from_ne_bytes(data[off..off + 4].try_into().expect("4 bytes")) as usize;
                let kind = u16::from_ne_bytes([data[off + 4], data[off + 5]]);
                let flags = u16::from_ne_bytes([data[off + 6], data[off + 7]]);
                let got = u32::from_ne_bytes(data[off + 8..off + 12].try_into().expect("4 bytes"));
                if len < 16 || off + len > data.len() {
                    return Err(NativeError::Io(std::io::Error::other("malformed netlink reply")));
                }
                let body = &data[off + 16..off + len];
                off += (len + 3) & !3;
                if got != seq {
                    continue;
                }
                interrupted |= flags & NLM_F_DUMP_INTR != 0;
                match kind {
                    NLMSG_ERROR if body.len() >= 4 => {
                        let errno = -i32::from_ne_bytes(body[..4].try_into().expect("4 bytes"));
                        return Ok(if errno != 0 { Err(errno) } else { Ok((out, interrupted)) });
                    }
                    NLMSG_DONE => return Ok(Ok((out, interrupted))),
                    _ if body.len() >= 4 => out.push((body[0], body[4..].to_vec())),
                    _ => {}
                }
            }
        }
    }

    /// A GET whose refusal is an error (ENOENT included: the object vanished meanwhile).
    fn get_all(&mut self, kind: u16, dump: bool, family: u8, attrs: Attrs) -> Result<Vec<Reply>, NativeError> {
        self.get(kind, dump, family, attrs)?.map_err(|errno| NativeError::Kernel {
            command: "listing".into(),
            errno,
            ext_ack: None,
        })
    }

    /// Whether a table exists: one GETTABLE, answered ENOENT when there is none.
    pub fn has_table(&mut self, family: u8, name: &str) -> Result<bool, NativeError> {
        let mut a = Attrs::default();
        a.str(k::NFTA_TABLE_NAME, name);
        self.exists(k::NFT_MSG_GETTABLE, family, a)
    }

    /// Whether a chain exists: one GETCHAIN.
    pub fn has_chain(&mut self, family: u8, table: &str, chain: &str) -> Result<bool, NativeError> {
        let mut a = Attrs::default();
        a.str(k::NFTA_CHAIN_TABLE, table).str(k::NFTA_CHAIN_NAME, chain);
        self.exists(k::NFT_MSG_GETCHAIN, family, a)
    }

    fn exists(&mut self, kind: u16, family: u8, attrs: Attrs) -> Result<bool, NativeError> {
        match self.get(kind, false, family, attrs)? {
            Ok(found) => Ok(!found.is_empty()),
            Err(ENOENT) => Ok(false),
            Err(errno) => Err(NativeError::Kernel { command: "probe".into(), errno, ext_ack: None }),
        }
    }

    fn generation(&mut self) -> Result<u32, NativeError> {
        let replies = self.get_all(k::NFT_MSG_GETGEN, false, 0, Attrs::default())?;
        Ok(replies.iter().find_map(|(_, a)| msg::get_be32(a, k::NFTA_GEN_ID)).unwrap_or(0))
    }

    /// What `nft -j list <what...>` prints, for `tables`, `table FAMILY NAME` and
    /// `chain FAMILY TABLE NAME`; `None` when the table or chain does not exist.
    pub fn list(&mut self, what: &[&str]) -> Result<Option<Value>, NativeError> {
        let mut last = Err(NativeError::Kernel { command: "listing".into(), errno: EINTR, ext_ack: None });
        let mut previous: Option<Option<Value>> = None;
        let started = std::time::Instant::now();
        for attempt in 0u64.. {
            if attempt > 0 && started.elapsed() > RETRY_FOR {
                break;
            }
            if attempt >= 2 {
                // Give the writers that interrupted us a moment; jittered so that listers that
                // collided do not collide again.
                let jitter = u64::from(std::process::id() % 7) + attempt.min(10);
                std::thread::sleep(std::time::Duration::from_micros(jitter * 300));
            }
            self.torn = false;
            let before = self.generation()?;
            let listing = match what {
                ["tables"] => self.tables().map(Some),
                ["table", fam, name] => self.table(fam, name),
                ["chain", fam, table, name] => self.chain(fam, table, name),
                _ => Err(NativeError::Unsupported(Unsupported(format!("list {}", what.join(" "))))),
            };
            match listing {
                Err(NativeError::Kernel { errno: EINTR | ENOENT, .. }) => previous = None,
                Ok(taken) if self.torn || self.generation()? != before => {
                    let seen = taken.as_ref().map(in_order);
                    if previous.as_ref() == Some(&seen) {
                        return Ok(taken);
                    }
                    previous = Some(seen);
                    last = Ok(taken);
                    continue;
                }
                done => return done,
            }
            last = listing;
        }
        match last {
            // Every listing differed from the one before: what the table holds changed all
            // along, and no consistent picture was seen.
            Ok(_) => Err(NativeError::Kernel { command: "listing".into(), errno: EINTR, ext_ack: None }),
            failed => failed,
        }
    }

    fn tables(&mut self) -> Result<Value, NativeError> {
        let mut objects = vec![metainfo()];
        for (fam, attrs) in self.get_all(k::NFT_MSG_GETTABLE, true, 0, Attrs::default())? {
            let Some(family) = family_name(fam) else { continue };
            objects.push(table_json(family, &attrs));
        }
        Ok(json!({ "nftables": objects }))
    }

    fn table(&mut self, family: &str, name: &str) -> Result<Option<Value>, NativeError> {
        let fam = super::family(family).map_err(NativeError::Unsupported)?;
        let mut a = Attrs::default();
        a.str(k::NFTA_TABLE_NAME, name);
        let table = match self.get(k::NFT_MSG_GETTABLE, false, fam, a)? {
            Ok(replies) => replies,
            Err(ENOENT) => return Ok(None),
            Err(errno) => {
                return Err(NativeError::Kernel {
                    command: format!("list table {family} {name}"),
                    errno,
                    ext_ack: None,
                });
            }
        };
        let mut objects = vec![metainfo()];
        objects.extend(table.iter().map(|(_, attrs)| table_json(family, attrs)));

        let mut a = Attrs::default();
        a.str(k::NFTA_SET_TABLE, name);
        for (_, set) in self.get_all(k::NFT_MSG_GETSET, true, fam, a)? {
            if msg::get_str(&set, k::NFTA_SET_TABLE).as_deref() != Some(name)
                || msg::get_be32(&set, k::NFTA_SET_FLAGS).unwrap_or(0) & NFT_SET_ANONYMOUS != 0
            {
                continue;
            }
            let set_name = msg::get_str(&set, k::NFTA_SET_NAME).unwrap_or_default();
            let mut a = Attrs::default();
            a.str(k::NFTA_SET_ELEM_LIST_TABLE, name).str(k::NFTA_SET_ELEM_LIST_SET, &set_name);
            let elements = self.get_all(k::NFT_MSG_GETSETELEM, true, fam, a)?;
            objects.push(set_json(family, &set, &elements));
        }

        let chains: Vec<Vec<u8>> = self
            .get_all(k::NFT_MSG_GETCHAIN, true, fam, Attrs::default())?
            .into_iter()
            .map(|(_, attrs)| attrs)
            .filter(|c| msg::get_str(c, k::NFTA_CHAIN_TABLE).as_deref() == Some(name))
            .collect();
        objects.extend(chains.iter().map(|c| chain_json(family, c)));

        let mut a = Attrs::default();
        a.str(k::NFTA_RULE_TABLE, name);
        // nft prints rules chain by chain, in the order of the chains (the dump's order within
        // a chain). Grouped once: a node's table holds a chain or two per attachment.
        let mut by_chain: std::collections::HashMap<String, Vec<Vec<u8>>> = std::collections::HashMap::new();
        for (_, rule) in self.get_all(k::NFT_MSG_GETRULE, true, fam, a)? {
            if msg::get_str(&rule, k::NFTA_RULE_TABLE).as_deref() == Some(name)
                && let Some(chain) = msg::get_str(&rule, k::NFTA_RULE_CHAIN)
            {
                by_chain.entry(chain).or_default().push(rule);
            }
        }
        for chain in &chains {
            let rules = msg::get_str(chain, k::NFTA_CHAIN_NAME).and_then(|c| by_chain.remove(&c)).unwrap_or_default();
            objects.extend(rules.iter().map(|rule| rule_json(family, fam, rule)));
        }
        Ok(Some(json!({ "nftables": objects })))
    }

    fn chain(&mut self, family: &str, table: &str, name: &str) -> Result<Option<Value>, NativeError> {
        let fam = super::family(family).map_err(NativeError::Unsupported)?;
        let mut a = Attrs::default();
        a.str(k::NFTA_CHAIN_TABLE, table).str(k::NFTA_CHAIN_NAME, name);
        let chain = match self.get(k::NFT_MSG_GETCHAIN, false, fam, a)? {
            Ok(replies) => replies,
            Err(ENOENT) => return Ok(None),
            Err(errno) => {
                return Err(NativeError::Kernel {
                    command: format!("list chain {family} {table} {name}"),
                    errno,
                    ext_ack: None,
                });
            }
        };
        let mut objects = vec![metainfo()];
        objects.extend(chain.iter().map(|(_, attrs)| chain_json(family, attrs)));
        let mut a = Attrs::default();
        a.str(k::NFTA_RULE_TABLE, table).str(k::NFTA_RULE_CHAIN, name);
        for (_, rule) in self.get_all(k::NFT_MSG_GETRULE, true, fam, a)? {
            if msg::get_str(&rule, k::NFTA_RULE_CHAIN).as_deref() == Some(name) {
                objects.push(rule_json(family, fam, &rule));
            }
        }
        Ok(Some(json!({ "nftables": objects })))
    }
}

/// A listing with each set's elements sorted, for comparing two listings: a hash set's dump walks
/// its buckets in an order that changes from one dump to the next.
fn in_order(listing: &Value) -> Value {
    let mut listing = listing.clone();
    for object in listing["nftables"].as_array_mut().into_iter().flatten() {
        for kind in ["set", "map"] {
            if let Some(elem) = object.get_mut(kind).and_then(|s| s.get_mut("elem")).and_then(Value::as_array_mut) {
                elem.sort_by_cached_key(Value::to_string);
            }
        }
    }
    listing
}

fn metainfo() -> Value {
    json!({"metainfo": {"json_schema_version": 1}})
}

fn table_json(family: &str, a: &[u8]) -> Value {
    json!({"table": {
        "family": family,
        "name": msg::get_str(a, k::NFTA_TABLE_NAME),
        "handle": msg::get_be64(a, k::NFTA_TABLE_HANDLE),
    }})
}

fn chain_json(family: &str, a: &[u8]) -> Value {
    let mut c = json!({
        "family": family,
        "table": msg::get_str(a, k::NFTA_CHAIN_TABLE),
        "name": msg::get_str(a, k::NFTA_CHAIN_NAME),
        "handle": msg::get_be64(a, k::NFTA_CHAIN_HANDLE),
    });
    if let Some(hook) = msg::find(a, k::NFTA_CHAIN_HOOK) {
        c["type"] = json!(msg::get_str(a, k::NFTA_CHAIN_TYPE));
        c["hook"] = json!(hook_name(msg::get_be32(hook, k::NFTA_HOOK_HOOKNUM).unwrap_or(0)));
        if let Some(dev) = msg::get_str(hook, k::NFTA_HOOK_DEV) {
            c["dev"] = json!(dev);
        }
        c["prio"] = json!(msg::get_be32(hook, k::NFTA_HOOK_PRIORITY).unwrap_or(0) as i32);
        c["policy"] = json!(match msg::get_be32(a, k::NFTA_CHAIN_POLICY) {
            Some(0) => "drop",
            _ => "accept",
        });
    }
    json!({ "chain": c })
}

fn rule_json(family: &str, fam: u8, a: &[u8]) -> Value {
    let mut r = json!({
        "family": family,
        "table": msg::get_str(a, k::NFTA_RULE_TABLE),
        "chain": msg::get_str(a, k::NFTA_RULE_CHAIN),
        "handle": msg::get_be64(a, k::NFTA_RULE_HANDLE),
    });
    if let Some(c) = msg::find(a, k::NFTA_RULE_USERDATA).and_then(|u| msg::udata_comment(u, k::UDATA_COMMENT)) {
        r["comment"] = json!(c);
    }
    r["expr"] = Value::from(decode::rule(fam, msg::find(a, k::NFTA_RULE_EXPRESSIONS).unwrap_or(&[])));
    json!({ "rule": r })
}

fn hex(bytes: &[u8]) -> Value {
    json!(format!("0x{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()))
}

fn set_json(family: &str, a: &[u8], elements: &[Reply]) -> Value {
    let flags = msg::get_be32(a, k::NFTA_SET_FLAGS).unwrap_or(0);
    let key_type = msg::get_be32(a, k::NFTA_SET_KEY_TYPE).unwrap_or(0);
    let fields = SetSpec::fields_of(key_type);
    let type_json = match &fields {
        Some(f) if f.len() == 1 => json!(f[0].type_name()),
        Some(f) => Value::from(f.iter().map(|k| k.type_name()).collect::<Vec<_>>()),
        None => json!(format!("type {key_type}")),
    };
    let is_map = flags & k::NFT_SET_MAP != 0;
    let mut s = json!({
        "family": family,
        "name": msg::get_str(a, k::NFTA_SET_NAME),
        "table": msg::get_str(a, k::NFTA_SET_TABLE),
        "type": type_json,
        "handle": msg::get_be64(a, k::NFTA_SET_HANDLE),
    });
    if is_map {
        s["map"] = match msg::get_be32(a, k::NFTA_SET_DATA_TYPE) {
            Some(k::NFT_DATA_VERDICT) => json!("verdict"),
            Some(t) => json!(format!("type {t}")),
            None => Value::Null,
        };
    }
    let named: Vec<&str> =
        [(k::NFT_SET_CONSTANT, "constant"), (k::NFT_SET_INTERVAL, "interval"), (k::NFT_SET_TIMEOUT, "timeout")]
            .iter()
            .filter(|(bit, _)| flags & bit != 0)
            .map(|(_, n)| *n)
            .collect();
    if !named.is_empty() {
        s["flags"] = json!(named);
    }
    let elem: Vec<Value> = elements
        .iter()
        .filter_map(|(_, list)| msg::find(list, k::NFTA_SET_ELEM_LIST_ELEMENTS))
        .flat_map(msg::parse)
        .filter_map(|(_, e)| element(fields.as_deref(), is_map, e))
        .collect();
    if !elem.is_empty() {
        s["elem"] = Value::from(elem);
    }
    json!({ if is_map { "map" } else { "set" }: s })
}

/// One field of a key, from its first and (for intervals) last value.
fn field_value(kind: Kind, start: &[u8], end: &[u8]) -> Option<Value> {
    if start == end {
        return kind.decode(start);
    }
    if matches!(kind, Kind::Ipv4 | Kind::Ipv6) {
        let width = kind.width();
        let bits = (0..=width as u32 * 8).find(|b| {
            let mask = super::value::prefix_mask(width, *b);
            start.iter().zip(&mask).map(|(s, m)| s & m).eq(start.iter().copied())
                && start.iter().zip(end).zip(&mask).all(|((s, e), m)| s | !m == *e)
        });
        if let Some(len) = bits {
            return Some(json!({"prefix": {"addr": kind.decode(start)?, "len": len}}));
        }
    }
    Some(json!({"range": [kind.decode(start)?, kind.decode(end)?]}))
}

fn element(fields: Option<&[Kind]>, is_map: bool, e: &[u8]) -> Option<Value> {
    if msg::get_be32(e, k::NFTA_SET_ELEM_FLAGS).unwrap_or(0) & k::NFT_SET_ELEM_INTERVAL_END != 0 {
        return None;
    }
    let key = msg::find(msg::find(e, k::NFTA_SET_ELEM_KEY)?, k::NFTA_DATA_VALUE)?;
    let key_end = msg::find(e, k::NFTA_SET_ELEM_KEY_END).and_then(|d| msg::find(d, k::NFTA_DATA_VALUE)).unwrap_or(key);
    let value = match fields {
        Some([one]) => field_value(*one, key, key_end).unwrap_or_else(|| hex(key)),
        Some(many) => {
            let mut parts = Vec::new();
            let mut off = 0;
            for kind in many {
                let w = kind.width();
                let (s, t) = (key.get(off..off + w)?, key_end.get(off..off + w)?);
                parts.push(field_value(*kind, s, t)?);
                off += w.div_ceil(4) * 4;
            }
            json!({ "concat": parts })
        }
        None => hex(key),
    };
    let value = match msg::find(e, k::NFTA_SET_ELEM_USERDATA).and_then(|u| msg::udata_comment(u, k::UDATA_COMMENT)) {
        Some(c) => json!({"elem": {"val": value, "comment": c}}),
        None => value,
    };
    if !is_map {
        return Some(value);
    }
    let data = msg::find(e, k::NFTA_SET_ELEM_DATA)?;
    let data =
        decode::verdict_data(data).or_else(|| msg::find(data, k::NFTA_DATA_VALUE).map(hex)).unwrap_or(Value::Null);
    Some(json!([value, data]))
}
