//! Hostile plugin states, made from a valid saved state by a seeded generator (the same cases on
//! every run), for `tests/state_fuzz.rs`. A state is nice-plug's CLAP layout: an 8-byte
//! little-endian length, then JSON `{"version", "params": {id: {"f32"|"i32"|"bool"|"string": v}},
//! "fields": {key: JSON text}}`; the corners (`fields.slots`) are JSON inside that JSON.
//!
//! - [`systematic`]: every parameter and every field given every wrong type and every hostile
//!   value, every corner given every unknown kind and broken member, truncations at every length
//!   class (the stream ending early, and the JSON cut short with a matching header), deep nesting
//!   on both sides of serde_json's recursion limit, the empty blob, random bytes.
//! - [`random`]: byte flips, insertions of bytes and of JSON tokens (`NaN`, `1e400`, `-0`, ...),
//!   deletions, duplicated keys, spliced states, and random hostile values at random places of the
//!   state tree, the corners' tree included.
//! - [`oversized`]: the few large ones (a corners field of megabytes, a model path of a megabyte,
//!   a latent of a million values, a parameter id of a megabyte), built one at a time.
#![allow(dead_code)]

use rand::seq::IndexedRandom;
use rand::{Rng, RngCore};
use serde_json::{Value, json};

/// One generated state and what kind of damage it carries (for messages and counts).
pub struct Case {
    pub kind: &'static str,
    pub bytes: Vec<u8>,
}

impl Case {
    fn new(kind: &'static str, bytes: Vec<u8>) -> Case {
        Case { kind, bytes }
    }
}

