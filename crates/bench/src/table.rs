//! The result table: one row per measurement, ours beside the reference's, and the ratio; and the
//! targets, each with what was measured and whether it was met.

use crate::stats::{Samples, ms};
use std::time::Duration;

#[derive(Default)]
pub struct Table {
    rows: Vec<[String; 4]>,
    targets: Vec<[String; 3]>,
}

fn ratio(ours: f64, reference: Option<f64>) -> String {
    reference.filter(|r| *r > 0.0).map(|r| format!("{:.2}", ours / r)).unwrap_or_else(|| "-".into())
}

impl Table {
    /// A row of any unit: the values as numbers for the ratio, `show` to print them.
    pub fn value(&mut self, what: &str, ours: f64, reference: Option<f64>, show: impl Fn(f64) -> String) {
        let shown_ref = reference.map(&show).unwrap_or_else(|| "-".into());
        self.rows.push([what.into(), show(ours), shown_ref, ratio(ours, reference)]);
    }

    pub fn row(&mut self, what: &str, ours: Duration, reference: Option<Duration>) {
        self.value(what, ours.as_secs_f64(), reference.map(|r| r.as_secs_f64()), |s| ms(Duration::from_secs_f64(s)));
    }

    /// Two rows for a latency distribution: the median and the 95th percentile.
    pub fn latency(&mut self, what: &str, ours: &Samples, reference: Option<&Samples>) {
        self.row(&format!("{what}, median"), ours.median(), reference.map(Samples::median));
        self.row(&format!("{what}, p95"), ours.p95(), reference.map(Samples::p95));
    }

    /// A target: `measured` against `limit` (met when at most the limit).
    pub fn target(&mut self, what: &str, measured: f64, limit: f64) {
        let met = if measured <= limit { "yes" } else { "**no**" };
        self.targets.push([what.into(), format!("{measured:.2} (limit {limit:.2})"), met.into()]);
    }

    /// Markdown, so the same text goes to the terminal, a file and the README.
    pub fn render(&self) -> String {
        let mut out = String::from("| measurement | ours | reference | ours/reference |\n|---|---:|---:|---:|\n");
        for [what, ours, reference, ratio] in &self.rows {
            out.push_str(&format!("| {what} | {ours} | {reference} | {ratio} |\n"));
        }
        if !self.targets.is_empty() {
            out.push_str("\n| target | measured | met |\n|---|---:|:---:|\n");
            for [what, measured, met] in &self.targets {
                out.push_str(&format!("| {what} | {measured} | {met} |\n"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_carry_ratios_and_targets_say_whether_met() {
        let mut t = Table::default();
        t.row("ADD", Duration::from_millis(5), Some(Duration::from_millis(20)));
        t.value("size", 1024.0, None, |v| format!("{v:.0} B"));
        t.target("ADD vs reference", 0.25, 0.2);
        t.target("DEL vs reference", 0.1, 0.2);
        let text = t.render();
        assert!(text.contains("| ADD | 5.00 ms | 20.00 ms | 0.25 |"), "{text}");
        assert!(text.contains("| size | 1024 B | - | - |"), "{text}");
        assert!(text.contains("| ADD vs reference | 0.25 (limit 0.20) | **no** |"), "{text}");
        assert!(text.contains("| DEL vs reference | 0.10 (limit 0.20) | yes |"), "{text}");
    }
}
