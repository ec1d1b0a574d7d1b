//! [`DeviceBackend`]: the [`Backend`] trait on a device runtime. Every method is one typed
//! launch of a kernel of `kernels/*.cu`, or one of the kernel sequences declared beside them
//! (`backend::kernels`), plus the scratch memory some of them need. The same
//! code drives a GPU (`CudaRuntime`) and the CPU emulation (`EmuRuntime`), so `cargo test`
//! checks it against the CPU backend without a GPU.
//!
//! Kernel calls return nothing (they are queued on a stream); the first failure is kept and
//! reported by [`Backend::check`], `read` and `sum_squares`.

use std::cell::{Cell, RefCell};

use super::Runtime;
use crate::backend::kernels::{
    adamw, attention, attention_tc, cross_entropy, elementwise, embedding, int, layernorm, long,
    matmul, matmul_f32, reduce, Scratch,
};
use crate::backend::{AdamWGroup, AdamWStep, AttentionShape, Backend, DType, MatmulShape, View};
use crate::error::{Error, Result};

/// How the device backend stores activations and computes matmuls and attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// Everything in f32 (SIMT matmul, f32 attention): for parity with the CPU backend.
    F32,
    /// Mixed precision: activations and activation gradients stored in bf16 (the graph's
    /// precision pass decides, see `graph::precision`), matmuls and attention on tensor cores
    /// with f32 accumulation; parameters, their gradients, optimizer state, statistics and
    /// the loss in f32. Any f32 operand a tensor-core kernel gets is cast to bf16 first.
    Bf16,
}

/// One f32 arena on the device.
pub struct DeviceArena<B> {
    buf: B,
    len: usize,
}

/// Token ids on the device, with what `embedding_backward_wte` needs: the positions grouped by
/// token (CSR, padded to `len` buckets so that every batch launches the same grid), computed on
/// the host when the ids are written.
pub struct DeviceIndices<B> {
    ids: B,
    /// `offsets (len+1) | bucket tokens (len; -1 = padding) | positions (len)`, i32.
    buckets: B,
    len: usize,
    /// The ids, to check them against the table they index before a launch.
    host: Vec<u32>,
}

/// Addresses for one call's operands (see `DeviceBackend::staged`).
struct Staged {
    extra: Vec<u64>,
    inputs: Vec<u64>,
    outputs: Vec<u64>,
}

/// `adamw_multi`'s tables on the device, with the (length, weight decay) list they hold.
type AdamWTables<B> = (Vec<(usize, f32)>, B);

/// Scratch regions start at multiples of this many bytes.
const SCRATCH_ALIGN: usize = 256;

pub struct DeviceBackend<R: Runtime> {
    rt: R,
    precision: Precision,
    /// Temporary memory of the kernel sequences (partial sums, bf16 casts), grown on demand.
    scratch: RefCell<Option<(R::Buffer, usize)>>,
    /// Scratch buffers outgrown: kept, because a recorded graph may still address them.
    retired: RefCell<Vec<R::Buffer>>,
    /// A word of device memory that holds 0 between launches: the block counter of the kernels
    /// whose last block finishes the work (the layernorm backward). Allocated zeroed on first
    /// use, outside the scratch (which other sequences overwrite); each launch leaves it 0.
    counter: RefCell<Option<R::Buffer>>,
    /// The AdamW tables (tensor ends, weight decays) of the last parameter layout seen.
    adamw_tables: RefCell<Option<AdamWTables<R::Buffer>>>,
    capturing: Cell<bool>,
    error: RefCell<Option<Error>>,
}

impl<R: Runtime> DeviceBackend<R> {
    pub fn new(rt: R, precision: Precision) -> Self {
        DeviceBackend {
            rt,
            precision,
            scratch: RefCell::new(None),
            retired: RefCell::new(Vec::new()),
            counter: RefCell::new(None),
            adamw_tables: RefCell::new(None),
            capturing: Cell::new(false),
            error: RefCell::new(None),
        }
    }

