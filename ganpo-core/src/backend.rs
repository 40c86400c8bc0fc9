//! Run-time choice of the compute backend among those compiled in.
//!
//! Models and losses are generic over `B: AutodiffBackend`; a binary picks the concrete backend
//! once, from a name such as `--backend cuda`, and hands a [`BackendJob`] to [`run_on`], which
//! monomorphizes the job for that backend. Asking for a backend whose cargo feature was not
//! enabled is an error that says which feature to build with.

use std::fmt;
use std::str::FromStr;

use burn::tensor::backend::AutodiffBackend;

/// The CPU backend (`ndarray` feature): f32 NdArray under autodiff.
#[cfg(feature = "ndarray")]
pub type CpuBackend = burn::backend::Autodiff<burn::backend::NdArray<f32>>;

/// The portable GPU backend (`wgpu` feature: Vulkan, Metal, DX12 through wgpu), with fusion.
#[cfg(feature = "wgpu")]
pub type WgpuBackend = burn::backend::Autodiff<burn::backend::Wgpu>;

/// The NVIDIA backend (`cuda` feature), with fusion.
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Autodiff<burn::backend::Cuda>;

/// A backend name as users write it (`cpu`, `wgpu`, `cuda`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// NdArray on the CPU (cargo feature `ndarray`).
    Cpu,
    /// wgpu: Vulkan, Metal or DX12 (cargo feature `wgpu`).
    Wgpu,
    /// CUDA (cargo feature `cuda`).
    Cuda,
}

impl BackendKind {
    /// Every backend kind, compiled in or not.
    pub const ALL: [BackendKind; 3] = [BackendKind::Cpu, BackendKind::Wgpu, BackendKind::Cuda];

    /// The name used on the command line and in configs.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cuda => "cuda",
        }
    }

    /// The cargo feature that compiles this backend in.
    pub fn feature(self) -> &'static str {
        match self {
            BackendKind::Cpu => "ndarray",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cuda => "cuda",
        }
    }

    /// Whether this binary was built with the backend.
    pub fn is_compiled(self) -> bool {
        match self {
            BackendKind::Cpu => cfg!(feature = "ndarray"),
            BackendKind::Wgpu => cfg!(feature = "wgpu"),
            BackendKind::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// The backends this binary was built with, in [`BackendKind::ALL`] order.
    pub fn compiled() -> Vec<BackendKind> {
        Self::ALL.into_iter().filter(|k| k.is_compiled()).collect()
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = BackendError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" | "ndarray" => Ok(BackendKind::Cpu),
            "wgpu" | "vulkan" | "metal" => Ok(BackendKind::Wgpu),
            "cuda" => Ok(BackendKind::Cuda),
            _ => Err(BackendError::Unknown(s.to_string())),
        }
    }
}

/// Why a backend cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BackendError {
    /// The name is not a backend ganpo knows.
    #[error("unknown backend `{0}`: expected one of cpu, wgpu, cuda")]
    Unknown(String),
    /// The backend exists but this binary was built without its cargo feature.
    #[error(
        "backend `{kind}` is not compiled into this binary: rebuild with `--features {feature}` \
         (compiled in: {compiled})"
    )]
    NotCompiled {
        /// The backend that was asked for.
        kind: BackendKind,
        /// The cargo feature that enables it.
        feature: &'static str,
        /// The backends that are available, comma separated.
        compiled: String,
    },
    /// The backend has no device of that index.
    #[error("backend `{kind}` has no device {index} (the cpu backend has one device, 0)")]
    NoSuchDevice {
        /// The backend.
        kind: BackendKind,
        /// The index asked for.
        index: usize,
    },
}

/// Work that is generic over the backend; [`run_on`] runs it on the one chosen at run time.
pub trait BackendJob {
    /// What the job returns.
    type Output;
    /// Runs the job on backend `B` and its `device`.
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output;
}

/// Runs `job` on the default device of backend `kind`, or says why that backend is unavailable.
pub fn run_on<J: BackendJob>(kind: BackendKind, job: J) -> Result<J::Output, BackendError> {
    run_on_device(kind, None, job)
}

/// Runs `job` on device `index` of backend `kind` (`None` = the default device): the CUDA device
/// of that ordinal, the wgpu discrete GPU of that index; the CPU backend has only device 0.
pub fn run_on_device<J: BackendJob>(
    kind: BackendKind,
    index: Option<usize>,
    job: J,
) -> Result<J::Output, BackendError> {
    match (kind, index) {
        #[cfg(feature = "ndarray")]
        (BackendKind::Cpu, None | Some(0)) => Ok(job.run::<CpuBackend>(Default::default())),
        (BackendKind::Cpu, Some(i)) if kind.is_compiled() => {
            Err(BackendError::NoSuchDevice { kind, index: i })
        }
        #[cfg(feature = "wgpu")]
        (BackendKind::Wgpu, index) => Ok(job.run::<WgpuBackend>(match index {
            None => Default::default(),
            Some(i) => burn::backend::wgpu::WgpuDevice::DiscreteGpu(i),
        })),
        #[cfg(feature = "cuda")]
        (BackendKind::Cuda, index) => Ok(job.run::<CudaBackend>(burn::backend::cuda::CudaDevice {
            index: index.unwrap_or(0),
        })),
        #[allow(unreachable_patterns)]
        _ => Err(not_compiled(kind)),
    }
}

