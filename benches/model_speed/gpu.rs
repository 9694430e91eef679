//! `model_speed -- gpu`: the GPU tables, on CUDA GPU 0 (a `--features cuda` build).
//!
//! - Training throughput, examples/second over forward + backward + Adam step, for `small` and
//!   `groovae` at batch 64, 256 and 512: Candle's CUDA backend (our model as it trains on a GPU
//!   today, per-step Candle ops; the fused LSTM layer is a CPU op) beside the PyTorch peer
//!   (`pytorch_peer.py --device cuda`: `nn.LSTM`, cuDNN) on the same GPU, row by row. The batch
//!   is random hits at the peer's density (the numbers do not change the work), so no dataset is
//!   needed on the GPU machine.
//! - Decode latency of the embedded model (the plugin's) and of a `groovae`-sized model at batch 1
//!   (what the plugin's worker decodes) and 64: `Vae::decode` on the GPU (Candle, as the worker
//!   decodes in a cuda build with a GPU) beside `Vae::decode` on the CPU (the fast decoder).
//!
//! Each figure is the median of repeated runs after warm-up (the first CUDA run also compiles the
//! kernels' PTX for the GPU). Step times are taken between device synchronisations.

use std::hint::black_box;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use drumvae::groove::{FEATURES, STEPS, VOICES};
use drumvae::latent::seeded_z;
use drumvae::model::decoder::DecodeOptions;
use drumvae::model::embedded::load_default;
use drumvae::model::{Config, Vae, init::seeded_var_builder, load_bytes, to_bytes};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{TrainRun, median, pytorch_peer, time_ms, torch_label, torch_version};

pub fn run(quick: bool) -> anyhow::Result<()> {
    let cuda = Device::new_cuda(0).map_err(|e| {
        anyhow::anyhow!(
            "-- gpu needs a CUDA build and a GPU ({e}); build with `cargo bench --features cuda \
             --bench model_speed -- gpu`, or run the GPU bundle (`cargo xtask gpu-bundle`)"
        )
    })?;
    training(&cuda, quick)?;
    decoding(&cuda, quick)
}

/// `[batch, 64, 27]` on `device`: hits with probability 0.15, velocities in 0..1 and offsets in
/// -0.5..0.5 on the hits, as the peer's `random_batch` draws them.
fn random_batch(batch: usize, device: &Device) -> anyhow::Result<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut x = vec![0f32; batch * STEPS * FEATURES];
    for cell in x.chunks_mut(FEATURES) {
        for v in 0..VOICES {
            if rng.random::<f32>() < 0.15 {
                cell[v] = 1.0;
                cell[VOICES + v] = rng.random::<f32>();
                cell[2 * VOICES + v] = rng.random::<f32>() - 0.5;
            }
        }
    }
    Ok(Tensor::from_vec(x, (batch, STEPS, FEATURES), device)?)
}

fn training(cuda: &Device, quick: bool) -> anyhow::Result<()> {
    let repeats = if quick { 3 } else { 7 };
    let warmup = 2;
    let threads = candle_core::utils::get_num_threads();
    let torch = torch_version();
    let torch_label = torch_label(&torch);
    println!(
        "| preset | batch | Candle CUDA ex/s | Candle ms/step | PyTorch CUDA ex/s (cuDNN, {torch_label}) | PyTorch ms/step | Candle / PyTorch |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, config) in [("small", Config::small()), ("groovae", Config::groovae())] {
        for batch in [64usize, 256, 512] {
            let x = random_batch(batch, cuda)?;
            let mut run = TrainRun::new(&config, cuda)?;
            let mut times = Vec::new();
            for step in 0..warmup + repeats {
                let t = run.step(&x, step as u64)?;
                if step >= warmup {
                    times.push(t);
                }
            }
            drop(run);
            let ours = batch as f64 / median(times);
            let peer = match &torch {
                Ok(_) => match pytorch_peer(name, batch, threads, warmup, repeats, "cuda") {
                    Ok(rate) => Some(rate),
                    Err(e) => {
                        eprintln!("PyTorch peer failed for {name} at batch {batch}: {e:#}");
                        None
                    }
                },
                Err(_) => None,
            };
            let ms = |rate: f64| 1e3 * batch as f64 / rate;
            println!(
                "| {name} | {batch} | {ours:.0} | {:.1} | {} | {} | {} |",
                ms(ours),
                peer.map_or("-".into(), |p| format!("{p:.0}")),
                peer.map_or("-".into(), |p| format!("{:.1}", ms(p))),
                peer.map_or("-".into(), |p| format!("{:.2}x", ours / p)),
            );
        }
    }
    println!(
        "(Candle: the per-step reference LSTM on CUDA, f32. PyTorch: benches/pytorch_peer.py \
         --device cuda, nn.LSTM on cuDNN, f32, same GPU; it does 8-17 % more matmul FLOPs per \
         example, see the CPU table's note.)"
    );
    Ok(())
}

fn decoding(cuda: &Device, quick: bool) -> anyhow::Result<()> {
    let repeats = if quick { 5 } else { 20 };
    println!(
        "\n| model | batch | GPU, Candle (ms) | CPU, fast decoder (ms) | CPU / GPU | GPU ms per groove |"
    );
    println!("|---|---|---|---|---|---|");
    // The plugin's model, and a groovae-sized one (random weights: the work is the same).
    let groovae = {
        let config = Config::groovae();
        let varmap = VarMap::new();
        Vae::new(&config, seeded_var_builder(&varmap, 1, &Device::Cpu))?;
        to_bytes(&varmap, &config, Default::default())?
    };
    for name in ["embedded", "groovae"] {
        let load = |device: &Device| -> anyhow::Result<Vae> {
            Ok(if name == "embedded" {
                load_default(device)?.0
            } else {
                load_bytes(&groovae, device)?.0
            })
        };
        let (on_gpu, on_cpu) = (load(cuda)?, load(&Device::Cpu)?);
        let latent = on_cpu.config.latent;
        for batch in [1usize, 64] {
            let z: Vec<f32> = (0..batch as u64)
                .flat_map(|i| seeded_z(i + 1, latent))
                .collect();
            let z_gpu = Tensor::from_vec(z.clone(), (batch, latent), cuda)?;
            let z_cpu = Tensor::from_vec(z, (batch, latent), &Device::Cpu)?;
            let opts = |seed| DecodeOptions {
                temperature: 1.0,
                density: 0.0,
                seed,
            };
            // The patterns come back to the host, so each decode ends with the GPU idle.
            let gpu_ms = time_ms(repeats, |i| {
                black_box(on_gpu.decode(&z_gpu, &opts(i))?);
                Ok(())
            })?;
            let cpu_ms = time_ms(repeats, |i| {
                black_box(on_cpu.decode(&z_cpu, &opts(i))?);
                Ok(())
            })?;
            println!(
                "| {name} | {batch} | {gpu_ms:.2} | {cpu_ms:.2} | {:.2}x | {:.3} |",
                cpu_ms / gpu_ms,
                gpu_ms / batch as f64
            );
        }
    }
    println!("(CPU / GPU above 1: the GPU is faster.)");
    Ok(())
}
