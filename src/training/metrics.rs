//! The metrics log of a training run: one row per epoch (and optionally every N steps) of losses,
//! learning rate and speed, kept in memory, saved in checkpoints and written to `metrics.csv` in
//! the run folder. It runs on the training CLI's thread.
//!
//! The whole file is rewritten atomically on each [`MetricsLog::write`], so it never holds half a
//! row, and after a resume it holds exactly the rows of the checkpoint plus those logged since.
//! Floats are written with Rust's shortest round-trip formatting (`NaN` and `inf` included), so
//! [`parse_csv`] gives back the very same values; checkpoints store the history in this form.

use std::path::{Path, PathBuf};

/// File name of the log inside the run folder.
pub const FILE_NAME: &str = "metrics.csv";

/// The loss and its parts, each a mean over the examples they cover.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LossParts {
    /// The optimised objective: reconstruction + beta * KL (after free bits, if any).
    pub total: f64,
    /// Binary cross-entropy of the hits.
    pub hit_bce: f64,
    /// Squared error of the velocities.
    pub velocity_mse: f64,
    /// Squared error of the timing offsets.
    pub offset_mse: f64,
    /// KL divergence of the posterior from the prior, in nats.
    pub kl: f64,
}

/// Whether a row closes an epoch or samples the middle of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKind {
    /// Training losses averaged over the epoch, and validation.
    Epoch,
    /// Training losses averaged over the last N steps; no validation.
    Step,
}

impl RowKind {
    fn as_str(self) -> &'static str {
        match self {
            RowKind::Epoch => "epoch",
            RowKind::Step => "step",
        }
    }
}

/// One line of the log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricsRow {
    /// Epoch or step row.
    pub kind: RowKind,
    /// Optimizer steps taken when the row was logged.
    pub step: u64,
    /// 0-based epoch the row belongs to.
    pub epoch: u64,
    /// Learning rate of the last step.
    pub lr: f64,
    /// KL weight of the last step.
    pub beta: f64,
    /// Mean gradient norm (before clipping) over the steps the row covers.
    pub grad_norm: f64,
    /// Training losses over the steps the row covers.
    pub train: LossParts,
    /// Validation losses, on epoch rows.
    pub val: Option<LossParts>,
    /// Training examples per second over the steps the row covers.
    pub examples_per_sec: f64,
    /// Seconds of training since the run started (resumed runs continue the count).
    pub elapsed_secs: f64,
}

/// Column names, in order.
pub const COLUMNS: [&str; 18] = [
    "kind",
    "step",
    "epoch",
    "lr",
    "beta",
    "grad_norm",
    "train_loss",
    "train_hit_bce",
    "train_velocity_mse",
    "train_offset_mse",
    "train_kl",
    "val_loss",
    "val_hit_bce",
    "val_velocity_mse",
    "val_offset_mse",
    "val_kl",
    "examples_per_sec",
    "elapsed_secs",
];

/// Why a metrics CSV could not be read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MetricsError {
    #[error("metrics CSV header is `{found}`, expected `{expected}`")]
    Header { found: String, expected: String },
    #[error("metrics CSV line {line}: {problem}")]
    Row { line: usize, problem: String },
}

fn parts(p: &LossParts) -> [f64; 5] {
    [p.total, p.hit_bce, p.velocity_mse, p.offset_mse, p.kl]
}

