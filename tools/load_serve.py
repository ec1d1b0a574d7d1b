"""Load test for `serve`: N concurrent streaming clients per level over raw HTTP/1.1 (stdlib).

Usage: python3 tools/load_serve.py HOST PORT [--levels 1,8,32,64] [--requests 4]
       [--seconds 20] [--max-tokens 32]

Each client sends up to --requests streaming completions one after another (a level stops
starting new ones after --seconds), reads the server-sent events to the end and checks them.
Prints one row per level: clients, requests, ok, 429, errors, requests/s, tokens/s
(completion tokens of the ok requests over the level's wall time), p50/p99 latency and
p50 time to the first token. Exits 1 if any request neither succeeded nor got a clean 429.
"""

import argparse
import asyncio
import json
import sys
import time

PROMPTS = ["The quick brown fox", "Hello, world", "Once upon a time", "ROMEO:", "In the beginning"]


class Failure(Exception):
    pass


async def read_chunked(reader):
    """Yields the body's pieces of a chunked response."""
    while True:
        line = await reader.readline()
        if not line:
            raise Failure("connection closed inside a chunked body")
        size = int(line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            await reader.readline()
            return
        data = await reader.readexactly(size)
        await reader.readexactly(2)
        yield data


async def one_request(host, port, body):
    """Returns ("ok", latency, ttft, tokens) or ("429", latency, None, 0)."""
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        payload = json.dumps(body).encode()
        writer.write(
            b"POST /v1/completions HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (host.encode(), port, len(payload))
            + payload
        )
        await writer.drain()
        status_line = await reader.readline()
        parts = status_line.split()
        if len(parts) < 2:
            raise Failure(f"bad status line {status_line!r}")
        status = int(parts[1])
        headers = {}
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        if status == 429:
            raw = await reader.read()
            if headers.get("retry-after") != "1":
                raise Failure("429 without Retry-After: 1")
            if "transfer-encoding" not in headers:
                err = json.loads(raw)
                if "error" not in err:
                    raise Failure(f"429 body without error: {raw!r}")
            return ("429", time.perf_counter() - t0, None, 0)
        if status != 200:
            raw = await reader.read()
            raise Failure(f"status {status}: {raw[:200]!r}")
        if not headers.get("content-type", "").startswith("text/event-stream"):
            raise Failure(f"content-type {headers.get('content-type')}")
        if headers.get("transfer-encoding", "").lower() == "chunked":
            pieces = read_chunked(reader)
        else:
            async def until_eof():
                while True:
                    b = await reader.read(65536)
                    if not b:
                        return
                    yield b
            pieces = until_eof()
        buf = b""
        ttft = None
        done = False
        tokens = None
        async for piece in pieces:
            buf += piece
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                for line in event.split(b"\n"):
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if done:
                        raise Failure("data after [DONE]")
                    if data == b"[DONE]":
                        done = True
                        continue
                    chunk = json.loads(data)
                    if "error" in chunk:
                        raise Failure(f"error event: {chunk['error']}")
                    if ttft is None:
                        ttft = time.perf_counter() - t0
                    choice = chunk["choices"][0]
                    if choice["finish_reason"] is not None:
                        tokens = chunk["usage"]["completion_tokens"]
        if not done or tokens is None:
            raise Failure("stream ended without a final chunk and [DONE]")
        return ("ok", time.perf_counter() - t0, ttft, tokens)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except Exception:
            pass


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


async def level(host, port, clients, requests, seconds, max_tokens):
    results = []
    errors = []
    deadline = time.perf_counter() + seconds

    async def client(c):
        for r in range(requests):
            if time.perf_counter() > deadline:
                return
            body = {"prompt": PROMPTS[(c + r) % len(PROMPTS)], "max_tokens": max_tokens,
                    "temperature": 0.8, "seed": c * 1000 + r, "stream": True}
            try:
                results.append(await one_request(host, port, body))
            except Exception as e:  # noqa: BLE001 - every failure is counted and shown
                errors.append(f"{type(e).__name__}: {e}")

    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    wall = time.perf_counter() - t0
    ok = [r for r in results if r[0] == "ok"]
    busy = [r for r in results if r[0] == "429"]
    lat = [r[1] for r in ok]
    ttft = [r[2] for r in ok if r[2] is not None]
    toks = sum(r[3] for r in ok)
    n = len(results) + len(errors)
    row = (clients, n, len(ok), len(busy), len(errors), len(ok) / wall, toks / wall,
           pct(lat, 50) * 1e3, pct(lat, 99) * 1e3, pct(ttft, 50) * 1e3)
    return row, errors


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--levels", default="1,8,32,64")
    ap.add_argument("--requests", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--max-tokens", type=int, default=32)
    a = ap.parse_args()
    head = ("clients", "requests", "ok", "429", "errors", "req/s", "tok/s",
            "p50 ms", "p99 ms", "p50 ttft ms")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---:" for _ in head) + "|")
    bad = 0
    for n in [int(x) for x in a.levels.split(",")]:
        row, errors = await level(a.host, a.port, n, a.requests, a.seconds, a.max_tokens)
        c, req, ok, busy, err, rps, tps, p50, p99, ttft = row
        print(f"| {c} | {req} | {ok} | {busy} | {err} | {rps:.1f} | {tps:.0f} | "
              f"{p50:.1f} | {p99:.1f} | {ttft:.1f} |", flush=True)
        for e in errors[:5]:
            print(f"    error: {e}", file=sys.stderr)
        bad += err
    if bad:
        print(f"FAIL: {bad} requests neither succeeded nor got a clean 429", file=sys.stderr)
        sys.exit(1)
    print("every request succeeded or got a clean 429")


if __name__ == "__main__":
    asyncio.run(main())
