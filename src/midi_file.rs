//! Standard MIDI Files in and out: `.mid` bytes -> tempo-aware note list -> quantised groove grid
//! -> 4-bar [`Pattern`] windows, and patterns -> `.mid`. Runs on whichever thread calls it (the
//! CLI, the dataset loader, the plugin's worker); never on the audio thread.
//!
//! This is the only module that imports `midly`: its `u7`/`u28` types are converted to ours here.
//!
//! ## Timing model
//! Musical position comes from ticks: a 16th-note step is `ticks_per_beat / 4` ticks, so a tempo
//! change inside a file moves the notes' times in seconds but never their step. The tempo map turns
//! ticks into seconds (for offsets in milliseconds, and for the tempo a window was played at). Bars
//! are 16 steps from tick 0; only 4/4 is modelled (a file without a time signature is 4/4, as the
//! SMF specification says). Each onset is quantised to its nearest step over the whole file, with
//! `step = floor(position + 0.5)`: a note exactly halfway between two steps belongs to the later
//! step with offset -0.5, which keeps every offset inside `[-0.5, 0.5)`. Windows are cut after
//! quantisation, so a hit played just before a window's first downbeat stays in that window with a
//! negative offset.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use midly::num::{u4, u7, u15, u24, u28};
use midly::{Format, Header, MetaMessage, MidiMessage, Smf, Timing, TrackEvent, TrackEventKind};

use crate::groove::{BARS, Cell, Pattern, STEPS, STEPS_PER_BAR, STEPS_PER_BEAT, VOICES, Voice};
use crate::untrusted_file::{self, ReadError};

/// Files longer than this many bars are refused: a hostile delta time could otherwise ask for a
/// grid of billions of steps. 20,000 bars is over 11 hours at 120 BPM.
pub const MAX_BARS: u64 = 20_000;
/// Tempos DrumVAE writes: what a Standard MIDI File can store (a beat of at most 2^24 - 1 µs,
/// so at least 3.58 BPM) up to 999 BPM. Render, export and the CLI check against it, so a tempo
/// the plugin plays can be exported and nothing writes a tempo event that wraps around.
pub const TEMPO_RANGE_BPM: std::ops::RangeInclusive<f64> = 3.58..=999.0;

/// Whether `bpm` is in [`TEMPO_RANGE_BPM`] (NaN is not).
pub fn tempo_is_writable(bpm: f64) -> bool {
    TEMPO_RANGE_BPM.contains(&bpm)
}

/// The largest `.mid` file read: 16 MB (a GMD performance is under 100 kB).
pub const MAX_FILE_BYTES: u64 = 16_000_000;

/// Default tempo when a file has no tempo event (SMF default: 500,000 µs per beat).
pub const DEFAULT_MICROS_PER_BEAT: u32 = 500_000;

/// Why a MIDI file could not be read. Always names the file.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {kind}")]
pub struct MidiError {
    /// The file's path or a label for in-memory bytes.
    pub file: String,
    /// What went wrong.
    pub kind: MidiErrorKind,
}

/// What went wrong with a MIDI file.
#[derive(Debug, thiserror::Error)]
pub enum MidiErrorKind {
    #[error("cannot read the file: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "not a valid Standard MIDI File ({0}); re-export it from your DAW as a type 0 or 1 .mid"
    )]
    Malformed(String),
    #[error(
        "uses SMPTE timecode timing; only metrical timing (ticks per beat) is supported: re-export it with a tempo-based clock"
    )]
    SmpteTiming,
    #[error(
        "is a format 2 (sequential patterns) file; only formats 0 and 1 are supported: export it as type 1"
    )]
    Format2,
    #[error("is not a regular file (a folder, device, pipe or socket); choose a .mid file")]
    NotAFile,
    #[error("is {bytes} bytes; MIDI files over {MAX_FILE_BYTES} bytes are refused")]
    TooLarge { bytes: u64 },
    #[error("declares 0 ticks per beat, which cannot be timed")]
    ZeroTicksPerBeat,
    #[error("is {bars} bars long; files over {MAX_BARS} bars are refused")]
    TooLong { bars: u64 },
    #[error("is in {numerator}/{denominator} at bar {bar}; only 4/4 is modelled")]
    UnsupportedMetre {
        numerator: u8,
        denominator: u32,
        bar: u64,
    },
}

