//! The audio-thread sequencer against a schedule computed independently (`support/schedule.rs`)
//! from the pattern, tempo and sample rate: exact note-on samples for any block size, sample rate
//! and tempo; tempo changes, stops, seeks and loop jumps; host loops that wrap inside a block
//! (exact samples, no cut notes, pattern switches at the wrap, hostile loop ranges ignored);
//! pattern switches on the bar line; the
//! play settings; the free-running clock; random transports that never leave a note hanging; and
//! nice-plug's `assert_process_allocs` allocator (installed in every debug build that links the
//! plugin) that aborts if `process` allocates or frees.

use drumvae::groove::{STEPS, VOICES};
use drumvae::sequencer::{NoteEvent, Sequencer, Settings, SwitchAt, Transport};
use drumvae::{Cell, Pattern, Voice};
use nice_assert_no_alloc::assert_no_alloc;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

// The independent schedule, shared with tests/plugin_clap.rs.
#[path = "support/schedule.rs"]
mod schedule;
use schedule::{Entry, On, looped_position, looped_schedule, samples_per_beat, schedule};

// ---------------------------------------------------------------------------------------------
// A simulated host.

/// An event with the absolute sample it lands on.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Logged {
    at: u64,
    event: NoteEvent,
}

/// Plays blocks and logs every event, checking each block's shape on the way: offsets inside the
/// block, time order, and note-offs before note-ons at one sample.
struct Host {
    seq: Sequencer,
    sample: u64,
    log: Vec<Logged>,
}

impl Host {
    fn new(pattern: Pattern) -> Host {
        Host {
            seq: Sequencer::with_pattern(pattern),
            sample: 0,
            log: Vec::new(),
        }
    }

    fn block(&mut self, transport: &Transport, len: u32, settings: &Settings) -> Vec<NoteEvent> {
        let mut events = Vec::new();
        self.seq
            .process(transport, len, settings, &mut |e| events.push(e));
        check_block_shape(&events, len);
        for &event in &events {
            self.log.push(Logged {
                at: self.sample + u64::from(event.sample),
                event,
            });
        }
        self.sample += u64::from(len);
        events
    }

    /// Plays at a steady tempo from beat `sample / spb` until `until`, in blocks from `sizes`,
    /// reporting the exact host position (or none) at each block start.
    fn play_until(
        &mut self,
        until: u64,
        tempo: f64,
        sample_rate: f64,
        host_position: bool,
        settings: &Settings,
        sizes: &mut dyn FnMut() -> u32,
    ) {
        let spb = samples_per_beat(tempo, sample_rate);
        while self.sample < until {
            let len = sizes().min((until - self.sample) as u32);
            let t = Transport {
                playing: true,
                tempo_bpm: tempo,
                pos_beats: host_position.then(|| self.sample as f64 / spb),
                sample_rate,
                loop_beats: None,
            };
            self.block(&t, len, settings);
        }
    }

    /// Plays on until `until` in blocks from `sizes`, each block reporting the transport that
    /// `transport` gives for its first sample.
    fn play_with(
        &mut self,
        until: u64,
        transport: &dyn Fn(u64) -> Transport,
        settings: &Settings,
        sizes: &mut dyn FnMut() -> u32,
    ) {
        while self.sample < until {
            let len = sizes().min((until - self.sample) as u32);
            self.block(&transport(self.sample), len, settings);
        }
    }

    fn ons(&self) -> Vec<On> {
        let mut ons: Vec<On> = self
            .log
            .iter()
            .filter(|l| l.event.on)
            .map(|l| (l.at, l.event.pitch, l.event.velocity, l.event.channel))
            .collect();
        ons.sort_unstable();
        ons
    }

    fn ons_between(&self, from: u64, until: u64) -> Vec<On> {
        self.ons()
            .into_iter()
            .filter(|o| (from..until).contains(&o.0))
            .collect()
    }

    /// Notes on now according to the log (channel, pitch).
    fn sounding(&self) -> Vec<(u8, u8)> {
        let mut on = Vec::new();
        for l in &self.log {
            let key = (l.event.channel, l.event.pitch);
            if l.event.on {
                on.push(key);
            } else {
                on.retain(|k| *k != key);
            }
        }
        on.sort_unstable();
        on
    }
}

fn check_block_shape(events: &[NoteEvent], len: u32) {
    for e in events {
        assert!(e.sample < len, "{e:?} outside a block of {len}");
        assert!(e.channel < 16 && e.pitch < 128);
        assert_eq!(
            e.on,
            e.velocity > 0,
            "note-on velocity 1..=127, note-off 0: {e:?}"
        );
    }
    for w in events.windows(2) {
        assert!(
            w[0].sample < w[1].sample || (w[0].sample == w[1].sample && (!w[0].on || w[1].on)),
            "events out of order (offs first at one sample): {w:?}"
        );
    }
}

/// Every note-on is followed, strictly later, by exactly one note-off of its channel and pitch,
/// and no note-off comes without a note-on.
fn check_pairing(log: &[Logged]) {
    let mut on_since = [[None::<u64>; 128]; 16];
    for l in log {
        let slot = &mut on_since[usize::from(l.event.channel)][usize::from(l.event.pitch)];
        if l.event.on {
            assert!(slot.is_none(), "second note-on without a note-off: {l:?}");
            *slot = Some(l.at);
        } else {
            let since = slot
                .take()
                .unwrap_or_else(|| panic!("note-off without note-on: {l:?}"));
            assert!(l.at > since, "note-off not after its note-on: {l:?}");
        }
    }
    for (ch, row) in on_since.iter().enumerate() {
        for (pitch, slot) in row.iter().enumerate() {
            assert!(slot.is_none(), "channel {ch} pitch {pitch} never ended");
        }
    }
}

fn stopped(sample_rate: f64) -> Transport {
    Transport {
        playing: false,
        tempo_bpm: 120.0,
        pos_beats: None,
        sample_rate,
        loop_beats: None,
    }
}

fn at(tempo: f64, pos: f64, sample_rate: f64) -> Transport {
    Transport {
        playing: true,
        tempo_bpm: tempo,
        pos_beats: Some(pos),
        sample_rate,
        loop_beats: None,
    }
}

/// A busy groove with random velocities and offsets over the whole range, an early kick on step 0
/// (it must wrap to the end of the previous loop) and a late ride on step 63.
fn groove(seed: u64) -> Pattern {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut p = Pattern::EMPTY;
    for step in 0..STEPS {
        for voice in Voice::ALL {
            if rng.random_bool(0.3) {
                let cell = Cell::hit(rng.random_range(0.05..=1.0), rng.random_range(-0.5..0.5));
                p.set(step, voice, cell);
            }
        }
    }
    p.set(0, Voice::Kick, Cell::hit(0.9, -0.3));
    p.set(63, Voice::Ride, Cell::hit(0.6, 0.45));
    p
}

