//! The sequencer: plays the current 4-bar [`Pattern`] in time with the host transport and turns it
//! into note-on / note-off events at sample offsets inside each audio block. Runs on the AUDIO
//! THREAD (called from the plugin's `process()`), and in the offline `render` command over a
//! simulated transport; it knows no plugin or host types. [`Sequencer::process`] never allocates,
//! locks or blocks: all state lives in fixed-size arrays owned by the [`Sequencer`].
//!
//! # Timeline
//! The pattern loops on the host's beat timeline (quarter notes, 4/4): song beat 0.0 (bar 1 beat 1)
//! is pattern step 0, and absolute 16th step `k` of the song plays pattern step
//! `(k - 16 * bar_offset) mod 64`, so `bar_offset = 1` starts the pattern one bar later. A hit in
//! absolute step `k` with offset `o` sounds at
//!
//! ```text
//! beat = ((k + o * timing_amount) + swing_shift(k)) / 4
//! swing_shift(k) = swing / 3 steps if k is odd (the "e" and "a" 16ths), else 0
//! ```
//!
//! so swing 0 is straight, 0.5 is about 58 % (MPC-style), and 1 is a full triplet feel (the second
//! 16th of each pair at 2/3 of the 8th). An early hit of step 0 therefore falls at the end of the
//! previous loop iteration, and a late hit of step 63 at the start of the next.
//!
//! # Samples
//! A beat sounds at absolute sample `anchor_sample + round((beat - anchor_beat) * (60 / tempo *
//! sample_rate))` ([`f64::round`]: half away from zero), where the anchor is the first sample of
//! the block where play started, the tempo (or sample rate) last changed, or the host position
//! last moved away from the clock by more than [`RESYNC_SAMPLES`] (see `clock.rs`); after each
//! wrap of a host loop the anchor's beat is one loop length lower. For a steady tempo that is the
//! block-start formula `round((beat - block_start_beat) * 60 / tempo * sample_rate)`, computed
//! once from the anchor so the result is exact and identical for every block size. An event
//! belongs to the block whose `[start, end)` sample range contains it; within a block events come
//! in time order, and at one sample all note-offs come before all note-ons.
//!
//! # Notes
//! Each note-on's note-off follows `note_length_steps` later (measured at the tempo of the block
//! the note starts in, at least one sample), earlier if the same channel and pitch is struck again:
//! then the old note ends at the new one's sample, just before it. Two hits on one channel and
//! pitch at the same sample play once (the earlier-timed hit, then the lower voice, wins). Every
//! grid step of every voice triggers at most once per pass of the playhead, even when settings,
//! tempo or the pattern change under it.
//!
//! # Transport
//! - Stop: the first stopped block ends every sounding note at sample 0.
//! - Start, seek, loop jump (the host position differs from where the previous block ended by more
//!   than [`JUMP_TOLERANCE_BEATS`]): sounding notes end at sample 0 and playing resumes at the new
//!   position with no catch-up: only hits of grid steps at or after it are played. Those steps'
//!   early hits that fall before the position play at sample 0 (pressing play on a bar line keeps
//!   that bar's slightly early downbeat); late hits of earlier steps that fall after it play on
//!   time.
//! - Smaller differences re-anchor on the host (hits in a skipped sliver play at sample 0, hits
//!   already played are not repeated).
//! - Tempo changes between blocks: each block takes its tempo from the transport at its start.
//! - Host loop ([`Transport::loop_beats`], for hosts that do not split their blocks at the loop
//!   end): while the playhead is before the loop end, the block that reaches it plays the hits
//!   before the loop end's sample, then the playhead wraps to the loop start at exactly that
//!   sample. A pass begins like a start at the loop start (its grid steps' early hits sound at the
//!   wrap sample, every other hit at or after the loop start on time, so the loop start's downbeat
//!   sounds on the wrap sample), except that sounding notes play on to their note-offs. A short
//!   loop wraps as often as it ends within one block. The next block's host position, folded back
//!   into the loop, continues the clock. Hits of grid steps at or after the loop end (even their
//!   early hits, which would double the loop start's downbeat) do not play while the loop is on,
//!   and neither do hits that fall at or after the loop end's sample. A host that splits its block
//!   at the loop end and reports the loop start there (within the jump tolerance of the clock's
//!   loop end) wraps at that block's first sample. A playhead started at or past the loop end
//!   plays on, as hosts do. Ranges the sequencer cannot honour (reversed, shorter than
//!   [`MIN_LOOP_BEATS`], non-finite, huge) count as no loop: the host's jump back is then a jump.
//! - No host position (`pos_beats: None`): a free-running clock starts at beat 0 when play starts
//!   and advances with the samples processed, at the transport's tempo (120 BPM if it has none).
//!
//! # Pattern switches
//! [`Sequencer::set_pattern_pending`] hands in the next pattern; the switch happens on the beat
//! timeline at the next bar line, beat or 16th step ([`SwitchAt`]): steps before the switch step
//! come from the old pattern (late hits included), steps from it on from the new (early hits
//! included). The switch step is the first one whose earliest possible hit (offset -0.5 scaled by
//! `timing_amount`) is still ahead of the playhead, so no step ever plays from both patterns.
//! While stopped, and on a start, jump or loop wrap, the pending pattern takes over at once, and
//! the newest pattern then owns every step (a playhead back before an earlier switch step does not
//! bring the older pattern back).
//! [`Sequencer::switch_count`] counts switches, so the caller knows when to hand the old pattern
//! back to the worker. [`Sequencer::next_switch`] tells where a pattern handed in now would take
//! over and how many samples remain before it no longer can (the plugin cues its worker with it:
//! `generator/cue.rs`).

