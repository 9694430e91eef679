//! The AUDIO THREAD's part of the plugin apart from host types: takes the newest pattern from the
//! worker, runs the sequencer with the block's settings, cues the worker when the next switch
//! point comes within [`DECISION_LEAD`] (see `generator/cue.rs`), and tells the editor what is
//! playing through atomics ([`PlayState`]). Nothing here allocates, locks or blocks.

use crate::generator::{Automated, Cue, DECISION_LEAD, MIN_CUE_SPACING, PatternReceiver};
use crate::sequencer::{FALLBACK_SAMPLE_RATE, NoteEvent, Sequencer, Settings, Transport};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// What the audio thread last played, for the editor (relaxed atomics: a frame may lag a block).
#[derive(Debug, Default)]
pub struct PlayState {
    /// Song position at the start of the last block, in beats (`f64` bits); NaN = unknown.
    beat_bits: AtomicU64,
    /// Tempo of the last block (`f64` bits); NaN = unknown.
    tempo_bits: AtomicU64,
    playing: AtomicBool,
    /// Generation ([`crate::generator::Status::recent`]) of the pattern playing now; 0 = none.
    playing_generation: AtomicU64,
    /// Generation of the pattern waiting for its switch point; 0 = none waiting.
    pending_generation: AtomicU64,
}

impl PlayState {
    /// Song position in beats at the last block, if the host gives one.
    pub fn beat(&self) -> Option<f64> {
        let b = f64::from_bits(self.beat_bits.load(Ordering::Relaxed));
        b.is_finite().then_some(b)
    }

    /// The host tempo at the last block, if it gave one.
    pub fn tempo(&self) -> Option<f64> {
        let t = f64::from_bits(self.tempo_bits.load(Ordering::Relaxed));
        (t.is_finite() && t > 0.0).then_some(t)
    }

    /// Whether the last block was playing.
    pub fn playing(&self) -> bool {
        self.playing.load(Ordering::Relaxed)
    }

    /// The generation playing now and the one waiting (0 = none).
    pub fn generations(&self) -> (u64, u64) {
        (
            self.playing_generation.load(Ordering::Relaxed),
            self.pending_generation.load(Ordering::Relaxed),
        )
    }
}

/// The sequencer with its pattern supply and the worker's cue.
pub struct Player {
    pub sequencer: Sequencer,
    pub patterns: Option<PatternReceiver>,
    /// Where the decisions for the worker go (the worker's [`crate::generator::Controls::cue`]).
    pub cue: Arc<Cue>,
    switches_seen: u64,
    pending: u64,
    /// The switch step of the last decision, so each switch point is decided once.
    decided_step: Option<i64>,
    /// Samples processed since the last decision (saturating).
    since_decision: u64,
}

impl Default for Player {
    fn default() -> Self {
        Player::new(Arc::new(Cue::new()))
    }
}

impl Player {
    /// A player holding the empty pattern that cues the worker through `cue`.
    pub fn new(cue: Arc<Cue>) -> Player {
        Player {
            sequencer: Sequencer::new(),
            patterns: None,
            cue,
            switches_seen: 0,
            pending: 0,
            decided_step: None,
            since_decision: u64::MAX,
        }
    }

    /// Forgets playback state (host reset); the current pattern stays.
    pub fn reset(&mut self) {
        self.sequencer.reset();
        self.decided_step = None;
    }

    /// One `process()` call's note work, with the block's settings and automatable values (what
    /// the plugin reads from its parameters for this block). Public so the benchmarks and tests
    /// drive exactly what the audio thread runs.
    pub fn play_block(
        &mut self,
        settings: &Settings,
        values: Automated,
        state: &PlayState,
        transport: &Transport,
        frames: u32,
        out: &mut impl FnMut(NoteEvent),
    ) {
        if let Some((generation, pattern)) = self
            .patterns
            .as_mut()
            .and_then(|p| p.take_new_with_generation())
        {
            self.sequencer.set_pattern_pending(*pattern);
            self.pending = generation;
        }
        self.sequencer.process(transport, frames, settings, out);
        self.cue_worker(settings, values, transport.sample_rate, frames);
        let switches = self.sequencer.switch_count();
        if switches != self.switches_seen {
            self.switches_seen = switches;
            state
                .playing_generation
                .store(self.pending, Ordering::Relaxed);
        }
        let waiting = if self.sequencer.has_pending_pattern() {
            self.pending
        } else {
            0
        };
        state.pending_generation.store(waiting, Ordering::Relaxed);
        state.beat_bits.store(
            transport.pos_beats.unwrap_or(f64::NAN).to_bits(),
            Ordering::Relaxed,
        );
        state
            .tempo_bits
            .store(transport.tempo_bpm.to_bits(), Ordering::Relaxed);
        state
            .playing
            .store(self.sequencer.is_playing(), Ordering::Relaxed);
    }

    /// After a block: takes the decision for the next switch point if it is due, i.e. if fewer
    /// than [`DECISION_LEAD`] of samples remain from the block's end to the switch point's
    /// deadline, the point has not been decided yet, and the last decision is at least
    /// [`MIN_CUE_SPACING`] of audio back (the rule `generator/cue.rs` documents).
    fn cue_worker(
        &mut self,
        settings: &Settings,
        values: Automated,
        sample_rate: f64,
        frames: u32,
    ) {
        self.since_decision = self.since_decision.saturating_add(u64::from(frames));
        let Some(next) = self.sequencer.next_switch(settings) else {
            self.cue.set_playing(false);
            self.decided_step = None;
            return;
        };
        self.cue.set_playing(true);
        let rate = if sample_rate.is_finite() && sample_rate > 0.0 {
            sample_rate
        } else {
            FALLBACK_SAMPLE_RATE
        };
        let due = next.samples_left < DECISION_LEAD.as_secs_f64() * rate;
        let spaced = self.since_decision as f64 >= MIN_CUE_SPACING.as_secs_f64() * rate;
        if due && spaced && self.decided_step != Some(next.step) {
            self.cue.decide(next.step, values);
            self.decided_step = Some(next.step);
            self.since_decision = 0;
        }
    }
}
