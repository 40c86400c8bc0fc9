//! The patched CPU backend's parallel loops on a loaded machine (vendor/README.md, change 5): a
//! worker that cannot run, as one descheduled by another process, must not make a loop wait.
//! A file of its own, so that no other test's loops run in this process.

use burn::backend::NdArray;
use burn::backend::ndarray::{loop_stats, with_workers_held};
use burn::tensor::{Distribution, Tensor};

type B = NdArray<f32>;

fn host<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

/// A worker that cannot run (held busy here; on a loaded machine, descheduled by another
/// process) must not stall a loop: the caller claims and runs the parts the worker has not
/// started, results stay bit-identical, and idle workers stop spinning. Without the patch's
/// claiming, each loop waited for the worker (forever, here).
#[test]
fn a_worker_that_cannot_run_leaves_its_parts_to_the_caller() {
    let device = Default::default();
    // [1024, 2048]: 2M elements, split in one part per thread, a millisecond or more each (a
    // loop shorter than 0.3 ms does not tell whether a worker is late).
    let x = Tensor::<B, 2>::random([1024, 2048], Distribution::Default, &device);
    let want: Vec<f32> = host(x.clone()).iter().map(|v| v.exp()).collect();
    let (before, after) = with_workers_held(|| {
        let before = loop_stats();
        for _ in 0..50 {
            assert_eq!(
                host(x.clone().exp()),
                want,
                "exp while the workers are held"
            );
        }
        (before, loop_stats())
    });
    if after.threads < 2 {
        eprintln!("one thread here: nothing to check");
        return;
    }
    assert_eq!(after.loops - before.loops, 50, "{after:?}");
    assert_eq!(after.parts_by_workers, before.parts_by_workers, "{after:?}");
    assert!(
        after.late_loops - before.late_loops >= 8,
        "{before:?} {after:?}"
    );
    assert!(!after.workers_spin, "idle workers still spin: {after:?}");
    // Free again, the workers take their parts, and spin again once they are on time (a few
    // loops; more if this machine is loaded by something else).
    let mut freed = loop_stats();
    for _ in 0..500 {
        assert_eq!(host(x.clone().exp()), want);
        freed = loop_stats();
        if freed.workers_spin && freed.parts_by_workers > after.parts_by_workers {
            break;
        }
    }
    assert!(freed.parts_by_workers > after.parts_by_workers, "{freed:?}");
    assert!(freed.workers_spin, "{freed:?}");
}
