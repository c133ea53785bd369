//! What a case measured, and the results as a table and as JSON.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Value, json};

/// What one case measured: seconds per run for each tool (empty when the
/// case has none), and figures derived from them.
pub struct Case {
    pub title: String,
    runner: Vec<f64>,
    baseline: Vec<f64>,
    pub figures: Vec<(&'static str, Figure)>,
    target: &'static str,
    pub met: bool,
    /// Why it was not measured (what this machine lacks), if it was not.
    skipped: Option<&'static str>,
}

impl Case {
    pub fn new(title: String, runner: Vec<f64>, baseline: Vec<f64>, target: &'static str) -> Case {
        Case { title, runner, baseline, figures: Vec::new(), target, met: false, skipped: None }
    }

    /// A case this machine cannot measure, and why.
    pub fn skipped(title: String, target: &'static str, why: &'static str) -> Case {
        Case { skipped: Some(why), ..Case::new(title, Vec::new(), Vec::new(), target) }
    }

    pub fn runner_median(&self) -> f64 {
        median(&self.runner).unwrap_or(f64::NAN)
    }

    /// How many times faster the runner is than the baseline (medians).
    pub fn speedup(&self) -> f64 {
        median(&self.baseline).unwrap_or(f64::NAN) / self.runner_median()
    }

    /// The runner's cell: its median time, or its figures when it has no times.
    fn runner_cell(&self) -> String {
        match (median(&self.runner), self.skipped) {
            (_, Some(why)) => format!("skipped: {why}"),
            (Some(t), None) => Figure::Seconds(t).to_string(),
            (None, None) => self.figures.iter().map(|(name, f)| format!("{f} {name}")).collect::<Vec<_>>().join(", "),
        }
    }

    pub fn summary(&self) -> String {
        if let Some(why) = self.skipped {
            return format!("skipped: {why}");
        }
        let mut text = format!("runner {}", self.runner_cell());
        if let Some(b) = median(&self.baseline) {
            text += &format!(", baseline {}, {} faster", Figure::Seconds(b), Figure::Times(self.speedup()));
        }
        text + if self.met { " ✓" } else { " ✗ target missed" }
    }

    pub fn to_json(&self, id: usize) -> Value {
        let figures: BTreeMap<&str, Value> =
            self.figures.iter().map(|(name, f)| (*name, json!({ "value": f.value(), "unit": f.unit() }))).collect();
        json!({
            "id": id,
            "case": self.title,
            "runner_median_s": median(&self.runner),
            "baseline_median_s": median(&self.baseline),
            "speedup": median(&self.baseline).map(|_| self.speedup()),
            "runner_s": self.runner,
            "baseline_s": self.baseline,
            "figures": figures,
            "target": self.target,
            "met": self.met,
            "skipped": self.skipped,
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Figure {
    Seconds(f64),
    Megabytes(f64),
    Percent(f64),
    Times(f64),
    /// Answers a second.
    PerSecond(f64),
}

impl Figure {
    fn value(self) -> f64 {
        match self {
            Figure::Seconds(v)
            | Figure::Megabytes(v)
            | Figure::Percent(v)
            | Figure::Times(v)
            | Figure::PerSecond(v) => v,
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Figure::Seconds(_) => "s",
            Figure::Megabytes(_) => "MiB",
            Figure::Percent(_) => "%",
            Figure::Times(_) => "x",
            Figure::PerSecond(_) => "1/s",
        }
    }
}

impl fmt::Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Figure::Seconds(s) if s.abs() < 0.001 => write!(f, "{:.0} µs", s * 1e6),
            Figure::Seconds(s) if s.abs() < 1.0 => write!(f, "{:.1} ms", s * 1000.0),
            Figure::Seconds(s) => write!(f, "{s:.2} s"),
            Figure::Megabytes(m) => write!(f, "{m:.1} MB"),
            Figure::Percent(p) => write!(f, "{p:.2} %"),
            Figure::Times(x) if x >= 10.0 => write!(f, "{x:.0}×"),
            Figure::Times(x) => write!(f, "{x:.2}×"),
            Figure::PerSecond(n) => write!(f, "{n:.0}/s"),
        }
    }
}

pub fn median(samples: &[f64]) -> Option<f64> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// The results as a Markdown table (for the README), with each case's
/// further figures below it.
pub fn table(cases: &[Case]) -> String {
    let mut text =
        String::from("| | case | runner | baseline | speed-up | target | met |\n|--:|---|--:|--:|--:|---|:-:|\n");
    for (i, case) in cases.iter().enumerate() {
        let baseline = median(&case.baseline).map_or("—".into(), |b| Figure::Seconds(b).to_string());
        let speedup = median(&case.baseline).map_or("—".into(), |_| Figure::Times(case.speedup()).to_string());
        text += &format!(
            "| {} | {} | {} | {baseline} | {speedup} | {} | {} |\n",
            i + 1,
            case.title,
            case.runner_cell(),
            case.target,
            match (case.skipped, case.met) {
                (Some(_), _) => "—",
                (None, true) => "✓",
                (None, false) => "✗",
            }
        );
    }
    for (i, case) in cases.iter().enumerate().filter(|(_, c)| !c.runner.is_empty() && !c.figures.is_empty()) {
        let figures: Vec<String> = case.figures.iter().map(|(name, f)| format!("{name} {f}")).collect();
        text += &format!("\n{}: {}.", i + 1, figures.join(", "));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}
