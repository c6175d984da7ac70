//! What the fuzz targets share: a fixed environment per verb and requests built from fuzzed
//! configs. The targets themselves are in `fuzz_targets/`, one per input the plugins read.

use cni::{CniArgs, Command, Env, NetConf, Request};
use std::collections::HashMap;

/// The environment a runtime would give for `verb`, with `cni_args` as `CNI_ARGS`.
pub fn environment(verb: &str, cni_args: &str) -> HashMap<String, String> {
    [
        ("CNI_COMMAND", verb),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/run/netns/c1"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", cni_args),
        ("CNI_PATH", "/opt/cni/bin"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// An ADD request for `stdin`, as the dispatcher would build it; `None` when the dispatcher would
/// refuse the config or the arguments before any plugin code runs.
pub fn add_request(stdin: &[u8], cni_args: &str) -> Option<Request> {
    let config = NetConf::parse(stdin).ok()?;
    let args = CniArgs::parse(cni_args).ok()?;
    let env = Env {
        command: Command::Add,
        container_id: "c1".into(),
        netns: "/run/netns/c1".into(),
        ifname: "eth0".into(),
        args: cni_args.into(),
        cni_path: vec!["/opt/cni/bin".into()],
    };
    Some(Request { env, args, config, stdin: stdin.to_vec() })
}

/// Splits an input at its first NUL: a JSON document before it (which cannot hold a raw NUL) and
/// a second, free-form input after it.
pub fn split_at_nul(data: &[u8]) -> (&[u8], Option<&[u8]>) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    }
}