/// One voice on every step, on the grid, full velocity.
fn straight(voice: Voice) -> Pattern {
    let mut p = Pattern::EMPTY;
    for step in 0..STEPS {
        p.set(step, voice, Cell::hit(1.0, 0.0));
    }
    p
}

/// Where a test's block sizes come from.
type BlockSizes = Box<dyn FnMut() -> u32>;

fn fixed(n: u32) -> impl FnMut() -> u32 {
    move || n
}

fn random_sizes(seed: u64) -> impl FnMut() -> u32 {
    random_sizes_up_to(seed, 3000)
}

fn random_sizes_up_to(seed: u64, max: u32) -> impl FnMut() -> u32 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    move || rng.random_range(1..=max)
}

// ---------------------------------------------------------------------------------------------
// Exact timing.

/// 17 beats: four bars and the start of the second loop, whose early step-0 kick lands at the end
/// of the first (the first loop's own early kick is due before the start: it plays at sample 0).
fn check_exact_schedule(sample_rate: f64) {
    let pattern = groove(7);
    let settings = Settings::default();
    for tempo in [60.0, 120.0, 187.3] {
        let total = (17.0 * samples_per_beat(tempo, sample_rate)).ceil() as u64;
        let want = schedule(
            &pattern,
            &settings,
            sample_rate,
            tempo,
            Entry::Start,
            0.0,
            0,
            total,
        );
        let wrapped_kick =
            ((64.0 + f64::from(-0.3f32)) / 4.0 * samples_per_beat(tempo, sample_rate)).round();
        assert!(
            want.contains(&(wrapped_kick as u64, 36, 114, 9)),
            "the second loop's early step-0 kick sounds at the end of the first"
        );
        assert_eq!(
            want[0],
            (0, 36, 114, 9),
            "the first loop's early step-0 kick, due before the start, sounds at sample 0"
        );
        let sizes: [(&str, BlockSizes); 6] = [
            ("1", Box::new(fixed(1))),
            ("7", Box::new(fixed(7))),
            ("64", Box::new(fixed(64))),
            ("512", Box::new(fixed(512))),
            ("4096", Box::new(fixed(4096))),
            ("random", Box::new(random_sizes(tempo as u64))),
        ];
        for (name, mut size) in sizes {
            let mut host = Host::new(pattern);
            host.play_until(total, tempo, sample_rate, true, &settings, &mut *size);
            let got = host.ons();
            assert_eq!(
                got.len(),
                want.len(),
                "{sample_rate} Hz, {tempo} BPM, blocks {name}: note-on count"
            );
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g, w, "{sample_rate} Hz, {tempo} BPM, blocks {name}");
            }
            host.block(&stopped(sample_rate), 64, &settings);
            check_pairing(&host.log);
        }
    }
}

#[test]
fn note_ons_land_on_the_analytic_sample_for_every_block_size_at_44_1_khz() {
    check_exact_schedule(44_100.0);
}

#[test]
fn note_ons_land_on_the_analytic_sample_for_every_block_size_at_48_khz() {
    check_exact_schedule(48_000.0);
}

#[test]
fn note_ons_land_on_the_analytic_sample_for_every_block_size_at_96_khz() {
    check_exact_schedule(96_000.0);
}

#[test]
fn exact_half_sample_positions_round_away_from_zero() {
    // 120 BPM at 44.1 kHz: a 16th is 5512.5 samples, so every odd step sits on a half sample.
    let settings = Settings::default();
    let mut host = Host::new(straight(Voice::ClosedHiHat));
    host.play_until(22_050, 120.0, 44_100.0, true, &settings, &mut fixed(100));
    let at: Vec<u64> = host.ons().iter().map(|o| o.0).collect();
    assert_eq!(at, [0, 5513, 11_025, 16_538]);
}

#[test]
fn note_offs_follow_note_length_and_a_retrigger_cuts_the_note_short() {
    let settings = Settings {
        note_length_steps: 2.5,
        ..Settings::default()
    };
    // 120 BPM, 48 kHz: a step is 6000 samples; notes of 2.5 steps overlap the next hit.
    let mut host = Host::new(straight(Voice::Kick));
    host.play_until(48_000, 120.0, 48_000.0, true, &settings, &mut fixed(333));
    let offs: Vec<u64> = host
        .log
        .iter()
        .filter(|l| !l.event.on)
        .map(|l| l.at)
        .collect();
    assert_eq!(offs, [6000, 12_000, 18_000, 24_000, 30_000, 36_000, 42_000]);
    let mut long = Pattern::EMPTY;
    long.set(0, Voice::Kick, Cell::hit(1.0, 0.0));
    let mut host = Host::new(long);
    host.play_until(48_000, 120.0, 48_000.0, true, &settings, &mut fixed(333));
    let offs: Vec<u64> = host
        .log
        .iter()
        .filter(|l| !l.event.on)
        .map(|l| l.at)
        .collect();
    assert_eq!(offs, [15_000], "2.5 steps of 6000 samples");
}

// ---------------------------------------------------------------------------------------------
// Transport.

#[test]
fn tempo_change_between_blocks_puts_later_notes_where_the_new_tempo_says() {
    let (rate, t1, t2) = (48_000.0, 120.0, 90.0);
    let pattern = groove(11);
    let settings = Settings::default();
    // The change comes at beat 6.3: mid-bar, off the grid, on a block boundary (blocks of 480).
    let change = (6.3 * samples_per_beat(t1, rate)).round() as u64;
    assert_eq!(change % 480, 0);
    let change_beat = change as f64 / samples_per_beat(t1, rate);
    let total = change + (10.0 * samples_per_beat(t2, rate)) as u64;

    let mut host = Host::new(pattern);
    host.play_until(change, t1, rate, true, &settings, &mut fixed(480));
    while host.sample < total {
        let beat = change_beat + (host.sample - change) as f64 / samples_per_beat(t2, rate);
        host.block(&at(t2, beat, rate), 480, &settings);
    }

    let before = schedule(&pattern, &settings, rate, t1, Entry::Start, 0.0, 0, change);
    let after = schedule(
        &pattern,
        &settings,
        rate,
        t2,
        Entry::Continue,
        change_beat,
        change,
        total,
    );
    assert!(
        after.len() > 20,
        "enough notes after the change to mean something"
    );
    assert_eq!(host.ons_between(0, change), before);
    assert_eq!(host.ons_between(change, total), after);
    // And they really moved: at the old tempo the same hits would land elsewhere.
    let old_tempo = schedule(
        &pattern,
        &settings,
        rate,
        t1,
        Entry::Continue,
        change_beat,
        change,
        total,
    );
    assert_ne!(after[..10], old_tempo[..10]);
}

