//! The ipvlan plugin's keys: `master`, `mode`, `mtu`, `linkInContainer` (and the shared `ipam`
//! and `dns`), checked before anything changes. Where `master` comes from when it is not given
//! (prevResult's single interface, else the default route's device) is decided in ADD.

use cni::{Error, Request};
use netkit::sublink::IpvlanMode;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvlanConf {
    /// Empty: not configured.
    pub master: String,
    pub mode: IpvlanMode,
    /// `None`: the master's MTU.
    pub mtu: Option<u32>,
    pub link_in_container: bool,
}

#[derive(Deserialize, Default)]
struct Raw {
    #[serde(default)]
    master: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    mtu: i64,
    #[serde(rename = "linkInContainer", default)]
    link_in_container: bool,
}

/// `""` and `l2` are L2, as in the reference.
fn parse_mode(s: &str) -> Result<IpvlanMode, Error> {
    match s {
        "" | "l2" => Ok(IpvlanMode::L2),
        "l3" => Ok(IpvlanMode::L3),
        "l3s" => Ok(IpvlanMode::L3s),
        other => Err(Error::config(format!("unknown ipvlan mode: {other:?} (l2, l3 or l3s)"))),
    }
}

pub fn mode_name(mode: IpvlanMode) -> &'static str {
    match mode {
        IpvlanMode::L2 => "l2",
        IpvlanMode::L3 => "l3",
        IpvlanMode::L3s => "l3s",
    }
}

impl IpvlanConf {
    pub fn parse(req: &Request) -> Result<IpvlanConf, Error> {
        let raw: Raw = req.config.decode()?;
        let mode = parse_mode(&raw.mode)?;
        let mtu = cni::linkconf::mtu_on_master(raw.mtu)?;
        Ok(IpvlanConf { master: raw.master, mode, mtu, link_in_container: raw.link_in_container })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::{Code, Command};
    use serde_json::{Value, json};

    fn parse(extra: Value) -> Result<IpvlanConf, Error> {
        let mut conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "ipvlan", "master": "eth0"});
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        IpvlanConf::parse(&testkit::request(Command::Add, &conf, ""))
    }

    #[test]
    fn keys_and_defaults() {
        let c = parse(json!({})).unwrap();
        assert_eq!(c, IpvlanConf { master: "eth0".into(), mode: IpvlanMode::L2, mtu: None, link_in_container: false });
        for (m, want) in [("l2", IpvlanMode::L2), ("l3", IpvlanMode::L3), ("l3s", IpvlanMode::L3s)] {
            assert_eq!(parse(json!({"MODE": m})).unwrap().mode, want);
            assert_eq!(mode_name(want), m);
        }
        assert_eq!(parse(json!({"mtu": 1400, "linkincontainer": true})).unwrap().mtu, Some(1400));
    }

    #[test]
    fn bad_values_are_config_errors() {
        for (extra, want) in [
            (json!({"mode": "l4"}), "unknown ipvlan mode: \"l4\""),
            (json!({"mode": "L2"}), "unknown ipvlan mode"),
            (json!({"mtu": -5}), "invalid MTU -5"),
        ] {
            let e = parse(extra.clone()).unwrap_err();
            assert_eq!(e.code, Code::InvalidConfig, "{extra}");
            assert!(e.msg.contains(want), "{extra}: {}", e.msg);
        }
        assert_eq!(parse(json!({"mode": 2})).unwrap_err().code, Code::Decode);
    }
}
