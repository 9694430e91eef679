//! Mixed precision (bf16 operands, f32 accumulation) computes what the f32 path computes, within
//! what bf16 rounding explains: forward outputs, final states and every gradient of an LSTM stack
//! on random inputs and of the whole VAE on real GMD windows, and a 1,000-step training run on the
//! GMD whose validation loss stays within 1 % of the f32 run's at every check.
//!
//! The tolerance, and why: bf16 keeps 8 significant bits, so each operand is rounded by at most
//! 2⁻⁹ ≈ 0.2 % of itself; a product sums k such terms in f32, and their rounding errors (of random
//! sign) add like noise, about 2⁻⁹ of the result's scale. The recurrence feeds each step's error
//! into the next (damped by the forget gate) and backpropagation through time adds a few more
//! products, so a few times 2⁻⁹ is expected: errors are measured as the largest absolute
//! difference over the tensor's largest magnitude, and held to [`TOLERANCE`] = 2⁻⁷ ≈ 0.8 %
//! (measured: at most 2.6e-3, on the encoder's recurrent weight gradient), while each test also
//! checks that bf16 really ran (the difference is not zero).

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use drumvae::dataset::{self, Split};
use drumvae::model::cpu::precision::{Precision, cpu_has_avx512_bf16, with_precision};
use drumvae::model::lstm::{LstmState, StackedLstm};
use drumvae::model::{Config, Vae, patterns_to_tensor, seeded_var_builder};
use drumvae::training::{Adam, AdamConfig, rng};

#[path = "support/relative_error.rs"]
mod relative_error;
#[path = "support/uniform.rs"]
mod uniform;
use relative_error::relative_error;
use uniform::uniform;

const CPU: Device = Device::Cpu;
/// See the file's doc: four times bf16's unit roundoff (2⁻⁹).
const TOLERANCE: f32 = 1.0 / 128.0;

/// Asserts every named tensor agrees within [`TOLERANCE`], and that bf16 changed at least one.
fn assert_within_bf16_tolerance(bf16: &[(String, Tensor)], f32: &[(String, Tensor)]) {
    assert_eq!(bf16.len(), f32.len());
    let mut largest = 0f32;
    for ((name, a), (_, b)) in bf16.iter().zip(f32) {
        let e = relative_error(a, b);
        eprintln!("{name}: {e:.2e}");
        assert!(
            e <= TOLERANCE,
            "{name}: relative error {e:e} above {TOLERANCE:e}"
        );
        largest = largest.max(e);
    }
    assert!(
        largest > 0.0,
        "bf16 gave bit-identical results: it did not run"
    );
}

/// Outputs, final states and every gradient of a conditioned two-layer stack at the `small`
/// decoder's width, run in `precision`.
fn stack_results(precision: Precision) -> Vec<(String, Tensor)> {
    let (input, cond, hidden, layers, batch, steps) = (9, 64, 256, 2, 24, 16);
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, 7, &CPU);
    let stack = StackedLstm::new(input, cond, hidden, layers, false, &vb).unwrap();
    let x = uniform(&[batch, steps, input], 1);
    let c = Var::from_tensor(&uniform(&[batch, cond], 2)).unwrap();
    let h0 = Var::from_tensor(&(uniform(&[batch, hidden], 3) * 0.5).unwrap()).unwrap();
    let c0 = Var::from_tensor(&uniform(&[batch, hidden], 4)).unwrap();
    let states: Vec<LstmState> = (0..layers)
        .map(|_| LstmState {
            h: h0.as_tensor().clone(),
            c: c0.as_tensor().clone(),
        })
        .collect();
    let prepared = stack.prepare().unwrap();
    let (out, last) = with_precision(precision, || {
        prepared
            .condition(Some(c.as_tensor()))
            .unwrap()
            .seq(&x, &states)
            .unwrap()
    });
    let loss = (out.mul(&uniform(out.dims(), 5)).unwrap().sum_all().unwrap()
        + last[1]
            .c
            .mul(&uniform(&[batch, hidden], 6))
            .unwrap()
            .sum_all()
            .unwrap())
    .unwrap();
    let grads = with_precision(precision, || loss.backward().unwrap());
    let mut results = vec![
        ("output".to_string(), out.clone()),
        ("final h1".to_string(), last[1].h.clone()),
        ("final c1".to_string(), last[1].c.clone()),
    ];
    let mut named: Vec<(String, Var)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named.extend([("cond".into(), c), ("h0".into(), h0), ("c0".into(), c0)]);
    for (name, var) in named {
        let g = grads
            .get(var.as_tensor())
            .expect("a gradient for every input");
        results.push((format!("d/d {name}"), g.clone()));
    }
    results
}

