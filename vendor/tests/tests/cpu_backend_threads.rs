//! The patched CPU backend splits large element-wise operations and matmuls over its worker
//! threads (vendor/README.md). The split must not change a single bit: each element-wise result
//! is compared with the same expression evaluated on the host, each split matmul with one
//! unsplit GEMM call of the same library, and the workers must exist.
//!
//! On a machine with one core (or `MATMUL_NUM_THREADS=1`) nothing is split and the comparisons
//! hold trivially; CI's machine has two.

use burn::backend::NdArray;
use burn::tensor::activation::sigmoid;
use burn::tensor::{Distribution, Tensor};

type B = NdArray<f32>;

fn host<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

/// Asserts bitwise equality (NaN-free inputs), naming the first differing element.
fn assert_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!("{what}[{i}]: {} vs {}", got[i], want[i]);
    }
}

#[test]
fn split_elementwise_ops_equal_the_host_expressions_bit_for_bit() {
    let device = Default::default();
    // [96, 700]: 67,200 elements, above the size that is split; `y` is a transposed (strided)
    // view, `row` and `col` broadcast.
    let (r, c) = (96, 700);
    let x = Tensor::<B, 2>::random([r, c], Distribution::Normal(0.0, 2.0), &device);
    let y = Tensor::<B, 2>::random([c, r], Distribution::Uniform(0.5, 2.0), &device).transpose();
    let row = Tensor::<B, 1>::random([c], Distribution::Default, &device);
    let col = Tensor::<B, 2>::random([r, 1], Distribution::Uniform(0.5, 2.0), &device);
    let (hx, hy, hrow, hcol) = (
        host(x.clone()),
        host(y.clone()),
        host(row.clone()),
        host(col.clone()),
    );
    let at = |i: usize| (i / c, i % c);
    let expect = |f: &dyn Fn(usize) -> f32| (0..r * c).map(f).collect::<Vec<f32>>();

    // `x` stays shared (a clone is alive), so these write new buffers.
    let cases: Vec<(&str, Tensor<B, 2>, Vec<f32>)> = vec![
        (
            "x + row",
            x.clone() + row.clone().unsqueeze(),
            expect(&|i| hx[i] + hrow[at(i).1]),
        ),
        ("x * y", x.clone() * y.clone(), expect(&|i| hx[i] * hy[i])),
        ("x - y", x.clone() - y.clone(), expect(&|i| hx[i] - hy[i])),
        (
            "x / col",
            x.clone() / col.clone(),
            expect(&|i| hx[i] / hcol[at(i).0]),
        ),
        (
            "row / y",
            row.clone().unsqueeze() / y.clone(),
            expect(&|i| hrow[at(i).1] / hy[i]),
        ),
        ("x * 3", x.clone() * 3.0, expect(&|i| hx[i] * 3.0)),
        ("exp(x)", x.clone().exp(), expect(&|i| hx[i].exp())),
        ("log(y)", y.clone().log(), expect(&|i| hy[i].ln())),
        (
            "sigmoid(x)",
            sigmoid(x.clone()),
            expect(&|i| 1.0 / (1.0 + (-hx[i]).exp())),
        ),
    ];
    for (what, got, want) in cases {
        assert_eq!(got.dims(), [r, c], "{what}");
        assert_bits(&host(got), &want, what);
    }
    // Unshared operands are written in place: the left one, or the right one when the left is
    // broadcast.
    let fresh = || Tensor::<B, 2>::from_data(x.to_data(), &device);
    assert_bits(
        &host(fresh() * col.clone()),
        &expect(&|i| hx[i] * hcol[at(i).0]),
        "fresh x * col",
    );
    assert_bits(
        &host(col.clone() - fresh()),
        &expect(&|i| hcol[at(i).0] - hx[i]),
        "col - fresh x",
    );
    assert_bits(
        &host(fresh().exp()),
        &expect(&|i| hx[i].exp()),
        "exp(fresh x)",
    );
}

/// `a @ b` by one call of ndarray's GEMM on the host data (row-major `[m, k]` and `[k, n]`).
fn one_gemm(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let a = ndarray::ArrayView2::from_shape((m, k), a).unwrap();
    let b = ndarray::ArrayView2::from_shape((k, n), b).unwrap();
    let mut out = ndarray::Array2::<f32>::zeros((m, n));
    ndarray::linalg::general_mat_mul(1.0, &a, &b, 0.0, &mut out);
    out.into_raw_vec_and_offset().0
}

