//! The audio-thread sequencer against a schedule computed independently (`support/schedule.rs`)
//! from the pattern, tempo and sample rate: exact note-on samples for any block size, sample rate
//! and tempo; tempo changes, stops, seeks and loop jumps; pattern switches on the bar line; the
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
use schedule::{Entry, On, samples_per_beat, schedule};

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
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    move || rng.random_range(1..=3000)
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
                loop_beats: None,
            };
            host.block(&t, len, &settings);
            if playing {
                beat += f64::from(len) / samples_per_beat(tempo, rate);
            }
        }
        host.block(&stopped(rate), 1, &settings);
        assert!(host.log.iter().filter(|l| l.event.on).count() > 500);
        check_pairing(&host.log);
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
        let t = match i % 2500 {
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
            beat += f64::from(len) / samples_per_beat(tempo, rate);
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
