//! nf_tables over netlink, without the `nft` program: every batch the plugins apply (tables,
//! base and regular chains, set and map declarations, rules, elements) and the listings they read
//! back (`Native::list`: one table, one chain, the table names, in `nft -j`'s JSON shape).
//!
//! Starting `nft` costs a process, its shared libraries and a read of the ruleset, several
//! milliseconds per invocation, and some hosts (Talos, Bottlerocket, minimal images) have no
//! `nft` at all. This compiles nft's JSON (the same documents the golden tests pin down) the way
//! libnftables does; tests compare the result with what `nft` itself installs, expression by
//! expression, and our listings with nft's. Anything it does not know (rarer matches, from
//! portmap's conditions) makes the whole batch [`Unsupported`], and the caller hands it to `nft`
//! instead: never a partial or guessed rule.
//!
//! The socket stays open as long as the [`Native`] value. Closing an nfnetlink socket right after
//! a transaction that deleted objects waits for an RCU grace period (the kernel flushes pending
//! destruction first, holding the commit mutex), so a plugin that deletes and then does other slow
//! work (removing a veth) keeps it open until the end, when the grace period has passed, and asks
//! its probes on it (`nft::Getter`); one whose deletion is its last act hands it to
//! [`crate::Nft::close_without_waiting`].

pub mod decode;
mod expr;
mod list;
pub mod msg;
pub mod value;

use msg::{Attrs, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_NONREC, NLM_F_REQUEST, k, message, nft_type};
use serde_json::Value;
use std::collections::HashMap;
use value::SetSpec;

/// Something this encoder does not produce; the batch goes to `nft`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

/// Why a batch was not applied.
#[derive(Debug)]
pub enum NativeError {
    Unsupported(Unsupported),
    /// The kernel refused a command; the transaction was rolled back as a whole.
    Kernel {
        command: String,
        errno: i32,
        ext_ack: Option<String>,
    },
    Io(std::io::Error),
}

impl std::fmt::Display for NativeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NativeError::Unsupported(u) => write!(f, "not supported natively: {}", u.0),
            NativeError::Kernel { command, errno, ext_ack } => {
                write!(f, "{command}: {}", std::io::Error::from_raw_os_error(*errno))?;
                if let Some(m) = ext_ack {
                    write!(f, " ({m})")?;
                }
                Ok(())
            }
            NativeError::Io(e) => write!(f, "nfnetlink socket: {e}"),
        }
    }
}

impl std::error::Error for NativeError {}

type SetSpecs = HashMap<(String, String, String), SetSpec>;

/// The sets and maps whose elements can be encoded, by (family, table, name): declared at once,
/// or per table on first use ([`Schema::declare_table`]).
#[derive(Debug, Default)]
pub struct Schema {
    declared: SetSpecs,
    tables: Vec<LazyTable>,
}

/// A table whose declarations are built the first time an element of it is encoded.
#[derive(Debug)]
struct LazyTable {
    family: &'static str,
    table: &'static str,
    objects: fn() -> Vec<Value>,
    specs: std::sync::OnceLock<SetSpecs>,
}

impl Schema {
    /// Learns the sets and maps declared in `objects` (`{"set": ...}` / `{"map": ...}`).
    pub fn declare<'a>(&mut self, objects: impl IntoIterator<Item = &'a Value>) {
        declare_into(&mut self.declared, objects);
    }

    /// Learns the sets and maps of `family table` from `objects` when one of them is first
    /// needed: a table's description is a few hundred JSON values, and a verb touches one or two
    /// of the tables a plugin knows (building all of them was 0.2 ms of portmap's ADD).
    pub fn declare_table(&mut self, family: &'static str, table: &'static str, objects: fn() -> Vec<Value>) {
        self.tables.push(LazyTable { family, table, objects, specs: std::sync::OnceLock::new() });
    }

    pub(crate) fn get(&self, family: &str, table: &str, name: &str) -> Option<&SetSpec> {
        let key = (family.to_string(), table.to_string(), name.to_string());
        if let Some(spec) = self.declared.get(&key) {
            return Some(spec);
        }
        let lazy = self.tables.iter().find(|t| t.family == family && t.table == table)?;
        lazy.specs
            .get_or_init(|| {
                let mut specs = SetSpecs::new();
                declare_into(&mut specs, &(lazy.objects)());
                specs
            })
            .get(&key)
    }
}

