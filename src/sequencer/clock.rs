//! The sequencer's clock: maps beats (quarter notes on the host timeline) to absolute samples and
//! tells, block by block, whether the host transport continued, started, stopped or jumped. Part of
//! the AUDIO THREAD sequencer: plain arithmetic, no allocation.
//!
//! ## Anchor
//! Positions come from one *anchor* `(beat, sample, samples_per_beat)`: a beat `b` sounds at
//! absolute sample `anchor_sample + round((b - anchor_beat) * samples_per_beat)` (`f64::round`,
//! half away from zero). While the host's tempo stays the same and its position agrees with the
//! anchor (within [`RESYNC_SAMPLES`]), the anchor is kept. So every event's sample is a fixed
//! function of its beat, whatever the block sizes are; with an anchor at the block start this is
//! exactly `round((b - block_start_beat) * 60 / tempo * sample_rate)` samples into the block. A new
//! tempo, sample rate, a position that drifted, or a jump re-anchors at the block's first sample.
//!
//! ## Host loops
//! When the playhead wraps from a host loop's end back to its start, the anchor's beat moves back
//! by the loop length and its sample stays: the loop start sounds on exactly the sample the loop
//! end would have, and the next block's host position (which the host computes as the continuous
//! position folded back into the loop) agrees with the clock, so it continues. A host that wraps
//! at a block boundary instead shows up in [`Clock::sync`] as a position one loop length behind
//! the clock at the loop end: a wrap, not a jump.

use super::Transport;
use super::host_loop::HostLoop;

/// Tempo used when the host gives none (non-finite or non-positive `tempo_bpm`).
pub const DEFAULT_TEMPO_BPM: f64 = 120.0;
/// Tempos are clamped into this range (a 0.001 BPM tempo would stall the clock for hours).
pub const TEMPO_RANGE_BPM: (f64, f64) = (1.0, 1000.0);
/// Host positions further from 0 than this (in beats; 15 years at 120 BPM) count as no position,
/// so step arithmetic can never overflow.
pub const MAX_POSITION_BEATS: f64 = 1e9;
/// Sample rate used when the caller passes a non-finite or non-positive one.
pub const FALLBACK_SAMPLE_RATE: f64 = 48_000.0;

/// A host position further than this from where the previous block ended (in beats, either way) is
/// a start, seek or loop jump: sounding notes are released and nothing in between is played.
/// 1/32 beat (an eighth of a 16th step, 15.6 ms at 120 BPM) is well above hosts' rounding of the
/// position (some report it in 1/96-beat ticks) and the drift a tempo ramp inside one block leaves,
/// and below any musically meant seek.
pub const JUMP_TOLERANCE_BEATS: f64 = 1.0 / 32.0;
/// A host position off the anchor by more than this many samples (but within the jump tolerance)
/// re-anchors the clock on the host, without releasing notes; less is floating-point noise and
/// keeps the anchor, so sample positions stay exact.
pub const RESYNC_SAMPLES: f64 = 1e-3;

/// What the transport did at the start of a block.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Sync {
    /// Not playing.
    Stopped,
    /// Playing, and was not: the clock now starts at `beat` (the host position, or 0 without one).
    Started { beat: f64 },
    /// Playing, and the host position left the previous block's end by more than
    /// [`JUMP_TOLERANCE_BEATS`]: the clock restarts at `beat`.
    Jumped { beat: f64 },
    /// Playing on from the previous block (perhaps re-anchored for a new tempo or a small drift).
    Continued,
    /// Playing on, but the host wrapped from its loop end to `loop_start` at the block's first
    /// sample (it split its block there, or the loop end sounds on that very sample): the clock has
    /// moved back by the loop length (and perhaps re-anchored on the host, as for
    /// [`Sync::Continued`]).
    Wrapped { loop_start: f64 },
}

/// Samples per beat for a transport, with tempo and sample rate sanitised.
pub(super) fn samples_per_beat(transport: &Transport) -> f64 {
    let tempo = if transport.tempo_bpm.is_finite() && transport.tempo_bpm > 0.0 {
        transport
            .tempo_bpm
            .clamp(TEMPO_RANGE_BPM.0, TEMPO_RANGE_BPM.1)
    } else {
        DEFAULT_TEMPO_BPM
    };
    let rate = if transport.sample_rate.is_finite() && transport.sample_rate > 0.0 {
        transport.sample_rate
    } else {
        FALLBACK_SAMPLE_RATE
    };
    60.0 / tempo * rate
}

/// The running clock.
#[derive(Clone, Copy, Debug)]
pub(super) struct Clock {
    running: bool,
    anchor_beat: f64,
    anchor_sample: i64,
    samples_per_beat: f64,
}

impl Clock {
    pub(super) fn new() -> Clock {
        Clock {
            running: false,
            anchor_beat: 0.0,
            anchor_sample: 0,
            samples_per_beat: 60.0 / DEFAULT_TEMPO_BPM * FALLBACK_SAMPLE_RATE,
        }
    }

