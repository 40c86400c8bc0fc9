//! Named scalar metrics kept on the device until they are read.

use burn::prelude::*;

/// A set of named scalars (`[len]` tensor on the device, detached).
///
/// Building one costs no synchronization; [`Metrics::to_vec`] reads them all at once.
#[derive(Clone, Debug)]
pub struct Metrics<B: Backend> {
    names: Vec<&'static str>,
    values: Tensor<B, 1>,
}

impl<B: Backend> Metrics<B> {
    /// Pairs each name with a `[1]` tensor.
    pub fn new(entries: Vec<(&'static str, Tensor<B, 1>)>) -> Self {
        let (names, values): (Vec<_>, Vec<_>) =
            entries.into_iter().map(|(n, v)| (n, v.detach())).unzip();
        Self {
            names,
            values: Tensor::cat(values, 0),
        }
    }

    /// The metric names, in the order of [`Metrics::to_vec`].
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }

    /// The values as a device tensor `[names().len()]`, for accumulating without a sync.
    pub fn values(&self) -> Tensor<B, 1> {
        self.values.clone()
    }

    /// Reads the metrics (one device synchronization) as `(name, value)` pairs.
    pub fn to_vec(&self) -> Vec<(&'static str, f64)> {
        let data = self.values.clone().into_data().convert::<f64>();
        let values = data.to_vec::<f64>().expect("converted to f64 above");
        self.names.iter().copied().zip(values).collect()
    }

    /// The value of one metric (one device synchronization).
    pub fn get(&self, name: &str) -> Option<f64> {
        self.to_vec()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }
}
