//! The macvlan plugin's keys: `master`, `mode`, `mtu`, `mac` (with `CNI_ARGS MAC` and
//! `runtimeConfig.mac`), `linkInContainer`, `bcqueuelen` (and the shared `ipam` and `dns`),
//! validated before anything changes. What needs the kernel (the default master, the master's
//! MTU) is resolved by the plugin.

use cni::{Error, Request};
use netkit::macvlan::Mode;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacvlanConf {
    /// `None`: the device of the default route (in the container with `link_in_container`).
    pub master: Option<String>,
    pub mode: Mode,
    /// `None`: the master's MTU.
    pub mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
    pub link_in_container: bool,
    pub bc_queue_len: Option<u32>,
}

#[derive(Deserialize, Default)]
struct Raw {
    #[serde(default)]
    master: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    mtu: i64,
    #[serde(default)]
    mac: String,
    #[serde(rename = "linkInContainer", default)]
    link_in_container: bool,
    #[serde(default)]
    bcqueuelen: u32,
    #[serde(rename = "runtimeConfig", default)]
    runtime_config: Option<RawRuntime>,
}

#[derive(Deserialize, Default)]
struct RawRuntime {
    #[serde(default)]
    mac: String,
}

impl MacvlanConf {
    pub fn parse(req: &Request) -> Result<MacvlanConf, Error> {
        let raw: Raw = req.config.decode()?;
        let mode =
            Mode::parse(&raw.mode).ok_or_else(|| Error::config(format!("unknown macvlan mode: {:?}", raw.mode)))?;
        let mtu = match raw.mtu {
            0 => None,
            m @ 68..=65535 => Some(m as u32),
            m => return Err(Error::config(format!("invalid MTU {m}, must be [0, master MTU]"))),
        };
        req.args.check_known(&["MAC"])?;
        let mac = cni::linkconf::requested_mac(raw.mac, &req.args, raw.runtime_config.map(|r| r.mac))?;
        Ok(MacvlanConf {
            master: Some(raw.master).filter(|m| !m.is_empty()),
            mode,
            mtu,
            mac,
            link_in_container: raw.link_in_container,
            bc_queue_len: (raw.bcqueuelen != 0).then_some(raw.bcqueuelen),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::{Code, Command};
    use serde_json::{Value, json};

    fn parse(extra: Value, args: &str) -> Result<MacvlanConf, Error> {
        let mut conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "macvlan"});
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        MacvlanConf::parse(&testkit::request(Command::Add, &conf, args))
    }

    #[test]
    fn keys_and_defaults() {
        let c = parse(json!({}), "").unwrap();
        assert_eq!(
            c,
            MacvlanConf {
                master: None,
                mode: Mode::Bridge,
                mtu: None,
                mac: None,
                link_in_container: false,
                bc_queue_len: None
            }
        );
        let c = parse(
            json!({"master": "eth1", "mode": "vepa", "mtu": 1400, "mac": "0a:58:0a:01:00:05",
                   "linkInContainer": true, "bcqueuelen": 500}),
            "",
        )
        .unwrap();
        assert_eq!(c.master.as_deref(), Some("eth1"));
        assert_eq!((c.mode, c.mtu, c.link_in_container, c.bc_queue_len), (Mode::Vepa, Some(1400), true, Some(500)));
        assert_eq!(c.mac, Some([0x0a, 0x58, 0x0a, 0x01, 0x00, 0x05]));
        assert_eq!(parse(json!({"Mode": "private"}), "").unwrap().mode, Mode::Private);
    }

    #[test]
    fn mac_precedence_config_then_args_then_runtime() {
        let c = parse(json!({"mac": "0a:00:00:00:00:01"}), "MAC=0a:00:00:00:00:02").unwrap();
        assert_eq!(c.mac.unwrap()[5], 2);
        let c = parse(
            json!({"mac": "0a:00:00:00:00:01", "runtimeConfig": {"mac": "0a:00:00:00:00:03"}}),
            "MAC=0a:00:00:00:00:02",
        )
        .unwrap();
        assert_eq!(c.mac.unwrap()[5], 3);
    }

    #[test]
    fn bad_values_are_refused() {
        for (extra, args, code, want) in [
            (json!({"mode": "l2"}), "", Code::InvalidConfig, "unknown macvlan mode: \"l2\""),
            (json!({"mtu": -1}), "", Code::InvalidConfig, "invalid MTU -1"),
            (json!({"mac": "zz"}), "", Code::InvalidConfig, "invalid args zz for MAC addr"),
            (json!({"mac": "01:00:5e:00:00:01"}), "", Code::InvalidConfig, "multicast"),
            (json!({}), "FOO=1", Code::InvalidEnv, "unknown args"),
            (json!({"mtu": "9000"}), "", Code::Decode, "mtu"),
        ] {
            let e = parse(extra.clone(), args).unwrap_err();
            assert_eq!(e.code, code, "{extra}");
            assert!(e.msg.contains(want), "{extra}: {}", e.msg);
        }
    }
}