    pub fn runtime(&self) -> &R {
        &self.rt
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Keeps the first failure; later ones are usually its consequences.
    fn fail(&self, e: Error) {
        let mut slot = self.error.borrow_mut();
        if slot.is_none() {
            *slot = Some(e);
        }
    }

    fn failed(&self) -> bool {
        self.error.borrow().is_some()
    }

    fn addr(&self, arena: &DeviceArena<R::Buffer>, v: View) -> u64 {
        assert!(v.end() <= arena.len, "view {v:?} outside the arena");
        self.rt.address(&arena.buf) + 4 * v.offset as u64
    }

    /// One scratch region of `bytes` for a kernel sequence, valid until the next call.
    fn scratch_region(&self, bytes: usize) -> Option<Scratch> {
        let addr = self.scratch(&[bytes])?[0];
        Some(Scratch { addr, bytes })
    }

    /// The address of the zeroed block counter (see `counter`), allocated on first use: not
    /// during a capture, as the scratch.
    fn zeroed_counter(&self) -> Option<u64> {
        let mut slot = self.counter.borrow_mut();
        if slot.is_none() {
            if self.capturing.get() {
                self.fail(Error::Device(
                    "block counter allocated during graph capture (run the step once first)".into(),
                ));
                return None;
            }
            match self.rt.alloc_zeroed(4) {
                Ok(buf) => *slot = Some(buf),
                Err(e) => {
                    self.fail(e);
                    return None;
                }
            }
        }
        Some(self.rt.address(slot.as_ref().expect("allocated above")))
    }

    /// Addresses of scratch regions of the given byte sizes, valid until the next call.
    /// Growing the scratch during a capture would free memory the recording uses: an error.
    fn scratch(&self, sizes: &[usize]) -> Option<Vec<u64>> {
        let total: usize = sizes
            .iter()
            .map(|s| s.next_multiple_of(SCRATCH_ALIGN))
            .sum();
        let mut slot = self.scratch.borrow_mut();
        if slot.as_ref().is_none_or(|(_, len)| *len < total) {
            if self.capturing.get() {
                self.fail(Error::Device(
                    "scratch memory grew during graph capture (run the step once first)".into(),
                ));
                return None;
            }
            let len = total.max(slot.as_ref().map_or(0, |s| s.1 * 2)).max(1 << 20);
            match self.rt.alloc(len) {
                Ok(buf) => {
                    if let Some((old, _)) = slot.replace((buf, len)) {
                        self.retired.borrow_mut().push(old);
                    }
                }
                Err(e) => {
                    self.fail(e);
                    return None;
                }
            }
        }
        let base = self.rt.address(&slot.as_ref().expect("allocated above").0);
        let mut offset = 0u64;
        Some(
            sizes
                .iter()
                .map(|s| {
                    let at = base + offset;
                    offset += s.next_multiple_of(SCRATCH_ALIGN) as u64;
                    at
                })
                .collect(),
        )
    }

    /// Runs `launch` (one kernel, or a sequence) unless an earlier call failed; keeps its
    /// failure. Every caller passes addresses of views checked against their arena (`addr`) or
    /// of scratch sized for the call, and the sizes of those views: the contract of the typed
    /// launchers of `backend::kernels`, which is why the closures may call them unsafely.
    fn run(&self, launch: impl FnOnce(&R) -> Result<()>) {
        if self.failed() {
            return;
        }
        if let Err(e) = launch(&self.rt) {
            self.fail(e);
        }
    }

    /// Whether attention of shape `s` runs on tensor cores: bf16 precision and a head size
    /// with a tensor-core instance (others use the f32 kernels).
    fn tensor_core_attention(&self, s: AttentionShape) -> bool {
        self.precision == Precision::Bf16
            && s.n_head > 0
            && s.c.is_multiple_of(s.n_head)
            && attention_tc::supports(s.c / s.n_head)
    }

    /// The common dtype of `views`; a failure if they differ.
    fn dtype_of(&self, what: &str, views: &[View]) -> Option<DType> {
        let dtype = views.first().map_or(DType::F32, |v| v.dtype);
        if views.iter().any(|v| v.dtype != dtype) {
            let dtypes: Vec<DType> = views.iter().map(|v| v.dtype).collect();
            self.fail(Error::Device(format!("{what}: mixed dtypes {dtypes:?}")));
            return None;
        }
        Some(dtype)
    }

    fn fill_at(&self, dst: u64, value: f32, n: usize) {
        if n > 0 {
            let n = long(n);
            self.run(|rt| unsafe { embedding::fill::launch(rt, dst, value, n) });
        }
    }

    /// Checks that every id is below `limit` (a device kernel would read out of bounds).
    fn check_ids(&self, ids: &DeviceIndices<R::Buffer>, limit: usize, what: &str) -> bool {
        match ids.host.iter().find(|&&id| id as usize >= limit) {
            Some(id) => {
                self.fail(Error::Data(format!(
                    "{what} id {id} is out of range (at most {})",
                    limit.saturating_sub(1)
                )));
                false
            }
            None => true,
        }
    }

    /// `out = op(a) · op(b) (+ bias)`, and `act = gelu(out)` when given, in one launch. In
    /// bf16 precision the operands go to the tensor cores as bf16 (f32 ones cast first, in
    /// scratch) and the result is stored in out's dtype.
    #[allow(clippy::too_many_arguments)]
    fn matmul_epilogue(
        &self,
        arena: &DeviceArena<R::Buffer>,
        out: View,
        act: Option<View>,
        a: View,
        b: View,
        bias: Option<View>,
        s: MatmulShape,
    ) {
        let (mn, sizes_ok) = (s.m * s.n, a.len == s.m * s.k && b.len == s.k * s.n);
        if !sizes_ok
            || out.len != mn
            || act.is_some_and(|v| v.len != mn || v.dtype != out.dtype)
            || bias.is_some_and(|v| v.len != s.n || v.dtype != DType::F32)
        {
            return self.fail(Error::Device(format!(
                "matmul {s:?}: views out {out:?}, act {act:?}, a {a:?}, b {b:?}, bias {bias:?} \
                 do not fit (bias must be f32, act of out's dtype)"
            )));
        }
        let gelu_out = act.map_or(0, |v| self.addr(arena, v));
        let bias = bias.map_or(0, |v| self.addr(arena, v));
        let (out_at, a_at, b_at) = (
            self.addr(arena, out),
            self.addr(arena, a),
            self.addr(arena, b),
        );
        match self.precision {
            Precision::F32 => {
                if !self.require_f32("matmul (f32 precision)", &[out, a, b]) {
                    return;
                }
                let (m, k, n) = (int(s.m), int(s.k), int(s.n));
                let (ta, tb) = (i32::from(s.trans_a), i32::from(s.trans_b));
                self.run(|rt| unsafe {
                    matmul_f32::matmul_f32::launch(
                        rt, out_at, gelu_out, a_at, b_at, bias, m, k, n, ta, tb,
                    )
                });
            }
            Precision::Bf16 => {
                let bytes = matmul::matmul_scratch_bytes(&self.rt, &s, a.dtype, b.dtype);
                let Some(scratch) = self.scratch_region(bytes) else {
                    return;
                };
                self.run(|rt| unsafe {
                    matmul::matmul(
                        rt,
                        out_at,
                        out.dtype,
                        gelu_out,
                        (a_at, a.dtype),
                        (b_at, b.dtype),
                        bias,
                        s,
                        scratch,
                    )
                });
            }
        }
    }

    /// Fails unless every view is f32 (kernels without a bf16 variant).
    fn require_f32(&self, what: &str, views: &[View]) -> bool {
        if views.iter().all(|v| v.dtype == DType::F32) {
            return true;
        }
        self.fail(Error::Device(format!("{what}: f32 views only")));
        false
    }

    /// Scratch for the operands of one call that must change dtype: for each `(view, want)`,
    /// the address of `view`'s data in dtype `want` — the view itself, or a scratch copy
    /// converted now (inputs). Outputs get scratch of the wanted dtype without conversion;
    /// `finish_outputs` converts them into their views afterwards.
    /// `extra`: sizes (bytes) of plain scratch regions wanted too, returned first.
    fn staged(
        &self,
        arena: &DeviceArena<R::Buffer>,
        extra: &[usize],
        inputs: &[(View, DType)],
        outputs: &[(View, DType)],
    ) -> Option<Staged> {
        let staged = |&(v, want): &(View, DType)| v.dtype != want;
        let sizes: Vec<usize> = extra
            .iter()
            .copied()
            .chain(
                inputs
                    .iter()
                    .chain(outputs)
                    .filter(|x| staged(x))
                    .map(|&(v, want)| v.len * want.bytes()),
            )
            .collect();
        let mut regions = self.scratch(&sizes)?.into_iter();
        let extra: Vec<u64> = regions.by_ref().take(extra.len()).collect();
        let mut place = |list: &[(View, DType)], convert: bool| -> Vec<u64> {
            list.iter()
                .map(|x| {
                    let (v, want) = *x;
                    if !staged(x) {
                        return self.addr(arena, v);
                    }
                    let at = regions.next().expect("one region per staged operand");
                    if convert {
                        self.convert_at(at, want, self.addr(arena, v), v.dtype, v.len);
                    }
                    at
                })
                .collect()
        };
        let inputs = place(inputs, true);
        let outputs = place(outputs, false);
        Some(Staged {
            extra,
            inputs,
            outputs,
        })
    }

    /// Converts staged outputs (see [`Self::staged`]) into their views.
    fn finish_outputs(
        &self,
        arena: &DeviceArena<R::Buffer>,
        outputs: &[(View, DType)],
        at: &[u64],
    ) {
        for (&(v, have), &addr) in outputs.iter().zip(at) {
            if v.dtype != have {
                self.convert_at(self.addr(arena, v), v.dtype, addr, have, v.len);
            }
        }
    }

    /// `dst (to) = src (from)`, n elements.
    fn convert_at(&self, dst: u64, to: DType, src: u64, from: DType, n: usize) {
        let n = int(n);
        match (from, to) {
            (DType::F32, DType::Bf16) => {
                self.run(|rt| unsafe { elementwise::cast_f32_to_bf16::launch(rt, dst, src, n) })
            }
            (DType::Bf16, DType::F32) => {
                self.run(|rt| unsafe { elementwise::cast_bf16_to_f32::launch(rt, dst, src, n) })
            }
            _ => self.fail(Error::Device(format!("convert {from:?} to {to:?}"))),
        }
    }

    fn upload_f32(&self, buf: &mut R::Buffer, offset: usize, data: &[f32]) -> Result<()> {
        self.rt.upload(buf, offset, bytemuck::cast_slice(data))
    }
}

impl<R: Runtime> Backend for DeviceBackend<R> {
    type Arena = DeviceArena<R::Buffer>;
    type Indices = DeviceIndices<R::Buffer>;
    type Captured = R::Graph;

