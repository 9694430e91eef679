//! The CUDA build toolkit for machines without one (CI, and the machine that prepares the GPU
//! bundle): `nvcc` from NVIDIA's PyPI wheels, plus link stubs for the NVIDIA libraries the `cuda`
//! feature links, so that the library and the binaries build and link with no GPU, driver or
//! system CUDA installation.
//!
//! Why each piece (see also `../shared/docs/candle-notes.md`, "The `cuda` feature"):
//! - `candle-kernels` compiles its kernels with `nvcc` in its build script. The wheels in
//!   [`WHEELS`] hold a complete `nvcc` (its front ends `cudafe++`/`cicc`, `ptxas`, the CUDA and
//!   C++ library headers); `pip install --target` puts them in one folder, the same layout as a
//!   toolkit (`bin/`, `include/`, `lib/`, `nvvm/`), which is what `CUDA_HOME` points at.
//! - The pins are CUDA **13.0**, the oldest CUDA 13: the kernels are embedded as PTX and JIT-compiled
//!   by the driver of the GPU machine, which refuses PTX from a newer toolkit than itself. 13.0 PTX
//!   loads on every CUDA 13 driver. `CUDARC_CUDA_VERSION` says the same to cudarc, so the
//!   binaries call no driver function newer than 13.0 either.
//! - Candle turns on cudarc's `dynamic-linking` feature: the binaries are linked against
//!   `libcuda.so.1` (the driver), `libcublas.so.13`, `libcublasLt.so.13`, `libcurand.so.10` and
//!   `libnvrtc.so.13` at link time, and `candle-kernels` adds `libcudart.so.13`. Only the last is
//!   in the wheels above; the driver is not on PyPI at all, and the others are hundreds of MB of
//!   wheels for nothing but their symbol tables. So [`make_stubs`] writes stub libraries (every
//!   function cudarc declares for that library, as an empty body, with the real library's
//!   SONAME) into `lib/stubs/`, where cudarc's build script looks, as the CUDA toolkit's own
//!   `lib/stubs/libcuda.so` is used. The stubs are for the linker only: the binaries record the
//!   real SONAMEs and load the real libraries where they run (the driver, and the CUDA libraries
//!   of the GPU machine's toolkit or PyTorch).
//!
//! Everything is cached in `<target dir>/cuda-toolkit/<nvcc version>/` and reused while the pins
//! and the cudarc version stay the same: only the first run downloads (about 270 MB installed).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::run;

/// The wheels `pip` installs, pinned (`--no-deps`: exactly these, nothing resolved later).
pub const WHEELS: &[(&str, &str)] = &[
    ("nvidia-cuda-nvcc", "13.0.88"),
    ("nvidia-nvvm", "13.0.88"),
    ("nvidia-cuda-crt", "13.0.88"),
    ("nvidia-cuda-runtime", "13.0.96"),
    ("nvidia-cuda-cccl", "13.0.85"),
];

/// The CUDA version cudarc builds its bindings for (`CUDARC_CUDA_VERSION`), the toolkit's.
pub const CUDARC_CUDA_VERSION: &str = "13000";

/// The GPU architecture the kernels are compiled for (`CUDA_COMPUTE_CAP`): 90 = Hopper (H100,
/// H200), the GPUs this project is lent. One architecture keeps `nvcc`'s share of the build down;
/// set `CUDA_COMPUTE_CAP` to build for another.
pub const DEFAULT_COMPUTE_CAP: &str = "90";

/// The libraries the `cuda` build links that the wheels lack: (cudarc module whose declarations
/// list the functions, library name, SONAME of the CUDA 13 library).
const STUBS: &[(&str, &str, &str)] = &[
    ("driver", "cuda", "libcuda.so.1"),
    ("cublas", "cublas", "libcublas.so.13"),
    ("cublaslt", "cublasLt", "libcublasLt.so.13"),
    ("curand", "curand", "libcurand.so.10"),
    ("nvrtc", "nvrtc", "libnvrtc.so.13"),
];

/// A toolkit ready to build with: `home` is what `CUDA_HOME` points at.
pub struct Toolkit {
    pub home: PathBuf,
}

