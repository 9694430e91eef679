//! The plugin's WORKER THREAD: owns the Candle model, watches the parameters, decodes the pattern
//! for the morph point and publishes it to the audio thread.
//!
//! - One thread per plugin instance, started by [`Generator::spawn`] and joined by
//!   [`Generator::stop`] (or `Drop`): a slow decode in one instance never stalls another, and no
//!   thread outlives the plugin. Starting it never waits for the model: the worker loads it and
//!   publishes its first pattern when ready, and the sequencer plays what it had until then.
//! - The worker polls [`Controls`] every [`POLL_INTERVAL`] (plus whenever a command arrives), so
//!   the audio thread sends nothing: parameter values are atomics the worker reads.
//! - It decodes only what can be heard ([`cue`]): while the host plays, one pattern per switch
//!   point, from the values the audio thread took just before it; while stopped, every change;
//!   for an open editor, previews of the pad position, which are shown but never played. The
//!   last two come at most [`PREVIEW_RATE`] a second and take at most [`PREVIEW_SHARE`] of a core.
//! - Patterns reach the audio thread through a triple buffer ([`PatternReceiver`]): wait-free on
//!   both sides, and a [`Pattern`] is a fixed-size `Copy` value, so nothing is allocated or freed
//!   on the audio thread.
//! - Commands (load a MIDI file into a corner, shut down) arrive on a bounded crossbeam channel.
//! - What the GUI and tests read ([`Status`]) sits behind a `parking_lot` mutex that the audio
//!   thread never takes.
//! - A device problem never reaches the host: a GPU that cannot be used, or a decode that fails
//!   on it, moves the model to the CPU and says so in [`Status::messages`].

// The worker's engine and corners live below it in the module graph (render uses them too); they
// are re-exported here because the worker's API speaks in them.
pub use crate::engine::{Engine, Point, SLOT_COUNT, SLOT_NAMES, Slot, Slots};
pub use cue::{
    Automated, Cue, DECISION_LEAD, Decision, MIN_CUE_SPACING, PREVIEW_RATE, PREVIEW_SHARE,
};

pub mod cue;

use crate::groove::Pattern;
use crate::model::file::read_model_bytes;
use crate::model::{DeviceRequest, ModelError, select_device};
use crate::render::{self, Automation, RenderOptions};
use crate::sequencer::Settings;
use candle_core::Device;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};
use parking_lot::{Condvar, Mutex};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the worker looks at the parameters when nothing else wakes it.
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// Commands that can wait in the queue; senders use `try_send` and never block.
pub const COMMAND_CAPACITY: usize = 16;
/// Messages kept in [`Status::messages`] (oldest dropped first).
pub const MAX_MESSAGES: usize = 32;
/// Published patterns kept in [`Status::recent`], so the editor can show the playing one and the
/// one waiting for the bar line.
pub const RECENT_PATTERNS: usize = 8;
/// How long after the editor's last frame ([`Link::want_preview`]) the worker keeps decoding
/// previews.
pub const PREVIEW_TIMEOUT: Duration = Duration::from_secs(1);

/// What the worker reads from its owner on every wake. The plugin implements it over its
/// parameters and persisted fields; the worker calls it, never the audio thread.
pub trait Controls: Send + Sync + 'static {
    /// The point to decode now.
    fn point(&self) -> Point;
    /// The user's model file, or `None` for the embedded model.
    fn model_path(&self) -> Option<PathBuf>;
    /// Stores a corner the worker has just encoded from a MIDI file.
    fn set_slot(&self, index: usize, slot: Slot);
    /// The audio thread's cue ([`cue`]), when the owner plays the patterns on a host transport.
    /// `None` (the default): nothing says when a pattern is heard, so every change of
    /// [`Controls::point`] is published (as often as [`PREVIEW_RATE`] and [`PREVIEW_SHARE`]
    /// allow).
    fn cue(&self) -> Option<&Cue> {
        None
    }
}

