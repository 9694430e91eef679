//! The four morph corners A, B, C, D and what each holds. Plain data: persisted in the plugin state
//! (as JSON), edited by the GUI or the CLI, read by the worker thread. The audio thread never
//! touches it.
//!
//! A saved session is untrusted input (hand-edited, written by a newer version, damaged), and the
//! corners are the user's work, so each corner is read on its own: one that does not read (an
//! unknown kind, a non-finite or oversized latent, an absurd name) becomes [`Slot::Unreadable`],
//! which plays a seeded fallback, says why, and writes its saved JSON back unchanged, so the next
//! save never destroys what a newer version wrote. The other corners load as saved. A corner too
//! large to keep is written back as `{"kind": "unreadable", "reason": ...}`, which reads back as
//! the same corner (same reason, same fallback), so every corner a session saves reads back.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// The longest corner name kept (a file name or a style), in bytes.
pub const MAX_NAME_BYTES: usize = 1024;
/// The longest latent a corner may hold (models have 128 or 256 dimensions).
pub const MAX_LATENT: usize = 4096;
/// The largest saved JSON of one unreadable corner that is kept to be written back; anything
/// larger is hostile or broken, and only its reason is kept (the worker clones corners often).
pub const MAX_KEPT_JSON_BYTES: usize = 64 * 1024;
/// The largest saved JSON of all four corners that is read at all (the plugin's state filter
/// refuses a longer one unread, `plugin::saved_state`): the largest corner the plugin writes is
/// about that of [`MAX_KEPT_JSON_BYTES`] (a latent of [`MAX_LATENT`] values, or a kept corner), so
/// this leaves four times the room. Reading parses the corners into JSON trees about 16 times
/// their text, so it also bounds what a session costs in memory.
pub const MAX_SLOTS_JSON_BYTES: usize = SLOT_COUNT * 4 * MAX_KEPT_JSON_BYTES;
/// The longest reason kept for an unreadable corner, in bytes: serde's messages quote what they
/// could not read (an unknown kind of a megabyte), and the reason is shown and copied often.
pub const MAX_REASON_BYTES: usize = 256;

/// Number of morph corners.
pub const SLOT_COUNT: usize = 4;
/// Corner names, in order: `morph x` goes A -> B (and C -> D), `morph y` goes A/B -> C/D.
pub const SLOT_NAMES: [char; SLOT_COUNT] = ['A', 'B', 'C', 'D'];

/// What one corner of the morph pad holds.
#[derive(Clone, Debug, PartialEq)]
pub enum Slot {
    /// A reproducible point from the prior: the same seed always gives the same groove.
    Seed { seed: u64 },
    /// A genre's anchor from the model file's `style_anchors` (e.g. "rock", "funk"): the code of
    /// a typical validation groove of that genre (see `evaluate::style_anchors`).
    Style { name: String },
    /// A groove the user loaded, already encoded. The latent itself is stored (not only the path)
    /// so a saved session reproduces exactly even when the MIDI file has moved or changed.
    File {
        /// The file's name, for display.
        name: String,
        /// The encoder's mean for the chosen window.
        z: Vec<f32>,
    },
    /// A corner from a saved session that could not be read. It plays a seeded fallback (seeded by
    /// its reason) and is saved back exactly as it was read (`saved` is its JSON), or, when it
    /// was too large to keep (`saved` is `None`), as `{"kind": "unreadable", "reason": ...}`.
    Unreadable {
        saved: Option<serde_json::Value>,
        reason: String,
    },
}

/// The saved form of the readable kinds (`{"kind": "seed", "seed": 7}`, ...).
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum SavedSlot {
    Seed {
        seed: u64,
    },
    Style {
        name: String,
    },
    File {
        name: String,
        z: Vec<Option<f32>>,
    },
    /// An unreadable corner that was too large to keep. It used to be written as `null`, which
    /// is not a corner at all: the next load refused the whole corner list, and the session's
    /// other corners were lost (found by `tests/state_fuzz.rs`).
    Unreadable {
        reason: String,
    },
}

