"""Long word n-grams shared with an eval prompt: the verbatim-copy rule of decontamination.

Prompts and documents are compared after the same normalisation dedup uses (NFKC, lowercase, no
punctuation), on 13-word n-grams by default; prompts shorter than n words cannot match and are
counted, not used.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sdf.steps.dedup.minhash import normalize_text, shingle_hashes


class NgramIndex:
    """Every normalised ``ngram``-word sequence of the eval prompts, as text (with the first prompt
    that has it) and as hashes."""

    def __init__(self, eval_texts: Sequence[str], ngram: int = 13) -> None:
        self.ngram = ngram
        item_words = [normalize_text(t).split() for t in eval_texts]
        self.counts = {"eval_items": len(eval_texts),
                       "eval_items_too_short": sum(len(w) < ngram for w in item_words)}
        # as text, to confirm and report a match; as hashes, to find candidates fast
        self.grams: dict[str, int] = {}
        for item, words in enumerate(item_words):
            for j in range(len(words) - ngram + 1):
                self.grams.setdefault(" ".join(words[j: j + ngram]), item)
        self.hashes = np.unique(shingle_hashes(list(self.grams), ngram)[0]) if self.grams else None
        self.counts["eval_ngrams"] = len(self.grams)

    def matches(self, texts: Sequence[str]) -> list[tuple[str, int] | None]:
        """For each text, an eval n-gram it contains and the index of the prompt it came from, or None."""
        if self.hashes is None:
            return [None] * len(texts)
        hashes, offsets = shingle_hashes(texts, self.ngram)
        hits = np.isin(hashes, self.hashes)
        found: list[tuple[str, int] | None] = []
        for i, text in enumerate(texts):
            match = None
            if hits[offsets[i]: offsets[i + 1]].any():
                words = normalize_text(text).split()
                for j in np.flatnonzero(hits[offsets[i]: offsets[i + 1]]).tolist():
                    if (gram := " ".join(words[j: j + self.ngram])) in self.grams:
                        match = (gram, self.grams[gram])
                        break
            found.append(match)
        return found
