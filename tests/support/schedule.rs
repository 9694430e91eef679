//! The independent analytic schedule the sequencer tests (`tests/sequencer.rs`) and the plugin
//! tests (`tests/plugin_clap.rs`) compare against: which hits a looped [`Pattern`] makes on the
//! song timeline, at which beat, and at which sample a clock running at a steady tempo puts them.
//! Written from the timing rules in `src/sequencer.rs`'s documentation, not from its code:
//!
//! - song 16th step `k` plays pattern step `(k - 16 * bar_offset) mod 64`;
//! - a hit with offset `o` sounds at beat `((k + o * timing) + swing_shift(k)) / 4`, where
//!   `swing_shift(k) = swing / 3` for odd `k`, else 0;
//! - a beat `b` sounds at sample `anchor_sample + round((b - anchor_beat) * 60 / tempo * rate)`
//!   (`f64::round`: half away from zero);
//! - a start or jump to beat `b` plays the hits of grid steps at or after `b` (their early hits
//!   that fall before `b` at the start's first sample) and later-sounding hits of earlier steps;
//! - a host loop over `[start, end)` beats wraps the playhead back to `start` on the sample where
//!   `end` sounds, keeping the clock's anchor (so pass `p` hears loop beat `b` where the unlooped
//!   clock would hear `b + p * (end - start)`); each pass begins like a start at `start` on that
//!   sample, and plays neither hits of grid steps at or after `end` nor hits that fall on or after
//!   the next wrap;
//! - the MIDI velocity is `round(cell velocity * velocity_scale * 127)`, clamped to 127; muted
//!   voices and hits whose velocity rounds to 0 do not play.
#![allow(dead_code)]

use std::ops::Range;

use drumvae::Pattern;
use drumvae::groove::{STEPS, VOICES};
use drumvae::sequencer::Settings;

/// A note-on as the schedule predicts it: absolute sample, pitch, velocity, channel.
pub type On = (u64, u8, u8, u8);

/// One audible hit of the looped pattern on the song timeline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    /// Song 16th step (the grid position it belongs to, before offsets and swing).
    pub step: i64,
    /// When it sounds, in quarter notes on the song timeline.
    pub beat: f64,
    pub pitch: u8,
    pub velocity: u8,
    pub channel: u8,
}

pub fn samples_per_beat(tempo: f64, sample_rate: f64) -> f64 {
    60.0 / tempo * sample_rate
}

/// Every audible hit of `pattern`, looped on the song timeline, whose song step lies in `steps`,
/// in step order.
pub fn hits(pattern: &Pattern, settings: &Settings, steps: Range<i64>) -> Vec<Hit> {
    let mut out = Vec::new();
    for song_step in steps {
        let s = (song_step - 16 * i64::from(settings.bar_offset)).rem_euclid(STEPS as i64) as usize;
        for v in 0..VOICES {
            let c = pattern.cells[s][v];
            if !c.hit || settings.mutes[v] {
                continue;
            }
            let swing = if song_step.rem_euclid(2) == 1 {
                f64::from(settings.swing) * (1.0 / 3.0)
            } else {
                0.0
            };
            let beat = ((song_step as f64
                + f64::from(c.offset) * f64::from(settings.timing_amount))
                + swing)
                / 4.0;
            let velocity = (c.velocity * settings.velocity_scale * 127.0)
                .round()
                .clamp(0.0, 127.0) as u8;
            if velocity == 0 {
                continue;
            }
            out.push(Hit {
                step: song_step,
                beat,
                pitch: settings.pitches[v],
                velocity,
                channel: settings.channel,
            });
        }
    }
    out
}

/// The song steps whose hits can sound between two beats: offsets and swing move a hit by less
/// than 2 1/3 steps, so a margin of 4 steps either way is plenty.
pub fn steps_around(from_beat: f64, until_beat: f64) -> Range<i64> {
    (from_beat * 4.0).floor() as i64 - 4..(until_beat * 4.0).ceil() as i64 + 4
}

/// The sample a beat sounds at, for a clock that is at `anchor_beat` on `anchor_sample`.
pub fn sample_at(beat: f64, anchor_beat: f64, anchor_sample: u64, spb: f64) -> i64 {
    anchor_sample as i64 + ((beat - anchor_beat) * spb).round() as i64
}

/// How a stretch of the timeline begins, for [`schedule`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Entry {
    /// Play starts (or the position jumps) at the stretch's first beat: hits of grid steps at or
    /// after it play, and those steps' early hits that fall before it sound at its first sample.
    Start,
    /// The clock carries on into the stretch (a tempo change): hits at or after its first beat.
    Continue,
}

