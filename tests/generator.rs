//! The plugin's worker thread, driven through its real API: it publishes the decode of the
//! current point through the wait-free hand-off, follows control changes, keeps the current model
//! when a user's file fails to load (and says why), encodes MIDI files into corners, and is joined
//! on stop, handing its model back. Under continuous automation, played in real time by the
//! plugin's audio-thread part, it decodes once per bar line (from the values the audio thread
//! took at the bar's decision) plus capped previews, not once per block.

#[cfg(unix)]
#[path = "support/fifo.rs"]
mod fifo;

use candle_core::Device;
use drumvae::Pattern;
use drumvae::generator::{
    Command, Controls, Engine, Generator, PREVIEW_RATE, PatternReceiver, Point, Slot, Slots,
};
use drumvae::model::DeviceRequest;
use drumvae::model::embedded::DEFAULT_MODEL_NAME;
use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/smf.rs"]
mod smf;

#[path = "support/automation.rs"]
mod automation;

/// Controls a test can change while the worker runs.
#[derive(Default)]
struct TestControls {
    point: Mutex<Point>,
    model: Mutex<Option<PathBuf>>,
    /// Makes the next `point()` call panic, as a bug inside the worker would.
    panic_next: std::sync::atomic::AtomicBool,
}

impl Controls for TestControls {
    fn point(&self) -> Point {
        if self
            .panic_next
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            panic!("deliberate test panic");
        }
        self.point.lock().clone()
    }
    fn model_path(&self) -> Option<PathBuf> {
        self.model.lock().clone()
    }
    fn set_slot(&self, index: usize, slot: Slot) {
        self.point.lock().slots.0[index] = slot;
    }
}

const WAIT: Duration = Duration::from_secs(20);

fn start(controls: &Arc<TestControls>) -> (Generator, PatternReceiver) {
    let c: Arc<dyn Controls> = controls.clone();
    Generator::spawn(c, DeviceRequest::Cpu, None).expect("thread starts")
}

/// Polls `done` every 5 ms until it holds; fails with `failure()` after [`WAIT`].
fn wait_for(mut done: impl FnMut() -> bool, failure: impl Fn() -> String) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "{}", failure());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until one of the worker's status messages satisfies `matches`.
fn wait_for_message(generator: &Generator, matches: impl Fn(&str) -> bool, failure: &str) {
    wait_for(
        || generator.status().messages.iter().any(|m| matches(m)),
        || format!("{failure}: {:?}", generator.status().messages),
    );
}

/// Polls the receiver (as the audio thread does every block) until a pattern arrives.
fn next_pattern(rx: &mut PatternReceiver) -> Pattern {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(p) = rx.take_new() {
            return *p;
        }
        assert!(Instant::now() < deadline, "no pattern was published");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn reference(point: &Point) -> Pattern {
    Engine::embedded(&Device::Cpu)
        .unwrap()
        .decode(point)
        .unwrap()
        .0
}

#[test]
fn publishes_the_decode_of_the_current_point_and_follows_changes() {
    let controls = Arc::new(TestControls::default());
    let (generator, mut rx) = start(&controls);
    assert!(generator.wait_until_settled(controls.as_ref(), WAIT));
    let first = next_pattern(&mut rx);
    assert_eq!(first, reference(&Point::default()));
    assert!(rx.take_new().is_none(), "a pattern is delivered once");

    let moved = Point {
        x: 1.0,
        y: 0.5,
        ..Point::default()
    };
    *controls.point.lock() = moved.clone();
    assert!(generator.wait_until_settled(controls.as_ref(), WAIT));
    let second = next_pattern(&mut rx);
    assert_eq!(second, reference(&moved));
    assert_ne!(first, second, "the two points must sound different");
    let status = generator.status();
    assert_eq!(status.generation, 2);
    assert_eq!(status.device, "cpu");
    assert!(status.last_decode.is_some());
}

#[test]
fn a_broken_model_file_keeps_the_current_model_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.safetensors");
    std::fs::write(&broken, b"not a model at all").unwrap();
    let controls = Arc::new(TestControls::default());
    let (generator, mut rx) = start(&controls);
    assert!(generator.wait_until_settled(controls.as_ref(), WAIT));
    let before = next_pattern(&mut rx);

    *controls.model.lock() = Some(broken.clone());
    assert!(generator.wait_until_settled(controls.as_ref(), WAIT));
    let status = generator.status();
    assert!(
        status
            .messages
            .iter()
            .any(|m| m.contains("broken.safetensors")
                && m.contains(&format!("keeping model {DEFAULT_MODEL_NAME}"))),
        "{:?}",
        status.messages
    );
    assert_eq!(status.model, DEFAULT_MODEL_NAME);
    // Still plays the same groove with the kept model.
    assert_eq!(next_pattern(&mut rx), before);
}