/// Why a file has no 4-bar groove to offer for a window.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error(
        "{file} has no drum hits on the pitches DrumVAE reads (General MIDI or TD-11 kick, snare, hi-hats, toms, crash, ride)"
    )]
    NoHits { file: String },
    #[error("{file}: window {window} does not exist; {}", describe_windows(*count, *bars))]
    NoSuchWindow {
        file: String,
        /// 1-based, as users count.
        window: usize,
        count: usize,
        bars: usize,
    },
}

fn describe_windows(count: usize, bars: usize) -> String {
    if bars < BARS {
        format!(
            "the file is a {}-bar loop and gives one groove, window 1 (the loop repeated to 4 bars)",
            bars.max(1)
        )
    } else if count == 1 {
        "the file has one window, 1 (bars 1-4)".to_string()
    } else {
        format!("the file has windows 1-{count} (window N = bars N to N+3)")
    }
}

impl MidiError {
    fn new(file: &str, kind: impl Into<MidiErrorKind>) -> MidiError {
        MidiError {
            file: file.to_string(),
            kind: kind.into(),
        }
    }

    /// True when the file is fine as MIDI but not something the model represents (another
    /// metre): datasets skip such files with this reason instead of failing.
    pub fn is_unsupported_metre(&self) -> bool {
        matches!(self.kind, MidiErrorKind::UnsupportedMetre { .. })
    }
}

/// One note onset, merged from every track and channel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Onset {
    /// Absolute tick.
    pub tick: u64,
    /// Seconds from the start, through the tempo map.
    pub seconds: f64,
    /// MIDI pitch 0..=127.
    pub pitch: u8,
    /// MIDI velocity 1..=127 (a velocity-0 note-on is a note-off and never becomes an onset).
    pub velocity: u8,
    /// MIDI channel 0..=15 (the GMD uses 9, i.e. channel 10).
    pub channel: u8,
}

/// Tempo changes over a file, for tick -> seconds conversion.
#[derive(Clone, Debug, PartialEq)]
pub struct TempoMap {
    ticks_per_beat: u16,
    /// (tick, µs per beat, seconds at that tick), sorted by tick, first at tick 0.
    segments: Vec<(u64, u32, f64)>,
}

impl TempoMap {
    /// A map from `(tick, µs per beat)` changes, in any order. Later entries at the same tick win.
    pub fn new(ticks_per_beat: u16, mut changes: Vec<(u64, u32)>) -> TempoMap {
        changes.sort_by_key(|&(t, _)| t);
        let mut segments: Vec<(u64, u32, f64)> = vec![(0, DEFAULT_MICROS_PER_BEAT, 0.0)];
        for (tick, micros) in changes {
            let micros = micros.max(1);
            let &(last_tick, last_micros, last_secs) = segments.last().expect("never empty");
            if tick == last_tick {
                segments.last_mut().expect("never empty").1 = micros;
            } else {
                let secs = last_secs
                    + (tick - last_tick) as f64 * last_micros as f64
                        / (1e6 * ticks_per_beat as f64);
                segments.push((tick, micros, secs));
            }
        }
        TempoMap {
            ticks_per_beat,
            segments,
        }
    }

    fn segment(&self, tick: u64) -> (u64, u32, f64) {
        let i = self.segments.partition_point(|&(t, _, _)| t <= tick);
        self.segments[i.saturating_sub(1)]
    }

    /// Seconds from the start to `tick`.
    pub fn seconds_at(&self, tick: u64) -> f64 {
        let (t, micros, secs) = self.segment(tick);
        secs + (tick - t) as f64 * micros as f64 / (1e6 * self.ticks_per_beat as f64)
    }

    /// Tempo in beats per minute at `tick`.
    pub fn bpm_at(&self, tick: u64) -> f64 {
        60e6 / self.segment(tick).1 as f64
    }

