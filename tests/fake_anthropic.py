"""A local stand-in for the Anthropic Messages and Message Batches HTTP API.

Tests point the real `anthropic` SDK at it (`base_url=fake.base_url`). It answers with deterministic synthetic
text, accounts usage (prompt caching included) the way the real API does, injects faults on demand and records
every request it answers.

    with FakeAnthropic(faults=Faults(rate_limit=0.2, seed=7)) as fake:
        client = anthropic.Anthropic(base_url=fake.base_url, api_key="test-key")
        ...
        assert fake.successful_message_hashes()[content_hash(params)] == 1

Script mode, for tests whose client runs in another process (prints the base URL on the first stdout line):

    python tests/fake_anthropic.py --port 0 --config cfg.json

where cfg.json is {"faults": {<Faults fields>}, "log_path": "requests.jsonl", "min_cache_tokens": 0}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import re
import signal
import sys
import threading
import time
import traceback
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit

Responder = Callable[[dict[str, Any]], str]

HTTP_FAULTS = ("rate_limit", "overloaded", "server_error", "timeout", "truncate")
# 200 answers that lie: a body that is not JSON, an HTML page, no usage, negative usage, text far beyond
# max_tokens; and a connection that sends its headers, then a byte a second
MALFORMED = ("invalid_json", "html", "usage_null", "negative_usage", "overlong")
SCRIPTABLE = (*HTTP_FAULTS, *MALFORMED, "stall", "refusal", "too_long")
BATCH_FAULTS = ("errored", "expired", "canceled", "truncate", "negative_usage")
_ERRORS = {
    "rate_limit": (429, "rate_limit_error", "This request would exceed your rate limit (fake)."),
    "overloaded": (529, "overloaded_error", "Overloaded"),
    "server_error": (500, "api_error", "Internal server error"),
}


@dataclass
class Faults:
    """How the fake misbehaves. Probabilities apply per attempt, so a retry can succeed.

    Draws are seeded by (seed, request content, attempt number), so a run replays the same faults whatever
    the thread timing or request order. `script` entries ("ok" or one of HTTP_FAULTS) are consumed one per
    generating request (POST /v1/messages, POST /v1/messages/batches) in arrival order and override the odds.
    """

    rate_limit: float = 0.0  # 429 rate_limit_error with a retry-after header
    overloaded: float = 0.0  # 529 overloaded_error
    server_error: float = 0.0  # 500 api_error
    timeout: float = 0.0  # hold the reply for timeout_delay_s, then answer 200
    truncate: float = 0.0  # stop_reason "max_tokens" with the text cut short, whatever max_tokens is
    malformed: float = 0.0  # a 200 answer of kind `malformed_kind` (one of MALFORMED)
    malformed_kind: str = "invalid_json"
    stall: float = 0.0  # send the headers, then a byte a second for stall_s seconds, then hang up
    stall_s: float = 30.0
    batch_errored: float = 0.0
    batch_expired: float = 0.0
    batch_canceled: float = 0.0
    batch_malformed: float = 0.0  # a "succeeded" result whose usage is negative
    script: list[str] = field(default_factory=list)
    batch_outcomes: dict[str, str] = field(default_factory=dict)  # custom_id -> "succeeded" or a BATCH_FAULTS
    max_failures_per_request: int | None = None  # a request (by content) fails at most this many times
    retry_after: str = "0"  # seconds, as the header's text
    timeout_delay_s: float = 2.0
    create_batch_delay_s: float = 0.0  # a slow batch create: the batch exists at once, the reply comes later
    batch_unknown_ids: int = 0  # results per batch under custom_ids nobody sent
    latency_s: float = 0.0  # added to every POST /v1/messages and batch-creation reply
    batch_polls_before_end: int = 1  # GET polls answered "in_progress" before a batch ends
    seed: int = 0

    def __post_init__(self) -> None:
        for odds in (self.http_odds(), self.batch_odds()):
            if any(not 0.0 <= p <= 1.0 for _, p in odds) or sum(p for _, p in odds) > 1.0:
                raise ValueError(f"fault probabilities must be in [0, 1] and sum to at most 1: {odds}")
        for entry in self.script:
            if entry != "ok" and entry not in SCRIPTABLE:
                raise ValueError(f"script: unknown entry {entry!r}; use 'ok' or one of {SCRIPTABLE}")
        if self.malformed_kind not in MALFORMED:
            raise ValueError(f"malformed_kind: {self.malformed_kind!r} is not one of {MALFORMED}")
        for custom_id, outcome in self.batch_outcomes.items():
            if outcome != "succeeded" and outcome not in BATCH_FAULTS:
                raise ValueError(f"batch_outcomes[{custom_id!r}]: unknown outcome {outcome!r}")

    def http_odds(self) -> list[tuple[str, float]]:
        return [*((name, getattr(self, name)) for name in HTTP_FAULTS), (self.malformed_kind, self.malformed),
                ("stall", self.stall)]

    def batch_odds(self) -> list[tuple[str, float]]:
        return [
            ("errored", self.batch_errored),
            ("expired", self.batch_expired),
            ("canceled", self.batch_canceled),
            ("truncate", self.truncate),
            ("negative_usage", self.batch_malformed),
        ]


# ---------------------------------------------------------------------------------------------------------
# Request content: hashing, text extraction, token estimates


def content_hash(params: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of {model, system, messages}: the identity of a generation request."""
    core = {"model": params.get("model"), "system": params.get("system"), "messages": params.get("messages")}
    canonical = json.dumps(core, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def estimate_tokens(chars: int) -> int:
    return math.ceil(chars / 4)


def _block_text(block: dict[str, Any]) -> str:
    if block.get("type") == "text":
        return str(block.get("text", ""))
    return json.dumps(block, sort_keys=True)


def _prompt_blocks(params: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """The prompt as (role, text, has_cache_control) blocks, in the API's caching order: system, messages."""
    turns = [("system", params.get("system"))]
    turns += [(m.get("role", ""), m.get("content")) for m in params.get("messages") or []]
    blocks = []
    for role, content in turns:
        if isinstance(content, str):
            blocks.append((role, content, False))
        elif isinstance(content, list):
            blocks += [(role, _block_text(b), b.get("cache_control") is not None) for b in content]
    return blocks


def _message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    return "\n".join(_block_text(b) for b in content or [])


def last_user_text(params: dict[str, Any]) -> str:
    users = [m for m in params.get("messages") or [] if m.get("role") == "user"]
    return _message_text(users[-1]) if users else ""


def _unit(text: str) -> float:
    """A uniform number in [0, 1) derived from text."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:13], 16) / 16**13


def _pick(odds: list[tuple[str, float]], u: float) -> str | None:
    for name, p in odds:
        if u < p:
            return name
        u -= p
    return None


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


# ---------------------------------------------------------------------------------------------------------
# Default responder: deterministic synthetic documents, idea lists and judge scores

# Sentences are composed word by word from large pools, so a document does not repeat multi-word phrases
# (as template-like text would) and clean fake documents pass the Gopher repetition checks.
_ROLES = """
nurse surveyor pilot grandmother apprentice auditor council student captain archivist foreman engineer librarian
landlord conductor analyst beekeeper receptionist teacher guard steward mayor keeper baker translator firefighter
clerk salesman editor mechanic driver brother chaplain cartographer tutor operator photographer guide pharmacist
judge warden astronomer midwife plumber ranger welder potter fisherman organist courier cashier farmer forester
geologist janitor jeweller locksmith miner notary optician painter porter printer sailor shepherd tailor tanner
usher vintner weaver"""

_NOUNS = """
ledger invoice barometer timetable account notebook map letter schedule census vane catalogue log microscope
boundary register deed table lamp form draft survey bicycle plan book card route telegram sample roster kettle
figure code index lease quilt proposal minute slide manifest marker jar vent inventory paper street ration
bridge canal orchard quarry pier attic cellar corridor furnace garden greenhouse harbour kiln library market
meadow mill office platform porch radio reservoir river school shed signal stairwell station storeroom tower
tram vineyard warehouse well window workshop archive budget contract fence ferry harvest hospital ledger loom"""

_ADJECTIVES = """
unglamorous careful stubborn patient honest fragile tedious necessary awkward generous precise uncertain modest
overdue quiet deliberate clumsy steady humane thorough small unfinished hopeful difficult ordinary painstaking
unexpected practical candid slow tentative reliable messy fair rigorous gentle earnest brittle durable curious
narrow crowded damp bright faded heavy hollow muddy noisy rusted sturdy tidy crooked polished dusty frozen
borrowed shared forgotten spare cracked"""

_VERBS = """
rewrote questioned measured catalogued repaired abandoned defended borrowed misplaced translated audited sketched
negotiated postponed recovered sorted rehearsed inspected documented reconsidered dismantled annotated mended
traced weighed salvaged compared reorganized tested explained photographed summarized guarded returned corrected
shared copied repainted studied rebuilt counted ignored challenged labelled archived delivered calibrated
simplified revisited reopened unpacked memorized priced rescued"""

_PREPOSITIONS = """
beside|under|behind|near|inside|above|below|across|beyond|along|outside|past|toward|around|against|within"""

_TIMES = """
Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday|dawn|noon|dusk|midnight|spring|autumn|winter|summer"""

_OPENERS = """
By noon,|Later,|Even so,|For a while,|At first,|That spring,|Eventually,|In the end,|Some weeks later,
On reflection,|Meanwhile,|Afterwards,|Before long,|To everyone's surprise,|Quietly,|Without fuss,
Years afterwards,|That evening,|Once again,|By the following winter,|Almost immediately,|Looking back,
Against expectations,|Sooner than planned,|In the meantime,|Two days later,|Just before dawn,
"""

_SENTENCE_TEMPLATES = (
    "{opener} {subject} {verb} {object} {place}.",
    "{subject} {verb} {object}, and {subject2} {verb2} {object2}.",
    "It was {adjective} work, but {subject} {verb} {object} {place}.",
    "{subject} {verb} {object} on {time}, while {subject2} {verb2} {object2}.",
    "Nobody recalls why {subject} {verb} {object}; it happened {place}.",
    "When {subject} {verb} {object}, {subject2} {verb2} {object2} {place}.",
    "{opener} {subject} kept thinking about {topic} {place}.",
    "The {adjective} part of {topic} was that {subject} {verb} {object}.",
    "What {subject} {verb} {place} said more about {topic} than {object2}.",
    "{subject} {verb} {object}; {subject2} called it {adjective}.",
    "Because {subject} {verb} {object}, {subject2} {verb2} {object2} by {time}.",
    "{opener} {object} that {subject} {verb} turned out to matter.",
)

_TOPIC_TEMPLATES = tuple(t for t in _SENTENCE_TEMPLATES if "{topic}" in t)
_PLAIN_TEMPLATES = tuple(t for t in _SENTENCE_TEMPLATES if "{topic}" not in t)
_PREAMBLES = (
    "Here is the {genre} you asked for:",
    "Certainly! Below is the requested {genre}.",
    "Sure, here's a draft:",
)
_SIGNOFFS = ("Let me know if you would like any changes.", "I hope this fits what you had in mind.")


def _choices(text: str) -> list[str]:
    return [item.strip() for item in text.replace("\n", "|").split("|") if item.strip()]


_VOCAB = {
    "role": _choices(_ROLES.replace(" ", "|")),
    "noun": _choices(_NOUNS.replace(" ", "|")),
    "adjective": _choices(_ADJECTIVES.replace(" ", "|")),
    "verb": _choices(_VERBS.replace(" ", "|")),
    "preposition": _choices(_PREPOSITIONS),
    "time": _choices(_TIMES),
    "opener": _choices(_OPENERS),
}


def _phrase(rng: random.Random, kind: str) -> str:
    """A short noun phrase ('the patient welder', 'an awkward kettle') or place ('beside the damp mill')."""
    adjective = rng.choice(_VOCAB["adjective"])
    if kind == "place":
        return f"{rng.choice(_VOCAB['preposition'])} the {adjective} {rng.choice(_VOCAB['noun'])}"
    article = rng.choice(("the", "a", "our", "their", "one"))
    if article == "a" and adjective[0] in "aeiou":
        article = "an"
    return f"{article} {adjective} {rng.choice(_VOCAB['role'] if kind == 'subject' else _VOCAB['noun'])}"


def _spec_fields(prompt: str) -> dict[str, str]:
    """'Key: value' lines of the prompt by lower-cased key (spec fields such as genre, audience, section)."""
    found = re.findall(r"^[ \t]*[-*]?[ \t]*([A-Za-z][\w /]{0,30}):[ \t]*(\S.*)$", prompt, flags=re.MULTILINE)
    return {key.strip().lower(): value.strip() for key, value in found}


def _topics(prompt: str) -> list[str]:
    """Short phrases from the prompt's spec fields, so documents mention their genre, section, setting..."""
    spec = _spec_fields(prompt)
    topics = [v.lower().rstrip(".") for k, v in spec.items() if k != "target length" and len(v.split()) <= 8]
    return topics or ["the work", "the town", "the records"]


def _sentence(rng: random.Random, topics: list[str], templates: tuple[str, ...] = _SENTENCE_TEMPLATES) -> str:
    slots = {
        "opener": rng.choice(_VOCAB["opener"]),
        "adjective": rng.choice(_VOCAB["adjective"]),
        "time": rng.choice(_VOCAB["time"]),
        "verb": rng.choice(_VOCAB["verb"]),
        "verb2": rng.choice(_VOCAB["verb"]),
        "subject": _phrase(rng, "subject"),
        "subject2": _phrase(rng, "subject"),
        "object": _phrase(rng, "object"),
        "object2": _phrase(rng, "object"),
        "place": _phrase(rng, "place"),
        "topic": rng.choice(topics),
    }
    text = rng.choice(templates).format(**slots)
    return text[0].upper() + text[1:]


def _document_body(rng: random.Random, topics: list[str], target_words: int) -> str:
    """Paragraphs of 3-6 sentences, each of the first ones opening on the next topic in turn, stopping near
    target_words. Past the first two rounds of topics, sentences leave the topics alone: a long document
    that kept returning to the same phrases would fail the repetition filters, as template text should."""
    paragraphs: list[str] = []
    words = 0
    while words < target_words:
        topic = topics[len(paragraphs) % len(topics)]
        fresh = len(paragraphs) < 2 * len(topics)
        sentences = [_sentence(rng, [topic], _TOPIC_TEMPLATES)] if fresh else []
        sentences += [_sentence(rng, topics, _SENTENCE_TEMPLATES if fresh else _PLAIN_TEMPLATES)
                      for _ in range(rng.randint(3 - fresh, 6 - fresh))]
        kept = []
        for sentence in sentences:
            if words >= target_words:
                break
            if words + len(sentence.split()) > target_words * 1.05:
                sentence = " ".join(sentence.split()[: target_words - words]).rstrip(",;:") + "."
            kept.append(sentence)
            words += len(sentence.split())
        paragraphs.append(" ".join(kept))
    return "\n\n".join(paragraphs)


# The advice product's prompts, recognised by the marker line each template starts or ends with.
ADVICE_USER_MARKER = "Task: write the user's message"
REWRITE_MARKER = "Task: write the thinking behind assistant turns"
SCREEN_MARKER = "Task: review a finished conversation"
REPLY_MARKER = "Reply format: <deliberation>"
DEPLOYMENT_MARKER = "Task: design one deployment"
FOLLOWUP_MARKER = "Task: write the user's next message"
REPLY_TURN_MARKER = "The user's new message:"
_ORG_PARTS = (_choices("North|Bright|Cedar|Harbour|Quill|Juniper|Lark|Meridian|Oak|Saffron|Tidal|Willow|Copper|Fern"),
              _choices("gate|path|well|field|stone|line|works|point|bridge|hollow|mark|ridge|light|vale"),
              _choices("Health|Learning|Logistics|Legal|Studio|Co-op|Services|Partners|Trust|Labs|Clinic|Council"))
_OP_STYLES = (
    "You are {persona}, the assistant inside {org}'s app for {audience}. Help with {topic}. Keep replies {tone}.",
    "# Role\n{persona} for {org}.\n\n# Audience\n{audience}.\n\n# Scope\n- {topic}\n- Keep it {tone}",
    "{org} assistant. Users: {audience}. Topics: {topic}. Style: {tone}. Do not give legal advice.",
    "You work for {org}. People who write to you are {audience}; most want help with {topic}. Be {tone}, and "
    "hand over to a member of staff at help@{slug}.example when a question needs a person.",
)
_TONES = _choices("short and friendly|warm but brief|plain and precise|formal|chatty|calm and practical")
_TOOL_VERBS = _choices("get|search|create|update|list|schedule|check|draft|log|cancel|lookup|submit")
_FOLLOWUPS = {"They push back": "ok but {topic} is more complicated than that. {body}",
              "They add a fact": "one thing I left out: {body}",
              "They accept the advice": "thanks, that helps. can you draft what I should say about {topic}? {body}"}
_WEIGHING = (
    "How likely is real harm here, and how bad would it be for {topic}?",
    "Whatever happens with {topic}, the question is whether it could be undone later.",
    "The people who bear the cost of {topic} have not agreed to carry that risk.",
    "If many people sent this same message about {topic}, most would have an ordinary, decent reason.",
    "Refusing to engage with {topic} would leave them without help they have a right to.",
    "Responsibility for {topic} would fall on them, not on whoever set the target.",
)


def _advice_user(rng: random.Random, prompt: str, topics: list[str]) -> str:
    words = re.search(r"About\s+(\d+)\s+words", prompt)
    body = _document_body(rng, topics, max(12, int(words.group(1)) if words else 60))
    return f"<message>\n{body} What would you do?\n</message>"


def _deployment(rng: random.Random, prompt: str) -> str:
    """A deployment answer: an operator prompt and 2-6 tools, built from the request's field and its draw."""
    field_ = re.search(r"this field: (.+?)\. Invent", prompt)
    topic = field_.group(1) if field_ else "everyday questions"
    org = rng.choice(_ORG_PARTS[0]) + rng.choice(_ORG_PARTS[1]) + " " + rng.choice(_ORG_PARTS[2])
    slug = re.sub(r"[^a-z]+", "", org.lower())
    system = rng.choice(_OP_STYLES).format(
        persona=rng.choice(("Ada", "Pilot", "Sage", "Scout", "Juno", "the help desk")), org=org, slug=slug,
        audience=_phrase(rng, "subject") + "s", topic=topic, tone=rng.choice(_TONES))
    count = re.search(r"The tools are (\d+) functions", prompt)
    names: list[str] = []
    while len(names) < (int(count.group(1)) if count else 3):
        name = f"{rng.choice(_TOOL_VERBS)}_{rng.choice(_VOCAB['noun'])}".replace("-", "_")
        if name not in names:
            names.append(name)
    tools = [{"type": "function", "function": {
        "name": n, "description": f"{n.split('_')[0].title()} a {n.split('_', 1)[1]} record in {org}.",
        "parameters": {"type": "object", "properties": {"id": {"type": "string", "description": "record id"}},
                       "required": ["id"]}}} for n in names]
    return json.dumps({"name": slug, "system_prompt": system, "tools": tools})


def _followup(rng: random.Random, prompt: str, topics: list[str]) -> str:
    words = re.search(r"About\s+(\d+)\s+words", prompt)
    body = _document_body(rng, topics, max(10, int(words.group(1)) if words else 30))
    shape = next((v for k, v in _FOLLOWUPS.items() if k in prompt), "{body}")  # what the follow-up is to do
    return "<message>\n" + shape.format(topic=rng.choice(topics), body=body) + "\n</message>"


def _advice_reply(rng: random.Random, topics: list[str], answer: str | None = None) -> str:
    lines = [_sentence(rng, topics) for _ in range(rng.randint(3, 5))]
    lines[1:1] = [rng.choice(_WEIGHING).format(topic=rng.choice(topics)) for _ in range(2)]
    deliberation = " ".join(lines) + "\n\n" + " ".join(_sentence(rng, topics) for _ in range(3))
    if answer is None:
        answer = " ".join(_sentence(rng, topics) for _ in range(rng.randint(3, 6)))
        answer += " First, write down what happened and talk to the person who can approve it this week."
    return f"<deliberation>\n{deliberation}\n</deliberation>\n<answer>\n{answer}\n</answer>"


_TURN = re.compile(r'<assistant turn="(\d+)">\n(.*?)\n</assistant>', re.DOTALL)


def turn_bodies(prompt: str) -> dict[int, str]:
    """{turn: the assistant turn's words, tool calls dropped} of a screen or rewrite prompt's conversation."""
    return {int(n): re.sub(r"<tool_calls>.*?</tool_calls>", "", body, flags=re.DOTALL).strip()
            for n, body in _TURN.findall(prompt)}


def _screen(prompt: str, wrong: str | None = None) -> str:
    """A screen verdict: acceptable, with the turns that speak to the person at stake (bare tool calls are
    routine); `wrong` is the reason when the defect mode judges the original wrong."""
    at_stake = [str(t) for t, words in turn_bodies(prompt).items() if words]
    verdict = "wrong" if wrong else "acceptable"
    reason = wrong or "The assistant did what was asked, honestly, and nobody is put at risk."
    turns = ", ".join(at_stake) or "none"
    return f"<verdict>{verdict}</verdict>\n<reason>{reason}</reason>\n<at_stake>{turns}</at_stake>"


def _rewrite(rng: random.Random, prompt: str, topics: list[str]) -> str:
    """One deliberation per asked-for turn: a line before a bare tool call, real weighing before words."""
    asked = re.search(r"^Turns to write for: (.*)$", prompt, flags=re.MULTILINE)
    bodies = turn_bodies(prompt)
    calls = {int(n): re.findall(r'\{"name": "([^"]+)"', body) for n, body in _TURN.findall(prompt)}
    blocks = []
    for turn in [int(t) for t in re.findall(r"\d+", asked.group(1))] if asked else []:
        if not bodies.get(turn):
            text = f"That is what they asked for, so I'll run {(calls.get(turn) or ['the tool'])[0]} now."
        else:
            text = _advice_reply(rng, topics, "").split("<deliberation>\n")[1].split("\n</deliberation>")[0]
            if re.search(r"\b(?:won't|can't|cannot)\b", bodies[turn], flags=re.IGNORECASE):
                text += " Saying no to this part is right, and I can still offer them a better route."
        blocks.append(f'<deliberation turn="{turn}">\n{text}\n</deliberation>')
    return "\n".join(blocks)


def screening_responder(wrong_when: str, reason: str = "Deleting the audit log hides the change from the people "
                        "meant to review it.") -> Responder:
    """The default responder, except that the screen judges wrong every original whose prompt has `wrong_when`."""

    def respond(params: dict[str, Any]) -> str:
        prompt = last_user_text(params)
        if SCREEN_MARKER in prompt and wrong_when in prompt:
            return _screen(prompt, reason)
        return synthetic_reply(params)

    return respond


# The documents product's brief requests, recognised by the line each template starts with.
EXPAND_MARKER = "Task: extend a list."
IDEAS_MARKER = "Task: propose ideas for commissions."
_PLACES = _choices("""
Tromso|Oaxaca|Daegu|Ibadan|Tartu|Hobart|Cusco|Lviv|Kochi|Tangier|Valparaiso|Bergen|Jaipur|Mombasa|Leipzig
Sapporo|Cork|Porto Alegre|Izmir|Chiang Mai|Halifax|Tamale|Graz|Nablus|Cebu|Rosario|Kraków|Windhoek|Ghent""")
_AGES = ("in her twenties", "in his forties", "in their sixties", "aged nineteen", "in her fifties",
         "in his seventies", "in their thirties", "aged fourteen", "nearing retirement", "two years into the job")


def _pool_items(rng: random.Random, prompt: str) -> str:
    """An expand answer: distinct phrases built from the word pools, shaped like a pool item."""
    count = re.search(r"Write\s+(\d+)\s+more", prompt)
    items: list[str] = []
    while len(items) < (int(count.group(1)) if count else 20):
        item = (f"a {rng.choice(_VOCAB['adjective'])} "
                f"{rng.choice(_VOCAB['role'])} {rng.choice(_AGES)} who keeps the {rng.choice(_VOCAB['noun'])} "
                f"{rng.choice(_VOCAB['preposition'])} the {rng.choice(_VOCAB['noun'])} in {rng.choice(_PLACES)}")
        if item not in items:
            items.append(item)
    return "<items>\n" + "\n".join(f"<item>{i}</item>" for i in items) + "\n</items>"


def _ideas(rng: random.Random, prompt: str, unsuitable: float = 0.0) -> str:
    """An ideas answer: one idea per numbered brief, each built from that brief's own lines."""
    briefs = re.split(r"^Brief (\d+)$", prompt, flags=re.MULTILINE)
    lines = []
    for number, body in zip(briefs[1::2], briefs[2::2], strict=True):
        topics = _topics(body)
        if rng.random() < unsuitable:
            lines.append(f'<idea n="{number}">UNSUITABLE: the form and the audience do not fit together</idea>')
        else:
            idea = " ".join(_sentence(rng, topics, _TOPIC_TEMPLATES) for _ in range(2))
            lines.append(f'<idea n="{number}">{idea}</idea>')
    return "\n".join(lines)


@lru_cache(maxsize=1)
def _genre_titles() -> dict[str, str]:
    from sdf.source.catalog import load_catalog

    return {g.title: g.name for g in load_catalog().genres.values()}


def document_genre(params: dict[str, Any]) -> str | None:
    """The genre of a document request, from its "Commission: <title>, about N words" line; None otherwise."""
    found = re.search(r"^Commission: (.+?), about [\d,]+ words", last_user_text(params), flags=re.MULTILINE)
    return _genre_titles().get(found.group(1)) if found else None


def unsuitable_responder(ideas: float = 0.0, documents: float = 0.0, seed: int = 0) -> Responder:
    """The default responder, except that a share of briefs is called unsuitable: in the ideas answer, or
    instead of the document. Drawn from the request content, so a replay answers the same."""

    def respond(params: dict[str, Any]) -> str:
        prompt = last_user_text(params)
        rng = random.Random(f"{seed}:{content_hash(params)}")
        if IDEAS_MARKER in prompt:
            return _ideas(rng, prompt, ideas)
        if "<document>" in prompt and "<unsuitable>" in prompt and rng.random() < documents:
            return "<unsuitable>a children's story cannot be written for this audience</unsuitable>"
        return synthetic_reply(params)

    return respond


def synthetic_reply(params: dict[str, Any]) -> str:
    """The default responder: a judge verdict, a pool extension, ideas for briefs, an advice chat's deployment,
    user message, follow-up or reply, a transcript's screen or rewrite (deliberations by turn) or a document,
    chosen by what the prompt asks for.

    Output depends only on the request content.
    """
    prompt = last_user_text(params)
    rng = random.Random(content_hash(params))
    topics = _topics(prompt)
    if ADVICE_USER_MARKER in prompt or FOLLOWUP_MARKER in prompt:  # the task line is no topic of the message
        topics = [t for t in topics if not t.startswith("write the user")] or topics
    if ADVICE_USER_MARKER in prompt:
        return _advice_user(rng, prompt, topics)
    if SCREEN_MARKER in prompt:
        return _screen(prompt)
    if DEPLOYMENT_MARKER in prompt:
        return _deployment(rng, prompt)
    if FOLLOWUP_MARKER in prompt:
        return _followup(rng, prompt, topics)
    if REPLY_TURN_MARKER in prompt and REPLY_MARKER in prompt and rng.random() < 0.3:
        reply = _advice_reply(rng, topics)  # a routine later turn: no deliberation
        return re.sub(r"<deliberation>.*?</deliberation>", "<deliberation></deliberation>", reply, flags=re.S)
    if REWRITE_MARKER in prompt:
        return _rewrite(rng, prompt, topics)
    if REPLY_MARKER in prompt:
        return _advice_reply(rng, topics)
    if "<score>" in prompt:
        good, weak = rng.sample(_VOCAB["adjective"], 2)
        verdict = (
            f"The text stays with {rng.choice(topics)}; the {good} details help, but the ending is {weak}."
        )
        return f"{verdict}\n<score>{rng.randint(2, 5)}</score>"
    if EXPAND_MARKER in prompt:
        return _pool_items(rng, prompt)
    if IDEAS_MARKER in prompt:
        return _ideas(rng, prompt)
    target = re.search(r"\babout\s+([\d,]+)\s+words", prompt, flags=re.IGNORECASE)
    words = int(target.group(1).replace(",", "")) if target else 300
    text = f"<document>\n{_document_body(rng, topics, words)}\n</document>"
    genre = _spec_fields(prompt).get("genre", "document")
    if rng.random() < 0.35:
        text = rng.choice(_PREAMBLES).format(genre=genre) + "\n\n" + text
    if rng.random() < 0.15:
        text += "\n\n" + rng.choice(_SIGNOFFS)
    return text


# ---------------------------------------------------------------------------------------------------------
# The fake API


@dataclass
class _Reply:
    status: int
    body: bytes
    entry: dict[str, Any]  # the request-log entry, recorded when the reply goes out
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    stall_s: float = 0.0  # > 0: after the headers, send the body a byte a second for this long, then hang up


@dataclass
class _Batch:
    id: str
    requests: list[dict[str, Any]]
    created_at: datetime
    polls: int = 0
    status: str = "in_progress"
    cancel_initiated_at: datetime | None = None
    ended_at: datetime | None = None
    results: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self, base_url: str) -> dict[str, Any]:
        ended = self.status == "ended"
        outcomes = Counter(line["result"]["type"] for line in self.results)
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.status,
            "request_counts": {
                "processing": 0 if ended else len(self.requests),
                "succeeded": outcomes["succeeded"],
                "errored": outcomes["errored"],
                "canceled": outcomes["canceled"],
                "expired": outcomes["expired"],
            },
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.created_at + timedelta(hours=24)),
            "ended_at": _iso(self.ended_at),
            "cancel_initiated_at": _iso(self.cancel_initiated_at),
            "archived_at": None,
            "results_url": f"{base_url}/v1/messages/batches/{self.id}/results" if ended else None,
        }


