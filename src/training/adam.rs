//! Adam with decoupled weight decay (AdamW, Loshchilov & Hutter, <https://arxiv.org/abs/1711.05101>)
//! and global gradient-norm clipping, whose state (moments and step count) can be saved and
//! restored exactly. It runs on the training CLI's thread.
//!
//! Why not `candle_nn::AdamW`: its moments are private (a run cannot be resumed exactly) and it
//! spends ~10 allocating elementwise ops per parameter tensor. Here, for f32 parameters on the CPU
//! the moments live in plain `Vec<f32>`s and one fused loop updates parameter and moments in place
//! (through Candle's in-place op API), allocating nothing. Other devices and dtypes take a
//! tensor-op path with the same arithmetic.
//!
//! The update follows PyTorch's `AdamW` (`eps` added to the bias-corrected `sqrt(v)`), not
//! TensorFlow's "epsilon hat" form that Magenta used; the two differ only when `sqrt(v)` is
//! near `eps`. Bias correction uses the optimizer's global step count, like TensorFlow's shared
//! beta powers (PyTorch keeps one per parameter; they agree when every parameter gets a gradient
//! every step). Clipping uses TensorFlow's `clip_by_global_norm`: gradients are scaled by
//! `max_norm / max(norm, max_norm)`.

use std::cell::RefCell;
use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{
    CpuStorage, DType, Device, InplaceOp2, Layout, Result, Storage, Tensor, Var, bail,
};
use candle_nn::VarMap;

/// Name prefix of the first moments in [`Adam::state_tensors`].
pub const FIRST_MOMENT_PREFIX: &str = "adam.m.";
/// Name prefix of the second moments in [`Adam::state_tensors`].
pub const SECOND_MOMENT_PREFIX: &str = "adam.v.";

/// Hyper-parameters other than the learning rate, which [`Adam::step`] takes each step from the
/// schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// Decay of the first moment (mean of gradients).
    pub beta1: f64,
    /// Decay of the second moment (mean of squared gradients).
    pub beta2: f64,
    /// Added to the bias-corrected `sqrt(v)` so tiny second moments do not blow the step up.
    pub eps: f64,
    /// Decoupled weight decay: each step multiplies parameters by `1 - lr * weight_decay`.
    pub weight_decay: f64,
    /// Global gradient-norm clipping threshold; `None` disables clipping.
    pub max_grad_norm: Option<f64>,
}

impl Default for AdamConfig {
    /// Magenta's MusicVAE settings: TensorFlow's Adam defaults, no weight decay, clip norm 1.
    fn default() -> Self {
        AdamConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            max_grad_norm: Some(1.0),
        }
    }
}

/// The optimizer: parameters sorted by name, their moments, and the number of steps taken.
pub struct Adam {
    /// Sorted by name, so that state names and iteration order never depend on hash order.
    params: Vec<Param>,
    config: AdamConfig,
    /// Steps applied so far (skipped non-finite steps are not counted).
    step: u64,
    /// Test hook: use the tensor-op path even where the fused CPU loop applies.
    #[cfg(test)]
    force_tensor_path: bool,
}

struct Param {
    name: String,
    var: Var,
    moments: Moments,
}

/// Where a parameter's moments live.
enum Moments {
    /// f32 parameter on the CPU: moments as plain vectors, updated by the fused loop.
    Host { m: Vec<f32>, v: Vec<f32> },
    /// Anything else: moments as tensors on the parameter's device, replaced each step.
    Tensors { m: Tensor, v: Tensor },
}

impl Moments {
    fn zeros(var: &Var) -> Result<Moments> {
        let t = var.as_tensor();
        if uses_host_path(t) {
            let n = t.elem_count();
            Ok(Moments::Host {
                m: vec![0.0; n],
                v: vec![0.0; n],
            })
        } else {
            Ok(Moments::Tensors {
                m: t.zeros_like()?,
                v: t.zeros_like()?,
            })
        }
    }
}

