//! Writes Standard MIDI Files byte by byte for tests, so that running status, velocity-0
//! note-ons, odd layouts and broken files are exactly what the test says they are.
#![allow(dead_code)]

/// Ticks per beat of the test files: 480, so one 16th step is 120 ticks.
pub const TPB: u16 = 480;
pub const STEP: u32 = 120;
pub const BAR: u32 = 16 * STEP;

/// Builds raw SMF bytes: a header and tracks of `(delta, raw event bytes)`.
pub fn smf(format: u16, division: u16, tracks: &[Vec<(u32, Vec<u8>)>]) -> Vec<u8> {
    let mut out = b"MThd".to_vec();
    out.extend(6u32.to_be_bytes());
    out.extend(format.to_be_bytes());
    out.extend((tracks.len() as u16).to_be_bytes());
    out.extend(division.to_be_bytes());
    for track in tracks {
        let mut body = Vec::new();
        for (delta, bytes) in track {
            body.extend(vlq(*delta));
            body.extend(bytes);
        }
        out.extend(b"MTrk");
        out.extend((body.len() as u32).to_be_bytes());
        out.extend(body);
    }
    out
}

pub fn vlq(mut v: u32) -> Vec<u8> {
    let mut bytes = vec![(v & 0x7f) as u8];
    v >>= 7;
    while v > 0 {
        bytes.insert(0, 0x80 | (v & 0x7f) as u8);
        v >>= 7;
    }
    bytes
}

pub fn tempo(micros: u32) -> Vec<u8> {
    let b = micros.to_be_bytes();
    vec![0xff, 0x51, 0x03, b[1], b[2], b[3]]
}

pub fn time_signature(num: u8, den_pow: u8) -> Vec<u8> {
    vec![0xff, 0x58, 0x04, num, den_pow, 24, 8]
}

pub fn end_of_track() -> Vec<u8> {
    vec![0xff, 0x2f, 0x00]
}

pub fn note_on(channel: u8, pitch: u8, velocity: u8) -> Vec<u8> {
    vec![0x90 | channel, pitch, velocity]
}

/// A format 1 file: a tempo track (120 BPM, 4/4) and one track of absolute-tick note-ons on
/// channel 10, each followed 10 ticks later by a note-off, ending at `end` ticks.
pub fn drum_file(notes: &[(u32, u8, u8)], end: u32) -> Vec<u8> {
    let mut events: Vec<(u32, Vec<u8>)> = Vec::new();
    for &(tick, pitch, vel) in notes {
        events.push((tick, note_on(9, pitch, vel)));
        events.push((tick + 10, vec![0x89, pitch, 0x40]));
    }
    events.sort_by_key(|(t, _)| *t);
    let mut track = Vec::new();
    let mut last = 0;
    for (t, e) in events {
        track.push((t - last, e));
        last = t;
    }
    track.push((end.saturating_sub(last), end_of_track()));
    smf(
        1,
        TPB,
        &[
            vec![
                (0, tempo(500_000)),
                (0, time_signature(4, 2)),
                (0, end_of_track()),
            ],
            track,
        ],
    )
}
