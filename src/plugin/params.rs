//! The plugin's parameters and persisted fields. Values are read by the AUDIO THREAD (shaping, every
//! block) and the WORKER THREAD (morph point); the host writes them. The string ids are the
//! parameters' identity in saved sessions and automation lanes: never change or reuse one
//! (`tests/plugin_clap.rs` pins them).

use super::session_edits::{SessionEdits, session_edits_param};
use crate::generator::{Automated, Controls, Cue, Point, Slot, Slots};
use crate::groove::{DEFAULT_OUTPUT_PITCHES, VOICES};
use crate::sequencer::{MAX_NOTE_LENGTH_STEPS, MAX_TIMING_AMOUNT, Settings, SwitchAt};
use nice_plug::prelude::*;
use parking_lot::RwLock;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

/// Default editor size, logical pixels.
pub const EDITOR_SIZE: (u32, u32) = (1060, 700);

/// Range of the sampling seed parameter.
pub const MAX_SEED: i32 = 9_999;
/// Largest hit-logit bias either way.
pub const MAX_DENSITY: f32 = 4.0;
/// Largest sampling temperature.
pub const MAX_TEMPERATURE: f32 = 2.0;

/// `switch at` as a host-visible choice.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchParam {
    #[id = "bar"]
    #[name = "Next bar"]
    NextBar,
    #[id = "beat"]
    #[name = "Next beat"]
    NextBeat,
    #[id = "now"]
    #[name = "Immediately"]
    Immediately,
}

impl From<SwitchParam> for SwitchAt {
    fn from(p: SwitchParam) -> SwitchAt {
        match p {
            SwitchParam::NextBar => SwitchAt::NextBar,
            SwitchParam::NextBeat => SwitchAt::NextBeat,
            SwitchParam::Immediately => SwitchAt::Immediately,
        }
    }
}

/// Everything the host automates and saves.
#[derive(Params)]
pub struct DrumVaeParams {
    /// The four morph corners (seeds, styles, encoded MIDI files), saved with the session.
    #[persist = "slots"]
    pub slots: Arc<RwLock<Slots>>,
    /// The user's model file; `None` = the embedded model. A path that fails to load is kept (so
    /// the session still names it) and the embedded model plays; the worker reports why.
    #[persist = "model"]
    pub model_path: Arc<RwLock<Option<PathBuf>>>,
    /// The corner selected in the editor.
    #[persist = "selected-slot"]
    pub selected_slot: Arc<AtomicUsize>,
    /// The editor's size (logical pixels), restored when it opens again.
    #[persist = "editor-size"]
    pub editor_size: Arc<RwLock<(u32, u32)>>,
    /// The corner being auditioned alone (0..4), or -1: the editor's "solo" button. Not saved:
    /// a session always reopens on the pad position.
    pub audition: Arc<AtomicI32>,
    /// Edits of the persisted fields above (corners, model, selected corner), counted by whoever
    /// makes them, for the editor to report to the host through `session_edits` (see
    /// `plugin::session_edits`). Not saved.
    pub field_edits: Arc<SessionEdits>,

    #[id = "mx"]
    pub morph_x: FloatParam,
    #[id = "my"]
    pub morph_y: FloatParam,
    #[id = "temp"]
    pub temperature: FloatParam,
    #[id = "dens"]
    pub density: FloatParam,
    #[id = "seed"]
    pub seed: IntParam,
    #[id = "dyn"]
    pub dynamics: FloatParam,
    #[id = "timing"]
    pub timing: FloatParam,
    #[id = "swing"]
    pub swing: FloatParam,
    #[id = "len"]
    pub note_length: FloatParam,
    #[id = "barofs"]
    pub bar_offset: IntParam,
    #[id = "switch"]
    pub switch_at: EnumParam<SwitchParam>,
    #[id = "chan"]
    pub channel: IntParam,

    #[id = "mute_kick"]
    pub mute_kick: BoolParam,
    #[id = "mute_snare"]
    pub mute_snare: BoolParam,
    #[id = "mute_chh"]
    pub mute_closed_hat: BoolParam,
    #[id = "mute_ohh"]
    pub mute_open_hat: BoolParam,
    #[id = "mute_ltom"]
    pub mute_low_tom: BoolParam,
    #[id = "mute_mtom"]
    pub mute_mid_tom: BoolParam,
    #[id = "mute_htom"]
    pub mute_high_tom: BoolParam,
    #[id = "mute_crash"]
    pub mute_crash: BoolParam,
    #[id = "mute_ride"]
    pub mute_ride: BoolParam,

