//! Session-state fuzzing through the real CLAP ABI: the debug plugin binary, loaded by the test
//! host (`tests/host/harness.rs`), gets thousands of hostile, damaged and truncated states
//! through its `state.load` (made from a valid saved state by `support/state_mutations.rs`, from a
//! fixed seed: the same cases on every run), and hostile parameter values through
//! `params.flush` and `process()` events. For every case:
//!
//! - **No crash**: the call returns (a panic in the plugin aborts this process) and the instance
//!   still processes audio afterwards (a block with a playing transport after every case; the
//!   debug build's allocation guard aborts on any allocation in `process()`).
//! - **Fast**: every `state.load` returns within [`LOAD_TIME_LIMIT`], the largest (32 MiB) too.
//! - **Refused means untouched**: a state the plugin refuses leaves the instance exactly as it
//!   was (its next save is byte-identical to the one before).
//! - **Accepted means exactly this**: an accepted state changes each parameter and field as the
//!   rules below say, computed here independently of the plugin (`expected_state`): a parameter
//!   or field the state lacks keeps its value; a parameter value of the right kind is taken,
//!   clamped into the parameter's range, unless it is not finite (then the parameter keeps its
//!   value); a value of the wrong kind, or an enum id the parameter lacks, is ignored; a field
//!   that reads as its type is taken, one that does not (or is larger than its limit in
//!   `drumvae::plugin::saved_state::FIELD_LIMITS`) is ignored.
//! - **Round trip**: what it saves after an accepted state loads back, into the same instance and
//!   into a second one, and saves byte-identically; every saved parameter is finite and in range.
//! - **Memory bounded**, both ways: oversized fields are refused by size before they are parsed
//!   (cases whose content is valid but too large are refused, so it is the size rule that acts),
//!   the peak resident memory while loading the 32 MiB state stays below
//!   [`PEAK_BYTES_PER_STATE_BYTE`] times its size, and the heap in use grows by less than
//!   [`HEAP_GROWTH_LIMIT`] over the thousands of random cases.
//!
//! The case counts and times are printed (`cargo test --test state_fuzz -- --nocapture`).

#[path = "host/harness.rs"]
mod host;
#[path = "support/state_mutations.rs"]
mod state_mutations;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use drumvae::generator::Slots;
use drumvae::plugin::params::DrumVaeParams;
use drumvae::plugin::saved_state::{FIELD_LIMITS, MAX_STATE_BYTES};
use host::{AudioThread, Block, PluginUnderTest, TransportInfo, parse_state, write_state};
use nice_plug::prelude::{ParamPtr, Params};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use serde_json::{Value, json};
use state_mutations::Case;

/// The seed of every generated case.
const SEED: u64 = 0x5e55_1011;
/// Random cases after the systematic ones.
const RANDOM_CASES: usize = 4000;
/// The longest a `state.load` may take.
const LOAD_TIME_LIMIT: Duration = Duration::from_secs(1);
/// The random cases run before the heap is first measured (caches, the worker's first decodes).
const WARM_UP_CASES: usize = 300;
/// Heap growth allowed over the random cases (after the warm-up).
const HEAP_GROWTH_LIMIT: u64 = 8 << 20;
/// Peak resident memory allowed while loading the 32 MiB state, per byte of it, beyond what the
/// process held before: nice-plug reads the state into a buffer, and its JSON parser unescapes
/// each field into a scratch buffer and copies it into a string (3 bytes a byte); nothing of ours
/// may add a parse of the oversized field (its JSON tree would be about 16 bytes a byte).
const PEAK_BYTES_PER_STATE_BYTE: u64 = 4;

const RATE: f64 = 48_000.0;
const FRAMES: u32 = 256;

