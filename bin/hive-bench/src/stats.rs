//! Summaries of samples: median, p99, min, max.

use std::time::Duration;

use serde::Serialize;

/// One row of the results table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What was measured.
    pub name: String,
    /// The unit of the numbers.
    pub unit: String,
    /// How many samples.
    pub samples: usize,
    /// Median.
    pub median: f64,
    /// 99th percentile; `None` with fewer than 100 samples (then only the max is shown).
    pub p99: Option<f64>,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// The target, in words, if there is one.
    pub target: Option<String>,
    /// Whether the target is met.
    pub met: Option<bool>,
}

/// Summarises durations in milliseconds.
pub fn millis(name: &str, samples: &[Duration]) -> Row {
    let values: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    summary(name, "ms", values)
}

/// Summarises plain values.
pub fn summary(name: &str, unit: &str, mut values: Vec<f64>) -> Row {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    let at = |q: f64| values[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
    Row {
        name: name.to_owned(),
        unit: unit.to_owned(),
        samples: n,
        median: if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        },
        p99: (n >= 100).then(|| at(0.99)),
        min: values[0],
        max: values[n - 1],
        target: None,
        met: None,
    }
}

impl Row {
    /// Attaches a target and whether it is met.
    pub fn target(mut self, target: &str, met: bool) -> Self {
        self.target = Some(target.to_owned());
        self.met = Some(met);
        self
    }

    /// Attaches a text in the target column, with no target to meet (a derived figure).
    pub fn comment(mut self, text: &str) -> Self {
        self.target = Some(text.to_owned());
        self.met = None;
        self
    }
}

/// The median of durations.
pub fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let row = summary("x", "ms", (1..=100).map(f64::from).collect());
        assert_eq!(
            (row.median, row.p99, row.min, row.max),
            (50.5, Some(99.0), 1.0, 100.0)
        );
        let row = summary("x", "ms", vec![3.0, 1.0, 2.0]);
        assert_eq!((row.median, row.p99, row.max), (2.0, None, 3.0));
        assert_eq!(
            median(&[Duration::from_millis(1), Duration::from_millis(3)]),
            Duration::from_millis(2)
        );
    }
}
