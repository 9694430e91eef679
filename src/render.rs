//! Offline rendering: plays the plugin's [`Sequencer`] over a simulated transport, with the
//! plugin's decode step ([`Engine::decode`]) and parameter automation, and returns the note events
//! the plugin would send, for `drumvae render`. Runs on the CLI's main thread.
//!
//! # Automation and pattern changes
//! The morph position follows breakpoint automation in bars (`0:0,8:1` = x goes from 0 at bar 0
//! to 1 at bar 8, linearly; constant before the first and after the last point). The plugin's
//! worker decodes while the song plays and the new pattern takes over at the next bar line; render
//! models an ideal worker: half a bar before each bar line it decodes the point the automation
//! reaches *at* that bar line, so bar `n` plays the pattern of the automation's value at bar `n`
//! (with the default `switch at = next bar`). Each distinct point is decoded once. (The plugin
//! cannot see ahead: it plays the values the host sent 200 ms before each bar line's deadline;
//! `src/generator/cue.rs`.)

use crate::engine::{Engine, Point};
use crate::groove::Pattern;
use crate::midi_file::{self, TimedNote, write_notes};
use crate::sequencer::{NoteEvent, Sequencer, Settings, Transport};
use std::fmt;
use std::str::FromStr;

/// Beats per bar (the model is 4/4 only).
const BEATS_PER_BAR: f64 = 4.0;

/// Piecewise-linear automation over bars.
#[derive(Clone, Debug, PartialEq)]
pub struct Automation {
    /// `(bar, value)` sorted by bar, at least one point.
    points: Vec<(f64, f32)>,
}

impl Automation {
    /// A value that never changes.
    pub fn constant(value: f32) -> Automation {
        Automation {
            points: vec![(0.0, value)],
        }
    }

    /// The value at `bar`: linear between points, held before the first and after the last.
    pub fn at(&self, bar: f64) -> f32 {
        let p = &self.points;
        let i = p.partition_point(|&(b, _)| b <= bar);
        if i == 0 {
            return p[0].1;
        }
        if i == p.len() {
            return p[i - 1].1;
        }
        let (b0, v0) = p[i - 1];
        let (b1, v1) = p[i];
        let t = ((bar - b0) / (b1 - b0)) as f32;
        v0 + (v1 - v0) * t
    }
}

/// Parses `BAR:VALUE[,BAR:VALUE...]` (bars ascending, values in `0..=1`) or a bare `VALUE`.
impl FromStr for Automation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(v) = s.trim().parse::<f32>() {
            return unit_value(v, s).map(Automation::constant);
        }
        let mut points: Vec<(f64, f32)> = Vec::new();
        for part in s.split(',') {
            let (bar, value) = part.trim().split_once(':').ok_or_else(|| {
                format!(
                    "\"{part}\" is not BAR:VALUE; write e.g. 0:0,8:1 (x = 0 at bar 0, 1 at bar 8)"
                )
            })?;
            let bar: f64 = bar
                .trim()
                .parse()
                .ok()
                .filter(|b: &f64| b.is_finite() && *b >= 0.0)
                .ok_or_else(|| format!("\"{bar}\" is not a bar number (0 or more)"))?;
            let value: f32 = value
                .trim()
                .parse()
                .map_err(|_| format!("\"{value}\" is not a number"))?;
            let value = unit_value(value, part)?;
            if let Some(&(last, _)) = points.last()
                && bar <= last
            {
                return Err(format!(
                    "bars must increase: {bar} comes after {last} in \"{s}\""
                ));
            }
            points.push((bar, value));
        }
        Ok(Automation { points })
    }
}

fn unit_value(v: f32, text: &str) -> Result<f32, String> {
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("\"{text}\": morph values go from 0 to 1"))
    }
}

impl fmt::Display for Automation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .points
            .iter()
            .map(|(b, v)| format!("{b}:{v}"))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// What to render.
#[derive(Clone, Debug)]
pub struct RenderOptions {
    pub tempo_bpm: f64,
    pub bars: u32,
    pub sample_rate: f64,
    /// Host block size in samples (the output does not depend on it; see the sequencer docs).
    pub block_size: u32,
    /// Corners, sampling options; `x` and `y` are replaced by the automation.
    pub point: Point,
    pub morph_x: Automation,
    pub morph_y: Automation,
    /// How the sequencer plays (channel, pitches, timing, swing, ...).
    pub settings: Settings,
}

/// One note event at an absolute sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RenderedNote {
    pub sample: u64,
    pub event: NoteEvent,
}

/// The result of a render.
#[derive(Clone, Debug)]
pub struct Rendered {
    /// Every note event, in time order; every note-on has its note-off (the last ones at the end).
    pub notes: Vec<RenderedNote>,
    /// Total length in samples.
    pub samples: u64,
    /// The bars at which a newly decoded pattern was handed to the sequencer, with the point.
    pub decodes: Vec<(u32, Point)>,
    /// Warnings from the engine (e.g. a style the model lacks).
    pub warnings: Vec<String>,
}

