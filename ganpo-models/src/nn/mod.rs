//! Building blocks shared by the architectures.

mod cache;
pub mod init;
mod mask;
mod principal;
mod projection;
mod rms_norm;
mod rope;
mod tied_head;

pub use cache::{KvCache, LayerCache};
pub use init::Init;
pub use mask::{AttentionMasks, attention_mask, positions, step_mask};
pub use principal::principal_embeddings;
pub use projection::{Conv1D, Linear, LoraState, Projection, ProjectionParts, with_adapter};
pub use rms_norm::RmsNorm;
pub use rope::{RopeScaling, Rotary, RotaryTables};
pub use tied_head::{lm_head, tied_head};
