//! The network configuration on stdin: the keys every plugin shares, parsed once.
//!
//! Each plugin decodes its own keys from [`NetConf::raw`] with [`NetConf::decode`], which matches
//! keys as Go does (see [`crate::json`]). Unknown keys are kept: the spec passes them through.

use crate::env::is_valid_name;
use crate::error::Error;
use crate::result::{CniResult, Dns};
use crate::version;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The longest network name accepted. libcni sets no limit. Names become directory names
/// (host-local's `<dataDir>/<network>`) and, with a container ID of at most
/// [`crate::env::MAX_CONTAINER_ID`], the reference's iptables comments
/// (`dnat name: "<network>" id: "<containerID>"`, at most 255 bytes), which must hold both whole for
/// DEL and GC to find a container's rules by them.
pub const MAX_NETWORK_NAME: usize = 100;

/// Code 7 unless `name` is a valid network name (libcni's characters, at most
/// [`MAX_NETWORK_NAME`] bytes).
fn validate_network_name(name: &str) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::config("missing network name"));
    }
    if !is_valid_name(name) {
        return Err(Error::config("invalid characters found in network name").with_details(name));
    }
    if name.len() > MAX_NETWORK_NAME {
        return Err(Error::config(format!(
            "network name is {} bytes long; at most {MAX_NETWORK_NAME} are allowed",
            name.len()
        )));
    }
    Ok(())
}

/// A still-valid attachment, as listed for GC in `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    #[serde(rename = "ifname")]
    pub ifname: String,
}

/// The shared part of a plugin's configuration.
#[derive(Debug, Clone)]
pub struct NetConf {
    /// `cniVersion`; `0.1.0` when the config has none (libcni's rule).
    pub cni_version: String,
    pub name: String,
    /// `type`: the plugin's own name.
    pub plugin_type: String,
    /// `ipam.type`, when an IPAM plugin is configured (`"ipam": {}` means none: L2 only).
    pub ipam_type: Option<String>,
    /// `dns` from the config; plugins let it override what IPAM returns.
    pub dns: Dns,
    /// `prevResult`, converted from whatever version it was written in.
    pub prev_result: Option<CniResult>,
    /// Why `prevResult` could not be used, when it was there but malformed. The dispatcher refuses
    /// such a config for every verb but DEL and GC, which clean up by identity instead (the spec:
    /// DEL must tolerate a missing or bad prevResult).
    pub prev_result_error: Option<Error>,
    /// GC only: `cni.dev/valid-attachments` (or libcni's duplicate `cni.dev/attachments`).
    pub valid_attachments: Option<Vec<Attachment>>,
    /// The whole config object as received.
    pub raw: Value,
}

#[derive(Deserialize)]
struct Common {
    #[serde(rename = "cniVersion", default)]
    cni_version: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(rename = "type", default)]
    plugin_type: Option<String>,
    #[serde(default)]
    ipam: Option<IpamRef>,
    #[serde(default)]
    dns: Option<Dns>,
    #[serde(rename = "prevResult", default)]
    prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    valid_attachments: Option<Vec<Attachment>>,
    // libcni sends the same list under this key too (cni#1101).
    #[serde(rename = "cni.dev/attachments", default)]
    attachments: Option<Vec<Attachment>>,
}

#[derive(Deserialize)]
struct IpamRef {
    #[serde(rename = "type", default)]
    plugin_type: Option<String>,
}

impl NetConf {
    /// Parses stdin. Malformed JSON and wrong types are code 6; a missing or invalid `name` or
    /// `type` is code 7.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, Error> {
        if stdin.iter().all(u8::is_ascii_whitespace) {
            return Err(Error::decode("network config on stdin is empty"));
        }
        let raw: Value =
            serde_json::from_slice(stdin).map_err(|e| Error::decode(format!("error parsing network config: {e}")))?;
        if !raw.is_object() {
            return Err(Error::decode("network config is not a JSON object"));
        }
        let common: Common = crate::json::from_value(&raw)?;

