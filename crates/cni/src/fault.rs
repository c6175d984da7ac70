//! Fault injection for tests: named points in a plugin's work where a test can make it fail or
//! die, to prove that every step is undone or recovered from.
//!
//! Only debug builds (the ones tests run) look at `CNI_RS_FAULT`; in release builds a point is an
//! empty function. The variable holds `point=action` items separated by commas, where the action
//! is `fail` (the step returns an error), `panic` (the step panics, as a bug would) or `kill` (the
//! process gets SIGKILL, as from a runtime's timeout).

/// Whether a test switched on the condition `name` (`name=on`), for faults that are not a failing
/// step, such as a stray interface where a plugin does not expect one.
pub fn enabled(name: &str) -> bool {
    cfg!(debug_assertions)
        && std::env::var("CNI_RS_FAULT").is_ok_and(|spec| spec.split(',').any(|item| item == format!("{name}=on")))
}

/// A point named `name` (`plugin:step`). Returns an error when a test asked this point to fail.
pub fn point(name: &str) -> anyhow::Result<()> {
    if cfg!(debug_assertions)
        && let Ok(spec) = std::env::var("CNI_RS_FAULT")
    {
        for item in spec.split(',') {
            match item.split_once('=') {
                Some((p, "fail")) if p == name => anyhow::bail!("injected failure at {name}"),
                Some((p, "panic")) if p == name => panic!("injected panic at {name}"),
                Some((p, "kill")) if p == name => {
                    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
                }
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_named_point_fails() {
        // SAFETY: this test is the only one in the crate that touches CNI_RS_FAULT.
        unsafe { std::env::set_var("CNI_RS_FAULT", "x:a=kill-not,x:b=fail") };
        assert!(point("x:a").is_ok());
        let e = point("x:b").unwrap_err();
        assert_eq!(e.to_string(), "injected failure at x:b");
        assert!(point("x:c").is_ok());
        assert!(!enabled("x:b"));
        unsafe { std::env::set_var("CNI_RS_FAULT", "x:d=on") };
        assert!(enabled("x:d") && !enabled("x:e"));
        unsafe { std::env::remove_var("CNI_RS_FAULT") };
        assert!(point("x:b").is_ok());
    }
}
