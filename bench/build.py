"""Whole-build CPU benchmark: filter, dedup (with caps and metrics) and pack on N and 4N documents, no API.

    .venv/bin/python bench/build.py [--docs 20000] [--words 1000] [--ner]

For each size, a fresh subprocess writes documents.parquet (about `--words` words each, across the
catalog's genres, with planted exact and near duplicates), then another fresh subprocess runs the
stages and reports docs/s per stage and its peak RSS. The verdict is the ratio of peak RSS at 4N to
peak RSS at N (target: at most 1.25, i.e. memory stays flat as the corpus grows). Names come from
the capitalised-word heuristic unless --ner is given (spaCy NER costs ~0.1 s per fiction document).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
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


def settings(ner: bool):  # noqa: ANN201 - sdf.config.Settings, imported late so the parent stays light
    from sdf.config import load_settings

    return load_settings(None, {"run.variables": {"model_name": "Orin"}, "diversity.ner_fallback": not ner,
                                "pack.tokenizer": str(TOKENIZER), "pack.formats": ["npy", "megatron"]})


def write_documents(run_dir: Path, docs: int, words: int, ner: bool) -> None:
    """documents.parquet of `docs` synthetic documents; 2% are exact and 2% near copies of others."""
    from fake_anthropic import _document_body

    from sdf.products.context import create_run
    from sdf.run import DOCUMENT_SCHEMA, TableWriter

    run = create_run(settings(ner), CONSTITUTION, run_dir)
    sections = [s.id for s in run.constitution.sections]
    genres = list(run.catalog.genres.values())
    rng = random.Random(docs)
    recent: list[str] = []
    with TableWriter(run.dir.documents, DOCUMENT_SCHEMA) as out:
        batch = []
        for i in range(docs):
            genre = genres[i % len(genres)]
            target = max(genre.min_words, min(genre.max_words, int(rng.gauss(words, words / 5))))
            roll = rng.random()
            if recent and roll < 0.02:
                text = rng.choice(recent)  # exact copy
            elif recent and roll < 0.04:
                text = rng.choice(recent).replace(" the ", " a ", 3)  # near copy
            else:
                text = _document_body(rng, [genre.title.lower(), rng.choice(sections), "the harbour"], target)
            recent = (recent + [text])[-50:]
            batch.append({"doc_id": f"{i:07d}", "genre": genre.name, "section_id": rng.choice(sections),
                          "section_title": "", "names": [], "target_words": target, "text": text,
                          "stop_reason": "end_turn", "model": "bench", "cost_usd": 0.01})
            if len(batch) == 1000:
                out.write(batch)
                batch = []
        out.write(batch)


def run_stages(run_dir: Path, ner: bool) -> dict:
    """filter -> dedup -> pack on the run's documents; seconds per stage and peak RSS."""
    from sdf.products.context import open_run
    from sdf.products.documents import dedup_stage, filter_stage, pack_stage
    from sdf.run import count_rows

    run = open_run(run_dir, {"diversity.ner_fallback": not ner})
    docs = count_rows(run.dir.documents)
    times, peaks = {}, {}
    for name, stage in (("filter", lambda: filter_stage(run, None, progress=False)),
                        ("dedup", lambda: dedup_stage(run)),
                        ("pack", lambda: pack_stage(run, progress=False))):
        start = time.perf_counter()
        stage()
        times[name] = time.perf_counter() - start
        peaks[name] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"docs": docs, "corpus": count_rows(run.dir.corpus), "seconds": times, "peak_after_mb": peaks,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child(mode: str, run_dir: str, docs: int, words: int, ner: bool) -> None:
    if mode == "write":
        write_documents(Path(run_dir), docs, words, ner)
    else:
        print(json.dumps(run_stages(Path(run_dir), ner)))


def measure(tmp: Path, docs: int, words: int, ner: bool) -> dict:
    run_dir = tmp / f"run{docs}"
    flags = [str(docs), str(words), "--ner" if ner else "--no-ner"]
    subprocess.run([sys.executable, __file__, "--child", "write", str(run_dir), *flags], check=True)
    out = subprocess.run([sys.executable, __file__, "--child", "stages", str(run_dir), *flags], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _, _, mode, run_dir, docs, words, ner = sys.argv
        child(mode, run_dir, int(docs), int(words), ner == "--ner")
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=20_000, help="N; the second size is 4N")
    parser.add_argument("--words", type=int, default=1000, help="mean words per document")
    parser.add_argument("--ner", action="store_true", help="use spaCy NER for names (slow)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sdf-bench-build-") as tmp:
        results = [measure(Path(tmp), n, args.words, args.ner) for n in (args.docs, 4 * args.docs)]
    for r in results:
        rates = "  ".join(f"{k} {r['docs'] / s:,.0f} docs/s" for k, s in r["seconds"].items())
        after = ", ".join(f"{k} {v:,.0f}" for k, v in r["peak_after_mb"].items())
        print(f"{r['docs']:>8,} docs -> {r['corpus']:,} in the corpus: {rates}; peak RSS {r['peak_rss_mb']:,.0f} MB "
              f"(after {after})")
    ratio = results[1]["peak_rss_mb"] / results[0]["peak_rss_mb"]
    verdict = "flat" if ratio <= 1.25 else "GROWS"
    print(f"peak RSS at 4N / N: {ratio:.2f} (target <= 1.25: {verdict})")


if __name__ == "__main__":
    main()