impl Toolkit {
    /// Sets what the `cuda` build reads on `command`: `CUDA_HOME`, `nvcc` first on `PATH`, the
    /// CUDA version for cudarc and the GPU architecture (unless the caller set one).
    pub fn apply(&self, command: &mut Command) {
        let mut path = std::ffi::OsString::from(self.home.join("bin"));
        if let Some(old) = std::env::var_os("PATH") {
            path.push(":");
            path.push(old);
        }
        command
            .env("CUDA_HOME", &self.home)
            .env("PATH", path)
            .env("CUDARC_CUDA_VERSION", CUDARC_CUDA_VERSION);
        if std::env::var_os("CUDA_COMPUTE_CAP").is_none() {
            command.env("CUDA_COMPUTE_CAP", DEFAULT_COMPUTE_CAP);
        }
    }

    /// `nvcc --version`'s last line, for the log.
    pub fn nvcc_version(&self) -> String {
        Command::new(self.home.join("bin").join("nvcc"))
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .last()
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "nvcc did not answer".into())
    }
}

/// What `cargo metadata` tells us: where builds go and where cudarc's sources are.
pub struct Workspace {
    pub target_dir: PathBuf,
    cudarc: PathBuf,
    cudarc_version: String,
}

/// Reads the workspace's target directory and cudarc's source folder (resolved with the `cuda`
/// feature, from Cargo.lock: no network).
pub fn workspace(root: &Path) -> Result<Workspace, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(&cargo)
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--features", "cuda"])
        .output()
        .map_err(|e| format!("cannot start `cargo metadata`: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`cargo metadata --features cuda` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("`cargo metadata` printed no JSON: {e}"))?;
    let target_dir = meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .ok_or("`cargo metadata` has no target_directory")?;
    let cudarc = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "cudarc")
        .ok_or("cudarc is not in the dependency graph of `--features cuda` (Cargo.lock)")?;
    let manifest = cudarc["manifest_path"]
        .as_str()
        .map(PathBuf::from)
        .ok_or("cudarc has no manifest_path in `cargo metadata`")?;
    Ok(Workspace {
        target_dir,
        cudarc: manifest
            .parent()
            .ok_or("cudarc's manifest has no folder")?
            .to_path_buf(),
        cudarc_version: cudarc["version"].as_str().unwrap_or("?").to_string(),
    })
}

/// The cached toolkit, installed first if it is missing or its pins changed.
pub fn ensure(workspace: &Workspace) -> Result<Toolkit, String> {
    let nvcc = WHEELS
        .iter()
        .find(|(name, _)| *name == "nvidia-cuda-nvcc")
        .map(|(_, v)| *v)
        .expect("nvcc is pinned");
    let cache = workspace.target_dir.join("cuda-toolkit").join(nvcc);
    // The wheels install under nvidia/cu13/: the toolkit root.
    let home = cache.join("nvidia").join("cu13");
    let pins: String = WHEELS
        .iter()
        .map(|(name, version)| format!("{name}=={version}\n"))
        .collect();
    let marker = cache.join("installed-wheels.txt");
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(pins.as_str()) {
        install(&cache, &pins)?;
        std::fs::write(&marker, &pins)
            .map_err(|e| format!("cannot write {}: {e}", marker.display()))?;
    } else {
        eprintln!("CUDA toolkit: reusing {}", cache.display());
    }
    let cudart = home.join("lib").join("libcudart.so");
    if !cudart.exists() {
        // `-lcudart` (candle-kernels) wants the unversioned name, which wheels do not ship.
        std::os::unix::fs::symlink("libcudart.so.13", &cudart)
            .map_err(|e| format!("cannot link {}: {e}", cudart.display()))?;
    }
    make_stubs(&home, workspace)?;
    Ok(Toolkit { home })
}

