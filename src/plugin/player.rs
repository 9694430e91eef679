//! The AUDIO THREAD's part of the plugin apart from host types: takes the newest pattern from the
//! worker, reads the parameters, runs the sequencer, and tells the editor what is playing through
//! atomics ([`PlayState`]). Nothing here allocates, locks or blocks.

use super::params::DrumVaeParams;
use crate::generator::PatternReceiver;
use crate::sequencer::{NoteEvent, Sequencer, Transport};
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

/// The sequencer with its pattern supply.
#[derive(Default)]
pub struct Player {
    pub sequencer: Sequencer,
    pub patterns: Option<PatternReceiver>,
    switches_seen: u64,
    pending: u64,
}

impl Player {
    /// Forgets playback state (host reset); the current pattern stays.
    pub fn reset(&mut self) {
        self.sequencer.reset();
    }

    /// One `process()` call's note work. Public so the `plugin` benchmark measures exactly what
    /// the audio thread runs.
    pub fn play_block(
        &mut self,
        params: &DrumVaeParams,
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
        let settings = params.settings();
        self.sequencer.process(transport, frames, &settings, out);
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
}