    fn name(&self) -> String {
        let precision = match self.precision {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16 activations, tensor cores",
        };
        format!("{} [{precision}]", self.rt.name())
    }

    fn alloc(&self, len: usize) -> Result<Self::Arena> {
        Ok(DeviceArena {
            buf: self.rt.alloc(len * 4)?,
            len,
        })
    }

    fn alloc_indices(&self, len: usize) -> Result<Self::Indices> {
        Ok(DeviceIndices {
            ids: self.rt.alloc(len * 4)?,
            buckets: self.rt.alloc(4 * embedding::Buckets::table_len(len))?,
            len,
            host: vec![0; len],
        })
    }

    fn write_indices(&self, dst: &mut Self::Indices, src: &[u32]) -> Result<()> {
        if src.len() != dst.len {
            return Err(Error::Data(format!(
                "{} ids for an input of {}",
                src.len(),
                dst.len
            )));
        }
        if let Some(id) = src.iter().find(|&&id| id > i32::MAX as u32) {
            return Err(Error::Data(format!("token id {id} does not fit a C int")));
        }
        self.rt.upload(&mut dst.ids, 0, bytemuck::cast_slice(src))?;
        let table = embedding::bucket_table(src, i32::MAX as usize);
        self.rt
            .upload(&mut dst.buckets, 0, bytemuck::cast_slice(&table))?;
        dst.host.copy_from_slice(src);
        Ok(())
    }