mod clock;
mod host_loop;
mod notes;

pub use clock::{
    DEFAULT_TEMPO_BPM, FALLBACK_SAMPLE_RATE, JUMP_TOLERANCE_BEATS, MAX_POSITION_BEATS,
    RESYNC_SAMPLES, TEMPO_RANGE_BPM,
};
pub use host_loop::{MIN_LOOP_BEATS, MIN_LOOP_SAMPLES};

use crate::groove::{
    DEFAULT_OUTPUT_PITCHES, Pattern, STEPS, STEPS_PER_BAR, STEPS_PER_BEAT, VOICES,
};
use clock::{Clock, Sync};
use host_loop::HostLoop;
use notes::{Key, SoundingNotes};

/// Largest `timing_amount`: offsets doubled.
pub const MAX_TIMING_AMOUNT: f32 = 2.0;
/// How far full swing (`swing = 1`) delays an odd 16th, in steps: a triplet feel.
pub const FULL_SWING_STEPS: f64 = 1.0 / 3.0;
/// Longest note, in steps (one pattern).
pub const MAX_NOTE_LENGTH_STEPS: f32 = STEPS as f32;

/// How far below the block end's first beat the "already handled" floor is kept, in beats: covers
/// the rounding of that bound; hits in the margin were marked as played and are not repeated.
const FLOOR_MARGIN_BEATS: f64 = 1e-7;
/// Candidates gathered per 16th-step time slice: hits of steps `j - 1 ..= j + 1` can land in slice
/// `j` (offsets reach one step early and 1 1/3 steps late with timing 200 % and full swing).
const SLICE_CAPACITY: usize = 3 * VOICES;
/// Note-ons buffered while they share one sample (so their retrigger note-offs go first). At most
/// 3 steps x 9 voices can share one (catch-up is bounded by the jump tolerance, and a restart or
/// loop wrap gathers only early hits, at most a step early), so it never fills.
const GROUP_CAPACITY: usize = 64;
/// Steps remembered as played; hits move at most 2 1/3 steps, so 16 is plenty.
const PLAYED_SLOTS: usize = 16;

/// The host transport at the first sample of one block.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transport {
    /// Whether the host is playing. The first block with `false` ends all sounding notes; nothing
    /// plays while stopped. Without a host transport the caller decides (e.g. "always run").
    pub playing: bool,
    /// Tempo in quarter notes per minute for this block (hosts report it per block). Non-finite or
    /// non-positive means unknown: 120 is used. Clamped into [`TEMPO_RANGE_BPM`].
    pub tempo_bpm: f64,
    /// Host position in quarter notes at the block's first sample, or `None` when the host gives
    /// none (then the sequencer runs its own clock). Non-finite, or beyond
    /// [`MAX_POSITION_BEATS`], counts as `None`.
    pub pos_beats: Option<f64>,
    /// Samples per second; converts beats to sample offsets.
    pub sample_rate: f64,
    /// The host's loop (cycle) range in quarter notes, `(start, end)` with the end exclusive, while
    /// looping is on; `None` when it is off or unknown. Needed for hosts that do not split their
    /// blocks at the loop end: the sequencer then wraps from the end to the start at the exact
    /// sample (see "Transport" above). A range it cannot honour counts as `None`.
    pub loop_beats: Option<(f64, f64)>,
}

/// Where a pending pattern takes over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SwitchAt {
    /// At the next bar line (every 16 steps of the song): keeps phrases intact.
    #[default]
    NextBar,
    /// At the next quarter note.
    NextBeat,
    /// At the first 16th step whose hits, even the earliest (offset -0.5 x timing), are all still
    /// ahead of the playhead: one or two steps away.
    Immediately,
}

impl SwitchAt {
    /// The grid the switch step is a multiple of, in steps.
    fn grid_steps(self) -> i64 {
        match self {
            SwitchAt::NextBar => STEPS_PER_BAR as i64,
            SwitchAt::NextBeat => STEPS_PER_BEAT as i64,
            SwitchAt::Immediately => 1,
        }
    }
}