fn declare_into<'a>(specs: &mut SetSpecs, objects: impl IntoIterator<Item = &'a Value>) {
    for object in objects {
        for (kind, is_map) in [("set", false), ("map", true)] {
            let Some(body) = object.get(kind) else { continue };
            let (Some(f), Some(t), Some(n)) = (body["family"].as_str(), body["table"].as_str(), body["name"].as_str())
            else {
                continue;
            };
            if let Some(spec) = SetSpec::from_declaration(body, is_map) {
                specs.insert((f.into(), t.into(), n.into()), spec);
            }
        }
    }
}

fn family(name: &str) -> Result<u8, Unsupported> {
    Ok(match name {
        "inet" => k::NFPROTO_INET,
        "ip" => k::NFPROTO_IPV4,
        "ip6" => k::NFPROTO_IPV6,
        "bridge" => k::NFPROTO_BRIDGE,
        "arp" => k::NFPROTO_ARP,
        "netdev" => k::NFPROTO_NETDEV,
        other => return Err(Unsupported(format!("family {other}"))),
    })
}

fn text<'a>(body: &'a Value, key: &str) -> Result<&'a str, Unsupported> {
    body[key].as_str().ok_or_else(|| Unsupported(format!("{key} missing in {body}")))
}

/// One compiled command: its message type, flags, family and attributes, and what to call it in
/// an error.
struct Command {
    kind: u16,
    flags: u16,
    family: u8,
    attrs: Vec<u8>,
    what: String,
}

/// Compiles a batch (`{"nftables": [...]}`) into commands, or says what it cannot do.
fn compile(batch: &Value, schema: &Schema) -> Result<Vec<Command>, Unsupported> {
    let commands = batch["nftables"].as_array().ok_or_else(|| Unsupported("not a batch".into()))?;
    commands.iter().enumerate().map(|(i, c)| compile_one(c, schema, i as u32 + 1)).collect()
}

/// A netfilter hook's number by nft's name (the same in the ip, ip6, inet and bridge families).
fn hook(name: &str) -> Result<u32, Unsupported> {
    Ok(match name {
        "prerouting" => 0,
        "input" => 1,
        "forward" => 2,
        "output" => 3,
        "postrouting" => 4,
        other => return Err(Unsupported(format!("hook {other}"))),
    })
}

/// A chain's attributes: its name, and for a base chain its type, hook, priority and policy.
fn chain_attrs(a: &mut Attrs, fam: u8, body: &Value) -> Result<(), Unsupported> {
    a.str(k::NFTA_CHAIN_TABLE, text(body, "table")?).str(k::NFTA_CHAIN_NAME, text(body, "name")?);
    let keys: Vec<&str> = body.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
    if let Some(extra) =
        keys.iter().find(|key| !matches!(**key, "family" | "table" | "name" | "type" | "hook" | "prio" | "policy"))
    {
        return Err(Unsupported(format!("chain option {extra}")));
    }
    if !keys.iter().any(|key| matches!(*key, "type" | "hook" | "prio" | "policy")) {
        return Ok(());
    }
    if !matches!(fam, k::NFPROTO_INET | k::NFPROTO_IPV4 | k::NFPROTO_IPV6 | k::NFPROTO_BRIDGE) {
        return Err(Unsupported(format!("base chain in family {fam}")));
    }
    let kind = text(body, "type")?;
    if !matches!(kind, "filter" | "nat" | "route") {
        return Err(Unsupported(format!("chain type {kind}")));
    }
    let hooknum = hook(text(body, "hook")?)?;
    let prio = body["prio"]
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| Unsupported(format!("chain priority {}", body["prio"])))?;
    a.str(k::NFTA_CHAIN_TYPE, kind);
    match body.get("policy").map(|p| p.as_str()) {
        None => {}
        Some(Some("accept")) => {
            a.be32(k::NFTA_CHAIN_POLICY, k::NF_ACCEPT as u32);
        }
        Some(Some("drop")) => {
            a.be32(k::NFTA_CHAIN_POLICY, k::NF_DROP as u32);
        }
        Some(_) => return Err(Unsupported(format!("chain policy {}", body["policy"]))),
    }
    a.begin(k::NFTA_CHAIN_HOOK).be32(k::NFTA_HOOK_HOOKNUM, hooknum).be32(k::NFTA_HOOK_PRIORITY, prio as u32).end();
    Ok(())
}

