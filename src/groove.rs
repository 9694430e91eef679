//! The GrooVAE grid: a 4-bar drum pattern of 16th-note steps x 9 voices, each cell holding a hit,
//! its velocity and its micro-timing offset. Shared by every thread; plain data, no allocation.
//!
//! The representation follows GrooVAE (Gillick et al., "Learning to Groove with Inverse Sequence
//! Transformations", ICML 2019): <https://arxiv.org/abs/1905.06118>.

use std::fmt;

/// 16th-note steps in one 4/4 bar.
pub const STEPS_PER_BAR: usize = 16;
/// Steps in one quarter note.
pub const STEPS_PER_BEAT: usize = 4;
/// Bars in one pattern (the model's sequence length).
pub const BARS: usize = 4;
/// Steps in one pattern.
pub const STEPS: usize = BARS * STEPS_PER_BAR;
/// Drum voices.
pub const VOICES: usize = 9;
/// Model features per step: 9 hits, then 9 velocities, then 9 offsets.
pub const FEATURES: usize = 3 * VOICES;

/// The nine drum voices, in the order the model sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Voice {
    Kick,
    Snare,
    ClosedHiHat,
    OpenHiHat,
    LowTom,
    MidTom,
    HighTom,
    Crash,
    Ride,
}

impl Voice {
    /// Every voice, in model order (`ALL[v.index()] == v`).
    pub const ALL: [Voice; VOICES] = [
        Voice::Kick,
        Voice::Snare,
        Voice::ClosedHiHat,
        Voice::OpenHiHat,
        Voice::LowTom,
        Voice::MidTom,
        Voice::HighTom,
        Voice::Crash,
        Voice::Ride,
    ];

    /// Position in the model's feature layout.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Maps an input pitch to a voice. The map merges General MIDI and the Roland TD-11 map the
    /// Groove MIDI Dataset was recorded with (rims, edges and bells fold into their drum), so files
    /// from either source land on the same rows. Returns `None` for pitches outside the kit
    /// (cowbell, claps, ...): callers drop those notes and count them.
    pub fn from_pitch(pitch: u8) -> Option<Voice> {
        Some(match pitch {
            35 | 36 => Voice::Kick,
            37 | 38 | 40 => Voice::Snare,
            22 | 42 | 44 => Voice::ClosedHiHat,
            26 | 46 => Voice::OpenHiHat,
            41 | 43 | 58 => Voice::LowTom,
            45 | 47 => Voice::MidTom,
            48 | 50 => Voice::HighTom,
            49 | 52 | 55 | 57 => Voice::Crash,
            51 | 53 | 59 => Voice::Ride,
            _ => return None,
        })
    }

    /// The General MIDI pitch a voice plays on by default (users can remap each voice).
    pub fn default_pitch(self) -> u8 {
        DEFAULT_OUTPUT_PITCHES[self.index()]
    }

    /// Human-readable name.
    pub fn name(self) -> &'static str {
        match self {
            Voice::Kick => "kick",
            Voice::Snare => "snare",
            Voice::ClosedHiHat => "closed hi-hat",
            Voice::OpenHiHat => "open hi-hat",
            Voice::LowTom => "low tom",
            Voice::MidTom => "mid tom",
            Voice::HighTom => "high tom",
            Voice::Crash => "crash",
            Voice::Ride => "ride",
        }
    }

    /// Two-letter label for text grids.
    pub fn short(self) -> &'static str {
        ["BD", "SD", "HH", "OH", "LT", "MT", "HT", "CR", "RD"][self.index()]
    }
}

/// Default output pitch per voice (General MIDI drum map), in model order.
pub const DEFAULT_OUTPUT_PITCHES: [u8; VOICES] = [36, 38, 42, 46, 43, 47, 50, 49, 51];

/// One grid cell: a voice at a step.
///
/// `offset` is the distance of the played onset from its grid step, measured in steps, within
/// `[-0.5, 0.5)`. **Positive means late** (played behind the beat), negative means early. A cell
/// without a hit has velocity 0 and offset 0, as in GrooVAE.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cell {
    /// Whether the voice is struck on this step.
    pub hit: bool,
    /// MIDI velocity / 127, in `0..=1`.
    pub velocity: f32,
    /// Onset minus grid position, in steps, in `[-0.5, 0.5)`; positive = late.
    pub offset: f32,
}

impl Cell {
    /// The empty cell.
    pub const REST: Cell = Cell {
        hit: false,
        velocity: 0.0,
        offset: 0.0,
    };

    /// A hit, with velocity clamped to `0..=1` and offset clamped into `[-0.5, 0.5)`.
    pub fn hit(velocity: f32, offset: f32) -> Cell {
        Cell {
            hit: true,
            velocity: clamp_velocity(velocity),
            offset: clamp_offset(offset),
        }
    }
}