#[test]
fn a_missing_model_file_at_start_falls_back_to_the_embedded_model() {
    let controls = Arc::new(TestControls::default());
    *controls.model.lock() = Some(PathBuf::from("/nonexistent/model.safetensors"));
    let (generator, mut rx) = start(&controls);
    assert!(generator.wait_until_settled(controls.as_ref(), WAIT));
    assert_eq!(next_pattern(&mut rx), reference(&Point::default()));
    let messages = generator.status().messages;
    assert!(
        messages
            .iter()
            .any(|m| m.contains("/nonexistent/model.safetensors")),
        "{messages:?}"
    );
}

#[test]
fn loading_a_midi_file_into_a_corner_encodes_it_and_moves_the_pattern() {
    let controls = Arc::new(TestControls::default());
    let (generator, mut rx) = start(&controls);
    assert!(generator.wait_until_settled(controls.as_ref(), WAIT));
    let before = next_pattern(&mut rx);
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/example_groove.mid");
    generator
        .send(Command::LoadMidi {
            slot: 0,
            path: file,
            window: 0,
        })
        .unwrap();
    wait_for(
        || matches!(controls.point().slots.0[0], Slot::File { .. }),
        || "the corner was not filled".into(),
    );
    assert!(generator.wait_until_settled(controls.as_ref(), WAIT));
    let after = next_pattern(&mut rx);
    assert_ne!(before, after);
    assert_eq!(after, reference(&controls.point()));

    // A broken file leaves the corner as it is and reports.
    let kept = controls.point().slots.clone();
    generator
        .send(Command::LoadMidi {
            slot: 1,
            path: PathBuf::from("/nonexistent.mid"),
            window: 0,
        })
        .unwrap();
    wait_for_message(
        &generator,
        |m| m.contains("/nonexistent.mid") && m.contains("corner B"),
        "no report",
    );
    assert_eq!(controls.point().slots, kept);
}

#[test]
fn stop_joins_the_thread_and_hands_back_the_model_for_reuse() {
    let controls = Arc::new(TestControls::default());
    let (generator, _rx) = start(&controls);
    assert!(generator.wait_until_settled(controls.as_ref(), WAIT));
    let engine = generator.stop().expect("the worker returns its model");
    assert_eq!(engine.name(), DEFAULT_MODEL_NAME);
    // A new worker reuses it and plays at once.
    let c: Arc<dyn Controls> = controls.clone();
    let (generator, mut rx) = Generator::spawn(c, DeviceRequest::Cpu, Some(engine)).unwrap();
    assert!(generator.wait_until_settled(controls.as_ref(), WAIT));
    assert_eq!(next_pattern(&mut rx), reference(&Point::default()));
}

#[test]
fn slots_from_another_model_fall_back_to_a_seed_and_warn() {
    let controls = Arc::new(TestControls::default());
    controls.point.lock().slots = Slots([
        Slot::File {
            name: "old.mid".into(),
            z: vec![0.5; 3],
        },
        Slot::Seed { seed: 1 },
        Slot::Seed { seed: 2 },
        Slot::Seed { seed: 3 },
    ]);
    let (generator, mut rx) = start(&controls);
    assert!(generator.wait_until_settled(controls.as_ref(), WAIT));
    next_pattern(&mut rx);
    let messages = generator.status().messages;
    assert!(
        messages
            .iter()
            .any(|m| m.contains("old.mid") && m.contains("3 latent dimensions")),
        "{messages:?}"
    );
}

/// The editor's corner load (the worker's `LoadMidi`) takes a 1-, 2- or 3-bar loop, repeated to
/// fill 4 bars, and its corner then decodes to a groove like the loop: kick on every downbeat.
#[test]
fn a_short_loop_loads_into_a_corner() {
    let dir = tempfile::tempdir().unwrap();
    for bars in 1..=3u32 {
        let controls = Arc::new(TestControls::default());
        let (generator, _rx) = start(&controls);
        assert!(generator.wait_until_settled(controls.as_ref(), WAIT));
        let mut notes = Vec::new();
        for bar in 0..bars {
            notes.push((bar * smf::BAR, 36, 110));
            notes.push((bar * smf::BAR + 4 * smf::STEP, 38, 100));
            notes.push((bar * smf::BAR + 12 * smf::STEP, 38, 100));
        }
        let path = dir.path().join(format!("loop{bars}.mid"));
        std::fs::write(&path, smf::drum_file(&notes, bars * smf::BAR)).unwrap();
        generator
            .send(Command::LoadMidi {
                slot: 2,
                path: path.clone(),
                window: 0,
            })
            .unwrap();
        wait_for(
            || matches!(&controls.point().slots.0[2], Slot::File { name, .. } if name == &format!("loop{bars}.mid")),
            || {
                format!(
                    "the {bars}-bar loop did not fill corner C: {:?}",
                    generator.status().messages
                )
            },
        );
    }
}

