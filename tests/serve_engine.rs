//! The generation engine: continuous batching gives the same tokens as `KvModel` alone,
//! really batches, cancels, refuses when full, shuts down cleanly.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use smelt::generate::{pick_token_top_p, SampleOptions};
use smelt::infer::KvModel;
use smelt::model::hf::{self, HfModel};
use smelt::rng::Rng;
use smelt::serve::engine::{Busy, Engine, EngineConfig, FinishReason, GenEvent, GenRequest};
use tokio::sync::mpsc::UnboundedReceiver;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf_tiny")
}

fn model() -> HfModel {
    hf::load_model(&fixture_dir()).unwrap()
}

fn engine(max_batch: usize, max_queue: usize) -> Engine {
    Engine::start(
        model(),
        EngineConfig {
            max_batch,
            max_queue,
        },
    )
    .unwrap()
}

fn greedy(prompt: Vec<u32>, max_tokens: usize) -> GenRequest {
    GenRequest {
        prompt,
        max_tokens,
        temperature: 0.0,
        top_p: 1.0,
        top_k: 0,
        seed: 0,
    }
}

fn sampled(prompt: Vec<u32>, max_tokens: usize, seed: u64) -> GenRequest {
    GenRequest {
        prompt,
        max_tokens,
        temperature: 0.9,
        top_p: 0.95,
        top_k: 40,
        seed,
    }
}

/// Every event of a request, blocking until its end.
fn collect(mut rx: UnboundedReceiver<GenEvent>) -> (Vec<u32>, GenEvent) {
    let mut tokens = Vec::new();
    loop {
        match rx
            .blocking_recv()
            .expect("the engine closed the channel without an end")
        {
            GenEvent::Token(t) => tokens.push(t),
            end => return (tokens, end),
        }
    }
}

/// What `KvModel::generate` (the `generate` binary's loop) gives for `req`: tokens and
/// whether it stopped at end-of-text.
fn reference(kv: &mut KvModel, eot: u32, req: &GenRequest) -> (Vec<u32>, FinishReason) {
    let vocab = kv.config().vocab_size;
    let opts = SampleOptions {
        max_new_tokens: req.max_tokens,
        temperature: req.temperature,
        top_k: req.top_k,
        seed: req.seed,
    };
    let mut rng = Rng::new(req.seed);
    let mut out = kv
        .generate(
            &req.prompt,
            req.max_tokens,
            |l| pick_token_top_p(l, vocab, &opts, req.top_p, &mut rng),
            |id| id != eot,
        )
        .unwrap();
    if out.last() == Some(&eot) {
        out.pop();
        (out, FinishReason::EndOfText)
    } else {
        (out, FinishReason::Length)
    }
}

