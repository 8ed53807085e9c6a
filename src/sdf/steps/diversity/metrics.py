"""Corpus diversity metrics for metrics.json: distinct-n, compression, self-repetition, names, openers, mix."""

from __future__ import annotations

import heapq
import sys
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import xxhash

from sdf.config import DiversityConfig
from sdf.steps.dedup.minhash import ngram_hashes
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


class Tally:
    """What the metrics need of the final corpus, counted as its documents stream past: how many, by
    genre and by opener, the given names of each (when the caller knows them; else NER over the sample
    finds them) and the sample's texts. It grows with the distinct genres, openers and names, never with
    a row per document."""

    def __init__(self, cfg: DiversityConfig) -> None:
        self.cfg, self.documents = cfg, 0
        self.sample = Sample(cfg.metrics_sample)
        self.genres: Counter[str] = Counter()
        self.openers: Counter[str] = Counter()
        self.names: Counter[str] | None = None  # documents per given name, once any names are counted

    def add(self, doc: Mapping[str, Any]) -> None:
        text = str(doc.get("text") or "")
        self.documents += 1
        self.genres[sys.intern(str(doc.get("genre")))] += 1
        self.openers[sys.intern(opener(text, self.cfg.opener_words))] += 1
        self.sample.offer(str(doc["doc_id"]), text)

    def add_names(self, names: Sequence[str]) -> None:
        """One document's given names (from the caps' table, after renames)."""
        if self.names is None:
            self.names = Counter()
        self.names.update(set(names))


def corpus_metrics(docs: Sequence[Mapping[str, Any]], genre_targets: Mapping[str, float],
                   names: Mapping[str, Sequence[str]] | None = None, cfg: DiversityConfig | None = None
                   ) -> dict[str, Any]:
    """`diversity_metrics` of documents held in memory (the stage streams them into the same tally);
    ``names`` is doc_id -> given names, or None to find names by NER over the sample."""
    tally = Tally(cfg or DiversityConfig())
    if names is not None:
        tally.names = Counter()
        for doc_names in names.values():
            tally.add_names(doc_names)
    for d in docs:
        tally.add(d)
    return diversity_metrics(tally, genre_targets)


def _distinct(values: np.ndarray) -> int:
    """How many distinct values (a sort: numpy's hashing unique is slower on large uint64 arrays)."""
    return int(np.count_nonzero(np.diff(np.sort(values)))) + 1 if len(values) else 0


def _distinct_n(grams: tuple[np.ndarray, np.ndarray], n: int, word_counts: np.ndarray) -> float | None:
    hashes, offsets = grams
    full = np.repeat(word_counts >= n, np.diff(offsets))  # drop the one short shingle of texts under n words
    kept = hashes[full]
    return round(_distinct(kept) / len(kept), 4) if len(kept) else None


def _self_repetition(grams: tuple[np.ndarray, np.ndarray]) -> float | None:
    """Mean over documents of the share of a document's distinct n-grams found in any other document."""
    hashes, offsets = grams
    docs = len(offsets) - 1
    if docs < 2 or not len(hashes):
        return None
    owner = np.repeat(np.arange(docs), np.diff(offsets))
    order = np.lexsort((owner, hashes))  # by n-gram, then document
    h, o = hashes[order], owner[order]
    first = np.r_[True, (h[1:] != h[:-1]) | (o[1:] != o[:-1])]  # each (n-gram, document) once
    h, o = h[first], o[first]
    sizes = np.bincount(o, minlength=docs)
    starts = np.flatnonzero(np.r_[True, h[1:] != h[:-1]])
    df = np.diff(np.r_[starts, len(h)])  # documents per distinct n-gram
    shared = np.bincount(o, weights=np.repeat(df > 1, df).astype(float), minlength=docs)
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


def diversity_metrics(tally: Tally, genre_targets: Mapping[str, float]) -> dict[str, Any]:
    """Diversity numbers for metrics.json (JSON-ready), from the tally of the final corpus (documents
    by genre and opener, names) and the texts of its sample of at most ``metrics_sample`` documents.

    - distinct_n {"1".."4"}: unique n-grams / all n-grams of normalised words (Li et al. 2016), pooled
      over the sample;
    - compression_ratio: raw UTF-8 bytes / zlib (level 6) bytes of the sample joined; higher = more
      repetitive (zlib's 32 KB window sees repetition between nearby documents only);
    - self_repetition: over the sample, the mean share of each document's distinct 4-grams that occur
      in at least one other document;
    - name_entropy (bits) and top_names [[name, documents]]: documents per given name, from the
      tally's names or, if it counted none, NER over the sample;
    - top_openers [[opener, documents]] over all documents;
    - genre_mix {genre: {target, actual, count}}: targets normalised to shares.
    """
    cfg, texts = tally.cfg, tally.sample.texts()
    joined = "\n\n".join(texts).encode("utf-8")
    with ThreadPoolExecutor(1) as pool:  # zlib releases the GIL: it compresses while numpy counts n-grams
        compressed = pool.submit(lambda: len(zlib.compress(joined, 6)) if joined else 0)
        grams = ngram_hashes(texts, (1, 2, 3, 4))
        word_counts = np.diff(grams[1][1])
        distinct = {str(n): _distinct_n(grams[n], n, word_counts) for n in range(1, 5)}
        repetition = _self_repetition(grams[4])
        del grams
        compressed_bytes = compressed.result()

    name_docs = tally.names
    if name_docs is None:
        name_docs = Counter()
        for doc_names in person_names(texts, cfg) if texts else []:
            name_docs.update(set(doc_names))
    openers = Counter(tally.openers)
    openers.pop("", None)

    genre_counts, documents = tally.genres, tally.documents
    total_weight = sum(w for w in genre_targets.values() if w > 0)
    mix = {
        g: {
            "target": round(genre_targets.get(g, 0.0) / total_weight, 4) if total_weight else None,
            "actual": round(genre_counts[g] / documents, 4) if documents else 0.0,
            "count": genre_counts[g],
        }
        for g in sorted(set(genre_targets) | set(genre_counts))
    }
    return {
        "documents": documents,
        "sample_documents": len(texts),
        "distinct_n": distinct,
        "compression_ratio": round(len(joined) / compressed_bytes, 4) if joined else None,
        "self_repetition": repetition,
        "name_entropy": _entropy_bits(name_docs),
        "top_names": _top(name_docs, cfg.top_k),
        "top_openers": _top(openers, cfg.top_k),
        "genre_mix": mix,
    }
