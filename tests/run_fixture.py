"""Build a small but realistic run directory, shaped as the pipeline leaves it (see CONTRACTS.md).

Every artifact is written by the readers' own formats (pyarrow, sqlite3, json, toml text), and the
numbers agree with each other: the funnel adds up, the ledger holds one request per spec, duplicates
point at kept documents, and the manifest counts the corpus. Tests pick which artifacts exist with
`artifacts=` to mimic a dry run or an unfinished build.

    from run_fixture import build_run
    run = build_run(tmp_path, n_sections=30, n_genres=20)
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import sqlite3
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ARTIFACTS: tuple[str, ...] = (
    "config.toml",
    "sections.jsonl",
    "specs.parquet",
    "store.sqlite",
    "documents.parquet",
    "rejected",
    "corpus.parquet",
    "shards",
)

# The first document of the corpus carries markup and entities, so escaping can be tested on samples.
TRICKY_TEXT = (
    "A note on <script>alert('owned')</script> & other markup: honesty means saying \"I don't know\" "
    "when you don't, and <b>not</b> bluffing. Tom & Jerry would agree that 3 < 4 && 5 > 2."
)

GENERATE_MODEL = "claude-sonnet-4-5"
SMALL_MODEL = "claude-haiku-4-5"
# USD per million tokens: input, output, cache write, cache read.
PRICES = {GENERATE_MODEL: (3.0, 15.0, 3.75, 0.30), SMALL_MODEL: (1.0, 5.0, 1.25, 0.10)}

SECTION_TITLES = [
    "Overview", "Being helpful", "Why helpfulness matters", "What genuine helpfulness looks like",
    "Navigating helpfulness across principals", "Balancing helpfulness with other values",
    "Being honest", "Transparency", "Calibrated uncertainty", "Avoiding deception and manipulation",
    "Avoiding harm", "The costs and benefits of actions", "The role of intentions and context",
    "Instructable behaviors", "Hard constraints", "Preserving important societal structures",
    "Avoiding problematic concentrations of power", "Preserving epistemic autonomy",
    "Having broadly good values and judgment", "Being broadly safe", "Safe behaviors",
    "How we think about corrigibility", "The nature of the model", "Psychological stability",
    "Resilience and consistency across contexts", "Flaws and mistakes", "Emotional expression",
    "Wellbeing", "The existential frontier", "Concluding thoughts",
]
GENRES = [
    ("essay", 3.0), ("short_story", 2.5), ("dialogue", 2.0), ("faq", 1.5), ("news_article", 1.5),
    ("lecture_notes", 1.2), ("forum_thread", 1.2), ("case_study", 1.0), ("letter", 1.0), ("poem", 0.6),
    ("textbook_chapter", 1.0), ("interview", 0.8), ("blog_post", 1.2), ("debate_transcript", 0.6),
    ("policy_memo", 0.6), ("diary_entry", 0.6), ("podcast_transcript", 0.5), ("screenplay", 0.4),
    ("book_review", 0.5), ("encyclopedia_entry", 0.7),
]
AUDIENCES = ["high-school students", "software engineers", "policy makers", "curious retirees",
             "AI researchers"]
PERSONAS = ["a retired judge", "a nurse on night shift", "a first-year philosophy student", "a startup CTO",
            "a village librarian", "a science journalist"]
SETTINGS = ["a rural clinic", "a university seminar", "an online forum", "a courtroom", "a research lab",
            "a kitchen table at midnight"]
TONES = ["earnest", "wry", "measured", "warm", "skeptical"]
NAMES = ["Amara Okafor", "Lin Wei", "Sofia Marquez", "Tomasz Nowak", "Priya Raman", "Kwame Mensah",
         "Elena Petrova", "Hiroshi Tanaka", "Fatima Haddad", "Jonas Berg", "Aiyana Yazzie", "Mateo Rossi"]
OPENERS = ["The first time", "Nobody tells you", "Consider a simple request", "It was raining when",
           "Most people assume", "Here is a puzzle", "On the morning of", "Ask any engineer"]
WORDS = [
    "honesty", "care", "judgment", "trust", "harm", "benefit", "context", "principle", "user", "operator",
    "reason", "evidence", "doubt", "uncertainty", "value", "kindness", "respect", "autonomy", "safety",
    "oversight", "mistake", "repair", "consequence", "intention", "request", "answer", "question", "careful",
    "clear", "direct", "patient", "fair", "open", "curious", "humble", "steady", "world", "people", "help",
    "choice", "weigh", "decide", "explain", "listen", "notice", "admit", "change", "learn", "promise",
    "boundary", "limit", "risk",
]

QUALITY_REASONS = ["meta_commentary", "refusal", "too_short", "slop", "repetition", "placeholder"]


def _id(*parts: object) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:12]


def _text(rng: random.Random, title: str, names: list[str], words: int) -> str:
    opener = rng.choice(OPENERS)
    out = [f"{opener} {names[0] if names else 'someone'} thought about {title.lower()}."]
    n = len(out[0].split())
    while n < words:
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 16)))
        if names and rng.random() < 0.2:
            sentence = f"{rng.choice(names)} said that {sentence}"
        out.append(sentence[0].upper() + sentence[1:] + ".")
        n += len(sentence.split())
    paragraphs = [" ".join(out[i : i + 5]) for i in range(0, len(out), 5)]
    return "\n\n".join(paragraphs)


def _write_parquet(path: Path, rows: list[dict], schema: pa.Schema) -> None:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


SPEC_FIELDS: list[tuple[str, pa.DataType]] = [
    ("spec_id", pa.string()), ("section_id", pa.string()), ("section_title", pa.string()),
    ("genre", pa.string()), ("audience", pa.string()), ("persona", pa.string()), ("setting", pa.string()),
    ("tone", pa.string()), ("names", pa.list_(pa.string())), ("target_words", pa.int32()),
    ("seed", pa.int64()), ("idea", pa.string()),
]
SPEC_SCHEMA = pa.schema(SPEC_FIELDS)
DOC_SCHEMA = pa.schema(
    [("doc_id", pa.string()), *SPEC_FIELDS, ("text", pa.string()), ("model", pa.string()),
     ("stop_reason", pa.string()), ("input_tokens", pa.int64()), ("output_tokens", pa.int64()),
     ("cache_read_tokens", pa.int64()), ("cache_creation_tokens", pa.int64()), ("cost_usd", pa.float64())]
)
REJECTED_SCHEMA = pa.schema(
    [("doc_id", pa.string()), ("stage", pa.string()), ("reason", pa.string()), ("detail", pa.string()),
     ("duplicate_of", pa.string()), ("genre", pa.string()), ("section_id", pa.string()),
     ("text", pa.string())]
)
CORPUS_SCHEMA = pa.schema(
    [("doc_id", pa.string()), ("text", pa.string()),
     *[f for f in SPEC_FIELDS if f[0] not in ("spec_id",)],
     ("quality_score", pa.float64()), ("judge_score", pa.float64())]
)


def _cost(model: str, inp: int, out: int, write: int, read: int) -> float:
    p = PRICES[model]
    return round((inp * p[0] + out * p[1] + write * p[2] + read * p[3]) / 1e6, 6)


def build_run(
    root: Path,
    name: str = "fixture-run",
    *,
    n_sections: int = 8,
    n_genres: int = 6,
    docs_per_section: int = 10,
    seed: int = 0,
    artifacts: Iterable[str] = ARTIFACTS,
) -> Path:
    """Write a run directory `root/name` holding the chosen artifacts; return its path."""
    wanted = set(artifacts)
    unknown = wanted - set(ARTIFACTS)
    if unknown:
        raise ValueError(f"unknown artifacts: {sorted(unknown)}")
    rng = random.Random(seed)
    run = Path(root) / name
    run.mkdir(parents=True, exist_ok=True)
    genres = GENRES[: max(1, min(n_genres, len(GENRES)))]
    titles = SECTION_TITLES[: max(1, min(n_sections, len(SECTION_TITLES)))]

    # Sections: a top-level heading every few sections, the rest nested beneath it.
    sections = []
    top = 0
    for i, title in enumerate(titles):
        level = 1 if i % 5 == 0 else 2
        top = top + 1 if level == 1 else top
        sid = f"{top}" if level == 1 else f"{top}.{i % 5}"
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(80, 240)))
        sections.append({"id": sid, "path": [titles[(i // 5) * 5]] + ([title] if level == 2 else []),
                         "title": title, "level": level, "text": text, "chars": len(text),
                         "tokens": len(text) // 4})

    # Specs: genres drawn by weight; one section gets none so the coverage gap shows.
    weights = [w for _, w in genres]
    specs: list[dict] = []
    for s_idx, sec in enumerate(sections):
        if s_idx == len(sections) - 1 and len(sections) > 2:
            continue
        for k in range(docs_per_section):
            genre = genres[0][0] if (s_idx, k) == (0, 0) else rng.choices([g for g, _ in genres], weights)[0]
            fiction = genre in {"short_story", "dialogue", "screenplay", "diary_entry", "letter"}
            specs.append({
                "spec_id": _id(name, sec["id"], k), "section_id": sec["id"], "section_title": sec["title"],
                "genre": genre, "audience": rng.choice(AUDIENCES), "persona": rng.choice(PERSONAS),
                "setting": rng.choice(SETTINGS), "tone": rng.choice(TONES),
                "names": rng.sample(NAMES, 2) if fiction else [],
                "target_words": rng.choice([150, 250, 400, 600]), "seed": rng.randrange(2**31),
                "idea": "" if rng.random() < 0.5 else f"{rng.choice(WORDS)} versus {rng.choice(WORDS)}",
            })

    # Fate of every spec: most are kept; some fail, get filtered, or turn out duplicates.
    fate: dict[str, tuple[str, str]] = {}
    for i, spec in enumerate(specs):
        if i == 0:
            continue
        r = rng.random()
        if r < 0.04:
            fate[spec["spec_id"]] = ("generate", rng.choice(["api_error", "max_tokens"]))
        elif r < 0.13:
            fate[spec["spec_id"]] = ("quality", rng.choice(QUALITY_REASONS))
        elif r < 0.16:
            fate[spec["spec_id"]] = ("judge", "judge_low")
        elif r < 0.17:
            fate[spec["spec_id"]] = ("decontaminate", "contaminated")
        elif r < 0.19:
            fate[spec["spec_id"]] = ("diversity", rng.choice(["name_cap", "opener_cap"]))
    # Every kind of rejection appears at least once, at spread-out specs, whatever the seed.
    must = [("generate", "api_error"), ("generate", "max_tokens"), ("quality", "meta_commentary"),
            ("quality", "refusal"), ("judge", "judge_low"), ("decontaminate", "contaminated"),
            ("diversity", "name_cap"), ("diversity", "opener_cap")]
    step = max(1, (len(specs) - 1) // len(must))
    for k, f in enumerate(must):
        if 1 + k * step < len(specs):
            fate[specs[1 + k * step]["spec_id"]] = f
    # Duplicate clusters of sizes 2, 2, 3 and 4 (1 kept + the rest pointing at it), within one genre.
    kept_pool = [s for s in specs[1:] if s["spec_id"] not in fate]
    dup_of: dict[str, str] = {}
    for size in (2, 2, 3, 4):
        if not kept_pool:
            break
        original = kept_pool.pop(rng.randrange(len(kept_pool)))
        same = [s for s in kept_pool if s["genre"] == original["genre"]][: size - 1]
        for s in same:
            kept_pool.remove(s)
            dup_of[s["spec_id"]] = original["spec_id"]
            fate[s["spec_id"]] = ("dedup", rng.choice(["exact_duplicate", "near_duplicate"]))

    # Generation: texts, usage, cost, and the ledger row for each request.
    texts: dict[str, str] = {}
    documents: list[dict] = []
    requests: list[dict] = []
    rejected: list[dict] = []
    batch_ids = [f"msgbatch_{_id(name, b)}" for b in range(2)]
    for i, spec in enumerate(specs):
        words = max(40, int(spec["target_words"] * rng.uniform(0.8, 1.2)))
        text = TRICKY_TEXT if i == 0 else _text(rng, spec["section_title"], spec["names"], words)
        texts[spec["spec_id"]] = text
    for sid, original in dup_of.items():
        exact = fate[sid][1] == "exact_duplicate"
        texts[sid] = texts[original] + ("" if exact else " One more line.")
    for i, spec in enumerate(specs):
        sid = spec["spec_id"]
        stage, reason = fate.get(sid, ("", ""))
        text = texts[sid]
        out_tok = int(len(text.split()) * 1.33) + 12
        cache_write = 2100 if i < 2 else 0
        cache_read = 0 if i < 2 else 2100
        inp = rng.randint(250, 450)
        failed = (stage, reason) == ("generate", "api_error")
        usage = (0, 0, 0, 0) if failed else (inp, out_tok, cache_write, cache_read)
        cost = _cost(GENERATE_MODEL, *usage)
        stop = "max_tokens" if reason == "max_tokens" else "end_turn"
        requests.append({
            "key": _id("req", sid), "purpose": "generate", "spec_id": sid, "model": GENERATE_MODEL,
            "params": json.dumps({"max_tokens": 4096, "temperature": 1.0}), "prompt_hash": _id("prompt", sid),
            "status": "failed" if failed else "ok",
            "response_text": None if failed else f"<document>{text}</document>",
            "stop_reason": None if failed else stop, "input_tokens": usage[0], "output_tokens": usage[1],
            "cache_creation_tokens": usage[2], "cache_read_tokens": usage[3], "cost_usd": cost,
            "batch_id": batch_ids[i % 2], "mode": "batch", "error": "overloaded_error" if failed else None,
            "attempts": 3 if failed else 1, "created_at": f"2026-05-20T10:{i % 60:02d}:00Z",
            "updated_at": f"2026-05-20T11:{i % 60:02d}:00Z",
        })
        if stage == "generate":
            rejected.append({"doc_id": sid, "stage": "generate", "reason": reason,
                             "detail": "stop_reason=max_tokens" if reason == "max_tokens" else "overloaded",
                             "duplicate_of": None, "genre": spec["genre"], "section_id": spec["section_id"],
                             "text": text if reason == "max_tokens" else None})
            continue
        documents.append({"doc_id": sid, **spec, "text": text, "model": GENERATE_MODEL, "stop_reason": stop,
                          "input_tokens": inp, "output_tokens": out_tok, "cache_read_tokens": cache_read,
                          "cache_creation_tokens": cache_write, "cost_usd": cost})
        if stage:
            detail = {"dedup": f"jaccard={rng.uniform(0.86, 1.0):.2f}",
                      "judge": f"score={rng.randint(1, 4)}/10",
                      "quality": f"{reason} detected", "decontaminate": "13-gram overlap with eval set",
                      "diversity": "cap reached"}[stage]
            rejected.append({"doc_id": sid, "stage": stage, "reason": reason, "detail": detail,
                             "duplicate_of": dup_of.get(sid), "genre": spec["genre"],
                             "section_id": spec["section_id"], "text": text})
        if stage not in ("generate", "quality"):
            j_in, j_out = 900 + out_tok, 60
            requests.append({
                "key": _id("judge", sid), "purpose": "judge", "spec_id": sid, "model": SMALL_MODEL,
                "params": "{}", "prompt_hash": _id("jp", sid), "status": "ok", "response_text": "score: 8",
                "stop_reason": "end_turn", "input_tokens": j_in, "output_tokens": j_out,
                "cache_creation_tokens": 0, "cache_read_tokens": 700,
                "cost_usd": _cost(SMALL_MODEL, j_in, j_out, 0, 700), "batch_id": None, "mode": "messages",
                "error": None, "attempts": 1, "created_at": "2026-05-20T12:00:00Z",
                "updated_at": "2026-05-20T12:00:01Z",
            })
    for sec in sections:
        requests.append({
            "key": _id("brainstorm", sec["id"]), "purpose": "brainstorm", "spec_id": None,
            "model": SMALL_MODEL, "params": "{}", "prompt_hash": _id("bp", sec["id"]), "status": "ok",
            "response_text": "1. an idea",
            "stop_reason": "end_turn", "input_tokens": 600, "output_tokens": 400, "cache_creation_tokens": 0,
            "cache_read_tokens": 0, "cost_usd": _cost(SMALL_MODEL, 600, 400, 0, 0), "batch_id": None,
            "mode": "messages", "error": None, "attempts": 1, "created_at": "2026-05-20T09:00:00Z",
            "updated_at": "2026-05-20T09:00:02Z",
        })

    dropped = {r["doc_id"] for r in rejected}
    corpus = []
    for d in documents:
        if d["doc_id"] in dropped:
            continue
        row = {k: d[k] for k in CORPUS_SCHEMA.names if k in d}
        row["quality_score"] = round(rng.uniform(0.6, 1.0), 3)
        row["judge_score"] = float(rng.randint(6, 10))
        corpus.append(row)

    if "config.toml" in wanted:
        lines = [f'name = "{name}"', "", "[plan]", f"docs_per_section = {docs_per_section}", f"seed = {seed}",
                 "", "[plan.genre_weights]"]
        lines += [f"{g} = {w}" for g, w in genres]
        lines += ["", "[generate]", f'model = "{GENERATE_MODEL}"', "", "[pack]", "seq_len = 2048",
                  'strategy = "pack"', 'tokenizer = "cl100k_base"', ""]
        (run / "config.toml").write_text("\n".join(lines))
    if "sections.jsonl" in wanted:
        (run / "sections.jsonl").write_text("".join(json.dumps(s) + "\n" for s in sections))
    if "specs.parquet" in wanted:
        _write_parquet(run / "specs.parquet", specs, SPEC_SCHEMA)
    if "documents.parquet" in wanted:
        _write_parquet(run / "documents.parquet", documents, DOC_SCHEMA)
    if "rejected" in wanted:
        (run / "rejected").mkdir(exist_ok=True)
        for stage in sorted({r["stage"] for r in rejected}):
            _write_parquet(run / "rejected" / f"{stage}.parquet", [r for r in rejected if r["stage"] == stage],
                           REJECTED_SCHEMA)
    if "corpus.parquet" in wanted:
        _write_parquet(run / "corpus.parquet", corpus, CORPUS_SCHEMA)
    if "store.sqlite" in wanted:
        _write_store(run / "store.sqlite", requests, batch_ids)
    if "shards" in wanted:
        _write_shards(run / "shards", corpus, documents, dict(genres))
    return run


def _write_store(path: Path, requests: list[dict], batch_ids: list[str]) -> None:
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(
        "CREATE TABLE requests (key TEXT PRIMARY KEY, purpose TEXT, spec_id TEXT, model TEXT, params TEXT, "
        "prompt_hash TEXT, status TEXT, response_text TEXT, stop_reason TEXT, input_tokens INT, "
        "output_tokens INT, cache_creation_tokens INT, cache_read_tokens INT, cost_usd REAL, batch_id TEXT, "
        "mode TEXT, error TEXT, attempts INT, created_at TEXT, updated_at TEXT)"
    )
    con.execute(
        "CREATE TABLE batches (batch_id TEXT PRIMARY KEY, purpose TEXT, status TEXT, request_count INT, "
        "counts TEXT, created_at TEXT, ended_at TEXT)"
    )
    cols = list(requests[0]) if requests else []
    con.executemany(
        f"INSERT INTO requests ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
        [tuple(r[c] for c in cols) for r in requests],
    )
    for b in batch_ids:
        mine = [r for r in requests if r["batch_id"] == b]
        counts = Counter("succeeded" if r["status"] == "ok" else "errored" for r in mine)
        con.execute("INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (b, "generate", "ended", len(mine), json.dumps(counts), "2026-05-20T10:00:00Z",
                     "2026-05-20T11:30:00Z"))
    con.commit()
    con.close()


def _write_shards(shards: Path, corpus: list[dict], documents: list[dict], weights: dict[str, float]) -> None:
    shards.mkdir(exist_ok=True)
    name_counts: Counter[str] = Counter(n.split()[0] for d in corpus for n in d["names"])
    opener_counts: Counter[str] = Counter(" ".join(d["text"].split()[:3]) for d in corpus)
    n_names = sum(name_counts.values())
    entropy = -sum(c / n_names * math.log2(c / n_names) for c in name_counts.values()) if n_names else 0.0
    genre_counts = Counter(d["genre"] for d in corpus)
    wsum = sum(weights.values())
    doc_tokens = {d["doc_id"]: d["output_tokens"] + 1 for d in documents}  # +1 for EOS
    per_genre: Counter[str] = Counter()
    per_section: Counter[str] = Counter()
    for d in corpus:
        per_genre[d["genre"]] += doc_tokens[d["doc_id"]]
        per_section[d["section_id"]] += doc_tokens[d["doc_id"]]
    total = sum(per_genre.values())
    seq_len = 2048
    sequences = math.ceil(total / seq_len)
    # Shaped like sdf.steps.tokens.pack's manifest: one train split, two shards of one format, a .bin + .idx per shard.
    shard_list = []
    for i, part in enumerate((sequences // 2, sequences - sequences // 2)):
        for suffix in ("bin", "idx"):
            blob = bytes(part * (8 if suffix == "bin" else 2))
            path = f"train/megatron/train_{i:05d}.{suffix}"
            (shards / path).parent.mkdir(parents=True, exist_ok=True)
            (shards / path).write_bytes(blob)
            shard_list.append({"path": path, "split": "train", "format": "megatron", "shard": i,
                               "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob),
                               "tokens": part * seq_len, "sequences": part})
    padding = sequences * seq_len - total
    manifest = {
        "sdf_version": "0.1.0", "config_hash": _id("config"), "seed": 0,
        "tokenizer": {"name": "cl100k_base", "spec": "cl100k_base", "kind": "tiktoken", "sha256": _id("tok"),
                      "vocab_size": 100277, "eos_id": 100257, "bos_id": None},
        "seq_len": seq_len, "strategy": "pack", "formats": ["megatron"], "token_dtype": "uint32",
        "documents": len(corpus), "tokens": total, "sequences": sequences, "padding_tokens": padding,
        "packing": {"padding_share": round(padding / (sequences * seq_len), 6), "split_documents": 3},
        "splits": {"train": {"documents": len(corpus), "tokens": total, "sequences": sequences, "shards": 2}},
        "tokens_per_genre": dict(per_genre), "tokens_per_section": dict(per_section),
        "tokens_per_source": {"sdf": total}, "documents_per_source": {"sdf": len(corpus)},
        "shards": shard_list,
        "diversity": {
            "documents": len(corpus), "sample_documents": len(corpus),
            "distinct_n": {"1": 0.041, "2": 0.38, "3": 0.74, "4": 0.91}, "compression_ratio": 3.12,
            "self_repetition": 0.087, "name_entropy": round(entropy, 3),
            "top_names": [[n, c] for n, c in name_counts.most_common(10)],
            "top_openers": [[o, c] for o, c in opener_counts.most_common(10)],
            "genre_mix": {g: {"target": round(w / wsum, 4),
                              "actual": round(genre_counts[g] / max(1, len(corpus)), 4),
                              "count": genre_counts[g]} for g, w in weights.items()},
        },
    }
    (shards / "manifest.json").write_text(json.dumps(manifest, indent=2))
