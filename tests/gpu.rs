//! The CUDA path against the CPU: the embedded model decodes the same on the GPU as on the CPU
//! (Candle reference and the plugin's fast decoder), one training step on the GPU gives the CPU's
//! loss, gradients and update, `--device auto` picks the GPU, and the plugin's worker decodes on
//! it.
//!
//! Every test needs a CUDA build and a GPU. Without either it prints why it is skipped and passes,
//! so that CI and GPU-less machines run this file as a no-op (`cargo xtask check-cuda` still
//! compiles it with the `cuda` feature). `DRUMVAE_REQUIRE_GPU=1` turns a skip into a failure: the
//! GPU bundle's `run.sh` sets it, so a GPU machine that cannot open its GPU says so instead of
//! passing. Run: `cargo test --features cuda --test gpu -- --test-threads=1 --nocapture`.
//!
//! Tolerance: GPU and CPU sum in different orders (cuBLAS against gemm), so values agree to f32
//! rounding of sums of hundreds of products, not bit for bit: within [`TOLERANCE`] of the larger of
//! 1 and the CPU's value (relative to the tensor's largest value for gradients).

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use drumvae::Pattern;
use drumvae::generator::{Controls, Generator, Point, Slot};
use drumvae::groove::{FEATURES, STEPS, VOICES};
use drumvae::latent::seeded_z;
use drumvae::model::embedded::load_default;
use drumvae::model::lstm::{LstmKernel, with_kernel};
use drumvae::model::{
    Config, DecodeOptions, DeviceRequest, SampleTrace, Vae, patterns_to_tensor, seeded_var_builder,
    select_device,
};
use drumvae::training::{Adam, AdamConfig, rng};
use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[path = "support/relative_error.rs"]
mod relative_error;
use relative_error::relative_error;

const TOLERANCE: f32 = 1e-4;

/// CUDA GPU 0, or `None` after saying why this test is skipped (a failure instead under
/// `DRUMVAE_REQUIRE_GPU=1`).
fn gpu(test: &str) -> Option<Device> {
    let why = if cfg!(feature = "cuda") {
        match Device::new_cuda(0) {
            Ok(device) => return Some(device),
            Err(e) => format!("no CUDA GPU could be opened ({e})"),
        }
    } else {
        "built without the cuda feature (`cargo test --features cuda --test gpu`)".to_string()
    };
    assert!(
        std::env::var_os("DRUMVAE_REQUIRE_GPU").is_none(),
        "{test}: DRUMVAE_REQUIRE_GPU is set, but {why}"
    );
    eprintln!("{test}: skipped: {why}");
    None
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= TOLERANCE * b.abs().max(1.0)
}

/// `n` seeded latents as a `[n, latent]` tensor on `device`.
fn latents(n: usize, latent: usize, device: &Device) -> Tensor {
    let values: Vec<f32> = (0..n as u64)
        .flat_map(|i| seeded_z(40 + i, latent))
        .collect();
    Tensor::from_vec(values, (n, latent), device).unwrap()
}

/// Asserts that the GPU's autoregressive decode follows the CPU's: every prediction within the
/// tolerance and the same hits, step by step. A hit may differ only where the CPU's logit (plus
/// density) is within the tolerance of the threshold, a tie that f32 rounding may break either
/// way; that row is not compared further, since its later steps see a different input. Returns
/// the number of rows compared to the end.
fn assert_follows(gpu: &SampleTrace, cpu: &SampleTrace, opts: &DecodeOptions, what: &str) -> usize {
    assert_eq!(gpu.grids.len(), cpu.grids.len(), "{what}: rows");
    let mut whole_rows = 0;
    'rows: for row in 0..cpu.grids.len() {
        let (go, co) = (&gpu.outputs[row], &cpu.outputs[row]);
        let (gg, cg) = (&gpu.grids[row], &cpu.grids[row]);
        for step in 0..STEPS {
            let at = step * FEATURES;
            for f in at..at + FEATURES {
                assert!(
                    close(go[f], co[f]),
                    "{what}: row {row} step {step} output {}: GPU {} vs CPU {}",
                    f - at,
                    go[f],
                    co[f]
                );
            }
            for v in at..at + VOICES {
                if gg[v] != cg[v] {
                    let margin = (co[v] + opts.density).abs();
                    assert!(
                        margin <= TOLERANCE * co[v].abs().max(1.0) || opts.temperature > 0.0,
                        "{what}: row {row} step {step} voice {}: GPU hit {} vs CPU hit {} with \
                         logit {} (not a tie)",
                        v - at,
                        gg[v],
                        cg[v],
                        co[v]
                    );
                    eprintln!("{what}: row {row} parts at step {step} on a tie");
                    continue 'rows;
                }
            }
        }
        whole_rows += 1;
    }
    whole_rows
}

