//! The firewall plugin's keys (the reference's four, plus `dataDir`), validated before anything
//! changes.

use cni::{Code, Error, Request};
use firewall::filter::{DEFAULT_ADMIN_CHAIN, Policy};
use serde::Deserialize;
use std::path::PathBuf;

/// Where the plugin remembers each attachment's addresses, unless `dataDir` says otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/firewall";
/// firewalld's zone unless `firewalldZone` says otherwise (the reference's default).
pub const DEFAULT_ZONE: &str = "trusted";
/// The oldest `cniVersion` the reference firewall plugin accepts (`VersionsStartingFrom("0.4.0")`).
pub const OLDEST_VERSION: &str = "0.4.0";

/// `backend` as configured. `Auto` is the reference's empty value (and, as there, any value it
/// does not know): firewalld when it is on the system bus, else iptables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Auto,
    Iptables,
    Firewalld,
    /// Ours: a table of this plugin's own over nf_tables netlink.
    Nftables,
}

#[derive(Debug, Clone)]
pub struct FirewallConf {
    pub backend: Backend,
    pub admin_chain: String,
    pub zone: String,
    pub policy: Policy,
    pub data_dir: PathBuf,
}

#[derive(Deserialize, Default)]
struct Raw {
    #[serde(default)]
    backend: Option<String>,
    #[serde(rename = "iptablesAdminChainName", default)]
    iptables_admin_chain_name: Option<String>,
    #[serde(rename = "firewalldZone", default)]
    firewalld_zone: Option<String>,
    #[serde(rename = "ingressPolicy", default)]
    ingress_policy: Option<String>,
    #[serde(rename = "dataDir", default)]
    data_dir: Option<String>,
}

/// iptables chain names: at most 28 bytes (29 with the NUL of `XT_EXTENSION_MAXNAMELEN`), and
/// nothing the restore format would read as another word or option.
fn validate_chain(name: &str) -> Result<(), Error> {
    let ok = name.len() <= 28
        && !name.starts_with('-')
        && name.chars().all(|c| c.is_ascii_graphic() && c != '"' && c != '\'' && c != '\\');
    if ok
        && !matches!(name, "INPUT" | "FORWARD" | "OUTPUT" | "PREROUTING" | "POSTROUTING" | "ACCEPT" | "DROP" | "RETURN")
    {
        return Ok(());
    }
    Err(Error::config(format!(
        "iptablesAdminChainName: {name:?} is not a usable chain name (at most 28 printable characters, no quotes, not a built-in)"
    )))
}

/// firewalld zone names: what firewalld itself accepts (letters, digits, `_`, `-`, `/`), at most
/// 17 characters.
fn validate_zone(zone: &str) -> Result<(), Error> {
    if zone.len() <= 17 && zone.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/')) {
        return Ok(());
    }
    Err(Error::config(format!("firewalldZone: {zone:?} is not a valid zone name")))
}

impl FirewallConf {
    /// The config of ADD, CHECK and STATUS: every key must be valid.
    pub fn parse(req: &Request) -> Result<FirewallConf, Error> {
        FirewallConf::parse_with(req, true)
    }

    /// The config of DEL and GC, which clean up whatever the rest says: a policy, zone or admin
    /// chain that ADD would refuse does not stop them (the record says what was installed).
    pub fn parse_for_cleanup(req: &Request) -> Result<FirewallConf, Error> {
        FirewallConf::parse_with(req, false)
    }

