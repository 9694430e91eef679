//! Fuzzes the MIDI importer end to end: parse, metre check, quantise, window, and write the windows
//! back out. Any panic is a bug. Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run midi_import`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(performance) = drumvae::midi_file::parse(data, "fuzz.mid")
        && performance.check_four_four("fuzz.mid").is_ok()
    {
        let grid = performance.quantize();
        let windows: Vec<_> = grid.windows().take(8).map(|(_, p)| p).collect();
        let bytes = drumvae::midi_file::write_patterns(&windows, &Default::default());
        drumvae::midi_file::parse(&bytes, "rewritten.mid").expect("our own output parses");
    }
});
