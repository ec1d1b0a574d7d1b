//! What ptxas reports for each kernel of the fatbin (registers, static shared memory, per
//! architecture), and the occupancy that gives on a GPU by calculation: how many blocks of a
//! launch fit on one SM at once, and what limits them. This is how kernels are judged when no
//! GPU is at hand (`cargo bench --bench occupancy` prints it for a GPT-2 training step); it is
//! the CUDA occupancy calculator's arithmetic, not a measurement.

/// ptxas's report of the build (`-Xptxas -v`), empty when the crate was built without nvcc.
#[cfg(smelt_fatbin)]
pub const PTXAS_LOG: &str = include_str!(concat!(env!("OUT_DIR"), "/ptxas.log"));
#[cfg(not(smelt_fatbin))]
pub const PTXAS_LOG: &str = "";

/// One kernel compiled for one architecture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compiled {
    pub kernel: String,
    /// `sm_80`, `sm_90a`.
    pub arch: String,
    pub registers: u32,
    /// Bytes of `__shared__` arrays (dynamic shared memory comes with each launch).
    pub static_smem: u32,
    pub spill_bytes: u32,
}

/// The kernels of a ptxas `-v` report, in its order.
pub fn parse_ptxas(log: &str) -> Vec<Compiled> {
    let mut out: Vec<Compiled> = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let mut parts = rest.split('\'');
            let kernel = parts.next().unwrap_or_default().to_string();
            let arch = parts.nth(1).unwrap_or_default().to_string();
            out.push(Compiled {
                kernel,
                arch,
                registers: 0,
                static_smem: 0,
                spill_bytes: 0,
            });
        } else if let Some(k) = out.last_mut() {
            if line.contains("bytes spill stores") {
                k.spill_bytes = number_before(line, " bytes spill stores")
                    + number_before(line, " bytes spill loads");
            } else if line.contains("Used ") {
                k.registers = number_before(line, " registers");
                k.static_smem = number_before(line, " bytes smem");
            }
        }
    }
    out
}

/// The integer right before `suffix` in `line` (0 when absent).
fn number_before(line: &str, suffix: &str) -> u32 {
    let Some(end) = line.find(suffix) else {
        return 0;
    };
    let digits: String = line[..end]
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits
        .chars()
        .rev()
        .collect::<String>()
        .parse()
        .unwrap_or(0)
}

/// The limits of one SM that decide occupancy (CUDA C Programming Guide, "Compute
/// Capabilities"; allocation granularities from NVIDIA's occupancy calculator).
#[derive(Clone, Copy, Debug)]
pub struct SmLimits {
    pub name: &'static str,
    pub sms: u32,
    pub registers: u32,
    /// Registers are given to warps in units of this many.
    pub register_unit: u32,
    pub max_warps: u32,
    pub max_blocks: u32,
    pub smem: u32,
    pub max_smem_per_block: u32,
    /// Shared memory the system reserves per resident block.
    pub reserved_smem_per_block: u32,
    pub smem_unit: u32,
}

/// H100 SXM and H200 (sm_90: 132 SMs, 228 KiB shared memory per SM).
pub const H200: SmLimits = SmLimits {
    name: "H200 (sm_90, 132 SMs)",
    sms: 132,
    registers: 65536,
    register_unit: 256,
    max_warps: 64,
    max_blocks: 32,
    smem: 228 * 1024,
    max_smem_per_block: 227 * 1024,
    reserved_smem_per_block: 1024,
    smem_unit: 128,
};

/// A100 (sm_80: 108 SMs, 164 KiB shared memory per SM).
pub const A100: SmLimits = SmLimits {
    name: "A100 (sm_80, 108 SMs)",
    sms: 108,
    registers: 65536,
    register_unit: 256,
    max_warps: 64,
    max_blocks: 32,
    smem: 164 * 1024,
    max_smem_per_block: 163 * 1024,
    reserved_smem_per_block: 1024,
    smem_unit: 128,
};

/// What stops more blocks from being resident.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limiter {
    Warps,
    Registers,
    SharedMemory,
    Blocks,
}

impl std::fmt::Display for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Limiter::Warps => "warps",
            Limiter::Registers => "registers",
            Limiter::SharedMemory => "shared memory",
            Limiter::Blocks => "blocks",
        })
    }
}

/// Resident blocks of one launch shape per SM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Occupancy {
    pub blocks_per_sm: u32,
    pub warps_per_sm: u32,
    pub limiter: Limiter,
}

