//! Fuzzes the plugin's session-state loader: arbitrary bytes as a saved CLAP state, through the
//! steps of the plugin's `state.load` (`drumvae::plugin::saved_state::restore`: the length
//! header, nice-plug's state JSON, the plugin's `filter_state`, the parameter values, the persisted
//! fields), then what the plugin does with what it loaded: the sequencer plays a block with the
//! restored settings, the worker's morph point is blended into a latent, and the state is saved.
//! Any panic is a bug, and so is a state that loads but whose save does not load back to the
//! same save, or a loaded parameter outside its range. Run (from `fuzz/`, with a dictionary of the
//! state's words; `-timeout=1`: a load slower than a second is a failure too):
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run session_state -s none -a -- -dict=session_state.dict -timeout=1`.
#![no_main]

use candle_core::Device;
use drumvae::generator::{Controls, Engine};
use drumvae::groove::{STEPS, VOICES};
use drumvae::plugin::params::{DrumVaeParams, ParamControls};
use drumvae::plugin::saved_state::{restore, save};
use drumvae::sequencer::{Sequencer, Transport};
use drumvae::{Cell, Pattern};
use libfuzzer_sys::fuzz_target;
use nice_plug::prelude::Params;
use std::sync::{Arc, OnceLock};

/// The embedded model, loaded once: the corners' latents come from it.
fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| Engine::embedded(&Device::Cpu).expect("the embedded model loads"))
}

/// A pattern with every hit struck, offsets across their whole range.
fn busy_pattern() -> Pattern {
    let mut pattern = Pattern::default();
    for (step, row) in pattern.cells.iter_mut().enumerate() {
        for (voice, cell) in row.iter_mut().enumerate() {
            *cell = Cell {
                hit: true,
                velocity: ((step + voice) % 8) as f32 / 7.0,
                offset: ((step * VOICES + voice) % 20) as f32 / 20.0 - 0.5,
            };
        }
    }
    assert_eq!(pattern.cells.len(), STEPS);
    pattern
}

/// Every parameter holds a finite value inside its range.
fn assert_in_range(params: &DrumVaeParams) {
    for (id, ptr, _) in params.param_map() {
        // SAFETY: `ptr` points into `params`, which outlives the loop.
        let (value, min, max) = unsafe {
            (
                ptr.unmodulated_plain_value(),
                ptr.preview_plain(0.0),
                ptr.preview_plain(1.0),
            )
        };
        assert!(
            value.is_finite() && (min..=max).contains(&value),
            "{id} = {value} outside {min}..={max}"
        );
    }
}

fuzz_target!(
    // Loaded before the first input, so `-timeout` measures loads, not the model.
    init: {
        engine();
    },
    |data: &[u8]| {
        let params = Arc::new(DrumVaeParams::default());
        if restore(&params, data).is_err() {
            return;
        }
        assert_in_range(&params);
        // The audio thread: settings from the restored parameters, one block of the busy pattern.
        let settings = params.settings();
        let mut sequencer = Sequencer::default();
        sequencer.set_pattern_pending(busy_pattern());
        for block in 0..4 {
            // Half a second a block at 120 BPM: one beat.
            let transport = Transport {
                playing: true,
                tempo_bpm: 120.0,
                pos_beats: Some(f64::from(block)),
                sample_rate: 48_000.0,
                loop_beats: None,
            };
            sequencer.process(&transport, 24_000, &settings, &mut |event| {
                assert!(event.sample < 24_000 && event.pitch < 128 && event.channel < 16);
            });
        }
        // The worker: the morph point and its latent.
        let controls = ParamControls(params.clone());
        let point = controls.point();
        let _ = controls.model_path();
        let (z, _warnings) = engine().latent_at(&point);
        assert_eq!(z.len(), engine().info().config.latent);

        // The save loads back, into this instance and a fresh one, and saves the same.
        let saved = save(&params);
        restore(&params, &saved).expect("its own save loads");
        assert!(save(&params) == saved, "reloading its own save changed it");
        let fresh = DrumVaeParams::default();
        restore(&fresh, &saved).expect("its save loads into a fresh instance");
        assert!(save(&fresh) == saved, "a fresh instance saves it differently");
    }
);
