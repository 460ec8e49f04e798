//! Making a component runnable from its serialized artifact (what a restarted
//! node does) against compiling it from bytes (what the first publish does).

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use weft::bundled::paths;

fn artifact(c: &mut Criterion) {
    let engine = common::engine();
    for (name, path) in [("text", paths::TEXT), ("pick", paths::PICK)] {
        let bytes = common::read(path);
        let (_, artifact) = engine.compile(&bytes).expect("component compiles");

        let mut group = c.benchmark_group(format!("artifact/{name}"));
        group.bench_function(BenchmarkId::from_parameter("load"), |b| {
            b.iter(|| engine.load_artifact(&artifact).expect("artifact loads"));
        });
        // A compile takes about half a second: ten samples of the same few compiles.
        group
            .sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .measurement_time(Duration::from_secs(10));
        group.bench_function(BenchmarkId::from_parameter("compile"), |b| {
            b.iter(|| engine.compile(&bytes).expect("component compiles"));
        });
        group.finish();
    }
}

criterion_group!(benches, artifact);
criterion_main!(benches);
