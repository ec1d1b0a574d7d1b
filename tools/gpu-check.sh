#!/usr/bin/env bash
# gpu-check: runs prebuilt GPU test and bench binaries on a machine with an NVIDIA GPU (CUDA
# 13.0 driver) that has no Rust toolchain and no network, and sums their results up.
#
# 1. On the dev machine (Rust, and nvcc so that the kernels' fatbin is embedded: without it
#    every part only prints "skipped: this build has no CUDA kernels"), from the repo root:
#
#      bash tools/gpu-check.sh --collect [DIR]        # DIR defaults to gpu-bin/ in the repo
#
#    which runs
#
#      cargo test --release --no-run
#      cargo bench --no-run
#
#    and copies into DIR the executables (target/release/deps/<name>-<hash>, not the .d
#    files) of the tests gpu_kernels and device_gpu (if that test exists) and of the benches
#    gpu_report and cuda_kernels (debug info stripped), this script, and tests/fixtures/
#    (device_gpu reads the PyTorch fixture).
#
# 2. Copy DIR to the GPU machine (or the whole repo with it) and run
#
#      bash tools/gpu-check.sh [DIR]         # or, inside DIR: bash gpu-check.sh
#
# It runs, each under a timeout (together under 8 minutes; override with GPU_CHECK_T_<PART>):
#   gpu_kernels  (120 s)  kernel parity against the CPU reference + time per launch
#                         (`GPU-KERNEL<TAB>kernel<TAB>max rel err<TAB>ms per launch<TAB>size`);
#   device_gpu   (90 s)   whole training steps against the PyTorch fixture, CUDA-graph replay
#                         (`GPU-STEP<TAB>check<TAB>worst rel err`);
#   gpu_report   (180 s)  matmul TFLOP/s against cuBLASLt, memory-bound kernels' GB/s against
#                         a device copy, attention TFLOP/s, a GPT-2 124M training run with
#                         tokens/s and MFU (`GPU-REPORT<TAB>section<TAB>name<TAB>ours<TAB>
#                         baseline<TAB>ratio<TAB>unit`; also gpu_report.json);
#   cuda_kernels (75 s)   criterion benches of the device backend's kernels (time, throughput).
# Each part's whole output goes to DIR/<part>.log; the lines above become one table on stdout
# and DIR/gpu-check.json. libcublasLt is looked for (CUDA install, pip's nvidia-cublas) and put
# on LD_LIBRARY_PATH for gpu_report's baseline.
#
# Exit status: 0 when every part present passed or skipped (no GPU, driver or fatbin: each
# says why); 1 when a part failed or timed out, or a required binary is missing.
set -uo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# ---------------------------------------------------------------------------------------
# --collect: build and copy (dev machine)

