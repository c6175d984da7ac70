use super::*;
use crate::result::{Interface, IpConfig};
use serde_json::{Value, json};
use std::collections::HashMap;

struct Fake;

impl Plugin for Fake {
    fn name(&self) -> &'static str {
        "fake"
    }
    fn add(&self, req: &Request) -> anyhow::Result<CniResult> {
        if req.config.raw.get("panic").is_some() {
            panic!("asked to panic");
        }
        if let Some(code) = req.config.raw.get("failWith").and_then(Value::as_u64) {
            return Err(
                anyhow::Error::new(Error::new(Code::from_u32(code as u32), "told to fail")).context("doing the thing")
            );
        }
        Ok(CniResult {
            interfaces: vec![Interface {
                name: req.env.ifname.clone(),
                sandbox: req.env.netns.clone(),
                ..Default::default()
            }],
            ips: vec![IpConfig { address: "10.0.0.2/24".parse().unwrap(), gateway: None, interface: Some(0) }],
            ..Default::default()
        })
    }
    fn del(&self, _req: &Request) -> anyhow::Result<()> {
        Ok(())
    }
    fn check(&self, _req: &Request) -> anyhow::Result<()> {
        anyhow::bail!("check failed")
    }
}

fn invoke(command: &str, stdin: &str) -> (Value, i32) {
    invoke_env(&[("CNI_COMMAND", command)], stdin)
}

