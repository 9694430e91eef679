//! The plugin's costs (criterion, release):
//! - `process/core_512`: what the audio thread runs per 512-sample block ([`Player::play_block`]: take
//!   the newest pattern, read the parameters, run the sequencer, cue the worker) at 120 BPM,
//!   48 kHz, playing;
//! - `process/clap_512`: the whole plugin through the CLAP ABI (clack-host loads the release
//!   `libdrumvae.so`), 512-sample blocks, amortised over batches of 1,000 blocks; includes the
//!   host side (event lists, transport, output note decoding), so it is an upper bound;
//! - `worker/decode`: one pattern decode (the embedded model, CPU, batch 1);
//! - `worker/param_change_to_pattern`: from a control change to the pattern being available to
//!   the audio thread (poll interval + decode + hand-off), for a change on its own: while the
//!   transport is stopped the worker publishes changes at most `PREVIEW_RATE` a second (and
//!   `PREVIEW_SHARE` of a core), so each change comes after a pause that is not timed.
//!
//! Memory: `cargo bench --bench plugin -- --memory` prints the resident memory the plugin adds
//! (load, activate, per extra instance) instead of timing.
//!
//! Run: `cargo bench --bench plugin`.

#[path = "../tests/host/harness.rs"]
mod host;

use candle_core::Device;
use criterion::{Criterion, criterion_group};
use drumvae::generator::{
    Controls, Cue, Engine, Generator, PREVIEW_RATE, PREVIEW_SHARE, Point, Slot,
};
use drumvae::model::DeviceRequest;
use drumvae::plugin::params::{DrumVaeParams, ParamControls};
use drumvae::plugin::player::{PlayState, Player};
use drumvae::sequencer::Transport;
use parking_lot::Mutex;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const RATE: f64 = 48_000.0;
const BLOCK: u32 = 512;
/// How long an activated instance may take to play its first pattern (model load, first decode).
const FIRST_PATTERN_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

fn process_core(c: &mut Criterion) {
    let params = Arc::new(DrumVaeParams::default());
    let cue = Arc::new(Cue::new());
    let controls = Arc::new(ParamControls {
        params: params.clone(),
        cue: cue.clone(),
    });
    let (generator, patterns) =
        Generator::spawn(controls.clone(), DeviceRequest::Cpu, None).unwrap();
    assert!(generator.wait_until_settled(controls.as_ref(), Duration::from_secs(30)));
    let mut player = Player::new(cue);
    player.patterns = Some(patterns);
    let state = PlayState::default();
    let mut pos = 0.0f64;
    let beats_per_block = f64::from(BLOCK) / (60.0 / 120.0 * RATE);
    let mut events = 0u64;
    let mut blocks = 0u64;
    c.bench_function("process/core_512", |b| {
        b.iter(|| {
            blocks += 1;
            let transport = Transport {
                playing: true,
                tempo_bpm: 120.0,
                pos_beats: Some(pos),
                sample_rate: RATE,
                loop_beats: None,
            };
            player.play_block(
                &params.settings(),
                params.automated(),
                &state,
                black_box(&transport),
                BLOCK,
                &mut |e| {
                    events += u64::from(e.on);
                },
            );
            pos += beats_per_block;
        })
    });
    // (Nothing runs when a filter on the command line skips this benchmark.)
    assert!(blocks < 1000 || events > 0, "the benchmark played notes");
}

fn process_clap(c: &mut Criterion) {
    let mut plugin = host::PluginUnderTest::load(&host::plugin_library_path()).unwrap();
    let mut audio = plugin.activate(RATE, BLOCK);
    audio.wait_for_first_pattern(FIRST_PATTERN_WAIT);
    let batch = 1_000u64;
    let mut start_beat = 0.0;
    c.bench_function("process/clap_512", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let n = batch.min(iters - done);
                let blocks = host::playing_blocks(n as usize, BLOCK, RATE, 120.0, start_beat);
                start_beat += n as f64 * f64::from(BLOCK) / (60.0 / 120.0 * RATE);
                let t = Instant::now();
                black_box(audio.run(blocks));
                total += t.elapsed();
                done += n;
            }
            total
        })
    });
}

/// Controls whose morph x a benchmark can move.
struct Knob(Mutex<Point>);

impl Controls for Knob {
    fn point(&self) -> Point {
        self.0.lock().clone()
    }
    fn model_path(&self) -> Option<PathBuf> {
        None
    }
    fn set_slot(&self, _: usize, _: Slot) {}
}

fn worker(c: &mut Criterion) {
    let engine = Engine::embedded(&Device::Cpu).unwrap();
    let mut x = 0.0f32;
    let mut group = c.benchmark_group("worker");
    group.sample_size(30);
    group.bench_function("decode", |b| {
        b.iter(|| {
            x = (x + 0.37) % 1.0;
            black_box(
                engine
                    .decode(&Point {
                        x,
                        ..Point::default()
                    })
                    .unwrap(),
            )
        })
    });
    let knob = Arc::new(Knob(Mutex::new(Point::default())));
    let (generator, mut patterns) =
        Generator::spawn(knob.clone(), DeviceRequest::Cpu, Some(engine)).unwrap();
    assert!(generator.wait_until_settled(knob.as_ref(), Duration::from_secs(30)));
    while patterns.take_new().is_none() {}
    group.sample_size(10);
    group.measurement_time(Duration::from_millis(500));
    group.bench_function("param_change_to_pattern", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let decode = generator.status().last_decode.unwrap_or_default();
                let pause =
                    (Duration::from_secs(1) / PREVIEW_RATE).max(decode.div_f64(PREVIEW_SHARE));
                std::thread::sleep(pause + Duration::from_millis(5));
                x = (x + 0.37) % 1.0;
                knob.0.lock().x = x;
                let t = Instant::now();
                loop {
                    if patterns.take_new().is_some() {
                        break;
                    }
                    assert!(t.elapsed() < Duration::from_secs(10), "no pattern");
                    std::thread::yield_now();
                }
                total += t.elapsed();
            }
            total
        })
    });
    group.finish();
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Resident memory the plugin adds, in MiB, measured on this process.
fn memory() {
    let mib = |kib: u64| kib as f64 / 1024.0;
    let base = rss_kib();
    let mut first = host::PluginUnderTest::load(&host::plugin_library_path()).unwrap();
    let loaded = rss_kib();
    let mut audio = first.activate(RATE, BLOCK);
    audio.wait_for_first_pattern(FIRST_PATTERN_WAIT);
    let active = rss_kib();
    let mut others = Vec::new();
    for _ in 0..3 {
        others.push(host::PluginUnderTest::load(&host::plugin_library_path()).unwrap());
    }
    let mut threads: Vec<_> = others.iter_mut().map(|p| p.activate(RATE, BLOCK)).collect();
    for t in &mut threads {
        t.wait_for_first_pattern(FIRST_PATTERN_WAIT);
    }
    let four = rss_kib();
    println!("plugin memory (resident, this process):");
    println!(
        "  library loaded + 1 instance created: {:+.1} MiB",
        mib(loaded - base)
    );
    println!(
        "  activated (model + worker):          {:+.1} MiB",
        mib(active - loaded)
    );
    println!(
        "  each further active instance:        {:+.1} MiB",
        mib(four - active) / 3.0
    );
    println!(
        "  total for 4 active instances:        {:.1} MiB",
        mib(four - base)
    );
    drop(threads);
    drop(audio);
}

criterion_group!(benches, process_core, process_clap, worker);

fn main() {
    if std::env::args().any(|a| a == "--memory") {
        memory();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