/// Work on several devices of one backend at once (data-parallel training);
/// [`run_on_devices`] runs it on the one chosen at run time.
pub trait MultiDeviceJob {
    /// What the job returns.
    type Output;
    /// Runs the job on backend `B` and its `devices` (one or more, in the order given).
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output;
}

/// Runs `job` on the devices `indices` of backend `kind` (none = the default device). On the
/// cpu backend, which has one device, several indices stand for replicas sharing it; on wgpu and
/// cuda each index is a device, checked to exist.
pub fn run_on_devices<J: MultiDeviceJob>(
    kind: BackendKind,
    indices: &[usize],
    job: J,
) -> Result<J::Output, BackendError> {
    if !kind.is_compiled() {
        return Err(not_compiled(kind));
    }
    match (kind, indices) {
        (BackendKind::Cpu, [i]) if *i != 0 => Err(BackendError::NoSuchDevice { kind, index: *i }),
        #[cfg(feature = "ndarray")]
        (BackendKind::Cpu, _) => {
            Ok(job.run::<CpuBackend>(vec![Default::default(); indices.len().max(1)]))
        }
        #[cfg(feature = "wgpu")]
        (BackendKind::Wgpu, _) => {
            let devices = match indices {
                [] => vec![Default::default()],
                _ => indices
                    .iter()
                    .map(|&i| burn::backend::wgpu::WgpuDevice::DiscreteGpu(i))
                    .collect(),
            };
            Ok(job.run::<WgpuBackend>(existing::<WgpuBackend>(kind, indices, devices)?))
        }
        #[cfg(feature = "cuda")]
        (BackendKind::Cuda, _) => {
            let devices = match indices {
                [] => vec![Default::default()],
                _ => indices
                    .iter()
                    .map(|&index| burn::backend::cuda::CudaDevice { index })
                    .collect(),
            };
            Ok(job.run::<CudaBackend>(existing::<CudaBackend>(kind, indices, devices)?))
        }
        #[allow(unreachable_patterns)]
        _ => Err(not_compiled(kind)),
    }
}

/// `devices` (of `indices`), or an error naming the first index past the backend's count.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn existing<B: AutodiffBackend>(
    kind: BackendKind,
    indices: &[usize],
    devices: Vec<B::Device>,
) -> Result<Vec<B::Device>, BackendError> {
    use burn::tensor::backend::DeviceOps;
    if let (Some(first), Some(&index)) = (devices.first(), indices.iter().max()) {
        let count = B::device_count(first.id().type_id);
        if index >= count {
            return Err(BackendError::NoSuchDevice { kind, index });
        }
    }
    Ok(devices)
}

fn not_compiled(kind: BackendKind) -> BackendError {
    let compiled = BackendKind::compiled()
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(", ");
    BackendError::NotCompiled {
        kind,
        feature: kind.feature(),
        compiled: if compiled.is_empty() {
            "none".into()
        } else {
            compiled
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Name;
    impl BackendJob for Name {
        type Output = String;
        fn run<B: AutodiffBackend>(self, device: B::Device) -> String {
            B::name(&device)
        }
    }

    #[test]
    fn parses_names_and_rejects_unknown_ones() {
        assert_eq!("CPU".parse::<BackendKind>(), Ok(BackendKind::Cpu));
        assert_eq!("vulkan".parse::<BackendKind>(), Ok(BackendKind::Wgpu));
        assert_eq!("cuda".parse::<BackendKind>(), Ok(BackendKind::Cuda));
        let err = "tpu".parse::<BackendKind>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown backend `tpu`: expected one of cpu, wgpu, cuda"
        );
    }

    #[test]
    fn runs_on_the_cpu_and_refuses_backends_not_compiled_in() {
        let name = run_on(BackendKind::Cpu, Name).unwrap();
        assert!(name.contains("ndarray"), "{name}");
        assert!(run_on_device(BackendKind::Cpu, Some(0), Name).is_ok());
        let err = run_on_device(BackendKind::Cpu, Some(1), Name).unwrap_err();
        assert_eq!(
            err.to_string(),
            "backend `cpu` has no device 1 (the cpu backend has one device, 0)"
        );
        for kind in [BackendKind::Wgpu, BackendKind::Cuda] {
            match run_on(kind, Name) {
                Ok(name) => assert!(kind.is_compiled(), "{name}"),
                Err(err) => {
                    assert!(!kind.is_compiled());
                    let msg = err.to_string();
                    assert!(
                        msg.contains(&format!("--features {}", kind.feature())),
                        "{msg}"
                    );
                    assert!(msg.contains("compiled in: cpu"), "{msg}");
                }
            }
        }
    }
}
