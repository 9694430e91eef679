//! DrumVAE: a hierarchical MusicVAE on the GrooVAE drum grid, trained offline and played live as a
//! tempo-locked MIDI generator plugin.

pub mod atomic_file;
pub mod dataset;
pub mod engine;
pub mod evaluate;
pub mod generator;
pub mod groove;
pub mod latent;
pub mod midi_file;
pub mod model;
pub mod plotting;
pub mod plugin;
pub mod render;
pub mod sequencer;
pub mod training;
pub mod untrusted_file;

pub use groove::{Cell, Pattern, Voice};
