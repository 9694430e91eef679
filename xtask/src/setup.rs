//! `cargo xtask test`: the README's test command. The library, the CLI and `train` need no system
//! libraries, but the full suite also builds the editor (X11/XCB, OpenGL) and the standalone app
//! (ALSA, JACK) and runs the GUI tests under Xvfb with Mesa's software OpenGL. This installs those
//! packages where it can (Debian/Ubuntu: apt-get as root, or through passwordless sudo) and
//! otherwise prints the exact command to run and stops, before running the tests.

use std::path::Path;
use std::process::Command;

use crate::run;

/// Debian packages the full test suite needs on Linux, with why.
pub const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("pkg-config", "finds the libraries below"),
    ("libx11-dev", "editor: X11"),
    ("libx11-xcb-dev", "editor: X11 over XCB"),
    ("libxcursor-dev", "editor: cursors"),
    ("libxcb-dri2-0-dev", "editor: OpenGL context"),
    ("libxcb-icccm4-dev", "editor: window properties"),
    ("libxrandr-dev", "editor: screen scale"),
    ("libgl-dev", "editor: OpenGL"),
    ("libasound2-dev", "standalone app: ALSA"),
    ("libjack-jackd2-dev", "standalone app: JACK"),
    ("xvfb", "GUI tests: a private X server"),
    ("xauth", "GUI tests: X authority for Xvfb"),
    ("libgl1-mesa-dri", "GUI tests: software OpenGL"),
    ("libglx-mesa0", "GUI tests: GLX"),
];

/// Features the full suite is built with.
pub const TEST_FEATURES: &str = "editor,standalone";

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("ok installed")
        })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn has_passwordless_sudo() -> bool {
    Command::new("sudo")
        .args(["-n", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes sure every package in [`DEBIAN_PACKAGES`] is installed, or explains what to do.
fn ensure_debian_packages() -> Result<(), String> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let apt = Path::new("/usr/bin/apt-get").exists();
    let prefix: Option<&[&str]> = match (apt, is_root(), apt && has_passwordless_sudo()) {
        (true, true, _) => Some(&[]),
        (true, false, true) => Some(&["sudo", "-n"]),
        _ => None,
    };
    let Some(prefix) = prefix else {
        let mut why = String::new();
        for (p, reason) in DEBIAN_PACKAGES.iter().filter(|(p, _)| missing.contains(p)) {
            why.push_str(&format!("\n  {p:<20} {reason}"));
        }
        return Err(format!(
            "the tests need these system packages, and this user cannot install them:{why}\n\
             install them (Debian/Ubuntu) with:\n  sudo apt-get install -y {}\n\
             then run `cargo xtask test` again (or run `cargo test` for everything but the editor tests)",
            missing.join(" ")
        ));
    };
    eprintln!(
        "installing the packages the tests need: {}",
        missing.join(" ")
    );
    let apt_get = |args: &[&str]| {
        let (program, rest) = match prefix.split_first() {
            Some((p, rest)) => (
                *p,
                rest.iter().copied().chain(["apt-get"]).collect::<Vec<_>>(),
            ),
            None => ("apt-get", Vec::new()),
        };
        let mut c = Command::new(program);
        c.args(rest)
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    run(apt_get(&["update", "-qq"]))?;
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend(&missing);
    run(apt_get(&install))
}

/// pkg-config names of the libraries the editor and standalone builds link.
const PKG_CONFIG_NAMES: &[&str] = &["x11", "x11-xcb", "xcursor", "xrandr", "gl", "alsa", "jack"];

/// Without dpkg nothing is installed for the user: check with pkg-config (and for Xvfb) that
/// what the suite links and runs is there, or say what is missing and stop.
fn check_other_linux() -> Result<(), String> {
    let mut missing: Vec<&str> = PKG_CONFIG_NAMES
        .iter()
        .copied()
        .filter(|name| {
            !Command::new("pkg-config")
                .args(["--exists", name])
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if Command::new("Xvfb").arg("-help").output().is_err() {
        missing.push("Xvfb (with Mesa's OpenGL)");
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "not a Debian-based system, and the tests need: {}; install your distribution's \
         development packages for them (Debian names: {}), then run `cargo xtask test` again \
         (or `cargo test` for everything but the editor tests)",
        missing.join(", "),
        DEBIAN_PACKAGES
            .iter()
            .map(|(p, _)| *p)
            .collect::<Vec<_>>()
            .join(" ")
    ))
}

/// The README's test command: set-up, then `cargo test` with the editor and standalone features.
pub fn test(root: &Path, extra: &[String]) -> Result<(), String> {
    let linux = cfg!(target_os = "linux");
    if linux {
        if Path::new("/usr/bin/dpkg-query").exists() {
            ensure_debian_packages()?;
        } else {
            check_other_linux()?;
        }
    }
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo.current_dir(root).arg("test");
    // The GUI tests drive X11 (Xvfb); elsewhere the editor is built and tested through the CLAP
    // harness without a window.
    cargo.args(["--features", if linux { TEST_FEATURES } else { "editor" }]);
    cargo.args(extra);
    // The Groove MIDI Dataset beside the checkout, unless the caller points elsewhere.
    if std::env::var_os("DRUMVAE_GMD").is_none() {
        cargo.env(
            "DRUMVAE_GMD",
            root.join("..").join("shared").join("data").join("groove"),
        );
    }
    // Candle's elementwise pool spins on idle threads and starves gemm on small machines
    // (../shared/docs/candle-notes.md).
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        cargo.env("CANDLE_NUM_THREADS", "1");
    }
    run(cargo)
}
