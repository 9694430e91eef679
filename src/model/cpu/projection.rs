//! The input projection of a whole sequence, `x [M, I] · w [I, N]` (all steps' inputs against a
//! layer's input weights), in the calling thread's precision.
//!
//! Why an op of its own: in f32 this is Candle's matmul, whose backward Candle's autograd derives.
//! In bf16 the forward product and both backward products (`dx = g · wᵀ`, `dw = xᵀ · g`) must run
//! on the bf16 kernel, and Candle has no bf16-operand, f32-accumulate matmul on the CPU: converting
//! tensors to bf16 would also round the accumulation. So the bf16 path is a custom op with its own
//! backward; the f32 path stays Candle's.

use candle_core::{CpuStorage, CustomOp2, Device, Layout, Result, Shape, Storage, Tensor};

use super::precision::{Precision, current_precision};
use super::product;

/// `x [M, I] · w [I, N]`, differentiable in both. `w` may be any 2-D strided view (the layers pass
/// a transposed slice of their `weight_ih`).
pub fn project(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    match (current_precision(), x.device()) {
        (Precision::Bf16, Device::Cpu) => x.contiguous()?.apply_op2(w, Bf16Projection),
        _ => x.matmul(w),
    }
}

/// The bf16 product as a Candle op.
struct Bf16Projection;

/// A 2-D f32 CPU tensor's data from its first element, with its row and column strides.
fn strided_2d<'a>(s: &'a CpuStorage, l: &Layout) -> Result<(&'a [f32], (usize, usize))> {
    let CpuStorage::F32(data) = s else {
        candle_core::bail!("the bf16 projection takes f32 tensors");
    };
    let [rs, cs] = l.stride() else {
        candle_core::bail!("the bf16 projection takes 2-D tensors, got {:?}", l.dims());
    };
    Ok((&data[l.start_offset()..], (*rs, *cs)))
}

/// The same for a tensor read in the backward pass through its storage guard.
fn guarded_2d<'a>(storage: &'a Storage, l: &Layout) -> Result<(&'a [f32], (usize, usize))> {
    match storage {
        Storage::Cpu(s) => strided_2d(s, l),
        _ => candle_core::bail!("the bf16 projection runs on the CPU only"),
    }
}

impl CustomOp2 for Bf16Projection {
    fn name(&self) -> &'static str {
        "bf16-projection"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let ((m, i), (i2, n)) = (l1.shape().dims2()?, l2.shape().dims2()?);
        if i != i2 {
            candle_core::bail!(
                "bf16 projection: x {:?} and w {:?} differ",
                l1.dims(),
                l2.dims()
            );
        }
        let (x, x_strides) = strided_2d(s1, l1)?;
        let (w, w_strides) = strided_2d(s2, l2)?;
        let mut out = vec![0f32; m * n];
        product::matmul(
            Precision::Bf16,
            &mut out,
            n,
            false,
            (m, n, i),
            x,
            x_strides,
            w,
            w_strides,
        );
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let ((m, i), (_, n)) = (x.dims2()?, w.dims2()?);
        let grad = grad_res.contiguous()?;
        let (x_guard, x_layout) = x.storage_and_layout();
        let (x, (x_rs, x_cs)) = guarded_2d(&x_guard, x_layout)?;
        let (w_guard, w_layout) = w.storage_and_layout();
        let (w, (w_rs, w_cs)) = guarded_2d(&w_guard, w_layout)?;
        let (g_guard, g_layout) = grad.storage_and_layout();
        let (g, g_strides) = guarded_2d(&g_guard, g_layout)?;
        // dx [M, I] = g [M, N] · wᵀ [N, I]
        let mut dx = vec![0f32; m * i];
        product::matmul(
            Precision::Bf16,
            &mut dx,
            i,
            false,
            (m, i, n),
            g,
            g_strides,
            w,
            (w_cs, w_rs),
        );
        // dw [I, N] = xᵀ [I, M] · g [M, N]
        let mut dw = vec![0f32; i * n];
        product::matmul(
            Precision::Bf16,
            &mut dw,
            n,
            false,
            (i, n, m),
            x,
            (x_cs, x_rs),
            g,
            g_strides,
        );
        Ok((
            Some(Tensor::from_vec(dx, (m, i), &Device::Cpu)?),
            Some(Tensor::from_vec(dw, (i, n), &Device::Cpu)?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::precision::with_precision;
    use super::*;
    use candle_core::Var;

    fn relative(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b).unwrap().sqr().unwrap().sum_all().unwrap();
        let n = b.sqr().unwrap().sum_all().unwrap();
        (d.to_scalar::<f32>().unwrap() / n.to_scalar::<f32>().unwrap()).sqrt()
    }

    #[test]
    fn bf16_projection_and_its_gradients_match_f32_within_bf16_tolerance() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (70, 37), &dev).unwrap()).unwrap();
        // A transposed view of a wider weight, as the layers pass it.
        let w_full = Var::from_tensor(&Tensor::randn(0f32, 0.2, (48, 40), &dev).unwrap()).unwrap();
        let run = |p: Precision| {
            with_precision(p, || {
                let w = w_full.narrow(1, 0, 37).unwrap().t().unwrap();
                let y = project(x.as_tensor(), &w).unwrap();
                let loss = y.sqr().unwrap().sum_all().unwrap();
                let grads = loss.backward().unwrap();
                (
                    y,
                    grads.get(x.as_tensor()).unwrap().clone(),
                    grads.get(w_full.as_tensor()).unwrap().clone(),
                )
            })
        };
        let (y32, dx32, dw32) = run(Precision::F32);
        let (y16, dx16, dw16) = run(Precision::Bf16);
        assert_eq!(y16.dims(), [70, 48]);
        // Each operand rounded to 8 significant bits: ~2^-9 relative per product term.
        for (name, a, b) in [
            ("output", &y16, &y32),
            ("dx", &dx16, &dx32),
            ("dw", &dw16, &dw32),
        ] {
            let r = relative(a, b);
            assert!(r < 1e-2, "{name}: relative error {r}");
            assert!(r > 0.0, "{name}: bf16 path gave exactly the f32 result");
        }
    }
}
