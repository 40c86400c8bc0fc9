//! The backend that the backend-generic tests run on, chosen when they run: `GANPO_TEST_BACKEND`
//! (`cpu`, the default; `wgpu` or `cuda` in a build with that cargo feature), and where their
//! fixtures are. Shared by the test binaries of ganpo-core, ganpo-models and ganpo-train (the
//! latter two include this file by path), and by ganpo-train's `backends` binary, which holds
//! them all.

use std::path::PathBuf;

/// The directory of the workspace crate `name` when the tests run: under `GANPO_CHECKOUT` where
/// that is set (`cargo xtask gpu-check --no-build` runs binaries built on another machine in a
/// checkout of its own), else beside the crate this binary was built from.
pub fn crate_dir(name: &str) -> PathBuf {
    let root = std::env::var_os("GANPO_CHECKOUT").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")),
        PathBuf::from,
    );
    root.join(name)
}

/// The backend that the backend-generic tests run on: `GANPO_TEST_BACKEND` (`cpu`, `wgpu`,
/// `cuda`), the CPU when unset. A GPU backend needs this crate's cargo feature of the same name:
/// `GANPO_TEST_BACKEND=wgpu cargo test -p ganpo-core --features wgpu`.
pub fn test_backend() -> ganpo_core::backend::BackendKind {
    match std::env::var("GANPO_TEST_BACKEND") {
        Ok(name) => name
            .parse()
            .unwrap_or_else(|e| panic!("GANPO_TEST_BACKEND: {e}")),
        Err(_) => ganpo_core::backend::BackendKind::Cpu,
    }
}

/// Runs `$body` with `$B` the autodiff backend [`test_backend`] names, on that backend's default
/// device `$device`; with `inner,` first, `$B` is the backend without autodiff.
#[allow(unused_macros)] // test binaries without a backend-generic test
macro_rules! on_test_backend {
    (|$B:ident, $device:ident| $body:expr) => {
        on_test_backend!(@run burn::tensor::backend::AutodiffBackend, A, $B, $device, $body)
    };
    (inner, |$B:ident, $device:ident| $body:expr) => {
        on_test_backend!(@run burn::prelude::Backend, A::InnerBackend, $B, $device, $body)
    };
    (@run $bound:path, $picked:ty, $B:ident, $device:ident, $body:expr) => {{
        struct Job;
        impl ganpo_core::backend::BackendJob for Job {
            type Output = ();
            fn run<A: burn::tensor::backend::AutodiffBackend>(self, device: A::Device) {
                #[allow(unused_variables)]
                fn body<$B: $bound>($device: $B::Device) {
                    $body;
                }
                body::<$picked>(device)
            }
        }
        let kind = common::backend::test_backend();
        ganpo_core::backend::run_on(kind, Job)
            .unwrap_or_else(|e| panic!("GANPO_TEST_BACKEND={kind}: {e}"));
    }};
}
