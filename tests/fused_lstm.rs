//! The fused LSTM layer (one Candle op per layer with a hand-written backward) computes what the
//! reference per-step tensor path computes: forward outputs, final states and every gradient agree
//! to 1e-5 relative error on random inputs, for single layers, stacks with a conditioning input,
//! the whole VAE's loss, and over a short training run.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use drumvae::dataset::{self, Split};
use drumvae::model::lstm::{LstmKernel, LstmState, StackedLstm, with_kernel};
use drumvae::model::{Config, Vae, patterns_to_tensor, seeded_var_builder};
use drumvae::training::{Adam, AdamConfig, rng};

#[path = "support/relative_error.rs"]
mod relative_error;
#[path = "support/uniform.rs"]
mod uniform;
use relative_error::relative_error;
use uniform::uniform;

const CPU: Device = Device::Cpu;
const TOLERANCE: f32 = 1e-5;

fn assert_close(what: &str, fast: &Tensor, reference: &Tensor) {
    let e = relative_error(fast, reference);
    assert!(
        e <= TOLERANCE,
        "{what}: relative error {e:e} above {TOLERANCE:e}"
    );
}

struct Case {
    input: usize,
    cond: usize,
    hidden: usize,
    layers: usize,
    batch: usize,
    steps: usize,
}

/// Outputs and gradients of one stacked LSTM run under `kernel`, all from the same seeds.
fn run_stack(case: &Case, kernel: LstmKernel) -> Vec<(String, Tensor)> {
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, 7, &CPU);
    let stack =
        StackedLstm::new(case.input, case.cond, case.hidden, case.layers, false, &vb).unwrap();
    let (b, t, h) = (case.batch, case.steps, case.hidden);
    let x = uniform(&[b, t, case.input], 1);
    let cond = Var::from_tensor(&uniform(&[b, case.cond.max(1)], 2)).unwrap();
    let init: Vec<(Var, Var)> = (0..case.layers)
        .map(|k| {
            (
                Var::from_tensor(&(uniform(&[b, h], 10 + k as u64) * 0.5).unwrap()).unwrap(),
                Var::from_tensor(&uniform(&[b, h], 20 + k as u64)).unwrap(),
            )
        })
        .collect();
    let states: Vec<LstmState> = init
        .iter()
        .map(|(h0, c0)| LstmState {
            h: h0.as_tensor().clone(),
            c: c0.as_tensor().clone(),
        })
        .collect();
    let prepared = stack.prepare().unwrap();
    let cond_arg = (case.cond > 0).then(|| cond.as_tensor().clone());
    let (out, last) = with_kernel(kernel, || {
        prepared
            .condition(cond_arg.as_ref())
            .unwrap()
            .seq(&x, &states)
            .unwrap()
    });
    // A loss that weighs every output and both parts of every final state differently.
    let mut loss = out.mul(&uniform(out.dims(), 3)).unwrap().sum_all().unwrap();
    for (k, s) in last.iter().enumerate() {
        loss = (loss
            + s.h
                .mul(&uniform(&[b, h], 30 + k as u64))
                .unwrap()
                .sum_all()
                .unwrap()
            + s.c
                .mul(&uniform(&[b, h], 40 + k as u64))
                .unwrap()
                .sum_all()
                .unwrap())
        .unwrap();
    }
    let grads = loss.backward().unwrap();
    let mut results = vec![("output".to_string(), out.clone())];
    for (k, s) in last.iter().enumerate() {
        results.push((format!("final h{k}"), s.h.clone()));
        results.push((format!("final c{k}"), s.c.clone()));
    }
    let mut named: Vec<(String, Var)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    if case.cond > 0 {
        named.push(("cond".into(), cond));
    }
    for (k, (h0, c0)) in init.into_iter().enumerate() {
        named.push((format!("h0 layer {k}"), h0));
        named.push((format!("c0 layer {k}"), c0));
    }
    for (name, var) in named {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        results.push((format!("d/d {name}"), g.clone()));
    }
    results
}

fn assert_stack_agrees(case: Case) {
    let fast = run_stack(&case, LstmKernel::Fused);
    let reference = run_stack(&case, LstmKernel::Reference);
    assert_eq!(fast.len(), reference.len());
    for ((name, f), (_, r)) in fast.iter().zip(&reference) {
        assert_close(name, f, r);
    }
}

#[test]
fn single_layer_outputs_states_and_gradients_match_the_reference() {
    assert_stack_agrees(Case {
        input: 5,
        cond: 0,
        hidden: 8,
        layers: 1,
        batch: 3,
        steps: 7,
    });
}

#[test]
fn conditioned_two_layer_stack_matches_the_reference_at_decoder_size() {
    // The bar decoder's shape: 27 inputs, a conditioning input, 2 layers, 16 steps.
    assert_stack_agrees(Case {
        input: 27,
        cond: 32,
        hidden: 64,
        layers: 2,
        batch: 8,
        steps: 16,
    });
}

#[test]
fn a_batch_big_enough_for_the_threaded_gate_math_matches_the_reference() {
    // 64 x 128 cells per step: the fused layer splits the gate math over threads from 8192.
    assert_stack_agrees(Case {
        input: 27,
        cond: 0,
        hidden: 128,
        layers: 1,
        batch: 64,
        steps: 5,
    });
}

