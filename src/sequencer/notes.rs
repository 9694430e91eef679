//! The sequencer's sounding-note table: every note it has switched on and not yet off, keyed by
//! MIDI channel and pitch, with the sample its note-off is due at. Part of the AUDIO THREAD
//! sequencer: fixed-size arrays only, no allocation, every operation bounded.

/// MIDI channels x pitches: one slot per key that can sound.
const KEYS: usize = 16 * 128;
/// Marks a key that is not sounding in [`SoundingNotes::slot`].
const SILENT: u16 = u16::MAX;

/// A (channel, pitch) pair packed into one index: `channel * 128 + pitch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Key(u16);

impl Key {
    /// Channel is taken modulo 16 and pitch modulo 128, so every key is in range.
    pub(super) const fn new(channel: u8, pitch: u8) -> Key {
        Key((channel & 0x0f) as u16 * 128 + (pitch & 0x7f) as u16)
    }

    pub(super) fn channel(self) -> u8 {
        (self.0 / 128) as u8
    }

    pub(super) fn pitch(self) -> u8 {
        (self.0 % 128) as u8
    }

    fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// The notes that are on. A key sounds at most once: a retrigger ends the old note first, so one
/// note-off always matches one note-on.
///
/// `active` is a dense list of the sounding keys (usually a handful), so finding the next note-off
/// scans only those, not all 2048 keys; `slot` maps a key to its place in `active` for O(1)
/// removal.
pub(super) struct SoundingNotes {
    /// Absolute sample the note-off is due at (valid while the key sounds).
    off_at: [i64; KEYS],
    /// Absolute sample the note started at (valid while the key sounds), to tell a retrigger from
    /// a second note-on at the very same sample.
    started_at: [i64; KEYS],
    /// Index into `active`, or [`SILENT`].
    slot: [u16; KEYS],
    /// The sounding keys, `len` of them, in no particular order.
    active: [Key; KEYS],
    len: usize,
}

impl SoundingNotes {
    pub(super) fn new() -> SoundingNotes {
        SoundingNotes {
            off_at: [0; KEYS],
            started_at: [0; KEYS],
            slot: [SILENT; KEYS],
            active: [Key(0); KEYS],
            len: 0,
        }
    }

    /// How many notes sound.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_sounding(&self, key: Key) -> bool {
        self.slot[key.index()] != SILENT
    }

    /// The sample a sounding note started at.
    pub(super) fn started_at(&self, key: Key) -> Option<i64> {
        self.is_sounding(key).then(|| self.started_at[key.index()])
    }

    /// Records a note-on at `at` whose note-off is due at `off_at`. The key must not sound (end it
    /// first): the caller owns the retrigger rule.
    pub(super) fn start(&mut self, key: Key, at: i64, off_at: i64) {
        debug_assert!(!self.is_sounding(key), "key {key:?} already sounding");
        let i = key.index();
        self.off_at[i] = off_at;
        self.started_at[i] = at;
        self.slot[i] = self.len as u16;
        self.active[self.len] = key;
        self.len += 1;
    }

    /// Forgets a sounding note (its note-off has been sent). No-op for a silent key.
    pub(super) fn end(&mut self, key: Key) {
        let slot = self.slot[key.index()];
        if slot == SILENT {
            return;
        }
        let slot = usize::from(slot);
        self.len -= 1;
        let moved = self.active[self.len];
        self.active[slot] = moved;
        self.slot[moved.index()] = slot as u16;
        self.slot[key.index()] = SILENT;
    }

    /// The note whose note-off is due first (lowest key on a tie, so output is deterministic).
    pub(super) fn earliest_off(&self) -> Option<(Key, i64)> {
        self.active[..self.len]
            .iter()
            .map(|&k| (self.off_at[k.index()], k))
            .min()
            .map(|(at, k)| (k, at))
    }

    /// The lowest sounding key, for releasing everything in a fixed order.
    pub(super) fn lowest(&self) -> Option<Key> {
        self.active[..self.len].iter().copied().min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_packs_channel_and_pitch() {
        let k = Key::new(9, 36);
        assert_eq!((k.channel(), k.pitch()), (9, 36));
        let k = Key::new(15, 127);
        assert_eq!((k.channel(), k.pitch()), (15, 127));
    }

    #[test]
    fn start_end_and_earliest_off_keep_the_table_consistent() {
        let mut n = SoundingNotes::new();
        let (a, b, c) = (Key::new(9, 36), Key::new(9, 38), Key::new(0, 42));
        n.start(a, 0, 100);
        n.start(b, 5, 50);
        n.start(c, 6, 50);
        assert_eq!(n.len(), 3);
        assert_eq!(n.earliest_off(), Some((c, 50)), "tie -> lowest key");
        n.end(c);
        assert_eq!(n.earliest_off(), Some((b, 50)));
        n.end(a);
        assert!(!n.is_sounding(a) && n.is_sounding(b));
        assert_eq!(n.started_at(b), Some(5));
        n.end(a);
        assert_eq!(n.len(), 1);
        n.end(b);
        assert_eq!((n.len(), n.earliest_off(), n.lowest()), (0, None, None));
    }
}