    /// The tempo changes as `(tick, bpm)`.
    pub fn changes(&self) -> impl Iterator<Item = (u64, f64)> + '_ {
        self.segments.iter().map(|&(t, m, _)| (t, 60e6 / m as f64))
    }
}

/// A parsed MIDI file: onsets from every track and channel, the tempo map and the metre.
#[derive(Clone, Debug)]
pub struct Performance {
    /// Resolution of the file's clock.
    pub ticks_per_beat: u16,
    /// Every note onset, sorted by tick (stable: file order within a tick).
    pub onsets: Vec<Onset>,
    /// Tick -> seconds.
    pub tempo: TempoMap,
    /// `(tick, numerator, denominator)` time signature events, sorted by tick.
    pub time_signatures: Vec<(u64, u8, u32)>,
    /// Tick of the last event of any kind (notes, controllers, end of track): the performance's
    /// end. Counting the end-of-track event lets a file that ends in rests keep its length.
    pub end_tick: u64,
}

/// Reads and parses a `.mid` file.
pub fn read_file(path: &Path) -> Result<Performance, MidiError> {
    let label = path.display().to_string();
    // A path typed into the editor or saved in a session is untrusted (see `untrusted_file`).
    let bytes = untrusted_file::read(path, MAX_FILE_BYTES).map_err(|e| {
        MidiError::new(
            &label,
            match e {
                ReadError::NotAFile => MidiErrorKind::NotAFile,
                ReadError::TooLarge { bytes } => MidiErrorKind::TooLarge { bytes },
                ReadError::Io(e) => MidiErrorKind::Io(e),
            },
        )
    })?;
    parse(&bytes, &label)
}

/// Parses `.mid` bytes; `label` names them in errors. Never panics, whatever the bytes.
pub fn parse(bytes: &[u8], label: &str) -> Result<Performance, MidiError> {
    if declares_smpte_timing(bytes) {
        return Err(MidiError::new(label, MidiErrorKind::SmpteTiming));
    }
    if has_unparseable_header(bytes) {
        return Err(MidiError::new(
            label,
            MidiErrorKind::Malformed("a second header chunk with an invalid frame rate".into()),
        ));
    }
    let smf = Smf::parse(bytes)
        .map_err(|e| MidiError::new(label, MidiErrorKind::Malformed(e.to_string())))?;
    let ticks_per_beat = match smf.header.timing {
        Timing::Metrical(t) => t.as_int(),
        Timing::Timecode(..) => return Err(MidiError::new(label, MidiErrorKind::SmpteTiming)),
    };
    if ticks_per_beat == 0 {
        return Err(MidiError::new(label, MidiErrorKind::ZeroTicksPerBeat));
    }
    if smf.header.format == Format::Sequential {
        return Err(MidiError::new(label, MidiErrorKind::Format2));
    }
    let max_tick = MAX_BARS * STEPS_PER_BAR as u64 * ticks_per_beat as u64 / STEPS_PER_BEAT as u64;
    let too_long = |tick: u64| {
        MidiError::new(
            label,
            MidiErrorKind::TooLong {
                bars: tick / (4 * ticks_per_beat as u64),
            },
        )
    };

    // (tick, track, index in track) keeps file order within a tick when tracks are merged.
    let mut onsets: Vec<(u64, (usize, usize), Onset)> = Vec::new();
    let mut tempos = Vec::new();
    let mut time_signatures = Vec::new();
    let mut end_tick = 0u64;
    for (track_index, track) in smf.tracks.iter().enumerate() {
        let mut tick = 0u64;
        for (i, event) in track.iter().enumerate() {
            tick += event.delta.as_int() as u64;
            if tick > max_tick {
                return Err(too_long(tick));
            }
            end_tick = end_tick.max(tick);
            match event.kind {
                TrackEventKind::Midi { channel, message } => {
                    if let MidiMessage::NoteOn { key, vel } = message
                        && vel.as_int() > 0
                    {
                        let onset = Onset {
                            tick,
                            seconds: 0.0,
                            pitch: key.as_int(),
                            velocity: vel.as_int(),
                            channel: channel.as_int(),
                        };
                        onsets.push((tick, (track_index, i), onset));
                    }
                }
                TrackEventKind::Meta(MetaMessage::Tempo(t)) => tempos.push((tick, t.as_int())),
                TrackEventKind::Meta(MetaMessage::TimeSignature(num, den_pow, _, _)) => {
                    time_signatures.push((
                        tick,
                        num,
                        1u32.checked_shl(den_pow as u32).unwrap_or(0),
                    ));
                }
                _ => {}
            }
        }
    }
    onsets.sort_by_key(|&(tick, order, _)| (tick, order));
    time_signatures.sort_by_key(|&(t, _, _)| t);
    let tempo = TempoMap::new(ticks_per_beat, tempos);
    let onsets = onsets
        .into_iter()
        .map(|(tick, _, mut o)| {
            o.seconds = tempo.seconds_at(tick);
            o
        })
        .collect();
    Ok(Performance {
        ticks_per_beat,
        onsets,
        tempo,
        time_signatures,
        end_tick,
    })
}

