//! The ptp plugin's configuration: `ipMasq`, `ipMasqBackend`, `mtu` (and the shared `dns` and
//! `ipam`), validated before anything changes.

use cni::{Error, Request};
use serde::Deserialize;

/// How masquerade rules are installed: nftables (as the bridge plugin) unless asked otherwise or
/// only iptables is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasqBackend {
    Nftables,
    Iptables,
    /// No `ipMasqBackend`: nftables when the `nft` program is there, else iptables when it is
    /// (the reference prefers iptables; a node without `nft` must still masquerade).
    Auto,
}

impl MasqBackend {
    /// The backend this node gets.
    pub fn resolve(self) -> MasqBackend {
        match self {
            MasqBackend::Auto
                if firewall::Nft::locate().is_err() && firewall::iptables::Iptables::locate(false).is_ok() =>
            {
                MasqBackend::Iptables
            }
            MasqBackend::Auto => MasqBackend::Nftables,
            other => other,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtpConf {
    pub ip_masq: bool,
    pub masq_backend: MasqBackend,
    pub mtu: Option<u32>,
}

#[derive(Deserialize, Default)]
struct Raw {
    #[serde(rename = "ipMasq", default)]
    ip_masq: bool,
    #[serde(rename = "ipMasqBackend", default)]
    ip_masq_backend: Option<String>,
    #[serde(default)]
    mtu: Option<i64>,
}

impl PtpConf {
    /// The plugin's keys. `require_ipam`: ADD, CHECK and STATUS need an IPAM plugin (ptp has no
    /// address of its own to give); DEL and GC clean up without one.
    pub fn parse(req: &Request, require_ipam: bool) -> Result<PtpConf, Error> {
        let raw: Raw = req.config.decode()?;
        let mtu = match raw.mtu.unwrap_or(0) {
            0 => None,
            m @ 68..=65535 => Some(m as u32),
            m => return Err(Error::config(format!("mtu: {m} is out of range (68..65535)"))),
        };
        let masq_backend = match raw.ip_masq_backend.as_deref() {
            None | Some("") => MasqBackend::Auto,
            Some("nftables") => MasqBackend::Nftables,
            Some("iptables") => MasqBackend::Iptables,
            Some(other) => {
                return Err(Error::config(format!("ipMasqBackend: unknown backend {other:?} (iptables or nftables)")));
            }
        };
        if require_ipam && req.config.ipam_type.is_none() {
            return Err(Error::config("ptp needs an IPAM plugin (ipam.type) to give the container its addresses"));
        }
        Ok(PtpConf { ip_masq: raw.ip_masq, masq_backend, mtu })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::{Code, Command};
    use serde_json::{Value, json};

    fn parse(extra: Value) -> Result<PtpConf, Error> {
        let mut conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "ptp", "ipam": {"type": "host-local"}});
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        PtpConf::parse(&testkit::request(Command::Add, &conf, ""), true)
    }

    #[test]
    fn keys_and_defaults() {
        let c = parse(json!({})).unwrap();
        assert_eq!(c, PtpConf { ip_masq: false, masq_backend: MasqBackend::Auto, mtu: None });
        // This machine has nft.
        assert_eq!(c.masq_backend.resolve(), MasqBackend::Nftables);
        let c = parse(json!({"ipMasq": true, "ipMasqBackend": "iptables", "mtu": 1400})).unwrap();
        assert_eq!(c, PtpConf { ip_masq: true, masq_backend: MasqBackend::Iptables, mtu: Some(1400) });
        // Go's decoder matches keys without regard to case.
        assert!(parse(json!({"ipmasq": true})).unwrap().ip_masq);
    }

    #[test]
    fn bad_values_are_config_errors() {
        for (extra, want) in [
            (json!({"mtu": 10}), "mtu: 10 is out of range"),
            (json!({"mtu": 70000}), "mtu: 70000"),
            (json!({"ipMasqBackend": "pf"}), "unknown backend"),
            (json!({"ipam": {}}), "needs an IPAM plugin"),
        ] {
            let e = parse(extra.clone()).unwrap_err();
            assert_eq!(e.code, Code::InvalidConfig, "{extra}");
            assert!(e.msg.contains(want), "{extra}: {}", e.msg);
        }
        assert_eq!(parse(json!({"ipMasq": "yes"})).unwrap_err().code, Code::Decode);
        assert_eq!(parse(json!({"mtu": "1400"})).unwrap_err().code, Code::Decode);
    }
}