fn load() -> PluginUnderTest {
    let path = host::plugin_library_path();
    PluginUnderTest::load(&path).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// Parameter ranges and values, from the library's parameter objects.

/// What a parameter stores, with its range as plain values.
#[derive(Clone, Copy, Debug)]
enum Range {
    Float { min: f32, max: f32 },
    Int { min: i32, max: i32 },
    Bool,
    Enum,
}

/// The variant ids of the enum parameter `switch`, the only one (`SwitchParam`).
const SWITCH_IDS: [&str; 3] = ["bar", "beat", "now"];

/// Every parameter's range, by string id.
fn ranges() -> BTreeMap<String, Range> {
    let params = DrumVaeParams::default();
    params
        .param_map()
        .into_iter()
        .map(|(id, ptr, _)| {
            // SAFETY: `ptr` points into `params`, alive for the whole loop.
            let (min, max) = unsafe { (ptr.preview_plain(0.0), ptr.preview_plain(1.0)) };
            let range = match ptr {
                ParamPtr::FloatParam(_) => Range::Float { min, max },
                ParamPtr::IntParam(_) => Range::Int {
                    min: min as i32,
                    max: max as i32,
                },
                ParamPtr::BoolParam(_) => Range::Bool,
                ParamPtr::EnumParam(_) => {
                    assert_eq!(max as usize + 1, SWITCH_IDS.len(), "{id}");
                    Range::Enum
                }
            };
            (id, range)
        })
        .collect()
}

/// A saved parameter value (nice-plug's `ParamValue`, compared bit for bit).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Saved {
    F32(f32),
    I32(i32),
    Bool(bool),
    String(String),
}

impl PartialEq for Saved {
    fn eq(&self, other: &Saved) -> bool {
        match (self, other) {
            (Saved::F32(a), Saved::F32(b)) => a.to_bits() == b.to_bits(),
            (Saved::I32(a), Saved::I32(b)) => a == b,
            (Saved::Bool(a), Saved::Bool(b)) => a == b,
            (Saved::String(a), Saved::String(b)) => a == b,
            _ => false,
        }
    }
}

fn saved_value(entry: &Value) -> Saved {
    serde_json::from_value(entry.clone()).unwrap_or_else(|e| panic!("{entry}: {e}"))
}

/// Whether a saved value is one the parameter can hold: the right kind, finite, in range.
fn in_range(range: Range, value: &Saved) -> bool {
    match (range, value) {
        (Range::Float { min, max }, Saved::F32(v)) => v.is_finite() && (min..=max).contains(v),
        (Range::Int { min, max }, Saved::I32(v)) => (min..=max).contains(v),
        (Range::Bool, Saved::Bool(_)) => true,
        (Range::Enum, Saved::String(id)) => SWITCH_IDS.contains(&id.as_str()),
        _ => false,
    }
}

/// What a parameter holds after a state gave it `entry` (`None`: it keeps its value).
fn taken(range: Range, entry: &Value) -> Option<Saved> {
    let value: Saved = serde_json::from_value(entry.clone()).ok()?;
    match (range, value) {
        (Range::Float { min, max }, Saved::F32(v)) => {
            v.is_finite().then(|| Saved::F32(v.clamp(min, max)))
        }
        (Range::Int { min, max }, Saved::I32(v)) => Some(Saved::I32(v.clamp(min, max))),
        (Range::Bool, value @ Saved::Bool(_)) => Some(value),
        (Range::Enum, Saved::I32(i)) => Some(Saved::String(
            SWITCH_IDS[i.clamp(0, SWITCH_IDS.len() as i32 - 1) as usize].into(),
        )),
        (Range::Enum, Saved::String(id)) => SWITCH_IDS
            .contains(&id.as_str())
            .then_some(Saved::String(id)),
        _ => None,
    }
}

/// The saved text of a persisted field after a state gave it `text` (`None`: it keeps its value):
/// nice-plug reads each field with `serde_json::from_str` as the field's type and writes it back
/// with `serde_json::to_string`.
fn field_taken(key: &str, text: &str) -> Option<String> {
    fn reads<T: serde::de::DeserializeOwned + serde::Serialize>(text: &str) -> Option<String> {
        serde_json::from_str::<T>(text)
            .ok()
            .map(|v| serde_json::to_string(&v).unwrap())
    }
    let limit = FIELD_LIMITS
        .iter()
        .find(|(k, _)| *k == key)
        .unwrap_or_else(|| panic!("field {key:?} has no limit"))
        .1;
    if text.len() > limit {
        return None;
    }
    match key {
        "slots" => reads::<Slots>(text),
        "model" => reads::<Option<PathBuf>>(text),
        "selected-slot" => reads::<usize>(text),
        "editor-size" => reads::<(u32, u32)>(text),
        other => panic!("unknown persisted field {other:?}"),
    }
}

/// The JSON nice-plug's CLAP loader reads from `bytes`: after the 8-byte length, at most that
/// many bytes (`None` when it refuses the header).
fn body(bytes: &[u8]) -> Option<&[u8]> {
    let (header, rest) = bytes.split_first_chunk::<8>()?;
    let length = u64::from_le_bytes(*header);
    (length <= MAX_STATE_BYTES).then(|| &rest[..rest.len().min(length as usize)])
}