fn uses_host_path(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

/// Per-step constants shared by both update paths.
#[derive(Clone, Copy)]
struct Coefficients {
    beta1: f64,
    beta2: f64,
    /// Gradient scale from clipping (1 when not clipped).
    grad_scale: f64,
    /// `lr / (1 - beta1^t)`.
    step_size: f64,
    /// `1 / sqrt(1 - beta2^t)`.
    inv_sqrt_bias2: f64,
    eps: f64,
    /// `1 - lr * weight_decay`.
    decay: f64,
}

impl Adam {
    /// An optimizer over `vars` with zero moments. Names must be unique; they become the state
    /// tensor names (`adam.m.<name>`, `adam.v.<name>`).
    pub fn new(mut vars: Vec<(String, Var)>, config: AdamConfig) -> Result<Adam> {
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = vars.windows(2).find(|w| w[0].0 == w[1].0) {
            bail!("adam: parameter name `{}` appears twice", w[0].0);
        }
        let params = vars
            .into_iter()
            .map(|(name, var)| {
                let moments = Moments::zeros(&var)?;
                Ok(Param { name, var, moments })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Adam {
            params,
            config,
            step: 0,
            #[cfg(test)]
            force_tensor_path: false,
        })
    }

    /// An optimizer over every variable of `varmap`, by its VarMap name.
    pub fn from_varmap(varmap: &VarMap, config: AdamConfig) -> Result<Adam> {
        let vars = varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("adam: the VarMap's lock is poisoned".into()))?
            .iter()
            .map(|(name, var)| (name.clone(), var.clone()))
            .collect();
        Adam::new(vars, config)
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    /// Steps applied so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Parameter names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(|p| p.name.as_str())
    }

    /// Total number of scalar parameters.
    pub fn parameter_count(&self) -> usize {
        self.params.iter().map(|p| p.var.elem_count()).sum()
    }

    /// One update with learning rate `lr`. Returns the global gradient norm before clipping.
    ///
    /// Parameters absent from `grads` are skipped (their moments do not decay either). If the norm
    /// is not finite (a NaN or infinite gradient) nothing changes, not even the step count: the
    /// caller sees the norm and decides whether to stop.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<f64> {
        let present: Vec<(usize, Tensor)> = self
            .params
            .iter()
            .enumerate()
            .filter_map(|(i, p)| grads.get(p.var.as_tensor()).map(|g| (i, g.clone())))
            .collect();
        for (i, g) in &present {
            let p = &self.params[*i];
            if g.shape() != p.var.shape() {
                bail!(
                    "adam: gradient of `{}` has shape {:?}, the parameter {:?}",
                    p.name,
                    g.dims(),
                    p.var.dims()
                );
            }
        }

        let norm = global_norm(present.iter().map(|(_, g)| g))?;
        if !norm.is_finite() {
            return Ok(norm);
        }
        let grad_scale = match self.config.max_grad_norm {
            Some(max) if norm > max => max / norm,
            _ => 1.0,
        };
        let t = (self.step + 1) as f64;
        let c = Coefficients {
            beta1: self.config.beta1,
            beta2: self.config.beta2,
            grad_scale,
            step_size: lr / (1.0 - self.config.beta1.powf(t)),
            inv_sqrt_bias2: 1.0 / (1.0 - self.config.beta2.powf(t)).sqrt(),
            eps: self.config.eps,
            decay: 1.0 - lr * self.config.weight_decay,
        };
        #[cfg(test)]
        let force_tensor_path = self.force_tensor_path;
        #[cfg(not(test))]
        let force_tensor_path = false;

        for (i, g) in present {
            let p = &mut self.params[i];
            match &mut p.moments {
                Moments::Host { m, v } if !force_tensor_path => {
                    let g = if g.is_contiguous() {
                        g
                    } else {
                        g.contiguous()?
                    };
                    let kernel = HostKernel {
                        m: RefCell::new(m),
                        v: RefCell::new(v),
                        c,
                    };
                    p.var.as_tensor().inplace_op2(&g, &kernel)?;
                }
                moments => tensor_update(&p.var, moments, &g, c)?,
            }
        }
        self.step += 1;
        Ok(norm)
    }

    /// Copies of the moments, named `adam.m.<param>` and `adam.v.<param>`, in name order. Save them
    /// together with [`Adam::step_count`].
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(2 * self.params.len());
        for p in &self.params {
            let (m, v) = match &p.moments {
                Moments::Host { m, v } => (
                    Tensor::from_slice(m, p.var.shape(), &Device::Cpu)?,
                    Tensor::from_slice(v, p.var.shape(), &Device::Cpu)?,
                ),
                // Never mutated in place (each step makes new tensors), so sharing is safe.
                Moments::Tensors { m, v } => (m.clone(), v.clone()),
            };
            out.push((format!("{FIRST_MOMENT_PREFIX}{}", p.name), m));
            out.push((format!("{SECOND_MOMENT_PREFIX}{}", p.name), v));
        }
        Ok(out)
    }

    /// Restores moments saved by [`Adam::state_tensors`] and the step count. Every parameter must
    /// have both moments with its shape, and every `adam.` tensor must belong to a parameter;
    /// otherwise nothing is changed and the error names the culprit. Other names are ignored, so
    /// the whole tensor map of a checkpoint can be passed.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: u64) -> Result<()> {
        for name in tensors.keys() {
            let param = name
                .strip_prefix(FIRST_MOMENT_PREFIX)
                .or_else(|| name.strip_prefix(SECOND_MOMENT_PREFIX));
            if let Some(param) = param
                && self
                    .params
                    .binary_search_by(|p| p.name.as_str().cmp(param))
                    .is_err()
            {
                bail!("adam: saved state `{name}` belongs to no parameter of this model");
            }
        }
        let mut restored = Vec::with_capacity(self.params.len());
        for p in &self.params {
            let get = |prefix: &str| -> Result<Tensor> {
                let key = format!("{prefix}{}", p.name);
                let Some(t) = tensors.get(&key) else {
                    bail!("adam: saved state lacks `{key}`");
                };
                if t.shape() != p.var.shape() {
                    bail!(
                        "adam: `{key}` has shape {:?}, the parameter {:?}",
                        t.dims(),
                        p.var.dims()
                    );
                }
                t.to_dtype(p.var.dtype())?.to_device(p.var.device())
            };
            let (m, v) = (get(FIRST_MOMENT_PREFIX)?, get(SECOND_MOMENT_PREFIX)?);
            restored.push(match p.moments {
                Moments::Host { .. } => Moments::Host {
                    m: m.flatten_all()?.to_vec1::<f32>()?,
                    v: v.flatten_all()?.to_vec1::<f32>()?,
                },
                // Copies, so the caller's tensors never alias the optimizer's.
                Moments::Tensors { .. } => Moments::Tensors {
                    m: m.copy()?,
                    v: v.copy()?,
                },
            });
        }
        for (p, moments) in self.params.iter_mut().zip(restored) {
            p.moments = moments;
        }
        self.step = step;
        Ok(())
    }
}

