//! The tuning configuration: every key of the reference plugin (v1.9.1), its overrides, and the
//! checks that can be made before the kernel is touched.
//!
//! Where a value comes from, in rising precedence as in the reference: the top-level keys, then
//! `CNI_ARGS` `MAC=`, then `runtimeConfig.mac`, then `args.cni.{sysctl,mac,promisc,mtu,allmulti,
//! txQLen}` (`args.cni.sysctl` is merged into `sysctl`, its keys winning).

use cni::{Error, Request};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where the reference keeps the original settings (`<dataDir>/<containerID>_<ifname>.json`).
pub const DEFAULT_DATA_DIR: &str = "/run/cni/tuning";

/// If this file exists, every sysctl key must match one of its lines (Go regular expressions,
/// unanchored), as in the reference. The path is fixed there, and so it is here.
pub const ALLOWLIST: &str = "/etc/cni/tuning/allowlist.conf";

/// One sysctl to write, under `/proc/sys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctl {
    /// The key as configured (`net.ipv4.conf.IFNAME.arp_filter`), for messages.
    pub key: String,
    /// The path below `/proc/sys`, with slashes: `net/ipv4/conf/eth0/arp_filter`.
    pub path: String,
    pub value: String,
    /// Whether it belongs to the attachment's interface (`net/<proto>/{conf,neigh}/<ifname>/...`)
    /// rather than to the whole namespace. Only those are put back on DEL: a namespace-wide value
    /// is shared by every attachment of the container, and another may depend on it.
    pub per_interface: bool,
}

/// A hardware address to set, with the key it came from (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mac {
    pub bytes: Vec<u8>,
    pub source: &'static str,
}

