//! The shard loader: which windows batches hold, epoch orders, exact resume, validation
//! batches, unigram entropy, and its errors.

use std::collections::BTreeSet;
use std::path::PathBuf;

use smelt::data::batches::Batch;
use smelt::data::loader::{sequential_batches, Loader, LoaderPosition, Order, ShardSet};
use smelt::data::shard::{ShardWriter, TokenWidth};

mod common;
use common::TempDir;

/// Token value that names its place: shard s, position i.
fn tag(s: usize, i: usize) -> u32 {
    (s * 1_000_000 + i) as u32
}

/// Writes shards of the given lengths whose tokens are `tag(s, i)`.
fn write_tagged(dir: &TempDir, lens: &[usize]) -> Vec<PathBuf> {
    lens.iter()
        .enumerate()
        .map(|(s, &len)| {
            let tokens: Vec<u32> = (0..len).map(|i| tag(s, i)).collect();
            write_shard(dir, s, &tokens, TokenWidth::U32)
        })
        .collect()
}

fn write_shard(dir: &TempDir, s: usize, tokens: &[u32], width: TokenWidth) -> PathBuf {
    let path = dir.0.join(format!("train_{s:06}.bin"));
    let mut w = ShardWriter::create(&path, width).unwrap();
    w.write_tokens(tokens).unwrap();
    w.finish().unwrap();
    path
}

/// Every (shard, first token) window in sequential order for these lengths.
fn all_windows(lens: &[usize], t: usize) -> Vec<(usize, usize)> {
    lens.iter()
        .enumerate()
        .flat_map(|(s, &len)| (0..len.saturating_sub(1) / t).map(move |w| (s, w * t)))
        .collect()
}

/// Checks every row of a batch is a proper window and returns the rows as (shard, start).
fn rows(batch: &Batch, b: usize, t: usize) -> Vec<(usize, usize)> {
    assert_eq!(batch.inputs.len(), b * t);
    assert_eq!(batch.targets.len(), b * t);
    (0..b)
        .map(|r| {
            let inp = &batch.inputs[r * t..(r + 1) * t];
            let tgt = &batch.targets[r * t..(r + 1) * t];
            let s = (inp[0] / 1_000_000) as usize;
            let start = (inp[0] % 1_000_000) as usize;
            assert_eq!(start % t, 0, "window starts at a multiple of t");
            for k in 0..t {
                // consecutive tokens of one shard: never crossing into the next
                assert_eq!(inp[k], tag(s, start + k));
                assert_eq!(tgt[k], tag(s, start + k + 1));
            }
            (s, start)
        })
        .collect()
}

const LENS: [usize; 6] = [50, 1, 0, 37, 33, 9];
const T: usize = 8;

#[test]
fn sequential_windows_cover_everything_once_per_epoch() {
    let dir = TempDir::new("seq");
    let paths = write_tagged(&dir, &LENS);
    let set = ShardSet::open(&paths, None).unwrap();
    assert_eq!(set.num_tokens(), LENS.iter().sum::<usize>() as u64);
    assert_eq!(set.shards().len(), LENS.len());
    let expected = all_windows(&LENS, T);
    // 49/8 + 0 + 0 + 36/8 + 32/8 + 8/8 = 6 + 4 + 4 + 1
    assert_eq!(expected.len(), 15);
    assert_eq!(set.num_windows(T), 15);
    assert_eq!(set.num_windows(1), 49 + 36 + 32 + 8);

    // batch 5 divides 15: three batches per epoch, the same every epoch
    let mut loader = Loader::new(set, 5, T, Order::Sequential).unwrap();
    assert_eq!(loader.num_windows(), 15);
    for epoch in 0..3u64 {
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.extend(rows(&loader.next_batch().unwrap(), 5, T));
        }
        assert_eq!(seen, expected);
        assert_eq!(
            loader.position(),
            LoaderPosition {
                epoch: epoch + 1,
                window: 0
            }
        );
    }

    // batch 4 does not: batches straddle epochs and the stream is still the cycle
    let set = ShardSet::open(&paths, None).unwrap();
    let mut loader = Loader::new(set, 4, T, Order::Sequential).unwrap();
    let mut seen = Vec::new();
    for _ in 0..15 {
        seen.extend(rows(&loader.next_batch().unwrap(), 4, T));
    }
    let cycle: Vec<_> = expected.iter().cycle().take(60).copied().collect();
    assert_eq!(seen, cycle);
    assert_eq!(
        loader.position(),
        LoaderPosition {
            epoch: 4,
            window: 0
        }
    );
    loader.next_batch().unwrap();
    assert_eq!(
        loader.position(),
        LoaderPosition {
            epoch: 4,
            window: 4
        }
    );
    assert!((loader.epoch_fraction() - (4.0 + 4.0 / 15.0)).abs() < 1e-12);
}

