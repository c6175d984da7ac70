//! `CNI_ARGS` parsing, and the whole `CNI_*` environment (`Env::load`) with every variable fuzzed.
//!
//! The input is the raw `CNI_ARGS` value; split at NUL bytes it is also `CNI_COMMAND`,
//! `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS` and `CNI_PATH` (an environment
//! variable cannot hold a NUL). Must hold: no panic; what is accepted is what the spec allows.

#![no_main]

use cni::{CniArgs, Command, Env};
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 6] = ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH"];

fuzz_target!(|data: &[u8]| {
    // The dispatcher reads variables with `std::env::var`: one that is not UTF-8 is missing.
    let Ok(text) = std::str::from_utf8(data) else { return };

    if let Ok(args) = CniArgs::parse(text) {
        args.ignore_unknown().expect("parse checked IgnoreUnknown");
        let _ = args.check_known(&["IP", "MAC", "K8S_POD_NAME"]);
        for pair in text.split(';').filter(|p| !p.is_empty()) {
            let (key, _) = pair.split_once('=').expect("every accepted pair has a =");
            assert!(!key.is_empty());
            assert!(args.get(key).is_some(), "{key:?} parsed but not found");
        }
    }

    let values: Vec<&str> = text.split('\0').collect();
    let get = |name: &str| {
        let i = NAMES.iter().position(|n| *n == name)?;
        values.get(i).map(|v| v.to_string())
    };
    let Ok(env) = Env::load(get) else { return };
    assert_eq!(Command::parse(env.command.as_str()), Some(env.command));
    assert_eq!(Some(env.command.as_str()), values.first().copied());
    if matches!(env.command, Command::Add | Command::Del | Command::Check) {
        cni::env::validate_container_id(&env.container_id).expect("accepted container ID");
        cni::env::validate_ifname(&env.ifname).expect("accepted ifname");
    }
    assert!(env.cni_path.iter().all(|p| !p.as_os_str().is_empty()));
    let _ = CniArgs::parse(&env.args);
});
