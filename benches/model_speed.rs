//! Model speed, as a bench binary (one step takes seconds, too slow for criterion's sampling):
//! training throughput (examples/second over forward + backward + optimizer step) for the `small`
//! and `groovae` presets at batch 64 and 256 with the reference (per-step Candle ops) and the
//! fused LSTM kernels side by side in one run, and batch-1 decode latency of a 4-bar groove: the
//! Candle reference against the plain-Rust fast decoder, side by side, with the fast decoder's
//! weight-streaming rate. Reports the median of repeated runs.
//!
//! The training table's PyTorch column is measured in the same run: after our two kernels, each
//! row runs `benches/pytorch_peer.py` (the same model and training step in PyTorch, `nn.LSTM`
//! layers) as a subprocess with the same preset, batch, matrix-product thread count, warm-up and
//! repeats, and shows the median it reports. Without torch (`python3 -c "import torch"` fails)
//! the column is left empty (`-`). The peer inherits the environment: OpenMP's default
//! spin-waiting makes it collapse on a machine busy with other work (see the script's notes on
//! `OMP_WAIT_POLICY`), so compare on a quiet machine.
//!
//! Each row also shows the achieved GFLOP/s against this machine's f32 and bf16 arithmetic
//! ceilings, measured at the start of the run (register-only FMA and `vdpbf16ps` loops).
//!
//! Also: the fused layer's per-step recurrent products, general gemm against weights packed once.
//!
//! On a GPU (`--features cuda`, `-- gpu`, see `model_speed/gpu.rs`): training throughput of
//! Candle's CUDA backend beside the PyTorch peer on the same GPU, and decode latency on the GPU
//! beside the CPU's fast decoder.
//!
//! Run: `cargo bench --bench model_speed` (`-- --quick` for fewer repeats; `-- decode`,
//! `-- train` or `-- recurrent` for one part; `-- gpu` for the GPU tables alone). Threads: set `RAYON_NUM_THREADS` (gemm) and `CANDLE_NUM_THREADS`
//! (elementwise) before running; the defaults below follow candle-notes.md.

// A crate root resolves modules beside itself (benches/), hence the path.
#[path = "model_speed/gpu.rs"]
mod gpu;

use std::hint::black_box;
use std::process::Command;
use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use drumvae::dataset::{self, Split};
use drumvae::groove::{BARS, FEATURES, STEPS};
use drumvae::latent::seeded_z;
use drumvae::model::cpu::fast_decoder::{FastDecoder, Kernel};
use drumvae::model::cpu::packed_matmul::PackedRhs;
use drumvae::model::cpu::precision::{Precision, cpu_has_avx512_bf16, with_precision};
use drumvae::model::cpu::product;
use drumvae::model::decoder::DecodeOptions;
use drumvae::model::lstm::{LstmKernel, with_kernel};
use drumvae::model::{
    Config, Vae, init::seeded_var_builder, load_bytes, patterns_to_tensor, to_bytes,
};
use drumvae::training::{Adam, AdamConfig, rng};

/// Matmul FLOPs of one training example (forward + backward = 3 x forward; elementwise work is
/// not counted): the achieved GFLOP/s figure, set against the f32 and bf16 ceilings that
/// [`ceilings`] measures in the same run.
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

/// Matmul FLOPs per training example (counted as [`training_flops_per_example`] counts them) that
/// the PyTorch peer does on top of ours: `nn.LSTM` takes no per-sequence input, so the peer
/// concatenates z to every conductor step and c_u to every bar-decoder step, and projects them at
/// every step where our layers project them once per sequence.
fn peer_extra_flops(c: &Config) -> f64 {
    let (steps, bars) = (STEPS as f64, BARS as f64);
    let (hc, hd, z) = (
        c.conductor_hidden as f64,
        c.decoder_hidden as f64,
        c.latent as f64,
    );
    let conductor = (bars - 1.0) * 2.0 * z * 4.0 * hc;
    let bar_decoder = (steps - bars) * 2.0 * hc * 4.0 * hd;
    3.0 * (conductor + bar_decoder)
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
        // A GPU runs the ops asynchronously: the step is timed from an idle device until the
        // device has finished its work (no-ops on the CPU).
        x.device().synchronize()?;
        let start = Instant::now();
        let fwd = self.vae.forward(x, &eps)?;
        let loss = self.vae.loss(x, &fwd, self.config.beta)?;
        let grads = loss.total.backward()?;
        self.adam.step(&grads, 1e-3)?;
        x.device().synchronize()?;
        Ok(start.elapsed().as_secs_f64())
    }
}