/// A session whose model path names a FIFO (or a device) neither blocks the worker nor its stop:
/// the file is refused as not regular, the embedded model plays, and the worker joins.
#[cfg(unix)]
#[test]
fn a_fifo_as_the_model_path_is_refused_and_the_worker_still_stops() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = fifo::mkfifo(dir.path(), "model.safetensors");
    for path in [fifo, PathBuf::from("/dev/zero")] {
        let controls = Arc::new(TestControls::default());
        *controls.model.lock() = Some(path.clone());
        let (generator, mut rx) = start(&controls);
        assert!(generator.wait_until_settled(controls.as_ref(), WAIT));
        assert_eq!(next_pattern(&mut rx), reference(&Point::default()));
        let messages = generator.status().messages;
        assert!(
            messages.iter().any(|m| m.contains("not a regular file")),
            "{}: {messages:?}",
            path.display()
        );
        assert!(
            generator.stop().is_some(),
            "the worker hands its model back"
        );
    }
}

/// A panic inside the worker (here from the controls it reads) is caught and reported, and the
/// worker goes on serving: the next change still gets decoded and published.
#[test]
fn a_panic_in_the_worker_is_reported_and_the_worker_keeps_going() {
    let controls = Arc::new(TestControls::default());
    let (generator, mut rx) = start(&controls);
    assert!(generator.wait_until_settled(controls.as_ref(), WAIT));
    let before = next_pattern(&mut rx);
    controls
        .panic_next
        .store(true, std::sync::atomic::Ordering::SeqCst);
    wait_for_message(
        &generator,
        |m| m.contains("internal error in the worker") && m.contains("deliberate test panic"),
        "the panic was not reported",
    );
    controls.point.lock().x = 1.0;
    assert!(generator.wait_until_settled(controls.as_ref(), WAIT));
    let after = next_pattern(&mut rx);
    assert_ne!(
        after, before,
        "the worker decoded the new point after the panic"
    );
    assert_eq!(after, reference(&controls.point()));
}

/// Plays `seconds` of continuous automation (every morph value new in every block) in real time at
/// 48 kHz in 256-sample blocks, 240 BPM (a bar a second), and checks that every bar line switched
/// to the decode of the values the host sent in that bar's decision block (the rule of
/// `src/generator/cue.rs`) and that each bar was decoded once.
fn check_automated_bars(seconds: f64, editor_open: bool) -> automation::Report {
    let run = automation::Run {
        rate: 48_000.0,
        block: 256,
        tempo: 240.0,
        seconds,
        editor_open,
    };
    let report = automation::play(Engine::embedded(&Device::Cpu).unwrap(), run);
    let reference = Engine::embedded(&Device::Cpu).unwrap();
    assert!(
        report.bars.len() as f64 >= seconds.floor(),
        "{} bar lines",
        report.bars.len()
    );
    for (step, pattern) in &report.bars {
        let block = report
            .decision_block(*step)
            .expect("every bar line has a decision block");
        let want = reference
            .decode(&block.values.point(Slots::default()))
            .unwrap()
            .0;
        assert!(
            *pattern == want,
            "the bar line at step {step} plays something else than the decode of the values sent \
             in its decision block (samples {}..{}, {:?}); slowest decode {:?}",
            block.start,
            block.start + u64::from(block.frames),
            block.values,
            report.slowest_decode
        );
    }
    println!(
        "editor open: {editor_open}; {} bar lines, {} decodes ({} published) in {:.2} s: {:.1} a \
         second; slowest decode {:?}",
        report.bars.len(),
        report.decodes,
        report.published,
        report.wall.as_secs_f64(),
        report.decodes_per_second(),
        report.slowest_decode
    );
    // One published decode per decision: the bar lines crossed, and perhaps the next one's.
    let bars = report.bars.len() as u64;
    assert!(
        (bars..=bars + 1).contains(&report.published),
        "{} patterns published for {bars} bar lines",
        report.published
    );
    report
}

/// With an editor open, the worker adds previews of the pad position, at most [`PREVIEW_RATE`] a
/// second: 11 decodes a second in all at a bar a second, where decoding every change would be one
/// per block (187.5 a second).
#[test]
fn under_continuous_automation_each_bar_plays_its_decision_values_and_previews_are_capped() {
    let report = check_automated_bars(6.2, true);
    let previews = report.decodes - report.published;
    assert!(previews > 0, "the open editor got previews");
    let seconds = report.wall.as_secs_f64();
    let cap = f64::from(PREVIEW_RATE) * seconds + 1.0;
    assert!(
        previews as f64 <= cap,
        "{previews} previews in {seconds:.2} s: over {PREVIEW_RATE} a second"
    );
    assert!(
        report.decodes_per_second() <= f64::from(PREVIEW_RATE) + 1.5,
        "{:.1} decodes a second",
        report.decodes_per_second()
    );
}

/// With no editor open, the worker decodes nothing but the bar lines' patterns.
#[test]
fn under_continuous_automation_with_no_editor_the_worker_decodes_only_bar_lines() {
    let report = check_automated_bars(3.2, false);
    assert_eq!(
        report.decodes, report.published,
        "every decode was one the audio thread plays"
    );
}
