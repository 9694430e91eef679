//! What automation costs the host (a bench binary: it plays in real time): the plugin's worker
//! thread while every morph parameter (Morph X, Morph Y, Temperature, Density, Seed) changes in
//! every audio block, at 48 kHz and 120 BPM (switch at the next bar), in 256- and 1024-sample
//! blocks. The goal (hardening issue, item 7) is at most 5 % of one core per instance.
//!
//! 1. **Through CLAP**, the real plugin binaries side by side: this build's and, with
//!    `--before PATH`, another (e.g. the release `libdrumvae.so` of the commit before the change).
//!    Each instance is activated (the time is shown), plays 2 s without automation (the worker's
//!    idle polling), then `--seconds` (default 8) with automation. The worker's CPU time comes from
//!    the kernel's per-thread CPU clock (`clock_gettime` on the thread named `drumvae-worker`);
//!    decodes a second are estimated from it: (CPU a second automated - idle) / CPU of one decode,
//!    measured on this thread with the same model.
//! 2. **The worker as the plugin drives it** (this build only): the plugin's audio-thread part
//!    (`Player`) and worker (`Generator`) wired as in the plugin, with the same automation
//!    (`tests/support/automation.rs`), which counts decodes exactly, with and without an open
//!    editor (previews).
//!
//! Run: `cargo bench --bench automation [-- --before /path/to/old/libdrumvae.so] [--seconds S]`.
//! Linux only for the CPU times.

#[path = "../tests/support/automation.rs"]
mod automation;
#[path = "../tests/host/harness.rs"]
mod host;

use candle_core::Device;
use drumvae::generator::{Engine, Point};
use drumvae::plugin::params::{MAX_DENSITY, MAX_SEED, MAX_TEMPERATURE};
use host::{Block, PluginUnderTest, TransportInfo};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const RATE: f64 = 48_000.0;
const TEMPO: f64 = 120.0;
const BLOCKS: [u32; 2] = [256, 1024];
/// Playing without automation first: the worker's polling, subtracted before estimating decodes.
const IDLE_SECONDS: f64 = 2.0;
/// How long an activated instance may take to play its first pattern (model load, first decode).
const FIRST_PATTERN_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// One plugin binary under automation.
struct Measured {
    activation: Duration,
    /// Worker CPU as a fraction of one core, playing without automation.
    idle: f64,
    /// The same, automated.
    automated: f64,
}

/// This thread's CPU time.
#[cfg(target_os = "linux")]
fn thread_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

#[cfg(not(target_os = "linux"))]
fn thread_cpu() -> Duration {
    Duration::ZERO
}

/// CPU time of one decode of the embedded model (the median of 5 runs of 20).
fn cpu_per_decode() -> Duration {
    let engine = Engine::embedded(&Device::Cpu).expect("the embedded model loads");
    let mut runs: Vec<Duration> = (0..5)
        .map(|run| {
            let began = thread_cpu();
            for i in 0..20 {
                let point = automation::automation(f64::from(run * 20 + i) * 0.0213)
                    .point(Point::default().slots);
                engine.decode(&point).expect("decodes");
            }
            (thread_cpu() - began) / 20
        })
        .collect();
    runs.sort();
    runs[2]
}

/// The CLAP value of each automated parameter at `seconds`: continuous parameters are normalised,
/// the seed is in steps.
fn clap_values(seconds: f64) -> [f64; 5] {
    let a = automation::automation(seconds);
    [
        f64::from(a.x),
        f64::from(a.y),
        f64::from(a.temperature / MAX_TEMPERATURE),
        f64::from((a.density + MAX_DENSITY) / (2.0 * MAX_DENSITY)),
        (a.seed as f64).min(f64::from(MAX_SEED)),
    ]
}

