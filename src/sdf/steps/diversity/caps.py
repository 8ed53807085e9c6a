"""Caps on repeated names and openings, decided on the per-document table (no texts): fix, don't drop.

Names: measured over every document (every genre that names people), given names and surnames alike.
A name may appear in at most

    name cap = max(min_cap, floor(name_share * documents))

documents, at any corpus size. Documents are visited best first (highest ``quality_score``, missing =
0; then smallest doc_id). The first documents up to the cap keep the name; in each later one the name
is replaced, consistently in every form (alone, possessive, with a surname), by a name from the
planner's pool that no document of the corpus uses yet, recorded in the ``renamed`` column. A document
is dropped (reason ``name_cap``) only when the rename cannot be done safely: the name is also an
ordinary lower-case word in it, or the pool has no unused name left.

Openers: the first ``opener_words`` normalised words, over all documents; the opener cap applies once
there are ``min_docs`` documents: ``max(min_cap, floor(opener_share * documents))``. A document over
it whose first sentence is a stock sentence (the same sentence opens more documents than the cap)
keeps its text without that sentence (``trim``); any other is dropped with reason ``opener_cap``.
The same input always makes the same decisions.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import xxhash

from sdf.config import DiversityConfig
from sdf.steps import GenreLike, quality_of, reject_row
from sdf.steps.dedup.minhash import normalize_text
from sdf.steps.diversity.names import confirm_people, evidence, name_candidates, people, planned_people

FIRST_SENTENCE = re.compile(r"\s*(.{12,300}?[.!?])(?=\s)", re.DOTALL)
MIN_WORDS_AFTER_TRIM = 40  # a stock opener is trimmed only when a document remains behind it


class DiversityResult(NamedTuple):
    kept: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    counts: dict[str, int]
    names: dict[str, list[str]]  # doc_id -> given names found (after renames), for kept documents
    caps: dict[str, int | None]  # {"name": cap, "opener": cap}; None where the population is too small


class CapRow(NamedTuple):
    """One document of the table the caps decide on, without its text: a tuple, its strings interned
    (a repeated opener or name is held once) and its first sentence kept only as a 64-bit hash, so the
    table costs a few hundred bytes a document."""

    doc_id: str
    quality_score: float
    fiction: bool
    opener: str
    names: tuple[str, ...] = ()
    surnames: tuple[str, ...] = ()
    unsafe: tuple[str, ...] = ()  # names that are also ordinary lower-case words in the text: never renamed
    sentence: int = 0  # xxh64 of the normalised first sentence; 0 when there is none
    trim: int = 0  # characters to cut to remove that sentence
    next_opener: str = ""  # the opener once it is cut
    words_after_trim: int = 0
    planned: tuple[str, ...] = ()  # names the plan gave this document that its text uses: known names, no NER


class NameCheck(NamedTuple):
    """The table with each row's names cut to confirmed ones, the names any document uses (candidates
    included: replacements avoid them all), and counts for metrics.json."""

    table: list[CapRow]
    used: frozenset[str]
    counts: dict[str, Any]


class Edit(NamedTuple):
    """What the caps change in a kept document: characters cut at its start, and names replaced."""

    trim: int = 0
    renamed: tuple[tuple[str, str], ...] = ()  # (old, new), sorted


class CapDecision(NamedTuple):
    drops: dict[str, tuple[str, str]]  # doc_id -> (reason, detail)
    edits: dict[str, Edit]  # doc_id -> its edit, for edited documents only
    counts: dict[str, int]
    caps: dict[str, int | None]


def cap_for(share: float, population: int, cfg: DiversityConfig) -> int | None:
    """Documents allowed per opener, or None when the population is too small for a share."""
    if population < cfg.min_docs:
        return None
    return max(cfg.min_cap, math.floor(share * population))


def name_cap(documents: int, cfg: DiversityConfig) -> int:
    """Documents allowed per given name or surname: a share of the corpus, at any corpus size."""
    return max(cfg.min_cap, math.floor(cfg.name_share * documents))


def opener(text: str, words: int = 4) -> str:
    """The first ``words`` normalised words of a text."""
    return " ".join(normalize_text(text[: 40 * words]).split()[:words])


def first_sentence(text: str) -> tuple[str, int]:
    """(the normalised first sentence, how many characters to cut to remove it), or ("", 0)."""
    match = FIRST_SENTENCE.match(text)
    if not match:
        return "", 0
    return normalize_text(match.group(1)), match.end()


def is_fiction(doc: Mapping[str, Any], genres: Mapping[str, GenreLike]) -> bool:
    return bool(getattr(genres.get(str(doc.get("genre"))), "fiction", False))


def _word(name: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w'’-]){re.escape(name)}(?![\w-])", re.IGNORECASE)


def interned(names: Iterable[str]) -> tuple[str, ...]:
    """Names as a tuple of interned strings: a name many documents share is held once."""
    return tuple(sys.intern(n) for n in names)


def reinterned(row: CapRow) -> CapRow:
    """A row that crossed a process boundary, its strings interned again (unpickling makes new copies)."""
    return row._replace(opener=sys.intern(row.opener), next_opener=sys.intern(row.next_opener),
                        names=interned(row.names), surnames=interned(row.surnames), unsafe=interned(row.unsafe),
                        planned=interned(row.planned))


def sentence_key(sentence: str) -> int:
    """A nonzero 64-bit hash of a normalised first sentence; 0 stands for no sentence."""
    return (xxhash.xxh64_intdigest(sentence.encode()) or 1) if sentence else 0


def cap_features(batch: Sequence[Mapping[str, Any]], genres: Mapping[str, GenreLike], cfg: DiversityConfig
                 ) -> list[CapRow]:
    """The per-document rows the caps decide on: doc_id, score, fiction, opener, its first sentence and
    what follows it, names and surnames, and the names that cannot be renamed safely (also ordinary words)."""
    texts = [str(d.get("text") or "") for d in batch]
    words = [_WHOLE_WORD.findall(text) for text in texts]
    if cfg.names == "ner":
        found = people(texts, cfg) if texts else []
        planned: list[set[str]] = [set() for _ in texts]
    else:
        found, planned = [], []
        for d, text, present in zip(batch, texts, words, strict=True):
            given, surnames = name_candidates(text)
            plan_given, plan_surnames = planned_people(d.get("names"), set(present))
            given |= plan_given
            found.append((sorted(given), sorted((surnames | plan_surnames) - given)))
            planned.append(plan_given | plan_surnames)
    rows = []
    for d, text, (given, surnames), plan, present in zip(batch, texts, found, planned, words, strict=True):
        sentence, cut = first_sentence(text)
        rest = text[cut:]
        written = set(present)
        rows.append(CapRow(
            str(d["doc_id"]), quality_of(d), is_fiction(d, genres), sys.intern(opener(text, cfg.opener_words)),
            interned(given), interned(surnames),
            interned(sorted(n for n in {*given, *surnames} if _ordinary(n, written))),
            sentence=sentence_key(sentence), trim=cut,
            next_opener=sys.intern(opener(rest.lstrip(), cfg.opener_words)) if cut else "",
            words_after_trim=len(rest.split()) if cut else 0, planned=interned(sorted(plan))))
    return rows


def _ordinary(name: str, written: set[str]) -> bool:
    """The name is also an ordinary lower-case word in the text (Hope, Grace, Will): renaming it would change
    the meaning of that word, since a rename replaces every form of the name."""
    return name.lower() in written or name[:1].lower() + name[1:] in written


_WHOLE_WORD = re.compile(r"(?<![\w'’-])[^\W\d_]+(?![\w-])")  # where a name can match (see _word)


def _rank(doc_id: str) -> int:
    return xxhash.xxh64_intdigest(doc_id.encode())


def confirm_names(table: Sequence[CapRow], cfg: DiversityConfig,
                  read_texts: Callable[[set[str]], Mapping[str, str]], scanned: int | None = None) -> NameCheck:
    """Candidate names (``names = "candidates"``) that the caps could act on, confirmed by NER.

    A candidate in more documents than the name cap is a suspect; NER reads the context of the name in up to
    ``ner_sample`` of the documents where the plan did not give it (lowest doc_id hash first), fetched with
    ``read_texts(doc_ids)``, and confirms it when it tags a person's name there in at least half of them. Each
    row keeps its planned names and its confirmed suspects. In ``"ner"`` mode the rows are already NER's, and
    NER read every one of the ``scanned`` documents."""
    used = frozenset(n for r in table for n in (*r.names, *r.surnames))
    if cfg.names == "ner":
        return NameCheck(list(table), used, {"names": "ner", "ner_documents": len(table) if scanned is None
                                             else scanned})
    cap = name_cap(len(table), cfg)
    uses: Counter[tuple[str, str]] = Counter(
        (kind, n) for r in table for kind in ("names", "surnames") for n in getattr(r, kind))
    suspects = {key for key, n in uses.items() if n > cap}
    sample: dict[tuple[str, str], list[tuple[int, str]]] = {key: [] for key in suspects}
    for r in table:  # the ner_sample unplanned uses of each suspect with the lowest doc_id hash
        for kind in ("names", "surnames"):
            for n in getattr(r, kind):
                if (kind, n) in sample and n not in r.planned:
                    sample[(kind, n)].append((_rank(r.doc_id), r.doc_id))
    sample = {key: sorted(ids)[: cfg.ner_sample] for key, ids in sample.items() if ids}
    wanted = {doc_id for ids in sample.values() for _, doc_id in ids}
    texts = read_texts(wanted) if wanted else {}
    found = {key: [evidence(texts[doc_id], key[1], key[0]) for _, doc_id in ids] for key, ids in sample.items()}
    confirmed = confirm_people(found, cfg) if found else set()
    rows = [r._replace(names=tuple(n for n in r.names if n in r.planned or ("names", n) in confirmed),
                       surnames=tuple(n for n in r.surnames if n in r.planned or ("surnames", n) in confirmed))
            for r in table]
    return NameCheck(rows, used, {"names": "candidates", "ner_documents": len(wanted), "name_suspects": len(suspects),
                                  "names_confirmed": len(confirmed)})


def _stock_sentences(table: Sequence[CapRow], cap: int | None) -> set[int]:
    """Hashes of first sentences that open more than ``cap`` documents (counted in numpy, not a dict)."""
    if cap is None:
        return set()
    hashes = np.fromiter((r.sentence for r in table), dtype=np.uint64, count=len(table))
    values, counts = np.unique(hashes[hashes != 0], return_counts=True)
    return set(values[counts > cap].tolist())


def decide_caps(table: Sequence[CapRow], cfg: DiversityConfig, given_pool: Sequence[str] = (),
                surname_pool: Sequence[str] = (), used: Iterable[str] | None = None) -> CapDecision:
    """Which documents of the feature table are renamed, trimmed or dropped (rule in the module docstring).

    ``given_pool`` and ``surname_pool`` are replacement names in the order to use them (the planner's);
    names some document already uses (``used``, default: the table's) are skipped.
    """
    cap_names = name_cap(len(table), cfg)
    opener_cap = cap_for(cfg.opener_share, len(table), cfg)
    used = set(used) if used is not None else {n for r in table for n in (*r.names, *r.surnames)}
    pools = {"names": _unused(given_pool, used), "surnames": _unused(surname_pool, used)}
    del used
    stock = _stock_sentences(table, opener_cap)
    uses: dict[str, Counter[str]] = {"names": Counter(), "surnames": Counter()}
    opener_uses: Counter[str] = Counter()
    drops: dict[str, tuple[str, str]] = {}
    edits: dict[str, Edit] = {}
    for row in sorted(table, key=lambda r: (-r.quality_score, r.doc_id)):
        op, trim = row.opener, 0
        if opener_cap is not None and op and opener_uses[op] >= opener_cap:
            if row.sentence in stock and row.words_after_trim >= MIN_WORDS_AFTER_TRIM:
                trim, op = row.trim, row.next_opener
            else:
                drops[row.doc_id] = ("opener_cap", f"opener {op!r} already opens {opener_cap} documents (the cap)"
                                     " and its first sentence is not a stock sentence that could be cut")
                continue
        renamed, problem = _renames(row, uses, pools, cap_names, len(table))
        if problem:
            drops[row.doc_id] = ("name_cap", problem)
            for kind, new in renamed.values():  # hand back what this document took from the pools
                pools[kind].insert(0, new)
            continue
        uses["names"].update(n for n in row.names if n not in renamed)
        uses["surnames"].update(n for n in row.surnames if n not in renamed)
        uses["names"].update(new for kind, new in renamed.values() if kind == "names")
        uses["surnames"].update(new for kind, new in renamed.values() if kind == "surnames")
        if op:
            opener_uses[op] += 1
        if trim or renamed:
            edits[row.doc_id] = Edit(trim, tuple(sorted((old, new) for old, (_, new) in renamed.items())))
    counts = Counter(input=len(table), fiction=sum(1 for r in table if r.fiction))
    counts.update(reason for reason, _ in drops.values())
    counts["renamed"] = sum(1 for e in edits.values() if e.renamed)
    counts["opener_trimmed"] = sum(1 for e in edits.values() if e.trim)
    counts["kept"] = len(table) - len(drops)
    return CapDecision(drops, edits, dict(counts), {"name": cap_names, "opener": opener_cap})


def _unused(pool: Iterable[str], used: set[str]) -> list[str]:
    return [n for n in dict.fromkeys(pool) if n not in used]


def _renames(row: CapRow, uses: Mapping[str, Counter[str]], pools: dict[str, list[str]], cap: int,
             documents: int) -> tuple[dict[str, tuple[str, str]], str]:
    """{old: (kind, new)} for this document's names already at the cap, or why one cannot be renamed."""
    renamed: dict[str, tuple[str, str]] = {}
    for kind, what in (("names", "given name"), ("surnames", "surname")):
        for name in getattr(row, kind):
            if uses[kind][name] < cap or name in renamed:
                continue
            over = f"{what} {name!r} already in {cap} documents (cap {cap} of {documents})"
            if name in row.unsafe:
                return renamed, f"{over}; not renamed: it is also an ordinary word in this document"
            if not pools[kind]:
                return renamed, f"{over}; no unused {what} left in the pool to rename it to"
            renamed[name] = (kind, pools[kind].pop(0))
    return renamed, ""


def apply_edit(doc: Mapping[str, Any], edit: Edit | None) -> dict[str, Any]:
    """The document with its stock opening sentence cut and its over-cap names replaced, `renamed` set."""
    out = dict(doc)
    if not edit:
        return out
    text = str(out.get("text") or "")
    if edit.trim:
        text = text[edit.trim:].lstrip()
    # a name that only the cut sentence carried is no longer there to rename
    mapping = {old: new for old, new in edit.renamed if _word(old).search(text)}
    if mapping:
        text = rename_people(text, mapping)
        out["renamed"] = json.dumps(mapping, ensure_ascii=False, sort_keys=True)
    out["text"] = text
    return out


def rename_people(text: str, mapping: Mapping[str, str]) -> str:
    """Replace each name by its new one as a whole word, in every form (alone, possessive, with a surname),
    keeping its case (Elara, ELARA). Names are replaced together, so a swap never chains."""
    if not mapping:
        return text
    lookup = {old.lower(): new for old, new in mapping.items()}
    pattern = re.compile(r"(?<![\w'’-])(" + "|".join(re.escape(o) for o in sorted(mapping, key=len, reverse=True))
                         + r")(?![\w-])", re.IGNORECASE)

    def swap(match: re.Match[str]) -> str:
        old, new = match.group(0), lookup[match.group(0).lower()]
        return new.upper() if old.isupper() and len(old) > 1 else new

    return pattern.sub(swap, text)


def apply_caps(docs: Iterable[Mapping[str, Any]], genres: Mapping[str, GenreLike],
               cfg: DiversityConfig | None = None, given_pool: Sequence[str] = (),
               surname_pool: Sequence[str] = ()) -> DiversityResult:
    """`decide_caps` over documents held in memory (the stage streams instead); kept ones keep their
    order, with their edits applied; dropped ones become rejected rows with stage "diversity"."""
    cfg = cfg or DiversityConfig()
    docs = list(docs)
    texts = {str(d["doc_id"]): str(d.get("text") or "") for d in docs}
    check = confirm_names(cap_features(docs, genres, cfg), cfg, lambda ids: texts)
    table = check.table
    decision = decide_caps(table, cfg, given_pool, surname_pool, check.used)
    kept, rejected, names = [], [], {}
    for doc, row in zip(docs, table, strict=True):
        if row.doc_id in decision.drops:
            rejected.append(reject_row(doc, "diversity", *decision.drops[row.doc_id]))
            continue
        edit = decision.edits.get(row.doc_id)
        kept.append(apply_edit(doc, edit))
        names[row.doc_id] = renamed_names(row.names, edit)
    return DiversityResult(kept, rejected, decision.counts, names, decision.caps)


def renamed_names(names: Sequence[str], edit: Edit | None) -> list[str]:
    """A document's given names after its renames."""
    mapping = dict(edit.renamed) if edit else {}
    return sorted({mapping.get(n, n) for n in names})