/// The state an instance holding `before` must save after accepting `bytes` (see the module
/// docs), as (parameter values, field texts).
fn expected_state(
    ranges: &BTreeMap<String, Range>,
    before: &Value,
    bytes: &[u8],
) -> (BTreeMap<String, Saved>, BTreeMap<String, String>) {
    let given: Value = serde_json::from_slice(body(bytes).expect("accepted, so it has a body"))
        .expect("accepted, so its JSON parses");
    let params = before["params"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, entry)| {
            let kept = saved_value(entry);
            let now = given["params"]
                .get(id)
                .and_then(|e| taken(ranges[id], e))
                .unwrap_or(kept);
            (id.clone(), now)
        })
        .collect();
    let fields = before["fields"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(key, text)| {
            let kept = text.as_str().unwrap().to_string();
            let now = given["fields"]
                .get(key)
                .and_then(Value::as_str)
                .and_then(|t| field_taken(key, t))
                .unwrap_or(kept);
            (key.clone(), now)
        })
        .collect();
    (params, fields)
}

fn params_of(state: &Value) -> BTreeMap<String, Saved> {
    state["params"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, e)| (id.clone(), saved_value(e)))
        .collect()
}

fn fields_of(state: &Value) -> BTreeMap<String, String> {
    state["fields"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

/// Every saved parameter can be held by its parameter (finite, in range, a known enum id), and
/// the state has every parameter and field.
fn assert_sane(ranges: &BTreeMap<String, Range>, state: &Value, what: &str) {
    let params = params_of(state);
    assert_eq!(
        params.keys().collect::<Vec<_>>(),
        ranges.keys().collect::<Vec<_>>(),
        "{what}: the saved parameters"
    );
    for (id, value) in &params {
        assert!(in_range(ranges[id], value), "{what}: {id} = {value:?}");
    }
    let fields = fields_of(state);
    assert_eq!(
        fields.keys().map(String::as_str).collect::<Vec<_>>(),
        {
            let mut keys: Vec<&str> = FIELD_LIMITS.iter().map(|(k, _)| *k).collect();
            keys.sort_unstable();
            keys
        },
        "{what}: the saved fields"
    );
}

/// The first parameter or field in which two saved states differ, for messages.
fn difference(a: &Value, b: &Value) -> String {
    for part in ["params", "fields"] {
        let (a, b) = (&a[part], &b[part]);
        for key in a
            .as_object()
            .unwrap()
            .keys()
            .chain(b.as_object().unwrap().keys())
        {
            if a.get(key) != b.get(key) {
                return format!("{part}.{key}: {:?} then {:?}", a.get(key), b.get(key));
            }
        }
    }
    format!("version {} then {}", a["version"], b["version"])
}

// ---------------------------------------------------------------------------------------------
// Memory.

#[repr(C)]
struct MallInfo2 {
    arena: usize,
    ordblks: usize,
    smblks: usize,
    hblks: usize,
    hblkhd: usize,
    usmblks: usize,
    fsmblks: usize,
    uordblks: usize,
    fordblks: usize,
    keepcost: usize,
}

unsafe extern "C" {
    fn mallinfo2() -> MallInfo2;
    fn malloc_trim(pad: usize) -> i32;
}

/// Heap in use (glibc: every arena, plus mmapped blocks), bytes. The plugin binary allocates
/// from the same heap.
fn heap_bytes() -> u64 {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let info = unsafe { mallinfo2() };
    (info.uordblks + info.hblkhd) as u64
}

/// A `/proc/self/status` value in bytes (`VmRSS`, `VmHWM`).
fn status_bytes(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| {
            v.trim_start_matches(':')
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{key} in /proc/self/status"));
    kib * 1024
}

/// Resets the peak resident set (`VmHWM`) to the current one (Linux: `clear_refs` 5).
fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting VmHWM");
}

// ---------------------------------------------------------------------------------------------
// The run.

/// A valid state with every kind of corner, every persisted field set and parameters away from
/// their defaults, saved by the plugin itself.
fn base_state(plugin: &mut PluginUnderTest) -> Value {
    let changes: Vec<(u32, f64)> = [
        ("Morph X", 0.3),
        ("Morph Y", 0.6),
        ("Temperature", 0.4),
        ("Density", 0.6),
        ("Seed", 1234.0),
        ("Swing", 0.4),
        ("Switch at", 1.0),
        ("MIDI channel", 2.0),
        ("Mute Ride", 1.0),
        ("Kick note", 35.0),
    ]
    .into_iter()
    .map(|(name, value)| (plugin.param_by_name(name).id, value))
    .collect();
    plugin.flush_params(&changes);
    let mut state = parse_state(&plugin.save_state());
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let z: Vec<f32> = (0..256).map(|_| rng.random::<f32>() * 4.0 - 2.0).collect();
    let corners = json!([
        {"kind": "file", "name": "groove.mid", "z": z},
        {"kind": "seed", "seed": 7},
        {"kind": "style", "name": "funk"},
        {"kind": "euclidean", "steps": 5, "hits": 3},
    ]);
    state["fields"]["slots"] = Value::String(corners.to_string());
    state["fields"]["selected-slot"] = Value::String("2".into());
    state["fields"]["editor-size"] = Value::String("[900,640]".into());
    plugin
        .load_state(&write_state(&state))
        .expect("the base state loads");
    parse_state(&plugin.save_state())
}

/// Counts and times of one run, printed at the end.
#[derive(Default)]
struct Tally {
    cases: usize,
    accepted: usize,
    refused: usize,
    by_kind: BTreeMap<&'static str, (usize, usize)>,
    slowest: Duration,
    slowest_kind: &'static str,
}

/// Feeds states to an active instance and checks each (see the module docs).
struct Fuzz<'p> {
    audio: AudioThread<'p>,
    /// A second instance (inactive): accepted states must load into it identically.
    mirror: PluginUnderTest,
    ranges: BTreeMap<String, Range>,
    tally: Tally,
    /// Song position of the next block, in beats.
    beat: f64,
}

impl Fuzz<'_> {
    /// One block of audio with a playing transport: the instance is alive and processing.
    fn play(&mut self) {
        let block = Block::with_transport(FRAMES, TransportInfo::playing(120.0, self.beat));
        self.audio.run_block(block);
        self.beat += f64::from(FRAMES) * 120.0 / 60.0 / RATE;
    }

    fn saved(&mut self) -> Vec<u8> {
        self.audio.plugin().save_state()
    }

    /// Loads one case and checks it; returns the state saved afterwards.
    fn check(&mut self, case: &Case) -> Value {
        self.check_measured(case, false).0
    }

    /// [`Self::check`], and with `measure` how much the resident set rose above what it was
    /// while `state.load` ran (peak, bytes).
    fn check_measured(&mut self, case: &Case, measure: bool) -> (Value, u64) {
        let what = format!("case {} ({})", self.tally.cases, case.kind);
        let before = self.saved();
        let rss = if measure {
            // SAFETY: malloc_trim only hands free heap pages back to the system, so that the
            // load's allocations show in the resident set even where they reuse freed heap.
            unsafe { malloc_trim(0) };
            let rss = status_bytes("VmRSS");
            reset_peak_rss();
            rss
        } else {
            0
        };
        let start = Instant::now();
        let result = self.audio.plugin().load_state(&case.bytes);
        let took = start.elapsed();
        let peak = if measure {
            status_bytes("VmHWM").saturating_sub(rss)
        } else {
            0
        };
        assert!(took < LOAD_TIME_LIMIT, "{what}: state.load took {took:?}");
        if took > self.tally.slowest {
            self.tally.slowest = took;
            self.tally.slowest_kind = case.kind;
        }
        let after_bytes = self.saved();
        let after = parse_state(&after_bytes);
        let counts = self.tally.by_kind.entry(case.kind).or_default();
        match result {
            Err(_) => {
                counts.1 += 1;
                self.tally.refused += 1;
                assert!(
                    after_bytes == before,
                    "{what}: refused, but the state changed"
                );
            }
            Ok(()) => {
                counts.0 += 1;
                self.tally.accepted += 1;
                let before = parse_state(&before);
                let (params, fields) = expected_state(&self.ranges, &before, &case.bytes);
                assert_eq!(params_of(&after), params, "{what}: parameters");
                assert_eq!(fields_of(&after), fields, "{what}: fields");
                assert_sane(&self.ranges, &after, &what);
                // Round trip: the saved state loads back, here and into another instance.
                let plugin = self.audio.plugin();
                plugin
                    .load_state(&after_bytes)
                    .unwrap_or_else(|e| panic!("{what}: its own save does not load: {e}"));
                let again = plugin.save_state();
                assert!(
                    again == after_bytes,
                    "{what}: reloading its own save changed it: {}",
                    difference(&after, &parse_state(&again))
                );
                self.mirror
                    .load_state(&after_bytes)
                    .unwrap_or_else(|e| panic!("{what}: the save does not load elsewhere: {e}"));
                let elsewhere = self.mirror.save_state();
                assert!(
                    elsewhere == after_bytes,
                    "{what}: another instance saves it differently: {}",
                    difference(&after, &parse_state(&elsewhere))
                );
            }
        }
        self.tally.cases += 1;
        self.play();
        (after, peak)
    }
}

