//! Training data: the Groove MIDI Dataset (with its `info.csv` split) or any folder of MIDI files ->
//! 4-bar windows with a 1-bar hop, a report of what was read, and a preprocessed cache so training
//! never re-parses MIDI. Runs on the CLI's thread (train, evaluate, dataset), never in the plugin.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::groove::{FEATURES, Pattern, STEPS};
use crate::midi_file::{self, Grid};

/// Bumped whenever windowing or the cache layout changes, so old caches are rebuilt.
const CACHE_FORMAT: &str = "drumvae-dataset-v1";

/// One of the three data splits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Validation,
    Test,
}

impl Split {
    /// All splits, in order.
    pub const ALL: [Split; 3] = [Split::Train, Split::Validation, Split::Test];

    /// Lower-case name, as in `info.csv`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Split::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| format!("unknown split {s:?}: use train, validation or test"))
    }
}

/// GMD performances are labelled as grooves (`beat`) or short fills (`fill`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BeatType {
    Beat,
    Fill,
}

impl FromStr for BeatType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "beat" => Ok(BeatType::Beat),
            "fill" => Ok(BeatType::Fill),
            _ => Err(format!("unknown beat type {s:?}: use beat or fill")),
        }
    }
}

/// Where the MIDI files come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Source {
    /// The Groove MIDI Dataset: `root/info.csv` lists files, labels and the official split.
    Gmd { root: PathBuf },
    /// Any folder of `.mid`/`.midi` files, searched recursively, split by file with a seeded hash
    /// of the relative path (adding files never moves the others to another split).
    Folder {
        root: PathBuf,
        seed: u64,
        validation_fraction: f64,
        test_fraction: f64,
    },
}

impl Source {
    /// A folder of MIDI files with the default 80/10/10 split.
    pub fn folder(root: impl Into<PathBuf>, seed: u64) -> Source {
        Source::Folder {
            root: root.into(),
            seed,
            validation_fraction: 0.1,
            test_fraction: 0.1,
        }
    }

    /// The GMD at `root` if it holds `info.csv`, else a folder with seed 0.
    pub fn detect(root: impl Into<PathBuf>) -> Source {
        let root = root.into();
        if root.join("info.csv").is_file() {
            Source::Gmd { root }
        } else {
            Source::folder(root, 0)
        }
    }

    fn root(&self) -> &Path {
        match self {
            Source::Gmd { root } | Source::Folder { root, .. } => root,
        }
    }
}

/// Which files to keep.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    /// Splits to load; empty = all.
    pub splits: Vec<Split>,
    /// Only beats or only fills (GMD labels; folders have no label and pass); `None` = both.
    pub beat_type: Option<BeatType>,
}

impl Filter {
    fn keeps_split(&self, split: Split) -> bool {
        self.splits.is_empty() || self.splits.contains(&split)
    }
}

/// One source file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceFile {
    /// Path relative to the source root, with `/` separators.
    pub path: String,
    pub split: Split,
    /// GMD style label such as `funk/groove1` (top-level genre before the slash).
    pub style: Option<String>,
    pub beat_type: Option<BeatType>,
    /// Tempo from `info.csv`, when known.
    pub bpm: Option<f64>,
}

impl SourceFile {
    /// The genre part of the style label (`funk/groove1` -> `funk`).
    pub fn genre(&self) -> Option<&str> {
        self.style
            .as_deref()
            .map(|s| s.split('/').next().unwrap_or(s))
    }
}

/// One 4-bar training example.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    pub pattern: Pattern,
    /// Index into [`Dataset::files`].
    pub file: u32,
    /// First bar of the window in its file (0-based).
    pub start_bar: u32,
    /// Tempo at the window's first downbeat.
    pub bpm: f32,
}

/// What was read, for people to check: counts per split, skipped files and why, dropped pitches.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Files the source listed (after the split/beat filter).
    pub files_listed: usize,
    /// Files loaded, per split.
    pub files_per_split: BTreeMap<Split, usize>,
    /// Windows, per split.
    pub windows_per_split: BTreeMap<Split, usize>,
    /// Windows without a single hit (kept: the reference TFDS counts keep them too).
    pub empty_windows: usize,
    /// `(file, reason)` for every file not loaded.
    pub skipped: Vec<(String, String)>,
    /// Note onsets whose pitch maps to no voice, per pitch.
    pub dropped_pitches: BTreeMap<u8, u64>,
    /// Onsets dropped because a louder hit of the same voice shared the step.
    pub merged_hits: u64,
    /// Hits kept on the grid.
    pub hits: u64,
}

