//! A small CLAP host for the plugin's integration tests, built on `clack-host`.
//!
//! It loads the plugin binary (the cdylib `target/<profile>/libdrumvae.so` or a bundled
//! `.clap`) through its `clap_entry`, instantiates the first plugin of its factory on the calling
//! thread (which becomes the CLAP *main thread*), and drives `process()` on a separate *audio
//! thread* it spawns on activation.
//!
//! * [`PluginUnderTest`] owns the instance and offers the main-thread calls: descriptor,
//!   parameters (info, value, `flush` while inactive), state save/load, port queries, and
//!   [`PluginUnderTest::pump_main_thread`] for `request_callback`.
//! * [`PluginUnderTest::activate`] returns an [`AudioThread`]: [`AudioThread::run`] sends
//!   [`Block`]s to the audio thread, which runs one `process()` per block and returns the
//!   decoded output [`Note`]s per block. Dropping it (or [`AudioThread::stop`]) stops processing
//!   on the audio thread and deactivates on the main thread.
//! * Everything the plugin asks of the host (log, restart/process/callback requests, parameter
//!   rescans, state dirty marks, ...) is recorded in [`HostEvents`], together with host-side
//!   [`HostEvents::violations`] (main-thread callbacks from the wrong thread, unsorted or
//!   out-of-block output events, malformed note events).
//! * GUI: the host implements `clap_host_gui`; [`PluginUnderTest`] has the `gui_*` calls of the
//!   plugin's gui extension and [`PluginUnderTest::open_editor_x11`] /
//!   [`PluginUnderTest::close_editor`] for the whole embedding sequence. [`X11Host`] is the host's
//!   X11 connection (to a private Xvfb: `tests/support/xvfb.rs`) and [`X11ParentWindow`] the
//!   window the editor is embedded in (it can also read its pixels back).
//!
//! Parameter values are CLAP *plain* values: use the `min`/`max` from [`ParamInfo`].
#![allow(dead_code)]

use std::ffi::{CStr, CString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use clack_extensions::audio_ports::{
    AudioPortInfoBuffer, AudioPortRescanFlags, HostAudioPorts, HostAudioPortsImpl, PluginAudioPorts,
};
use clack_extensions::gui::{
    GuiApiType, GuiConfiguration, GuiSize, HostGui, HostGuiImpl, PluginGui, Window as GuiWindow,
};
use clack_extensions::latency::{HostLatency, HostLatencyImpl};
use clack_extensions::log::{HostLog, HostLogImpl, LogSeverity};
use clack_extensions::note_ports::{
    HostNotePorts, HostNotePortsImpl, NoteDialect, NoteDialects, NotePortInfoBuffer,
    NotePortRescanFlags, PluginNotePorts,
};
use clack_extensions::params::{
    HostParams, HostParamsImplMainThread, HostParamsImplShared, ParamClearFlags, ParamInfoBuffer,
    ParamInfoFlags, ParamRescanFlags, PluginParams,
};
use clack_extensions::state::{HostState, HostStateImpl, PluginState};
use clack_extensions::thread_check::{HostThreadCheck, HostThreadCheckImpl};
use clack_host::events::event_types::{ParamValueEvent, TransportEvent, TransportFlags};
use clack_host::events::spaces::CoreEventSpace;
use clack_host::events::{EventFlags, Match};
use clack_host::prelude::*;
use clack_host::utils::{BeatTime, FixedPoint, SecondsTime};
use x11rb::connection::Connection as _;
use x11rb::protocol::xproto::{
    ConfigureWindowAux, ConnectionExt as _, CreateWindowAux, ImageFormat, MapState, WindowClass,
};
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;

/// Sample value the output audio buffers are filled with before every `process()` call, so
/// [`AudioThread::peak_output`] shows whether the plugin really writes (silent) output.
pub const OUTPUT_SENTINEL: f32 = 1.0;

/// How long [`AudioThread`] waits for the audio thread between two main-thread pumps.
const PUMP_INTERVAL: Duration = Duration::from_millis(1);

// ---------------------------------------------------------------------------------------------
// Public data types
// ---------------------------------------------------------------------------------------------

/// The plugin's factory descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub id: String,
    pub name: String,
    pub vendor: String,
    pub version: String,
    pub description: String,
    pub features: Vec<String>,
}

/// One parameter, as reported by the params extension (plain CLAP values).
#[derive(Clone, Debug, PartialEq)]
pub struct ParamInfo {
    pub id: u32,
    pub name: String,
    pub module: String,
    pub min: f64,
    pub max: f64,
    pub default: f64,
    /// Raw `CLAP_PARAM_*` flags.
    pub flags: u32,
    pub stepped: bool,
    pub automatable: bool,
    pub hidden: bool,
    pub read_only: bool,
    pub bypass: bool,
}

/// One note port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotePort {
    pub id: u32,
    pub name: String,
    pub supports_clap: bool,
    pub supports_midi: bool,
    /// `"clap"`, `"midi"`, `"midi-mpe"`, `"midi2"` or `"none"`.
    pub preferred_dialect: &'static str,
}

/// One audio port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioPort {
    pub id: u32,
    pub name: String,
    pub channels: u32,
    pub is_main: bool,
}

/// Transport state for one block, turned into the `clap_event_transport` of `process()`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TransportInfo {
    pub playing: bool,
    pub tempo_bpm: f64,
    /// Song position at the block's first sample, in quarter notes. `None`: no beats timeline
    /// (`HAS_BEATS_TIMELINE` unset, position, bar start and bar number zero).
    pub pos_beats: Option<f64>,
    /// Song position in seconds; `None`: `HAS_SECONDS_TIMELINE` unset.
    pub pos_seconds: Option<f64>,
    pub loop_active: bool,
    /// Loop start and end in quarter notes (sent whether or not the loop is active).
    pub loop_range_beats: Option<(f64, f64)>,
    /// Numerator and denominator; bar start and bar number are derived from it.
    pub time_signature: (u16, u16),
}

impl Default for TransportInfo {
    fn default() -> Self {
        Self {
            playing: false,
            tempo_bpm: 120.0,
            pos_beats: Some(0.0),
            pos_seconds: None,
            loop_active: false,
            loop_range_beats: None,
            time_signature: (4, 4),
        }
    }
}

impl TransportInfo {
    /// A playing transport at `tempo_bpm`, at `pos_beats` quarter notes, in 4/4.
    pub fn playing(tempo_bpm: f64, pos_beats: f64) -> Self {
        Self {
            playing: true,
            tempo_bpm,
            pos_beats: Some(pos_beats),
            ..Self::default()
        }
    }

    /// A stopped transport at `tempo_bpm`, at `pos_beats` quarter notes, in 4/4.
    pub fn stopped(tempo_bpm: f64, pos_beats: f64) -> Self {
        Self {
            playing: false,
            ..Self::playing(tempo_bpm, pos_beats)
        }
    }

    /// The CLAP transport event for this state.
    pub fn to_event(self) -> TransportEvent {
        let (numerator, denominator) = self.time_signature;
        assert!(
            numerator > 0 && denominator > 0,
            "invalid time signature {numerator}/{denominator}"
        );
        let mut flags = TransportFlags::HAS_TEMPO | TransportFlags::HAS_TIME_SIGNATURE;
        if self.playing {
            flags |= TransportFlags::IS_PLAYING;
        }
        if self.loop_active {
            flags |= TransportFlags::IS_LOOP_ACTIVE;
        }

        let (song_pos_beats, bar_start, bar_number) = match self.pos_beats {
            Some(pos) => {
                flags |= TransportFlags::HAS_BEATS_TIMELINE;
                // Everything in fixed point, so bar start and position agree exactly.
                let pos = BeatTime::from_float(pos);
                let bar_len =
                    BeatTime::from_float(f64::from(numerator) * 4.0 / f64::from(denominator))
                        .to_bits();
                let bar = pos.to_bits().div_euclid(bar_len);
                let bar_number = i32::try_from(bar).expect("bar number overflows i32");
                (pos, BeatTime::from_bits(bar * bar_len), bar_number)
            }
            None => (BeatTime::default(), BeatTime::default(), 0),
        };
        let song_pos_seconds = match self.pos_seconds {
            Some(seconds) => {
                flags |= TransportFlags::HAS_SECONDS_TIMELINE;
                SecondsTime::from_float(seconds)
            }
            None => SecondsTime::default(),
        };
        let (loop_start_beats, loop_end_beats) = match self.loop_range_beats {
            Some((start, end)) => (BeatTime::from_float(start), BeatTime::from_float(end)),
            None => (BeatTime::default(), BeatTime::default()),
        };

        TransportEvent {
            header: EventHeader::new_core(0, EventFlags::empty()),
            flags,
            song_pos_beats,
            song_pos_seconds,
            tempo: self.tempo_bpm,
            tempo_inc: 0.0,
            loop_start_beats,
            loop_end_beats,
            loop_start_seconds: FixedPoint::default(),
            loop_end_seconds: FixedPoint::default(),
            bar_start,
            bar_number,
            time_signature_numerator: numerator,
            time_signature_denominator: denominator,
        }
    }
}