/// How the pattern is played; the plugin fills it from its parameters every block.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    /// MIDI channel, 0-based (9 = "channel 10", General MIDI drums); taken modulo 16.
    pub channel: u8,
    /// Output pitch per voice, in model order, so each voice can be mapped to any kit; taken
    /// modulo 128.
    pub pitches: [u8; VOICES],
    /// Scales every micro-timing offset: 0 = quantised to the grid, 1 = as generated, 2 =
    /// exaggerated. Clamped to `0..=2`; NaN means 1.
    pub timing_amount: f32,
    /// `0..=1`: delays odd 16ths by `swing / 3` of a step, on top of the offsets. Clamped; NaN
    /// means 0.
    pub swing: f32,
    /// Multiplies velocities (1 = as generated). A note whose MIDI velocity rounds to 0 is not
    /// played (velocity 0 would mean note-off); results above 127 clamp. NaN means 1.
    pub velocity_scale: f32,
    /// Note length in 16th steps (note-off after that long, at least one sample); drums mostly
    /// ignore it, samplers with "gate" mode do not. Clamped to `0..=64`; NaN means 1.
    pub note_length_steps: f32,
    /// Voices that stay silent (their hits still count as played, so unmuting never replays one).
    pub mutes: [bool; VOICES],
    /// Bars the pattern start is moved later on the song timeline (negative = earlier), so its
    /// first bar can land on any song bar; only its value modulo 4 matters.
    pub bar_offset: i32,
    /// Where a pending pattern takes over.
    pub switch_at: SwitchAt,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            channel: 9,
            pitches: DEFAULT_OUTPUT_PITCHES,
            timing_amount: 1.0,
            swing: 0.0,
            velocity_scale: 1.0,
            note_length_steps: 1.0,
            mutes: [false; VOICES],
            bar_offset: 0,
            switch_at: SwitchAt::NextBar,
        }
    }
}

/// One MIDI note event for the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NoteEvent {
    /// Offset from the block's first sample, always `< block_len`.
    pub sample: u32,
    /// MIDI pitch, 0..=127.
    pub pitch: u8,
    /// MIDI velocity: 1..=127 for a note-on, 0 for a note-off.
    pub velocity: u8,
    /// MIDI channel, 0-based (0..=15).
    pub channel: u8,
    /// Note-on (`true`) or note-off (`false`).
    pub on: bool,
}

impl NoteEvent {
    fn off(key: Key, sample: u32) -> NoteEvent {
        NoteEvent {
            sample,
            pitch: key.pitch(),
            velocity: 0,
            channel: key.channel(),
            on: false,
        }
    }
}

/// The next switch point, as [`Sequencer::next_switch`] sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NextSwitch {
    /// The absolute song step (16ths from song beat 0) a pattern handed in now takes over at.
    pub step: i64,
    /// Samples from the next block's first sample to the step's deadline (negative once past).
    pub samples_left: f64,
}

/// A pattern waiting for its switch step.
#[derive(Clone, Copy)]
struct Scheduled {
    pattern: Pattern,
    /// First absolute song step it plays.
    step: i64,
}

/// Settings sanitised and converted for one block.
struct Play {
    channel: u8,
    pitches: [u8; VOICES],
    timing: f64,
    swing_steps: f64,
    velocity_scale: f32,
    note_samples: i64,
    mutes: [bool; VOICES],
    bar_offset_steps: i64,
    switch_at: SwitchAt,
}

impl Play {
    fn new(s: &Settings, samples_per_beat: f64) -> Play {
        let or = |x: f32, nan: f32| if x.is_nan() { nan } else { x };
        let length = or(s.note_length_steps, 1.0).clamp(0.0, MAX_NOTE_LENGTH_STEPS);
        Play {
            channel: s.channel & 0x0f,
            pitches: s.pitches.map(|p| p & 0x7f),
            timing: f64::from(or(s.timing_amount, 1.0).clamp(0.0, MAX_TIMING_AMOUNT)),
            swing_steps: f64::from(or(s.swing, 0.0).clamp(0.0, 1.0)) * FULL_SWING_STEPS,
            velocity_scale: or(s.velocity_scale, 1.0).max(0.0),
            note_samples: ((f64::from(length) / STEPS_PER_BEAT as f64 * samples_per_beat).round()
                as i64)
                .max(1),
            mutes: s.mutes,
            bar_offset_steps: i64::from(s.bar_offset) * STEPS_PER_BAR as i64,
            switch_at: s.switch_at,
        }
    }

    /// MIDI velocity of a cell, 0 = do not play.
    fn velocity(&self, cell_velocity: f32) -> u8 {
        (cell_velocity * self.velocity_scale * 127.0)
            .round()
            .clamp(0.0, 127.0) as u8
    }
}

/// A note-on found in a slice, before it is merged with note-offs.
#[derive(Clone, Copy)]
struct Candidate {
    /// Time in steps on the song timeline (sort key).
    step_time: f64,
    voice: u8,
    /// Absolute sample, at least the block start.
    sample: i64,
    key: Key,
    velocity: u8,
}

impl Candidate {
    const NONE: Candidate = Candidate {
        step_time: 0.0,
        voice: 0,
        sample: 0,
        key: Key::new(0, 0),
        velocity: 0,
    };
}

/// A stretch of one block that the playhead crosses without wrapping: the whole block, or the part
/// before or after a host-loop wrap.
#[derive(Clone, Copy)]
struct Span {
    /// First absolute sample; early hits of a restart that fall before it sound here.
    from: i64,
    /// Absolute sample after the last one.
    until: i64,
    /// In a span that (re)starts the playhead (start, jump, loop wrap): the first grid step at or
    /// after the new position. Its early hits, and any later step's, that fall before the position
    /// still play, at `from`: a start on a bar line keeps that bar line's early downbeat.
    restart: Option<i64>,
    /// Hits of this grid step and later ones do not play: the first step past the loop end the
    /// playhead is heading for ([`HostLoop::end_step`]); `i64::MAX` without a loop.
    step_limit: i64,
}