impl Report {
    /// Total windows.
    pub fn windows(&self) -> usize {
        self.windows_per_split.values().sum()
    }

    /// Skipped files counted per reason.
    pub fn skip_reasons(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for (_, reason) in &self.skipped {
            *out.entry(reason.clone()).or_insert(0) += 1;
        }
        out
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let loaded: usize = self.files_per_split.values().sum();
        writeln!(
            f,
            "files: {} listed, {} loaded, {} skipped",
            self.files_listed,
            loaded,
            self.skipped.len()
        )?;
        writeln!(f, "{:<12} {:>6} {:>8}", "split", "files", "windows")?;
        for split in Split::ALL {
            writeln!(
                f,
                "{:<12} {:>6} {:>8}",
                split.name(),
                self.files_per_split.get(&split).unwrap_or(&0),
                self.windows_per_split.get(&split).unwrap_or(&0)
            )?;
        }
        writeln!(f, "{:<12} {:>6} {:>8}", "total", loaded, self.windows())?;
        writeln!(
            f,
            "hits kept: {}, merged (louder hit kept): {}, empty windows: {}",
            self.hits, self.merged_hits, self.empty_windows
        )?;
        if !self.skipped.is_empty() {
            writeln!(f, "skipped files by reason:")?;
            for (reason, n) in self.skip_reasons() {
                writeln!(f, "  {n:>5}  {reason}")?;
            }
        }
        if !self.dropped_pitches.is_empty() {
            let total: u64 = self.dropped_pitches.values().sum();
            write!(f, "dropped notes with unmapped pitches: {total} (")?;
            for (i, (pitch, n)) in self.dropped_pitches.iter().enumerate() {
                write!(f, "{}pitch {pitch}: {n}", if i > 0 { ", " } else { "" })?;
            }
            writeln!(f, ")")?;
        }
        Ok(())
    }
}

/// Why a dataset could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: malformed info.csv ({message}); is this the Groove MIDI Dataset folder?")]
    Csv { path: PathBuf, message: String },
    #[error("{0}: no MIDI files found (looked for .mid and .midi recursively)")]
    NoFiles(PathBuf),
    #[error("cache {path}: {message}")]
    Cache { path: PathBuf, message: String },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> DatasetError + '_ {
    move |source| DatasetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Files to load, and `(file, reason)` for those left out before parsing.
pub type Listing = (Vec<SourceFile>, Vec<(String, String)>);

/// A row of the GMD's `info.csv`.
#[derive(Debug, Deserialize)]
struct GmdRow {
    style: String,
    bpm: f64,
    beat_type: String,
    time_signature: String,
    midi_filename: String,
    split: String,
}

/// Lists the source's files that pass `filter`. GMD rows not in 4/4 are returned in the second
/// list with their reason, without being parsed.
pub fn list_files(source: &Source, filter: &Filter) -> Result<Listing, DatasetError> {
    match source {
        Source::Gmd { root } => list_gmd(root, filter),
        Source::Folder {
            root,
            seed,
            validation_fraction,
            test_fraction,
        } => {
            let mut paths = Vec::new();
            collect_midi(root, root, &mut paths)?;
            if paths.is_empty() {
                return Err(DatasetError::NoFiles(root.clone()));
            }
            paths.sort();
            let files = paths
                .into_iter()
                .map(|path| {
                    let split = folder_split(&path, *seed, *validation_fraction, *test_fraction);
                    SourceFile {
                        path,
                        split,
                        style: None,
                        beat_type: None,
                        bpm: None,
                    }
                })
                .filter(|f| filter.keeps_split(f.split))
                .collect();
            Ok((files, Vec::new()))
        }
    }
}

