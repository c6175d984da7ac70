//! Running a plugin binary once, as a runtime would: timed, with the peak memory of its process.

use anyhow::Context;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One run's outcome.
pub struct Run {
    pub stdout: String,
    pub took: Duration,
    /// The largest resident set of the plugin's own process (not its children), in KiB.
    pub peak_rss_kib: i64,
}

/// Runs `plugin` with only `env` (and `PATH`) and `stdin`; fails if the plugin failed.
pub fn run_plugin(plugin: &Path, env: &[(&str, &str)], stdin: &str) -> anyhow::Result<Run> {
    let started = Instant::now();
    let mut child = Command::new(plugin)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", plugin.display()))?;
    child.stdin.take().context("stdin")?.write_all(stdin.as_bytes())?;
    let mut stdout = String::new();
    child.stdout.take().context("stdout")?.read_to_string(&mut stdout)?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut usage: nix::libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as i32;
    // SAFETY: a plain syscall on our child's pid with valid out-pointers.
    let waited = unsafe { nix::libc::wait4(pid, &mut status, 0, &mut usage) };
    let took = started.elapsed();
    anyhow::ensure!(waited == pid, "wait4: {}", std::io::Error::last_os_error());
    anyhow::ensure!(
        nix::libc::WIFEXITED(status) && nix::libc::WEXITSTATUS(status) == 0,
        "{} failed: {stdout}",
        plugin.display()
    );
    Ok(Run { stdout, took, peak_rss_kib: usage.ru_maxrss })
}
