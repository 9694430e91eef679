//! Parse and window the whole Groove MIDI Dataset (all 1,150 files, as `Dataset::load` does for
//! training without a cache). Goal: <= 2 s on one core. Run: `cargo bench --bench gmd_import`.

use criterion::{Criterion, criterion_group, criterion_main};
use drumvae::dataset::{self, Dataset, Filter, Source};
use drumvae::midi_file;

fn bench(c: &mut Criterion) {
    let source = Source::Gmd {
        root: dataset::default_gmd_root(),
    };
    let mut group = c.benchmark_group("gmd");
    group.sample_size(10);
    group.bench_function("load_all_1150_files_to_windows", |b| {
        b.iter(|| {
            let data = Dataset::load(&source, &Filter::default(), |_, _| {}).unwrap();
            assert_eq!(data.report.files_listed, 1150);
            data.windows.len()
        })
    });
    // The same without file I/O: parse + quantise + window from bytes already in memory.
    let root = dataset::default_gmd_root();
    let (files, _) = dataset::list_files(&source, &Filter::default()).unwrap();
    let bytes: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(root.join(&f.path)).unwrap())
        .collect();
    group.bench_function("parse_and_window_in_memory", |b| {
        b.iter(|| {
            let mut windows = 0;
            for b in &bytes {
                let grid = midi_file::parse(b, "gmd").unwrap().quantize();
                windows += grid.windows().count();
            }
            windows
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