fn list_gmd(root: &Path, filter: &Filter) -> Result<Listing, DatasetError> {
    let csv_path = root.join("info.csv");
    let csv_error = |message: String| DatasetError::Csv {
        path: csv_path.clone(),
        message,
    };
    let mut reader = csv::Reader::from_path(&csv_path).map_err(|e| csv_error(e.to_string()))?;
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    for row in reader.deserialize::<GmdRow>() {
        let row = row.map_err(|e| csv_error(e.to_string()))?;
        let split: Split = row.split.parse().map_err(csv_error)?;
        let beat_type: BeatType = row.beat_type.parse().map_err(csv_error)?;
        if !filter.keeps_split(split) || filter.beat_type.is_some_and(|b| b != beat_type) {
            continue;
        }
        if row.time_signature != "4-4" {
            let metre = row.time_signature.replace('-', "/");
            skipped.push((
                row.midi_filename,
                format!("in {metre} (info.csv); only 4/4 is modelled"),
            ));
            continue;
        }
        files.push(SourceFile {
            path: row.midi_filename,
            split,
            style: Some(row.style),
            beat_type: Some(beat_type),
            bpm: Some(row.bpm),
        });
    }
    Ok((files, skipped))
}

fn collect_midi(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), DatasetError> {
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(io_error(&path))?;
        if kind.is_dir() {
            collect_midi(root, &path, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("mid") || e.eq_ignore_ascii_case("midi"))
        {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let parts: Vec<_> = rel.iter().map(|p| p.to_string_lossy()).collect();
            out.push(parts.join("/"));
        }
    }
    Ok(())
}

/// A file's split from a seeded hash of its relative path: stable across runs and machines, and
/// independent of which other files exist.
fn folder_split(path: &str, seed: u64, validation: f64, test: f64) -> Split {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&seed.to_le_bytes());
    hasher.update(path.as_bytes());
    let bytes: [u8; 8] = hasher.finalize().as_bytes()[..8]
        .try_into()
        .expect("8 bytes");
    let u = (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64;
    if u < test {
        Split::Test
    } else if u < test + validation {
        Split::Validation
    } else {
        Split::Train
    }
}

/// Windows from every file of a source, with the report of what was read.
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    pub files: Vec<SourceFile>,
    pub windows: Vec<Window>,
    pub report: Report,
}

impl Dataset {
    /// Lists, parses and windows every file. `progress` is called after each file with
    /// `(done, total)`. A file that fails to parse is skipped with its reason; only problems with
    /// the source itself (missing folder, broken info.csv) are errors.
    pub fn load(
        source: &Source,
        filter: &Filter,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Dataset, DatasetError> {
        let (listed, skipped) = list_files(source, filter)?;
        let mut data = Dataset {
            report: Report {
                files_listed: listed.len() + skipped.len(),
                skipped,
                ..Report::default()
            },
            ..Dataset::default()
        };
        let total = listed.len();
        for (i, file) in listed.into_iter().enumerate() {
            let path = source.root().join(&file.path);
            match midi_file::read_grid(&path) {
                Ok(grid) => data.add(file, &grid),
                Err(e) => data
                    .report
                    .skipped
                    .push((file.path.clone(), e.kind.to_string())),
            }
            progress(i + 1, total);
        }
        Ok(data)
    }

    fn add(&mut self, file: SourceFile, grid: &Grid) {
        let index = self.files.len() as u32;
        let report = &mut self.report;
        *report.files_per_split.entry(file.split).or_insert(0) += 1;
        *report.windows_per_split.entry(file.split).or_insert(0) += grid.window_count();
        for (pitch, n) in &grid.dropped_pitches {
            *report.dropped_pitches.entry(*pitch).or_insert(0) += n;
        }
        report.merged_hits += grid.merged_hits;
        report.hits += grid.hit_count() as u64;
        for (bar, pattern) in grid.windows() {
            report.empty_windows += (pattern.hit_count() == 0) as usize;
            self.windows.push(Window {
                pattern,
                file: index,
                start_bar: bar as u32,
                bpm: grid.bpm_at_bar(bar) as f32,
            });
        }
        self.files.push(file);
    }

    /// The windows of one split.
    pub fn split(&self, split: Split) -> impl Iterator<Item = &Window> + '_ {
        self.windows
            .iter()
            .filter(move |w| self.files[w.file as usize].split == split)
    }

