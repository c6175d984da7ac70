//! The vrf plugin's keys: `vrfname` (required) and `table` (0 or absent: the first table no
//! other VRF uses), checked before anything changes.

use cni::{Error, Request};
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrfConf {
    pub vrf_name: String,
    pub table: Option<u32>,
}

#[derive(Deserialize, Default)]
struct Raw {
    #[serde(default)]
    vrfname: String,
    #[serde(default)]
    table: u32,
}

impl VrfConf {
    pub fn parse(req: &Request) -> Result<VrfConf, Error> {
        // vrf speaks 0.3.1 and later, as the reference (`VersionsStartingFrom("0.3.1")`).
        if !cni::version::at_least(&req.config.cni_version, "0.3.1") {
            return Err(Error::new(cni::Code::IncompatibleVersion, "incompatible CNI versions").with_details(format!(
                "config is {:?}, plugin supports [\"0.3.1\" \"0.4.0\" \"1.0.0\" \"1.1.0\"]",
                req.config.cni_version
            )));
        }
        let raw: Raw = req.config.decode()?;
        if raw.vrfname.is_empty() {
            return Err(Error::config("configuration is expected to have a valid vrf name"));
        }
        // An interface name: what the kernel accepts (IFNAMSIZ, no '/', no whitespace).
        if raw.vrfname.len() > 15 || raw.vrfname.contains(['/', ':']) || raw.vrfname.contains(char::is_whitespace) {
            return Err(Error::config(format!("vrfname {:?} is not a valid interface name", raw.vrfname)));
        }
        Ok(VrfConf { vrf_name: raw.vrfname, table: (raw.table != 0).then_some(raw.table) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::{Code, Command};
    use serde_json::{Value, json};

    fn parse(version: &str, extra: Value) -> Result<VrfConf, Error> {
        let mut conf = json!({"cniVersion": version, "name": "n", "type": "vrf", "vrfname": "blue"});
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        VrfConf::parse(&testkit::request(Command::Add, &conf, ""))
    }

    #[test]
    fn keys_versions_and_errors() {
        assert_eq!(parse("1.0.0", json!({})).unwrap(), VrfConf { vrf_name: "blue".into(), table: None });
        assert_eq!(parse("0.3.1", json!({"TABLE": 1001})).unwrap().table, Some(1001));
        assert_eq!(parse("1.0.0", json!({"table": 0})).unwrap().table, None);
        assert_eq!(parse("0.2.0", json!({})).unwrap_err().code, Code::IncompatibleVersion);
        assert_eq!(parse("1.0.0", json!({"vrfname": ""})).unwrap_err().code, Code::InvalidConfig);
        assert_eq!(parse("1.0.0", json!({"vrfname": "a/b"})).unwrap_err().code, Code::InvalidConfig);
        assert_eq!(parse("1.0.0", json!({"vrfname": "a-very-long-vrf-name"})).unwrap_err().code, Code::InvalidConfig);
        assert_eq!(parse("1.0.0", json!({"table": -1})).unwrap_err().code, Code::Decode);
    }
}
