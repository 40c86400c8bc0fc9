//! Building blocks shared by the architectures.

mod rms_norm;
mod rope;

pub use rms_norm::RmsNorm;
pub use rope::{RopeScaling, Rotary};