/// One `process()` call.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Block {
    /// The call's frame count (1..=max_frames of the activation).
    pub frames: u32,
    /// `None`: no transport (`process.transport` is null).
    pub transport: Option<TransportInfo>,
    /// Parameter changes in the block: (param id, sample offset, plain value). Sent as input
    /// `ParamValue` events, sorted by offset (stable for equal offsets).
    pub params: Vec<(u32, u32, f64)>,
}

impl Block {
    /// A block without transport or parameter changes.
    pub fn free(frames: u32) -> Self {
        Self {
            frames,
            ..Self::default()
        }
    }

    /// A block with the given transport.
    pub fn with_transport(frames: u32, transport: TransportInfo) -> Self {
        Self {
            frames,
            transport: Some(transport),
            params: Vec::new(),
        }
    }
}

/// `count` consecutive blocks of `frames` frames with a playing 4/4 transport at `tempo_bpm`,
/// starting at `start_beats` quarter notes; each block's position is
/// `start_beats + samples_so_far * tempo / (60 * sample_rate)`.
pub fn playing_blocks(
    count: usize,
    frames: u32,
    sample_rate: f64,
    tempo_bpm: f64,
    start_beats: f64,
) -> Vec<Block> {
    let beats_per_sample = tempo_bpm / 60.0 / sample_rate;
    (0..count)
        .map(|i| {
            let samples = i as f64 * f64::from(frames);
            Block::with_transport(
                frames,
                TransportInfo::playing(tempo_bpm, start_beats + samples * beats_per_sample),
            )
        })
        .collect()
}

/// How an output note event was encoded by the plugin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NoteSource {
    /// `CLAP_EVENT_NOTE_ON` / `CLAP_EVENT_NOTE_OFF`.
    Clap,
    /// `CLAP_EVENT_MIDI` with a 0x9n / 0x8n status (note-on with velocity 0 is an off).
    Midi,
}

/// A decoded output note-on or note-off.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Note {
    /// Sample offset in the block.
    pub sample: u32,
    pub on: bool,
    pub key: u8,
    pub channel: u8,
    /// 0..=1. For MIDI: data byte / 127 (note-on with velocity 0 gives an off with 0.0).
    pub velocity: f64,
    pub port: u16,
    pub source: NoteSource,
}

/// An output event that is not a note on/off (MIDI CC, choke, note end, param value, ...).
#[derive(Clone, Debug, PartialEq)]
pub struct OtherEvent {
    /// Index of the block since activation.
    pub block: u64,
    pub sample: u32,
    pub description: String,
}

/// One log message from the plugin (host log extension).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogMessage {
    pub severity: String,
    pub message: String,
    /// `"main"`, `"audio"` or the OS thread's name.
    pub thread: String,
}

impl fmt::Display for LogMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] ({}) {}", self.severity, self.thread, self.message)
    }
}

/// Everything the plugin asked of the host, plus host-side protocol violations.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostEvents {
    pub logs: Vec<LogMessage>,
    /// Protocol problems the host noticed (wrong thread, bad output events, ...).
    pub violations: Vec<String>,
    pub restart_requests: u32,
    pub process_requests: u32,
    pub callback_requests: u32,
    /// How many times the host called `on_main_thread()`.
    pub callbacks_run: u32,
    pub flush_requests: u32,
    /// Raw `CLAP_PARAM_RESCAN_*` flags of each `params.rescan`.
    pub param_rescans: Vec<u32>,
    /// (param id, raw `CLAP_PARAM_CLEAR_*` flags) of each `params.clear`.
    pub param_clears: Vec<(u32, u32)>,
    pub state_dirty_marks: u32,
    pub latency_changes: u32,
    pub audio_port_rescans: u32,
    pub note_port_rescans: u32,
    /// (width, height) of each `gui.request_resize` (the host accepts them all).
    pub gui_resize_requests: Vec<(u32, u32)>,
    pub gui_show_requests: u32,
    pub gui_hide_requests: u32,
    pub gui_resize_hints_changes: u32,
    /// `was_destroyed` of each `gui.closed`.
    pub gui_closed: Vec<bool>,
}

// ---------------------------------------------------------------------------------------------
// Host handlers
// ---------------------------------------------------------------------------------------------

static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The [`HostRecord::token`] of the plugin whose audio thread this is (0: none).
    static AUDIO_THREAD_OF: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Host state shared by all threads (behind an `Arc`, also held by the harness).
struct HostRecord {
    token: u64,
    main_thread: ThreadId,
    callback_pending: AtomicBool,
    flush_pending: AtomicBool,
    events: Mutex<HostEvents>,
}

impl HostRecord {
    fn new() -> Self {
        Self {
            token: NEXT_TOKEN.fetch_add(1, Ordering::Relaxed),
            main_thread: thread::current().id(),
            callback_pending: AtomicBool::new(false),
            flush_pending: AtomicBool::new(false),
            events: Mutex::new(HostEvents::default()),
        }
    }

    fn events(&self) -> MutexGuard<'_, HostEvents> {
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_main_thread(&self) -> bool {
        thread::current().id() == self.main_thread
    }

    fn is_audio_thread(&self) -> bool {
        AUDIO_THREAD_OF.with(|t| t.get()) == self.token
    }

    fn thread_name(&self) -> String {
        if self.is_main_thread() {
            "main".into()
        } else if self.is_audio_thread() {
            "audio".into()
        } else {
            thread::current().name().unwrap_or("unnamed").to_owned()
        }
    }

    fn violation(&self, message: String) {
        eprintln!("[clap host] violation: {message}");
        self.events().violations.push(message);
    }

    /// Records a main-thread-only host callback, checking the calling thread.
    fn main_thread_call(&self, what: &str, record: impl FnOnce(&mut HostEvents)) {
        if !self.is_main_thread() {
            self.violation(format!(
                "{what} called on thread {:?}, not the main thread",
                self.thread_name()
            ));
        }
        record(&mut self.events());
    }
}

struct TestHost;

struct HostShared {
    record: Arc<HostRecord>,
}

struct HostMain<'a> {
    shared: &'a HostShared,
}

impl HostHandlers for TestHost {
    type Shared<'a> = HostShared;
    type MainThread<'a> = HostMain<'a>;
    type AudioProcessor<'a> = ();

    fn declare_extensions(builder: &mut HostExtensions<Self>, _shared: &Self::Shared<'_>) {
        builder
            .register::<HostLog>()
            .register::<HostThreadCheck>()
            .register::<HostParams>()
            .register::<HostState>()
            .register::<HostAudioPorts>()
            .register::<HostNotePorts>()
            .register::<HostLatency>()
            .register::<HostGui>();
    }
}

impl SharedHandler<'_> for HostShared {
    fn request_restart(&self) {
        self.record.events().restart_requests += 1;
    }

    fn request_process(&self) {
        self.record.events().process_requests += 1;
    }

    fn request_callback(&self) {
        self.record.events().callback_requests += 1;
        self.record.callback_pending.store(true, Ordering::SeqCst);
    }
}

impl<'a> MainThreadHandler<'a> for HostMain<'a> {}

impl HostLogImpl for HostShared {
    fn log(&self, severity: LogSeverity, message: &str) {
        let message = LogMessage {
            severity: severity.to_string(),
            message: message.to_owned(),
            thread: self.record.thread_name(),
        };
        eprintln!("[clap plugin] {message}");
        self.record.events().logs.push(message);
    }
}

impl HostThreadCheckImpl for HostShared {
    fn is_main_thread(&self) -> bool {
        self.record.is_main_thread()
    }

    fn is_audio_thread(&self) -> bool {
        self.record.is_audio_thread()
    }
}

impl HostParamsImplShared for HostShared {
    fn request_flush(&self) {
        self.record.events().flush_requests += 1;
        self.record.flush_pending.store(true, Ordering::SeqCst);
    }
}

