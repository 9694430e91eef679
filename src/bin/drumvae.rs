//! `drumvae`: the offline command-line tool. `inspect` shows a MIDI file as the model sees it;
//! `dataset` reports what a folder of MIDI (or the Groove MIDI Dataset) yields for training.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use drumvae::dataset::{BeatType, Dataset, Filter, Source, Split};
use drumvae::groove::BARS;
use drumvae::midi_file;
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
}

fn main() -> ExitCode {
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
    }
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
    if let Some(n) = only {
        anyhow::ensure!(
            (1..=grid.window_count()).contains(&n),
            "window {n} does not exist: the file has {} windows",
            grid.window_count()
        );
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

fn progress_bar(message: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(0).with_message(message);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} files ({eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}
