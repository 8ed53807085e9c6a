"""The ledger: every LLM request, attempt, response, usage and cost, in SQLite (WAL).

It is the source of truth. A response is committed here before anything else reads it, so a
crash at any instant loses at most requests that were in flight, and a rerun never pays twice
for a recorded answer. Requests are keyed by a content hash of (model, params, system, prompt),
so an unchanged spec maps to the same key on every run.

Reuse across limits: a second key, `reuse_key`, hashes the same request without max_tokens. An
answer that ended with end_turn under any limit is the answer a larger limit would have produced,
so a request whose max_tokens is at least that answer's output_tokens takes it (`reuse_answers`)
instead of being sent; the new row points at the paid one through `reused_from` and costs nothing.
Each answer records the cache TTL it was sent with (`cache_ttl`) and its 1-hour cache writes.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

from sdf.errors import Incomplete, SdfError
from sdf.redact import redact_text

SCHEMA = """
CREATE TABLE IF NOT EXISTS prefixes (
    hash TEXT PRIMARY KEY,
    text TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    key TEXT PRIMARY KEY,
    purpose TEXT NOT NULL,
    spec_id TEXT,
    model TEXT NOT NULL,
    params TEXT NOT NULL,
    prompt_hash TEXT NOT NULL,
    prefix_hash TEXT,
    prompt TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    response_text TEXT,
    stop_reason TEXT,
    input_tokens INTEGER,
    output_tokens INTEGER,
    cache_creation_tokens INTEGER,
    cache_read_tokens INTEGER,
    cost_usd REAL,
    batch_id TEXT,
    mode TEXT,
    error TEXT,
    reuse_key TEXT,
    reused_from TEXT,
    cache_ttl TEXT,
    cache_creation_1h_tokens INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_spec ON requests(spec_id);
CREATE INDEX IF NOT EXISTS requests_status ON requests(purpose, status);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    mode TEXT NOT NULL,
    status TEXT NOT NULL,
    http_status INTEGER,
    error TEXT,
    batch_id TEXT,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_key ON attempts(key);
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY,
    purpose TEXT NOT NULL,
    status TEXT NOT NULL,
    request_count INTEGER NOT NULL,
    counts TEXT,
    created_at TEXT NOT NULL,
    ended_at TEXT
);
CREATE TABLE IF NOT EXISTS batch_intents (
    token TEXT PRIMARY KEY,
    purpose TEXT NOT NULL,
    keys TEXT NOT NULL,
    request_count INTEGER NOT NULL,
    status TEXT NOT NULL,
    batch_id TEXT,
    error TEXT,
    created_at TEXT NOT NULL
);
"""

# columns added after the first ledgers were written: added to an older ledger when it is opened
ADDED_COLUMNS = {"reuse_key": "TEXT", "reused_from": "TEXT", "cache_ttl": "TEXT", "cache_creation_1h_tokens": "INTEGER"}
REUSABLE_STOPS = ("end_turn", "stop_sequence")  # the model finished: a larger limit would not change the answer

USAGE_COLUMNS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens", "cost_usd")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class LLMRequest:
    """One call to a chat model: a cached system prefix plus one user prompt."""

    purpose: str  # generate | brainstorm | judge
    spec_id: str | None
    model: str
    system: str
    prompt: str
    max_tokens: int
    temperature: float | None = None

    @property
    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"max_tokens": self.max_tokens}
        if self.temperature is not None:
            params["temperature"] = self.temperature
        return params

    # Cached: the system prompt is ~100 KB and the engine reads these several times per request.
    @cached_property
    def prompt_hash(self) -> str:
        return sha256(self.system + "\x00" + self.prompt)

    @cached_property
    def key(self) -> str:
        blob = json.dumps([self.model, self.params, sha256(self.system), self.prompt], sort_keys=True)
        return sha256(blob)

    @cached_property
    def reuse_key(self) -> str:
        """The key without max_tokens: requests that differ only in their limit share it."""
        return reuse_key(self.model, self.params, sha256(self.system), self.prompt)


def reuse_key(model: str, params: dict[str, Any], prefix_hash: str, prompt: str) -> str:
    rest = {k: v for k, v in params.items() if k != "max_tokens"}
    return sha256(json.dumps(["reuse", model, rest, prefix_hash, prompt], sort_keys=True))


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_1h_tokens: int = 0  # the part of cache_creation_tokens written with the 1-hour TTL


@dataclass(frozen=True)
class LLMResponse:
    text: str
    stop_reason: str
    usage: Usage


SQLITE_HEADER = b"SQLite format 3\x00"


class Ledger:
    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = path
        check_ledger_file(path)
        try:
            if readonly:  # for readers such as the report: never creates the file, never writes, even the schema
                self.db = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=30)
                self.db.row_factory = sqlite3.Row
                return
            self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
            self.db.row_factory = sqlite3.Row
            if path.exists() and path.stat().st_size and self.db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("quick_check failed")
            self.db.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable against process crashes (kill -9); only power loss can drop the tail.
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
            self._add_columns()
        except sqlite3.DatabaseError as e:
            raise ledger_error(path, e) from None

    def close(self) -> None:
        try:  # back to a rollback journal so no -wal/-shm stay beside the ledger; busy or read-only keeps them
            self.db.execute("PRAGMA busy_timeout=0")
            self.db.execute("PRAGMA journal_mode=DELETE")
        except sqlite3.Error:
            pass
        self.db.close()

    def _add_columns(self) -> None:
        """Bring a ledger written before reuse keys and TTLs up to date (its answers stay reusable)."""
        have = {r["name"] for r in self.db.execute("PRAGMA table_info(requests)")}
        missing = {c: t for c, t in ADDED_COLUMNS.items() if c not in have}
        if not missing:
            self.db.execute("CREATE INDEX IF NOT EXISTS requests_reuse ON requests(reuse_key)")
            return
        with self.transaction() as db:
            for column, kind in missing.items():
                db.execute(f"ALTER TABLE requests ADD COLUMN {column} {kind}")
            rows = db.execute("SELECT key, model, params, prefix_hash, prompt FROM requests WHERE reuse_key IS NULL")
            db.executemany("UPDATE requests SET reuse_key=? WHERE key=?", [
                (reuse_key(r["model"], json.loads(r["params"]), r["prefix_hash"] or "", r["prompt"]), r["key"])
                for r in rows.fetchall()])
            db.execute("CREATE INDEX IF NOT EXISTS requests_reuse ON requests(reuse_key)")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        except sqlite3.DatabaseError as e:  # the transaction rolled back: nothing is half-written
            raise ledger_error(self.path, e) from None

    # -- requests ---------------------------------------------------------------------------

    def register(self, requests: Iterable[LLMRequest]) -> None:
        """Record planned requests as pending (existing rows, whatever their state, are kept)."""
        stamp = now()
        prefixes: dict[str, str] = {}  # the system prompt is shared: hash and store it once, not per request
        with self.transaction() as db:
            for r in requests:
                prefix = prefixes.get(r.system)
                if prefix is None:
                    prefix = prefixes[r.system] = sha256(r.system)
                    db.execute("INSERT OR IGNORE INTO prefixes(hash, text) VALUES (?, ?)", (prefix, r.system))
                db.execute(
                    "INSERT OR IGNORE INTO requests(key, purpose, spec_id, model, params, prompt_hash,"
                    " prefix_hash, prompt, reuse_key, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (r.key, r.purpose, r.spec_id, r.model, json.dumps(r.params), r.prompt_hash, prefix,
                     r.prompt, r.reuse_key, stamp, stamp),
                )

    def statuses(self, keys: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for row in self.db.execute(f"SELECT key, status FROM requests WHERE key IN ({marks})", chunk):
                out[row["key"]] = row["status"]
        return out

    def get(self, key: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM requests WHERE key = ?", (key,)).fetchone()

    def paid(self, key: str) -> sqlite3.Row | None:
        """The row that paid for a key's answer: the key's own row, or the one its answer was reused from."""
        row = self.get(key)
        if row is not None and row["reused_from"]:
            return self.get(row["reused_from"]) or row
        return row

    def reusable(self, request: LLMRequest) -> sqlite3.Row | None:
        """A finished answer to the same request under another limit that fits within this one's max_tokens."""
        return self.db.execute(
            f"SELECT * FROM requests WHERE reuse_key = ? AND key != ? AND status = 'ok' AND reused_from IS NULL"
            f" AND stop_reason IN ({','.join('?' * len(REUSABLE_STOPS))}) AND output_tokens <= ?"
            " ORDER BY output_tokens LIMIT 1",
            (request.reuse_key, request.key, *REUSABLE_STOPS, request.max_tokens)).fetchone()

    def reuse_answers(self, requests: Sequence[LLMRequest]) -> list[str]:
        """Answer each request that has a `reusable` answer from it, at no cost; returns the keys answered."""
        found = [(r, row) for r in requests if (row := self.reusable(r)) is not None]
        if not found:
            return []
        stamp = now()
        with self.transaction() as db:
            db.executemany(
                "UPDATE requests SET status='ok', response_text=?, stop_reason=?, input_tokens=0, output_tokens=0,"
                " cache_creation_tokens=0, cache_read_tokens=0, cost_usd=0, mode='reused', reused_from=?,"
                " error=NULL, updated_at=? WHERE key=? AND status != 'ok'",
                [(row["response_text"], row["stop_reason"], row["key"], stamp, r.key) for r, row in found])
            db.executemany("INSERT INTO attempts(key, mode, status, error, at) VALUES (?,?,?,?,?)",
                           [(r.key, "reused", "ok", f"answer of {row['key']}", stamp) for r, row in found])
        return [r.key for r, _ in found]

    def rows(self, purpose: str | None = None) -> list[sqlite3.Row]:
        if purpose is None:
            return self.db.execute("SELECT * FROM requests ORDER BY key").fetchall()
        return self.db.execute("SELECT * FROM requests WHERE purpose = ? ORDER BY key", (purpose,)).fetchall()

    def record_success(self, key: str, response: LLMResponse, cost: float | None, mode: str,
                       batch_id: str | None = None, cache_ttl: str | None = None) -> None:
        u = response.usage
        stamp = now()
        with self.transaction() as db:
            db.execute(
                "UPDATE requests SET status='ok', response_text=?, stop_reason=?, input_tokens=?,"
                " output_tokens=?, cache_creation_tokens=?, cache_read_tokens=?, cache_creation_1h_tokens=?,"
                " cost_usd=?, mode=?, cache_ttl=?, reused_from=NULL, batch_id=COALESCE(?, batch_id), error=NULL,"
                " attempts=attempts+1, updated_at=? WHERE key=?",
                (response.text, response.stop_reason, u.input_tokens, u.output_tokens, u.cache_creation_tokens,
                 u.cache_read_tokens, u.cache_creation_1h_tokens, cost, mode, cache_ttl, batch_id, stamp, key),
            )
            db.execute("INSERT INTO attempts(key, mode, status, http_status, batch_id, at) VALUES (?,?,?,?,?,?)",
                       (key, mode, "ok", 200, batch_id, stamp))

    def record_attempt_failure(self, key: str, mode: str, error: str, http_status: int | None = None,
                               final: bool = False, batch_id: str | None = None) -> None:
        """Log a failed attempt; `final` marks the request failed (a rerun will try it again)."""
        error = redact_text(error)  # whatever a backend let through, no credential reaches the file
        stamp = now()
        with self.transaction() as db:
            db.execute(
                "INSERT INTO attempts(key, mode, status, http_status, error, batch_id, at) VALUES (?,?,?,?,?,?,?)",
                (key, mode, "failed" if final else "retry", http_status, error, batch_id, stamp),
            )
            db.execute(
                "UPDATE requests SET attempts=attempts+1, error=?, updated_at=?,"
                " status=CASE WHEN ? THEN 'failed' ELSE status END WHERE key=? AND status != 'ok'",
                (error, stamp, final, key),
            )

    def reset_failed(self, keys: Sequence[str]) -> None:
        with self.transaction() as db:
            db.executemany("UPDATE requests SET status='pending' WHERE key=? AND status='failed'", [(k,) for k in keys])

    # -- batches ----------------------------------------------------------------------------

    def add_intent(self, purpose: str, keys: Sequence[str]) -> str:
        """Commit the intent to create a batch of `keys` before the create is sent; returns its client token."""
        token = f"sdf_{secrets.token_hex(12)}"
        with self.transaction() as db:
            db.execute("INSERT INTO batch_intents(token, purpose, keys, request_count, status, created_at)"
                       " VALUES (?,?,?,?,?,?)", (token, purpose, json.dumps(list(keys)), len(keys), "open", now()))
        return token

    def fail_intent(self, token: str, error: str) -> None:
        """The create failed and no batch was found; the intent stays open, so a late batch is still adopted."""
        with self.transaction() as db:
            db.execute("UPDATE batch_intents SET status='failed', error=? WHERE token=? AND batch_id IS NULL",
                       (error, token))

    def open_intents(self) -> list[sqlite3.Row]:
        """Intents with no batch id yet, oldest first."""
        return self.db.execute("SELECT token, purpose, request_count, status, error, created_at FROM batch_intents"
                               " WHERE batch_id IS NULL ORDER BY created_at").fetchall()

    def has_intents(self) -> bool:
        """False on a ledger written before intents, opened read-only (so not brought up to date)."""
        return self.db.execute("SELECT 1 FROM sqlite_master WHERE name='batch_intents'").fetchone() is not None

    def intent_keys(self, token: str) -> list[str]:
        row = self.db.execute("SELECT keys FROM batch_intents WHERE token=?", (token,)).fetchone()
        return json.loads(row["keys"]) if row else []

    def batch_ids(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT batch_id FROM batches")]

    def add_batch(self, batch_id: str, purpose: str, keys: Sequence[str], token: str | None = None) -> None:
        """Commit a submitted batch and its members in one transaction, before any polling (and close its
        intent)."""
        stamp = now()
        with self.transaction() as db:
            if token is not None:
                db.execute("UPDATE batch_intents SET status='created', batch_id=? WHERE token=?", (batch_id, token))
            db.execute("INSERT INTO batches(batch_id, purpose, status, request_count, created_at) VALUES (?,?,?,?,?)",
                       (batch_id, purpose, "in_progress", len(keys), stamp))
            db.executemany("UPDATE requests SET status='submitted', batch_id=?, mode='batch', updated_at=? "
                           "WHERE key=? AND status != 'ok'", [(batch_id, stamp, k) for k in keys])
            db.executemany("INSERT INTO attempts(key, mode, status, batch_id, at) VALUES (?,?,?,?,?)",
                           [(k, "batch", "submitted", batch_id, stamp) for k in keys])

    def active_batches(self, purpose: str | None = None) -> list[sqlite3.Row]:
        sql = "SELECT * FROM batches WHERE status NOT IN ('ended')"
        args: tuple = ()
        if purpose:
            sql += " AND purpose = ?"
            args = (purpose,)
        return self.db.execute(sql + " ORDER BY created_at", args).fetchall()

    def end_batch(self, batch_id: str, counts: dict[str, int]) -> None:
        """Close a batch; members it never answered go back to pending so they are retried."""
        stamp = now()
        with self.transaction() as db:
            db.execute("UPDATE batches SET status='ended', counts=?, ended_at=? WHERE batch_id=?",
                       (json.dumps(counts, sort_keys=True), stamp, batch_id))
            db.execute("UPDATE requests SET status='pending', updated_at=? WHERE batch_id=? AND status='submitted'",
                       (stamp, batch_id))

    def batches(self) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM batches ORDER BY created_at").fetchall()

    # -- accounting -------------------------------------------------------------------------

    def counts(self, purpose: str | None = None) -> dict[str, int]:
        sql = "SELECT status, COUNT(*) AS n FROM requests"
        args: tuple = ()
        if purpose:
            sql += " WHERE purpose = ?"
            args = (purpose,)
        return {r["status"]: r["n"] for r in self.db.execute(sql + " GROUP BY status", args)}

    def totals(self) -> dict[str, Any]:
        row = self.db.execute(
            "SELECT COUNT(*) AS responses, COALESCE(SUM(cost_usd), 0) AS cost_usd,"
            " COALESCE(SUM(input_tokens), 0) AS input_tokens, COALESCE(SUM(output_tokens), 0) AS output_tokens,"
            " COALESCE(SUM(cache_creation_tokens), 0) AS cache_creation_tokens,"
            " COALESCE(SUM(cache_read_tokens), 0) AS cache_read_tokens FROM requests WHERE status = 'ok'"
        ).fetchone()
        totals = dict(row)
        prompt = totals["input_tokens"] + totals["cache_creation_tokens"] + totals["cache_read_tokens"]
        totals["cache_read_share"] = totals["cache_read_tokens"] / prompt if prompt else 0.0
        totals["attempts"] = self.db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0]
        return totals

    def usage(self) -> list[dict[str, Any]]:
        """Requests, tokens, cost and last update per (purpose, model, status), summed in SQL for reports."""
        sums = ", ".join(f"COALESCE(SUM({c}), 0) AS {c}" for c in USAGE_COLUMNS)
        return [dict(r) for r in self.db.execute(
            f"SELECT purpose, model, status, COUNT(*) AS requests, {sums}, MAX(updated_at) AS last_at"
            " FROM requests GROUP BY purpose, model, status ORDER BY purpose, model, status")]

    def refusals(self) -> list[dict[str, Any]]:
        """Why the API or the model refused requests: the model's stop_reason "refusal", and the error text of
        requests that failed for good (an invalid request, a prompt too long), with counts."""
        return [dict(r) for r in self.db.execute(
            "SELECT CASE WHEN stop_reason = 'refusal' THEN 'the model refused (stop_reason refusal)'"
            " ELSE substr(COALESCE(error, 'unknown'), 1, 200) END AS reason, purpose, COUNT(*) AS requests"
            " FROM requests WHERE stop_reason = 'refusal' OR status = 'failed'"
            " GROUP BY reason, purpose ORDER BY requests DESC")]

    def spent(self) -> float:
        return float(self.db.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM requests WHERE status='ok'").fetchone()[0])


def open_ledger(run_dir: Path) -> Ledger:
    return Ledger(run_dir / "store.sqlite")


def check_ledger_file(path: Path) -> None:
    """A ledger that exists must be a sound SQLite file: it is never silently replaced."""
    if not path.exists():
        return
    with path.open("rb") as f:
        header = f.read(len(SQLITE_HEADER))
    if not header:
        raise SdfError(f"{path} is empty (0 bytes), not a ledger sdf wrote; {RESET_HINT}")
    if header != SQLITE_HEADER:
        raise SdfError(f"{path} is not an SQLite database; {RESET_HINT}")


RESET_HINT = ("move it aside, or pass --reset-ledger to set it aside and start a new one "
              "(its answers are then paid again)")


def ledger_error(path: Path, error: sqlite3.DatabaseError) -> SdfError:
    text = str(error)
    if "full" in text:
        return Incomplete(f"disk full at {path.parent}: free space and rerun; every answer recorded before is kept")
    if isinstance(error, sqlite3.OperationalError) and ("locked" in text or "readonly" in text):
        return SdfError(f"cannot write {path}: {text}")
    return SdfError(f"{path} is damaged ({text}); {RESET_HINT}")


def reset_ledger(path: Path) -> Path | None:
    """Set a damaged ledger (and its WAL files) aside under a dated name; returns where it went."""
    if not path.exists():
        return None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        part = path.with_name(path.name + suffix)
        if part.exists():
            part.rename(aside.with_name(aside.name + suffix))
    return aside

