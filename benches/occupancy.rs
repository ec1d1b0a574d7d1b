//! Occupancy by calculation, for when no GPU is at hand: every kernel launch of one GPT-2
//! training step (`Gpt` on `DeviceBackend`, `Precision::Bf16` unless `--f32`: zero_grads,
//! set_batch, forward_backward, grad_norm, adamw; the second step, as every later one: the
//! first also makes the bf16 working copies once) is recorded by a runtime that runs nothing
//! and holds no memory, then joined with ptxas's report of the build (registers, static shared
//! memory) into one row per kernel: launches, threads per block, dynamic shared memory, grid,
//! the blocks resident per SM and what limits them, the warps resident as % of the SM's 64, and
//! the waves the grid takes on the GPU (`backend::cuda::occupancy`: the occupancy calculator's
//! arithmetic, not a measurement; needs a build with nvcc, for ptxas's report).
//!
//!   cargo bench --bench occupancy -- [--a100] [--f32] [--batch B] [--seq T] [--model 124m|350m|774m|1558m]

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use smelt::backend::cuda::occupancy::{occupancy, parse_ptxas, SmLimits, A100, H200, PTXAS_LOG};
use smelt::backend::device::{Arch, Arg, DeviceBackend, Kernel, Precision, Runtime};
use smelt::backend::launch::LaunchDims;
use smelt::backend::tensor_map::{TensorMap, TensorMapSpec};
use smelt::backend::AdamWStep;
use smelt::error::Result;
use smelt::model::{Gpt, GptConfig};

/// A device that records launches and runs none: buffers are address ranges with no memory
/// behind them (downloads read zeros), so a full-size model costs nothing.
struct RecordingRuntime {
    /// The GPU whose kernel choice (generation) and persistent grids (SMs) to record.
    sm: SmLimits,
    next: Cell<u64>,
    launches: RefCell<Vec<(&'static Kernel, LaunchDims)>>,
}

impl Runtime for RecordingRuntime {
    type Buffer = u64;
    type Graph = ();

    fn name(&self) -> String {
        "recording (runs nothing)".into()
    }

    fn alloc(&self, bytes: usize) -> Result<u64> {
        let at = self.next.get().max(1 << 32);
        self.next
            .set(at + (bytes as u64).div_ceil(256).max(1) * 256);
        Ok(at)
    }

    fn alloc_zeroed(&self, bytes: usize) -> Result<u64> {
        self.alloc(bytes)
    }

    fn address(&self, buf: &u64) -> u64 {
        *buf
    }

    fn upload(&self, _: &mut u64, _: usize, _: &[u8]) -> Result<()> {
        Ok(())
    }

    fn download(&self, _: &u64, _: usize, dst: &mut [u8]) -> Result<()> {
        dst.fill(0);
        Ok(())
    }

    unsafe fn launch(&self, kernel: &'static Kernel, dims: LaunchDims, _: &[Arg]) -> Result<()> {
        self.launches.borrow_mut().push((kernel, dims));
        Ok(())
    }

    fn begin_capture(&self) -> Result<()> {
        Ok(())
    }

    fn end_capture(&self) -> Result<()> {
        Ok(())
    }

    fn replay(&self, _: &()) -> Result<()> {
        Ok(())
    }

    fn arch(&self) -> Arch {
        if self.sm.name == A100.name {
            Arch::Ampere
        } else {
            Arch::Hopper
        }
    }

    fn multiprocessors(&self) -> u32 {
        self.sm.sms
    }

