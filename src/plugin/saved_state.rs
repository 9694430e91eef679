//! A saved session on its way into the plugin (MAIN THREAD: the host loading a session or a
//! preset). nice-plug parses the state and hands it to [`filter`] (the plugin's
//! `Plugin::filter_state`) before it applies anything. A state is untrusted input (hand-edited,
//! damaged, written by a newer version or by another tool), so [`filter`] makes it safe to apply:
//!
//! - **Parameter values are clamped into their ranges**, and float values that are not finite are
//!   dropped (the parameter keeps its value). nice-plug stores a restored value as it comes: an
//!   enum index out of range made the next save panic (nice-plug looks its id up by index: a host
//!   crash), `i32::MIN` for the MIDI channel overflowed nice-plug's range arithmetic (a panic in
//!   debug builds), and a float beyond `f32`'s range (`1e39`) read as infinity and was saved as
//!   `null`, which nice-plug refuses to read, so every later save of the session was unloadable.
//!   (Since serde_json parses floats exactly, its `float_roundtrip` feature, such a float refuses
//!   the whole state, as an `i32` out of range always did; the filter stays as the guard.)
//! - **Parameter ids this plugin does not have are dropped**: nice-plug ignores them anyway, with
//!   a warning per id in debug builds.
//! - **Persisted fields larger than anything the plugin writes are refused by size**, before they
//!   are parsed ([`FIELD_LIMITS`]), and the instance keeps what it has: what a state costs in
//!   memory stays bounded (the corners' JSON would otherwise be parsed into a tree about 16 times
//!   its size, and a model path the worker copies on every poll could be hundreds of megabytes).
//!
//! [`restore`] and [`save`] replay nice-plug's CLAP state load and save (`ext_state_load`,
//! `ext_state_save`) on a [`DrumVaeParams`]: length header, JSON, this filter, the parameter
//! values, the persisted fields. The plugin's own code in that path (this filter, the derived
//! `Params::deserialize_fields`, the corners' reader) is the same; only the CLAP stream is left
//! out. They exist for the fuzzer (`fuzz/fuzz_targets/session_state.rs`) and tests.

use super::DrumVae;
use super::params::DrumVaeParams;
use crate::engine::slots::MAX_SLOTS_JSON_BYTES;
use nice_plug::params::InternalParamMut;
use nice_plug::plugin::ParamValue;
use nice_plug::prelude::*;
use std::collections::{BTreeMap, HashMap};

/// The largest state nice-plug's CLAP loader reads (its `MAX_STATE_BYTES`): a longer length
/// header is refused before anything is allocated.
pub const MAX_STATE_BYTES: u64 = 256 * 1024 * 1024;

/// The longest saved model path read, in bytes of its JSON: far beyond any file system's limit
/// (4 KiB on Linux, 1 KiB on macOS, 32,767 UTF-16 units on Windows, which is at most 96 KiB of
/// UTF-8 before JSON escapes).
pub const MAX_MODEL_JSON_BYTES: usize = 256 * 1024;

/// The largest JSON read for each persisted field (by its `#[persist]` key); a longer one is
/// refused unread and the instance keeps its value. Unknown fields are left alone (nice-plug
/// ignores them).
pub const FIELD_LIMITS: [(&str, usize); 4] = [
    ("slots", MAX_SLOTS_JSON_BYTES),
    ("model", MAX_MODEL_JSON_BYTES),
    // A number, and a pair of numbers.
    ("selected-slot", 64),
    ("editor-size", 64),
];

/// What [`filter`] changed in a state, for its warning (and for tests).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Filtered {
    /// Parameter values moved into their range.
    pub clamped: Vec<String>,
    /// Parameter values dropped (non-finite) and parameter ids this plugin does not have.
    pub dropped: Vec<String>,
    /// Persisted fields refused for their size.
    pub refused: Vec<String>,
}

impl Filtered {
    fn is_empty(&self) -> bool {
        self.clamped.is_empty() && self.dropped.is_empty() && self.refused.is_empty()
    }
}