        let cni_version = match common.cni_version {
            Some(v) if !v.is_empty() => v,
            _ => version::IMPLICIT.to_string(),
        };
        let name = common.name.unwrap_or_default();
        validate_network_name(&name)?;
        let plugin_type = common.plugin_type.unwrap_or_default();
        if plugin_type.is_empty() {
            return Err(Error::config("missing plugin type"));
        }
        // The IPAM plugin is executed from CNI_PATH by that name: refused here, before the plugin
        // changes anything, rather than when it is about to run (a bridge would exist by then).
        let ipam_type = common.ipam.and_then(|i| i.plugin_type).filter(|t| !t.is_empty());
        if let Some(t) = &ipam_type {
            crate::delegate::validate_plugin_type(t).map_err(|e| Error::config(format!("ipam.type: {}", e.msg)))?;
        }
        let (prev_result, prev_result_error) = match common.prev_result {
            None | Some(Value::Null) => (None, None),
            Some(prev) => match CniResult::from_json(&prev, &cni_version) {
                Ok(prev) => (Some(prev), None),
                Err(e) => (None, Some(Error::decode(format!("failed to parse prevResult: {}", e.msg)))),
            },
        };
        Ok(NetConf {
            cni_version,
            name,
            plugin_type,
            ipam_type,
            dns: common.dns.unwrap_or_default(),
            prev_result,
            prev_result_error,
            valid_attachments: common.valid_attachments.or(common.attachments),
            raw,
        })
    }

    /// Decodes the plugin's own keys from the whole config object.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Error> {
        crate::json::from_value(&self.raw)
    }

    /// The `ipam` object as given, for plugins that read their own IPAM keys (host-local).
    pub fn ipam(&self) -> Option<&Value> {
        self.raw.get("ipam")
    }
}

/// A network configuration list (`.conflist`) as a runtime reads it from disk: the plugins of one
/// network, run in order for ADD and in reverse for DEL.
#[derive(Debug, Clone)]
pub struct ConfList {
    /// The version to run the plugins at: `cniVersion`, or the newest supported entry of
    /// `cniVersions` (libcni picks the highest version it knows).
    pub cni_version: String,
    pub name: String,
    pub disable_check: bool,
    pub disable_gc: bool,
    /// Each plugin's own object, as written.
    pub plugins: Vec<Value>,
}

#[derive(Deserialize)]
struct RawConfList {
    #[serde(rename = "cniVersion", default)]
    cni_version: Option<String>,
    #[serde(rename = "cniVersions", default)]
    cni_versions: Option<Vec<String>>,
    #[serde(default)]
    name: Option<String>,
    #[serde(rename = "disableCheck", default)]
    disable_check: bool,
    #[serde(rename = "disableGC", default)]
    disable_gc: bool,
    #[serde(default)]
    plugins: Option<Vec<Value>>,
}

impl ConfList {
    /// Parses and validates a conflist: a valid `name`, at least one plugin, each an object with
    /// a `type` that is a plain file name.
    pub fn parse(bytes: &[u8]) -> Result<ConfList, Error> {
        let raw: RawConfList = crate::json::from_slice(bytes)?;
        let name = raw.name.unwrap_or_default();
        if !is_valid_name(&name) || name.len() > MAX_NETWORK_NAME {
            return Err(Error::config(format!("invalid network name {name:?}")));
        }
        let newest_listed = raw
            .cni_versions
            .unwrap_or_default()
            .into_iter()
            .filter(|v| version::is_supported(v))
            .max_by(|a, b| version::compare(a, b));
        let cni_version = newest_listed
            .or(raw.cni_version.filter(|v| !v.is_empty()))
            .unwrap_or_else(|| version::IMPLICIT.to_string());
        let plugins = raw.plugins.unwrap_or_default();
        if plugins.is_empty() {
            return Err(Error::config(format!("network {name:?} has no plugins")));
        }
        for (i, plugin) in plugins.iter().enumerate() {
            let plugin_type = plugin.get("type").and_then(Value::as_str).unwrap_or("");
            crate::delegate::validate_plugin_type(plugin_type)
                .map_err(|e| Error::config(format!("plugins[{i}]: {}", e.msg)))?;
        }
        Ok(ConfList { cni_version, name, disable_check: raw.disable_check, disable_gc: raw.disable_gc, plugins })
    }