impl Slot {
    /// Reads one saved corner; never fails (see the module docs).
    fn from_saved(value: serde_json::Value) -> Slot {
        let name_ok = |name: &str| name.len() <= MAX_NAME_BYTES;
        let reason = match SavedSlot::deserialize(&value) {
            Err(e) => e.to_string(),
            Ok(SavedSlot::Seed { seed }) => return Slot::Seed { seed },
            Ok(SavedSlot::Unreadable { reason }) => {
                return Slot::Unreadable {
                    saved: None,
                    reason: shortened(reason),
                };
            }
            Ok(SavedSlot::Style { name }) if name_ok(&name) => return Slot::Style { name },
            Ok(SavedSlot::File { name, z }) if name_ok(&name) && z.len() <= MAX_LATENT => {
                match z.iter().copied().collect::<Option<Vec<f32>>>() {
                    Some(z) if z.iter().all(|v| v.is_finite()) => return Slot::File { name, z },
                    _ => "its latent holds non-finite values".into(),
                }
            }
            Ok(SavedSlot::Style { .. } | SavedSlot::File { .. }) => {
                format!("a name over {MAX_NAME_BYTES} bytes or a latent over {MAX_LATENT} values")
            }
        };
        let kept = value.to_string().len() <= MAX_KEPT_JSON_BYTES;
        Slot::Unreadable {
            saved: kept.then_some(value),
            reason: shortened(reason),
        }
    }
}

/// `reason` cut to at most [`MAX_REASON_BYTES`] (on a character boundary, marked with an ellipsis).
fn shortened(mut reason: String) -> String {
    if reason.len() > MAX_REASON_BYTES {
        let mut end = MAX_REASON_BYTES - '…'.len_utf8();
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push('…');
    }
    reason
}

impl Serialize for Slot {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Slot::Seed { seed } => SavedSlot::Seed { seed: *seed }.serialize(serializer),
            Slot::Style { name } => SavedSlot::Style { name: name.clone() }.serialize(serializer),
            // Non-finite values are written as null (JSON has no NaN) and read back as an
            // unreadable corner that keeps them, never as a failed session.
            Slot::File { name, z } => SavedSlot::File {
                name: name.clone(),
                z: z.iter().map(|v| v.is_finite().then_some(*v)).collect(),
            }
            .serialize(serializer),
            Slot::Unreadable {
                saved: Some(value), ..
            } => value.serialize(serializer),
            Slot::Unreadable {
                saved: None,
                reason,
            } => SavedSlot::Unreadable {
                reason: reason.clone(),
            }
            .serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Slot {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Slot::from_saved(serde_json::Value::deserialize(
            deserializer,
        )?))
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Slot::Seed { seed } => write!(f, "seed:{seed}"),
            Slot::Style { name } => write!(f, "style:{name}"),
            Slot::File { name, .. } => write!(f, "file:{name}"),
            Slot::Unreadable { reason, .. } => write!(f, "unreadable ({reason})"),
        }
    }
}

/// Parses the CLI form `seed:N` or `style:NAME` (files are encoded by the caller, which has a
/// model: see `Engine::encode_file`).
impl FromStr for Slot {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("seed", n)) => n
                .parse()
                .map(|seed| Slot::Seed { seed })
                .map_err(|_| format!("\"{n}\" is not a seed: use seed:N with N a whole number")),
            Some(("style", name)) if !name.is_empty() => Ok(Slot::Style {
                name: name.to_ascii_lowercase(),
            }),
            _ => Err(format!(
                "\"{s}\" is not a slot: use seed:N, style:NAME (e.g. style:funk) or file:PATH.mid"
            )),
        }
    }
}

/// The four corners. Defaults to four contrasting GMD styles; a model without style anchors falls
/// back to seeds (see `Engine::latent_of`). Saved as a JSON array; reading takes each corner on
/// its own, and an array of another length keeps the corners it has (missing ones default).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Slots(pub [Slot; SLOT_COUNT]);

