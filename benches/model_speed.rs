//! Model speed, as a bench binary (one step takes seconds, too slow for criterion's sampling):
//! training throughput (examples/second over forward + backward + optimizer step) for the `small`
//! and `groovae` presets at batch 64 and 256 with the reference (per-step Candle ops) and the
//! fused LSTM kernels side by side in one run, and batch-1 decode latency of a 4-bar groove.
//! Reports the median of repeated runs.
//!
//! Run: `cargo bench --bench model_speed` (`-- --quick` for fewer repeats; `-- decode` or
//! `-- train` for one part). Threads: set `RAYON_NUM_THREADS` (gemm) and `CANDLE_NUM_THREADS`
//! (elementwise) before running; the defaults below follow candle-notes.md.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use drumvae::dataset::{self, Dataset, Filter, Source, Split};
use drumvae::groove::{BARS, FEATURES, STEPS};
use drumvae::model::decoder::DecodeOptions;
use drumvae::model::lstm::{LstmKernel, with_kernel};
use drumvae::model::{Config, Vae, init::seeded_var_builder, patterns_to_tensor};
use drumvae::training::{Adam, AdamConfig, rng};

/// The PyTorch 2.x CPU figures issue 4 measured on this machine (2 threads, same model and batch):
/// the upper end of each range, so that ratios against them are conservative.
const PYTORCH_EXAMPLES_PER_SECOND: [(&str, usize, f64); 4] = [
    ("groovae", 64, 148.0),
    ("groovae", 256, 170.0),
    ("small", 64, 330.0),
    ("small", 256, 304.0),
];

/// Matmul FLOPs of one training example (forward + backward = 3 x forward; elementwise work is
/// not counted): what the achieved GFLOP/s figure is measured against (a large f32 matmul reaches
/// ~225 GFLOP/s on this CPU's two threads).
fn training_flops_per_example(c: &Config) -> f64 {
    let (f, t, bars) = (FEATURES as f64, STEPS as f64, BARS as f64);
    let lstm_step = |input: f64, hidden: f64| 2.0 * (input + hidden) * 4.0 * hidden;
    let (he, hc, hd, z) = (
        c.encoder_hidden as f64,
        c.conductor_hidden as f64,
        c.decoder_hidden as f64,
        c.latent as f64,
    );
    let encoder = 2.0 * t * lstm_step(f, he) + 2.0 * 2.0 * (2.0 * he) * z;
    let conductor =
        bars * (lstm_step(z, hc) + (c.conductor_layers as f64 - 1.0) * lstm_step(hc, hc));
    let bar_decoder = t * (lstm_step(f, hd) + (c.decoder_layers as f64 - 1.0) * lstm_step(hd, hd))
        + bars * 2.0 * hc * 4.0 * hd;
    let inits = 2.0 * z * 2.0 * hc * c.conductor_layers as f64
        + bars * 2.0 * hc * 2.0 * hd * c.decoder_layers as f64;
    let output = t * 2.0 * hd * f;
    3.0 * (encoder + conductor + bar_decoder + inits + output)
}

/// One model and optimizer, stepped on the same batch.
struct TrainRun {
    config: Config,
    vae: Vae,
    adam: Adam,
}

impl TrainRun {
    fn new(config: &Config, device: &Device) -> anyhow::Result<TrainRun> {
        let varmap = VarMap::new();
        let vae = Vae::new(config, seeded_var_builder(&varmap, 1, device))?;
        let adam = Adam::from_varmap(&varmap, AdamConfig::default())?;
        Ok(TrainRun {
            config: config.clone(),
            vae,
            adam,
        })
    }

    /// One forward + backward + optimizer step; returns its wall time in seconds.
    fn step(&mut self, x: &Tensor, step: u64) -> anyhow::Result<f64> {
        let batch = x.dim(0)?;
        let eps = rng::step_noise(1, step, (batch, self.config.latent), x.device())?;
        let start = Instant::now();
        let fwd = self.vae.forward(x, &eps)?;
        let loss = self.vae.loss(x, &fwd, self.config.beta)?;
        let grads = loss.total.backward()?;
        self.adam.step(&grads, 1e-3)?;
        Ok(start.elapsed().as_secs_f64())
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only = |part: &str| {
        !args
            .iter()
            .any(|a| a == "train" || a == "decode" || a == "fused")
            || args
                .iter()
                .any(|a| a == part || (part == "train" && a == "fused"))
    };
    // SAFETY: first thing in main, before any other thread exists.
    unsafe { drumvae::model::device::configure_threads(None) };
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
        println!(
            "| preset | batch | reference ex/s | fused ex/s | fused / reference | PyTorch ex/s (issue 4) | fused / PyTorch | fused GFLOP/s |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for (name, config) in [("small", Config::small()), ("groovae", Config::groovae())] {
            for batch in [64usize, 256] {
                let x = patterns_to_tensor(&patterns[..batch], &device)?;
                let repeats = if quick { 3 } else { 7 };
                // Alternate the two kernels run by run so that both see the same machine state.
                let mut times = [Vec::new(), Vec::new()];
                let kernels = [LstmKernel::Reference, LstmKernel::Fused];
                // `-- fused` skips the reference runs (for profiling the fused path).
                let skip_reference = args.iter().any(|a| a == "fused");
                let mut runs: Vec<_> = kernels
                    .iter()
                    .map(|_| TrainRun::new(&config, &device))
                    .collect::<anyhow::Result<_>>()?;
                for step in 0..repeats + 1 {
                    for (k, kernel) in kernels.iter().enumerate() {
                        if skip_reference && *kernel == LstmKernel::Reference {
                            times[k].push(f64::NAN);
                            continue;
                        }
                        let t = with_kernel(*kernel, || runs[k].step(&x, step as u64))?;
                        if step > 0 {
                            times[k].push(t); // step 0 warms up
                        }
                    }
                }
                let [reference, fused] = times.map(median);
                let pytorch = PYTORCH_EXAMPLES_PER_SECOND
                    .iter()
                    .find(|(n, b, _)| *n == name && *b == batch)
                    .map(|p| p.2)
                    .unwrap_or(f64::NAN);
                let fused_rate = batch as f64 / fused;
                println!(
                    "| {name} | {batch} | {:.1} | {fused_rate:.1} | {:.2}x | {pytorch:.0} | {:.2}x | {:.0} |",
                    batch as f64 / reference,
                    reference / fused,
                    fused_rate / pytorch,
                    training_flops_per_example(&config) * fused_rate / 1e9,
                );
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