    fn write(&self, arena: &mut Self::Arena, dst: View, src: &[f32]) -> Result<()> {
        assert!(dst.end() <= arena.len && src.len() == dst.len);
        match dst.dtype {
            DType::F32 => self.upload_f32(&mut arena.buf, dst.offset * 4, src),
            DType::Bf16 => {
                let bits = matmul::to_bf16(src);
                self.rt
                    .upload(&mut arena.buf, dst.offset * 4, bytemuck::cast_slice(&bits))
            }
        }
    }

    fn read(&self, arena: &Self::Arena, src: View, dst: &mut [f32]) -> Result<()> {
        assert!(src.end() <= arena.len && dst.len() == src.len);
        self.check()?;
        match src.dtype {
            DType::F32 => {
                self.rt
                    .download(&arena.buf, src.offset * 4, bytemuck::cast_slice_mut(dst))
            }
            DType::Bf16 => {
                let mut bits = vec![0u16; src.len];
                self.rt.download(
                    &arena.buf,
                    src.offset * 4,
                    bytemuck::cast_slice_mut(&mut bits),
                )?;
                for (d, b) in dst.iter_mut().zip(bits) {
                    *d = matmul::bf16_to_f32(b);
                }
                Ok(())
            }
        }
    }

    fn fill(&self, arena: &mut Self::Arena, dst: View, value: f32) {
        match dst.dtype {
            DType::F32 => self.fill_at(self.addr(arena, dst), value, dst.len),
            // Zero has the same bits in both: fill the view's words.
            DType::Bf16 if value == 0.0 => self.fill_at(self.addr(arena, dst), 0.0, dst.words()),
            DType::Bf16 => self.fail(Error::Device("fill: bf16 views take 0 only".into())),
        }
    }

    fn convert(&self, arena: &mut Self::Arena, out: View, x: View) {
        self.convert_at(
            self.addr(arena, out),
            out.dtype,
            self.addr(arena, x),
            x.dtype,
            x.len,
        );
    }

    fn activation_dtype(&self) -> DType {
        match self.precision {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::Bf16,
        }
    }

    fn embedding_forward(
        &self,
        arena: &mut Self::Arena,
        out: View,
        tokens: &Self::Indices,
        wte: View,
        wpe: View,
        b: usize,
        t: usize,
        c: usize,
    ) {
        if !self.check_ids(tokens, wte.len / c, "token")
            || !self.require_f32("embedding", &[wte, wpe])
        {
            return;
        }
        let dtype = out.dtype;
        let (out, ids) = (self.addr(arena, out), self.rt.address(&tokens.ids));
        let (wte, wpe) = (self.addr(arena, wte), self.addr(arena, wpe));
        let (b, t, c) = (int(b), int(t), int(c));
        self.run(|rt| unsafe {
            match dtype {
                DType::F32 => embedding::embedding_forward::launch(rt, out, ids, wte, wpe, b, t, c),
                DType::Bf16 => {
                    embedding::embedding_forward_bf16::launch(rt, out, ids, wte, wpe, b, t, c)
                }
            }
        });
    }