/// Whether the header's division word has its top bit set (SMPTE timing). Checked before midly
/// parses the header because midly 0.5.3 negates the frame-rate byte as an `i8`, which overflows
/// (a panic in debug builds) for the byte 0x80. The header is searched for in the first bytes so
/// that RIFF-wrapped (RMID) files are covered too.
fn declares_smpte_timing(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(64)];
    head.windows(4)
        .position(|w| w == b"MThd")
        .and_then(|at| bytes.get(at + 12))
        .is_some_and(|&division_high| division_high & 0x80 != 0)
}

/// Whether any later `MThd` chunk carries the frame-rate byte 0x80 that midly cannot negate: midly
/// parses every `MThd` chunk it meets among the tracks as a header (found by the fuzz target).
/// A file with such a second header is malformed anyway. The scan is over raw bytes, so in the
/// astronomically rare case that track data holds these bytes the file is refused, never a panic.
fn has_unparseable_header(bytes: &[u8]) -> bool {
    bytes
        .windows(4)
        .enumerate()
        .skip(1)
        .any(|(at, w)| w == b"MThd" && bytes.get(at + 12) == Some(&0x80))
}

/// A performance quantised to the 16th-note grid over its whole length.
#[derive(Clone, Debug)]
pub struct Grid {
    /// Length in bars: the end of the performance rounded to the nearest bar line (a final bar
    /// that is at least half played counts), as the TFDS `groove` builder does.
    pub bars: usize,
    /// Steps that hold at least one hit, with their cells.
    steps: BTreeMap<u64, [Cell; VOICES]>,
    /// Onsets whose pitch maps to no voice, per pitch.
    pub dropped_pitches: BTreeMap<u8, u64>,
    /// Onsets that lost to a louder hit of the same voice on the same step.
    pub merged_hits: u64,
    /// Tempo map of the source, for step -> seconds.
    pub tempo: TempoMap,
    /// Ticks per 16th step in the source.
    pub ticks_per_step: f64,
}

impl Performance {
    /// Fails with [`MidiErrorKind::UnsupportedMetre`] unless every time signature is 4/4.
    pub fn check_four_four(&self, label: &str) -> Result<(), MidiError> {
        for &(tick, numerator, denominator) in &self.time_signatures {
            if (numerator, denominator) != (4, 4) {
                return Err(MidiError::new(
                    label,
                    MidiErrorKind::UnsupportedMetre {
                        numerator,
                        denominator,
                        bar: tick / (4 * self.ticks_per_beat as u64) + 1,
                    },
                ));
            }
        }
        Ok(())
    }

    /// Position of `tick` in 16th-note steps.
    pub fn step_position(&self, tick: u64) -> f64 {
        tick as f64 * STEPS_PER_BEAT as f64 / self.ticks_per_beat as f64
    }