/// The peer script: `benches/pytorch_peer.py` of the checkout this was built in, or
/// `DRUMVAE_PYTORCH_PEER` (the GPU bundle runs the bench far from any checkout).
fn pytorch_peer_script() -> String {
    std::env::var("DRUMVAE_PYTORCH_PEER")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/benches/pytorch_peer.py").into())
}

/// The version of torch `python3` imports, or why there is none.
fn torch_version() -> Result<String, String> {
    let not_installed = || "torch is not installed (pip install torch)".to_string();
    let out = Command::new("python3")
        .args(["-c", "import torch; print(torch.__version__)"])
        .output()
        .map_err(|_| not_installed())?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && !version.is_empty() {
        Ok(version)
    } else {
        Err(not_installed())
    }
}

/// The PyTorch column's label for [`torch_version`]'s answer; says why the column stays empty when
/// there is no torch.
fn torch_label(torch: &Result<String, String>) -> String {
    match torch {
        Ok(version) => format!("torch {}", major_minor(version)),
        Err(why) => {
            println!("PyTorch peer: {why}; column left empty");
            "no torch".to_string()
        }
    }
}

/// `2.5` of `2.5.1+cpu`.
fn major_minor(version: &str) -> String {
    version.split('.').take(2).collect::<Vec<_>>().join(".")
}