/// A set or map declaration as nft 1.0.6 sends it (see [`SetSpec::udata`]).
fn set_attrs(a: &mut Attrs, body: &Value, is_map: bool, id: u32) -> Result<(), Unsupported> {
    let keys: Vec<&str> = body.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
    if let Some(extra) =
        keys.iter().find(|key| !matches!(**key, "family" | "table" | "name" | "type" | "map" | "flags"))
    {
        return Err(Unsupported(format!("set option {extra}")));
    }
    if let Some(flag) = body["flags"].as_array().into_iter().flatten().find(|f| *f != "interval") {
        return Err(Unsupported(format!("set flag {flag}")));
    }
    let spec = SetSpec::from_declaration(body, is_map).ok_or_else(|| Unsupported(format!("set declaration {body}")))?;
    if spec.interval && spec.fields.len() == 1 {
        return Err(Unsupported("single-field interval set".into()));
    }
    let udata = spec.udata()?;
    let mut flags = 0;
    if spec.verdicts {
        flags |= k::NFT_SET_MAP;
    }
    if spec.interval {
        flags |= k::NFT_SET_INTERVAL | k::NFT_SET_CONCAT;
    }
    a.str(k::NFTA_SET_TABLE, text(body, "table")?)
        .str(k::NFTA_SET_NAME, text(body, "name")?)
        .be32(k::NFTA_SET_FLAGS, flags)
        .be32(k::NFTA_SET_KEY_TYPE, spec.key_type())
        .be32(k::NFTA_SET_KEY_LEN, spec.key_len());
    if spec.verdicts {
        a.be32(k::NFTA_SET_DATA_TYPE, k::NFT_DATA_VERDICT).be32(k::NFTA_SET_DATA_LEN, 0);
    }
    a.be32(k::NFTA_SET_ID, id);
    if spec.interval {
        // The field lengths let the kernel pick its concatenated-range backend (pipapo).
        a.begin(k::NFTA_SET_DESC).begin(k::NFTA_SET_DESC_CONCAT);
        for f in &spec.fields {
            a.begin(k::NFTA_LIST_ELEM).be32(k::NFTA_SET_FIELD_LEN, f.width() as u32).end();
        }
        a.end().end();
    }
    a.bytes(k::NFTA_SET_USERDATA, &udata);
    Ok(())
}

