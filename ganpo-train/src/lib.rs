//! # ganpo-train
//!
//! The `ganpo` command-line tool and the training code behind it. For now it holds [`toy`], the
//! smallest end-to-end GANPO run: a tiny causal LM preference-trained with DPO and with
//! DPO + GANPO from the same start, on a synthetic task, on any compiled-in backend.

pub mod toy;