#[test]
fn bf16_stack_outputs_states_and_every_gradient_are_within_bf16_tolerance_of_f32() {
    assert_within_bf16_tolerance(
        &stack_results(Precision::Bf16),
        &stack_results(Precision::F32),
    );
}

fn gmd_batch(split: Split, n: usize) -> Tensor {
    let patterns =
        dataset::gmd_split_patterns(split).expect("the Groove MIDI Dataset (set DRUMVAE_GMD)");
    patterns_to_tensor(&patterns[..n], &CPU).unwrap()
}

/// Loss and every parameter gradient of the `small` VAE on real GMD windows, in `precision`.
fn vae_gradients(precision: Precision, x: &Tensor) -> Vec<(String, Tensor)> {
    let cfg = Config::small();
    let varmap = VarMap::new();
    let vae = Vae::new(&cfg, seeded_var_builder(&varmap, 3, &CPU)).unwrap();
    let eps = rng::step_noise(1, 0, (x.dim(0).unwrap(), cfg.latent), &CPU).unwrap();
    let (loss, grads) = with_precision(precision, || {
        let fwd = vae.forward(x, &eps).unwrap();
        let loss = vae.loss(x, &fwd, 0.2).unwrap().total;
        let grads = loss.backward().unwrap();
        (loss, grads)
    });
    let mut named: Vec<(String, Tensor)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), grads.get(v.as_tensor()).unwrap().clone()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named.insert(0, ("loss".into(), loss));
    named
}

#[test]
fn bf16_vae_loss_and_every_parameter_gradient_on_gmd_windows_are_within_bf16_tolerance() {
    let x = gmd_batch(Split::Validation, 16);
    assert_within_bf16_tolerance(
        &vae_gradients(Precision::Bf16, &x),
        &vae_gradients(Precision::F32, &x),
    );
}

/// A reduced model (the `small` preset's shape at a quarter of its width, so that 1,000 steps fit
/// in a test) trained for 1,000 Adam steps on GMD training windows in `precision`; returns the
/// validation loss (f32, fixed noise) every 100 steps.
fn validation_curve(precision: Precision, train: &[Tensor], val: &Tensor) -> Vec<f32> {
    let cfg = Config {
        encoder_hidden: 64,
        latent: 32,
        conductor_hidden: 64,
        decoder_hidden: 64,
        ..Config::small()
    };
    let varmap = VarMap::new();
    let vae = Vae::new(&cfg, seeded_var_builder(&varmap, 5, &CPU)).unwrap();
    let mut adam = Adam::from_varmap(&varmap, AdamConfig::default()).unwrap();
    let val_eps = rng::step_noise(9, 0, (val.dim(0).unwrap(), cfg.latent), &CPU).unwrap();
    let mut curve = Vec::new();
    for step in 0..1000u64 {
        let x = &train[step as usize % train.len()];
        let eps = rng::step_noise(2, step, (x.dim(0).unwrap(), cfg.latent), &CPU).unwrap();
        with_precision(precision, || {
            let fwd = vae.forward(x, &eps).unwrap();
            let loss = vae.loss(x, &fwd, 0.2).unwrap().total;
            adam.step(&loss.backward().unwrap(), 1e-3).unwrap();
        });
        if (step + 1) % 100 == 0 {
            let fwd = vae.forward(val, &val_eps).unwrap();
            let loss = vae.loss(val, &fwd, 0.2).unwrap().total;
            curve.push(loss.to_scalar::<f32>().unwrap());
        }
    }
    curve
}

#[test]
fn a_thousand_bf16_training_steps_on_the_gmd_keep_validation_loss_within_one_percent_of_f32() {
    if !cpu_has_avx512_bf16() {
        eprintln!("no AVX-512 BF16 here: the bf16 products run the slow portable loop; skipping");
        return;
    }
    let windows = dataset::gmd_split_patterns(Split::Train).expect("the GMD (set DRUMVAE_GMD)");
    let train: Vec<Tensor> = windows
        .chunks(64)
        .take(250)
        .map(|b| patterns_to_tensor(b, &CPU).unwrap())
        .collect();
    let val = gmd_batch(Split::Validation, 512);
    let bf16 = validation_curve(Precision::Bf16, &train, &val);
    let f32 = validation_curve(Precision::F32, &train, &val);
    eprintln!("validation loss every 100 steps\n bf16 {bf16:?}\n f32  {f32:?}");
    assert!(
        f32.last() < f32.first(),
        "the model should learn over 1,000 steps: {f32:?}"
    );
    for (i, (b, f)) in bf16.iter().zip(&f32).enumerate() {
        let rel = ((b - f) / f).abs();
        assert!(
            rel <= 0.01,
            "step {}: validation loss bf16 {b} vs f32 {f} ({:.2} %)",
            (i + 1) * 100,
            rel * 100.0
        );
    }
}