impl Mac {
    /// As the kernel and CNI results write it: lowercase, colon-separated.
    pub fn text(&self) -> String {
        netkit::format_mac(&self.bytes)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TuningConf {
    pub data_dir: PathBuf,
    pub sysctls: Vec<Sysctl>,
    pub mac: Option<Mac>,
    /// `promisc: true` turns promiscuous mode on; false leaves it alone on ADD (and CHECK
    /// expects it off), as in the reference.
    pub promisc: bool,
    pub mtu: Option<u32>,
    pub allmulti: Option<bool>,
    pub txqlen: Option<u32>,
}

impl TuningConf {
    /// Whether ADD changes the link itself (and so saves its original settings).
    pub fn changes_link(&self) -> bool {
        self.mac.is_some() || self.promisc || self.mtu.is_some() || self.allmulti.is_some() || self.txqlen.is_some()
    }
}

#[derive(Deserialize, Default)]
struct Raw {
    #[serde(rename = "dataDir", default)]
    data_dir: Option<String>,
    #[serde(default)]
    sysctl: Option<Map<String, Value>>,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    promisc: Option<bool>,
    #[serde(default)]
    mtu: Option<i64>,
    #[serde(rename = "txQLen", default)]
    txqlen: Option<i64>,
    #[serde(default)]
    allmulti: Option<bool>,
    #[serde(rename = "runtimeConfig", default)]
    runtime_config: Option<RawRuntimeConfig>,
    #[serde(default)]
    args: Option<RawArgs>,
}

#[derive(Deserialize, Default)]
struct RawRuntimeConfig {
    #[serde(default)]
    mac: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawArgs {
    #[serde(default)]
    cni: Option<RawCniArgs>,
}

#[derive(Deserialize, Default)]
struct RawCniArgs {
    #[serde(default)]
    sysctl: Option<Map<String, Value>>,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    promisc: Option<bool>,
    #[serde(default)]
    mtu: Option<i64>,
    #[serde(default)]
    allmulti: Option<bool>,
    #[serde(rename = "txQLen", default)]
    txqlen: Option<i64>,
}

#[derive(Deserialize, Default)]
struct RawDataDir {
    #[serde(rename = "dataDir", default)]
    data_dir: Option<String>,
}

fn data_dir(configured: Option<String>) -> PathBuf {
    PathBuf::from(configured.filter(|d| !d.is_empty()).unwrap_or_else(|| DEFAULT_DATA_DIR.to_string()))
}

impl TuningConf {
    /// The configuration for ADD and CHECK: every value checked, code 7 naming the key when one
    /// is wrong. `allowlist` is the allowlist file (normally [`ALLOWLIST`]); CHECK passes `None`,
    /// as the reference checks it on ADD only.
    pub fn parse(req: &Request, allowlist: Option<&Path>) -> Result<TuningConf, Error> {
        if let Some(dup) = duplicate_sysctl_key(&req.stdin) {
            return Err(Error::config(format!("sysctl: duplicated sysctl keys are not allowed: {dup:?}")));
        }
        let raw: Raw = req.config.decode()?;
        let cni_args = raw.args.and_then(|a| a.cni).unwrap_or_default();
        // libcni's LoadArgs: an unknown CNI_ARGS key is an error unless IgnoreUnknown is set.
        req.args.check_known(&["MAC"])?;

        let mut sysctl = raw.sysctl.unwrap_or_default();
        // The reference panics here when there is no top-level "sysctl" (a nil map).
        sysctl.extend(cni_args.sysctl.unwrap_or_default());
        let sysctls = sysctl
            .into_iter()
            .map(|(key, value)| {
                let Value::String(value) = value else {
                    return Err(Error::config(format!("sysctl {key:?}: the value must be a string, not {value}")));
                };
                let path = sysctl_path(&key, &req.env.ifname)?;
                let per_interface = is_per_interface(&path, &req.env.ifname);
                Ok(Sysctl { key, path, value, per_interface })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        if let Some(file) = allowlist {
            check_allowlist(file, &sysctls)?;
        }

        let mut mac: Option<(String, &'static str)> = raw.mac.filter(|m| !m.is_empty()).map(|m| (m, "mac"));
        if let Some(m) = req.args.get("MAC").filter(|m| !m.is_empty()) {
            mac = Some((m.to_string(), "CNI_ARGS MAC"));
        }
        if let Some(m) = raw.runtime_config.and_then(|r| r.mac).filter(|m| !m.is_empty()) {
            mac = Some((m, "runtimeConfig.mac"));
        }
        if let Some(m) = cni_args.mac {
            // Even an empty one: it switches the MAC change off, as in the reference.
            mac = Some((m, "args.cni.mac"));
        }
        let mac = match mac.filter(|(m, _)| !m.is_empty()) {
            None => None,
            Some((text, source)) => Some(Mac {
                bytes: netkit::parse_hwaddr(&text)
                    .ok_or_else(|| Error::config(format!("{source}: invalid MAC address {text:?}")))?,
                source,
            }),
        };

        let mtu = match cni_args.mtu.or(raw.mtu) {
            None | Some(0) => None,
            Some(m) => Some(
                u32::try_from(m)
                    .ok()
                    .filter(|m| i32::try_from(*m).is_ok())
                    .ok_or_else(|| Error::config(format!("mtu: {m} is not a valid MTU")))?,
            ),
        };
        let txqlen = match cni_args.txqlen.or(raw.txqlen) {
            None => None,
            Some(q) => Some(
                u32::try_from(q)
                    .map_err(|_| Error::config(format!("txQLen: {q} is not a valid transmit queue length")))?,
            ),
        };

        Ok(TuningConf {
            data_dir: data_dir(raw.data_dir),
            sysctls,
            mac,
            promisc: cni_args.promisc.or(raw.promisc).unwrap_or(false),
            mtu,
            allmulti: cni_args.allmulti.or(raw.allmulti),
            txqlen,
        })
    }

    /// The one key DEL needs: where the saved settings are. Nothing else is checked, so a DEL
    /// with a config that ADD would refuse still puts back what an earlier ADD changed.
    pub fn data_dir_for_teardown(req: &Request) -> PathBuf {
        data_dir(req.config.decode::<RawDataDir>().ok().and_then(|r| r.data_dir))
    }
}

/// The file under `/proc/sys` a key names, as the reference derives it: every `.` becomes `/`,
/// then the first `IFNAME` becomes the interface name. It must lie under `net/` (the sysctls of
/// the container's network namespace, not the machine's).
pub fn sysctl_path(key: &str, ifname: &str) -> Result<String, Error> {
    let invalid = |why: &str| Error::config(format!("sysctl {key:?}: invalid net sysctl key: {why}"));
    if key.contains('\0') {
        return Err(invalid("it contains a NUL byte"));
    }
    let substituted = key.replace('.', "/").replacen("IFNAME", ifname, 1);
    let parts: Vec<&str> = substituted.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.contains(&"..") {
        return Err(invalid("it contains .."));
    }
    if parts.len() < 2 || parts[0] != "net" {
        return Err(invalid("only keys under /proc/sys/net may be set"));
    }
    Ok(parts.join("/"))
}

fn is_per_interface(path: &str, ifname: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    parts.len() > 4 && matches!(parts[2], "conf" | "neigh") && parts[3] == ifname
}

/// Lines of the allowlist, trimmed, empty ones left out: each a regular expression that must
/// match somewhere in the key (Go's `regexp.MatchString`).
fn check_allowlist(file: &Path, sysctls: &[Sysctl]) -> Result<(), Error> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(Error::new(cni::Code::Io, format!("reading the sysctl allowlist {}: {e}", file.display())));
        }
    };
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let patterns = lines
        .iter()
        .map(|l| {
            regex::Regex::new(l)
                .map_err(|e| Error::config(format!("sysctl allowlist {}: invalid pattern {l:?}: {e}", file.display())))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    for s in sysctls {
        if !patterns.iter().any(|p| p.is_match(&s.key)) {
            return Err(Error::config(format!(
                "sysctl {:?} is not allowed. Only the following sysctls are allowed: {lines:?}",
                s.key
            )));
        }
    }
    Ok(())
}

/// The first key that appears twice in a `sysctl` object of the raw config, if any. The
/// reference refuses those; a parsed JSON value has already kept only the last.
fn duplicate_sysctl_key(stdin: &[u8]) -> Option<String> {
    let mut de = serde_json::Deserializer::from_slice(stdin);
    let mut seen = HashSet::new();
    let mut dup = None;
    de::Deserializer::deserialize_any(&mut de, TopLevel { seen: &mut seen, dup: &mut dup }).ok()?;
    dup
}

struct TopLevel<'s> {
    seen: &'s mut HashSet<String>,
    dup: &'s mut Option<String>,
}

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key.eq_ignore_ascii_case("sysctl") {
                map.next_value_seed(SysctlKeys { seen: &mut *self.seen, dup: &mut *self.dup })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

struct SysctlKeys<'s> {
    seen: &'s mut HashSet<String>,
    dup: &'s mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for SysctlKeys<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for SysctlKeys<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("anything")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if !self.seen.insert(key.clone()) && self.dup.is_none() {
                *self.dup = Some(key);
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    // Any other type is for the real decoding to report.
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::Code;
    use serde_json::json;

    fn parse(conf: Value, cni_args: &str) -> Result<TuningConf, Error> {
        let conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "tuning"})
            .as_object()
            .unwrap()
            .clone()
            .into_iter()
            .chain(conf.as_object().unwrap().clone())
            .collect::<Map<String, Value>>();
        TuningConf::parse(&testkit::request(cni::Command::Add, &Value::Object(conf), cni_args), None)
    }

    #[test]
    fn bare_tuning_changes_nothing() {
        let c = parse(json!({}), "").unwrap();
        assert!(c.sysctls.is_empty() && !c.changes_link());
        assert_eq!(c.data_dir, PathBuf::from("/run/cni/tuning"));
    }

    #[test]
    fn every_key_is_read() {
        let c = parse(
            json!({"sysctl": {"net.ipv4.conf.IFNAME.arp_filter": "1", "net/core/somaxconn": "512"},
                   "mac": "0A:58:0A:01:00:05", "promisc": true, "mtu": 1400, "allmulti": false, "txQLen": 0,
                   "dataDir": "/tmp/x"}),
            "",
        )
        .unwrap();
        assert_eq!(c.sysctls[0].path, "net/ipv4/conf/eth0/arp_filter");
        assert!(c.sysctls[0].per_interface);
        assert_eq!(c.sysctls[1].path, "net/core/somaxconn");
        assert!(!c.sysctls[1].per_interface);
        assert_eq!(c.mac.as_ref().unwrap().text(), "0a:58:0a:01:00:05");
        assert_eq!((c.promisc, c.mtu, c.allmulti, c.txqlen), (true, Some(1400), Some(false), Some(0)));
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn overrides_follow_the_reference_order() {
        let c = parse(json!({"mac": "02:00:00:00:00:01"}), "IgnoreUnknown=1;MAC=02:00:00:00:00:02").unwrap();
        assert_eq!(c.mac.unwrap().source, "CNI_ARGS MAC");
        let c = parse(
            json!({"mac": "02:00:00:00:00:01", "runtimeConfig": {"mac": "02:00:00:00:00:03"}}),
            "MAC=02:00:00:00:00:02",
        )
        .unwrap();
        assert_eq!(c.mac.unwrap().text(), "02:00:00:00:00:03");
        let c = parse(
            json!({"mac": "02:00:00:00:00:01", "mtu": 1400, "promisc": true, "sysctl": {"net.core.somaxconn": "1"},
                   "args": {"cni": {"mac": "02:00:00:00:00:04", "mtu": 1300, "promisc": false, "txQLen": 7,
                                    "sysctl": {"net.core.somaxconn": "2", "net.ipv4.ip_forward": "1"}}}}),
            "",
        )
        .unwrap();
        assert_eq!(c.mac.unwrap().text(), "02:00:00:00:00:04");
        assert_eq!((c.mtu, c.promisc, c.txqlen), (Some(1300), false, Some(7)));
        assert_eq!(c.sysctls.iter().map(|s| s.value.as_str()).collect::<Vec<_>>(), ["2", "1"]);
        // args.cni.sysctl alone (the reference panics on it).
        let c = parse(json!({"args": {"cni": {"sysctl": {"net.ipv4.ip_forward": "1"}}}}), "").unwrap();
        assert_eq!(c.sysctls.len(), 1);
        let c = parse(json!({"mac": "02:00:00:00:00:01", "args": {"cni": {"mac": ""}}}), "").unwrap();
        assert_eq!(c.mac, None);
    }

    #[test]
    fn bad_values_are_code_7_naming_the_key() {
        for (conf, args, names) in [
            (json!({"sysctl": {"kernel.panic": "1"}}), "", "kernel.panic"),
            (json!({"sysctl": {"net": "1"}}), "", "\"net\""),
            (json!({"sysctl": {"/proc/sys/kernel/x": "1"}}), "", "kernel"),
            (json!({"sysctl": {"net.ipv4.ip_forward": 1}}), "", "net.ipv4.ip_forward"),
            (json!({"mac": "not-a-mac"}), "", "mac"),
            (json!({"runtimeConfig": {"mac": "01:02"}}), "", "runtimeConfig.mac"),
            (json!({}), "MAC=zz", "CNI_ARGS MAC"),
            (json!({"mtu": -1}), "", "mtu"),
            (json!({"mtu": 4294967296u64}), "", "mtu"),
            (json!({"txQLen": -1}), "", "txQLen"),
            (json!({"args": {"cni": {"txQLen": -5}}}), "", "txQLen"),
        ] {
            let e = parse(conf.clone(), args).unwrap_err();
            assert_eq!(e.code, Code::InvalidConfig, "{conf}: {}", e.msg);
            assert!(e.msg.contains(names), "{conf}: {}", e.msg);
        }
        // Unknown CNI_ARGS without IgnoreUnknown, as libcni's LoadArgs.
        assert_eq!(parse(json!({}), "K8S_POD_NAME=x").unwrap_err().code, Code::InvalidEnv);
        // Wrong JSON types are decoding failures naming the path.
        let e = parse(json!({"mtu": "9000"}), "").unwrap_err();
        assert_eq!(e.code, Code::Decode);
        assert!(e.msg.starts_with("mtu:"), "{}", e.msg);
    }

    #[test]
    fn duplicate_sysctl_keys_are_refused() {
        let stdin =
            br#"{"cniVersion":"1.0.0","name":"n","type":"tuning","sysctl":{"net.a":"1","net.b":"2","net.a":"3"}}"#;
        assert_eq!(duplicate_sysctl_key(stdin).as_deref(), Some("net.a"));
        assert_eq!(duplicate_sysctl_key(br#"{"sysctl":{"net.a":"1","net.b":"2"},"x":{"net.a":1}}"#), None);
        assert_eq!(duplicate_sysctl_key(br#"{"sysctl":null}"#), None);
        let req = testkit::request(cni::Command::Add, &json!({"name": "n", "type": "tuning"}), "");
        let req = cni::Request { stdin: stdin.to_vec(), ..req };
        assert_eq!(TuningConf::parse(&req, None).unwrap_err().code, Code::InvalidConfig);
    }

    #[test]
    fn sysctl_paths() {
        assert_eq!(
            sysctl_path("net.ipv4.conf.IFNAME.rp_filter", "eth0.100").unwrap(),
            "net/ipv4/conf/eth0.100/rp_filter"
        );
        assert_eq!(sysctl_path("/net//ipv4/./ip_forward", "e").unwrap(), "net/ipv4/ip_forward");
        assert_eq!(sysctl_path("net.IFNAME.IFNAME", "e").unwrap(), "net/e/IFNAME");
        for bad in ["net", "kernel.x", "netfilter.x", "", "a\0"] {
            assert_eq!(sysctl_path(bad, "eth0").unwrap_err().code, Code::InvalidConfig, "{bad:?}");
        }
        // Every dot becomes a slash, so `..` can only come from the interface name, which the
        // environment's checks never let be `..`; refused here all the same.
        assert_eq!(sysctl_path("net/../kernel/x", "e").unwrap(), "net/kernel/x");
        assert_eq!(sysctl_path("net/IFNAME/x", "..").unwrap_err().code, Code::InvalidConfig);
        assert!(!is_per_interface("net/ipv4/conf/all/rp_filter", "eth0"));
        assert!(is_per_interface("net/ipv6/neigh/eth0/retrans_time_ms", "eth0"));
    }

    #[test]
    fn allowlist_lines_are_unanchored_regexes() {
        let dir = testkit::TempDir::new("tuning-allowlist");
        let file = dir.path().join("allowlist.conf");
        let sysctls = |keys: &[&str]| -> Vec<Sysctl> {
            keys.iter()
                .map(|k| Sysctl { key: k.to_string(), path: String::new(), value: "1".into(), per_interface: false })
                .collect()
        };
        check_allowlist(&file, &sysctls(&["net.anything"])).unwrap();
        std::fs::write(&file, "  ^net\\.ipv4\\.conf\\.IFNAME\\.[a-z_]*$ \n\nsomaxconn\n").unwrap();
        check_allowlist(&file, &sysctls(&["net.ipv4.conf.IFNAME.arp_filter", "net.core.somaxconn"])).unwrap();
        let e = check_allowlist(&file, &sysctls(&["net.ipv4.ip_forward"])).unwrap_err();
        assert_eq!(e.code, Code::InvalidConfig);
        assert!(e.msg.contains("net.ipv4.ip_forward"), "{}", e.msg);
        std::fs::write(&file, "net.(\n").unwrap();
        assert_eq!(check_allowlist(&file, &sysctls(&["net.x"])).unwrap_err().code, Code::InvalidConfig);
    }
}