#[test]
fn stop_sends_a_note_off_for_every_sounding_note_at_sample_zero() {
    let rate = 48_000.0;
    let settings = Settings {
        note_length_steps: 16.0,
        ..Settings::default()
    };
    let mut host = Host::new(groove(3));
    host.play_until(100_000, 120.0, rate, true, &settings, &mut fixed(256));
    let sounding = host.sounding();
    assert!(sounding.len() >= 3, "long notes overlap: {sounding:?}");
    assert_eq!(host.seq.sounding_notes(), sounding.len());

    let events = host.block(&stopped(rate), 256, &settings);
    let mut released: Vec<(u8, u8)> = events.iter().map(|e| (e.channel, e.pitch)).collect();
    released.sort_unstable();
    assert_eq!(released, sounding, "exactly the sounding notes end");
    assert!(events.iter().all(|e| !e.on && e.sample == 0), "{events:?}");
    assert_eq!(host.seq.sounding_notes(), 0);
    for _ in 0..10 {
        assert!(host.block(&stopped(rate), 256, &settings).is_empty());
    }
    check_pairing(&host.log);
}

#[test]
fn loop_jump_and_seek_end_every_note_and_play_no_burst_of_missed_hits() {
    let (rate, tempo) = (44_100.0, 128.0);
    let spb = samples_per_beat(tempo, rate);
    let pattern = groove(5);
    let settings = Settings {
        note_length_steps: 6.0,
        ..Settings::default()
    };
    let mut host = Host::new(pattern);
    host.play_until(
        (7.9 * spb) as u64,
        tempo,
        rate,
        true,
        &settings,
        &mut fixed(512),
    );

    // Loop jump back to beat 0, then a forward seek into the middle of a step, each followed by
    // a stretch of normal play: after a jump, exactly the hits at or after the new position play.
    for target in [0.0, 37.3, 2.05] {
        let sounding = host.sounding();
        assert!(!sounding.is_empty());
        let jump_at = host.sample;
        let events = host.block(&at(tempo, target, rate), 512, &settings);
        let offs_at_zero: Vec<(u8, u8)> = {
            let mut v: Vec<_> = events
                .iter()
                .take_while(|e| !e.on && e.sample == 0)
                .map(|e| (e.channel, e.pitch))
                .collect();
            v.sort_unstable();
            v
        };
        assert_eq!(
            offs_at_zero, sounding,
            "jump to {target}: notes from before end at 0"
        );
        let until = jump_at + (3.0 * spb) as u64;
        while host.sample < until {
            let beat = target + (host.sample - jump_at) as f64 / spb;
            host.block(&at(tempo, beat, rate), 512, &settings);
        }
        let want = schedule(
            &pattern,
            &settings,
            rate,
            tempo,
            Entry::Start,
            target,
            jump_at,
            host.sample,
        );
        assert_eq!(
            host.ons_between(jump_at, host.sample),
            want,
            "jump to {target}: no missed hits caught up, nothing skipped"
        );
    }
    host.block(&stopped(rate), 512, &settings);
    check_pairing(&host.log);
}

#[test]
fn a_one_beat_host_loop_replays_its_four_steps_on_every_pass() {
    let (rate, tempo) = (48_000.0, 120.0);
    let settings = Settings {
        note_length_steps: 8.0, // longer than the loop: every wrap has notes to end
        ..Settings::default()
    };
    let mut host = Host::new(straight(Voice::ClosedHiHat));
    let mut pass_starts = Vec::new();
    for _ in 0..5 {
        pass_starts.push(host.sample);
        // Loop over beats 4..5 in blocks of 480 samples (50 per beat).
        for b in 0..50u32 {
            host.block(&at(tempo, 4.0 + f64::from(b) / 50.0, rate), 480, &settings);
        }
    }
    let want: Vec<u64> = pass_starts
        .iter()
        .flat_map(|&s| [s, s + 6000, s + 12_000, s + 18_000])
        .collect();
    let got: Vec<u64> = host.ons().iter().map(|o| o.0).collect();
    assert_eq!(got, want);
    host.block(&stopped(rate), 64, &settings);
    check_pairing(&host.log);
}

#[test]
fn host_position_jitter_within_tolerance_neither_repeats_nor_drops_hits() {
    let (rate, tempo) = (48_000.0, 120.0);
    let spb = samples_per_beat(tempo, rate);
    let settings = Settings::default();
    let mut host = Host::new(straight(Voice::ClosedHiHat));
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let blocks = 400;
    for b in 0..blocks {
        let exact = host.sample as f64 / spb;
        // Hosts that round their position (1/96-beat ticks and worse): up to 1/64 beat off, so
        // two blocks disagree by less than the jump tolerance of 1/32 beat.
        let jitter = if b == 0 || b == blocks - 1 {
            0.0
        } else {
            rng.random_range(-0.015..0.015)
        };
        host.block(&at(tempo, exact + jitter, rate), 480, &settings);
    }
    let end_beat = host.sample as f64 / spb;
    let ons = host.ons();
    assert_eq!(ons.len(), (end_beat * 4.0).ceil() as usize, "one per 16th");
    for w in ons.windows(2) {
        let gap = w[1].0 - w[0].0;
        assert!(
            (5000..=7000).contains(&gap),
            "hits 6000 samples apart give or take jitter: {w:?}"
        );
    }
}

#[test]
fn free_running_clock_without_host_position_advances_with_samples() {
    let rate = 48_000.0;
    let pattern = groove(13);
    let settings = Settings::default();
    let mut host = Host::new(pattern);
    let total = (20.0 * samples_per_beat(100.0, rate)) as u64;
    host.play_until(total, 100.0, rate, false, &settings, &mut random_sizes(2));
    let want = schedule(
        &pattern,
        &settings,
        rate,
        100.0,
        Entry::Start,
        0.0,
        0,
        total,
    );
    assert_eq!(host.ons(), want);

    // Stop, then start again without a position or a tempo: beat 0 at 120 BPM from there.
    host.block(&stopped(rate), 1000, &settings);
    let restart = host.sample;
    let until = restart + 200_000;
    while host.sample < until {
        let t = Transport {
            playing: true,
            tempo_bpm: f64::NAN,
            pos_beats: None,
            sample_rate: rate,
            loop_beats: None,
        };
        host.block(&t, 700, &settings);
    }
    let want = schedule(
        &pattern,
        &settings,
        rate,
        120.0,
        Entry::Start,
        0.0,
        restart,
        host.sample,
    );
    assert_eq!(host.ons_between(restart, host.sample), want);
}