    fn embedding_backward(
        &self,
        arena: &mut Self::Arena,
        dwte: View,
        dwpe: View,
        dout: View,
        tokens: &Self::Indices,
        b: usize,
        t: usize,
        c: usize,
    ) {
        if !self.check_ids(tokens, dwte.len / c, "token")
            || !self.require_f32("embedding backward", &[dwte, dwpe])
        {
            return;
        }
        let buckets = embedding::Buckets {
            table: self.rt.address(&tokens.buckets),
            slots: tokens.len,
        };
        let (vocab, max_t, dtype) = (dwte.len / c, dwpe.len / c, dout.dtype);
        let (dwte, dwpe, dout) = (
            self.addr(arena, dwte),
            self.addr(arena, dwpe),
            self.addr(arena, dout),
        );
        self.run(|rt| unsafe {
            embedding::backward(rt, dwte, vocab, dwpe, max_t, dout, dtype, buckets, b, t, c)
        });
    }

    fn matmul(
        &self,
        arena: &mut Self::Arena,
        out: View,
        a: View,
        b: View,
        bias: Option<View>,
        s: MatmulShape,
    ) {
        self.matmul_epilogue(arena, out, None, a, b, bias, s);
    }

    fn matmul_gelu(
        &self,
        arena: &mut Self::Arena,
        out: View,
        act: View,
        a: View,
        b: View,
        bias: Option<View>,
        s: MatmulShape,
    ) {
        self.matmul_epilogue(arena, out, Some(act), a, b, bias, s);
    }

    fn add_layernorm_forward(
        &self,
        arena: &mut Self::Arena,
        [sum, out, mean, rstd]: [View; 4],
        [a, b, weight, bias]: [View; 4],
        n: usize,
        c: usize,
        eps: f32,
    ) {
        let Some(dtype) = self.dtype_of("add+layernorm", &[sum, out, a, b]) else {
            return;
        };
        if !self.require_f32(
            "add+layernorm statistics and parameters",
            &[mean, rstd, weight, bias],
        ) {
            return;
        }
        let [sum, out, mean, rstd, a, b, w, bias] =
            [sum, out, mean, rstd, a, b, weight, bias].map(|v| self.addr(arena, v));
        let (n, c) = (int(n), int(c));
        self.run(|rt| unsafe {
            match dtype {
                DType::F32 => layernorm::fused_residual_layernorm_forward::launch(
                    rt, sum, out, mean, rstd, a, b, w, bias, n, c, eps,
                ),
                DType::Bf16 => layernorm::fused_residual_layernorm_forward_bf16::launch(
                    rt, sum, out, mean, rstd, a, b, w, bias, n, c, eps,
                ),
            }
        });
    }

    fn sum_rows(&self, arena: &mut Self::Arena, out: View, x: View, m: usize, n: usize) {
        if !self.require_f32("sum_rows output", &[out]) {
            return;
        }
        let bytes = reduce::sum_rows_scratch_bytes(m, n);
        let Some(scratch) = self.scratch_region(bytes) else {
            return;
        };
        let (dtype, out, x) = (x.dtype, self.addr(arena, out), self.addr(arena, x));
        self.run(|rt| unsafe { reduce::sum_rows(rt, dtype, out, x, m, n, scratch) });
    }

    fn layernorm_forward(
        &self,
        arena: &mut Self::Arena,
        out: View,
        mean: View,
        rstd: View,
        x: View,
        weight: View,
        bias: View,
        n: usize,
        c: usize,
        eps: f32,
    ) {
        let Some(dtype) = self.dtype_of("layernorm", &[out, x]) else {
            return;
        };
        if !self.require_f32(
            "layernorm statistics and parameters",
            &[mean, rstd, weight, bias],
        ) {
            return;
        }
        let [out, mean, rstd, x, w, b] =
            [out, mean, rstd, x, weight, bias].map(|v| self.addr(arena, v));
        let (n, c) = (int(n), int(c));
        self.run(|rt| unsafe {
            match dtype {
                DType::F32 => {
                    layernorm::layernorm_forward::launch(rt, out, mean, rstd, x, w, b, n, c, eps)
                }
                DType::Bf16 => layernorm::layernorm_forward_bf16::launch(
                    rt, out, mean, rstd, x, w, b, n, c, eps,
                ),
            }
        });
    }