/// Note-ons that share one absolute sample, held back until the next sample comes so that every
/// note-off due at theirs goes first ([`play_group`]).
struct Group {
    notes: [Candidate; GROUP_CAPACITY],
    len: usize,
}

impl Group {
    fn new() -> Group {
        Group {
            notes: [Candidate::NONE; GROUP_CAPACITY],
            len: 0,
        }
    }

    /// Adds a note-on (in time order), playing the held ones first if it comes later.
    fn push(
        &mut self,
        c: Candidate,
        notes: &mut SoundingNotes,
        block_start: i64,
        play: &Play,
        out: &mut impl FnMut(NoteEvent),
    ) {
        if self.len > 0 && (self.notes[0].sample != c.sample || self.len == GROUP_CAPACITY) {
            self.flush(notes, block_start, play, out);
        }
        self.notes[self.len] = c;
        self.len += 1;
    }

    /// Plays the held note-ons.
    fn flush(
        &mut self,
        notes: &mut SoundingNotes,
        block_start: i64,
        play: &Play,
        out: &mut impl FnMut(NoteEvent),
    ) {
        play_group(notes, &self.notes[..self.len], block_start, play, out);
        self.len = 0;
    }
}

/// Which (step, voice) hits the playhead has already passed, for the last [`PLAYED_SLOTS`] steps.
struct Played {
    /// Per slot `step mod PLAYED_SLOTS`: the absolute step it holds and a bit per voice.
    slots: [(i64, u16); PLAYED_SLOTS],
}

impl Played {
    const EMPTY: (i64, u16) = (i64::MIN, 0);

    fn new() -> Played {
        Played {
            slots: [Self::EMPTY; PLAYED_SLOTS],
        }
    }

    fn clear(&mut self) {
        self.slots = [Self::EMPTY; PLAYED_SLOTS];
    }

    fn slot(step: i64) -> usize {
        step.rem_euclid(PLAYED_SLOTS as i64) as usize
    }

    fn contains(&self, step: i64, voice: usize) -> bool {
        let (s, mask) = self.slots[Self::slot(step)];
        s == step && mask & (1 << voice) != 0
    }

    fn mark(&mut self, step: i64, voice: usize) {
        let slot = &mut self.slots[Self::slot(step)];
        if slot.0 != step {
            *slot = (step, 0);
        }
        slot.1 |= 1 << voice;
    }
}

/// The audio-thread sequencer. Create it anywhere (it is about 70 KB, mostly the 16 x 128 note
/// table: box it inside the plugin if stack space matters), then call [`Sequencer::process`] once
/// per block.
pub struct Sequencer {
    /// The playing pattern: owns song steps from `current_from_step` on.
    current: Pattern,
    /// The pattern before the last switch: owns steps before `current_from_step` (their late hits
    /// can still sound after the switch).
    previous: Pattern,
    current_from_step: i64,
    /// The next pattern with its switch step, once the playhead has fixed it.
    scheduled: Option<Scheduled>,
    /// The next pattern as handed in, not yet given a switch step.
    pending: Option<Pattern>,
    switches: u64,
    clock: Clock,
    /// Absolute sample of the next block's first sample (counts every processed sample).
    next_block: i64,
    /// Hits before this beat are never played (already handled, or before a jump target), except
    /// the early hits of the restart step in the block that (re)starts the clock.
    floor_beat: f64,
    played: Played,
    notes: SoundingNotes,
}

impl Default for Sequencer {
    fn default() -> Self {
        Sequencer::new()
    }
}

impl Sequencer {
    /// A stopped sequencer holding the empty pattern.
    pub fn new() -> Sequencer {
        Sequencer::with_pattern(Pattern::EMPTY)
    }

    /// A stopped sequencer holding `pattern`.
    pub fn with_pattern(pattern: Pattern) -> Sequencer {
        Sequencer {
            current: pattern,
            previous: pattern,
            current_from_step: i64::MIN,
            scheduled: None,
            pending: None,
            switches: 0,
            clock: Clock::new(),
            next_block: 0,
            floor_beat: 0.0,
            played: Played::new(),
            notes: SoundingNotes::new(),
        }
    }

    /// Hands in the next pattern: it takes over at the next switch point ([`Settings::switch_at`]),
    /// or at once while stopped. A pattern handed in before the previous one took over replaces it.
    /// Never allocates (the pattern is copied into a fixed slot).
    pub fn set_pattern_pending(&mut self, pattern: Pattern) {
        self.pending = Some(pattern);
    }

    /// The pattern playing now (the one a pending pattern replaces at the switch point).
    pub fn current_pattern(&self) -> &Pattern {
        &self.current
    }

    /// Whether a pattern is waiting to take over.
    pub fn has_pending_pattern(&self) -> bool {
        self.pending.is_some() || self.scheduled.is_some()
    }

    /// How many times a pending pattern has taken over since creation. When it grows, the pattern
    /// that was current before is no longer played and can go back to the worker.
    pub fn switch_count(&self) -> u64 {
        self.switches
    }

