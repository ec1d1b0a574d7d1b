#!/usr/bin/env bash
# Load test of `serve`: builds release, starts it on a free loopback port with MODEL_DIR
# (default tests/fixtures/hf_tiny), runs 1, 8, 32 and 64 concurrent streaming clients
# (tools/load_serve.py: 4 requests each, at most 20 s a level, max_tokens 32), prints the table,
# then stops the server with SIGTERM and checks that it exits 0.
#   bash tools/load_serve.sh [MODEL_DIR] [extra serve args...]
# Environment: LEVELS (default 1,8,32,64), REQUESTS (4), SECONDS_LEVEL (20), MAX_TOKENS (32).
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-tests/fixtures/hf_tiny}"
shift || true

cargo build --release --bin serve >&2
log="$(mktemp -d)"
./target/release/serve --model "$model" --addr 127.0.0.1:0 --device cpu "$@" \
    >"$log/stdout" 2>"$log/stderr" &
pid=$!
cleanup() {
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    rm -rf "$log"
}
trap cleanup EXIT

port=""
for _ in $(seq 1 600); do
    port="$(sed -n 's|^listening on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$log/stdout")"
    [ -n "$port" ] && break
    if ! kill -0 "$pid" 2>/dev/null; then cat "$log/stderr" >&2; exit 1; fi
    sleep 0.1
done
[ -n "$port" ] || { echo "serve did not start" >&2; cat "$log/stderr" >&2; exit 1; }
echo "serve $model on 127.0.0.1:$port (pid $pid)" >&2

status=0
python3 tools/load_serve.py 127.0.0.1 "$port" --levels "${LEVELS:-1,8,32,64}" \
    --requests "${REQUESTS:-4}" --seconds "${SECONDS_LEVEL:-20}" \
    --max-tokens "${MAX_TOKENS:-32}" || status=$?

kill -TERM "$pid"
code=0
wait "$pid" || code=$?
if [ "$code" -ne 0 ]; then
    echo "serve exited $code after SIGTERM" >&2
    tail -5 "$log/stderr" >&2
    status=1
fi
exit "$status"
