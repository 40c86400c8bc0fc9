//! Tests of ganpo's patches to burn-ndarray and burn-autodiff 0.21.0 (the `tests/` folder):
//! `vendor/README.md` lists each change and the test that fails without it. This crate has no
//! code of its own; it lives beside the patched crates so that they and their tests move
//! together, and `cargo test --workspace` runs it.