    /// Where a pattern handed in before the next block would take over, and how long it may take
    /// to get here: the switch step on the [`Settings::switch_at`] grid, exactly as
    /// [`Sequencer::set_pattern_pending`] would schedule it (a pattern already scheduled there is
    /// replaced), and the samples from the next block's first sample to the step's *deadline*,
    /// the earliest one of its hits can sound (the step minus half a step times the timing
    /// amount, on the clock's sample grid). A pattern handed in at a block that starts after the
    /// deadline takes over at the switch point after. `None` while stopped. Never allocates.
    pub fn next_switch(&self, settings: &Settings) -> Option<NextSwitch> {
        if !self.clock.is_running() {
            return None;
        }
        let play = Play::new(settings, self.clock.samples_per_beat());
        let step = self.switch_step(&play, self.next_block);
        let deadline = (step as f64 - 0.5 * play.timing) / STEPS_PER_BEAT as f64;
        Some(NextSwitch {
            step,
            samples_left: self.clock.samples_until(deadline, self.next_block),
        })
    }

    /// Whether the clock runs (the last processed block was playing).
    pub fn is_playing(&self) -> bool {
        self.clock.is_running()
    }

    /// How many notes are on (waiting for their note-off).
    pub fn sounding_notes(&self) -> usize {
        self.notes.len()
    }

    /// Ends every sounding note at sample 0 (for a block the caller is emitting anyway, e.g. on
    /// deactivation) and stops the clock, so the next playing block starts afresh.
    pub fn release_all(&mut self, out: &mut impl FnMut(NoteEvent)) {
        release_all(&mut self.notes, out);
        self.clock = Clock::new();
    }

    /// Forgets the clock (the host has reset or restarted processing); keeps the patterns and
    /// the sounding notes, so the next block ends them at its sample 0 (a reset must never leave
    /// a note hanging in the instrument downstream).
    pub fn reset(&mut self) {
        self.clock = Clock::new();
        self.played.clear();
    }

    /// Plays one block of `block_len` samples: emits through `out`, in time order, every note-on
    /// and note-off whose sample falls in the block, with `sample < block_len`. Never allocates,
    /// locks or blocks.
    pub fn process(
        &mut self,
        transport: &Transport,
        block_len: u32,
        settings: &Settings,
        out: &mut impl FnMut(NoteEvent),
    ) {
        if block_len == 0 {
            return;
        }
        let start = self.next_block;
        let end = start + i64::from(block_len);
        self.next_block = end;

        let mut host_loop = HostLoop::of(transport);
        let mut restart = None;
        match self.clock.sync(transport, start, host_loop) {
            Sync::Stopped => {
                release_all(&mut self.notes, out);
                self.commit_all_pending();
                return;
            }
            Sync::Started { beat } | Sync::Jumped { beat } => {
                release_all(&mut self.notes, out);
                restart = Some(self.restart_at(beat));
                // A playhead put at or past the loop end plays on, as hosts do.
                host_loop = host_loop.filter(|lp| beat < lp.end());
            }
            Sync::Wrapped { loop_start } => restart = Some(self.restart_at(loop_start)),
            Sync::Continued => {
                // Never catch up on more than the jump tolerance, whatever happened before.
                self.floor_beat = self
                    .floor_beat
                    .max(self.clock.beat_at(start) - JUMP_TOLERANCE_BEATS);
            }
        }
        let play = Play::new(settings, self.clock.samples_per_beat());
        self.schedule_pending(&play, start);

        // One span up to each loop wrap in the block, then one to the block end.
        let mut group = Group::new();
        let mut from = start;
        loop {
            let mut span = Span {
                from,
                until: end,
                restart,
                step_limit: i64::MAX,
            };
            let mut wraps = None;
            if let Some(lp) = host_loop {
                // Samples from `from` to the loop end's sample; negative once the playhead has
                // passed it (then it plays on). Zero only in the block's first span: after a wrap
                // the loop end is at least `MIN_LOOP_SAMPLES` ahead again.
                let ahead = self.clock.samples_until(lp.end(), from);
                if ahead >= 0.0 {
                    span.step_limit = lp.end_step();
                    if ahead < (end - from) as f64 {
                        span.until = from + ahead as i64;
                        wraps = Some(lp);
                    }
                }
            }
            self.play_span(&span, &play, start, &mut group, out);
            let Some(lp) = wraps else {
                break;
            };
            self.clock.wrap_back(lp.len());
            restart = Some(self.restart_at(lp.start()));
            from = span.until;
        }
        group.flush(&mut self.notes, start, &play, out);
        release_due(&mut self.notes, end - 1, start, out);

        self.floor_beat = self
            .floor_beat
            .max(self.clock.first_beat_at_or_after(end) - FLOOR_MARGIN_BEATS);
        let clock = self.clock;
        if let Some(s) = self
            .scheduled
            .take_if(|s| clock.sample_of(s.step as f64 / STEPS_PER_BEAT as f64) < end)
        {
            self.commit(s.pattern, s.step);
        }
    }

    /// The playhead (re)starts at `beat` (start, jump or loop wrap): nothing before counts as
    /// played, and the newest pattern takes over and owns every step (a switch made later on the
    /// timeline must not hand the steps before it back to the older pattern when the playhead
    /// returns there). Returns the restart step: the first grid step at or after `beat`.
    fn restart_at(&mut self, beat: f64) -> i64 {
        self.commit_all_pending();
        self.current_from_step = i64::MIN;
        self.played.clear();
        self.floor_beat = beat;
        restart_step(beat)
    }