fn compile_one(command: &Value, schema: &Schema, id: u32) -> Result<Command, Unsupported> {
    let (verb, object) = command
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.iter().next())
        .ok_or_else(|| Unsupported(format!("command {command}")))?;
    let (kind, body) = object
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.iter().next())
        .ok_or_else(|| Unsupported(format!("object {object}")))?;
    let fam_name = text(body, "family")?;
    let fam = family(fam_name)?;
    let mut a = Attrs::default();
    let what = format!(
        "{verb} {kind} {fam_name} {} {}",
        body["table"].as_str().unwrap_or(""),
        body["name"].as_str().or(body["chain"].as_str()).unwrap_or("")
    );
    let (msg, flags) = match (verb.as_str(), kind.as_str()) {
        ("add", "table") => {
            if let Some(extra) =
                body.as_object().and_then(|o| o.keys().find(|key| !matches!(key.as_str(), "family" | "name")))
            {
                return Err(Unsupported(format!("table option {extra}")));
            }
            a.str(k::NFTA_TABLE_NAME, text(body, "name")?).be32(k::NFTA_TABLE_FLAGS, 0);
            (k::NFT_MSG_NEWTABLE, NLM_F_CREATE)
        }
        ("add", "chain") => {
            chain_attrs(&mut a, fam, body)?;
            (k::NFT_MSG_NEWCHAIN, NLM_F_CREATE)
        }
        ("add", kind @ ("set" | "map")) => {
            set_attrs(&mut a, body, kind == "map", id)?;
            (k::NFT_MSG_NEWSET, NLM_F_CREATE)
        }
        ("delete", "rule") => {
            // One rule, by the handle a listing showed (a holder's jump in a key chain).
            let handle = body["handle"].as_u64().ok_or_else(|| Unsupported(format!("rule without handle {body}")))?;
            a.str(k::NFTA_RULE_TABLE, text(body, "table")?)
                .str(k::NFTA_RULE_CHAIN, text(body, "chain")?)
                .be64(k::NFTA_RULE_HANDLE, handle);
            (k::NFT_MSG_DELRULE, 0)
        }
        ("delete", "chain") => {
            // Not recursive: a chain that still holds rules is refused (EBUSY), so a transaction
            // planned from a listing never deletes a rule added since (a key chain's new holder).
            // Every batch of ours flushes a chain it means to empty first.
            a.str(k::NFTA_CHAIN_TABLE, text(body, "table")?).str(k::NFTA_CHAIN_NAME, text(body, "name")?);
            (k::NFT_MSG_DELCHAIN, NLM_F_NONREC)
        }
        ("flush", "chain") => {
            a.str(k::NFTA_RULE_TABLE, text(body, "table")?).str(k::NFTA_RULE_CHAIN, text(body, "name")?);
            (k::NFT_MSG_DELRULE, 0)
        }
        ("add", "rule") => {
            a.str(k::NFTA_RULE_TABLE, text(body, "table")?).str(k::NFTA_RULE_CHAIN, text(body, "chain")?);
            let statements = body["expr"].as_array().ok_or_else(|| Unsupported(format!("rule {body}")))?;
            let exprs = expr::Rule::compile(fam, statements)?;
            let mut bytes = a.into_bytes();
            bytes.extend_from_slice(&exprs);
            a = Attrs::default();
            if let Some(c) = body.get("comment") {
                let udata =
                    c.as_str().and_then(msg::comment_udata).ok_or_else(|| Unsupported(format!("comment {c}")))?;
                a.bytes(k::NFTA_RULE_USERDATA, &udata);
            }
            bytes.extend_from_slice(&a.into_bytes());
            return Ok(Command {
                kind: nft_type(k::NFT_MSG_NEWRULE),
                flags: NLM_F_CREATE | NLM_F_APPEND,
                family: fam,
                attrs: bytes,
                what,
            });
        }
        (verb @ ("add" | "delete"), "element") => {
            let (table, name) = (text(body, "table")?, text(body, "name")?);
            let spec =
                schema.get(fam_name, table, name).ok_or_else(|| Unsupported(format!("undeclared set {name}")))?;
            a.str(k::NFTA_SET_ELEM_LIST_TABLE, table).str(k::NFTA_SET_ELEM_LIST_SET, name);
            a.begin(k::NFTA_SET_ELEM_LIST_ELEMENTS);
            let elements = body["elem"].as_array().ok_or_else(|| Unsupported(format!("elements {body}")))?;
            for element in elements {
                element_attrs(&mut a, spec, element, verb == "add")?;
            }
            a.end();
            if verb == "add" { (k::NFT_MSG_NEWSETELEM, NLM_F_CREATE) } else { (k::NFT_MSG_DELSETELEM, 0) }
        }
        _ => return Err(Unsupported(format!("{verb} {kind}"))),
    };
    Ok(Command { kind: nft_type(msg), flags, family: fam, attrs: a.into_bytes(), what })
}