    /// Quantises every onset to its nearest step (see the module docs for the rules) and keeps the
    /// louder of two hits on one voice and step (the earlier one on a tie).
    pub fn quantize(&self) -> Grid {
        let mut steps: BTreeMap<u64, [Cell; VOICES]> = BTreeMap::new();
        let mut dropped_pitches = BTreeMap::new();
        let mut merged_hits = 0;
        for onset in &self.onsets {
            let Some(voice) = Voice::from_pitch(onset.pitch) else {
                *dropped_pitches.entry(onset.pitch).or_insert(0) += 1;
                continue;
            };
            let position = self.step_position(onset.tick);
            let step = (position + 0.5).floor();
            let cell = Cell::hit(onset.velocity as f32 / 127.0, (position - step) as f32);
            let slot = &mut steps.entry(step as u64).or_insert([Cell::REST; VOICES])[voice.index()];
            if slot.hit {
                merged_hits += 1;
                if cell.velocity <= slot.velocity {
                    continue;
                }
            }
            *slot = cell;
        }
        let end_steps = self.step_position(self.end_tick);
        let bars = (end_steps / STEPS_PER_BAR as f64).round() as usize;
        Grid {
            bars,
            steps,
            dropped_pitches,
            merged_hits,
            tempo: self.tempo.clone(),
            ticks_per_step: self.ticks_per_beat as f64 / STEPS_PER_BEAT as f64,
        }
    }
}

impl Grid {
    /// The pattern of `BARS` bars starting at bar `start_bar` (0-based). Steps past the end are
    /// rests.
    pub fn pattern_at(&self, start_bar: usize) -> Pattern {
        let first = (start_bar * STEPS_PER_BAR) as u64;
        let mut p = Pattern::EMPTY;
        for (&step, cells) in self.steps.range(first..first + STEPS as u64) {
            p.cells[(step - first) as usize] = *cells;
        }
        p
    }

    /// Number of 4-bar windows with a 1-bar hop: `bars - 3`, or 0 for a file under 4 bars.
    pub fn window_count(&self) -> usize {
        (self.bars + 1).saturating_sub(BARS)
    }

    /// Every 4-bar window with a 1-bar hop, as `(start bar, pattern)`.
    pub fn windows(&self) -> impl Iterator<Item = (usize, Pattern)> + '_ {
        (0..self.window_count()).map(|b| (b, self.pattern_at(b)))
    }

    /// How many 4-bar grooves a user can pick from this file: its windows (1-bar hop) when it is
    /// at least 4 bars long, else one, the loop repeated to fill 4 bars (see [`Grid::looped`]).
    pub fn groove_count(&self) -> usize {
        if self.bars >= BARS {
            self.window_count()
        } else {
            1
        }
    }

    /// Groove `index` (0-based) of [`Grid::groove_count`]: a 4-bar window of a long file, or the
    /// repeated loop of a short one. `label` names the file in errors, which number windows from
    /// 1 as the CLI and the editor do.
    pub fn groove(&self, index: usize, label: &str) -> Result<Pattern, WindowError> {
        if self.hit_count() == 0 {
            return Err(WindowError::NoHits {
                file: label.to_string(),
            });
        }
        let count = self.groove_count();
        if index >= count {
            return Err(WindowError::NoSuchWindow {
                file: label.to_string(),
                window: index + 1,
                count,
                bars: self.bars,
            });
        }
        Ok(if self.bars >= BARS {
            self.pattern_at(index)
        } else {
            self.looped()
        })
    }

    /// A loop shorter than 4 bars repeated to fill 4: a 1-bar loop plays four times, 2 bars twice,
    /// 3 bars as bars 1, 2, 3, 1. The loop is `bars` long (the file's length rounded to the nearest
    /// bar, at least 1), so a partial last bar under half a bar is dropped and one at least half
    /// played is filled with rests. A hit quantised onto the step just past the loop's end (the
    /// next repetition's downbeat played early) becomes the downbeat with its negative offset,
    /// unless that voice already hits there; hits further out are outside the loop and ignored.
    pub fn looped(&self) -> Pattern {
        let len = (self.bars.clamp(1, BARS) * STEPS_PER_BAR) as u64;
        let mut one = [[Cell::REST; VOICES]; STEPS];
        for (&step, cells) in self.steps.range(0..len) {
            one[step as usize] = *cells;
        }
        if let Some(wrapped) = self.steps.get(&len) {
            for (v, cell) in wrapped.iter().enumerate() {
                if cell.hit && !one[0][v].hit {
                    one[0][v] = *cell;
                }
            }
        }
        let mut p = Pattern::EMPTY;
        for (step, row) in p.cells.iter_mut().enumerate() {
            *row = one[step % len as usize];
        }
        p
    }

    /// Tempo in BPM at the start of bar `bar`.
    pub fn bpm_at_bar(&self, bar: usize) -> f64 {
        let tick = (bar * STEPS_PER_BAR) as f64 * self.ticks_per_step;
        self.tempo.bpm_at(tick as u64)
    }

    /// Hits on the grid (after merging).
    pub fn hit_count(&self) -> usize {
        self.steps
            .values()
            .map(|row| row.iter().filter(|c| c.hit).count())
            .sum()
    }
}