impl<'de> Deserialize<'de> for Slots {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let values = Vec::<serde_json::Value>::deserialize(deserializer)?;
        let mut slots = Slots::default();
        for (i, (slot, value)) in slots.0.iter_mut().zip(values).enumerate() {
            // Something that is not even a corner object is not a session's corners at all:
            // the whole list is refused and the instance keeps the corners it has.
            if !value.get("kind").is_some_and(serde_json::Value::is_string) {
                return Err(serde::de::Error::custom(format!(
                    "corner {} is not an object with a \"kind\"",
                    SLOT_NAMES[i]
                )));
            }
            *slot = Slot::from_saved(value);
        }
        Ok(slots)
    }
}

impl Default for Slots {
    fn default() -> Self {
        let style = |name: &str| Slot::Style {
            name: name.to_string(),
        };
        Slots([style("rock"), style("funk"), style("jazz"), style("latin")])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_through_json() {
        let slots = Slots([
            Slot::Seed { seed: 7 },
            Slot::Style {
                name: "funk".into(),
            },
            Slot::File {
                name: "a.mid".into(),
                z: vec![0.25, -1.5],
            },
            Slot::Seed { seed: u64::MAX },
        ]);
        let json = serde_json::to_string(&slots).unwrap();
        assert_eq!(serde_json::from_str::<Slots>(&json).unwrap(), slots);
    }

    /// One bad corner (non-finite latent written as null, a kind from a newer version, a name
    /// of a megabyte) leaves the others as saved, and every corner writes back what was read.
    #[test]
    fn each_corner_reads_on_its_own_and_writes_back_what_was_saved() {
        let huge = "x".repeat(MAX_NAME_BYTES + 1);
        let json = format!(
            r#"[{{"kind":"file","name":"a.mid","z":[0.5,null]}},{{"kind":"seed","seed":3}},{{"kind":"euclidean","steps":5,"hits":3}},{{"kind":"style","name":"{huge}"}}]"#
        );
        let slots: Slots = serde_json::from_str(&json).unwrap();
        assert!(
            matches!(&slots.0[0], Slot::Unreadable { reason, .. } if reason.contains("non-finite"))
        );
        assert_eq!(slots.0[1], Slot::Seed { seed: 3 });
        assert!(
            matches!(&slots.0[2], Slot::Unreadable { reason, .. } if reason.contains("euclidean")),
            "{:?}",
            slots.0[2]
        );
        assert!(matches!(&slots.0[3], Slot::Unreadable { .. }));
        // Saving writes back exactly what was read, and reading that gives the same corners.
        let saved = serde_json::to_string(&slots).unwrap();
        let back: serde_json::Value = serde_json::from_str(&saved).unwrap();
        let read: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back, read);
        assert_eq!(serde_json::from_str::<Slots>(&saved).unwrap(), slots);
    }

