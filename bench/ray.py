"""Benchmark of the executors: docs/s of `sdf filter`, `dedup` and `pack` with --executor local and ray,
and the peak memory of each command (the sdf process and every process under it: Ray's workers too),
at N and 4N documents.

    .venv/bin/python bench/ray.py              # N = 2,000 documents of ~400 words; a few minutes
    .venv/bin/python bench/ray.py --docs 10000 --cpus 4

The run is planned by `sdf build --dry-run` (no API) and given synthetic documents: sentences of a
fixed vocabulary, every tenth one a near copy of another, so dedup has clusters to find. Each command
runs as its own process, so every Ray number includes starting a local Ray cluster (`--cpus` CPUs).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sdf.run import DOCUMENT_SCHEMA, write_rows  # noqa: E402

VOCABULARY = ("the a of and to in that it is was for on with as his her they be at one have this from or had by "
              "word but what some we can out other were all there when up use your how said an each she which do their "
              "time if will way about many then them would write like so these long make thing see him two has look "
              "more day could go come did number sound no most people my over know water than call first who may down "
              "side been now find river lantern harbour ledger promise honest careful question patient evidence")
WORDS = VOCABULARY.split()
CONFIG = """
[run]
seed = 7
[plan]
docs = {docs}
brainstorm = false
expand_pools = false
[llm]
model = "claude-haiku-4-5"
[quality]
skip_rules = ["language", "slop", "repetition"]
[pack]
tokenizer = "{tokenizer}"
seq_len = 1024
[executor]
num_cpus = {cpus}
"""


def text(rng: random.Random, words: int) -> str:
    sentences, n = [], 0
    while n < words:
        k = rng.randint(8, 20)
        sentences.append(" ".join(rng.choice(WORDS) for _ in range(k)).capitalize() + ".")
        n += k
    return " ".join(sentences)


def make_run(root: Path, docs: int, cpus: int) -> Path:
    root.mkdir(parents=True)
    config = root / "sdf.toml"
    config.write_text(CONFIG.format(docs=docs, cpus=cpus, tokenizer=ROOT / "tests" / "data" / "tokenizer.json"))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    subprocess.run([sys.executable, "-m", "sdf", "build", "--constitution", ROOT / "tests" / "data" /
                    "fixture_constitution.md", "--config", config, "--out", root, "--name", "run", "--dry-run"],
                   check=True, capture_output=True, env=env, cwd=root)
    run = root / "run"
    specs = pq.read_table(run / "specs.parquet").to_pylist()
    rng = random.Random(1)
    rows = []
    for i, spec in enumerate(specs):
        body = text(rng, 400)
        if i % 10 == 9:  # a near copy of an earlier document
            words = rows[rng.randrange(len(rows))]["text"].split(" ")
            words[rng.randrange(len(words))] = "notably"
            body = " ".join(words)
        rows.append({"doc_id": spec["spec_id"], "genre": spec["genre"], "section_id": spec["section_id"],
                     "text": body, "stop_reason": "end_turn", "cost_usd": 0.0})
    write_rows(run / "documents.parquet", rows, DOCUMENT_SCHEMA)
    return run


def timed(args: list, cwd: Path) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of the process tree of one sdf command."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TQDM_DISABLE": "1"}
    start = time.perf_counter()
    proc = psutil.Popen([sys.executable, "-m", "sdf", *map(str, args)], cwd=cwd, env=env,
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        rss = 0
        try:
            for p in [proc, *proc.children(recursive=True)]:
                rss += p.memory_info().rss
        except psutil.Error:
            pass
        peak = max(peak, rss)
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"sdf {' '.join(map(str, args))} failed: {proc.stderr.read().decode()[-400:]}")
    return seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    print(f"{'docs':>6} {'stage':>6} {'local docs/s':>12} {'ray docs/s':>10} {'local peak MB':>13} "
          f"{'ray peak MB':>11}")
    for docs in (args.docs, 4 * args.docs):
        with tempfile.TemporaryDirectory() as tmp:
            base = make_run(Path(tmp) / "base", docs, args.cpus)
            runs = {}
            for kind in ("local", "ray"):
                runs[kind] = Path(tmp) / kind / "run"
                shutil.copytree(base, runs[kind])
            counts = {"filter": docs}
            results: dict[str, dict[str, tuple[float, int]]] = {}
            for stage in ("filter", "dedup", "pack"):
                for kind, run in runs.items():
                    results.setdefault(stage, {})[kind] = timed([stage, run, "--executor", kind], Path(tmp))
                if stage == "filter":
                    counts["dedup"] = pq.read_metadata(runs["local"] / "filtered.parquet").num_rows
                if stage == "dedup":
                    counts["pack"] = pq.read_metadata(runs["local"] / "corpus.parquet").num_rows
                local, ray = results[stage]["local"], results[stage]["ray"]
                n = counts[stage]
                print(f"{docs:>6} {stage:>6} {n / local[0]:>12.0f} {n / ray[0]:>10.0f} {local[1] / 2**20:>13.0f} "
                      f"{ray[1] / 2**20:>11.0f}", flush=True)
            same = pq.read_table(runs["local"] / "corpus.parquet").equals(pq.read_table(runs["ray"] / "corpus.parquet"))
            print(f"{docs:>6} corpus equal: {same}")


if __name__ == "__main__":
    main()
