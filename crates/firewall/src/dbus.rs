//! A minimal synchronous D-Bus client: the system bus over its unix socket, SASL EXTERNAL
//! authentication, and method calls whose arguments are strings, answered by a string, a boolean
//! or an error. That is all the firewall plugin asks of firewalld, and it keeps the plugin small,
//! free of an async runtime and of any program to run (`zbus` brings an executor and dozens of
//! crates; `dbus` links libdbus; both for four calls).
//!
//! Wire format: the D-Bus specification's message layout, little-endian when we write it, either
//! byte order when we read it. Messages that are not the reply we wait for (the bus's
//! `NameAcquired` signal after `Hello`) are skipped.

use anyhow::Context;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// Where the system bus listens unless `DBUS_SYSTEM_BUS_ADDRESS` says otherwise.
pub const DEFAULT_SYSTEM_BUS: &str = "unix:path=/var/run/dbus/system_bus_socket";
/// How long a call may take. firewalld's first change after it starts rewrites its whole ruleset
/// (seconds, a minute on an emulated CPU); godbus, which the reference uses, waits forever, and
/// the runtime bounds the plugin as a whole anyway.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// The most a reply may hold; ours are a few hundred bytes.
const MAX_MESSAGE: usize = 1 << 20;

const METHOD_CALL: u8 = 1;
const METHOD_RETURN: u8 = 2;
const ERROR: u8 = 3;

const FIELD_PATH: u8 = 1;
const FIELD_INTERFACE: u8 = 2;
const FIELD_MEMBER: u8 = 3;
const FIELD_ERROR_NAME: u8 = 4;
const FIELD_REPLY_SERIAL: u8 = 5;
const FIELD_DESTINATION: u8 = 6;
const FIELD_SIGNATURE: u8 = 8;

/// An error reply: its D-Bus name and message (firewalld puts its code first: `ZONE_ALREADY_SET: ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbusError {
    pub name: String,
    pub message: String,
}

impl std::fmt::Display for DbusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

impl std::error::Error for DbusError {}

/// The first value of a method return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Nothing,
    Str(String),
    Bool(bool),
    /// A return whose first value is of another type (its signature).
    Other(String),
}

/// A connection to a bus, authenticated and registered (`Hello`).
pub struct Connection {
    stream: BufReader<UnixStream>,
    serial: u32,
}

/// The socket a bus address names: the first `unix:path=` or `unix:abstract=` entry.
pub fn socket_of(address: &str) -> Option<(bool, String)> {
    address.split(';').find_map(|entry| {
        let params = entry.strip_prefix("unix:")?;
        params.split(',').find_map(|kv| match kv.split_once('=')? {
            ("path", p) => Some((false, unescape(p))),
            ("abstract", p) => Some((true, unescape(p))),
            _ => None,
        })
    })
}

/// Undoes the address format's %XX escapes.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn connect_socket(abstract_ns: bool, path: &str) -> std::io::Result<UnixStream> {
    if abstract_ns {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(path.as_bytes())?;
        UnixStream::connect_addr(&addr)
    } else {
        UnixStream::connect(path)
    }
}

impl Connection {
    /// Connects to the system bus (`DBUS_SYSTEM_BUS_ADDRESS`, else the standard socket).
    pub fn system() -> anyhow::Result<Connection> {
        let address = std::env::var("DBUS_SYSTEM_BUS_ADDRESS").unwrap_or_else(|_| DEFAULT_SYSTEM_BUS.to_string());
        let (abstract_ns, path) =
            socket_of(&address).with_context(|| format!("no unix socket in the bus address {address:?}"))?;
        let stream =
            connect_socket(abstract_ns, &path).with_context(|| format!("connecting to the system bus at {path}"))?;
        stream.set_read_timeout(Some(CALL_TIMEOUT))?;
        stream.set_write_timeout(Some(CALL_TIMEOUT))?;
        let mut conn = Connection { stream: BufReader::new(stream), serial: 0 };
        conn.authenticate()?;
        conn.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "Hello", &[])?
            .map_err(anyhow::Error::new)
            .context("registering on the bus")?;
        Ok(conn)
    }

    /// SASL EXTERNAL: the bus knows our uid from the socket; we state it, in hex-encoded ASCII.
    fn authenticate(&mut self) -> anyhow::Result<()> {
        let uid = nix::unistd::getuid().as_raw().to_string();
        let hex: String = uid.bytes().map(|b| format!("{b:02x}")).collect();
        let out = self.stream.get_mut();
        out.write_all(b"\0")?;
        out.write_all(format!("AUTH EXTERNAL {hex}\r\n").as_bytes())?;
        let mut line = String::new();
        self.stream.read_line(&mut line).context("reading the bus's answer to AUTH")?;
        anyhow::ensure!(line.starts_with("OK "), "the bus refused EXTERNAL authentication: {}", line.trim());
        self.stream.get_mut().write_all(b"BEGIN\r\n")?;
        Ok(())
    }

    /// Calls a method with string arguments and waits for its reply.
    pub fn call(
        &mut self,
        destination: &str,
        path: &str,
        interface: &str,
        member: &str,
        args: &[&str],
    ) -> anyhow::Result<Result<Reply, DbusError>> {
        self.serial = self.serial.wrapping_add(1).max(1);
        let serial = self.serial;
        let message = encode_call(serial, destination, path, interface, member, args);
        self.stream.get_mut().write_all(&message).context("writing to the bus")?;
        loop {
            let raw = self.read_message()?;
            let msg = decode(&raw).context("decoding a message from the bus")?;
            if msg.reply_serial != Some(serial) {
                continue;
            }
            return Ok(match msg.kind {
                METHOD_RETURN => Ok(msg.first),
                ERROR => Err(DbusError {
                    name: msg.error_name.unwrap_or_default(),
                    message: match msg.first {
                        Reply::Str(s) => s,
                        _ => String::new(),
                    },
                }),
                other => anyhow::bail!("unexpected message type {other} in reply"),
            });
        }
    }

    fn read_message(&mut self) -> anyhow::Result<Vec<u8>> {
        let mut fixed = [0u8; 16];
        self.stream.read_exact(&mut fixed).context("reading from the bus")?;
        let big = match fixed[0] {
            b'l' => false,
            b'B' => true,
            other => anyhow::bail!("bad byte order mark {other:#x} from the bus"),
        };
        let u32_at = |o: usize| {
            let b = [fixed[o], fixed[o + 1], fixed[o + 2], fixed[o + 3]];
            if big { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) }
        };
        let body = u32_at(4) as usize;
        let fields = u32_at(12) as usize;
        let total = 16 + pad8(fields) + body;
        anyhow::ensure!(total <= MAX_MESSAGE, "a message of {total} bytes from the bus");
        let mut data = fixed.to_vec();
        data.resize(total, 0);
        self.stream.read_exact(&mut data[16..]).context("reading from the bus")?;
        Ok(data)
    }
}