    /// Gathers the hits of one span slice by slice, in time order, and hands them to `group`.
    fn play_span(
        &mut self,
        span: &Span,
        play: &Play,
        block_start: i64,
        group: &mut Group,
        out: &mut impl FnMut(NoteEvent),
    ) {
        let mut first_slice = (self.floor_beat * 4.0).floor() as i64;
        if let Some(k) = span.restart {
            // Offsets reach at most one step early: the restart step's early hits lie in slice k-1.
            first_slice = first_slice.min(k - 1);
        }
        let last_slice = (self.clock.beat_at(span.until) * 4.0).floor() as i64 + 1;
        let mut slice = [Candidate::NONE; SLICE_CAPACITY];
        for j in first_slice..=last_slice {
            let n = self.collect_slice(j, play, span, &mut slice);
            let found = &mut slice[..n];
            found.sort_unstable_by(|a, b| {
                a.step_time
                    .total_cmp(&b.step_time)
                    .then(a.voice.cmp(&b.voice))
            });
            for &c in found.iter() {
                group.push(c, &mut self.notes, block_start, play, out);
            }
        }
    }

    /// The pattern that owns absolute song step `step`.
    fn pattern_for(&self, step: i64) -> &Pattern {
        match &self.scheduled {
            Some(s) if step >= s.step => &s.pattern,
            _ if step >= self.current_from_step => &self.current,
            _ => &self.previous,
        }
    }

    /// Gathers into `out` the playable hits whose time falls in 16th slice `j` (steps `[j, j+1)`),
    /// at or after the floor (or, in a span that restarts the playhead, of a step at or after
    /// `span.restart`), of a step before `span.step_limit`, before the span end, not yet played;
    /// marks them played (muted ones too). Returns how many were written.
    fn collect_slice(
        &mut self,
        j: i64,
        play: &Play,
        span: &Span,
        out: &mut [Candidate; SLICE_CAPACITY],
    ) -> usize {
        let mut n = 0;
        for k in (j - 1..=j + 1).filter(|&k| k < span.step_limit) {
            let pattern_step = (k - play.bar_offset_steps).rem_euclid(STEPS as i64) as usize;
            let row = self.pattern_for(k).cells[pattern_step];
            let swing = if k & 1 == 1 { play.swing_steps } else { 0.0 };
            for (voice, cell) in row.iter().enumerate() {
                if !cell.hit {
                    continue;
                }
                let step_time = k as f64 + f64::from(cell.offset) * play.timing + swing;
                if step_time.floor() as i64 != j {
                    continue;
                }
                let beat = step_time / STEPS_PER_BEAT as f64;
                let restarted = span.restart.is_some_and(|r| k >= r);
                if (beat < self.floor_beat && !restarted) || self.played.contains(k, voice) {
                    continue;
                }
                let sample = self.clock.sample_of(beat);
                if sample >= span.until {
                    continue;
                }
                self.played.mark(k, voice);
                let velocity = play.velocity(cell.velocity);
                if play.mutes[voice] || velocity == 0 {
                    continue;
                }
                out[n] = Candidate {
                    step_time,
                    voice: voice as u8,
                    sample: sample.max(span.from),
                    key: Key::new(play.channel, play.pitches[voice]),
                    velocity,
                };
                n += 1;
            }
        }
        n
    }

    /// The switch step a pattern handed in at the block starting at absolute sample `start`
    /// gets: the first on the switch grid whose earliest possible hit is still ahead.
    fn switch_step(&self, play: &Play, start: i64) -> i64 {
        let playhead = self.floor_beat.max(self.clock.beat_at(start));
        // The earliest a hit of step s can sound is s - 0.5 * timing (offsets are >= -0.5).
        let earliest = playhead * STEPS_PER_BEAT as f64 + 0.5 * play.timing;
        let grid = play.switch_at.grid_steps();
        (earliest / grid as f64).ceil() as i64 * grid
    }

    /// Gives a pending pattern its switch step, once nothing at or after that step has played.
    fn schedule_pending(&mut self, play: &Play, start: i64) {
        let Some(pattern) = self.pending else {
            return;
        };
        let step = self.switch_step(play, start);
        match &mut self.scheduled {
            None => {
                self.scheduled = Some(Scheduled { pattern, step });
                self.pending = None;
            }
            // Its switch step is still out of reach: swap in the newer pattern, same step.
            Some(s) if s.step >= step => {
                s.pattern = pattern;
                self.pending = None;
            }
            // Too late to replace: it waits for the scheduled one to take over.
            Some(_) => {}
        }
    }

    fn commit(&mut self, pattern: Pattern, from_step: i64) {
        self.previous = self.current;
        self.current = pattern;
        self.current_from_step = from_step;
        self.switches += 1;
    }

    /// Stopped, started or jumped: nothing to keep in phase with, the newest pattern takes over.
    fn commit_all_pending(&mut self) {
        if let Some(s) = self.scheduled.take() {
            self.commit(s.pattern, i64::MIN);
        }
        if let Some(p) = self.pending.take() {
            self.commit(p, i64::MIN);
        }
    }
}

