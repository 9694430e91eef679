//! The nice-plug plugin: a MIDI drum generator exported as CLAP and VST3. `process()` runs on the
//! AUDIO THREAD and only reads parameters, takes the newest pattern from the worker (wait-free),
//! runs the [`Sequencer`] and cues the worker before each switch point ([`Cue`]);
//! `activate`/`deactivate` run on the host's main thread and start and join the plugin's own
//! worker thread ([`Generator`]). Activation never waits for the model: a host opening a project
//! activates every instance in a row, and 20 instances waiting for their models took 100 s. The
//! worker publishes the first pattern when it is ready; until then the sequencer plays what it
//! had (silence in a new instance, the last pattern after a reactivation).
//!
//! [`Sequencer`]: crate::sequencer::Sequencer
//!
//! Formats: CLAP features `note-effect`, `drum` and `drumvae:groove-generator`; VST3 category
//! `Instrument|Drum`. It is a note generator, but it exposes one silent stereo output so that hosts
//! which only route MIDI out of instruments (Ableton Live, FL Studio, Cubase) accept it on an
//! instrument track; hosts that understand CLAP note effects use it as such.

#[cfg(feature = "editor")]
pub mod editor;
pub mod params;
pub mod player;
pub mod saved_state;
pub mod session_edits;

use crate::generator::{Cue, Engine, Generator, Link};
use crate::model::DeviceRequest;
use crate::sequencer::{NoteEvent as SeqEvent, Transport};
use nice_plug::midi::{Channel, Key, VoiceID};
use nice_plug::prelude::*;
use params::{DrumVaeParams, ParamControls};
use player::{PlayState, Player};
use std::num::NonZeroU32;
use std::sync::Arc;

/// The plugin instance.
pub struct DrumVae {
    params: Arc<DrumVaeParams>,
    /// The sequencer and, while active, the audio thread's end of the pattern hand-off; it cues
    /// the worker through `cue`.
    player: Player,
    /// The audio thread's decisions for the worker, shared by the player and every worker.
    cue: Arc<Cue>,
    /// What is playing, for the editor.
    play_state: Arc<PlayState>,
    /// Commands and status shared by every worker this instance starts, and the editor.
    link: Link,
    /// The worker, while active.
    generator: Option<Generator>,
    /// The model kept between deactivation and the next activation.
    engine: Option<Engine>,
    sample_rate: f64,
    /// Events the host had no room for (diagnostics; never expected with normal hosts).
    dropped_events: u64,
}

impl Default for DrumVae {
    fn default() -> Self {
        let cue = Arc::new(Cue::new());
        DrumVae {
            params: Arc::new(DrumVaeParams::default()),
            player: Player::new(cue.clone()),
            cue,
            play_state: Arc::new(PlayState::default()),
            link: Link::new(),
            generator: None,
            engine: None,
            sample_rate: 48_000.0,
            dropped_events: 0,
        }
    }
}

impl DrumVae {
    fn stop_worker(&mut self) {
        self.player.patterns = None;
        if let Some(generator) = self.generator.take() {
            self.engine = generator.stop();
        }
    }
}

/// The sequencer's transport for one block, from the host's. A host that reports neither a tempo
/// nor a position nor "playing" gives no transport at all: then the pattern runs free at 120 BPM
/// so the plugin still plays (e.g. in a live-only host). The loop range is passed on whenever the
/// host reports looping as active (nice-plug derives it in beats from seconds or samples if
/// need be): many VST3 hosts do not split their blocks at the loop end, so the sequencer wraps
/// at the loop end's sample itself.
fn transport_of(host: &nice_plug::prelude::Transport, sample_rate: f64) -> Transport {
    let pos_beats = host.pos_beats();
    let no_transport = host.tempo.is_none() && pos_beats.is_none() && !host.playing;
    Transport {
        playing: host.playing || no_transport,
        tempo_bpm: host.tempo.unwrap_or(f64::NAN),
        pos_beats,
        sample_rate,
        loop_beats: host.loop_range_beats(),
    }
}

fn to_host_event(e: SeqEvent) -> PluginNoteEvent<DrumVae> {
    let velocity = f32::from(e.velocity) / 127.0;
    if e.on {
        NoteEvent::NoteOn {
            timing: e.sample,
            voice_id: VoiceID::Wildcard,
            channel: Channel::Number(e.channel),
            key: Key::Number(e.pitch),
            velocity,
        }
    } else {
        NoteEvent::NoteOff {
            timing: e.sample,
            voice_id: VoiceID::Wildcard,
            channel: Channel::Number(e.channel),
            key: Key::Number(e.pitch),
            velocity,
        }
    }
}

