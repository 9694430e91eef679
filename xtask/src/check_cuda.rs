//! `cargo xtask check-cuda`: builds the library, `drumvae`, `train` and the GPU tests
//! (`tests/gpu.rs`) with `--features cuda` on a machine with no GPU and no CUDA installation, so
//! that the CUDA path cannot rot while CI and most machines never run it. The toolkit comes from
//! [`crate::cuda_toolkit`] (nvcc from PyPI, link stubs for the NVIDIA libraries); nothing is run.
//!
//! It builds the dev profile by default, into the same target folder as `cargo xtask test`: the
//! dependencies the two builds share are compiled once. `--release` builds what users get
//! instead. Other arguments go to `cargo build`.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::{cuda_toolkit, run};

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