fn invoke_env(extra: &[(&str, &str)], stdin: &str) -> (Value, i32) {
    let mut env: HashMap<String, String> = [
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/run/netns/c1"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    let out = dispatch(&Fake, |k| env.get(k).cloned(), stdin.as_bytes());
    let value = if out.stdout.is_empty() { Value::Null } else { serde_json::from_slice(&out.stdout).unwrap() };
    (value, out.exit_code)
}

fn conf(version: &str) -> String {
    format!(r#"{{"cniVersion":"{version}","name":"net","type":"fake"}}"#)
}

#[test]
fn version_lists_every_supported_version_and_ignores_stdin() {
    let (v, code) = invoke("VERSION", "garbage");
    assert_eq!(code, 0);
    assert_eq!(
        v,
        json!({"cniVersion": "1.1.0", "supportedVersions": ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
    );
}

#[test]
fn add_prints_the_result_in_the_config_version() {
    let (v, code) = invoke("ADD", &conf("0.3.1"));
    assert_eq!(code, 0);
    assert_eq!(v["cniVersion"], "0.3.1");
    assert_eq!(v["ips"][0]["version"], "4");
    let (v, _) = invoke("ADD", &conf("0.2.0"));
    assert_eq!(v["ip4"]["ip"], "10.0.0.2/24");
    let (v, _) = invoke("ADD", &conf("1.1.0"));
    assert_eq!(v["interfaces"][0]["sandbox"], "/run/netns/c1");
}

#[test]
fn output_is_indented_like_the_reference() {
    let env: HashMap<&str, &str> =
        [("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c"), ("CNI_NETNS", "/n"), ("CNI_IFNAME", "eth0")].into();
    let out = dispatch(&Fake, |k| env.get(k).map(|s| s.to_string()), conf("1.0.0").as_bytes());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("{\n    \"cniVersion\": \"1.0.0\",\n    \"interfaces\": ["), "{text}");
}

#[test]
fn del_prints_nothing() {
    let (v, code) = invoke("DEL", &conf("1.0.0"));
    assert_eq!((v, code), (Value::Null, 0));
}

/// Extra environment, stdin, and the error code expected.
type Case = (Vec<(&'static str, &'static str)>, String, u64);

#[test]
fn errors_are_spec_json_with_codes() {
    let cases: Vec<Case> = vec![
        (vec![("CNI_COMMAND", "BOGUS")], conf("1.0.0"), 4),
        (vec![("CNI_COMMAND", "ADD"), ("CNI_NETNS", "")], conf("1.0.0"), 4),
        (vec![("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "bad/name")], conf("1.0.0"), 4),
        (vec![("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "../etc")], conf("1.0.0"), 4),
        (vec![("CNI_COMMAND", "ADD")], String::new(), 6),
        (vec![("CNI_COMMAND", "ADD")], "{not json".into(), 6),
        (vec![("CNI_COMMAND", "ADD")], "[]".into(), 6),
        (vec![("CNI_COMMAND", "ADD")], r#"{"cniVersion":"1.0.0","type":"fake"}"#.into(), 7),
        (vec![("CNI_COMMAND", "ADD")], r#"{"cniVersion":"1.0.0","name":"n"}"#.into(), 7),
        (vec![("CNI_COMMAND", "ADD")], conf("2.0.0"), 1),
        (vec![("CNI_COMMAND", "ADD")], conf("1.0"), 1),
        (vec![("CNI_COMMAND", "CHECK")], conf("0.3.1"), 1),
        (vec![("CNI_COMMAND", "GC")], conf("1.0.0"), 1),
        (vec![("CNI_COMMAND", "STATUS")], conf("0.4.0"), 1),
        (vec![("CNI_COMMAND", "ADD"), ("CNI_ARGS", "IP")], conf("1.0.0"), 4),
        (
            vec![("CNI_COMMAND", "ADD")],
            r#"{"cniVersion":"1.0.0","name":"n","type":"fake","prevResult":{"ips":"x"}}"#.into(),
            6,
        ),
        (vec![("CNI_COMMAND", "ADD")], r#"{"cniVersion":"1.0.0","name":"n","type":"fake","failWith":107}"#.into(), 107),
        (vec![("CNI_COMMAND", "CHECK")], conf("1.0.0"), 999),
    ];
    for (env, stdin, want) in cases {
        let (v, code) = invoke_env(&env, &stdin);
        assert_eq!(code, 1, "{env:?} {stdin}");
        assert_eq!(v["code"], want, "{env:?} {stdin}: {v}");
        assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        assert!(v["cniVersion"].is_string(), "{v}");
    }
}

#[test]
fn plugin_errors_keep_their_code_and_context() {
    let (v, _) = invoke("ADD", r#"{"cniVersion":"0.4.0","name":"n","type":"fake","failWith":11}"#);
    assert_eq!(v, json!({"cniVersion": "0.4.0", "code": 11, "msg": "doing the thing: told to fail"}));
}

#[test]
fn a_panic_becomes_code_999() {
    let (v, code) = invoke("ADD", r#"{"cniVersion":"1.0.0","name":"n","type":"fake","panic":true}"#);
    assert_eq!(code, 1);
    assert_eq!(v["code"], 999);
    assert!(v["msg"].as_str().unwrap().contains("asked to panic"));
}

#[test]
fn the_about_run_names_the_plugin_and_succeeds() {
    // No CNI_COMMAND at all, or an empty one: a human (or nerdctl, parsing the version).
    for env in [vec![("CNI_COMMAND", "")], vec![]] {
        let mut vars: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        vars.remove("CNI_CONTAINERID");
        let out = dispatch(&Fake, |k| vars.get(k).cloned(), &b""[..]);
        assert_eq!((out.exit_code, out.stdout.len()), (0, 0), "{}", String::from_utf8_lossy(&out.stdout));
    }
    let line = about("firewall");
    let version = line.strip_prefix("CNI firewall plugin v").expect("the reference's about line");
    let parts: Vec<u32> = version.split('.').map(|p| p.parse().unwrap()).collect();
    assert!(parts.len() == 3 && parts >= vec![1, 1, 0], "nerdctl needs at least v1.1.0: {line}");
}

#[test]
fn version_reads_stdin_to_the_end() {
    struct Counting<'a>(&'a std::cell::Cell<usize>, usize);
    impl Read for Counting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.1);
            self.1 -= n;
            self.0.set(self.0.get() + n);
            Ok(n)
        }
    }
    let read = std::cell::Cell::new(0);
    let env: HashMap<&str, &str> = [("CNI_COMMAND", "VERSION")].into();
    let out = dispatch(&Fake, |k| env.get(k).map(|s| s.to_string()), Counting(&read, 100_000));
    assert_eq!(out.exit_code, 0);
    assert_eq!(read.get(), 100_000, "VERSION left the writer's data unread");
}

#[test]
fn del_and_gc_read_configs_of_any_size() {
    let big = format!(r#"{{"cniVersion":"1.1.0","name":"n","type":"fake","pad":"{}"}}"#, "x".repeat(MAX_STDIN));
    for verb in ["DEL", "GC"] {
        let (v, code) = invoke(verb, &big);
        assert_eq!((v, code), (Value::Null, 0), "{verb}");
    }
}

#[test]
fn invalid_utf8_in_strings_becomes_the_replacement_character_as_in_go() {
    let mut stdin = br#"{"cniVersion":"1.0.0","name":"n","type":"fake","note":"a"#.to_vec();
    stdin.extend_from_slice(&[0xff, 0xe2, 0x82, b'b']);
    stdin.extend_from_slice(br#""}"#);
    assert_eq!(
        replace_invalid_utf8(stdin.clone()).windows(9).filter(|w| *w == "\u{FFFD}\u{FFFD}\u{FFFD}".as_bytes()).count(),
        1
    );
    let env: HashMap<&str, &str> =
        [("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c"), ("CNI_NETNS", "/x"), ("CNI_IFNAME", "eth0")].into();
    let out = dispatch(&Fake, |k| env.get(k).map(|s| s.to_string()), &stdin[..]);
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stdout));
    // Outside a string it stays a syntax error.
    let out = dispatch(&Fake, |k| env.get(k).map(|s| s.to_string()), &b"{\xff}"[..]);
    assert_eq!(out.exit_code, 1);
}

#[test]
fn a_bad_prev_result_fails_add_but_not_del() {
    let stdin = r#"{"cniVersion":"1.0.0","name":"n","type":"fake","prevResult":{"cniVersion":"1.0.0","interfaces":"garbage","ips":[{"address":"not-an-ip"}]}}"#;
    assert_eq!(invoke("ADD", stdin).0["code"], 6);
    assert_eq!(invoke("DEL", stdin), (Value::Null, 0));
}

#[test]
fn oversized_stdin_is_refused() {
    let big = format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"fake","pad":"{}"}}"#, "x".repeat(MAX_STDIN));
    let (v, code) = invoke("ADD", &big);
    assert_eq!((v["code"].as_u64(), code), (Some(6), 1));
}

#[test]
fn status_and_gc_default_to_success_on_1_1_0() {
    for verb in ["STATUS", "GC"] {
        let env: HashMap<&str, &str> = [("CNI_COMMAND", verb)].into();
        let out = dispatch(&Fake, |k| env.get(k).map(|s| s.to_string()), conf("1.1.0").as_bytes());
        assert_eq!(out.exit_code, 0, "{verb}: {}", String::from_utf8_lossy(&out.stdout));
    }
}
