//! `ConfList::parse` on any file content, then the config each plugin of the list would get, with
//! every capability argument a runtime may pass, parsed as that plugin would parse its stdin.
//!
//! Must hold: no panic; every plugin of an accepted list is an object with a type, so each has a
//! config; the version chosen is one of the list's.

#![no_main]

use cni::{ConfList, NetConf};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use std::sync::LazyLock;

static RUNTIME_ARGS: LazyLock<Map<String, Value>> = LazyLock::new(|| {
    let args = json!({
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}],
        "ips": ["10.1.0.5/24", "fd00::5"],
        "mac": "0a:58:0a:01:00:05",
        "ipRanges": [[{"subnet": "10.9.0.0/24"}]],
        "bandwidth": {"ingressRate": 1000, "egressRate": 1000},
        "deviceID": "0000:00:1f.6",
        "aliases": ["web"],
        "cgroupPath": "/kubepods/pod1",
        "io.kubernetes.cri.pod-annotations": {"a": "b"}
    });
    args.as_object().cloned().unwrap_or_default()
});

fuzz_target!(|data: &[u8]| {
    let Ok(list) = ConfList::parse(data) else { return };
    assert!(cni::env::is_valid_name(&list.name), "accepted name {:?}", list.name);
    assert!(!list.plugins.is_empty());
    assert!(!list.cni_version.is_empty());
    for index in 0..list.plugins.len() {
        let conf = list.plugin_config(index, &RUNTIME_ARGS).expect("every accepted plugin is an object");
        assert_eq!(conf["name"], Value::String(list.name.clone()));
        assert!(conf.get("capabilities").is_none());
        if let Ok(parsed) = NetConf::parse(conf.to_string().as_bytes()) {
            assert_eq!(parsed.name, list.name);
            assert_eq!(parsed.cni_version, list.cni_version);
        }
    }
    assert!(list.plugin_config(list.plugins.len(), &RUNTIME_ARGS).is_none());
});
