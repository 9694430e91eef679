//! The project's tasks, run as `cargo xtask <task>`:
//!
//! - `test [ARGS]`: the README's test command. Installs the system packages the full test suite
//!   needs (the editor's X11/GL headers, ALSA/JACK for the standalone app, Xvfb and Mesa for the GUI
//!   tests) when it can, or says exactly what to install and stops; then runs `cargo test` with the
//!   editor and standalone features.
//! - `bundle drumvae --release`: nice-plug's CLAP/VST3 bundler with the editor turned on (it is off
//!   by default so that the CLI and `train` build with no system libraries), then the bundle sizes,
//!   checked against [`bundle_size::LIMIT_BYTES`].
//! - `check-targets`: type-checks the library, the plugin and the binaries for Windows and macOS.
//! - `check-cuda [--release]`: builds the library, the binaries and the GPU tests with
//!   `--features cuda` on a machine without CUDA (nvcc from PyPI, link stubs; see
//!   [`cuda_toolkit`]).
//! - `gpu-bundle [--out DIR]`: builds, on any Linux machine, the folder a GPU machine runs: the
//!   cuda binaries, GPU tests and bench, and the `run.sh` that runs them there.
//! - anything else goes to nice-plug's xtask unchanged.

mod bundle_size;
mod check_cuda;
mod cuda_toolkit;
mod gpu_bundle;
mod setup;
mod targets;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

/// The repository root: this crate lives in `xtask/` inside it.
fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ sits inside the repository")
        .to_path_buf()
}

/// Runs `command` and turns a failure to start or a non-zero exit into an error naming it.
fn run(mut command: Command) -> Result<(), String> {
    let shown = format!("{command:?}");
    let status = command
        .status()
        .map_err(|e| format!("cannot start {shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed ({status})"))
    }
}

/// Whether the caller already chose features, in which case bundling leaves them alone.
fn chooses_features(args: &[String]) -> bool {
    args.iter().any(|a| {
        a == "-F"
            || a.starts_with("--features")
            || a == "--all-features"
            || a == "--no-default-features"
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => setup::test(&repo_root(), &args[1..]),
        Some("check-targets") => targets::check_all(&repo_root(), &args[1..]),
        Some("check-cuda") => check_cuda::check(&repo_root(), &args[1..]),
        Some("gpu-bundle") => gpu_bundle::build(&repo_root(), &args[1..]),
        Some(cmd @ ("bundle" | "bundle-universal")) => {
            let mut args = args.clone();
            if !chooses_features(&args) {
                args.push("--features".into());
                args.push("editor".into());
            }
            // Only the plugin library: the binaries are the CLI and `train`, not plugins.
            args.push("--lib".into());
            let universal = cmd == "bundle-universal";
            nice_plug_xtask::main_with_args("cargo xtask", args)
                .map_err(|e| format!("{e:#}"))
                .and_then(|()| bundle_size::drop_cli_bundle(&repo_root()))
                .and_then(|()| bundle_size::report(&repo_root(), universal))
        }
        _ => nice_plug_xtask::main_with_args("cargo xtask", args).map_err(|e| format!("{e:#}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