/// One element: `key`, `{"elem": {"val": key, "comment": ...}}`, or `[key, verdict]` for maps.
fn element_attrs(a: &mut Attrs, spec: &SetSpec, element: &Value, with_data: bool) -> Result<(), Unsupported> {
    let (key, data) = match element.as_array() {
        Some(pair) if pair.len() == 2 => (&pair[0], Some(&pair[1])),
        Some(_) => return Err(Unsupported(format!("element {element}"))),
        None => (element, None),
    };
    let (key, comment) = match key.get("elem") {
        Some(e) => (&e["val"], e.get("comment").and_then(Value::as_str)),
        None => (key, None),
    };
    let (start, end) = spec.key(key)?;
    a.begin(k::NFTA_LIST_ELEM).value(k::NFTA_SET_ELEM_KEY, &start);
    if let Some(end) = end {
        a.value(k::NFTA_SET_ELEM_KEY_END, &end);
    }
    if spec.verdicts && with_data {
        let data = data.ok_or_else(|| Unsupported(format!("map element without data {element}")))?;
        let (code, target) = match (data.get("goto"), data.get("jump"), data.get("accept"), data.get("drop")) {
            (Some(g), _, _, _) => (k::NFT_GOTO, g["target"].as_str()),
            (_, Some(j), _, _) => (k::NFT_JUMP, j["target"].as_str()),
            (_, _, Some(_), _) => (k::NF_ACCEPT, None),
            (_, _, _, Some(_)) => (k::NF_DROP, None),
            _ => return Err(Unsupported(format!("element data {data}"))),
        };
        if matches!(code, k::NFT_GOTO | k::NFT_JUMP) && target.is_none() {
            return Err(Unsupported(format!("element data {data}")));
        }
        a.verdict(k::NFTA_SET_ELEM_DATA, code, target);
    } else if data.is_some() && !spec.verdicts {
        return Err(Unsupported(format!("data for a set element {element}")));
    }
    if let Some(c) = comment {
        let udata = msg::comment_udata(c).ok_or_else(|| Unsupported(format!("comment {c}")))?;
        a.bytes(k::NFTA_SET_ELEM_USERDATA, &udata);
    }
    a.end();
    Ok(())
}

/// An nfnetlink socket in the calling thread's network namespace, with extended acks and a
/// receive timeout: the kernel answers at once, and a silent one must not hang a plugin forever.
pub(crate) fn socket() -> std::io::Result<netlink_sys::Socket> {
    let mut sock = netlink_sys::Socket::new(netlink_sys::constants::NETLINK_NETFILTER)?;
    sock.bind_auto()?;
    sock.connect(&netlink_sys::SocketAddr::new(0, 0))?;
    let _ = sock.set_ext_ack(true);
    let _ = sock.set_cap_ack(true);
    let timeout = nix::libc::timeval { tv_sec: 10, tv_usec: 0 };
    // SAFETY: a valid socket and a timeval of the size given.
    unsafe {
        nix::libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            nix::libc::SOL_SOCKET,
            nix::libc::SO_RCVTIMEO,
            (&timeout as *const nix::libc::timeval).cast(),
            std::mem::size_of::<nix::libc::timeval>() as nix::libc::socklen_t,
        );
    }
    Ok(sock)
}

/// An nfnetlink socket for nf_tables transactions.
pub struct Native {
    sock: netlink_sys::Socket,
    seq: u32,
    /// A dump of the listing being taken came back flagged interrupted (see `list`).
    torn: bool,
}

/// Batches larger than this go to `nft` (a netlink message must fit the socket's send buffer).
const MAX_BATCH: usize = 128 * 1024;

impl Native {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> std::io::Result<Native> {
        let sock = socket()?;
        let seq = std::process::id().wrapping_shl(12);
        Ok(Native { sock, seq, torn: false })
    }