impl HostParamsImplMainThread for HostMain<'_> {
    fn rescan(&self, flags: ParamRescanFlags) {
        self.shared.record.main_thread_call("params.rescan", |e| {
            e.param_rescans.push(flags.bits());
        });
    }

    fn clear(&self, param_id: ClapId, flags: ParamClearFlags) {
        self.shared.record.main_thread_call("params.clear", |e| {
            e.param_clears.push((param_id.get(), flags.bits()));
        });
    }
}

impl HostStateImpl for HostMain<'_> {
    fn mark_dirty(&self) {
        self.shared
            .record
            .main_thread_call("state.mark_dirty", |e| e.state_dirty_marks += 1);
    }
}

impl HostLatencyImpl for HostMain<'_> {
    fn changed(&self) {
        self.shared
            .record
            .main_thread_call("latency.changed", |e| e.latency_changes += 1);
    }
}

// All `clap_host_gui` calls are [thread-safe] in the CLAP spec: no thread check.
impl HostGuiImpl for HostShared {
    fn resize_hints_changed(&self) {
        self.record.events().gui_resize_hints_changes += 1;
    }

    fn request_resize(&self, new_size: GuiSize) -> Result<(), HostError> {
        self.record
            .events()
            .gui_resize_requests
            .push((new_size.width, new_size.height));
        Ok(())
    }

    fn request_show(&self) -> Result<(), HostError> {
        self.record.events().gui_show_requests += 1;
        Ok(())
    }

    fn request_hide(&self) -> Result<(), HostError> {
        self.record.events().gui_hide_requests += 1;
        Ok(())
    }

    fn closed(&self, was_destroyed: bool) {
        self.record.events().gui_closed.push(was_destroyed);
    }
}

impl HostAudioPortsImpl for HostMain<'_> {
    fn is_rescan_flag_supported(&self, _flag: AudioPortRescanFlags) -> bool {
        true
    }

    fn rescan(&self, _flags: AudioPortRescanFlags) {
        self.shared
            .record
            .main_thread_call("audio_ports.rescan", |e| e.audio_port_rescans += 1);
    }
}

impl HostNotePortsImpl for HostMain<'_> {
    fn supported_dialects(&self) -> NoteDialects {
        NoteDialects::CLAP | NoteDialects::MIDI
    }

    fn rescan(&self, _flags: NotePortRescanFlags) {
        self.shared
            .record
            .main_thread_call("note_ports.rescan", |e| e.note_port_rescans += 1);
    }
}

// ---------------------------------------------------------------------------------------------
// Loading and main-thread calls
// ---------------------------------------------------------------------------------------------

/// Loaded entries stay loaded for the whole test process (like in a real host): no repeated
/// `init`/`deinit` and `dlopen`/`dlclose` between tests.
static ENTRIES: Mutex<Vec<(PathBuf, PluginEntry)>> = Mutex::new(Vec::new());

fn load_entry(path: &Path) -> Result<PluginEntry, String> {
    let path = path
        .canonicalize()
        .map_err(|e| format!("plugin binary {}: {e}", path.display()))?;
    let mut entries = ENTRIES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, entry)) = entries.iter().find(|(p, _)| *p == path) {
        return Ok(entry.clone());
    }
    // SAFETY: loading a plugin binary runs its initialisers and `clap_entry.init`; the file is
    // the plugin under test, which is what these tests are for.
    let entry = unsafe { PluginEntry::load(&path) }
        .map_err(|e| format!("loading clap_entry from {}: {e}", path.display()))?;
    entries.push((path, entry.clone()));
    Ok(entry)
}

