//! The plugin's keys, as containers/dnsname reads them: `domainName`, and the `aliases` capability
//! (`runtimeConfig.aliases`, a map from network name to that container's aliases on it, which
//! Podman fills from `--network-alias`). The container's own name is `K8S_POD_NAME` from
//! `CNI_ARGS`, which Podman sets to the container name for exactly this plugin.
//!
//! Every name that reaches dnsmasq's files is checked here first: a DNS name made of RFC 1123
//! labels, or code 7 and nothing written. The reference writes whatever it is given, so a name
//! with a space or a newline becomes a second, forged line of dnsmasq's hosts file.

use cni::{Code, Error, Request};
use serde::Deserialize;
use std::collections::HashMap;

/// The `CNI_ARGS` key holding the container's name.
pub const NAME_ARG: &str = "K8S_POD_NAME";

#[derive(Deserialize, Default)]
struct Keys {
    #[serde(rename = "domainName", default)]
    domain_name: String,
    #[serde(rename = "runtimeConfig", default)]
    runtime_config: RuntimeConfig,
}

#[derive(Deserialize, Default)]
struct RuntimeConfig {
    #[serde(default)]
    aliases: Option<HashMap<String, Vec<String>>>,
}

/// What ADD and CHECK need, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `domainName`: names are answered bare and under it.
    pub domain: String,
    /// The container's name (`K8S_POD_NAME`).
    pub name: String,
    /// This network's aliases of the container, without duplicates or the name itself.
    pub aliases: Vec<String>,
}

impl Config {
    /// The keys of an ADD or CHECK: everything must be there and valid (code 7 otherwise).
    pub fn parse(req: &Request) -> Result<Config, Error> {
        req.args.check_known(&[NAME_ARG])?;
        let keys: Keys = req.config.decode()?;
        if keys.domain_name.is_empty() {
            return Err(Error::config("domainName is required"));
        }
        check_dns_name("domainName", &keys.domain_name)?;
        let name = req.args.get(NAME_ARG).unwrap_or_default().to_string();
        if name.is_empty() {
            return Err(Error::config(format!(
                "CNI_ARGS has no {NAME_ARG}: the container's name is what this plugin publishes"
            )));
        }
        check_dns_name("container name", &name)?;
        let mut aliases: Vec<String> = Vec::new();
        let all = keys.runtime_config.aliases.unwrap_or_default();
        for alias in all.get(&req.config.name).into_iter().flatten() {
            check_dns_name("alias", alias)?;
            if !alias.eq_ignore_ascii_case(&name) && !aliases.iter().any(|a| a.eq_ignore_ascii_case(alias)) {
                aliases.push(alias.clone());
            }
        }
        Ok(Config { domain: keys.domain_name, name, aliases })
    }
}

/// The container name DEL and GC match the reference's lines by, when it is there and valid.
/// They never fail on it: cleanup goes by the attachment's identity.
pub fn name_for_cleanup(req: &Request) -> Option<String> {
    req.args.get(NAME_ARG).filter(|n| check_dns_name("container name", n).is_ok()).map(str::to_string)
}

/// Code 7 unless `name` is a DNS name of RFC 1123 labels: each 1 to 63 letters, digits and
/// hyphens, not starting or ending with a hyphen; at most 253 bytes; the last label not all
/// digits (so a name can never read as an address).
pub fn check_dns_name(what: &str, name: &str) -> Result<(), Error> {
    let bad = |why: &str| Err(Error::new(Code::InvalidConfig, format!("invalid {what} {name:?}: {why}")));
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 253 {
        return bad("longer than 253 bytes");
    }
    let labels: Vec<&str> = name.split('.').collect();
    for label in &labels {
        if label.is_empty() || label.len() > 63 {
            return bad("each dot-separated label must be 1 to 63 characters");
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return bad("only letters, digits, hyphens and dots are allowed (RFC 1123)");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a label cannot start or end with a hyphen");
        }
    }
    if labels.last().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit())) {
        return bad("the last label cannot be all digits");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conf() -> serde_json::Value {
        json!({"cniVersion": "1.0.0", "name": "podnet", "type": "dnsname", "domainName": "dns.podman",
               "runtimeConfig": {"aliases": {"podnet": ["db", "web", "DB", "primary.db"], "other": ["x"]}}})
    }

    #[test]
    fn reads_the_reference_keys() {
        let req = testkit::request(cni::Command::Add, &conf(), "IgnoreUnknown=1;K8S_POD_NAME=web;K8S_POD_NAMESPACE=x");
        let c = Config::parse(&req).unwrap();
        assert_eq!(c.domain, "dns.podman");
        assert_eq!(c.name, "web");
        // Only this network's aliases; the name itself and case-insensitive repeats dropped.
        assert_eq!(c.aliases, ["db", "primary.db"]);
    }

    #[test]
    fn go_key_matching_applies() {
        let mut c = conf();
        c.as_object_mut().unwrap().remove("domainName");
        c["domainname"] = json!("example.test");
        let req = testkit::request(cni::Command::Add, &c, "K8S_POD_NAME=a1");
        assert_eq!(Config::parse(&req).unwrap().domain, "example.test");
    }

    #[test]
    fn bad_names_are_code_7() {
        for (args, aliases) in [
            ("K8S_POD_NAME=", json!([])),
            ("K8S_POD_NAME=web_1", json!([])),
            ("K8S_POD_NAME=web", json!(["ok", "bad alias"])),
            ("K8S_POD_NAME=web", json!(["-x"])),
            ("K8S_POD_NAME=web", json!(["a\n10.0.0.1 forged"])),
            ("K8S_POD_NAME=web", json!(["a..b"])),
            ("K8S_POD_NAME=1.2.3.4", json!([])),
        ] {
            let mut c = conf();
            c["runtimeConfig"]["aliases"]["podnet"] = aliases.clone();
            let req = testkit::request(cni::Command::Add, &c, args);
            let e = Config::parse(&req).unwrap_err();
            assert_eq!(e.code, Code::InvalidConfig, "{args} {aliases}: {e:?}");
        }
        let mut c = conf();
        c["domainName"] = json!("dns podman");
        let e = Config::parse(&testkit::request(cni::Command::Add, &c, "K8S_POD_NAME=web")).unwrap_err();
        assert_eq!(e.code, Code::InvalidConfig);
        c["domainName"] = json!("");
        assert!(Config::parse(&testkit::request(cni::Command::Add, &c, "K8S_POD_NAME=web")).is_err());
    }

    #[test]
    fn unknown_args_need_ignore_unknown() {
        let e = Config::parse(&testkit::request(cni::Command::Add, &conf(), "K8S_POD_NAME=web;FOO=1")).unwrap_err();
        assert_eq!(e.code, Code::InvalidEnv);
    }

    #[test]
    fn label_rules() {
        for ok in ["a", "web-1", "1web", "x.y", &"a".repeat(63), "A-Z"] {
            check_dns_name("n", ok).unwrap();
        }
        for bad in ["", ".", "a.", ".a", "a-", &"a".repeat(64), "ü", "a b", "a_b", "123", "a.2"] {
            assert!(check_dns_name("n", bad).is_err(), "{bad:?}");
        }
        let long = vec!["abcdefghi"; 26].join(".");
        assert!(long.len() > 253 && check_dns_name("n", &long).is_err());
    }
}