    /// The numbers of a kept corner (and of a latent) come back from every save exactly as they
    /// were read. Failed before serde_json's `float_roundtrip`: `1e-45` read as
    /// `1.0000000000000001e-45`, and every save and load of the session moved it again (found
    /// by `tests/state_fuzz.rs`).
    #[test]
    fn numbers_in_corners_save_back_exactly_through_every_load() {
        let numbers = "1e-45,2.2250738585072014e-308,5e-324,0.1,1.7976931348623157e308,\
                       9007199254740993,-0.0,1.4012984643e-45,3.4028235e38";
        for json in [
            format!(r#"[{{"kind":"file","name":"a","z":[{numbers},null]}}]"#),
            format!(r#"[{{"kind":"euclidean","steps":[{numbers}]}}]"#),
            r#"[{"kind":"file","name":"a","z":[1e-45,1.4e-45,0.1,3.4028235e38]}]"#.to_string(),
        ] {
            let first = serde_json::to_string(&serde_json::from_str::<Slots>(&json).unwrap());
            let first = first.unwrap();
            let second = serde_json::to_string(&serde_json::from_str::<Slots>(&first).unwrap());
            assert_eq!(second.unwrap(), first, "{json}");
        }
    }

    #[test]
    fn a_non_finite_latent_saves_and_reads_back_without_losing_the_other_corners() {
        let mut slots = Slots::default();
        slots.0[2] = Slot::File {
            name: "b.mid".into(),
            z: vec![f32::NAN, 1.0],
        };
        let saved = serde_json::to_string(&slots).unwrap();
        let back: Slots = serde_json::from_str(&saved).unwrap();
        assert_eq!(back.0[0], slots.0[0]);
        assert!(matches!(back.0[2], Slot::Unreadable { .. }));
        assert_eq!(serde_json::to_string(&back).unwrap(), saved);
    }

    #[test]
    fn short_long_and_oversized_corner_lists_keep_what_they_can() {
        let two: Slots =
            serde_json::from_str(r#"[{"kind":"seed","seed":1},{"kind":"seed","seed":2}]"#).unwrap();
        assert_eq!(two.0[1], Slot::Seed { seed: 2 });
        assert_eq!(two.0[2], Slots::default().0[2]);
        let z = vec!["0.0"; MAX_LATENT + 1].join(",");
        let big: Slots =
            serde_json::from_str(&format!(r#"[{{"kind":"file","name":"a","z":[{z}]}}]"#)).unwrap();
        match &big.0[0] {
            Slot::Unreadable { saved, .. } => assert!(
                saved
                    .as_ref()
                    .is_none_or(|s| s.to_string().len() <= MAX_KEPT_JSON_BYTES)
            ),
            other => panic!("{other:?}"),
        }
        assert!(serde_json::from_str::<Slots>(r#"{"not":"a list"}"#).is_err());
        assert!(
            serde_json::from_str::<Slots>("[1, 2]").is_err(),
            "not corners at all"
        );
    }

    /// serde quotes an unknown kind in its message: a kind of 10 KB (or of multi-byte
    /// characters) still leaves a short reason, cut on a character boundary.
    #[test]
    fn an_unreadable_corner_keeps_a_short_reason() {
        for kind in ["k".repeat(10_000), "é".repeat(5_000)] {
            let json = format!(r#"[{{"kind":"{kind}"}}]"#);
            let slots: Slots = serde_json::from_str(&json).unwrap();
            match &slots.0[0] {
                Slot::Unreadable { reason, .. } => {
                    assert!(reason.len() <= MAX_REASON_BYTES, "{}", reason.len());
                    assert!(reason.ends_with('…'), "{reason}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    /// A corner too large to keep saves as an unreadable corner with its reason, which reads
    /// back as the same corner, beside the others. Failed before: it saved as `null`, and the
    /// next load refused the whole list, so the session reopened with none of its corners.
    #[test]
    fn a_corner_too_large_to_keep_saves_as_a_corner_that_reads_back_the_same() {
        let z = vec!["0.123456789"; 2 * MAX_LATENT].join(",");
        let json = format!(
            r#"[{{"kind":"file","name":"a","z":[{z}]}},{{"kind":"seed","seed":3}},{{"kind":"style","name":"jazz"}},{{"kind":"seed","seed":4}}]"#
        );
        let slots: Slots = serde_json::from_str(&json).unwrap();
        assert!(
            matches!(&slots.0[0], Slot::Unreadable { saved: None, .. }),
            "{:?}",
            slots.0[0]
        );
        let saved = serde_json::to_string(&slots).unwrap();
        assert!(saved.len() < 1024, "{saved}");
        let back: Slots = serde_json::from_str(&saved).expect("its own save reads back");
        assert_eq!(back, slots);
        assert_eq!(serde_json::to_string(&back).unwrap(), saved);
    }

    #[test]
    fn cli_slot_syntax_parses_and_rejects_nonsense() {
        assert_eq!("seed:42".parse(), Ok(Slot::Seed { seed: 42 }));
        assert_eq!(
            "style:Rock".parse(),
            Ok(Slot::Style {
                name: "rock".into()
            })
        );
        for bad in ["seed:x", "style:", "rock", "file:a.mid", ""] {
            assert!(bad.parse::<Slot>().is_err(), "{bad}");
        }
    }
}
