//! [`CudaRuntime`]: the device runtime on a GPU, through cudarc.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::sys::{
    CUfunction_attribute_enum, CUgraphInstantiate_flags, CUstreamCaptureMode,
};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaGraph, CudaSlice, CudaStream, DevicePtr, DriverError,
    LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::Ptx;

use super::{require, FATBIN};
use crate::backend::device::{Arg, Runtime};
use crate::backend::kernels::{self, Kernel};
use crate::backend::launch::{Dim3, LaunchDims};
use crate::error::{Error, Result};

/// Dynamic shared memory a kernel may use without opting in.
const DEFAULT_SMEM_LIMIT: u32 = 48 * 1024;

fn driver(what: &str) -> impl Fn(DriverError) -> Error + '_ {
    move |e| Error::Device(format!("cuda: {what}: {e:?}"))
}

/// One GPU: a context, one stream (all work is ordered on it), the module of the embedded
/// fatbin and every kernel the device backend launches.
pub struct CudaRuntime {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    /// Every declared kernel (`backend::kernels::all`) by name, with the dynamic shared memory
    /// it has been allowed so far (beyond 48 KiB needs an opt-in per kernel).
    functions: HashMap<&'static str, (CudaFunction, RefCell<u32>)>,
    device_name: String,
}

impl CudaRuntime {
    /// Opens GPU `ordinal` and loads the kernels; says what is missing when CUDA cannot run.
    pub fn new(ordinal: usize) -> Result<Self> {
        let count = require()?;
        if ordinal >= count {
            return Err(Error::Device(format!(
                "device cuda: GPU {ordinal} requested, {count} present"
            )));
        }
        let fatbin = FATBIN.expect("require() checked the fatbin");
        let ctx = CudaContext::new(ordinal).map_err(driver("create a context"))?;
        // SAFETY: all work runs on the one stream below, in order, so cudarc's per-buffer
        // events (for ordering across streams) are not needed.
        unsafe { ctx.disable_event_tracking() };
        // A stream of our own: the legacy default stream cannot be captured into a graph.
        let stream = ctx.new_stream().map_err(driver("create a stream"))?;
        // cuModuleLoadData takes a fatbin as it is; Ptx::from_binary passes the bytes through.
        let module = ctx
            .load_module(Ptx::from_binary(fatbin.to_vec()))
            .map_err(driver(
                "load the kernels (is the driver older than CUDA 13.0?)",
            ))?;
        // Every declared kernel is looked up now, so a missing one fails at start.
        let functions = kernels::all()
            .map(|k| {
                let func = module.load_function(k.name).map_err(|e| {
                    Error::Device(format!("cuda: kernel {} not in the fatbin: {e:?}", k.name))
                })?;
                Ok((k.name, (func, RefCell::new(DEFAULT_SMEM_LIMIT))))
            })
            .collect::<Result<HashMap<_, _>>>()?;
        let device_name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        Ok(CudaRuntime {
            ctx,
            stream,
            functions,
            device_name,
        })
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }
}

impl Runtime for CudaRuntime {
    type Buffer = CudaSlice<u8>;
    type Graph = CudaGraph;

    fn name(&self) -> String {
        format!("cuda ({})", self.device_name)
    }

    fn alloc(&self, bytes: usize) -> Result<CudaSlice<u8>> {
        // SAFETY: the contents are undefined until written, as Runtime::alloc says.
        unsafe { self.stream.alloc::<u8>(bytes.max(1)) }
            .map_err(|e| Error::Device(format!("cuda: allocate {bytes} bytes: {e:?}")))
    }

    fn alloc_zeroed(&self, bytes: usize) -> Result<CudaSlice<u8>> {
        self.stream
            .alloc_zeros::<u8>(bytes.max(1))
            .map_err(|e| Error::Device(format!("cuda: allocate {bytes} bytes: {e:?}")))
    }

    fn address(&self, buf: &CudaSlice<u8>) -> u64 {
        buf.device_ptr(&self.stream).0
    }

    fn upload(&self, buf: &mut CudaSlice<u8>, offset: usize, src: &[u8]) -> Result<()> {
        if offset + src.len() > buf.len() {
            return Err(Error::Device("cuda: copy outside a buffer".into()));
        }
        let mut dst = buf.slice_mut(offset..offset + src.len());
        self.stream
            .memcpy_htod(src, &mut dst)
            .map_err(driver("copy to the GPU"))
    }

    fn download(&self, buf: &CudaSlice<u8>, offset: usize, dst: &mut [u8]) -> Result<()> {
        if offset + dst.len() > buf.len() {
            return Err(Error::Device("cuda: copy outside a buffer".into()));
        }
        let src = buf.slice(offset..offset + dst.len());
        self.stream
            .memcpy_dtoh(&src, dst)
            .map_err(driver("copy from the GPU"))?;
        self.synchronize()
    }

    unsafe fn launch(&self, kernel: &'static Kernel, dims: LaunchDims, args: &[Arg]) -> Result<()> {
        let (func, allowed) = self.functions.get(kernel.name).ok_or_else(|| {
            Error::Device(format!("cuda: kernel {} is not declared", kernel.name))
        })?;
        let mut allowed = allowed.borrow_mut();
        if dims.smem > *allowed {
            func.set_attribute(
                CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                dims.smem as i32,
            )
            .map_err(|e| {
                Error::Device(format!(
                    "cuda: {} needs {} bytes of shared memory: {e:?}",
                    kernel.name, dims.smem
                ))
            })?;
            *allowed = dims.smem;
        }
        // Every argument as an 8-byte slot with its value in the first bytes: the driver
        // copies each parameter's size from the pointer it is given.
        let slots: Vec<u64> = args.iter().map(|a| a.slot()).collect();
        let mut builder = self.stream.launch_builder(func);
        for slot in &slots {
            builder.arg(slot);
        }
        let d3 = |d: Dim3| (d.x, d.y, d.z);
        let cfg = LaunchConfig {
            grid_dim: d3(dims.grid),
            block_dim: d3(dims.block),
            shared_mem_bytes: dims.smem,
        };
        // SAFETY: the caller guarantees the arguments match the kernel and the geometry is
        // its own (Runtime::launch's contract).
        unsafe { builder.launch(cfg) }
            .map(|_| ())
            .map_err(|e| Error::Device(format!("cuda: launch {}: {e:?}", kernel.name)))
    }

    fn begin_capture(&self) -> Result<()> {
        self.stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(driver("begin a graph capture"))
    }

    fn end_capture(&self) -> Result<CudaGraph> {
        self.stream
            .end_capture(CUgraphInstantiate_flags(0))
            .map_err(driver("end a graph capture"))?
            .ok_or_else(|| Error::Device("cuda: the graph capture recorded nothing".into()))
    }

    fn replay(&self, graph: &CudaGraph) -> Result<()> {
        graph.launch().map_err(driver("launch a graph"))
    }

    fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(driver("a kernel failed (stream synchronize)"))
    }
}
