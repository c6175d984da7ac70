//! The CNI error: a numeric code from the spec plus a message, and the one place that decides which
//! code an arbitrary failure carries.
//!
//! Plugins return `anyhow::Result` and add context where a failure happens. A failure that must
//! reach the runtime with a particular code carries an [`Error`] somewhere in its chain, either as
//! the root (`Err(Error::new(..))?`) or attached later with [`ResultExt::code`]. [`Error::from_anyhow`]
//! walks the chain and picks the outermost [`Error`], so the caller closest to the runtime decides.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The spec's well-known error codes (SPEC.md "Error"), plus `pkg/types` extras that runtimes know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 1: the config's `cniVersion` is not one this plugin speaks.
    IncompatibleVersion,
    /// 2: a field the plugin does not support; the message names key and value.
    UnsupportedField,
    /// 3: the container is unknown or does not exist; the runtime need not call DEL.
    UnknownContainer,
    /// 4: an environment variable is missing or malformed; the message names it.
    InvalidEnv,
    /// 5: an I/O failure (reading stdin, a state file).
    Io,
    /// 6: stdin or a result could not be decoded.
    Decode,
    /// 7: the network configuration is invalid.
    InvalidConfig,
    /// 8: `CNI_NETNS` is not usable (libcni's `ErrInvalidNetNS`; not in the spec's table).
    InvalidNetNs,
    /// 11: a transient condition (a lock held too long); the runtime may retry.
    TryAgainLater,
    /// 50: STATUS: the plugin cannot serve ADD now.
    NotAvailable,
    /// 51: STATUS: not available, and existing containers may have limited connectivity.
    LimitedConnectivity,
    /// 999: anything without a more specific code (libcni's `ErrInternal`).
    Internal,
    /// 100 and above: plugin-specific.
    Plugin(u32),
}

impl Code {
    pub fn as_u32(self) -> u32 {
        match self {
            Code::IncompatibleVersion => 1,
            Code::UnsupportedField => 2,
            Code::UnknownContainer => 3,
            Code::InvalidEnv => 4,
            Code::Io => 5,
            Code::Decode => 6,
            Code::InvalidConfig => 7,
            Code::InvalidNetNs => 8,
            Code::TryAgainLater => 11,
            Code::NotAvailable => 50,
            Code::LimitedConnectivity => 51,
            Code::Internal => 999,
            Code::Plugin(n) => n,
        }
    }

    pub fn from_u32(n: u32) -> Code {
        match n {
            1 => Code::IncompatibleVersion,
            2 => Code::UnsupportedField,
            3 => Code::UnknownContainer,
            4 => Code::InvalidEnv,
            5 => Code::Io,
            6 => Code::Decode,
            7 => Code::InvalidConfig,
            8 => Code::InvalidNetNs,
            11 => Code::TryAgainLater,
            50 => Code::NotAvailable,
            51 => Code::LimitedConnectivity,
            999 => Code::Internal,
            n => Code::Plugin(n),
        }
    }
}

/// A CNI error as the spec defines it: `{cniVersion, code, msg, details}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub code: Code,
    pub msg: String,
    pub details: String,
}

impl Error {
    pub fn new(code: Code, msg: impl Into<String>) -> Error {
        Error { code, msg: msg.into(), details: String::new() }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Error {
        self.details = details.into();
        self
    }

    /// Code 7: the network configuration is invalid.
    pub fn config(msg: impl Into<String>) -> Error {
        Error::new(Code::InvalidConfig, msg)
    }

    /// Code 4: an environment variable is missing or malformed.
    pub fn env(msg: impl Into<String>) -> Error {
        Error::new(Code::InvalidEnv, msg)
    }

    /// Code 6: something could not be decoded.
    pub fn decode(msg: impl Into<String>) -> Error {
        Error::new(Code::Decode, msg)
    }

    /// Decides the code and message for any failure. The outermost [`Error`] in the chain gives the
    /// code; the message is the whole chain of context, outermost first, so the runtime's log says
    /// what was being done and what the kernel or the file system answered.
    pub fn from_anyhow(err: &anyhow::Error) -> Error {
        let coded = err.chain().find_map(|e| e.downcast_ref::<Error>());
        let code = match coded {
            Some(e) => e.code,
            None => fallback_code(err),
        };
        let details = coded.map(|e| e.details.clone()).unwrap_or_default();
        Error { code, msg: format!("{err:#}"), details }
    }

    /// Renders the spec's error JSON. `cniVersion` is the config's version when it is known (the
    /// reference omits it; the spec asks for it).
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        let wire = WireError {
            cni_version: Some(cni_version.to_string()),
            code: self.code.as_u32(),
            msg: self.msg.clone(),
            details: self.details.clone(),
        };
        serde_json::to_value(wire).unwrap_or_else(|_| serde_json::json!({"code": 999}))
    }

