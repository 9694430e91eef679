//! A host that plays the plugin's audio-thread part ([`Player`]) in real time against its worker
//! ([`Generator`]) while it automates every morph value continuously: a new Morph X, Morph Y,
//! Temperature, Density and Seed in every block. It is the plugin's own wiring (the player's
//! decisions reach the worker through the shared [`Cue`]; the worker reads the live values for
//! previews) without the CLAP layer, so a test can count the worker's decodes and read the pattern
//! each bar line switched to. `tests/generator.rs` proves the decode rule with it,
//! `benches/automation.rs` measures the worker's CPU time with it.
#![allow(dead_code)]

use drumvae::Pattern;
use drumvae::generator::{
    Automated, Controls, Cue, DECISION_LEAD, Engine, Generator, Point, Slot, Slots,
};
use drumvae::model::DeviceRequest;
use drumvae::plugin::player::{PlayState, Player};
use drumvae::sequencer::{Settings, Transport};
use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The automation: every value moves in every block (the seed once a millisecond), on curves of
/// different periods so no two blocks share a point.
pub fn automation(seconds: f64) -> Automated {
    let wave = |period: f64, phase: f64| {
        0.5 + 0.5 * (std::f64::consts::TAU * seconds / period + phase).sin()
    };
    Automated {
        x: wave(3.1, 0.0) as f32,
        y: wave(4.3, 1.0) as f32,
        temperature: (0.2 + 0.6 * wave(2.3, 2.0)) as f32,
        density: (3.0 * wave(5.7, 0.5) - 1.5) as f32,
        seed: (seconds * 1000.0) as u64 % 10_000,
    }
}

/// The worker's view: the corners, the live values (as the host set them for the latest block)
/// and the cue.
pub struct AutomatedControls {
    pub live: Mutex<Automated>,
    pub slots: Slots,
    pub cue: Arc<Cue>,
}

impl Controls for AutomatedControls {
    fn point(&self) -> Point {
        self.live.lock().point(self.slots.clone())
    }
    fn model_path(&self) -> Option<PathBuf> {
        None
    }
    fn set_slot(&self, _: usize, _: Slot) {}
    fn cue(&self) -> Option<&Cue> {
        Some(&self.cue)
    }
}

/// What to play.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub rate: f64,
    pub block: u32,
    pub tempo: f64,
    /// Audio played from song beat 0, in seconds, in real time.
    pub seconds: f64,
    /// Whether an editor shows the patterns (asks for previews every block).
    pub editor_open: bool,
}

/// One block as played.
#[derive(Clone, Copy, Debug)]
pub struct Block {
    /// First sample, counted from song beat 0.
    pub start: u64,
    pub frames: u32,
    /// The values the host set for it.
    pub values: Automated,
}

/// What happened.
pub struct Report {
    pub run: Run,
    /// Decodes while playing (after the first pattern).
    pub decodes: u64,
    /// Patterns published to the audio thread while playing.
    pub published: u64,
    /// Wall-clock time of the playing part.
    pub wall: Duration,
    /// The worker thread's CPU time while playing (Linux; `None` elsewhere).
    pub worker_cpu: Option<Duration>,
    pub blocks: Vec<Block>,
    /// Each bar line crossed: its song step and the pattern playing from it.
    pub bars: Vec<(i64, Pattern)>,
    /// The slowest decode seen (from the worker's status after each block).
    pub slowest_decode: Duration,
}

impl Report {
    pub fn samples_per_beat(&self) -> f64 {
        60.0 / self.run.tempo * self.run.rate
    }

    /// The block whose values decide the pattern at switch step `step` (with the timing amount at
    /// 100 %, switch at the next bar), by the rule in `src/generator/cue.rs`: the first block that
    /// ends less than [`DECISION_LEAD`] before the step's deadline, half a step early.
    pub fn decision_block(&self, step: i64) -> Option<&Block> {
        let spb = self.samples_per_beat();
        let deadline = ((step as f64 - 0.5) / 4.0 * spb).round();
        let lead = DECISION_LEAD.as_secs_f64() * self.run.rate;
        self.blocks
            .iter()
            .find(|b| deadline - ((b.start + u64::from(b.frames)) as f64) < lead)
    }

