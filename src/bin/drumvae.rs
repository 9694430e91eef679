//! `drumvae`: the offline command-line tool. `inspect` shows a MIDI file as the model sees it;
//! `dataset` reports what a folder of MIDI (or the Groove MIDI Dataset) yields for training;
//! `evaluate` scores a model; `sample` and `morph` write the grooves a model makes; `render` plays
//! the plugin's sequencer over a simulated transport and writes what the plugin would send.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use clap::{Parser, Subcommand};
use drumvae::dataset::{BeatType, Dataset, Filter, Source, Split};
use drumvae::evaluate::{self, EvalOptions, report::ReportOptions};
use drumvae::generator::{Engine, Point, SLOT_NAMES, Slot, Slots};
use drumvae::groove::BARS;
use drumvae::latent;
use drumvae::midi_file::{self, WriteOptions};
use drumvae::model::{self, Vae, decoder::DecodeOptions};
use drumvae::render::{self, Automation, RenderOptions};
use drumvae::sequencer::Settings;
use drumvae::{Pattern, dataset};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "drumvae",
    version,
    about = "Neural drum grooves: inspect, sample, morph, render"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a MIDI file's 4-bar windows as text grids (voices as rows, 16ths as columns).
    ///
    /// Glyphs: `-` rest; `.` `o` `O` `X` soft to accented; `<` / `>` a hit more than a quarter
    /// step early / late.
    Inspect {
        /// The .mid file.
        file: PathBuf,
        /// Show only this window (1-based; window N starts at bar N).
        #[arg(long)]
        window: Option<usize>,
        /// Show all nine voices, even those that never play.
        #[arg(long)]
        all_voices: bool,
    },
    /// Report what a dataset folder yields: files and windows per split, skipped files and why,
    /// dropped pitches.
    Dataset {
        /// The Groove MIDI Dataset folder (holding info.csv) or any folder of .mid files.
        dir: PathBuf,
        /// Treat DIR as a plain folder even if it holds info.csv.
        #[arg(long)]
        folder: bool,
        /// Only this split (repeatable); default all.
        #[arg(long)]
        split: Vec<Split>,
        /// Only `beat` or only `fill` performances (GMD labels).
        #[arg(long)]
        beat_type: Option<BeatType>,
        /// Seed of the by-file split of a plain folder.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Read and write the preprocessed cache in this folder.
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Evaluate a model on a dataset split: hit precision/recall/F1 and step accuracy
    /// (teacher-forced and sampled), velocity and timing errors, KL, active latent units, and the
    /// density of prior samples against the data.
    Evaluate {
        /// The model file (.safetensors written by `train`).
        model: PathBuf,
        /// The Groove MIDI Dataset folder or a folder of .mid files (default: $DRUMVAE_GMD or
        /// ../shared/data/groove).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Require DATA to be the GMD (with info.csv).
        #[arg(long)]
        gmd: bool,
        /// train, validation, test, or all.
        #[arg(long, default_value = "validation")]
        split: String,
        /// Seed of a plain folder's by-file split and of the prior samples.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Prior samples for the density check.
        #[arg(long, default_value_t = 512)]
        prior_samples: usize,
        /// Print one machine-readable JSON object.
        #[arg(long)]
        json: bool,
    },
    /// What the model plays: prior samples at several temperatures against a split's grooves
    /// (hits per step by voice, velocity and timing distributions) and the morph check (slerp
    /// paths between real grooves), as tables, report.json, samples.png and interpolation.png.
    Report {
        /// The model file (.safetensors written by `train`).
        model: PathBuf,
        /// The Groove MIDI Dataset folder or a folder of .mid files (default: $DRUMVAE_GMD or
        /// ../shared/data/groove).
        #[arg(long)]
        data: Option<PathBuf>,
        /// train, validation, test, or all.
        #[arg(long, default_value = "validation")]
        split: String,
        /// Prior samples per temperature.
        #[arg(long, default_value_t = 1000)]
        samples: usize,
        /// Sampling temperatures, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "0,0.5,1")]
        temperatures: Vec<f32>,
        /// Pairs of real grooves for the interpolation check.
        #[arg(long, default_value_t = 100)]
        pairs: usize,
        /// Points per interpolation path, both ends included.
        #[arg(long, default_value_t = 9)]
        points: usize,
        /// Seed of the prior samples, their hit draws and the pairs.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Folder for report.json, samples.png and interpolation.png.
        #[arg(long)]
        out: PathBuf,
    },
    /// Recompute a model's style anchors (the corners' `style:NAME` points: per GMD genre, the
    /// code of a typical validation groove) and write the model with them; weights unchanged.
    Anchors {
        /// The model file (.safetensors written by `train`).
        model: PathBuf,
        /// The Groove MIDI Dataset folder (default: $DRUMVAE_GMD or ../shared/data/groove).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Where to write the model (may be MODEL itself; written atomically).
        #[arg(long)]
        out: PathBuf,
    },
    /// Draw grooves from the model's prior and write them to a .mid file, one after another.
    Sample {
        /// The model file.
        #[arg(long)]
        model: PathBuf,
        /// How many 4-bar grooves.
        #[arg(long, default_value_t = 4)]
        count: usize,
        /// Seed of the latent points (groove i uses seed + i).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[command(flatten)]
        shape: Shape,
        /// Output .mid file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Morph from the groove of one MIDI file to another: encode both, walk the latent path in
    /// equal steps (spherical interpolation) and write each decoded groove, one after another.
    Morph {
        /// The start groove (its first 4-bar window, or --window).
        a: PathBuf,
        /// The end groove.
        b: PathBuf,
        /// The model file.
        #[arg(long)]
        model: PathBuf,
        /// Grooves along the path, both ends included.
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// Which 4-bar window of each file to use (1-based).
        #[arg(long, default_value_t = 1)]
        window: usize,
        #[command(flatten)]
        shape: Shape,
        /// Output .mid file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Play the plugin's sequencer over a simulated transport, with the built-in model (or
    /// --model) and morph automation, and write the MIDI the plugin would send.
    Render(RenderArgs),
}

/// What `render` plays: the plugin's parameters, as flags.
#[derive(clap::Args)]
struct RenderArgs {
    /// Tempo in BPM.
    #[arg(long, default_value_t = 120.0)]
    tempo: f64,
    /// Length in bars (4/4).
    #[arg(long, default_value_t = 16)]
    bars: u32,
    /// Morph X automation: BAR:VALUE breakpoints, linear between them (e.g. 0:0,8:1), or one
    /// value. Bar n plays the point the automation reaches at bar n.
    #[arg(long, default_value = "0")]
    morph_x: Automation,
    /// Morph Y automation, as --morph-x.
    #[arg(long, default_value = "0")]
    morph_y: Automation,
    /// Corner A: seed:N, style:NAME (a GMD genre in the model, e.g. rock, funk, jazz, latin) or
    /// file:PATH.mid (its first 4-bar window; file:PATH.mid@N for window N, 1-based).
    #[arg(long, default_value = "style:rock")]
    a: String,
    /// Corner B (see --a).
    #[arg(long, default_value = "style:funk")]
    b: String,
    /// Corner C (see --a).
    #[arg(long, default_value = "style:jazz")]
    c: String,
    /// Corner D (see --a).
    #[arg(long, default_value = "style:latin")]
    d: String,
    /// A model file written by `train`; default: the model built into drumvae.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Hit sampling temperature (0 = the most likely hits).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Hit-logit bias: positive = busier, negative = sparser.
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    density: f32,
    /// Seed of the hit draws (when temperature > 0).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Micro-timing amount: 0 = on the grid, 1 = as generated, 2 = exaggerated.
    #[arg(long, default_value_t = 1.0)]
    timing: f32,
    /// Swing, 0 to 1 (1 = triplet feel).
    #[arg(long, default_value_t = 0.0)]
    swing: f32,
    /// Velocity scale (1 = as generated).
    #[arg(long, default_value_t = 1.0)]
    dynamics: f32,
    /// Note length in 16th steps.
    #[arg(long, default_value_t = 1.0)]
    note_length: f32,
    /// MIDI channel, 1 to 16.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u8).range(1..=16))]
    channel: u8,
    /// Simulated host sample rate.
    #[arg(long, default_value_t = 48_000.0)]
    sample_rate: f64,
    /// Simulated host block size in samples (the output does not depend on it).
    #[arg(long, default_value_t = 512)]
    block: u32,
    /// Output .mid file.
    #[arg(long)]
    out: PathBuf,
}

/// How decoded grooves are shaped and written.
#[derive(clap::Args)]
struct Shape {
    /// Hit sampling temperature (0 = the most likely hits, no randomness).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Added to every hit logit: positive = busier, negative = sparser.
    #[arg(long, default_value_t = 0.0)]
    density: f32,
    /// Tempo written into the file (3.58 to 999 BPM: what a MIDI file can store).
    #[arg(long, default_value_t = 120.0, value_parser = parse_bpm)]
    bpm: f64,
}

fn parse_bpm(text: &str) -> std::result::Result<f64, String> {
    let bpm: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if midi_file::tempo_is_writable(bpm) {
        Ok(bpm)
    } else {
        Err(format!(
            "{bpm} BPM cannot be written to a MIDI file: use {} to {} BPM",
            midi_file::TEMPO_RANGE_BPM.start(),
            midi_file::TEMPO_RANGE_BPM.end()
        ))
    }
}

fn main() -> ExitCode {
    // SAFETY: first thing in main, before any thread is started.
    unsafe { drumvae::model::device::configure_threads(None) };
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Inspect {
            file,
            window,
            all_voices,
        } => inspect(&file, window, all_voices),
        Command::Dataset {
            dir,
            folder,
            split,
            beat_type,
            seed,
            cache,
            json,
        } => {
            let source = if folder {
                Source::folder(dir, seed)
            } else {
                match Source::detect(dir) {
                    Source::Folder { root, .. } => Source::folder(root, seed),
                    gmd => gmd,
                }
            };
            let filter = Filter {
                splits: split,
                beat_type,
            };
            let bar = progress_bar("reading MIDI");
            let tick = |done: usize, total: usize| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            };
            let data = match cache {
                Some(dir) => {
                    let (data, used) = Dataset::load_cached(&source, &filter, &dir, tick)?;
                    bar.finish_and_clear();
                    eprintln!("cache: {used:?} ({})", dir.display());
                    data
                }
                None => {
                    let data = Dataset::load(&source, &filter, tick)?;
                    bar.finish_and_clear();
                    data
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&data.report)?);
            } else {
                print!("{}", data.report);
            }
            Ok(())
        }
        Command::Anchors { model, data, out } => anchors_command(&model, data, &out),
        Command::Report {
            model,
            data,
            split,
            samples,
            temperatures,
            pairs,
            points,
            seed,
            out,
        } => {
            let options = ReportOptions {
                samples,
                temperatures,
                pairs,
                points,
                seed,
            };
            report_command(&model, data, &split, &options, &out)
        }
        Command::Evaluate {
            model,
            data,
            gmd,
            split,
            seed,
            prior_samples,
            json,
        } => evaluate_command(&model, data, gmd, &split, seed, prior_samples, json),
        Command::Sample {
            model,
            count,
            seed,
            shape,
            out,
        } => {
            let vae = load_model(&model)?;
            let latent = vae.config.latent;
            let z: Vec<f32> = (0..count as u64)
                .flat_map(|i| latent::seeded_z(seed.wrapping_add(i), latent))
                .collect();
            let z = Tensor::from_vec(z, (count, latent), &Device::Cpu)?;
            let patterns = vae.decode(&z, &decode_options(&shape, seed))?;
            write_grooves(&out, &patterns, &shape)
        }
        Command::Morph {
            a,
            b,
            model,
            steps,
            window,
            shape,
            out,
        } => {
            anyhow::ensure!(steps >= 2, "--steps must be at least 2 (both ends)");
            let vae = load_model(&model)?;
            let ends = [window_of(&a, window)?, window_of(&b, window)?];
            let mu = vae.encode(&ends)?.to_vec2::<f32>()?;
            let z: Vec<f32> = (0..steps)
                .flat_map(|i| latent::slerp(&mu[0], &mu[1], i as f32 / (steps - 1) as f32))
                .collect();
            let z = Tensor::from_vec(z, (steps, vae.config.latent), &Device::Cpu)?;
            let patterns = vae.decode(&z, &decode_options(&shape, 0))?;
            write_grooves(&out, &patterns, &shape)
        }
        Command::Render(args) => render_command(&args),
    }
}