/// Runs `benches/pytorch_peer.py` on `device` (`cpu` or `cuda`) and returns the median
/// examples/second it measured.
fn pytorch_peer(
    preset: &str,
    batch: usize,
    threads: usize,
    warmup: usize,
    repeats: usize,
    device: &str,
) -> anyhow::Result<f64> {
    let out = Command::new("python3")
        .arg(pytorch_peer_script())
        .args(["--preset", preset, "--device", device])
        .args(["--batch", &batch.to_string()])
        .args(["--threads", &threads.to_string()])
        .args(["--warmup", &warmup.to_string()])
        .args(["--repeats", &repeats.to_string()])
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        anyhow::bail!(
            "{}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            stdout.trim()
        );
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .ok_or_else(|| anyhow::anyhow!("the peer printed nothing"))?;
    let report: serde_json::Value = serde_json::from_str(line)?;
    let asked = (
        report["preset"].as_str(),
        report["batch"].as_u64(),
        report["threads"].as_u64(),
    );
    if asked != (Some(preset), Some(batch as u64), Some(threads as u64)) {
        anyhow::bail!("the peer reports another run than asked for: {line}");
    }
    match report["examples_per_second_median"].as_f64() {
        Some(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => anyhow::bail!("no examples_per_second_median in the peer's report: {line}"),
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `-- gpu` runs the GPU tables alone (they are never run by default: most machines have no
    // GPU, and a CPU-only build has no CUDA).
    if args.iter().any(|a| a == "gpu") {
        // SAFETY: first thing in main, before any other thread exists.
        unsafe { drumvae::model::device::configure_threads(None) };
        return gpu::run(quick);
    }
    let only = |part: &str| {
        !args
            .iter()
            .any(|a| a == "train" || a == "decode" || a == "fused" || a == "recurrent")
            || args
                .iter()
                .any(|a| a == part || (part == "train" && a == "fused"))
    };
    // SAFETY: first thing in main, before any other thread exists.
    unsafe { drumvae::model::device::configure_threads(None) };
    let device = Device::Cpu;
    eprintln!(
        "threads: RAYON_NUM_THREADS={:?} CANDLE_NUM_THREADS={:?} (PyTorch peer: OMP_WAIT_POLICY={:?})",
        std::env::var("RAYON_NUM_THREADS").ok(),
        std::env::var("CANDLE_NUM_THREADS").ok(),
        std::env::var("OMP_WAIT_POLICY").ok()
    );

    if only("train") {
        let patterns = dataset::gmd_split_patterns(Split::Validation)?;
        // The matrix-product threads our kernels use (what gemm is given); the peer gets as many.
        let threads = candle_core::utils::get_num_threads();
        let torch = torch_version();
        let torch_label = torch_label(&torch);
        // The arithmetic ceilings of this machine, measured now on as many threads.
        let ceiling = ceilings(threads);
        let bf16 = ceiling.bf16.is_some();
        println!(
            "ceilings on {threads} threads, measured now: f32 FMA {:.0} GFLOP/s, bf16 {} {}",
            ceiling.f32,
            ceiling.bf16_engine,
            ceiling
                .bf16
                .map_or("- (no AVX-512 BF16)".to_string(), |g| format!(
                    "{g:.0} GFLOP/s"
                ))
        );
        println!(
            "| preset | batch | reference ex/s | fused f32 ex/s | fused bf16 ex/s | PyTorch ex/s (measured, {torch_label}) | f32 / PyTorch | bf16 / PyTorch | f32 GFLOP/s (of f32 ceiling) | bf16 GFLOP/s (of bf16 ceiling) |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for (name, config) in [("small", Config::small()), ("groovae", Config::groovae())] {
            for batch in [64usize, 256] {
                let x = patterns_to_tensor(&patterns[..batch], &device)?;
                let repeats = if quick { 3 } else { 7 };
                // Alternate the variants run by run so that all see the same machine state.
                let variants = [
                    (LstmKernel::Reference, Precision::F32),
                    (LstmKernel::Fused, Precision::F32),
                    (LstmKernel::Fused, Precision::Bf16),
                ];
                let mut times = [Vec::new(), Vec::new(), Vec::new()];
                // `-- fused` skips the reference runs (for profiling the fused paths).
                let skip_reference = args.iter().any(|a| a == "fused");
                let skip = |kernel: LstmKernel, precision: Precision| {
                    (skip_reference && kernel == LstmKernel::Reference)
                        || (precision == Precision::Bf16 && !bf16)
                };
                let mut runs: Vec<_> = variants
                    .iter()
                    .map(|_| TrainRun::new(&config, &device))
                    .collect::<anyhow::Result<_>>()?;
                for step in 0..repeats + 1 {
                    for (k, &(kernel, precision)) in variants.iter().enumerate() {
                        if skip(kernel, precision) {
                            times[k].push(f64::NAN);
                            continue;
                        }
                        let t = with_precision(precision, || {
                            with_kernel(kernel, || runs[k].step(&x, step as u64))
                        })?;
                        if step > 0 {
                            times[k].push(t); // step 0 warms up
                        }
                    }
                }
                let [reference, fused, fused_bf16] = times.map(median);
                // The peer right after ours, row by row, so that both see the same machine state
                // (not with `-- fused`, which profiles our fused paths alone).
                let pytorch = match &torch {
                    Ok(_) if skip_reference => None,
                    Ok(_) => match pytorch_peer(name, batch, threads, 1, repeats, "cpu") {
                        Ok(rate) => Some(rate),
                        Err(e) => {
                            eprintln!("PyTorch peer failed for {name} at batch {batch}: {e:#}");
                            None
                        }
                    },
                    Err(_) => None,
                };
                let rate = |t: f64| batch as f64 / t;
                let ratio = |t: f64| match pytorch {
                    Some(p) if t.is_finite() => format!("{:.2}x", rate(t) / p),
                    _ => "-".to_string(),
                };
                let gflops = |t: f64, ceiling: Option<f64>| {
                    let g = training_flops_per_example(&config) * rate(t) / 1e9;
                    match ceiling {
                        Some(c) if t.is_finite() => format!("{g:.0} ({:.0}%)", 100.0 * g / c),
                        _ => "-".to_string(),
                    }
                };
                println!(
                    "| {name} | {batch} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} | {} |",
                    rate(reference),
                    rate(fused),
                    rate(fused_bf16),
                    pytorch.map_or("-".to_string(), |p| format!("{p:.0}")),
                    ratio(fused),
                    ratio(fused_bf16),
                    gflops(fused, Some(ceiling.f32)),
                    gflops(fused_bf16, ceiling.bf16),
                );
            }
        }
        if torch.is_ok() {
            println!(
                "(PyTorch: benches/pytorch_peer.py on the CPU, {threads} threads. nn.LSTM has no \
                 per-sequence input, so it projects z and c_u at every step: {:.0}% (small) and \
                 {:.0}% (groovae) more matmul FLOPs per example than ours.)",
                100.0 * peer_extra_flops(&Config::small())
                    / training_flops_per_example(&Config::small()),
                100.0 * peer_extra_flops(&Config::groovae())
                    / training_flops_per_example(&Config::groovae()),
            );
        }
    }

    if only("decode") {
        decode(quick)?;
    }
    if only("recurrent") {
        recurrent(quick)?;
    }
    Ok(())
}

/// The per-step recurrent products of the fused LSTM layer, general gemm (as Candle calls it,
/// both operands packed on every call) against the weights packed once ([`PackedRhs`]), side by
/// side: `h [B, H] · W_hhᵀ` (forward) and `dA [B, 4H] · W_hh` (backward) for the encoder
/// (H = 512 for groovae, 256 for small) and the decoders (H = 256), batch 64 and 256.
fn recurrent(quick: bool) -> anyhow::Result<()> {
    let repeats = if quick { 20 } else { 100 };
    println!(
        "\n| product | m x n x k | gemm (µs) | packed (µs) | speed-up | gemm GFLOP/s | packed GFLOP/s |"
    );
    println!("|---|---|---|---|---|---|---|");
    for hidden in [512usize, 256] {
        for batch in [64usize, 256] {
            for (what, n, k) in [
                ("h · W_hhᵀ", 4 * hidden, hidden),
                ("dA · W_hh", hidden, 4 * hidden),
            ] {
                let w: Vec<f32> = (0..4 * hidden * hidden)
                    .map(|i| ((i % 97) as f32 - 48.0) * 1e-3)
                    .collect();
                let lhs: Vec<f32> = (0..batch * k)
                    .map(|i| ((i % 89) as f32 - 44.0) * 1e-2)
                    .collect();
                let mut dst = vec![0f32; batch * n];
                // The weights as each product reads them: W_hh [4H, H] row-major.
                let (rs, cs) = if n == 4 * hidden {
                    (1, hidden)
                } else {
                    (hidden, 1)
                };
                let packed = PackedRhs::new(&w, (k, n), (rs, cs));
                // Alternate the two, call by call, so that both see the same machine state.
                let (mut gemm_times, mut packed_times) = (Vec::new(), Vec::new());
                for i in 0..repeats + 3 {
                    let t0 = Instant::now();
                    product::matmul_f32(
                        &mut dst,
                        n,
                        true,
                        (batch, n, k),
                        &lhs,
                        (k, 1),
                        &w,
                        (rs, cs),
                    );
                    let t1 = Instant::now();
                    packed.matmul(&mut dst, n, true, batch, &lhs, k);
                    let t2 = Instant::now();
                    black_box(&dst);
                    if i >= 3 {
                        gemm_times.push((t1 - t0).as_secs_f64() * 1e6);
                        packed_times.push((t2 - t1).as_secs_f64() * 1e6);
                    }
                }
                let (gemm_us, packed_us) = (median(gemm_times), median(packed_times));
                let flops = 2.0 * (batch * n * k) as f64;
                println!(
                    "| {what} (H {hidden}) | {batch} x {n} x {k} | {gemm_us:.0} | {packed_us:.0} | {:.2}x | {:.0} | {:.0} |",
                    gemm_us / packed_us,
                    flops / gemm_us / 1e3,
                    flops / packed_us / 1e3,
                );
            }
        }
    }
    Ok(())
}

/// Median milliseconds of `f` over `repeats` runs after 3 warm-up runs; `f` gets the run index.
fn time_ms(repeats: usize, mut f: impl FnMut(u64) -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let mut times = Vec::with_capacity(repeats);
    for i in 0..repeats + 3 {
        let start = Instant::now();
        f(i as u64)?;
        if i >= 3 {
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(median(times))
}

/// Batch-1 decode of one 4-bar groove, temperature 1 (so the hit draws run too), each preset's
/// model loaded from bytes as the plugin loads its model. Columns:
/// - reference: `Vae::decode_reference` (Candle, as `Vae::decode` was before the fast decoder);
/// - fast: `FastDecoder::sample` with the detected kernel (AVX2 + FMA here);
/// - speed-up: reference / fast;
/// - portable: the portable kernel (what CPUs without AVX2 run);
/// - `Vae::decode`: the fast decoder through the public API (tensor in, `Pattern`s out, cached
///   decoder);
/// - MB/decode, GB/s and GFLOP/s: per row the fast decoder streams every matrix once per use (per
///   bar-decoder step for groovae: `4H x (27 + H)` + `4H x 2H` + `32 x H` floats (27 output rows
///   padded to 32) = 3.3 MB and 821k multiply-adds; plus the conductor's 4 steps and the per-bar
///   projections), counted by `FastDecoder::cost_per_row`; FLOPs = 2 x multiply-adds. Zero input
///   columns are counted although skipped, so these are rates of equivalent dense work.
fn decode(quick: bool) -> anyhow::Result<()> {
    let device = Device::Cpu;
    let repeats = if quick { 20 } else { 100 };
    println!(
        "\n| preset | reference (ms) | fast (ms) | speed-up | portable (ms) | Vae::decode (ms) | \
         MB/decode | GB/s | GFLOP/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for name in Config::PRESETS {
        let config = Config::preset(name).expect("a preset");
        let varmap = VarMap::new();
        Vae::new(&config, seeded_var_builder(&varmap, 1, &device))?;
        let bytes = to_bytes(&varmap, &config, Default::default())?;
        let (vae, _) = load_bytes(&bytes, &device)?;
        let z_values = seeded_z(3, config.latent);
        let z = Tensor::from_vec(z_values.clone(), (1, config.latent), &device)?;
        let opts = |seed| DecodeOptions {
            temperature: 1.0,
            density: 0.0,
            seed,
        };
        let fast = vae.fast_decoder()?;
        let portable = FastDecoder::new(&vae.decoder)?.with_kernel(Kernel::Portable)?;
        let reference = time_ms(repeats, |i| {
            black_box(vae.decode_reference(&z, &opts(i))?);
            Ok(())
        })?;
        let time_fast = |d: &FastDecoder| {
            time_ms(repeats, |i| {
                black_box(d.sample(&z_values, &opts(i))?);
                Ok(())
            })
        };
        let fast_ms = time_fast(&fast)?;
        let portable_ms = time_fast(&portable)?;
        let api_ms = time_ms(repeats, |i| {
            black_box(vae.decode(&z, &opts(i))?);
            Ok(())
        })?;
        let cost = fast.cost_per_row();
        let seconds = fast_ms / 1e3;
        println!(
            "| {name} | {reference:.2} | {fast_ms:.2} | {:.1}x | {portable_ms:.2} | {api_ms:.2} | \
             {:.1} | {:.0} | {:.0} |",
            reference / fast_ms,
            cost.weight_bytes as f64 / 1e6,
            cost.weight_bytes as f64 / seconds / 1e9,
            2.0 * cost.multiply_adds as f64 / seconds / 1e9,
        );
    }
    println!("(fast kernel: {:?})", Kernel::detect());
    Ok(())
}

/// What this machine's cores can do at most, in GFLOP/s over `threads` threads.
struct Ceilings {
    /// Independent f32 fused multiply-adds, register-only.
    f32: f64,
    /// bf16 products on the engine our bf16 path uses here (AMX `tdpbf16ps` on tiles, else
    /// AVX-512 `vdpbf16ps`), register-only; None without either.
    bf16: Option<f64>,
    /// Which instruction `bf16` measured.
    bf16_engine: &'static str,
}

/// Measures [`Ceilings`] now: each thread runs a register-only loop of independent
/// multiply-adds (12 accumulators, more than the instructions' latency x throughput), the median
/// of five runs.
fn ceilings(threads: usize) -> Ceilings {
    #[cfg(target_arch = "x86_64")]
    {
        let run = |flops_per_iter: f64, body: fn(u64) -> f32| {
            let iters = 20_000_000u64;
            let rates: Vec<f64> = (0..5)
                .map(|_| {
                    let start = Instant::now();
                    std::thread::scope(|s| {
                        for _ in 0..threads {
                            s.spawn(|| black_box(body(black_box(iters))));
                        }
                    });
                    threads as f64 * iters as f64 * flops_per_iter / start.elapsed().as_secs_f64()
                })
                .collect();
            median(rates) / 1e9
        };
        let avx512 = is_x86_feature_detected!("avx512f");
        // 12 accumulators x 16 lanes x 2 FLOPs (AVX-512) or 12 x 8 x 2 (AVX2).
        let f32 = if avx512 {
            run(12.0 * 32.0, |n| unsafe { ceiling_loops::fma512(n) })
        } else {
            run(12.0 * 16.0, |n| unsafe { ceiling_loops::fma256(n) })
        };
        let (bf16, bf16_engine) = if drumvae::model::cpu::amx::available() {
            // 4 tile products of 16 x 16 x 32 multiply-adds, 2 FLOPs each, per iteration; the
            // loop runs an eighth of the iterations (each one is ~64 cycles, not ~1).
            (
                Some(run(4.0 * 16384.0 / 8.0, |n| unsafe {
                    ceiling_loops::amx(n / 8)
                })),
                "AMX tdpbf16ps",
            )
        } else if cpu_has_avx512_bf16() {
            // 12 accumulators x 16 lanes x 2 pairs x 2 FLOPs.
            (
                Some(run(12.0 * 64.0, |n| unsafe { ceiling_loops::dpbf16(n) })),
                "vdpbf16ps",
            )
        } else {
            (None, "-")
        };
        Ceilings {
            f32,
            bf16,
            bf16_engine,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = threads;
        Ceilings {
            f32: f64::NAN,
            bf16: None,
            bf16_engine: "-",
        }
    }
}

/// The register-only loops [`ceilings`] times.
#[cfg(target_arch = "x86_64")]
mod ceiling_loops {
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX-512F must be available.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma512(iters: u64) -> f32 {
        let (a, b) = (_mm512_set1_ps(0.999), _mm512_set1_ps(1e-3));
        let mut acc = [_mm512_setzero_ps(); 12];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm512_fmadd_ps(*x, a, b);
            }
        }
        acc.iter().map(|x| _mm512_reduce_add_ps(*x)).sum()
    }

    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma256(iters: u64) -> f32 {
        let (a, b) = (_mm256_set1_ps(0.999), _mm256_set1_ps(1e-3));
        let mut acc = [_mm256_setzero_ps(); 12];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm256_fmadd_ps(*x, a, b);
            }
        }
        let mut out = [0f32; 8];
        let sum = acc
            .iter()
            .fold(_mm256_setzero_ps(), |s, x| _mm256_add_ps(s, *x));
        // SAFETY: `out` holds 8 floats.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), sum) };
        out.iter().sum()
    }

    /// Four independent tile products per iteration, operands in tiles.
    ///
    /// # Safety
    /// AMX must be available and permitted (`drumvae::model::cpu::amx::available`).
    pub unsafe fn amx(iters: u64) -> f32 {
        // SAFETY: AMX available (caller); tiles configured first and released last; the loads
        // read 16 rows of 64 bytes of `ones`, the store writes 16 x 16 floats of `out`.
        unsafe {
            let tiles = drumvae::model::cpu::amx::Tiles::configure();
            let ones = vec![0x3f80_3f80u32; 16 * 16];
            let mut out = [0f32; 256];
            std::arch::asm!(
                "tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3",
                "tileloadd tmm4, [{a} + {s}*1]", "tileloadd tmm5, [{a} + {s}*1]",
                "tileloadd tmm6, [{a} + {s}*1]", "tileloadd tmm7, [{a} + {s}*1]",
                a = in(reg) ones.as_ptr(), s = in(reg) 64usize, options(nostack, readonly)
            );
            for _ in 0..iters {
                std::arch::asm!(
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    options(nostack, nomem)
                );
            }
            std::arch::asm!(
                "tilestored [{o} + {s}*1], tmm0",
                o = in(reg) out.as_mut_ptr(), s = in(reg) 64usize, options(nostack)
            );
            drop(tiles);
            out[0]
        }
    }

    /// # Safety
    /// AVX-512F and AVX-512 BF16 must be available.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn dpbf16(iters: u64) -> f32 {
        let a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3), _mm512_set1_ps(1e-3));
        let b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.5), _mm512_set1_ps(0.5));
        let mut acc = [_mm512_setzero_ps(); 12];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm512_dpbf16_ps(*x, a, b);
            }
        }
        acc.iter().map(|x| _mm512_reduce_add_ps(*x)).sum()
    }
}
