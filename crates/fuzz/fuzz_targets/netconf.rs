//! `NetConf::parse` on any stdin, then every plugin-agnostic decode a plugin makes of the result:
//! its own keys through Go-style key folding (every kind of field serde can ask for), the `ipam`
//! object, and the `prevResult` printed back in every version.
//!
//! Must hold: no panic; a config that parsed parses again, the same, from its own serialisation.

#![no_main]

use cni::{Attachment, Dns, NetConf, Route};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// A plugin config with one field of every shape the folding deserializer has to handle.
#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PluginKeys {
    #[serde(default)]
    bridge: Option<String>,
    #[serde(default)]
    is_gateway: bool,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    vlan: Option<u16>,
    #[serde(default)]
    priority: Option<i64>,
    #[serde(default)]
    ratio: Option<f64>,
    #[serde(default)]
    flag: Option<char>,
    #[serde(default)]
    nothing: Option<()>,
    #[serde(default)]
    pair: Option<(u8, String)>,
    #[serde(default)]
    mode: Option<Mode>,
    #[serde(default)]
    port_mappings: Option<Vec<Mapping>>,
    #[serde(default)]
    routes: Option<Vec<Route>>,
    #[serde(default)]
    dns: Option<Dns>,
    #[serde(default)]
    capabilities: Option<HashMap<String, bool>>,
    #[serde(default)]
    runtime_config: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    ipam: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    attachments: Option<Vec<Attachment>>,
}

#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Mapping {
    host_port: u16,
    container_port: u16,
    #[serde(default)]
    protocol: String,
    #[serde(rename = "hostIP", default)]
    host_ip: Option<String>,
}

#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Bridge,
    Private,
    Vlan(u16),
    Pair { a: u8, b: u8 },
}

/// Unknown keys collected by `flatten`, which serde decodes through its own buffered path.
#[allow(dead_code)]
#[derive(Debug, Deserialize)]
struct WithRest {
    #[serde(default)]
    name: String,
    #[serde(flatten)]
    rest: HashMap<String, Value>,
}

fuzz_target!(|data: &[u8]| {
    let Ok(conf) = NetConf::parse(data) else { return };
    assert!(cni::env::is_valid_name(&conf.name), "accepted name {:?}", conf.name);
    assert!(!conf.plugin_type.is_empty());
    assert!(!conf.cni_version.is_empty());

    let _ = conf.decode::<PluginKeys>();
    let _ = conf.decode::<WithRest>();
    let _ = conf.decode::<BTreeMap<String, Value>>();
    let all: Value = conf.decode().expect("an object decodes as a Value");
    assert_eq!(all, conf.raw);
    if let Some(ipam) = conf.ipam() {
        let _ = cni::json::from_value::<PluginKeys>(ipam);
    }
    if let Some(prev) = &conf.prev_result {
        for version in cni::version::SUPPORTED {
            let _ = prev.to_json(version);
        }
    }

    let again = NetConf::parse(conf.raw.to_string().as_bytes()).expect("a parsed config parses again");
    assert_eq!(
        (&again.cni_version, &again.name, &again.plugin_type, &again.ipam_type),
        (&conf.cni_version, &conf.name, &conf.plugin_type, &conf.ipam_type)
    );
    assert_eq!(again.dns, conf.dns);
    assert_eq!(again.prev_result, conf.prev_result);
    assert_eq!(again.valid_attachments, conf.valid_attachments);
});