/// Largest offset below 0.5 in f32: offsets live in the half-open range `[-0.5, 0.5)`.
pub const MAX_OFFSET: f32 = 0.5 - f32::EPSILON;

/// Clamps to the offset range; NaN becomes 0 (on the grid).
pub fn clamp_offset(offset: f32) -> f32 {
    if offset.is_nan() {
        0.0
    } else {
        offset.clamp(-0.5, MAX_OFFSET)
    }
}

/// Clamps to `0..=1`; NaN becomes 0.
pub fn clamp_velocity(velocity: f32) -> f32 {
    if velocity.is_nan() {
        0.0
    } else {
        velocity.clamp(0.0, 1.0)
    }
}

/// A 4-bar drum pattern. Fixed size and `Copy` so that the audio thread can hold and swap one
/// without allocating.
#[derive(Clone, Copy, PartialEq)]
pub struct Pattern {
    /// `cells[step][voice]`, step 0 = bar 1 beat 1.
    pub cells: [[Cell; VOICES]; STEPS],
}

impl Default for Pattern {
    fn default() -> Self {
        Pattern::EMPTY
    }
}

/// Why a flat feature buffer could not become a [`Pattern`].
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FlatError {
    #[error("expected {expected} values (64 steps x 27 features), got {got}")]
    Length { expected: usize, got: usize },
    #[error("value at step {step}, feature {feature} is not finite ({value})")]
    NotFinite {
        step: usize,
        feature: usize,
        value: f32,
    },
}

impl Pattern {
    /// The silent pattern.
    pub const EMPTY: Pattern = Pattern {
        cells: [[Cell::REST; VOICES]; STEPS],
    };

    /// The cell of `voice` at `step`.
    pub fn get(&self, step: usize, voice: Voice) -> Cell {
        self.cells[step][voice.index()]
    }

    /// Sets a cell. A rest is stored as [`Cell::REST`] whatever velocity or offset it carried.
    pub fn set(&mut self, step: usize, voice: Voice, cell: Cell) {
        self.cells[step][voice.index()] = if cell.hit { cell } else { Cell::REST };
    }

    /// Number of hits.
    pub fn hit_count(&self) -> usize {
        self.cells.iter().flatten().filter(|c| c.hit).count()
    }

    /// Hits per voice.
    pub fn hits_per_voice(&self) -> [usize; VOICES] {
        let mut counts = [0; VOICES];
        for row in &self.cells {
            for (v, c) in row.iter().enumerate() {
                counts[v] += c.hit as usize;
            }
        }
        counts
    }

    /// The model's layout: 64 rows of 27 values (9 hits as 0/1, 9 velocities, 9 offsets in steps),
    /// row-major, appended to `out`.
    pub fn write_flat(&self, out: &mut Vec<f32>) {
        out.reserve(STEPS * FEATURES);
        for row in &self.cells {
            out.extend(row.iter().map(|c| if c.hit { 1.0 } else { 0.0 }));
            out.extend(row.iter().map(|c| if c.hit { c.velocity } else { 0.0 }));
            out.extend(row.iter().map(|c| if c.hit { c.offset } else { 0.0 }));
        }
    }

    /// [`Pattern::write_flat`] into a new vector.
    pub fn to_flat(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(STEPS * FEATURES);
        self.write_flat(&mut out);
        out
    }

    /// Reads the model's layout back. A hit is a hit value `>= 0.5` (so model probabilities
    /// thresholded at 0.5 and exact 0/1 data both work); velocities and offsets are clamped into
    /// range. Non-finite values are an error: they mean a broken model, not a groove.
    pub fn from_flat(flat: &[f32]) -> Result<Pattern, FlatError> {
        if flat.len() != STEPS * FEATURES {
            return Err(FlatError::Length {
                expected: STEPS * FEATURES,
                got: flat.len(),
            });
        }
        let mut p = Pattern::EMPTY;
        for (step, row) in flat.chunks_exact(FEATURES).enumerate() {
            if let Some((feature, &value)) = row.iter().enumerate().find(|(_, x)| !x.is_finite()) {
                return Err(FlatError::NotFinite {
                    step,
                    feature,
                    value,
                });
            }
            for v in 0..VOICES {
                if row[v] >= 0.5 {
                    p.cells[step][v] = Cell::hit(row[VOICES + v], row[2 * VOICES + v]);
                }
            }
        }
        Ok(p)
    }