/// A parameter's range as plain values, and what kind of value it stores.
#[derive(Clone, Copy, Debug)]
enum Range {
    Float {
        min: f32,
        max: f32,
    },
    Int {
        min: i32,
        max: i32,
    },
    Bool,
    /// Variant indices `0..len`.
    Enum {
        len: i32,
    },
}

/// The range of every parameter, by string id.
fn ranges() -> HashMap<String, Range> {
    let params = DrumVaeParams::default();
    params
        .param_map()
        .into_iter()
        .map(|(id, ptr, _)| {
            // SAFETY: `ptr` points into `params`, which outlives this loop.
            let range = unsafe {
                let (min, max) = (ptr.preview_plain(0.0), ptr.preview_plain(1.0));
                match ptr {
                    ParamPtr::FloatParam(_) => Range::Float { min, max },
                    ParamPtr::IntParam(_) => Range::Int {
                        min: min as i32,
                        max: max as i32,
                    },
                    ParamPtr::BoolParam(_) => Range::Bool,
                    ParamPtr::EnumParam(p) => Range::Enum {
                        len: (*p).len() as i32,
                    },
                }
            };
            (id, range)
        })
        .collect()
}

/// Makes a parsed state safe to apply (see the module docs); returns what it changed.
pub fn filter_state(state: &mut PluginState) -> Filtered {
    let ranges = ranges();
    let mut filtered = Filtered::default();
    state.params.retain(|id, value| {
        let Some(range) = ranges.get(id) else {
            filtered.dropped.push(id.clone());
            return false;
        };
        let clamped = match (*range, &*value) {
            (Range::Float { .. }, ParamValue::F32(v)) if !v.is_finite() => {
                filtered.dropped.push(id.clone());
                return false;
            }
            (Range::Float { min, max }, ParamValue::F32(v)) => ParamValue::F32(v.clamp(min, max)),
            (Range::Int { min, max }, ParamValue::I32(v)) => ParamValue::I32((*v).clamp(min, max)),
            (Range::Enum { len }, ParamValue::I32(v)) => ParamValue::I32((*v).clamp(0, len - 1)),
            // Bools, enum ids (nice-plug checks them) and values of the wrong kind (nice-plug
            // ignores them) pass as they are.
            _ => return true,
        };
        if !same(&clamped, value) {
            filtered.clamped.push(id.clone());
            *value = clamped;
        }
        true
    });
    for (key, limit) in FIELD_LIMITS {
        if state.fields.get(key).is_some_and(|json| json.len() > limit) {
            state.fields.remove(key);
            filtered.refused.push(key.to_string());
        }
    }
    filtered
}

/// Bit-identical values (so `-0.0` clamped to `0.0` counts as a change, and NaN is never equal).
fn same(a: &ParamValue, b: &ParamValue) -> bool {
    match (a, b) {
        (ParamValue::F32(a), ParamValue::F32(b)) => a.to_bits() == b.to_bits(),
        (ParamValue::I32(a), ParamValue::I32(b)) => a == b,
        _ => false,
    }
}

/// [`filter_state`] with a warning when it changed anything: the plugin's `filter_state`.
pub fn filter(state: &mut PluginState) {
    let filtered = filter_state(state);
    if !filtered.is_empty() {
        let list = |ids: &[String]| {
            let mut text = ids.iter().take(8).cloned().collect::<Vec<_>>().join(", ");
            if ids.len() > 8 {
                text.push_str(&format!(" and {} more", ids.len() - 8));
            }
            text
        };
        nice_warn!(
            "DrumVAE: the session's state was repaired: values clamped into range [{}], values \
             dropped (not finite, or unknown parameters) [{}], fields too large to read [{}]",
            list(&filtered.clamped),
            list(&filtered.dropped),
            list(&filtered.refused)
        );
    }
}

/// Why [`restore`] refused a state (nice-plug's loader returns `false` then, and the instance
/// keeps everything it had).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("the state is shorter than its 8-byte length header")]
    NoHeader,
    #[error("the length header says {0} bytes, over the {MAX_STATE_BYTES}-byte limit")]
    TooLong(u64),
    #[error("the state is not a plugin state: {0}")]
    Json(#[from] serde_json::Error),
}