/// The state with its length header.
pub fn with_header(body: &[u8]) -> Vec<u8> {
    let mut bytes = (body.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(body);
    bytes
}

/// A placeholder string value that [`seal`] replaces with a raw JSON token, so tokens a
/// `serde_json::Value` cannot hold (`NaN`, `1e400`, `01`) can sit anywhere in a state.
const HOLE: &str = "@@hole@@";

/// Raw tokens for holes: invalid JSON numbers and words, and numbers `Value` would rewrite.
const RAW_TOKENS: [&str; 16] = [
    "NaN",
    "Infinity",
    "-Infinity",
    "nan",
    "inf",
    "1e400",
    "-1e400",
    "-0",
    "1E5",
    "0e0",
    "01",
    ".5",
    "+1",
    "1.",
    "undefined",
    "0x10",
];

/// A state with its fields' JSON texts parsed, so that mutations can reach inside the corners.
/// Fields whose text is not JSON stay strings.
pub fn unpack(state: &Value) -> Value {
    let mut state = state.clone();
    if let Some(fields) = state.get_mut("fields").and_then(Value::as_object_mut) {
        for value in fields.values_mut() {
            if let Some(parsed) = value.as_str().and_then(|t| serde_json::from_str(t).ok()) {
                *value = parsed;
            }
        }
    }
    state
}

/// The inverse of [`unpack`]: every field value written back as JSON text (holes filled with
/// `token`).
pub fn pack(state: &Value, token: &str) -> Value {
    let mut state = state.clone();
    if let Some(fields) = state.get_mut("fields").and_then(Value::as_object_mut) {
        for value in fields.values_mut() {
            let text = serde_json::to_string(value).unwrap();
            *value = Value::String(text.replace(&format!("\"{HOLE}\""), token));
        }
    }
    state
}

/// The JSON text of a (packed) state, holes filled with `token`.
pub fn seal(state: &Value, token: &str) -> Vec<u8> {
    serde_json::to_string(state)
        .unwrap()
        .replace(&format!("\"{HOLE}\""), token)
        .into_bytes()
}

/// `text` as a JSON string literal.
fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

/// `depth` nested arrays around `inner`, as text (a `Value` that deep would overflow the stack
/// when serialised or dropped).
fn nested_text(depth: usize, inner: &str) -> String {
    format!("{}{inner}{}", "[".repeat(depth), "]".repeat(depth))
}

/// Hostile values for any place in a state.
pub fn hostile_value(rng: &mut impl Rng) -> Value {
    let long = |rng: &mut dyn RngCore, n: usize| -> String {
        (0..n)
            .map(|_| match rng.random_range(0..4) {
                0 => char::from(rng.random_range(b' '..=b'~')),
                1 => char::from_u32(rng.random_range(0x80..0xD7FF)).unwrap_or('?'),
                2 => ['"', '\\', '\n', '\u{0}', '\u{7f}'][rng.random_range(0..5)],
                _ => 'x',
            })
            .collect()
    };
    match rng.random_range(0..34) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(false),
        3 => json!(0),
        4 => json!(-1),
        5 => json!(0.5),
        6 => json!(1e39),
        7 => json!(-1e39),
        8 => json!(1e308),
        9 => json!(-1e308),
        10 => json!(1e-45),
        11 => json!(2_147_483_648u64),
        12 => json!(-2_147_483_649i64),
        13 => json!(i32::MIN),
        14 => json!(i32::MAX),
        15 => json!(u64::MAX),
        16 => json!(i64::MIN),
        17 => {
            let word =
                ["NaN", "nan", "inf", "-inf", "Infinity", "-Infinity"][rng.random_range(0..6)];
            json!(word)
        }
        18 => json!(""),
        19 => {
            let n = rng.random_range(1..3000);
            Value::String(long(rng, n))
        }
        20 => json!([]),
        21 => json!({}),
        22 => json!([1, 2, 3]),
        23 => {
            let depth = rng.random_range(1..120);
            (0..depth).fold(json!(0), |inner, _| json!([inner]))
        }
        24 => json!({"kind": "seed", "seed": rng.random::<u64>()}),
        25 => json!({"kind": hostile_kind(rng)}),
        26 => {
            let n = rng.random_range(0..5000);
            Value::Array(
                (0..n)
                    .map(|_| match rng.random_range(0..20) {
                        0 => Value::Null,
                        1 => json!("NaN"),
                        2 => json!(1e39),
                        _ => json!(rng.random::<f32>() * 4.0 - 2.0),
                    })
                    .collect(),
            )
        }
        27 => json!({"f32": rng.random::<f32>()}),
        28 => json!({"i32": rng.random::<i32>()}),
        29 => json!({"bool": rng.random::<bool>()}),
        30 => {
            let id = ["bar", "beat", "now", "", "x"][rng.random_range(0..5)];
            json!({ "string": id })
        }
        31 => Value::String(HOLE.into()),
        32 => json!({"kind": "file", "name": "a.mid", "z": [0.5, null]}),
        _ => json!(rng.random::<f64>() * 1e6 - 5e5),
    }
}

/// Corner kinds that no version of the plugin has, or nearly has.
fn hostile_kind(rng: &mut impl Rng) -> Value {
    [
        json!("euclidean"),
        json!(""),
        json!("SEED"),
        json!("seed "),
        json!("Seed"),
        json!("unreadable"),
        json!(5),
        Value::Null,
        json!(["seed"]),
        json!({"seed": 1}),
    ]
    .choose(rng)
    .unwrap()
    .clone()
}