    /// The config plugin `index` gets on stdin: its own object with the list's `name` and
    /// `cniVersion`, and `runtimeConfig` holding the runtime's arguments for the capabilities the
    /// plugin declares (the `capabilities` key itself is not passed on).
    pub fn plugin_config(&self, index: usize, runtime_args: &serde_json::Map<String, Value>) -> Option<Value> {
        let mut conf = self.plugins.get(index)?.as_object()?.clone();
        let capabilities = conf.remove("capabilities");
        conf.insert("name".into(), Value::String(self.name.clone()));
        conf.insert("cniVersion".into(), Value::String(self.cni_version.clone()));
        let enabled: serde_json::Map<String, Value> = runtime_args
            .iter()
            .filter(|(k, _)| capabilities.as_ref().and_then(|c| c.get(k.as_str())) == Some(&Value::Bool(true)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !enabled.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(enabled));
        }
        Some(Value::Object(conf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Code;

    #[test]
    fn parses_common_keys_and_keeps_the_rest() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"net1","type":"bridge","bridge":"br9",
                 "ipam":{"type":"host-local","subnet":"10.1.0.0/24"},
                 "dns":{"nameservers":["1.1.1.1"]}}"#,
        )
        .unwrap();
        assert_eq!((c.cni_version.as_str(), c.name.as_str(), c.plugin_type.as_str()), ("1.0.0", "net1", "bridge"));
        assert_eq!(c.ipam_type.as_deref(), Some("host-local"));
        assert_eq!(c.dns.nameservers, vec!["1.1.1.1"]);
        assert_eq!(c.raw["bridge"], "br9");
        assert!(c.prev_result.is_none());
    }

