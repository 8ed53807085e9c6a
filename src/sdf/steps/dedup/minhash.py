"""MinHash signatures over word 5-gram shingles, and exact-duplicate keys, vectorised per batch.

All per batch of documents (no Python loop per shingle):

1. Normalise: NFKC, lowercase, punctuation/symbols/whitespace -> one space (``normalize_text``).
2. Word hashes: the normalised batch is one ``uint8`` buffer; a polynomial prefix hash mod 2**64 gives
   every word's hash with a handful of numpy passes, then a splitmix64 finaliser mixes it.
3. Shingles: the same prefix trick over word hashes gives every k-word shingle hash (k=5). A document
   shorter than k words gets one shingle made of all its words. A 64-bit hash of a document's whole
   word sequence is its exact-duplicate key.
4. Signatures: each shingle's top 32 bits x go through ``num_perm`` affine permutations
   ``a*x + b mod 2**32`` (a odd, so each is a bijection of uint32), as one (num_perm, shingles) matrix,
   and ``np.minimum.reduceat`` takes the per-document minimum. Batches run on a thread pool because
   numpy releases the GIL in these loops. These are datasketch's "affine32" permutations.

Candidates, verification and clusters are in ``sdf.steps.dedup.clusters``.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from sdf.config import DedupConfig

_U64 = np.uint64
_CHAR_BASE = 0x100000001B3  # odd, so it has an inverse mod 2**64
_WORD_BASE = 0x9E3779B97F4A7C15  # odd golden-ratio constant
MAX32 = np.uint32(0xFFFFFFFF)  # the signature slot of a text with no words
HASH_CHARS = 1 << 20  # characters hashed in one pass


class _Separators(dict):
    """str.translate table mapping punctuation, symbols, separators and control characters to a space, and
    any other character to itself; filled as characters are met (a text uses a few hundred of the 1.1M)."""

    def __missing__(self, cp: int) -> str:
        cat = unicodedata.category(chr(cp))
        self[cp] = out = " " if cat[0] in "PSZ" or cat == "Cc" else chr(cp)
        return out


@lru_cache(maxsize=1)
def _separator_table() -> dict[int, str]:
    return _Separators()


def _prepare(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower().translate(_separator_table())


def normalize_text(text: str) -> str:
    """NFKC, lowercase, punctuation and symbols removed, whitespace collapsed: the text dedup compares."""
    return " ".join(_prepare(text).split())


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads every input bit over all output bits."""
    x = x ^ (x >> _U64(30))
    x *= _U64(0xBF58476D1CE4E5B9)
    x ^= x >> _U64(27)
    x *= _U64(0x94D049BB133111EB)
    x ^= x >> _U64(31)
    return x