/// Every node of `value` as a JSON pointer (the root is `""`).
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let escaped = key.replace('~', "~0").replace('/', "~1");
                pointers(child, format!("{at}/{escaped}"), out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                pointers(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

/// Where to cut a state's JSON text.
fn truncations(body: &[u8]) -> Vec<usize> {
    // Every length class: the first bytes one by one, then powers of two and their neighbours,
    // then a spread over the whole body, and the last bytes one by one.
    let n = body.len();
    let mut cuts: Vec<usize> = (0..=16.min(n)).collect();
    let mut p = 32;
    while p < n {
        cuts.extend([p - 1, p, p + 1]);
        p *= 2;
    }
    cuts.extend((1..40).map(|i| i * n / 40));
    cuts.extend(n.saturating_sub(8)..n);
    cuts.retain(|&c| c < n);
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// The deterministic cases (see the module docs).
pub fn systematic(base: &Value, rng: &mut impl Rng) -> Vec<Case> {
    let mut cases = Vec::new();
    let body = seal(base, "null");
    let full = with_header(&body);

    // The blob itself: empty, shorter than its header, header only, random bytes.
    cases.push(Case::new("empty blob", Vec::new()));
    for n in 1..8 {
        cases.push(Case::new("shorter than the header", full[..n].to_vec()));
    }
    cases.push(Case::new("header only", full[..8].to_vec()));
    cases.push(Case::new("header of zero", 0u64.to_le_bytes().to_vec()));
    for length in [1u64 << 28, (1 << 28) + 1, 1 << 40, u64::MAX] {
        let mut bytes = length.to_le_bytes().to_vec();
        bytes.extend_from_slice(&body);
        cases.push(Case::new("huge length header", bytes));
    }
    for n in [1, 7, 8, 9, 100, 4096, 65_536] {
        let noise: Vec<u8> = (0..n).map(|_| rng.random()).collect();
        cases.push(Case::new("random bytes", noise.clone()));
        cases.push(Case::new(
            "random bytes after a header",
            with_header(&noise),
        ));
    }
    for text in [
        "",
        "{}",
        "[]",
        "null",
        "0",
        "\"\"",
        r#"{"params": 5}"#,
        r#"{"params": {}}"#,
        r#"{"fields": {}}"#,
        r#"{"params": {}, "fields": {}}"#,
        r#"{"params": {}, "fields": {}, "version": 5}"#,
        r#"{"params": {}, "fields": {}, "extra": [1, 2]}"#,
        r#"{"params": [], "fields": {}}"#,
        r#"{"params": {}, "fields": []}"#,
        r#"{"params": null, "fields": null}"#,
    ] {
        cases.push(Case::new(
            "JSON of another shape",
            with_header(text.as_bytes()),
        ));
    }

    // Truncations at every length class: the stream ends early (the header keeps the full
    // length), and the JSON is cut short (the header says the cut length).
    for cut in truncations(&body) {
        cases.push(Case::new("stream ends early", full[..8 + cut].to_vec()));
        cases.push(Case::new("JSON cut short", with_header(&body[..cut])));
    }
    // A header longer or shorter than the JSON by a little.
    for delta in [-2i64, -1, 1, 2, 1000] {
        let mut bytes = ((body.len() as i64 + delta) as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(&body);
        cases.push(Case::new("header off by a little", bytes));
    }

    // Every parameter: every wrong type and hostile value, as a value and as raw tokens.
    let ids: Vec<String> = base["params"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let param_values = [
        json!({"f32": 0.5}),
        json!({"f32": -0.0}),
        json!({"f32": 1e39}),
        json!({"f32": -1e39}),
        json!({"f32": 1e308}),
        json!({"f32": 3.4e38}),
        json!({"f32": 1e-46}),
        json!({"f32": -1e30}),
        json!({"f32": 1e30}),
        json!({"f32": "0.5"}),
        json!({"f32": null}),
        json!({"f32": "NaN"}),
        json!({"f32": "inf"}),
        json!({"i32": 1}),
        json!({"i32": 7}),
        json!({"i32": -1}),
        json!({"i32": i32::MIN}),
        json!({"i32": i32::MAX}),
        json!({"i32": 2_147_483_648u64}),
        json!({"i32": 1.5}),
        json!({"bool": true}),
        json!({"bool": 1}),
        json!({"string": "x"}),
        json!({"string": "beat"}),
        json!({"string": ""}),
        json!({"f32": 1, "i32": 2}),
        json!({"F32": 1}),
        json!({}),
        json!(null),
        json!(5),
        json!("x"),
        json!([]),
    ];
    for id in &ids {
        for value in &param_values {
            let mut state = base.clone();
            state["params"][id] = value.clone();
            cases.push(Case::new(
                "parameter of a wrong type or value",
                with_header(&seal(&state, "null")),
            ));
        }
        for token in ["NaN", "Infinity", "-Infinity", "1e400", "-0", "01"] {
            let mut state = base.clone();
            state["params"][id] = json!({"f32": HOLE});
            cases.push(Case::new(
                "parameter as a raw token",
                with_header(&seal(&state, token)),
            ));
        }
    }
    // Parameter ids this plugin does not have, and none at all.
    for extra in [
        json!({"nope": {"f32": 1.0}}),
        json!({"": {"bool": true}}),
        json!({"MX": {"f32": 0.5}}),
        json!({"mx ": {"f32": 0.5}}),
    ] {
        let mut state = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            state["params"][k] = v.clone();
        }
        cases.push(Case::new(
            "unknown parameter",
            with_header(&seal(&state, "null")),
        ));
    }

    // Every field: values that are not JSON text, and JSON text of every wrong type.
    let keys: Vec<String> = base["fields"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let deep = |depth: usize| nested_text(depth, "0");
    let field_texts: Vec<String> = [
        "",
        " ",
        "null",
        "5",
        "-1",
        "1e400",
        "18446744073709551615",
        "18446744073709551616",
        "\"x\"",
        "\"\"",
        "[]",
        "{}",
        "true",
        "[1,2]",
        "[null,null]",
        "[4294967296,1]",
        "[-1,-1]",
        "[0,0]",
        "[1,2,3]",
        "[900,640] x",
        "\"/nonexistent/drumvae/model.safetensors\"",
        "\"\\u0000\"",
        "\"\\ud800\"",
        "{",
        "[{\"kind\":\"seed\",\"seed\":1}",
        "[{\"kind\":\"seed\",\"seed\":1},{\"kind\":\"seed\",\"seed\":2},{\"kind\":\"seed\",\"seed\":3},{\"kind\":\"seed\",\"seed\":4},{\"kind\":\"seed\",\"seed\":5}]",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([deep(127), deep(128), deep(129), deep(5000)])
    .collect();
    for key in &keys {
        for raw in [
            json!(5),
            Value::Null,
            json!({}),
            json!([]),
            json!(true),
            json!(["[]"]),
        ] {
            let mut state = base.clone();
            state["fields"][key] = raw;
            cases.push(Case::new(
                "field that is not JSON text",
                with_header(&seal(&state, "null")),
            ));
        }
        for text in &field_texts {
            let mut state = base.clone();
            state["fields"][key] = Value::String(text.clone());
            cases.push(Case::new(
                "field of a wrong type",
                with_header(&seal(&state, "null")),
            ));
        }
    }
    // Unknown fields.
    for (key, text) in [("other", "[1]"), ("", "x"), ("Slots", "[]")] {
        let mut state = base.clone();
        state["fields"][key] = Value::String(text.into());
        cases.push(Case::new(
            "unknown field",
            with_header(&seal(&state, "null")),
        ));
    }

    // Corners: every position given unknown kinds and broken members.
    let unpacked = unpack(base);
    let corner_values: Vec<Value> = vec![
        json!({"kind": "euclidean", "steps": 5, "hits": 3}),
        json!({"kind": ""}),
        json!({"kind": "SEED", "seed": 1}),
        json!({"kind": "seed "}),
        json!({"kind": 5}),
        json!({"kind": null}),
        json!({"seed": 1}),
        json!({"kind": "seed"}),
        json!({"kind": "seed", "seed": -1}),
        json!({"kind": "seed", "seed": 1.5}),
        json!({"kind": "seed", "seed": "7"}),
        json!({"kind": "seed", "seed": null}),
        json!({"kind": "seed", "seed": u64::MAX}),
        json!({"kind": "seed", "seed": 1, "extra": true}),
        json!({"kind": "style", "name": ""}),
        json!({"kind": "style", "name": "x".repeat(1025)}),
        json!({"kind": "style", "name": "ドラム"}),
        json!({"kind": "style", "name": 5}),
        json!({"kind": "file", "name": "a.mid", "z": []}),
        json!({"kind": "file", "name": "a.mid", "z": [0.5, null, "NaN"]}),
        json!({"kind": "file", "name": "a.mid", "z": [1e39, -1e39]}),
        json!({"kind": "file", "name": "a.mid", "z": [3.4e38, -3.4e38, 1e-45]}),
        json!({"kind": "file", "name": "a.mid", "z": vec![0.25; 4097]}),
        json!({"kind": "file", "name": "a.mid", "z": vec![0.25; 4096]}),
        json!({"kind": "file", "name": "a.mid", "z": [[0.5]]}),
        json!({"kind": "file", "name": "a.mid", "z": {"0": 0.5}}),
        json!({"kind": "file", "name": "a.mid"}),
        json!({"kind": "file", "z": [0.5]}),
        json!({"kind": "file", "name": null, "z": [0.5]}),
        json!({"kind": "unreadable", "saved": null, "reason": "x"}),
        json!(null),
        json!(5),
        json!("seed:5"),
        json!([]),
        Value::String(HOLE.into()),
    ];
    for corner in 0..4 {
        for value in &corner_values {
            let mut state = unpacked.clone();
            state["fields"]["slots"][corner] = value.clone();
            let token = ["NaN", "1e400", "-0"][corner % 3];
            cases.push(Case::new(
                "corner of an unknown kind or broken",
                with_header(&seal(&pack(&state, token), "null")),
            ));
        }
    }
    for list in [
        json!([]),
        json!([{"kind": "seed", "seed": 1}]),
        json!({"0": 1}),
        json!("[]"),
    ] {
        let mut state = unpacked.clone();
        state["fields"]["slots"] = list;
        cases.push(Case::new(
            "corner list of another shape",
            with_header(&seal(&pack(&state, "null"), "null")),
        ));
    }
    let many: Vec<Value> = (0..100)
        .map(|i| json!({"kind": "seed", "seed": i}))
        .collect();
    let mut state = unpacked.clone();
    state["fields"]["slots"] = Value::Array(many);
    cases.push(Case::new(
        "corner list of another shape",
        with_header(&seal(&pack(&state, "null"), "null")),
    ));

    // Deep nesting on both sides of serde_json's recursion limit (128), at the top, in a
    // parameter, and inside the corners' JSON text.
    for depth in [64, 126, 127, 128, 129, 1000, 100_000] {
        cases.push(Case::new(
            "deep nesting",
            with_header(nested_text(depth, "").as_bytes()),
        ));
        let mut state = base.clone();
        state["params"]["mx"] = Value::String(HOLE.into());
        cases.push(Case::new(
            "deep nesting",
            with_header(&seal(&state, &nested_text(depth, "0"))),
        ));
        let mut state = unpacked.clone();
        state["fields"]["slots"][1] = Value::String(HOLE.into());
        cases.push(Case::new(
            "deep nesting",
            with_header(&seal(
                &pack(&state, &nested_text(depth, "{\"kind\":\"seed\"}")),
                "null",
            )),
        ));
    }
    cases
}

/// Removes the node at `pointer` from its parent (an object member or an array element).
fn remove(state: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return;
    };
    let key = last.replace("~1", "/").replace("~0", "~");
    match state.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.remove(&key);
        }
        Some(Value::Array(items)) => {
            if let Ok(i) = key.parse::<usize>()
                && i < items.len()
            {
                items.remove(i);
            }
        }
        _ => {}
    }
}

/// The JSON text of object `map` with one member written twice: the second time with the same
/// value or a hostile one, before or after the first.
fn with_duplicate_member(map: &serde_json::Map<String, Value>, rng: &mut impl Rng) -> String {
    let mut members: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{}:{}", quoted(k), serde_json::to_string(v).unwrap()))
        .collect();
    if let Some((key, value)) = map.iter().nth(rng.random_range(0..map.len().max(1))) {
        let value = if rng.random_bool(0.5) {
            value.clone()
        } else {
            hostile_value(rng)
        };
        let copy = format!("{}:{}", quoted(key), serde_json::to_string(&value).unwrap());
        let at = rng.random_range(0..=members.len());
        members.insert(at, copy);
    }
    format!("{{{}}}", members.join(","))
}

/// One random case from `base` (a packed state) and `current` (what the instance holds now).
pub fn random(base: &Value, current: Option<&Value>, rng: &mut impl Rng) -> Case {
    let from = match current {
        Some(current) if rng.random_bool(0.3) => current,
        _ => base,
    };
    let token = *RAW_TOKENS.choose(rng).unwrap();
    match rng.random_range(0..10) {
        // Structure: hostile values at random places (or members removed), the corners' tree
        // included.
        0..=3 => {
            let mut state = unpack(from);
            for _ in 0..rng.random_range(1..4) {
                let mut places = Vec::new();
                pointers(&state, String::new(), &mut places);
                let place = places.choose(rng).unwrap().clone();
                if place.is_empty() {
                    state = hostile_value(rng);
                } else if rng.random_bool(0.2) {
                    remove(&mut state, &place);
                } else if let Some(node) = state.pointer_mut(&place) {
                    *node = hostile_value(rng);
                }
            }
            let packed = pack(&state, token);
            Case::new(
                "random values at random places",
                with_header(&seal(&packed, token)),
            )
        }
        // Bytes: flips, insertions, deletions of the JSON text.
        4..=6 => {
            let mut body = seal(from, "null");
            let kind = match rng.random_range(0..4) {
                0 => {
                    for _ in 0..rng.random_range(1..16) {
                        let i = rng.random_range(0..body.len());
                        body[i] ^= 1 << rng.random_range(0..8);
                    }
                    "byte flips"
                }
                1 => {
                    let i = rng.random_range(0..=body.len());
                    let n = rng.random_range(1..32);
                    let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                    body.splice(i..i, bytes);
                    "random bytes inserted"
                }
                2 => {
                    // A token where a value may start: after a ':', ',' or '['.
                    let starts: Vec<usize> = body
                        .iter()
                        .enumerate()
                        .filter(|(_, b)| matches!(b, b':' | b',' | b'['))
                        .map(|(i, _)| i + 1)
                        .collect();
                    let i = *starts.choose(rng).unwrap();
                    body.splice(i..i, format!("{token},").into_bytes());
                    "JSON token inserted"
                }
                _ => {
                    let i = rng.random_range(0..body.len());
                    let n = rng.random_range(1..64).min(body.len() - i);
                    body.drain(i..i + n);
                    "bytes deleted"
                }
            };
            let bytes = if rng.random_bool(0.9) {
                with_header(&body)
            } else {
                // A header that no longer matches.
                let length: u64 = rng.random_range(0..body.len() as u64 * 2);
                let mut bytes = length.to_le_bytes().to_vec();
                bytes.extend(body);
                bytes
            };
            Case::new(kind, bytes)
        }
        // Duplicated keys: at the top, among the parameters, among the fields, in a corner.
        7 | 8 => {
            let mut state = unpack(from);
            let text = match rng.random_range(0..4) {
                0 => with_duplicate_member(pack(&state, "null").as_object().unwrap(), rng),
                1 if state["params"].is_object() => {
                    let params = with_duplicate_member(state["params"].as_object().unwrap(), rng);
                    state["params"] = Value::String(HOLE.into());
                    String::from_utf8(seal(&pack(&state, "null"), &params)).unwrap()
                }
                2 if state["fields"].is_object() => {
                    let fields = with_duplicate_member(
                        pack(&state, "null")["fields"].as_object().unwrap(),
                        rng,
                    );
                    state["fields"] = Value::String(HOLE.into());
                    String::from_utf8(seal(&state, &fields)).unwrap()
                }
                _ => {
                    let i = rng.random_range(0..4);
                    match state.pointer(&format!("/fields/slots/{i}")) {
                        Some(Value::Object(corner)) => {
                            let corner = with_duplicate_member(corner, rng);
                            state["fields"]["slots"][i] = Value::String(HOLE.into());
                            String::from_utf8(seal(&pack(&state, &corner), "null")).unwrap()
                        }
                        _ => String::from_utf8(seal(&pack(&state, "null"), "null")).unwrap(),
                    }
                }
            };
            Case::new("duplicated keys", with_header(text.as_bytes()))
        }
        // Two states spliced: the start of one, the rest of another.
        _ => {
            let a = seal(from, "null");
            let b = seal(base, "null");
            let i = rng.random_range(0..a.len());
            let j = rng.random_range(0..b.len());
            let mut body = a[..i].to_vec();
            body.extend_from_slice(&b[j..]);
            Case::new("spliced states", with_header(&body))
        }
    }
}

/// The large cases, built one at a time (index `0..OVERSIZED`): each names what it holds and how
/// large its state is.
pub const OVERSIZED: usize = 8;

pub fn oversized(base: &Value, index: usize) -> Case {
    let unpacked = unpack(base);
    match index {
        0 => {
            // A corners field of 2 MiB that is valid JSON (whitespace after the corners): refused
            // for its size, not for its content.
            let mut state = base.clone();
            let text = state["fields"]["slots"].as_str().unwrap().to_string();
            state["fields"]["slots"] = Value::String(format!("{text}{}", " ".repeat(2 << 20)));
            Case::new(
                "oversized: valid corners padded to 2 MiB",
                with_header(&seal(&state, "null")),
            )
        }
        1 => {
            // A latent of 4 million values (a 16 MiB corners field).
            let mut state = unpacked.clone();
            state["fields"]["slots"][0] = Value::String(HOLE.into());
            let z = vec!["0.0"; 4 << 20].join(",");
            let corner = format!("{{\"kind\":\"file\",\"name\":\"big.mid\",\"z\":[{z}]}}");
            Case::new(
                "oversized: a latent of 4 million values",
                with_header(&seal(&pack(&state, &corner), "null")),
            )
        }
        2 => {
            // A corner name of 4 MiB.
            let mut state = unpacked.clone();
            state["fields"]["slots"][2] = json!({"kind": "style", "name": "n".repeat(4 << 20)});
            Case::new(
                "oversized: a corner name of 4 MiB",
                with_header(&seal(&pack(&state, "null"), "null")),
            )
        }
        3 => {
            // A corner list of a million elements.
            let mut state = unpacked.clone();
            state["fields"]["slots"] = Value::String(HOLE.into());
            let list = format!(
                "[{}]",
                vec!["{\"kind\":\"seed\",\"seed\":1}"; 1 << 20].join(",")
            );
            Case::new(
                "oversized: a million corners",
                with_header(&seal(&pack(&state, &list), "null")),
            )
        }
        4 => {
            // A model path of 1 MiB.
            let mut state = base.clone();
            state["fields"]["model"] = Value::String(quoted(&format!("/{}", "p".repeat(1 << 20))));
            Case::new(
                "oversized: a model path of 1 MiB",
                with_header(&seal(&state, "null")),
            )
        }
        5 => {
            // A parameter id of 1 MiB, and a million unknown parameters.
            let mut state = base.clone();
            state["params"]["i".repeat(1 << 20)] = json!({"f32": 0.5});
            for i in 0..(1 << 17) {
                state["params"][format!("unknown{i}")] = json!({"bool": true});
            }
            Case::new(
                "oversized: unknown parameters",
                with_header(&seal(&state, "null")),
            )
        }
        6 => {
            // An unknown field of 8 MiB.
            let mut state = base.clone();
            state["fields"]["future"] = Value::String(format!("\"{}\"", "f".repeat(8 << 20)));
            Case::new(
                "oversized: an unknown field of 8 MiB",
                with_header(&seal(&state, "null")),
            )
        }
        _ => {
            // 32 MiB of corners: the peak-memory case.
            let mut state = unpacked.clone();
            state["fields"]["slots"][3] = Value::String(HOLE.into());
            let z = vec!["0"; 16 << 20].join(",");
            let corner = format!("{{\"kind\":\"file\",\"name\":\"huge.mid\",\"z\":[{z}]}}");
            Case::new(
                "oversized: 32 MiB of corners",
                with_header(&seal(&pack(&state, &corner), "null")),
            )
        }
    }
}