/// Plays `opts.bars` bars from song position 0 and collects the events.
pub fn render(engine: &Engine, opts: &RenderOptions) -> anyhow::Result<Rendered> {
    anyhow::ensure!(
        midi_file::tempo_is_writable(opts.tempo_bpm),
        "tempo {} is out of range: use {} to {} BPM",
        opts.tempo_bpm,
        midi_file::TEMPO_RANGE_BPM.start(),
        midi_file::TEMPO_RANGE_BPM.end()
    );
    anyhow::ensure!(
        opts.sample_rate.is_finite() && (8_000.0..=768_000.0).contains(&opts.sample_rate),
        "sample rate {} is out of range: use 8000 to 768000 Hz",
        opts.sample_rate
    );
    anyhow::ensure!(opts.bars > 0, "render at least one bar");
    anyhow::ensure!(
        (1..=65_536).contains(&opts.block_size),
        "block size {} is out of range: use 1 to 65536 samples",
        opts.block_size
    );
    let samples_per_beat = 60.0 / opts.tempo_bpm * opts.sample_rate;
    let samples_per_bar = samples_per_beat * BEATS_PER_BAR;
    let total = (f64::from(opts.bars) * samples_per_bar).round() as u64;

    let mut sequencer = Sequencer::new();
    let mut out = Rendered {
        notes: Vec::new(),
        samples: total,
        decodes: Vec::new(),
        warnings: Vec::new(),
    };
    let point_at = |bar: u32| Point {
        x: opts.morph_x.at(f64::from(bar)),
        y: opts.morph_y.at(f64::from(bar)),
        ..opts.point.clone()
    };
    let decode = |bar: u32, out: &mut Rendered| -> anyhow::Result<Option<Pattern>> {
        let point = point_at(bar);
        if out.decodes.last().is_some_and(|(_, p)| *p == point) {
            return Ok(None);
        }
        let (pattern, warnings) = engine.decode(&point)?;
        for w in warnings {
            if !out.warnings.contains(&w) {
                out.warnings.push(w);
            }
        }
        out.decodes.push((bar, point));
        Ok(Some(pattern))
    };
    if let Some(first) = decode(0, &mut out)? {
        sequencer.set_pattern_pending(first);
    }

    // Bar n's pattern is decided half a bar before its line.
    let mut next_bar = 1u32;
    let decision_sample = |bar: u32| ((f64::from(bar) - 0.5) * samples_per_bar).round() as u64;
    let mut start = 0u64;
    while start < total {
        let len = (total - start).min(u64::from(opts.block_size));
        let end = start + len;
        while next_bar < opts.bars && decision_sample(next_bar) < end {
            if let Some(pattern) = decode(next_bar, &mut out)? {
                sequencer.set_pattern_pending(pattern);
            }
            next_bar += 1;
        }
        let transport = Transport {
            playing: true,
            tempo_bpm: opts.tempo_bpm,
            pos_beats: Some(start as f64 / samples_per_beat),
            sample_rate: opts.sample_rate,
            loop_beats: None,
        };
        sequencer.process(&transport, len as u32, &opts.settings, &mut |event| {
            out.notes.push(RenderedNote {
                sample: start + u64::from(event.sample),
                event,
            })
        });
        start = end;
    }
    sequencer.release_all(&mut |event| {
        out.notes.push(RenderedNote {
            sample: total,
            event,
        })
    });
    Ok(out)
}

/// The rendered events as a `.mid` file at the render's tempo; samples become ticks by rounding to
/// the nearest tick of `ticks_per_beat`.
pub fn to_midi(rendered: &Rendered, opts: &RenderOptions, ticks_per_beat: u16) -> Vec<u8> {
    let ticks_per_sample = f64::from(ticks_per_beat) * opts.tempo_bpm / (60.0 * opts.sample_rate);
    let tick = |sample: u64| (sample as f64 * ticks_per_sample).round() as u64;
    let notes: Vec<TimedNote> = rendered
        .notes
        .iter()
        .map(|n| TimedNote {
            tick: tick(n.sample),
            channel: n.event.channel,
            pitch: n.event.pitch,
            velocity: if n.event.on { n.event.velocity } else { 0 },
        })
        .collect();
    write_notes(
        &notes,
        opts.tempo_bpm,
        ticks_per_beat,
        tick(rendered.samples),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn automation_interpolates_between_points_and_holds_at_the_ends() {
        let a: Automation = "0:0,8:1".parse().unwrap();
        assert_eq!(a.at(-1.0), 0.0);
        assert_eq!(a.at(0.0), 0.0);
        assert_eq!(a.at(4.0), 0.5);
        assert_eq!(a.at(8.0), 1.0);
        assert_eq!(a.at(100.0), 1.0);
        let steps: Automation = "2:0.25,4:0.75,6:0.25".parse().unwrap();
        assert_eq!(steps.at(0.0), 0.25);
        assert_eq!(steps.at(3.0), 0.5);
        assert_eq!(steps.at(5.0), 0.5);
        assert_eq!("0.3".parse::<Automation>().unwrap().at(5.0), 0.3);
    }

    #[test]
    fn automation_rejects_bad_text_with_a_hint() {
        for bad in ["", "0:0,0:1", "4:0,2:1", "0:2", "x:0", "0:y", "-1:0", "1.5"] {
            let err = bad.parse::<Automation>().unwrap_err();
            assert!(!err.is_empty(), "{bad}");
        }
    }
}
