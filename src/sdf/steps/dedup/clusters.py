"""Near-duplicate clusters from MinHash signatures: LSH banding, verification, union-find, keepers.

1. Candidates: the signature is cut into ``bands`` bands of ``rows`` slots; two documents are a
   candidate pair when any band is equal (the same pairs datasketch's ``MinHashLSH`` with
   ``params=(bands, rows)`` puts in one bucket). Each band is hashed to 64 bits and sorted, so the
   index is a few arrays of ``n`` integers instead of a dict of Python objects per document.
2. Verification: a candidate pair merges only if the share of equal signature slots (the MinHash
   estimate of Jaccard) is >= ``threshold`` (default 0.75). Merged pairs form clusters by union-find;
   exact duplicates (equal keys) join their first copy's cluster directly.
3. Keep one member per cluster: highest ``quality_score`` (missing/None = 0), then smallest doc_id.

Choice of bands and rows (S-curve). A pair with Jaccard J becomes a candidate with probability
``1 - (1 - J**r)**b``. With num_perm=128 we use b=21 bands of r=6 rows (126 slots):

    J      0.3     0.5     0.7     0.8     0.85      0.9
    P   0.015   0.282   0.928   0.998   0.99995   0.9999999

P >= 0.99 at J=0.8 needs r <= 6 (r=7,b=18 gives 0.986; r=8,b=16 0.947). The price is a fat lower
tail (28% of J=0.5 pairs become candidates), but the 128-slot estimate has a standard deviation of
0.044 at J=0.5, so such a pair would need a +5.7 sigma error to pass 0.75: the tail costs only
verification work.

Why verify at 0.75 rather than 0.8. The estimate of a pair at true Jaccard 0.85 has a standard deviation of
sqrt(0.85 * 0.15 / 128) = 0.032, so a cut at 0.8 loses about 6% of such pairs (measured: 94.6% recall);
at 0.75 (-3.2 sigma) it loses 0.1%, and pairs at J=0.7 merge about a third of the time.

Everything here works on the per-document table (ids, keys, signatures, scores), never on texts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from sdf.config import DedupConfig
from sdf.steps import quality_of, reject_row
from sdf.steps.dedup.minhash import MAX32, minhash_signatures

_U64 = np.uint64


class Duplicates(NamedTuple):
    drops: dict[int, tuple[str, str, int]]  # row -> (reason, detail, keeper row)
    counts: dict[str, int]
    cluster_sizes: list[int]  # sizes of clusters with >= 2 members, largest first


class DedupResult(NamedTuple):
    kept: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    counts: dict[str, int]
    cluster_sizes: list[int]


def candidate_probability(jaccard: float, bands: int, rows: int) -> float:
    """Probability that a pair with this Jaccard similarity shares at least one LSH band."""
    return 1.0 - (1.0 - jaccard**rows) ** bands


def _band_hashes(band: np.ndarray) -> np.ndarray:
    """One 64-bit hash per row of a (n, rows) uint32 band; a collision only adds a pair to verify."""
    h = np.zeros(len(band), dtype=_U64)
    for j in range(band.shape[1]):
        h ^= band[:, j].astype(_U64) + _U64(0x9E3779B97F4A7C15) + (h << _U64(6)) + (h >> _U64(2))
        h *= _U64(0xBF58476D1CE4E5B9)
    return h


def _with_words(signatures: np.ndarray, among: np.ndarray | None, chunk: int = 65536) -> np.ndarray:
    """Rows (of ``among``, or all) whose text had words: not every slot is MAX32. Checked in chunks, so
    no copy of the signature table is made."""
    rows = np.arange(len(signatures)) if among is None else np.asarray(among, dtype=np.int64)
    keep = np.empty(len(rows), dtype=bool)
    for s in range(0, len(rows), chunk):
        keep[s : s + chunk] = (signatures[rows[s : s + chunk]] != MAX32).any(axis=1)
    return rows[keep]


def candidate_pairs(signatures: np.ndarray, cfg: DedupConfig | None = None, among: np.ndarray | None = None
                    ) -> np.ndarray:
    """(m, 2) row pairs i<j that share at least one band, sorted; only rows in ``among`` (default all)
    take part, and rows without words never do."""
    cfg = cfg or DedupConfig()
    rows = _with_words(signatures, among)
    n = len(signatures)
    codes: list[np.ndarray] = []
    for b in range(cfg.bands):
        h = _band_hashes(signatures[rows, b * cfg.rows : (b + 1) * cfg.rows])
        order = np.argsort(h, kind="stable")
        sorted_h = h[order]
        starts = np.flatnonzero(np.r_[True, sorted_h[1:] != sorted_h[:-1]])
        sizes = np.diff(np.r_[starts, len(sorted_h)])
        for start, size in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist(), strict=True):
            ids = np.sort(rows[order[start : start + size]])
            a, c = np.triu_indices(size, 1)
            codes.append(ids[a] * n + ids[c])
    if not codes:
        return np.empty((0, 2), dtype=np.int64)
    unique = np.unique(np.concatenate(codes))
    return np.stack([unique // n, unique % n], axis=1)


def estimated_jaccard(signatures: np.ndarray, pairs: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Share of equal signature slots for each row pair: the MinHash estimate of Jaccard similarity."""
    out = np.empty(len(pairs), dtype=np.float64)
    for s in range(0, len(pairs), chunk):
        p = pairs[s : s + chunk]
        out[s : s + chunk] = (signatures[p[:, 0]] == signatures[p[:, 1]]).mean(axis=1)
    return out


