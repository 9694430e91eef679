//! The model's CPU engine room: hand-written kernels that run the network defined next door
//! (`lstm.rs`, `encoder.rs`, `decoder.rs`) faster than Candle's general ops do on this hardware.
//! Each file is one kernel; the network code calls them through `lstm.rs` and `Vae::decode`, and
//! every kernel is tested against the Candle reference path it replaces.
//!
//! - [`fused_lstm`]: a whole LSTM layer over a sequence as one op with its own backward.
//! - [`packed_matmul`]: f32 products against weights packed once per layer call (AVX2 + FMA).
//! - [`packed_matmul_bf16`]: the same with bf16 operands and f32 accumulation (AMX or AVX-512 BF16).
//! - [`amx`]: the AMX tile engine of those bf16 products.
//! - [`projection`]: the input projection of all steps, in the chosen precision.
//! - [`product`]: one interface over both precisions' products.
//! - [`precision`]: which of the two the kernels use (f32 or bf16), per thread.
//! - [`lstm_cell`]: the gate nonlinearities, forward and backward, vectorised.
//! - [`fast_decoder`]: batch-1 autoregressive decoding in plain Rust for the plugin.

pub mod amx;
pub mod fast_decoder;
pub mod fused_lstm;
pub mod lstm_cell;
pub mod packed_matmul;
pub mod packed_matmul_bf16;
pub mod precision;
pub mod product;
pub mod projection;