    #[test]
    fn missing_version_is_0_1_0_and_empty_ipam_is_none() {
        let c = NetConf::parse(br#"{"name":"n","type":"bridge","ipam":{}}"#).unwrap();
        assert_eq!(c.cni_version, "0.1.0");
        assert_eq!(c.ipam_type, None);
    }

    #[test]
    fn go_style_key_matching_applies() {
        let c = NetConf::parse(br#"{"CNIVersion":"0.4.0","Name":"n","TYPE":"loopback"}"#).unwrap();
        assert_eq!((c.cni_version.as_str(), c.name.as_str()), ("0.4.0", "n"));
    }

    #[test]
    fn bad_input_gets_fitting_codes() {
        let cases: &[(&[u8], Code)] = &[
            (b"", Code::Decode),
            (b"  \n", Code::Decode),
            (b"{", Code::Decode),
            (b"[1,2]", Code::Decode),
            (b"\"str\"", Code::Decode),
            (br#"{"name":5,"type":"x"}"#, Code::Decode),
            (br#"{"cniVersion":1,"name":"n","type":"x"}"#, Code::Decode),
            (br#"{"type":"x"}"#, Code::InvalidConfig),
            (br#"{"name":"a/b","type":"x"}"#, Code::InvalidConfig),
            (br#"{"name":"n"}"#, Code::InvalidConfig),
            (br#"{"name":"n","type":"x","ipam":"host-local"}"#, Code::Decode),
            (br#"{"name":"n","type":"x","ipam":{"type":"/bin/sh"}}"#, Code::InvalidConfig),
            (br#"{"name":"n","type":"x","ipam":{"type":"../host-local"}}"#, Code::InvalidConfig),
            (br#"{"name":"n","type":"x","ipam":{"type":"x/y"}}"#, Code::InvalidConfig),
            (br#"{"name":"n\nx","type":"x"}"#, Code::InvalidConfig),
        ];
        for (input, code) in cases {
            let e = NetConf::parse(input).unwrap_err();
            assert_eq!(e.code, *code, "{}: {}", String::from_utf8_lossy(input), e.msg);
        }
        // A malformed prevResult is kept aside: the dispatcher refuses it except for DEL and GC.
        for input in [
            &br#"{"name":"n","type":"x","prevResult":[1]}"#[..],
            br#"{"cniVersion":"1.0.0","name":"n","type":"x","prevResult":{"ips":[{"address":"bogus"}]}}"#,
        ] {
            let c = NetConf::parse(input).unwrap();
            assert!(c.prev_result.is_none());
            assert_eq!(c.prev_result_error.map(|e| e.code), Some(Code::Decode));
        }
    }

    #[test]
    fn prev_result_is_converted_from_its_version() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"portmap",
                 "prevResult":{"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.0.0.2/24","interface":0}],
                               "interfaces":[{"name":"eth0","sandbox":"/x"}]}}"#,
        )
        .unwrap();
        let prev = c.prev_result.unwrap();
        assert_eq!(prev.ips[0].address.to_string(), "10.0.0.2/24");
        assert_eq!(prev.interfaces[0].sandbox, "/x");
    }

    #[test]
    fn conflists_pick_a_version_and_build_plugin_configs() {
        let list = ConfList::parse(
            br#"{"cniVersions":["0.4.0","1.0.0","9.9.9"],"name":"web","plugins":[
                  {"type":"bridge","ipam":{"type":"host-local"}},
                  {"type":"portmap","capabilities":{"portMappings":true,"ips":false}}]}"#,
        )
        .unwrap();
        assert_eq!(list.cni_version, "1.0.0");
        let runtime: serde_json::Map<String, Value> = serde_json::from_str(
            r#"{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}],"ips":["10.0.0.9"]}"#,
        )
        .unwrap();
        let bridge = list.plugin_config(0, &runtime).unwrap();
        assert_eq!(bridge["name"], "web");
        assert!(bridge.get("runtimeConfig").is_none());
        let portmap = list.plugin_config(1, &runtime).unwrap();
        assert_eq!(portmap["cniVersion"], "1.0.0");
        assert!(portmap.get("capabilities").is_none());
        assert_eq!(portmap["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
        assert!(portmap["runtimeConfig"].get("ips").is_none());
        let parsed = NetConf::parse(portmap.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.plugin_type, "portmap");
        assert!(list.plugin_config(2, &runtime).is_none());
    }

    #[test]
    fn bad_conflists_are_rejected() {
        for (bad, code) in [
            (&br#"{"name":"n","plugins":[]}"#[..], Code::InvalidConfig),
            (br#"{"name":"n"}"#, Code::InvalidConfig),
            (br#"{"name":"bad name","plugins":[{"type":"loopback"}]}"#, Code::InvalidConfig),
            (br#"{"name":"n","plugins":[{"type":"../../bin/sh"}]}"#, Code::InvalidConfig),
            (br#"{"name":"n","plugins":[{"ipam":{}}]}"#, Code::InvalidConfig),
            (br#"{"name":"n","plugins":"loopback"}"#, Code::Decode),
            (br#"{"name":"n","plugins":[{"type":"loopback"}]"#, Code::Decode),
        ] {
            assert_eq!(ConfList::parse(bad).unwrap_err().code, code, "{}", String::from_utf8_lossy(bad));
        }
        let implicit = ConfList::parse(br#"{"name":"n","plugins":[{"type":"loopback"}]}"#).unwrap();
        assert_eq!(implicit.cni_version, "0.1.0");
    }

    #[test]
    fn gc_attachments_under_either_key() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"n","type":"x",
                 "cni.dev/attachments":[{"containerID":"a","ifname":"eth0"}],
                 "cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"},{"containerID":"b","ifname":"net1"}]}"#,
        )
        .unwrap();
        assert_eq!(c.valid_attachments.unwrap().len(), 2);
        let c = NetConf::parse(br#"{"name":"n","type":"x","cni.dev/attachments":[{"containerID":"a","ifname":"e"}]}"#)
            .unwrap();
        assert_eq!(c.valid_attachments.unwrap()[0].container_id, "a");
        let c = NetConf::parse(br#"{"name":"n","type":"x"}"#).unwrap();
        assert!(c.valid_attachments.is_none());
    }
}