/// `sqrt(sum of squares)` over all gradients, accumulated in f64.
fn global_norm<'a>(grads: impl Iterator<Item = &'a Tensor>) -> Result<f64> {
    let mut host = 0.0f64;
    let mut device: Option<Tensor> = None;
    for g in grads {
        let (storage, layout) = g.storage_and_layout();
        match (&*storage, layout.contiguous_offsets()) {
            (Storage::Cpu(CpuStorage::F32(data)), Some((start, end))) => {
                host += sum_of_squares(&data[start..end]);
            }
            _ => {
                drop(storage);
                let s = g.to_dtype(DType::F32)?.sqr()?.sum_all()?;
                device = Some(match device {
                    Some(acc) => (acc + s)?,
                    None => s,
                });
            }
        }
    }
    if let Some(d) = device {
        host += f64::from(d.to_scalar::<f32>()?);
    }
    Ok(host.sqrt())
}

/// Sum of squares in f64 over eight independent accumulators (a single running sum is one long
/// dependency chain, several times slower than the Adam update itself).
fn sum_of_squares(xs: &[f32]) -> f64 {
    let mut lanes = [0.0f64; 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += f64::from(x) * f64::from(x);
        }
    }
    lanes.iter().sum::<f64>()
        + rest
            .iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
}

/// The fused CPU update: one pass over parameter, gradient and both moments, in place.
struct HostKernel<'a> {
    m: RefCell<&'a mut Vec<f32>>,
    v: RefCell<&'a mut Vec<f32>>,
    c: Coefficients,
}