#[test]
fn shuffled_is_a_fresh_permutation_every_epoch() {
    let dir = TempDir::new("shuf");
    let lens = [1000, 3, 517, 0, 801];
    let t = 16;
    let paths = write_tagged(&dir, &lens);
    let expected: BTreeSet<_> = all_windows(&lens, t).into_iter().collect();
    let n = expected.len();
    assert_eq!(n, 62 + 32 + 50);

    let epochs = |seed: u64, count: usize| -> Vec<Vec<(usize, usize)>> {
        let set = ShardSet::open(&paths, None).unwrap();
        let mut loader = Loader::new(set, 8, t, Order::Shuffled { seed }).unwrap();
        // 144 windows = 18 batches of 8 per epoch
        (0..count)
            .map(|e| {
                let order: Vec<_> = (0..18)
                    .flat_map(|_| rows(&loader.next_batch().unwrap(), 8, t))
                    .collect();
                assert_eq!(
                    loader.position(),
                    LoaderPosition {
                        epoch: e as u64 + 1,
                        window: 0
                    }
                );
                order
            })
            .collect()
    };
    let a = epochs(7, 3);
    for order in &a {
        assert_eq!(order.len(), n);
        let set: BTreeSet<_> = order.iter().copied().collect();
        assert_eq!(set, expected, "each epoch visits every window exactly once");
    }
    assert_ne!(a[0], a[1], "epochs differ");
    assert_ne!(a[1], a[2]);
    let sequential: Vec<_> = all_windows(&lens, t);
    assert_ne!(a[0], sequential, "shuffled");
    assert_eq!(a, epochs(7, 3), "same seed, same order");
    let b = epochs(8, 2);
    assert_ne!(a[0], b[0], "different seeds, different orders");
    assert_ne!(a[1], b[1]);
}

/// Runs `first` batches, saves the position (through JSON, as a checkpoint would), seeks a
/// fresh loader to it and checks the next `then` batches match an uninterrupted run.
fn check_resume(paths: &[PathBuf], order: Order, b: usize, first: usize, then: usize) {
    let make = || Loader::new(ShardSet::open(paths, None).unwrap(), b, T, order).unwrap();
    let mut straight = make();
    let reference: Vec<Batch> = (0..first + then)
        .map(|_| straight.next_batch().unwrap())
        .collect();

    let mut before = make();
    for _ in 0..first {
        before.next_batch().unwrap();
    }
    let saved = serde_json::to_string(&before.position()).unwrap();
    drop(before);

    let mut resumed = make();
    let pos: LoaderPosition = serde_json::from_str(&saved).unwrap();
    resumed.seek(pos).unwrap();
    assert_eq!(resumed.position(), pos);
    for (i, want) in reference[first..].iter().enumerate() {
        assert_eq!(
            &resumed.next_batch().unwrap(),
            want,
            "{order:?} b={b}: batch {} after resuming at {pos:?}",
            first + i
        );
    }
    assert_eq!(resumed.position(), straight.position());
}