    fn layernorm_backward(
        &self,
        arena: &mut Self::Arena,
        dx: View,
        dweight: View,
        dbias: View,
        dout: View,
        x: View,
        weight: View,
        mean: View,
        rstd: View,
        n: usize,
        c: usize,
    ) {
        let Some(dtype) = self.dtype_of("layernorm backward", &[dx, dout, x]) else {
            return;
        };
        let f32_views = [dweight, dbias, weight, mean, rstd];
        if !self.require_f32("layernorm backward statistics and parameters", &f32_views) {
            return;
        }
        let bytes = layernorm::backward_scratch_bytes(n, c);
        let Some(scratch) = self.scratch_region(bytes) else {
            return;
        };
        let Some(counter) = self.zeroed_counter() else {
            return;
        };
        let outs = [dx, dweight, dbias].map(|v| self.addr(arena, v));
        let ins = [dout, x, weight, mean, rstd].map(|v| self.addr(arena, v));
        // SAFETY: views checked against the arena; the counter is zero (allocated zeroed,
        // every launch leaves it 0) and the stream orders the launches that share it.
        self.run(|rt| unsafe { layernorm::backward(rt, dtype, outs, ins, n, c, scratch, counter) });
    }

    fn gelu_forward(&self, arena: &mut Self::Arena, out: View, x: View) {
        let Some(dtype) = self.dtype_of("gelu", &[out, x]) else {
            return;
        };
        let (out, x, n) = (self.addr(arena, out), self.addr(arena, x), int(x.len));
        self.run(|rt| unsafe {
            match dtype {
                DType::F32 => elementwise::gelu_forward::launch(rt, out, x, n),
                DType::Bf16 => elementwise::gelu_forward_bf16::launch(rt, out, x, n),
            }
        });
    }

    fn gelu_backward(&self, arena: &mut Self::Arena, dx: View, x: View, dout: View) {
        let Some(dtype) = self.dtype_of("gelu backward", &[dx, x, dout]) else {
            return;
        };
        let n = int(x.len);
        let (dx, x, dout) = (
            self.addr(arena, dx),
            self.addr(arena, x),
            self.addr(arena, dout),
        );
        self.run(|rt| unsafe {
            match dtype {
                DType::F32 => elementwise::gelu_backward::launch(rt, dx, x, dout, n),
                DType::Bf16 => elementwise::gelu_backward_bf16::launch(rt, dx, x, dout, n),
            }
        });
    }

    fn add(&self, arena: &mut Self::Arena, out: View, a: View, b: View) {
        let Some(dtype) = self.dtype_of("add", &[out, a, b]) else {
            return;
        };
        let n = int(out.len);
        let (out, a, b) = (
            self.addr(arena, out),
            self.addr(arena, a),
            self.addr(arena, b),
        );
        self.run(|rt| unsafe {
            match dtype {
                DType::F32 => elementwise::add::launch(rt, out, a, b, n),
                DType::Bf16 => elementwise::add_bf16::launch(rt, out, a, b, n),
            }
        });
    }

    fn add_into(&self, arena: &mut Self::Arena, dst: View, src: View) {
        if !self.require_f32("add_into", &[dst, src]) {
            return;
        }
        let (n, dst, src) = (int(dst.len), self.addr(arena, dst), self.addr(arena, src));
        self.run(|rt| unsafe { elementwise::add_into::launch(rt, dst, src, n) });
    }

    fn attention_forward(
        &self,
        arena: &mut Self::Arena,
        out: View,
        lse: View,
        qkv: View,
        s: AttentionShape,
    ) {
        if !self.require_f32("attention lse", &[lse]) {
            return;
        }
        // Tensor cores take bf16 Q, K, V and write bf16 out (bf16 activations need no staging);
        // the f32 kernel takes and writes f32 (converted before and after when bf16).
        let tensor_cores = self.tensor_core_attention(s);
        let dtype = if tensor_cores {
            DType::Bf16
        } else {
            DType::F32
        };
        let outputs = [(out, dtype)];
        let Some(Staged {
            inputs: ins,
            outputs: outs,
            ..
        }) = self.staged(arena, &[], &[(qkv, dtype)], &outputs)
        else {
            return;
        };
        let (o, l, q) = (outs[0], self.addr(arena, lse), ins[0]);
        let (b, t, c, nh) = (int(s.b), int(s.t), int(s.c), int(s.n_head));
        self.run(|rt| unsafe {
            if tensor_cores {
                attention_tc::attention_forward_bf16(rt, o, l, q, b, t, c, nh)
            } else {
                attention::attention_forward::launch(rt, o, l, q, b, t, c, nh)
            }
        });
        self.finish_outputs(arena, &outputs, &outs);
    }