    pub(super) fn is_running(&self) -> bool {
        self.running
    }

    pub(super) fn samples_per_beat(&self) -> f64 {
        self.samples_per_beat
    }

    /// The beat at an absolute sample (exact, not rounded).
    pub(super) fn beat_at(&self, sample: i64) -> f64 {
        self.anchor_beat + (sample - self.anchor_sample) as f64 / self.samples_per_beat
    }

    /// The absolute sample a beat sounds at.
    pub(super) fn sample_of(&self, beat: f64) -> i64 {
        self.anchor_sample + ((beat - self.anchor_beat) * self.samples_per_beat).round() as i64
    }

    /// The smallest beat that [`Clock::sample_of`] puts at or after `sample` (up to rounding of
    /// the last bit: callers keep a margin).
    pub(super) fn first_beat_at_or_after(&self, sample: i64) -> f64 {
        self.anchor_beat + ((sample - self.anchor_sample) as f64 - 0.5) / self.samples_per_beat
    }

    /// How many samples after `sample` the beat `beat` sounds ([`Clock::sample_of`] minus
    /// `sample`), as a float: negative if before, and never overflowing, whatever a host reports.
    pub(super) fn samples_until(&self, beat: f64, sample: i64) -> f64 {
        ((beat - self.anchor_beat) * self.samples_per_beat).round()
            - (sample - self.anchor_sample) as f64
    }

    /// The playhead wrapped from a loop end back to its start, `loop_len` beats earlier: every
    /// later sample now sounds that many beats earlier on the host timeline. The anchor sample
    /// stays, so positions stay a fixed function of the sample across any number of passes.
    pub(super) fn wrap_back(&mut self, loop_len: f64) {
        self.anchor_beat -= loop_len;
    }

    fn anchor(&mut self, beat: f64, sample: i64, samples_per_beat: f64) {
        self.anchor_beat = beat;
        self.anchor_sample = sample;
        self.samples_per_beat = samples_per_beat;
    }

