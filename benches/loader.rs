//! Throughput of the shard loader: `next_batch` over three uint16 shards (~20M tokens in
//! all, written to a temp dir and removed afterwards), shuffled order, for B16 T128 and
//! B8 T1024. Ends with one line per config comparing the loader with what the CPU trainer
//! consumes (~15,000 tokens/s).
//!
//! cargo bench --bench loader

use std::path::PathBuf;
use std::time::Instant;

use criterion::{Criterion, Throughput};
use smelt::data::loader::{Loader, Order, ShardSet};
use smelt::data::shard::{ShardWriter, TokenWidth};
use smelt::rng::Rng;

const SHARD_TOKENS: usize = 6_700_000;
const NUM_SHARDS: usize = 3;
const VOCAB: u64 = 50257;
const CONFIGS: [(usize, usize); 2] = [(16, 128), (8, 1024)];
/// Tokens per second the CPU trainer consumes (order of magnitude, small models).
const TRAINER_TOKENS_PER_S: f64 = 15_000.0;

struct Shards {
    dir: PathBuf,
    paths: Vec<PathBuf>,
}

impl Shards {
    fn write() -> Self {
        let dir = std::env::temp_dir().join(format!("smelt_bench_loader_{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut rng = Rng::new(1);
        let mut chunk = Vec::with_capacity(1 << 16);
        let paths = (0..NUM_SHARDS)
            .map(|s| {
                let path = dir.join(format!("train_{s:06}.bin"));
                let mut w = ShardWriter::create(&path, TokenWidth::U16).expect("create shard");
                let mut left = SHARD_TOKENS;
                while left > 0 {
                    let n = left.min(1 << 16);
                    chunk.clear();
                    chunk.extend((0..n).map(|_| rng.below(VOCAB) as u32));
                    w.write_tokens(&chunk).expect("write tokens");
                    left -= n;
                }
                w.finish().expect("finish shard");
                path
            })
            .collect();
        Shards { dir, paths }
    }

    fn loader(&self, b: usize, t: usize) -> Loader {
        let set = ShardSet::open(&self.paths, Some(VOCAB as usize)).expect("open shards");
        Loader::new(set, b, t, Order::Shuffled { seed: 7 }).expect("loader")
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn bench_loader(c: &mut Criterion, shards: &Shards) {
    let mut group = c.benchmark_group("loader_next_batch");
    for (b, t) in CONFIGS {
        let mut loader = shards.loader(b, t);
        group.throughput(Throughput::Elements((b * t) as u64));
        group.bench_function(format!("B{b}_T{t}_shuffled"), |bench| {
            bench.iter(|| std::hint::black_box(loader.next_batch().unwrap()))
        });
    }
    group.finish();
}

/// A plain timing of the same loop, for the comparison line.
fn tokens_per_second(shards: &Shards, b: usize, t: usize) -> (f64, f64) {
    let mut loader = shards.loader(b, t);
    for _ in 0..20 {
        std::hint::black_box(loader.next_batch().unwrap());
    }
    let start = Instant::now();
    let mut batches = 0u64;
    while start.elapsed().as_secs_f64() < 1.0 {
        std::hint::black_box(loader.next_batch().unwrap());
        batches += 1;
    }
    let bps = batches as f64 / start.elapsed().as_secs_f64();
    (bps, bps * (b * t) as f64)
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
        .configure_from_args()
}

fn main() {
    let t0 = Instant::now();
    let shards = Shards::write();
    println!(
        "wrote {NUM_SHARDS} uint16 shards, {} tokens, in {:.2} s",
        NUM_SHARDS * SHARD_TOKENS,
        t0.elapsed().as_secs_f64()
    );
    let t0 = Instant::now();
    let set = ShardSet::open(&shards.paths, Some(VOCAB as usize)).expect("open shards");
    let open_s = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let entropy = set.unigram_entropy().unwrap();
    println!(
        "opened + vocab-checked in {open_s:.3} s; unigram entropy {entropy:.4} nats in {:.3} s (page cache warm)",
        t0.elapsed().as_secs_f64()
    );
    drop(set);

    let mut c = config();
    bench_loader(&mut c, &shards);
    c.final_summary();

    // `cargo test --benches` runs this once without `--bench`: skip the timing there.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    for (b, t) in CONFIGS {
        let (bps, tps) = tokens_per_second(&shards, b, t);
        println!(
            "B{b} T{t} shuffled: {bps:.0} batches/s, {:.1}M tokens/s = {:.0}x the trainer's ~{TRAINER_TOKENS_PER_S:.0} tokens/s: the loader is {:.4}% of a step",
            tps / 1e6,
            tps / TRAINER_TOKENS_PER_S,
            100.0 * TRAINER_TOKENS_PER_S / tps
        );
    }
}
