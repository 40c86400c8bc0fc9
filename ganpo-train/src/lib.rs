//! # ganpo-train
//!
//! The `ganpo` command-line tool and the code behind it:
//! - [`toy`]: the smallest end-to-end GANPO run, a tiny causal LM preference-trained with DPO and
//!   with DPO + GANPO from the same start, on a synthetic task, on any compiled-in backend;
//! - [`tokenize`]: prompt / completion tokenization as TRL does it.

pub mod tokenize;
pub mod toy;