/// The sample a hit sounds at in a stretch that begins, the way `entry` says, at `from_beat` on
/// `from_sample` with `spb` samples per beat; `None` if the hit does not play there. Early hits
/// due before a start sound at its first sample.
pub fn sounds_at(h: &Hit, entry: Entry, from_beat: f64, from_sample: u64, spb: f64) -> Option<i64> {
    // The first grid step at or after the position; CLAP positions carry fixed-point rounding.
    let restart_step = (from_beat * 4.0 - 1e-6).ceil() as i64;
    let plays = h.beat >= from_beat || (entry == Entry::Start && h.step >= restart_step);
    plays.then(|| sample_at(h.beat, from_beat, from_sample, spb).max(from_sample as i64))
}

/// Every note-on the pattern makes, for a clock that is at `from_beat` on absolute sample
/// `from_sample` and runs at `tempo`, entered as `entry` says: the hits that [`sounds_at`] places
/// before `until_sample`, sorted (early hits before the start sound at `from_sample`).
#[allow(clippy::too_many_arguments)]
pub fn schedule(
    pattern: &Pattern,
    settings: &Settings,
    sample_rate: f64,
    tempo: f64,
    entry: Entry,
    from_beat: f64,
    from_sample: u64,
    until_sample: u64,
) -> Vec<On> {
    let spb = samples_per_beat(tempo, sample_rate);
    let until_beat = from_beat + (until_sample - from_sample) as f64 / spb;
    let mut ons: Vec<On> = hits(pattern, settings, steps_around(from_beat, until_beat))
        .into_iter()
        .filter_map(|h| Some((sounds_at(&h, entry, from_beat, from_sample, spb)?, h)))
        .filter(|&(at, _)| at < until_sample as i64)
        .map(|(at, h)| (at as u64, h.pitch, h.velocity, h.channel))
        .collect();
    ons.sort_unstable();
    ons
}

/// The first 16th grid step at or after `beat`; CLAP positions carry fixed-point rounding.
fn grid_step_at_or_after(beat: f64) -> i64 {
    (beat * 4.0 - 1e-6).ceil() as i64
}

/// Every note-on the pattern makes for a host that loops over `loop_beats` (`(start, end)`, end
/// exclusive) at a steady `tempo`: play starts at `from_beat` (before or inside the loop) on
/// absolute sample `from_sample`, and every time the position reaches the loop end it wraps back
/// to the loop start. Sorted, up to `until_sample` (exclusive).
#[allow(clippy::too_many_arguments)]
pub fn looped_schedule(
    pattern: &Pattern,
    settings: &Settings,
    sample_rate: f64,
    tempo: f64,
    loop_beats: (f64, f64),
    from_beat: f64,
    from_sample: u64,
    until_sample: u64,
) -> Vec<On> {
    let (loop_start, loop_end) = loop_beats;
    assert!(from_beat < loop_end, "play must start before the loop end");
    let spb = samples_per_beat(tempo, sample_rate);
    let len = loop_end - loop_start;
    let end_step = grid_step_at_or_after(loop_end);
    // Pass p begins where the unlooped clock reaches the loop start plus p loop lengths.
    let pass_begin = |p: u32| {
        if p == 0 {
            from_sample as i64
        } else {
            sample_at(loop_start + f64::from(p) * len, from_beat, from_sample, spb)
        }
    };
    let mut ons = Vec::new();
    for p in 0.. {
        let begin = pass_begin(p);
        if begin >= until_sample as i64 {
            break;
        }
        let next = pass_begin(p + 1).min(until_sample as i64);
        let entry_beat = if p == 0 { from_beat } else { loop_start };
        let restart_step = grid_step_at_or_after(entry_beat);
        let shift = f64::from(p) * len;
        for h in hits(pattern, settings, steps_around(entry_beat, loop_end)) {
            let entered = h.beat >= entry_beat || h.step >= restart_step;
            if h.step >= end_step || !entered {
                continue;
            }
            let at = sample_at(h.beat + shift, from_beat, from_sample, spb).max(begin);
            if at < next {
                ons.push((at as u64, h.pitch, h.velocity, h.channel));
            }
        }
    }
    ons.sort_unstable();
    ons
}

/// The position a looping host reports at absolute sample `sample`: the unlooped position, folded
/// back into `[start, end)` once it has reached the loop end (hosts that do not split their blocks
/// at the loop end report it this way at the next block's first sample).
pub fn looped_position(
    loop_beats: (f64, f64),
    from_beat: f64,
    from_sample: u64,
    spb: f64,
    sample: u64,
) -> f64 {
    let (start, end) = loop_beats;
    let unlooped = from_beat + (sample - from_sample) as f64 / spb;
    if unlooped < end {
        unlooped
    } else {
        start + (unlooped - end).rem_euclid(end - start)
    }
}