impl Plugin for DrumVae {
    const NAME: &'static str = "DrumVAE";
    const VENDOR: &'static str = "DrumVAE";
    const URL: &'static str = "https://github.com/drumvae/drumvae";
    const EMAIL: &'static str = "drumvae@example.org";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    const AUDIO_IO_LAYOUTS: &'static [AudioIOLayout] = &[AudioIOLayout {
        main_input_channels: None,
        main_output_channels: NonZeroU32::new(2),
        ..AudioIOLayout::const_default()
    }];
    const MIDI_INPUT: MidiConfig = MidiConfig::None;
    const MIDI_OUTPUT: MidiConfig = MidiConfig::Basic;
    const SAMPLE_ACCURATE_AUTOMATION: bool = false;

    #[cfg(feature = "editor")]
    type Editor = editor::DrumVaeEditor;
    #[cfg(not(feature = "editor"))]
    type Editor = ();
    type SysExMessage = ();
    type BackgroundTask = ();

    fn params(&self) -> Arc<dyn Params> {
        self.params.clone()
    }

    /// A saved state is untrusted: values clamped into range, oversized fields refused unread.
    fn filter_state(state: &mut PluginState) {
        saved_state::filter(state);
    }

    #[cfg(feature = "editor")]
    fn editor(&mut self, _executor: AsyncExecutor<Self>) -> Option<Self::Editor> {
        Some(editor::create(
            self.params.clone(),
            self.link.clone(),
            self.play_state.clone(),
        ))
    }

    fn activate(
        &mut self,
        _layout: &AudioIOLayout,
        buffer_config: &BufferConfig,
        _context: &mut impl ActivateContext<Self>,
    ) -> bool {
        self.sample_rate = f64::from(buffer_config.sample_rate);
        // A reactivation (new sample rate, restored state) restarts the worker with the same
        // model, so the hand-off starts fresh and the restored point is decoded at once. Nothing
        // here waits for the worker: it publishes the first pattern when it has one.
        self.stop_worker();
        // The audio thread is not running: until it plays, the worker publishes what it decodes.
        self.cue.set_playing(false);
        let spawned = Generator::spawn_with(
            Arc::new(ParamControls {
                params: self.params.clone(),
                cue: self.cue.clone(),
            }),
            // A CPU-only build has nothing to choose (and nothing to warn the user about).
            if cfg!(feature = "cuda") {
                DeviceRequest::Auto
            } else {
                DeviceRequest::Cpu
            },
            self.engine.take(),
            self.link.clone(),
        );
        match spawned {
            Ok((generator, patterns)) => {
                self.generator = Some(generator);
                self.player.patterns = Some(patterns);
                true
            }
            Err(e) => {
                nice_error!("DrumVAE: cannot start the worker thread: {e}");
                false
            }
        }
    }

    fn reset(&mut self) {
        self.player.reset();
    }

    fn process(
        &mut self,
        buffer: &mut Buffer,
        _aux: &mut AuxiliaryBuffers,
        context: &mut impl ProcessContext<Self>,
    ) -> ProcessStatus {
        for channel in buffer.as_slice() {
            channel.fill(0.0);
        }
        let transport = transport_of(context.transport(), self.sample_rate);
        let frames = buffer.samples() as u32;
        let mut dropped = 0;
        self.player.play_block(
            &self.params.settings(),
            self.params.automated(),
            &self.play_state,
            &transport,
            frames,
            &mut |event| {
                if context.try_send_event(to_host_event(event)).is_err() {
                    dropped += 1;
                }
            },
        );
        self.dropped_events += dropped;
        ProcessStatus::KeepAlive
    }

    fn deactivate(&mut self) {
        self.stop_worker();
    }
}

impl ClapPlugin for DrumVae {
    const CLAP_ID: &'static str = "org.drumvae.drumvae";
    const CLAP_DESCRIPTION: Option<&'static str> =
        Some("Neural drum grooves (hierarchical MusicVAE) as tempo-locked MIDI");
    const CLAP_MANUAL_URL: Option<&'static str> = None;
    const CLAP_SUPPORT_URL: Option<&'static str> = None;
    const CLAP_FEATURES: &'static [ClapFeature] = &[
        ClapFeature::NoteEffect,
        ClapFeature::Drum,
        ClapFeature::Custom("drumvae:groove-generator"),
    ];
}

impl Vst3Plugin for DrumVae {
    const VST3_CLASS_ID: [u8; 16] = *b"DrumVaeGrooveGen";
    const VST3_SUBCATEGORIES: &'static [Vst3SubCategory] =
        &[Vst3SubCategory::Instrument, Vst3SubCategory::Drum];
}

nice_export_clap!(DrumVae);
nice_export_vst3!(DrumVae);
