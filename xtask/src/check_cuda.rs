//! `cargo xtask check-cuda`: builds the library, `drumvae`, `train` and the GPU tests
//! (`tests/gpu.rs`) with `--features cuda` on a machine with no GPU and no CUDA installation, so
//! that the CUDA path cannot rot while CI and most machines never run it. The toolkit comes from
//! [`crate::cuda_toolkit`] (nvcc from PyPI, link stubs for the NVIDIA libraries); nothing is run.
//!
//! It builds the dev profile by default, into the same target folder as `cargo xtask test`: the
//! dependencies the two builds share are compiled once. `--release` builds what users get
//! instead. Other arguments go to `cargo build`.
//!
//! Cost: `nvcc` compiling candle-kernels is the build's critical path (on a busy 2-core machine,
//! 469 s of a 728 s cold check). Nothing built here runs, so the device code is compiled with
//! light optimisation ([`QUICK_NVCC_FLAGS`], through nvcc's own `NVCC_APPEND_FLAGS`): 2.4x less
//! `nvcc` time on the heaviest kernel file, the same sources, headers and templates checked.
//! `CHECK_CUDA_FULL_NVCC=1` compiles them as a real build does. candle-kernels does not rebuild
//! when the flags change, so kernels a check compiled stay in this profile's target folder until
//! its sources or `CUDA_HOME` change: build binaries you mean to run with `--release` (as
//! `cargo xtask gpu-bundle` does) or in another target folder.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::{cuda_toolkit, run};

/// Light optimisation of device code in the NVVM front end (`cicc`) and the assembler (`ptxas`),
/// whose default `-O3` is most of `nvcc`'s time (measured on `mmq_instance_q4_k.cu`: 12.0 + 9.5 s
/// at `-O3`, 5.4 + 3.5 s at `-O1`; `-O0` in `cicc` leaves `ptxas` more to do).
pub const QUICK_NVCC_FLAGS: &str = "-Xcicc -O1 -Xptxas -O1";

pub fn check(root: &Path, extra: &[String]) -> Result<(), String> {
    let started = Instant::now();
    let workspace = cuda_toolkit::workspace(root)?;
    let toolkit = cuda_toolkit::ensure(&workspace)?;
    eprintln!(
        "check-cuda: toolkit ready after {:.1} s ({})",
        started.elapsed().as_secs_f64(),
        toolkit.nvcc_version()
    );
    let building = Instant::now();
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build
        .current_dir(root)
        .args(["build", "--package", "drumvae", "--features", "cuda"])
        .args([
            "--lib", "--bin", "drumvae", "--bin", "train", "--test", "gpu",
        ])
        .args(extra);
    toolkit.apply(&mut build);
    if std::env::var_os("CHECK_CUDA_FULL_NVCC").is_none() {
        let flags = match std::env::var("NVCC_APPEND_FLAGS") {
            Ok(theirs) => format!("{theirs} {QUICK_NVCC_FLAGS}"),
            Err(_) => QUICK_NVCC_FLAGS.to_string(),
        };
        build.env("NVCC_APPEND_FLAGS", flags);
    }
    run(build).map_err(|e| {
        format!(
            "{e}\nthe CUDA build failed: run `cargo xtask check-cuda` to reproduce it (it needs \
             only Python's pip and a C compiler; the toolkit is cached in {})",
            toolkit.home.display()
        )
    })?;
    eprintln!(
        "check-cuda: the library, drumvae, train and tests/gpu.rs build with --features cuda \
         ({:.0} s building, {:.0} s in all)",
        building.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
