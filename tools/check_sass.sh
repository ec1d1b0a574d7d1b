#!/usr/bin/env bash
# Checks in the disassembly of the built fatbin that the kernels meant to run on tensor cores
# really use them (HMMA instructions), for every architecture in the fatbin, and that the Hopper
# kernels use warpgroup tensor cores (HGMMA) fed by the tensor memory accelerator (UTMALDG) in
# their sm_90a code. Needs cuobjdump:
# `bash tools/setup_cuda.sh --tools`. Run after a build that found nvcc (CI does both).
#
#   bash tools/check_sass.sh [KERNEL...]     (default: the tensor-core kernels listed below)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Kernels that must contain HMMA; sm_90a kernels that must contain HGMMA and UTMALDG.
HOPPER_KERNELS=()
if [ $# -gt 0 ]; then
  KERNELS=("$@")
else
  HOPPER_KERNELS=(matmul_wgmma_bf16 matmul_wgmma_bf16_to_bf16)
  KERNELS=(matmul_bf16 matmul_bf16_to_bf16)
  # The tensor-core attention kernels: one instance per head size (kernels/attention_tc*.cu).
  for hs in 16 32 48 64 80 96 112 128; do
    KERNELS+=("attention_forward_bf16_hs$hs" "attention_backward_dkdv_bf16_hs$hs" "attention_backward_dq_bf16_hs$hs")
  done
fi

cuobjdump=$(find tools/.venv-cuda/ -path '*/bin/cuobjdump' -type f 2>/dev/null | head -n 1)
if [ -z "$cuobjdump" ]; then
  echo "error: cuobjdump not found; run: bash tools/setup_cuda.sh --tools" >&2
  exit 1
fi
fatbin=$(ls -t target/release/build/smelt-*/out/smelt.fatbin 2>/dev/null | head -n 1 || true)
if [ -z "$fatbin" ]; then
  echo "error: no smelt.fatbin under target/release/build: build with nvcc first (cargo build --release)" >&2
  exit 1
fi
sass=$("$cuobjdump" -sass "$fatbin")
status=0
for arch in sm_80 sm_90a; do
  for k in "${KERNELS[@]}"; do
    # cuobjdump prints "arch = sm_XX" per ELF, then "Function : name" blocks.
    count=$(awk -v arch="$arch" -v k="$k" '
      /arch = / { cur = $3 }
      /Function :/ { fn = $3 }
      cur == arch && fn == k && /HMMA/ { n++ }
      END { print n + 0 }' <<<"$sass")
    printf '%-8s %-36s HMMA %s\n' "$arch" "$k" "$count"
    if [ "$count" -eq 0 ]; then
      echo "error: $k has no tensor-core (HMMA) instructions for $arch" >&2
      status=1
    fi
  done
done
for k in "${HOPPER_KERNELS[@]}"; do
  for op in HGMMA UTMALDG; do
    count=$(awk -v k="$k" -v op="$op" '
      /arch = / { cur = $3 }
      /Function :/ { fn = $3 }
      cur == "sm_90a" && fn == k && index($0, op) { n++ }
      END { print n + 0 }' <<<"$sass")
    printf '%-8s %-36s %-7s %s\n' sm_90a "$k" "$op" "$count"
    if [ "$count" -eq 0 ]; then
      echo "error: $k has no $op instructions for sm_90a" >&2
      status=1
    fi
  done
done
exit $status