impl Occupancy {
    /// Resident warps as a share of the SM's maximum.
    pub fn fraction(&self, sm: &SmLimits) -> f64 {
        f64::from(self.warps_per_sm) / f64::from(sm.max_warps)
    }
}

/// Blocks of `threads` threads using `registers` per thread and `smem` bytes of shared memory
/// (static + dynamic) that fit on one SM; `None` when not even one does (too many threads,
/// registers or shared memory for a block).
pub fn occupancy(sm: &SmLimits, threads: u32, registers: u32, smem: u32) -> Option<Occupancy> {
    let warps = threads.div_ceil(32);
    if warps == 0 || warps > sm.max_warps || smem > sm.max_smem_per_block {
        return None;
    }
    let by_warps = sm.max_warps / warps;
    let regs_per_warp = (registers.max(1) * 32).div_ceil(sm.register_unit) * sm.register_unit;
    let by_registers = sm.registers / regs_per_warp / warps;
    let smem_per_block = (smem + sm.reserved_smem_per_block).div_ceil(sm.smem_unit) * sm.smem_unit;
    let by_smem = sm.smem / smem_per_block;
    let (blocks, limiter) = [
        (by_warps, Limiter::Warps),
        (by_registers, Limiter::Registers),
        (by_smem, Limiter::SharedMemory),
        (sm.max_blocks, Limiter::Blocks),
    ]
    .into_iter()
    .min_by_key(|&(n, _)| n)
    .expect("four limits");
    (blocks > 0).then_some(Occupancy {
        blocks_per_sm: blocks,
        warps_per_sm: blocks * warps,
        limiter,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
ptxas info    : Compiling entry function 'layernorm_forward' for 'sm_90a'
ptxas info    : Function properties for layernorm_forward
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 32 registers, used 0 barriers
ptxas info    : Compiling entry function 'matmul_bf16' for 'sm_80'
ptxas info    : Function properties for matmul_bf16
    0 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 168 registers, used 1 barriers, 4352 bytes smem, 392 bytes cmem[0]
";

    #[test]
    fn ptxas_reports_are_read_per_kernel_and_architecture() {
        let got = parse_ptxas(LOG);
        assert_eq!(
            got,
            vec![
                Compiled {
                    kernel: "layernorm_forward".into(),
                    arch: "sm_90a".into(),
                    registers: 32,
                    static_smem: 0,
                    spill_bytes: 0,
                },
                Compiled {
                    kernel: "matmul_bf16".into(),
                    arch: "sm_80".into(),
                    registers: 168,
                    static_smem: 4352,
                    spill_bytes: 12,
                },
            ]
        );
    }

    #[test]
    fn occupancy_follows_the_calculator() {
        // 256 threads at 32 registers: 8 blocks fill the 64 warps.
        let o = occupancy(&H200, 256, 32, 0).unwrap();
        assert_eq!(
            (o.blocks_per_sm, o.warps_per_sm, o.limiter),
            (8, 64, Limiter::Warps)
        );
        // 128 threads at 128 registers: 4 warps x 4096 registers per block -> 4 blocks.
        let o = occupancy(&H200, 128, 128, 0).unwrap();
        assert_eq!((o.blocks_per_sm, o.limiter), (4, Limiter::Registers));
        // 255 registers round up to 256 per thread (8192 per warp): 8 warps -> 1 block.
        let o = occupancy(&H200, 256, 255, 0).unwrap();
        assert_eq!((o.blocks_per_sm, o.limiter), (1, Limiter::Registers));
        // 100 KiB of shared memory (+1 KiB reserved): 2 blocks on an H200, 1 on an A100.
        let o = occupancy(&H200, 128, 64, 100 * 1024).unwrap();
        assert_eq!((o.blocks_per_sm, o.limiter), (2, Limiter::SharedMemory));
        assert_eq!(
            occupancy(&A100, 128, 64, 100 * 1024).unwrap().blocks_per_sm,
            1
        );
        // 32 threads, few registers, no shared memory: the 32-block limit.
        let o = occupancy(&H200, 32, 16, 0).unwrap();
        assert_eq!((o.blocks_per_sm, o.limiter), (32, Limiter::Blocks));
        // Not even one block.
        assert_eq!(occupancy(&H200, 1024, 255, 0), None);
        assert_eq!(occupancy(&A100, 128, 32, 200 * 1024), None);
    }
}
