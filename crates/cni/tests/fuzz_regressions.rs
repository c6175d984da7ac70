//! Inputs the fuzz targets (crates/fuzz, `make fuzz`) found to break the protocol crate, kept as
//! tests. Each names the target that found it.

use std::sync::mpsc;
use std::time::Duration;

/// Runs `f` on a thread and fails if it takes longer than `limit` (without waiting it out).
fn within<T: Send + 'static>(limit: Duration, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).unwrap_or_else(|_| panic!("{what} took longer than {limit:?}"))
}

/// An object of `keys` distinct keys, `"k0":0,"k1":0,...`.
fn many_keys(keys: usize) -> String {
    let body: Vec<String> = (0..keys).map(|i| format!("\"k{i}\":0")).collect();
    body.join(",")
}

/// netconf, dispatch: decoding an object matched every key against every key kept so far (Go-style
/// key folding), so a config of 200,000 keys, 2.3 MB and well under the stdin cap, took minutes
/// of CPU to be refused or accepted; in `prevResult` twice that. Now linear: well under a second
/// in a release build.
#[test]
fn an_object_of_many_keys_decodes_in_linear_time() {
    let keys = many_keys(200_000);
    let top = format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"x",{keys}}}"#);
    let prev = format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"x","prevResult":{{{keys}}}}}"#);
    assert!(top.len() < cni::skel::MAX_STDIN && prev.len() < cni::skel::MAX_STDIN);
    let conf = within(Duration::from_secs(20), "a config of 200,000 keys", move || cni::NetConf::parse(top.as_bytes()));
    assert_eq!(conf.unwrap().raw.as_object().unwrap().len(), 200_003);
    let conf =
        within(Duration::from_secs(20), "a prevResult of 200,000 keys", move || cni::NetConf::parse(prev.as_bytes()));
    assert!(conf.unwrap().prev_result.is_some());
}
