"""datatrove's tokenized files, which nanotron reads: `.ds` tokens, `.ds.index` ends, `.ds.metadata`.

As datatrove's tokenizer writes them: documents back to back (each ending in EOS), no padding; `.ds.index`
holds each document's end (exclusive, in tokens) as uint64; `.ds.metadata` is three lines,
"<tokenizer>|<token bytes>", the token count, and that count in humanize's metric form ("67.3 kT").
nanotron cuts samples of sequence_length + 1 tokens back to back from each file.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sdf.writers.io import publish, temp_path
from sdf.writers.shards import DocBlock, Files, ShardFormat, ShardSpec, flat_dtype

READ_CHUNK = 1 << 22  # tokens per chunk when reading a .ds


class NanotronShard:
    """Raw tokens, uint64 document ends, and a three-line metadata file."""

    def __init__(self, stem: Path, spec: ShardSpec) -> None:
        self.ds_path = stem.with_name(stem.name + ".ds")
        self.dtype = flat_dtype(spec.vocab_size)
        self.tokenizer_name = spec.tokenizer_name
        self.ends = array("q")  # 8 bytes per document, not a Python int object each
        self.tokens = 0
        self.file = open(temp_path(self.ds_path), "wb")  # noqa: SIM115 - closed in close()

    def write(self, block: DocBlock) -> None:
        self.file.write(block.tokens.astype(self.dtype).tobytes())
        for n in block.lengths:
            self.tokens += n
            self.ends.append(self.tokens)

    def close(self) -> list[Path]:
        self.file.close()
        index_path = self.ds_path.with_name(self.ds_path.name + ".index")
        meta_path = self.ds_path.with_name(self.ds_path.name + ".metadata")
        np.frombuffer(self.ends, dtype=np.int64).astype("<u8").tofile(temp_path(index_path))
        temp_path(meta_path).write_text(metadata(self.tokenizer_name, self.dtype.itemsize, self.tokens), "utf-8")
        return publish([self.ds_path, index_path, meta_path])


def metadata(tokenizer_name: str, token_size: int, tokens: int) -> str:
    return f"{tokenizer_name}|{token_size}\n{tokens}\n{human_tokens(tokens)}"


def human_tokens(n: int) -> str:
    """A token count with three significant digits and an SI prefix, as humanize.metric(n, "T") gives it."""
    exponent = math.floor(math.log10(n)) if n else 0
    value = n / 10 ** (exponent // 3 * 3)
    digits = max(0, 2 - exponent % 3)
    if round(value, digits) >= 10 ** (exponent % 3 + 1):  # 999.6 rounds up into the next prefix
        exponent += 1
        value = n / 10 ** (exponent // 3 * 3)
        digits = max(0, 2 - exponent % 3)
    prefix = "kMGTPEZYRQ"[exponent // 3 - 1] if exponent >= 3 else ""
    return f"{value:.{digits}f} {prefix}T"


def _token_size(files: Files) -> int:
    return int(files[".ds.metadata"].read_text(encoding="utf-8").splitlines()[0].rsplit("|", 1)[1])


def read_tokens(files: Files) -> Iterator[np.ndarray]:
    with open(files[".ds"], "rb") as f:
        while len(chunk := np.fromfile(f, dtype=f"<u{_token_size(files)}", count=READ_CHUNK)):
            yield chunk


def check(files: Files, entry: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    name = f"{entry['split']}/nanotron shard {entry['shard']}"
    size = flat_dtype(manifest["tokenizer"]["vocab_size"]).itemsize
    total = files[".ds"].stat().st_size // size
    ends = np.fromfile(files[".ds.index"], dtype="<u8").astype(np.int64)
    problems = []
    if len(ends) != entry["documents"] or (len(ends) and ((np.diff(ends) <= 0).any() or ends[-1] != total)):
        problems.append(f"{name}: .ds.index does not hold one increasing end per document up to the file's end")
    expected = metadata(manifest["tokenizer"]["name"], size, total)
    if files[".ds.metadata"].read_text(encoding="utf-8") != expected:
        problems.append(f"{name}: .ds.metadata is not {expected!r}")
    return problems


FORMAT = ShardFormat(
    "nanotron", "documents", (".ds", ".ds.index", ".ds.metadata"), NanotronShard, read_tokens, check, flat_dtype
)
