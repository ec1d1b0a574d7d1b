#!/usr/bin/env bash
# Compiles each kernels/*.cu ALONE, with the nvcc flags build.rs uses for the one-unit fatbin,
# and fails on any register spill or compile error. build.rs checks the one unit; this checks
# that every file also stands on its own (its own includes, its own declarations) and that no
# kernel spills when the compiler sees only its file. Needs nvcc: `bash tools/setup_cuda.sh`
# (or NVCC=/path/to/nvcc).
#
#   bash tools/check_spills.sh [FILE.cu...]     (default: every kernels/*.cu)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

nvcc=${NVCC:-$(find tools/.venv-cuda/ -path '*/bin/nvcc' -type f 2>/dev/null | head -n 1)}
if [ -z "$nvcc" ] || [ ! -x "$nvcc" ]; then
  echo "error: nvcc not found; run: bash tools/setup_cuda.sh (or set NVCC)" >&2
  exit 1
fi
if [ $# -gt 0 ]; then files=("$@"); else files=(kernels/*.cu); fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# One file: compile, keep ptxas's report; print "FILE ok|spills|failed".
compile() {
  local cu=$1 log
  log="$work/$(basename "$cu").log"
  # Keep these flags in step with build_fatbin in build.rs.
  if ! "$nvcc" -fatbin -o "$work/$(basename "$cu").fatbin" -std=c++17 -O3 --use_fast_math \
      -gencode=arch=compute_80,code='[sm_80,compute_80]' -gencode=arch=compute_90a,code=sm_90a \
      -Xptxas -v,-warn-spills -I kernels "$cu" >"$log" 2>&1; then
    echo "$cu failed"
  elif grep 'spill' "$log" | grep -vq ' 0 bytes spill stores, 0 bytes spill loads'; then
    echo "$cu spills"
  else
    echo "$cu ok"
  fi
}
export -f compile
export nvcc work

start=$SECONDS
results=$(printf '%s\n' "${files[@]}" | xargs -P "$(nproc)" -I{} bash -c 'compile "$1"' _ {})
status=0
while read -r cu verdict; do
  printf '%-36s %s\n' "$cu" "$verdict"
  if [ "$verdict" != ok ]; then
    status=1
    cat "$work/$(basename "$cu").log" >&2
  fi
done <<<"$results"
echo "check_spills: ${#files[@]} files compiled alone in $((SECONDS - start)) s"
exit $status