    #[id = "key_kick"]
    pub key_kick: IntParam,
    #[id = "key_snare"]
    pub key_snare: IntParam,
    #[id = "key_chh"]
    pub key_closed_hat: IntParam,
    #[id = "key_ohh"]
    pub key_open_hat: IntParam,
    #[id = "key_ltom"]
    pub key_low_tom: IntParam,
    #[id = "key_mtom"]
    pub key_mid_tom: IntParam,
    #[id = "key_htom"]
    pub key_high_tom: IntParam,
    #[id = "key_crash"]
    pub key_crash: IntParam,
    #[id = "key_ride"]
    pub key_ride: IntParam,

    /// Hidden and not automatable: the editor changes it when a persisted field changed, so the
    /// host sees an edit and knows the session needs saving (`plugin::session_edits`).
    #[id = "edits"]
    pub session_edits: IntParam,
}

/// Voice names as the host shows them, in model order.
const VOICE_LABELS: [&str; VOICES] = [
    "Kick",
    "Snare",
    "Closed hi-hat",
    "Open hi-hat",
    "Low tom",
    "Mid tom",
    "High tom",
    "Crash",
    "Ride",
];

fn unit(name: &str, default: f32) -> FloatParam {
    FloatParam::new(name, default, FloatRange::Linear { min: 0.0, max: 1.0 })
        .with_value_to_string(formatters::v2s_f32_percentage(0))
        .with_string_to_value(formatters::s2v_f32_percentage())
        .with_unit("%")
}

fn mute(voice: usize) -> BoolParam {
    BoolParam::new(format!("Mute {}", VOICE_LABELS[voice]), false)
}

fn key(voice: usize) -> IntParam {
    IntParam::new(
        format!("{} note", VOICE_LABELS[voice]),
        i32::from(DEFAULT_OUTPUT_PITCHES[voice]),
        IntRange::Linear { min: 0, max: 127 },
    )
    .with_value_to_string(formatters::v2s_i32_key_formatter())
    .with_string_to_value(formatters::s2v_i32_key_formatter())
}

impl Default for DrumVaeParams {
    fn default() -> Self {
        DrumVaeParams {
            slots: Arc::new(RwLock::new(Slots::default())),
            model_path: Arc::new(RwLock::new(None)),
            selected_slot: Arc::new(AtomicUsize::new(0)),
            editor_size: Arc::new(RwLock::new(EDITOR_SIZE)),
            audition: Arc::new(AtomicI32::new(-1)),
            field_edits: Arc::new(SessionEdits::default()),
            morph_x: unit("Morph X", 0.0),
            morph_y: unit("Morph Y", 0.0),
            temperature: FloatParam::new(
                "Temperature",
                0.0,
                FloatRange::Linear {
                    min: 0.0,
                    max: MAX_TEMPERATURE,
                },
            )
            .with_step_size(0.01),
            density: FloatParam::new(
                "Density",
                0.0,
                FloatRange::Linear {
                    min: -MAX_DENSITY,
                    max: MAX_DENSITY,
                },
            )
            .with_step_size(0.01),
            seed: IntParam::new(
                "Seed",
                0,
                IntRange::Linear {
                    min: 0,
                    max: MAX_SEED,
                },
            ),
            dynamics: FloatParam::new("Dynamics", 1.0, FloatRange::Linear { min: 0.0, max: 2.0 })
                .with_value_to_string(formatters::v2s_f32_percentage(0))
                .with_string_to_value(formatters::s2v_f32_percentage())
                .with_unit("%"),
            timing: FloatParam::new(
                "Timing",
                1.0,
                FloatRange::Linear {
                    min: 0.0,
                    max: MAX_TIMING_AMOUNT,
                },
            )
            .with_value_to_string(formatters::v2s_f32_percentage(0))
            .with_string_to_value(formatters::s2v_f32_percentage())
            .with_unit("%"),
            swing: unit("Swing", 0.0),
            note_length: FloatParam::new(
                "Note length",
                1.0,
                FloatRange::Skewed {
                    min: 0.25,
                    max: MAX_NOTE_LENGTH_STEPS,
                    factor: FloatRange::skew_factor(-2.0),
                },
            )
            .with_step_size(0.01)
            .with_unit(" steps"),
            bar_offset: IntParam::new("Bar offset", 0, IntRange::Linear { min: 0, max: 3 })
                .with_unit(" bars"),
            switch_at: EnumParam::new("Switch at", SwitchParam::NextBar),
            channel: IntParam::new("MIDI channel", 10, IntRange::Linear { min: 1, max: 16 }),
            mute_kick: mute(0),
            mute_snare: mute(1),
            mute_closed_hat: mute(2),
            mute_open_hat: mute(3),
            mute_low_tom: mute(4),
            mute_mid_tom: mute(5),
            mute_high_tom: mute(6),
            mute_crash: mute(7),
            mute_ride: mute(8),
            key_kick: key(0),
            key_snare: key(1),
            key_closed_hat: key(2),
            key_open_hat: key(3),
            key_low_tom: key(4),
            key_mid_tom: key(5),
            key_high_tom: key(6),
            key_crash: key(7),
            key_ride: key(8),
            session_edits: session_edits_param(),
        }
    }
}