/// `pip install --target` of [`WHEELS`] into a fresh folder, renamed into place when complete,
/// so an interrupted download is never mistaken for a toolkit.
fn install(cache: &Path, pins: &str) -> Result<(), String> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let has_pip = Command::new(&python)
        .args(["-m", "pip", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_pip {
        return Err(format!(
            "the CUDA build needs nvcc, which this installs from PyPI with pip, but `{python} -m \
             pip` does not run: install Python 3 and pip (Debian/Ubuntu: `apt-get install \
             python3-pip`), or set PYTHON to an interpreter that has pip"
        ));
    }
    let mut partial = cache.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    for dir in [cache, partial.as_path()] {
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .map_err(|e| format!("cannot clear {}: {e}", dir.display()))?;
        }
    }
    eprintln!(
        "CUDA toolkit: installing {} into {}",
        pins.trim().replace('\n', " "),
        cache.display()
    );
    let mut pip = Command::new(&python);
    pip.args(["-m", "pip", "install", "--no-deps", "--no-input"])
        // pip warns about installing as root, which is what CI does; the target is a cache folder.
        .env("PIP_ROOT_USER_ACTION", "ignore")
        .args(["--disable-pip-version-check", "--quiet", "--target"])
        .arg(&partial)
        .args(
            WHEELS
                .iter()
                .map(|(name, version)| format!("{name}=={version}")),
        );
    run(pip).map_err(|e| {
        format!(
            "{e}: could not install nvcc from PyPI (is the network or a PyPI mirror reachable? \
             pip's own message is above)"
        )
    })?;
    std::fs::rename(&partial, cache).map_err(|e| {
        format!(
            "cannot move {} to {}: {e}",
            partial.display(),
            cache.display()
        )
    })
}

/// Writes the link stubs of [`STUBS`] into `home/lib/stubs/`, unless the ones there were made
/// from this cudarc version.
fn make_stubs(home: &Path, workspace: &Workspace) -> Result<(), String> {
    let dir = home.join("lib").join("stubs");
    let stamp = dir.join("made-from.txt");
    let made_from = format!("cudarc {}\n", workspace.cudarc_version);
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(made_from.as_str()) {
        return Ok(());
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    for (module, lib, soname) in STUBS {
        let declarations = workspace
            .cudarc
            .join("src")
            .join(module)
            .join("sys")
            .join("mod.rs");
        let source = std::fs::read_to_string(&declarations)
            .map_err(|e| format!("cannot read {}: {e}", declarations.display()))?;
        let functions = declared_functions(&source);
        if functions.is_empty() {
            return Err(format!(
                "found no functions in {}: cudarc's layout changed; update xtask/src/cuda_toolkit.rs",
                declarations.display()
            ));
        }
        let mut c = format!(
            "/* Link stub for {soname}: the functions cudarc {} declares in src/{module}/sys, \
             empty. Never loaded at run time. */\n",
            workspace.cudarc_version
        );
        for f in &functions {
            c.push_str(&format!("void {f}(void) {{}}\n"));
        }
        let c_file = dir.join(format!("lib{lib}.c"));
        std::fs::write(&c_file, c)
            .map_err(|e| format!("cannot write {}: {e}", c_file.display()))?;
        let mut compile = Command::new(&cc);
        compile
            .args(["-shared", "-fPIC", "-o"])
            .arg(dir.join(format!("lib{lib}.so")))
            .arg(format!("-Wl,-soname,{soname}"))
            .arg(&c_file);
        run(compile)
            .map_err(|e| format!("{e}: a C compiler (`cc`, or CC) builds the link stubs"))?;
        let _ = std::fs::remove_file(&c_file);
    }
    eprintln!(
        "CUDA toolkit: link stubs for {} in {}",
        STUBS.iter().map(|s| s.2).collect::<Vec<_>>().join(", "),
        dir.display()
    );
    std::fs::write(&stamp, made_from).map_err(|e| format!("cannot write {}: {e}", stamp.display()))
}

/// The names of `pub unsafe fn NAME(` at the start of a line: how cudarc's generated bindings
/// declare every library function (each wraps the `extern "C"` item of the same name).
fn declared_functions(source: &str) -> Vec<&str> {
    let mut names: Vec<&str> = source
        .lines()
        .filter_map(|l| l.strip_prefix("pub unsafe fn "))
        .filter_map(|rest| rest.split('(').next())
        .filter(|name| {
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_are_read_from_cudarc_style_declarations() {
        let source = "pub unsafe fn cuInit(Flags: u32) -> CUresult {\n    \
                      pub unsafe fn nested() {}\npub unsafe fn cuInit(x: u32) {}\n\
                      pub unsafe fn cuMemAlloc_v2(p: *mut u64) {}\npub fn helper() {}\n";
        assert_eq!(declared_functions(source), ["cuInit", "cuMemAlloc_v2"]);
    }
}