/// Reads a file, checks it is 4/4 and quantises it.
pub fn read_grid(path: &Path) -> Result<Grid, MidiError> {
    let performance = read_file(path)?;
    performance.check_four_four(&path.display().to_string())?;
    Ok(performance.quantize())
}

/// How patterns are written to a `.mid` file.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteOptions {
    /// Tempo written into the file.
    pub bpm: f64,
    /// Clock resolution. 480 is what the GMD and most DAWs use.
    pub ticks_per_beat: u16,
    /// MIDI channel, 0-based (9 = General MIDI drums, "channel 10").
    pub channel: u8,
    /// Output pitch per voice, in [`Voice`] order.
    pub pitches: [u8; VOICES],
    /// Note length in steps; a note is cut short where the same pitch strikes again.
    pub note_length_steps: f64,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            bpm: 120.0,
            ticks_per_beat: 480,
            channel: 9,
            pitches: crate::groove::DEFAULT_OUTPUT_PITCHES,
            note_length_steps: 0.5,
        }
    }
}

/// Writes patterns back to back (pattern `i` starts at bar `4 i`) as a type 1 `.mid` file: a tempo
/// track with the tempo and 4/4, then one drum track. Onsets are the grid steps shifted by their
/// offsets; an early hit on the very first step cannot go before tick 0 and is written at 0.
pub fn write_patterns(patterns: &[Pattern], options: &WriteOptions) -> Vec<u8> {
    let tpb = options.ticks_per_beat.clamp(1, 0x7fff);
    let ticks_per_step = tpb as f64 / STEPS_PER_BEAT as f64;

    // (tick, pitch, velocity); velocity 0 = off. Sorted so that offs come before ons at a tick.
    let mut ons: Vec<(u64, u8, u8)> = Vec::new();
    for (i, p) in patterns.iter().enumerate() {
        for (s, row) in p.cells.iter().enumerate() {
            for (v, cell) in row.iter().enumerate() {
                if !cell.hit {
                    continue;
                }
                let step = (i * STEPS + s) as f64;
                let tick = onset_tick(step, cell.offset as f64, ticks_per_step);
                let velocity = (cell.velocity * 127.0).round().clamp(1.0, 127.0) as u8;
                ons.push((tick, options.pitches[v].min(127), velocity));
            }
        }
    }
    ons.sort();
    let length = ((options.note_length_steps * ticks_per_step).round() as u64).max(1);
    let mut events: Vec<(u64, u8, u8)> = Vec::with_capacity(ons.len() * 2);
    for (i, &(tick, pitch, velocity)) in ons.iter().enumerate() {
        let next_same = ons[i + 1..]
            .iter()
            .find(|&&(t, p, _)| p == pitch && t > tick)
            .map(|&(t, _, _)| t);
        let off = next_same.map_or(tick + length, |n| n.min(tick + length));
        events.push((tick, pitch, velocity));
        events.push((off, pitch, 0));
    }
    // Offs (velocity 0) sort before ons at the same tick, so a retrigger never gets cut.
    events.sort_by_key(|&(t, p, v)| (t, v != 0, p));

    let notes: Vec<TimedNote> = events
        .into_iter()
        .map(|(tick, pitch, velocity)| TimedNote {
            tick,
            channel: options.channel,
            pitch,
            velocity,
        })
        .collect();
    // End the track at the last pattern's end (or the last note-off, if later), so a pattern
    // that ends in rests keeps all its bars when read back.
    let end = ((patterns.len() * STEPS) as f64 * ticks_per_step).round() as u64;
    write_notes(&notes, options.bpm, tpb, end)
}

