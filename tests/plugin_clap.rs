#[path = "host/harness.rs"]
mod host;
use host::*;

#[test]
fn probe() {
    let mut plugin = PluginUnderTest::load(&plugin_library_path()).unwrap();
    let t = std::time::Instant::now();
    let mut audio = plugin.activate(48000.0, 4096);
    println!("activate {:?}", t.elapsed());
    for size in [1u32, 7, 64, 4096] {
        let n = 96000 / size as usize;
        let blocks = playing_blocks(n, size, 48000.0, 120.0, 0.0);
        let t = std::time::Instant::now();
        let out = audio.run(blocks);
        println!(
            "size {size}: {:?} for {n} blocks, {} notes",
            t.elapsed(),
            out.iter().map(|b| b.len()).sum::<usize>()
        );
        audio.run(vec![Block::with_transport(
            16,
            TransportInfo::stopped(120.0, 0.0),
        )]);
    }
}
