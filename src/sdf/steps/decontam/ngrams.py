"""Decontamination: drop documents that share a long word n-gram with any evaluation item.

Eval files are JSON lines (the first string field among TEXT_FIELDS of each object, or a bare string)
or plain text (one item per paragraph when the file has blank lines, else one per line). Items and
documents are compared after the same normalisation dedup uses (NFKC, lowercase, no punctuation), on
13-word n-grams by default; items shorter than n words cannot match and are counted, not used.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from sdf.errors import SdfError
from sdf.steps.dedup.minhash import normalize_text, shingle_hashes
from sdf.steps.filters.quality import rejected_row

TEXT_FIELDS = ("prompt", "text", "scenario", "input", "question", "instruction", "content")


class DecontaminationResult(NamedTuple):
    kept: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    counts: dict[str, int]


def _item_from_json(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for name in TEXT_FIELDS:
            if isinstance(value.get(name), str) and value[name].strip():
                return value[name]
    return None


def load_eval_texts(paths: Iterable[str | Path]) -> list[str]:
    """Evaluation items from .jsonl or plain-text files; any unreadable file is an SdfError."""
    items: list[str] = []
    for p in paths:
        path = Path(p)
        try:
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SdfError(f"decontaminate: {path} not found; pass .jsonl or .txt eval files") from None
        except UnicodeDecodeError:
            raise SdfError(f"decontaminate: {path} is not UTF-8 text; pass .jsonl or .txt files") from None
        except OSError as e:
            raise SdfError(f"decontaminate: cannot read {path}: {e.strerror}") from None
        found: list[str] = []
        if path.suffix.lower() == ".jsonl":
            for lineno, line in enumerate(raw.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as e:
                    raise SdfError(f"decontaminate: {path}:{lineno}: invalid JSON ({e.msg})") from None
                text = _item_from_json(value)
                if text is None:
                    raise SdfError(
                        f"decontaminate: {path}:{lineno}: no text field; give each object one of "
                        + ", ".join(TEXT_FIELDS)
                    )
                found.append(text)
        else:
            blocks = re.split(r"\n\s*\n", raw) if re.search(r"\n\s*\n", raw.strip()) else raw.splitlines()
            found = [b.strip() for b in blocks if b.strip()]
        if not found:
            raise SdfError(f"decontaminate: {path} has no eval items")
        items.extend(found)
    return items


def decontaminate(
    docs: Iterable[Mapping[str, Any]], eval_texts: Sequence[str], ngram: int = 13, batch_docs: int = 2048
) -> DecontaminationResult:
    """Drop every document sharing a normalised ``ngram``-word sequence with an eval item.

    Rejected rows have stage "decontaminate", reason "contaminated" and the shared n-gram in detail.
    counts: input, kept, contaminated, eval_items, eval_items_too_short, eval_ngrams.
    """
    docs = list(docs)
    counts: Counter[str] = Counter(input=len(docs), eval_items=len(eval_texts))
    item_words = [normalize_text(t).split() for t in eval_texts]
    long_items = [w for w in item_words if len(w) >= ngram]
    counts["eval_items_too_short"] = len(item_words) - len(long_items)
    # every eval n-gram as text (to confirm and report a match) and as a hash (to find candidates fast)
    eval_ngrams = {" ".join(w[j : j + ngram]) for w in long_items for j in range(len(w) - ngram + 1)}
    eval_hashes = np.unique(shingle_hashes(list(eval_ngrams), ngram)[0]) if eval_ngrams else None
    counts["eval_ngrams"] = len(eval_ngrams)

    kept: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for start in range(0, len(docs), batch_docs):
        batch = docs[start : start + batch_docs]
        texts = [str(d.get("text") or "") for d in batch]
        if eval_hashes is not None:
            hashes, offsets = shingle_hashes(texts, ngram)
            hits = np.isin(hashes, eval_hashes)
        for i, doc in enumerate(batch):
            match = None
            if eval_hashes is not None and hits[offsets[i] : offsets[i + 1]].any():
                words = normalize_text(texts[i]).split()
                for j in np.flatnonzero(hits[offsets[i] : offsets[i + 1]]).tolist():
                    if (gram := " ".join(words[j : j + ngram])) in eval_ngrams:
                        match = gram
                        break
            if match is None:
                kept.append(dict(doc))
                continue
            counts["contaminated"] += 1
            detail = f"{ngram}-gram shared with an eval item: {match!r}"
            rejected.append(rejected_row(doc, "decontaminate", "contaminated", detail))
    counts["kept"] = len(kept)
    return DecontaminationResult(kept, rejected, dict(counts))
