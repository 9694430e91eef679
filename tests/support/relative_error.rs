//! How far a tensor is from a reference, for the kernel equivalence tests (fused LSTM, bf16).

use candle_core::Tensor;

/// `max |a - b| / max |b|`: the largest difference relative to the reference's scale.
pub fn relative_error(a: &Tensor, reference: &Tensor) -> f32 {
    assert_eq!(a.dims(), reference.dims());
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = reference.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    let diff = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}