#[test]
fn a_one_step_sequence_matches_the_reference() {
    assert_stack_agrees(Case {
        input: 4,
        cond: 2,
        hidden: 4,
        layers: 2,
        batch: 1,
        steps: 1,
    });
}

fn small_model() -> Config {
    Config {
        encoder_hidden: 48,
        latent: 16,
        conductor_hidden: 32,
        decoder_hidden: 40,
        ..Config::small()
    }
}

fn gmd_batch(n: usize) -> Tensor {
    let patterns = dataset::gmd_split_patterns(Split::Validation)
        .expect("the Groove MIDI Dataset (set DRUMVAE_GMD)");
    patterns_to_tensor(&patterns[..n], &CPU).unwrap()
}

/// Loss and every parameter gradient of the whole VAE on real GMD windows.
fn vae_gradients(kernel: LstmKernel, x: &Tensor) -> (f32, Vec<(String, Tensor)>) {
    let cfg = small_model();
    let varmap = VarMap::new();
    let vae = Vae::new(&cfg, seeded_var_builder(&varmap, 3, &CPU)).unwrap();
    let eps = rng::step_noise(1, 0, (x.dim(0).unwrap(), cfg.latent), &CPU).unwrap();
    let (loss, grads) = with_kernel(kernel, || {
        let fwd = vae.forward(x, &eps).unwrap();
        let loss = vae.loss(x, &fwd, 0.2).unwrap().total;
        let grads = loss.backward().unwrap();
        (loss.to_scalar::<f32>().unwrap(), grads)
    });
    let mut named: Vec<(String, Tensor)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), grads.get(v.as_tensor()).unwrap().clone()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    (loss, named)
}

#[test]
fn vae_loss_and_every_parameter_gradient_match_the_reference() {
    let x = gmd_batch(6);
    let (fast_loss, fast) = vae_gradients(LstmKernel::Fused, &x);
    let (ref_loss, reference) = vae_gradients(LstmKernel::Reference, &x);
    assert!(
        ((fast_loss - ref_loss) / ref_loss).abs() <= TOLERANCE,
        "loss {fast_loss} vs {ref_loss}"
    );
    assert_eq!(fast.len(), reference.len());
    for ((name, f), (_, r)) in fast.iter().zip(&reference) {
        assert_close(&format!("d loss / d {name}"), f, r);
    }
}

/// The training loss of `steps` Adam steps from the same initialisation and batches.
fn training_curve(kernel: LstmKernel, x: &Tensor, steps: u64) -> Vec<f32> {
    let cfg = small_model();
    let varmap = VarMap::new();
    let vae = Vae::new(&cfg, seeded_var_builder(&varmap, 5, &CPU)).unwrap();
    let mut adam = Adam::from_varmap(&varmap, AdamConfig::default()).unwrap();
    with_kernel(kernel, || {
        (0..steps)
            .map(|step| {
                let eps = rng::step_noise(2, step, (x.dim(0).unwrap(), cfg.latent), &CPU).unwrap();
                let fwd = vae.forward(x, &eps).unwrap();
                let loss = vae.loss(x, &fwd, 0.2).unwrap().total;
                adam.step(&loss.backward().unwrap(), 3e-3).unwrap();
                loss.to_scalar::<f32>().unwrap()
            })
            .collect()
    })
}

#[test]
fn training_curves_match_the_reference_step_for_step() {
    let x = gmd_batch(8);
    let fast = training_curve(LstmKernel::Fused, &x, 12);
    let reference = training_curve(LstmKernel::Reference, &x, 12);
    assert!(
        fast.last() < fast.first(),
        "the loss should fall over 12 steps on one batch: {fast:?}"
    );
    for (step, (f, r)) in fast.iter().zip(&reference).enumerate() {
        // Rounding differences grow through Adam's updates; 1e-4 after 12 steps is still far below
        // any difference in what the model learns.
        assert!(
            ((f - r) / r).abs() <= 1e-4,
            "step {step}: fused {f} vs reference {r}\n{fast:?}\n{reference:?}"
        );
    }
}

#[test]
fn wrong_shapes_are_refused_with_an_error() {
    use drumvae::model::cpu::fused_lstm::lstm_layer;
    let zeros = |shape: &[usize]| Tensor::zeros(shape, DType::F32, &CPU).unwrap();
    let (gx, s) = (zeros(&[3, 2, 8]), zeros(&[2, 2]));
    assert!(lstm_layer(&gx, &zeros(&[8, 2]), &s, &s, &zeros(&[8])).is_ok());
    assert!(lstm_layer(&gx, &zeros(&[8, 2]), &s, &s, &zeros(&[2, 8])).is_ok());
    assert!(lstm_layer(&gx, &zeros(&[8, 3]), &s, &s, &zeros(&[8])).is_err());
    assert!(lstm_layer(&gx, &zeros(&[8, 2]), &zeros(&[3, 2]), &s, &zeros(&[8])).is_err());
    assert!(lstm_layer(&gx, &zeros(&[8, 2]), &s, &s, &zeros(&[7])).is_err());
    assert!(lstm_layer(&zeros(&[0, 2, 8]), &zeros(&[8, 2]), &s, &s, &zeros(&[8])).is_err());
}
