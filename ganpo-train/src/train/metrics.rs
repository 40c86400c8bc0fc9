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

/// Weighted means of named values, in first-seen order. Serialized (in checkpoints) as a list
/// of `{name, sum, weight}`, a non-finite sum as the string `NaN`, `inf` or `-inf`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricMeans {
    entries: Vec<(String, f64, f64)>,
}

/// One entry of a serialized [`MetricMeans`].
#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    name: String,
    sum: serde_json::Value,
    weight: f64,
}

impl serde::Serialize for MetricMeans {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let entries: Vec<Entry> = self
            .entries
            .iter()
            .map(|(name, sum, weight)| Entry {
                name: name.clone(),
                sum: serde_json::Number::from_f64(*sum)
                    .map(serde_json::Value::Number)
                    .unwrap_or_else(|| serde_json::Value::String(sum.to_string())),
                weight: *weight,
            })
            .collect();
        entries.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for MetricMeans {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let entries = Vec::<Entry>::deserialize(d)?;
        let entries = entries
            .into_iter()
            .map(|e| {
                let sum = match &e.sum {
                    serde_json::Value::Number(n) => n.as_f64(),
                    serde_json::Value::String(t) => t.parse::<f64>().ok(),
                    _ => None,
                }
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "metric {}: sum {} is not a number",
                        e.name, e.sum
                    ))
                })?;
                Ok((e.name, sum, e.weight))
            })
            .collect::<Result<_, D::Error>>()?;
        Ok(MetricMeans { entries })
    }
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

    /// Each metric's `(name, weighted sum, weight)`, in first-seen order.
    #[cfg(feature = "collective")]
    pub(crate) fn entries(&self) -> &[(String, f64, f64)] {
        &self.entries
    }

    /// Means made of `(name, weighted sum, weight)` entries.
    #[cfg(feature = "collective")]
    pub(crate) fn from_entries(entries: Vec<(String, f64, f64)>) -> Self {
        Self { entries }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_round_trip_through_json_exactly_non_finite_sums_included() {
        let mut m = MetricMeans::default();
        m.add("loss", 0.1 + 0.2, 1.0);
        m.add("loss", 1.0 / 3.0, 2.0);
        m.add("nan", f64::NAN, 1.0);
        m.add("inf", f64::INFINITY, 1.0);
        m.add("-inf", f64::NEG_INFINITY, 1.0);
        let json = serde_json::to_string(&m).unwrap();
        let back: MetricMeans = serde_json::from_str(&json).unwrap();
        assert_eq!(back.entries[0], m.entries[0]);
        assert_eq!(back.entries[0].1, (0.1 + 0.2) * 1.0 + (1.0 / 3.0) * 2.0);
        assert!(back.entries[1].1.is_nan());
        assert_eq!(back.entries[2].1, f64::INFINITY);
        assert_eq!(back.entries[3].1, f64::NEG_INFINITY);
        assert_eq!(back.entries.len(), 4);
        assert_eq!(back.means()[0], m.means()[0]);
    }
}
