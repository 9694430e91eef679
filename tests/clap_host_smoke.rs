//! Generic checks of the CLAP plugin binary through the test host (`tests/host/harness.rs`):
//! it loads, describes itself, lists parameters, processes with a playing transport, and
//! round-trips its state.

#[path = "host/harness.rs"]
mod host;

use std::collections::HashSet;

use clack_host::events::Pckn;
use clack_host::events::event_types::{MidiEvent, NoteOnEvent, TransportFlags};
use clack_host::events::io::EventBuffer;
use host::{
    Block, NoteSource, PluginUnderTest, TransportInfo, decode_output_events, playing_blocks,
    plugin_library_path,
};

fn load() -> PluginUnderTest {
    let path = plugin_library_path();
    PluginUnderTest::load(&path).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

#[test]
fn loads_and_describes_itself() {
    let plugin = load();
    let descriptor = plugin.descriptor();
    assert!(!descriptor.id.is_empty(), "{descriptor:?}");
    assert!(!descriptor.name.is_empty(), "{descriptor:?}");
    assert!(
        descriptor
            .features
            .iter()
            .any(|f| f == "note-effect" || f == "instrument"),
        "a MIDI generator should be a note effect or instrument: {descriptor:?}"
    );
    assert!(plugin.violations().is_empty(), "{:?}", plugin.violations());
}

#[test]
fn lists_parameters_with_unique_ids() {
    let mut plugin = load();
    let params = plugin.params();
    assert!(!params.is_empty());
    let ids: HashSet<u32> = params.iter().map(|p| p.id).collect();
    assert_eq!(
        ids.len(),
        params.len(),
        "duplicate parameter ids: {params:#?}"
    );
    for param in &params {
        assert!(!param.name.is_empty(), "{param:?}");
        assert!(param.min <= param.max, "{param:?}");
        assert!(
            (param.min..=param.max).contains(&param.default),
            "default outside the range: {param:?}"
        );
        let value = plugin.param_value(param.id);
        assert!(
            (param.min..=param.max).contains(&value),
            "value {value} outside the range: {param:?}"
        );
    }
}

#[test]
fn reports_ports() {
    let mut plugin = load();
    let outputs = plugin.audio_output_ports();
    assert!(outputs.iter().all(|&channels| channels > 0), "{outputs:?}");
    assert!(plugin.note_output_ports() >= 1);
}

#[test]
fn processes_a_playing_transport() {
    let mut plugin = load();
    let mut audio = plugin.activate(48_000.0, 512);
    let blocks = playing_blocks(100, 512, 48_000.0, 120.0, 0.0);
    let notes = audio.run(blocks);
    assert_eq!(notes.len(), 100);
    for (i, block) in notes.iter().enumerate() {
        assert!(block.iter().all(|n| n.sample < 512), "block {i}: {block:?}");
        assert!(
            block.windows(2).all(|w| w[0].sample <= w[1].sample),
            "block {i}: unsorted {block:?}"
        );
        assert!(
            block
                .iter()
                .all(|n| n.key < 128 && (0.0..=1.0).contains(&n.velocity))
        );
    }
    // Stopped transport, no transport and odd block sizes must be fine too.
    audio.run(vec![
        Block::with_transport(100, TransportInfo::stopped(120.0, 0.0)),
        Block::free(1),
        Block::free(512),
    ]);
    assert_eq!(audio.blocks_processed(), 103);
    let peak = audio.peak_output();
    audio.stop().unwrap();
    assert_eq!(peak, 0.0, "the audio output should be silent");
    assert!(plugin.violations().is_empty(), "{:?}", plugin.violations());
}

#[test]
fn state_round_trips() {
    let mut plugin = load();
    let params = plugin.params();
    // Move one non-read-only parameter away from its default, so the state is not trivial.
    let changed = params
        .iter()
        .find(|p| !p.read_only && p.max > p.min)
        .map(|p| {
            let value = if !p.stepped {
                p.min + 0.37 * (p.max - p.min)
            } else if p.default + 1.0 <= p.max {
                p.default + 1.0
            } else {
                p.min
            };
            plugin.set_param_flush(p.id, value);
            (p.id, plugin.param_value(p.id))
        });
    let values: Vec<(u32, f64)> = params
        .iter()
        .map(|p| (p.id, plugin.param_value(p.id)))
        .collect();
    let state = plugin.save_state();
    assert!(!state.is_empty());

    let mut fresh = load();
    fresh.load_state(&state).unwrap();
    for &(id, value) in &values {
        let restored = fresh.param_value(id);
        assert!(
            (restored - value).abs() < 1e-9,
            "parameter {id}: saved {value}, restored {restored}"
        );
    }
    if let Some((id, value)) = changed {
        assert!((fresh.param_value(id) - value).abs() < 1e-9);
    }
    assert_eq!(
        fresh.save_state(),
        state,
        "saving a loaded state should be stable"
    );
}

#[test]
fn parameter_changes_reach_the_plugin() {
    let mut plugin = load();
    let param = plugin
        .params()
        .into_iter()
        .find(|p| !p.read_only && !p.stepped && p.automatable && p.max > p.min)
        .expect("a continuous automatable parameter");
    let at = |fraction: f64| param.min + fraction * (param.max - param.min);
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * (param.max - param.min);

    // Inactive: params.flush on the main thread.
    plugin.set_param_flush(param.id, at(0.25));
    assert!(close(plugin.param_value(param.id), at(0.25)));

    let mut audio = plugin.activate(44_100.0, 256);
    // Active: a ParamValue event inside a block...
    let mut block = Block::with_transport(256, TransportInfo::playing(100.0, 0.0));
    block.params.push((param.id, 100, at(0.75)));
    audio.run(vec![block]);
    let value = audio.plugin().param_value(param.id);
    assert!(close(value, at(0.75)), "{value} after a block event");
    // ...and params.flush on the audio thread between blocks.
    audio.flush_params(&[(param.id, at(0.5))]);
    let value = audio.plugin().param_value(param.id);
    assert!(close(value, at(0.5)), "{value} after an active flush");
    audio.stop().unwrap();
    assert!(plugin.violations().is_empty(), "{:?}", plugin.violations());
}

// Self-tests of the harness's encoding and decoding (no plugin involved).

#[test]
fn harness_encodes_the_transport_in_fixed_point() {
    let factor = (1i64 << 31) as f64;
    let event = TransportInfo::playing(96.0, 5.5).to_event();
    assert_eq!(event.song_pos_beats.to_bits(), (5.5 * factor) as i64);
    assert_eq!(event.bar_number, 1);
    assert_eq!(event.bar_start.to_bits(), (4.0 * factor) as i64);
    assert_eq!(event.tempo, 96.0);
    assert_eq!(
        (
            event.time_signature_numerator,
            event.time_signature_denominator
        ),
        (4, 4)
    );
    assert!(event.flags.contains(
        TransportFlags::IS_PLAYING
            | TransportFlags::HAS_TEMPO
            | TransportFlags::HAS_BEATS_TIMELINE
            | TransportFlags::HAS_TIME_SIGNATURE
    ));
    assert!(!event.flags.contains(TransportFlags::IS_LOOP_ACTIVE));

    // Rounded to the nearest 2^-31 beat, consistent bar numbers below zero (pre-roll).
    let third = TransportInfo::stopped(120.0, 1.0 / 3.0).to_event();
    assert_eq!(
        third.song_pos_beats.to_bits(),
        (factor / 3.0).round() as i64
    );
    assert!(!third.flags.contains(TransportFlags::IS_PLAYING));
    let pre_roll = TransportInfo::playing(120.0, -1.0).to_event();
    assert_eq!(pre_roll.bar_number, -1);
    assert_eq!(pre_roll.bar_start.to_bits(), (-4.0 * factor) as i64);

    let no_beats = TransportInfo {
        pos_beats: None,
        loop_active: true,
        ..TransportInfo::playing(120.0, 0.0)
    }
    .to_event();
    assert!(!no_beats.flags.contains(TransportFlags::HAS_BEATS_TIMELINE));
    assert!(no_beats.flags.contains(TransportFlags::IS_LOOP_ACTIVE));
}

#[test]
fn harness_decodes_midi_and_clap_notes() {
    let mut events = EventBuffer::new();
    events.push(&NoteOnEvent::new(
        3,
        Pckn::new(0u16, 9u16, 36u16, 0u32),
        0.5,
    ));
    events.push(&MidiEvent::new(10, 0, [0x99, 38, 127]));
    events.push(&MidiEvent::new(20, 0, [0x99, 38, 0]));
    events.push(&MidiEvent::new(30, 0, [0x89, 36, 64]));
    events.push(&MidiEvent::new(40, 0, [0xb9, 7, 100]));
    let decoded = decode_output_events(&events, 64, 0);
    assert!(decoded.violations.is_empty(), "{:?}", decoded.violations);
    let notes: Vec<_> = decoded
        .notes
        .iter()
        .map(|n| (n.sample, n.on, n.key, n.channel, n.velocity, n.source))
        .collect();
    assert_eq!(
        notes,
        [
            (3, true, 36, 9, 0.5, NoteSource::Clap),
            (10, true, 38, 9, 1.0, NoteSource::Midi),
            (20, false, 38, 9, 0.0, NoteSource::Midi),
            (30, false, 36, 9, 64.0 / 127.0, NoteSource::Midi),
        ]
    );
    assert_eq!(decoded.other.len(), 1, "the CC: {:?}", decoded.other);

    // Out of the block and out of order are violations.
    let mut bad = EventBuffer::new();
    bad.push(&MidiEvent::new(50, 0, [0x90, 60, 100]));
    bad.push(&MidiEvent::new(10, 0, [0x80, 60, 0]));
    assert_eq!(decode_output_events(&bad, 32, 7).violations.len(), 2);
}
