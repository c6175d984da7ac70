//! The two ways a plugin deals with several steps that can each fail, shared by every plugin.
//!
//! ADD is all or nothing: each step that changed the world pushes its undo onto a [`Rollback`],
//! and unless the ADD reaches [`Rollback::commit`] the guard undoes them newest first, on an
//! error return and on a panic alike (the dispatcher catches panics only after the stack has
//! unwound through the guard).
//!
//! DEL and GC are best effort: every step is tried, and a [`Failures`] keeps all that went wrong,
//! so one stale entry cannot hide another and the runtime's log names each of them.

use crate::error::Error;
use std::panic::{AssertUnwindSafe, catch_unwind};

type Step<'a> = Box<dyn FnOnce() -> anyhow::Result<()> + 'a>;

/// Undoes an ADD's steps unless the ADD commits. Undo steps must not rely on state the failing
/// step may have left half-made (they look up what they remove and treat "gone" as done).
#[must_use = "a Rollback undoes its steps when dropped without commit()"]
pub struct Rollback<'a> {
    plugin: &'static str,
    steps: Vec<(String, Step<'a>)>,
}

impl<'a> Rollback<'a> {
    /// `plugin` prefixes what the undo writes on stderr (the runtime's log).
    pub fn new(plugin: &'static str) -> Rollback<'a> {
        Rollback { plugin, steps: Vec::new() }
    }

    /// Registers how to undo the step that just succeeded; `what` names it in the log.
    pub fn push(&mut self, what: impl Into<String>, undo: impl FnOnce() -> anyhow::Result<()> + 'a) {
        self.steps.push((what.into(), Box::new(undo)));
    }

    /// An ADD's frame: runs `steps` with a fresh `Rollback` and commits it when they succeed;
    /// when they fail or panic, everything they registered is undone. The plugin's own steps
    /// stay in its own file, top to bottom, in `steps`.
    pub fn all_or_nothing<T>(
        plugin: &'static str,
        steps: impl FnOnce(&mut Rollback<'a>) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let mut undo = Rollback::new(plugin);
        let done = steps(&mut undo)?;
        undo.commit();
        Ok(done)
    }

    /// The ADD succeeded: nothing is undone.
    pub fn commit(mut self) {
        self.steps.clear();
    }

    /// Undoes every registered step now, newest first; each is tried even if an earlier one
    /// failed or panicked.
    fn undo_all(&mut self) {
        while let Some((what, step)) = self.steps.pop() {
            match catch_unwind(AssertUnwindSafe(step)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("{}: undoing {what} after a failed ADD: {e:#}", self.plugin),
                Err(_) => eprintln!("{}: undoing {what} after a failed ADD panicked", self.plugin),
            }
        }
    }
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        self.undo_all();
    }
}

/// What went wrong in a best-effort verb, all of it.
#[derive(Default)]
#[must_use = "call finish() to report the failures"]
pub struct Failures {
    errors: Vec<anyhow::Error>,
}

impl Failures {
    pub fn new() -> Failures {
        Failures::default()
    }

    /// Keeps the failure of `result`, if any, with `what` as its context, and hands back the
    /// value otherwise.
    pub fn check<T>(&mut self, what: &str, result: anyhow::Result<T>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.errors.push(e.context(what.to_string()));
                None
            }
        }
    }

    pub fn push(&mut self, error: anyhow::Error) {
        self.errors.push(error);
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// Success when nothing failed; otherwise one error whose code is the first failure's and
    /// whose message lists every failure.
    pub fn finish(self) -> anyhow::Result<()> {
        let mut errors = self.errors.into_iter();
        let Some(first) = errors.next() else { return Ok(()) };
        let rest: Vec<String> = errors.map(|e| format!("{e:#}")).collect();
        if rest.is_empty() {
            return Err(first);
        }
        let head = Error::from_anyhow(&first);
        Err(anyhow::Error::new(
            Error::new(head.code, format!("{}; also: {}", head.msg, rest.join("; also: "))).with_details(head.details),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;
    use std::cell::RefCell;

    #[test]
    fn undoes_newest_first_unless_committed() {
        let log = RefCell::new(Vec::new());
        {
            let mut rb = Rollback::new("t");
            rb.push("a", || {
                log.borrow_mut().push("a");
                Ok(())
            });
            rb.push("b", || anyhow::bail!("b fails"));
            rb.push("c", || -> anyhow::Result<()> { panic!("c panics") });
            rb.push("d", || {
                log.borrow_mut().push("d");
                Ok(())
            });
        }
        assert_eq!(*log.borrow(), ["d", "a"], "every step is tried, newest first");

        let mut rb = Rollback::new("t");
        rb.push("x", || {
            log.borrow_mut().push("x");
            Ok(())
        });
        rb.commit();
        assert_eq!(log.borrow().len(), 2);
    }

    #[test]
    fn all_or_nothing_commits_only_on_success() {
        fn step<'a>(undo: &mut Rollback<'a>, log: &'a RefCell<Vec<&'static str>>, name: &'static str) {
            undo.push(name, move || {
                log.borrow_mut().push(name);
                Ok(())
            })
        }
        let log = RefCell::new(Vec::new());
        let done = Rollback::all_or_nothing("t", |undo| {
            step(undo, &log, "kept");
            Ok(7)
        });
        assert_eq!(done.unwrap(), 7);
        let failed = Rollback::all_or_nothing("t", |undo| -> anyhow::Result<()> {
            step(undo, &log, "a");
            step(undo, &log, "b");
            anyhow::bail!("step three fails")
        });
        assert_eq!(failed.unwrap_err().to_string(), "step three fails");
        assert_eq!(*log.borrow(), ["b", "a"]);
    }

    #[test]
    fn undoes_on_unwind() {
        let log = RefCell::new(Vec::new());
        let r = catch_unwind(AssertUnwindSafe(|| {
            let mut rb = Rollback::new("t");
            rb.push("a", || {
                log.borrow_mut().push("a");
                Ok(())
            });
            panic!("step two panics");
        }));
        assert!(r.is_err());
        assert_eq!(*log.borrow(), ["a"]);
    }

    #[test]
    fn failures_report_every_error_with_the_first_code() {
        assert!(Failures::new().finish().is_ok());

        let mut f = Failures::new();
        assert_eq!(f.check("one", Ok(1)), Some(1));
        let _ = f.check::<()>("removing rules", Err(anyhow::Error::new(Error::new(Code::TryAgainLater, "busy"))));
        let _ = f.check::<()>("removing lease", Err(anyhow::anyhow!("disk gone")));
        let e = Error::from_anyhow(&f.finish().unwrap_err());
        assert_eq!(e.code, Code::TryAgainLater);
        assert_eq!(e.msg, "removing rules: busy; also: removing lease: disk gone");

        let mut f = Failures::new();
        f.push(anyhow::Error::new(Error::config("only")));
        assert_eq!(Error::from_anyhow(&f.finish().unwrap_err()), Error::config("only"));
    }
}
