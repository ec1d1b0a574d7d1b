#!/usr/bin/env bash
# gpu-check: every GPU check of smelt in one run (under 8 minutes) on a machine with an NVIDIA GPU
# and no Rust toolchain, from binaries built elsewhere. A check that cannot run while a GPU is
# present is a failure, never a skip.
#
# 1. On the dev machine (Rust, and nvcc so the kernels' fatbin is embedded), from the repo root:
#
#      bash tools/gpu-check.sh --collect [DIR]          # DIR defaults to gpu-bin/ in the repo
#
#    builds the test binaries `kernels` and `device_gpu` and the benches `gpu_report` and
#    `cuda_kernels` (release), strips them, and copies them into DIR under those names with this
#    script and the PyTorch fixture (fixtures/gpt2_tiny.safetensors). It refuses a build
#    without CUDA kernels. DIR stays well under 64 MiB (it prints its size).
#
# 2. On the GPU machine: bash DIR/gpu-check.sh  (or: bash tools/gpu-check.sh [DIR])
#
#    a. driver and device first: nvidia-smi, then `gpu_report --probe` (compute capability,
#       multiprocessors, memory, clocks, L2); a driver older than 580 (CUDA 13.0, which the
#       kernels are built with) stops the run here with one line, exit 3;
#    b. kernels       every kernel test body on the GPU (`kernels cuda --test-threads=1`),
#                     GPT-2-sized cases included, against the CPU reference;
#    c. device_gpu    whole training steps against the PyTorch fixture (logits, loss, every
#                     gradient, 3 AdamW steps) in f32 and bf16, and CUDA-graph replay; it must
#                     print its f32 and bf16 logits and gradient checks;
#    d. memcheck, racecheck, synccheck, initcheck: the kernel tests again (small cases:
#                     SMELT_SMALL_CASES=1) under NVIDIA's compute-sanitizer, found on PATH or
#                     under /usr/local/cuda*, /opt/nvidia or pip's nvidia packages; any error it
#                     reports fails. No compute-sanitizer is a failure unless
#                     GPU_CHECK_NO_SANITIZER=1;
#    e. gpu_report    matmul vs cuBLASLt (libcublasLt from pip's nvidia-cublas, put on
#                     LD_LIBRARY_PATH here) and % of 989 TFLOP/s, memory-bound bf16 kernels vs a
#                     device copy, attention TFLOP/s and % of peak, GPT-2 124M training at
#                     T=1024, B=32: tokens/s and MFU (llm.c's formula); every section must
#                     report;
#    f. cuda_kernels  criterion timings of every Backend kernel method, bf16 and f32.
#    Every part runs with SMELT_REQUIRE_GPU=1 (a missing GPU fails instead of skipping) under a
#    timeout (GPU_CHECK_T_<PART> seconds overrides it), all within GPU_CHECK_BUDGET (460 s,
#    from the script's start). Each part's output is in DIR/<part>.log; with GPU_CHECK_OUT=FOLDER
#    the JSON files and a tarball of the logs are copied there too.
#
# At the end: one table (stdout) and DIR/gpu-check.json. Exit status: 0 every part passed on a
# GPU; 1 a part failed, timed out, skipped or did not report what it must; 2 no GPU here (the
# parts ran and skipped: nothing was checked); 3 the driver is too old.
set -uo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bins=(kernels device_gpu gpu_report cuda_kernels)

# ---------------------------------------------------------------------------------------------
# --collect (dev machine)