    /// Decodes per second of wall-clock time while playing.
    pub fn decodes_per_second(&self) -> f64 {
        self.decodes as f64 / self.wall.as_secs_f64()
    }

    /// The worker's CPU time as a fraction of one core.
    pub fn worker_load(&self) -> Option<f64> {
        self.worker_cpu
            .map(|cpu| cpu.as_secs_f64() / self.wall.as_secs_f64())
    }
}

/// Plays `run` with `engine` (the worker's model, already loaded) and reports.
pub fn play(engine: Engine, run: Run) -> Report {
    let start_values = automation(0.0);
    let cue = Arc::new(Cue::new());
    let controls = Arc::new(AutomatedControls {
        live: Mutex::new(start_values),
        slots: Slots::default(),
        cue: cue.clone(),
    });
    let (generator, patterns) =
        Generator::spawn(controls.clone(), DeviceRequest::Cpu, Some(engine)).expect("spawns");
    assert!(
        generator.wait_until_settled(controls.as_ref(), Duration::from_secs(60)),
        "no first pattern"
    );
    let mut player = Player::new(cue);
    player.patterns = Some(patterns);
    let state = PlayState::default();
    let settings = Settings::default();
    let spb = 60.0 / run.tempo * run.rate;
    let transport = |playing: bool, start: u64| Transport {
        playing,
        tempo_bpm: run.tempo,
        pos_beats: Some(start as f64 / spb),
        sample_rate: run.rate,
        loop_beats: None,
    };
    // The player takes the first pattern while stopped.
    player.play_block(
        &settings,
        start_values,
        &state,
        &transport(false, 0),
        run.block,
        &mut |_| {},
    );

    let before = generator.status();
    let cpu_before = worker_cpu();
    let total = (run.seconds * run.rate) as u64;
    let mut blocks = Vec::new();
    let mut bars = Vec::new();
    let mut slowest_decode = Duration::ZERO;
    let began = Instant::now();
    let mut start = 0u64;
    while start < total {
        let due = began + Duration::from_secs_f64(start as f64 / run.rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let frames = run.block;
        let values = automation(start as f64 / run.rate);
        *controls.live.lock() = values;
        if run.editor_open {
            generator.link().want_preview();
        }
        player.play_block(
            &settings,
            values,
            &state,
            &transport(true, start),
            frames,
            &mut |_| {},
        );
        let end = start + u64::from(frames);
        blocks.push(Block {
            start,
            frames,
            values,
        });
        // A bar line whose first sample is in this block: the switch has happened.
        let bar = (start as f64 / spb / 4.0).ceil() as i64;
        if ((bar as f64 * 4.0 * spb).round() as u64) < end && bar > 0 {
            bars.push((bar * 16, *player.sequencer.current_pattern()));
        }
        if let Some(took) = generator.link().with_status(|s| s.last_decode) {
            slowest_decode = slowest_decode.max(took);
        }
        start = end;
    }
    let wall = began.elapsed();
    let cpu = worker_cpu()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    let after = generator.status();
    drop(generator);
    Report {
        run,
        decodes: after.decodes - before.decodes,
        published: after.generation - before.generation,
        wall,
        worker_cpu: cpu,
        blocks,
        bars,
        slowest_decode,
    }
}

/// The CPU time of every thread of this process named `drumvae-worker` (the plugin's workers),
/// from the kernel's per-thread CPU clock. Only meaningful while one worker runs.
#[cfg(target_os = "linux")]
pub fn worker_cpu() -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut found = false;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let Ok(entry) = entry else { continue };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != "drumvae-worker" {
            continue;
        }
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<u32>().ok())
        else {
            continue;
        };
        // The kernel's per-thread CPU clock id (MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED), what
        // glibc's pthread_getcpuclockid builds): valid for any thread of this process.
        let clock = ((!tid) << 3 | 6) as libc::clockid_t;
        let mut time = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `time` is a valid timespec to write to; a thread that has just ended makes
        // clock_gettime fail, which is skipped.
        if unsafe { libc::clock_gettime(clock, &mut time) } == 0 {
            total += Duration::new(time.tv_sec as u64, time.tv_nsec as u32);
            found = true;
        }
    }
    found.then_some(total)
}

#[cfg(not(target_os = "linux"))]
pub fn worker_cpu() -> Option<Duration> {
    None
}
