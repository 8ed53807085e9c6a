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
from sdf.executor import StepResult
from sdf.run import reject_row
from sdf.steps.dedup.minhash import normalize_text, shingle_hashes

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


class NgramIndex:
    """Every normalised ``ngram``-word sequence of the eval items, as text and as hashes."""

    def __init__(self, eval_texts: Sequence[str], ngram: int = 13) -> None:
        self.ngram = ngram
        item_words = [normalize_text(t).split() for t in eval_texts]
        long_items = [w for w in item_words if len(w) >= ngram]
        self.counts = {"eval_items": len(eval_texts), "eval_items_too_short": len(item_words) - len(long_items)}
        # as text, to confirm and report a match; as hashes, to find candidates fast
        self.grams = {" ".join(w[j : j + ngram]) for w in long_items for j in range(len(w) - ngram + 1)}
        self.hashes = np.unique(shingle_hashes(list(self.grams), ngram)[0]) if self.grams else None
        self.counts["eval_ngrams"] = len(self.grams)

    def matches(self, texts: Sequence[str]) -> list[str | None]:
        """For each text, an eval n-gram it contains, or None."""
        if self.hashes is None:
            return [None] * len(texts)
        hashes, offsets = shingle_hashes(texts, self.ngram)
        hits = np.isin(hashes, self.hashes)
        found: list[str | None] = []
        for i, text in enumerate(texts):
            match = None
            if hits[offsets[i] : offsets[i + 1]].any():
                words = normalize_text(text).split()
                for j in np.flatnonzero(hits[offsets[i] : offsets[i + 1]]).tolist():
                    if (gram := " ".join(words[j : j + self.ngram])) in self.grams:
                        match = gram
                        break
            found.append(match)
        return found


class Decontaminate:
    """Drop every document sharing a normalised n-gram with an eval item (reason "contaminated")."""

    stage = "decontaminate"

    def __init__(self, index: NgramIndex) -> None:
        self.index = index

    def __call__(self, batch: list[dict[str, Any]]) -> StepResult:
        kept, dropped = [], []
        for doc, match in zip(batch, self.index.matches([str(d.get("text") or "") for d in batch]), strict=True):
            if match is None:
                kept.append(doc)
            else:
                detail = f"{self.index.ngram}-gram shared with an eval item: {match!r}"
                dropped.append(reject_row(doc, self.stage, "contaminated", detail))
        return StepResult(kept, dropped)


def decontaminate(
    docs: Iterable[Mapping[str, Any]], eval_texts: Sequence[str], ngram: int = 13
) -> DecontaminationResult:
    """`Decontaminate` over documents held in memory. counts: input, kept, contaminated, eval_items,
    eval_items_too_short, eval_ngrams."""
    index = NgramIndex(eval_texts, ngram)
    result = Decontaminate(index)([dict(d) for d in docs])
    counts = Counter(input=len(result.kept) + len(result.dropped), kept=len(result.kept),
                     contaminated=len(result.dropped), **index.counts)
    return DecontaminationResult(result.kept, result.dropped, dict(counts))
