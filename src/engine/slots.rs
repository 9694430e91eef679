//! The four morph corners A, B, C, D and what each holds. Plain data: persisted in the plugin state
//! (as JSON), edited by the GUI or the CLI, read by the worker thread. The audio thread never
//! touches it.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Number of morph corners.
pub const SLOT_COUNT: usize = 4;
/// Corner names, in order: `morph x` goes A -> B (and C -> D), `morph y` goes A/B -> C/D.
pub const SLOT_NAMES: [char; SLOT_COUNT] = ['A', 'B', 'C', 'D'];

/// What one corner of the morph pad holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Slot {
    /// A reproducible point from the prior: the same seed always gives the same groove.
    Seed { seed: u64 },
    /// A genre's mean latent from the model file's `style_anchors` (e.g. "rock", "funk").
    Style { name: String },
    /// A groove the user loaded, already encoded. The latent itself is stored (not only the path)
    /// so a saved session reproduces exactly even when the MIDI file has moved or changed.
    File {
        /// The file's name, for display.
        name: String,
        /// The encoder's mean for the chosen window.
        z: Vec<f32>,
    },
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Slot::Seed { seed } => write!(f, "seed:{seed}"),
            Slot::Style { name } => write!(f, "style:{name}"),
            Slot::File { name, .. } => write!(f, "file:{name}"),
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
/// back to seeds (see `Engine::latent_of`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Slots(pub [Slot; SLOT_COUNT]);

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