/// Plays note-ons that share one absolute sample: first every note-off due by then, then the
/// note-offs of retriggered keys, then the note-ons (a key already started at this sample is not
/// started twice).
fn play_group(
    notes: &mut SoundingNotes,
    group: &[Candidate],
    start: i64,
    play: &Play,
    out: &mut impl FnMut(NoteEvent),
) {
    let Some(first) = group.first() else {
        return;
    };
    let at = first.sample;
    let offset = (at - start) as u32;
    release_due(notes, at, start, out);
    for c in group {
        if notes.is_sounding(c.key) && notes.started_at(c.key) != Some(at) {
            out(NoteEvent::off(c.key, offset));
            notes.end(c.key);
        }
    }
    for c in group {
        if notes.is_sounding(c.key) {
            continue;
        }
        out(NoteEvent {
            sample: offset,
            pitch: c.key.pitch(),
            velocity: c.velocity,
            channel: c.key.channel(),
            on: true,
        });
        notes.start(c.key, at, at + play.note_samples);
    }
}

/// Emits, in time order, the note-offs due at or before absolute sample `up_to`.
fn release_due(notes: &mut SoundingNotes, up_to: i64, start: i64, out: &mut impl FnMut(NoteEvent)) {
    while let Some((key, at)) = notes.earliest_off()
        && at <= up_to
    {
        out(NoteEvent::off(key, (at.max(start) - start) as u32));
        notes.end(key);
    }
}

/// Ends every sounding note at sample 0, lowest channel and pitch first.
fn release_all(notes: &mut SoundingNotes, out: &mut impl FnMut(NoteEvent)) {
    while let Some(key) = notes.lowest() {
        out(NoteEvent::off(key, 0));
        notes.end(key);
    }
}

