//! Building blocks shared by the architectures.

mod mask;
mod rms_norm;
mod rope;

pub use mask::attention_mask;
pub use rms_norm::RmsNorm;
pub use rope::{RopeScaling, Rotary};
