//! [`CudaRuntime`]: the device runtime on a GPU, through cudarc.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::sys::{
    self as cu, CUdevice_attribute, CUfunction_attribute_enum, CUgraphInstantiate_flags,
    CUstreamCaptureMode,
};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaGraph, CudaSlice, CudaStream, DevicePtr, DriverError,
    LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::Ptx;

use super::{require, FATBIN};
use crate::backend::device::{Arch, Arg, Runtime, Slot};
use crate::backend::kernels::{self, Kernel};
use crate::backend::launch::{Dim3, LaunchDims};
use crate::backend::tensor_map::{Swizzle, TensorMap, TensorMapSpec};
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
    arch: Arch,
    multiprocessors: u32,
}

// SAFETY: a plain 128-byte value, passed by value as a `const __grid_constant__ TensorMap`.
unsafe impl cudarc::driver::DeviceRepr for TensorMap {}

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
        let (major, _) = ctx
            .compute_capability()
            .map_err(driver("read the compute capability"))?;
        // sm_90a code runs on compute capability 9.0 only; later generations take the
        // portable (sm_80 PTX) kernels until they get their own.
        let arch = if major == 9 {
            Arch::Hopper
        } else {
            Arch::Ampere
        };
        let multiprocessors = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(driver("read the multiprocessor count"))? as u32;
        Ok(CudaRuntime {
            ctx,
            stream,
            functions,
            device_name,
            arch,
            multiprocessors,
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
        // Every scalar as an 8-byte slot with its value in the first bytes, a tensor map as
        // itself: the driver copies each parameter's size from the pointer it is given.
        let slots: Vec<Slot> = args.iter().map(|a| a.slot()).collect();
        let mut builder = self.stream.launch_builder(func);
        for slot in &slots {
            match slot {
                Slot::Word(w) => builder.arg(w),
                Slot::Map(m) => builder.arg(m),
            };
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

    fn arch(&self) -> Arch {
        self.arch
    }

    fn multiprocessors(&self) -> u32 {
        self.multiprocessors
    }

    fn tensor_map(&self, spec: &TensorMapSpec) -> Result<TensorMap> {
        spec.validate()?;
        let swizzle = match spec.swizzle {
            Swizzle::None => cu::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_NONE,
            Swizzle::B32 => cu::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_32B,
            Swizzle::B64 => cu::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_64B,
            Swizzle::B128 => cu::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
        };
        let dims = [spec.cols, spec.rows];
        let strides = [spec.row_bytes];
        let boxes = [spec.box_cols, spec.box_rows];
        let element_strides = [1u32, 1];
        let mut map = cu::CUtensorMap { opaque: [0; 16] };
        // SAFETY: every pointer addresses a local array of the length rank 2 requires; the
        // spec was validated against the function's rules.
        let status = unsafe {
            cu::cuTensorMapEncodeTiled(
                &mut map,
                cu::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
                2,
                spec.address as *mut std::ffi::c_void,
                dims.as_ptr(),
                strides.as_ptr(),
                boxes.as_ptr(),
                element_strides.as_ptr(),
                cu::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
                swizzle,
                cu::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                cu::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
            )
        };
        if status != cu::CUresult::CUDA_SUCCESS {
            return Err(Error::Device(format!(
                "cuda: cuTensorMapEncodeTiled {spec:?}: {status:?}"
            )));
        }
        Ok(TensorMap(map.opaque))
    }
}