/// Requests to the worker.
#[derive(Debug)]
pub enum Command {
    /// Look at the controls now instead of at the next poll.
    Wake,
    /// Encode window `window` of a MIDI file and put it in corner `slot` (0 = A).
    LoadMidi {
        slot: usize,
        path: PathBuf,
        window: usize,
    },
    /// Write what the plugin plays now to a `.mid` file: `bars` bars from the song start, with
    /// the current point, at `tempo_bpm`, played with `settings`.
    Export {
        path: PathBuf,
        bars: u32,
        tempo_bpm: f64,
        settings: Settings,
    },
}

/// The worker's state as the GUI and tests see it.
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// Display name of the loaded model.
    pub model: String,
    /// "cpu" or "cuda".
    pub device: String,
    /// Styles the loaded model offers as corners.
    pub styles: Vec<String>,
    /// The model request the loaded model answers (the path the user chose, or `None`).
    pub model_request: Option<PathBuf>,
    /// The last point the worker decoded for the audio thread (published, or failed on).
    pub settled: Option<Point>,
    /// The last pattern published, and the point it was decoded from.
    pub pattern: Option<(Point, Pattern)>,
    /// Patterns published so far.
    pub generation: u64,
    /// The last [`RECENT_PATTERNS`] patterns published, with their generation, oldest first.
    pub recent: Vec<(u64, Pattern)>,
    /// The editor's preview while playing: the pattern at the pad's position now, when that is
    /// not the pattern last published (it plays from the next switch point if the values stay).
    /// Never sent to the audio thread.
    pub preview: Option<(Point, Pattern)>,
    /// Decodes so far, published or preview (what the worker's CPU time goes to).
    pub decodes: u64,
    /// Time the last decode took.
    pub last_decode: Option<Duration>,
    /// Warnings and errors for the user (model files that failed to load, device fallbacks,
    /// styles a model lacks), newest last.
    pub messages: Vec<String>,
}

impl Status {
    fn report(&mut self, message: String) {
        if self.messages.last() != Some(&message) {
            if self.messages.len() == MAX_MESSAGES {
                self.messages.remove(0);
            }
            self.messages.push(message);
        }
    }
}

/// A pattern as published to the audio thread.
#[derive(Clone, Copy, Debug)]
struct Published {
    pattern: Pattern,
    generation: u64,
}

/// The audio thread's end of the hand-off. [`PatternReceiver::take_new`] is wait-free and never
/// allocates.
pub struct PatternReceiver {
    output: triple_buffer::Output<Published>,
    seen: u64,
}

impl PatternReceiver {
    /// The newest pattern the worker has published since the last call, if any.
    pub fn take_new(&mut self) -> Option<&Pattern> {
        self.take_new_with_generation().map(|(_, p)| p)
    }

    /// As [`PatternReceiver::take_new`], with the pattern's generation (its number in
    /// [`Status::recent`]).
    pub fn take_new_with_generation(&mut self) -> Option<(u64, &Pattern)> {
        self.output.update();
        let published = self.output.output_buffer();
        if published.generation == self.seen {
            return None;
        }
        self.seen = published.generation;
        Some((published.generation, &published.pattern))
    }
}

struct Shared {
    status: Mutex<Status>,
    settled: Condvar,
    /// When [`Link::want_preview`] was last called, in milliseconds after `epoch` (0 = never).
    preview_wanted_ms: AtomicU64,
    epoch: Instant,
}

impl Shared {
    fn preview_wanted(&self) -> bool {
        let last = self.preview_wanted_ms.load(Ordering::Relaxed);
        last > 0
            && (self.epoch.elapsed().as_millis() as u64).saturating_sub(last)
                <= PREVIEW_TIMEOUT.as_millis() as u64
    }
}

/// The command queue and status that outlive any one worker: the plugin keeps one for its whole
/// life so the editor can queue commands while the plugin is inactive and keeps seeing messages
/// across reactivations. Cloning shares it.
#[derive(Clone)]
pub struct Link {
    commands: Sender<Command>,
    inbox: Receiver<Command>,
    shared: Arc<Shared>,
}

impl Default for Link {
    fn default() -> Self {
        Link::new()
    }
}

impl Link {
    /// An empty queue and status.
    pub fn new() -> Link {
        let (commands, inbox) = bounded(COMMAND_CAPACITY);
        Link {
            commands,
            inbox,
            shared: Arc::new(Shared {
                status: Mutex::new(Status::default()),
                settled: Condvar::new(),
                preview_wanted_ms: AtomicU64::new(0),
                epoch: Instant::now(),
            }),
        }
    }

