//! The `train` binary as a user runs it: Ctrl-C (SIGINT) mid-run leaves a checkpoint and says how
//! to resume, and bad flags or data give one clear line, not a backtrace.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn ctrl_c_writes_a_checkpoint_and_says_how_to_resume() {
    let run = tempfile::tempdir().unwrap();
    let run_dir = run.path().join("run");
    let child = Command::new(env!("CARGO_BIN_EXE_train"))
        .args(["--gmd", "--batch-size", "2", "--epochs", "1000"])
        .args(["--cache", run.path().join("cache").to_str().unwrap()])
        .args([
            "--run-dir",
            run_dir.to_str().unwrap(),
            "--out",
            run.path().join("m.safetensors").to_str().unwrap(),
        ])
        .args(["--threads", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until training has started (config.json is written before the first step).
    let start = Instant::now();
    while !run_dir.join("config.json").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "training never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("resume with: train --resume"), "{err}");
    let ck = drumvae::training::Checkpoint::load(
        &run_dir.join("checkpoint.safetensors"),
        &candle_core::Device::Cpu,
    )
    .expect("a loadable checkpoint");
    assert!(ck.progress.step > 0, "at least one step was saved");
}

#[test]
fn missing_data_folder_is_one_clear_error_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_train"))
        .args(["--data", "/nonexistent/drums", "--run-dir", "/tmp/never"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: data folder /nonexistent/drums does not exist"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
