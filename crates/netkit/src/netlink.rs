//! A synchronous netlink socket: send one request, collect its replies, turn a NACK into an error
//! that keeps the kernel's errno and extended-ack message.
//!
//! Synchronous on purpose: a plugin makes a few dozen requests and exits, and a socket belongs to
//! the namespace it was opened in, which is simplest to reason about without an async runtime
//! moving work between threads.

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_MULTIPART, NLM_F_REQUEST, NetlinkDeserializable, NetlinkHeader,
    NetlinkMessage, NetlinkPayload, NetlinkSerializable,
};
use netlink_sys::{Socket as RawSocket, SocketAddr};
use std::fmt;
use std::marker::PhantomData;

/// A failed netlink exchange.
#[derive(Debug)]
pub enum NlError {
    /// The kernel refused the request.
    Kernel { errno: i32, ext_ack: Option<String> },
    /// The socket itself failed.
    Io(std::io::Error),
    /// A reply could not be parsed.
    Decode(String),
    /// A dump changed while it was read (NLM_F_DUMP_INTR), after retries.
    DumpInterrupted,
}

impl NlError {
    /// The errno behind the failure, if there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NlError::Kernel { errno, .. } => Some(*errno),
            NlError::Io(e) => e.raw_os_error(),
            _ => None,
        }
    }

    pub fn is(&self, errno: i32) -> bool {
        self.errno() == Some(errno)
    }
}

impl fmt::Display for NlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NlError::Kernel { errno, ext_ack } => {
                write!(f, "{}", std::io::Error::from_raw_os_error(*errno))?;
                if let Some(msg) = ext_ack {
                    write!(f, " ({msg})")?;
                }
                Ok(())
            }
            NlError::Io(e) => write!(f, "netlink socket: {e}"),
            NlError::Decode(e) => write!(f, "netlink reply: {e}"),
            NlError::DumpInterrupted => f.write_str("netlink dump kept changing while it was read"),
        }
    }
}

impl std::error::Error for NlError {}

impl From<std::io::Error> for NlError {
    fn from(e: std::io::Error) -> Self {
        NlError::Io(e)
    }
}

/// How often a dump is retried when the kernel flags it inconsistent (as the reference does).
const DUMP_RETRIES: usize = 5;

/// A netlink socket for one protocol family, with messages of type `M`.
pub struct Socket<M> {
    sock: RawSocket,
    seq: u32,
    _message: PhantomData<M>,
}

impl<M> Socket<M>
where
    M: NetlinkSerializable + NetlinkDeserializable + fmt::Debug,
{
    /// Opens a socket in the calling thread's network namespace.
    pub fn open(protocol: isize) -> Result<Self, NlError> {
        let mut sock = RawSocket::new(protocol)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        // Both are best effort: older kernels lack them and requests work without.
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);
        // Lets the kernel filter dumps by the request's header (an address dump of one link
        // instead of every address in the namespace); without it the caller still filters.
        let _ = sock.set_netlink_get_strict_chk(true);
        Ok(Socket { sock, seq: 0, _message: PhantomData })
    }

    /// The socket's descriptor.
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.sock)
    }

    /// Sends `msg` with `flags` (NLM_F_REQUEST and NLM_F_ACK are added) and waits for the ACK.
    pub fn execute(&mut self, msg: M, flags: u16) -> Result<(), NlError> {
        self.exchange(msg, flags | NLM_F_ACK).map(|_| ())
    }

    /// Sends a dump request built by `make` and returns every message, retrying when the dump was
    /// interrupted by a concurrent change.
    pub fn dump(&mut self, make: impl Fn() -> M) -> Result<Vec<M>, NlError> {
        for _ in 0..DUMP_RETRIES {
            match self.exchange(make(), NLM_F_DUMP) {
                Err(NlError::DumpInterrupted) => continue,
                other => return other,
            }
        }
        Err(NlError::DumpInterrupted)
    }

    /// Sends a request expecting replies (a GET for one object): returns them.
    pub fn query(&mut self, msg: M) -> Result<Vec<M>, NlError> {
        self.exchange(msg, 0)
    }

    fn exchange(&mut self, msg: M, flags: u16) -> Result<Vec<M>, NlError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = flags | NLM_F_REQUEST;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.sock.send(&buf, 0)?;

        let expects_ack = flags & NLM_F_ACK != 0;
        let is_dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut replies = Vec::new();
        let mut interrupted = false;
        loop {
            let (data, _) = self.sock.recv_from_full()?;
            let mut offset = 0;
            while offset + 16 <= data.len() {
                let len =
                    u32::from_ne_bytes([data[offset], data[offset + 1], data[offset + 2], data[offset + 3]]) as usize;
                if len < 16 || offset + len > data.len() {
                    return Err(NlError::Decode(format!("bad message length {len}")));
                }
                let reply = NetlinkMessage::<M>::deserialize(&data[offset..offset + len])
                    .map_err(|e| NlError::Decode(e.to_string()))?;
                offset += (len + 3) & !3;
                if reply.header.sequence_number != seq {
                    continue;
                }
                interrupted |= reply.header.flags & NLM_F_DUMP_INTR != 0;
                let multipart = reply.header.flags & NLM_F_MULTIPART != 0;
                match reply.payload {
                    NetlinkPayload::Done(_) => {
                        return if interrupted { Err(NlError::DumpInterrupted) } else { Ok(replies) };
                    }
                    NetlinkPayload::Error(err) => match err.code {
                        None => return Ok(replies),
                        Some(code) => {
                            return Err(NlError::Kernel { errno: -code.get(), ext_ack: ext_ack_message(&err.header) });
                        }
                    },
                    NetlinkPayload::InnerMessage(m) => {
                        replies.push(m);
                        if !multipart && !is_dump && !expects_ack {
                            return Ok(replies);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Extracts NLMSGERR_ATTR_MSG from the TLVs that follow the echoed request header in an error
/// reply (with NETLINK_CAP_ACK the echo is the 16-byte header alone). `payload` is what follows
/// the error code.
pub fn ext_ack_message(payload: &[u8]) -> Option<String> {
    const NLMSGERR_ATTR_MSG: u16 = 1;
    let mut rest = payload.get(16..)?;
    while rest.len() >= 4 {
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &rest[4..len];
            let text = text.split(|b| *b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        rest = rest.get((len + 3) & !3..).unwrap_or_default();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_extended_ack_message() {
        let mut payload = vec![0u8; 16];
        let msg = b"Nexthop has invalid gateway\0";
        payload.extend_from_slice(&((4 + msg.len()) as u16).to_ne_bytes());
        payload.extend_from_slice(&1u16.to_ne_bytes());
        payload.extend_from_slice(msg);
        assert_eq!(ext_ack_message(&payload).as_deref(), Some("Nexthop has invalid gateway"));
        assert_eq!(ext_ack_message(&payload[..16]), None);
        assert_eq!(ext_ack_message(&[1, 2, 3]), None);
    }

    #[test]
    fn kernel_errors_read_well() {
        let e = NlError::Kernel { errno: 17, ext_ack: Some("details".into()) };
        assert!(e.to_string().starts_with("File exists"), "{e}");
        assert!(e.to_string().ends_with("(details)"));
        assert!(e.is(nix::libc::EEXIST));
    }
}