    fn parse_with(req: &Request, strict: bool) -> Result<FirewallConf, Error> {
        if !cni::version::at_least(&req.config.cni_version, OLDEST_VERSION) {
            return Err(Error::new(Code::IncompatibleVersion, "incompatible CNI versions").with_details(format!(
                "config is {:?}, plugin supports [{}]",
                req.config.cni_version,
                cni::version::SUPPORTED
                    .iter()
                    .filter(|v| cni::version::at_least(v, OLDEST_VERSION))
                    .copied()
                    .collect::<Vec<_>>()
                    .join(" ")
            )));
        }
        let raw: Raw = req.config.decode()?;
        let backend = match raw.backend.as_deref().unwrap_or("") {
            "iptables" => Backend::Iptables,
            "firewalld" => Backend::Firewalld,
            "nftables" => Backend::Nftables,
            "" => Backend::Auto,
            other => {
                // The reference treats any other value as empty; a config that works there works here.
                eprintln!("firewall: unknown backend {other:?}, choosing as for an empty one");
                Backend::Auto
            }
        };
        let lenient = |e: Error, default: &str| if strict { Err(e) } else { Ok(default.to_string()) };
        let admin_chain = match raw.iptables_admin_chain_name.as_deref() {
            None | Some("") => DEFAULT_ADMIN_CHAIN.to_string(),
            Some(name) => match validate_chain(name) {
                Ok(()) => name.to_string(),
                Err(e) => lenient(e, DEFAULT_ADMIN_CHAIN)?,
            },
        };
        let zone = match raw.firewalld_zone.as_deref() {
            None | Some("") => DEFAULT_ZONE.to_string(),
            Some(zone) => match validate_zone(zone) {
                Ok(()) => zone.to_string(),
                Err(e) => lenient(e, DEFAULT_ZONE)?,
            },
        };
        let policy = match raw.ingress_policy.as_deref() {
            None | Some("") | Some("open") => Policy::Open,
            Some("same-bridge") => Policy::SameBridge,
            Some("isolated") => Policy::Isolated,
            Some(_) if !strict => Policy::Open,
            Some(other) => return Err(Error::config(format!("unknown ingress policy: {other:?}"))),
        };
        let data_dir = match raw.data_dir.as_deref() {
            None | Some("") => PathBuf::from(DEFAULT_DATA_DIR),
            Some(dir) if dir.starts_with('/') && !dir.split('/').any(|part| part == "..") => PathBuf::from(dir),
            Some(dir) => return Err(Error::config(format!("dataDir: {dir:?} must be an absolute path without '..'"))),
        };
        Ok(FirewallConf { backend, admin_chain, zone, policy, data_dir })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(conf: serde_json::Value) -> Result<FirewallConf, Error> {
        let req = testkit::request(cni::Command::Add, &conf, "");
        FirewallConf::parse(&req)
    }

    #[test]
    fn defaults_are_the_reference_defaults() {
        let c = parse(json!({"cniVersion": "1.0.0", "name": "n", "type": "firewall"})).unwrap();
        assert_eq!(c.backend, Backend::Auto);
        assert_eq!(c.admin_chain, "CNI-ADMIN");
        assert_eq!(c.zone, "trusted");
        assert_eq!(c.policy, Policy::Open);
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn keys_match_as_go_matches_them() {
        let c = parse(json!({"cniVersion": "0.4.0", "name": "n", "type": "firewall", "Backend": "iptables",
            "iptablesadminchainname": "MY-ADMIN", "FirewalldZone": "public", "ingressPolicy": "isolated"}))
        .unwrap();
        assert_eq!(c.backend, Backend::Iptables);
        assert_eq!(c.admin_chain, "MY-ADMIN");
        assert_eq!(c.zone, "public");
        assert_eq!(c.policy, Policy::Isolated);
        // Podman writes "backend": "" and nerdctl leaves it out; other values mean the same.
        for backend in ["", "bogus"] {
            let c = parse(json!({"cniVersion": "0.4.0", "name": "n", "type": "firewall", "backend": backend})).unwrap();
            assert_eq!(c.backend, Backend::Auto);
        }
    }

    #[test]
    fn bad_values_are_refused_with_their_codes() {
        let base = json!({"cniVersion": "1.0.0", "name": "n", "type": "firewall"});
        let with = |k: &str, v: serde_json::Value| {
            let mut c = base.clone();
            c[k] = v;
            parse(c).unwrap_err()
        };
        assert_eq!(with("ingressPolicy", json!("closed")).code, Code::InvalidConfig);
        assert_eq!(with("iptablesAdminChainName", json!("A B")).code, Code::InvalidConfig);
        assert_eq!(with("iptablesAdminChainName", json!("X".repeat(29))).code, Code::InvalidConfig);
        assert_eq!(with("iptablesAdminChainName", json!("FORWARD")).code, Code::InvalidConfig);
        assert_eq!(with("firewalldZone", json!("a zone")).code, Code::InvalidConfig);
        assert_eq!(with("dataDir", json!("relative")).code, Code::InvalidConfig);
        assert_eq!(with("backend", json!(3)).code, Code::Decode);
        let old = parse(json!({"cniVersion": "0.3.1", "name": "n", "type": "firewall"})).unwrap_err();
        assert_eq!(old.code, Code::IncompatibleVersion);
        // DEL and GC clean up whatever the rest of the config says.
        let mut bad = base.clone();
        bad["ingressPolicy"] = json!("closed");
        bad["firewalldZone"] = json!("a zone");
        let req = testkit::request(cni::Command::Del, &bad, "");
        let c = FirewallConf::parse_for_cleanup(&req).unwrap();
        assert_eq!((c.policy, c.zone.as_str()), (Policy::Open, DEFAULT_ZONE));
    }
}
