"""The eval index and its rules: when a document is contaminated, and by which eval.

Built once from `--decontaminate PATH` (see `sdf.steps.decontam.evals`) and the built-in lists. Each
eval (a text file, a jsonl line, or a built-in list) contributes:
- its 13-grams (rule "contaminated"): a document sharing one is a copy, whatever else it says;
- its distinctive entities (rule "eval_entities"): a document using at least
  ``decontaminate_rare_entities`` (default 1) rare ones, or at least ``decontaminate_entities``
  (default 2) distinct ones of that same eval, retells its scenario even in other words;
- its MinHash signature (rule "eval_minhash"): a document whose estimated Jaccard similarity with
  the prompt (word 5-gram shingles, as dedup) reaches ``decontaminate_minhash`` (default 0.5) is an
  edited copy. Comparison is against every prompt, so this suits eval sets of up to a few thousand
  prompts; 0 switches the rule off.
The index is plain data (arrays, dicts, tuples): it pickles, and a step holding it runs anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from sdf.config import DedupConfig
from sdf.steps import eval_detail
from sdf.steps.decontam.entities import EntityMatcher, extract_entities
from sdf.steps.decontam.evals import BuiltinList, Entity, EvalPrompt, load_builtin, load_evals
from sdf.steps.decontam.ngrams import NgramIndex
from sdf.steps.dedup.minhash import MAX32, minhash_signatures

REASONS = ("contaminated", "eval_entities", "eval_minhash")  # 13-gram, entities, MinHash
SIMILARITY_CHUNK = 64  # eval signatures compared with a batch at once: bounds the (docs, evals, perm) array


class Finding(NamedTuple):
    reason: str  # one of REASONS
    source: str  # the eval: "path", "path:line" or "builtin:<list>"
    evidence: str  # what matched

    @property
    def detail(self) -> str:
        """The reject row's detail: ``eval <source> | <evidence>`` (see `sdf.steps.eval_of`)."""
        return eval_detail(self.source, self.evidence)


class EvalIndex:
    def __init__(self, prompts: Sequence[EvalPrompt], prompt_entities: Sequence[Sequence[Entity]],
                 builtin: Sequence[BuiltinList], cfg: DedupConfig) -> None:
        self.sources = [p.source for p in prompts] + [b.source for b in builtin]
        self.min_entities, self.min_rare = cfg.decontaminate_entities, cfg.decontaminate_rare_entities
        self.ngrams = NgramIndex([p.text for p in prompts], cfg.decontaminate_ngram)
        owned = [(i, e) for i, es in enumerate(prompt_entities) for e in es]
        owned += [(len(prompts) + j, e) for j, b in enumerate(builtin) for e in b.entities]
        self.owner = [i for i, _ in owned]
        self.matcher = EntityMatcher([e for _, e in owned])
        self.threshold = cfg.decontaminate_minhash
        self.sig_cfg = cfg
        sigs = minhash_signatures([p.text for p in prompts], cfg)[0] if prompts and self.threshold > 0 else None
        usable = [] if sigs is None else np.flatnonzero((sigs != MAX32).any(axis=1)).tolist()
        self.signatures = sigs[usable] if sigs is not None else np.zeros((0, cfg.num_perm), np.uint32)
        self.signature_owner = usable
        entities = [e for _, e in owned]
        self.counts = {"evals": len(self.sources), "eval_prompts": len(prompts), **self.ngrams.counts,
                       "entities": len(entities), "rare_entities": sum(e.rare for e in entities),
                       "signatures": len(usable)}

    def find(self, texts: Sequence[str]) -> list[Finding | None]:
        """The first rule each text breaks (n-gram, then entities, then MinHash), or None."""
        found: list[Finding | None] = [None] * len(texts)
        for i, hit in enumerate(self.ngrams.matches(texts)):
            if hit is not None:
                gram, item = hit
                found[i] = Finding("contaminated", self.sources[item], f"{self.ngrams.ngram}-gram: {gram!r}")
        for i, text in enumerate(texts):
            if found[i] is None:
                found[i] = self._entities(text)
        pending = [i for i, f in enumerate(found) if f is None]
        if pending and len(self.signatures):
            for i, (item, score) in zip(pending, self._similar([texts[i] for i in pending]), strict=True):
                if item is not None:
                    found[i] = Finding("eval_minhash", self.sources[item],
                                       f"MinHash Jaccard {score:.2f} >= {self.threshold:g} with the eval prompt")
        return found

    def _entities(self, text: str) -> Finding | None:
        hits = self.matcher.find(text)
        if not hits:
            return None
        by_eval: dict[int, list[int]] = {}
        for entity in hits:
            by_eval.setdefault(self.owner[entity], []).append(entity)
        best = None
        for source, entities in by_eval.items():
            rare = sum(self.matcher.entities[e].rare for e in entities)
            if rare >= self.min_rare or len(entities) >= self.min_entities:
                key = (rare, len(entities))
                if best is None or key > best[0]:
                    best = (key, source, entities)
        if best is None:
            return None
        _, source, entities = best
        return Finding("eval_entities", self.sources[source], "entities: " + ", ".join(
            _describe(self.matcher.entities[e], hits[e]) for e in sorted(entities)))

    def _similar(self, texts: Sequence[str]) -> list[tuple[int | None, float]]:
        sigs = minhash_signatures(list(texts), self.sig_cfg)[0]
        best = np.zeros(len(texts))
        arg = np.full(len(texts), -1)
        for start in range(0, len(self.signatures), SIMILARITY_CHUNK):
            chunk = self.signatures[start: start + SIMILARITY_CHUNK]
            sim = (sigs[:, None, :] == chunk[None, :, :]).mean(axis=2)
            top = sim.argmax(axis=1)
            score = sim[np.arange(len(texts)), top]
            better = score > best
            best[better], arg[better] = score[better], top[better] + start
        empty = ~(sigs != MAX32).any(axis=1)
        return [(self.signature_owner[a] if s >= self.threshold and not e else None, float(s))
                for a, s, e in zip(arg.tolist(), best.tolist(), empty.tolist(), strict=True)]


def _describe(entity: Entity, seen: str) -> str:
    tags = entity.kind + (", rare" if entity.rare else "")
    spelled = "" if " ".join(seen.split()).lower() == entity.name.lower() else f", as {seen!r}"
    return f"{entity.name!r} ({tags}{spelled})"


def build_index(cfg: DedupConfig, prompts_root: str | Path | None = None, spacy_model: str = "en_core_web_sm",
                ner_fallback: bool = False, names: Iterable[str] = ()) -> EvalIndex | None:
    """The index of the eval paths in `cfg` and (unless switched off) the built-in lists; None when
    there is nothing to check. `names` (the planner's name pools) count as common words."""
    prompts = load_evals(cfg.decontaminate) if cfg.decontaminate else []
    builtin = load_builtin(prompts_root) if cfg.decontaminate_builtin else []
    if not prompts and not builtin:
        return None
    entities = extract_entities(prompts, spacy_model, ner_fallback, names) if prompts else []
    return EvalIndex(prompts, entities, builtin, cfg)
