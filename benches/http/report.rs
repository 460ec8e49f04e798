//! The table of figures: one row per measurement, and the medians.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::load::{Measurement, Report};

/// The columns of one row.
pub struct Row {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    unexpected: f64,
    failed: f64,
    /// CPU time per answer, in microseconds.
    server_us: f64,
    client_us: f64,
    /// CPUs busy on average over the window.
    server_cores: f64,
    client_cores: f64,
    other_cores: f64,
    drain_s: Option<f64>,
}

pub fn header() {
    println!(
        "| scenario | run | answers/s | target | ratio | p50 | p99 | unexpected status | failed | server CPU/answer | client CPU/answer | cores: server | client | other | drain |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
}

impl Row {
    pub fn of(m: &Measurement) -> Self {
        let n = m.answers as f64;
        let secs = m.window.as_secs_f64();
        Self {
            per_sec: n / secs,
            p50_ms: ms(m.p50),
            p99_ms: ms(m.p99),
            unexpected: m.unexpected.values().sum::<u64>() as f64,
            failed: m.failed as f64,
            server_us: m.server_cpu.as_secs_f64() * 1e6 / n,
            client_us: m.client_cpu.as_secs_f64() * 1e6 / n,
            server_cores: m.server_cpu.as_secs_f64() / secs,
            client_cores: m.client_cpu.as_secs_f64() / secs,
            other_cores: m.other_cpu.as_secs_f64() / secs,
            drain_s: m.drain.map(|d| d.as_secs_f64()),
        }
    }

    /// Each column's median over `rows`.
    fn median(rows: &[Row]) -> Self {
        let m = |f: fn(&Row) -> f64| median(rows.iter().map(f).collect());
        Self {
            per_sec: m(|r| r.per_sec),
            p50_ms: m(|r| r.p50_ms),
            p99_ms: m(|r| r.p99_ms),
            unexpected: m(|r| r.unexpected),
            failed: m(|r| r.failed),
            server_us: m(|r| r.server_us),
            client_us: m(|r| r.client_us),
            server_cores: m(|r| r.server_cores),
            client_cores: m(|r| r.client_cores),
            other_cores: m(|r| r.other_cores),
            drain_s: rows[0].drain_s.map(|_| m(|r| r.drain_s.unwrap_or(0.0))),
        }
    }

    pub fn print(&self, label: &str, run: &str, target: f64) {
        let drain = self
            .drain_s
            .map_or("—".to_string(), |s| format!("{s:.1} s"));
        println!(
            "| {label} | {run} | {:.0} | ≥ {target:.0} | {:.2}× | {:.2} ms | {:.2} ms | {:.0} | {:.0} | {:.1} µs | {:.1} µs | {:.2} | {:.2} | {:.2} | {drain} |",
            self.per_sec,
            self.per_sec / target,
            self.p50_ms,
            self.p99_ms,
            self.unexpected,
            self.failed,
            self.server_us,
            self.client_us,
            self.server_cores,
            self.client_cores,
            self.other_cores,
        );
    }
}

/// Every measurement and each scenario's medians, then the unexpected answers.
pub fn table(reports: &[Report]) {
    header();
    for report in reports {
        let (label, target) = (report.load.label, report.load.target);
        let rows: Vec<Row> = report.runs.iter().map(Row::of).collect();
        for (i, row) in rows.iter().enumerate() {
            row.print(label, &(i + 1).to_string(), target);
        }
        Row::median(&rows).print(label, "**median**", target);
    }
    println!();
    for report in reports {
        let mut statuses = BTreeMap::new();
        for (status, n) in report.runs.iter().flat_map(|m| &m.unexpected) {
            *statuses.entry(*status).or_insert(0) += n;
        }
        let failed: u64 = report.runs.iter().map(|m| m.failed).sum();
        println!(
            "{}: {} answers other than {} {statuses:?} and {failed} requests without an answer, over {} runs",
            report.load.label,
            statuses.values().sum::<u64>(),
            report.load.expected,
            report.runs.len(),
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