fn pad8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// Little-endian message writer.
struct Writer(Vec<u8>);

impl Writer {
    fn align(&mut self, n: usize) {
        while !self.0.len().is_multiple_of(n) {
            self.0.push(0);
        }
    }
    fn u32(&mut self, v: u32) {
        self.align(4);
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn string(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(0);
    }
    fn signature(&mut self, s: &str) {
        self.0.push(s.len() as u8);
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(0);
    }
    /// A header field: (code, variant of a string-like type).
    fn field(&mut self, code: u8, kind: &str, value: &str) {
        self.align(8);
        self.0.push(code);
        self.signature(kind);
        if kind == "g" { self.signature(value) } else { self.string(value) }
    }
}

/// A METHOD_CALL message.
fn encode_call(serial: u32, destination: &str, path: &str, interface: &str, member: &str, args: &[&str]) -> Vec<u8> {
    let mut body = Writer(Vec::new());
    for a in args {
        body.string(a);
    }
    let mut h = Writer(vec![b'l', METHOD_CALL, 0, 1]);
    h.u32(body.0.len() as u32);
    h.u32(serial);
    h.u32(0); // the fields' length, filled in below
    let start = h.0.len();
    h.field(FIELD_PATH, "o", path);
    h.field(FIELD_INTERFACE, "s", interface);
    h.field(FIELD_MEMBER, "s", member);
    h.field(FIELD_DESTINATION, "s", destination);
    if !args.is_empty() {
        h.field(FIELD_SIGNATURE, "g", &"s".repeat(args.len()));
    }
    let len = (h.0.len() - start) as u32;
    h.0[12..16].copy_from_slice(&len.to_le_bytes());
    h.align(8);
    h.0.extend_from_slice(&body.0);
    h.0
}

/// What we read of a message.
#[derive(Debug)]
struct Decoded {
    kind: u8,
    reply_serial: Option<u32>,
    error_name: Option<String>,
    first: Reply,
}

/// Reader over one message, in its byte order.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    big: bool,
}

