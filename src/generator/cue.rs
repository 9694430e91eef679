//! The audio thread's cue to the worker: *when* a pattern is needed and *which values* it is to be
//! decoded from. Written by the AUDIO THREAD (plain atomic stores, never a lock or an allocation),
//! read by the WORKER THREAD.
//!
//! # Why
//! A new pattern is only heard from the sequencer's next switch point on (`switch at`: the next
//! bar line, beat or 16th), so while the host plays, decoding on every parameter change (one
//! decode per audio block under automation: 47 a second at 1024-sample blocks, 15-17 % of a core
//! per instance) buys nothing: only the last decode before the switch point is ever played. The
//! worker therefore decodes once per switch point, from values the audio thread takes shortly
//! before it, plus previews for an open editor: at most [`PREVIEW_RATE`] a second and
//! [`PREVIEW_SHARE`] of a core.
//!
//! # The decision (what plays at a switch point)
//! Let `S` be the switch step a pattern handed in now would take over at
//! ([`Sequencer::next_switch`]) and `D` its *deadline*: the sample of the earliest a hit of `S`
//! can sound (`S` minus half a step times the timing amount), after which a new pattern waits for
//! the switch point after. At the end of every playing block the audio thread looks at the next
//! switch point; the first block at whose end `S` is the next one and fewer than [`DECISION_LEAD`]
//! of samples (at the block's sample rate) remain from the block's end to `D` is the **decision
//! block** of `S`. The automatable values the audio thread read in that block ([`Automated`]:
//! morph x and y, or the auditioned corner, temperature, density, seed; the plugin reads its
//! parameters once per block, as the host set them for it) are the values of `S`: the pattern
//! played from `S` on is the decode of those values, with the corners as they are when the
//! worker decodes. So when the previous switch point's deadline is more than [`DECISION_LEAD`]
//! before `D` (bars at any tempo up to 1000 BPM, beats up to 280 BPM), the decision block is the
//! block that contains sample `D - DECISION_LEAD`; when switch points come closer together, it is
//! the first block after the previous deadline. Decisions are at least [`MIN_CUE_SPACING`] of
//! audio apart; a switch point that would need one sooner keeps the pattern before it (only
//! beats above 600 BPM or 16ths above 150 BPM), so at most 10 decodes a second are for playing.
//!
//! [`Sequencer::next_switch`]: crate::sequencer::Sequencer::next_switch
//!
//! The worker decodes a decision unless its values (and the corners) are those of the pattern
//! already published, and publishes it at once; the audio thread takes it at its next block. The
//! lead leaves the worker [`DECISION_LEAD`] minus one block (the pattern is taken at a block's
//! start) minus its poll interval for the decode: about 175 ms at 1024-sample blocks and 48 kHz,
//! 50 times a release decode (3.5 ms). A decode that misses the deadline anyway is played from
//! the switch point after (unless the next decision's replaces it first).
//!
//! # Not playing
//! While the transport is stopped (or before the first playing block), a published pattern takes
//! over at once, so the worker publishes every change of the controls, as often as previews
//! ([`PREVIEW_RATE`], [`PREVIEW_SHARE`]; the last change is always decoded), and the first
//! pattern of a new worker (or after a model change) at once.

use crate::engine::{Point, Slots};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering, fence};
use std::time::Duration;

/// How long before a switch point's deadline the audio thread takes its values (see the module
/// docs). 200 ms: it leaves a decode 175 ms after a 1024-sample block at 48 kHz (50 release
/// decodes; a debug build's 50 ms decode on a busy machine fits too) and still 25 ms after an
/// 8192-sample block, and a bar plays what the automation said a tenth of a bar (at 120 BPM)
/// before it.
pub const DECISION_LEAD: Duration = Duration::from_millis(200);
/// The least audio time between two decisions: at most 10 audible decodes a second.
pub const MIN_CUE_SPACING: Duration = Duration::from_millis(100);
/// Decodes a second, at most, that are not for a decision: previews for an open editor while
/// playing, and published changes while stopped.
pub const PREVIEW_RATE: u32 = 10;
/// The share of one core those decodes may take, at most: where a decode takes longer than
/// 3 ms (a slow or busy machine; 3.5 ms is typical), they come less often than [`PREVIEW_RATE`].
/// With the decisions and the worker's polling, an automated instance with its editor open
/// stays under 5 % of a core.
pub const PREVIEW_SHARE: f64 = 0.03;

/// The parts of a morph [`Point`] the host can automate (or the editor's corner audition sets):
/// everything but the corners. Plain values the audio thread can copy without allocating.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Automated {
    pub x: f32,
    pub y: f32,
    pub temperature: f32,
    pub density: f32,
    pub seed: u64,
}