impl DrumVaeParams {
    /// The per-voice mute parameters, in model order.
    pub fn mute_params(&self) -> [&BoolParam; VOICES] {
        [
            &self.mute_kick,
            &self.mute_snare,
            &self.mute_closed_hat,
            &self.mute_open_hat,
            &self.mute_low_tom,
            &self.mute_mid_tom,
            &self.mute_high_tom,
            &self.mute_crash,
            &self.mute_ride,
        ]
    }

    /// The per-voice note parameters, in model order.
    pub fn key_params(&self) -> [&IntParam; VOICES] {
        [
            &self.key_kick,
            &self.key_snare,
            &self.key_closed_hat,
            &self.key_open_hat,
            &self.key_low_tom,
            &self.key_mid_tom,
            &self.key_high_tom,
            &self.key_crash,
            &self.key_ride,
        ]
    }

    /// How the sequencer plays, from the current values. Called on the audio thread every block:
    /// atomics only, no allocation.
    pub fn settings(&self) -> Settings {
        Settings {
            // Saturating: a hand-edited session can restore any i32 (i32::MIN - 1 overflows).
            channel: self.channel.value().saturating_sub(1).clamp(0, 15) as u8,
            pitches: self.key_params().map(|k| k.value().clamp(0, 127) as u8),
            timing_amount: self.timing.value(),
            swing: self.swing.value(),
            velocity_scale: self.dynamics.value(),
            note_length_steps: self.note_length.value(),
            mutes: self.mute_params().map(|m| m.value()),
            bar_offset: self.bar_offset.value(),
            switch_at: self.switch_at.value().into(),
        }
    }

    /// The morph point's automatable part from the current values: the pad position (or the
    /// auditioned corner's), temperature, density, seed. Atomics only, no allocation: the audio
    /// thread reads it every block for the worker's cue.
    pub fn automated(&self) -> Automated {
        // Auditioning a corner plays it alone: the pad position of that corner.
        let (x, y) = match self.audition.load(Ordering::Relaxed) {
            corner @ 0..=3 => ((corner % 2) as f32, (corner / 2) as f32),
            _ => (self.morph_x.value(), self.morph_y.value()),
        };
        Automated {
            x,
            y,
            temperature: self.temperature.value(),
            density: self.density.value(),
            seed: self.seed.value().max(0) as u64,
        }
    }
}

/// The worker's view of the parameters, and of the audio thread's cue (the plugin's [`Player`]
/// writes the same one).
///
/// [`Player`]: super::player::Player
pub struct ParamControls {
    pub params: Arc<DrumVaeParams>,
    pub cue: Arc<Cue>,
}

impl Controls for ParamControls {
    fn point(&self) -> Point {
        self.params
            .automated()
            .point(self.params.slots.read().clone())
    }

    fn model_path(&self) -> Option<PathBuf> {
        self.params.model_path.read().clone()
    }

    fn set_slot(&self, index: usize, slot: Slot) {
        if let Some(s) = self.params.slots.write().0.get_mut(index) {
            *s = slot;
            self.params.field_edits.note();
        }
    }

    fn cue(&self) -> Option<&Cue> {
        Some(&self.cue)
    }
}