#[test]
fn random_transports_keep_every_note_on_paired_and_events_ordered() {
    for seed in 0..12 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut host = Host::new(groove(seed));
        let mut settings = Settings::default();
        let mut rate = 48_000.0;
        let mut tempo = 120.0;
        let mut beat = 0.0;
        let mut playing = true;
        let mut with_position = true;
        let mut host_loop: Option<(f64, f64)> = None;
        for _ in 0..3000 {
            let r: f64 = rng.random();
            if r < 0.02 {
                playing = !playing;
            } else if r < 0.04 {
                beat = rng.random_range(-8.0..200.0); // seek / loop jump
            } else if r < 0.07 {
                tempo = rng.random_range(40.0..300.0);
            } else if r < 0.08 {
                with_position = !with_position;
            } else if r < 0.085 {
                rate = [44_100.0, 48_000.0, 96_000.0][rng.random_range(0..3)];
            } else if r < 0.10 {
                beat += rng.random_range(-0.03..0.03); // host rounding
            } else if r < 0.13 {
                settings.note_length_steps = rng.random_range(0.0..20.0);
                settings.channel = rng.random_range(0..16);
                settings.timing_amount = rng.random_range(0.0..=2.0);
                settings.swing = rng.random_range(0.0..=1.0);
                settings.velocity_scale = rng.random_range(0.0..2.0);
                settings.bar_offset = rng.random_range(-5..5);
                let v = rng.random_range(0..VOICES);
                settings.pitches[v] = rng.random_range(0..128);
                settings.mutes[rng.random_range(0..VOICES)] = rng.random_bool(0.3);
                settings.switch_at = [SwitchAt::NextBar, SwitchAt::NextBeat, SwitchAt::Immediately]
                    [rng.random_range(0..3)];
            } else if r < 0.16 {
                host.seq.set_pattern_pending(groove(rng.random()));
            } else if r < 0.18 {
                // A host loop around the playhead (sometimes a degenerate one), or none.
                host_loop = rng.random_bool(0.7).then(|| {
                    let start = beat - rng.random_range(0.0..4.0);
                    (start, start + rng.random_range(-1.0..12.0))
                });
            }
            let len = if rng.random_bool(0.1) {
                rng.random_range(1..8)
            } else {
                rng.random_range(1..4096)
            };
            let t = Transport {
                playing,
                tempo_bpm: tempo,
                pos_beats: with_position.then_some(beat),
                sample_rate: rate,
                loop_beats: host_loop,
            };
            host.block(&t, len, &settings);
            if playing {
                let next = beat + f64::from(len) / samples_per_beat(tempo, rate);
                beat = match host_loop {
                    // The host wraps when the playhead crosses the loop end.
                    Some((start, end)) if end > start && beat < end && next >= end => {
                        start + (next - end).rem_euclid(end - start)
                    }
                    _ => next,
                };
            }
        }
        host.block(&stopped(rate), 1, &settings);
        assert!(host.log.iter().filter(|l| l.event.on).count() > 500);
        check_pairing(&host.log);
    }
}

// ---------------------------------------------------------------------------------------------
// Host loops.

/// A host that loops over `range` (beats, end exclusive) and does not split its blocks at the
/// loop end, as many VST3 hosts do: play started at `from_beat` on the test host's sample 0, and
/// every block reports the position folded back into the loop (`support/schedule.rs`) and the
/// loop range.
#[derive(Clone, Copy, Debug)]
struct LoopingHost {
    range: (f64, f64),
    from_beat: f64,
    tempo: f64,
    rate: f64,
}

impl LoopingHost {
    fn spb(&self) -> f64 {
        samples_per_beat(self.tempo, self.rate)
    }

    fn transport_at(&self, sample: u64) -> Transport {
        let pos = looped_position(self.range, self.from_beat, 0, self.spb(), sample);
        Transport {
            loop_beats: Some(self.range),
            ..at(self.tempo, pos, self.rate)
        }
    }

    /// The sample pass `pass` (1 = the first repeat) begins on: where the loop end would sound on
    /// the unlooped clock, `pass - 1` loop lengths later.
    fn wrap_sample(&self, pass: u32) -> u64 {
        let (start, end) = self.range;
        ((end + f64::from(pass - 1) * (end - start) - self.from_beat) * self.spb()).round() as u64
    }

    /// The independent schedule up to `until`.
    fn want(&self, pattern: &Pattern, settings: &Settings, until: u64) -> Vec<On> {
        let (rate, tempo) = (self.rate, self.tempo);
        looped_schedule(
            pattern,
            settings,
            rate,
            tempo,
            self.range,
            self.from_beat,
            0,
            until,
        )
    }
}

/// No note is cut short: every note-off comes exactly `note_samples` after its note-on, or on a
/// sample where the same key is struck again (a retrigger), or on `stop`, the first sample of the
/// stopped block. A loop wrap must not end notes early (a jump would, at its first sample).
fn check_no_cut_notes(log: &[Logged], note_samples: u64, stop: u64) {
    let mut on_at = [[None::<u64>; 128]; 16];
    for (i, l) in log.iter().enumerate() {
        let (channel, pitch) = (l.event.channel, l.event.pitch);
        let slot = &mut on_at[usize::from(channel)][usize::from(pitch)];
        if l.event.on {
            *slot = Some(l.at);
            continue;
        }
        let since = slot.take().expect("paired (check_pairing first)");
        let retrigger = log[i + 1..]
            .iter()
            .take_while(|n| n.at == l.at)
            .any(|n| n.event.on && n.event.channel == channel && n.event.pitch == pitch);
        assert!(
            l.at == since + note_samples || retrigger || l.at == stop,
            "note {pitch} on channel {channel} cut: on at {since}, off at {}, length {}",
            l.at,
            note_samples
        );
    }
}

/// A busy groove with an on-grid crash on every bar line, so every loop start has a downbeat.
fn groove_with_downbeats(seed: u64) -> Pattern {
    let mut p = groove(seed);
    for bar in 0..4 {
        p.set(16 * bar, Voice::Crash, Cell::hit(1.0, 0.0));
    }
    p
}

