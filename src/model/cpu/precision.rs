//! Which arithmetic the CPU training kernels use for their matrix products: f32, or bf16 operands
//! with f32 accumulation ([`super::packed_matmul_bf16`]).
//!
//! Chosen per thread, like [`crate::model::lstm::with_kernel`], because the model runs on the
//! thread that calls it and each op records the precision it ran with, so that its backward pass
//! uses the same one.

use std::cell::Cell;

/// The operand precision of the fused layers' and input projections' products.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// f32 operands and accumulation: bit-for-bit the reference path's arithmetic class.
    #[default]
    F32,
    /// bf16 operands, f32 accumulation (AVX-512 BF16); master weights, optimizer state, gate math,
    /// cell state and the loss stay f32.
    Bf16,
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            _ => Err(format!("unknown precision \"{s}\": use bf16 or f32")),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        })
    }
}

impl Precision {
    /// The fastest precision on this CPU: bf16 where it has AMX or AVX-512 BF16, else f32
    /// (elsewhere the bf16 products would run a slow portable loop).
    pub fn fastest() -> Precision {
        if super::amx::available() || cpu_has_avx512_bf16() {
            Precision::Bf16
        } else {
            Precision::F32
        }
    }

    /// `self`, or f32 with the reason when this CPU cannot run bf16 products at speed.
    pub fn on_this_cpu(self) -> (Precision, Option<&'static str>) {
        match self {
            Precision::Bf16 if !super::amx::available() && !cpu_has_avx512_bf16() => (
                Precision::F32,
                Some("this CPU has neither AMX-BF16 nor AVX-512 BF16: training in f32"),
            ),
            p => (p, None),
        }
    }
}

/// Whether this CPU runs `vdpbf16ps` (AVX-512F + AVX-512 BF16). Detected once per process.
pub fn cpu_has_avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| {
            is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

thread_local! {
    static PRECISION: Cell<Precision> = const { Cell::new(Precision::F32) };
}

/// Runs `f` with the CPU kernels on this thread using `precision`, then restores the previous
/// choice.
pub fn with_precision<T>(precision: Precision, f: impl FnOnce() -> T) -> T {
    struct Restore(Precision);
    impl Drop for Restore {
        fn drop(&mut self) {
            PRECISION.with(|p| p.set(self.0));
        }
    }
    let _restore = Restore(PRECISION.with(|p| p.replace(precision)));
    f()
}

/// The precision this thread's CPU kernels use now.
pub fn current_precision() -> Precision {
    PRECISION.with(Cell::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_is_scoped_to_the_closure() {
        assert_eq!(current_precision(), Precision::F32);
        let inner = with_precision(Precision::Bf16, current_precision);
        assert_eq!(inner, Precision::Bf16);
        assert_eq!(current_precision(), Precision::F32);
    }

    #[test]
    fn names_round_trip() {
        for p in [Precision::F32, Precision::Bf16] {
            assert_eq!(p.to_string().parse::<Precision>(), Ok(p));
        }
        assert!("fp8".parse::<Precision>().is_err());
    }
}