/// Plays real-time blocks from beat 0 until `until` seconds, automating from `automate_from`
/// seconds on, and returns the worker's CPU time over the automated part and over the part
/// before it (from `measure_from` seconds).
fn play(
    audio: &mut host::AudioThread,
    ids: &[u32; 5],
    block: u32,
    measure_from: f64,
    automate_from: f64,
    until: f64,
) -> (Duration, Duration) {
    let spb = 60.0 / TEMPO * RATE;
    let began = Instant::now();
    let mut sample = 0u64;
    let (mut before, mut at_automation) = (None, None);
    while (sample as f64) < until * RATE {
        let seconds = sample as f64 / RATE;
        if before.is_none() && seconds >= measure_from {
            before = automation::worker_cpu();
        }
        if at_automation.is_none() && seconds >= automate_from {
            at_automation = automation::worker_cpu();
        }
        let due = began + Duration::from_secs_f64(seconds);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let mut b =
            Block::with_transport(block, TransportInfo::playing(TEMPO, sample as f64 / spb));
        if seconds >= automate_from {
            b.params = ids
                .iter()
                .zip(clap_values(seconds))
                .map(|(&id, v)| (id, 0, v))
                .collect();
        }
        audio.run(vec![b]);
        sample += u64::from(block);
    }
    let end = automation::worker_cpu();
    let cpu = |from: Option<Duration>, to: Option<Duration>| {
        from.zip(to)
            .map_or(Duration::ZERO, |(a, b)| b.saturating_sub(a))
    };
    (cpu(before, at_automation), cpu(at_automation, end))
}

fn through_clap(path: &Path, block: u32, seconds: f64) -> Measured {
    let mut plugin = PluginUnderTest::load(path).unwrap_or_else(|e| panic!("{e}"));
    let ids = ["Morph X", "Morph Y", "Temperature", "Density", "Seed"]
        .map(|name| plugin.param_by_name(name).id);
    let began = Instant::now();
    let mut audio = plugin.activate(RATE, 4096);
    let activation = began.elapsed();
    audio.wait_for_first_pattern(FIRST_PATTERN_WAIT);
    // Half a second to settle, then the idle part, then the automated part.
    let (idle, automated) = play(
        &mut audio,
        &ids,
        block,
        0.5,
        0.5 + IDLE_SECONDS,
        0.5 + IDLE_SECONDS + seconds,
    );
    audio.stop().expect("stops");
    Measured {
        activation,
        idle: idle.as_secs_f64() / IDLE_SECONDS,
        automated: automated.as_secs_f64() / seconds,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let seconds: f64 = arg("--seconds").map_or(8.0, |s| s.parse().expect("--seconds S"));
    let mut binaries = Vec::new();
    if let Some(before) = arg("--before") {
        binaries.push(("before", PathBuf::from(before)));
    }
    binaries.push(("after", host::plugin_library_path()));

    let per_decode = cpu_per_decode();
    println!(
        "Worker under continuous automation of all five morph parameters (a new value each \
         block), 48 kHz, 120 BPM, switch at the next bar; one decode = {:.2} ms of CPU",
        per_decode.as_secs_f64() * 1e3
    );
    println!();
    println!("1. Through CLAP, {seconds} s automated (real time), editor closed");
    println!(
        "{:<8} {:>6} {:>12} {:>14} {:>18} {:>16}",
        "binary", "block", "activation", "idle CPU", "decodes/s (est.)", "worker CPU"
    );
    for block in BLOCKS {
        for (name, path) in &binaries {
            let m = through_clap(path, block, seconds);
            let decodes = ((m.automated - m.idle) / per_decode.as_secs_f64()).max(0.0);
            println!(
                "{name:<8} {block:>6} {:>9.1} ms {:>12.2} % {decodes:>18.1} {:>14.2} %",
                m.activation.as_secs_f64() * 1e3,
                m.idle * 100.0,
                m.automated * 100.0,
            );
        }
    }
    println!();
    println!(
        "2. The worker as the plugin drives it (this build), {seconds} s automated (real time), \
         decodes counted"
    );
    println!(
        "{:<8} {:>6} {:>10} {:>12} {:>12} {:>14}",
        "editor", "block", "decodes", "decodes/s", "published", "worker CPU"
    );
    for block in BLOCKS {
        for editor_open in [false, true] {
            let run = automation::Run {
                rate: RATE,
                block,
                tempo: TEMPO,
                seconds,
                editor_open,
            };
            let engine = Engine::embedded(&Device::Cpu).expect("the embedded model loads");
            let report = automation::play(engine, run);
            println!(
                "{:<8} {block:>6} {:>10} {:>12.1} {:>12} {:>12.2} %",
                if editor_open { "open" } else { "closed" },
                report.decodes,
                report.decodes_per_second(),
                report.published,
                report.worker_load().unwrap_or(f64::NAN) * 100.0,
            );
        }
    }
}
