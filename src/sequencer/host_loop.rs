//! The host's loop (cycle) range as the sequencer honours it: which reported ranges are usable,
//! and the grid steps that belong to a pass of the loop. Part of the AUDIO THREAD sequencer: plain
//! arithmetic on two numbers, no allocation.
//!
//! Many hosts (most VST3 ones) do not split their blocks at the loop end: the block that crosses
//! it reports the position at its first sample only, and the next block starts back inside the
//! loop. So the sequencer wraps the playhead itself, at the sample where the loop end sounds, and
//! needs the range for that. A range a hostile or confused host reports (reversed, empty, NaN,
//! beyond [`MAX_POSITION_BEATS`], shorter than a 16th step or than two samples) is ignored: the
//! sequencer then plays on as if the loop were off, and treats the host's jump back as a jump.

use super::clock::{MAX_POSITION_BEATS, samples_per_beat};
use super::{Transport, restart_step};

/// Shortest loop honoured, in beats: one 16th step. Every pass then holds at least one grid
/// step, and a wrap can never be confused with the jitter [`super::JUMP_TOLERANCE_BEATS`]
/// absorbs (a wrap moves the position back by at least 8 times that tolerance).
pub const MIN_LOOP_BEATS: f64 = 0.25;

/// Shortest loop honoured, in samples at the block's tempo. Two, not one: a wrap moves the beat
/// timeline back by the loop length in floating point, and the loop end's next sample, rounded,
/// must come at least one sample later, so every wrap moves the playhead forward and a block
/// wraps at most once per sample, whatever the host reports.
pub const MIN_LOOP_SAMPLES: f64 = 2.0;

/// A usable loop range on the host's beat timeline: `start <= beat < end`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct HostLoop {
    start: f64,
    end: f64,
}

impl HostLoop {
    /// The loop `transport` reports, if the sequencer can honour it: the host is playing and
    /// gives a position (without one there is no timeline to loop on), both ends are finite and
    /// within [`MAX_POSITION_BEATS`], and the loop lasts at least [`MIN_LOOP_BEATS`] and
    /// [`MIN_LOOP_SAMPLES`].
    pub(super) fn of(transport: &Transport) -> Option<HostLoop> {
        let (start, end) = transport.loop_beats?;
        let in_range = |b: f64| b.is_finite() && b.abs() <= MAX_POSITION_BEATS;
        let position = transport.pos_beats.is_some_and(in_range);
        let usable = transport.playing
            && position
            && in_range(start)
            && in_range(end)
            && end - start >= MIN_LOOP_BEATS
            && (end - start) * samples_per_beat(transport) >= MIN_LOOP_SAMPLES;
        usable.then_some(HostLoop { start, end })
    }

    /// Where a pass begins: the position the host returns to.
    pub(super) fn start(&self) -> f64 {
        self.start
    }

    /// Where a pass ends (exclusive): the position the host leaves.
    pub(super) fn end(&self) -> f64 {
        self.end
    }

    /// The loop length in beats, always at least [`MIN_LOOP_BEATS`].
    pub(super) fn len(&self) -> f64 {
        self.end - self.start
    }

    /// The first grid step that is not part of a pass: the first at or after the loop end. Its
    /// early hits (which fall before the loop end) never play while the loop is on, or they would
    /// sound just before the loop start's own downbeat.
    pub(super) fn end_step(&self) -> i64 {
        restart_step(self.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A playing transport at beat 1 with the given loop, 120 BPM at 48 kHz (24000 samples a beat).
    fn looping(range: (f64, f64)) -> Transport {
        Transport {
            playing: true,
            tempo_bpm: 120.0,
            pos_beats: Some(1.0),
            sample_rate: 48_000.0,
            loop_beats: Some(range),
        }
    }

    #[test]
    fn loops_of_whole_bars_and_odd_lengths_are_honoured() {
        for bars in 1..=4 {
            let range = (4.0, 4.0 + 4.0 * f64::from(bars));
            let lp = HostLoop::of(&looping(range)).expect("a whole-bar loop");
            assert_eq!(
                (lp.start(), lp.end(), lp.len()),
                (range.0, range.1, 4.0 * f64::from(bars))
            );
            assert_eq!(lp.end_step(), 16 + 16 * i64::from(bars));
        }
        let odd = HostLoop::of(&looping((-1.3, 2.6))).expect("negative start, off the grid");
        assert_eq!(
            odd.end_step(),
            11,
            "the first step at or after beat 2.6 (step 10.4)"
        );
        assert!(
            HostLoop::of(&looping((0.0, MIN_LOOP_BEATS))).is_some(),
            "one step"
        );
    }

    #[test]
    fn degenerate_loops_from_a_hostile_host_are_ignored() {
        let nan = f64::NAN;
        let inf = f64::INFINITY;
        for range in [
            (4.0, 4.0),
            (8.0, 4.0),
            (0.0, 0.2),
            (nan, 4.0),
            (0.0, nan),
            (-inf, 4.0),
            (0.0, inf),
            (0.0, 2.0 * MAX_POSITION_BEATS),
            (-2.0 * MAX_POSITION_BEATS, 0.0),
        ] {
            assert_eq!(HostLoop::of(&looping(range)), None, "{range:?}");
        }
        let no_position = Transport {
            pos_beats: None,
            ..looping((0.0, 4.0))
        };
        let stopped = Transport {
            playing: false,
            ..looping((0.0, 4.0))
        };
        let off = Transport {
            loop_beats: None,
            ..looping((0.0, 4.0))
        };
        // At 2 Hz a beat lasts one sample: a one-beat loop would wrap on every sample.
        let subsample = Transport {
            sample_rate: 2.0,
            ..looping((0.0, 1.0))
        };
        for t in [no_position, stopped, off, subsample] {
            assert_eq!(HostLoop::of(&t), None, "{t:?}");
        }
    }
}
