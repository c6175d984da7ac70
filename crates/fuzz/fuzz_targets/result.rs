//! A result in any version (a `prevResult`, a delegate's output), read with every default
//! version, printed in every version, and read back.
//!
//! Must hold: no panic; our own output always reads back; printing what was read back gives the
//! same JSON (conversion is idempotent after the first, lossy, step); 1.x keeps everything.

#![no_main]

use cni::CniResult;
use cni::version::SUPPORTED;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else { return };
    for default in SUPPORTED.iter().copied().chain(["", "9.9.9"]) {
        let Ok(model) = CniResult::from_json(&value, default) else { continue };
        for version in SUPPORTED {
            let json = match model.to_json(version) {
                Ok(json) => json,
                Err(e) => {
                    assert!(matches!(*version, "0.1.0" | "0.2.0"), "{version}: {}", e.msg);
                    assert!(model.ips.is_empty(), "{version}: {}", e.msg);
                    continue;
                }
            };
            let text = serde_json::to_vec(&json).expect("a Value prints");
            let reparsed: Value = serde_json::from_slice(&text).expect("our output is JSON");
            assert_eq!(reparsed, json);
            let back = CniResult::from_json(&reparsed, "no default needed")
                .unwrap_or_else(|e| panic!("our {version} output does not read back: {}: {json}", e.msg));
            let again = back.to_json(version).expect("what was printed prints again");
            assert_eq!(again, json, "printing in {version} is not idempotent");
            if version.starts_with("1.") {
                assert_eq!(back, model, "{version} lost something");
            }
        }
    }
});