/// The CSV text of `rows`, header first.
pub fn to_csv(rows: &[MetricsRow]) -> String {
    let mut out = COLUMNS.join(",");
    out.push('\n');
    for r in rows {
        let mut cells = vec![
            r.kind.as_str().to_string(),
            r.step.to_string(),
            r.epoch.to_string(),
        ];
        let mut float = |x: f64| cells.push(format!("{x:?}"));
        float(r.lr);
        float(r.beta);
        float(r.grad_norm);
        parts(&r.train).into_iter().for_each(&mut float);
        match &r.val {
            Some(v) => parts(v).into_iter().for_each(&mut float),
            None => (0..5).for_each(|_| cells.push(String::new())),
        }
        cells.push(format!("{:?}", r.examples_per_sec));
        cells.push(format!("{:?}", r.elapsed_secs));
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// Reads [`to_csv`]'s output back.
pub fn parse_csv(text: &str) -> Result<Vec<MetricsRow>, MetricsError> {
    let mut lines = text.lines();
    let expected = COLUMNS.join(",");
    let header = lines.next().unwrap_or("");
    if header != expected {
        return Err(MetricsError::Header {
            found: header.to_string(),
            expected,
        });
    }
    lines
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| {
            parse_row(l).map_err(|problem| MetricsError::Row {
                line: i + 2,
                problem,
            })
        })
        .collect()
}

fn parse_row(line: &str) -> Result<MetricsRow, String> {
    let cells: Vec<&str> = line.split(',').collect();
    if cells.len() != COLUMNS.len() {
        return Err(format!("{} cells, expected {}", cells.len(), COLUMNS.len()));
    }
    let float = |i: usize| -> Result<f64, String> {
        cells[i]
            .parse::<f64>()
            .map_err(|_| format!("{} `{}` is not a number", COLUMNS[i], cells[i]))
    };
    let int = |i: usize| -> Result<u64, String> {
        cells[i]
            .parse::<u64>()
            .map_err(|_| format!("{} `{}` is not a count", COLUMNS[i], cells[i]))
    };
    let loss = |at: usize| -> Result<LossParts, String> {
        Ok(LossParts {
            total: float(at)?,
            hit_bce: float(at + 1)?,
            velocity_mse: float(at + 2)?,
            offset_mse: float(at + 3)?,
            kl: float(at + 4)?,
        })
    };
    let kind = match cells[0] {
        "epoch" => RowKind::Epoch,
        "step" => RowKind::Step,
        other => return Err(format!("kind `{other}` is neither `epoch` nor `step`")),
    };
    let val = if cells[11..16].iter().all(|c| c.is_empty()) {
        None
    } else {
        Some(loss(11)?)
    };
    Ok(MetricsRow {
        kind,
        step: int(1)?,
        epoch: int(2)?,
        lr: float(3)?,
        beta: float(4)?,
        grad_norm: float(5)?,
        train: loss(6)?,
        val,
        examples_per_sec: float(16)?,
        elapsed_secs: float(17)?,
    })
}

/// The rows of a run and the CSV file they go to.
#[derive(Debug, Clone)]
pub struct MetricsLog {
    path: PathBuf,
    rows: Vec<MetricsRow>,
}

impl MetricsLog {
    /// A log writing `run_dir/metrics.csv`, starting from `rows` (empty for a new run, the
    /// checkpoint's history for a resumed one).
    pub fn new(run_dir: &Path, rows: Vec<MetricsRow>) -> MetricsLog {
        MetricsLog {
            path: run_dir.join(FILE_NAME),
            rows,
        }
    }

    /// Adds a row (in memory; [`MetricsLog::write`] saves).
    pub fn push(&mut self, row: MetricsRow) {
        self.rows.push(row);
    }

    /// All rows so far.
    pub fn rows(&self) -> &[MetricsRow] {
        &self.rows
    }

    /// Epoch rows only.
    pub fn epochs(&self) -> impl Iterator<Item = &MetricsRow> {
        self.rows.iter().filter(|r| r.kind == RowKind::Epoch)
    }

    /// Where the CSV goes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rewrites the whole CSV atomically.
    pub fn write(&self) -> std::io::Result<()> {
        crate::atomic_file::write(&self.path, to_csv(&self.rows).as_bytes())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Rows with awkward values: tiny, huge, NaN, infinite, no validation.
    pub(crate) fn sample_rows() -> Vec<MetricsRow> {
        let train = LossParts {
            total: 51.234_567_890_123_4,
            hit_bce: 0.1 + 0.2,
            velocity_mse: 1e-300,
            offset_mse: f64::NAN,
            kl: 12.5,
        };
        vec![
            MetricsRow {
                kind: RowKind::Step,
                step: 100,
                epoch: 0,
                lr: 9.9e-4,
                beta: 0.0,
                grad_norm: 3.7,
                train,
                val: None,
                examples_per_sec: 1234.5,
                elapsed_secs: 10.0,
            },
            MetricsRow {
                kind: RowKind::Epoch,
                step: 200,
                epoch: 0,
                lr: 9.8e-4,
                beta: 0.2,
                grad_norm: f64::INFINITY,
                train: LossParts { kl: 8.0, ..train },
                val: Some(LossParts {
                    total: 60.0,
                    kl: 9.5,
                    ..train
                }),
                examples_per_sec: 1e20,
                elapsed_secs: 20.25,
            },
        ]
    }

    /// Equality that treats NaN as equal to NaN, bit for bit.
    pub(crate) fn same(a: &[MetricsRow], b: &[MetricsRow]) -> bool {
        to_csv(a) == to_csv(b) && a.len() == b.len()
    }

    #[test]
    fn csv_round_trips_every_value_exactly() {
        let rows = sample_rows();
        let text = to_csv(&rows);
        let back = parse_csv(&text).unwrap();
        assert!(same(&rows, &back), "{text}");
        assert_eq!(back[1].train.velocity_mse, 1e-300);
        assert_eq!(back[1].train.hit_bce.to_bits(), (0.1f64 + 0.2).to_bits());
        assert!(back[0].val.is_none());
        assert_eq!(text.lines().next().unwrap(), COLUMNS.join(","));
    }

    #[test]
    fn bad_csv_says_which_line_and_column() {
        let mut text = to_csv(&sample_rows());
        text = text.replacen("1234.5", "fast", 1);
        let e = parse_csv(&text).unwrap_err().to_string();
        assert!(
            e.contains("line 2") && e.contains("examples_per_sec"),
            "{e}"
        );
        assert!(matches!(
            parse_csv("a,b\n"),
            Err(MetricsError::Header { .. })
        ));
    }

    #[test]
    fn log_writes_header_once_and_rewrites_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let rows = sample_rows();
        let mut log = MetricsLog::new(dir.path(), vec![rows[0]]);
        log.write().unwrap();
        log.push(rows[1]);
        log.write().unwrap();
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(text.matches("kind,step").count(), 1);
        assert!(same(&parse_csv(&text).unwrap(), &rows));
        assert_eq!(log.epochs().count(), 1);
    }
}