fn slot_of(engine: &Engine, spec: &str) -> Result<Slot> {
    match spec.strip_prefix("file:") {
        Some(rest) => {
            let (path, window) = match rest.rsplit_once('@') {
                Some((p, w)) if w.parse::<usize>().is_ok() => (p, w.parse::<usize>()?),
                _ => (rest, 1),
            };
            anyhow::ensure!(window >= 1, "windows are numbered from 1 in \"{spec}\"");
            engine.encode_file(std::path::Path::new(path), window - 1)
        }
        None => spec.parse::<Slot>().map_err(anyhow::Error::msg),
    }
}

fn render_command(args: &RenderArgs) -> Result<()> {
    let engine = match &args.model {
        Some(path) => Engine::from_file(path, &Device::Cpu)?,
        None => Engine::embedded(&Device::Cpu)?,
    };
    let slots = [&args.a, &args.b, &args.c, &args.d]
        .iter()
        .zip(SLOT_NAMES)
        .map(|(spec, name)| slot_of(&engine, spec).with_context(|| format!("corner {name}")))
        .collect::<Result<Vec<Slot>>>()?;
    let settings = Settings {
        channel: args.channel - 1,
        timing_amount: args.timing,
        swing: args.swing,
        velocity_scale: args.dynamics,
        note_length_steps: args.note_length,
        ..Settings::default()
    };
    let opts = RenderOptions {
        tempo_bpm: args.tempo,
        bars: args.bars,
        sample_rate: args.sample_rate,
        block_size: args.block,
        point: Point {
            slots: Slots(slots.try_into().expect("four corners")),
            temperature: args.temperature,
            density: args.density,
            seed: args.seed,
            ..Point::default()
        },
        morph_x: args.morph_x.clone(),
        morph_y: args.morph_y.clone(),
        settings,
    };
    let rendered = render::render(&engine, &opts)?;
    for warning in &rendered.warnings {
        eprintln!("warning: {warning}");
    }
    let bytes = render::to_midi(&rendered, &opts, 960);
    drumvae::atomic_file::write(&args.out, &bytes)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    let ons = rendered.notes.iter().filter(|n| n.event.on).count();
    println!(
        "{}: {} bars at {} BPM, {ons} notes, model {}",
        args.out.display(),
        args.bars,
        args.tempo,
        engine.name()
    );
    for (bar, point) in &rendered.decodes {
        println!(
            "  bar {:>3}: morph x {:.3}, y {:.3}",
            bar + 1,
            point.x,
            point.y
        );
    }
    Ok(())
}

