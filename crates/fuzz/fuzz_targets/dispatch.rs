//! The whole dispatcher (`skel::dispatch`) with a fuzzed stdin, for every verb, in a fixed
//! environment, with a plugin that succeeds at everything (its ADD returns the `prevResult` it was
//! given, so the result printing in the config's version is fuzzed too).
//!
//! Must hold: no panic (libfuzzer-sys aborts on any panic, so the dispatcher's own `catch_unwind`
//! hides nothing); the exit status is 0 or 1; stdout is JSON (a result or an error with a code),
//! or empty for verbs without output; what is printed stays within a fixed multiple of the input.

#![no_main]

use cni::{CniResult, Interface, IpConfig, Plugin, Request};
use cni_fuzz::environment;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

struct Succeeds;

impl Plugin for Succeeds {
    fn name(&self) -> &'static str {
        "fuzz"
    }
    fn add(&self, req: &Request) -> anyhow::Result<CniResult> {
        if let Some(prev) = &req.config.prev_result {
            return Ok(prev.clone());
        }
        Ok(CniResult {
            interfaces: vec![Interface { name: req.env.ifname.clone(), ..Default::default() }],
            ips: vec![IpConfig { address: "10.1.0.5/24".parse()?, gateway: None, interface: Some(0) }],
            ..Default::default()
        })
    }
    fn del(&self, _req: &Request) -> anyhow::Result<()> {
        Ok(())
    }
    fn check(&self, _req: &Request) -> anyhow::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    for verb in ["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"] {
        let env = environment(verb, "IgnoreUnknown=1;IP=10.1.0.5");
        let out = cni::skel::dispatch(&Succeeds, |k| env.get(k).cloned(), data);
        assert!(out.stdout.len() <= 32 * data.len() + 16 * 1024, "{verb}: {} bytes out", out.stdout.len());
        match out.exit_code {
            0 if verb == "DEL" || verb == "CHECK" || verb == "STATUS" || verb == "GC" => {
                assert!(out.stdout.is_empty(), "{verb} printed {}", String::from_utf8_lossy(&out.stdout));
            }
            0 => {
                let value: Value = serde_json::from_slice(&out.stdout).expect("a result is JSON");
                if verb == "ADD" {
                    CniResult::from_json(&value, "").expect("a printed result reads back");
                }
            }
            1 => {
                let value: Value = serde_json::from_slice(&out.stdout).expect("an error is JSON");
                let code = value["code"].as_u64().expect("an error has a code");
                assert_ne!(code, 999, "{verb}: {value}");
                assert!(value["msg"].is_string(), "{verb}: {value}");
            }
            other => panic!("{verb}: exit status {other}"),
        }
    }
});
