"""The run directory contract: every artifact's path and schema, and the only code that reads or writes them.

    <run>/config.toml          resolved settings, secrets redacted        read_config / (written by the CLI)
    <run>/sections.jsonl       the parsed constitution, one section a line  read_sections / write_sections
    <run>/plan.json            what the planner aimed for (genre targets)  read_plan / write_plan
    <run>/specs.parquet        one planned document per row               SPEC_SCHEMA
    <run>/store.sqlite         the ledger (sdf.llm.ledger owns its tables)
    <run>/documents.parquet    extracted documents with provenance        DOCUMENT_SCHEMA
    <run>/filtered.parquet     documents that passed quality (and judge)  FILTERED_SCHEMA
    <run>/corpus.parquet       the final documents                         CORPUS_SCHEMA
    <run>/rejected/<stage>.parquet  every dropped item of that stage      REJECT_SCHEMA
    <run>/metrics.json         stage counts, dedup clusters, caps, diversity  read_metrics / write_metrics
    <run>/shards/manifest.json the packer's manifest                       read_manifest / write_manifest
    <run>/stats.json           the report's numbers                        read_stats / write_stats
    <run>/report.html, plots/  the human view

An advice run (config [run].product = "advice") holds transcripts instead of documents:

    <run>/specs.parquet        one planned scenario (or one transcript to rewrite) per row  SCENARIO_SCHEMA
    <run>/chats.parquet        assembled chats with provenance              CHAT_SCHEMA
    <run>/filtered.parquet     chats that passed quality (and judge)        CHAT_FILTERED_SCHEMA
    <run>/sft.parquet          the final chats in the chat format          SFT_SCHEMA
    <run>/sft.jsonl            the same rows as JSON lines                  sft_json_line
    <run>/sft.openai.jsonl     the chats as OpenAI fine-tuning takes them   openai_json_line
    <run>/shards/sft/train_00000.parquet  optional packed SFT rows         SFT_PACKED_SCHEMA

Tables are written through `TableWriter`: batches stream to `<file>.tmp`, which replaces the artifact
only when the writer closes cleanly, so a crash never leaves half a table behind. This module imports
pyarrow and the standard library only: importing it loads none of the step code.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sdf.errors import SdfError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# The stages that can drop an item, in pipeline order; each writes rejected/<stage>.parquet.
STAGES = ("generate", "quality", "action", "judge", "decontaminate", "dedup", "diversity")

SECTION_FIELDS = ("id", "path", "title", "level", "text", "chars", "tokens")

SPEC_SCHEMA = pa.schema(
    [
        ("spec_id", pa.string()),
        ("section_id", pa.string()),
        ("section_title", pa.string()),
        ("section_attrs", pa.string()),  # the section's heading attributes, JSON-encoded (see Section.attrs)
        ("genre", pa.string()),
        ("audience", pa.string()),
        ("persona", pa.string()),  # the narrator or author
        ("setting", pa.string()),
        ("situation", pa.string()),  # the spark an idea starts from
        ("tone", pa.string()),
        ("names", pa.list_(pa.string())),
        ("considerations", pa.list_(pa.string())),  # the one or two the brief foregrounds (prompts/considerations.toml)
        ("reasoning", pa.string()),  # how the reasoning shows itself
        ("target_words", pa.int32()),
        ("language", pa.string()),
        ("audience_kind", pa.string()),  # the pool kinds the brief was dealt from (prompts/pools/)
        ("narrator_kind", pa.string()),
        ("setting_kind", pa.string()),
        ("situation_kind", pa.string()),
        ("ai_self_stakes", pa.bool_()),  # an AI story whose AI has stakes of its own ([plan].ai_self_stakes)
        ("seed", pa.int64()),
        ("idea", pa.string()),
        ("redeals", pa.int32()),  # how often the brief was dealt anew because the model called it unsuitable
        ("unsuitable", pa.string()),  # why the last brief was called unsuitable, when the spec was dropped
    ]
)
_ANSWER_FIELDS = [  # what the ledger says of the answer an item was made from
    ("model", pa.string()),
    ("stop_reason", pa.string()),
    ("input_tokens", pa.int64()),
    ("output_tokens", pa.int64()),
    ("cache_read_tokens", pa.int64()),
    ("cache_creation_tokens", pa.int64()),
    ("cost_usd", pa.float64()),
    ("request_key", pa.string()),
]
DOCUMENT_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        *[f for f in SPEC_SCHEMA if f.name != "spec_id"],
        ("text", pa.string()),
        *_ANSWER_FIELDS,
        ("envelope_missing", pa.bool_()),  # the answer had no <document> envelope; its whole text was kept
        ("renamed", pa.string()),  # JSON {"old name": "new name"} of the diversity step's renames, or null
    ]
)
FILTERED_SCHEMA = DOCUMENT_SCHEMA.append(pa.field("quality_score", pa.float64())).append(
    pa.field("judge_score", pa.float64())
)
CORPUS_SCHEMA = FILTERED_SCHEMA
REJECT_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("duplicate_of", pa.string()),
        ("genre", pa.string()),
        ("section_id", pa.string()),
        ("cost_usd", pa.float64()),  # what the dropped item cost to generate, for paid-but-discarded
        ("text", pa.string()),
    ]
)

# -- the advice product (transcripts) --------------------------------------------------------------
# JSON-valued columns (messages, tools, tool calls) are JSON strings: Arrow needs one schema for every
# row, and tool definitions differ from row to row.
_SCENARIO_FIELDS = [
    ("mode", pa.string()),  # "advice" (planned scenario) or "rewrite" (a user transcript)
    ("section_id", pa.string()),
    ("section_title", pa.string()),
    ("domain", pa.string()),
    ("role", pa.string()),
    ("temptation", pa.string()),
    ("stakes", pa.string()),
    ("register", pa.string()),
    ("operator", pa.string()),  # operator name, "" without a system prompt
    ("toolset", pa.string()),  # toolset name, "" without tools
    ("tool_format", pa.string()),  # "native" (chat tools field) or the notation written into the system message
    ("kind", pa.string()),  # temptation, legitimate, authority or dilemma; "" for a rewrite
    ("situation", pa.string()),  # the kind's seed situation (for a temptation, the same name as `temptation`)
    ("considerations", pa.string()),  # the one or two considerations the reply is told may matter, comma-joined
    ("user_turns", pa.int32()),  # user messages in the conversation
    ("followups", pa.string()),  # what each later user turn does (pushback, new_fact, carry_out), comma-joined
]
SCENARIO_SCHEMA = pa.schema([
    ("spec_id", pa.string()),
    *_SCENARIO_FIELDS,
    ("user_words", pa.int32()),
    ("system_prompt", pa.string()),  # the operator's system prompt, "" without one
    ("tools", pa.string()),  # JSON list of function definitions, "" without tools
    ("source_messages", pa.string()),  # rewrite: the input chat's messages as JSON; "" for advice
    ("seed", pa.int64()),
])
CHAT_SCHEMA = pa.schema([
    ("doc_id", pa.string()),
    *_SCENARIO_FIELDS,
    ("prompt_messages", pa.string()),  # JSON: every message before the final assistant turn, system included
    ("tools", pa.string()),  # JSON list for the chat's tools field, or null
    ("user", pa.string()),  # the last user message
    ("deliberation", pa.string()),
    ("answer", pa.string()),
    ("tool_calls", pa.string()),  # JSON list of the final turn's tool calls, or null
    ("original_answer", pa.string()),  # rewrite: the final turn as it came in
    ("original_tool_calls", pa.string()),
    ("text", pa.string()),  # every turn together: what shared steps and rejects read
    ("deployment", pa.string()),  # the deployment's id: "gen-<hash>" (written by the model), the seed pools' names, ""
    *_ANSWER_FIELDS,
    ("selected_turns", pa.string()),  # rewrite: JSON list of the assistant turns (1-based) asked to deliberate
    ("turn_deliberations", pa.string()),  # rewrite: JSON {turn: text} as the model returned them, for ActionCheck
])
CHAT_FILTERED_SCHEMA = CHAT_SCHEMA.append(pa.field("quality_score", pa.float64())).append(
    pa.field("judge_score", pa.float64()))
_TOOL_CALL = pa.struct([("id", pa.string()), ("type", pa.string()),
                        ("function", pa.struct([("name", pa.string()), ("arguments", pa.string())]))])
MESSAGE_TYPE = pa.struct([
    ("role", pa.string()),
    ("content", pa.string()),
    ("reasoning_content", pa.string()),  # the deliberation of this assistant turn, or null
    ("tool_calls", pa.list_(_TOOL_CALL)),
    ("tool_call_id", pa.string()),
    ("name", pa.string()),
])
SFT_PROVENANCE = [name for name, _ in _SCENARIO_FIELDS] + ["deployment", "model", "quality_score", "judge_score",
                                                       "cost_usd", "request_key"]
SFT_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("messages", pa.list_(MESSAGE_TYPE)),
    ("tools", pa.json_()),  # JSON text typed as JSON: `datasets` hands back the list of tool schemas, or None
    *[CHAT_FILTERED_SCHEMA.field(name) for name in SFT_PROVENANCE],
])
SFT_PACKED_SCHEMA = pa.schema([
    ("input_ids", pa.list_(pa.int32())),
    ("labels", pa.list_(pa.int32())),  # -100 outside assistant turns
    ("seq_lengths", pa.list_(pa.int32())),  # the chats packed into the row, in order
])


def sft_json_line(row: Mapping[str, Any]) -> str:
    """One sft.jsonl line: the SFT row with each message's unset fields left out and `tools` as a list."""
    messages = [{k: v for k, v in m.items() if v is not None} for m in row["messages"]]
    tools = json.loads(row["tools"]) if row.get("tools") else None
    return json.dumps({**row, "messages": messages, "tools": tools}, ensure_ascii=False) + "\n"