fn load_model(path: &std::path::Path) -> Result<Vae> {
    let (vae, _) = model::file::load_file(path, &Device::Cpu)?;
    Ok(vae)
}

fn decode_options(shape: &Shape, seed: u64) -> DecodeOptions {
    DecodeOptions {
        temperature: shape.temperature,
        density: shape.density,
        seed,
    }
}

fn write_grooves(out: &std::path::Path, patterns: &[Pattern], shape: &Shape) -> Result<()> {
    let options = WriteOptions {
        bpm: shape.bpm,
        ..WriteOptions::default()
    };
    midi_file::write_file(out, patterns, &options)
        .with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!("wrote {} grooves to {}", patterns.len(), out.display());
    Ok(())
}

fn window_of(path: &std::path::Path, window: usize) -> Result<Pattern> {
    let grid = midi_file::read_grid(path)?;
    anyhow::ensure!(window >= 1, "windows are numbered from 1");
    Ok(grid.groove(window - 1, &path.display().to_string())?)
}

fn inspect(file: &std::path::Path, only: Option<usize>, all_voices: bool) -> Result<()> {
    let performance = midi_file::read_file(file)?;
    println!("{}", file.display());
    println!("{performance}");
    performance.check_four_four(&file.display().to_string())?;
    let grid = performance.quantize();
    println!(
        "{} bars, {} hits on the grid, {} window(s) of {BARS} bars (hop 1 bar)",
        grid.bars,
        grid.hit_count(),
        grid.window_count()
    );
    if grid.merged_hits > 0 {
        println!(
            "{} hits merged into a louder one on the same step",
            grid.merged_hits
        );
    }
    for (pitch, n) in &grid.dropped_pitches {
        println!("dropped {n} notes of unmapped pitch {pitch}");
    }
    let label = file.display().to_string();
    if let Some(n) = only {
        anyhow::ensure!(n >= 1, "windows are numbered from 1");
        grid.groove(n - 1, &label)?;
    }
    if grid.bars < BARS {
        let pattern = grid.groove(0, &label)?;
        println!(
            "\nwindow 1 (the {}-bar loop repeated to {BARS} bars, {:.1} BPM, {} hits)",
            grid.bars.max(1),
            grid.bpm_at_bar(0),
            pattern.hit_count()
        );
        print!("{}", pattern.to_text_grid(all_voices));
    }
    for (bar, pattern) in grid.windows() {
        if only.is_some_and(|n| n != bar + 1) {
            continue;
        }
        println!(
            "\nwindow {} (bars {}-{}, {:.1} BPM, {} hits)",
            bar + 1,
            bar + 1,
            bar + BARS,
            grid.bpm_at_bar(bar),
            pattern.hit_count()
        );
        print!("{}", pattern.to_text_grid(all_voices));
    }
    Ok(())
}

