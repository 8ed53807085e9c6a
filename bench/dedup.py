"""Benchmark of sdf.steps.dedup.minhash: throughput against datasketch's per-shingle baseline, recall, false merges.

    .venv/bin/python bench/dedup.py            # 50,000 documents of ~300 words, about a minute
    .venv/bin/python bench/dedup.py --docs 200000

Documents are random word sequences from a seeded Zipf-like vocabulary. Near-duplicate pairs are
planted at Jaccard targets 0.3 ... 0.95 by replacing words spaced five apart (each replacement swaps
five 5-word shingles); the exact Jaccard of every planted pair is then computed from its shingle sets.

Throughput is end to end: normalisation, shingling, signatures, LSH, verification, clustering and the
rejected rows. The baseline is datasketch ``MinHash.update`` once per shingle (normalisation and
shingling included, no LSH at all), timed on a subsample and extrapolated per document, so the ratio
understates our advantage.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from datasketch import MinHash  # noqa: E402

from sdf.config import DedupConfig  # noqa: E402
from sdf.steps.dedup.clusters import deduplicate  # noqa: E402
from sdf.steps.dedup.minhash import normalize_text  # noqa: E402

TARGETS = (0.3, 0.5, 0.7, 0.85, 0.86, 0.9, 0.95)


def make_vocabulary(rng: np.random.Generator, size: int) -> np.ndarray:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    lengths = rng.integers(2, 11, size)
    return np.array(["".join(rng.choice(letters, n)) for n in lengths])


def make_corpus(n_docs: int, words: int, pairs_per_target: int, seed: int) -> tuple[list[dict], list[tuple]]:
    rng = np.random.default_rng(seed)
    vocab = make_vocabulary(rng, 30_000)
    ids = (rng.zipf(1.25, size=(n_docs, words)) - 1) % len(vocab)
    texts = [" ".join(vocab[row]) for row in ids]
    planted: list[tuple[int, int, float]] = []
    slots = rng.permutation(n_docs)[: 2 * pairs_per_target * len(TARGETS)].reshape(-1, 2)
    fresh = 0
    for k, (a, b) in enumerate(slots.tolist()):
        target = TARGETS[k // pairs_per_target]
        m = round((words - 4) * (1 - target) / (5 * (1 + target)))
        copy = texts[a].split()
        for pos in rng.choice(np.arange(0, words, 5), m, replace=False).tolist():
            copy[pos] = f"zq{fresh}"
            fresh += 1
        texts[b] = " ".join(copy)
        planted.append((a, b, target))
    docs = [{"doc_id": f"d{i:07d}", "text": t.capitalize() + "."} for i, t in enumerate(texts)]
    return docs, planted


def shingle_set(text: str, k: int = 5) -> set[str]:
    w = normalize_text(text).split()
    return {" ".join(w[i : i + k]) for i in range(len(w) - k + 1)}


def baseline_docs_per_second(texts: list[str], num_perm: int) -> float:
    start = time.perf_counter()
    for text in texts:
        m = MinHash(num_perm=num_perm)
        for s in shingle_set(text):
            m.update(s.encode("utf-8"))
    return len(texts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=50_000)
    parser.add_argument("--words", type=int, default=300)
    parser.add_argument("--pairs", type=int, default=200, help="planted pairs per Jaccard target")
    parser.add_argument("--baseline-docs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=0, help="signature threads (0 = auto)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    t0 = time.perf_counter()
    docs, planted = make_corpus(args.docs, args.words, args.pairs, args.seed)
    exact = [len((sa := shingle_set(docs[a]["text"])) & (sb := shingle_set(docs[b]["text"]))) / len(sa | sb)
             for a, b, _ in planted]
    print(f"corpus: {len(docs):,} documents x {args.words} words, {len(planted)} planted pairs "
          f"({time.perf_counter() - t0:.1f}s to generate)")

    before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cfg = DedupConfig(workers=args.workers)
    start = time.perf_counter()
    result = deduplicate(docs, cfg)
    elapsed = time.perf_counter() - start
    ours = len(docs) / elapsed

    sample = [d["text"] for d in docs[: args.baseline_docs]]
    base = baseline_docs_per_second(sample, cfg.num_perm)

    keeper = {d["doc_id"]: d["doc_id"] for d in result.kept}
    keeper.update({r["doc_id"]: r["duplicate_of"] for r in result.rejected})
    merged = [keeper[docs[a]["doc_id"]] == keeper[docs[b]["doc_id"]] for a, b, _ in planted]
    planted_ids = {docs[i]["doc_id"] for a, b, _ in planted for i in (a, b)}
    stray = sum(r["doc_id"] not in planted_ids for r in result.rejected)
    high = [m for m, j in zip(merged, exact, strict=True) if j >= 0.85]
    low_merged = sum(m for m, j in zip(merged, exact, strict=True) if j < 0.5)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    workers = cfg.workers or min(4, os.cpu_count() or 1)
    print(f"cpu cores: {os.cpu_count()}, signature threads: {workers}; "
          f"LSH num_perm={cfg.num_perm} bands={cfg.bands} rows={cfg.rows} verify>={cfg.threshold}")
    print(f"sdf.steps.dedup.minhash end to end: {elapsed:.2f}s = {ours:,.0f} docs/s")
    print(f"datasketch MinHash.update per shingle (signatures only, {len(sample)} docs, extrapolated): "
          f"{base:,.0f} docs/s")
    print(f"speedup: {ours / base:.1f}x  (target >= 20x; throughput target >= 3,000 docs/s)")
    print("planted pairs merged, by target Jaccard (exact Jaccard range):")
    for t in TARGETS:
        rows = [(m, j) for (_, _, tt), m, j in zip(planted, merged, exact, strict=True) if tt == t]
        js = [j for _, j in rows]
        print(f"  J~{t:<4}  {sum(m for m, _ in rows):>4}/{len(rows)}  ({min(js):.3f}-{max(js):.3f})")
    print(f"recall at J >= 0.85: {sum(high) / len(high):.4f} ({sum(high)}/{len(high)}; target >= 0.98)")
    edge = [m for m, j in zip(merged, exact, strict=True) if 0.85 <= j < 0.9]
    print(f"recall at 0.85 <= J < 0.9: {sum(edge) / max(1, len(edge)):.4f} ({sum(edge)}/{len(edge)}; target >= 0.98)")
    print(f"pairs below J 0.5 merged: {low_merged} (must be 0); background documents dropped: {stray}")
    print(f"counts: {result.counts}")
    print(f"peak memory (ru_maxrss): {peak_mb:,.0f} MB for the whole process; "
          f"{before_mb:,.0f} MB before dedup ran (corpus and exact Jaccard bookkeeping)")


if __name__ == "__main__":
    main()