if [[ "${1:-}" == "--collect" ]]; then
    root="$(cd "$script_dir/.." && pwd)"
    out="${2:-$root/gpu-bin}"
    cd "$root" || exit 1
    command -v cargo >/dev/null || { echo "gpu-check --collect: cargo not found" >&2; exit 1; }
    build_log="$(mktemp)"
    echo "gpu-check: cargo test --release --no-run && cargo bench --no-run (in $root)"
    if ! { cargo test --release --no-run && cargo bench --no-run; } 2>&1 | tee "$build_log" >&2; then
        echo "gpu-check --collect: the build failed" >&2
        rm -f "$build_log"
        exit 1
    fi
    if grep -q 'nvcc not found' "$build_log"; then
        echo "gpu-check --collect: WARNING: built without nvcc: the binaries carry no CUDA kernels and will only skip (bash tools/setup_cuda.sh, then rebuild)" >&2
    fi
    mkdir -p "$out"
    rm -f "$out"/gpu_kernels-* "$out"/device_gpu-* "$out"/gpu_report-* "$out"/cuda_kernels-*
    missing=0
    for name in gpu_kernels device_gpu gpu_report cuda_kernels; do
        # The executable cargo just reported ("Executable ... (target/release/deps/<name>-<hash>)"),
        # else the newest one under target/release/deps.
        bin=$(sed -nE "s#.*\((target/release/deps/${name}-[0-9a-f]+)\)\$#\1#p" "$build_log" | tail -n 1)
        if [[ -z "$bin" ]]; then
            bin=$(ls -t target/release/deps/"${name}"-* 2>/dev/null | grep -v '\.d$' | head -n 1 || true)
        fi
        if [[ -n "$bin" && -x "$bin" ]]; then
            cp "$bin" "$out/"
            # Without debug info (release has debug = 1): about 5 MB instead of 70 each, so
            # the folder fits a 64 MiB transfer.
            command -v strip >/dev/null && strip --strip-debug "$out/$(basename "$bin")"
            echo "gpu-check: copied $bin"
        elif [[ "$name" == device_gpu ]]; then
            echo "gpu-check: no device_gpu test (tests/device_gpu.rs) yet: skipping it"
        else
            echo "gpu-check --collect: no executable for $name" >&2
            missing=1
        fi
    done
    rm -f "$build_log"
    cp "$script_dir/gpu-check.sh" "$out/"
    rm -rf "$out/fixtures"
    cp -r tests/fixtures "$out/fixtures"
    # Tests find the fixture under the repo path compiled into them.
    echo "$root" >"$out/manifest_dir"
    echo "gpu-check: $out is ready ($(du -sh "$out" | cut -f1)); on the GPU machine: bash gpu-check.sh (inside it) or bash tools/gpu-check.sh $out"
    exit $missing
fi

# ---------------------------------------------------------------------------------------
# Run (GPU machine)

if [[ -n "${1:-}" ]]; then
    dir="$1"
elif compgen -G "$script_dir/gpu_kernels-*" >/dev/null; then
    dir="$script_dir"                      # the copy inside DIR
else
    dir="$script_dir/../gpu-bin"           # tools/gpu-check.sh in the repo
fi
dir="$(cd "$dir" 2>/dev/null && pwd)" || { echo "gpu-check: no folder ${1:-gpu-bin} (run: bash tools/gpu-check.sh --collect)" >&2; exit 1; }
cd "$dir" || exit 1

if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
fi