/// The plugin binary the current test executable was built with: `target/<profile>/` holds
/// the test executable's `deps/` folder and the cdylib (`libdrumvae.so` on Linux).
pub fn plugin_library_path() -> PathBuf {
    let file = format!(
        "{}drumvae{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    // Test and bench executables live in target/<profile>/deps, beside the cdylib that cargo
    // builds for them. target/<profile>/libdrumvae.so is only refreshed by `cargo build`, so it
    // can be stale (or missing on a clean checkout): it is the fallback, not the first choice.
    if let Ok(exe) = std::env::current_exe()
        && let Some(deps) = exe.parent()
    {
        for candidate in [
            deps.join(&file),
            deps.parent().map(|p| p.join(&file)).unwrap_or_default(),
        ] {
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("debug")
        .join(file)
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn cstr(s: Option<&CStr>) -> String {
    s.map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A loaded, initialised plugin instance. Lives on (and must stay on) the thread that loaded
/// it: that thread is the CLAP main thread.
pub struct PluginUnderTest {
    // Field order: the instance goes before the entry it came from.
    instance: PluginInstance<TestHost>,
    entry: PluginEntry,
    record: Arc<HostRecord>,
    descriptor: Descriptor,
    params_ext: Option<PluginParams>,
    state_ext: Option<PluginState>,
    audio_ports_ext: Option<PluginAudioPorts>,
    note_ports_ext: Option<PluginNotePorts>,
    gui_ext: Option<PluginGui>,
    /// Between a successful `gui.create` and `gui.destroy`.
    gui_created: bool,
}

impl PluginUnderTest {
    /// Loads a plugin binary (a `.clap` or the cdylib), takes the first plugin descriptor of its
    /// factory, creates and initialises the instance on the calling thread.
    pub fn load(path: &Path) -> Result<Self, String> {
        let entry = load_entry(path)?;
        let factory = entry
            .get_plugin_factory()
            .ok_or_else(|| format!("{}: no CLAP plugin factory", path.display()))?;
        let count = factory.plugin_count();
        let raw_descriptor = factory
            .plugin_descriptor(0)
            .ok_or_else(|| format!("{}: factory lists {count} plugins", path.display()))?;
        let id: CString = raw_descriptor
            .id()
            .ok_or_else(|| format!("{}: plugin descriptor without an id", path.display()))?
            .to_owned();
        let descriptor = Descriptor {
            id: id.to_string_lossy().into_owned(),
            name: cstr(raw_descriptor.name()),
            vendor: cstr(raw_descriptor.vendor()),
            version: cstr(raw_descriptor.version()),
            description: cstr(raw_descriptor.description()),
            features: raw_descriptor
                .features()
                .map(|f| f.to_string_lossy().into_owned())
                .collect(),
        };

        let host_info = HostInfo::new(
            "DrumVAE test host",
            "DrumVAE",
            "https://example.invalid/drumvae",
            env!("CARGO_PKG_VERSION"),
        )
        .map_err(|e| format!("host info: {e}"))?;
        let record = Arc::new(HostRecord::new());
        let shared_record = Arc::clone(&record);
        let instance = PluginInstance::<TestHost>::new(
            move |_| HostShared {
                record: shared_record,
            },
            |shared| HostMain { shared },
            &entry,
            &id,
            &host_info,
        )
        .map_err(|e| format!("creating plugin {:?}: {e}", descriptor.id))?;

        let mut plugin = Self {
            instance,
            entry,
            record,
            descriptor,
            params_ext: None,
            state_ext: None,
            audio_ports_ext: None,
            note_ports_ext: None,
            gui_ext: None,
            gui_created: false,
        };
        let handle = plugin.instance.plugin_handle();
        let (params_ext, state_ext, audio_ports_ext, note_ports_ext, gui_ext) = (
            handle.get_extension(),
            handle.get_extension(),
            handle.get_extension(),
            handle.get_extension(),
            handle.get_extension(),
        );
        plugin.params_ext = params_ext;
        plugin.state_ext = state_ext;
        plugin.audio_ports_ext = audio_ports_ext;
        plugin.note_ports_ext = note_ports_ext;
        plugin.gui_ext = gui_ext;
        Ok(plugin)
    }

    /// The factory descriptor of the loaded plugin.
    pub fn descriptor(&self) -> Descriptor {
        self.descriptor.clone()
    }

    /// A snapshot of everything the plugin asked of the host so far.
    pub fn host_events(&self) -> HostEvents {
        self.record.events().clone()
    }

    /// The plugin's log messages so far.
    pub fn logs(&self) -> Vec<LogMessage> {
        self.record.events().logs.clone()
    }

    /// Host-side protocol violations noticed so far.
    pub fn violations(&self) -> Vec<String> {
        self.record.events().violations.clone()
    }

    pub fn is_active(&self) -> bool {
        self.instance.is_active()
    }

    fn params_ext(&self) -> PluginParams {
        self.params_ext
            .expect("the plugin does not implement the params extension")
    }

    /// All parameters, in the plugin's order.
    pub fn params(&mut self) -> Vec<ParamInfo> {
        let ext = self.params_ext();
        let handle = self.instance.plugin_handle();
        let mut buffer = ParamInfoBuffer::new();
        (0..ext.count(&handle))
            .map(|index| {
                let info = ext
                    .get_info(&handle, index, &mut buffer)
                    .unwrap_or_else(|| panic!("params.get_info({index}) failed"));
                ParamInfo {
                    id: info.id.get(),
                    name: lossy(info.name),
                    module: lossy(info.module),
                    min: info.min_value,
                    max: info.max_value,
                    default: info.default_value,
                    flags: info.flags.bits(),
                    stepped: info.flags.contains(ParamInfoFlags::IS_STEPPED),
                    automatable: info.flags.contains(ParamInfoFlags::IS_AUTOMATABLE),
                    hidden: info.flags.contains(ParamInfoFlags::IS_HIDDEN),
                    read_only: info.flags.contains(ParamInfoFlags::IS_READONLY),
                    bypass: info.flags.contains(ParamInfoFlags::IS_BYPASS),
                }
            })
            .collect()
    }

    /// The parameter with this name (panics if there is none).
    pub fn param_by_name(&mut self, name: &str) -> ParamInfo {
        let params = self.params();
        params
            .iter()
            .find(|p| p.name == name)
            .cloned()
            .unwrap_or_else(|| {
                let names: Vec<_> = params.iter().map(|p| p.name.as_str()).collect();
                panic!("no parameter named {name:?}; the plugin has {names:?}")
            })
    }

    /// A parameter's current plain value (`params.get_value`, main thread).
    pub fn param_value(&mut self, id: u32) -> f64 {
        let ext = self.params_ext();
        ext.get_value(&self.instance.plugin_handle(), ClapId::new(id))
            .unwrap_or_else(|| panic!("params.get_value({id}) failed"))
    }

    /// A value as text (`params.value_to_text`).
    pub fn param_value_text(&mut self, id: u32, value: f64) -> Option<String> {
        let ext = self.params_ext();
        let mut buffer = [0u8; 256];
        ext.value_to_text(
            &self.instance.plugin_handle(),
            ClapId::new(id),
            value,
            &mut buffer,
        )
        .ok()
        .map(|text| lossy(text))
    }

    /// Sets one parameter from the main thread while inactive (`params.flush` with one input
    /// `ParamValue` event). Panics while active: use [`AudioThread::flush_params`] or block
    /// parameter changes then.
    pub fn set_param_flush(&mut self, id: u32, value: f64) {
        self.flush_params(&[(id, value)]);
    }

    /// Several parameter changes in one inactive `params.flush`; returns the plugin's output
    /// events of that flush (descriptions).
    pub fn flush_params(&mut self, changes: &[(u32, f64)]) -> Vec<String> {
        let ext = self.params_ext();
        let mut input = EventBuffer::new();
        push_param_events(
            &mut input,
            changes.iter().map(|&(id, value)| (id, 0, value)),
        );
        let mut output = EventBuffer::new();
        let mut handle = self.instance.inactive_plugin_handle().expect(
            "set_param_flush/flush_params while the plugin is active: use AudioThread::flush_params \
             or Block::params",
        );
        ext.flush(&mut handle, &input.as_input(), &mut output.as_output());
        output.iter().map(describe_event).collect()
    }

    fn state_ext(&self) -> PluginState {
        self.state_ext
            .expect("the plugin does not implement the state extension")
    }

    /// `state.save` (main thread; allowed while active).
    pub fn try_save_state(&mut self) -> Result<Vec<u8>, String> {
        let ext = self.state_ext();
        let mut bytes = Vec::new();
        ext.save(&self.instance.plugin_handle(), &mut bytes)
            .map_err(|e| format!("state.save: {e}"))?;
        Ok(bytes)
    }

    /// `state.save`, panicking on failure.
    pub fn save_state(&mut self) -> Vec<u8> {
        self.try_save_state().unwrap_or_else(|e| panic!("{e}"))
    }

    /// `state.load` (main thread; allowed while active).
    pub fn load_state(&mut self, bytes: &[u8]) -> Result<(), String> {
        let ext = self.state_ext();
        let mut reader = bytes;
        ext.load(&self.instance.plugin_handle(), &mut reader)
            .map_err(|e| format!("state.load of {} bytes: {e}", bytes.len()))
    }

    fn audio_ports(&mut self, is_input: bool) -> Vec<AudioPort> {
        let Some(ext) = self.audio_ports_ext else {
            return Vec::new();
        };
        let handle = self.instance.plugin_handle();
        let mut buffer = AudioPortInfoBuffer::new();
        (0..ext.count(&handle, is_input))
            .map(|index| {
                let info = ext
                    .get(&handle, index, is_input, &mut buffer)
                    .unwrap_or_else(|| panic!("audio_ports.get({index}, {is_input}) failed"));
                AudioPort {
                    id: info.id.get(),
                    name: lossy(info.name),
                    channels: info.channel_count,
                    is_main: info
                        .flags
                        .contains(clack_extensions::audio_ports::AudioPortFlags::IS_MAIN),
                }
            })
            .collect()
    }

    /// The audio output ports (empty without the audio-ports extension).
    pub fn audio_output_port_info(&mut self) -> Vec<AudioPort> {
        self.audio_ports(false)
    }

    /// The audio input ports (empty without the audio-ports extension).
    pub fn audio_input_port_info(&mut self) -> Vec<AudioPort> {
        self.audio_ports(true)
    }

    /// Channel count of each audio output port.
    pub fn audio_output_ports(&mut self) -> Vec<u32> {
        self.audio_ports(false).iter().map(|p| p.channels).collect()
    }

    /// Channel count of each audio input port.
    pub fn audio_input_ports(&mut self) -> Vec<u32> {
        self.audio_ports(true).iter().map(|p| p.channels).collect()
    }

    /// The note ports of one direction (empty without the note-ports extension).
    pub fn note_ports(&mut self, is_input: bool) -> Vec<NotePort> {
        let Some(ext) = self.note_ports_ext else {
            return Vec::new();
        };
        let handle = self.instance.plugin_handle();
        let mut buffer = NotePortInfoBuffer::new();
        (0..ext.count(&handle, is_input))
            .map(|index| {
                let info = ext
                    .get(&handle, index, is_input, &mut buffer)
                    .unwrap_or_else(|| panic!("note_ports.get({index}, {is_input}) failed"));
                NotePort {
                    id: info.id.get(),
                    name: lossy(info.name),
                    supports_clap: info.supported_dialects.contains(NoteDialects::CLAP),
                    supports_midi: info.supported_dialects.contains(NoteDialects::MIDI),
                    preferred_dialect: match info.preferred_dialect {
                        Some(NoteDialect::Clap) => "clap",
                        Some(NoteDialect::Midi) => "midi",
                        Some(NoteDialect::MidiMpe) => "midi-mpe",
                        Some(NoteDialect::Midi2) => "midi2",
                        None => "none",
                    },
                }
            })
            .collect()
    }

    /// Number of note output ports.
    pub fn note_output_ports(&mut self) -> usize {
        self.note_ports(false).len()
    }

    /// Number of note input ports.
    pub fn note_input_ports(&mut self) -> usize {
        self.note_ports(true).len()
    }

    // -----------------------------------------------------------------------------------------
    // GUI (the plugin's `gui` extension; all main thread, allowed while active)

    /// Whether the plugin implements the gui extension.
    pub fn has_gui(&self) -> bool {
        self.gui_ext.is_some()
    }

    fn gui_ext(&self) -> PluginGui {
        self.gui_ext
            .expect("the plugin does not implement the gui extension")
    }

    /// `gui.is_api_supported` (`api`: `c"x11"`, `c"win32"`, `c"cocoa"`, `c"wayland"`).
    pub fn gui_is_api_supported(&mut self, api: &CStr, floating: bool) -> bool {
        let ext = self.gui_ext();
        ext.is_api_supported(
            &self.instance.plugin_handle(),
            GuiConfiguration {
                api_type: GuiApiType(api),
                is_floating: floating,
            },
        )
    }

    /// `gui.get_preferred_api`: (api, is_floating).
    pub fn gui_preferred_api(&mut self) -> Option<(String, bool)> {
        let ext = self.gui_ext();
        ext.get_preferred_api(&self.instance.plugin_handle())
            .map(|c| (c.api_type.0.to_string_lossy().into_owned(), c.is_floating))
    }

    /// Whether the GUI is created (between a successful [`Self::gui_create`] and
    /// [`Self::gui_destroy`]).
    pub fn gui_is_created(&self) -> bool {
        self.gui_created
    }

    /// `gui.create`.
    pub fn gui_create(&mut self, api: &CStr, floating: bool) -> Result<(), String> {
        let ext = self.gui_ext();
        ext.create(
            &self.instance.plugin_handle(),
            GuiConfiguration {
                api_type: GuiApiType(api),
                is_floating: floating,
            },
        )
        .map_err(|e| format!("gui.create({api:?}, floating {floating}): {e}"))?;
        self.gui_created = true;
        Ok(())
    }

    /// `gui.destroy`.
    pub fn gui_destroy(&mut self) {
        let ext = self.gui_ext();
        ext.destroy(&self.instance.plugin_handle());
        self.gui_created = false;
    }

    /// `gui.set_scale`.
    pub fn gui_set_scale(&mut self, scale: f64) -> Result<(), String> {
        let ext = self.gui_ext();
        ext.set_scale(&self.instance.plugin_handle(), scale)
            .map_err(|e| format!("gui.set_scale({scale}): {e}"))
    }

    /// `gui.get_size` (physical pixels for X11); `None` if the call fails or reports 0.
    pub fn gui_size(&mut self) -> Option<(u32, u32)> {
        let ext = self.gui_ext();
        ext.get_size(&self.instance.plugin_handle())
            .map(|s| (s.width, s.height))
    }

    /// `gui.can_resize`.
    pub fn gui_can_resize(&mut self) -> bool {
        let ext = self.gui_ext();
        ext.can_resize(&self.instance.plugin_handle())
    }

    /// `gui.set_size`.
    pub fn gui_set_size(&mut self, width: u32, height: u32) -> Result<(), String> {
        let ext = self.gui_ext();
        ext.set_size(&self.instance.plugin_handle(), GuiSize { width, height })
            .map_err(|e| format!("gui.set_size({width}, {height}): {e}"))
    }

    /// `gui.set_parent` with an X11 window id. An X11 window id is a server-side handle, not a
    /// pointer: a stale one makes the plugin's X11 requests fail, it cannot corrupt memory.
    pub fn gui_set_parent_x11(&mut self, window: u32) -> Result<(), String> {
        let ext = self.gui_ext();
        let parent = GuiWindow::from_x11_handle(std::ffi::c_ulong::from(window));
        // SAFETY: see above; the window handle is plain data for the X11 API.
        unsafe { ext.set_parent(&self.instance.plugin_handle(), parent) }
            .map_err(|e| format!("gui.set_parent(x11 window {window:#x}): {e}"))
    }

    /// `gui.show`.
    pub fn gui_show(&mut self) -> Result<(), String> {
        let ext = self.gui_ext();
        ext.show(&self.instance.plugin_handle())
            .map_err(|e| format!("gui.show: {e}"))
    }

    /// `gui.hide`.
    pub fn gui_hide(&mut self) -> Result<(), String> {
        let ext = self.gui_ext();
        ext.hide(&self.instance.plugin_handle())
            .map_err(|e| format!("gui.hide: {e}"))
    }

    /// Opens the editor embedded in `parent`, the way a host does: checks that embedded X11 is
    /// supported, `create("x11", embedded)`, `set_scale(scale)` (a plugin may refuse it: not an
    /// error), `get_size`, resizes `parent` to that size, `set_parent`, `show`; then services the
    /// main thread once. Returns the size `get_size` reported.
    pub fn open_editor_x11(
        &mut self,
        parent: &X11ParentWindow<'_>,
        scale: f64,
    ) -> Result<(u32, u32), String> {
        if !self.gui_is_api_supported(c"x11", false) {
            return Err("the plugin does not support embedded X11 GUIs".into());
        }
        self.gui_create(c"x11", false)?;
        let opened = (|| {
            let _ = self.gui_set_scale(scale);
            let size = self
                .gui_size()
                .ok_or_else(|| "gui.get_size failed after create".to_owned())?;
            parent.resize(size.0, size.1)?;
            self.gui_set_parent_x11(parent.id())?;
            self.gui_show()?;
            self.pump_main_thread();
            Ok(size)
        })();
        if opened.is_err() {
            self.gui_destroy();
        }
        opened
    }

    /// Closes an editor opened with [`Self::open_editor_x11`]: `hide`, `destroy`, then services
    /// the main thread.
    pub fn close_editor(&mut self) -> Result<(), String> {
        let hidden = self.gui_hide();
        self.gui_destroy();
        self.pump_main_thread();
        hidden
    }

    /// Services the plugin's pending main-thread requests: `on_main_thread()` after a
    /// `request_callback`, and (while inactive) an empty `params.flush` after a
    /// `request_flush`. Returns how many `on_main_thread()` calls it made.
    pub fn pump_main_thread(&mut self) -> u32 {
        let mut callbacks = 0;
        // A callback may request another one: loop, but boundedly.
        for _ in 0..16 {
            if !self.record.callback_pending.swap(false, Ordering::SeqCst) {
                break;
            }
            self.instance.call_on_main_thread_callback();
            callbacks += 1;
        }
        if callbacks > 0 {
            self.record.events().callbacks_run += callbacks;
        }
        if !self.instance.is_active()
            && self.params_ext.is_some()
            && self.record.flush_pending.swap(false, Ordering::SeqCst)
        {
            self.flush_params(&[]);
        }
        callbacks
    }

    /// Pumps the main thread for `duration` (e.g. to let background work land).
    pub fn idle(&mut self, duration: Duration) {
        let end = Instant::now() + duration;
        loop {
            self.pump_main_thread();
            let now = Instant::now();
            if now >= end {
                break;
            }
            thread::sleep(PUMP_INTERVAL.min(end - now));
        }
    }

    /// Activates (sample rate, 1..=max_frames frames per block) and starts processing on a new
    /// audio thread. Panics on failure; see [`Self::try_activate`].
    pub fn activate(&mut self, sample_rate: f64, max_frames: u32) -> AudioThread<'_> {
        self.try_activate(sample_rate, max_frames)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Activates and starts processing on a new audio thread.
    pub fn try_activate(
        &mut self,
        sample_rate: f64,
        max_frames: u32,
    ) -> Result<AudioThread<'_>, String> {
        assert!(max_frames >= 1, "max_frames must be at least 1");
        let input_channels = self.audio_input_ports();
        let output_channels = self.audio_output_ports();
        let params_ext = self.params_ext;
        let stopped = self
            .instance
            .activate(
                |_, _| (),
                PluginAudioConfiguration {
                    sample_rate,
                    min_frames_count: 1,
                    max_frames_count: max_frames,
                },
            )
            .map_err(|e| format!("activate({sample_rate}, 1, {max_frames}): {e}"))?;

        let (command_tx, command_rx) = mpsc::channel();
        let (reply_tx, reply_rx) = mpsc::channel();
        let worker = AudioWorker {
            record: Arc::clone(&self.record),
            params_ext,
            max_frames,
            input_channels,
            output_channels,
            commands: command_rx,
            replies: reply_tx,
            steady_time: 0,
            blocks: 0,
        };
        let join = thread::Builder::new()
            .name("clap-audio".into())
            .spawn(move || worker.run(stopped))
            .map_err(|e| format!("spawning the audio thread: {e}"))?;
        let mut audio = AudioThread {
            plugin: self,
            commands: command_tx,
            replies: reply_rx,
            join: Some(join),
            max_frames,
            sample_rate,
            peak_output: 0.0,
            other_events: Vec::new(),
            blocks_processed: 0,
        };
        match audio.wait_reply()? {
            Reply::Started(Ok(())) => Ok(audio),
            Reply::Started(Err(e)) => {
                // The worker has ended and hands the stopped processor back through `join`.
                audio.shutdown()?;
                Err(e)
            }
            _ => Err("unexpected first reply from the audio thread".into()),
        }
    }
}

impl Drop for PluginUnderTest {
    /// A host destroys the GUI before the instance (CLAP requires it).
    fn drop(&mut self) {
        if self.gui_created {
            self.gui_destroy();
        }
    }
}

/// Appends (param id, sample offset, value) changes as `ParamValue` events, sorted by offset.
fn push_param_events(buffer: &mut EventBuffer, changes: impl Iterator<Item = (u32, u32, f64)>) {
    let mut changes: Vec<_> = changes.collect();
    changes.sort_by_key(|&(_, offset, _)| offset);
    for (id, offset, value) in changes {
        buffer.push(&ParamValueEvent::new(
            offset,
            ClapId::new(id),
            Pckn::match_all(),
            value,
        ));
    }
}

fn describe_event(event: &UnknownEvent) -> String {
    match event.as_core_event() {
        Some(CoreEventSpace::ParamValue(e)) => format!(
            "ParamValue id={:?} value={}",
            e.param_id().map(ClapId::get),
            e.value()
        ),
        Some(CoreEventSpace::ParamGestureBegin(e)) => {
            format!("ParamGestureBegin id={:?}", e.param_id().map(ClapId::get))
        }
        Some(CoreEventSpace::ParamGestureEnd(e)) => {
            format!("ParamGestureEnd id={:?}", e.param_id().map(ClapId::get))
        }
        Some(CoreEventSpace::Midi(e)) => format!("Midi {:02x?}", e.data()),
        Some(other) => format!("{other:?}"),
        None => format!(
            "non-core event (space {}, type {})",
            event.header().as_raw().space_id,
            event.header().type_id()
        ),
    }
}

fn match_u8(value: Match<u16>) -> Option<u8> {
    value.into_specific().and_then(|v| u8::try_from(v).ok())
}

// ---------------------------------------------------------------------------------------------
// The audio thread
// ---------------------------------------------------------------------------------------------

enum Command {
    Run(Vec<Block>),
    Flush(Vec<(u32, f64)>),
    Stop,
}

struct RunOutput {
    notes: Vec<Vec<Note>>,
    other: Vec<OtherEvent>,
    peak: f32,
}

enum Reply {
    Started(Result<(), String>),
    Ran(Result<RunOutput, String>),
    Flushed(Vec<String>),
}

struct AudioWorker {
    record: Arc<HostRecord>,
    params_ext: Option<PluginParams>,
    max_frames: u32,
    input_channels: Vec<u32>,
    output_channels: Vec<u32>,
    commands: Receiver<Command>,
    replies: Sender<Reply>,
    steady_time: u64,
    blocks: u64,
}

type Stopped = StoppedPluginAudioProcessor<TestHost>;
type Started = StartedPluginAudioProcessor<TestHost>;

impl AudioWorker {
    /// The audio thread's body: start processing, serve commands, stop processing and hand the
    /// stopped processor back (through the join handle) for deactivation on the main thread.
    fn run(mut self, stopped: Stopped) -> Stopped {
        AUDIO_THREAD_OF.with(|t| t.set(self.record.token));
        let mut started = match stopped.start_processing() {
            Ok(started) => {
                let _ = self.replies.send(Reply::Started(Ok(())));
                started
            }
            Err(e) => {
                let _ = self
                    .replies
                    .send(Reply::Started(Err("start_processing() failed".into())));
                return e.into_stopped_processor();
            }
        };

        let frames = self.max_frames as usize;
        let mut inputs: Vec<Vec<Vec<f32>>> = self
            .input_channels
            .iter()
            .map(|&n| vec![vec![0.0; frames]; n as usize])
            .collect();
        let mut outputs: Vec<Vec<Vec<f32>>> = self
            .output_channels
            .iter()
            .map(|&n| vec![vec![OUTPUT_SENTINEL; frames]; n as usize])
            .collect();
        let total_in: usize = self.input_channels.iter().map(|&n| n as usize).sum();
        let total_out: usize = self.output_channels.iter().map(|&n| n as usize).sum();
        let mut input_ports = AudioPorts::with_capacity(total_in, inputs.len());
        let mut output_ports = AudioPorts::with_capacity(total_out, outputs.len());
        let mut input_events = EventBuffer::with_capacity(64);
        let mut output_events = EventBuffer::with_capacity(256);

        while let Ok(command) = self.commands.recv() {
            match command {
                Command::Run(blocks) => {
                    let result = self.process_blocks(
                        &mut started,
                        blocks,
                        &mut inputs,
                        &mut outputs,
                        &mut input_ports,
                        &mut output_ports,
                        &mut input_events,
                        &mut output_events,
                    );
                    if self.replies.send(Reply::Ran(result)).is_err() {
                        break;
                    }
                }
                Command::Flush(changes) => {
                    let described = match self.params_ext {
                        Some(ext) => {
                            input_events.clear();
                            push_param_events(
                                &mut input_events,
                                changes.iter().map(|&(id, v)| (id, 0, v)),
                            );
                            output_events.clear();
                            ext.flush_active(
                                &mut started.plugin_handle(),
                                &input_events.as_input(),
                                &mut output_events.as_output(),
                            );
                            output_events.iter().map(describe_event).collect()
                        }
                        None => vec!["no params extension".to_owned()],
                    };
                    if self.replies.send(Reply::Flushed(described)).is_err() {
                        break;
                    }
                }
                Command::Stop => break,
            }
        }
        started.stop_processing()
    }

    #[allow(clippy::too_many_arguments)]
    fn process_blocks(
        &mut self,
        started: &mut Started,
        blocks: Vec<Block>,
        inputs: &mut [Vec<Vec<f32>>],
        outputs: &mut [Vec<Vec<f32>>],
        input_ports: &mut AudioPorts,
        output_ports: &mut AudioPorts,
        input_events: &mut EventBuffer,
        output_events: &mut EventBuffer,
    ) -> Result<RunOutput, String> {
        let mut result = RunOutput {
            notes: Vec::with_capacity(blocks.len()),
            other: Vec::new(),
            peak: 0.0,
        };
        for block in blocks {
            let frames = block.frames as usize;
            input_events.clear();
            push_param_events(input_events, block.params.iter().copied());
            output_events.clear();
            for channel in outputs.iter_mut().flatten() {
                channel[..frames].fill(OUTPUT_SENTINEL);
            }
            let transport = block.transport.map(|t| t.to_event());

            let status = {
                let built_inputs = input_ports.with_input_buffers(inputs.iter_mut().map(|port| {
                    AudioPortBuffer {
                        latency: 0,
                        channels: AudioPortBufferType::f32_input_only(
                            port.iter_mut()
                                .map(|channel| InputChannel::constant(&mut channel[..frames])),
                        ),
                    }
                }));
                // Pin the frame count: with no (or channel-less) audio ports clack would derive
                // 0 frames from the buffers.
                // SAFETY: every channel buffer of every port has at least `frames` samples.
                let audio_inputs = unsafe {
                    InputAudioBuffers::from_raw_buffers(built_inputs.as_raw_buffers(), block.frames)
                };
                let built_outputs =
                    output_ports.with_output_buffers(outputs.iter_mut().map(|port| {
                        AudioPortBuffer {
                            latency: 0,
                            channels: AudioPortBufferType::f32_output_only(
                                port.iter_mut().map(|channel| &mut channel[..frames]),
                            ),
                        }
                    }));
                // SAFETY: as above, every output channel buffer has at least `frames` samples.
                let mut audio_outputs = unsafe {
                    OutputAudioBuffers::from_raw_buffers(
                        built_outputs.into_raw_buffers(),
                        block.frames,
                    )
                };
                started.process(
                    &audio_inputs,
                    &mut audio_outputs,
                    &input_events.as_input(),
                    &mut output_events.as_output(),
                    Some(self.steady_time),
                    transport.as_ref(),
                )
            };
            if let Err(e) = status {
                return Err(format!(
                    "process() failed on block {} (frames {}): {e}",
                    self.blocks, block.frames
                ));
            }

            for channel in outputs.iter().flatten() {
                for &sample in &channel[..frames] {
                    let magnitude = if sample.is_nan() {
                        f32::INFINITY
                    } else {
                        sample.abs()
                    };
                    result.peak = result.peak.max(magnitude);
                }
            }
            let decoded = decode_output_events(output_events, block.frames, self.blocks);
            for violation in decoded.violations {
                self.record.violation(violation);
            }
            result.other.extend(decoded.other);
            result.notes.push(decoded.notes);
            self.steady_time += u64::from(block.frames);
            self.blocks += 1;
        }
        Ok(result)
    }
}

/// Decoded output of one block: notes, other events and protocol violations.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DecodedBlock {
    pub notes: Vec<Note>,
    pub other: Vec<OtherEvent>,
    pub violations: Vec<String>,
}

/// Decodes one block's output events (`block` is the block index, for messages): CLAP
/// NoteOn/NoteOff and MIDI 0x9n/0x8n become [`Note`]s (MIDI note-on with velocity 0 is an
/// off); everything else goes to `other`. Events at or past `frames`, out-of-order events and
/// note events without a concrete port/channel/key are violations.
pub fn decode_output_events(events: &EventBuffer, frames: u32, block: u64) -> DecodedBlock {
    let mut out = DecodedBlock::default();
    let mut last_time = 0;
    for event in events.iter() {
        let time = event.header().time();
        if time >= frames {
            out.violations.push(format!(
                "block {block}: output event at sample {time} of a {frames}-frame block"
            ));
        }
        if time < last_time {
            out.violations.push(format!(
                "block {block}: output events out of order (sample {time} after {last_time})"
            ));
        }
        last_time = last_time.max(time);

        let clap_note = |on: bool, port, channel, key, velocity: f64| match (
            match_u8(key),
            match_u8(channel),
            port,
        ) {
            (Some(key), Some(channel), Match::Specific(port)) if key < 128 && channel < 16 => {
                Some(Note {
                    sample: time,
                    on,
                    key,
                    channel,
                    velocity,
                    port,
                    source: NoteSource::Clap,
                })
            }
            _ => None,
        };
        let note = match event.as_core_event() {
            Some(CoreEventSpace::NoteOn(e)) => {
                clap_note(true, e.port_index(), e.channel(), e.key(), e.velocity())
            }
            Some(CoreEventSpace::NoteOff(e)) => {
                clap_note(false, e.port_index(), e.channel(), e.key(), e.velocity())
            }
            Some(CoreEventSpace::Midi(e)) => {
                let [status, key, velocity] = e.data();
                let kind = status & 0xf0;
                if (kind == 0x90 || kind == 0x80) && key < 128 && velocity < 128 {
                    Some(Note {
                        sample: time,
                        on: kind == 0x90 && velocity > 0,
                        key,
                        channel: status & 0x0f,
                        velocity: f64::from(velocity) / 127.0,
                        port: e.port_index(),
                        source: NoteSource::Midi,
                    })
                } else {
                    None
                }
            }
            _ => None,
        };
        match note {
            Some(note) => out.notes.push(note),
            None => {
                let description = describe_event(event);
                if matches!(
                    event.as_core_event(),
                    Some(CoreEventSpace::NoteOn(_) | CoreEventSpace::NoteOff(_))
                ) {
                    out.violations.push(format!(
                        "block {block}: note event without a concrete port/channel/key: \
                         {description}"
                    ));
                }
                out.other.push(OtherEvent {
                    block,
                    sample: time,
                    description,
                });
            }
        }
    }
    out
}

/// The running audio side of an activated plugin. Borrows the [`PluginUnderTest`] mutably;
/// use [`AudioThread::plugin`] for main-thread calls (state, parameter values, ...) while
/// processing. Dropping it stops processing and deactivates.
pub struct AudioThread<'p> {
    plugin: &'p mut PluginUnderTest,
    commands: Sender<Command>,
    replies: Receiver<Reply>,
    join: Option<JoinHandle<Stopped>>,
    max_frames: u32,
    sample_rate: f64,
    peak_output: f32,
    other_events: Vec<OtherEvent>,
    blocks_processed: u64,
}

impl AudioThread<'_> {
    /// The plugin, for main-thread calls while active.
    pub fn plugin(&mut self) -> &mut PluginUnderTest {
        self.plugin
    }

    pub fn sample_rate(&self) -> f64 {
        self.sample_rate
    }

    pub fn max_frames(&self) -> u32 {
        self.max_frames
    }

    /// Activation never waits for the model, so a test or bench first lets the first pattern
    /// arrive: the host plays scratch passes (a stopped block, which hands a published pattern to
    /// the sequencer at once, then the 16 beats of a pattern from beat 0 at 120 BPM) until a
    /// note-on comes, then a stopped block, which ends every note. The caller's own timeline then
    /// starts from stopped with the pattern in place, as the sessions of a host that waited would.
    /// Panics if no note comes within `limit`; returns how long it took.
    pub fn wait_for_first_pattern(&mut self, limit: Duration) -> Duration {
        let began = Instant::now();
        let frames = self.max_frames().min(4096);
        let rate = self.sample_rate();
        let stopped = || Block::with_transport(64, TransportInfo::stopped(120.0, 0.0));
        let pass = (16.0 * 60.0 / 120.0 * rate / f64::from(frames)).ceil() as usize;
        loop {
            let mut blocks = vec![stopped()];
            blocks.extend(playing_blocks(pass, frames, rate, 120.0, 0.0));
            if self.run(blocks).iter().flatten().any(|n| n.on) {
                break;
            }
            assert!(
                began.elapsed() < limit,
                "no pattern played within {limit:?} of activation"
            );
            self.idle(Duration::from_millis(20));
        }
        self.run(vec![stopped()]);
        began.elapsed()
    }

    /// Blocks processed since activation (`steady_time` is the running sample count).
    pub fn blocks_processed(&self) -> u64 {
        self.blocks_processed
    }

    /// The largest |sample| the plugin left in any output buffer since activation (buffers are
    /// pre-filled with [`OUTPUT_SENTINEL`]; NaN counts as infinity). 0.0 for a plugin that
    /// writes silence.
    pub fn peak_output(&self) -> f32 {
        self.peak_output
    }

    /// Output events that were not note on/off, since activation.
    pub fn other_events(&self) -> &[OtherEvent] {
        &self.other_events
    }

    /// Waits for the audio thread's reply, servicing main-thread callbacks meanwhile (like a
    /// host's GUI thread does while audio runs).
    fn wait_reply(&mut self) -> Result<Reply, String> {
        loop {
            match self.replies.recv_timeout(PUMP_INTERVAL) {
                Ok(reply) => {
                    self.plugin.pump_main_thread();
                    return Ok(reply);
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.plugin.pump_main_thread();
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err("the audio thread ended unexpectedly (panicked?)".into());
                }
            }
        }
    }

    /// Runs one `process()` per block on the audio thread and returns each block's output notes,
    /// in order. Panics if the plugin reports a processing error.
    pub fn run(&mut self, blocks: Vec<Block>) -> Vec<Vec<Note>> {
        self.try_run(blocks).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Self::run`] returning processing errors.
    pub fn try_run(&mut self, blocks: Vec<Block>) -> Result<Vec<Vec<Note>>, String> {
        for (i, block) in blocks.iter().enumerate() {
            assert!(
                (1..=self.max_frames).contains(&block.frames),
                "block {i}: {} frames, activated for 1..={}",
                block.frames,
                self.max_frames
            );
            for &(id, offset, _) in &block.params {
                assert!(
                    offset < block.frames,
                    "block {i}: parameter {id} change at sample {offset} of {} frames",
                    block.frames
                );
            }
        }
        let count = blocks.len() as u64;
        self.commands
            .send(Command::Run(blocks))
            .map_err(|_| "the audio thread is gone".to_owned())?;
        match self.wait_reply()? {
            Reply::Ran(Ok(output)) => {
                self.blocks_processed += count;
                self.peak_output = self.peak_output.max(output.peak);
                self.other_events.extend(output.other);
                Ok(output.notes)
            }
            Reply::Ran(Err(e)) => Err(e),
            _ => Err("unexpected reply from the audio thread".into()),
        }
    }

    /// Runs a single block.
    pub fn run_block(&mut self, block: Block) -> Vec<Note> {
        self.run(vec![block]).pop().unwrap_or_default()
    }

    /// `params.flush` on the audio thread while active but between `process()` calls; returns
    /// descriptions of the plugin's output events.
    pub fn flush_params(&mut self, changes: &[(u32, f64)]) -> Vec<String> {
        self.commands
            .send(Command::Flush(changes.to_vec()))
            .expect("the audio thread is gone");
        match self.wait_reply() {
            Ok(Reply::Flushed(events)) => events,
            Ok(_) => panic!("unexpected reply from the audio thread"),
            Err(e) => panic!("{e}"),
        }
    }

    /// Services pending main-thread callbacks now (the harness also does this while waiting for
    /// every [`Self::run`]). Returns the number of `on_main_thread()` calls.
    pub fn pump_main_thread(&mut self) -> u32 {
        self.plugin.pump_main_thread()
    }

    /// Pumps the main thread for `duration` without processing.
    pub fn idle(&mut self, duration: Duration) {
        self.plugin.idle(duration);
    }

    /// Stops processing (audio thread) and deactivates (main thread).
    pub fn stop(mut self) -> Result<(), String> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), String> {
        let Some(join) = self.join.take() else {
            return Ok(());
        };
        let _ = self.commands.send(Command::Stop);
        let stopped = join
            .join()
            .map_err(|_| "the audio thread panicked; the instance is leaked".to_owned())?;
        self.plugin.instance.deactivate(stopped);
        self.plugin.pump_main_thread();
        Ok(())
    }
}

impl Drop for AudioThread<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown()
            && !thread::panicking()
        {
            panic!("{e}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// X11: the host's connection and the window an editor is embedded in
// ---------------------------------------------------------------------------------------------

/// An RGB image read back from an X11 window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    /// Row-major, 3 bytes a pixel.
    pub rgb: Vec<u8>,
}

impl RgbImage {
    /// How many different colours the image has (1 for a flat fill).
    pub fn distinct_colours(&self) -> usize {
        let mut colours: Vec<[u8; 3]> = self
            .rgb
            .chunks_exact(3)
            .map(|c| [c[0], c[1], c[2]])
            .collect();
        colours.sort_unstable();
        colours.dedup();
        colours.len()
    }
}

/// A child window of an [`X11ParentWindow`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct X11Child {
    pub id: u32,
    pub width: u32,
    pub height: u32,
    /// Mapped, with all its ancestors mapped.
    pub viewable: bool,
}

/// The host's X11 connection (for its parent windows).
pub struct X11Host {
    conn: RustConnection,
    screen: usize,
}

impl X11Host {
    /// Connects to `display` (`":N"`).
    pub fn connect(display: &str) -> Result<Self, String> {
        let (conn, screen) =
            x11rb::connect(Some(display)).map_err(|e| format!("connecting to {display}: {e}"))?;
        Ok(Self { conn, screen })
    }

    /// Creates and maps a top-level `width` x `height` window with a black background, for a
    /// plugin editor to embed in.
    pub fn create_parent(&self, width: u32, height: u32) -> Result<X11ParentWindow<'_>, String> {
        let x = |e: &dyn fmt::Display| format!("creating the parent window: {e}");
        let screen = &self.conn.setup().roots[self.screen];
        let id = self.conn.generate_id().map_err(|e| x(&e))?;
        self.conn
            .create_window(
                x11rb::COPY_DEPTH_FROM_PARENT,
                id,
                screen.root,
                0,
                0,
                dimension(width),
                dimension(height),
                0,
                WindowClass::INPUT_OUTPUT,
                x11rb::COPY_FROM_PARENT,
                &CreateWindowAux::new().background_pixel(screen.black_pixel),
            )
            .map_err(|e| x(&e))?
            .check()
            .map_err(|e| x(&e))?;
        let window = X11ParentWindow { host: self, id };
        self.conn
            .map_window(id)
            .map_err(|e| x(&e))?
            .check()
            .map_err(|e| x(&e))?;
        Ok(window)
    }
}

impl X11Host {
    /// The top-level windows on the server (the root window's children): the host's parent
    /// windows, and any window a plugin left at the top level.
    pub fn top_level_windows(&self) -> Result<Vec<u32>, String> {
        let root = self.conn.setup().roots[self.screen].root;
        let tree = self
            .conn
            .query_tree(root)
            .map_err(|e| e.to_string())?
            .reply()
            .map_err(|e| format!("listing the top-level windows: {e}"))?;
        Ok(tree.children)
    }
}

impl X11Host {
    /// Moves the pointer to (`x`, `y`) of the screen and clicks the left button there, as a user
    /// does: XTEST input, so the server delivers the events to whatever window is there (a
    /// parent window from [`Self::create_parent`] sits at the screen's origin). Pauses between
    /// the motion, the press and the release, so that a GUI drawing frames sees each.
    pub fn click(&self, x: i16, y: i16) -> Result<(), String> {
        use x11rb::protocol::xproto::{
            BUTTON_PRESS_EVENT, BUTTON_RELEASE_EVENT, MOTION_NOTIFY_EVENT,
        };
        use x11rb::protocol::xtest::ConnectionExt as _;
        let root = self.conn.setup().roots[self.screen].root;
        for (kind, button) in [
            (MOTION_NOTIFY_EVENT, 0),
            (BUTTON_PRESS_EVENT, 1),
            (BUTTON_RELEASE_EVENT, 1),
        ] {
            self.conn
                .xtest_fake_input(kind, button, 0, root, x, y, 0)
                .map_err(|e| e.to_string())?
                .check()
                .map_err(|e| format!("XTEST input at ({x}, {y}): {e}"))?;
            self.conn.sync().map_err(|e| e.to_string())?;
            thread::sleep(Duration::from_millis(40));
        }
        Ok(())
    }
}

fn dimension(pixels: u32) -> u16 {
    u16::try_from(pixels.clamp(1, u32::from(u16::MAX))).unwrap_or(u16::MAX)
}

/// A mapped top-level window of the host, destroyed when dropped. Drop it after the plugin's
/// `gui.destroy`, as a host closes the plugin's GUI before the window it embeds in.
pub struct X11ParentWindow<'c> {
    host: &'c X11Host,
    id: u32,
}

impl X11ParentWindow<'_> {
    /// The X11 window id (what `gui.set_parent` gets).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Resizes the window (as a host does to fit the plugin's `get_size`).
    pub fn resize(&self, width: u32, height: u32) -> Result<(), String> {
        let conn = &self.host.conn;
        conn.configure_window(
            self.id,
            &ConfigureWindowAux::new()
                .width(u32::from(dimension(width)))
                .height(u32::from(dimension(height))),
        )
        .map_err(|e| e.to_string())?
        .check()
        .map_err(|e| format!("resizing the parent window: {e}"))
    }

    /// The window's size on the server.
    pub fn size(&self) -> Result<(u32, u32), String> {
        let geometry = self
            .host
            .conn
            .get_geometry(self.id)
            .map_err(|e| e.to_string())?
            .reply()
            .map_err(|e| e.to_string())?;
        Ok((u32::from(geometry.width), u32::from(geometry.height)))
    }

    /// The direct children (the plugin's embedded window, once `set_parent` has reparented it).
    pub fn children(&self) -> Result<Vec<X11Child>, String> {
        let conn = &self.host.conn;
        let tree = conn
            .query_tree(self.id)
            .map_err(|e| e.to_string())?
            .reply()
            .map_err(|e| e.to_string())?;
        let mut children = Vec::new();
        for id in tree.children {
            // A child can vanish between the two requests: skip it then.
            let Ok(Ok(attributes)) = conn.get_window_attributes(id).map(|c| c.reply()) else {
                continue;
            };
            let Ok(Ok(geometry)) = conn.get_geometry(id).map(|c| c.reply()) else {
                continue;
            };
            children.push(X11Child {
                id,
                width: u32::from(geometry.width),
                height: u32::from(geometry.height),
                viewable: attributes.map_state == MapState::VIEWABLE,
            });
        }
        Ok(children)
    }

    /// What the window shows now, children included (Xvfb's framebuffer over its area).
    pub fn capture(&self) -> Result<RgbImage, String> {
        let (width, height) = self.size()?;
        self.capture_region(0, 0, width, height)
    }

    /// What the `width` x `height` area at (`x`, `y`) of the window shows now, children
    /// included (it must lie inside the window).
    pub fn capture_region(
        &self,
        x: u32,
        y: u32,
        width: u32,
        height: u32,
    ) -> Result<RgbImage, String> {
        let conn = &self.host.conn;
        let coordinate = |v: u32| i16::try_from(v).map_err(|_| format!("{v} is off the window"));
        let image = conn
            .get_image(
                ImageFormat::Z_PIXMAP,
                self.id,
                coordinate(x)?,
                coordinate(y)?,
                dimension(width),
                dimension(height),
                u32::MAX,
            )
            .map_err(|e| e.to_string())?
            .reply()
            .map_err(|e| format!("reading the parent window back: {e}"))?;
        if image.depth != 24 || image.data.len() != (width * height * 4) as usize {
            return Err(format!(
                "expected a 24-bit BGRX image of {width}x{height}, got depth {} and {} bytes",
                image.depth,
                image.data.len()
            ));
        }
        let rgb = image
            .data
            .chunks_exact(4)
            .flat_map(|px| [px[2], px[1], px[0]])
            .collect();
        Ok(RgbImage { width, height, rgb })
    }
}

impl Drop for X11ParentWindow<'_> {
    fn drop(&mut self) {
        let conn = &self.host.conn;
        if let Ok(cookie) = conn.destroy_window(self.id) {
            let _ = cookie.check();
        }
        let _ = conn.sync();
    }
}

/// Decodes a saved state: nice-plug's CLAP state is an 8-byte little-endian length, then that many
/// bytes of JSON: `{"version", "params": {string id: {"f32"|"i32"|"bool"|"string": value}},
/// "fields": {persist key: JSON text}}`. Panics (failing the test) on anything else.
pub fn parse_state(bytes: &[u8]) -> serde_json::Value {
    assert!(bytes.len() >= 8, "{bytes:?}");
    let length = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    assert_eq!(length as usize, bytes.len() - 8, "length header");
    serde_json::from_slice(&bytes[8..]).expect("the state is JSON")
}

/// Encodes a state in nice-plug's layout (see [`parse_state`]), for loading edited states.
pub fn write_state(state: &serde_json::Value) -> Vec<u8> {
    let json = serde_json::to_vec(state).unwrap();
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend(json);
    bytes
}