#[test]
fn hostile_states_never_crash_and_either_load_exactly_by_the_rules_or_change_nothing() {
    let started = Instant::now();
    let mut plugin = load();
    let base = base_state(&mut plugin);
    let ranges = ranges();
    assert_sane(&ranges, &base, "the base state");
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let systematic = state_mutations::systematic(&base, &mut rng);

    let mut fuzz = Fuzz {
        audio: plugin.activate(RATE, FRAMES),
        mirror: load(),
        ranges,
        tally: Tally::default(),
        beat: 0.0,
    };
    fuzz.play();

    for case in &systematic {
        fuzz.check(case);
    }
    let systematic_count = fuzz.tally.cases;

    // Random cases, from the base state or from what the instance holds now.
    let mut current = fuzz.check(&Case {
        kind: "the base state",
        bytes: write_state(&base),
    });
    let mut heap_start = 0;
    for i in 0..RANDOM_CASES {
        if i == WARM_UP_CASES {
            heap_start = heap_bytes();
        }
        let case = state_mutations::random(&base, Some(&current), &mut rng);
        current = fuzz.check(&case);
    }
    let heap_growth = heap_bytes().saturating_sub(heap_start);

    // The oversized cases, one at a time; the largest measures the peak memory of its load.
    let mut peak = (0, 0);
    for index in 0..state_mutations::OVERSIZED {
        let case = state_mutations::oversized(&base, index);
        let before = parse_state(&fuzz.saved());
        let (after, grown) = fuzz.check_measured(&case, true);
        if case.bytes.len() > peak.1 {
            peak = (grown, case.bytes.len());
        }
        // Every oversized field was refused by its size and kept its value.
        for (key, limit) in FIELD_LIMITS {
            let given = serde_json::from_slice::<Value>(body(&case.bytes).unwrap())
                .ok()
                .and_then(|s| s["fields"][key].as_str().map(str::len));
            if given.is_some_and(|n| n > limit) {
                assert_eq!(after["fields"][key], before["fields"][key], "{}", case.kind);
            }
        }
    }

    let audio_blocks = fuzz.audio.blocks_processed();
    let violations = fuzz.audio.plugin().violations();
    assert!(violations.is_empty(), "{violations:?}");
    assert!(
        fuzz.mirror.violations().is_empty(),
        "{:?}",
        fuzz.mirror.violations()
    );
    let tally = std::mem::take(&mut fuzz.tally);
    drop(fuzz);

    println!(
        "state fuzz: {} cases ({} systematic, {} random, {} oversized): {} accepted, {} refused; \
         {} audio blocks; slowest load {:?} ({}); heap growth over {} random cases {} KiB; peak \
         RSS growth loading the {} MiB state {} MiB; {:.1} s",
        tally.cases,
        systematic_count,
        RANDOM_CASES + 1,
        state_mutations::OVERSIZED,
        tally.accepted,
        tally.refused,
        audio_blocks,
        tally.slowest,
        tally.slowest_kind,
        RANDOM_CASES - WARM_UP_CASES,
        heap_growth / 1024,
        peak.1 >> 20,
        peak.0 >> 20,
        started.elapsed().as_secs_f64()
    );
    for (kind, (accepted, refused)) in &tally.by_kind {
        println!("  {kind}: {accepted} accepted, {refused} refused");
    }
    assert!(
        tally.accepted > 500 && tally.refused > 500,
        "both outcomes are exercised"
    );
    assert!(
        heap_growth < HEAP_GROWTH_LIMIT,
        "the heap grew by {} KiB over {} random cases",
        heap_growth / 1024,
        RANDOM_CASES - WARM_UP_CASES
    );
    assert!(
        peak.0 < PEAK_BYTES_PER_STATE_BYTE * peak.1 as u64,
        "loading a {} MiB state raised the resident set by {} MiB",
        peak.1 >> 20,
        peak.0 >> 20
    );
}

