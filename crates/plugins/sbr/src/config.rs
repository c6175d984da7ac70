//! The sbr plugin's one key, `table`, validated before anything changes.

use cni::{Error, Request};
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SbrConf {
    /// `table` (v1.6.0): the routing table every address's rule points to. With it, sbr adds
    /// only the rules and moves no routes: the table is the operator's.
    pub table: Option<u32>,
}

#[derive(Deserialize, Default)]
struct Raw {
    #[serde(default)]
    table: Option<i64>,
}

impl SbrConf {
    pub fn parse(req: &Request) -> Result<SbrConf, Error> {
        let raw: Raw = req.config.decode()?;
        let table = match raw.table {
            None => None,
            // 0 is RT_TABLE_UNSPEC: the kernel refuses a rule that looks it up.
            Some(t @ 1..=0xffff_ffff) => Some(t as u32),
            Some(t) => return Err(Error::config(format!("table: {t} is not a routing table ID (1..4294967295)"))),
        };
        Ok(SbrConf { table })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::{Code, Command};
    use serde_json::json;

    fn parse(conf: serde_json::Value) -> Result<SbrConf, Error> {
        SbrConf::parse(&testkit::request(Command::Add, &conf, ""))
    }

    #[test]
    fn table_is_optional_and_checked() {
        assert_eq!(parse(json!({"cniVersion": "1.0.0", "name": "n", "type": "sbr"})).unwrap().table, None);
        let c = parse(json!({"cniVersion": "1.0.0", "name": "n", "type": "sbr", "TABLE": 500})).unwrap();
        assert_eq!(c.table, Some(500), "Go's decoder matches keys without regard to case");
        for bad in [json!(0), json!(-1), json!(1u64 << 32)] {
            let e = parse(json!({"cniVersion": "1.0.0", "name": "n", "type": "sbr", "table": bad})).unwrap_err();
            assert_eq!(e.code, Code::InvalidConfig, "{bad}");
        }
        let e = parse(json!({"cniVersion": "1.0.0", "name": "n", "type": "sbr", "table": "100"})).unwrap_err();
        assert_eq!(e.code, Code::Decode);
    }
}
