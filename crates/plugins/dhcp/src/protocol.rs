//! What the plugin and the daemon say to each other on the unix socket: one JSON object per line
//! each way, one call per connection.
//!
//! ```text
//! plugin -> daemon  {"method":"allocate","containerID":"c1","netns":"/run/netns/c1","ifName":"eth0",
//!                    "args":"IgnoreUnknown=1","config":{...the network config as on stdin...}}\n
//! daemon -> plugin  {"result":{...a CNI 1.1.0 result...}}\n   or   {"error":{"code":7,"msg":"..."}}\n
//! ```
//!
//! Methods: `allocate` (ADD), `check` (CHECK), `release` (DEL), `status` (STATUS), `gc` (GC:
//! the config carries `cni.dev/valid-attachments`). The reference
//! speaks Go's net/rpc (gob over HTTP) instead, so this plugin works only with this daemon: mixing
//! it with the reference's daemon (or the reference's plugin with ours) is not supported.
//!
//! Std, serde and cni only (with config.rs and packet.rs), so the fuzz target `dhcp_request`
//! (crates/fuzz) includes this file as it is and runs the daemon's own checks of a request.

use crate::config::{Config, client_id};
use cni::{Code, Error};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// The largest message either side reads; a config with a prevResult is a few kilobytes.
pub const MAX_MESSAGE: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Allocate,
    Check,
    Release,
    Status,
    Gc,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Call {
    pub method: Method,
    #[serde(rename = "containerID", default)]
    pub container_id: String,
    #[serde(default)]
    pub netns: String,
    #[serde(rename = "ifName", default)]
    pub ifname: String,
    /// `CNI_ARGS` as given (for `provide`'s `fromArg`).
    #[serde(default)]
    pub args: String,
    /// The network config as the plugin got it.
    #[serde(default)]
    pub config: Value,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ReplyError>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplyError {
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl Reply {
    pub fn ok(result: Option<Value>) -> Reply {
        Reply { result: Some(result.unwrap_or(Value::Null)), error: None }
    }

    pub fn err(e: &Error) -> Reply {
        Reply {
            result: None,
            error: Some(ReplyError { code: e.code.as_u32(), msg: e.msg.clone(), details: e.details.clone() }),
        }
    }
}

/// A call the daemon can serve, with what it needs from the request: the config read (every
/// method but status) and the lease's client ID (the methods about one attachment).
#[derive(Debug)]
pub enum Checked {
    Status,
    Gc(Config),
    Allocate(Config, String),
    Check(String),
    Release(String),
}

/// A request line as the daemon decodes it; code 6 (decode) when it is not a [`Call`].
pub fn decode(line: &[u8]) -> Result<Call, Error> {
    serde_json::from_slice(line).map_err(|e| Error::decode(format!("malformed request: {e}")))
}

impl Call {
    /// Everything the daemon checks before it touches a lease: the arrival on its socket is not
    /// trusted (any local root process can write to it), so the IDs are validated as the plugin's
    /// dispatcher validates its environment, and the config as the plugin reads it.
    pub fn check(&self) -> Result<Checked, Error> {
        if self.method == Method::Status {
            return Ok(Checked::Status);
        }
        if !self.config.is_object() {
            return Err(Error::decode("error parsing netconf: config is not a JSON object"));
        }
        if self.method != Method::Gc {
            cni::env::validate_container_id(&self.container_id)?;
            cni::env::validate_ifname(&self.ifname)?;
        }
        let conf = Config::parse(&self.config, &self.args)?;
        let id = || client_id(&self.container_id, &conf.network, &self.ifname);
        Ok(match self.method {
            Method::Status => Checked::Status,
            Method::Gc => Checked::Gc(conf),
            Method::Allocate => {
                let id = id();
                Checked::Allocate(conf, id)
            }
            Method::Check => Checked::Check(id()),
            Method::Release => Checked::Release(id()),
        })
    }
}

/// Reads one line of at most [`MAX_MESSAGE`] bytes (without its newline).
pub fn read_line(r: impl Read) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::new();
    BufReader::new(r.take(MAX_MESSAGE as u64 + 1)).read_until(b'\n', &mut line)?;
    if line.len() > MAX_MESSAGE {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "message too long"));
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    Ok(line)
}

