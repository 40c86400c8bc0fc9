//! Token embeddings for a narrow model from a wide one's: their principal components.

use burn::prelude::*;
use nalgebra::{DMatrix, SymmetricEigen};

/// `source` (`[vocab, d]`, a trained model's input embeddings) projected on its `k` principal
/// directions (those of the centred rows): `[vocab, k]`. Tokens that were close stay close, so a
/// small model trained from scratch with these embeddings starts out knowing which words mean
/// alike and generalizes past the rare words of its training texts. The rows are projected
/// uncentred, keeping the source's scale. `None` when `k` is 0 or more than `d`.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::prelude::*;
/// use ganpo_models::nn::principal_embeddings;
///
/// let device = Default::default();
/// let wide = Tensor::<NdArray, 2>::from_floats([[1.0, 2.0, 0.0], [3.0, 6.0, 0.0], [0.0, 0.0, 0.0]], &device);
/// let narrow = principal_embeddings(wide, 1).unwrap();
/// assert_eq!(narrow.dims(), [3, 1]);
/// ```
pub fn principal_embeddings<B: Backend>(source: Tensor<B, 2>, k: usize) -> Option<Tensor<B, 2>> {
    let [vocab, d] = source.dims();
    if k == 0 || k > d {
        return None;
    }
    let centred = source.clone() - source.clone().mean_dim(0);
    let covariance = centred.clone().transpose().matmul(centred) / vocab.max(1) as f64;
    let values: Vec<f64> = covariance
        .into_data()
        .convert::<f64>()
        .to_vec()
        .expect("a float tensor reads as f64");
    let eigen = SymmetricEigen::new(DMatrix::from_row_slice(d, d, &values));
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| eigen.eigenvalues[b].total_cmp(&eigen.eigenvalues[a]));
    // `[d, k]`, row-major: column j is the j-th largest direction.
    let directions: Vec<f32> = (0..d)
        .flat_map(|r| order[..k].iter().map(move |&c| (r, c)))
        .map(|(r, c)| eigen.eigenvectors[(r, c)] as f32)
        .collect();
    let directions = Tensor::<B, 1>::from_floats(directions.as_slice(), &source.device());
    Some(source.matmul(directions.reshape([d, k])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    type B = NdArray;

    fn random(rows: usize, cols: usize, seed: u64) -> (Vec<f64>, Tensor<B, 2>) {
        let mut rng = StdRng::seed_from_u64(seed);
        // Columns of decreasing spread, so the principal directions are well separated.
        let v: Vec<f64> = (0..rows * cols)
            .map(|i| rng.random_range(-1.0..1.0) * (cols - i % cols) as f64)
            .collect();
        let t = Tensor::<B, 1>::from_floats(
            v.iter().map(|&x| x as f32).collect::<Vec<_>>().as_slice(),
            &Default::default(),
        );
        (v, t.reshape([rows, cols]))
    }

    fn read(t: Tensor<B, 2>) -> Vec<f64> {
        t.into_data().convert::<f64>().to_vec().unwrap()
    }

    #[test]
    fn the_projection_keeps_the_top_singular_values_of_the_centred_rows() {
        let (rows, cols, k) = (300, 8, 3);
        let (v, source) = random(rows, cols, 1);
        let p = read(principal_embeddings(source, k).unwrap());
        // SVD of the centred source (nalgebra's, independent of the eigen-solver path).
        let m = DMatrix::from_row_slice(rows, cols, &v);
        let mean = m.row_mean();
        let centred = DMatrix::from_fn(rows, cols, |r, c| m[(r, c)] - mean[c]);
        let mut s: Vec<f64> = centred
            .svd(false, false)
            .singular_values
            .iter()
            .copied()
            .collect();
        s.sort_by(|a, b| b.total_cmp(a));
        // Column j of the centred projection has squared norm s_j^2.
        let pm = DMatrix::from_row_slice(rows, k, &p);
        let pmean = pm.row_mean();
        for j in 0..k {
            let ss: f64 = (0..rows).map(|r| (pm[(r, j)] - pmean[j]).powi(2)).sum();
            let want = s[j] * s[j];
            assert!(
                (ss - want).abs() < 1e-4 * want,
                "component {j}: {ss} vs {want}"
            );
        }
    }

    #[test]
    fn all_components_are_a_rotation_that_keeps_distances() {
        let (rows, cols) = (50, 6);
        let (v, source) = random(rows, cols, 2);
        let p = read(principal_embeddings(source, cols).unwrap());
        let dist = |x: &[f64], a: usize, b: usize| -> f64 {
            (0..cols)
                .map(|c| (x[a * cols + c] - x[b * cols + c]).powi(2))
                .sum::<f64>()
                .sqrt()
        };
        for (a, b) in [(0, 1), (3, 17), (42, 49)] {
            let (want, got) = (dist(&v, a, b), dist(&p, a, b));
            assert!((want - got).abs() < 1e-4 * want, "{a}-{b}: {got} vs {want}");
        }
        // And norms: the rows are projected uncentred.
        let norm = |x: &[f64], r: usize| (0..cols).map(|c| x[r * cols + c].powi(2)).sum::<f64>();
        assert!((norm(&v, 5) - norm(&p, 5)).abs() < 1e-4 * norm(&v, 5));
    }

    #[test]
    fn impossible_widths_are_refused() {
        let (_, source) = random(10, 4, 3);
        assert!(principal_embeddings(source.clone(), 0).is_none());
        assert!(principal_embeddings(source, 5).is_none());
    }
}
