//! `cargo xtask check-targets`: type-checks the library, the plugin (with its editor) and the
//! binaries for the platforms producers use but CI cannot run: Windows (x86_64) and macOS (aarch64
//! and x86_64). `cargo check` runs every build script for the target, so a dependency that
//! compiles C or assembly for the target, or a `cfg` that only works on Linux, fails here.

use std::path::Path;
use std::process::Command;

use crate::run;

/// The targets checked, with what they stand for.
pub const TARGETS: &[(&str, &str)] = &[
    ("x86_64-pc-windows-gnu", "Windows x86_64"),
    ("aarch64-apple-darwin", "macOS Apple silicon"),
    ("x86_64-apple-darwin", "macOS Intel"),
];

pub fn check_all(root: &Path, extra: &[String]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for (target, name) in TARGETS {
        if !installed.lines().any(|l| l.trim() == *target) {
            let mut add = Command::new("rustup");
            add.args(["target", "add", target]);
            run(add)
                .map_err(|e| format!("{e}: the {name} standard library is needed to check it"))?;
        }
        eprintln!("checking {name} ({target})");
        let mut check = Command::new(&cargo);
        check
            .current_dir(root)
            .args([
                "check",
                "--package",
                "drumvae",
                "--lib",
                "--bins",
                "--target",
                target,
            ])
            .args(["--features", "editor"])
            .args(extra)
            // Our code must be warning-free on every platform too (a Linux-only import or an
            // argument only x86 uses shows up here first); dependencies' lints stay capped.
            .env(
                "RUSTFLAGS",
                format!(
                    "{} -D warnings",
                    std::env::var("RUSTFLAGS").unwrap_or_default()
                ),
            );
        run(check).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(())
}