/// One MIDI note event at an absolute tick; velocity 0 = note-off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimedNote {
    pub tick: u64,
    /// 0-based MIDI channel (values above 15 are clamped).
    pub channel: u8,
    pub pitch: u8,
    pub velocity: u8,
}

/// Writes notes, already in time order, as a type 1 `.mid` file: a tempo track (tempo, 4/4) and
/// one note track that ends at `end_tick` or at the last note, whichever is later.
pub fn write_notes(notes: &[TimedNote], bpm: f64, ticks_per_beat: u16, end_tick: u64) -> Vec<u8> {
    let tpb = ticks_per_beat.clamp(1, 0x7fff);
    let micros = (60e6 / bpm.clamp(1.0, 1000.0)).round() as u32;
    let tempo_track = vec![
        meta(0, MetaMessage::Tempo(u24::new(micros))),
        meta(0, MetaMessage::TimeSignature(4, 2, 24, 8)),
        meta(0, MetaMessage::EndOfTrack),
    ];
    let mut track = Vec::with_capacity(notes.len() + 1);
    let mut last = 0u64;
    for n in notes {
        let key = u7::new(n.pitch.min(127));
        let message = if n.velocity == 0 {
            MidiMessage::NoteOff {
                key,
                vel: u7::new(0),
            }
        } else {
            MidiMessage::NoteOn {
                key,
                vel: u7::new(n.velocity.min(127)),
            }
        };
        let tick = n.tick.max(last);
        track.push(TrackEvent {
            delta: u28::new((tick - last).min(0x0fff_ffff) as u32),
            kind: TrackEventKind::Midi {
                channel: u4::new(n.channel.min(15)),
                message,
            },
        });
        last = tick;
    }
    track.push(meta(
        end_tick.saturating_sub(last).min(0x0fff_ffff) as u32,
        MetaMessage::EndOfTrack,
    ));
    let header = Header::new(Format::Parallel, Timing::Metrical(u15::new(tpb)));
    let mut out = Vec::new();
    midly::write_std(&header, [&tempo_track, &track], &mut out)
        .expect("writing to a Vec cannot fail");
    out
}

/// The tick of an onset at grid `step` + `offset`, rounded to the nearest tick but kept inside the
/// ticks that quantise back to `step` (rounding an offset of 0.499 up to the half-step boundary
/// would move the hit to the next step when the file is read again). Never before tick 0.
fn onset_tick(step: f64, offset: f64, ticks_per_step: f64) -> u64 {
    let first = ((step - 0.5) * ticks_per_step).ceil();
    let last = ((step + 0.5) * ticks_per_step).ceil() - 1.0;
    ((step + offset) * ticks_per_step)
        .round()
        .clamp(first, last.max(first))
        .max(0.0) as u64
}

fn meta(delta: u32, message: MetaMessage<'static>) -> TrackEvent<'static> {
    TrackEvent {
        delta: u28::new(delta),
        kind: TrackEventKind::Meta(message),
    }
}

/// Writes patterns to `path` atomically (temporary file + rename), so a crash never leaves a
/// half-written file.
pub fn write_file(
    path: &Path,
    patterns: &[Pattern],
    options: &WriteOptions,
) -> std::io::Result<()> {
    crate::atomic_file::write(path, &write_patterns(patterns, options))
}

impl fmt::Display for Performance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} onsets, {} ticks per beat, tempo",
            self.onsets.len(),
            self.ticks_per_beat
        )?;
        for (tick, bpm) in self.tempo.changes() {
            write!(f, " {bpm:.2} BPM @ tick {tick}")?;
        }
        Ok(())
    }
}
