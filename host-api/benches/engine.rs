//! Engine micro-benchmarks: the figures of docs/functions.md.
//!
//! `cargo bench -p sluice-host-api --bench engine`
//!
//! - `filter/*`: per-message cost of a trivial filter (parse every record,
//!   keep it) at batch sizes 1, 64 and 1024, including the copy of the batch
//!   into guest memory — with epoch deadlines (the default), without them,
//!   and with fuel counting, all in one run so the ratios compare;
//! - `instance/*`: taking a ready instance from the function's pool, and
//!   creating one (pooling allocator, and on demand);
//! - `transform/pii-redact`: bytes per second through the PII redactor.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluice_host_api::{BatchContext, Engine, EngineConfig, Function, FunctionSpec, Services};
use sluice_protocol::batch::BatchBuilder;

/// `n` records of 100-byte values with one tag header, as the log stores them.
fn batch(n: usize, value: impl Fn(usize) -> Vec<u8>) -> Vec<u8> {
    let mut b = BatchBuilder::new(1_700_000_000_000);
    for i in 0..n {
        let key = format!("key-{i}");
        b.push(
            1_700_000_000_000,
            Some(key.as_bytes()),
            Some(&value(i)),
            &[("sluice.tag", Some(b"red"))],
        );
    }
    b.finish().to_vec()
}

fn load(engine: &Engine, name: &str, path: &str) -> Function {
    let (services, _) = Services::in_memory();
    let bytes =
        std::fs::read(path).expect("sample components are built by sluice-sample-components");
    engine
        .load(FunctionSpec::new(name, services), &bytes)
        .expect("load")
}

fn context() -> BatchContext {
    BatchContext {
        topic: "bench".into(),
        partition: 0,
        group: None,
    }
}

fn filters(c: &mut Criterion) {
    let engines = [
        ("deadline", EngineConfig::default()),
        (
            "no-deadline",
            EngineConfig {
                deadlines: false,
                ..EngineConfig::default()
            },
        ),
        (
            "deadline+fuel",
            EngineConfig {
                fuel: true,
                ..EngineConfig::default()
            },
        ),
    ];
    let mut group = c.benchmark_group("filter");
    for (label, config) in engines {
        let engine = Engine::new(config).unwrap();
        let f = load(&engine, "trivial", sluice_sample_components::TRIVIAL_FILTER);
        for n in [1usize, 64, 1024] {
            if label != "deadline" && n != 1024 {
                continue;
            }
            let input = batch(n, |_| vec![b'x'; 100]);
            let ctx = context();
            group.throughput(Throughput::Elements(n as u64));
            group.bench_with_input(BenchmarkId::new(label, n), &input, |b, input| {
                b.iter(|| {
                    let out = f.filter(&ctx, black_box(input)).unwrap();
                    black_box(out.answer.kept())
                })
            });
        }
    }
    group.finish();
}

fn instances(c: &mut Criterion) {
    let mut group = c.benchmark_group("instance");
    let engine = Engine::new(EngineConfig::default()).unwrap();
    let f = load(&engine, "trivial", sluice_sample_components::TRIVIAL_FILTER);
    f.prewarm(1).unwrap();
    group.bench_function("from-pool", |b| b.iter(|| f.checkout_and_return().unwrap()));
    group.bench_function("create-pooling", |b| {
        b.iter(|| f.instantiate_and_drop().unwrap())
    });
    let on_demand = Engine::new(EngineConfig {
        pooling: false,
        ..EngineConfig::default()
    })
    .unwrap();
    let g = load(
        &on_demand,
        "trivial",
        sluice_sample_components::TRIVIAL_FILTER,
    );
    group.bench_function("create-on-demand", |b| {
        b.iter(|| g.instantiate_and_drop().unwrap())
    });
    group.finish();
}

fn transforms(c: &mut Criterion) {
    let engine = Engine::new(EngineConfig::default()).unwrap();
    let f = load(&engine, "pii", sluice_sample_components::PII_REDACT);
    let text = |i: usize| {
        format!(
            "order {i} for jane.doe{i}@example.com, call +1 415 555 {:04}, card 4111 1111 1111 1111, deliver to 221B Baker Street, London, before noon please.",
            i % 10_000
        )
        .into_bytes()
    };
    let input = batch(1024, text);
    let ctx = context();
    let mut group = c.benchmark_group("transform");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("pii-redact/1024", |b| {
        b.iter(|| black_box(f.transform(&ctx, black_box(&input)).unwrap().answer))
    });
    group.finish();
}

criterion_group!(benches, filters, instances, transforms);
criterion_main!(benches);
