//! Training batches from token shards, read window by window (see [`Shard`]: a shard that
//! changes under a running loader is an error, never a crash).
//!
//! A split is a [`ShardSet`]: its shards in order. For a sequence length `t`, each shard is
//! cut into non-overlapping windows of `t + 1` tokens with stride `t` (window `w` covers
//! tokens `[w·t, w·t + t]`: `t` inputs and the `t` targets shifted by one), so a shard of
//! `len` tokens has `(len − 1) / t` windows and no window spans two shards. Windows are
//! numbered globally across the set, shard by shard; a prefix sum of the per-shard counts
//! and a binary search map a global window to (shard, offset).
//!
//! A [`Loader`] walks the windows epoch after epoch, forever, in [`Order::Sequential`] or
//! [`Order::Shuffled`] order. A shuffled epoch is a Fisher–Yates permutation of all the
//! set's windows, drawn from [`Rng`] seeded by (seed, epoch): different in every epoch,
//! identical for the same seed. The permutation is held as a `Vec<u64>` (8 bytes per
//! window: 80 MB for 10 billion tokens at `t` = 1024) and redrawn when the epoch changes.
//! The loader's [`LoaderPosition`] (epoch, index into the epoch's order) is all the state
//! there is, so a resumed run that seeks to it sees exactly the batches it would have seen.

use rayon::prelude::*;

use crate::data::batches::Batch;
use crate::data::shard::Shard;
use crate::error::{Error, Result};
use crate::rng::Rng;

/// Shards of one split, in order.
#[derive(Debug)]
pub struct ShardSet {
    shards: Vec<Shard>,
}

impl ShardSet {
    /// Opens (and validates, see [`Shard::open`]) every shard, checking token ids against
    /// `vocab_size` when given. Error if `paths` is empty.
    pub fn open(paths: &[std::path::PathBuf], vocab_size: Option<usize>) -> Result<Self> {
        if paths.is_empty() {
            return Err(Error::Data(
                "no shard files given: the split has no shards (prepare the data first)".into(),
            ));
        }
        // Validation scans every token when vocab_size is set: open the shards in
        // parallel, then report the first failing one in order (deterministic).
        let opened: Vec<Result<Shard>> = paths
            .par_iter()
            .map(|p| Shard::open(p, vocab_size))
            .collect();
        let shards = opened.into_iter().collect::<Result<Vec<_>>>()?;
        Ok(ShardSet { shards })
    }

    /// Total tokens over all shards.
    pub fn num_tokens(&self) -> u64 {
        self.shards.iter().map(|s| s.len() as u64).sum()
    }

    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Number of training windows for sequence length t: per shard, non-overlapping windows
    /// of t+1 tokens with stride t (window w covers tokens [w*t, w*t+t]), i.e. (len-1)/t per
    /// shard; windows never span two shards. 0 when t is 0.
    pub fn num_windows(&self, t: usize) -> u64 {
        self.shards.iter().map(|s| shard_windows(s, t)).sum()
    }

    /// Entropy in nats of the token frequencies over the whole set: the loss of the best
    /// model that ignores context. Streams over the shards (in parallel blocks); 0 for an
    /// empty set.
    pub fn unigram_entropy(&self) -> Result<f64> {
        const PIECE: usize = 1 << 22;
        let pieces: Vec<(usize, usize, usize)> = self
            .shards
            .iter()
            .enumerate()
            .flat_map(|(i, s)| {
                (0..s.len())
                    .step_by(PIECE)
                    .map(move |start| (i, start, PIECE.min(s.len() - start)))
            })
            .collect();
        let counts = pieces
            .par_iter()
            .try_fold(Counts::default, |mut c, &(i, start, len)| {
                c.add(&self.shards[i], start, len)?;
                Ok(c)
            })
            .try_reduce(Counts::default, |a, b| Ok(a.merge(b)))?;
        Ok(counts.entropy())
    }

    /// The set named in an error: its only shard, or first … last (count).
    fn describe(&self) -> String {
        match self.shards.as_slice() {
            [] => "empty shard set".into(),
            [only] => only.path().display().to_string(),
            [first, .., last] => format!(
                "{} … {} ({} shards)",
                first.path().display(),
                last.path().display(),
                self.shards.len()
            ),
        }
    }
}

fn shard_windows(s: &Shard, t: usize) -> u64 {
    s.len()
        .saturating_sub(1)
        .checked_div(t)
        .map_or(0, |w| w as u64)
}

/// Token counts: dense for ids below `DENSE` (every GPT-2/Llama-sized vocabulary), a map
/// above.
#[derive(Default)]
struct Counts {
    dense: Vec<u64>,
    sparse: std::collections::HashMap<u32, u64>,
}

