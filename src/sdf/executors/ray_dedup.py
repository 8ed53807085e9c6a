"""products.documents.dedup_stage on Ray Data, with the same decisions and the same artifacts.

Pass 1 (Ray tasks): decontamination, each document's cap features, MinHash signature and exact key.
Candidates (Ray): one row per (band, band hash, document), grouped on (band, hash); every group of
two or more yields its pairs. The driver verifies them, takes connected components (with exact copies
joined to their first copy), keeps one member per cluster, and decides the caps over the gathered
feature table (sdf.steps.diversity.caps.decide_caps). Pass 2 (Ray tasks) applies drops and edits.
The rules mirror sdf.steps.dedup.clusters.find_duplicates; tests/test_ray.py holds them equal.
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa

from sdf.config import DedupConfig, DiversityConfig
from sdf.executors.local import Rejects, StageCounts
from sdf.executors.ray import BLOCK_ROWS, DROP, KEEP, apply_tagged, read, split_tagged, stage_counts
from sdf.products.context import Run
from sdf.run import CORPUS_SCHEMA, TableWriter
from sdf.steps import Step, reject_row
from sdf.steps.dedup.clusters import Duplicates, _band_hashes, _find, _with_words, estimated_jaccard
from sdf.steps.dedup.minhash import minhash_signatures

GROUP_PARTITIONS = 8  # hash partitions of the band-key shuffle: enough for a few nodes, cheap on two cores


def _features(kept: list[dict[str, Any]], genres: Any, div: DiversityConfig, cfg: DedupConfig) -> list[tuple]:
    from sdf.steps.diversity.caps import cap_features

    signatures, keys = minhash_signatures([d["text"] for d in kept], cfg)
    rows = cap_features(kept, genres, div)
    return [(row, sig.tobytes(), int(key)) for row, sig, key in zip(rows, signatures, keys, strict=True)]


def _band_rows(batch: pa.Table, cfg: DedupConfig) -> pa.Table:
    """(band, hash, row) for every band of every signature in the block."""
    rows = batch.column("row").to_numpy()
    sigs = np.frombuffer(b"".join(batch.column("sig").to_pylist()), dtype=np.uint32).reshape(len(rows), -1)
    bands, hashes, members = [], [], []
    for b in range(cfg.bands):
        bands.append(np.full(len(rows), b, dtype=np.int32))
        hashes.append(_band_hashes(sigs[:, b * cfg.rows : (b + 1) * cfg.rows]))
        members.append(rows)
    return pa.table({"band": np.concatenate(bands), "hash": np.concatenate(hashes), "row": np.concatenate(members)})


def _pairs_of_group(group: pa.Table) -> pa.Table:
    """Every pair i<j of one band bucket."""
    ids = np.sort(group.column("row").to_numpy())
    a, c = np.triu_indices(len(ids), 1)
    return pa.table({"a": ids[a], "b": ids[c]})


def candidate_pairs(signatures: np.ndarray, cfg: DedupConfig, among: np.ndarray) -> np.ndarray:
    """sdf.steps.dedup.clusters.candidate_pairs, the buckets formed by a Ray groupby on band keys."""
    import ray

    rows = _with_words(signatures, among)
    n = len(signatures)
    if len(rows) < 2:
        return np.empty((0, 2), dtype=np.int64)
    table = pa.table({"row": rows.astype(np.int64), "sig": [signatures[i].tobytes() for i in rows]})
    blocks = [table.slice(s, BLOCK_ROWS * 4) for s in range(0, len(table), BLOCK_ROWS * 4)]
    pairs = (ray.data.from_arrow(blocks)
             .map_batches(partial(_band_rows, cfg=cfg), batch_format="pyarrow")
             .groupby(["band", "hash"], num_partitions=GROUP_PARTITIONS)
             .map_groups(_pairs_of_group, batch_format="pyarrow"))
    codes = [b.column("a").to_numpy() * n + b.column("b").to_numpy()
             for b in pairs.iter_batches(batch_format="pyarrow", batch_size=None) if b.num_rows]
    if not codes:
        return np.empty((0, 2), dtype=np.int64)
    unique = np.unique(np.concatenate(codes))
    return np.stack([unique // n, unique % n], axis=1)


def find_duplicates(ids: list[str], keys: np.ndarray, signatures: np.ndarray, scores: np.ndarray,
                    cfg: DedupConfig) -> Duplicates:
    """Connected components of exact copies and verified candidate pairs; one keeper per cluster."""
    n = len(ids)
    counts: Counter[str] = Counter(input=n)
    rows = np.arange(n, dtype=np.int64)
    root = rows.copy()
    if cfg.exact and n:
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        root = first[inverse.reshape(-1)].astype(np.int64)
    if cfg.near:
        pairs = candidate_pairs(signatures, cfg, np.flatnonzero(root == rows))
        merged = pairs[estimated_jaccard(signatures, pairs) >= cfg.threshold]
        counts["candidate_pairs"], counts["merged_pairs"] = len(pairs), len(merged)
        up: dict[int, int] = {}
        for a, b in merged.tolist():
            ra, rb = _find(up, a), _find(up, b)
            if ra != rb:
                up[ra] = rb
        top = rows.copy()
        for i in up:
            top[i] = _find(up, i)
        root = top[root]
    members: dict[int, list[int]] = {}
    for i, r in enumerate(root.tolist()):
        members.setdefault(r, []).append(i)
    clusters = sorted(m for m in members.values() if len(m) > 1)
    drops: dict[int, tuple[str, str, int]] = {}
    for cluster in clusters:
        keeper = min(cluster, key=lambda i: (-float(scores[i]), str(ids[i])))
        for i in cluster:
            if i == keeper:
                continue
            if keys[i] == keys[keeper]:
                drops[i] = ("exact_duplicate", f"same normalised text as {ids[keeper]}", keeper)
            else:
                sim = float((signatures[i] == signatures[keeper]).mean())
                drops[i] = ("near_duplicate", f"estimated jaccard {sim:.2f} with {ids[keeper]}", keeper)
            counts[drops[i][0]] += 1
    counts["clusters"], counts["kept"] = len(clusters), n - len(drops)
    return Duplicates(drops, dict(counts), sorted((len(m) for m in clusters), reverse=True))


def _apply_decisions(batch: pa.Table, drop: dict, removed: set[str], edits: dict) -> pa.Table:
    """Pass 2 of one block: duplicate and cap drops as rejects, the rest edited; decontaminated ones skipped."""
    from sdf.executors.ray import tag_rows, tagged_table
    from sdf.steps.diversity.caps import apply_edit

    parts = []
    for doc in batch.to_pylist():
        if doc["doc_id"] in drop:
            stage, reason, detail, keeper = drop[doc["doc_id"]]
            parts.append(tag_rows(DROP, stage, [reject_row(doc, stage, reason, detail, duplicate_of=keeper)]))
        elif doc["doc_id"] not in removed:
            parts.append(tag_rows(KEEP, "", [apply_edit(doc, edits.get(doc["doc_id"]))]))
    return tagged_table(parts)


def dedup_stage(run: Run) -> dict[str, Any]:
    """Inside a Ray session: the same corpus.parquet, rejects and metrics as the local dedup stage."""
    from sdf.products import documents
    from sdf.products.dedup import decide, finish_dedup
    from sdf.source.deal import name_pools
    from sdf.source.plan import genre_weights
    from sdf.steps.decontam.index import build_index
    from sdf.steps.decontam.step import Decontaminate

    rd, cfg = run.dir, run.settings
    source = rd.require(rd.filtered, "filter")
    index = build_index(cfg.dedup, run.catalog.root, cfg.diversity.spacy_model, cfg.diversity.ner_fallback,
                        [n for n, _ in (*run.catalog.given_names, *run.catalog.surnames)])
    steps: list[Step] = [Decontaminate(index)] if index is not None else []
    then = partial(_features, genres=run.catalog.genres, div=cfg.diversity, cfg=cfg.dedup)
    ds = read(source).map_batches(partial(apply_tagged, steps=steps, then=then), batch_format="pyarrow",
                                  batch_size=BLOCK_ROWS)
    table, sigs, keys, removed = [], [], [], set()
    dropped: dict[str, Counter[str]] = {}
    with Rejects(rd, ["decontaminate", "dedup", "diversity"]) as rejects:
        n_in = 0
        for kind, stage, items in split_tagged(ds):
            n_in += len(items)
            if kind == KEEP:
                for row, sig, key in items:
                    table.append(row)
                    sigs.append(sig)
                    keys.append(key)
            else:
                rejects.write(stage, items)
                removed.update(str(r["doc_id"]) for r in items)
                dropped.setdefault(stage, Counter()).update(str(r["reason"]) for r in items)
        counts: StageCounts = stage_counts(steps, dropped, n_in)
        signatures = np.frombuffer(b"".join(sigs), dtype=np.uint32).reshape(len(table), cfg.dedup.num_perm)
        del sigs
        ids = [r.doc_id for r in table]
        duplicates = find_duplicates(ids, np.array(keys, dtype=np.uint64), signatures,
                                     np.array([r.quality_score for r in table], dtype=np.float64), cfg.dedup)
        del signatures, keys, ids
        drop, edits, caps_metrics, tally = decide(run, table, [("", duplicates)], counts, len(table),
                                                  lambda wanted: documents.texts_of(source, wanted),
                                                  name_pools(run.catalog, cfg.run.seed))
        del table
        apply = partial(_apply_decisions, drop=drop, removed=removed, edits=edits)
        with TableWriter(rd.corpus, CORPUS_SCHEMA) as out:
            for kind, stage, docs in split_tagged(read(source).map_batches(apply, batch_format="pyarrow",
                                                                          batch_size=BLOCK_ROWS)):
                if kind == KEEP:
                    out.write(docs)
                    for doc in docs:
                        tally.add(doc)
                else:
                    rejects.write(stage, docs)
    return finish_dedup(run, counts, tally, [duplicates], index, caps_metrics, genre_weights(run.catalog, cfg.plan))