/// Loads a state the way nice-plug's CLAP wrapper does (see the module docs): an 8-byte
/// little-endian length, then at most that many bytes of JSON (a stream that ends early gives what
/// it has); parse, [`DrumVae`]'s `filter_state`, the parameter values, the persisted fields. A
/// refused state changes nothing.
pub fn restore(params: &DrumVaeParams, bytes: &[u8]) -> Result<(), RestoreError> {
    let (header, rest) = bytes
        .split_first_chunk::<8>()
        .ok_or(RestoreError::NoHeader)?;
    let length = u64::from_le_bytes(*header);
    if length > MAX_STATE_BYTES {
        return Err(RestoreError::TooLong(length));
    }
    let json = &rest[..rest.len().min(length as usize)];
    let mut state: PluginState = serde_json::from_slice(json)?;
    <DrumVae as Plugin>::filter_state(&mut state);

    let by_id: HashMap<String, ParamPtr> = params
        .param_map()
        .into_iter()
        .map(|(id, ptr, _)| (id, ptr))
        .collect();
    for (id, value) in &state.params {
        let Some(ptr) = by_id.get(id) else {
            continue;
        };
        // SAFETY: every pointer points into `params`, which outlives this call. The setters are
        // nice-plug's own (marked internal): this is its `state::deserialize_object`, value for
        // value, so the fuzzer reaches what the plugin does with each value.
        unsafe {
            match (*ptr, value) {
                (ParamPtr::FloatParam(p), ParamValue::F32(v)) => {
                    (*p)._internal_set_plain_value(*v);
                }
                (ParamPtr::IntParam(p), ParamValue::I32(v)) => {
                    (*p)._internal_set_plain_value(*v);
                }
                (ParamPtr::BoolParam(p), ParamValue::Bool(v)) => {
                    (*p)._internal_set_plain_value(*v);
                }
                (ParamPtr::EnumParam(p), ParamValue::I32(v)) => {
                    (*p)._internal_set_plain_value(*v);
                }
                (ParamPtr::EnumParam(p), ParamValue::String(id)) => {
                    (*p).set_from_id(id);
                }
                // nice-plug ignores a value of the wrong kind.
                _ => {}
            }
        }
    }
    params.deserialize_fields(&state.fields);
    Ok(())
}