fn evaluate_command(
    model: &std::path::Path,
    data: Option<PathBuf>,
    gmd: bool,
    split: &str,
    seed: u64,
    prior_samples: usize,
    json: bool,
) -> Result<()> {
    let vae = load_model(model)?;
    let data = load_split(data, gmd, split, seed)?;
    let bar = progress_bar("evaluating");
    let options = EvalOptions {
        prior_samples,
        seed,
        ..EvalOptions::default()
    };
    let eval = evaluate::evaluate(&vae, &data.windows, &options, |d, t| {
        bar.set_length(t as u64);
        bar.set_position(d as u64);
    })?;
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string(&eval)?);
    } else {
        print!("{eval}");
    }
    Ok(())
}

fn report_command(
    model: &std::path::Path,
    data: Option<PathBuf>,
    split: &str,
    options: &ReportOptions,
    out: &std::path::Path,
) -> Result<()> {
    let vae = load_model(model)?;
    let data = load_split(data, false, split, options.seed)?;
    let grooves: Vec<Pattern> = data.windows.iter().map(|w| w.pattern).collect();
    let label = format!("{split} split");
    let spinner = ProgressBar::new_spinner();
    let report = evaluate::report::model_report(&vae, &label, &grooves, options, |what| {
        spinner.set_message(what.to_string());
        spinner.tick();
    })?;
    spinner.finish_and_clear();
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    drumvae::atomic_file::write(
        &out.join("report.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    let png = |name: &str| out.join(name);
    evaluate::report_plots::samples_png(&png("samples.png"), &label, &report.data, &report.priors)
        .map_err(anyhow::Error::msg)?;
    evaluate::report_plots::interpolation_png(&png("interpolation.png"), &report.interpolation)
        .map_err(anyhow::Error::msg)?;
    print!("{report}");
    eprintln!(
        "wrote report.json, samples.png and interpolation.png to {}",
        out.display()
    );
    Ok(())
}

fn anchors_command(
    model: &std::path::Path,
    data: Option<PathBuf>,
    out: &std::path::Path,
) -> Result<()> {
    let bytes = model::file::read_model_bytes(model)?;
    let (vae, _) = model::load_bytes(&bytes, &Device::Cpu)?;
    let data = load_split(data, true, "validation", 0)?;
    let anchors = evaluate::style_anchors(&vae, &data)?;
    anyhow::ensure!(
        !anchors.is_empty(),
        "no genre labels in the data: style anchors need the GMD's info.csv"
    );
    let updated = model::file::with_metadata(
        &bytes,
        [(
            "style_anchors".to_string(),
            serde_json::to_string(&anchors)?,
        )]
        .into(),
    )?;
    drumvae::atomic_file::write(out, &updated)
        .with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!(
        "wrote {} with style anchors for {}",
        out.display(),
        anchors.keys().cloned().collect::<Vec<_>>().join(", ")
    );
    Ok(())
}

/// The windows of one split (or all) of the GMD or a folder.
fn load_split(data: Option<PathBuf>, gmd: bool, split: &str, seed: u64) -> Result<Dataset> {
    let root = data.unwrap_or_else(dataset::default_gmd_root);
    let source = match Source::detect(root.clone()) {
        Source::Folder { .. } if gmd => {
            anyhow::bail!(
                "{} has no info.csv: is it the Groove MIDI Dataset?",
                root.display()
            )
        }
        Source::Folder { root, .. } => Source::folder(root, seed),
        g => g,
    };
    let splits = match split {
        "all" => Vec::new(),
        s => vec![s.parse::<Split>().map_err(anyhow::Error::msg)?],
    };
    let filter = Filter {
        splits,
        beat_type: None,
    };
    let data = Dataset::load(&source, &filter, |_, _| {})?;
    anyhow::ensure!(!data.windows.is_empty(), "no windows in split {split}");
    Ok(data)
}

fn progress_bar(message: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(0).with_message(message);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} files ({eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}
