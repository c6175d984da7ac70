//! Running a plugin binary once, as a runtime would, and timing it.

use anyhow::Context;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `plugin` with `env` and `stdin`; returns the wall time, failing if the plugin failed.
pub fn run_plugin(plugin: &Path, env: &[(&str, &str)], stdin: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut child = Command::new(plugin)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", plugin.display()))?;
    child.stdin.take().context("stdin")?.write_all(stdin.as_bytes())?;
    let out = child.wait_with_output()?;
    let took = started.elapsed();
    if !out.status.success() {
        anyhow::bail!("{} failed: {}", plugin.display(), String::from_utf8_lossy(&out.stdout));
    }
    Ok(took)
}