# cuBLASLt for gpu_report's baseline.
if ! ldconfig -p 2>/dev/null | grep -q 'libcublasLt\.so'; then
    cands=(/usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib)
    if command -v python3 >/dev/null 2>&1; then
        while IFS= read -r sp; do
            cands+=("$sp"/nvidia/cu13/lib "$sp"/nvidia/cublas/lib)
        done < <(python3 -c 'import site, sys; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null)
    fi
    for d in "${cands[@]}"; do
        if compgen -G "$d/libcublasLt.so*" >/dev/null; then
            export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
            echo "gpu-check: libcublasLt from $d"
            break
        fi
    done
fi

# The PyTorch fixture, at the repo path compiled into the tests, when that path is absent here.
if [[ -f manifest_dir && -d fixtures ]]; then
    want="$(cat manifest_dir)/tests/fixtures"
    if [[ ! -e "$want" ]] && mkdir -p "$(dirname "$want")" 2>/dev/null; then
        ln -s "$dir/fixtures" "$want" && echo "gpu-check: linked $want -> $dir/fixtures"
    fi
fi
export SMELT_FIXTURES="$dir/fixtures"
export CRITERION_HOME="$dir/criterion"

find_bin() {
    local f found=()
    for f in ./"$1"-*; do
        [[ -f "$f" && -x "$f" && "$f" != *.d ]] && found+=("$f")
    done
    if [[ ${#found[@]} -gt 1 ]]; then
        echo "gpu-check: several $1 binaries in $dir; using the newest" >&2
        ls -t "${found[@]}" | head -n 1
    elif [[ ${#found[@]} -eq 1 ]]; then
        echo "${found[0]}"
    fi
}

failed=0
summary=()      # part<TAB>status<TAB>exit<TAB>detail
run_part() {    # name, default timeout, required (1/0), args...
    local name="$1" limit="$2" required="$3"
    shift 3
    local var="GPU_CHECK_T_${name^^}"
    limit="${!var:-$limit}"
    local bin
    bin="$(find_bin "$name")"
    if [[ -z "$bin" ]]; then
        if [[ "$required" == 1 ]]; then
            summary+=("$name"$'\t'missing$'\t'-$'\t'"no ./$name-* in $dir")
            failed=1
        else
            summary+=("$name"$'\t'absent$'\t'-$'\t'"not built (optional)")
        fi
        return
    fi
    echo "gpu-check: $name: timeout ${limit}s $bin $* (log: $dir/$name.log)"
    timeout --kill-after=10 "$limit" "$bin" "$@" >"$name.log" 2>&1
    local rc=$?
    local status detail=""
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then
        status=timeout
        detail="ran past ${limit}s"
        failed=1
    elif [[ $rc -ne 0 ]]; then
        status=failed
        detail=$(grep -E '^test .* FAILED$' "$name.log" | sed -E 's/^test (.*) \.\.\. FAILED$/\1/' | paste -sd' ' -)
        [[ -z "$detail" ]] && detail=$(grep -E 'FAILED|panicked|error' "$name.log" | head -n 1)
        failed=1
    elif grep -q 'skipped: ' "$name.log"; then
        status=skipped
        detail=$(grep -o 'skipped: .*' "$name.log" | sort -u | head -n 1)
    else
        status=passed
    fi
    summary+=("$name"$'\t'"$status"$'\t'"$rc"$'\t'"$detail")
}

rm -f gpu_report.json
run_part gpu_kernels 120 1 --nocapture --test-threads=1
run_part device_gpu 90 0 --nocapture --test-threads=1
run_part gpu_report 180 1 --json gpu_report.json
run_part cuda_kernels 75 1 --bench --warm-up-time 1 --measurement-time 2 --sample-size 10

logs() { cat gpu_kernels.log device_gpu.log gpu_report.log 2>/dev/null; }

# Criterion's "group/name  time: [lo mid hi]" and "thrpt: [lo mid hi]" lines, as
# CRITERION<TAB>bench<TAB>time<TAB>throughput.
criterion_rows() {
    [[ -f cuda_kernels.log ]] || return 0
    awk '
        /time:/ { if ($1 != "time:") name = $1; t = $0; sub(/.*\[/, "", t); sub(/\].*/, "", t);
                  split(t, p, " "); time[name] = p[3] " " p[4]; order[n++] = name }
        /thrpt:/ { t = $0; sub(/.*\[/, "", t); sub(/\].*/, "", t); split(t, p, " ");
                   thr[name] = p[3] " " p[4] }
        /^[^ ]/ && !/time:/ && !/thrpt:/ && !/^(Benchmarking|Found|Gnuplot|Warning|skipped)/ { name = $1 }
        END { for (i = 0; i < n; i++) { k = order[i]; if (seen[k]++) continue;
              printf "CRITERION\t%s\t%s\t%s\n", k, time[k], (k in thr) ? thr[k] : "-" } }
    ' cuda_kernels.log
}

# ---------------------------------------------------------------------------------------
# The table

echo
echo "== parts"
for s in "${summary[@]}"; do
    IFS=$'\t' read -r n st rc det <<<"$s"
    printf '%-14s %-8s %5s  %s\n' "$n" "$st" "$rc" "$det"
done
if logs | grep -q $'^GPU-KERNEL\t'; then
    echo
    echo "== kernels (gpu_kernels: parity and time per launch)"
    printf '%-36s %12s %12s  %s\n' kernel max_rel_err ms_per_launch bench_size
    logs | grep $'^GPU-KERNEL\t' | awk -F'\t' '{ printf "%-36s %12s %12s  %s\n", $2, $3, $4, $5 }'
fi
if logs | grep -q $'^GPU-STEP\t'; then
    echo
    echo "== training steps (device_gpu: worst relative error)"
    logs | grep $'^GPU-STEP\t' | awk -F'\t' '{ printf "%-50s %12s\n", $2, $3 }'
fi
if logs | grep -q $'^GPU-REPORT\t'; then
    echo
    echo "== report (gpu_report; notes in gpu_report.log)"
    printf '%-10s %-30s %12s %12s %8s  %s\n' section name ours baseline ratio unit
    logs | grep $'^GPU-REPORT\t' |
        awk -F'\t' '{ printf "%-10s %-30s %12s %12s %8s  %s\n", $2, $3, $4, $5, $6, $7 }'
fi
crit="$(criterion_rows)"
if [[ -n "$crit" ]]; then
    echo
    echo "== criterion (cuda_kernels: median time, throughput)"
    awk -F'\t' '{ printf "%-36s %14s %16s\n", $2, $3, $4 }' <<<"$crit"
fi

# ---------------------------------------------------------------------------------------
# The JSON (numbers where the value is one, strings otherwise)

{
    echo '{'
    echo '  "parts": ['
    i=0
    for s in "${summary[@]}"; do
        IFS=$'\t' read -r n st rc det <<<"$s"
        [[ $i -gt 0 ]] && echo ','
        printf '%s\t%s\t%s\t%s\n' "$n" "$st" "$rc" "$det" | awk -F'\t' '
            function esc(s) { gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s); gsub(/\t/, " ", s); return s }
            { printf "    {\"part\": \"%s\", \"status\": \"%s\", \"exit_status\": %s, \"detail\": \"%s\"}",
                     esc($1), esc($2), ($3 ~ /^[0-9]+$/) ? $3 : "null", esc($4) }'
        i=$((i + 1))
    done
    echo
    echo '  ],'
    emit() {    # key, prefix, field names...
        local key="$1" prefix="$2"
        shift 2
        echo "  \"$key\": ["
        { if [[ "$prefix" == CRITERION ]]; then echo "$crit"; else logs; fi; } |
            grep "^$prefix"$'\t' | awk -F'\t' -v names="$*" '
            function esc(s) { gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s); return s }
            function val(s) { if (s == "-" || s == "") return "null"; return (s ~ /^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$/) ? s : "\"" esc(s) "\"" }
            BEGIN { k = split(names, f, " ") }
            { if (n++) printf ",\n"; printf "    {";
              for (j = 1; j <= k; j++) printf "%s\"%s\": %s", (j > 1 ? ", " : ""), f[j], val($(j + 1));
              printf "}" }
            END { if (n) printf "\n" }'
        echo "  ],"
    }
    emit kernels GPU-KERNEL kernel max_rel_err ms size
    emit steps GPU-STEP check worst_rel_err
    emit report GPU-REPORT section name ours baseline ratio unit
    emit criterion CRITERION bench median_time throughput
    printf '  "gpu_report_json": '
    if [[ -s gpu_report.json ]]; then sed '2,$s/^/  /' gpu_report.json; else echo 'null'; fi
    echo '}'
} >gpu-check.json

echo
if [[ $failed -ne 0 ]]; then
    echo "gpu-check: FAILED (see the parts above and $dir/<part>.log); JSON in $dir/gpu-check.json"
    exit 1
fi
if printf '%s\n' "${summary[@]}" | awk -F'\t' '$2 == "skipped"' | grep -q .; then
    echo "gpu-check: some parts SKIPPED (no usable GPU, driver or fatbin; reasons above); JSON in $dir/gpu-check.json"
    exit 0
fi
echo "gpu-check: all parts passed; JSON in $dir/gpu-check.json"