def _find(up: dict[int, int], i: int) -> int:
    """Root of ``i`` in a union-find forest held as a dict (only merged rows have an entry)."""
    while i in up:
        j = up[i]
        if j in up:
            up[i] = up[j]  # path halving
        i = up[i]
    return i


def find_duplicates(ids: Sequence[str], keys: np.ndarray, signatures: np.ndarray, scores: Sequence[float],
                    cfg: DedupConfig | None = None) -> Duplicates:
    """Which rows of the per-document table are exact or near duplicates, and of which keeper.

    All per-row state is numpy arrays (a few integers a row); Python objects exist only for the rows
    that merge, so the cost stays a few bytes a document at any corpus size.
    """
    cfg = cfg or DedupConfig()
    n = len(ids)
    counts: Counter[str] = Counter(input=n)
    rows = np.arange(n, dtype=np.int64)
    root = rows.copy()
    if cfg.exact and n:
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        root = first[inverse.reshape(-1)].astype(np.int64)  # each copy points at its first copy
    if cfg.near:
        representatives = np.flatnonzero(root == rows)
        pairs = candidate_pairs(signatures, cfg, among=representatives)
        merged = pairs[estimated_jaccard(signatures, pairs) >= cfg.threshold]
        counts["candidate_pairs"] = len(pairs)
        counts["merged_pairs"] = len(merged)
        up: dict[int, int] = {}
        for a, b in merged.tolist():
            ra, rb = _find(up, a), _find(up, b)
            if ra != rb:
                up[ra] = rb
        if up:
            top = rows.copy()
            top[np.fromiter(up, dtype=np.int64, count=len(up))] = [_find(up, i) for i in up]
            root = top[root]

    order = np.argsort(root, kind="stable")  # rows grouped by cluster, ascending within each
    starts = np.flatnonzero(np.r_[True, root[order][1:] != root[order][:-1]]) if n else np.zeros(0, np.int64)
    sizes = np.diff(np.r_[starts, n])
    clusters = [order[s : s + k].tolist() for s, k in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist(),
                                                           strict=True)]
    drops: dict[int, tuple[str, str, int]] = {}
    for members in sorted(clusters):  # by first member, so the output never depends on the roots
        keeper = min(members, key=lambda i: (-float(scores[i]), str(ids[i])))
        for i in members:
            if i == keeper:
                continue
            if keys[i] == keys[keeper]:
                drops[i] = ("exact_duplicate", f"same normalised text as {ids[keeper]}", keeper)
            else:
                sim = float((signatures[i] == signatures[keeper]).mean())
                drops[i] = ("near_duplicate", f"estimated jaccard {sim:.2f} with {ids[keeper]}", keeper)
            counts[drops[i][0]] += 1
    counts["clusters"] = len(clusters)
    counts["kept"] = n - len(drops)
    return Duplicates(drops, dict(counts), sorted((len(m) for m in clusters), reverse=True))


def deduplicate(docs: Iterable[dict[str, Any]], cfg: DedupConfig | None = None) -> DedupResult:
    """`find_duplicates` over documents held in memory (the stage streams instead); kept ones keep
    their input order, dropped ones become rejected rows with ``duplicate_of`` = their keeper."""
    cfg = cfg or DedupConfig()
    docs = list(docs)
    signatures, keys = minhash_signatures([d["text"] for d in docs], cfg)
    found = find_duplicates([str(d["doc_id"]) for d in docs], keys, signatures, [quality_of(d) for d in docs], cfg)
    kept = [d for i, d in enumerate(docs) if i not in found.drops]
    rejected = [reject_row(docs[i], "dedup", reason, detail, duplicate_of=str(docs[keeper]["doc_id"]))
                for i, (reason, detail, keeper) in sorted(found.drops.items())]
    return DedupResult(kept, rejected, found.counts, found.cluster_sizes)