    fn attention_backward(
        &self,
        arena: &mut Self::Arena,
        dqkv: View,
        dout: View,
        qkv: View,
        out: View,
        lse: View,
        s: AttentionShape,
    ) {
        if !self.require_f32("attention lse", &[lse]) {
            return;
        }
        let storage = if self.tensor_core_attention(s) {
            DType::Bf16
        } else {
            DType::F32
        };
        // D = rowsum(dO ∘ O) reads dout and out in one dtype.
        let d_storage = if dout.dtype == out.dtype {
            dout.dtype
        } else {
            DType::F32
        };
        let inputs = [
            (dout, d_storage),
            (out, d_storage),
            (dout, storage),
            (qkv, storage),
        ];
        // dqkv is written in `storage` too (converted after when the view differs).
        let outputs = [(dqkv, storage)];
        let scratch_bytes = attention::attention_backward_scratch_bytes(s);
        let Some(Staged {
            extra,
            inputs: ins,
            outputs: outs,
        }) = self.staged(arena, &[scratch_bytes], &inputs, &outputs)
        else {
            return;
        };
        let operands = attention::BackwardOperands {
            dqkv: outs[0],
            qkv: ins[3],
            dout: ins[2],
            storage,
            d_out: ins[1],
            d_dout: ins[0],
            d_storage,
            lse: self.addr(arena, lse),
        };
        let scratch = Scratch {
            addr: extra[0],
            bytes: scratch_bytes,
        };
        self.run(|rt| unsafe { attention::attention_backward(rt, &operands, s, scratch) });
        self.finish_outputs(arena, &outputs, &outs);
    }

    fn cross_entropy_forward(
        &self,
        arena: &mut Self::Arena,
        loss: View,
        lse: View,
        logits: View,
        targets: &Self::Indices,
        n: usize,
        v: usize,
        vp: usize,
    ) {
        if !self.check_ids(targets, v, "target") {
            return;
        }
        let bytes = cross_entropy::forward_scratch_bytes(n);
        let Some(scratch) = self.scratch_region(bytes) else {
            return;
        };
        let (dtype, ids) = (logits.dtype, self.rt.address(&targets.ids));
        let (loss, lse, logits) = (
            self.addr(arena, loss),
            self.addr(arena, lse),
            self.addr(arena, logits),
        );
        self.run(|rt| unsafe {
            cross_entropy::forward(rt, loss, lse, logits, dtype, ids, n, v, vp, scratch)
                .map(|_losses| ())
        });
    }

    fn cross_entropy_backward(
        &self,
        arena: &mut Self::Arena,
        dlogits: View,
        logits: View,
        lse: View,
        targets: &Self::Indices,
        dloss: f32,
        n: usize,
        v: usize,
        vp: usize,
    ) {
        if !self.check_ids(targets, v, "target") {
            return;
        }
        let Some(dtype) = self.dtype_of("cross-entropy backward", &[dlogits, logits]) else {
            return;
        };
        let ids = self.rt.address(&targets.ids);
        let (dlogits, logits, lse) = (
            self.addr(arena, dlogits),
            self.addr(arena, logits),
            self.addr(arena, lse),
        );
        let (n, v, vp) = (int(n), int(v), int(vp));
        self.run(|rt| unsafe {
            match dtype {
                DType::F32 => cross_entropy::cross_entropy_backward::launch(
                    rt, dlogits, logits, lse, ids, dloss, n, v, vp,
                ),
                DType::Bf16 => cross_entropy::cross_entropy_backward_bf16::launch(
                    rt, dlogits, logits, lse, ids, dloss, n, v, vp,
                ),
            }
        });
    }

    fn sum_squares(&self, arena: &Self::Arena, x: View) -> f64 {
        let bytes = adamw::sum_squares_scratch_bytes(x.len);
        let Some(scratch) = self.scratch_region(bytes) else {
            return f64::NAN;
        };
        let (n, x) = (x.len, self.addr(arena, x));
        let mut total_at = None;
        self.run(|rt| {
            total_at = Some(unsafe { adamw::sum_squares(rt, x, n, scratch) }?);
            Ok(())
        });
        let Some(total_at) = total_at else {
            return f64::NAN;
        };
        // The total is read back from where the sequence left it, in the scratch.
        let slot = self.scratch.borrow();
        let (buf, _) = slot.as_ref().expect("scratch allocated above");
        let offset = (total_at - self.rt.address(buf)) as usize;
        let mut total = [0f32];
        let read = self.check().and_then(|()| {
            self.rt
                .download(buf, offset, bytemuck::cast_slice_mut(&mut total))
        });
        match read {
            Ok(()) => f64::from(total[0]),
            Err(e) => {
                drop(slot);
                self.fail(e);
                f64::NAN
            }
        }
    }

