//! `cargo xtask gpu-bundle [--out DIR]`: builds, on a Linux machine without a GPU, everything a
//! GPU machine runs for the GPU check, into one folder (default `<target dir>/gpu-bundle`):
//!
//! ```text
//! run.sh           the check, run on the GPU machine: ./run.sh [RESULTS_DIR]
//! BUNDLE.txt       what was built, from which commit, with which toolkit
//! payload.tar.xz   bin/drumvae, bin/train: the release binaries, built with --features cuda
//!                  tests/gpu: tests/gpu.rs (release, cuda): CUDA against the CPU, the worker, --device auto
//!                  bench/model_speed: benches/model_speed.rs (release, cuda); `gpu` runs its GPU tables
//!                  bench/pytorch_peer.py: the PyTorch peer the bench runs beside ours on the same GPU
//! ```
//!
//! The machines lent for GPU work have CUDA 13, PyTorch and an H100/H200, but no Rust toolchain
//! and no network, and take at most [`LIMIT_BYTES`] of files: hence prebuilt binaries, release
//! profile (no debug info, no symbols), one GPU architecture, and no data (the GPU bench and the
//! `train` smoke run make their own). The four binaries are 115 MB, most of it the same 20 MB in
//! each (the embedded model's weights and the kernels' PTX), so they travel as one xz stream whose
//! window spans them all: about 15 MB. The binaries find the driver and the CUDA libraries
//! (cuBLAS, cuRAND, NVRTC, the runtime) where they run; `run.sh` looks for them in PyTorch's
//! wheels and the usual toolkit folders and says which one is missing.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::cuda_toolkit;

/// What a bundle may weigh: what a GPU machine takes with one command.
pub const LIMIT_BYTES: u64 = 64 * 1024 * 1024;

/// The script the bundle runs on the GPU machine.
const RUN_SH: &str = include_str!("gpu_bundle_run.sh");

/// (cargo target kind, target name, where it goes in the bundle).
const ARTIFACTS: &[(&str, &str, &str)] = &[
    ("bin", "drumvae", "bin/drumvae"),
    ("bin", "train", "bin/train"),
    ("test", "gpu", "tests/gpu"),
    ("bench", "model_speed", "bench/model_speed"),
];

pub fn build(root: &Path, args: &[String]) -> Result<(), String> {
    let started = Instant::now();
    let mut out: Option<PathBuf> = None;
    let mut extra = Vec::new();
    let mut rest = args.iter();
    while let Some(a) = rest.next() {
        if a == "--out" {
            out = Some(PathBuf::from(
                rest.next().ok_or("--out needs a folder: --out DIR")?,
            ));
        } else {
            extra.push(a.clone());
        }
    }
    let workspace = cuda_toolkit::workspace(root)?;
    let out = out.unwrap_or_else(|| workspace.target_dir.join("gpu-bundle"));
    let toolkit = cuda_toolkit::ensure(&workspace)?;

    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .current_dir(root)
        .args([
            "build",
            "--release",
            "--package",
            "drumvae",
            "--features",
            "cuda",
        ])
        .args(["--bin", "drumvae", "--bin", "train", "--test", "gpu"])
        .args([
            "--bench",
            "model_speed",
            "--message-format=json-render-diagnostics",
        ])
        .args(&extra)
        .stdout(Stdio::piped());
    toolkit.apply(&mut cargo);
    let built = executables(cargo)?;

    let staging = sibling(&out, "staging");
    for dir in [&out, &staging] {
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .map_err(|e| format!("cannot clear {}: {e}", dir.display()))?;
        }
    }
    for (kind, name, dest) in ARTIFACTS {
        let from = built
            .iter()
            .find(|(k, n, _)| k == kind && n == name)
            .map(|(_, _, path)| path)
            .ok_or_else(|| format!("cargo built no {kind} `{name}`"))?;
        copy(from, &staging.join(dest))?;
    }
    copy(
        &root.join("benches").join("pytorch_peer.py"),
        &staging.join("bench").join("pytorch_peer.py"),
    )?;
    let mut unpacked = 0;
    for file in walk(&staging)? {
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        unpacked += size;
        eprintln!(
            "  {:>8.1} MiB  {}",
            size as f64 / MIB,
            file.strip_prefix(&staging).unwrap_or(&file).display()
        );
    }
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    pack(&staging, &out.join("payload.tar.xz"))?;
    std::fs::remove_dir_all(&staging)
        .map_err(|e| format!("cannot remove {}: {e}", staging.display()))?;

    let run_sh = out.join("run.sh");
    std::fs::write(&run_sh, RUN_SH)
        .map_err(|e| format!("cannot write {}: {e}", run_sh.display()))?;
    make_executable(&run_sh)?;
    let about = format!(
        "DrumVAE GPU bundle (cargo xtask gpu-bundle)\ncommit: {}\ntoolkit: {} (wheels: {}), \
         CUDARC_CUDA_VERSION={}, CUDA_COMPUTE_CAP={}\nrun on the GPU machine: ./run.sh [RESULTS_DIR]\n",
        git_describe(root),
        toolkit.nvcc_version(),
        cuda_toolkit::WHEELS
            .iter()
            .map(|(n, v)| format!("{n}=={v}"))
            .collect::<Vec<_>>()
            .join(" "),
        cuda_toolkit::CUDARC_CUDA_VERSION,
        std::env::var("CUDA_COMPUTE_CAP")
            .unwrap_or_else(|_| cuda_toolkit::DEFAULT_COMPUTE_CAP.into()),
    );
    std::fs::write(out.join("BUNDLE.txt"), about)
        .map_err(|e| format!("cannot write BUNDLE.txt: {e}"))?;

    let total: u64 = walk(&out)?
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    eprintln!(
        "gpu-bundle: {} ({:.1} MiB; {:.1} MiB unpacked; built in {:.0} s); on the GPU machine: \
         {}/run.sh [RESULTS_DIR]",
        out.display(),
        total as f64 / MIB,
        unpacked as f64 / MIB,
        started.elapsed().as_secs_f64(),
        out.display()
    );
    if total > LIMIT_BYTES {
        return Err(format!(
            "the bundle is {:.1} MiB, over the {} MiB a GPU machine takes: see which file grew \
             above",
            total as f64 / MIB,
            LIMIT_BYTES / (1024 * 1024)
        ));
    }
    Ok(())
}