/// The first 16th grid step at or after `beat`. Host positions carry rounding (CLAP's fixed point
/// has 31 fractional bits), so a position within 1e-6 step of a grid line counts as on it.
fn restart_step(beat: f64) -> i64 {
    (beat * STEPS_PER_BEAT as f64 - 1e-6).ceil() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groove::{Cell, Voice};

    fn transport(pos: Option<f64>) -> Transport {
        Transport {
            playing: true,
            tempo_bpm: 120.0,
            pos_beats: pos,
            sample_rate: 48_000.0,
            loop_beats: None,
        }
    }

    #[test]
    fn played_ring_remembers_steps_until_overwritten() {
        let mut p = Played::new();
        p.mark(-3, 8);
        assert!(p.contains(-3, 8) && !p.contains(-3, 7) && !p.contains(13, 8));
        p.mark(13, 0);
        assert!(!p.contains(-3, 8), "same slot, newer step");
        p.clear();
        assert!(!p.contains(13, 0));
    }

    #[test]
    fn settings_are_sanitised() {
        let s = Settings {
            channel: 19,
            pitches: [200; VOICES],
            timing_amount: f32::NAN,
            swing: 7.0,
            velocity_scale: -1.0,
            note_length_steps: 0.0,
            ..Settings::default()
        };
        let p = Play::new(&s, 24_000.0);
        assert_eq!((p.channel, p.pitches[0]), (3, 72));
        assert_eq!((p.timing, p.swing_steps), (1.0, FULL_SWING_STEPS));
        assert_eq!((p.velocity(1.0), p.note_samples), (0, 1));
        let p = Play::new(&Settings::default(), 24_000.0);
        assert_eq!(
            (p.velocity(1.0), p.velocity(0.5), p.note_samples),
            (127, 64, 6000)
        );
    }

    #[test]
    fn restart_step_is_the_grid_line_at_or_after_the_position_within_host_rounding() {
        assert_eq!(restart_step(4.0), 16);
        assert_eq!(
            restart_step(4.0 + 2f64.powi(-31)),
            16,
            "CLAP fixed-point rounding"
        );
        assert_eq!(restart_step(4.0 - 2f64.powi(-31)), 16);
        assert_eq!(restart_step(4.1), 17);
        assert_eq!(restart_step(-0.3), -1);
    }

    #[test]
    fn switch_step_is_the_first_grid_line_out_of_early_reach() {
        let mut seq = Sequencer::new();
        let settings = Settings::default();
        // 48 kHz, 120 BPM: a step is 6000 samples. Play to step 15.9, then hand a pattern in.
        seq.process(&transport(Some(0.0)), 95_400, &settings, &mut |_| {});
        seq.set_pattern_pending(Pattern::EMPTY);
        seq.process(
            &transport(Some(95_400.0 / 24_000.0)),
            1,
            &settings,
            &mut |_| {},
        );
        assert_eq!(
            seq.scheduled.map(|s| s.step),
            Some(32),
            "15.9 + 0.5 > 16: next bar"
        );
        let mut seq = Sequencer::new();
        seq.process(&transport(None), 6000 * 5 + 100, &settings, &mut |_| {});
        seq.set_pattern_pending(Pattern::EMPTY);
        let now = Settings {
            switch_at: SwitchAt::Immediately,
            timing_amount: 0.0,
            ..settings
        };
        seq.process(&transport(None), 1, &now, &mut |_| {});
        assert_eq!(
            seq.scheduled.map(|s| s.step),
            Some(6),
            "free clock at step 5.02"
        );
    }

    #[test]
    fn absurd_host_positions_count_as_none() {
        let mut p = Pattern::EMPTY;
        p.set(0, Voice::Kick, Cell::hit(1.0, 0.0));
        let mut seq = Sequencer::with_pattern(p);
        let mut ons = 0;
        for pos in [Some(1e300), Some(f64::INFINITY), Some(-1e15)] {
            seq.process(&transport(pos), 512, &Settings::default(), &mut |e| {
                ons += usize::from(e.on)
            });
        }
        assert_eq!(ons, 1, "free clock from beat 0: one kick");
    }

    /// Plays from beat 2 with a host loop over `bars` bars from beat 4, reporting each block's
    /// position folded back into the loop as a host that does not split its blocks does, in
    /// blocks from `sizes` (cycled) until `until`. Returns (absolute sample, note-on?, pitch).
    fn play_host_loop(
        pattern: Pattern,
        bars: f64,
        spb: f64,
        rate: f64,
        sizes: &[u32],
        until: i64,
    ) -> Vec<(i64, bool, u8)> {
        let (loop_start, loop_end) = (4.0, 4.0 + 4.0 * bars);
        let settings = Settings {
            note_length_steps: 24.0,
            ..Settings::default()
        };
        let mut seq = Sequencer::with_pattern(pattern);
        let mut log = Vec::new();
        let mut at = 0i64;
        for &size in sizes.iter().cycle() {
            if at >= until {
                break;
            }
            let len = i64::from(size).min(until - at);
            let unlooped = 2.0 + at as f64 / spb;
            let pos = if unlooped < loop_end {
                unlooped
            } else {
                loop_start + (unlooped - loop_end).rem_euclid(loop_end - loop_start)
            };
            let t = Transport {
                sample_rate: rate,
                tempo_bpm: 60.0 * rate / spb,
                loop_beats: Some((loop_start, loop_end)),
                ..transport(Some(pos))
            };
            seq.process(&t, len as u32, &settings, &mut |e| {
                log.push((at + i64::from(e.sample), e.on, e.pitch))
            });
            at += len;
        }
        let stopped = Transport {
            playing: false,
            ..transport(None)
        };
        seq.process(&stopped, 1, &settings, &mut |e| {
            log.push((at, e.on, e.pitch))
        });
        log
    }

    #[test]
    fn host_loops_of_one_to_four_bars_wrap_on_the_loop_ends_sample_in_any_block_size() {
        // A kick on song bar 2's line (the loop start), a snare on every other bar line, all on
        // the grid. Looping bars 2.. from beat 2 (the middle of bar 1), every bar line of the
        // unlooped clock, beat 2 + 4n from the start, is a bar line of the loop: n = 0 (beat 4)
        // and every `bars`-th after it are loop starts (kicks), the others snares.
        let mut pattern = Pattern::EMPTY;
        for bar in 0..4 {
            let voice = if bar == 1 { Voice::Kick } else { Voice::Snare };
            pattern.set(16 * bar, voice, Cell::hit(1.0, 0.0));
        }
        let (kick, snare) = (DEFAULT_OUTPUT_PITCHES[0], DEFAULT_OUTPUT_PITCHES[1]);
        // 48 kHz at 120 BPM (a bar is 96000 samples), and 44.1 kHz at 187.3 BPM (56508.27...:
        // the loop end falls between samples, anywhere in the blocks).
        for (rate, tempo) in [(48_000.0, 120.0), (44_100.0, 187.3)] {
            let spb = 60.0 / tempo * rate;
            for bars in 1..=4 {
                let passes = 3;
                let lines = 1 + passes * bars;
                let want: Vec<(i64, u8)> = (0..lines)
                    .map(|n| {
                        let sample = ((2.0 + 4.0 * n as f64) * spb).round() as i64;
                        (sample, if n % bars == 0 { kick } else { snare })
                    })
                    .collect();
                let until = want[want.len() - 1].0 + 1;
                let mut runs: Vec<&[u32]> = vec![&[7], &[4096], &[1, 4096, 333, 2, 4095, 64, 1021]];
                if bars == 1 {
                    runs.push(&[1]);
                }
                for sizes in runs {
                    let log = play_host_loop(pattern, bars as f64, spb, rate, sizes, until);
                    let ons: Vec<(i64, u8)> =
                        log.iter().filter(|e| e.1).map(|e| (e.0, e.2)).collect();
                    assert_eq!(
                        ons, want,
                        "{bars} bars, {rate} Hz, {tempo} BPM, blocks {sizes:?}"
                    );
                    // Every note-off 24 steps (1.5 bars) after its note-on, unless the same
                    // pitch starts again on its sample or the transport stopped: nothing is cut
                    // at a wrap, nothing is left hanging.
                    let length = (6.0 * spb).round() as i64;
                    for (i, &(sample, on, pitch)) in log.iter().enumerate() {
                        if on {
                            let off = log[i + 1..].iter().find(|e| !e.1 && e.2 == pitch);
                            let off = off.expect("every note-on gets its note-off").0;
                            let retrigger = log.iter().any(|e| e.1 && e.2 == pitch && e.0 == off);
                            assert!(
                                off == sample + length || retrigger || off == until,
                                "{bars} bars, {rate} Hz: pitch {pitch} on at {sample}, off at {off}"
                            );
                        }
                    }
                    let offs = log.iter().filter(|e| !e.1).count();
                    assert_eq!(offs, ons.len(), "one note-off per note-on");
                }
            }
        }
    }
}