if [[ "${1:-}" == "--collect" ]]; then
    root="$(cd "$script_dir/.." && pwd)"
    out="${2:-$root/gpu-bin}"
    cd "$root" || exit 1
    command -v cargo >/dev/null || { echo "gpu-check --collect: cargo not found" >&2; exit 1; }
    log="$(mktemp)"
    trap 'rm -f "$log"' EXIT
    echo "gpu-check: building (cargo test/bench --release --no-run) in $root"
    if ! { cargo test --release --locked --no-run --test kernels --test device_gpu &&
           cargo bench --locked --no-run --bench gpu_report --bench cuda_kernels; } 2>&1 |
            tee "$log" >&2; then
        echo "gpu-check --collect: the build failed" >&2
        exit 1
    fi
    mkdir -p "$out"
    rm -f "${bins[@]/#/$out/}"
    for name in "${bins[@]}"; do
        # cargo's "Executable <source> (target/release/deps/<name>-<hash>)" line.
        bin=$(sed -nE "s#.*\((target/release/deps/${name}-[0-9a-f]+)\)\$#\1#p" "$log" | tail -n 1)
        if [[ -z "$bin" || ! -x "$bin" ]]; then
            echo "gpu-check --collect: cargo reported no executable for $name" >&2
            exit 1
        fi
        cp "$bin" "$out/$name"
        # Symbols kept (readable panics and backtraces), debug info dropped: ~70 MB → a few.
        strip --strip-debug "$out/$name" || { echo "gpu-check --collect: strip failed" >&2; exit 1; }
    done
    if "$out/gpu_report" --probe 2>&1 | grep -q 'has no CUDA kernels'; then
        echo "gpu-check --collect: this build has no CUDA kernels (nvcc was not found): bash tools/setup_cuda.sh, then collect again" >&2
        exit 1
    fi
    cp "$script_dir/gpu-check.sh" "$out/"
    mkdir -p "$out/fixtures"
    cp tests/fixtures/gpt2_tiny.safetensors "$out/fixtures/"
    echo "gpu-check: $out is ready: $(du -sh "$out" | cut -f1) ($(du -sb "$out" | cut -f1) bytes)"
    echo "gpu-check: on the GPU machine: bash $(basename "$out")/gpu-check.sh"
    exit 0
fi

# ---------------------------------------------------------------------------------------------
# Run (GPU machine)

if [[ -n "${1:-}" ]]; then
    dir="$1"
elif [[ -x "$script_dir/kernels" ]]; then
    dir="$script_dir"                   # the copy inside DIR
else
    dir="$script_dir/../gpu-bin"        # tools/gpu-check.sh in the repo
fi
dir="$(cd "$dir" 2>/dev/null && pwd)" ||
    { echo "gpu-check: FAILED: no folder ${1:-gpu-bin} (make it: bash tools/gpu-check.sh --collect)"; exit 1; }
cd "$dir" || exit 1
for name in "${bins[@]}"; do
    [[ -x "$name" ]] || { echo "gpu-check: FAILED: $dir/$name is missing (bash tools/gpu-check.sh --collect)"; exit 1; }
