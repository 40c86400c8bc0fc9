//! Averaging named metrics over batches and steps, as TRL does between two log lines.

use burn::prelude::*;

/// Reads named `[1]` device tensors in one synchronization.
pub fn read_metrics<B: Backend>(entries: Vec<(&'static str, Tensor<B, 1>)>) -> Vec<(String, f64)> {
    if entries.is_empty() {
        return Vec::new();
    }
    let (names, values): (Vec<_>, Vec<_>) = entries.into_iter().unzip();
    let data = Tensor::cat(values, 0).into_data().convert::<f64>();
    let values = data.to_vec::<f64>().expect("converted to f64");
    names.into_iter().map(String::from).zip(values).collect()
}

/// Weighted means of named values, in first-seen order.
#[derive(Clone, Debug, Default)]
pub struct MetricMeans {
    entries: Vec<(String, f64, f64)>,
}

impl MetricMeans {
    /// Adds `value` with `weight` to the metric `name`.
    pub fn add(&mut self, name: &str, value: f64, weight: f64) {
        match self.entries.iter_mut().find(|(n, _, _)| n == name) {
            Some((_, sum, w)) => {
                *sum += value * weight;
                *w += weight;
            }
            None => self
                .entries
                .push((name.to_string(), value * weight, weight)),
        }
    }

    /// Adds every `(name, value)` with weight 1.
    pub fn add_all(&mut self, values: &[(String, f64)]) {
        for (n, v) in values {
            self.add(n, *v, 1.0);
        }
    }

    /// The means.
    pub fn means(&self) -> Vec<(String, f64)> {
        self.entries
            .iter()
            .map(|(n, s, w)| (n.clone(), if *w > 0.0 { s / w } else { 0.0 }))
            .collect()
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}
