//! Model speed, as a bench binary (one step takes seconds, too slow for criterion's sampling):
//! training throughput (examples/second over forward + backward + optimizer step) for the `small`
//! and `groovae` presets at batch 64 and 256, and batch-1 decode latency of a 4-bar groove.
//! Reports the median of repeated runs.
//!
//! Run: `cargo bench --bench model_speed` (`-- --quick` for fewer repeats; `-- decode` or
//! `-- train` for one part). Threads: set `RAYON_NUM_THREADS` (gemm) and `CANDLE_NUM_THREADS`
//! (elementwise) before running; the defaults below follow candle-notes.md.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use drumvae::dataset::{self, Dataset, Filter, Source, Split};
use drumvae::model::decoder::DecodeOptions;
use drumvae::model::{Config, Vae, init::seeded_var_builder, patterns_to_tensor};
use drumvae::training::{Adam, AdamConfig, rng};

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only = |part: &str| {
        !args.iter().any(|a| a == "train" || a == "decode") || args.iter().any(|a| a == part)
    };
    let device = Device::Cpu;
    let data = Dataset::load(
        &Source::Gmd {
            root: dataset::default_gmd_root(),
        },
        &Filter {
            splits: vec![Split::Validation],
            beat_type: None,
        },
        |_, _| {},
    )?;
    let patterns: Vec<_> = data.windows.iter().map(|w| w.pattern).collect();
    eprintln!(
        "threads: RAYON_NUM_THREADS={:?} CANDLE_NUM_THREADS={:?}",
        std::env::var("RAYON_NUM_THREADS").ok(),
        std::env::var("CANDLE_NUM_THREADS").ok()
    );

    if only("train") {
        println!("| preset | batch | median step (s) | examples/s |");
        println!("|---|---|---|---|");
        for (name, config) in [("small", Config::small()), ("groovae", Config::groovae())] {
            for batch in [64usize, 256] {
                let varmap = VarMap::new();
                let vae = Vae::new(&config, seeded_var_builder(&varmap, 1, &device))?;
                let mut adam = Adam::from_varmap(&varmap, AdamConfig::default())?;
                let x = patterns_to_tensor(&patterns[..batch], &device)?;
                let repeats = if quick { 3 } else { 7 };
                let mut times = Vec::new();
                for step in 0..repeats + 1 {
                    let eps = rng::step_noise(1, step as u64, (batch, config.latent), &device)?;
                    let start = Instant::now();
                    let fwd = vae.forward(&x, &eps)?;
                    let loss = vae.loss(&x, &fwd, config.beta)?;
                    let grads = loss.total.backward()?;
                    adam.step(&grads, 1e-3)?;
                    if step > 0 {
                        times.push(start.elapsed().as_secs_f64()); // step 0 warms up
                    }
                }
                let t = median(times);
                println!("| {name} | {batch} | {t:.3} | {:.1} |", batch as f64 / t);
            }
        }
    }

    if only("decode") {
        println!("\n| preset | decoder | batch-1 decode median (ms) |");
        println!("|---|---|---|");
        for (name, config) in [("small", Config::small()), ("groovae", Config::groovae())] {
            let varmap = VarMap::new();
            let vae = Vae::new(&config, seeded_var_builder(&varmap, 1, &device))?.detach();
            let z = Tensor::randn(0f32, 1.0, (1, config.latent), &device)?.to_dtype(DType::F32)?;
            let repeats = if quick { 20 } else { 100 };
            let mut times = Vec::new();
            for i in 0..repeats + 3 {
                let start = Instant::now();
                let p = vae.decode(
                    &z,
                    &DecodeOptions {
                        temperature: 1.0,
                        density: 0.0,
                        seed: i as u64,
                    },
                )?;
                std::hint::black_box(p);
                if i >= 3 {
                    times.push(start.elapsed().as_secs_f64() * 1e3);
                }
            }
            println!("| {name} | {:?} | {:.2} |", config.decoder, median(times));
        }
    }
    Ok(())
}
