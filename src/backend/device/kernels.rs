//! The kernels of `kernels/*.cu` the device backend launches, by name. On a GPU each is looked
//! up by its name in the embedded fatbin; under emulation each has the entry point
//! `smelt_emu_params_<name>` that `SMELT_EMU_EXPORT` defines (cuLaunchKernel's convention).

macro_rules! kernels {
    ($($variant:ident => $name:ident / $emu:ident,)*) => {
        /// A kernel of `kernels/*.cu`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Kernel {
            $($variant,)*
        }

        impl Kernel {
            /// Every kernel, in declaration order (`Kernel as usize` indexes it).
            pub const ALL: &'static [Kernel] = &[$(Kernel::$variant,)*];

            /// The kernel's `extern "C"` name.
            pub fn name(self) -> &'static str {
                match self {
                    $(Kernel::$variant => stringify!($name),)*
                }
            }

            /// The emulated launcher of this kernel.
            pub(crate) fn emulated(self) -> EmulatedLauncher {
                match self {
                    $(Kernel::$variant => emulated::$emu,)*
                }
            }
        }

        /// `smelt_emu_params_<name>(grid, block, smem, params)`.
        pub(crate) type EmulatedLauncher = unsafe extern "C" fn(
            crate::backend::launch::Dim3,
            crate::backend::launch::Dim3,
            u32,
            *mut *mut std::ffi::c_void,
        );

        mod emulated {
            use crate::backend::launch::Dim3;
            use std::ffi::c_void;
            unsafe extern "C" {
                $(pub fn $emu(grid: Dim3, block: Dim3, smem: u32, params: *mut *mut c_void);)*
            }
        }
    };
}

kernels! {
    Fill => fill / smelt_emu_params_fill,
    EmbeddingForward => embedding_forward / smelt_emu_params_embedding_forward,
    EmbeddingBackwardWpe => embedding_backward_wpe / smelt_emu_params_embedding_backward_wpe,
    EmbeddingBackwardWte => embedding_backward_wte / smelt_emu_params_embedding_backward_wte,
    EmbeddingForwardBf16 => embedding_forward_bf16 / smelt_emu_params_embedding_forward_bf16,
    EmbeddingBackwardWpeBf16 => embedding_backward_wpe_bf16 / smelt_emu_params_embedding_backward_wpe_bf16,
    EmbeddingBackwardWteBf16 => embedding_backward_wte_bf16 / smelt_emu_params_embedding_backward_wte_bf16,
    MatmulF32 => matmul_f32 / smelt_emu_params_matmul_f32,
    MatmulBf16 => matmul_bf16 / smelt_emu_params_matmul_bf16,
    MatmulBf16ToBf16 => matmul_bf16_to_bf16 / smelt_emu_params_matmul_bf16_to_bf16,
    SumRowsPartial => sum_rows_partial / smelt_emu_params_sum_rows_partial,
    SumRowsPartialBf16 => sum_rows_partial_bf16 / smelt_emu_params_sum_rows_partial_bf16,
    SumRowsFinal => sum_rows_final / smelt_emu_params_sum_rows_final,
    LayernormForward => layernorm_forward / smelt_emu_params_layernorm_forward,
    FusedResidualLayernormForward => fused_residual_layernorm_forward / smelt_emu_params_fused_residual_layernorm_forward,
    LayernormForwardBf16 => layernorm_forward_bf16 / smelt_emu_params_layernorm_forward_bf16,
    FusedResidualLayernormForwardBf16 => fused_residual_layernorm_forward_bf16 / smelt_emu_params_fused_residual_layernorm_forward_bf16,
    LayernormBackward => layernorm_backward / smelt_emu_params_layernorm_backward,
    LayernormBackwardBf16 => layernorm_backward_bf16 / smelt_emu_params_layernorm_backward_bf16,
    LayernormBackwardReduce => layernorm_backward_reduce / smelt_emu_params_layernorm_backward_reduce,
    GeluForward => gelu_forward / smelt_emu_params_gelu_forward,
    GeluBackward => gelu_backward / smelt_emu_params_gelu_backward,
    GeluForwardBf16 => gelu_forward_bf16 / smelt_emu_params_gelu_forward_bf16,
    GeluBackwardBf16 => gelu_backward_bf16 / smelt_emu_params_gelu_backward_bf16,
    Add => add / smelt_emu_params_add,
    AddBf16 => add_bf16 / smelt_emu_params_add_bf16,
    AddInto => add_into / smelt_emu_params_add_into,
    CastF32ToBf16 => cast_f32_to_bf16 / smelt_emu_params_cast_f32_to_bf16,
    CastBf16ToF32 => cast_bf16_to_f32 / smelt_emu_params_cast_bf16_to_f32,
    AttentionForward => attention_forward / smelt_emu_params_attention_forward,
    AttentionForwardBf16 => attention_forward_bf16 / smelt_emu_params_attention_forward_bf16,
    AttentionBackwardPreprocess => attention_backward_preprocess / smelt_emu_params_attention_backward_preprocess,
    AttentionBackwardPreprocessBf16 => attention_backward_preprocess_bf16 / smelt_emu_params_attention_backward_preprocess_bf16,
    AttentionBackwardDkdv => attention_backward_dkdv / smelt_emu_params_attention_backward_dkdv,
    AttentionBackwardDq => attention_backward_dq / smelt_emu_params_attention_backward_dq,
    AttentionBackwardDkdvBf16 => attention_backward_dkdv_bf16 / smelt_emu_params_attention_backward_dkdv_bf16,
    AttentionBackwardDqBf16 => attention_backward_dq_bf16 / smelt_emu_params_attention_backward_dq_bf16,
    CrossEntropyForward => cross_entropy_forward / smelt_emu_params_cross_entropy_forward,
    MeanReduce => mean_reduce / smelt_emu_params_mean_reduce,
    CrossEntropyBackward => cross_entropy_backward / smelt_emu_params_cross_entropy_backward,
    CrossEntropyForwardBf16 => cross_entropy_forward_bf16 / smelt_emu_params_cross_entropy_forward_bf16,
    CrossEntropyBackwardBf16 => cross_entropy_backward_bf16 / smelt_emu_params_cross_entropy_backward_bf16,
    SumSquaresPartial => sum_squares_partial / smelt_emu_params_sum_squares_partial,
    SumSquaresFinal => sum_squares_final / smelt_emu_params_sum_squares_final,
    Adamw => adamw / smelt_emu_params_adamw,
    AdamwMulti => adamw_multi / smelt_emu_params_adamw_multi,
}
