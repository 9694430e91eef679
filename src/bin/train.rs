//! `train`: builds DrumVAE model weights from a folder of MIDI files (the Groove MIDI Dataset by
//! default) and writes the safetensors file the plugin loads, with a model card beside it.
//! Headless: progress bars on stderr, `metrics.csv`, `curves.png` and checkpoints in the run folder.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use clap::Parser;
use drumvae::dataset::{self, BeatType, Dataset, Filter, Source, Split};
use drumvae::evaluate::{self, EvalOptions, Evaluation};
use drumvae::model::cpu::precision::{Precision, with_precision};
use drumvae::model::device::{DeviceRequest, select_device};
use drumvae::model::lstm::{LstmKernel, with_kernel};
use drumvae::model::{self, BarState, Config, DecoderKind, HeadLoss};
use drumvae::training::trainer::{self, Event, Finish, TrainSettings};
use drumvae::training::{AdamConfig, BetaSchedule, LrSchedule, Verdict};
use indicatif::{ProgressBar, ProgressStyle};

/// Train a DrumVAE model on a folder of drum MIDI files.
#[derive(Parser, Debug)]
#[command(name = "train", version, about, long_about = None)]
struct Args {
    /// The data: the Groove MIDI Dataset folder (with info.csv) or any folder of .mid files.
    /// Default: $DRUMVAE_GMD, else ../shared/data/groove.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Require DATA to be the Groove MIDI Dataset (fail if it has no info.csv).
    #[arg(long, conflicts_with = "folder")]
    gmd: bool,
    /// Treat DATA as a plain folder even if it has info.csv (seeded 80/10/10 split by file).
    #[arg(long)]
    folder: bool,
    /// Only `beat` or only `fill` performances (GMD labels). Default: both.
    #[arg(long)]
    beat_type: Option<BeatType>,
    /// The model file to write (safetensors; a model card .md is written beside it).
    #[arg(long, default_value = "model.safetensors")]
    out: PathBuf,
    /// Run folder for checkpoints, metrics.csv, curves.png and config.json.
    #[arg(long, default_value = "runs/train")]
    run_dir: PathBuf,
    /// Resume the run in this folder from its last checkpoint (same settings), continuing exactly.
    #[arg(long, value_name = "DIR", conflicts_with = "run_dir")]
    resume: Option<PathBuf>,
    /// Model size: `small` (fast on a 2-core CPU), `groovae` (Magenta's groovae_4bar size) or
    /// `groovae-flat`.
    #[arg(long, default_value = "small")]
    preset: String,
    /// Decoder: `hierarchical` (conductor + bar decoder) or `flat` (the GrooVAE baseline).
    #[arg(long)]
    decoder: Option<String>,
    /// Epochs in total (early stopping may end sooner).
    #[arg(long, default_value_t = 50)]
    epochs: u64,
    /// Examples per optimizer step.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Initial learning rate; it decays exponentially towards --min-lr.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Learning rate the decay approaches.
    #[arg(long, default_value_t = 1e-5)]
    min_lr: f64,
    /// Learning-rate decay factor per step (Magenta: 0.9999).
    #[arg(long, default_value_t = 0.9999)]
    lr_decay: f64,
    /// KL weight (default: the preset's, 0.2 as in GrooVAE).
    #[arg(long)]
    beta: Option<f64>,
    /// Steps over which beta ramps up linearly from 0 (0 = no warm-up).
    #[arg(long, default_value_t = 0)]
    beta_warmup: u64,
    /// Free bits: the KL budget in nats per example that costs nothing (default: the preset's,
    /// 48 bits = 33.3 nats as in GrooVAE).
    #[arg(long)]
    free_bits: Option<f64>,
    /// Which cells train the velocity and offset heads: `hit-cells` (where the target has a hit:
    /// the velocity a hit would have; the presets' default) or `all-cells` (Magenta's GrooVAE,
    /// target 0 on rests, which pulls decoded velocities toward 0).
    #[arg(long)]
    head_loss: Option<HeadLoss>,
    /// Chance that a step's teacher-forced decoder input is zeroed during training (word
    /// dropout): makes the decoder rely on z. Default: the preset's (0).
    #[arg(long)]
    decoder_input_dropout: Option<f64>,
    /// Hierarchical decoder: `reset` starts every bar from its bar embedding (MusicVAE), `carry`
    /// continues each bar from the state the previous one ended in, steered by the embedding.
    /// Default: the preset's (reset).
    #[arg(long)]
    bar_state: Option<BarState>,
    /// Hierarchical decoder: hidden units of the conductor, which are also the size of each bar
    /// embedding (default: the preset's, 256). With `--conductor-layers` it sets how many
    /// parameters the hierarchy adds over the flat decoder.
    #[arg(long)]
    conductor_hidden: Option<usize>,
    /// Hierarchical decoder: layers of the conductor (default: the preset's, 2).
    #[arg(long)]
    conductor_layers: Option<usize>,
    /// Gradient-norm clipping threshold (0 = off).
    #[arg(long, default_value_t = 1.0)]
    clip: f64,
    /// Stop after this many epochs without a better validation loss (0 = never).
    #[arg(long, default_value_t = 5)]
    patience: u32,
    /// Seed of the initial weights, data order and noise: the same seed gives the same model.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop (with a checkpoint, resumable) after this many optimizer steps in total.
    #[arg(long)]
    max_steps: Option<u64>,
    /// Also log a metrics row every N steps (0 = once per epoch).
    #[arg(long, default_value_t = 0)]
    log_every: u64,
    /// Where to compute: cpu, cuda, or auto (CUDA when built with it and a GPU is present).
    #[arg(long, default_value = "auto")]
    device: DeviceRequest,
    /// Threads for matrix products (elementwise ops stay on one thread, which is fastest on
    /// small machines). Default: all cores.
    #[arg(long)]
    threads: Option<usize>,
    /// Folder for the preprocessed dataset cache (default: the run folder's parent /.cache).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// How LSTM sequences are computed: `fused` (one op per layer with a hand-written backward,
    /// CPU) or `reference` (Candle's per-step ops; for comparing training curves).
    #[arg(long, default_value = "fused")]
    lstm_kernel: LstmKernel,
    /// Operand precision of the LSTM layers' matrix products: `bf16` (bf16 operands, f32
    /// accumulation; weights, optimizer state and the loss stay f32) or `f32`. Default: bf16 where
    /// the CPU has AMX or AVX-512 BF16, else f32.
    #[arg(long)]
    precision: Option<Precision>,
    /// Prior samples drawn for the density check in the final evaluation.
    #[arg(long, default_value_t = 512)]
    prior_samples: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // SAFETY: first thing in main, before any thread is started.
    unsafe { drumvae::model::device::configure_threads(args.threads) };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn config_from(args: &Args) -> Result<Config> {
    let mut config = Config::preset(&args.preset).with_context(|| {
        format!(
            "unknown preset {:?}: use one of {}",
            args.preset,
            Config::PRESETS.join(", ")
        )
    })?;
    if let Some(d) = &args.decoder {
        config.decoder = match d.as_str() {
            "hierarchical" => DecoderKind::Hierarchical,
            "flat" => DecoderKind::Flat,
            _ => bail!("unknown decoder {d:?}: use hierarchical or flat"),
        };
    }
    if let Some(b) = args.beta {
        config.beta = b;
    }
    if let Some(f) = args.free_bits {
        config.free_bits = f;
    }
    if let Some(h) = args.head_loss {
        config.head_loss = h;
    }
    if let Some(p) = args.decoder_input_dropout {
        config.decoder_input_dropout = p;
    }
    if let Some(s) = args.bar_state {
        config.bar_state = s;
    }
    if let Some(h) = args.conductor_hidden {
        config.conductor_hidden = h;
    }
    if let Some(l) = args.conductor_layers {
        config.conductor_layers = l;
    }
    config.validate().map_err(anyhow::Error::msg)?;
    Ok(config)
}

fn source_from(args: &Args) -> Result<Source> {
    let root = args.data.clone().unwrap_or_else(dataset::default_gmd_root);
    if !root.is_dir() {
        bail!(
            "data folder {} does not exist: pass --data DIR (the Groove MIDI Dataset or a folder of .mid files)",
            root.display()
        );
    }
    Ok(if args.folder {
        Source::folder(root, args.seed)
    } else if args.gmd {
        if !root.join("info.csv").is_file() {
            bail!(
                "{} has no info.csv: is it the Groove MIDI Dataset? (drop --gmd for a plain folder)",
                root.display()
            );
        }
        Source::Gmd { root }
    } else {
        match Source::detect(root) {
            Source::Folder { root, .. } => Source::folder(root, args.seed),
            gmd => gmd,
        }
    })
}

fn bar(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

fn run(args: Args) -> Result<()> {
    let config = config_from(&args)?;
    let source = source_from(&args)?;
    let (run_dir, resume) = match &args.resume {
        Some(dir) => (dir.clone(), true),
        None => (args.run_dir.clone(), false),
    };
    let (device, note) = select_device(args.device)?;
    if let Some(note) = note {
        eprintln!("{note}");
    }
    let cache = args
        .cache
        .clone()
        .unwrap_or_else(|| run_dir.parent().unwrap_or(Path::new(".")).join(".cache"));
    let filter = Filter {
        splits: Vec::new(),
        beat_type: args.beat_type,
    };
    let loading = bar(0, "reading MIDI [{bar:30}] {pos}/{len} files");
    let (data, used) = Dataset::load_cached(&source, &filter, &cache, |done, total| {
        loading.set_length(total as u64);
        loading.set_position(done as u64);
    })?;
    loading.finish_and_clear();
    eprintln!(
        "dataset ({used:?} cache in {}):\n{}",
        cache.display(),
        data.report
    );
    let windows = |split| -> Vec<_> { data.split(split).map(|w| w.pattern).collect() };
    let (train_set, validation_set) = (windows(Split::Train), windows(Split::Validation));

    let settings = TrainSettings {
        config: config.clone(),
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: LrSchedule {
            lr: args.lr,
            min_lr: args.min_lr,
            decay_rate: args.lr_decay,
        },
        beta: BetaSchedule {
            max_beta: config.beta,
            warmup_steps: args.beta_warmup,
        },
        adam: AdamConfig {
            max_grad_norm: (args.clip > 0.0).then_some(args.clip),
            ..AdamConfig::default()
        },
        patience: args.patience,
        seed: args.seed,
        log_every: args.log_every,
        stop_after_steps: args.max_steps,
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || {
            eprintln!("\ninterrupted: saving a checkpoint after this step (resume with --resume)");
            stop.store(true, Ordering::SeqCst);
        })
        .context("cannot install the Ctrl-C handler")?;
    }
    let (precision, why_not) = args
        .precision
        .unwrap_or_else(Precision::fastest)
        .on_this_cpu();
    if let Some(why_not) = why_not {
        eprintln!("{why_not}");
    }
    eprintln!("products in {precision}");
    let mut epoch_bar = ProgressBar::hidden();
    let outcome = with_precision(precision, || {
        with_kernel(args.lstm_kernel, || {
            trainer::train(
                &settings,
                &train_set,
                &validation_set,
                &device,
                &run_dir,
                resume,
                &stop,
                |event| match event {
                    Event::EpochStart { epoch, batches } => {
                        epoch_bar = bar(
                            batches,
                            "epoch {prefix} [{bar:30}] {pos}/{len} steps {msg} ({eta})",
                        );
                        epoch_bar.set_prefix((epoch + 1).to_string());
                    }
                    Event::Step {
                        loss,
                        examples_per_sec,
                        ..
                    } => {
                        epoch_bar.inc(1);
                        epoch_bar.set_message(format!(
                            "loss {:.2} KL {:.1} | {examples_per_sec:.0} ex/s",
                            loss.total, loss.kl
                        ));
                    }
                    Event::Epoch { row, verdict } => {
                        epoch_bar.finish_and_clear();
                        let val = row.val.map_or(f64::NAN, |v| v.total);
                        let mark = if verdict == Verdict::Improved {
                            " (best)"
                        } else {
                            ""
                        };
                        eprintln!(
                            "epoch {}: train {:.3} (KL {:.1}), validation {val:.3}{mark}, {:.0} ex/s",
                            row.epoch + 1,
                            row.train.total,
                            row.train.kl,
                            row.examples_per_sec
                        );
                    }
                },
            )
        })
    })?;
    match outcome.finish {
        Finish::Interrupted => {
            eprintln!(
                "stopped after {} steps; resume with: train --resume {}",
                outcome.steps,
                run_dir.display()
            );
            return Ok(());
        }
        Finish::EarlyStopped => eprintln!("early stop: validation stopped improving"),
        Finish::Completed => {}
    }
    let best_path = trainer::best_model_path(&run_dir);
    let (best, _) = model::file::load_file(&best_path, &device)?;

    let options = EvalOptions {
        prior_samples: args.prior_samples,
        seed: args.seed,
        ..EvalOptions::default()
    };
    let mut metrics = BTreeMap::new();
    for split in [Split::Validation, Split::Test] {
        let ws: Vec<_> = data.split(split).copied().collect();
        if ws.is_empty() {
            continue;
        }
        let progress = bar(
            ws.len() as u64,
            "evaluating {prefix} [{bar:30}] {pos}/{len}",
        );
        progress.set_prefix(split.name());
        let eval =
            evaluate::evaluate(&best, &ws, &options, |d, _| progress.set_position(d as u64))?;
        progress.finish_and_clear();
        eprintln!("{split}:\n{eval}");
        metrics.insert(split.name().to_string(), eval);
    }
    let anchors = evaluate::style_anchors(&best, &data)?;
    eprintln!(
        "style anchors: {}",
        anchors.keys().cloned().collect::<Vec<_>>().join(", ")
    );

    let command: Vec<String> = std::env::args().collect();
    let training = serde_json::json!({
        "finish": outcome.finish,
        "steps": outcome.steps,
        "best_epoch": outcome.best.map(|b| b.0 + 1),
        "best_val_loss": outcome.best.map(|b| b.1),
        "seed": args.seed,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "min_lr": args.min_lr,
        "lr_decay": args.lr_decay,
        "epochs_requested": args.epochs,
        "precision": precision.to_string(),
        "elapsed_secs": outcome.metrics.last().map(|r| r.elapsed_secs),
    });
    let extra = HashMap::from([
        ("command".to_string(), command.join(" ")),
        ("dataset".to_string(), serde_json::to_string(&data.report)?),
        ("metrics".to_string(), serde_json::to_string(&metrics)?),
        ("training".to_string(), training.to_string()),
        (
            "style_anchors".to_string(),
            serde_json::to_string(&anchors)?,
        ),
        (
            "data_credit".to_string(),
            "Groove MIDI Dataset (CC BY 4.0): Gillick, Roberts, Engel, Eck, Bamman, \
             Learning to Groove with Inverse Sequence Transformations, ICML 2019"
                .to_string(),
        ),
    ]);
    let varmap = trainer::load_varmap(&best_path, &config, &device)?;
    model::file::save(&args.out, &varmap, &config, extra)?;
    let card = model_card(&args, &config, &command, &data, &metrics, &outcome.metrics);
    let card_path = args.out.with_extension("md");
    drumvae::atomic_file::write(&card_path, card.as_bytes())?;
    eprintln!(
        "wrote {} and {} (run folder {})",
        args.out.display(),
        card_path.display(),
        run_dir.display()
    );
    Ok(())
}

fn model_card(
    args: &Args,
    config: &Config,
    command: &[String],
    data: &Dataset,
    metrics: &BTreeMap<String, Evaluation>,
    rows: &[drumvae::training::MetricsRow],
) -> String {
    let name = args
        .out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut s = format!(
        "# {name}\n\nA DrumVAE model (MusicVAE, {:?} decoder) on the GrooVAE grid.\n\n",
        config.decoder
    );
    s += &format!("## Command\n\n```\n{}\n```\n\n", command.join(" "));
    s += &format!(
        "## Config\n\n```json\n{}\n```\n\n",
        serde_json::to_string_pretty(config).unwrap_or_default()
    );
    s += &format!("## Data\n\n```\n{}```\n\n", data.report);
    s += "## Training\n\n| epoch | train loss | validation loss | KL | examples/s |\n|---|---|---|---|---|\n";
    for r in rows
        .iter()
        .filter(|r| r.kind == drumvae::training::RowKind::Epoch)
    {
        s += &format!(
            "| {} | {:.3} | {:.3} | {:.1} | {:.0} |\n",
            r.epoch + 1,
            r.train.total,
            r.val.map_or(f64::NAN, |v| v.total),
            r.train.kl,
            r.examples_per_sec
        );
    }
    for (split, eval) in metrics {
        s += &format!("\n## Evaluation: {split}\n\n```\n{eval}```\n");
    }
    s += "\n## Credit\n\nTrained on the Groove MIDI Dataset (CC BY 4.0): Jon Gillick, Adam Roberts, \
          Jesse Engel, Douglas Eck, David Bamman. \"Learning to Groove with Inverse Sequence \
          Transformations.\" ICML 2019.\n";
    s
}
