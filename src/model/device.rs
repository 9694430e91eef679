//! Picks the Candle device for the model: CPU, or an NVIDIA GPU when the `cuda` feature is built
//! and a GPU is present. Called once by the training CLI, the offline CLI and the plugin's worker
//! thread before the model is created.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

/// Whether this CPU runs AVX2 + FMA code: the check every hand-vectorised CPU path (the fused
/// LSTM layer's matmul and cell math, the fast decoder) makes before calling a function built with
/// `#[target_feature(enable = "avx2,fma")]`. Detected once per process.
pub fn cpu_has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// What the user asked for (`--device cpu|cuda|auto`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceRequest {
    /// Always the CPU.
    Cpu,
    /// GPU 0, or an error explaining why not: a user who asks for the GPU should not silently
    /// train for hours on the CPU.
    Cuda,
    /// GPU 0 when possible, else the CPU with a note saying why.
    #[default]
    Auto,
}

impl FromStr for DeviceRequest {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(DeviceRequest::Cpu),
            "cuda" | "gpu" => Ok(DeviceRequest::Cuda),
            "auto" => Ok(DeviceRequest::Auto),
            _ => Err(format!("unknown device \"{s}\": use cpu, cuda or auto")),
        }
    }
}

impl fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceRequest::Cpu => "cpu",
            DeviceRequest::Cuda => "cuda",
            DeviceRequest::Auto => "auto",
        })
    }
}

/// Why CUDA was asked for and cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "this build has no CUDA support: rebuild with `--features cuda` (needs nvcc at build time \
         and the NVIDIA driver at run time; see the README, section GPU), or use --device cpu"
    )]
    NotBuilt,
    #[error(
        "CUDA support is built in but no GPU could be opened ({0}); check the NVIDIA driver \
         (`nvidia-smi`), or use --device cpu"
    )]
    Unavailable(String),
}

/// The device for `request`, and a note for the user when `Auto` fell back to the CPU.
pub fn select_device(request: DeviceRequest) -> Result<(Device, Option<String>), DeviceError> {
    match request {
        DeviceRequest::Cpu => Ok((Device::Cpu, None)),
        DeviceRequest::Cuda => Ok((open_cuda()?, None)),
        DeviceRequest::Auto => match open_cuda() {
            Ok(device) => Ok((device, Some("using CUDA GPU 0".into()))),
            Err(e) => Ok((Device::Cpu, Some(format!("using the CPU: {e}")))),
        },
    }
}

fn open_cuda() -> Result<Device, DeviceError> {
    if !candle_core::utils::cuda_is_available() {
        return Err(DeviceError::NotBuilt);
    }
    Device::new_cuda(0).map_err(|e| DeviceError::Unavailable(e.to_string()))
}

/// Sets Candle's thread counts for this process: elementwise ops on one thread unless
/// `CANDLE_NUM_THREADS` says otherwise (Candle's elementwise pool spins while idle and starves
/// matrix products on small machines, see candle-notes), and `threads` matrix-product threads
/// (`RAYON_NUM_THREADS`) when given. Candle reads both at its first tensor op.
///
/// It also keeps freed memory in glibc's heap: Candle allocates a fresh buffer for every op, and a
/// training step's big activations (tens of MB each) would otherwise be mmap'd and unmapped every
/// time, so that about a sixth of a step went to the kernel zeroing fresh pages (measured with
/// perf on the `model_speed` bench). For the binaries only: a plugin must not tune its host's
/// allocator.
///
/// # Safety
/// Changes the environment: call it before any other thread exists (first thing in `main`).
pub unsafe fn configure_threads(threads: Option<usize>) {
    // SAFETY: the caller guarantees that no other thread reads or writes the environment.
    unsafe {
        if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
            std::env::set_var("CANDLE_NUM_THREADS", "1");
        }
        if let Some(n) = threads {
            std::env::set_var("RAYON_NUM_THREADS", n.max(1).to_string());
        }
    }
    keep_freed_memory();
}

/// Raises glibc's mmap and trim thresholds to 1 GiB, so large freed buffers are reused from the
/// heap instead of being returned to the kernel (see [`configure_threads`]).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const ONE_GIB: libc::c_int = 1 << 30;
        // SAFETY: mallopt only changes allocator tuning parameters; it is safe to call at any
        // time, and a refusal (return value 0) just leaves the defaults.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, ONE_GIB);
            libc::mallopt(libc::M_TRIM_THRESHOLD, ONE_GIB);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_print_back() {
        for r in [DeviceRequest::Cpu, DeviceRequest::Cuda, DeviceRequest::Auto] {
            assert_eq!(r.to_string().parse::<DeviceRequest>(), Ok(r));
        }
        assert!("tpu".parse::<DeviceRequest>().is_err());
    }

    #[test]
    fn cpu_is_always_available_and_auto_always_gives_a_device() {
        assert!(select_device(DeviceRequest::Cpu).unwrap().0.is_cpu());
        let (device, note) = select_device(DeviceRequest::Auto).unwrap();
        if device.is_cpu() {
            assert!(note.unwrap().contains("CPU"));
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_explains_how_to_get_it() {
        let e = select_device(DeviceRequest::Cuda).unwrap_err();
        assert!(e.to_string().contains("--features cuda"), "{e}");
    }
}