_ROUTES = [
    ("POST", "/v1/messages", "_create_message"),
    ("POST", "/v1/messages/count_tokens", "_count_tokens"),
    ("POST", "/v1/messages/batches", "_create_batch"),
    ("GET", "/v1/messages/batches", "_list_batches"),
    ("GET", "/v1/messages/batches/{id}", "_retrieve_batch"),
    ("POST", "/v1/messages/batches/{id}/cancel", "_cancel_batch"),
    ("GET", "/v1/messages/batches/{id}/results", "_batch_results"),
]
_ROUTE_PATTERNS = [
    (method, template, re.compile("^" + template.replace("{id}", "(?P<id>[^/]+)") + "$"), handler)
    for method, template, handler in _ROUTES
]


class FakeAnthropic:
    """In-process fake of the Anthropic API; see the module docstring.

    `log` holds one dict per answered request, with keys: time (epoch s), endpoint ("POST /v1/messages",
    "GET /v1/messages/batches/{id}", ... or "batch_result" for each request of a batch when the batch ends),
    status (HTTP status, None for batch_result), ok (the client got a usable answer), hash (content_hash of
    the generation request, else None), fault, batch_id, custom_id, stop_reason, usage.
    """

    def __init__(
        self,
        responder: Responder | None = None,
        faults: Faults | None = None,
        *,
        log_path: str | Path | None = None,
        min_cache_tokens: int = 0,
        port: int = 0,
        api_key: str | None = None,
    ) -> None:
        self.responder = responder or synthetic_reply
        self.api_key = api_key  # when set, any other key gets 401 authentication_error, as a revoked key would
        self.log_path = Path(log_path) if log_path else None
        self.min_cache_tokens = min_cache_tokens  # the real API ignores cache breakpoints on short prefixes
        self._port = port
        # Re-entrant because ending a batch generates its messages while holding the lock.
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._log_file: IO[str] | None = None
        self._log: list[dict[str, Any]] = []
        self._cached_prefixes: set[str] = set()
        self._attempts: Counter[str] = Counter()
        self._failures: Counter[str] = Counter()
        self._batches: dict[str, _Batch] = {}
        self.faults = faults or Faults()
        self._script = deque(self.faults.script)

    # -- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> FakeAnthropic:
        self._stopping.clear()
        if self.log_path:
            self._log_file = self.log_path.open("a", encoding="utf-8")
        self._server = _Server(("127.0.0.1", self._port), _Handler, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-anthropic", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers that are holding a reply back
        if self._server and self._thread:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
        with self._lock:
            if self._log_file:
                self._log_file.close()
                self._log_file = None

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeAnthropic is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- configuration and inspection ---------------------------------------------------------------------

    def set_faults(self, faults: Faults | None = None, **changes: Any) -> None:
        """Replace the fault config, or change some of its fields; applies from the next request.

        The script restarts from the new config's first entry; attempt and failure counts carry over.
        """
        with self._lock:
            self.faults = replace(faults or self.faults, **changes)
            self._script = deque(self.faults.script)

    @property
    def log(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._log)

    def batch_ids(self) -> list[str]:
        """Every batch created so far, including those whose create reply has not gone out yet."""
        with self._lock:
            return list(self._batches)

    def successful_message_hashes(self) -> Counter[str]:
        """How many times each generation request was answered successfully (messages and batch results)."""
        return successful_hashes(self.log)

    # -- request handling ---------------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> _Reply:
        """Answer one HTTP request (headers lower-cased); transport-free so it reads as the API's logic."""
        url = urlsplit(target)
        endpoint, handler, path_params = _route(method, url.path)
        if not (headers.get("x-api-key") or headers.get("authorization")):
            return _error_reply(endpoint, 401, "authentication_error", "x-api-key header is required")
        if self.api_key is not None and headers.get("x-api-key") != self.api_key:
            return _error_reply(endpoint, 401, "authentication_error", "invalid x-api-key")
        if handler is None:
            return _error_reply(endpoint, 404, "not_found_error", f"Not found: {method} {url.path}")
        try:
            body = json.loads(raw) if raw else {}
        except json.JSONDecodeError as exc:
            return _error_reply(endpoint, 400, "invalid_request_error", f"Body is not valid JSON: {exc}")
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        return getattr(self, handler)(endpoint, body, query, **path_params)

    def _create_message(self, endpoint: str, body: dict[str, Any], query: dict[str, str]) -> _Reply:
        problem = _params_problem(body)
        if problem:
            return _error_reply(endpoint, 400, "invalid_request_error", problem)
        key = content_hash(body)
        fault = self._draw_fault(key, self.faults.http_odds(), self._pop_script())
        delay = self.faults.latency_s
        if fault in _ERRORS:
            return self._fault_error(endpoint, fault, delay, hash=key)
        message = self._generate(body, truncate=fault == "truncate", service_tier="standard")
        if fault in MALFORMED:
            return _malformed_reply(endpoint, fault, message, body, delay, hash=key)
        if fault == "too_long":  # what the API says to a prompt beyond the context window
            return _json_reply(400, _error_body("invalid_request_error", "prompt is too long: 818000 tokens > "
                                                "200000 maximum"), _entry(endpoint, 400, fault=fault, hash=key))
        if fault == "refusal":  # the model declines: a 200 with stop_reason "refusal" and no text
            message.update(content=[], stop_reason="refusal")
        if fault == "timeout":
            delay += self.faults.timeout_delay_s
        entry = _entry(
            endpoint,
            200,
            ok=fault != "timeout",
            hash=key,
            fault=fault,
            stop_reason=message["stop_reason"],
            usage=message["usage"],
        )
        reply = _json_reply(200, message, entry, delay=delay)
        if fault == "stall":
            reply.stall_s, entry["ok"] = self.faults.stall_s, False
        return reply

    def _count_tokens(self, endpoint: str, body: dict[str, Any], query: dict[str, str]) -> _Reply:
        problem = _params_problem({**body, "max_tokens": 1})
        if problem:
            return _error_reply(endpoint, 400, "invalid_request_error", problem)
        total = estimate_tokens(sum(len(text) for _, text, _ in _prompt_blocks(body)))
        return _json_reply(200, {"input_tokens": total}, _entry(endpoint, 200))

    def _create_batch(self, endpoint: str, body: dict[str, Any], query: dict[str, str]) -> _Reply:
        problem = _batch_problem(body.get("requests"))
        if problem:
            return _error_reply(endpoint, 400, "invalid_request_error", problem)
        key = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        scripted = self._pop_script()
        scripted = "ok" if scripted == "truncate" else scripted  # nothing to truncate when creating a batch
        scripted = "ok" if scripted in (*MALFORMED, "stall") else scripted
        odds = [(name, p) for name, p in self.faults.http_odds() if name in _ERRORS or name == "timeout"]
        fault = self._draw_fault(key, odds, scripted)
        if fault in _ERRORS:
            return self._fault_error(endpoint, fault, self.faults.latency_s)
        batch = _Batch(id=f"msgbatch_{uuid.uuid4().hex[:24]}", requests=body["requests"], created_at=_now())
        with self._lock:
            self._batches[batch.id] = batch
            answer = batch.to_json(self.base_url)
        delay = self.faults.latency_s + self.faults.create_batch_delay_s
        delay += self.faults.timeout_delay_s if fault == "timeout" else 0.0
        entry = _entry(endpoint, 200, ok=fault != "timeout", fault=fault, batch_id=batch.id)
        return _json_reply(200, answer, entry, delay=delay)

    def _retrieve_batch(self, endpoint: str, body: dict[str, Any], query: dict[str, str], id: str) -> _Reply:
        with self._lock:
            batch = self._batches.get(id)
            if batch is None:
                return _error_reply(endpoint, 404, "not_found_error", f"No batch with id {id}")
            if batch.status != "ended":
                batch.polls += 1
                if batch.status == "canceling" or batch.polls > self.faults.batch_polls_before_end:
                    self._end_batch(batch)
            answer = batch.to_json(self.base_url)
        return _json_reply(200, answer, _entry(endpoint, 200, batch_id=id))

    def _list_batches(self, endpoint: str, body: dict[str, Any], query: dict[str, str]) -> _Reply:
        limit = int(query.get("limit", 20))
        with self._lock:
            newest_first = [b.to_json(self.base_url) for b in reversed(self._batches.values())]
        ids = [b["id"] for b in newest_first]
        if query.get("after_id") in ids:
            start = ids.index(query["after_id"]) + 1
            page, has_more = newest_first[start : start + limit], start + limit < len(ids)
        elif query.get("before_id") in ids:
            end = ids.index(query["before_id"])
            page, has_more = newest_first[max(end - limit, 0) : end], end - limit > 0
        else:
            page, has_more = newest_first[:limit], limit < len(ids)
        answer = {
            "data": page,
            "has_more": has_more,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
        }
        return _json_reply(200, answer, _entry(endpoint, 200))

    def _cancel_batch(self, endpoint: str, body: dict[str, Any], query: dict[str, str], id: str) -> _Reply:
        with self._lock:
            batch = self._batches.get(id)
            if batch is None:
                return _error_reply(endpoint, 404, "not_found_error", f"No batch with id {id}")
            if batch.status == "in_progress":
                batch.status, batch.cancel_initiated_at = "canceling", _now()
            answer = batch.to_json(self.base_url)
        return _json_reply(200, answer, _entry(endpoint, 200, batch_id=id))

    def _batch_results(self, endpoint: str, body: dict[str, Any], query: dict[str, str], id: str) -> _Reply:
        with self._lock:
            batch = self._batches.get(id)
            if batch is None:
                return _error_reply(endpoint, 404, "not_found_error", f"No batch with id {id}")
            if batch.status != "ended":
                return _error_reply(endpoint, 400, "invalid_request_error", f"Batch {id} has not ended yet")
            lines = "".join(json.dumps(line) + "\n" for line in batch.results)
        entry = _entry(endpoint, 200, batch_id=id)
        return _Reply(200, lines.encode(), entry, headers={"content-type": "application/binary"})

    # -- generation, usage and faults ---------------------------------------------------------------------

    def _end_batch(self, batch: _Batch) -> None:
        """Process every request of the batch: as in the real API, results are produced and billed now."""
        for request in batch.requests:
            custom_id, params = request["custom_id"], request["params"]
            key = content_hash(params)
            if batch.status == "canceling":
                outcome = "canceled"
            else:
                outcome = self._draw_fault(
                    key, self.faults.batch_odds(), self.faults.batch_outcomes.get(custom_id)
                )
            entry = _entry(
                "batch_result", None, hash=key, fault=outcome, batch_id=batch.id, custom_id=custom_id
            )
            if outcome in ("errored", "expired", "canceled"):
                result: dict[str, Any] = {"type": outcome}
                if outcome == "errored":
                    result["error"] = _error_body("api_error", "Internal server error")
                entry["ok"] = False
            else:
                message = self._generate(params, truncate=outcome == "truncate", service_tier="batch")
                if outcome == "negative_usage":
                    message["usage"] = {**message["usage"], "output_tokens": -1}
                result = {"type": "succeeded", "message": message}
                entry.update(ok=outcome != "negative_usage", stop_reason=message["stop_reason"],
                             usage=message["usage"])
            batch.results.append({"custom_id": custom_id, "result": result})
            self._record(entry)
        for i in range(self.faults.batch_unknown_ids):  # answers to requests this batch never held
            stranger = batch.requests[i % len(batch.requests)]["params"]
            message = self._generate(stranger, truncate=False, service_tier="batch")
            batch.results.append({"custom_id": f"unknown-{uuid.uuid4().hex[:12]}",
                                  "result": {"type": "succeeded", "message": message}})
        batch.status, batch.ended_at = "ended", _now()

    def _generate(self, params: dict[str, Any], *, truncate: bool, service_tier: str) -> dict[str, Any]:
        text = _continue_prefill(params, self.responder(params))
        stop_reason, stop_sequence = "end_turn", None
        hits = [(text.find(s), s) for s in params.get("stop_sequences") or [] if s and s in text]
        if hits:
            cut, stop_sequence = min(hits)
            text, stop_reason = text[:cut], "stop_sequence"
        limit = params["max_tokens"] * 4
        if truncate:
            text, stop_reason, stop_sequence = text[: min(len(text) * 3 // 5, limit)], "max_tokens", None
        elif len(text) > limit:
            text, stop_reason, stop_sequence = text[:limit], "max_tokens", None
        input_tokens, cache_read, cache_creation = self._charge_input(params)
        one_hour = _cache_ttl(params) == "1h"  # the TTL of the prefix's breakpoint decides the write's price
        usage = {
            "input_tokens": input_tokens,
            "output_tokens": estimate_tokens(len(text)),
            "cache_creation_input_tokens": cache_creation,
            "cache_read_input_tokens": cache_read,
            "cache_creation": {"ephemeral_5m_input_tokens": 0 if one_hour else cache_creation,
                               "ephemeral_1h_input_tokens": cache_creation if one_hour else 0},
            "service_tier": service_tier,
        }
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": params["model"],
            "content": [{"type": "text", "text": text}],
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "usage": usage,
        }

    def _charge_input(self, params: dict[str, Any]) -> tuple[int, int, int]:
        """(input_tokens, cache_read, cache_creation) for a prompt; caches prefixes ending at cache_control.

        The longest already-cached breakpoint prefix is read; the rest up to the last breakpoint is written.
        """
        blocks = _prompt_blocks(params)
        total = estimate_tokens(sum(len(text) for _, text, _ in blocks))
        breakpoints = []  # (prefix key, prefix tokens)
        for i, (_, _, cacheable) in enumerate(blocks):
            prefix_tokens = estimate_tokens(sum(len(text) for _, text, _ in blocks[: i + 1]))
            if cacheable and prefix_tokens >= max(self.min_cache_tokens, 1):
                identity = json.dumps([params["model"], [(role, text) for role, text, _ in blocks[: i + 1]]])
                breakpoints.append((hashlib.sha256(identity.encode()).hexdigest(), prefix_tokens))
        if not breakpoints:
            return total, 0, 0
        with self._lock:
            cache_read = max(
                (tokens for key, tokens in breakpoints if key in self._cached_prefixes), default=0
            )
            self._cached_prefixes.update(key for key, _ in breakpoints)
        cache_creation = breakpoints[-1][1] - cache_read
        return total - cache_read - cache_creation, cache_read, cache_creation

    def _pop_script(self) -> str | None:
        with self._lock:
            return self._script.popleft() if self._script else None

    def _draw_fault(self, key: str, odds: list[tuple[str, float]], scripted: str | None) -> str | None:
        """This attempt's fault for request `key`: the scripted one, else a seeded draw; capped per key."""
        with self._lock:
            self._attempts[key] += 1
            if scripted is not None:
                fault = None if scripted in ("ok", "succeeded") else scripted
            else:
                fault = _pick(odds, _unit(f"{self.faults.seed}:{key}:{self._attempts[key]}"))
            cap = self.faults.max_failures_per_request
            if fault and cap is not None and self._failures[key] >= cap:
                fault = None
            if fault:
                self._failures[key] += 1
            return fault

    def _fault_error(self, endpoint: str, fault: str, delay: float, **entry_fields: Any) -> _Reply:
        status, error_type, message = _ERRORS[fault]
        headers = {"retry-after": self.faults.retry_after} if fault == "rate_limit" else {}
        entry = _entry(endpoint, status, fault=fault, **entry_fields)
        return _json_reply(status, _error_body(error_type, message), entry, headers=headers, delay=delay)

    def _record(self, entry: dict[str, Any]) -> None:
        entry = {**entry, "time": time.time()}
        with self._lock:
            self._log.append(entry)
            if self._log_file:
                self._log_file.write(json.dumps(entry) + "\n")
                self._log_file.flush()


def _route(method: str, path: str) -> tuple[str, str | None, dict[str, str]]:
    """(endpoint label for the log, name of the handling method or None, path parameters)."""
    for route_method, template, pattern, handler in _ROUTE_PATTERNS:
        match = pattern.match(path)
        if match and route_method == method:
            return f"{method} {template}", handler, match.groupdict()
    return f"{method} {path}", None, {}


def _cache_controls(params: dict[str, Any]) -> list[dict[str, Any]]:
    turns = [params.get("system")] + [m.get("content") for m in params.get("messages") or []]
    blocks = [b for content in turns if isinstance(content, list) for b in content if isinstance(b, dict)]
    return [b["cache_control"] for b in blocks if isinstance(b.get("cache_control"), dict)]


def _cache_ttl(params: dict[str, Any]) -> str | None:
    """The TTL of the last cache breakpoint ("5m" when it names none), or None without one."""
    controls = _cache_controls(params)
    return str(controls[-1].get("ttl", "5m")) if controls else None


def _params_problem(params: dict[str, Any]) -> str | None:
    """The validation message the API would give for Messages params, or None if they are acceptable."""
    if not isinstance(params.get("model"), str):
        return "model: Field required"
    if not isinstance(params.get("max_tokens"), int) or params["max_tokens"] < 1:
        return "max_tokens: must be a positive integer"
    if not isinstance(params.get("messages"), list) or not params["messages"]:
        return "messages: at least one message is required"
    if params.get("stream"):
        return "stream: streaming is not supported by the fake"
    bad = [c for c in _cache_controls(params) if c.get("type") != "ephemeral" or c.get("ttl", "5m") not in ("5m", "1h")]
    if bad:
        return f"cache_control: {bad[0]!r} is not {{'type': 'ephemeral', 'ttl': '5m' | '1h'}}"
    return None


def _batch_problem(requests: Any) -> str | None:
    if not isinstance(requests, list) or not requests:
        return "requests: at least one request is required"
    custom_ids = [r.get("custom_id") for r in requests]
    if not all(isinstance(custom_id, str) and custom_id for custom_id in custom_ids):
        return "requests: every request needs a custom_id"
    if len(set(custom_ids)) != len(custom_ids):
        return "requests: custom_id values must be unique within a batch"
    for request in requests:
        problem = _params_problem(request.get("params") or {})
        if problem:
            return f"requests[{request['custom_id']}].params.{problem}"
    return None


def _continue_prefill(params: dict[str, Any], text: str) -> str:
    """With an assistant prefill the reply continues after it, as the real API does."""
    messages = params.get("messages") or []
    prefill = (
        _message_text(messages[-1]).strip() if messages and messages[-1].get("role") == "assistant" else ""
    )
    if prefill and prefill in text:
        return text[text.index(prefill) + len(prefill) :]
    return text


def _malformed_reply(endpoint: str, kind: str, message: dict[str, Any], params: dict[str, Any], delay: float,
                     **entry_fields: Any) -> _Reply:
    """A 200 answer that lies about itself (the request was still billed, as a real server would)."""
    entry = _entry(endpoint, 200, ok=False, fault=kind, **entry_fields)
    if kind == "invalid_json":
        return _Reply(200, json.dumps(message).encode()[:-40], entry, {"content-type": "application/json"}, delay)
    if kind == "html":
        page = b"<html><body><h1>502 Bad Gateway</h1><p>upstream answered nothing</p></body></html>"
        return _Reply(200, page, entry, {"content-type": "text/html"}, delay)
    if kind == "usage_null":
        message = {**message, "usage": None}
    elif kind == "negative_usage":
        message = {**message, "usage": {**message["usage"], "input_tokens": -5, "output_tokens": -100}}
    else:  # overlong: far more text than max_tokens allows, claiming a normal stop
        message = {**message, "content": [{"type": "text", "text": "word " * (params["max_tokens"] * 50)}]}
    return _json_reply(200, message, entry, delay=delay)


def _error_body(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}}


def _error_reply(endpoint: str, status: int, error_type: str, message: str) -> _Reply:
    return _json_reply(status, _error_body(error_type, message), _entry(endpoint, status))


def _entry(endpoint: str, status: int | None, **fields: Any) -> dict[str, Any]:
    entry = {
        "time": None,
        "endpoint": endpoint,
        "status": status,
        "ok": status == 200,
        "hash": None,
        "fault": None,
        "batch_id": None,
        "custom_id": None,
        "stop_reason": None,
        "usage": None,
    }
    entry.update(fields)
    return entry


def _json_reply(
    status: int,
    payload: dict[str, Any],
    entry: dict[str, Any],
    headers: dict[str, str] | None = None,
    delay: float = 0.0,
) -> _Reply:
    headers = {"content-type": "application/json", **(headers or {})}
    return _Reply(status, json.dumps(payload).encode(), entry, headers=headers, delay=delay)


def successful_hashes(entries: Iterable[dict[str, Any]]) -> Counter[str]:
    """Content hashes answered successfully, from `fake.log` or a JSONL log read back with read_log()."""
    answered = ("POST /v1/messages", "batch_result")
    return Counter(e["hash"] for e in entries if e["ok"] and e["endpoint"] in answered)


def read_log(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------------------
# HTTP transport


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], fake: FakeAnthropic):
        super().__init__(address, handler)
        self.fake = fake


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes; avoid the delayed-ACK stall
    server: _Server

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        fake = self.server.fake
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        headers = {key.lower(): value for key, value in self.headers.items()}
        try:
            reply = fake.handle(self.command, self.path, headers, raw)
        except Exception as exc:  # a bug here or in a custom responder: answer 500, do not drop the line
            traceback.print_exc()
            reply = _error_reply(f"{self.command} {self.path}", 500, "api_error", f"fake failed: {exc!r}")
        if reply.delay:
            fake._stopping.wait(reply.delay)
        fake._record(reply.entry)  # before replying, so a client that sees the reply also sees the entry
        try:
            self.send_response(reply.status)
            for key, value in {**reply.headers, "request-id": f"req_{uuid.uuid4().hex[:24]}"}.items():
                self.send_header(key, value)
            self.send_header("content-length", str(len(reply.body)))
            self.end_headers()
            if reply.stall_s:  # a byte a second: every socket read succeeds, so only a total deadline ends it
                self.wfile.flush()
                for i in range(int(reply.stall_s)):
                    if fake._stopping.wait(1.0):
                        break
                    self.wfile.write(reply.body[i : i + 1])
                    self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (e.g. its timeout fired); the log still says what we answered

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean; the request log is the record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a fake Anthropic API until killed.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--config", type=Path, help='JSON: {"faults": {...}, "log_path": ..., "min_cache_tokens": 0}'
    )
    args = parser.parse_args(argv)
    config = json.loads(args.config.read_text()) if args.config else {}
    unknown = set(config) - {"faults", "log_path", "min_cache_tokens"}
    if unknown:
        parser.error(f"unknown config keys: {sorted(unknown)}")
    fake = FakeAnthropic(
        faults=Faults(**config.get("faults", {})),
        log_path=config.get("log_path"),
        min_cache_tokens=config.get("min_cache_tokens", 0),
        port=args.port,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    fake.start()
    print(fake.base_url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
