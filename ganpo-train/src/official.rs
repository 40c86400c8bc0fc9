//! The official GANPO trainer's discriminators (`enyijiang/GANPO`, `GANPO_trl.py`): its
//! `TransformerDiscriminator` state dicts read into ganpo's, which carry the same tensors under
//! nearly the same names (its `transformer.layers.N` are `layers.N` here, its `head.2` is
//! `head.1`; spectral norm's `weight_orig`, `weight_u`, `weight_v` as they are). The official
//! trainer saves them with `torch.save` as `disc_ckpts/disc_chosen.pt` and `disc_rejected.pt`;
//! these are read without Python (burn-store's PyTorch reader), safetensors files as well.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn_store::pytorch::PytorchReader;
use burn_store::{KeyRemapper, TensorSnapshot};
use ganpo_core::Ganpo;
use ganpo_core::discriminator::{Discriminator, TransformerDiscriminator};
use ganpo_models::ModelError;
use ganpo_models::weights::{apply, read_safetensors};

/// The official names' differences from ganpo's, as regex patterns on a name without prefix.
const RENAMES: [(&str, &str); 2] = [
    (r"^transformer\.layers\.", "layers."),
    (r"^head\.2\.", "head.1."),
];

fn bad(path: &Path, message: String) -> ModelError {
    ModelError::BadTensors {
        path: path.to_path_buf(),
        message,
    }
}

/// The tensors of a state dict: a PyTorch file (`.pt`, `.pth`, `.bin`: `torch.save` of a dict
/// of tensors) or a safetensors file.
fn read_state_dict(path: &Path) -> Result<Vec<TensorSnapshot>, ModelError> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if !matches!(ext, "pt" | "pth" | "bin") {
        return read_safetensors(path);
    }
    if !path.is_file() {
        return Err(ModelError::Io {
            path: path.to_path_buf(),
            reason: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    let reader = PytorchReader::new(path).map_err(|e| {
        bad(
            path,
            format!("not a readable PyTorch checkpoint (torch.save of a state dict): {e}"),
        )
    })?;
    // The reader keys the tensors by name; a snapshot's path is what loading matches.
    let tensors = reader.into_tensors().into_iter().map(|(name, mut t)| {
        t.path_stack = Some(name.split('.').map(str::to_string).collect());
        t
    });
    Ok(tensors.collect())
}

/// Loads the official discriminator state dict stored under `prefix` (such as `disc_chosen.`,
/// empty for a file of one discriminator, as the official trainer writes them) in `path` into
/// `disc`, which must have its sizes. Every tensor of `disc` must be in the file, and every
/// tensor under `prefix` must fit `disc`; errors name the file and the tensors.
pub fn load_official_discriminator<B: Backend>(
    mut disc: TransformerDiscriminator<B>,
    path: &Path,
    prefix: &str,
) -> Result<TransformerDiscriminator<B>, ModelError> {
    let tensors: Vec<_> = read_state_dict(path)?
        .into_iter()
        .filter(|t| t.full_path().starts_with(prefix))
        .collect();
    if tensors.is_empty() {
        return Err(bad(
            path,
            format!("no tensor named `{prefix}*`: not a discriminator's state dict"),
        ));
    }
    let strip = format!("^{}", prefix.replace('.', r"\."));
    let remapper = KeyRemapper::new()
        .add_pattern(strip.as_str(), "")
        .and_then(|r| {
            RENAMES
                .iter()
                .try_fold(r, |r, (from, to)| r.add_pattern(*from, *to))
        })
        .map_err(|e| bad(path, format!("prefix `{prefix}`: {e}")))?;
    let (tensors, _) = remapper.remap(tensors);
    apply(&mut disc, tensors, path, |_| false)?;
    Ok(disc)
}

/// The file of discriminator `name` (`disc_chosen`, `disc_rejected`) in `dir`: `NAME.pt` as the
/// official trainer writes it, else `NAME.safetensors`.
fn checkpoint_file(dir: &Path, name: &str) -> PathBuf {
    let pt = dir.join(format!("{name}.pt"));
    match pt.exists() {
        true => pt,
        false => dir.join(format!("{name}.safetensors")),
    }
}

/// `ganpo`'s discriminators replaced by the official checkpoints in `dir`
/// (`disc_chosen.pt`, `disc_rejected.pt`). Both must be transformer discriminators of the sizes
/// the checkpoints hold.
pub fn load_official_checkpoints<B: Backend>(
    mut ganpo: Ganpo<B>,
    dir: &Path,
) -> Result<Ganpo<B>, ModelError> {
    let load = |d: Discriminator<B>, name: &str| {
        let path = checkpoint_file(dir, name);
        match d {
            Discriminator::Transformer(t) => Ok(Discriminator::Transformer(
                load_official_discriminator(t, &path, "")?,
            )),
            Discriminator::Mlp(_) => Err(bad(
                &path,
                "the official discriminators are transformers: set ganpo.discriminator.kind = \
                 \"transformer\" with their sizes"
                    .to_string(),
            )),
        }
    };
    ganpo.chosen = load(ganpo.chosen, "disc_chosen")?;
    ganpo.rejected = load(ganpo.rejected, "disc_rejected")?;
    Ok(ganpo)
}

/// Writes `ganpo`'s discriminators under the official trainer's names, in its layout:
/// `dir/disc_chosen.safetensors` and `dir/disc_rejected.safetensors` (safetensors, not pickles:
/// in Python, `disc.load_state_dict(safetensors.torch.load_file(path))`). Each file is written
/// whole or not at all. Both must be transformer discriminators.
pub fn save_official_checkpoints<B: Backend>(
    ganpo: &Ganpo<B>,
    dir: &Path,
) -> Result<(), ModelError> {
    std::fs::create_dir_all(dir).map_err(ModelError::io(dir))?;
    for (name, disc) in [
        ("disc_chosen", &ganpo.chosen),
        ("disc_rejected", &ganpo.rejected),
    ] {
        let path = dir.join(format!("{name}.safetensors"));
        let Discriminator::Transformer(t) = disc else {
            return Err(bad(
                &path,
                "only transformer discriminators have the official layout".into(),
            ));
        };
        let mut store = burn_store::SafetensorsStore::from_bytes(None)
            .with_to_adapter(burn_store::BurnToPyTorchAdapter)
            .with_key_remapping(r"^layers\.", "transformer.layers.")
            .with_key_remapping(r"^head\.1\.", "head.2.");
        use burn_store::ModuleSnapshot;
        t.save_into(&mut store)
            .map_err(|e| bad(&path, format!("cannot serialize: {e}")))?;
        let bytes = store
            .get_bytes()
            .map_err(|e| bad(&path, format!("cannot serialize: {e}")))?;
        crate::io::write_atomic(&path, &bytes).map_err(ModelError::io(&path))?;
    }
    Ok(())
}