    /// Parses the error JSON another plugin printed (delegation). `None` when it is not one.
    pub fn from_json(bytes: &[u8]) -> Option<Error> {
        let wire: WireError = serde_json::from_slice(bytes).ok()?;
        Some(Error { code: Code::from_u32(wire.code), msg: wire.msg, details: wire.details })
    }
}

/// Codes for failures that carry no [`Error`]: decoding failures are code 6; anything else is the
/// reference's catch-all 999. I/O (code 5) is given explicitly where a file is read or written,
/// because a kernel refusal also arrives as an `io::Error` and is not an I/O failure in the spec's
/// sense.
fn fallback_code(err: &anyhow::Error) -> Code {
    for cause in err.chain() {
        if cause.downcast_ref::<serde_json::Error>().is_some() {
            return Code::Decode;
        }
    }
    Code::Internal
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)?;
        if !self.details.is_empty() {
            write!(f, "; {}", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

#[derive(Serialize, Deserialize)]
struct WireError {
    #[serde(rename = "cniVersion", skip_serializing_if = "Option::is_none", default)]
    cni_version: Option<String>,
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    details: String,
}

/// Attaches a CNI code to a failure without losing its message.
pub trait ResultExt<T> {
    /// Gives the error this code; the outermost code in a chain wins.
    fn code(self, code: Code) -> anyhow::Result<T>;
}

impl<T, E> ResultExt<T> for Result<T, E>
where
    E: Into<anyhow::Error>,
{
    fn code(self, code: Code) -> anyhow::Result<T> {
        self.map_err(|e| {
            let e: anyhow::Error = e.into();
            let details =
                e.chain().find_map(|c| c.downcast_ref::<Error>()).map(|c| c.details.clone()).unwrap_or_default();
            anyhow::Error::new(Error { code, msg: format!("{e:#}"), details })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn outermost_code_wins_and_message_keeps_context() {
        let inner: anyhow::Result<()> = Err(Error::config("subnet is missing").into());
        let err = inner.context("parsing ipam").code(Code::Plugin(101)).unwrap_err();
        let e = Error::from_anyhow(&err.context("adding eth0"));
        assert_eq!(e.code, Code::Plugin(101));
        assert_eq!(e.msg, "adding eth0: parsing ipam: subnet is missing");
    }

    #[test]
    fn code_from_root_survives_context() {
        let err = anyhow::Error::new(Error::env("CNI_IFNAME is missing")).context("reading environment");
        let e = Error::from_anyhow(&err);
        assert_eq!(e.code, Code::InvalidEnv);
        assert_eq!(e.msg, "reading environment: CNI_IFNAME is missing");
    }

    #[test]
    fn json_errors_decode_and_plain_errors_are_internal() {
        let json_err = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        assert_eq!(Error::from_anyhow(&anyhow::Error::new(json_err)).code, Code::Decode);
        assert_eq!(Error::from_anyhow(&anyhow::anyhow!("boom")).code, Code::Internal);
    }

    #[test]
    fn renders_spec_json() {
        let e = Error::new(Code::InvalidConfig, "bad").with_details("more");
        assert_eq!(
            e.to_json("1.1.0"),
            serde_json::json!({"cniVersion": "1.1.0", "code": 7, "msg": "bad", "details": "more"})
        );
        let e = Error::new(Code::TryAgainLater, "busy");
        assert_eq!(e.to_json("0.4.0"), serde_json::json!({"cniVersion": "0.4.0", "code": 11, "msg": "busy"}));
    }

    #[test]
    fn parses_delegate_errors_with_or_without_version() {
        let e = Error::from_json(br#"{"code": 7, "msg": "no ranges", "details": "d"}"#).unwrap();
        assert_eq!(e, Error::new(Code::InvalidConfig, "no ranges").with_details("d"));
        let e = Error::from_json(br#"{"cniVersion":"1.0.0","code":104,"msg":"x"}"#).unwrap();
        assert_eq!(e.code, Code::Plugin(104));
        assert!(Error::from_json(b"not json").is_none());
        assert!(Error::from_json(br#"{"msg":"no code"}"#).is_none());
    }

    #[test]
    fn code_numbers_round_trip() {
        for n in [1, 2, 3, 4, 5, 6, 7, 8, 11, 50, 51, 999, 100, 123] {
            assert_eq!(Code::from_u32(n).as_u32(), n);
        }
    }
}
