"""Benchmark: generation orchestration throughput and ledger write cost.

Runs a zero-latency Anthropic-compatible server (raw asyncio, keep-alive, canned answers, Messages
and Batches endpoints) in a subprocess, then measures in the same run:

- raw SDK: `AsyncAnthropic.messages.create` under a semaphore, no ledger (the baseline);
- sdf messages mode: `run_requests` with retries, budget, rate limiter and the SQLite ledger;
- sdf batch mode: `run_requests(batch=True)` (submit, poll, stream results into the ledger);
- ledger write cost per request against a bare SQLite insert of the same row.

Usage: python bench/generate.py [--requests 3000] [--concurrency 32]
Target: sdf messages mode >= 300 requests/s on 2 cores, so the tool is never the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

SERVER = r'''
import asyncio, json, sys
MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "stop_reason": "end_turn",
           "stop_sequence": None, "content": [{"type": "text", "text": "<document>A short answer.</document>"}],
           "usage": {"input_tokens": 50, "output_tokens": 10, "cache_creation_input_tokens": 0,
                     "cache_read_input_tokens": 2000}}
BODY = json.dumps(MESSAGE).encode()
batches = {}

def batch_json(bid, port):
    n = len(batches[bid])
    return {"id": bid, "type": "message_batch", "processing_status": "ended",
            "request_counts": {"processing": 0, "succeeded": n, "errored": 0, "canceled": 0, "expired": 0},
            "created_at": "2026-01-01T00:00:00Z", "expires_at": "2026-01-02T00:00:00Z",
            "ended_at": "2026-01-01T00:00:01Z", "archived_at": None, "cancel_initiated_at": None,
            "results_url": f"http://127.0.0.1:{port}/v1/messages/batches/{bid}/results"}

async def handle(reader, writer):
    port = writer.get_extra_info("sockname")[1]
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            break  # the client closed its keep-alive connection
        lines = head.decode().split("\r\n")
        method, path, _ = lines[0].split(" ")
        length = 0
        for line in lines[1:]:
            if line.lower().startswith("content-length:"):
                length = int(line.split(":")[1])
        raw = await reader.readexactly(length) if length else b""
        ctype = b"application/json"
        if method == "POST" and path == "/v1/messages":
            body = BODY
        elif method == "POST" and path == "/v1/messages/batches":
            bid = f"msgbatch_{len(batches)}"
            batches[bid] = [r["custom_id"] for r in json.loads(raw)["requests"]]
            body = json.dumps(batch_json(bid, port)).encode()
        elif path.endswith("/results"):
            bid = path.split("/")[-2]
            body = b"\n".join(json.dumps({"custom_id": c, "result": {"type": "succeeded", "message": MESSAGE}}).encode()
                              for c in batches[bid])
            ctype = b"application/x-jsonl"
        else:
            body = json.dumps(batch_json(path.split("/")[-1], port)).encode()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: " + ctype + b"\r\ncontent-length: " +
                     str(len(body)).encode() + b"\r\n\r\n" + body)
        await writer.drain()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
'''


def start_server() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    port = proc.stdout.readline().strip()  # type: ignore[union-attr]
    return proc, f"http://127.0.0.1:{port}"


def make_requests(n: int, tag: str) -> list:
    from sdf.llm.ledger import LLMRequest

    system = "A constitution long enough to be cached. " * 200
    return [LLMRequest("generate", f"{tag}-{i}", "claude-haiku-4-5", system, f"Write document {tag} {i}.", 1024)
            for i in range(n)]


async def raw_sdk(base_url: str, n: int, concurrency: int) -> float:
    import anthropic

    client = anthropic.AsyncAnthropic(base_url=base_url, api_key="bench", max_retries=0)
    gate = asyncio.Semaphore(concurrency)
    reqs = make_requests(n, "raw")

    async def one(r) -> None:
        async with gate:
            await client.messages.create(model=r.model, max_tokens=r.max_tokens, messages=[
                {"role": "user", "content": r.prompt}], system=[{"type": "text", "text": r.system}])

    start = time.perf_counter()
    await asyncio.gather(*(one(r) for r in reqs))
    elapsed = time.perf_counter() - start
    await client.close()
    return n / elapsed


def sdf_rate(base_url: str, n: int, concurrency: int, batch: bool, tmp: Path) -> float:
    from sdf.config import LLMConfig, Settings
    from sdf.llm.anthropic import AnthropicBackend
    from sdf.llm.engine import run_requests
    from sdf.llm.ledger import Ledger

    os.environ["ANTHROPIC_BASE_URL"] = base_url
    cfg = LLMConfig(model="claude-haiku-4-5", concurrency=concurrency, batch=batch, poll_interval_s=0.01)
    ledger = Ledger(tmp / f"ledger-{'batch' if batch else 'messages'}.sqlite")
    reqs = make_requests(n, "batch" if batch else "messages")
    start = time.perf_counter()
    summary = run_requests(reqs, ledger, AnthropicBackend("bench", cfg), cfg, 0.0, Settings().price, progress=False)
    elapsed = time.perf_counter() - start
    assert summary.succeeded == n, summary
    ledger.close()
    return n / elapsed


def ledger_write_cost(n: int, tmp: Path) -> tuple[float, float]:
    """Microseconds per recorded response: sdf's ledger vs a bare one-row INSERT commit."""
    from sdf.llm.ledger import Ledger, LLMResponse, Usage

    reqs = make_requests(n, "ledger")
    ledger = Ledger(tmp / "ledger-write.sqlite")
    ledger.register(reqs)
    response = LLMResponse("<document>text</document>" * 40, "end_turn", Usage(50, 1000, 0, 2000))
    start = time.perf_counter()
    for r in reqs:
        ledger.record_success(r.key, response, 0.001, "messages")
    ours = (time.perf_counter() - start) / n * 1e6
    db = sqlite3.connect(tmp / "bare.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE t (key TEXT PRIMARY KEY, text TEXT)")
    start = time.perf_counter()
    for r in reqs:
        db.execute("INSERT INTO t VALUES (?, ?)", (r.key, response.text))
    bare = (time.perf_counter() - start) / n * 1e6
    return ours, bare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    proc, base_url = start_server()
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            raw = asyncio.run(raw_sdk(base_url, args.requests, args.concurrency))
            messages = sdf_rate(base_url, args.requests, args.concurrency, batch=False, tmp=tmp)
            batch = sdf_rate(base_url, args.requests, args.concurrency, batch=True, tmp=tmp)
            ours, bare = ledger_write_cost(min(args.requests, 2000), tmp)
    finally:
        proc.terminate()
    print(json.dumps({"requests": args.requests, "concurrency": args.concurrency, "cores": os.cpu_count()}))
    print(f"raw SDK, no ledger (baseline): {raw:8.0f} req/s")
    verdict = "met" if messages >= 300 else "NOT met"
    print(f"sdf messages mode:             {messages:8.0f} req/s  ({messages / raw:.2f}x of raw SDK; "
          f"target >= 300 req/s: {verdict})")
    print(f"sdf batch mode:                {batch:8.0f} req/s  ({batch / raw:.2f}x of raw SDK)")
    print(f"ledger write: {ours:.0f} us per recorded response vs {bare:.0f} us for a bare insert ({ours / bare:.1f}x)")


if __name__ == "__main__":
    main()