done
rm -f ./*.log gpu_report.json gpu-check.json
start=$SECONDS
budget="${GPU_CHECK_BUDGET:-460}"

echo "== gpu-check $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(hostname) in $dir"

# a. Driver and device. -------------------------------------------------------------------------
gpu=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
    gpu=1
    nvidia-smi --query-gpu=index,name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,clocks.sm,power.limit,temperature.gpu \
        --format=csv 2>&1
    nvidia-smi 2>/dev/null | grep -o 'CUDA Version: [0-9.]*' | head -n 1
    driver="$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1)"
    if [[ "${driver%%.*}" =~ ^[0-9]+$ ]] && ((${driver%%.*} < 580)); then
        echo "gpu-check: STOP: driver $driver is older than the kernels need (built with CUDA 13.0: driver 580 or newer)"
        exit 3
    fi
    export SMELT_REQUIRE_GPU=1
else
    echo "gpu-check: no GPU here (nvidia-smi lists none): every part should skip; nothing will be checked"
fi
# The binaries test whether the variable is set at all.
if [[ -n "${SMELT_REQUIRE_GPU:-}" ]]; then export SMELT_REQUIRE_GPU=1; else unset SMELT_REQUIRE_GPU; fi
export SMELT_FIXTURES="$dir/fixtures"
export CRITERION_HOME="$dir/criterion"

probe_out="$(timeout 20 ./gpu_report --probe 2>&1)"
probe_rc=$?
echo "$probe_out" | sed 's/^GPU-PROPERTY\t/  /; s/\t/: /'
if ((probe_rc == 3)); then
    echo "gpu-check: STOP: $(echo "$probe_out" | grep -o 'STOP: .*' | head -n 1)"
    exit 3
fi

# cuBLASLt (gpu_report's matmul baseline): the system's, else pip's nvidia-cublas wheel.
if ! ldconfig -p 2>/dev/null | grep -q 'libcublasLt\.so'; then
    cands=(/usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib)
    if command -v python3 >/dev/null 2>&1; then
        while IFS= read -r d; do cands+=("$d"); done < <(python3 - 2>/dev/null <<'EOF'
import importlib, os, site
roots = []
for name in ("nvidia.cublas", "nvidia.cu13", "nvidia"):
    try:
        roots += list(importlib.import_module(name).__path__)
    except Exception:
        pass
roots += [os.path.join(p, "nvidia") for p in site.getsitepackages() + [site.getusersitepackages()]]
for r in roots:
    for d, _, files in os.walk(r):
        if any(f.startswith("libcublasLt.so") for f in files):
            print(d)
EOF
        )
    fi
    for d in "${cands[@]}"; do
        if compgen -G "$d/libcublasLt.so*" >/dev/null; then
            export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
            echo "gpu-check: libcublasLt from $d"
            break
        fi
    done
fi

# compute-sanitizer: PATH, the CUDA installs, pip's nvidia packages.
sanitizer="$(command -v compute-sanitizer 2>/dev/null || true)"
if [[ -z "$sanitizer" ]]; then
    sanitizer="$(timeout 20 find /usr/local/cuda/bin /usr/local/cuda-*/bin /usr/local/cuda*/compute-sanitizer \
        /opt/nvidia /usr/lib/python3*/site-packages/nvidia /usr/local/lib/python3*/*-packages/nvidia \
        /opt/*/.venv/lib/python3*/site-packages/nvidia \
        -maxdepth 4 -name compute-sanitizer -type f -perm -u+x 2>/dev/null | head -n 1)"
fi
[[ -n "$sanitizer" ]] && echo "gpu-check: compute-sanitizer: $sanitizer"

# The parts. ------------------------------------------------------------------------------------
summary=()      # part<TAB>status<TAB>seconds<TAB>detail
failed=0

# run_part NAME LIMIT CHECK COMMAND...: runs COMMAND into NAME.log under a timeout (the smaller of
# LIMIT, GPU_CHECK_T_<NAME> and what is left of the budget); CHECK is a function that reads the
# log and prints why the part did not do its job (nothing when it did).
run_part() {
    local name="$1" limit="$2" check="$3"
    shift 3
    local var="GPU_CHECK_T_${name^^}"
    limit="${!var:-$limit}"
    local left=$((budget - (SECONDS - start)))
    ((left < limit)) && limit=$left
    if ((limit < 5)); then
        summary+=("$name"$'\t'"not run"$'\t'0$'\t'"the ${budget}s budget is spent")
        failed=1
        return
    fi
    echo "gpu-check: $name (timeout ${limit}s): $*"
    local t0=$SECONDS
    timeout --kill-after=5 "$limit" "$@" >"$name.log" 2>&1
    local rc=$? status detail=""
    local secs=$((SECONDS - t0))
    if ((rc == 124 || rc == 137)); then
        status=timeout detail="ran past ${limit}s"
    elif grep -q 'skipped' "$name.log"; then
        status=skipped detail="$(grep -o 'skipped.*' "$name.log" | sort -u | head -n 1)"
    elif ((rc != 0)); then
        status=failed
        detail="exit $rc: $(failures_of "$name.log")"
    else
        detail="$($check "$name.log")"
        if [[ -n "$detail" ]]; then status=failed; else status=passed; detail="$(summary_of "$name.log")"; fi
    fi
    # Without a GPU, skipping is what every part should do.
    if [[ $gpu == 0 && -z "${SMELT_REQUIRE_GPU:-}" && $status == skipped ]]; then
        :
    elif [[ $status != passed ]]; then
        failed=1
    fi
    summary+=("$name"$'\t'"$status"$'\t'"$secs"$'\t'"$detail")
}