#[test]
fn the_embedded_model_decodes_on_the_gpu_as_on_the_cpu() {
    let Some(cuda) = gpu("decode") else { return };
    let (on_cpu, _) = load_default(&Device::Cpu).unwrap();
    let (on_gpu, _) = load_default(&cuda).unwrap();
    let latent = on_cpu.config.latent;
    let (cpu_decoder, gpu_decoder) = (on_cpu.decoder.detach(), on_gpu.decoder.detach());
    for opts in [
        DecodeOptions::default(),
        DecodeOptions {
            temperature: 0.0,
            density: 0.7,
            seed: 0,
        },
    ] {
        // Batch 1 (the worker) and 16 (the GPU's case), as the reference code runs them.
        for n in [1, 16] {
            let cpu = cpu_decoder
                .sample_traced(&latents(n, latent, &Device::Cpu), &opts)
                .unwrap();
            let gpu = gpu_decoder
                .sample_traced(&latents(n, latent, &cuda), &opts)
                .unwrap();
            let whole = assert_follows(&gpu, &cpu, &opts, &format!("batch {n}, {opts:?}"));
            assert!(whole * 4 >= 3 * n, "only {whole} of {n} rows without a tie");
        }
    }
    // What the plugin plays: `Vae::decode`, the fast decoder on the CPU, Candle on the GPU.
    let z = |device: &Device| latents(8, latent, device);
    let opts = DecodeOptions::default();
    let played_on_cpu = on_cpu.decode(&z(&Device::Cpu), &opts).unwrap();
    let played_on_gpu = on_gpu.decode(&z(&cuda), &opts).unwrap();
    let same = played_on_cpu
        .iter()
        .zip(&played_on_gpu)
        .filter(|(a, b)| same_pattern(a, b))
        .count();
    assert!(
        same >= 7,
        "only {same} of 8 patterns agree between the devices"
    );
}

/// The same hits, and velocities and offsets within the tolerance.
fn same_pattern(a: &Pattern, b: &Pattern) -> bool {
    a.to_flat()
        .iter()
        .zip(b.to_flat())
        .enumerate()
        .all(|(i, (&x, y))| {
            if i % FEATURES < VOICES {
                x == y
            } else {
                close(x, y)
            }
        })
}

/// One step of training (forward, loss, backward, Adam) from the same seeded weights, batch and
/// noise on `device`; returns the loss, the gradients and the weights after the step, by name.
fn one_step(device: &Device, x: &Tensor, eps: &Tensor) -> (f32, Vec<(String, Tensor, Tensor)>) {
    let config = Config::small();
    let varmap = VarMap::new();
    let vae = Vae::new(&config, seeded_var_builder(&varmap, 3, device)).unwrap();
    let mut adam = Adam::from_varmap(&varmap, AdamConfig::default()).unwrap();
    let (x, eps) = (x.to_device(device).unwrap(), eps.to_device(device).unwrap());
    let fwd = vae.forward(&x, &eps).unwrap();
    let loss = vae.loss(&x, &fwd, config.beta).unwrap();
    let grads = loss.total.backward().unwrap();
    let mut by_name: Vec<(String, Tensor)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
        .collect();
    by_name.sort_by(|a, b| a.0.cmp(&b.0));
    let gradients: Vec<Tensor> = by_name
        .iter()
        .map(|(name, t)| {
            grads
                .get(t)
                .unwrap_or_else(|| panic!("no gradient for {name}"))
                .to_device(&Device::Cpu)
                .unwrap()
        })
        .collect();
    adam.step(&grads, 1e-3).unwrap();
    let total = loss.total.to_scalar::<f32>().unwrap();
    let out = by_name
        .into_iter()
        .zip(gradients)
        .map(|((name, weight), g)| (name, g, weight.to_device(&Device::Cpu).unwrap()))
        .collect();
    (total, out)
}