    /// A text grid: one row per voice (voices that never play are left out unless
    /// `all_voices`), one column per step, a bar line every 16 steps. Each cell is drawn with
    /// [`cell_glyph`], so both dynamics and feel are visible at a glance.
    pub fn to_text_grid(&self, all_voices: bool) -> String {
        let mut s = String::new();
        s.push_str("    ");
        for bar in 0..BARS {
            s.push('|');
            s.push_str(&format!("{:<16}", bar + 1));
        }
        s.push_str("|\n");
        let counts = self.hits_per_voice();
        for voice in Voice::ALL {
            if !all_voices && counts[voice.index()] == 0 {
                continue;
            }
            s.push_str(voice.short());
            s.push_str("  ");
            for step in 0..STEPS {
                if step % STEPS_PER_BAR == 0 {
                    s.push('|');
                }
                s.push(cell_glyph(self.get(step, voice)));
            }
            s.push_str("|\n");
        }
        s
    }
}

/// The glyph of one cell in a text grid: `-` rest; a hit by velocity `.` (< 0.3), `o` (< 0.6),
/// `O` (< 0.85), `X`; a hit more than a quarter step early or late shows `<` or `>` instead.
pub fn cell_glyph(cell: Cell) -> char {
    if !cell.hit {
        '-'
    } else if cell.offset <= -0.25 {
        '<'
    } else if cell.offset >= 0.25 {
        '>'
    } else if cell.velocity < 0.3 {
        '.'
    } else if cell.velocity < 0.6 {
        'o'
    } else if cell.velocity < 0.85 {
        'O'
    } else {
        'X'
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Pattern({} hits)\n{}",
            self.hit_count(),
            self.to_text_grid(false)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voice_order_and_indices_agree() {
        for (i, v) in Voice::ALL.iter().enumerate() {
            assert_eq!(v.index(), i);
        }
    }

    #[test]
    fn every_default_output_pitch_maps_back_to_its_voice() {
        for v in Voice::ALL {
            assert_eq!(
                Voice::from_pitch(v.default_pitch()),
                Some(v),
                "{}",
                v.name()
            );
        }
    }

    #[test]
    fn pitch_map_matches_architecture_table() {
        let table: [(Voice, &[u8]); VOICES] = [
            (Voice::Kick, &[35, 36]),
            (Voice::Snare, &[37, 38, 40]),
            (Voice::ClosedHiHat, &[22, 42, 44]),
            (Voice::OpenHiHat, &[26, 46]),
            (Voice::LowTom, &[41, 43, 58]),
            (Voice::MidTom, &[45, 47]),
            (Voice::HighTom, &[48, 50]),
            (Voice::Crash, &[49, 52, 55, 57]),
            (Voice::Ride, &[51, 53, 59]),
        ];
        let mut mapped = 0;
        for p in 0..=127u8 {
            if let Some(v) = Voice::from_pitch(p) {
                mapped += 1;
                let (_, pitches) = table[v.index()];
                assert!(pitches.contains(&p), "pitch {p} mapped to {}", v.name());
            }
        }
        assert_eq!(mapped, table.iter().map(|(_, p)| p.len()).sum::<usize>());
    }

    #[test]
    fn flat_round_trip_is_exact() {
        let mut p = Pattern::EMPTY;
        p.set(0, Voice::Kick, Cell::hit(1.0, 0.0));
        p.set(4, Voice::Snare, Cell::hit(0.5, 0.25));
        p.set(63, Voice::Ride, Cell::hit(0.1, -0.5));
        let flat = p.to_flat();
        assert_eq!(flat.len(), STEPS * FEATURES);
        assert_eq!(flat[4 * FEATURES + 1], 1.0, "snare hit at step 4");
        assert_eq!(flat[4 * FEATURES + VOICES + 1], 0.5, "snare velocity");
        assert_eq!(flat[4 * FEATURES + 2 * VOICES + 1], 0.25, "snare offset");
        assert_eq!(Pattern::from_flat(&flat).unwrap(), p);
    }

    #[test]
    fn from_flat_rejects_wrong_length_and_nan() {
        assert!(matches!(
            Pattern::from_flat(&[0.0; 10]),
            Err(FlatError::Length { got: 10, .. })
        ));
        let mut flat = vec![0.0; STEPS * FEATURES];
        flat[5] = f32::NAN;
        assert!(matches!(
            Pattern::from_flat(&flat),
            Err(FlatError::NotFinite {
                step: 0,
                feature: 5,
                ..
            })
        ));
    }

    #[test]
    fn cell_values_are_clamped_into_range() {
        let c = Cell::hit(3.0, 0.5);
        assert_eq!(c.velocity, 1.0);
        assert!(c.offset < 0.5);
        assert_eq!(Cell::hit(f32::NAN, f32::NAN), Cell::hit(0.0, 0.0));
    }

    #[test]
    fn text_grid_shows_hits_and_feel() {
        let mut p = Pattern::EMPTY;
        p.set(0, Voice::Kick, Cell::hit(1.0, 0.0));
        p.set(1, Voice::Kick, Cell::hit(1.0, 0.3));
        let g = p.to_text_grid(false);
        assert!(g.contains("BD  |X>--"), "{g}");
        assert!(!g.contains("SD"), "empty voices hidden: {g}");
    }
}
