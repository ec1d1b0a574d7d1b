//! Tokenizer throughput over data/shakespeare (42 plays, 5.06 MB), side by side on the same
//! text: `encode_batch` of the GPT-2 tokenizer and of a 2048-token BPE trained on the corpus
//! (our fast path), the same through `tokenizers`' own `encode_batch_fast`, and tiktoken-rs's
//! `encode_ordinary` over the plays in parallel (GPT-2 only). BPE training is timed
//! separately. Ends with a MB/s table (input bytes per second of wall time, rayon's global
//! pool: all cores unless RAYON_NUM_THREADS says otherwise). Python `tokenizers` and
//! `tiktoken` on the same text: tools/bench_tokenizers.sh.
//!
//! cargo bench --bench tokenize

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use rayon::prelude::*;
use smelt::data::Tokenizer;

const BPE_VOCAB: usize = 2048;

fn plays() -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/shakespeare");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("data/shakespeare")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("read play"))
        .collect()
}

type Encoder<'a> = Box<dyn Fn(&[String]) -> usize + 'a>;

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args()
}

/// Median seconds of `runs` calls.
fn median_secs(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[runs / 2]
}

fn main() {
    let docs = plays();
    let bytes: usize = docs.iter().map(|d| d.len()).sum();
    let mb = bytes as f64 / 1e6;
    println!(
        "corpus: {} documents, {mb:.2} MB; rayon threads: {}",
        docs.len(),
        rayon::current_num_threads()
    );

    let t0 = Instant::now();
    let gpt2 = Tokenizer::gpt2().expect("gpt2");
    println!(
        "Tokenizer::gpt2(): built in {:.2} s (once per process)",
        t0.elapsed().as_secs_f64()
    );
    let t0 = Instant::now();
    let bpe = Tokenizer::train(docs.iter(), BPE_VOCAB).expect("train");
    println!(
        "Tokenizer::train: {BPE_VOCAB}-token BPE on the corpus in {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    let tiktoken = tiktoken_rs::r50k_base().expect("r50k_base");

    let encoders: Vec<(&str, Encoder)> = vec![
        (
            "gpt2 encode_batch (ours)",
            Box::new(|d| gpt2.encode_batch(d).expect("encode").len()),
        ),
        (
            "gpt2 tokenizers encode_batch_fast",
            Box::new(|d| gpt2.encode_batch_reference(d).expect("encode").len()),
        ),
        (
            "gpt2 tiktoken-rs encode_ordinary",
            Box::new(|d| {
                d.par_iter()
                    .map(|t| tiktoken.encode_ordinary(t))
                    .collect::<Vec<_>>()
                    .len()
            }),
        ),
        (
            "bpe2048 encode_batch (ours)",
            Box::new(|d| bpe.encode_batch(d).expect("encode").len()),
        ),
        (
            "bpe2048 tokenizers encode_batch_fast",
            Box::new(|d| bpe.encode_batch_reference(d).expect("encode").len()),
        ),
    ];

    let mut c = config();
    {
        let mut group = c.benchmark_group("encode_shakespeare");
        group.throughput(Throughput::Bytes(bytes as u64));
        for (name, f) in &encoders {
            group.bench_function(*name, |b| b.iter(|| std::hint::black_box(f(&docs))));
        }
        group.finish();
    }
    {
        let mut group = c.benchmark_group("train_bpe");
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(10));
        group.bench_function(format!("vocab{BPE_VOCAB}_shakespeare"), |b| {
            b.iter(|| Tokenizer::train(docs.iter(), BPE_VOCAB).expect("train"))
        });
        group.finish();
    }
    c.final_summary();

    // `cargo test --benches` runs this once without `--bench`: skip the table there.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let tokens = gpt2.encode_batch(&docs).expect("encode");
    let n_gpt2: usize = tokens.iter().map(|t| t.len()).sum();
    let n_bpe: usize = bpe
        .encode_batch(&docs)
        .expect("encode")
        .iter()
        .map(|t| t.len())
        .sum();
    println!(
        "\n{:<38} {:>8} {:>10}   ({mb:.2} MB, {} threads; gpt2 {n_gpt2} tokens, bpe {n_bpe})",
        "encoder",
        "MB/s",
        "Mtok/s",
        rayon::current_num_threads()
    );
    for (name, f) in &encoders {
        let s = median_secs(5, || {
            std::hint::black_box(f(&docs));
        });
        let n = if name.starts_with("gpt2") {
            n_gpt2
        } else {
            n_bpe
        };
        println!("{name:<38} {:>8.1} {:>10.2}", mb / s, n as f64 / s / 1e6);
    }
}
