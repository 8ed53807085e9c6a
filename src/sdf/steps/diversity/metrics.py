"""Corpus diversity metrics for metrics.json: distinct-n, compression, self-repetition, names, openers, mix."""

from __future__ import annotations

import heapq
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xxhash

from sdf.config import DiversityConfig
from sdf.steps.dedup.minhash import shingle_hashes
from sdf.steps.diversity.caps import opener
from sdf.steps.diversity.names import person_names


class Sample:
    """The texts of the `size` documents whose doc_id hashes lowest: deterministic, order-free, and
    bounded in memory however many documents stream past."""

    def __init__(self, size: int) -> None:
        self.size, self._heap = size, []  # max-heap by hash (negated), so the worst kept one pops first

    def offer(self, doc_id: str, text: str) -> None:
        key = -xxhash.xxh64_intdigest(doc_id.encode())
        if len(self._heap) < self.size:
            heapq.heappush(self._heap, (key, doc_id, text))
        elif key > self._heap[0][0]:
            heapq.heapreplace(self._heap, (key, doc_id, text))

    def texts(self) -> list[str]:
        return [text for _, _, text in sorted(self._heap, reverse=True)]


def metric_row(doc: Mapping[str, Any], cfg: DiversityConfig) -> dict[str, Any]:
    """What the metrics need of each final document besides the sample's texts."""
    return {"doc_id": str(doc["doc_id"]), "genre": doc.get("genre"),
            "opener": opener(str(doc.get("text") or ""), cfg.opener_words)}


def corpus_metrics(docs: Sequence[Mapping[str, Any]], genre_targets: Mapping[str, float],
                   names: Mapping[str, Sequence[str]] | None = None, cfg: DiversityConfig | None = None
                   ) -> dict[str, Any]:
    """`diversity_metrics` of documents held in memory (the stage streams the same rows and sample)."""
    cfg = cfg or DiversityConfig()
    sample = Sample(cfg.metrics_sample)
    for d in docs:
        sample.offer(str(d["doc_id"]), str(d.get("text") or ""))
    return diversity_metrics([metric_row(d, cfg) for d in docs], sample.texts(), genre_targets, names, cfg)


def _distinct_n(texts: Sequence[str], n: int, word_counts: np.ndarray) -> float | None:
    hashes, offsets = shingle_hashes(texts, n)
    full = np.repeat(word_counts >= n, np.diff(offsets))  # drop the one short shingle of texts under n words
    grams = hashes[full]
    return round(len(np.unique(grams)) / len(grams), 4) if len(grams) else None


def _self_repetition(texts: Sequence[str], n: int = 4) -> float | None:
    """Mean over documents of the share of a document's distinct n-grams found in any other document."""
    hashes, offsets = shingle_hashes(texts, n)
    per_doc = [np.unique(hashes[offsets[i] : offsets[i + 1]]) for i in range(len(texts))]
    sizes = np.array([len(u) for u in per_doc])
    if len(texts) < 2 or not sizes.sum():
        return None
    _, inverse, df = np.unique(np.concatenate(per_doc), return_inverse=True, return_counts=True)
    owner = np.repeat(np.arange(len(texts)), sizes)
    shared = np.bincount(owner, weights=(df[inverse] > 1).astype(float), minlength=len(texts))
    has = sizes > 0
    return round(float((shared[has] / sizes[has]).mean()), 4)


def _top(counts: Counter[str], k: int) -> list[list[Any]]:
    """[[item, count]] most frequent first, ties alphabetical, so the output never depends on input order."""
    return [[item, n] for item, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def _entropy_bits(counts: Counter[str]) -> float:
    total = sum(counts.values())
    if not total:
        return 0.0
    p = np.array(list(counts.values()), dtype=float) / total
    return round(float(-(p * np.log2(p)).sum()), 4)


def diversity_metrics(
    table: Sequence[Mapping[str, Any]],
    sample: Sequence[str],
    genre_targets: Mapping[str, float],
    names: Mapping[str, Sequence[str]] | None = None,
    cfg: DiversityConfig | None = None,
) -> dict[str, Any]:
    """Diversity numbers for metrics.json (JSON-ready), from the final per-document table (doc_id,
    genre, opener) and the texts of a sample of at most ``metrics_sample`` documents (``sample_key``).

    - distinct_n {"1".."4"}: unique n-grams / all n-grams of normalised words (Li et al. 2016), pooled
      over the sample;
    - compression_ratio: raw UTF-8 bytes / zlib (level 6) bytes of the sample joined; higher = more
      repetitive (zlib's 32 KB window sees repetition between nearby documents only);
    - self_repetition: over the sample, the mean share of each document's distinct 4-grams that occur
      in at least one other document;
    - name_entropy (bits) and top_names [[name, documents]]: given names per document, from ``names``
      (doc_id -> names) or, if None, NER over the sample;
    - top_openers [[opener, documents]] over all documents;
    - genre_mix {genre: {target, actual, count}}: targets normalised to shares.
    """
    cfg = cfg or DiversityConfig()
    texts = list(sample)
    _, word_offsets = shingle_hashes(texts, 1)
    word_counts = np.diff(word_offsets)
    joined = "\n\n".join(texts).encode("utf-8")

    if names is None:
        names = {str(i): n for i, n in enumerate(person_names(texts, cfg) if texts else [])}
    name_docs: Counter[str] = Counter()
    for doc_names in names.values():
        name_docs.update(set(doc_names))
    openers = Counter(str(r["opener"]) for r in table)
    openers.pop("", None)

    genre_counts = Counter(str(r.get("genre")) for r in table)
    total_weight = sum(w for w in genre_targets.values() if w > 0)
    mix = {
        g: {
            "target": round(genre_targets.get(g, 0.0) / total_weight, 4) if total_weight else None,
            "actual": round(genre_counts[g] / len(table), 4) if table else 0.0,
            "count": genre_counts[g],
        }
        for g in sorted(set(genre_targets) | set(genre_counts))
    }
    return {
        "documents": len(table),
        "sample_documents": len(texts),
        "distinct_n": {str(n): _distinct_n(texts, n, word_counts) for n in range(1, 5)},
        "compression_ratio": round(len(joined) / len(zlib.compress(joined, 6)), 4) if joined else None,
        "self_repetition": _self_repetition(texts),
        "name_entropy": _entropy_bits(name_docs),
        "top_names": _top(name_docs, cfg.top_k),
        "top_openers": _top(openers, cfg.top_k),
        "genre_mix": mix,
    }