/// Makes one call and returns the daemon's result. `wait` bounds the whole exchange: the daemon
/// itself gives up on a server after `-resendtimeout`, so this only guards against a daemon that
/// hangs.
pub fn call(socket_path: &str, call: &Call, wait: Duration) -> Result<Value, Error> {
    let mut stream = UnixStream::connect(socket_path).map_err(|e| {
        Error::new(Code::TryAgainLater, format!("error dialing DHCP daemon at {socket_path}: {e}"))
            .with_details("is `dhcp daemon` running? (the reference's daemon does not speak this plugin's protocol)")
    })?;
    let io = |e: std::io::Error| Error::new(Code::Io, format!("talking to the DHCP daemon at {socket_path}: {e}"));
    stream.set_read_timeout(Some(wait)).map_err(io)?;
    stream.set_write_timeout(Some(Duration::from_secs(10))).map_err(io)?;
    let mut msg = serde_json::to_vec(call).map_err(|e| Error::new(Code::Internal, e.to_string()))?;
    msg.push(b'\n');
    stream.write_all(&msg).map_err(io)?;
    let line = read_line(&stream).map_err(io)?;
    let unreadable = |e: String| Error::decode(format!("unreadable reply from the DHCP daemon at {socket_path}: {e}"));
    let mut reply: serde_json::Map<String, Value> =
        serde_json::from_slice(&line).map_err(|e| unreadable(e.to_string()))?;
    if let Some(e) = reply.remove("error") {
        let e: ReplyError = serde_json::from_value(e).map_err(|e| unreadable(e.to_string()))?;
        return Err(Error::new(Code::from_u32(e.code), e.msg).with_details(e.details));
    }
    // `"result": null` is the answer of a call without a result (release, status).
    reply.remove("result").ok_or_else(|| unreadable("neither result nor error".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn checked(v: Value) -> Result<Checked, Error> {
        decode(v.to_string().as_bytes())?.check()
    }

    #[test]
    fn requests_are_checked_before_any_lease_is_touched() {
        assert_eq!(decode(b"{\"method\":\"explode\"}").unwrap_err().code, Code::Decode);
        assert_eq!(decode(b"{\"method\":\"status\",\"extra\":1}").unwrap_err().code, Code::Decode);
        assert!(matches!(checked(json!({"method": "status", "config": 7})), Ok(Checked::Status)));
        let e =
            checked(json!({"method": "allocate", "containerID": "c", "ifName": "eth0", "config": [1]})).unwrap_err();
        assert_eq!(e.code, Code::Decode);
        let e = checked(json!({"method": "release", "ifName": "eth0", "config": {"name": "n"}})).unwrap_err();
        assert_eq!(e.code, Code::UnknownContainer);
        let e = checked(json!({"method": "check", "containerID": "c", "ifName": "a/b", "config": {"name": "n"}}))
            .unwrap_err();
        assert_eq!(e.code, Code::InvalidEnv);
        let e = checked(json!({"method": "allocate", "containerID": "c", "ifName": "eth0",
            "config": {"name": "n", "ipam": {"priority": -1}}}))
        .unwrap_err();
        assert_eq!(e.code, Code::InvalidConfig);
        // GC names no attachment: no IDs needed.
        assert!(
            matches!(checked(json!({"method": "gc", "config": {"name": "n"}})), Ok(Checked::Gc(c)) if c.network == "n")
        );
        match checked(json!({"method": "allocate", "containerID": "c1", "ifName": "eth0", "config": {"name": "n"}})) {
            Ok(Checked::Allocate(conf, id)) => assert_eq!((conf.network.as_str(), id.as_str()), ("n", "c1/n/eth0")),
            other => panic!("{other:?}"),
        }
    }
}