impl Counts {
    const DENSE: usize = 1 << 18;

    fn add(&mut self, shard: &Shard, start: usize, len: usize) -> Result<()> {
        const BLOCK: usize = 1 << 16;
        if self.dense.is_empty() {
            self.dense = vec![0; Self::DENSE];
        }
        let mut buf = Vec::with_capacity(BLOCK);
        let mut at = start;
        while at < start + len {
            let n = BLOCK.min(start + len - at);
            buf.clear();
            shard.read_into(at, n, &mut buf)?;
            for &t in &buf {
                match self.dense.get_mut(t as usize) {
                    Some(c) => *c += 1,
                    None => *self.sparse.entry(t).or_default() += 1,
                }
            }
            at += n;
        }
        Ok(())
    }

    fn merge(mut self, other: Counts) -> Counts {
        if self.dense.is_empty() {
            self.dense = other.dense;
        } else if !other.dense.is_empty() {
            for (a, b) in self.dense.iter_mut().zip(&other.dense) {
                *a += b;
            }
        }
        for (t, c) in other.sparse {
            *self.sparse.entry(t).or_default() += c;
        }
        self
    }

    fn entropy(&self) -> f64 {
        let n: u64 = self.dense.iter().sum::<u64>() + self.sparse.values().sum::<u64>();
        if n == 0 {
            return 0.0;
        }
        let n = n as f64;
        self.dense
            .iter()
            .chain(self.sparse.values())
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = c as f64 / n;
                -p * p.ln()
            })
            .sum()
    }
}

/// Global window index → (shard, first token) for one sequence length.
struct WindowIndex {
    /// prefix[s] = windows in shards before s; prefix[shards] = total.
    prefix: Vec<u64>,
    seq_len: usize,
}

impl WindowIndex {
    fn new(set: &ShardSet, seq_len: usize) -> Self {
        let mut prefix = Vec::with_capacity(set.shards.len() + 1);
        let mut total = 0u64;
        prefix.push(0);
        for s in &set.shards {
            total += shard_windows(s, seq_len);
            prefix.push(total);
        }
        WindowIndex { prefix, seq_len }
    }

    fn total(&self) -> u64 {
        self.prefix.last().copied().unwrap_or(0)
    }

    /// Appends window `g`'s inputs and targets to the batch (one read of t+1 tokens).
    fn read(&self, set: &ShardSet, g: u64, batch: &mut Batch) -> Result<()> {
        // The last shard whose first window is <= g; shards without windows share their
        // prefix value with the next shard, which is the one that holds g.
        let s = self.prefix.partition_point(|&p| p <= g) - 1;
        let t = self.seq_len;
        let start = (g - self.prefix[s]) as usize * t;
        let shard = &set.shards[s];
        let base = batch.inputs.len();
        shard.read_into(start, t + 1, &mut batch.inputs)?;
        let last = batch.inputs.pop().expect("t + 1 tokens were read");
        batch.targets.extend_from_slice(&batch.inputs[base + 1..]);
        batch.targets.push(last);
        Ok(())
    }
}

fn empty_batch(batch_size: usize, seq_len: usize) -> Batch {
    Batch {
        inputs: Vec::with_capacity(batch_size * seq_len),
        targets: Vec::with_capacity(batch_size * seq_len),
    }
}

/// The order in which an epoch visits the windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Order {
    /// Window 0, 1, 2, … every epoch.
    Sequential,
    /// A fresh permutation of all windows every epoch, from (seed, epoch).
    Shuffled { seed: u64 },
}

/// Where the loader stands: part of the training state, so a resumed run sees exactly the
/// batches it would have seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LoaderPosition {
    pub epoch: u64,
    /// Index into the epoch's order (not a window number when shuffled).
    pub window: u64,
}

/// Endless training batches over a [`ShardSet`].
pub struct Loader {
    set: ShardSet,
    index: WindowIndex,
    batch_size: usize,
    seq_len: usize,
    order: Order,
    pos: LoaderPosition,
    /// The permutation of the epoch `perm_epoch` (Shuffled only).
    perm: Vec<u64>,
    perm_epoch: Option<u64>,
}

/// The seed of one shuffled epoch: a hash of the run's seed plus the epoch (`Rng::new`
/// mixes its seed with SplitMix64, so consecutive epochs get unrelated streams).
fn epoch_seed(seed: u64, epoch: u64) -> u64 {
    Rng::new(seed).next_u64().wrapping_add(epoch)
}

