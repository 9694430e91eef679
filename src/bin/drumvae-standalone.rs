//! DrumVAE as a standalone application: the plugin with its editor in its own window, on nice-plug's
//! standalone host (audio and MIDI through JACK or ALSA; `-b dummy` runs without any audio device
//! on a simulated transport at `--tempo`, which the editor screenshot test uses). `--help` lists
//! the host's options.

use std::process::ExitCode;

fn main() -> ExitCode {
    if nice_plug::nice_export_standalone::<drumvae::plugin::DrumVae>() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