    /// Queues a command without blocking; fails when the queue is full.
    pub fn send(&self, command: Command) -> Result<(), TrySendError<Command>> {
        self.commands.try_send(command)
    }

    /// A copy of the worker's status.
    pub fn status(&self) -> Status {
        self.shared.status.lock().clone()
    }

    /// Runs `f` on the status under its lock (cheaper than a copy, for the editor's frames).
    pub fn with_status<R>(&self, f: impl FnOnce(&Status) -> R) -> R {
        f(&self.shared.status.lock())
    }

    /// Says that an editor is showing the patterns now (call it every frame): for the next
    /// [`PREVIEW_TIMEOUT`], the worker decodes previews of the pad position while the host plays
    /// ([`Status::preview`]).
    pub fn want_preview(&self) {
        let now = self.shared.epoch.elapsed().as_millis() as u64;
        self.shared
            .preview_wanted_ms
            .store(now.max(1), Ordering::Relaxed);
    }

    /// Waits until the worker has settled on the point `controls` give now (decoded and published
    /// it, or failed and reported why). While the host plays, the worker settles on a point only
    /// at a decision ([`cue`]). For tests and benchmarks: the plugin never waits. Returns `false`
    /// on timeout.
    pub fn wait_until_settled(&self, controls: &dyn Controls, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let _ = self.commands.try_send(Command::Wake);
        let mut status = self.shared.status.lock();
        loop {
            let want = controls.point();
            if status.settled.as_ref() == Some(&want)
                && status.model_request == controls.model_path()
            {
                return true;
            }
            if self
                .shared
                .settled
                .wait_until(&mut status, deadline)
                .timed_out()
            {
                return false;
            }
        }
    }
}

/// The worker thread.
pub struct Generator {
    link: Link,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Option<Engine>>>,
}

impl Generator {
    /// Starts the worker. `engine` reuses a model returned by an earlier [`Generator::stop`] (so
    /// a host that deactivates and reactivates does not reload it); with `None` the worker loads
    /// the model the controls ask for, on the device `device` selects.
    pub fn spawn(
        controls: Arc<dyn Controls>,
        device: DeviceRequest,
        engine: Option<Engine>,
    ) -> std::io::Result<(Generator, PatternReceiver)> {
        Generator::spawn_with(controls, device, engine, Link::new())
    }

    /// As [`Generator::spawn`], over an existing [`Link`].
    pub fn spawn_with(
        controls: Arc<dyn Controls>,
        device: DeviceRequest,
        engine: Option<Engine>,
        link: Link,
    ) -> std::io::Result<(Generator, PatternReceiver)> {
        let (input, output) = triple_buffer::triple_buffer(&Published {
            pattern: Pattern::default(),
            generation: 0,
        });
        let stop = Arc::new(AtomicBool::new(false));
        // A new worker starts from a clean slate: its first pattern must be published even if
        // an earlier worker had settled on the same point.
        let reused = engine.is_some();
        let answered = {
            let mut status = link.shared.status.lock();
            status.settled = None;
            status.model_request.clone()
        };
        // Decisions taken for an earlier worker are history.
        let decisions_seen = controls
            .cue()
            .and_then(Cue::decision)
            .map_or(0, |d| d.number);
        let worker = Worker {
            controls,
            device,
            engine,
            inbox: link.inbox.clone(),
            output: input,
            shared: link.shared.clone(),
            stop: stop.clone(),
            // A reused model answers the request it was loaded for.
            last_model_attempt: reused.then_some(answered),
            settled: None,
            decisions_seen,
            next_rated_decode: None,
        };
        let thread = std::thread::Builder::new()
            .name("drumvae-worker".into())
            .spawn(move || worker.run())?;
        Ok((
            Generator {
                link,
                stop,
                thread: Some(thread),
            },
            PatternReceiver { output, seen: 0 },
        ))
    }

    /// The queue and status this worker serves.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Queues a command without blocking; fails when the queue is full.
    pub fn send(&self, command: Command) -> Result<(), TrySendError<Command>> {
        self.link.send(command)
    }

    /// A copy of the worker's status.
    pub fn status(&self) -> Status {
        self.link.status()
    }