impl Loader {
    /// Error (one line) if `batch_size` or `seq_len` is 0, or if the set has no window of
    /// seq_len+1 tokens or fewer windows than batch_size.
    pub fn new(set: ShardSet, batch_size: usize, seq_len: usize, order: Order) -> Result<Self> {
        if batch_size == 0 || seq_len == 0 {
            return Err(Error::Data(format!(
                "{}: batch_size ({batch_size}) and seq_len ({seq_len}) must both be at least 1",
                set.describe()
            )));
        }
        let index = WindowIndex::new(&set, seq_len);
        let n = index.total();
        if n == 0 {
            let longest = set.shards.iter().map(Shard::len).max().unwrap_or(0);
            return Err(Error::Data(format!(
                "{}: no window of {} tokens (seq_len {seq_len} + 1): the longest shard has {longest} tokens; use more data or a shorter seq_len",
                set.describe(),
                seq_len + 1
            )));
        }
        if n < batch_size as u64 {
            return Err(Error::Data(format!(
                "{}: only {n} windows of {} tokens (seq_len {seq_len} + 1) but batch_size is {batch_size}; use more data, a smaller batch or a shorter seq_len",
                set.describe(),
                seq_len + 1
            )));
        }
        Ok(Loader {
            set,
            index,
            batch_size,
            seq_len,
            order,
            pos: LoaderPosition::default(),
            perm: Vec::new(),
            perm_epoch: None,
        })
    }

    /// The window at position `i` of the current epoch's order.
    fn window_at(&mut self, i: u64) -> u64 {
        match self.order {
            Order::Sequential => i,
            Order::Shuffled { seed } => {
                if self.perm_epoch != Some(self.pos.epoch) {
                    let n = self.index.total();
                    self.perm.clear();
                    self.perm.extend(0..n);
                    let mut rng = Rng::new(epoch_seed(seed, self.pos.epoch));
                    for j in (1..n as usize).rev() {
                        let k = rng.below(j as u64 + 1) as usize;
                        self.perm.swap(j, k);
                    }
                    self.perm_epoch = Some(self.pos.epoch);
                }
                self.perm[i as usize]
            }
        }
    }

    /// The next batch_size windows, advancing the position; at the end of an epoch wraps
    /// to the next (a batch may straddle two epochs). Error if a shard can no longer be read
    /// (truncated since it was opened); the position then stays where it was.
    pub fn next_batch(&mut self) -> Result<Batch> {
        let mut batch = empty_batch(self.batch_size, self.seq_len);
        let n = self.index.total();
        let start = self.pos;
        for _ in 0..self.batch_size {
            let g = self.window_at(self.pos.window);
            if let Err(e) = self.index.read(&self.set, g, &mut batch) {
                self.pos = start;
                return Err(e);
            }
            self.pos.window += 1;
            if self.pos.window >= n {
                self.pos.epoch += 1;
                self.pos.window = 0;
            }
        }
        Ok(batch)
    }

    /// Where the loader stands (the window is always < num_windows).
    pub fn position(&self) -> LoaderPosition {
        self.pos
    }

    /// Moves to a saved position. Error if its window is not < num_windows (the data or
    /// seq_len changed since it was saved).
    pub fn seek(&mut self, pos: LoaderPosition) -> Result<()> {
        let n = self.index.total();
        if pos.window >= n {
            return Err(Error::Data(format!(
                "{}: cannot seek to window {} of epoch {}: there are only {n} windows of {} tokens (did the data or seq_len change since the position was saved?)",
                self.set.describe(),
                pos.window,
                pos.epoch,
                self.seq_len + 1
            )));
        }
        self.pos = pos;
        Ok(())
    }

    /// Windows per epoch.
    pub fn num_windows(&self) -> u64 {
        self.index.total()
    }

    /// epoch + window / num_windows.
    pub fn epoch_fraction(&self) -> f64 {
        self.pos.epoch as f64 + self.pos.window as f64 / self.index.total() as f64
    }

    /// The shards this loader reads.
    pub fn set(&self) -> &ShardSet {
        &self.set
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    pub fn order(&self) -> Order {
        self.order
    }
}

/// Deterministic validation batches: windows in order from the start (Sequential), at
/// most max_batches full batches (fewer if the set is short; none if batch_size or seq_len
/// is 0). Error if a shard can no longer be read.
pub fn sequential_batches(
    set: &ShardSet,
    batch_size: usize,
    seq_len: usize,
    max_batches: usize,
) -> Result<Vec<Batch>> {
    if batch_size == 0 || seq_len == 0 {
        return Ok(Vec::new());
    }
    let index = WindowIndex::new(set, seq_len);
    let count = (index.total() / batch_size as u64).min(max_batches as u64);
    (0..count)
        .map(|b| {
            let mut batch = empty_batch(batch_size, seq_len);
            for j in 0..batch_size as u64 {
                index.read(set, b * batch_size as u64 + j, &mut batch)?;
            }
            Ok(batch)
        })
        .collect()
}
