//! The result table: one row per measurement, ours beside the reference's, and the ratio.

use crate::stats::{Samples, ms};
use std::time::Duration;

#[derive(Default)]
pub struct Table {
    rows: Vec<(String, String, String, String)>,
}

impl Table {
    pub fn row(&mut self, what: &str, ours: Duration, reference: Option<Duration>) {
        let ratio = reference
            .filter(|r| !r.is_zero())
            .map(|r| format!("{:.2}", ours.as_secs_f64() / r.as_secs_f64()))
            .unwrap_or_else(|| "-".into());
        self.rows.push((what.into(), ms(ours), reference.map(ms).unwrap_or_else(|| "-".into()), ratio));
    }

    /// Two rows for a latency distribution: the median and the 95th percentile.
    pub fn latency(&mut self, what: &str, ours: &Samples, reference: Option<&Samples>) {
        self.row(&format!("{what}, median"), ours.median(), reference.map(Samples::median));
        self.row(&format!("{what}, p95"), ours.p95(), reference.map(Samples::p95));
    }

    /// A Markdown table, so the same text goes to the terminal, a file and the README.
    pub fn render(&self) -> String {
        let mut out = String::from("| measurement | ours | reference | ours/reference |\n|---|---:|---:|---:|\n");
        for (what, ours, reference, ratio) in &self.rows {
            out.push_str(&format!("| {what} | {ours} | {reference} | {ratio} |\n"));
        }
        out
    }
}
