//! Hostile environment and stdin through the dispatcher, as a plugin binary sees them: every
//! refusal is the spec's error JSON with a fitting code, a non-zero exit, and the plugin's verb is
//! never called (so it cannot have changed anything).

use cni::skel::{MAX_STDIN, Outcome, dispatch};
use cni::{CniResult, Plugin, Request};
use serde_json::Value;
use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A plugin that only records that one of its verbs ran.
#[derive(Default)]
struct Probe {
    ran: AtomicBool,
}

impl Plugin for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn add(&self, _: &Request) -> anyhow::Result<CniResult> {
        self.ran.store(true, Ordering::SeqCst);
        Ok(CniResult::default())
    }
    fn del(&self, _: &Request) -> anyhow::Result<()> {
        self.ran.store(true, Ordering::SeqCst);
        Ok(())
    }
    fn check(&self, _: &Request) -> anyhow::Result<()> {
        self.ran.store(true, Ordering::SeqCst);
        Ok(())
    }
}

const CONF: &str = r#"{"cniVersion":"1.0.0","name":"net1","type":"bridge","ipam":{"type":"host-local"}}"#;

fn env(command: &str, id: &str, ifname: &str) -> HashMap<String, String> {
    [("CNI_COMMAND", command), ("CNI_CONTAINERID", id), ("CNI_NETNS", "/run/netns/x"), ("CNI_IFNAME", ifname)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn run(vars: &HashMap<String, String>, stdin: impl Read) -> (Outcome, bool) {
    let probe = Probe::default();
    let out = dispatch(&probe, |k| vars.get(k).cloned(), stdin);
    (out, probe.ran.load(Ordering::SeqCst))
}

/// Asserts a refusal with `code` whose message mentions `want`, before the verb ran.
fn assert_refused((out, ran): (Outcome, bool), code: u64, want: &str) {
    assert_ne!(out.exit_code, 0);
    assert!(!ran, "the verb ran despite the refusal");
    let json: Value = serde_json::from_slice(&out.stdout).expect("error JSON");
    assert_eq!(json["code"], code, "{json}");
    assert!(json["msg"].as_str().is_some_and(|m| m.contains(want)), "{json} should mention {want:?}");
    assert!(json["cniVersion"].is_string(), "{json}");
}

#[test]
fn container_ids_and_ifnames_that_climb_or_overflow_are_refused() {
    let long = "a".repeat(cni::env::MAX_CONTAINER_ID + 1);
    for id in ["../../etc", "a/b", "..", ".x", "a\nb", "a\"b", "a;b", "a b", "é", long.as_str()] {
        for verb in ["ADD", "DEL", "CHECK"] {
            assert_refused(run(&env(verb, id, "eth0"), CONF.as_bytes()), 4, "containerID");
        }
    }
    for ifname in ["../x", "a/b", "..", ".", "eth0\n", "eth 0", "eth:0", "eth%d", "a\0b", "0123456789abcdef"] {
        for verb in ["ADD", "DEL", "CHECK"] {
            assert_refused(run(&env(verb, "c1", ifname), CONF.as_bytes()), 4, "interface name");
        }
    }
    let (out, ran) = run(&env("ADD", &"a".repeat(cni::env::MAX_CONTAINER_ID), "0123456789abcde"), CONF.as_bytes());
    assert_eq!((out.exit_code, ran), (0, true));
}

#[test]
fn network_names_that_climb_or_overflow_are_refused() {
    let long = "n".repeat(cni::config::MAX_NETWORK_NAME + 1);
    for name in ["../x", "a/b", "..", ".", "-n", "a\nb", "a\u{0}b", "a\"b", "a;b", long.as_str()] {
        let conf = serde_json::json!({"cniVersion": "1.0.0", "name": name, "type": "bridge"}).to_string();
        assert_refused(run(&env("ADD", "c1", "eth0"), conf.as_bytes()), 7, "network name");
    }
}

#[test]
fn ipam_types_that_are_paths_are_refused_before_the_plugin_runs() {
    for t in ["/bin/sh", "../host-local", "x/y", "..", ".", "a\u{0}b"] {
        let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge", "ipam": {"type": t}});
        for verb in ["ADD", "DEL", "CHECK"] {
            assert_refused(run(&env(verb, "c1", "eth0"), conf.to_string().as_bytes()), 7, "ipam.type");
        }
    }
}

/// An endless stdin that counts what was read from it.
struct Endless<'a>(&'a AtomicUsize);

impl Read for Endless<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        buf.fill(b' ');
        self.0.fetch_add(buf.len(), Ordering::SeqCst);
        Ok(buf.len())
    }
}

#[test]
fn stdin_past_the_cap_is_refused_without_reading_it_all() {
    let read = AtomicUsize::new(0);
    assert_refused(run(&env("ADD", "c1", "eth0"), Endless(&read)), 6, &format!("exceeds {MAX_STDIN} bytes"));
    assert!(read.load(Ordering::SeqCst) <= MAX_STDIN + (64 << 10), "read {} bytes", read.load(Ordering::SeqCst));

    let padded = format!("{CONF}{}", " ".repeat(MAX_STDIN - CONF.len()));
    let (out, ran) = run(&env("ADD", "c1", "eth0"), padded.as_bytes());
    assert_eq!((out.exit_code, ran), (0, true), "{}", String::from_utf8_lossy(&out.stdout));
    let over = format!("{padded} ");
    assert_refused(run(&env("ADD", "c1", "eth0"), over.as_bytes()), 6, "exceeds");
}

#[test]
fn hostile_text_in_an_error_stays_inside_its_json_string() {
    let (out, _) = run(&env("ADD", "a\"}\n{\"code\":0", "eth0"), CONF.as_bytes());
    let json: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(json["code"], 4);
    assert_eq!(json["details"], "a\"}\n{\"code\":0");
}