#[test]
fn split_matmuls_equal_one_unsplit_gemm_bit_for_bit() {
    let device = Default::default();
    // Split by rows (m >= n), by columns (one row, as in decoding), by batches, and many small
    // matrices (each below the split size, together above it).
    for (batch, m, k, n) in [
        (1, 300, 64, 200),
        (1, 1, 512, 700),
        (3, 40, 96, 70),
        (64, 16, 16, 24),
    ] {
        let a = Tensor::<B, 3>::random([batch, m, k], Distribution::Default, &device);
        let b = Tensor::<B, 3>::random([batch, k, n], Distribution::Default, &device);
        let got = host(a.clone().matmul(b.clone()));
        let (ha, hb) = (host(a), host(b));
        let want: Vec<f32> = (0..batch)
            .flat_map(|i| {
                one_gemm(
                    &ha[i * m * k..(i + 1) * m * k],
                    &hb[i * k * n..(i + 1) * k * n],
                    m,
                    k,
                    n,
                )
            })
            .collect();
        assert_bits(
            &got,
            &want,
            &format!("[{batch}, {m}, {k}] x [{batch}, {k}, {n}]"),
        );
    }
}

/// The worker threads are started by the first large operation (Linux: thread names in /proc).
#[cfg(target_os = "linux")]
#[test]
fn large_operations_start_the_backends_worker_threads() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let capped = std::env::var("MATMUL_NUM_THREADS").is_ok_and(|v| v.trim() == "1");
    if cores < 2 || capped {
        eprintln!("one thread here: nothing to check");
        return;
    }
    let device = Default::default();
    let x = Tensor::<B, 2>::random([256, 256], Distribution::Default, &device);
    let _ = host(x.exp());
    // A worker names itself once it runs; the loop may have ended before that.
    let names = || -> Vec<String> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|n| n.trim().to_string())
            .collect()
    };
    let started = std::time::Instant::now();
    while !names().iter().any(|n| n == "burn-ndarray-1")
        && started.elapsed() < std::time::Duration::from_secs(5)
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let names = names();
    assert!(
        names.iter().any(|n| n == "burn-ndarray-1"),
        "no worker thread among {names:?}"
    );
}

/// Runs the test `name` of this binary again in a child process pinned to CPU 0 (`taskset`),
/// with `env` set; the child sees `POOL_CHILD=1`. None when `taskset` cannot pin here.
#[cfg(target_os = "linux")]
fn on_one_cpu(name: &str, env: &[(&str, &str)]) -> Option<std::process::Output> {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = std::process::Command::new("taskset");
    cmd.args(["-c", "0"])
        .arg(exe)
        .args(["--exact", name, "--nocapture", "--test-threads", "1"])
        .env("POOL_CHILD", "1")
        .env_remove("MATMUL_NUM_THREADS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().ok()?;
    if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("taskset") {
        return None;
    }
    Some(out)
}

/// Whether this process is the child of [`on_one_cpu`].
fn in_child() -> bool {
    std::env::var_os("POOL_CHILD").is_some()
}

/// Without `MATMUL_NUM_THREADS`, the pool has one thread per CPU this process may use: pinned to
/// one CPU, it runs every loop on the calling thread and starts no worker (the same count
/// follows a cgroup CPU quota: both come from `std::thread::available_parallelism`).
#[cfg(target_os = "linux")]
#[test]
fn the_pool_is_sized_from_the_cpus_this_process_may_use() {
    if in_child() {
        let device = Default::default();
        let x = Tensor::<B, 2>::random([512, 512], Distribution::Default, &device);
        let _ = host(x.exp());
        let stats = burn::backend::ndarray::loop_stats();
        assert_eq!(stats.threads, 1, "{stats:?}");
        assert_eq!(stats.loops, 0, "{stats:?}");
        let names: Vec<String> = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .collect();
        assert!(
            !names.iter().any(|n| n.starts_with("burn-ndarray")),
            "{names:?}"
        );
        return;
    }
    let Some(out) = on_one_cpu("the_pool_is_sized_from_the_cpus_this_process_may_use", &[]) else {
        eprintln!("taskset cannot pin a process here: nothing to check");
        return;
    };
    assert!(
        out.status.success(),
        "child failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