# What a passing part says about itself.
summary_of() {
    local s
    s="$(grep -E '^test result:' "$1" | tail -n 1 | sed -E 's/^test result: ok\. //; s/; finished in.*//')"
    s="$s$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$1" | tail -n 1 | sed 's/^=* */; /')"
    # gpu_report: the training run's headline.
    s="$s$(awk -F'\t' '$1 == "GPU-REPORT" && $2 == "train" && ($3 == "tokens_per_s" || $3 == "mfu") {
        printf "%s%s %s %s", (n++ ? ", " : ""), $3, $4, $8 }' "$1")"
    echo "$s"
}

# Why a part failed: the failed tests (libtest's last "failures:" list), the sanitizer's first
# report and summary, else the first line that says FAILED or panicked.
failures_of() {
    local tests san
    tests="$(awk '/^failures:$/ { n = "" ; on = 1; next } on && /^    [^ ]+$/ { n = n " " $1; next }
                  on && /^test result/ { on = 0 } END { print n }' "$1")"
    san="$(grep -E '^========= (Invalid|Error|ERROR|RACECHECK|.*[Hh]azard|Uninitialized|Barrier)' "$1" |
        sed 's/^=* *//' | awk 'NR == 1 || /SUMMARY/' | paste -sd';' -)"
    if [[ -n "$tests$san" ]]; then
        echo "$san${san:+${tests:+; }}${tests# }"
    else
        grep -E 'FAILED|panicked' "$1" | head -n 1
    fi
}

passed_tests() { grep -E '^test result: ok\.' "$1" | sed -E 's/.* ok\. ([0-9]+) passed.*/\1/' | awk '{ s += $1 } END { print s + 0 }'; }

check_kernels() {
    local n
    n=$(passed_tests "$1")
    ((n > 0)) || { echo "no kernel test ran"; return; }
    grep -q $'^KERNEL-CHECK\t' "$1" || echo "no kernel comparison was printed"
}
check_device_gpu() {
    local want
    for want in 'f32 logits' 'bf16 logits' 'f32 worst gradient' 'bf16 worst gradient' 'graph replay'; do
        grep -q $'^GPU-STEP\t'".*$want" "$1" || { echo "no '$want' check was printed"; return; }
    done
}
check_sanitizer() {
    check_kernels "$1"
    grep -qE 'ERROR SUMMARY: 0 errors|RACECHECK SUMMARY: .*\(0 errors' "$1" ||
        echo "the sanitizer printed no summary of 0 errors"
}
check_report() {
    local s
    for s in matmul memory attention train; do
        grep -q $'^GPU-REPORT\t'"$s"$'\t' "$1" || { echo "section $s reported nothing"; return; }
    done
    grep -q $'^GPU-REPORT\tmatmul\t.*\t-\t-\t' "$1" && echo "a matmul has no cuBLASLt baseline"
}
check_criterion() { grep -q 'time:' "$1" || echo "no timings"; }

run_part kernels 80 check_kernels ./kernels cuda --test-threads=1 --nocapture
run_part device_gpu 40 check_device_gpu ./device_gpu --test-threads=1 --nocapture
tools=(memcheck racecheck synccheck initcheck)
limits=(45 50 30 45)
for i in "${!tools[@]}"; do
    tool="${tools[$i]}"
    if [[ -z "$sanitizer" ]]; then
        if [[ -n "${GPU_CHECK_NO_SANITIZER:-}" ]]; then
            summary+=("$tool"$'\t'"not run"$'\t'0$'\t'"no compute-sanitizer (GPU_CHECK_NO_SANITIZER set)")
        else
            summary+=("$tool"$'\t'"missing"$'\t'0$'\t'"no compute-sanitizer found (GPU_CHECK_NO_SANITIZER=1 to run without)")
            [[ $gpu == 1 ]] && failed=1
        fi
        continue
    fi
    SMELT_SMALL_CASES=1 run_part "$tool" "${limits[$i]}" check_sanitizer \
        "$sanitizer" --tool "$tool" --error-exitcode 86 --print-limit 20 ./kernels cuda --test-threads=1 --nocapture