fn prompt(len: usize, salt: u32) -> Vec<u32> {
    (0..len as u32)
        .map(|i| 1 + (i * 37 + salt * 101) % 383)
        .collect()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "timed out waiting: {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Requests of different prompt lengths (one longer than the context) and lengths (some
/// past the context, so their windows slide), all at once.
fn mixed_requests(sample: bool) -> Vec<GenRequest> {
    let shapes = [
        (4, 20),
        (1, 90),
        (17, 45),
        (80, 30),
        (33, 64),
        (9, 3),
        (50, 70),
        (2, 1),
    ];
    shapes
        .iter()
        .enumerate()
        .map(|(i, &(len, max))| {
            let p = prompt(len, i as u32);
            if sample {
                sampled(p, max, 1000 + i as u64)
            } else {
                greedy(p, max)
            }
        })
        .collect()
}

fn check_against_kv(reqs: &[GenRequest], results: Vec<(Vec<u32>, GenEvent)>) {
    let m = model();
    let eot = m.tokenizer.eot();
    let mut kv = KvModel::new(m.config, &m.weights).unwrap();
    for (i, (req, (tokens, end))) in reqs.iter().zip(results).enumerate() {
        let (want, why) = reference(&mut kv, eot, req);
        assert_eq!(tokens, want, "request {i}");
        assert_eq!(end, GenEvent::Finished(why), "request {i}");
    }
}

#[test]
fn concurrent_greedy_equals_kv_model_greedy() {
    let reqs = mixed_requests(false);
    for (max_batch, max_queue) in [(8, 8), (3, 8), (1, 8)] {
        let e = engine(max_batch, max_queue);
        let rxs: Vec<_> = reqs.iter().map(|r| e.submit(r.clone()).unwrap()).collect();
        let results: Vec<_> = rxs.into_iter().map(collect).collect();
        check_against_kv(&reqs, results);
        e.join();
    }
}

#[test]
fn greedy_fixture_matches_transformers_through_the_engine() {
    #[derive(serde::Deserialize)]
    struct Greedy {
        max_new_tokens: usize,
        prompts: Vec<P>,
    }
    #[derive(serde::Deserialize)]
    struct P {
        prompt_ids: Vec<u32>,
        new_ids: Vec<u32>,
    }
    let text = std::fs::read_to_string(fixture_dir().join("greedy.json")).unwrap();
    let g: Greedy = serde_json::from_str(&text).unwrap();
    let e = engine(4, 4);
    let rxs: Vec<_> = g
        .prompts
        .iter()
        .map(|p| {
            e.submit(greedy(p.prompt_ids.clone(), g.max_new_tokens))
                .unwrap()
        })
        .collect();
    for (p, rx) in g.prompts.iter().zip(rxs) {
        let (tokens, end) = collect(rx);
        assert_eq!(tokens, p.new_ids);
        assert_eq!(end, GenEvent::Finished(FinishReason::Length));
    }
    e.join();
}

#[test]
fn seeded_sampling_is_reproducible_whatever_the_concurrency() {
    let reqs = mixed_requests(true);
    let mut runs = Vec::new();
    for max_batch in [8, 1] {
        let e = engine(max_batch, 8);
        let rxs: Vec<_> = reqs.iter().map(|r| e.submit(r.clone()).unwrap()).collect();
        let results: Vec<_> = rxs.into_iter().map(collect).collect();
        e.join();
        runs.push(results.clone());
        check_against_kv(&reqs, results);
    }
    assert_eq!(runs[0], runs[1]);
    // A request alone gives the same as in company.
    let e = engine(8, 8);
    let alone = collect(e.submit(reqs[2].clone()).unwrap());
    assert_eq!(alone, runs[0][2]);
    e.join();
}

#[test]
fn batching_really_batches() {
    let e = engine(8, 8);
    let reqs: Vec<_> = (0..8)
        .map(|i| greedy(prompt(5 + i, i as u32), 150))
        .collect();
    let rxs: Vec<_> = reqs.iter().map(|r| e.submit(r.clone()).unwrap()).collect();
    let results: Vec<_> = rxs.into_iter().map(collect).collect();
    e.join();
    let s = e.stats();
    let emitted: usize = results.iter().map(|r| r.0.len()).sum();
    eprintln!(
        "8 requests: {emitted} tokens emitted, {} generated, {} steps",
        s.tokens, s.steps
    );
    assert!(s.tokens as usize >= emitted);
    assert!(s.tokens >= 8 * 20, "{s:?}");
    assert!(s.steps * 3 < s.tokens, "not batched: {s:?}");
    assert_eq!((s.active, s.queued), (0, 0));
    check_against_kv(&reqs, results);
}

#[test]
fn dropping_the_receiver_frees_the_slot() {
    let e = engine(2, 0);
    let mut a = e.submit(greedy(prompt(3, 1), usize::MAX)).unwrap();
    let b = e.submit(greedy(prompt(3, 2), usize::MAX)).unwrap();
    // Both run (the fixture model never says end-of-text on these prompts, or the test
    // would see it below).
    assert!(matches!(a.blocking_recv(), Some(GenEvent::Token(_))));
    // b may still wait for the step boundary that admits it (a's first token can come first).
    wait_for("both in the batch", || e.stats().active == 2);
    assert!(e.submit(greedy(prompt(3, 3), 5)).is_err(), "full");
    drop(b);
    wait_for("b leaves the batch", || e.stats().active == 1);
    let c = e.submit(greedy(prompt(3, 3), 5)).unwrap();
    let (tokens, end) = collect(c);
    assert!(!tokens.is_empty() || end == GenEvent::Finished(FinishReason::EndOfText));
    drop(a);
    wait_for("a leaves the batch", || e.stats().active == 0);
    e.join();
}

#[test]
fn busy_when_full_and_queued_requests_wait() {
    let e = engine(1, 2);
    let a = e.submit(greedy(prompt(3, 1), usize::MAX)).unwrap();
    let b = e.submit(greedy(prompt(4, 2), 10)).unwrap();
    let c = e.submit(greedy(prompt(5, 3), 10)).unwrap();
    let r: Result<_, Busy> = e.submit(greedy(prompt(6, 4), 10));
    assert!(r.is_err());
    wait_for("one active, two queued", || {
        let s = e.stats();
        s.active == 1 && s.queued == 2
    });
    // The queue moves once the long one is cancelled.
    drop(a);
    let rb = collect(b);
    let rc = collect(c);
    check_against_kv(
        &[greedy(prompt(4, 2), 10), greedy(prompt(5, 3), 10)],
        vec![rb, rc],
    );
    assert!(e.submit(greedy(prompt(6, 4), 10)).is_ok());
    e.join();
}

#[test]
fn shutdown_finishes_in_flight_and_refuses_new() {
    let e = engine(2, 4);
    let reqs: Vec<_> = (0..4)
        .map(|i| greedy(prompt(6 + i, i as u32), 40))
        .collect();
    let rxs: Vec<_> = reqs.iter().map(|r| e.submit(r.clone()).unwrap()).collect();
    e.begin_shutdown();
    assert!(e.submit(greedy(prompt(3, 9), 5)).is_err());
    let waiter = {
        let e = e.clone();
        std::thread::spawn(move || e.join())
    };
    e.join();
    waiter.join().unwrap();
    let results: Vec<_> = rxs.into_iter().map(collect).collect();
    check_against_kv(&reqs, results);
    assert!(e.submit(greedy(prompt(3, 9), 5)).is_err());
    let s = e.stats();
    assert_eq!((s.active, s.queued), (0, 0));
}

#[test]
fn dropping_every_handle_ends_requests_with_shutdown() {
    let e = engine(1, 1);
    let a = e.submit(greedy(prompt(3, 1), usize::MAX)).unwrap();
    let b = e.submit(greedy(prompt(3, 2), usize::MAX)).unwrap();
    drop(e);
    for rx in [a, b] {
        let (_, end) = collect(rx);
        assert_eq!(end, GenEvent::Finished(FinishReason::Shutdown));
    }
}

#[test]
fn bad_requests_fail_and_zero_tokens_finish_at_once() {
    let e = engine(2, 2);
    let (t, end) = collect(e.submit(greedy(vec![], 5)).unwrap());
    assert!(t.is_empty());
    assert!(matches!(end, GenEvent::Failed(m) if m.contains("empty")));
    let (_, end) = collect(e.submit(greedy(vec![1, 384], 5)).unwrap());
    assert!(matches!(end, GenEvent::Failed(m) if m.contains("384")));
    let mut bad_t = greedy(vec![1], 5);
    bad_t.temperature = f32::NAN;
    assert!(matches!(
        collect(e.submit(bad_t).unwrap()).1,
        GenEvent::Failed(_)
    ));
    let mut bad_p = greedy(vec![1], 5);
    bad_p.top_p = 0.0;
    assert!(matches!(
        collect(e.submit(bad_p).unwrap()).1,
        GenEvent::Failed(_)
    ));
    let (t, end) = collect(e.submit(greedy(vec![1, 2], 0)).unwrap());
    assert!(t.is_empty());
    assert_eq!(end, GenEvent::Finished(FinishReason::Length));
    assert_eq!(e.config().vocab_size, 384);
    assert_eq!(e.tokenizer().eot(), model().tokenizer.eot());
    e.join();
    assert!(Engine::start(
        model(),
        EngineConfig {
            max_batch: 0,
            max_queue: 1
        }
    )
    .is_err());
}

/// Tokens per second with 1 and with 8 concurrent requests (printed; run with --nocapture).
#[test]
fn throughput_one_vs_eight_concurrent() {
    for n in [1usize, 8] {
        let e = engine(8, 8);
        let t0 = Instant::now();
        let rxs: Vec<_> = (0..n)
            .map(|i| e.submit(greedy(prompt(8, i as u32), 200)).unwrap())
            .collect();
        let total: usize = rxs.into_iter().map(|rx| collect(rx).0.len()).sum();
        let secs = t0.elapsed().as_secs_f64();
        e.join();
        let s = e.stats();
        eprintln!(
            "hf_tiny, {n} concurrent: {total} tokens in {secs:.3} s = {:.0} tokens/s ({} steps)",
            total as f64 / secs,
            s.steps
        );
    }
}

/// The same on a GPT-2-small-sized random model (12 layers, 768 wide, 50257 tokens):
/// `cargo test --release --test serve_engine -- --ignored --nocapture`.
#[test]
#[ignore = "slow: builds a 124M-parameter model"]
fn throughput_gpt2_small_sized_random_model() {
    let config = smelt::model::GptConfig {
        n_layer: 12,
        n_head: 12,
        n_embd: 768,
        block_size: 1024,
        vocab_size: 50257,
    };
    let mut rng = Rng::new(7);
    let weights = hf::expected_shapes(&config)
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let v = (0..n)
                .map(|_| (rng.uniform() as f32 - 0.5) * 0.04)
                .collect();
            (name, (shape, v))
        })
        .collect();
    let tokenizer = model().tokenizer;
    let e = Engine::start(
        HfModel {
            config,
            weights,
            tokenizer,
        },
        EngineConfig {
            max_batch: 8,
            max_queue: 8,
        },
    )
    .unwrap();
    for n in [1usize, 8] {
        let s0 = e.stats();
        let t0 = Instant::now();
        let rxs: Vec<_> = (0..n)
            .map(|i| e.submit(greedy(prompt(8, i as u32), 24)).unwrap())
            .collect();
        let total: usize = rxs.into_iter().map(|rx| collect(rx).0.len()).sum();
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "124M random, {n} concurrent: {total} tokens in {secs:.2} s = {:.1} tokens/s ({} steps)",
            total as f64 / secs,
            e.stats().steps - s0.steps
        );
    }
    e.join();
}