/// Parameter values a host (or a broken automation lane) may send: CLAP plain values of every
/// kind, for every parameter.
const HOSTILE_PLAIN_VALUES: [f64; 16] = [
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    -1e300,
    -1e30,
    -1.0,
    -0.0,
    0.0,
    0.5,
    1.0,
    1.5,
    127.0,
    1e9,
    1e30,
    f64::MAX,
    f64::MIN_POSITIVE,
];

#[test]
fn hostile_parameter_values_from_the_host_keep_parameters_in_range_and_sessions_loadable() {
    let mut plugin = load();
    let mut mirror = load();
    let ranges = ranges();
    let params = plugin.params();
    let mut cases = 0;
    let mut audio = plugin.activate(RATE, FRAMES);
    let mut beat = 0.0;
    for (round, info) in params.iter().enumerate() {
        for (i, &value) in HOSTILE_PLAIN_VALUES.iter().enumerate() {
            let what = format!("{} = {value}", info.name);
            // Alternately through params.flush (between blocks) and as a process() event.
            if (round + i) % 2 == 0 {
                audio.flush_params(&[(info.id, value)]);
            }
            let mut block = Block::with_transport(FRAMES, TransportInfo::playing(120.0, beat));
            if (round + i) % 2 == 1 {
                block.params.push((info.id, 0, value));
            }
            audio.run_block(block);
            beat += f64::from(FRAMES) * 2.0 / RATE;
            let now = audio.plugin().param_value(info.id);
            assert!(
                now.is_finite() && now >= info.min && now <= info.max,
                "{what}: {now}"
            );
            let saved = audio.plugin().save_state();
            let state = parse_state(&saved);
            assert_sane(&ranges, &state, &what);
            mirror
                .load_state(&saved)
                .unwrap_or_else(|e| panic!("{what}: the save does not load: {e}"));
            assert!(mirror.save_state() == saved, "{what}: reloads differently");
            cases += 1;
        }
    }
    audio.stop().expect("stop processing");
    assert!(plugin.violations().is_empty(), "{:?}", plugin.violations());
    println!(
        "parameter fuzz: {cases} hostile values ({} parameters x {})",
        params.len(),
        HOSTILE_PLAIN_VALUES.len()
    );
}

