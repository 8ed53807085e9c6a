"""What happens between dedup's two passes, once for every product and executor.

Pass 1 (the product's, on its executor) streams the filtered items through decontamination and builds a
feature table without texts: a `CapRow` per item and MinHash signatures per compared part. Then, here:
the duplicates' drops, the over-used names NER confirms, and the caps (`decide`); pass 2 (the product's
again) streams the kept items to their file and every drop to its rejects; then the metrics (`finish_dedup`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sdf.executors.local import StageCounts
from sdf.products.context import Run

Drop = tuple[str, str, str, str | None]  # (stage, reason, detail, the kept item it duplicates)


def decide(run: Run, table: list, found: Sequence[tuple[str, Any]], counts: StageCounts, scanned: int,
           read_texts: Callable[[set[str]], Mapping[str, str]], pools: tuple[Sequence[str], Sequence[str]] = ((), ())
           ) -> tuple[dict[str, Drop], dict[str, Any], dict[str, Any], Any]:
    """The decisions over the feature table (`table`: a CapRow per item, no text).

    `found` holds the near-duplicate finding of each compared part (("", d) for a whole document; ("user",
    d) and ("reply", d) for chats); an item is dropped once, for its first part. `read_texts` fetches the
    texts NER reads to confirm an over-used name. With name `pools`, an over-cap name is replaced by an
    unused one and its items kept; without, they are dropped. Returns (drop: item id -> Drop, edits, the
    caps' metrics, the tally of the final items' names for the diversity metrics).
    """
    from sdf.steps.diversity.caps import confirm_names, decide_caps, renamed_names
    from sdf.steps.diversity.metrics import Tally

    cfg = run.settings
    ids = [r.doc_id for r in table]
    drop: dict[str, Drop] = {}
    for part, duplicates in found:
        for i, (reason, detail, keeper) in duplicates.drops.items():
            drop.setdefault(ids[i], ("dedup", reason, f"{part}: {detail}" if part else detail, ids[keeper]))
    counts.add("dedup", len(table), len(table) - len(drop), [{"reason": d[1]} for d in drop.values()])
    unique = [r for r in table if r.doc_id not in drop]
    names = confirm_names(unique, cfg.diversity, read_texts, scanned)
    unique = names.table
    caps = decide_caps(unique, cfg.diversity, *pools, used=names.used)
    counts.add("diversity", len(unique), len(unique) - len(caps.drops), [{"reason": r} for r, _ in caps.drops.values()])
    drop.update((doc_id, ("diversity", reason, detail, None)) for doc_id, (reason, detail) in caps.drops.items())
    tally = Tally(cfg.diversity)
    for r in unique:
        if r.doc_id not in drop:
            tally.add_names(renamed_names(r.names, caps.edits.get(r.doc_id)))
    caps_metrics = {**caps.caps, "renamed": caps.counts.get("renamed", 0),
                    "opener_trimmed": caps.counts.get("opener_trimmed", 0), **names.counts}
    return drop, caps.edits, caps_metrics, tally


def finish_dedup(run: Run, counts: StageCounts, tally: Any, found: Sequence[Any], index: Any, caps_metrics: dict,
                 weights: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Dedup's metrics (stages, clusters, contamination, caps, diversity) and the summary the CLI prints."""
    from sdf.steps.decontam.step import contamination_summary
    from sdf.steps.diversity.metrics import diversity_metrics

    rd = run.dir
    stages = counts.as_dict()
    dedup: dict[str, Any] = {
        "cluster_sizes": sorted((s for d in found for s in d.cluster_sizes), reverse=True),
        **{k: sum(d.counts.get(k, 0) for d in found) for k in ("candidate_pairs", "merged_pairs")}}
    if index is not None:  # contamination by reason and by eval, and what the index held
        rows = rd.read_rejects(["stage", "reason", "detail"]).to_pylist()
        dedup["decontaminate"] = {"index": index.counts,
                                  **contamination_summary(r for r in rows if r["stage"] == "decontaminate")}
    diversity = diversity_metrics(tally, weights or {})
    rd.update_metrics(stages=stages, dedup=dedup, caps=caps_metrics, diversity=diversity)
    first = stages.get("decontaminate", stages["dedup"])
    return {"stages": stages, "input": first["input"], "corpus": tally.documents, "dedup": dedup,
            "caps": caps_metrics}