impl InplaceOp2 for HostKernel<'_> {
    fn name(&self) -> &'static str {
        "adam-host"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let (CpuStorage::F32(p), CpuStorage::F32(g)) = (s1, s2) else {
            bail!("adam-host: expected f32 parameter and gradient");
        };
        let (Some((p0, p1)), Some((g0, g1))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            bail!("adam-host: parameter and gradient must be contiguous");
        };
        let (p, g) = (&mut p[p0..p1], &g[g0..g1]);
        let mut m = self.m.borrow_mut();
        let mut v = self.v.borrow_mut();
        let c = self.c;
        let b1 = c.beta1 as f32;
        let b2 = c.beta2 as f32;
        let one_minus_b1 = (1.0 - c.beta1) as f32;
        let one_minus_b2 = (1.0 - c.beta2) as f32;
        let scale = c.grad_scale as f32;
        let step_size = c.step_size as f32;
        let inv_sqrt_bias2 = c.inv_sqrt_bias2 as f32;
        let eps = c.eps as f32;
        let decay = c.decay as f32;
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            let g = g * scale;
            *m = b1 * *m + one_minus_b1 * g;
            *v = b2 * *v + one_minus_b2 * g * g;
            *p = *p * decay - step_size * *m / (v.sqrt() * inv_sqrt_bias2 + eps);
        }
        Ok(())
    }
}