#[test]
fn host_loops_of_one_to_four_bars_wrap_at_the_exact_sample_inside_blocks_of_1_to_4096() {
    let pattern = groove_with_downbeats(23);
    // Notes of 6 steps: some sound across every wrap and must end on time.
    let settings = Settings {
        note_length_steps: 6.0,
        ..Settings::default()
    };
    // (bars, loop, where play starts): before the loop off the grid, at the loop start, at a
    // loop start inside the song, and before a loop that crosses the pattern's own end.
    let loops = [
        (1, (4.0, 8.0), 2.55),
        (2, (0.0, 8.0), 0.0),
        (3, (4.0, 16.0), 4.0),
        (4, (8.0, 24.0), 6.75),
    ];
    for (bars, range, from_beat) in loops {
        // Whole-sample beats, then two tempos whose loop ends fall between samples.
        for (rate, tempo) in [(48_000.0, 120.0), (44_100.0, 187.3), (96_000.0, 97.0)] {
            let host = LoopingHost {
                range,
                from_beat,
                tempo,
                rate,
            };
            let loop_samples = (range.1 - range.0) * host.spb();
            let until = host.wrap_sample(2) + (0.6 * loop_samples) as u64;
            let want = host.want(&pattern, &settings, until);
            let what =
                format!("{bars}-bar loop {range:?} from beat {from_beat}, {rate} Hz, {tempo} BPM");
            for pass in 1..=2 {
                let wrap = host.wrap_sample(pass);
                assert!(
                    want.contains(&(wrap, 49, 127, 9)),
                    "{what}: the loop start's downbeat crash on the wrap sample {wrap}"
                );
            }
            let mut sizes: Vec<(&str, BlockSizes)> = vec![
                ("7", Box::new(fixed(7))),
                ("64", Box::new(fixed(64))),
                ("4096", Box::new(fixed(4096))),
                ("random 1..=4096", Box::new(random_sizes_up_to(bars, 4096))),
                ("random 1..=16", Box::new(random_sizes_up_to(bars, 16))),
            ];
            if bars == 1 {
                sizes.push(("1", Box::new(fixed(1))));
            }
            let note_samples = (6.0 / 4.0 * host.spb()).round() as u64;
            for (name, mut size) in sizes {
                let mut seq = Host::new(pattern);
                seq.play_with(until, &|s| host.transport_at(s), &settings, &mut *size);
                let got = seq.ons();
                assert_eq!(
                    got.len(),
                    want.len(),
                    "{what}, blocks {name}: note-on count"
                );
                for (g, w) in got.iter().zip(&want) {
                    assert_eq!(
                        g, w,
                        "{what}, blocks {name}: (sample, pitch, velocity, channel)"
                    );
                }
                let stop = seq.sample;
                seq.block(&stopped(rate), 64, &settings);
                check_pairing(&seq.log);
                check_no_cut_notes(&seq.log, note_samples, stop);
            }
        }
    }
}

#[test]
fn a_loop_of_one_step_wraps_several_times_inside_one_block() {
    // 1000 BPM at 48 kHz: a step lasts 720 samples, so a block of 4096 wraps five or six times.
    let (rate, tempo) = (48_000.0, 1000.0);
    let mut pattern = Pattern::EMPTY;
    pattern.set(17, Voice::Kick, Cell::hit(1.0, 0.0));
    pattern.set(17, Voice::Snare, Cell::hit(0.8, 0.3));
    // Step 18 is past the loop end: its early hit (inside the loop's time) never plays.
    pattern.set(18, Voice::ClosedHiHat, Cell::hit(1.0, -0.4));
    let host = LoopingHost {
        range: (4.25, 4.5),
        from_beat: 4.0,
        tempo,
        rate,
    };
    let settings = Settings::default();
    let until = 30 * 720;
    let want = host.want(&pattern, &settings, until);
    let kicks: Vec<u64> = want.iter().filter(|o| o.1 == 36).map(|o| o.0).collect();
    let every_step: Vec<u64> = (1..30).map(|k| k * 720).collect();
    assert_eq!(kicks, every_step, "a kick on every wrap");
    assert!(
        want.iter().all(|o| o.1 != 42),
        "no hi-hat from past the loop end"
    );
    let mut seq = Host::new(pattern);
    seq.play_with(
        until,
        &|s| host.transport_at(s),
        &settings,
        &mut fixed(4096),
    );
    assert_eq!(seq.ons(), want);
    let stop = seq.sample;
    seq.block(&stopped(rate), 64, &settings);
    check_pairing(&seq.log);
    check_no_cut_notes(&seq.log, 720, stop);
}

#[test]
fn a_host_that_splits_its_block_at_the_loop_end_wraps_there_without_cutting_notes() {
    let pattern = groove_with_downbeats(29);
    let settings = Settings {
        note_length_steps: 6.0,
        ..Settings::default()
    };
    // The host splits its block on the first sample whose position reaches the loop end and
    // reports exactly the loop start there, then counts on from that sample. At 48 kHz and 120
    // BPM the loop end falls on a whole sample, so this is exactly what a host that does not
    // split plays; at 44.1 kHz and 187.3 BPM the host's wrap sample is up to one sample off the
    // plugin's, which re-anchors on the host: every note within a sample.
    for (rate, tempo, exact) in [(48_000.0, 120.0, true), (44_100.0, 187.3, false)] {
        let looping = LoopingHost {
            range: (4.0, 8.0),
            from_beat: 3.0,
            tempo,
            rate,
        };
        let spb = looping.spb();
        let until = looping.wrap_sample(3) + 1000;
        let first_wrap = ((8.0 - 3.0) * spb).ceil() as u64;
        let loop_samples = (4.0 * spb).ceil() as u64;
        let wraps: Vec<u64> = (0..3).map(|p| first_wrap + p * loop_samples).collect();
        let position = |sample: u64| match wraps.iter().rev().find(|&&w| w <= sample) {
            Some(&w) => 4.0 + (sample - w) as f64 / spb,
            None => 3.0 + sample as f64 / spb,
        };
        let mut seq = Host::new(pattern);
        let mut sizes = random_sizes_up_to(3, 4096);
        while seq.sample < until {
            let next_wrap = wraps.iter().find(|&&w| w > seq.sample).copied();
            let len = u64::from(sizes())
                .min(next_wrap.unwrap_or(u64::MAX) - seq.sample)
                .min(until - seq.sample);
            let t = Transport {
                loop_beats: Some(looping.range),
                ..at(tempo, position(seq.sample), rate)
            };
            seq.block(&t, len as u32, &settings);
        }
        // Each of the host's passes on its own: from its wrap sample (at beat 3 on sample 0 for
        // the first) to the next wrap, the host's or the plugin's, whichever comes first.
        let mut want = Vec::new();
        for p in 0..=wraps.len() {
            let (beat, from) = if p == 0 {
                (3.0, 0)
            } else {
                (4.0, wraps[p - 1])
            };
            let own_wrap = from + ((8.0 - beat) * spb).round() as u64;
            let end = wraps
                .get(p)
                .copied()
                .unwrap_or(until)
                .min(own_wrap)
                .min(until);
            want.extend(looped_schedule(
                &pattern,
                &settings,
                rate,
                tempo,
                (4.0, 8.0),
                beat,
                from,
                end,
            ));
        }
        want.sort_unstable();
        let mut got = seq.ons();
        assert_eq!(got.len(), want.len(), "{rate} Hz: note-on count");
        if exact {
            assert_eq!(got, want, "{rate} Hz");
            let unsplit =
                looped_schedule(&pattern, &settings, rate, tempo, (4.0, 8.0), 3.0, 0, until);
            assert_eq!(got, unsplit, "{rate} Hz: as if the host had not split");
        } else {
            // Same notes, each within one sample (compared per key, in time order).
            let by_key = |o: &On| (o.1, o.3, o.2, o.0);
            got.sort_unstable_by_key(by_key);
            want.sort_unstable_by_key(by_key);
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g.1, g.2, g.3) == (w.1, w.2, w.3) && g.0.abs_diff(w.0) <= 1,
                    "{rate} Hz: {g:?} vs {w:?}"
                );
            }
        }
        let stop = seq.sample;
        seq.block(&stopped(rate), 64, &settings);
        check_pairing(&seq.log);
        check_no_cut_notes(&seq.log, (1.5 * spb).round() as u64, stop);
    }
}

