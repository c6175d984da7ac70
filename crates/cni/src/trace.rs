//! Timestamps of a plugin's steps, for profiling where an ADD or DEL spends its time. Each mark
//! is also a place where a test can have the plugin killed (`CNI_RS_FAULT=<plugin>:<step>=kill`,
//! debug builds only; see [`crate::fault`]), as a runtime's timeout would.
//!
//! With `CNI_RS_TRACE` set, each [`mark`] writes `cni-trace <plugin> <monotonic ns> <step>` to
//! stderr (which runtimes log and `cnitool` passes through); `scripts/profile.sh` lines these up
//! with the runtime's own start and end. Unset, a mark is one cached boolean test.

use std::sync::OnceLock;

fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("CNI_RS_TRACE").is_some_and(|v| !v.is_empty()))
}

fn monotonic_ns() -> u128 {
    let mut ts = nix::libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime fills the timespec it is given.
    unsafe { nix::libc::clock_gettime(nix::libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

thread_local! {
    /// The plugin this thread runs on behalf of, when not the process's own: a built-in delegate.
    static ACTING_AS: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with this thread's marks (and fault points) named after `plugin`: a delegate run in
/// the delegating plugin's process ([`crate::delegate`]) keeps its own names, so profiles and
/// kill tests see the same steps whether it was executed or not.
pub fn acting_as<T>(plugin: &'static str, f: impl FnOnce() -> T) -> T {
    let before = ACTING_AS.replace(Some(plugin));
    let out = f();
    ACTING_AS.set(before);
    out
}

fn plugin() -> &'static str {
    if let Some(name) = ACTING_AS.get() {
        return name;
    }
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        std::env::args_os()
            .next()
            .and_then(|a| std::path::Path::new(&a).file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "plugin".into())
    })
}

/// Records that `step` just finished.
pub fn mark(step: &str) {
    if enabled() {
        eprintln!("cni-trace {} {} {step}", plugin(), monotonic_ns());
    }
    if cfg!(debug_assertions) {
        let _ = crate::fault::point(&format!("{}:{step}", plugin()));
    }
}