/// The same update with tensor ops, for GPU parameters and non-f32 dtypes. The gradient scale is
/// folded into the affine coefficients.
fn tensor_update(var: &Var, moments: &mut Moments, g: &Tensor, c: Coefficients) -> Result<()> {
    let (m, v) = match moments {
        Moments::Tensors { m, v } => (m.clone(), v.clone()),
        Moments::Host { m, v } => (
            Tensor::from_slice(m, var.shape(), var.device())?,
            Tensor::from_slice(v, var.shape(), var.device())?,
        ),
    };
    let s = c.grad_scale;
    let m = (m.affine(c.beta1, 0.0)? + g.affine((1.0 - c.beta1) * s, 0.0)?)?;
    let v = (v.affine(c.beta2, 0.0)? + g.sqr()?.affine((1.0 - c.beta2) * s * s, 0.0)?)?;
    let denom = v.sqrt()?.affine(c.inv_sqrt_bias2, c.eps)?;
    let update = (m.div(&denom)?).affine(c.step_size, 0.0)?;
    let p = var.as_tensor();
    let p = if c.decay == 1.0 {
        p.sub(&update)?
    } else {
        p.affine(c.decay, 0.0)?.sub(&update)?
    };
    var.set(&p)?;
    *moments = match moments {
        Moments::Tensors { .. } => Moments::Tensors { m, v },
        Moments::Host { .. } => Moments::Host {
            m: m.flatten_all()?.to_vec1()?,
            v: v.flatten_all()?.to_vec1()?,
        },
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::{Module, VarBuilder};

    fn vec_of(var: &Var) -> Vec<f32> {
        var.as_tensor().to_vec1::<f32>().unwrap()
    }

    /// Loss `sum(a * x^2) / 2`, whose gradient is `a * x`.
    fn quadratic_grads(x: &Var, a: &Tensor) -> GradStore {
        let loss = (a * x.as_tensor().sqr().unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
            .affine(0.5, 0.0)
            .unwrap();
        loss.backward().unwrap()
    }

    fn run_quadratic(config: AdamConfig, tensor_path: bool) -> Vec<Vec<f32>> {
        let x = Var::new(&[1.0f32, -2.0, 0.5], &Device::Cpu).unwrap();
        let a = Tensor::new(&[1.0f32, 3.0, 0.5], &Device::Cpu).unwrap();
        let mut adam = Adam::new(vec![("x".into(), x.clone())], config).unwrap();
        adam.force_tensor_path = tensor_path;
        (0..3)
            .map(|_| {
                adam.step(&quadratic_grads(&x, &a), 0.1).unwrap();
                vec_of(&x)
            })
            .collect()
    }

    fn assert_close(got: &[Vec<f32>], want: &[[f64; 3]], what: &str) {
        for (t, (g, w)) in got.iter().zip(want).enumerate() {
            for (i, (&g, &w)) in g.iter().zip(w).enumerate() {
                assert!(
                    (f64::from(g) - w).abs() < 2e-6,
                    "{what}: step {} element {i}: got {g}, reference {w}",
                    t + 1
                );
            }
        }
    }

    // Reference: Adam in plain Python floats (f64), the PyTorch AdamW formula, lr 0.1.
    const REFERENCE: [[f64; 3]; 3] = [
        [0.900000001, -1.9000000001666666, 0.4000000039999998],
        [0.8004122297123382, -1.800166485947237, 0.3011874278735871],
        [0.701586274504415, -1.7006233917912488, 0.2048712620977537],
    ];
    // Same with weight_decay 0.5.
    const REFERENCE_DECAY: [[f64; 3]; 3] = [
        [0.850000001, -1.8000000001666665, 0.3750000039999998],
        [0.7082484443656524, -1.6104122280035775, 0.25799250000224544],
        [0.574973932253246, -1.4310252434179958, 0.15050264327454915],
    ];

    #[test]
    fn adam_matches_a_hand_computed_reference_on_a_quadratic_for_three_steps() {
        let plain = AdamConfig {
            max_grad_norm: None,
            ..AdamConfig::default()
        };
        let decay = AdamConfig {
            weight_decay: 0.5,
            ..plain
        };
        for tensor_path in [false, true] {
            let path = if tensor_path {
                "tensor path"
            } else {
                "fused path"
            };
            assert_close(&run_quadratic(plain, tensor_path), &REFERENCE, path);
            assert_close(&run_quadratic(decay, tensor_path), &REFERENCE_DECAY, path);
        }
    }

    fn moments(adam: &Adam) -> HashMap<String, Vec<f32>> {
        adam.state_tensors()
            .unwrap()
            .into_iter()
            .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
            .collect()
    }

    #[test]
    fn clipping_scales_the_gradient_when_the_global_norm_exceeds_max_norm() {
        // Gradients [3, 0] and [4]: global norm 5. With max_norm 1 both are scaled by 0.2.
        for (max_norm, scale) in [(Some(1.0), 0.2f32), (Some(10.0), 1.0), (None, 1.0)] {
            let a = Var::new(&[1.0f32, 1.0], &Device::Cpu).unwrap();
            let b = Var::new(&[1.0f32], &Device::Cpu).unwrap();
            let config = AdamConfig {
                max_grad_norm: max_norm,
                ..AdamConfig::default()
            };
            let mut adam = Adam::new(
                vec![("b".into(), b.clone()), ("a".into(), a.clone())],
                config,
            )
            .unwrap();
            let ca = Tensor::new(&[3.0f32, 0.0], &Device::Cpu).unwrap();
            let cb = Tensor::new(&[4.0f32], &Device::Cpu).unwrap();
            let loss = ((a.as_tensor() * &ca).unwrap().sum_all().unwrap()
                + (b.as_tensor() * &cb).unwrap().sum_all().unwrap())
            .unwrap();
            let norm = adam.step(&loss.backward().unwrap(), 0.1).unwrap();
            assert!((norm - 5.0).abs() < 1e-9, "norm before clipping: {norm}");
            let m = moments(&adam);
            // m after one step = (1 - beta1) * scaled gradient.
            let expect_a = [0.1 * 3.0 * scale, 0.0];
            let expect_b = [0.1 * 4.0 * scale];
            for (got, want) in m["adam.m.a"]
                .iter()
                .zip(&expect_a)
                .chain(m["adam.m.b"].iter().zip(&expect_b))
            {
                assert!(
                    (got - want).abs() < 1e-7,
                    "max_norm {max_norm:?}: m {got}, want {want}"
                );
            }
            let v_b = m["adam.v.b"][0];
            let want_v_b = 0.001 * (4.0 * scale) * (4.0 * scale);
            assert!(
                (v_b - want_v_b).abs() < 1e-7,
                "max_norm {max_norm:?}: v {v_b}, want {want_v_b}"
            );
        }
    }

    #[test]
    fn parameters_without_gradients_are_skipped() {
        let used = Var::new(&[1.0f32], &Device::Cpu).unwrap();
        let unused = Var::new(&[2.0f32], &Device::Cpu).unwrap();
        let mut adam = Adam::new(
            vec![
                ("used".into(), used.clone()),
                ("unused".into(), unused.clone()),
            ],
            AdamConfig::default(),
        )
        .unwrap();
        let grads = used
            .as_tensor()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        adam.step(&grads, 0.1).unwrap();
        assert_ne!(vec_of(&used), [1.0]);
        assert_eq!(vec_of(&unused), [2.0]);
        assert_eq!(moments(&adam)["adam.m.unused"], [0.0]);
    }

    #[test]
    fn a_non_finite_gradient_norm_changes_nothing() {
        let x = Var::new(&[1.0f32, 2.0], &Device::Cpu).unwrap();
        let mut adam = Adam::new(vec![("x".into(), x.clone())], AdamConfig::default()).unwrap();
        let nan = Tensor::new(&[f32::NAN, 1.0], &Device::Cpu).unwrap();
        let grads = (x.as_tensor() * nan)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let norm = adam.step(&grads, 0.1).unwrap();
        assert!(norm.is_nan());
        assert_eq!(vec_of(&x), [1.0, 2.0]);
        assert_eq!(adam.step_count(), 0);
        assert_eq!(moments(&adam)["adam.v.x"], [0.0, 0.0]);
    }

    /// A 4 -> 3 linear model whose parameters live in `varmap`.
    fn linear_model(varmap: &VarMap) -> candle_nn::Linear {
        let vb = VarBuilder::from_varmap(varmap, DType::F32, &Device::Cpu);
        candle_nn::linear(4, 3, vb.pp("lin")).unwrap()
    }

    fn fixed_data() -> (Tensor, Tensor) {
        let x: Vec<f32> = (0..32).map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0).collect();
        let y: Vec<f32> = (0..24).map(|i| ((i * 5 % 7) as f32 - 3.0) / 2.0).collect();
        (
            Tensor::from_vec(x, (8, 4), &Device::Cpu).unwrap(),
            Tensor::from_vec(y, (8, 3), &Device::Cpu).unwrap(),
        )
    }

    fn train(model: &candle_nn::Linear, adam: &mut Adam, from: u64, to: u64) {
        let (x, y) = fixed_data();
        for step in from..to {
            let loss = candle_nn::loss::mse(&model.forward(&x).unwrap(), &y).unwrap();
            adam.step(&loss.backward().unwrap(), 0.05 / (1.0 + step as f64))
                .unwrap();
        }
    }

    fn bits(varmap: &VarMap) -> Vec<(String, Vec<u32>)> {
        let mut out: Vec<_> = varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let vals = v
                    .as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                (k.clone(), vals.iter().map(|x| x.to_bits()).collect())
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn saving_and_restoring_optimizer_state_then_continuing_is_bit_identical_to_not_stopping() {
        // Clipping on with a small threshold, and weight decay, so every code path matters.
        let config = AdamConfig {
            weight_decay: 0.01,
            max_grad_norm: Some(0.5),
            ..AdamConfig::default()
        };
        // candle_nn::linear initialises randomly: start both runs from the same weights.
        let init = VarMap::new();
        let _ = linear_model(&init);
        let init_weights: Vec<(String, Tensor)> = init
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().copy().unwrap()))
            .collect();
        let fresh = |weights: &[(String, Tensor)]| {
            let vm = VarMap::new();
            let model = linear_model(&vm);
            for (k, t) in weights {
                vm.data().lock().unwrap()[k].set(t).unwrap();
            }
            (vm, model)
        };

        let (straight, model) = fresh(&init_weights);
        let mut adam = Adam::from_varmap(&straight, config).unwrap();
        train(&model, &mut adam, 0, 8);

        let (first, model) = fresh(&init_weights);
        let mut adam = Adam::from_varmap(&first, config).unwrap();
        train(&model, &mut adam, 0, 3);
        // Through safetensors bytes, as a checkpoint would.
        let mut saved = adam.state_tensors().unwrap();
        saved.extend(
            first
                .data()
                .lock()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_tensor().clone())),
        );
        let bytes =
            safetensors::serialize(saved.iter().map(|(k, t)| (k.as_str(), t)), None).unwrap();
        let step = adam.step_count();
        drop((adam, model, first));

        let loaded = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap();
        let weights: Vec<_> = loaded
            .iter()
            .filter(|(k, _)| !k.starts_with("adam."))
            .map(|(k, t)| (k.clone(), t.clone()))
            .collect();
        let (resumed, model) = fresh(&weights);
        let mut adam = Adam::from_varmap(&resumed, config).unwrap();
        adam.load_state(&loaded, step).unwrap();
        train(&model, &mut adam, 3, 8);

        assert_eq!(
            bits(&resumed),
            bits(&straight),
            "resumed run diverged from the straight run"
        );
    }

    #[test]
    fn load_state_rejects_missing_mismatched_and_foreign_moments() {
        let x = Var::new(&[1.0f32, 2.0], &Device::Cpu).unwrap();
        let mut adam = Adam::new(vec![("x".into(), x)], AdamConfig::default()).unwrap();
        let good: HashMap<_, _> = adam.state_tensors().unwrap().into_iter().collect();
        assert!(adam.load_state(&good, 7).is_ok());
        assert_eq!(adam.step_count(), 7);

        let mut missing = good.clone();
        missing.remove("adam.v.x");
        let e = adam.load_state(&missing, 1).unwrap_err().to_string();
        assert!(e.contains("lacks `adam.v.x`"), "{e}");

        let mut wrong = good.clone();
        wrong.insert(
            "adam.m.x".into(),
            Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
        );
        let e = adam.load_state(&wrong, 1).unwrap_err().to_string();
        assert!(e.contains("shape"), "{e}");

        let mut foreign = good;
        foreign.insert(
            "adam.m.y".into(),
            Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap(),
        );
        let e = adam.load_state(&foreign, 1).unwrap_err().to_string();
        assert!(e.contains("adam.m.y"), "{e}");
        assert_eq!(adam.step_count(), 7, "a failed load must change nothing");
    }

    /// Not a timed assertion: prints the cost of one step over ~1M parameters, ours and
    /// candle-nn's AdamW, for the report. `cargo test --release --lib adam_step_timing -- --nocapture`.
    #[test]
    fn adam_step_timing_over_a_million_parameters() {
        use candle_nn::Optimizer;
        let shapes = [(1024usize, 512usize), (2048, 256), (512, 1)];
        let make = || -> Vec<(String, Var)> {
            shapes
                .iter()
                .enumerate()
                .map(|(i, &(r, c))| {
                    let t = Tensor::randn(0f32, 1.0, (r, c), &Device::Cpu).unwrap();
                    (format!("p{i}"), Var::from_tensor(&t).unwrap())
                })
                .collect()
        };
        let vars = make();
        let loss = vars
            .iter()
            .map(|(_, v)| v.as_tensor().sqr().unwrap().sum_all().unwrap())
            .reduce(|a, b| (a + b).unwrap())
            .unwrap();
        let grads = loss.backward().unwrap();
        let mut adam = Adam::new(vars.clone(), AdamConfig::default()).unwrap();
        let n = adam.parameter_count();
        let time = |f: &mut dyn FnMut()| {
            f(); // warm-up
            let reps = 20;
            let t0 = std::time::Instant::now();
            for _ in 0..reps {
                f();
            }
            t0.elapsed().as_secs_f64() * 1e3 / f64::from(reps)
        };
        let ours = time(&mut || {
            adam.step(&grads, 1e-3).unwrap();
        });
        let vars2 = make();
        let loss2 = vars2
            .iter()
            .map(|(_, v)| v.as_tensor().sqr().unwrap().sum_all().unwrap())
            .reduce(|a, b| (a + b).unwrap())
            .unwrap();
        let grads2 = loss2.backward().unwrap();
        let mut theirs = candle_nn::AdamW::new(
            vars2.into_iter().map(|(_, v)| v).collect(),
            candle_nn::ParamsAdamW::default(),
        )
        .unwrap();
        let candle = time(&mut || theirs.step(&grads2).unwrap());
        eprintln!(
            "adam step over {n} parameters: ours {ours:.2} ms, candle-nn AdamW {candle:.2} ms"
        );
    }
}