/// Saves a state the way nice-plug's CLAP wrapper does: every parameter's plain value by string
/// id (enums by their variant id), the persisted fields, the plugin version; JSON after an 8-byte
/// little-endian length.
pub fn save(params: &DrumVaeParams) -> Vec<u8> {
    let values: BTreeMap<String, ParamValue> = params
        .param_map()
        .into_iter()
        .map(|(id, ptr, _)| {
            // SAFETY: every pointer points into `params`, which outlives this call.
            let value = unsafe {
                match ptr {
                    ParamPtr::FloatParam(p) => ParamValue::F32((*p).unmodulated_plain_value()),
                    ParamPtr::IntParam(p) => ParamValue::I32((*p).unmodulated_plain_value()),
                    ParamPtr::BoolParam(p) => ParamValue::Bool((*p).unmodulated_plain_value()),
                    ParamPtr::EnumParam(p) => match (*p).unmodulated_plain_id() {
                        Some(id) => ParamValue::String(id.to_owned()),
                        None => ParamValue::I32((*p).unmodulated_plain_value()),
                    },
                }
            };
            (id, value)
        })
        .collect();
    let state = PluginState {
        version: DrumVae::VERSION.to_string(),
        params: values,
        fields: params.serialize_fields(),
    };
    let json = serde_json::to_vec(&state).expect("a plugin state always serialises");
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend(json);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use nice_plug::plugin::ParamValue::{Bool, F32, I32, String as Id};

    fn state(params: Vec<(&str, ParamValue)>, fields: Vec<(&str, String)>) -> PluginState {
        PluginState {
            version: String::new(),
            params: params
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            fields: fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }
    }

    fn value(state: &PluginState, id: &str) -> Option<String> {
        state.params.get(id).map(|v| format!("{v:?}"))
    }

    #[test]
    fn values_are_clamped_into_range_and_non_finite_and_unknown_ones_dropped() {
        let mut s = state(
            vec![
                ("mx", F32(1.5)),
                ("my", F32(f32::INFINITY)),
                ("temp", F32(-0.5)),
                ("dens", F32(0.25)),
                ("chan", I32(i32::MIN)),
                ("seed", I32(5)),
                ("switch", I32(7)),
                ("mute_kick", Bool(true)),
                ("len", I32(3)),
                ("nope", F32(1.0)),
            ],
            vec![],
        );
        let filtered = filter_state(&mut s);
        assert_eq!(value(&s, "mx").as_deref(), Some("F32(1.0)"));
        assert_eq!(value(&s, "my"), None, "infinity is dropped");
        assert_eq!(value(&s, "temp").as_deref(), Some("F32(0.0)"));
        assert_eq!(
            value(&s, "dens").as_deref(),
            Some("F32(0.25)"),
            "in range: as is"
        );
        assert_eq!(value(&s, "chan").as_deref(), Some("I32(1)"));
        assert_eq!(value(&s, "seed").as_deref(), Some("I32(5)"));
        assert_eq!(value(&s, "switch").as_deref(), Some("I32(2)"));
        assert_eq!(value(&s, "mute_kick").as_deref(), Some("Bool(true)"));
        assert_eq!(
            value(&s, "len").as_deref(),
            Some("I32(3)"),
            "wrong kind: nice-plug's call"
        );
        assert_eq!(value(&s, "nope"), None);
        assert_eq!(filtered.clamped, ["chan", "mx", "switch", "temp"]);
        assert_eq!(filtered.dropped, ["my", "nope"]);
    }

    #[test]
    fn fields_over_their_limit_are_refused_unread_and_others_pass() {
        let corners = r#"[{"kind":"seed","seed":1}]"#.to_string();
        let mut s = state(
            vec![("switch", Id("beat".into()))],
            vec![
                (
                    "slots",
                    format!("{corners}{}", " ".repeat(MAX_SLOTS_JSON_BYTES)),
                ),
                (
                    "model",
                    format!("\"/{}\"", "p".repeat(MAX_MODEL_JSON_BYTES)),
                ),
                ("selected-slot", "1".into()),
                ("editor-size", "[900,640]".into()),
                ("future", "x".repeat(MAX_MODEL_JSON_BYTES + 1)),
            ],
        );
        let filtered = filter_state(&mut s);
        assert_eq!(filtered.refused, ["slots", "model"]);
        let keys: Vec<&str> = s.fields.keys().map(String::as_str).collect();
        assert_eq!(keys, ["editor-size", "future", "selected-slot"]);
        assert_eq!(value(&s, "switch").as_deref(), Some("String(\"beat\")"));
    }

    /// A state saved by [`save`] restores into a fresh set of parameters and saves the same.
    #[test]
    fn save_and_restore_round_trip() {
        let params = DrumVaeParams::default();
        *params.model_path.write() = Some("/a/model.safetensors".into());
        params.slots.write().0[2] = crate::generator::Slot::Seed { seed: 9 };
        let saved = save(&params);
        let fresh = DrumVaeParams::default();
        restore(&fresh, &saved).unwrap();
        assert!(save(&fresh) == saved);
        assert!(matches!(
            restore(&fresh, &saved[..7]),
            Err(RestoreError::NoHeader)
        ));
        let mut huge = saved.clone();
        huge[..8].copy_from_slice(&(MAX_STATE_BYTES + 1).to_le_bytes());
        assert!(matches!(
            restore(&fresh, &huge),
            Err(RestoreError::TooLong(_))
        ));
        assert!(matches!(
            restore(&fresh, &saved[..saved.len() - 1]),
            Err(RestoreError::Json(_))
        ));
    }
}
