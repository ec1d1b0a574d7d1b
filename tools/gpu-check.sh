#!/usr/bin/env bash
# gpu-check: runs prebuilt GPU test binaries on a machine with an NVIDIA GPU (CUDA 13.0
# driver) that has no Rust toolchain and no network, and sums their results up.
#
# Build beforehand (on a machine with Rust and nvcc, so that the fatbin is embedded; without
# nvcc every GPU test only prints "skipped: this build has no CUDA kernels"):
#
#   cargo test --release --test gpu_kernels --no-run
#     # prints: Executable tests/gpu_kernels.rs (target/release/deps/gpu_kernels-<hash>)
#   mkdir -p gpu-out
#   cp target/release/deps/gpu_kernels-<hash> tools/gpu-check.sh gpu-out/
#     # the executable only, not the gpu_kernels-<hash>.d file
#
# On the GPU machine:
#
#   cd gpu-out && bash gpu-check.sh            # or: bash gpu-check.sh /path/to/gpu-out
#
# It runs `./gpu_kernels-* --nocapture --test-threads=1`, keeps the whole output in
# gpu_kernels.log, and turns the per-kernel lines the tests print
# (`GPU-KERNEL<TAB>kernel<TAB>max rel err<TAB>ms per launch<TAB>bench size`) into a table on
# stdout and gpu-check.json. Exit status: 0 when every test passed on a GPU; 1 when a test
# failed (or no binary was found); 2 when the tests skipped (no GPU, driver or fatbin).
#
# Implemented: kernel parity against the CPU reference (tests/gpu_kernels.rs: gelu, add,
# add_into, casts, layernorm fwd/bwd, fused residual layernorm, cross-entropy fwd/bwd +
# mean_reduce, adamw, adamw_multi(_bf16), sum_squares, sum_rows, embedding fwd/bwd,
# matmul_bf16 in 4 transposes, attention fwd/bwd) with the time per launch at GPT-2 124M
# sizes, and the matmul's TFLOP/s at those shapes.
#
# NOT YET IMPLEMENTED (they need the CUDA Backend, which does not exist yet):
#   - matmul TFLOP/s compared with cuBLASLt on the same shapes;
#   - memory-bound kernels' GB/s compared with a device-to-device copy;
#   - attention TFLOP/s (only its time per launch is reported);
#   - a GPT-2 124M training run with tokens/s and MFU.
set -uo pipefail

dir="${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"
cd "$dir" || exit 1

bins=()
for f in ./gpu_kernels-*; do
    [[ -f "$f" && -x "$f" && "$f" != *.d ]] && bins+=("$f")
done
if [[ ${#bins[@]} -ne 1 ]]; then
    echo "gpu-check: expected exactly one executable ./gpu_kernels-* in $dir, found ${#bins[@]}" >&2
    echo "gpu-check: build it with 'cargo test --release --test gpu_kernels --no-run' and copy it here" >&2
    exit 1
fi
bin="${bins[0]}"

if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
fi

log=gpu_kernels.log
echo "gpu-check: running $bin --nocapture --test-threads=1 (log: $dir/$log)"
"$bin" --nocapture --test-threads=1 >"$log" 2>&1
status=$?

skipped=$(grep -c 'skipped: ' "$log" || true)
failed_tests=$(grep -E '^test .* FAILED$' "$log" | sed -E 's/^test (.*) \.\.\. FAILED$/\1/' || true)

# The table.
echo
printf '%-36s %12s %12s  %s\n' kernel max_rel_err ms_per_launch bench_size
grep $'^GPU-KERNEL\t' "$log" | awk -F'\t' '{ printf "%-36s %12s %12s  %s\n", $2, $3, $4, $5 }'

# The JSON (values as printed by the tests; strings escaped for quotes and backslashes).
{
    echo '{'
    echo '  "binary": "'"$(basename "$bin")"'",'
    echo '  "exit_status": '"$status"','
    echo '  "skipped_tests": '"$skipped"','
    printf '  "failed_tests": ['
    first=1
    while IFS= read -r t; do
        [[ -z "$t" ]] && continue
        [[ $first -eq 0 ]] && printf ', '
        printf '"%s"' "${t//\"/\\\"}"
        first=0
    done <<<"$failed_tests"
    echo '],'
    echo '  "kernels": ['
    grep $'^GPU-KERNEL\t' "$log" | awk -F'\t' '
        function esc(s) { gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s); return s }
        { if (n++) printf ",\n";
          printf "    {\"kernel\": \"%s\", \"max_rel_err\": %s, \"ms\": %s, \"size\": \"%s\"}",
                 esc($2), $3, $4, esc($5) }
        END { if (n) printf "\n" }'
    echo '  ],'
    echo '  "not_implemented": ["matmul vs cuBLASLt", "memory-bound GB/s vs device copy", "attention TFLOP/s", "GPT-2 124M training run with MFU"]'
    echo '}'
} >gpu-check.json

echo
if [[ $status -ne 0 ]]; then
    echo "gpu-check: FAILED (exit status $status); failed tests:"
    [[ -n "$failed_tests" ]] && sed 's/^/  /' <<<"$failed_tests"
    echo "gpu-check: see $dir/$log (each failure names its seed)"
    exit 1
fi
if [[ $skipped -gt 0 ]]; then
    echo "gpu-check: $skipped tests SKIPPED (no usable GPU, driver or fatbin):"
    grep 'skipped: ' "$log" | sed -E 's/.*(skipped: .*)/  \1/' | sort -u
    exit 2
fi
echo "gpu-check: all GPU tests passed; table above, JSON in $dir/gpu-check.json"