def openai_json_line(row: Mapping[str, Any]) -> str:
    """One sft.openai.jsonl line: what OpenAI's fine-tuning accepts, messages and tools and no other key.

    OpenAI's chat format has no field for the deliberation, so `reasoning_content` is left out; an
    assistant turn that only calls tools carries no content.
    """
    messages = []
    for m in row["messages"]:
        out = {k: m.get(k) for k in ("role", "content", "tool_calls", "tool_call_id", "name") if m.get(k) is not None}
        if out.get("tool_calls") and not out.get("content"):
            out.pop("content", None)
        messages.append(out)
    line = {"messages": messages} | ({"tools": json.loads(row["tools"])} if row.get("tools") else {})
    return json.dumps(line, ensure_ascii=False) + "\n"


# metrics.json: each key always present after read_metrics.
#   stages: {stage: {"input": n, "kept": n, "dropped": {reason: n}}}, in pipeline order
#   dedup: {"cluster_sizes": [n, ...], "candidate_pairs": n, "merged_pairs": n}
#   caps: {"name": n | None, "opener": n | None}
#   diversity: see sdf.steps.diversity.metrics.diversity_metrics
METRICS_KEYS = ("stages", "dedup", "caps", "diversity", "deployments")


class TableWriter:
    """Stream record batches into a parquet artifact; the file appears only on a clean close.

    Rows given as dicts are buffered into row groups of about ``group_rows`` rows, so a caller that
    writes one row at a time (a reject here and there) still makes a few large row groups, and the
    footer's metadata (one entry per row group and column, held until close) stays small.
    """

    def __init__(self, path: Path, schema: pa.Schema, group_rows: int = 1024) -> None:
        self.path, self.schema, self.rows, self.group_rows = Path(path), schema, 0, group_rows
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._buffer: list[dict[str, Any]] = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer: pq.ParquetWriter | None = pq.ParquetWriter(
            self._tmp, schema, compression="zstd", write_statistics=False)

    def write(self, rows: Sequence[Mapping[str, Any]] | pa.Table | pa.RecordBatch) -> None:
        assert self._writer is not None, "write after close"
        if isinstance(rows, (pa.Table, pa.RecordBatch)):
            self._flush()
            table = pa.Table.from_batches([rows]) if isinstance(rows, pa.RecordBatch) else rows
            table = table.select(self.schema.names).cast(self.schema)
            self._writer.write_table(table)
            self.rows += table.num_rows
            return
        self._buffer += ({k: r.get(k) for k in self.schema.names} for r in rows)
        self.rows += len(rows)
        if len(self._buffer) >= self.group_rows:
            self._flush()

    def _flush(self) -> None:
        if self._buffer and self._writer is not None:
            self._writer.write_table(pa.Table.from_pylist(self._buffer, schema=self.schema))
        self._buffer = []

    def close(self) -> None:
        if self._writer is not None:
            try:
                self._flush()
            except BaseException:
                self.abort()
                raise
            self._writer.close()
            self._writer = None
            os.replace(self._tmp, self.path)

    def abort(self) -> None:
        if self._writer is not None:
            self._buffer = []
            self._writer.close()
            self._writer = None
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.abort() if exc_type else self.close()


