//! `CNI_ARGS`: `K=V;K2=V2`, parsed as libcni's `LoadArgs` does.
//!
//! Keys are case-sensitive (`IP`, not `ip`); a pair without exactly one `=` is an error. Which keys
//! are known is up to each plugin ([`CniArgs::check_known`]); unknown keys are an error unless
//! `IgnoreUnknown` is true, which every real runtime sets.

use crate::error::Error;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pairs: Vec<(String, String)>,
}

impl CniArgs {
    /// Parses the raw variable. Empty segments (a trailing `;`) are skipped; libcni would reject
    /// them, and nothing is gained by doing so.
    pub fn parse(raw: &str) -> Result<CniArgs, Error> {
        let mut pairs = Vec::new();
        for pair in raw.split(';').filter(|p| !p.is_empty()) {
            let mut parts = pair.split('=');
            let (Some(key), Some(value), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(Error::env(format!("CNI_ARGS: invalid pair {pair:?}")));
            };
            if key.is_empty() {
                return Err(Error::env(format!("CNI_ARGS: invalid pair {pair:?}: empty key")));
            }
            pairs.push((key.to_string(), value.to_string()));
        }
        let args = CniArgs { pairs };
        args.ignore_unknown()?;
        Ok(args)
    }

    /// The value of `key`; the last one wins when a key repeats.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// `IgnoreUnknown` as libcni reads a boolean: `1`/`true` or `0`/`false`, any case.
    pub fn ignore_unknown(&self) -> Result<bool, Error> {
        match self.get("IgnoreUnknown") {
            None => Ok(false),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "1" | "true" => Ok(true),
                "0" | "false" => Ok(false),
                _ => Err(Error::env(format!("CNI_ARGS: IgnoreUnknown has invalid value {v:?}"))),
            },
        }
    }

    /// Fails on keys outside `known` unless `IgnoreUnknown` is set.
    pub fn check_known(&self, known: &[&str]) -> Result<(), Error> {
        if self.ignore_unknown()? {
            return Ok(());
        }
        let unknown: Vec<String> = self
            .pairs
            .iter()
            .filter(|(k, _)| k != "IgnoreUnknown" && !known.contains(&k.as_str()))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if unknown.is_empty() { Ok(()) } else { Err(Error::env(format!("CNI_ARGS: unknown args {unknown:?}"))) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Code;

    #[test]
    fn parses_runtime_args() {
        let a = CniArgs::parse("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;IP=10.1.0.5").unwrap();
        assert_eq!(a.get("IP"), Some("10.1.0.5"));
        assert_eq!(a.get("ip"), None);
        assert!(a.ignore_unknown().unwrap());
        a.check_known(&["IP"]).unwrap();
    }

    #[test]
    fn rejects_malformed_pairs() {
        for bad in ["IP", "IP=1=2", "=x", "A=b;C"] {
            let e = CniArgs::parse(bad).unwrap_err();
            assert_eq!(e.code, Code::InvalidEnv, "{bad}");
        }
        assert!(CniArgs::parse("IgnoreUnknown=maybe").is_err());
    }

    #[test]
    fn unknown_keys_need_ignore_unknown() {
        let a = CniArgs::parse("FOO=bar;IP=10.0.0.2").unwrap();
        let e = a.check_known(&["IP"]).unwrap_err();
        assert_eq!(e.code, Code::InvalidEnv);
        assert!(e.msg.contains("FOO=bar"));
        CniArgs::parse("FOO=bar;IgnoreUnknown=true").unwrap().check_known(&[]).unwrap();
        assert!(CniArgs::parse("FOO=bar;IgnoreUnknown=0").unwrap().check_known(&[]).is_err());
    }

    #[test]
    fn empty_values_and_segments_are_fine() {
        let a = CniArgs::parse("IP=;;MAC=aa:bb:cc:dd:ee:ff;").unwrap();
        assert_eq!(a.get("IP"), Some(""));
        assert_eq!(a.get("MAC"), Some("aa:bb:cc:dd:ee:ff"));
        assert_eq!(CniArgs::parse("").unwrap(), CniArgs::default());
    }
}