    fn adamw(&self, arena: &mut Self::Arena, groups: &[AdamWGroup], step: &AdamWStep) {
        let Some(first) = groups.first() else {
            return;
        };
        let (bc1, bc2) = adamw::adamw_bias_corrections(step.beta1, step.beta2, step.step);
        let AdamWStep {
            lr,
            beta1,
            beta2,
            eps,
            grad_scale,
            ..
        } = *step;
        // One launch when the groups tile one range with grads, m, v (and the bf16 working
        // copies, if any: one bf16 element per f32 element) parallel to it (the planner's
        // layout); each group covers up to the next one (alignment padding holds zero
        // gradients and stays zero).
        let base = first.param.offset;
        // Element offset of a group's copy minus its parameter's word offset (a bf16 element
        // is half a word).
        let copy_shift =
            |g: &AdamWGroup| g.copy.map(|c| 2 * c.offset as i64 - g.param.offset as i64);
        let parallel = groups
            .windows(2)
            .all(|w| w[0].param.end() <= w[1].param.offset)
            && groups.iter().all(|g| {
                g.grad.offset - g.param.offset == first.grad.offset - base
                    && g.m.offset - g.param.offset == first.m.offset - base
                    && g.v.offset - g.param.offset == first.v.offset - base
                    && copy_shift(g) == copy_shift(first)
                    && g.copy
                        .is_none_or(|c| c.dtype == DType::Bf16 && c.len == g.param.len)
            });
        if !parallel {
            for g in groups {
                let (p, grad) = (self.addr(arena, g.param), self.addr(arena, g.grad));
                let (m, v) = (self.addr(arena, g.m), self.addr(arena, g.v));
                let (n, wd) = (long(g.param.len), g.weight_decay);
                self.run(|rt| unsafe {
                    adamw::adamw::launch(
                        rt, p, grad, m, v, n, lr, beta1, beta2, eps, wd, bc1, bc2, grad_scale,
                    )
                });
                if let Some(copy) = g.copy {
                    self.convert(arena, copy, g.param);
                }
            }
            return;
        }
        let tensors: Vec<(usize, f32)> = groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let end = groups
                    .get(i + 1)
                    .map_or(g.param.end(), |next| next.param.offset);
                (end - g.param.offset, g.weight_decay)
            })
            .collect();
        let mut tables = self.adamw_tables.borrow_mut();
        if tables.as_ref().is_none_or(|(key, _)| *key != tensors) {
            let (ends, decays, _) = adamw::adamw_multi_tables(&tensors);
            let upload = self.rt.alloc(12 * ends.len()).and_then(|mut buf| {
                self.rt.upload(&mut buf, 0, bytemuck::cast_slice(&ends))?;
                self.rt
                    .upload(&mut buf, 8 * ends.len(), bytemuck::cast_slice(&decays))?;
                Ok(buf)
            });
            match upload {
                Ok(buf) => *tables = Some((tensors.clone(), buf)),
                Err(e) => return self.fail(e),
            }
        }
        let ends = self.rt.address(&tables.as_ref().expect("uploaded above").1);
        let decays = ends + 8 * tensors.len() as u64;
        let count = int(tensors.len());
        let n: usize = tensors.iter().map(|t| t.0).sum();
        let span = |v: View| self.addr(arena, View::typed(v.offset, n, v.dtype));
        let (p, grad) = (span(first.param), span(first.grad));
        let (m, v) = (span(first.m), span(first.v));
        match first.copy {
            // The f32 masters and their bf16 working copies in one pass.
            Some(copy) => {
                let copy = span(copy);
                self.run(|rt| unsafe {
                    adamw::adamw_multi_bf16::launch(
                        rt,
                        p,
                        copy,
                        grad,
                        m,
                        v,
                        long(n),
                        ends,
                        decays,
                        count,
                        lr,
                        beta1,
                        beta2,
                        eps,
                        bc1,
                        bc2,
                        grad_scale,
                    )
                })
            }
            None => self.run(|rt| unsafe {
                adamw::adamw_multi::launch(
                    rt,
                    p,
                    grad,
                    m,
                    v,
                    long(n),
                    ends,
                    decays,
                    count,
                    lr,
                    beta1,
                    beta2,
                    eps,
                    bc1,
                    bc2,
                    grad_scale,
                )
            }),
        }
    }

    fn can_capture(&self) -> bool {
        true
    }

    fn begin_capture(&self) -> Result<()> {
        self.check()?;
        self.rt.begin_capture()?;
        self.capturing.set(true);
        Ok(())
    }

    fn end_capture(&self) -> Result<R::Graph> {
        self.capturing.set(false);
        let graph = self.rt.end_capture()?;
        self.check()?;
        Ok(graph)
    }

    fn replay(&self, graph: &R::Graph) -> Result<()> {
        self.check()?;
        self.rt.replay(graph)
    }

    fn check(&self) -> Result<()> {
        match self.error.borrow().as_ref() {
            Some(e) => Err(Error::Device(format!(
                "{} failed earlier: {e}",
                self.rt.name()
            ))),
            None => Ok(()),
        }
    }
}
