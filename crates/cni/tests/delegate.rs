//! Delegation against small shell-script plugins in a temporary CNI_PATH.

use cni::delegate;
use cni::{CniArgs, Code, Command, Env, Error, NetConf, Request};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

struct PluginDir(PathBuf);

impl PluginDir {
    fn new(tag: &str) -> PluginDir {
        let dir = std::env::temp_dir().join(format!("cni-delegate-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        PluginDir(dir)
    }

    fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }
}

impl Drop for PluginDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn request(dir: &Path, ipam_type: &str) -> Request {
    let stdin = format!(r#"{{"cniVersion":"1.0.0","name":"net","type":"bridge","ipam":{{"type":"{ipam_type}"}}}}"#);
    Request {
        env: Env {
            command: Command::Add,
            container_id: "c1".into(),
            netns: "/run/netns/c1".into(),
            ifname: "eth0".into(),
            args: String::new(),
            cni_path: vec![dir.join("missing"), dir.to_path_buf()],
        },
        args: CniArgs::default(),
        config: NetConf::parse(stdin.as_bytes()).unwrap(),
        stdin: stdin.into_bytes(),
    }
}

fn coded(err: &anyhow::Error) -> Error {
    Error::from_anyhow(err)
}

#[test]
fn add_reads_the_delegates_result_and_sees_our_stdin_and_command() {
    let dir = PluginDir::new("ok");
    // The fake IPAM echoes what it was given into the result so we can see it arrived.
    dir.script(
        "fake-ipam",
        r#"input=$(cat)
case "$input" in *'"name":"net"'*) ;; *) exit 3 ;; esac
echo '{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.1.0.7/24","gateway":"10.1.0.1"}],'
echo "\"dns\":{\"domain\":\"$CNI_COMMAND\"}}""#,
    );
    let req = request(&dir.0, "fake-ipam");
    let result = delegate::ipam(&req, Command::Add).unwrap().unwrap();
    assert_eq!(result.ips[0].address.to_string(), "10.1.0.7/24");
    assert_eq!(result.dns.domain, "ADD");
    assert!(delegate::ipam(&req, Command::Del).unwrap().is_none());
}

#[test]
fn the_delegates_error_code_passes_through() {
    let dir = PluginDir::new("err");
    dir.script(
        "fake-ipam",
        r#"echo '{"cniVersion":"1.0.0","code":7,"msg":"no ranges","details":"ipam.ranges"}'; exit 1"#,
    );
    let req = request(&dir.0, "fake-ipam");
    let err = coded(&delegate::ipam(&req, Command::Add).unwrap_err());
    assert_eq!(err.code, Code::InvalidConfig);
    assert!(err.msg.contains("no ranges"), "{}", err.msg);
    assert_eq!(err.details, "ipam.ranges");
}

#[test]
fn a_delegate_without_error_json_is_reported_with_its_stderr() {
    let dir = PluginDir::new("crash");
    dir.script("fake-ipam", "echo 'segfault-ish' >&2; exit 2");
    let req = request(&dir.0, "fake-ipam");
    let err = coded(&delegate::ipam(&req, Command::Add).unwrap_err());
    assert_eq!(err.code, Code::Internal);
    assert!(err.msg.contains("segfault-ish"), "{}", err.msg);
}

#[test]
fn a_result_that_is_not_json_is_a_decode_error() {
    let dir = PluginDir::new("garbage");
    dir.script("fake-ipam", "cat >/dev/null; echo 'not json'");
    let req = request(&dir.0, "fake-ipam");
    assert_eq!(coded(&delegate::ipam(&req, Command::Add).unwrap_err()).code, Code::Decode);
}

#[test]
fn path_like_types_are_refused_before_anything_runs() {
    let dir = PluginDir::new("traversal");
    let marker = dir.0.join("ran");
    // A plugin one level up that would leave a marker if it were ever executed.
    let outside = dir.0.join("sub");
    std::fs::create_dir_all(&outside).unwrap();
    dir.script("x", &format!("touch {}", marker.display()));
    // NetConf::parse refuses such a type already; delegation must refuse it on its own too.
    let mut req = request(&outside, "x");
    req.config.ipam_type = Some("../x".into());
    req.env.cni_path = vec![outside.clone()];
    let err = coded(&delegate::ipam(&req, Command::Add).unwrap_err());
    assert_eq!(err.code, Code::InvalidConfig);
    assert!(!marker.exists(), "the plugin outside CNI_PATH was executed");
}

#[test]
fn missing_ipam_type_and_missing_plugin_are_config_errors() {
    let dir = PluginDir::new("missing");
    let mut req = request(&dir.0, "nope");
    assert_eq!(coded(&delegate::ipam(&req, Command::Add).unwrap_err()).code, Code::InvalidConfig);
    req.config.ipam_type = None;
    assert_eq!(coded(&delegate::ipam(&req, Command::Add).unwrap_err()).code, Code::InvalidConfig);
}
