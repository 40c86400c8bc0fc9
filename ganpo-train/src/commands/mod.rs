//! The `ganpo` subcommands, one file each.

pub mod export;
pub mod generate;
pub mod inspect;
pub mod logprobs;
pub mod toy;
