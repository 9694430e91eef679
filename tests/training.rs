//! The real training loop (`drumvae::training::trainer`) on real GMD windows: a run stopped
//! mid-epoch and resumed from its checkpoint ends with bit-identical weights and the same metrics
//! as an uninterrupted run; resuming with other settings is refused; the run folder holds what a
//! researcher expects.

use std::sync::atomic::AtomicBool;

use candle_core::Device;
use drumvae::Pattern;
use drumvae::dataset::{self, Split};
use drumvae::model::{BarState, Config, DecoderKind, HeadLoss};
use drumvae::training::trainer::{self, Finish, TrainSettings};
use drumvae::training::{AdamConfig, BetaSchedule, Checkpoint, LrSchedule, MetricsRow};

fn windows() -> Vec<Pattern> {
    dataset::gmd_split_patterns(Split::Validation)
        .unwrap()
        .into_iter()
        .step_by(40)
        .take(30)
        .collect()
}

fn settings(stop_after_steps: Option<u64>) -> TrainSettings {
    TrainSettings {
        config: Config {
            encoder_hidden: 16,
            latent: 8,
            decoder: DecoderKind::Hierarchical,
            conductor_hidden: 16,
            conductor_layers: 1,
            decoder_hidden: 24,
            decoder_layers: 2,
            beta: 0.2,
            free_bits: 1.0,
            head_loss: HeadLoss::HitCells,
            decoder_input_dropout: 0.1,
            bar_state: BarState::Reset,
        },
        epochs: 3,
        batch_size: 8,
        lr: LrSchedule {
            lr: 3e-3,
            min_lr: 1e-5,
            decay_rate: 0.99,
        },
        beta: BetaSchedule {
            max_beta: 0.2,
            warmup_steps: 5,
        },
        adam: AdamConfig::default(),
        patience: 0,
        seed: 5,
        log_every: 2,
        stop_after_steps,
    }
}

/// One run of the real trainer on the CPU, never interrupted from outside.
fn run(
    settings: &TrainSettings,
    train: &[Pattern],
    val: &[Pattern],
    dir: &std::path::Path,
    resume: bool,
) -> anyhow::Result<trainer::Outcome> {
    let never = AtomicBool::new(false);
    trainer::train(
        settings,
        train,
        val,
        &Device::Cpu,
        dir,
        resume,
        &never,
        |_| {},
    )
}

/// Rows without wall-clock fields, which legitimately differ between runs.
fn timeless(rows: &[MetricsRow]) -> Vec<MetricsRow> {
    rows.iter()
        .map(|r| MetricsRow {
            examples_per_sec: 0.0,
            elapsed_secs: 0.0,
            ..*r
        })
        .collect()
}