    /// The socket's descriptor, for [`crate::Nft::close_without_waiting`].
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.sock)
    }

    /// Applies `batch` as one transaction. Nothing is sent if any command is unsupported.
    pub fn apply(&mut self, batch: &Value, schema: &Schema) -> Result<(), NativeError> {
        let commands = compile(batch, schema).map_err(NativeError::Unsupported)?;
        if commands.is_empty() {
            return Ok(());
        }
        let first = self.seq.wrapping_add(1);
        let mut buf = message(k::NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, first, 0, k::NFNL_SUBSYS_NFTABLES, Vec::new());
        for (i, c) in commands.iter().enumerate() {
            let seq = first.wrapping_add(1 + i as u32);
            buf.extend(message(c.kind, NLM_F_REQUEST | NLM_F_ACK | c.flags, seq, c.family, 0, c.attrs.clone()));
        }
        let end_seq = first.wrapping_add(1 + commands.len() as u32);
        buf.extend(message(k::NFNL_MSG_BATCH_END, NLM_F_REQUEST, end_seq, 0, k::NFNL_SUBSYS_NFTABLES, Vec::new()));
        self.seq = end_seq;
        if buf.len() > MAX_BATCH {
            return Err(NativeError::Unsupported(Unsupported(format!("a batch of {} bytes", buf.len()))));
        }
        self.sock.send(&buf, 0).map_err(NativeError::Io)?;

        // One acknowledgement per command; the first refusal is the answer.
        let mut pending = commands.len();
        let mut refused: Option<NativeError> = None;
        while pending > 0 {
            let (data, _) = self.sock.recv_from_full().map_err(NativeError::Io)?;
            let mut off = 0;
            while off + 16 <= data.len() {
                let len = u32::from_ne_bytes(data[off..off + 4].try_into().expect("4 bytes")) as usize;
                let kind = u16::from_ne_bytes([data[off + 4], data[off + 5]]);
                let seq = u32::from_ne_bytes(data[off + 8..off + 12].try_into().expect("4 bytes"));
                if len < 16 || off + len > data.len() {
                    return Err(NativeError::Io(std::io::Error::other("malformed netlink reply")));
                }
                const NLMSG_ERROR: u16 = 2;
                if kind == NLMSG_ERROR && len >= 20 {
                    let errno = -i32::from_ne_bytes(data[off + 16..off + 20].try_into().expect("4 bytes"));
                    let index = seq.wrapping_sub(first).wrapping_sub(1) as usize;
                    if seq == first && errno != 0 {
                        // The batch itself was refused (no nf_tables in this kernel, say).
                        return Err(NativeError::Kernel { command: "batch".into(), errno, ext_ack: None });
                    }
                    if index < commands.len() {
                        pending -= 1;
                        if errno != 0 && refused.is_none() {
                            refused = Some(NativeError::Kernel {
                                command: commands[index].what.trim().to_string(),
                                errno,
                                ext_ack: netkit::netlink::ext_ack_message(&data[off + 20..off + len]),
                            });
                        }
                    }
                }
                off += (len + 3) & !3;
            }
        }
        refused.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        let mut s = Schema::default();
        s.declare(&[
            json!({"map": {"family": "inet", "table": "t", "name": "m", "type": "ipv4_addr", "map": "verdict"}}),
            json!({"set": {"family": "inet", "table": "t", "name": "s", "type": "ifname"}}),
        ]);
        s
    }

    #[test]
    fn whole_batches_compile_or_are_refused_whole() {
        let ok = json!({"nftables": [
            {"add": {"chain": {"family": "inet", "table": "t", "name": "c"}}},
            {"flush": {"chain": {"family": "inet", "table": "t", "name": "c"}}},
            {"add": {"element": {"family": "inet", "table": "t", "name": "m",
                                  "elem": [[{"elem": {"val": "10.0.0.1", "comment": "x"}}, {"goto": {"target": "c"}}]]}}},
            {"delete": {"element": {"family": "inet", "table": "t", "name": "s", "elem": ["eth0"]}}},
            {"delete": {"chain": {"family": "inet", "table": "t", "name": "c"}}}
        ]});
        assert_eq!(compile(&ok, &schema()).unwrap().len(), 5);
        for bad in [
            json!({"nftables": [{"add": {"chain": {"family": "inet", "table": "t", "name": "c", "hook": "input"}}}]}),
            json!({"nftables": [{"add": {"chain": {"family": "inet", "table": "t", "name": "c", "type": "filter",
                                                   "hook": "ingress", "prio": 0, "dev": "eth0"}}}]}),
            json!({"nftables": [{"add": {"set": {"family": "inet", "table": "t", "name": "x", "type": "mark"}}}]}),
            json!({"nftables": [{"add": {"set": {"family": "inet", "table": "t", "name": "x", "type": "ipv4_addr",
                                                 "flags": ["timeout"]}}}]}),
            json!({"nftables": [{"add": {"table": {"family": "inet", "name": "t", "flags": ["dormant"]}}}]}),
            json!({"nftables": [{"add": {"element": {"family": "inet", "table": "t", "name": "unknown", "elem": ["1"]}}}]}),
            json!({"nftables": [{"add": {"element": {"family": "inet", "table": "t", "name": "m", "elem": ["10.0.0.1"]}}}]}),
            json!({"nftables": [{"add": {"element": {"family": "inet", "table": "t", "name": "s", "elem": [["eth0", {"accept": null}]]}}}]}),
        ] {
            assert!(compile(&bad, &schema()).is_err(), "{bad}");
        }
    }
}