    /// See [`Link::wait_until_settled`].
    pub fn wait_until_settled(&self, controls: &dyn Controls, timeout: Duration) -> bool {
        self.link.wait_until_settled(controls, timeout)
    }

    /// Stops and joins the worker, returning its model for reuse.
    pub fn stop(mut self) -> Option<Engine> {
        self.join()
    }

    fn join(&mut self) -> Option<Engine> {
        let thread = self.thread.take()?;
        self.stop.store(true, Ordering::Release);
        // Wakes it now instead of at the next poll (a full queue wakes it anyway).
        let _ = self.link.send(Command::Wake);
        thread.join().ok().flatten()
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        let _ = self.join();
    }
}

struct Worker {
    controls: Arc<dyn Controls>,
    device: DeviceRequest,
    engine: Option<Engine>,
    inbox: Receiver<Command>,
    output: triple_buffer::Input<Published>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    /// The model request last tried, so a broken file is reported once, not on every poll.
    last_model_attempt: Option<Option<PathBuf>>,
    /// The point last decoded for the audio thread (as [`Status::settled`]); `None` until the
    /// first, and after a model change.
    settled: Option<Point>,
    /// The number of the last [`Decision`] handled.
    decisions_seen: u64,
    /// When the next decode limited by [`PREVIEW_RATE`] and [`PREVIEW_SHARE`] may start.
    next_rated_decode: Option<Instant>,
}

/// What a decode is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Use {
    /// Published to the audio thread.
    Play,
    /// Shown in the editor only.
    Preview,
}