    /// The file a window came from.
    pub fn file_of(&self, window: &Window) -> &SourceFile {
        &self.files[window.file as usize]
    }

    /// [`Dataset::load`] through a cache in `cache_dir`. The cache is keyed by the source, the
    /// filter, the format version and the content of every listed file: any change rebuilds it.
    /// Returns whether the cache was used.
    pub fn load_cached(
        source: &Source,
        filter: &Filter,
        cache_dir: &Path,
        progress: impl FnMut(usize, usize),
    ) -> Result<(Dataset, CacheUse), DatasetError> {
        let key = cache_key(source, filter)?;
        let path = cache_dir.join(format!("{}.safetensors", cache_name(source)));
        if let Ok(bytes) = std::fs::read(&path) {
            // A stale or unreadable cache is rebuilt below.
            if let Ok(Some(data)) = decode_cache(&bytes, &key) {
                return Ok((data, CacheUse::Hit));
            }
        }
        let data = Dataset::load(source, filter, progress)?;
        std::fs::create_dir_all(cache_dir).map_err(io_error(cache_dir))?;
        let bytes = encode_cache(&data, &key).map_err(|message| DatasetError::Cache {
            path: path.clone(),
            message,
        })?;
        crate::atomic_file::write(&path, &bytes).map_err(io_error(&path))?;
        Ok((data, CacheUse::Rebuilt))
    }
}

/// Whether [`Dataset::load_cached`] read the cache or rebuilt it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheUse {
    Hit,
    Rebuilt,
}

/// A readable, per-source file name: `gmd-<hash of root>` or `folder-<hash of root>`.
fn cache_name(source: &Source) -> String {
    let kind = match source {
        Source::Gmd { .. } => "gmd",
        Source::Folder { .. } => "folder",
    };
    let root = source.root().to_string_lossy();
    format!("{kind}-{}", &blake3::hash(root.as_bytes()).to_hex()[..16])
}

fn cache_key(source: &Source, filter: &Filter) -> Result<String, DatasetError> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(CACHE_FORMAT.as_bytes());
    hasher.update(
        serde_json::to_string(&(source, filter))
            .expect("serialisable")
            .as_bytes(),
    );
    if let Source::Gmd { root } = source {
        let csv = root.join("info.csv");
        hasher.update(&std::fs::read(&csv).map_err(io_error(&csv))?);
    }
    let (files, _) = list_files(source, filter)?;
    for file in &files {
        let path = source.root().join(&file.path);
        hasher.update(file.path.as_bytes());
        // A file that cannot be read hashes as its error, so it is retried when it reappears.
        match std::fs::read(&path) {
            Ok(bytes) => hasher.update(blake3::hash(&bytes).as_bytes()),
            Err(e) => hasher.update(e.to_string().as_bytes()),
        };
    }
    Ok(hasher.finalize().to_hex().to_string())
}

fn encode_cache(data: &Dataset, key: &str) -> Result<Vec<u8>, String> {
    use safetensors::{Dtype, tensor::TensorView};
    let n = data.windows.len();
    let mut patterns = Vec::with_capacity(n * STEPS * FEATURES);
    let mut index = Vec::with_capacity(n * 2);
    let mut bpm = Vec::with_capacity(n);
    for w in &data.windows {
        w.pattern.write_flat(&mut patterns);
        index.extend([w.file, w.start_bar]);
        bpm.push(w.bpm);
    }
    let patterns: Vec<u8> = patterns.iter().flat_map(|x| x.to_le_bytes()).collect();
    let index: Vec<u8> = index.iter().flat_map(|x| x.to_le_bytes()).collect();
    let bpm: Vec<u8> = bpm.iter().flat_map(|x| x.to_le_bytes()).collect();
    let err = |e: safetensors::SafeTensorError| e.to_string();
    let tensors = vec![
        (
            "patterns",
            TensorView::new(Dtype::F32, vec![n, STEPS, FEATURES], &patterns).map_err(err)?,
        ),
        (
            "index",
            TensorView::new(Dtype::U32, vec![n, 2], &index).map_err(err)?,
        ),
        (
            "bpm",
            TensorView::new(Dtype::F32, vec![n], &bpm).map_err(err)?,
        ),
    ];
    let metadata = HashMap::from([
        ("key".to_string(), key.to_string()),
        (
            "files".to_string(),
            serde_json::to_string(&data.files).map_err(|e| e.to_string())?,
        ),
        (
            "report".to_string(),
            serde_json::to_string(&data.report).map_err(|e| e.to_string())?,
        ),
    ]);
    safetensors::serialize(tensors, Some(metadata)).map_err(err)
}