done
run_part gpu_report 100 check_report ./gpu_report --json gpu_report.json
run_part cuda_kernels 60 check_criterion ./cuda_kernels --bench --warm-up-time 0.2 --measurement-time 0.5 --sample-size 10

# The table. ------------------------------------------------------------------------------------
logs() { cat ./*.log 2>/dev/null; }
echo
echo "== device"
echo "$probe_out" | grep $'^GPU-PROPERTY\t' | awk -F'\t' '{ printf "  %-26s %s\n", $2, $3 }'
if grep -qh $'^GPU-STEP\t' device_gpu.log 2>/dev/null; then
    echo "== PyTorch fixture on the GPU (device_gpu: worst relative error)"
    grep -h $'^GPU-STEP\t' device_gpu.log | awk -F'\t' '{ printf "  %-50s %10s\n", $2, $3 }'
fi
if grep -qh $'^GPU-REPORT\t' gpu_report.log 2>/dev/null; then
    echo "== report (gpu_report; notes in gpu_report.log)"
    printf '  %-10s %-28s %10s %10s %7s %7s  %s\n' section name ours baseline ratio %peak unit
    grep -h $'^GPU-REPORT\t' gpu_report.log |
        awk -F'\t' '{ printf "  %-10s %-28s %10s %10s %7s %7s  %s\n", $2, $3, $4, $5, $6, $7, $8 }'
fi
echo "== parts ($((SECONDS - start)) s)"
for s in "${summary[@]}"; do
    IFS=$'\t' read -r n st secs det <<<"$s"
    printf '  %-13s %-8s %4ss  %s\n' "$n" "$st" "$secs" "${det:0:110}"
done

# The JSON. -------------------------------------------------------------------------------------
if command -v python3 >/dev/null 2>&1; then
    printf '%s\n' "${summary[@]}" | GPU=$gpu FAILED=$failed python3 -c '
import json, os, re, sys
parts = [dict(zip(("part", "status", "seconds", "detail"), l.rstrip("\n").split("\t", 3)))
         for l in sys.stdin if l.strip()]
for p in parts:
    p["seconds"] = int(p["seconds"])
def rows(path, tag, keys):
    try:
        lines = open(path, errors="replace").read().splitlines()
    except OSError:
        return []
    return [dict(zip(keys, l.split("\t")[1:])) for l in lines if l.startswith(tag + "\t")]
report = None
if os.path.exists("gpu_report.json"):
    report = json.load(open("gpu_report.json"))
out = {
    "gpu": os.environ["GPU"] == "1",
    "passed": os.environ["FAILED"] == "0" and os.environ["GPU"] == "1",
    "parts": parts,
    "properties": {r["key"]: r["value"] for r in rows("gpu_report.log", "GPU-PROPERTY", ("key", "value"))},
    "pytorch_fixture": rows("device_gpu.log", "GPU-STEP", ("check", "worst_rel_err")),
    "kernel_checks": rows("kernels.log", "KERNEL-CHECK", ("runtime", "check", "rel_err")),
    "gpu_report": report,
}
json.dump(out, open("gpu-check.json", "w"), indent=1)
' && echo "JSON: $dir/gpu-check.json"
fi

if [[ -n "${GPU_CHECK_OUT:-}" ]] && mkdir -p "$GPU_CHECK_OUT"; then
    cp -f gpu-check.json gpu_report.json "$GPU_CHECK_OUT/" 2>/dev/null
    tar czf "$GPU_CHECK_OUT/gpu-check-logs.tgz" ./*.log 2>/dev/null
fi

if ((failed)); then
    echo "gpu-check: FAILED (parts above; logs in $dir/<part>.log)"
    exit 1
fi
if ((gpu == 0)); then
    echo "gpu-check: NO GPU here: the parts skipped, nothing was checked"
    exit 2
fi
echo "gpu-check: all parts passed"