    /// Reads the transport at the block starting at absolute sample `start` and moves the anchor.
    /// `host_loop` is the loop the block's transport reports, if usable.
    pub(super) fn sync(
        &mut self,
        transport: &Transport,
        start: i64,
        host_loop: Option<HostLoop>,
    ) -> Sync {
        if !transport.playing {
            self.running = false;
            return Sync::Stopped;
        }
        let spb = samples_per_beat(transport);
        let host = transport
            .pos_beats
            .filter(|b| b.is_finite() && b.abs() <= MAX_POSITION_BEATS);
        if !self.running {
            let beat = host.unwrap_or(0.0);
            self.running = true;
            self.anchor(beat, start, spb);
            return Sync::Started { beat };
        }
        let mut expected = self.beat_at(start);
        let mut wrapped = None;
        match host {
            Some(beat) => {
                // The clock is at the loop end and the host one loop length behind it: the host
                // wrapped here (both within the jitter tolerance, to allow for its rounding of
                // the wrap sample).
                if let Some(lp) = host_loop
                    && (expected - lp.end()).abs() <= JUMP_TOLERANCE_BEATS
                    && (beat - (expected - lp.len())).abs() <= JUMP_TOLERANCE_BEATS
                {
                    self.wrap_back(lp.len());
                    expected = self.beat_at(start);
                    wrapped = Some(lp.start());
                }
                let drift = beat - expected;
                if drift.abs() > JUMP_TOLERANCE_BEATS {
                    self.anchor(beat, start, spb);
                    return Sync::Jumped { beat };
                }
                if spb != self.samples_per_beat || drift.abs() * spb > RESYNC_SAMPLES {
                    self.anchor(beat, start, spb);
                }
            }
            // Free-running: the clock's own position carries on at the new tempo.
            None if spb != self.samples_per_beat => self.anchor(expected, start, spb),
            None => {}
        }
        match wrapped {
            Some(loop_start) => Sync::Wrapped { loop_start },
            None => Sync::Continued,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(playing: bool, tempo: f64, pos: Option<f64>) -> Transport {
        Transport {
            playing,
            tempo_bpm: tempo,
            pos_beats: pos,
            sample_rate: 48_000.0,
            loop_beats: None,
        }
    }

    /// A playing 120 BPM transport at `pos` with the host loop `range` on.
    fn looping(pos: f64, range: (f64, f64)) -> (Transport, Option<HostLoop>) {
        let t = Transport {
            loop_beats: Some(range),
            ..t(true, 120.0, Some(pos))
        };
        (t, HostLoop::of(&t))
    }

    #[test]
    fn beats_map_to_samples_from_the_anchor() {
        let mut c = Clock::new();
        assert_eq!(
            c.sync(&t(true, 120.0, Some(0.0)), 0, None),
            Sync::Started { beat: 0.0 }
        );
        assert_eq!(c.samples_per_beat(), 24_000.0);
        assert_eq!(c.sample_of(1.0), 24_000);
        assert_eq!(
            c.sample_of(0.25 / 24_000.0 * 2.0),
            1,
            "0.5 sample rounds away from zero"
        );
        assert_eq!(c.beat_at(12_000), 0.5);
        assert!(c.sample_of(c.first_beat_at_or_after(777) + 1e-12) >= 777);
        assert!(c.sample_of(c.first_beat_at_or_after(777) - 1e-12) < 777);
    }

    #[test]
    fn continuous_positions_continue_and_far_ones_jump() {
        let mut c = Clock::new();
        c.sync(&t(true, 120.0, Some(4.0)), 1000, None);
        assert_eq!(
            c.sync(&t(true, 120.0, Some(4.5)), 13_000, None),
            Sync::Continued
        );
        assert_eq!(c.sample_of(4.5), 13_000);
        // Within tolerance: re-anchored on the host, no jump.
        assert_eq!(
            c.sync(&t(true, 120.0, Some(5.01)), 25_000, None),
            Sync::Continued
        );
        assert_eq!(c.sample_of(5.01), 25_000);
        assert_eq!(
            c.sync(&t(true, 120.0, Some(0.0)), 26_000, None),
            Sync::Jumped { beat: 0.0 }
        );
        assert_eq!(
            c.sync(&t(false, 120.0, Some(0.0)), 27_000, None),
            Sync::Stopped
        );
        assert!(!c.is_running());
    }

    #[test]
    fn tempo_change_reanchors_at_block_start_and_bad_tempo_falls_back() {
        let mut c = Clock::new();
        c.sync(&t(true, 120.0, None), 0, None);
        assert_eq!(c.sync(&t(true, 60.0, None), 24_000, None), Sync::Continued);
        assert_eq!(
            c.sample_of(2.0),
            24_000 + 48_000,
            "beat 1 at 24000, then 48000/beat"
        );
        c.sync(&t(true, f64::NAN, None), 72_000, None);
        assert_eq!(c.samples_per_beat(), 24_000.0);
        assert_eq!(c.beat_at(72_000), 2.0);
    }

    #[test]
    fn a_wrap_moves_the_beat_timeline_back_by_the_loop_length_and_keeps_the_samples() {
        let mut c = Clock::new();
        c.sync(&t(true, 120.0, Some(3.0)), 1000, None);
        // Loop 1..5 (one bar): the loop end sounds 48000 samples after beat 3.
        assert_eq!(c.samples_until(5.0, 1000), 48_000.0);
        assert_eq!(c.samples_until(5.0, 49_000), 0.0);
        assert_eq!(
            c.samples_until(5.0 + 0.7 / 24_000.0, 49_000),
            1.0,
            "0.7 rounds up"
        );
        c.wrap_back(4.0);
        assert_eq!(
            c.sample_of(1.0),
            49_000,
            "the loop start where the loop end was"
        );
        assert_eq!(c.beat_at(49_000 + 6000), 1.25);
        // A hostile clock far out never overflows: the distance is a float.
        assert_eq!(c.samples_until(f64::MAX, 0), f64::INFINITY);
    }

    #[test]
    fn a_host_that_wraps_at_the_block_start_continues_and_a_far_position_still_jumps() {
        let range = (4.0, 8.0);
        let mut c = Clock::new();
        let (t0, lp) = looping(7.0, range);
        c.sync(&t0, 0, lp);
        // The block before ended exactly at the loop end (sample 24000): the host reports the
        // loop start there.
        let (at_start, lp) = looping(4.0, range);
        assert_eq!(
            c.sync(&at_start, 24_000, lp),
            Sync::Wrapped { loop_start: 4.0 }
        );
        assert_eq!(c.sample_of(4.0), 24_000);
        // One sample early or late (the host rounds its wrap sample another way): still a wrap,
        // re-anchored on the host.
        for (sample, host) in [(23_999, 4.0), (24_001, 4.0 + 2.0 / 24_000.0)] {
            let mut c = Clock::new();
            c.sync(&t0, 0, lp);
            let (t, lp) = looping(host, range);
            assert_eq!(c.sync(&t, sample, lp), Sync::Wrapped { loop_start: 4.0 });
            assert_eq!(c.beat_at(sample), host);
        }
        // Without the loop, or far from the loop end, the same positions are jumps.
        let mut c = Clock::new();
        c.sync(&t0, 0, None);
        assert_eq!(c.sync(&at_start, 24_000, None), Sync::Jumped { beat: 4.0 });
        let mut c = Clock::new();
        c.sync(&t0, 0, lp);
        let (early, lp) = looping(4.0 - 0.5, range);
        assert_eq!(c.sync(&early, 12_000, lp), Sync::Jumped { beat: 3.5 });
        // A wrapped position continues as usual in later blocks.
        let mut c = Clock::new();
        c.sync(&t0, 0, lp);
        c.sync(&at_start, 24_000, lp);
        let (later, lp) = looping(4.5, range);
        assert_eq!(c.sync(&later, 36_000, lp), Sync::Continued);
    }
}