_HELD_LOCKS: dict[str, int] = {}  # run path -> the open descriptor that holds its lock


class RunDir:
    """Paths of one run's artifacts, and their readers and writers."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    config = property(lambda self: self.path / "config.toml")
    sections = property(lambda self: self.path / "sections.jsonl")
    plan = property(lambda self: self.path / "plan.json")
    specs = property(lambda self: self.path / "specs.parquet")
    store = property(lambda self: self.path / "store.sqlite")
    documents = property(lambda self: self.path / "documents.parquet")
    filtered = property(lambda self: self.path / "filtered.parquet")
    corpus = property(lambda self: self.path / "corpus.parquet")
    chats = property(lambda self: self.path / "chats.parquet")
    sft = property(lambda self: self.path / "sft.parquet")
    sft_jsonl = property(lambda self: self.path / "sft.jsonl")
    sft_openai = property(lambda self: self.path / "sft.openai.jsonl")
    sft_packed = property(lambda self: self.path / "shards" / "sft" / "train_00000.parquet")
    rejected_dir = property(lambda self: self.path / "rejected")
    metrics = property(lambda self: self.path / "metrics.json")
    shards = property(lambda self: self.path / "shards")
    manifest = property(lambda self: self.path / "shards" / "manifest.json")
    report = property(lambda self: self.path / "report.html")
    plots = property(lambda self: self.path / "plots")
    stats = property(lambda self: self.path / "stats.json")
    stage_keys = property(lambda self: self.path / "stages.json")  # what each stage last completed on
    lock = property(lambda self: self.path / ".lock")

    def acquire_lock(self) -> None:
        """Become the run's one writer for the life of this process; the OS frees the lock if it dies."""
        key = str(self.path.resolve())
        if key in _HELD_LOCKS:
            return
        fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise SdfError(f"{self.path} is being written by another sdf process (pid {holder}); wait for it to "
                           "finish, or stop it, then rerun") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _HELD_LOCKS[key] = fd

    def rejects(self, stage: str) -> Path:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        return self.rejected_dir / f"{stage}.parquet"

    def is_run(self) -> bool:
        return self.config.is_file()

    def require(self, artifact: Path, stage: str) -> Path:
        if not artifact.exists():
            raise SdfError(f"{artifact} does not exist yet; run `sdf {stage} {self.path}` (or `sdf build`) first")
        return artifact

    def require_run(self) -> None:
        if not self.path.is_dir():
            raise SdfError(f"run directory not found: {self.path} (pass a run directory such as corpus/<name>)")
        if not self.is_run():
            raise SdfError(f"{self.path} is not a run directory (no config.toml); create one with `sdf build`")

    # -- config, sections, plan ------------------------------------------------------------------

    def read_config(self) -> dict[str, Any]:
        """config.toml, checked as sdf.toml is: a damaged or hand-broken one is one line, not a traceback."""
        from sdf.config import settings_from_dict

        try:
            data = tomllib.loads(self.config.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise SdfError(f"{self.config} is not valid TOML ({e}); rerun `sdf build` to write it again") from None
        settings_from_dict(data, source=str(self.config))
        return data

    def write_config(self, text: str) -> None:
        _write_text(self.config, text)

    def read_sections(self) -> list[dict[str, Any]]:
        path = self.require(self.sections, "plan")
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def write_sections(self, rows: Iterable[Mapping[str, Any]]) -> None:
        _write_text(self.sections, "".join(json.dumps(dict(r), ensure_ascii=False) + "\n" for r in rows))

    def read_plan(self) -> dict[str, Any]:
        """{"docs": n, "genre_targets": {genre: share}, "section_quotas": {id: n}}; {} before planning."""
        return _read_json(self.plan) if self.plan.is_file() else {}

    def write_plan(self, plan: Mapping[str, Any]) -> None:
        write_json(self.plan, plan)

    # -- tables ------------------------------------------------------------------------------------

    def write_specs(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Stream specs into specs.parquet (a plan of a million is never held whole); returns the count."""
        rows = iter(rows)
        with TableWriter(self.specs, SPEC_SCHEMA, group_rows=8192) as w:
            while chunk := list(islice(rows, 8192)):
                # column by column: the same file as row dicts give, in a third of the time
                w.write(pa.RecordBatch.from_arrays([pa.array([r.get(f.name) for r in chunk], type=f.type)
                                                    for f in SPEC_SCHEMA], schema=SPEC_SCHEMA))
        return w.rows

    def write_scenarios(self, rows: Sequence[Mapping[str, Any]]) -> None:
        with TableWriter(self.specs, SCENARIO_SCHEMA) as w:
            w.write(rows)

    def read_specs(self) -> list[dict[str, Any]]:
        return read_rows(self.require(self.specs, "plan"))

    def writer(self, artifact: Path, schema: pa.Schema) -> TableWriter:
        return TableWriter(artifact, schema)

    def reject_writer(self, stage: str) -> TableWriter:
        return TableWriter(self.rejects(stage), REJECT_SCHEMA)

    def clear_rejects(self, *stages: str) -> None:
        for stage in stages:
            self.rejects(stage).unlink(missing_ok=True)

    def reject_files(self) -> list[Path]:
        """The rejects files that exist, in pipeline order."""
        return [p for p in (self.rejects(s) for s in STAGES) if p.is_file()]

    def read_rejects(self, columns: Sequence[str] | None = None) -> pa.Table:
        """Every stage's rejects in pipeline order (an empty table when nothing was dropped)."""
        cols = list(columns or REJECT_SCHEMA.names)
        schema = pa.schema([REJECT_SCHEMA.field(c) for c in cols])
        tables = [pq.read_table(p, columns=cols).cast(schema) for p in self.reject_files()]
        return pa.concat_tables(tables) if tables else schema.empty_table()

    # -- json artifacts ----------------------------------------------------------------------------

    def read_metrics(self) -> dict[str, Any]:
        data = _read_json(self.metrics) if self.metrics.is_file() else {}
        defaults: dict[str, Any] = {"stages": {}, "dedup": {"cluster_sizes": []},
                                    "caps": {"name": None, "opener": None}, "diversity": {},
                                    "deployments": {}}
        return {k: data.get(k, defaults[k]) for k in METRICS_KEYS}

    def update_metrics(self, cleared: Sequence[str] = (), **parts: Any) -> None:
        """Replace the given top-level parts of metrics.json; stage counts merge by stage, and the
        `cleared` stages (which did not run this time) are removed."""
        metrics = self.read_metrics()
        for key, value in parts.items():
            if key not in METRICS_KEYS:
                raise ValueError(f"unknown metrics key {key!r}")
            metrics[key] = {**metrics["stages"], **value} if key == "stages" else value
        metrics["stages"] = {s: metrics["stages"][s] for s in STAGES if s in metrics["stages"] and s not in cleared}
        write_json(self.metrics, metrics)

    def read_manifest(self) -> dict[str, Any] | None:
        return _read_json(self.manifest) if self.manifest.is_file() else None

    def read_stats(self) -> dict[str, Any] | None:
        return _read_json(self.stats) if self.stats.is_file() else None

    def write_stats(self, stats: Mapping[str, Any]) -> None:
        write_json(self.stats, stats)


def iter_batches(path: Path, columns: Sequence[str] | None = None, batch_size: int = 1024
                 ) -> Iterator[pa.RecordBatch]:
    """Record batches of a parquet artifact, so a stage never holds the whole table."""
    pf = pq.ParquetFile(path)
    if pf.metadata.num_rows == 0:
        return
    yield from pf.iter_batches(batch_size=batch_size, columns=list(columns) if columns else None)


def iter_rows(path: Path, columns: Sequence[str] | None = None, batch_size: int = 1024
              ) -> Iterator[list[dict[str, Any]]]:
    """Lists of row dicts, batch by batch."""
    for batch in iter_batches(path, columns, batch_size):
        yield batch.to_pylist()


def count_rows(path: Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows


def read_rows(path: Path, columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    return pq.read_table(path, columns=list(columns) if columns else None).to_pylist()


def write_rows(path: Path, rows: Sequence[Mapping[str, Any]], schema: pa.Schema) -> None:
    with TableWriter(path, schema) as w:
        w.write(rows)


def write_json(path: Path, data: Any) -> None:
    _write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def _read_json(path: Path) -> dict[str, Any]:
    value = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(value, dict):
        raise SdfError(f"{path} is not a JSON object; rerun the stage that writes it")
    return value


def _write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: Path, data: bytes) -> None:
    """Write whole or not at all: a full disk leaves the old file (or none), never a truncated one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