#[test]
fn resume_from_a_saved_position_replays_exactly() {
    let dir = TempDir::new("resume");
    let paths = write_tagged(&dir, &LENS); // 15 windows
    for order in [
        Order::Sequential,
        Order::Shuffled { seed: 3 },
        Order::Shuffled { seed: 99 },
    ] {
        for (b, first, then) in [
            (4, 2, 6), // mid-epoch; later batches straddle epochs
            (4, 3, 5), // saved at epoch 0 window 12: the next batch straddles
            (5, 3, 4), // saved exactly on an epoch boundary
            (5, 7, 4), // saved in epoch 2, to an epoch the fresh loader never drew
            (3, 0, 11),
        ] {
            check_resume(&paths, order, b, first, then);
        }
    }
}

#[test]
fn seek_rejects_a_window_past_the_end() {
    let dir = TempDir::new("seek");
    let paths = write_tagged(&dir, &LENS);
    let mut loader = Loader::new(
        ShardSet::open(&paths, None).unwrap(),
        2,
        T,
        Order::Shuffled { seed: 1 },
    )
    .unwrap();
    let err = loader
        .seek(LoaderPosition {
            epoch: 2,
            window: 15,
        })
        .unwrap_err()
        .to_string();
    assert!(!err.contains('\n'));
    assert!(err.contains("train_000000.bin"), "{err}");
    assert!(
        err.contains("cannot seek to window 15 of epoch 2: there are only 15 windows of 9 tokens"),
        "{err}"
    );
    assert_eq!(loader.position(), LoaderPosition::default());
    loader
        .seek(LoaderPosition {
            epoch: 2,
            window: 14,
        })
        .unwrap();
    assert!((loader.epoch_fraction() - (2.0 + 14.0 / 15.0)).abs() < 1e-12);
}

#[test]
fn sequential_batches_are_deterministic_full_batches() {
    let dir = TempDir::new("val");
    let paths = write_tagged(&dir, &LENS);
    let set = ShardSet::open(&paths, None).unwrap();
    let a = sequential_batches(&set, 4, T, 100).unwrap();
    assert_eq!(a.len(), 3, "15 windows hold 3 full batches of 4");
    assert_eq!(a, sequential_batches(&set, 4, T, 100).unwrap());
    assert_eq!(sequential_batches(&set, 4, T, 2).unwrap(), a[..2].to_vec());
    assert!(sequential_batches(&set, 4, T, 0).unwrap().is_empty());
    assert!(sequential_batches(&set, 16, T, 5).unwrap().is_empty());
    let seen: Vec<_> = a.iter().flat_map(|batch| rows(batch, 4, T)).collect();
    assert_eq!(seen, all_windows(&LENS, T)[..12].to_vec());
    // the same windows as a sequential loader's first epoch
    let mut loader = Loader::new(set, 4, T, Order::Sequential).unwrap();
    for batch in &a {
        assert_eq!(&loader.next_batch().unwrap(), batch);
    }
}