const MIB: f64 = 1024.0 * 1024.0;

/// `dir` with `.suffix` appended to its name.
fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

/// `tar` of `dir`'s contents, compressed by `xz` with a 192 MiB window (so the data the binaries
/// share is stored once; unpacking needs that much memory) into `archive`.
fn pack(dir: &Path, archive: &Path) -> Result<(), String> {
    let tar_file = archive.with_extension("");
    let mut tar = Command::new("tar");
    tar.arg("-cf").arg(&tar_file).arg("-C").arg(dir).arg(".");
    crate::run(tar).map_err(|e| format!("{e}: `tar` packs the bundle"))?;
    let mut xz = Command::new("xz");
    xz.args(["--force", "-T1", "--lzma2=preset=6,dict=192MiB"])
        .arg(&tar_file);
    crate::run(xz).map_err(|e| {
        format!("{e}: `xz` compresses the bundle (Debian/Ubuntu: apt-get install xz-utils)")
    })
}

/// Runs `cargo build --message-format=json...` and returns (kind, name, executable) of every
/// executable it built; its diagnostics go to the terminal as usual.
fn executables(mut cargo: Command) -> Result<Vec<(String, String, PathBuf)>, String> {
    let shown = format!("{cargo:?}");
    let mut child = cargo
        .spawn()
        .map_err(|e| format!("cannot start {shown}: {e}"))?;
    let mut found = Vec::new();
    let stdout = child.stdout.take().expect("stdout is piped");
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| format!("reading cargo's output: {e}"))?;
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        if let (Some(exe), Some(kind), Some(name)) = (
            message["executable"].as_str(),
            message["target"]["kind"][0].as_str(),
            message["target"]["name"].as_str(),
        ) {
            found.push((kind.to_string(), name.to_string(), PathBuf::from(exe)));
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {shown}: {e}"))?;
    if !status.success() {
        return Err(format!(
            "{shown} failed ({status}); `cargo xtask check-cuda` reproduces the CUDA build \
             with less"
        ));
    }
    Ok(found)
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))
}

fn make_executable(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("cannot make {} executable: {e}", path.display()))
}

/// Every regular file under `dir`, sorted.
fn walk(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in
            std::fs::read_dir(&d).map_err(|e| format!("cannot list {}: {e}", d.display()))?
        {
            let path = entry
                .map_err(|e| format!("cannot list {}: {e}", d.display()))?
                .path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// `git describe --always --dirty` of the checkout, or why not.
fn git_describe(root: &Path) -> String {
    Command::new("git")
        .current_dir(root)
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "(not a git checkout)".into())
}