/// The crashes and the unloadable save the fuzzer found, each alone: a state that sets `switch`
/// to variant index 7 made the next save panic (nice-plug looks the variant's id up by index: a
/// host crash, release builds too); `chan` = `i32::MIN` overflowed nice-plug's range arithmetic
/// while loading (a panic in debug builds); `mx` = `1e39` loaded as infinity and saved as
/// `null`, and that save no longer loaded anywhere. Values are now clamped into range before
/// they are applied, and a float beyond `f32`'s range refuses the state (serde_json parses
/// floats exactly now), which changes nothing.
#[test]
fn out_of_range_and_overflowing_values_in_a_state_are_clamped_and_the_session_still_loads() {
    let mut plugin = load();
    let base = parse_state(&plugin.save_state());
    let mut state = base.clone();
    state["params"]["mx"] = Value::String("@".into());
    let beyond_f32 = String::from_utf8(write_state(&state)[8..].to_vec())
        .unwrap()
        .replace(r#""@""#, r#"{"f32":1e39}"#);
    let before = plugin.save_state();
    assert!(
        plugin
            .load_state(&state_mutations::with_header(beyond_f32.as_bytes()))
            .is_err(),
        "a float beyond f32's range refuses the state"
    );
    assert!(plugin.save_state() == before, "and changes nothing");
    for (id, given, expected) in [
        ("switch", json!({"i32": 7}), json!({"string": "now"})),
        ("switch", json!({"i32": -3}), json!({"string": "bar"})),
        ("chan", json!({"i32": i32::MIN}), json!({"i32": 1})),
        ("chan", json!({"i32": i32::MAX}), json!({"i32": 16})),
        ("mx", json!({"f32": -2.5}), json!({"f32": 0.0})),
        ("len", json!({"f32": 1e30}), json!({"f32": 64.0})),
    ] {
        let mut state = base.clone();
        state["params"][id] = given.clone();
        plugin
            .load_state(&write_state(&state))
            .unwrap_or_else(|e| panic!("{id} = {given}: {e}"));
        let saved = plugin.save_state();
        assert_eq!(
            parse_state(&saved)["params"][id],
            expected,
            "{id} = {given}"
        );
        let mut fresh = load();
        fresh
            .load_state(&saved)
            .unwrap_or_else(|e| panic!("{id} = {given}: the save does not load: {e}"));
        assert!(fresh.save_state() == saved, "{id} = {given}");
    }
}