#[test]
fn one_training_step_on_the_gpu_matches_the_cpu() {
    let Some(cuda) = gpu("training step") else {
        return;
    };
    // A batch of what the model plays, and the noise of step 0.
    let (model, _) = load_default(&Device::Cpu).unwrap();
    let batch = model
        .decode(
            &latents(32, model.config.latent, &Device::Cpu),
            &Default::default(),
        )
        .unwrap();
    let x = patterns_to_tensor(&batch, &Device::Cpu).unwrap();
    let eps = rng::step_noise(1, 0, (32, Config::small().latent), &Device::Cpu).unwrap();
    // The CPU's per-step reference kernel: the GPU runs the same Candle ops (the fused layer is a
    // CPU op; tests/fused_lstm.rs holds it to the reference).
    let (cpu_loss, cpu) = with_kernel(LstmKernel::Reference, || one_step(&Device::Cpu, &x, &eps));
    let (gpu_loss, gpu) = one_step(&cuda, &x, &eps);
    assert!(
        close(gpu_loss, cpu_loss),
        "loss: GPU {gpu_loss} vs CPU {cpu_loss}"
    );
    eprintln!("loss: GPU {gpu_loss} vs CPU {cpu_loss}");
    let lr = 1e-3f32;
    let mut worst_gradient = 0f32;
    for ((name, g_cpu, w_cpu), (_, g_gpu, w_gpu)) in cpu.iter().zip(&gpu) {
        let e = relative_error(g_gpu, g_cpu);
        worst_gradient = worst_gradient.max(e);
        assert!(e <= TOLERANCE, "gradient of {name}: relative error {e}");
        // Adam's first step moves every weight by about lr * sign(gradient): weights agree to
        // f32 rounding, except where a gradient so near 0 that the devices' rounding gives it
        // different signs (then they differ by at most 2 lr).
        let (a, b) = (
            w_gpu.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            w_cpu.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        let apart = a.iter().zip(&b).filter(|(x, y)| !close(**x, **y)).count();
        let worst = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            worst <= 2.0 * lr * 1.001,
            "{name}: a weight moved {worst} apart"
        );
        assert!(
            apart * 1000 <= b.len().max(1000),
            "{name}: {apart} of {} weights differ after the step",
            b.len()
        );
    }
    eprintln!("gradients: worst relative error {worst_gradient:e}");
}

#[test]
fn auto_picks_the_gpu() {
    let Some(_) = gpu("--device auto") else {
        return;
    };
    let (device, note) = select_device(DeviceRequest::Auto).unwrap();
    assert!(device.is_cuda(), "auto chose {device:?} ({note:?})");
    assert!(select_device(DeviceRequest::Cuda).unwrap().0.is_cuda());
}

/// The worker's controls: a fixed point, the embedded model.
struct Fixed(Mutex<Point>);

impl Controls for Fixed {
    fn point(&self) -> Point {
        self.0.lock().clone()
    }
    fn model_path(&self) -> Option<PathBuf> {
        None
    }
    fn set_slot(&self, index: usize, slot: Slot) {
        self.0.lock().slots.0[index] = slot;
    }
}

#[test]
fn the_plugin_worker_decodes_on_the_gpu() {
    let Some(_) = gpu("worker") else { return };
    let controls = Arc::new(Fixed(Mutex::new(Point {
        x: 0.3,
        y: 0.6,
        ..Point::default()
    })));
    // What the plugin asks for in a cuda build (src/plugin.rs, activate).
    let dyn_controls: Arc<dyn Controls> = controls.clone();
    let (generator, mut patterns) =
        Generator::spawn(dyn_controls, DeviceRequest::Auto, None).expect("the worker starts");
    assert!(generator.wait_until_settled(controls.as_ref(), Duration::from_secs(60)));
    let status = generator.status();
    assert_eq!(status.device, "cuda", "messages: {:?}", status.messages);
    let published = *patterns.take_new().expect("a pattern was published");
    let on_cpu = drumvae::generator::Engine::embedded(&Device::Cpu)
        .unwrap()
        .decode(&controls.point())
        .unwrap()
        .0;
    assert!(
        same_pattern(&published, &on_cpu),
        "the GPU worker plays another groove than the CPU:\n{}\n{}",
        published.to_text_grid(false),
        on_cpu.to_text_grid(false)
    );
    eprintln!(
        "worker on {}: decode took {:?}",
        status.device, status.last_decode
    );
}
