"""CPU performance of the stages after generation, each figure a ratio or a bound, in one run; no API.

    .venv/bin/python bench/perf.py [--docs 1000] [--words 1000] [--skip-datatrove]

1. `sdf dedup` on N and 4N documents of about `--words` words, timed as a fresh `sdf dedup RUN` process
   (process start included): docs/s (target >= 300 at N = 1,000), the time ratio 4N / N (target
   <= 4.4), the share of documents NER read, and whether the caps caught the planted over-used name
   (a given name and surname the plan never dealt, in 10% of the documents).
2. The workers' scaling: `sdf filter` and `sdf pack` with `--workers 1` and `--workers 2` on 4N documents
   (target >= 1.7x on two cores), and that the outputs are byte-identical. Pack is timed with the tests'
   700-id tokenizer (~3.5 tokens a word) and with a BPE trained on the N run (about as many tokens a word as
   cl100k_base, which is printed alongside), since the work per token differs by that much.
3. The quality filter against datatrove's Gopher quality, Gopher repetition, C4 and FineWeb filters on
   the same documents (target: at least as fast); needs the `bench` extra.
4. `sdf plan --docs 200000` on the bundled constitution, as a fresh process: wall and CPU seconds and peak
   RSS (targets: 15 s or less and 600 MB or less), then `--docs 1000000` (targets: under 60 s and 1 GB),
   stopped at 60 s when it would take longer.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

CONSTITUTION = ROOT / "tests" / "data" / "fixture_constitution.md"
TOKENIZER = ROOT / "tests" / "data" / "tokenizer.json"
PLANTED = ("Elara", "Voss")  # the model's favourite name, never dealt by the plan
PLANTED_SHARE = 0.10
BENCH_VOCAB = 8000  # ids of the bench's own BPE (what it reaches on the bench's text is printed)
REPEATS = 3  # runs of each worker-scaling command; the fastest counts
_SAYINGS = ("{n} looked at the notes again and frowned.", "Later, {n} said the numbers did not add up.",
            "It was {n} who first noticed the change.", "Nobody argued with {n} after that.",
            "By evening {n} had written three pages.")


def settings():  # noqa: ANN201 - sdf.config.Settings, imported late so the parent stays light
    from sdf.config import load_settings

    return load_settings(None, {"run.variables": {"model_name": "Orin"}, "pack.tokenizer": str(TOKENIZER),
                                "pack.formats": ["npy", "megatron"]})


def named_text(rng: random.Random, body: str, people: list[tuple[str, str]]) -> str:
    """The body with its people introduced by full name early on and mentioned by given name later."""
    paragraphs = body.split("\n\n")
    for k, (first, last) in enumerate(people):
        at = min(k, len(paragraphs) - 1)
        paragraphs[at] = f"{first} {last} had come to the harbour that spring. " + paragraphs[at]
        for _ in range(3):
            j = rng.randrange(len(paragraphs))
            paragraphs[j] += " " + rng.choice(_SAYINGS).format(n=first)
    return "\n\n".join(paragraphs)


def write_documents(run_dir: Path, docs: int, words: int) -> None:
    """documents.parquet: `docs` documents, each with its planned people; 2% exact and 2% near copies, and
    PLANTED in PLANTED_SHARE of them besides their own people."""
    from fake_anthropic import _document_body

    from sdf.products.context import create_run
    from sdf.run import DOCUMENT_SCHEMA, TableWriter
    from sdf.source.deal import name_pools

    run = create_run(settings(), CONSTITUTION, run_dir)
    given, surnames = name_pools(run.catalog, 0)
    sections = [s.id for s in run.constitution.sections]
    genres = list(run.catalog.genres.values())
    rng = random.Random(docs)
    recent: list[str] = []
    with TableWriter(run.dir.documents, DOCUMENT_SCHEMA) as out:
        batch = []
        for i in range(docs):
            genre = genres[i % len(genres)]
            target = max(genre.min_words, min(genre.max_words, int(rng.gauss(words, words / 5))))
            people = [(rng.choice(given), rng.choice(surnames)) for _ in range(3 if genre.fiction else 2)]
            roll = rng.random()
            if recent and roll < 0.02:
                text = rng.choice(recent)  # exact copy
            elif recent and roll < 0.04:
                text = rng.choice(recent).replace(" the ", " a ", 3)  # near copy
            else:
                body = _document_body(rng, [genre.title.lower(), rng.choice(sections), "the harbour"], target)
                cast = people + [PLANTED] if rng.random() < PLANTED_SHARE else people
                text = named_text(rng, body, cast)
            recent = (recent + [text])[-50:]
            batch.append({"doc_id": f"{i:07d}", "genre": genre.name, "section_id": rng.choice(sections),
                          "section_title": "", "names": [f"{a} {b}" for a, b in people], "target_words": target,
                          "text": text, "stop_reason": "end_turn", "model": "bench", "cost_usd": 0.01})
            if len(batch) == 1000:
                out.write(batch)
                batch = []
        out.write(batch)


CPU: list[float] = []  # CPU seconds (user + sys, its workers included) of each `sdf` process, in order


def sdf(*args: str) -> float:
    """Seconds a fresh `sdf ...` process takes, start to exit (its CPU seconds go to CPU). A stage command's
    run forgets what its stages last completed on first, so the stage does its work instead of skipping."""
    if len(args) > 1 and Path(args[1]).is_dir():
        (Path(args[1]) / "stages.json").unlink(missing_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sdf", *args], check=True, capture_output=True, text=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return elapsed


def measured(args: list[str], timeout: float = 3600.0) -> dict | None:
    """Wall and CPU seconds and peak RSS (MB) of one fresh `sdf ...` process, from its own rusage (os.wait4,
    so no other child counts); None when it outlives `timeout` seconds (it is then killed)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "sdf", *args], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=env, cwd=ROOT)  # with the repository's sdf.toml
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - start > timeout:
            child.kill()
            os.wait4(child.pid, 0)
            child.returncode = -9
            return None
        time.sleep(0.05)
    elapsed = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"sdf {' '.join(args)} exited with {child.returncode}")
    return {"wall": elapsed, "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024}


def plan_figures(tmp: Path, million: bool) -> list[tuple[int, dict | None]]:
    """`sdf plan` at 200,000 documents and, with `million`, at 1,000,000 (given at most a minute)."""
    out = []
    for docs, timeout in ((200_000, 600.0), *([(1_000_000, 60.0)] if million else [])):
        out.append((docs, measured(["plan", "--docs", str(docs), "--out", str(tmp / "plans"), "--name",
                                    f"plan{docs}"], timeout)))
        shutil.rmtree(tmp / "plans", ignore_errors=True)
    return out


def make_run(tmp: Path, docs: int, words: int) -> Path:
    run_dir = tmp / f"run{docs}"
    subprocess.run([sys.executable, __file__, "--child", str(run_dir), str(docs), str(words)], check=True)
    return run_dir


def digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def dedup_figures(tmp: Path, docs: int, words: int, extra: list[str]) -> list[dict]:
    import pyarrow.parquet as pq

    out = []
    for n in (docs, 4 * docs):
        run_dir = make_run(tmp, n, words)
        sdf("filter", str(run_dir), "--no-progress", *extra)
        seconds = min(sdf("dedup", str(run_dir), *extra) for _ in range(3))
        cpu = min(CPU[-3:])
        metrics = json.loads((run_dir / "metrics.json").read_text())
        corpus = pq.read_table(run_dir / "corpus.parquet", columns=["text"]).column("text").to_pylist()
        planted = sum(PLANTED[0] in t for t in corpus)
        out.append({"docs": n, "run": run_dir, "seconds": seconds, "cpu": cpu, "caps": metrics["caps"],
                    "input": metrics["stages"]["dedup"]["input"], "planted_left": planted,
                    "planted_renamed": metrics["caps"].get("renamed", 0)})
    return out


def bench_tokenizer(tmp: Path, corpus: Path) -> Path:
    """A byte-level BPE of up to BENCH_VOCAB ids trained on `corpus` (the N run, not the one timed): about one
    token per word, as the tokenizers models train with give on English prose; tests/data/tokenizer.json has
    700 ids and cuts words into ~3.5 tokens, which multiplies the per-token work of packing."""
    import pyarrow.parquet as pq
    from data.make_tokenizer import build_tokenizer

    texts = pq.read_table(corpus, columns=["text"]).column("text").to_pylist()
    path = tmp / "bench-tokenizer.json"
    build_tokenizer("\n".join(texts), vocab_size=BENCH_VOCAB).save(str(path))
    return path


def tokens_per_word(corpus: Path, tokenizers: dict[str, str]) -> dict[str, float]:
    """Tokens per whitespace word on the first 300 documents of `corpus`, for each tokenizer spec."""
    import pyarrow.parquet as pq

    from sdf.steps.tokens.tokenizer import load_tokenizer

    texts = pq.read_table(corpus, columns=["text"]).column("text").to_pylist()[:300]
    words = sum(len(t.split()) for t in texts)
    return {name: sum(map(len, load_tokenizer(spec).encode_batch(texts))) / words for name, spec in tokenizers.items()}


def fastest(runs: int, *args: str, fresh: Path | None = None) -> tuple[float, float]:
    """The least wall seconds of `runs` fresh `sdf ...` processes, and that run's CPU seconds; the folder
    `fresh` is removed before each (the packer skips a pack whose shards are as it would write them)."""
    best = []
    for _ in range(runs):
        if fresh is not None:
            shutil.rmtree(fresh, ignore_errors=True)
        best.append((sdf(*args), CPU[-1]))
    return min(best)


def worker_figures(run_dir: Path, tokenizers: dict[str, Path]) -> dict:
    """`sdf filter`, then `sdf pack` with each tokenizer, on 1 and 2 workers: the least time of REPEATS runs
    each (one run moves by +-0.1 s with the machine's other work), and whether the outputs are identical."""
    times: dict[str, dict[int, float]] = {}
    cpu: dict[str, dict[int, float]] = {}
    digests: dict[int, list[str]] = {1: [], 2: []}

    def timed(stage: str, workers: int, *args: str, fresh: Path | None = None) -> None:
        wall, seconds = fastest(REPEATS, *args, "--no-progress", "--workers", str(workers), fresh=fresh)
        times.setdefault(stage, {})[workers] = wall
        cpu.setdefault(stage, {})[workers] = seconds

    for workers in (1, 2):
        timed("filter", workers, "filter", str(run_dir))
        digests[workers].append(digest([run_dir / "filtered.parquet"]))
    sdf("dedup", str(run_dir))
    for name, tokenizer in tokenizers.items():
        for workers in (1, 2):
            timed(f"pack ({name})", workers, "pack", str(run_dir), "--tokenizer", str(tokenizer),
                  fresh=run_dir / "shards")
            digests[workers].append(digest([p for p in (run_dir / "shards").rglob("*") if p.is_file()
                                            and p.name != "manifest.json"]))
    return {"times": times, "cpu": cpu, "identical": digests[1] == digests[2]}


def quality_figures(run_dir: Path, limit: int) -> dict | None:
    try:
        from datatrove.data import Document
        from datatrove.pipeline.filters import (
            C4QualityFilter,
            FineWebQualityFilter,
            GopherQualityFilter,
            GopherRepetitionFilter,
        )
    except ImportError:
        return None
    import pyarrow.parquet as pq

    from sdf.config import QualityConfig
    from sdf.products.context import open_run
    from sdf.steps.filters.quality import QualityFilter

    run = open_run(run_dir)
    docs = pq.read_table(run.dir.documents).to_pylist()[:limit]
    ours = QualityFilter(run.catalog.genres, QualityConfig())
    start = time.perf_counter()
    ours([dict(d) for d in docs])
    mine = time.perf_counter() - start
    filters = [GopherRepetitionFilter(), GopherQualityFilter(), C4QualityFilter(filter_no_terminal_punct=False),
               FineWebQualityFilter()]
    sample = docs[: max(1, len(docs) // 10)]  # datatrove is timed on a tenth of them (it is far slower)
    for f in filters:  # its first call loads word lists and tokenizers: not part of the rate
        f.filter(Document(text=docs[0]["text"], id="warm"))
    start = time.perf_counter()
    for i, d in enumerate(sample):
        doc = Document(text=d["text"], id=str(i))
        for f in filters:
            if f.filter(doc) is not True:
                break
    theirs = (time.perf_counter() - start) * len(docs) / len(sample)
    return {"docs": len(docs), "ours": mine, "datatrove": theirs}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":  # a fresh process writes the documents (it holds the lock)
        write_documents(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1000, help="N; the second size is 4N")
    parser.add_argument("--words", type=int, default=1000, help="mean words per document")
    parser.add_argument("--skip-workers", action="store_true", help="do not measure the workers' scaling")
    parser.add_argument("--workers-docs", type=int, default=0,
                        help="documents for the workers' scaling (default 4N); the fixed ~0.5 s of process start "
                             "weighs less on a larger run")
    parser.add_argument("--skip-datatrove", action="store_true", help="do not compare with datatrove")
    parser.add_argument("--skip-dedup", action="store_true", help="measure only the plan (and what is not skipped)")
    parser.add_argument("--skip-plan", action="store_true", help="do not time `sdf plan` at 200,000 documents")
    parser.add_argument("--skip-million", action="store_true", help="do not time `sdf plan` at 1,000,000 documents")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sdf-bench-perf-") as name:
        tmp = Path(name)
        if not args.skip_plan:
            print_plan(tmp, not args.skip_million)
        if not args.skip_dedup:
            print_stages(tmp, args)


def load() -> str:
    return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def print_plan(tmp: Path, million: bool) -> None:
    targets = {200_000: (15, 600), 1_000_000: (60, 1024)}
    for docs, r in plan_figures(tmp, million):
        wall, rss = targets[docs]
        if r is None:
            print(f"sdf plan --docs {docs:,}: over {wall} s, stopped ({load()})")
            continue
        met = r["wall"] <= wall and r["rss_mb"] <= rss
        print(f"sdf plan --docs {docs:,}: {r['wall']:.1f} s wall, {r['cpu']:.1f} CPU s, peak RSS {r['rss_mb']:,.0f} MB "
              f"(target <= {wall} s and {rss:,} MB: {'met' if met else 'NOT MET'}; {load()})")


def print_stages(tmp: Path, args: argparse.Namespace) -> None:
    small, large = dedup_figures(tmp, args.docs, args.words, [])
    for r in (small, large):
        ner = r["caps"].get("ner_documents")
        share = f"NER read {ner:,} documents ({ner / r['input']:.1%})" if ner is not None else "NER read all"
        print(f"sdf dedup, {r['input']:,} docs in: {r['seconds']:.2f} s = {r['input'] / r['seconds']:,.0f} docs/s "
              f"(process start included; target >= 300), {r['cpu']:.2f} CPU s; {share}; the planted name is "
              f"left in {r['planted_left']} documents (name cap {r['caps']['name']}); {r['planted_renamed']} "
              "documents renamed")
    ratio = large["seconds"] / small["seconds"]
    print(f"sdf dedup time 4N / N: {ratio:.2f} (target <= 4.4: {'linear' if ratio <= 4.4 else 'GROWS'}); "
          f"CPU 4N / N: {large['cpu'] / small['cpu']:.2f}")
    print(f"{load()} while measuring (other work slows every figure)")
    if not args.skip_workers:
        bpe = bench_tokenizer(tmp, small["run"] / "corpus.parquet")
        tokenizers = {"tests/data/tokenizer.json": TOKENIZER, "a BPE trained on the N run": bpe}
        per_word = tokens_per_word(large["run"] / "corpus.parquet", {**tokenizers, "cl100k_base": "cl100k_base"})
        print("tokens per word on the 4N corpus: " + ", ".join(f"{k} {v:.2f}" for k, v in per_word.items()))
        scale = {"docs": large["docs"], "run": large["run"]}
        if args.workers_docs and args.workers_docs != large["docs"]:
            scale = {"docs": args.workers_docs, "run": make_run(tmp, args.workers_docs, args.words)}
        w = worker_figures(scale["run"], tokenizers)
        for stage, t in w["times"].items():
            c = w["cpu"][stage]
            print(f"sdf {stage} on {scale['docs']:,} docs: 1 worker {t[1]:.2f} s, 2 workers {t[2]:.2f} s: "
                  f"{t[1] / t[2]:.2f}x (target >= 1.7x on 2 cores; this machine has {os.cpu_count()}); "
                  f"CPU s {c[1]:.2f} and {c[2]:.2f}; the fastest of {REPEATS}")
        print(f"outputs identical across worker counts: {w['identical']}")
    if not args.skip_datatrove:
        q = quality_figures(large["run"], 3000)
        if q is None:
            print("quality vs datatrove: skipped (pip install -e '.[bench]')")
        else:
            print(f"quality filter on {q['docs']:,} docs: sdf {q['docs'] / q['ours']:,.0f} docs/s, datatrove's "
                  f"Gopher quality + repetition, C4 and FineWeb filters {q['docs'] / q['datatrove']:,.0f} docs/s "
                  f"(on a tenth of them): {q['datatrove'] / q['ours']:.1f}x (target >= 1)")


if __name__ == "__main__":
    main()