impl Reader<'_> {
    fn align(&mut self, n: usize) {
        self.pos = self.pos.div_ceil(n) * n;
    }
    fn take(&mut self, n: usize) -> anyhow::Result<&[u8]> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.data.len()).context("message too short")?;
        let out = &self.data[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn u8(&mut self) -> anyhow::Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> anyhow::Result<u32> {
        self.align(4);
        let big = self.big;
        let b: [u8; 4] = self.take(4)?.try_into().expect("4 bytes");
        Ok(if big { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
    }
    fn string(&mut self) -> anyhow::Result<String> {
        let len = self.u32()? as usize;
        let s = String::from_utf8_lossy(self.take(len)?).into_owned();
        self.take(1)?;
        Ok(s)
    }
    fn signature(&mut self) -> anyhow::Result<String> {
        let len = self.u8()? as usize;
        let s = String::from_utf8_lossy(self.take(len)?).into_owned();
        self.take(1)?;
        Ok(s)
    }
}

fn decode(data: &[u8]) -> anyhow::Result<Decoded> {
    let big = data.first() == Some(&b'B');
    let mut r = Reader { data, pos: 0, big };
    r.take(1)?;
    let kind = r.u8()?;
    r.take(2)?;
    let _body_len = r.u32()?;
    let _serial = r.u32()?;
    let fields_len = r.u32()? as usize;
    let fields_end = r.pos + fields_len;
    let (mut reply_serial, mut error_name, mut signature) = (None, None, String::new());
    while r.pos < fields_end {
        r.align(8);
        let code = r.u8()?;
        let sig = r.signature()?;
        match sig.as_str() {
            "s" | "o" => {
                let v = r.string()?;
                if code == FIELD_ERROR_NAME {
                    error_name = Some(v);
                }
            }
            "g" => {
                let v = r.signature()?;
                if code == FIELD_SIGNATURE {
                    signature = v;
                }
            }
            "u" => {
                let v = r.u32()?;
                if code == FIELD_REPLY_SERIAL {
                    reply_serial = Some(v);
                }
            }
            other => anyhow::bail!("header field {code} of type {other:?}"),
        }
    }
    r.pos = pad8(fields_end);
    let first = match signature.chars().next() {
        None => Reply::Nothing,
        Some('s') => Reply::Str(r.string()?),
        Some('b') => Reply::Bool(r.u32()? != 0),
        Some(_) => Reply::Other(signature),
    };
    Ok(Decoded { kind, reply_serial, error_name, first })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_laid_out_as_the_specification_says() {
        let m = encode_call(7, "org.x", "/o", "org.x.i", "m", &["ab", "c"]);
        assert_eq!(&m[..4], &[b'l', 1, 0, 1]);
        // body: "ab" (4+2+1, padded to 8) then "c" (4+1+1)
        assert_eq!(u32::from_le_bytes(m[4..8].try_into().unwrap()), 14);
        assert_eq!(u32::from_le_bytes(m[8..12].try_into().unwrap()), 7);
        let fields = u32::from_le_bytes(m[12..16].try_into().unwrap()) as usize;
        let body = &m[16 + pad8(fields)..];
        assert_eq!(body, b"\x02\0\0\0ab\0\0\x01\0\0\0c\0");
        // The header parses back with our own reader.
        let d = decode(&m).unwrap();
        assert_eq!(d.kind, METHOD_CALL);
        assert_eq!(d.first, Reply::Str("ab".into()));
    }

    #[test]
    fn replies_and_errors_are_read_in_either_byte_order() {
        // An error reply as libdbus (little-endian) writes it: REPLY_SERIAL, ERROR_NAME, SIGNATURE.
        let mut h = Writer(vec![b'l', ERROR, 1, 1]);
        let mut body = Writer(Vec::new());
        body.string("ZONE_ALREADY_SET: trusted");
        h.u32(body.0.len() as u32);
        h.u32(9);
        h.u32(0);
        let start = h.0.len();
        h.align(8);
        h.0.push(FIELD_REPLY_SERIAL);
        h.signature("u");
        h.u32(3);
        h.field(FIELD_ERROR_NAME, "s", "org.fedoraproject.FirewallD1.Exception");
        h.field(FIELD_SIGNATURE, "g", "s");
        let len = (h.0.len() - start) as u32;
        h.0[12..16].copy_from_slice(&len.to_le_bytes());
        h.align(8);
        h.0.extend_from_slice(&body.0);
        let d = decode(&h.0).unwrap();
        assert_eq!(d.kind, ERROR);
        assert_eq!(d.reply_serial, Some(3));
        assert_eq!(d.error_name.as_deref(), Some("org.fedoraproject.FirewallD1.Exception"));
        assert_eq!(d.first, Reply::Str("ZONE_ALREADY_SET: trusted".into()));

        // A boolean return, big-endian.
        let mut m = vec![b'B', METHOD_RETURN, 0, 1, 0, 0, 0, 4, 0, 0, 0, 2];
        let fields: Vec<u8> = vec![FIELD_REPLY_SERIAL, 1, b'u', 0, 0, 0, 0, 5, FIELD_SIGNATURE, 1, b'g', 0, 1, b'b', 0];
        m.extend_from_slice(&(fields.len() as u32).to_be_bytes());
        m.extend_from_slice(&fields);
        while m.len() % 8 != 0 {
            m.push(0);
        }
        m.extend_from_slice(&1u32.to_be_bytes());
        let d = decode(&m).unwrap();
        assert_eq!((d.kind, d.reply_serial, d.first), (METHOD_RETURN, Some(5), Reply::Bool(true)));
        assert!(decode(&m[..20]).is_err());
    }

    #[test]
    fn bus_addresses() {
        assert_eq!(socket_of(DEFAULT_SYSTEM_BUS), Some((false, "/var/run/dbus/system_bus_socket".into())));
        assert_eq!(socket_of("tcp:host=x;unix:path=/tmp/a%20b,guid=123"), Some((false, "/tmp/a b".into())));
        assert_eq!(socket_of("unix:abstract=/tmp/dbus-x"), Some((true, "/tmp/dbus-x".into())));
        assert_eq!(socket_of("tcp:host=x"), None);
    }
}