class _Powers:
    """Cached base**i and base**-i mod 2**64, grown on demand; one tuple so threads never see a mix."""

    def __init__(self, base: int) -> None:
        self.base = _U64(base)
        self.inverse = _U64(pow(base, -1, 2**64))
        self.tables = (np.ones(1, dtype=_U64), np.ones(1, dtype=_U64))

    def get(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        up, down = self.tables
        if len(up) < n:
            size = max(n, 2 * len(up))
            up = np.empty(size, dtype=_U64)
            down = np.empty(size, dtype=_U64)
            up[0] = down[0] = 1
            up[1:] = np.cumprod(np.full(size - 1, self.base, dtype=_U64))
            down[1:] = np.cumprod(np.full(size - 1, self.inverse, dtype=_U64))
            self.tables = (up, down)
        return up[:n], down[:n]


_CHAR_POWERS = _Powers(_CHAR_BASE)
_WORD_POWERS = _Powers(_WORD_BASE)


class _Words(NamedTuple):
    """Per-word hashes of a batch of normalised texts, with the prefix sums any k-word shingle hash needs."""

    n_words: np.ndarray  # words per document
    doc_start: np.ndarray  # index of each document's first word
    doc_end: np.ndarray
    wprefix: np.ndarray  # prefix sums of word hash * base**i
    wdown: np.ndarray  # base**-i


def _words(texts: Sequence[str]) -> _Words:
    n = len(texts)
    blob = "\n".join(_prepare(t) for t in texts).encode("utf-8", "surrogatepass")
    buf = np.frombuffer(blob, dtype=np.uint8)
    is_word = buf > 32  # after _prepare, only ' ' and the '\n' document separators are <= 32
    edges = np.diff(is_word.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)

    up, down = _CHAR_POWERS.get(len(buf) + 1)
    prefix = np.zeros(len(buf) + 1, dtype=_U64)
    np.cumsum(buf.astype(_U64) * up[: len(buf)], out=prefix[1:])
    words = _mix((prefix[ends] - prefix[starts]) * down[starts])

    doc_of_word = np.searchsorted(np.flatnonzero(buf == 10), starts)
    n_words = np.bincount(doc_of_word, minlength=n)
    doc_end = np.cumsum(n_words)
    doc_start = doc_end - n_words

    wup, wdown = _WORD_POWERS.get(len(words) + 1)
    wprefix = np.zeros(len(words) + 1, dtype=_U64)
    np.cumsum(words * wup[: len(words)], out=wprefix[1:])
    return _Words(n_words, doc_start, doc_end, wprefix, wdown)


def _shingles(w: _Words, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every k-word shingle hash (document-major) and shingles per document."""
    per_doc = np.where(w.n_words >= k, w.n_words - k + 1, np.minimum(w.n_words, 1))
    shingle_doc = np.repeat(np.arange(len(w.n_words)), per_doc)
    first = np.cumsum(per_doc) - per_doc
    lo = np.arange(len(shingle_doc)) - first[shingle_doc] + w.doc_start[shingle_doc]
    hi = np.minimum(lo + k, w.doc_end[shingle_doc])
    return _mix((w.wprefix[hi] - w.wprefix[lo]) * w.wdown[lo]), per_doc


def _hash_batch(texts: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shingle hashes (uint64, document-major), shingles per document, and a per-document key
    hashing its whole normalised word sequence (uint64)."""
    w = _words(texts)
    keys = _mix((w.wprefix[w.doc_end] - w.wprefix[w.doc_start]) * w.wdown[w.doc_start] ^ w.n_words.astype(_U64))
    shingles, per_doc = _shingles(w, k)
    return shingles, per_doc, keys


def _runs(texts: Sequence[str]) -> Iterator[Sequence[str]]:
    """Consecutive runs of texts of at most HASH_CHARS characters (a longer text alone), at least one."""
    start = 0
    while start < len(texts) or start == 0:
        end, chars = start, 0
        while end < len(texts) and (end == start or chars + len(texts[end]) <= HASH_CHARS):
            chars += len(texts[end])
            end += 1
        yield texts[start:end]
        if end >= len(texts):
            return
        start = end


def _hash_texts(texts: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_hash_batch` over runs of at most HASH_CHARS characters, so the working arrays (about 40 bytes
    per character) and the cached powers stay small however large the batch."""
    parts = [_hash_batch(run, k) for run in _runs(texts)]
    if len(parts) == 1:
        return parts[0]
    shingles, per_doc, keys = (np.concatenate(p) for p in zip(*parts, strict=True))
    return shingles, per_doc, keys


def shingle_hashes(texts: Sequence[str], k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """uint64 hash of every k-word shingle of every normalised text, and offsets (len n+1) into them.

    Shingle j of document i (``hashes[offsets[i] + j]``) starts at word j of ``normalize_text(text)``;
    a text with fewer than k words has a single shingle of all its words, an empty text none.
    """
    hashes, per_doc, _ = _hash_texts(texts, k)
    return hashes, np.concatenate(([0], np.cumsum(per_doc))).astype(np.int64)


def ngram_hashes(texts: Sequence[str], ns: Sequence[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """`shingle_hashes(texts, n)` for each n, normalising and hashing each run of texts' words once."""
    parts: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {n: [] for n in ns}
    for run in _runs(texts):
        w = _words(run)
        for n in ns:
            parts[n].append(_shingles(w, n))
    out = {}
    for n, found in parts.items():
        per_doc = np.concatenate([p for _, p in found])
        out[n] = np.concatenate([h for h, _ in found]), np.concatenate(([0], np.cumsum(per_doc))).astype(np.int64)
    return out


class _Permutations:
    def __init__(self, num_perm: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.a = (rng.integers(0, 2**32, num_perm, dtype=np.uint64) | 1).astype(np.uint32)[:, None]
        self.b = rng.integers(0, 2**32, num_perm, dtype=np.uint64).astype(np.uint32)[:, None]


def _signature_batch(
    texts: Sequence[str], cfg: DedupConfig, perms: _Permutations
) -> tuple[np.ndarray, np.ndarray]:
    shingles, per_doc, keys = _hash_texts(texts, cfg.shingle_words)
    x = (shingles >> _U64(32)).astype(np.uint32)
    sig = np.full((cfg.num_perm, len(texts)), MAX32, dtype=np.uint32)
    nonempty = np.flatnonzero(per_doc)
    offsets = (np.cumsum(per_doc) - per_doc)[nonempty]
    slab = max(1, (8 << 20) // cfg.num_perm)  # shingles per (num_perm, slab) uint32 matrix, ~32 MB
    i = 0
    while i < len(nonempty):
        j = max(i + 1, int(np.searchsorted(offsets, offsets[i] + slab, side="left")))
        lo = offsets[i]
        hi = offsets[j] if j < len(nonempty) else len(x)
        h = perms.a * x[lo:hi]
        h += perms.b
        sig[:, nonempty[i:j]] = np.minimum.reduceat(h, offsets[i:j] - lo, axis=1)
        i = j
    return np.ascontiguousarray(sig.T), keys


def _signature_batches(
    texts: Sequence[str], cfg: DedupConfig
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(first row, signatures, exact keys) per batch, in order; batches are computed on a thread pool."""
    perms = _Permutations(cfg.num_perm, cfg.seed)
    _separator_table()  # build the shared table once, before threads need it
    starts = range(0, len(texts), cfg.batch_docs)
    workers = cfg.workers or min(4, os.cpu_count() or 1)
    if workers < 2 or len(starts) < 2:
        for s in starts:
            yield s, *_signature_batch(texts[s : s + cfg.batch_docs], cfg, perms)
        return
    with ThreadPoolExecutor(workers) as pool:
        parts = pool.map(lambda s: _signature_batch(texts[s : s + cfg.batch_docs], cfg, perms), starts)
        for s, (sig, keys) in zip(starts, parts, strict=True):
            yield s, sig, keys


def minhash_signatures(texts: Sequence[str], cfg: DedupConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MinHash signatures (n, num_perm) uint32 and exact-duplicate keys (n,) uint64 of the texts.

    A text with no words gets an all-0xFFFFFFFF signature and is never a near-duplicate candidate.
    """
    cfg = cfg or DedupConfig()
    sigs = np.full((len(texts), cfg.num_perm), MAX32, dtype=np.uint32)
    keys = np.zeros(len(texts), dtype=_U64)
    for s, sig, key in _signature_batches(texts, cfg):
        sigs[s : s + len(sig)] = sig
        keys[s : s + len(key)] = key
    return sigs, keys


class SignatureTable:
    """Signatures and exact keys of up to ``capacity`` documents, filled batch by batch into arrays
    allocated once: the table never exists twice, as it would if per-batch arrays were concatenated."""

    def __init__(self, capacity: int, cfg: DedupConfig) -> None:
        self.cfg, self.rows = cfg, 0
        self._sigs = np.empty((capacity, cfg.num_perm), dtype=np.uint32)
        self._keys = np.empty(capacity, dtype=_U64)

    def add(self, texts: Sequence[str]) -> None:
        self.put(*minhash_signatures(texts, self.cfg))

    def put(self, sig: np.ndarray, key: np.ndarray) -> None:
        """Append signatures and keys computed elsewhere (in a worker process)."""
        end = self.rows + len(key)
        if end > len(self._keys):
            raise ValueError(f"signature table holds {len(self._keys)} documents; {end} were added")
        self._sigs[self.rows : end] = sig
        self._keys[self.rows : end] = key
        self.rows = end

    @property
    def signatures(self) -> np.ndarray:
        return self._sigs[: self.rows]

    @property
    def keys(self) -> np.ndarray:
        return self._keys[: self.rows]