fn weights(varmap: &candle_nn::VarMap) -> Vec<(String, Vec<f32>)> {
    Checkpoint::weights_of(varmap)
        .unwrap()
        .into_iter()
        .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

#[test]
fn resumed_run_matches_an_uninterrupted_one_bit_for_bit() {
    let data = windows();
    let (train, val) = data.split_at(22); // 22 windows: 3 batches per epoch, the last partial
    let device = Device::Cpu;

    let straight_dir = tempfile::tempdir().unwrap();
    let straight = run(&settings(None), train, val, straight_dir.path(), false).unwrap();
    assert_eq!(straight.finish, Finish::Completed);
    assert_eq!(straight.steps, 9);

    let dir = tempfile::tempdir().unwrap();
    // Stop mid-epoch 2 (after step 4 of 9), as Ctrl-C would.
    let first = run(&settings(Some(4)), train, val, dir.path(), false).unwrap();
    assert_eq!(first.finish, Finish::Interrupted);
    assert_eq!(first.steps, 4);
    let resumed = run(&settings(None), train, val, dir.path(), true).unwrap();
    assert_eq!(resumed.finish, Finish::Completed);
    assert_eq!(resumed.steps, 9);

    assert_eq!(
        weights(&resumed.varmap),
        weights(&straight.varmap),
        "weights differ after resume"
    );
    assert_eq!(
        timeless(&resumed.metrics),
        timeless(&straight.metrics),
        "metrics differ"
    );
    assert_eq!(resumed.best, straight.best);
    // The best model files hold the same tensors and metadata (header order may differ).
    let best = |dir: &std::path::Path| {
        let (_, info) =
            drumvae::model::file::load_file(&dir.join(trainer::BEST_FILE), &device).unwrap();
        let mut t: Vec<(String, Vec<f32>)> =
            candle_core::safetensors::load(dir.join(trainer::BEST_FILE), &device)
                .unwrap()
                .into_iter()
                .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
                .collect();
        t.sort_by(|a, b| a.0.cmp(&b.0));
        (t, info.metadata)
    };
    assert!(
        best(straight_dir.path()) == best(dir.path()),
        "best model files differ"
    );
}

#[test]
fn run_folder_holds_config_checkpoint_best_model_metrics_and_plot() {
    let data = windows();
    let (train, val) = data.split_at(22);
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(None);
    s.epochs = 2;
    let out = run(&s, train, val, dir.path(), false).unwrap();
    for f in [
        trainer::CONFIG_FILE,
        trainer::CHECKPOINT_FILE,
        trainer::BEST_FILE,
        "metrics.csv",
        trainer::PLOT_FILE,
    ] {
        let len = std::fs::metadata(dir.path().join(f))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len > 0, "{f} missing or empty");
    }
    let csv = std::fs::read_to_string(dir.path().join("metrics.csv")).unwrap();
    assert_eq!(
        csv.lines().filter(|l| l.starts_with("epoch")).count(),
        2,
        "{csv}"
    );
    let epochs: Vec<_> = out.metrics.iter().filter(|r| r.val.is_some()).collect();
    assert!(
        epochs
            .iter()
            .all(|r| r.train.total.is_finite() && r.val.unwrap().total.is_finite())
    );
    // The saved best model loads and is the config we trained.
    let (_, info) =
        drumvae::model::file::load_file(&dir.path().join(trainer::BEST_FILE), &Device::Cpu)
            .unwrap();
    assert_eq!(info.config, s.config);
}

/// A checkpoint written before a config option existed has no such key in its config JSON; the
/// option's default makes it the same config, so a newer `train --resume` continues it.
#[test]
fn a_checkpoint_from_before_a_new_config_option_resumes() {
    let data = windows();
    let (train, val) = data.split_at(22);
    let dir = tempfile::tempdir().unwrap();
    run(&settings(Some(1)), train, val, dir.path(), false).unwrap();
    let path = dir.path().join(trainer::CHECKPOINT_FILE);
    let mut ck = Checkpoint::load(&path, &Device::Cpu).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&ck.extra["config"]).unwrap();
    assert!(
        config
            .as_object_mut()
            .unwrap()
            .remove("bar_state")
            .is_some()
    );
    ck.extra.insert("config".into(), config.to_string());
    ck.save(&path).unwrap();
    let resumed = run(&settings(None), train, val, dir.path(), true).unwrap();
    assert_eq!(resumed.finish, Finish::Completed);
}

#[test]
fn resuming_with_another_config_or_seed_is_refused() {
    let data = windows();
    let (train, val) = data.split_at(22);
    let dir = tempfile::tempdir().unwrap();
    run(&settings(Some(1)), train, val, dir.path(), false).unwrap();
    let mut other = settings(None);
    other.config.latent = 4;
    let err = run(&other, train, val, dir.path(), true).err().unwrap();
    assert!(format!("{err:#}").contains("different config"), "{err:#}");
    let mut other = settings(None);
    other.seed = 6;
    let err = run(&other, train, val, dir.path(), true).err().unwrap();
    assert!(format!("{err:#}").contains("seed"), "{err:#}");
    let empty = tempfile::tempdir().unwrap();
    let err = run(&settings(None), train, val, empty.path(), true)
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("cannot resume"), "{err:#}");
}