    fn tensor_map(&self, spec: &TensorMapSpec) -> Result<TensorMap> {
        spec.validate()?;
        Ok(TensorMap([0; 16]))
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}

struct Options {
    sm: SmLimits,
    precision: Precision,
    batch: usize,
    seq: usize,
    config: GptConfig,
}

fn options() -> std::result::Result<Options, String> {
    let mut o = Options {
        sm: H200,
        precision: Precision::Bf16,
        batch: 32,
        seq: 1024,
        config: gpt2(768, 12, 12),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |what: &str| args.next().ok_or(format!("{a} needs {what}"));
        match a.as_str() {
            "--a100" => o.sm = A100,
            "--f32" => o.precision = Precision::F32,
            "--batch" => {
                o.batch = value("a number")?
                    .parse()
                    .map_err(|e| format!("--batch: {e}"))?
            }
            "--seq" => {
                o.seq = value("a number")?
                    .parse()
                    .map_err(|e| format!("--seq: {e}"))?
            }
            "--model" => {
                o.config = match value("124m, 350m, 774m or 1558m")?.as_str() {
                    "124m" => gpt2(768, 12, 12),
                    "350m" => gpt2(1024, 24, 16),
                    "774m" => gpt2(1280, 36, 20),
                    "1558m" => gpt2(1600, 48, 25),
                    m => return Err(format!("--model {m}: use 124m, 350m, 774m or 1558m")),
                }
            }
            "--bench" => {}
            "-h" | "--help" => {
                println!(
                    "{}",
                    include_str!("occupancy.rs")
                        .lines()
                        .next()
                        .unwrap_or_default()
                );
                println!("usage: cargo bench --bench occupancy -- [--a100] [--f32] [--batch B] [--seq T] [--model 124m|350m|774m|1558m]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other} (see --help)")),
        }
    }
    Ok(o)
}

/// GPT-2 of width `c`, depth `l`, `nh` heads, T 1024, the vocabulary padded to 50304.
fn gpt2(c: usize, l: usize, nh: usize) -> GptConfig {
    GptConfig {
        n_layer: l,
        n_head: nh,
        n_embd: c,
        block_size: 1024,
        vocab_size: 50304,
    }
}

/// The launches of the first training step (which also makes the bf16 working copies of the
/// weights once, after initialisation), and those of the second: a step as every later one
/// (recorded while the training pass is captured; the replays that follow run the same).
type Recorded = (usize, Vec<(&'static Kernel, LaunchDims)>);

fn record(o: &Options) -> Result<Recorded> {
    let backend = DeviceBackend::new(
        RecordingRuntime {
            sm: o.sm,
            next: Cell::default(),
            launches: RefCell::default(),
        },
        o.precision,
    );
    let mut m = Gpt::new(backend, o.config, o.batch, o.seq, true)?;
    let ids: Vec<u32> = (0..o.batch * o.seq)
        .map(|i| (i * 7919 % 50257) as u32)
        .collect();
    let mut first = 0;
    for step in 1..=2 {
        first = m.exec.backend.runtime().launches.take().len();
        m.exec.zero_grads();
        m.set_batch(&ids, Some(&ids))?;
        m.forward_backward()?;
        m.exec.grad_norm();
        let step = AdamWStep {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            step,
            grad_scale: 1.0,
        };
        m.exec.adamw(&step, 0.1);
    }
    let launches = m.exec.backend.runtime().launches.take();
    Ok((first, launches))
}

/// A kernel's launch shape: (name, threads per block, dynamic shared memory bytes).
type Shape = (&'static str, u32, u32);

fn main() {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let arch = if o.sm.sms == A100.sms {
        "sm_80"
    } else {
        "sm_90a"
    };
    let compiled: BTreeMap<String, (u32, u32)> = parse_ptxas(PTXAS_LOG)
        .into_iter()
        .filter(|c| c.arch == arch)
        .map(|c| (c.kernel, (c.registers, c.static_smem)))
        .collect();
    if compiled.is_empty() {
        eprintln!("error: this build has no ptxas report (no nvcc at build time): run `bash tools/setup_cuda.sh` and build again");
        std::process::exit(2);
    }
    let (first_step, launches) = match record(&o) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let c = o.config;
    println!(
        "# one training step of GPT-2 (L{} C{} NH{} V{}) at B={} T={}, {:?}, on an {} by calculation ({arch} registers from ptxas)",
        c.n_layer, c.n_embd, c.n_head, c.vocab_size, o.batch, o.seq, o.precision, o.sm.name
    );
    println!(
        "# the second step (as every later one); the first launched {first_step} (in Bf16 it also makes the weights' bf16 working copies, once)"
    );
    println!(
        "{:<36} {:>8} {:>7} {:>6} {:>8} {:>9} {:>5} {:>9} {:>6} {:<13} {:>7}",
        "kernel",
        "launches",
        "threads",
        "regs",
        "smem B",
        "grid",
        "blk/SM",
        "warps",
        "%64",
        "limited by",
        "waves"
    );
    // One row per kernel and launch shape (block, smem), in order of first launch.
    let mut rows: Vec<(Shape, (usize, u64))> = Vec::new();
    for (k, d) in &launches {
        let threads = d.block.x * d.block.y * d.block.z;
        let key = (k.name, threads, d.smem);
        let grid = u64::from(d.grid.x) * u64::from(d.grid.y) * u64::from(d.grid.z);
        match rows.iter_mut().find(|(r, _)| *r == key) {
            Some((_, (n, g))) => {
                *n += 1;
                *g = (*g).max(grid);
            }
            None => rows.push((key, (1, grid))),
        }
    }
    let mut status = 0;
    for ((name, threads, dyn_smem), (count, grid)) in rows {
        let Some(&(regs, static_smem)) = compiled.get(name) else {
            println!("{name:<36} not in ptxas's report for {arch}");
            status = 1;
            continue;
        };
        let smem = static_smem + dyn_smem;
        match occupancy(&o.sm, threads, regs, smem) {
            Some(occ) => {
                let waves = grid as f64 / f64::from(occ.blocks_per_sm * o.sm.sms);
                println!(
                    "{name:<36} {count:>8} {threads:>7} {regs:>6} {smem:>8} {grid:>9} {:>5} {:>9} {:>5.0}% {:<13} {waves:>7.2}",
                    occ.blocks_per_sm,
                    occ.warps_per_sm,
                    100.0 * occ.fraction(&o.sm),
                    occ.limiter.to_string(),
                );
            }
            None => {
                println!("{name:<36} {count:>8} {threads:>7} {regs:>6} {smem:>8} {grid:>9} DOES NOT FIT on one SM");
                status = 1;
            }
        }
    }
    println!("# {} launches in all", launches.len());
    std::process::exit(status);
}
