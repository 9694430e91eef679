//! Mini-batches: patterns to `[B, 64, 27]` tensors, and an epoch's order walked in fixed-size
//! batches from any position (for resuming mid-epoch). It runs on the training CLI's thread.
//!
//! Training drops the last partial batch ([`Remainder::Drop`]): every step then averages the same
//! number of examples (equal weight per step, one noise shape) and, as the order changes every
//! epoch, each example is still seen. Validation keeps it ([`Remainder::Keep`]) so that every
//! example counts; weight its loss by the batch's size.

use candle_core::{Device, Result, Tensor};

use crate::Pattern;
use crate::groove::{FEATURES, STEPS};

/// `[patterns.len(), 64, 27]` in [`Pattern::write_flat`]'s layout.
pub fn patterns_tensor(patterns: &[Pattern], device: &Device) -> Result<Tensor> {
    let mut flat = Vec::with_capacity(patterns.len() * STEPS * FEATURES);
    for p in patterns {
        p.write_flat(&mut flat);
    }
    Tensor::from_vec(flat, (patterns.len(), STEPS, FEATURES), device)
}

/// `[indices.len(), 64, 27]` of `patterns[indices[i]]`. Panics on an index out of range, a bug in
/// the caller's permutation.
pub fn gather_tensor(patterns: &[Pattern], indices: &[u32], device: &Device) -> Result<Tensor> {
    let mut flat = Vec::with_capacity(indices.len() * STEPS * FEATURES);
    for &i in indices {
        patterns[i as usize].write_flat(&mut flat);
    }
    Tensor::from_vec(flat, (indices.len(), STEPS, FEATURES), device)
}

/// What to do with the examples left over when the epoch's size is not a multiple of the batch
/// size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remainder {
    /// Skip them (training).
    Drop,
    /// Yield them as a smaller last batch (validation).
    Keep,
}

/// Number of batches an epoch of `n` examples yields.
pub fn batches_per_epoch(n: usize, batch_size: usize, remainder: Remainder) -> usize {
    match remainder {
        Remainder::Drop => n / batch_size,
        Remainder::Keep => n.div_ceil(batch_size),
    }
}

/// One batch of an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch<'a> {
    /// Examples of the epoch consumed before this batch (a checkpoint taken after it stores
    /// `position + indices.len()`).
    pub position: usize,
    /// Indices into the example set.
    pub indices: &'a [u32],
}

/// Walks an epoch's `order` in batches of `batch_size`, from `position`.
#[derive(Debug, Clone)]
pub struct Batches<'a> {
    order: &'a [u32],
    batch_size: usize,
    remainder: Remainder,
    position: usize,
}

impl<'a> Batches<'a> {
    /// Batches of the whole epoch. Panics if `batch_size` is 0.
    pub fn new(order: &'a [u32], batch_size: usize, remainder: Remainder) -> Batches<'a> {
        assert!(batch_size > 0, "batch size 0");
        Batches {
            order,
            batch_size,
            remainder,
            position: 0,
        }
    }

    /// The same, resuming after `position` examples (from a checkpoint).
    pub fn starting_at(mut self, position: usize) -> Batches<'a> {
        self.position = position.min(self.order.len());
        self
    }

    /// Examples consumed so far.
    pub fn position(&self) -> usize {
        self.position
    }
}

impl<'a> Iterator for Batches<'a> {
    type Item = Batch<'a>;

    fn next(&mut self) -> Option<Batch<'a>> {
        let left = self.order.len() - self.position;
        let take = match (left >= self.batch_size, self.remainder) {
            (true, _) => self.batch_size,
            (false, Remainder::Keep) if left > 0 => left,
            _ => return None,
        };
        let batch = Batch {
            position: self.position,
            indices: &self.order[self.position..self.position + take],
        };
        self.position += take;
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.order.len() - self.position;
        let n = batches_per_epoch(left, self.batch_size, self.remainder);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Batches<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cell, Voice};

    #[test]
    fn drop_skips_the_partial_batch_and_keep_yields_it() {
        let order: Vec<u32> = (0..10).collect();
        let sizes = |r| {
            Batches::new(&order, 4, r)
                .map(|b| b.indices.len())
                .collect::<Vec<_>>()
        };
        assert_eq!(sizes(Remainder::Drop), [4, 4]);
        assert_eq!(sizes(Remainder::Keep), [4, 4, 2]);
        assert_eq!(Batches::new(&order, 4, Remainder::Keep).len(), 3);
        assert_eq!(batches_per_epoch(8, 4, Remainder::Keep), 2);
    }

    #[test]
    fn starting_at_a_position_resumes_the_same_batches() {
        let order: Vec<u32> = (0..10).rev().collect();
        let all: Vec<_> = Batches::new(&order, 3, Remainder::Drop).collect();
        let resumed: Vec<_> = Batches::new(&order, 3, Remainder::Drop)
            .starting_at(3)
            .collect();
        assert_eq!(resumed, all[1..]);
        assert_eq!(resumed[0].position, 3);
        assert_eq!(resumed[0].indices, [6, 5, 4]);
        assert_eq!(
            Batches::new(&order, 3, Remainder::Drop)
                .starting_at(99)
                .count(),
            0
        );
    }

    #[test]
    fn gathered_batches_hold_each_pattern_in_the_flat_layout() {
        let mut a = Pattern::EMPTY;
        a.set(5, Voice::ALL[2], Cell::hit(0.75, 0.25));
        let b = Pattern::EMPTY;
        let t = gather_tensor(&[a, b], &[1, 0], &Device::Cpu).unwrap();
        assert_eq!(t.dims(), [2, STEPS, FEATURES]);
        let rows = t.to_vec3::<f32>().unwrap();
        assert_eq!(rows[0], vec![vec![0.0; FEATURES]; STEPS]);
        assert_eq!(rows[1][5][2], 1.0);
        assert_eq!(rows[1][5][9 + 2], 0.75);
        assert_eq!(rows[1][5][18 + 2], 0.25);
        let all = patterns_tensor(&[a, b], &Device::Cpu).unwrap();
        assert_eq!(all.to_vec3::<f32>().unwrap()[0], rows[1]);
    }
}