impl Worker {
    fn run(mut self) -> Option<Engine> {
        while !self.stop.load(Ordering::Acquire) {
            let command = match self.inbox.recv_timeout(POLL_INTERVAL) {
                Err(RecvTimeoutError::Disconnected) => break,
                Ok(command) => Some(command),
                Err(RecvTimeoutError::Timeout) => None,
            };
            // A bug in decoding or loading must not silence the instance while the status says
            // "ready": the panic is caught here, reported to the user, and the worker carries on
            // with its last pattern and model (parking_lot locks are not poisoned by it).
            let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.handle(command);
                if !self.stop.load(Ordering::Acquire) {
                    self.refresh();
                }
            }));
            if let Err(panic) = step {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_string());
                self.report(format!(
                    "internal error in the worker ({what}); still playing the last pattern; \
                     please report this"
                ));
            }
        }
        self.engine
    }

    fn handle(&mut self, command: Option<Command>) {
        match command {
            Some(Command::LoadMidi { slot, path, window }) => self.load_midi(slot, &path, window),
            Some(Command::Export {
                path,
                bars,
                tempo_bpm,
                settings,
            }) => self.export(&path, bars, tempo_bpm, settings),
            Some(Command::Wake) | None => {}
        }
    }

    fn report(&self, message: String) {
        self.shared.status.lock().report(message);
    }

    /// Loads the requested model if it changed, then decodes what can be heard ([`cue`]): a new
    /// decision; the first pattern; while stopped, the current point; while playing, a preview for
    /// an open editor.
    fn refresh(&mut self) {
        let request = self.controls.model_path();
        if self.engine.is_none() || self.last_model_attempt.as_ref() != Some(&request) {
            self.load_model(request);
        }
        let cue = self.controls.cue();
        let decision = cue
            .and_then(Cue::decision)
            .filter(|d| d.number != self.decisions_seen);
        let playing = cue.is_some_and(Cue::playing);
        if let Some(decision) = decision {
            self.decisions_seen = decision.number;
            let point = decision.values.point(self.controls.point().slots);
            if self.settled.as_ref() != Some(&point) {
                self.decode(point, Use::Play);
            }
            return;
        }
        let point = self.controls.point();
        if self.settled.as_ref() == Some(&point) {
            // Back at the published pattern's point: nothing else to preview.
            self.shared.status.lock().preview = None;
            return;
        }
        if self.settled.is_none() {
            // The first pattern (of this worker, or of a new model): the sooner the better.
            self.decode(point, Use::Play);
        } else if !playing {
            self.rated_decode(point, Use::Play);
        } else if self.shared.preview_wanted()
            && self.shared.status.lock().preview.as_ref().map(|(p, _)| p) != Some(&point)
        {
            self.rated_decode(point, Use::Preview);
        }
    }

    /// Decodes `point` unless that would exceed [`PREVIEW_RATE`] decodes a second or
    /// [`PREVIEW_SHARE`] of a core: after a decode that took `d`, the next waits at least
    /// `max(1 / PREVIEW_RATE, d / PREVIEW_SHARE)`. Skipped decodes are tried again at the next
    /// poll, so the last change is always decoded.
    fn rated_decode(&mut self, point: Point, purpose: Use) {
        let started = Instant::now();
        if self.next_rated_decode.is_some_and(|next| started < next) {
            return;
        }
        self.decode(point, purpose);
        let took = started.elapsed();
        let wait = (Duration::from_secs(1) / PREVIEW_RATE).max(took.div_f64(PREVIEW_SHARE));
        self.next_rated_decode = Some(started + wait);
    }

    fn device(&self) -> Device {
        match select_device(self.device) {
            Ok((device, note)) => {
                if let Some(note) = note {
                    self.report(note);
                }
                device
            }
            Err(e) => {
                self.report(format!("{e}; decoding on the CPU"));
                Device::Cpu
            }
        }
    }

    /// Reads a model file on a thread of its own while this one keeps watching `stop`: a path
    /// from a saved session may sit on a hung network mount, and deactivation joins this worker,
    /// so the worker must never wait on a read that may not end. `None` when asked to stop
    /// first (the reader thread is left to finish or hang on its own; it holds nothing the host
    /// or this worker needs). The file checks (regular file, size cap, header first) are
    /// [`crate::model::file::read_model_bytes`]'s.
    fn read_in_background(&self, path: &Path) -> Option<Result<Vec<u8>, ModelError>> {
        let (tx, rx) = bounded(1);
        let owned = path.to_path_buf();
        let spawned = std::thread::Builder::new()
            .name("drumvae-model-read".into())
            .spawn(move || {
                let _ = tx.send(read_model_bytes(&owned));
            });
        if let Err(e) = spawned {
            return Some(Err(ModelError::Io {
                path: path.to_path_buf(),
                source: e,
            }));
        }
        loop {
            match rx.recv_timeout(POLL_INTERVAL) {
                Ok(result) => return Some(result),
                Err(RecvTimeoutError::Timeout) if self.stop.load(Ordering::Acquire) => return None,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Some(Err(ModelError::Io {
                        path: path.to_path_buf(),
                        source: std::io::Error::other(
                            "the model reader thread ended without an answer",
                        ),
                    }));
                }
            }
        }
    }

    fn load_model(&mut self, request: Option<PathBuf>) {
        self.last_model_attempt = Some(request.clone());
        let device = match &self.engine {
            Some(engine) => engine.device().clone(),
            None => self.device(),
        };
        let loaded = match &request {
            Some(path) => {
                let Some(bytes) = self.read_in_background(path) else {
                    // Stopping while the read hangs: leave it to its own thread.
                    return;
                };
                bytes
                    .and_then(|bytes| Engine::from_bytes(path, &bytes, &device))
                    .map_err(|e| {
                        format!(
                            "could not load model {}: {e}; keeping model {}",
                            path.display(),
                            self.engine.as_ref().map_or("(embedded)", |m| m.name())
                        )
                    })
            }
            None => Engine::embedded(&device).map_err(|e| format!("embedded model: {e}")),
        };
        match loaded {
            Ok(engine) => self.engine = Some(engine),
            Err(message) => {
                self.report(message);
                if self.engine.is_none() {
                    // The user's file is broken and nothing is loaded yet: play the embedded
                    // model rather than silence.
                    match Engine::embedded(&Device::Cpu) {
                        Ok(engine) => self.engine = Some(engine),
                        Err(e) => self.report(format!("embedded model: {e}")),
                    }
                }
            }
        }
        let mut status = self.shared.status.lock();
        status.model_request = request;
        if let Some(engine) = &self.engine {
            status.model = engine.name().to_string();
            status.device = device_name(engine.device()).to_string();
            status.styles = engine.style_names().map(str::to_string).collect();
        }
        // A new model means the current point must be decoded again.
        status.settled = None;
        status.preview = None;
        self.settled = None;
    }

    fn decode(&mut self, point: Point, purpose: Use) {
        let Some(engine) = &self.engine else {
            if purpose == Use::Play {
                self.settle(point, None, None);
            }
            return;
        };
        let started = Instant::now();
        let mut result = engine.decode(&point);
        if let Err(e) = &result
            && !engine.device().is_cpu()
        {
            self.report(format!(
                "decoding on {} failed ({e}); moving the model to the CPU",
                device_name(engine.device())
            ));
            self.engine = self.reload_on_cpu();
            if let Some(engine) = &self.engine {
                result = engine.decode(&point);
            }
        }
        self.shared.status.lock().decodes += 1;
        match (result, purpose) {
            (Ok((pattern, warnings)), Use::Play) => {
                for w in warnings {
                    self.report(w);
                }
                let elapsed = started.elapsed();
                self.settle(point, Some(pattern), Some(elapsed));
            }
            (Ok((pattern, _)), Use::Preview) => {
                let mut status = self.shared.status.lock();
                status.preview = Some((point, pattern));
                status.last_decode = Some(started.elapsed());
            }
            (Err(e), Use::Play) => {
                self.report(format!("decoding failed: {e}; keeping the current pattern"));
                self.settle(point, None, None);
            }
            // Reported when it is decoded to be played.
            (Err(_), Use::Preview) => {}
        }
    }

    fn reload_on_cpu(&self) -> Option<Engine> {
        let request = self.last_model_attempt.clone().flatten();
        let engine = match request {
            Some(path) => Engine::from_file(&path, &Device::Cpu).ok(),
            None => None,
        };
        engine.or_else(|| Engine::embedded(&Device::Cpu).ok())
    }

    /// Publishes (when there is a pattern) and wakes anyone waiting for this point.
    fn settle(&mut self, point: Point, pattern: Option<Pattern>, took: Option<Duration>) {
        let mut status = self.shared.status.lock();
        if let Some(pattern) = pattern {
            status.generation += 1;
            self.output.write(Published {
                pattern,
                generation: status.generation,
            });
            status.pattern = Some((point.clone(), pattern));
            let generation = status.generation;
            if status.recent.len() == RECENT_PATTERNS {
                status.recent.remove(0);
            }
            status.recent.push((generation, pattern));
            status.last_decode = took;
            status.preview = None;
        }
        self.settled = Some(point.clone());
        status.settled = Some(point);
        drop(status);
        self.shared.settled.notify_all();
    }

    fn load_midi(&mut self, slot: usize, path: &Path, window: usize) {
        if slot >= SLOT_COUNT {
            self.report(format!("there is no corner {slot}; use 0..{SLOT_COUNT}"));
            return;
        }
        let Some(engine) = &self.engine else {
            self.report("no model is loaded, so the file cannot be encoded".to_string());
            return;
        };
        match engine.encode_file(path, window) {
            Ok(encoded) => self.controls.set_slot(slot, encoded),
            Err(e) => self.report(format!(
                "could not load {} into corner {}: {e:#}; the corner is unchanged",
                path.display(),
                SLOT_NAMES[slot]
            )),
        }
    }
}

impl Worker {
    fn export(&mut self, path: &Path, bars: u32, tempo_bpm: f64, settings: Settings) {
        let Some(engine) = &self.engine else {
            self.report("no model is loaded, so nothing can be exported".to_string());
            return;
        };
        let point = self.controls.point();
        let opts = RenderOptions {
            tempo_bpm,
            bars,
            sample_rate: 48_000.0,
            block_size: 512,
            morph_x: Automation::constant(point.x),
            morph_y: Automation::constant(point.y),
            point,
            settings,
        };
        let written = render::render(engine, &opts).and_then(|r| {
            crate::atomic_file::write(path, &render::to_midi(&r, &opts, 960))
                .map_err(anyhow::Error::from)
        });
        self.report(match written {
            Ok(()) => format!("exported {bars} bars to {}", path.display()),
            Err(e) => format!("could not export to {}: {e:#}", path.display()),
        });
    }
}

fn device_name(device: &Device) -> &'static str {
    if device.is_cpu() { "cpu" } else { "cuda" }
}