#[test]
fn unigram_entropy_of_known_streams() {
    let dir = TempDir::new("entropy");
    // uniform over 4 ids, split unevenly over two uint16 shards
    let stream: Vec<u32> = (0..4).cycle().take(400).collect();
    let p0 = write_shard(&dir, 0, &stream[..123], TokenWidth::U16);
    let p1 = write_shard(&dir, 1, &stream[123..], TokenWidth::U16);
    let set = ShardSet::open(&[p0, p1], Some(4)).unwrap();
    assert!((set.unigram_entropy().unwrap() - 4f64.ln()).abs() < 1e-12);

    // p = (1/2, 1/4, 1/4) → 1.5 ln 2, with ids beyond any dense table (uint32 shard)
    let dir = TempDir::new("entropy32");
    let ids = [7u32, 4_000_000_000, 7, 300_000];
    let stream: Vec<u32> = ids.iter().cycle().take(4000).copied().collect();
    let p = write_shard(&dir, 0, &stream, TokenWidth::U32);
    let set = ShardSet::open(&[p], None).unwrap();
    assert!((set.unigram_entropy().unwrap() - 1.5 * 2f64.ln()).abs() < 1e-12);

    // one id only: zero; many shards of a larger stream agree with a direct count
    let dir = TempDir::new("entropy_big");
    let mut rng = smelt::rng::Rng::new(5);
    let stream: Vec<u32> = (0..5_000_000)
        .map(|_| (rng.below(300) * rng.below(300)) as u32)
        .collect();
    let paths = vec![
        write_shard(&dir, 0, &stream[..4_500_000], TokenWidth::U32),
        write_shard(&dir, 1, &stream[4_500_000..], TokenWidth::U32),
    ];
    let mut counts = std::collections::HashMap::<u32, u64>::new();
    for &t in &stream {
        *counts.entry(t).or_default() += 1;
    }
    let n = stream.len() as f64;
    let direct: f64 = counts
        .values()
        .map(|&c| -(c as f64 / n) * (c as f64 / n).ln())
        .sum();
    let set = ShardSet::open(&paths, None).unwrap();
    assert!((set.unigram_entropy().unwrap() - direct).abs() < 1e-9);
    let p = write_shard(&dir, 2, &[42; 10], TokenWidth::U16);
    assert_eq!(
        ShardSet::open(&[p], None)
            .unwrap()
            .unigram_entropy()
            .unwrap(),
        0.0
    );
}

#[test]
fn errors_are_one_clear_line() {
    let one_line = |e: smelt::Error| {
        let m = e.to_string();
        assert!(!m.contains('\n'), "{m}");
        m
    };
    let m = one_line(ShardSet::open(&[], None).err().unwrap());
    assert!(m.contains("no shard files given"), "{m}");

    let dir = TempDir::new("errors");
    let paths = write_tagged(&dir, &[9, 5, 9]); // t = 8: 2 windows
    let open = || ShardSet::open(&paths, None).unwrap();

    let m = one_line(Loader::new(open(), 1, 9, Order::Sequential).err().unwrap());
    assert!(m.contains("train_000000.bin … "), "{m}");
    assert!(m.contains("train_000002.bin (3 shards)"), "{m}");
    assert!(
        m.contains("no window of 10 tokens (seq_len 9 + 1): the longest shard has 9 tokens"),
        "{m}"
    );

    let m = one_line(Loader::new(open(), 3, 8, Order::Sequential).err().unwrap());
    assert!(
        m.contains("only 2 windows of 9 tokens (seq_len 8 + 1) but batch_size is 3"),
        "{m}"
    );

    let m = one_line(Loader::new(open(), 0, 8, Order::Sequential).err().unwrap());
    assert!(m.contains("batch_size (0)"), "{m}");
    let m = one_line(Loader::new(open(), 1, 0, Order::Sequential).err().unwrap());
    assert!(m.contains("seq_len (0)"), "{m}");
    assert_eq!(open().num_windows(0), 0);

    // exactly enough works
    let mut loader = Loader::new(open(), 2, 8, Order::Shuffled { seed: 0 }).unwrap();
    let mut seen = rows(&loader.next_batch().unwrap(), 2, 8);
    seen.sort();
    assert_eq!(seen, vec![(0, 0), (2, 0)]);

    // a bad shard in the set is reported by name, the first one in order
    let bad = dir.0.join("bad.bin");
    std::fs::write(&bad, b"not a shard").unwrap();
    let mut with_bad = paths.clone();
    with_bad.insert(1, bad);
    let m = one_line(ShardSet::open(&with_bad, None).err().unwrap());
    assert!(m.contains("bad.bin"), "{m}");
    let m = one_line(ShardSet::open(&paths, Some(1_000_004)).err().unwrap());
    assert!(
        m.contains("train_000001.bin: token id 1000004 at position 4"),
        "{m}"
    );
}
