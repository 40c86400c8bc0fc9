//! The official GANPO trainer's discriminators (`enyijiang/GANPO`, `GANPO_trl.py`): its
//! `TransformerDiscriminator` state dicts read into ganpo's, which carry the same tensors under
//! nearly the same names (its `transformer.layers.N` are `layers.N` here, its `head.2` is
//! `head.1`; spectral norm's `weight_orig`, `weight_u`, `weight_v` as they are).

use std::path::Path;

use burn::prelude::*;
use burn_store::KeyRemapper;
use ganpo_core::discriminator::TransformerDiscriminator;
use ganpo_models::ModelError;
use ganpo_models::weights::{apply, read_safetensors};

/// The official names' differences from ganpo's, as regex patterns on a name without prefix.
const RENAMES: [(&str, &str); 2] = [
    (r"^transformer\.layers\.", "layers."),
    (r"^head\.2\.", "head.1."),
];

/// Loads the official discriminator state dict stored under `prefix` (such as `disc_chosen.`,
/// empty for a file of one discriminator) in the safetensors file `path` into `disc`, which
/// must have its sizes. Every tensor of `disc` must be in the file, and every tensor under
/// `prefix` must fit `disc`; errors name the file and the tensors.
pub fn load_official_discriminator<B: Backend>(
    mut disc: TransformerDiscriminator<B>,
    path: &Path,
    prefix: &str,
) -> Result<TransformerDiscriminator<B>, ModelError> {
    let bad = |message: String| ModelError::BadTensors {
        path: path.to_path_buf(),
        message,
    };
    let tensors: Vec<_> = read_safetensors(path)?
        .into_iter()
        .filter(|t| t.full_path().starts_with(prefix))
        .collect();
    if tensors.is_empty() {
        return Err(bad(format!("no tensor named `{prefix}*`")));
    }
    let strip = format!("^{}", prefix.replace('.', r"\."));
    let remapper = KeyRemapper::new()
        .add_pattern(strip.as_str(), "")
        .and_then(|r| {
            RENAMES
                .iter()
                .try_fold(r, |r, (from, to)| r.add_pattern(*from, *to))
        })
        .map_err(|e| bad(format!("prefix `{prefix}`: {e}")))?;
    let (tensors, _) = remapper.remap(tensors);
    apply(&mut disc, tensors, path, |_| false)?;
    Ok(disc)
}
