//! Schedules of a training run: the learning rate's exponential decay, the KL weight's warm-up,
//! and early stopping on validation loss. Plain arithmetic on step and epoch numbers, so a resumed
//! run gets the same values without saving any schedule state (early stopping excepted: its best
//! epoch is saved in the checkpoint). It runs on the training CLI's thread.

/// `lr_t = (lr - min_lr) * decay_rate^t + min_lr`, as Magenta's MusicVAE.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    /// Learning rate at step 0.
    pub lr: f64,
    /// Asymptote the rate decays towards.
    pub min_lr: f64,
    /// Factor per optimizer step; 1 keeps `lr` constant.
    pub decay_rate: f64,
}

impl LrSchedule {
    /// Magenta's MusicVAE defaults: 1e-3 decaying towards 1e-5 at 0.9999 per step.
    pub const MAGENTA: LrSchedule = LrSchedule {
        lr: 1e-3,
        min_lr: 1e-5,
        decay_rate: 0.9999,
    };

    /// The learning rate for global step `step` (0-based).
    pub fn at(&self, step: u64) -> f64 {
        // powf on an f64 step: exact for any step count a run can reach; underflows to 0 cleanly.
        (self.lr - self.min_lr) * self.decay_rate.powf(step as f64) + self.min_lr
    }
}

impl Default for LrSchedule {
    fn default() -> Self {
        LrSchedule::MAGENTA
    }
}

/// The KL term's weight: `max_beta`, optionally reached by a linear ramp from 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BetaSchedule {
    /// The weight after warm-up.
    pub max_beta: f64,
    /// Length of the linear ramp in optimizer steps; 0 = no warm-up (`max_beta` from step 0).
    pub warmup_steps: u64,
}

impl BetaSchedule {
    /// The weight for global step `step`: `max_beta * min(1, step / warmup_steps)`.
    pub fn at(&self, step: u64) -> f64 {
        if self.warmup_steps == 0 || step >= self.warmup_steps {
            self.max_beta
        } else {
            self.max_beta * step as f64 / self.warmup_steps as f64
        }
    }
}

/// The best validation result so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Best {
    /// 0-based epoch whose validation gave it.
    pub epoch: u64,
    /// Its validation loss.
    pub loss: f64,
}

/// What [`EarlyStopping::observe`] concluded from an epoch's validation loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A new best: save the model as the best one.
    Improved,
    /// No improvement, patience not exhausted.
    NoImprovement,
    /// No improvement for `patience` epochs: stop training.
    Stop,
}

/// Stops a run after `patience` epochs without a validation loss below the best by more than
/// `min_delta`. A NaN loss never counts as an improvement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EarlyStopping {
    /// Epochs without improvement before stopping; 0 = never stop (the best is still tracked).
    pub patience: u32,
    /// Improvement smaller than this does not count.
    pub min_delta: f64,
    /// Best result so far.
    pub best: Option<Best>,
    /// Epochs observed since the best one.
    pub epochs_since_best: u32,
}

impl EarlyStopping {
    /// A tracker that has seen nothing yet.
    pub fn new(patience: u32) -> EarlyStopping {
        EarlyStopping {
            patience,
            min_delta: 0.0,
            best: None,
            epochs_since_best: 0,
        }
    }

    /// Records epoch `epoch`'s validation loss.
    pub fn observe(&mut self, epoch: u64, loss: f64) -> Verdict {
        let improved = match self.best {
            None => !loss.is_nan(),
            Some(best) => loss < best.loss - self.min_delta,
        };
        if improved {
            self.best = Some(Best { epoch, loss });
            self.epochs_since_best = 0;
            return Verdict::Improved;
        }
        self.epochs_since_best += 1;
        if self.should_stop() {
            Verdict::Stop
        } else {
            Verdict::NoImprovement
        }
    }

    /// Whether patience is exhausted.
    pub fn should_stop(&self) -> bool {
        self.patience > 0 && self.epochs_since_best >= self.patience
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learning_rate_starts_at_lr_and_decays_to_min_lr() {
        let s = LrSchedule::MAGENTA;
        assert_eq!(s.at(0), 1e-3);
        // One step: (1e-3 - 1e-5) * 0.9999 + 1e-5.
        assert!((s.at(1) - 0.000_999_901).abs() < 1e-15);
        // ln(0.01) / ln(0.9999) ~ 46050 steps shrink the excess a hundredfold.
        assert!((s.at(46_050) - (0.99e-3 * 0.01 + 1e-5)).abs() < 1e-9);
        assert_eq!(s.at(10_000_000), 1e-5);
        assert_eq!(s.at(u64::MAX), 1e-5);
        let constant = LrSchedule {
            decay_rate: 1.0,
            ..s
        };
        assert_eq!(constant.at(123_456), 1e-3);
    }

    #[test]
    fn beta_ramps_linearly_then_holds_and_zero_warmup_is_off() {
        let s = BetaSchedule {
            max_beta: 0.2,
            warmup_steps: 1000,
        };
        assert_eq!(s.at(0), 0.0);
        assert!((s.at(500) - 0.1).abs() < 1e-15);
        assert_eq!(s.at(1000), 0.2);
        assert_eq!(s.at(u64::MAX), 0.2);
        let off = BetaSchedule {
            max_beta: 0.2,
            warmup_steps: 0,
        };
        assert_eq!(off.at(0), 0.2);
    }

    #[test]
    fn early_stopping_remembers_the_best_epoch_and_stops_after_patience() {
        let mut e = EarlyStopping::new(2);
        assert_eq!(e.observe(0, f64::NAN), Verdict::NoImprovement);
        assert_eq!(e.observe(1, 3.0), Verdict::Improved);
        assert_eq!(e.observe(2, 2.0), Verdict::Improved);
        assert_eq!(e.observe(3, 2.5), Verdict::NoImprovement);
        assert_eq!(e.observe(4, 1.5), Verdict::Improved);
        assert_eq!(e.observe(5, f64::NAN), Verdict::NoImprovement);
        assert_eq!(e.observe(6, 1.5), Verdict::Stop, "equal is not better");
        assert_eq!(
            e.best,
            Some(Best {
                epoch: 4,
                loss: 1.5
            })
        );
        let mut never = EarlyStopping::new(0);
        never.observe(0, 1.0);
        for epoch in 1..100 {
            assert_eq!(never.observe(epoch, 2.0), Verdict::NoImprovement);
        }
    }
}