impl Automated {
    /// These values at `slots`.
    pub fn point(self, slots: Slots) -> Point {
        Point {
            slots,
            x: self.x,
            y: self.y,
            temperature: self.temperature,
            density: self.density,
            seed: self.seed,
        }
    }
}

/// One decision of the audio thread (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    /// Counts decisions from 1; a new number is a new decision.
    pub number: u64,
    /// The song step (16ths from song beat 0) of the switch point it is for.
    pub step: i64,
    /// The values the audio thread read in the decision block.
    pub values: Automated,
}

/// The cue itself: shared (`Arc`) by the audio thread, which writes it, and the worker. The last
/// decision is a seqlock over atomics: the one writer bumps `sequence` to odd, stores, bumps it to
/// even; a reader retries until it reads the same even number before and after.
#[derive(Debug, Default)]
pub struct Cue {
    /// Twice the decisions taken (odd while one is being written).
    sequence: AtomicU64,
    step: AtomicU64,
    x: AtomicU32,
    y: AtomicU32,
    temperature: AtomicU32,
    density: AtomicU32,
    seed: AtomicU64,
    /// Whether the last block the audio thread processed was playing.
    playing: AtomicBool,
}

impl Cue {
    pub fn new() -> Cue {
        Cue::default()
    }

    /// AUDIO THREAD: takes the decision for switch step `step` with `values`. Wait-free; the one
    /// writer is the audio thread.
    pub fn decide(&self, step: i64, values: Automated) {
        let sequence = self.sequence.load(Ordering::Relaxed);
        self.sequence.store(sequence + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.step.store(step as u64, Ordering::Relaxed);
        self.x.store(values.x.to_bits(), Ordering::Relaxed);
        self.y.store(values.y.to_bits(), Ordering::Relaxed);
        self.temperature
            .store(values.temperature.to_bits(), Ordering::Relaxed);
        self.density
            .store(values.density.to_bits(), Ordering::Relaxed);
        self.seed.store(values.seed, Ordering::Relaxed);
        self.sequence.store(sequence + 2, Ordering::Release);
    }

    /// AUDIO THREAD (and activation, before the audio thread runs): whether the transport plays.
    pub fn set_playing(&self, playing: bool) {
        self.playing.store(playing, Ordering::Relaxed);
    }

    /// Whether the last processed block was playing: then a published pattern waits for the next
    /// switch point.
    pub fn playing(&self) -> bool {
        self.playing.load(Ordering::Relaxed)
    }

    /// The last decision, or `None` before the first.
    pub fn decision(&self) -> Option<Decision> {
        loop {
            let before = self.sequence.load(Ordering::Acquire);
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let decision = Decision {
                number: before / 2,
                step: self.step.load(Ordering::Relaxed) as i64,
                values: Automated {
                    x: f32::from_bits(self.x.load(Ordering::Relaxed)),
                    y: f32::from_bits(self.y.load(Ordering::Relaxed)),
                    temperature: f32::from_bits(self.temperature.load(Ordering::Relaxed)),
                    density: f32::from_bits(self.density.load(Ordering::Relaxed)),
                    seed: self.seed.load(Ordering::Relaxed),
                },
            };
            fence(Ordering::Acquire);
            if self.sequence.load(Ordering::Relaxed) == before {
                return (before > 0).then_some(decision);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decision_reads_back_whole_and_numbered() {
        let cue = Cue::new();
        assert_eq!(cue.decision(), None);
        let values = Automated {
            x: 0.25,
            y: 1.0,
            temperature: 0.5,
            density: -2.0,
            seed: 77,
        };
        cue.decide(-16, values);
        cue.decide(32, values);
        assert_eq!(
            cue.decision(),
            Some(Decision {
                number: 2,
                step: 32,
                values
            })
        );
    }

    /// A reader racing the writer never sees half of one decision and half of another.
    #[test]
    fn a_reader_never_sees_a_torn_decision() {
        let cue = std::sync::Arc::new(Cue::new());
        let writer = {
            let cue = cue.clone();
            std::thread::spawn(move || {
                for i in 1..=20_000u64 {
                    let v = i as f32;
                    cue.decide(
                        i as i64,
                        Automated {
                            x: v,
                            y: v,
                            temperature: v,
                            density: v,
                            seed: i,
                        },
                    );
                }
            })
        };
        let mut last = 0;
        while last < 20_000 {
            if let Some(d) = cue.decision() {
                let i = d.step as u64;
                assert_eq!(d.number, i, "{d:?}");
                assert_eq!(d.values.seed, i, "{d:?}");
                assert!(
                    [
                        d.values.x,
                        d.values.y,
                        d.values.temperature,
                        d.values.density
                    ]
                    .iter()
                    .all(|&v| v == i as f32),
                    "{d:?}"
                );
                assert!(d.number >= last, "decisions go forward");
                last = d.number;
            }
        }
        writer.join().unwrap();
    }
}