#[test]
fn a_pattern_handed_in_before_the_loop_end_takes_over_at_the_wrap_and_owns_the_next_pass() {
    // 48 kHz, 120 BPM: a step is 6000 samples, a pass of the two-bar loop 192000.
    let looping = LoopingHost {
        range: (0.0, 8.0),
        from_beat: 0.0,
        tempo: 120.0,
        rate: 48_000.0,
    };
    let transport = |s| looping.transport_at(s);
    let settings = Settings::default();
    let mut seq = Host::new(straight(Voice::Kick));
    // Pass 0, beat 5: snares. Their bar line (step 32) is the loop end: they take over at the
    // wrap.
    seq.play_with(120_000, &transport, &settings, &mut fixed(777));
    seq.seq.set_pattern_pending(straight(Voice::Snare));
    // Pass 1, beat 2: kicks again, from the next bar line (beat 4) on.
    seq.play_with(192_000 + 48_000, &transport, &settings, &mut fixed(777));
    seq.seq.set_pattern_pending(straight(Voice::Kick));
    // Pass 2: all kicks. The switch at step 16 of pass 1 must not hand steps 0..16 back to the
    // snares when the playhead returns there.
    seq.play_with(3 * 192_000, &transport, &settings, &mut fixed(777));
    let got: Vec<(u64, u8)> = seq.ons().iter().map(|o| (o.0, o.1)).collect();
    let want: Vec<(u64, u8)> = (0..96u64)
        .map(|k| {
            let snare = (32..48).contains(&k);
            (k * 6000, if snare { 38 } else { 36 })
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(seq.seq.switch_count(), 2);
}

#[test]
fn loop_ranges_a_host_should_never_send_are_ignored_without_panicking() {
    let (rate, tempo) = (48_000.0, 120.0);
    let spb = samples_per_beat(tempo, rate);
    let pattern = groove(3);
    let settings = Settings {
        note_length_steps: 3.0,
        ..Settings::default()
    };
    let until = (20.0 * spb) as u64;
    let mut reference = Host::new(pattern);
    reference.play_until(until, tempo, rate, true, &settings, &mut random_sizes(4));
    let (nan, inf) = (f64::NAN, f64::INFINITY);
    for range in [
        (4.0, 4.0),
        (8.0, 4.0),
        (4.0, 4.2),
        (nan, 8.0),
        (4.0, nan),
        (-inf, 8.0),
        (4.0, inf),
        (0.0, 1e12),
        (-1e12, 4.0),
        (f64::MIN, f64::MAX),
        // Valid, but its end is never reached.
        (-1e8, 1e8),
    ] {
        let mut seq = Host::new(pattern);
        let linear = |s: u64| Transport {
            loop_beats: Some(range),
            ..at(tempo, s as f64 / spb, rate)
        };
        seq.play_with(until, &linear, &settings, &mut random_sizes(4));
        assert_eq!(
            seq.log, reference.log,
            "{range:?}: played as if there were no loop"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Pattern switches.

#[test]
fn pattern_switch_happens_exactly_at_the_next_bar_line() {
    let rate = 48_000.0;
    let spb = samples_per_beat(120.0, rate);
    let settings = Settings::default();
    let old = straight(Voice::Kick);
    let mut new = straight(Voice::Snare);
    // The new pattern's first hit of bar 3 is early: it belongs to the new pattern, so it plays
    // before the bar line, in place of the old pattern's kick on that step.
    new.set(32, Voice::Snare, Cell::hit(1.0, -0.25));
    let mut host = Host::new(old);
    // Hand the new pattern in mid-bar 2 (beat 5.3).
    host.play_until(
        (5.3 * spb) as u64,
        120.0,
        rate,
        true,
        &settings,
        &mut fixed(256),
    );
    host.seq.set_pattern_pending(new);
    let bar_line = (8.0 * spb) as u64;
    let mut switched_in = None;
    while host.sample < (12.0 * spb) as u64 {
        let before = host.seq.switch_count();
        let block_start = host.sample;
        let t = at(120.0, host.sample as f64 / spb, rate);
        host.block(&t, 256, &settings);
        if host.seq.switch_count() != before {
            switched_in = Some(block_start..host.sample);
        }
    }
    let block = switched_in.expect("switched");
    assert!(
        block.contains(&bar_line),
        "counted in the bar line's block: {block:?}"
    );
    assert_eq!(host.seq.switch_count(), 1);
    assert_eq!(host.seq.current_pattern(), &new);
    assert!(!host.seq.has_pending_pattern());

    let early = (7.9375 * spb).round() as u64;
    for (sample, pitch, ..) in host.ons() {
        let want = if sample < early { 36 } else { 38 };
        assert_eq!(pitch, want, "note-on at {sample} (bar line {bar_line})");
    }
    let kicks = host.ons().iter().filter(|o| o.1 == 36).count();
    assert_eq!(
        kicks, 32,
        "steps 0..=31 come from the old pattern, 32 on from the new"
    );
}

#[test]
fn pattern_switch_at_next_beat_and_immediately_follow_their_grid() {
    let rate = 48_000.0;
    let spb = samples_per_beat(120.0, rate);
    for (switch_at, timing, first_new_step) in [
        (SwitchAt::NextBeat, 1.0, 24), // handed in at step 21.2: next beat is step 24
        (SwitchAt::Immediately, 1.0, 22), // 21.2 + half a step of early reach -> step 22
        (SwitchAt::Immediately, 2.0, 23), // 21.2 + a full step of early reach -> step 23
    ] {
        let settings = Settings {
            switch_at,
            timing_amount: timing,
            ..Settings::default()
        };
        let mut host = Host::new(straight(Voice::Kick));
        host.play_until(
            (5.3 * spb) as u64,
            120.0,
            rate,
            true,
            &settings,
            &mut fixed(64),
        );
        host.seq.set_pattern_pending(straight(Voice::Snare));
        host.play_until(
            (8.0 * spb) as u64,
            120.0,
            rate,
            true,
            &settings,
            &mut fixed(64),
        );
        let first_snare = host.ons().iter().find(|o| o.1 == 38).unwrap().0;
        let last_kick = host.ons().iter().rfind(|o| o.1 == 36).unwrap().0;
        let step = (first_new_step as f64 / 4.0 * spb).round() as u64;
        assert_eq!(first_snare, step, "{switch_at:?} at timing {timing}");
        assert_eq!(last_kick + (spb / 4.0) as u64, step, "{switch_at:?}");
    }
}

/// `next_switch` names the step a pattern handed in now takes over at and the samples left until
/// that step's deadline, its earliest possible hit (half a step times the timing amount early):
/// handed in at a block that starts one sample before the deadline, the pattern takes over at that
/// step; one sample after, at the switch point after, which `next_switch` then names. The
/// plugin's worker decodes for exactly this step, so it must follow `set_pattern_pending`'s rule.
#[test]
fn next_switch_names_the_takeover_step_and_the_samples_left_until_its_deadline() {
    let rate = 48_000.0;
    let spb = samples_per_beat(120.0, rate);
    for (switch_at, timing, grid) in [
        (SwitchAt::NextBar, 1.0, 16),
        (SwitchAt::NextBeat, 2.0, 4),
        (SwitchAt::Immediately, 1.0, 1),
    ] {
        let settings = Settings {
            switch_at,
            timing_amount: timing,
            ..Settings::default()
        };
        let mut host = Host::new(straight(Voice::Kick));
        assert_eq!(host.seq.next_switch(&settings), None, "stopped");
        // Beat 5.3 = step 21.2: the earliest hit of the next grid step must be ahead.
        host.play_until(
            (5.3 * spb) as u64,
            120.0,
            rate,
            true,
            &settings,
            &mut fixed(64),
        );
        let next = host.seq.next_switch(&settings).expect("playing");
        let early = 0.5 * f64::from(timing);
        let step = ((21.2 + early) / f64::from(grid)).ceil() as i64 * i64::from(grid);
        assert_eq!(next.step, step, "{switch_at:?}");
        let deadline_of = |step: i64| ((step as f64 - early) / 4.0 * spb).round();
        let deadline = deadline_of(step);
        assert_eq!(
            next.samples_left,
            deadline - host.sample as f64,
            "{switch_at:?}"
        );

        // One sample before the deadline the step is still the next switch point; one after, the
        // switch point after is.
        for (handed_in, takes_over) in [
            (deadline as u64 - 1, step),
            (deadline as u64 + 1, step + i64::from(grid)),
        ] {
            let mut host = Host::new(straight(Voice::Kick));
            host.play_until(handed_in, 120.0, rate, true, &settings, &mut fixed(64));
            let next = host.seq.next_switch(&settings).expect("playing");
            assert_eq!(next.step, takes_over, "{switch_at:?} at sample {handed_in}");
            assert_eq!(
                next.samples_left,
                deadline_of(takes_over) - handed_in as f64,
                "{switch_at:?} at sample {handed_in}"
            );
            host.seq.set_pattern_pending(straight(Voice::Snare));
            host.play_until(
                ((takes_over as f64 / 4.0 + 1.0) * spb) as u64,
                120.0,
                rate,
                true,
                &settings,
                &mut fixed(64),
            );
            let first_snare = host.ons().iter().find(|o| o.1 == 38).expect("switched").0;
            assert_eq!(
                first_snare,
                (takes_over as f64 / 4.0 * spb).round() as u64,
                "{switch_at:?}, timing {timing}, handed in at sample {handed_in} (deadline \
                 {deadline})"
            );
        }
    }
}

#[test]
fn pending_pattern_takes_over_at_once_while_stopped() {
    let mut seq = Sequencer::new();
    seq.set_pattern_pending(straight(Voice::Ride));
    assert!(seq.has_pending_pattern());
    seq.process(&stopped(48_000.0), 64, &Settings::default(), &mut |_| {});
    assert_eq!(seq.current_pattern(), &straight(Voice::Ride));
    assert_eq!(seq.switch_count(), 1);
    let mut first = Vec::new();
    seq.process(
        &at(120.0, 0.0, 48_000.0),
        64,
        &Settings::default(),
        &mut |e| first.push(e),
    );
    assert_eq!(first[0].pitch, 51);
}

// ---------------------------------------------------------------------------------------------
// Settings.

#[test]
fn mutes_pitch_map_channel_and_velocity_scale_apply() {
    let rate = 48_000.0;
    let pattern = groove(17);
    let mut settings = Settings {
        channel: 3,
        velocity_scale: 0.5,
        ..Settings::default()
    };
    settings.mutes[Voice::Snare.index()] = true;
    settings.pitches[Voice::Kick.index()] = 60;
    let total = (16.0 * samples_per_beat(120.0, rate)) as u64;
    let mut host = Host::new(pattern);
    host.play_until(total, 120.0, rate, true, &settings, &mut fixed(512));
    let ons = host.ons();
    assert_eq!(
        ons,
        schedule(
            &pattern,
            &settings,
            rate,
            120.0,
            Entry::Start,
            0.0,
            0,
            total
        )
    );
    assert!(ons.iter().all(|o| o.3 == 3), "channel");
    assert!(!ons.iter().any(|o| o.1 == 38), "snare muted");
    assert!(
        ons.iter().any(|o| o.1 == 60) && !ons.iter().any(|o| o.1 == 36),
        "kick mapped"
    );
    let loudest = ons.iter().map(|o| o.2).max().unwrap();
    assert!(loudest <= 64, "velocities halved: {loudest}");
    host.block(&stopped(rate), 64, &settings);
    assert!(
        host.log.iter().all(|l| l.event.channel == 3),
        "note-offs too"
    );
    check_pairing(&host.log);
}

#[test]
fn timing_zero_removes_offsets_and_two_hundred_percent_doubles_them() {
    let rate = 44_100.0;
    let spb = samples_per_beat(100.0, rate);
    let pattern = groove(19);
    let total = (16.0 * spb) as u64;
    for timing in [0.0, 2.0] {
        let settings = Settings {
            timing_amount: timing,
            ..Settings::default()
        };
        let mut host = Host::new(pattern);
        host.play_until(total, 100.0, rate, true, &settings, &mut fixed(1024));
        let ons = host.ons();
        assert_eq!(
            ons,
            schedule(
                &pattern,
                &settings,
                rate,
                100.0,
                Entry::Start,
                0.0,
                0,
                total
            )
        );
        if timing == 0.0 {
            for o in &ons {
                let steps = o.0 as f64 / (spb / 4.0);
                assert!(
                    (steps - steps.round()).abs() * spb / 4.0 <= 0.5,
                    "on the grid: {o:?}"
                );
            }
        }
    }
    // Directly: one late snare at +0.25 step, doubled to +0.5 step.
    let mut p = Pattern::EMPTY;
    p.set(4, Voice::Snare, Cell::hit(1.0, 0.25));
    let settings = Settings {
        timing_amount: 2.0,
        ..Settings::default()
    };
    let mut host = Host::new(p);
    host.play_until(total, 100.0, rate, true, &settings, &mut fixed(100));
    assert_eq!(host.ons()[0].0, (1.125 * spb).round() as u64);
}

#[test]
fn swing_delays_odd_sixteenths_by_up_to_a_third_of_a_step() {
    let rate = 48_000.0;
    let spb = samples_per_beat(120.0, rate); // a step = 6000 samples
    for (swing, delay) in [(0.0, 0), (0.5, 1000), (1.0, 2000)] {
        let settings = Settings {
            swing,
            ..Settings::default()
        };
        let mut host = Host::new(straight(Voice::ClosedHiHat));
        host.play_until(
            (2.0 * spb) as u64,
            120.0,
            rate,
            true,
            &settings,
            &mut fixed(128),
        );
        let at: Vec<u64> = host.ons().iter().map(|o| o.0).collect();
        let want: Vec<u64> = (0..8u64)
            .map(|s| s * 6000 + if s % 2 == 1 { delay } else { 0 })
            .collect();
        assert_eq!(at, want, "swing {swing}");
    }
}

#[test]
fn bar_offset_moves_the_pattern_start_by_whole_bars() {
    let rate = 48_000.0;
    let spb = samples_per_beat(120.0, rate);
    let mut p = Pattern::EMPTY;
    p.set(0, Voice::Crash, Cell::hit(1.0, 0.0));
    for (bar_offset, first_crash_beat) in [(0, 0.0), (1, 4.0), (-1, 12.0), (6, 8.0)] {
        let settings = Settings {
            bar_offset,
            ..Settings::default()
        };
        let mut host = Host::new(p);
        host.play_until(
            (32.0 * spb) as u64,
            120.0,
            rate,
            true,
            &settings,
            &mut fixed(1000),
        );
        let crashes: Vec<u64> = host.ons().iter().map(|o| o.0).collect();
        let first = (first_crash_beat * spb) as u64;
        assert_eq!(
            crashes,
            [first, first + (16.0 * spb) as u64],
            "offset {bar_offset}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Real-time safety.

/// Set in the child process that [`the_allocation_guard_aborts_on_allocation`] starts.
const ALLOC_CHILD_ENV: &str = "DRUMVAE_ALLOCATION_GUARD_CHILD";

/// Run only as a child of [`the_allocation_guard_aborts_on_allocation`]: allocates under the guard.
#[test]
#[ignore = "started as a child process by the_allocation_guard_aborts_on_allocation"]
fn allocation_under_the_guard_child() {
    if std::env::var_os(ALLOC_CHILD_ENV).is_some() {
        assert_no_alloc(|| drop(std::hint::black_box(vec![1u8; 100])));
    }
}

/// The guard used below is armed: an allocation inside it kills the process. Without this, a
/// build where the guard is a no-op would pass `process_does_not_allocate` whatever it did.
#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "the guard is only installed in debug builds"
)]
fn the_allocation_guard_aborts_on_allocation() {
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "allocation_under_the_guard_child",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(ALLOC_CHILD_ENV, "1")
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(
        !status.success(),
        "allocating under assert_no_alloc should abort, but the child exited with {status}"
    );
}

#[test]
fn process_does_not_allocate() {
    let rate = 48_000.0;
    let settings = Settings {
        note_length_steps: 3.0,
        swing: 0.4,
        ..Settings::default()
    };
    let mut changed = settings;
    changed.switch_at = SwitchAt::Immediately;
    changed.timing_amount = 2.0;
    changed.channel = 2;
    // Every transport situation, prepared before counting.
    let mut script: Vec<(Transport, u32, Settings, Option<Pattern>)> = Vec::new();
    let mut beat = 0.0;
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    for i in 0..20_000 {
        let tempo = if i < 10_000 { 120.0 } else { 97.0 };
        let len = rng.random_range(1..2048);
        // A host loop over a bar, then over one step, then a degenerate range.
        let host_loop = match i % 2500 {
            300..900 => Some((4.0, 8.0)),
            900..1000 => Some((4.0, 4.25)),
            1000..1050 => Some((f64::NAN, 4.0)),
            _ => None,
        };
        if i % 2500 == 300 || i % 2500 == 900 {
            beat = 4.0;
        }
        let t = match i % 2500 {
            300..1050 => Transport {
                loop_beats: host_loop,
                ..at(tempo, beat, rate)
            },
            1200 => Transport {
                playing: false,
                ..at(tempo, beat, rate)
            },
            1700 => {
                beat = 3.7; // loop jump
                at(tempo, beat, rate)
            }
            2000..2100 => Transport {
                pos_beats: None,
                ..at(tempo, beat, rate)
            },
            _ => at(tempo, beat, rate),
        };
        if t.playing {
            let next = beat + f64::from(len) / samples_per_beat(tempo, rate);
            beat = match host_loop {
                Some((start, end)) if end > start && beat < end && next >= end => {
                    start + (next - end).rem_euclid(end - start)
                }
                _ => next,
            };
        }
        let s = if i % 3000 < 1500 { settings } else { changed };
        let pattern = (i % 700 == 0).then(|| groove(i));
        script.push((t, len, s, pattern));
    }
    let mut seq = Sequencer::with_pattern(groove(1));
    let mut events = 0usize;
    let mut count = |_e: NoteEvent| events += 1;

    // Aborts the test process on any allocation or free (debug builds).
    assert_no_alloc(|| {
        for (t, len, s, pattern) in &script {
            if let Some(p) = pattern {
                seq.set_pattern_pending(*p);
            }
            seq.process(t, *len, s, &mut count);
        }
        seq.release_all(&mut count);
    });
    assert!(events > 5000, "it did play: {events} events");
    assert!(seq.switch_count() >= 20);
}
