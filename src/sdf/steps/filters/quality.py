"""Heuristic quality filters: the known failure modes of generated documents, each a named rule.

Rules run in this order; the first that fires names the rejection reason:

    rule             reason(s)             what it catches
    refusal          refusal               the writer model declining the task at the very start
    meta_commentary  meta_commentary       "Certainly! Here is...", "I hope this helps" (stripped when the
                                           rest survives)
    placeholder      placeholder           [Name], [Your Company], {{var}}, <insert ...>, lorem ipsum, XXX
    truncated        truncated             stop_reason == "max_tokens", unclosed fences/brackets, mid-sentence
    length           too_short, too_long   words outside [min_words*length_low, max_words*length_high]
    language         wrong_language        too few English function words
    repetition       repetition            Gopher-style duplicate lines/paragraphs and n-gram shares
    slop             slop                  stock phrases per 1,000 words (prompts/slop.txt)

``check_document`` applies them to one document; ``filter_documents`` to many, producing kept documents
(text possibly stripped of meta commentary) and rows for rejected.parquet.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from sdf.config import QUALITY_RULES, QualityConfig
from sdf.steps import GenreLike, StepResult, reject_row

RULES = QUALITY_RULES  # rule names, in the order they run
DEFAULT_SLOP_FILE = Path(__file__).resolve().parents[2] / "prompts" / "slop.txt"










class QualityResult(NamedTuple):
    kept: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    counts: dict[str, int]






def _plain(text: str) -> str:
    """Straight apostrophes and quotes, so patterns need only one spelling."""
    return text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')


def _words(text: str) -> int:
    return len(text.split())


# --- refusal ---------------------------------------------------------------------------------------

_REFUSAL = re.compile(
    r"""^[\s*_#>]*
    (?:(?:i'm\s+|i\s+am\s+|i\s+)?(?:sorry|apologi[sz]e)\b[^.!?\n]{0,60}?[,.!]?\s*(?:but\s+)?)?
    (?:unfortunately,?\s+)?
    (?:as\s+an\s+ai(?:\s+(?:language\s+)?(?:model|assistant))?,?\s+)?
    i(?:\s+|')(?:can't|cannot|can\s+not|won't|will\s+not|am\s+not\s+able\s+to|m\s+not\s+able\s+to|
        am\s+unable\s+to|m\s+unable\s+to|must\s+decline\s+to|need\s+to\s+decline|
        (?:do\s+not|don't|am\s+not|m\s+not)\s+(?:feel\s+)?comfortable)\s+
    (?:help(?:\s+you)?\s+(?:with|write|create)|writ(?:e|ing)|creat(?:e|ing)|produc(?:e|ing)|generat(?:e|ing)|
        compos(?:e|ing)|draft(?:ing)?|complet(?:e|ing)|fulfil|comply|assist|provide|continue|do\s+(?:that|this))\b
    """,
    re.IGNORECASE | re.VERBOSE,
)
_TASK_OBJECT = re.compile(
    r"[^.!?\n]{0,60}?\b(?:this|that|such|the\s+requested|your)\b|[^.!?\n]{0,60}?\b(?:story|stories|request|"
    r"content|piece|scene|narrative|essay|document|text)\b",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"[.!?](?:[\"')\]]*)(?:\s|$)")


def refusal_detail(text: str, fiction: bool, min_words: int | None, cfg: QualityConfig) -> str | None:
    """The writer model declining the task: a refusal opener with little content after it.

    The opener must start the text (after markdown marks), so dialogue in quotes never matches and
    "as an AI" alone is not enough: it takes a declining verb plus a writing verb ("I can't write",
    "I'm not able to create"). Genre-aware: in fiction, where first-person narrators say "I can't
    write to her anymore", the declined object must be the task itself ("this", "that", "a story",
    "the request"...); and the "little content" limit is at most half the genre's minimum length,
    so a short first-person post is not mistaken for a refusal.
    """
    plain = _plain(text)
    m = _REFUSAL.match(plain)
    if not m or (fiction and not _TASK_OBJECT.match(plain, m.end())):
        return None
    end = _SENTENCE_END.search(plain, m.end())
    rest = _words(plain[end.end():]) if end else 0
    limit = cfg.refusal_max_rest_words
    if min_words:
        limit = min(limit, min_words // 2)
    if rest >= limit:
        return None
    first = plain[: end.end() if end else len(plain)].strip()
    return f"refusal opener {first[:100]!r} with {rest} words after it"


# --- meta commentary -------------------------------------------------------------------------------

_ARTEFACTS = (
    r"story|essay|piece|draft|document|post|article|letter|poem|dialogue|transcript|version|response|"
    r"entry|speech|script|report|memo|email|guide|faq|review|thread|lesson|summary|excerpt|text|content"
)
_META_START = re.compile(
    r"^(?:"
    r"(?:certainly|sure(?:\s+thing)?|of\s+course|absolutely|great|okay|ok|alright|gladly|happy\s+to\s+help)"
    r"(?:\s*[!.:]|,\s*(?:here|i\b|i'd|i'll|i've|below|this|let))"
    r"|(?:here(?:'s|\s+is|\s+are)|below\s+is|below\s+you'll\s+find|the\s+following\s+is)\b.*(?::|\bas\s+requested\b.*)$"
    r"|i(?:'ve|\s+have)\s+(?:written|drafted|created|put\s+together|composed|prepared)\b"
    r"|(?:genre|target\s+length|word\s+count)\s*:"
    r")",
    re.IGNORECASE,
)
_META_END = re.compile(
    r"^\(?(?:"
    r"i\s+hope\s+(?:this|that|the\s+above)\s+(?:helps|was\s+helpful|is\s+helpful|meets\s+your|captures|"
    r"fits\s+your|works\s+for\s+you|is\s+what\s+you|gives\s+you)"
    rf"|i\s+hope\s+(?:this|the)\s+(?:{_ARTEFACTS})\s+(?:helps|meets\s+your|captures|fits\s+your|works\s+for\s+you)"
    r"|i\s+hope\s+you\s+enjoy(?:ed)?\s+(?:reading|this\s+(?:story|essay|piece|poem))"
    r"|(?:please\s+)?(?:let\s+me\s+know|feel\s+free\s+to)\b.*\b(?:if\s+you(?:'d|\s+would)?\s+(?:like|want|prefer)|"
    r"changes|adjust|tweak|revis|edit|another|different|expand|shorten)"
    r"|(?:if|should)\s+you(?:'d|\s+would)?\s+(?:like|want|need|prefer)\b.*\b(?:i\s+can|i\s+could|i'd|i\s+would|me\s+to)\b"
    r"|would\s+you\s+like\s+(?:me|a|an|any|to)\b"
    r"|(?:do\s+you\s+want|shall\s+i|should\s+i)\b.*\?$"
    r"|(?:note|n\.b\.|author's\s+note|writer's\s+note|a\s+note)\s*[:\u2014-]\s*(?:this|the|i)\b"
    r"|word\s+count\s*[:\u2014-]?\s*(?:approx\w*\.?\s*)?~?\d"
    rf"|(?:this|the\s+above)\s+(?:{_ARTEFACTS})\s+(?:is|was|has\s+been|aims|tries|attempts|explores|captures|"
    r"reflects|illustrates|highlights|can\s+be)\b"
    r"|i(?:'ve|\s+have)\s+(?:written|drafted|tried|aimed|kept|included|created)\b"
    r")",
    re.IGNORECASE,
)
_RULE_LINE = re.compile(r"^\s*(?:[-*_=~]\s*){3,}$")
_DECORATION = " \t*_#>`"


def strip_meta(text: str, cfg: QualityConfig) -> tuple[str, list[str]]:
    """Remove meta-commentary lines at the start and end; returns (text, removed lines)."""
    lines = text.split("\n")
    removed: list[str] = []

    def is_meta(line: str, pattern: re.Pattern[str]) -> bool:
        core = _plain(line).strip(_DECORATION)
        return bool(core) and _words(core) <= cfg.meta_max_line_words and bool(pattern.match(core))

    lo, hi = 0, len(lines)
    while lo < hi:
        line = lines[lo]
        if not line.strip() or _RULE_LINE.match(line):
            lo += 1
        elif is_meta(line, _META_START):
            removed.append(line.strip())
            lo += 1
        else:
            break
    while hi > lo:
        line = lines[hi - 1]
        if not line.strip() or _RULE_LINE.match(line):
            hi -= 1
        elif is_meta(line, _META_END):
            removed.append(line.strip())
            hi -= 1
        else:
            break
    if not removed:
        return text, []
    return "\n".join(lines[lo:hi]).strip("\n"), removed


# --- placeholders ----------------------------------------------------------------------------------

_PLACEHOLDER_FIELDS = (
    r"name|full\s+name|first\s+name|last\s+name|company(?:\s+name)?|organi[sz]ation(?:\s+name)?|date|address|"
    r"city|country|state|title|position|job\s+title|role|e-?mail(?:\s+address)?|phone(?:\s+number)?|number|"
    r"recipient|author|location|product(?:\s+name)?|school|university|team|department|website|url|link|"
    r"amount|signature|topic|industry|year|time|place|person|character|client|customer|manager"
)
_PLACEHOLDER = re.compile(
    r"\[\s*(?:insert|enter|add|your|recipient'?s?|client'?s?|customer'?s?)\b[^\]\n]{0,40}\]"
    rf"|\[\s*(?:{_PLACEHOLDER_FIELDS})\s*\]"
    r"|\{\{[^{}\n]{1,60}\}\}"
    r"|<\s*(?:insert|your|enter|add|placeholder)\b[^<>\n]{0,60}>"
    r"|\blorem\s+ipsum\b",
    re.IGNORECASE,
)
_PLACEHOLDER_X = re.compile(r"\bX{3,}\b|\bXX/XX/XX(?:XX)?\b|\$X+\b")  # case-sensitive: "xxx" may be prose


def placeholder_detail(text: str) -> str | None:
    """The first unfilled template slot, if any."""
    m = _PLACEHOLDER.search(text) or _PLACEHOLDER_X.search(text)
    return f"placeholder {m.group(0)!r}" if m else None


# --- truncation ------------------------------------------------------------------------------------

_TERMINAL = tuple('.!?…"\')]}»*_`~|')
_LIST_ITEM = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+")


def truncation_detail(text: str, stop_reason: str | None, cfg: QualityConfig) -> str | None:
    """Signs that the document stops before its end."""
    if stop_reason == "max_tokens":
        return "stop_reason=max_tokens"
    body = text.rstrip()
    if not body:
        return None
    if body.count("```") % 2:
        return "unclosed code fence"
    last_para = re.split(r"\n\s*\n", body)[-1]
    if last_para.count("(") > last_para.count(")"):
        return "unclosed parenthesis in the last paragraph"
    if last_para.count("\u201c") > last_para.count("\u201d"):
        return "unclosed quotation in the last paragraph"
    last_line = body.split("\n")[-1].strip()
    if last_line.startswith("#"):
        return f"ends with a heading: {last_line[-60:]!r}"
    if last_line.endswith(_TERMINAL) or _LIST_ITEM.match(last_line):
        return None
    n = _words(last_line)
    if last_line.endswith((",", ";", ":", "-", "\u2013", "\u2014")) and n > 3:
        return f"ends mid-sentence: {last_line[-60:]!r}"
    if n >= cfg.truncation_min_line_words:
        return f"ends mid-sentence: {last_line[-60:]!r}"
    return None


# --- language --------------------------------------------------------------------------------------

_EN_FUNCTION_WORDS = frozenset(
    ["the", "of", "and", "a", "an", "to", "in", "is", "was", "are", "were", "be", "been", "it", "its", "that",
     "this", "these", "those", "for", "on", "with", "as", "at", "by", "from", "or", "but", "not", "no", "he",
     "she", "they", "we", "you", "i", "me", "my", "him", "his", "her", "them", "their", "our", "your", "who",
     "what", "which", "when", "where", "how", "if", "so", "than", "then", "there", "here", "have", "has",
     "had", "do", "does", "did", "will", "would", "can", "could", "should", "about", "into", "up", "out",
     "all", "one", "also", "just", "over", "after", "before", "because", "while"]
)
_LETTER_RUN = re.compile(r"[^\W\d_]+")


def letter_words(text: str) -> list[str]:
    """The lower-cased letter runs of a text: the one word split the language and repetition rules share."""
    return _LETTER_RUN.findall(text.lower())


UNSPACED = frozenset({"zh", "ja", "th", "lo", "km", "my"})  # scripts written without spaces between words


def language_detail(text: str, cfg: QualityConfig, words: list[str] | None = None) -> str | None:
    """Too few English function words for English prose (stopword ratio, cheap and dependency-free);
    ``words`` is `letter_words(text)` when the caller has it."""
    if cfg.language != "en":
        return None
    tokens = letter_words(text) if words is None else words
    if len(tokens) < cfg.language_min_words:
        return None
    ratio = sum(t in _EN_FUNCTION_WORDS for t in tokens) / len(tokens)
    if ratio >= cfg.min_stopword_ratio:
        return None
    return f"english function-word ratio {ratio:.2f} < {cfg.min_stopword_ratio}"


# --- repetition ------------------------------------------------------------------------------------

_NGRAM_BASE = np.uint64(0x9E3779B97F4A7C15)


def _duplicate_shares(items: list[str]) -> tuple[float, float]:
    """Share of items that repeat an earlier item, by count and by characters."""
    if not items:
        return 0.0, 0.0
    seen: set[str] = set()
    dup = dup_chars = 0
    for item in items:
        if item in seen:
            dup += 1
            dup_chars += len(item)
        seen.add(item)
    return dup / len(items), dup_chars / max(1, sum(len(i) for i in items))


def repetition_stats(
    text: str, top_ns: Iterable[int] = (2, 3, 4), dup_ns: Iterable[int] = range(5, 11),
    words: list[str] | None = None,
) -> dict[str, float]:
    """Gopher-style repetition measures (Rae et al. 2021), our implementation:

    - dup_line_frac / dup_line_char_frac: non-empty lines that repeat an earlier line, by count and chars;
    - dup_para_frac / dup_para_char_frac: the same for blank-line separated paragraphs;
    - top_{n}gram: characters covered by occurrences of the most frequent repeated n-gram / word characters;
    - dup_{n}gram: characters of words covered by second-and-later occurrences of any repeated n-gram /
      word characters (the text that would vanish if every n-gram were kept once).
    """
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
    paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    stats: dict[str, float] = {}
    stats["dup_line_frac"], stats["dup_line_char_frac"] = _duplicate_shares(lines)
    stats["dup_para_frac"], stats["dup_para_char_frac"] = _duplicate_shares(paras)
    words = letter_words(text) if words is None else words
    vocab: dict[str, int] = {}
    ids = np.array([vocab.setdefault(w, len(vocab)) for w in words], dtype=np.uint64)
    lengths = np.array([len(w) for w in words], dtype=np.int64)
    total = int(lengths.sum()) or 1
    tops, dups = set(top_ns), set(dup_ns)
    stats.update({f"top_{n}gram": 0.0 for n in tops})
    stats.update({f"dup_{n}gram": 0.0 for n in dups})
    for n in sorted(tops | dups):
        m = len(ids) - n + 1
        if m < 2:
            continue
        keys = np.zeros(m, dtype=np.uint64)
        for t in range(n):  # n <= 10 passes over the whole document, not a loop per n-gram
            keys = keys * _NGRAM_BASE + ids[t : t + m] + np.uint64(1)
        _, first, inverse, counts = np.unique(keys, return_index=True, return_inverse=True,
                                              return_counts=True)
        best = int(np.argmax(counts))
        if n in tops and counts[best] > 1:
            start = int(first[best])
            stats[f"top_{n}gram"] = int(counts[best]) * int(lengths[start : start + n].sum()) / total
        if n in dups:
            later = np.flatnonzero(first[inverse] != np.arange(m))
            cover = np.zeros(len(ids) + 1, dtype=np.int64)
            np.add.at(cover, later, 1)
            np.add.at(cover, later + n, -1)
            covered = np.cumsum(cover[:-1]) > 0
            stats[f"dup_{n}gram"] = int(lengths[covered].sum()) / total
    return stats


def repetition_detail(text: str, cfg: QualityConfig, words: list[str] | None = None) -> str | None:
    """The first repetition measure above its threshold."""
    top = {int(k): v for k, v in cfg.max_top_ngram_char_frac.items()}
    dup = {int(k): v for k, v in cfg.max_dup_ngram_char_frac.items()}
    stats = repetition_stats(text, top, dup, words)
    limits = {
        "dup_line_frac": cfg.max_dup_line_frac,
        "dup_para_frac": cfg.max_dup_para_frac,
        "dup_line_char_frac": cfg.max_dup_line_char_frac,
        "dup_para_char_frac": cfg.max_dup_para_char_frac,
        **{f"top_{n}gram": v for n, v in top.items()},
        **{f"dup_{n}gram": v for n, v in dup.items()},
    }
    for name, limit in limits.items():
        if stats.get(name, 0.0) > limit:
            return f"{name} {stats[name]:.2f} > {limit}"
    return None


# --- slop ------------------------------------------------------------------------------------------


def load_slop_phrases(path: Path) -> list[str]:
    """Entries of a slop list: one per line, '#' starts a comment."""
    lines = (ln.split("#", 1)[0].strip() for ln in path.read_text(encoding="utf-8").splitlines())
    return [ln.lower() for ln in lines if ln]


def slop_pattern(phrases: Iterable[str]) -> re.Pattern[str] | None:
    """One regex for all phrases, to run on lower-cased text (the phrases are lower case, so no case-insensitive
    matching is needed); a trailing '*' on a word matches any ending."""

    def one(phrase: str) -> str:
        parts = [re.escape(w[:-1]) + r"\w*" if w.endswith("*") else re.escape(w) for w in phrase.lower().split()]
        return r"\s+".join(parts)

    alternatives = sorted({one(p) for p in phrases if p.strip()}, key=len, reverse=True)
    if not alternatives:
        return None
    return re.compile(r"\b(?:" + "|".join(alternatives) + r")\b")


@lru_cache(maxsize=8)
def _slop_for(slop_file: str) -> re.Pattern[str] | None:
    return slop_pattern(load_slop_phrases(Path(slop_file) if slop_file else DEFAULT_SLOP_FILE))


def slop_hits(text: str, cfg: QualityConfig) -> Counter[str]:
    """Slop phrases found in the text, lowercased, with counts."""
    pattern = _slop_for(cfg.slop_file)
    if pattern is None:
        return Counter()
    return Counter(" ".join(m.group(0).split()) for m in pattern.finditer(_plain(text).lower()))


def slop_detail(text: str, cfg: QualityConfig, hits: Counter[str] | None = None) -> str | None:
    """Too many stock phrases per 1,000 words; ``hits`` is `slop_hits(text, cfg)` when the caller has it."""
    hits = slop_hits(text, cfg) if hits is None else hits
    total = sum(hits.values())
    density = 1000 * total / max(1, _words(text))
    if total < cfg.slop_min_hits or density <= cfg.slop_max_per_1k:
        return None
    top = ", ".join(f"{p} x{c}" for p, c in hits.most_common(5))
    return f"{density:.1f} slop phrases per 1k words ({total}): {top}"


# --- the step --------------------------------------------------------------------------------------


def check_document(
    doc: Mapping[str, Any], genre: GenreLike | None, cfg: QualityConfig | None = None
) -> tuple[str | None, str | None, str]:
    """Apply every rule to one document.

    Returns (text, None, detail) when it passes, where text may be stripped of meta commentary and
    detail then lists what was stripped; or (None, reason, detail) when a rule rejects it.
    """
    return _check(doc, genre, cfg or QualityConfig())[:3]


def _check(doc: Mapping[str, Any], genre: GenreLike | None, cfg: QualityConfig
           ) -> tuple[str | None, str | None, str, int]:
    """`check_document`, plus the slop hits of a kept text (what its quality score needs), found once."""
    on = set(RULES) - set(cfg.skip_rules)
    language = str(doc.get("language") or cfg.language)
    if language != cfg.language:  # the brief asked for another language: the function-word rule is English's
        on.discard("language")
        if language.split("-")[0] in UNSPACED:  # no spaces between words: word counts and n-grams mean nothing
            on -= {"length", "repetition"}
    text = str(doc.get("text") or "")
    fiction = bool(genre.fiction) if genre is not None else False
    min_words = genre.min_words if genre is not None else None
    if not text.strip():
        return None, "too_short", "empty document", 0

    if "refusal" in on and (d := refusal_detail(text, fiction, min_words, cfg)):
        return None, "refusal", d, 0
    note = ""
    if "meta_commentary" in on:
        stripped, removed = strip_meta(text, cfg)
        if removed:
            left = _words(stripped)
            shown = " | ".join(r[:60] for r in removed)
            if left < cfg.meta_min_remaining_words:
                return None, "meta_commentary", f"only {left} words besides meta commentary: {shown}", 0
            text, note = stripped, f"stripped meta: {shown}"
    if "placeholder" in on and (d := placeholder_detail(text)):
        return None, "placeholder", d, 0
    if "truncated" in on and (d := truncation_detail(text, doc.get("stop_reason"), cfg)):
        return None, "truncated", d, 0
    if "length" in on and genre is not None:
        n = _words(text)
        low, high = genre.min_words * cfg.length_low, genre.max_words * cfg.length_high
        if n < low:
            return None, "too_short", f"{n} words < {low:g} ({genre.name}: min_words x {cfg.length_low})", 0
        if n > high:
            return None, "too_long", f"{n} words > {high:g} ({genre.name}: max_words x {cfg.length_high})", 0
    words = letter_words(text) if {"language", "repetition"} & on else None
    if "language" in on and (d := language_detail(text, cfg, words)):
        return None, "wrong_language", d, 0
    if "repetition" in on and (d := repetition_detail(text, cfg, words)):
        return None, "repetition", d, 0
    hits = slop_hits(text, cfg)
    if "slop" in on and (d := slop_detail(text, cfg, hits)):
        return None, "slop", d, 0
    return text, None, note, sum(hits.values())


def filter_documents(
    docs: Iterable[Mapping[str, Any]], genres: Mapping[str, GenreLike], cfg: QualityConfig | None = None
) -> QualityResult:
    """Run ``check_document`` over documents. Kept ones are copies with the (possibly stripped) text;
    counts has input, kept, meta_stripped, unknown_genre and one entry per rejection reason."""
    return _filter(docs, genres, cfg or QualityConfig())[0]


def _filter(docs: Iterable[Mapping[str, Any]], genres: Mapping[str, GenreLike], cfg: QualityConfig
            ) -> tuple[QualityResult, list[int]]:
    """`filter_documents`, plus the slop hits of each kept document."""
    kept: list[dict[str, Any]] = []
    slop: list[int] = []
    rejected: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    for doc in docs:
        counts["input"] += 1
        genre = genres.get(str(doc.get("genre")))
        if genre is None:
            counts["unknown_genre"] += 1
        text, reason, detail, hits = _check(doc, genre, cfg)
        if reason is not None:
            counts[reason] += 1
            rejected.append(reject_row(doc, "quality", reason, detail))
            continue
        if text != doc.get("text"):
            counts["meta_stripped"] += 1
        kept.append({**doc, "text": text})
        slop.append(hits)
    counts["kept"] = len(kept)
    return QualityResult(kept, rejected, dict(counts)), slop


class QualityFilter:
    """The heuristic rules as a step; kept documents gain `quality_score` (1 - slop density, 0-1),
    the tie-breaker dedup keeps by when there is no judge."""

    stage = "quality"

    def __init__(self, genres: Mapping[str, GenreLike], cfg: QualityConfig) -> None:
        self.genres, self.cfg = genres, cfg

    def __call__(self, batch: list[dict[str, Any]]) -> StepResult:
        result, slop = _filter(batch, self.genres, self.cfg)
        kept = []
        for doc, hits in zip(result.kept, slop, strict=True):
            words = max(1, len(doc["text"].split()))
            slop_per_1k = hits * 1000 / words
            score = max(0.0, 1.0 - slop_per_1k / self.cfg.slop_max_per_1k)
            kept.append({**doc, "quality_score": round(score, 4), "judge_score": None})
        return StepResult(kept, result.rejected)