/// `Ok(None)` when the cache belongs to another key (stale).
fn decode_cache(bytes: &[u8], key: &str) -> Result<Option<Dataset>, String> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
    let meta = meta.metadata().clone().unwrap_or_default();
    if meta.get("key").map(String::as_str) != Some(key) {
        return Ok(None);
    }
    let get = |k: &str| meta.get(k).ok_or_else(|| format!("missing {k}"));
    let files: Vec<SourceFile> = serde_json::from_str(get("files")?).map_err(|e| e.to_string())?;
    let report: Report = serde_json::from_str(get("report")?).map_err(|e| e.to_string())?;
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
    let floats = |name: &str| -> Result<Vec<f32>, String> {
        let t = st.tensor(name).map_err(|e| e.to_string())?;
        Ok(t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect())
    };
    let patterns = floats("patterns")?;
    let bpm = floats("bpm")?;
    let index_view = st.tensor("index").map_err(|e| e.to_string())?;
    let index: Vec<u32> = index_view
        .data()
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect();
    let n = bpm.len();
    if patterns.len() != n * STEPS * FEATURES || index.len() != n * 2 {
        return Err("tensor sizes disagree".into());
    }
    let mut windows = Vec::with_capacity(n);
    for i in 0..n {
        let flat = &patterns[i * STEPS * FEATURES..(i + 1) * STEPS * FEATURES];
        let file = index[2 * i];
        if file as usize >= files.len() {
            return Err("window points past the file list".into());
        }
        windows.push(Window {
            pattern: Pattern::from_flat(flat).map_err(|e| e.to_string())?,
            file,
            start_bar: index[2 * i + 1],
            bpm: bpm[i],
        });
    }
    Ok(Some(Dataset {
        files,
        windows,
        report,
    }))
}

/// The windows of one official split of the Groove MIDI Dataset at [`default_gmd_root`] (beats
/// and fills), in file order: the real grooves that tests and benchmarks measure on.
///
/// # Errors
/// As [`Dataset::load`]; most often the dataset is not there (set `DRUMVAE_GMD`).
pub fn gmd_split_patterns(split: Split) -> Result<Vec<Pattern>, DatasetError> {
    let source = Source::Gmd {
        root: default_gmd_root(),
    };
    let filter = Filter {
        splits: vec![split],
        beat_type: None,
    };
    let data = Dataset::load(&source, &filter, |_, _| {})?;
    Ok(data.windows.iter().map(|w| w.pattern).collect())
}

/// The GMD folder used by tests and defaults: `$DRUMVAE_GMD`, else `../shared/data/groove` from the
/// crate root.
pub fn default_gmd_root() -> PathBuf {
    std::env::var_os("DRUMVAE_GMD")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/groove"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_split_is_stable_and_roughly_proportional() {
        let mut counts = BTreeMap::new();
        for i in 0..10_000 {
            let path = format!("a/{i}.mid");
            let s = folder_split(&path, 7, 0.1, 0.1);
            assert_eq!(s, folder_split(&path, 7, 0.1, 0.1));
            *counts.entry(s).or_insert(0) += 1;
        }
        assert!((700..1300).contains(&counts[&Split::Test]), "{counts:?}");
        assert!(
            (700..1300).contains(&counts[&Split::Validation]),
            "{counts:?}"
        );
        assert!(
            (0..100).any(|i| folder_split(&format!("a/{i}.mid"), 7, 0.1, 0.1)
                != folder_split(&format!("a/{i}.mid"), 8, 0.1, 0.1)),
            "the seed changes the split"
        );
    }
}
